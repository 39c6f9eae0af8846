//! Concurrency over real connections: overlapping charges and replays of the same
//! keys from 8 clients; a strictly prepaid wallet hammered past its balance.

use credyt_tests::*;
use rust_decimal::Decimal;
use std::collections::HashMap;

const CLIENTS: usize = 8;

/// The amount every client sends for key `k` (so replays carry identical payloads).
fn amount_of(k: u64) -> Decimal {
    Decimal::new((k % 97 + 1) as i64 * 1013, 4) // 0.1013 .. 9.8261
}

#[test]
fn overlapping_charges_and_replays_charge_each_key_once() {
    let mut admin = connect();
    let t = Tenant::create(&mut admin, "Concurrent");
    let mut s = t.session();
    for who in ["hot", "cool"] {
        s.batch_execute(&format!("SELECT credyt.create_customer('{who}', '{who}')")).unwrap();
    }
    s.batch_execute(
        "SELECT credyt.adjust('hot', 'seed', 'USD', 1000, 'external_topup'); \
                     SELECT credyt.adjust('hot', 'promo', 'USD', 25, 'gift')",
    )
    .unwrap();

    const KEYS: u64 = 150;
    let results = on_clients(CLIENTS, &t.role, |i, c| {
        let mut rng = Rng::new(0xC0FFEE + i as u64);
        let mut seen: HashMap<u64, String> = HashMap::new();
        for _ in 0..120 {
            let k = rng.below(KEYS);
            // keys below 20 belong to a second customer
            let who = if k < 20 { "cool" } else { "hot" };
            let key = format!("k{k}");
            let id: String = c
                .query_one("SELECT credyt.charge($1, $2, 'USD', $3::numeric)", &[&who, &key, &amount_of(k)])
                .unwrap()
                .get(0);
            if let Some(prev) = seen.insert(k, id.clone()) {
                assert_eq!(prev, id, "a replay returned a different transaction");
            }
        }
        seen
    });
    let mut all: HashMap<u64, String> = HashMap::new();
    for seen in results {
        for (k, id) in seen {
            if let Some(prev) = all.insert(k, id.clone()) {
                assert_eq!(prev, id, "two clients got different transactions for k{k}");
            }
        }
    }
    let hot_spent: Decimal = all.keys().filter(|&&k| k >= 20).map(|&k| amount_of(k)).sum();
    let cool_spent: Decimal = all.keys().filter(|&&k| k < 20).map(|&k| amount_of(k)).sum();
    let bal = |c: &mut postgres::Client, who: &str| -> Decimal {
        c.query_one("SELECT credyt.balance($1)", &[&who]).unwrap().get(0)
    };
    assert_eq!(bal(&mut s, "hot"), Decimal::from(1025) - hot_spent);
    assert_eq!(bal(&mut s, "cool"), -cool_spent);
    let charged: i64 = s
        .query_one("SELECT count(DISTINCT transaction_id) FROM credyt.entries WHERE kind = 'charge'", &[])
        .unwrap()
        .get(0);
    assert_eq!(charged as usize, all.len(), "one transaction per distinct key");
    assert!(ledger_problems(&mut s).is_empty(), "{:?}", ledger_problems(&mut s));
}

#[test]
fn a_prepaid_wallet_never_goes_below_zero_under_concurrency() {
    let mut admin = connect();
    let t = Tenant::create(&mut admin, "Prepaid");
    let mut s = t.session();
    s.batch_execute(
        "SELECT credyt.create_customer('p', 'p'); \
         SELECT credyt.adjust('p', 'seed', 'USD', 10, 'external_topup'); \
         SELECT credyt.adjust('p', 'promo', 'USD', 2.5, 'gift'); \
         SELECT credyt.set_overdraft('p', 'USD', 0);",
    )
    .unwrap();
    let charged: Decimal = on_clients(CLIENTS, &t.role, |i, c| {
        let mut ok = Decimal::ZERO;
        for j in 0..40 {
            let key = format!("p-{i}-{j}");
            match c.query_one("SELECT credyt.charge('p', $1, 'USD', 0.37)", &[&key]) {
                Ok(_) => ok += Decimal::new(37, 2),
                Err(e) => assert_eq!(sqlstate(&e), "CY402", "{e}"),
            }
        }
        ok
    })
    .into_iter()
    .sum();
    let balance: Decimal = s.query_one("SELECT credyt.balance('p')", &[]).unwrap().get(0);
    assert_eq!(balance, Decimal::new(125, 1) - charged);
    assert!(balance >= Decimal::ZERO && balance < Decimal::new(37, 2), "balance {balance}");
    assert!(ledger_problems(&mut s).is_empty());
}

#[test]
fn many_concurrent_charges_crossing_thresholds_emit_one_event_and_one_topup() {
    let mut admin = connect();
    let t = Tenant::create(&mut admin, "Threshold");
    let mut s = t.session();
    s.batch_execute(
        "SELECT credyt.create_customer('p', 'p'); SELECT credyt.adjust('p', 'seed', 'USD', 100, 'external_topup'); \
         SELECT credyt.set_threshold('p', 'USD', 50); SELECT credyt.set_auto_topup('p', 'USD', 45, 100);",
    )
    .unwrap();
    on_clients(CLIENTS, &t.role, |i, c| {
        for j in 0..10 {
            // amounts alternate, so clients cross the threshold at different calls
            if j % 2 == 0 {
                c.batch_execute(&format!("SELECT credyt.charge('p', 't-{i}-{j}', 'USD', 1)")).unwrap();
            } else {
                c.batch_execute(&format!("SELECT credyt.charge('p', 't-{i}-{j}', 'USD', 0.5)")).unwrap();
            }
        }
    });
    assert_eq!(text(&mut s, "SELECT credyt.balance('p')::text"), "40");
    assert_eq!(
        text(&mut s, "SELECT count(*)::text FROM credyt.events WHERE event_type = 'balance_threshold_hit'"),
        "1"
    );
    // and exactly one pending top-up for the wallet, with one request event
    assert_eq!(text(&mut s, "SELECT count(*)::text FROM credyt.topups"), "1");
    assert_eq!(text(&mut s, "SELECT count(*)::text FROM credyt.events WHERE event_type = 'auto_topup.requested'"), "1");
    assert!(ledger_problems(&mut s).is_empty());
}

#[test]
fn an_outcome_and_its_reversal_raced_against_themselves_charge_and_refund_once() {
    let mut admin = connect();
    let t = Tenant::create(&mut admin, "Outcome race");
    let mut s = t.session();
    s.batch_execute(
        r#"SELECT credyt.create_customer('Ann', 'ann'); SELECT credyt.adjust('ann', 'g', 'USD', 100, 'gift');
           SELECT credyt.create_product('agent', 'Agent', '[{"type": "outcome", "outcome_type": "won",
             "settlement_window": "P7D", "pricing": [{"asset": "USD", "values": [{"percent": 10}]}]}]');
           SELECT credyt.subscribe('ann', 'agent', starts_at => now() - interval '1 hour');"#,
    )
    .unwrap();
    let recorded = on_clients(CLIENTS, &t.role, |_, c| {
        let row =
            c.query_one("SELECT duplicate FROM credyt.record_outcome('ann', 'o1', 'won', value => 250)", &[]).unwrap();
        row.get::<_, bool>(0)
    });
    assert_eq!(recorded.iter().filter(|d| !**d).count(), 1, "one original, the rest replays");
    assert_eq!(text(&mut s, "SELECT credyt.balance('ann')::text"), "75");
    let reversals = on_clients(CLIENTS, &t.role, |_, c| text(c, "SELECT credyt.reverse_outcome('o1')"));
    assert!(reversals.iter().all(|r| r == &reversals[0]), "{reversals:?}");
    assert_eq!(text(&mut s, "SELECT credyt.balance('ann')::text"), "100");
    assert_eq!(text(&mut s, "SELECT count(*)::text FROM credyt.transactions WHERE kind = 'outcome_reversal'"), "1");
    assert_eq!(text(&mut s, "SELECT count(*)::text FROM credyt.events WHERE event_type = 'outcome.reversed'"), "1");
    assert!(ledger_problems(&mut s).is_empty(), "{:?}", ledger_problems(&mut s));
}

/// 8 clients each sending 30 events of their own for one customer: the statuses.
fn send_concurrently(t: &Tenant) -> Vec<String> {
    on_clients(CLIENTS, &t.role, |i, c| {
        let mut got = Vec::new();
        for k in 0..30 {
            let sql = format!("SELECT status FROM credyt.record_usage('ann', 'c{i}-{k}', 'chat')");
            got.push(text(c, &sql));
        }
        got
    })
    .into_iter()
    .flatten()
    .collect()
}

fn rules_tenant(name: &str, rule: &str) -> (Tenant, postgres::Client) {
    let mut admin = connect();
    let t = Tenant::create(&mut admin, name);
    let mut s = t.session();
    s.batch_execute(&format!(
        r#"SELECT credyt.create_customer('Ann', 'ann');
           SELECT credyt.create_product('chat', 'Chat', '[{{"type": "usage_based",
             "usage_calculation": {{"event_type": "chat", "usage_type": "unit"}},
             "pricing": [{{"asset": "USD", "values": [{{"unit_price": 1}}]}}]}}]');
           SELECT credyt.subscribe('ann', 'chat', starts_at => now() - interval '1 hour');
           {rule}"#
    ))
    .unwrap();
    (t, s)
}

#[test]
fn concurrent_senders_against_a_usage_limit_let_exactly_max_events_through() {
    let (t, mut s) = rules_tenant("Limit race", "SELECT credyt.set_usage_limit('chat', 50, '1 month');");
    let got = send_concurrently(&t);
    assert_eq!(got.iter().filter(|s| *s == "charged").count(), 50);
    assert_eq!(got.iter().filter(|s| *s == "limited").count(), 190);
    assert_eq!(text(&mut s, "SELECT count(*)::text FROM credyt.usage"), "50");
    assert_eq!(text(&mut s, "SELECT count(*)::text FROM credyt.events WHERE event_type = 'usage.limit_exceeded'"), "1");
    assert_eq!(text(&mut s, "SELECT credyt.balance('ann')::text"), "-50");
    assert!(ledger_problems(&mut s).is_empty(), "{:?}", ledger_problems(&mut s));
}

#[test]
fn concurrent_senders_against_a_free_tier_of_100_get_exactly_100_free() {
    let (t, mut s) = rules_tenant("Free tier race", "SELECT credyt.set_free_tier('chat', 100, 'month');");
    let got = send_concurrently(&t);
    assert_eq!(got.iter().filter(|s| *s == "free").count(), 100);
    assert_eq!(got.iter().filter(|s| *s == "charged").count(), 140);
    assert_eq!(text(&mut s, "SELECT count(*)::text FROM credyt.usage WHERE status = 'free'"), "100");
    assert_eq!(text(&mut s, "SELECT used || '/' || remaining FROM credyt.free_tier_usage('ann', 'chat')"), "240/0");
    assert_eq!(text(&mut s, "SELECT credyt.balance('ann')::text"), "-140");
    assert!(ledger_problems(&mut s).is_empty(), "{:?}", ledger_problems(&mut s));
}
