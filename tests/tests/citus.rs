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
/// (auto_explain, nested statements), and the plans it logged.
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
            if n.message().contains("plan:") {
                sink.lock().unwrap().push(n.message().to_string());
            }
        });
        let mut client = cfg.connect(postgres::NoTls).expect("connect");
        client
            .batch_execute(&format!(
                "LOAD 'auto_explain'; SET auto_explain.log_min_duration = 0; \
                 SET auto_explain.log_nested_statements = on; SET credyt.account = '{account}';"
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
fn every_statement_of_a_call_for_one_customer_is_one_task_on_one_worker() {
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
           SELECT credyt.subscribe('rae', 'r-prod'); SELECT credyt.subscribe('sol', 'r-prod');"#,
    )
    .unwrap();
    let mut x = Explained::open(&t.account);
    let calls = [
        "SELECT credyt.adjust('rae', 'r-top', 'USD', 100, 'external_topup')",
        "SELECT credyt.grant('rae', 'r-grant', 'USD', 5, 'promotion')",
        "SELECT credyt.authorize('rae', 'r-hold', 'USD', 3)",
        "SELECT * FROM credyt.record_usage('rae', 'r-e1', 'chat')",
        "SELECT * FROM credyt.record_usage('rae', 'r-e1', 'chat')",
        "SELECT * FROM credyt.charge('rae', 'r-c1', 'USD', 2)",
        "SELECT credyt.balance('rae')",
        "SELECT * FROM credyt.wallet('rae')",
    ];
    for call in calls {
        let plans = x.plans_of(call);
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
    let charged: i64 = admin
        .query_one(
            "SELECT count(*) FROM credyt.usage_event WHERE account_id = $1 AND status = 'charged'",
            &[&t.account],
        )
        .unwrap()
        .get(0);
    assert_eq!(charged, 4);
    assert!(ledger_problems(&mut s).is_empty());
}
