//! The clock over real connections: concurrent ticks, and pg_cron calling tick().

use credyt_tests::*;
use std::time::{Duration, Instant};

/// 4 administrator connections scoped to `account`, each ticking 3 times at
/// `now() + ahead`; returns the sum of the `key` counts they report.
fn tick_concurrently(account: &str, ahead: &'static str, key: &'static str) -> i64 {
    let account = account.to_string();
    on_clients(4, "postgres", move |_, c| {
        c.batch_execute(&format!("SET credyt.account = '{account}'")).unwrap();
        let mut n = 0;
        for _ in 0..3 {
            let v: i32 = c
                .query_one(&format!("SELECT (credyt.tick(now() + interval '{ahead}')->>'{key}')::int"), &[])
                .unwrap()
                .get(0);
            n += v as i64;
        }
        n
    })
    .into_iter()
    .sum()
}

#[test]
fn concurrent_ticks_expire_each_hold_exactly_once() {
    let mut admin = connect();
    let t = Tenant::create(&mut admin, "Clock");
    let mut s = t.session();
    s.batch_execute(
        "SELECT credyt.create_customer('Ann', 'ann'); SELECT credyt.adjust('ann', 'top', 'USD', 500, 'external_topup'); \
         SELECT count(credyt.authorize('ann', 'h' || i, 'USD', 1, '1 minute')) FROM generate_series(1, 300) i;",
    )
    .unwrap();
    assert_eq!(text(&mut s, "SELECT credyt.balance('ann')::text"), "200");
    // tick() is an administrator's function; each ticker scopes itself to this tenant
    let expired = tick_concurrently(&t.account, "2 minutes", "holds_expired");
    assert_eq!(expired, 300);
    assert_eq!(text(&mut s, "SELECT count(*)::text FROM credyt.events WHERE event_type = 'hold.expired'"), "300");
    assert_eq!(text(&mut s, "SELECT count(DISTINCT payload->'data'->>'hold_id')::text FROM credyt.events"), "300");
    assert_eq!(text(&mut s, "SELECT count(*)::text FROM credyt.holds WHERE status = 'expired'"), "300");
    assert!(ledger_problems(&mut s).is_empty());
}

#[test]
fn concurrent_ticks_expire_each_grant_lot_exactly_once() {
    let mut admin = connect();
    let t = Tenant::create(&mut admin, "Clock grants");
    let mut s = t.session();
    s.batch_execute(
        "SELECT count(credyt.create_customer('c' || i, 'c' || i)) FROM generate_series(1, 50) i; \
         SELECT count(credyt.grant('c' || i, 'g' || i, 'USD', 2, expires_at => now() + interval '1 hour')) FROM generate_series(1, 50) i; \
         SELECT count(credyt.charge('c' || i, 'k' || i, 'USD', 0.5)) FROM generate_series(1, 50) i;",
    )
    .unwrap();
    let expired = tick_concurrently(&t.account, "2 hours", "lots_expired");
    assert_eq!(expired, 50);
    assert_eq!(text(&mut s, "SELECT count(*)::text FROM credyt.events WHERE event_type = 'grant.expired'"), "50");
    assert_eq!(text(&mut s, "SELECT sum(amount)::text FROM credyt.entries WHERE account_id = 'expired:USD'"), "75.0");
    assert!(ledger_problems(&mut s).is_empty(), "{:?}", ledger_problems(&mut s));
}

#[test]
fn concurrent_ticks_charge_each_fee_period_exactly_once() {
    let mut admin = connect();
    let t = Tenant::create(&mut admin, "Clock fees");
    let mut s = t.session();
    s.batch_execute(
        r#"SELECT credyt.create_product('daily', 'Daily', '[{"type": "fixed",
             "billing_model": {"type": "recurring", "recurring": {"interval": "day"}},
             "pricing": [{"asset": "USD", "values": [{"unit_price": 1}]}]}]');
           SELECT count(credyt.create_customer('c' || i, 'c' || i)) FROM generate_series(1, 200) i;
           SELECT count(credyt.adjust('c' || i, 'g' || i, 'USD', 10, 'gift')) FROM generate_series(1, 200) i;
           SELECT count(credyt.subscribe('c' || i, 'daily', starts_at => now() + interval '1 minute'))
             FROM generate_series(1, 200) i;"#,
    )
    .unwrap();
    // three days on: periods 0, 1 and 2 of every subscription are due
    let charged = tick_concurrently(&t.account, "3 days", "fees_charged");
    assert_eq!(charged, 600);
    assert_eq!(
        text(
            &mut s,
            "SELECT count(*) || '/' || count(DISTINCT (subscription_id, period)) FROM credyt.subscription_charges"
        ),
        "600/600"
    );
    assert_eq!(text(&mut s, "SELECT count(*)::text FROM credyt.transactions WHERE kind = 'subscription_fee'"), "600");
    // (the ids first: on Citus a function called per row of a sharded table runs on
    // the workers, where credyt's API does not: README § Running distributed)
    let balances = "WITH ids AS MATERIALIZED (SELECT id FROM credyt.customers) \
                    SELECT string_agg(DISTINCT credyt.balance(ids.id)::text, ',') FROM ids";
    assert_eq!(text(&mut s, balances), "7");
    // the same ticks activated each subscription once
    assert_eq!(
        text(&mut s, "SELECT count(*)::text FROM credyt.events WHERE event_type = 'subscription.activated'"),
        "200"
    );
    assert!(ledger_problems(&mut s).is_empty(), "{:?}", ledger_problems(&mut s));
}

/// pg_cron only runs in the cluster's cron.database_name: scripts/test.sh prepares
/// that database and names it in CREDYT_CRON_DATABASE_URL. pg_cron 1.4 schedules by
/// the minute, so this waits for the next minute boundary.
#[test]
fn pg_cron_calls_tick() {
    let url = std::env::var("CREDYT_CRON_DATABASE_URL")
        .expect("CREDYT_CRON_DATABASE_URL is not set: run these tests through scripts/test.sh");
    let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let account = text(&mut c, "SELECT credyt.create_account('cron test')");
    c.batch_execute(&format!(
        "SET credyt.account = '{account}'; SELECT credyt.create_customer('Ann', 'ann'); \
         SELECT credyt.authorize('ann', 'cron-hold', 'USD', 1, '1 second');"
    ))
    .unwrap();
    let job: i64 = c.query_one("SELECT credyt.schedule_jobs('* * * * *')", &[]).unwrap().get(0);
    let started = Instant::now();
    let status = loop {
        let status = text(&mut c, "SELECT status FROM credyt.hold WHERE hold_key = 'cron-hold'");
        if status == "expired" || started.elapsed() > Duration::from_secs(150) {
            break status;
        }
        std::thread::sleep(Duration::from_secs(2));
    };
    let runs: i64 = c
        .query_one("SELECT count(*) FROM cron.job_run_details WHERE jobid = $1 AND status = 'succeeded'", &[&job])
        .unwrap()
        .get(0);
    c.batch_execute("SELECT cron.unschedule('credyt-tick')").unwrap();
    assert_eq!(status, "expired", "pg_cron did not run credyt.tick() within 150 s");
    assert!(runs >= 1, "no successful run of the credyt-tick job");
    assert_eq!(text(&mut c, "SELECT count(*)::text FROM credyt.events WHERE event_type = 'hold.expired' AND account_id = credyt.current_account()"), "1");
}
