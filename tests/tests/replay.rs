//! Replays are never conflicts (issue 9): every idempotent function, called again in
//! a transaction of its own with exactly what the caller supplied, returns the
//! original result and writes nothing, although the defaults it did not supply
//! (now(), generated ids) differ between the two calls.

use credyt_tests::*;
use std::thread::sleep;
use std::time::Duration;

const PRICES: &str = r#"[{"type": "usage_based",
  "usage_calculation": {"event_type": "chat", "usage_type": "unit_and_volume", "volume_field": "output_tokens"},
  "pricing": [{"asset": "USD", "values": [{"unit_price": 0.001, "volume_rate": 0.00002}]}]}]"#;

/// Everything the tenant's ledger, usage, holds, grants and outbox hold, as counts.
fn fingerprint(c: &mut postgres::Client) -> String {
    text(
        c,
        "SELECT concat_ws('/', (SELECT count(*) FROM credyt.entries), (SELECT count(*) FROM credyt.lots), \
                (SELECT count(*) FROM credyt.usage), (SELECT count(*) FROM credyt.holds), \
                (SELECT count(*) FROM credyt.grants), (SELECT count(*) FROM credyt.events), \
                (SELECT sum(available) FROM credyt.wallet('ann')))",
    )
}

#[test]
fn every_idempotent_function_replays_with_defaults_and_with_explicit_values() {
    let mut admin = connect();
    let t = Tenant::create(&mut admin, "Replays");
    let mut s = t.session();
    s.batch_execute(&format!(
        "SELECT credyt.create_product('chat', 'Chat', '{PRICES}'); SELECT credyt.create_customer('Ann', 'ann'); \
         SELECT credyt.subscribe('ann', 'chat');"
    ))
    .unwrap();
    let cust = text(&mut s, "SELECT id FROM credyt.customers WHERE external_id = 'ann'");
    // (name, first call, replay): each a query returning one text; the replay repeats
    // what the caller supplied (the customer may be named by id or external id).
    let usage = |key: &str, extra: &str| {
        format!(
            r#"SELECT concat_ws(' ', event_id, status, fees::text, charged, asset) FROM credyt.record_usage('ann', '{key}', 'chat',
               '{{"output_tokens": 10}}'{extra})"#
        )
    };
    let batch = r#"SELECT string_agg(concat_ws(' ', event_id, status, fees::text, charged, asset), ', ' ORDER BY event_id)
                   FROM credyt.record_usage('[{"customer": "ann", "event_id": "b1", "event_type": "chat", "data": {"output_tokens": 3}},
                                              {"customer": "ann", "event_id": "b2", "event_type": "chat", "data": {"output_tokens": 0}}]'::jsonb)"#;
    let cases: Vec<(&str, String, String)> = vec![
        ("adjust, defaults", "SELECT credyt.adjust('ann', 'a1', 'USD', 10, 'external_topup')".into(), String::new()),
        ("adjust, by customer id", "SELECT credyt.adjust('ann', 'a1b', 'USD', 10, 'gift')".into(),
         format!("SELECT credyt.adjust('{cust}', 'a1b', 'USD', 10, 'gift')")),
        ("adjust, explicit", "SELECT credyt.adjust('ann', 'a2', 'USD', 5, 'gift', 'default', 'promo', \
                               '2026-01-01 00:00+00', '2099-01-01 00:00+00', '{\"k\": 1}')".into(), String::new()),
        ("adjust, refund", "SELECT credyt.adjust('ann', 'a3', 'USD', -1, 'external_refund')".into(), String::new()),
        ("charge, defaults", "SELECT credyt.charge('ann', 'c1', 'USD', 1)".into(), String::new()),
        ("charge, explicit", "SELECT credyt.charge('ann', 'c2', 'USD', 1, 'default', 'a fee', '{\"k\": 2}')".into(), String::new()),
        ("grant, defaults", "SELECT credyt.grant('ann', 'g1', 'USD', 1)".into(), String::new()),
        ("grant, expiring", "SELECT credyt.grant('ann', 'g2', 'USD', 1, expires_at => '2099-01-01 00:00+00')".into(), String::new()),
        ("grant, recurring", "SELECT credyt.grant('ann', 'g3', 'USD', 1, every => '1 month')".into(), String::new()),
        ("grant, explicit", "SELECT credyt.grant('ann', 'g4', 'USD', 1, 'bundled', 5, '2026-06-01 00:00+00', NULL, '1 week', \
                              'rollover', 2)".into(), String::new()),
        ("record_usage, defaults", usage("e1", ""), String::new()),
        ("record_usage, explicit", usage("e2", ", occurred_at => '2026-11-30 12:00+00', subject => 'agent-1', description => 'x', \
                                              costs => '[{\"vendor\": \"openai\", \"amount\": 0.001, \"currency\": \"USD\"}]'"), String::new()),
        ("record_usage, batch", batch.into(), String::new()),
        ("authorize, defaults", "SELECT credyt.authorize('ann', 'h1', 'USD', 1)".into(), String::new()),
        ("authorize, explicit", "SELECT credyt.authorize('ann', 'h2', 'USD', 1, interval '1 hour')".into(), String::new()),
    ];
    for (name, first, replay) in &cases {
        let replay = if replay.is_empty() { first } else { replay };
        let original = c_text(&mut s, first).unwrap_or_else(|e| panic!("{name}: the first call failed: {e}"));
        let before = fingerprint(&mut s);
        // A new transaction, a later now(): what the caller did not supply differs.
        sleep(Duration::from_millis(20));
        let again = c_text(&mut s, replay).unwrap_or_else(|e| panic!("{name}: the replay failed: {e}"));
        assert_eq!(again, original, "{name}: the replay returned something else");
        assert_eq!(fingerprint(&mut s), before, "{name}: the replay wrote something");
    }
    // a replay that changes what the caller supplied is still a conflict
    for sql in [
        "SELECT credyt.grant('ann', 'g1', 'USD', 2)",
        "SELECT credyt.grant('ann', 'g4', 'USD', 1, 'bundled', 5, '2026-06-02 00:00+00', NULL, '1 week', 'rollover', 2)",
        "SELECT credyt.adjust('ann', 'a1', 'USD', 11, 'external_topup')",
        "SELECT credyt.charge('ann', 'c1', 'USD', 2)",
    ] {
        assert_eq!(fails(&mut s, sql), "CY409", "{sql}");
    }
    assert!(ledger_problems(&mut s).is_empty(), "{:?}", ledger_problems(&mut s));
}

/// The one text the query returns, or its error.
fn c_text(c: &mut postgres::Client, sql: &str) -> Result<String, String> {
    c.query_one(sql, &[])
        .map(|r| r.get::<_, String>(0))
        .map_err(|e| format!("{} {}", sqlstate(&e), e.as_db_error().map_or(e.to_string(), |d| d.message().to_string())))
}
