//! record_usage as clients see it: concurrent replays, rollbacks, live balance push.

use credyt_tests::*;
use postgres::fallible_iterator::FallibleIterator;
use rust_decimal::Decimal;
use std::collections::HashMap;
use std::time::Duration;

const PRICES: &str = r#"[{"type": "usage_based",
  "usage_calculation": {"event_type": "chat", "usage_type": "unit_and_volume", "volume_field": "output_tokens"},
  "pricing": [{"asset": "USD", "values": [{"unit_price": 0.001, "volume_rate": 0.00002}]}]}]"#;

fn fixture(admin: &mut postgres::Client, name: &str) -> (Tenant, postgres::Client) {
    let t = Tenant::create(admin, name);
    let mut s = t.session();
    s.batch_execute(&format!(
        "SELECT credyt.create_product('chat', 'Chat', '{PRICES}'); SELECT credyt.create_customer('Ann', 'ann'); \
         SELECT credyt.subscribe('ann', 'chat'); SELECT credyt.adjust('ann', 'seed', 'USD', 100, 'external_topup');"
    ))
    .unwrap();
    (t, s)
}

/// The fee of event k: 0.001 + k * 0.00002.
fn fee(k: u64) -> Decimal {
    Decimal::new(1, 3) + Decimal::from(k) * Decimal::new(2, 5)
}

#[test]
fn eight_clients_replaying_the_same_events_charge_each_once() {
    let mut admin = connect();
    let (t, mut s) = fixture(&mut admin, "Usage replays");
    const EVENTS: u64 = 100;
    // every client sends all 100 events, in its own random order
    let results = on_clients(8, &t.role, |i, c| {
        let mut charged = HashMap::new();
        let mut duplicates = 0;
        for k in shuffled(EVENTS, 7 + i as u64) {
            let row = c
                .query_one(
                    "SELECT duplicate, charged, status FROM credyt.record_usage('ann', $1, 'chat', \
                     jsonb_build_object('model', 'gpt-4o', 'output_tokens', $2::int))",
                    &[&format!("evt-{k}"), &(k as i32)],
                )
                .unwrap();
            let dup: bool = row.get(0);
            duplicates += dup as usize;
            assert_eq!(row.get::<_, String>(2), "charged");
            charged.insert(k, row.get::<_, Decimal>(1));
        }
        (charged, duplicates)
    });
    let mut originals = 0;
    for (charged, duplicates) in results {
        originals += EVENTS as usize - duplicates;
        for (k, amount) in charged {
            assert_eq!(amount, fee(k), "evt-{k}");
        }
    }
    assert_eq!(originals, EVENTS as usize, "exactly one original per event id");
    let total: Decimal = (0..EVENTS).map(fee).sum();
    let balance: Decimal = s.query_one("SELECT credyt.balance('ann')", &[]).unwrap().get(0);
    assert_eq!(balance, Decimal::from(100) - total);
    let entries: i64 = s.query_one("SELECT count(*) FROM credyt.entries WHERE kind = 'usage'", &[]).unwrap().get(0);
    assert_eq!(entries, 2 * EVENTS as i64);
    assert!(ledger_problems(&mut s).is_empty(), "{:?}", ledger_problems(&mut s));
}

#[test]
fn a_rolled_back_transaction_leaves_no_usage_no_entry_and_no_notification() {
    let mut admin = connect();
    let (t, mut s) = fixture(&mut admin, "Usage rollback");
    s.batch_execute("SELECT credyt.set_balance_push(true)").unwrap();
    let mut listener = t.session();
    let channel = text(&mut listener, "SELECT credyt.balance_channel()");
    listener.batch_execute(&format!("LISTEN \"{channel}\"")).unwrap();
    let mut tx = s.transaction().unwrap();
    tx.batch_execute(r#"SELECT * FROM credyt.record_usage('ann', 'r1', 'chat', '{"output_tokens": 10}')"#).unwrap();
    tx.rollback().unwrap();
    assert_eq!(text(&mut s, "SELECT count(*)::text FROM credyt.usage"), "0");
    assert_eq!(text(&mut s, "SELECT count(*)::text FROM credyt.entries WHERE kind = 'usage'"), "0");
    assert_eq!(text(&mut s, "SELECT credyt.balance('ann')::text"), "100");
    let mut n = listener.notifications();
    let all: Vec<_> = n.timeout_iter(Duration::from_millis(300)).collect().unwrap();
    assert!(all.is_empty(), "a rolled-back charge notified: {all:?}");
    // the event id is free again
    s.batch_execute(r#"SELECT * FROM credyt.record_usage('ann', 'r1', 'chat', '{"output_tokens": 10}')"#).unwrap();
    assert_eq!(text(&mut s, "SELECT credyt.balance('ann')::text"), "99.9988");
}

#[test]
fn a_listen_client_receives_the_balance() {
    let mut admin = connect();
    let (t, mut s) = fixture(&mut admin, "Usage listen");
    let customer = text(&mut s, "SELECT id FROM credyt.customers WHERE external_id = 'ann'");
    s.batch_execute("SELECT credyt.set_balance_push(true)").unwrap();
    let mut listener = t.session();
    let channel = text(&mut listener, "SELECT credyt.balance_channel()");
    listener.batch_execute(&format!("LISTEN \"{channel}\"")).unwrap();
    s.batch_execute(r#"SELECT * FROM credyt.record_usage('ann', 'n1', 'chat', '{"output_tokens": 50}')"#).unwrap();
    // The channel is the tenant's own: the first notification on it is ours.
    let mut n = listener.notifications();
    let note = n.timeout_iter(Duration::from_secs(5)).next().unwrap().expect("no notification within 5 s");
    assert_eq!(note.channel(), channel);
    let payload = note.payload();
    for part in [
        format!("\"account\":\"{}\"", t.account),
        format!("\"customer_id\":\"{customer}\""),
        "\"account_id\":\"default:USD\"".to_string(),
        "\"available\":99.998".to_string(),
    ] {
        assert!(payload.contains(&part), "{payload} lacks {part}");
    }
}

#[test]
fn concurrent_batches_sharing_event_ids_charge_each_once_without_deadlock() {
    let mut admin = connect();
    let (t, mut s) = fixture(&mut admin, "Usage batches");
    s.batch_execute("SELECT credyt.create_customer('Bob', 'bob'); SELECT credyt.subscribe('bob', 'chat');").unwrap();
    const EVENTS: u64 = 200;
    let originals: usize = on_clients(4, &t.role, |i, c| {
        let events: Vec<String> = shuffled(EVENTS, 99 + i as u64)
            .iter()
            .map(|k| {
                let who = if k % 2 == 0 { "ann" } else { "bob" };
                format!(r#"{{"customer": "{who}", "event_id": "b-{k}", "event_type": "chat", "data": {{"output_tokens": {k}}}}}"#)
            })
            .collect();
        // two batches of 100, each in this client's own order; a deadlock would fail here
        let mut originals = 0;
        for chunk in events.chunks(100) {
            let rows = c
                .query("SELECT duplicate FROM credyt.record_usage($1::text::jsonb)", &[&format!("[{}]", chunk.join(","))])
                .unwrap();
            originals += rows.iter().filter(|r| !r.get::<_, bool>(0)).count();
        }
        originals
    })
    .into_iter()
    .sum();
    assert_eq!(originals, EVENTS as usize, "exactly one original per event id");
    let spent = |parity: u64| -> Decimal { (0..EVENTS).filter(|k| k % 2 == parity).map(fee).sum() };
    let ann: Decimal = s.query_one("SELECT credyt.balance('ann')", &[]).unwrap().get(0);
    let bob: Decimal = s.query_one("SELECT credyt.balance('bob')", &[]).unwrap().get(0);
    assert_eq!(ann, Decimal::from(100) - spent(0));
    assert_eq!(bob, -spent(1));
    assert!(ledger_problems(&mut s).is_empty(), "{:?}", ledger_problems(&mut s));
}

#[test]
fn a_tenant_listening_on_every_channel_it_can_name_hears_nothing_of_another() {
    let mut admin = connect();
    let (a, mut sa) = fixture(&mut admin, "Listener A");
    let (b, mut sb) = fixture(&mut admin, "Victim B");
    sb.batch_execute("SELECT credyt.set_balance_push(true)").unwrap();
    sb.batch_execute("SELECT credyt.create_webhook('https://example.com/b')").unwrap();
    // A listens on its own channels, on the old shared names, and on every name it
    // could guess; it cannot learn the workers' channel.
    let mut spy = a.session();
    let mut names = vec![
        text(&mut sa, "SELECT credyt.balance_channel()"),
        text(&mut sa, "SELECT credyt.events_channel()"),
        "credyt_balance".to_string(),
        "credyt_events".to_string(),
        "credyt_worker".to_string(),
        format!("credyt_balance_{}", b.account),
        format!("credyt_events_{}", b.account),
    ];
    let denied = spy.query("SELECT credyt._worker_channel()", &[]).unwrap_err();
    assert_eq!(sqlstate(&denied), "42501", "a tenant may not learn the workers' channel");
    names.dedup();
    for name in &names {
        spy.batch_execute(&format!("LISTEN \"{name}\"")).unwrap();
    }
    // B is charged, crosses a threshold (an event), and gets a balance push
    sb.batch_execute("SELECT credyt.set_threshold('ann', 'USD', 99.99999)").unwrap();
    for i in 0..5 {
        sb.batch_execute(&format!(
            r#"SELECT * FROM credyt.record_usage('ann', 'b{i}', 'chat', '{{"output_tokens": 50}}')"#
        ))
        .unwrap();
    }
    let pushed: i64 = sb
        .query_one("SELECT count(*) FROM credyt.events WHERE event_type = 'balance_threshold_hit'", &[])
        .unwrap()
        .get(0);
    assert_eq!(pushed, 1);
    let mut n = spy.notifications();
    let heard: Vec<_> = n.timeout_iter(Duration::from_millis(500)).collect().unwrap();
    let leaked: Vec<_> =
        heard.iter().filter(|m| m.payload().contains(&b.account) || m.payload().contains("cust_")).collect();
    assert!(heard.is_empty(), "A heard {leaked:?} of {heard:?}");
    // while B itself hears its own
    let mut own = b.session();
    let channel = text(&mut own, "SELECT credyt.balance_channel()");
    own.batch_execute(&format!("LISTEN \"{channel}\"")).unwrap();
    sb.batch_execute(r#"SELECT * FROM credyt.record_usage('ann', 'b9', 'chat', '{"output_tokens": 50}')"#).unwrap();
    let mut n = own.notifications();
    assert!(n.timeout_iter(Duration::from_secs(5)).next().unwrap().is_some(), "B heard nothing of its own");
}
