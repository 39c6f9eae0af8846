//! Crash safety (issue 9): 8 clients run record_usage, adjust and grant with
//! client-side idempotency keys against a cluster of the test's own; the whole
//! cluster is killed with SIGKILL mid-stream (the postmaster and every backend, as a
//! power cut would), restarted, and the clients retry what they never saw
//! acknowledged. Then: every acknowledged call is there exactly once, replays return
//! the original results, balances equal the model, verify_ledger() is empty.
//!
//! CREDYT_CRASH_ROUNDS sets the number of rounds (5 here; scripts/crash.sh runs more).

use credyt_tests::cluster::Cluster;
use postgres::{Client, NoTls};
use rust_decimal::Decimal;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

const CLIENTS: usize = 8;
const CUSTOMERS: usize = 4;

/// One client call with a client-side key; its arguments follow from the key.
#[derive(Clone, Debug)]
enum Op {
    Usage { customer: usize, key: String },
    Adjust { customer: usize, key: String, cents: i64 },
    Grant { customer: usize, key: String, cents: i64 },
}

impl Op {
    fn of(client: usize, n: u64, rng: &mut credyt_tests::Rng) -> Op {
        let customer = rng.below(CUSTOMERS as u64) as usize;
        let key = format!("k{client}-{n}");
        match rng.below(10) {
            0..=5 => Op::Usage { customer, key },
            6..=8 => Op::Adjust { customer, key, cents: 1 + rng.below(500) as i64 },
            _ => Op::Grant { customer, key, cents: 1 + rng.below(300) as i64 },
        }
    }

    /// Runs the call; Ok(result as text) when it was acknowledged.
    fn run(&self, c: &mut Client) -> Result<String, postgres::Error> {
        let row = match self {
            Op::Usage { customer, key } => c.query_one(
                "SELECT concat_ws(' ', event_id, status, charged) FROM credyt.record_usage($1, $2, 'chat')",
                &[&format!("c{customer}"), key],
            )?,
            Op::Adjust { customer, key, cents } => c.query_one(
                "SELECT credyt.adjust($1, $2, 'USD', $3::numeric / 100, 'external_topup')",
                &[&format!("c{customer}"), key, &Decimal::from(*cents)],
            )?,
            Op::Grant { customer, key, cents } => c.query_one(
                "SELECT credyt.grant($1, $2, 'USD', $3::numeric / 100)",
                &[&format!("c{customer}"), key, &Decimal::from(*cents)],
            )?,
        };
        Ok(row.get(0))
    }

    /// What it adds to its customer's balance (usage costs 0.07 an event).
    fn delta(&self) -> (usize, Decimal) {
        match self {
            Op::Usage { customer, .. } => (*customer, Decimal::new(-7, 2)),
            Op::Adjust { customer, cents, .. } | Op::Grant { customer, cents, .. } => {
                (*customer, Decimal::new(*cents, 2))
            }
        }
    }
}

fn setup(c: &mut Client) -> String {
    c.batch_execute("CREATE EXTENSION credyt").unwrap();
    let account: String = c.query_one("SELECT credyt.create_account('Crash')", &[]).unwrap().get(0);
    c.batch_execute(&format!(
        r#"SET credyt.account = '{account}';
           SELECT credyt.create_product('chat', 'Chat', '[{{"type": "usage_based", "usage_calculation": {{"event_type": "chat", "usage_type": "unit"}},
             "pricing": [{{"asset": "USD", "values": [{{"unit_price": 0.07}}]}}]}}]');"#
    ))
    .unwrap();
    for i in 0..CUSTOMERS {
        c.batch_execute(&format!(
            "SELECT credyt.create_customer('C{i}', 'c{i}'); SELECT credyt.subscribe('c{i}', 'chat')"
        ))
        .unwrap();
    }
    account
}

#[test]
fn kill_9_of_the_cluster_mid_stream_loses_and_doubles_nothing() {
    let rounds: usize = std::env::var("CREDYT_CRASH_ROUNDS").ok().and_then(|s| s.parse().ok()).unwrap_or(5);
    let cluster = Cluster::create("synchronous_commit = on\nfsync = on\n");
    let account = setup(&mut cluster.connect());
    // every acknowledged call and its result, and every call attempted
    let acked: Arc<Mutex<BTreeMap<String, (Op, String)>>> = Arc::default();
    let mut attempted: Vec<Op> = Vec::new();
    let mut total_in_flight = 0;
    let mut committed_unacked = 0;
    for round in 0..rounds {
        let stop = Arc::new(AtomicBool::new(false));
        let handles: Vec<_> = (0..CLIENTS)
            .map(|i| {
                let (url, account, acked, stop) = (cluster.url(), account.clone(), acked.clone(), stop.clone());
                thread::spawn(move || {
                    let mut rng = credyt_tests::Rng::new(0xC4A5 + (round * CLIENTS + i) as u64);
                    let mut c = Client::connect(&url, NoTls).unwrap();
                    c.batch_execute(&format!("SET credyt.account = '{account}'")).unwrap();
                    let mut mine = Vec::new();
                    for n in 0.. {
                        let op = Op::of(i, (round as u64) << 32 | n, &mut rng);
                        mine.push(op.clone());
                        match op.run(&mut c) {
                            Ok(result) => {
                                acked.lock().unwrap().insert(op_key(&op), (op, result));
                            }
                            // the crash: this call's fate is unknown
                            Err(e) if crashed(&e) => return (mine, Some(op)),
                            Err(e) => panic!("{op:?} failed: {e:?}"),
                        }
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                    }
                    (mine, None)
                })
            })
            .collect();
        thread::sleep(Duration::from_millis(800));
        cluster.crash();
        stop.store(true, Ordering::Relaxed);
        let mut in_flight = Vec::new();
        for h in handles {
            let (mine, unknown) = h.join().expect("client thread");
            attempted.extend(mine);
            in_flight.extend(unknown);
        }
        cluster.start();
        let mut c = cluster.connect();
        c.batch_execute(&format!("SET credyt.account = '{account}'")).unwrap();
        // the clients retry what they never saw acknowledged (some of it had committed)...
        for op in &in_flight {
            let (table, column) = match op {
                Op::Usage { .. } => ("credyt.usage", "event_id"),
                Op::Adjust { .. } => ("credyt.ledger_txn", "idem_key"),
                Op::Grant { .. } => ("credyt.grants", "grant_id"),
            };
            let sql = format!("SELECT EXISTS (SELECT 1 FROM {table} WHERE {column} = $1)");
            if c.query_one(sql.as_str(), &[&op_key(op)]).unwrap().get::<_, bool>(0) {
                committed_unacked += 1;
            }
            let result = op.run(&mut c).unwrap_or_else(|e| panic!("retry of {op:?} after the crash: {e:?}"));
            acked.lock().unwrap().insert(op_key(op), (op.clone(), result));
        }
        total_in_flight += in_flight.len();
        // ...and every call acknowledged this round (and every 10th of the earlier
        // ones), replayed, returns its original result
        let acked_now = acked.lock().unwrap().clone();
        for (i, (key, (op, result))) in acked_now.iter().enumerate() {
            let recent =
                key.split_once('-').is_some_and(|(_, n)| n.parse::<u64>().is_ok_and(|n| n >> 32 == round as u64));
            if !recent && i % 10 != 0 {
                continue;
            }
            let again = op.run(&mut c).unwrap_or_else(|e| panic!("replay of {key}: {e:?}"));
            assert_eq!(&again, result, "round {round}: the replay of {key} returned something else");
        }
        // exactly once each, balances as the model says, and a consistent ledger
        let count = |c: &mut Client, sql: &str| -> i64 { c.query_one(sql, &[]).unwrap().get(0) };
        let usage = attempted.iter().filter(|o| matches!(o, Op::Usage { .. })).count() as i64;
        let adjusts = attempted.iter().filter(|o| matches!(o, Op::Adjust { .. })).count() as i64;
        let grants = attempted.iter().filter(|o| matches!(o, Op::Grant { .. })).count() as i64;
        assert_eq!(count(&mut c, "SELECT count(*) FROM credyt.usage"), usage, "round {round}: usage events");
        assert_eq!(count(&mut c, "SELECT count(DISTINCT event_id) FROM credyt.usage"), usage);
        assert_eq!(
            count(&mut c, "SELECT count(*) FROM credyt.ledger_txn WHERE idem_key IS NOT NULL"),
            adjusts,
            "round {round}: adjustments"
        );
        assert_eq!(count(&mut c, "SELECT count(*) FROM credyt.grants"), grants, "round {round}: grants");
        assert_eq!(acked_now.len(), attempted.len(), "every call was acknowledged once retried");
        let mut model = [Decimal::ZERO; CUSTOMERS];
        for op in &attempted {
            let (customer, d) = op.delta();
            model[customer] += d;
        }
        for (i, want) in model.iter().enumerate() {
            let got: Decimal = c.query_one("SELECT credyt.balance($1)", &[&format!("c{i}")]).unwrap().get(0);
            assert_eq!(got, *want, "round {round}: balance of c{i}");
        }
        let problems: Vec<String> = c
            .query("SELECT \"check\" || ': ' || detail FROM credyt.verify_ledger()", &[])
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert!(problems.is_empty(), "round {round}: {problems:?}");
        println!(
            "crash round {round}: {} calls so far, {} in flight at the kill, all present once after retries",
            attempted.len(),
            in_flight.len()
        );
    }
    println!(
        "crash test: {rounds} rounds survived, {} calls, {total_in_flight} in flight at a kill \
         ({committed_unacked} of them had committed unacknowledged; their retries returned the original)",
        attempted.len()
    );
}

fn op_key(op: &Op) -> String {
    match op {
        Op::Usage { key, .. } | Op::Adjust { key, .. } | Op::Grant { key, .. } => key.clone(),
    }
}

/// An error from the cluster going away (a dropped connection, or a backend told to
/// exit), not from the call itself.
fn crashed(e: &postgres::Error) -> bool {
    match e.as_db_error() {
        None => true,
        Some(db) => matches!(&db.code().code()[..2], "08" | "57"),
    }
}
