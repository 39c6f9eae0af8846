//! credyt distributed on Citus (sql/080_distribute.sql, README § Running distributed).
//! `bash scripts/citus.sh test` runs this file against the coordinator of a
//! three-node cluster (CREDYT_TEST_CITUS set); scripts/test.sh against one node.

use credyt_tests::*;
use std::sync::{Arc, Mutex};

fn on_citus() -> bool {
    std::env::var_os("CREDYT_TEST_CITUS").is_some()
}

#[test]
fn distribute_is_for_administrators_and_needs_citus() {
    let mut admin = connect();
    let t = Tenant::create(&mut admin, "Distribute");
    let mut app = t.session();
    assert_eq!(fails(&mut app, "SELECT credyt.distribute()"), "42501");
    if on_citus() {
        // scripts/citus.sh distributed it: a second call changes nothing
        let again = text(&mut admin, "SELECT credyt.distribute()::text");
        assert!(again.contains("already distributed"), "{again}");
    } else {
        assert_eq!(fails(&mut admin, "SELECT credyt.distribute()"), "CY404");
    }
}

/// A superuser session that logs the plan of every statement credyt runs
/// (auto_explain, nested statements) and the two-phase commits Citus sends to workers,
/// and what it logged.
struct Explained {
    client: postgres::Client,
    plans: Arc<Mutex<Vec<String>>>,
}

impl Explained {
    fn open(account: &str) -> Explained {
        let plans = Arc::new(Mutex::new(Vec::new()));
        let sink = plans.clone();
        let mut cfg: postgres::Config = url().parse().expect("CREDYT_TEST_DATABASE_URL");
        cfg.notice_callback(move |n| {
            // (the plans, and citus.log_remote_commands' two-phase commits)
            if n.message().contains("plan:") || n.message().contains("PREPARE TRANSACTION") {
                sink.lock().unwrap().push(n.message().to_string());
            }
        });
        let mut client = cfg.connect(postgres::NoTls).expect("connect");
        client
            .batch_execute(&format!(
                "LOAD 'auto_explain'; SET auto_explain.log_min_duration = 0; \
                 SET auto_explain.log_nested_statements = on; SET citus.log_remote_commands = on; \
                 SET credyt.account = '{account}';"
            ))
            .unwrap();
        Explained { client, plans }
    }

    /// Runs `sql` with plans logged to this session; returns the plans.
    fn plans_of(&mut self, sql: &str) -> Vec<String> {
        self.client.batch_execute("SET client_min_messages = log").unwrap();
        self.plans.lock().unwrap().clear();
        let r = self.client.batch_execute(sql);
        self.client.batch_execute("RESET client_min_messages").unwrap();
        r.unwrap_or_else(|e| panic!("{sql}: {e}"));
        std::mem::take(&mut *self.plans.lock().unwrap())
    }
}

/// The tables credyt.distribute() shards by customer.
const SHARDED: &[&str] = &[
    "customer",
    "wallet_account",
    "lot",
    "entry",
    "ledger_txn",
    "usage_event",
    "hold",
    "credit_grant",
    "topup",
    "subscription",
    "subscription_fee",
    "subscription_charge",
    "outcome",
    "usage_counter",
    "stripe_customer",
];

/// Of one logged plan: its "Task Count", and the worker port of each task that reads
/// or writes a shard of a sharded table (a reference table's copy may be read on any
/// node: it names no customer).
fn tasks(plan: &str) -> (Option<u32>, Vec<u16>) {
    let count = plan.lines().find_map(|l| l.trim().strip_prefix("Task Count: ")).map(|n| n.trim().parse().unwrap());
    let mut ports = Vec::new();
    let mut port = None;
    for line in plan.lines() {
        if let Some(p) = line.split("port=").nth(1) {
            port = p.split_whitespace().next().and_then(|p| p.parse::<u16>().ok());
        }
        let shard_of = |word: &str| {
            let (table, id) = word.rsplit_once('_')?;
            (id.chars().all(|c| c.is_ascii_digit()) && SHARDED.contains(&table)).then_some(())
        };
        if line.split_whitespace().any(|w| shard_of(w).is_some()) {
            ports.extend(port);
        }
    }
    (count, ports)
}

#[test]
fn every_statement_of_a_call_for_one_customer_is_one_task_on_one_worker_committed_in_one_phase() {
    if !on_citus() {
        eprintln!("(one node: the routing of statements is tested by scripts/citus.sh test)");
        return;
    }
    let mut admin = connect();
    let t = Tenant::create(&mut admin, "Routing");
    let mut s = t.session();
    s.batch_execute(
        r#"SELECT credyt.create_customer('Rae', 'rae'); SELECT credyt.create_customer('Sol', 'sol');
           SELECT credyt.create_product('r-prod', 'R', '[{"type": "usage_based",
             "usage_calculation": {"event_type": "chat", "usage_type": "unit"},
             "pricing": [{"asset": "USD", "values": [{"unit_price": 1}]}]}]');
           SELECT credyt.subscribe('rae', 'r-prod'); SELECT credyt.subscribe('sol', 'r-prod');
           SELECT credyt.set_threshold('rae', 'USD', 60);"#,
    )
    .unwrap();
    let mut x = Explained::open(&t.account);
    let mut calls = [
        "SELECT credyt.adjust('rae', 'r-top', 'USD', 100, 'external_topup')",
        "SELECT credyt.grant('rae', 'r-grant', 'USD', 5, 'promotion')",
        "SELECT credyt.authorize('rae', 'r-hold', 'USD', 3)",
        "SELECT * FROM credyt.record_usage('rae', 'r-e1', 'chat')",
        "SELECT * FROM credyt.record_usage('rae', 'r-e1', 'chat')",
        "SELECT * FROM credyt.charge('rae', 'r-c1', 'USD', 2)",
        // (crosses the threshold: an event in the coordinator's outbox, as grant's)
        "SELECT * FROM credyt.charge('rae', 'r-c2', 'USD', 50)",
        "SELECT credyt.balance('rae')",
        "SELECT * FROM credyt.wallet('rae')",
    ]
    .into_iter()
    .map(String::from)
    .collect::<Vec<_>>();
    // and again, past the five runs after which Postgres may keep a generic plan
    for i in 0..7 {
        calls.push(format!("SELECT * FROM credyt.record_usage('rae', 'r-w{i}', 'chat')"));
        calls.push(format!("SELECT * FROM credyt.charge('rae', 'r-wc{i}', 'USD', 1)"));
    }
    let events = |admin: &mut postgres::Client| -> i64 {
        admin.query_one("SELECT count(*) FROM credyt.event WHERE account_id = $1", &[&t.account]).unwrap().get(0)
    };
    for call in &calls {
        let before = events(&mut admin);
        let plans = x.plans_of(call);
        let outbox = events(&mut admin) > before;
        let mut workers = std::collections::BTreeSet::new();
        let mut distributed = 0;
        for plan in &plans {
            if let (Some(n), ports) = tasks(plan) {
                distributed += 1;
                assert_eq!(n, 1, "{call}: a statement of {n} tasks:\n{plan}");
                workers.extend(ports);
            }
        }
        assert!(distributed > 0, "{call}: no distributed statement was logged");
        assert_eq!(workers.len(), 1, "{call}: statements ran on workers {workers:?}:\n{}", plans.join("\n"));
        // One worker written: Citus commits it in one phase, as one node would; with an
        // event in the coordinator's outbox too, in two, so that both or neither commit.
        let prepared = plans.iter().filter(|p| p.contains("PREPARE TRANSACTION")).count();
        assert_eq!(prepared, usize::from(outbox), "{call}: {prepared} prepared transactions:\n{}", plans.join("\n"));
    }
    // A batch of two customers: each group of events on its shard, one task each.
    let plans = x.plans_of(
        r#"SELECT * FROM credyt.record_usage('[{"customer": "rae", "event_id": "r-b1", "event_type": "chat"},
             {"customer": "sol", "event_id": "r-b2", "event_type": "chat"},
             {"customer": "rae", "event_id": "r-b3", "event_type": "chat"}]')"#,
    );
    for plan in &plans {
        if let (Some(n), _) = tasks(plan) {
            assert_eq!(n, 1, "batch: a statement of {n} tasks:\n{plan}");
        }
    }
    // (and the log does show a two-phase commit: a batch's entries are copied in, which
    // Citus always commits in two phases; README § Running distributed)
    assert!(plans.iter().any(|p| p.contains("PREPARE TRANSACTION")), "batch: no two-phase commit logged");
    let hits: i64 = admin
        .query_one(
            "SELECT count(*) FROM credyt.event WHERE account_id = $1 AND event_type = 'balance_threshold_hit'",
            &[&t.account],
        )
        .unwrap()
        .get(0);
    assert_eq!(hits, 2, "set below the threshold, then crossed by r-c2");
    let charged: i64 = admin
        .query_one(
            "SELECT count(*) FROM credyt.usage_event WHERE account_id = $1 AND status = 'charged'",
            &[&t.account],
        )
        .unwrap()
        .get(0);
    assert_eq!(charged, 11);
    assert!(ledger_problems(&mut s).is_empty());
}

/// credyt-server's claim of the auto top-ups it charges to saved cards: on one node a
/// FOR UPDATE SKIP LOCKED over every customer; on Citus, found across shards and claimed
/// customer by customer. Two servers claiming at once claim each top-up once, and
/// each result the server records (paid or declined) counts once.
#[test]
fn two_servers_claim_each_pending_auto_topup_once_and_its_result_counts_once() {
    let mut admin = connect();
    let t = Tenant::create(&mut admin, "Claims");
    let mut s = t.session();
    s.batch_execute("SELECT credyt.connect_stripe('sk_test_123456789012', 'whsec_abcdef')").unwrap();
    for i in 0..12 {
        let id = text(&mut s, &format!("SELECT credyt.create_customer('C{i}', 'claim-{i}')"));
        admin
            .execute(
                "INSERT INTO credyt.stripe_customer (account_id, customer_id, stripe_customer, payment_method) \
                 VALUES ($1, $2, $3, 'pm_card_visa')",
                &[&t.account, &id, &format!("cus_{i}")],
            )
            .unwrap();
        // at a balance of 0, below the threshold: requested at once
        s.execute("SELECT credyt.set_auto_topup($1, 'USD', 10, 25)", &[&id]).unwrap();
    }
    let pending: Vec<String> = admin
        .query(
            "SELECT id FROM credyt.topup WHERE account_id = $1 AND kind = 'auto' AND status = 'pending' ORDER BY id",
            &[&t.account],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(pending.len(), 12);
    let server = unique("credyt_t_server");
    admin.batch_execute(&format!("CREATE ROLE {server} LOGIN; SELECT credyt.grant_server('{server}');")).unwrap();
    let account = t.account.clone();
    let claims = on_clients(2, &server, move |_, c| {
        let mut mine = Vec::new();
        for _ in 0..20 {
            let rows =
                c.query("SELECT topup_id, account_id, amount FROM credyt._server_claim_auto_topups(2, 600)", &[]);
            for r in rows.unwrap() {
                let (id, acc, amount): (String, String, String) = (r.get(0), r.get(1), r.get(2));
                if acc == account {
                    assert_eq!(amount.parse::<f64>().unwrap(), 25.0, "{amount}");
                    mine.push(id);
                }
            }
        }
        mine
    });
    let mut claimed: Vec<String> = claims.concat();
    claimed.sort();
    assert_eq!(claimed, pending, "every pending top-up claimed exactly once");
    let attempts: i64 = admin
        .query_one("SELECT sum(charge_attempts)::bigint FROM credyt.topup WHERE account_id = $1", &[&t.account])
        .unwrap()
        .get(0);
    assert_eq!(attempts, 12);
    // leased: nothing more to claim until the lease runs out
    let mut c = connect_as(&server);
    let again = c.query("SELECT topup_id, account_id FROM credyt._server_claim_auto_topups(100, 600)", &[]).unwrap();
    assert!(again.iter().all(|r| r.get::<_, String>(1) != t.account));
    // The server records what Stripe said: ten paid (credited once, even when told
    // twice), two declined (nothing credited).
    for (i, id) in pending.iter().enumerate() {
        let paid = i < 10;
        let recorded: Vec<bool> = (0..2)
            .map(|_| {
                let args: [&(dyn postgres::types::ToSql + Sync); 3] = [id, &paid, &format!("pi_{i}")];
                c.query_one("SELECT credyt._server_auto_topup_result($1, $2, $3)", &args).unwrap().get(0)
            })
            .collect();
        assert_eq!(recorded, [true, false], "{id}: recorded, then told again");
    }
    for (i, id) in pending.iter().enumerate() {
        let customer: String =
            admin.query_one("SELECT customer_id FROM credyt.topup WHERE id = $1", &[id]).unwrap().get(0);
        let balance = text(&mut s, &format!("SELECT credyt.balance('{customer}')::text"));
        assert_eq!(balance, if i < 10 { "25" } else { "0" }, "{id} of {customer}");
    }
    assert!(ledger_problems(&mut s).is_empty());
}
