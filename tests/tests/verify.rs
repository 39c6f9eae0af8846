//! verify_ledger() finds what it is there to find: each of its checks against a ledger
//! damaged on purpose (as the superuser, around the API, in a transaction rolled back),
//! so that an empty verify_ledger() after every other test means something.

use credyt_tests::*;

const PRICES: &str = r#"[{"type": "usage_based",
  "usage_calculation": {"event_type": "chat", "usage_type": "unit_and_volume", "volume_field": "output_tokens"},
  "pricing": [{"asset": "USD", "values": [{"unit_price": 0.001, "volume_rate": 0.00002}]}]}]"#;

/// The checks that `sql` makes verify_ledger(account) report, from inside a
/// transaction that is rolled back.
fn checks_after(admin: &mut postgres::Client, account: &str, sql: &str) -> Vec<String> {
    let mut tx = admin.transaction().unwrap();
    tx.batch_execute(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
    let mut checks: Vec<String> = tx
        .query("SELECT \"check\" FROM credyt.verify_ledger($1)", &[&account])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    tx.rollback().unwrap();
    checks.sort();
    checks.dedup();
    checks
}

#[test]
fn verify_ledger_reports_each_kind_of_damage() {
    let mut admin = connect();
    let t = Tenant::create(&mut admin, "Verify damage");
    let mut s = t.session();
    // ann: a paid lot and an expiring promotion, charged by usage and by charge();
    // bob: no credit, so his charge is debt (an entry without a lot).
    s.batch_execute(&format!(
        "SELECT credyt.create_product('chat', 'Chat', '{PRICES}'); SELECT credyt.create_customer('Ann', 'ann'); \
         SELECT credyt.create_customer('Bob', 'bob'); SELECT credyt.subscribe('ann', 'chat'); \
         SELECT credyt.adjust('ann', 'seed', 'USD', 100, 'external_topup'); \
         SELECT credyt.grant('ann', 'welcome', 'USD', 5, expires_at => now() + interval '30 days'); \
         SELECT * FROM credyt.record_usage('ann', 'e1', 'chat', '{{\"output_tokens\": 500}}'); \
         SELECT * FROM credyt.record_usage('ann', 'e2', 'chat', '{{\"output_tokens\": 20}}'); \
         SELECT credyt.charge('ann', 'c1', 'USD', 1.25); SELECT credyt.charge('bob', 'b1', 'USD', 2);"
    ))
    .unwrap();
    assert!(ledger_problems(&mut s).is_empty(), "{:?}", ledger_problems(&mut s));
    let a = &t.account;
    let ann = text(&mut s, "SELECT id FROM credyt.customers WHERE external_id = 'ann'");
    let bob = text(&mut s, "SELECT id FROM credyt.customers WHERE external_id = 'bob'");
    let e1_txn = text(&mut s, "SELECT transaction_id FROM credyt.usage WHERE event_id = 'e1'");
    // UPDATE target SET set WHERE the target's rows
    let update = |(table, rows): &(&str, String), set: &str| format!("UPDATE credyt.{table} SET {set} WHERE {rows}");
    let ann_wallet = ("wallet_account", format!("customer_id = '{ann}' AND name = 'default'"));
    let bob_wallet = ("wallet_account", format!("customer_id = '{bob}' AND name = 'default'"));
    let promo = ("lot", format!("customer_id = '{ann}' AND expires_at IS NOT NULL"));
    let e1_leg = ("entry", format!("txn_id = '{e1_txn}' AND NOT system"));
    let e1_system = ("entry", format!("txn_id = '{e1_txn}' AND system"));
    let usage = ("usage_event", format!("account_id = '{a}' AND event_id = 'e1'"));

    // (damage, the one check it must raise, whether that check is the only one raised)
    let cases: Vec<(String, &str, bool)> = vec![
        (update(&e1_system, "amount = amount - 0.5"), "transaction_unbalanced", true),
        (update(&ann_wallet, "balance = balance + 1"), "wallet_balance_mismatch", false),
        (update(&e1_leg, "ledger_name = 'ghost'"), "entries_without_wallet", false),
        (update(&bob_wallet, "debt = debt + 1"), "wallet_debt_mismatch", false),
        (update(&ann_wallet, "balance = balance + 1"), "wallet_lots_mismatch", false),
        (update(&promo, "remaining = remaining - 1"), "lot_remaining_mismatch", false),
        (update(&promo, "remaining = amount + 1"), "lot_out_of_range", false),
        (update(&promo, "purpose = 'gift'"), "lot_malformed", true),
        (update(&promo, "expires_at = effective_at"), "lot_malformed", false),
        (update(&ann_wallet, "overdraft_limit = -1"), "wallet_malformed", true),
        (update(&e1_system, "amount = 0"), "entry_zero", false),
        (
            format!("UPDATE credyt.entry SET txn_id = 'txn_ghost' WHERE txn_id = '{e1_txn}'"),
            "entry_without_transaction",
            false,
        ),
        (update(&usage, "fees = jsonb_set(fees, '{0,amount}', '5')"), "usage_charge_mismatch", true),
        (format!("DELETE FROM credyt.entry WHERE txn_id = '{e1_txn}'"), "usage_charge_mismatch", false),
        (update(&usage, "fees = '{}'"), "usage_charge_mismatch", true),
        (update(&usage, "txn_id = NULL"), "usage_charge_mismatch", false),
        (update(&ann_wallet, "live = live + 1"), "wallet_available_mismatch", true),
        (update(&promo, "spent = NOT spent"), "lot_spent_mismatch", false),
        (update(&usage, "customer_id = 'cus_ghost'"), "customer_missing", false),
        (
            format!("DELETE FROM credyt.customer_ref WHERE customer_id = '{bob}' AND ref = 'bob'"),
            "customer_ref_missing",
            true,
        ),
    ];
    let mut failures = Vec::new();
    for (damage, expected, alone) in &cases {
        let checks = checks_after(&mut admin, a, damage);
        let ok = if *alone { checks == [*expected] } else { checks.iter().any(|c| c == expected) };
        if !ok {
            failures
                .push(format!("{damage}: expected {expected}{}, got {checks:?}", if *alone { " alone" } else { "" }));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    // every damage was rolled back
    assert!(ledger_problems(&mut s).is_empty(), "{:?}", ledger_problems(&mut s));
}

#[test]
fn verify_ledger_from_the_platform_reports_rows_of_a_missing_account() {
    let mut admin = connect();
    let ghost = unique("acct_ghost");
    let mut tx = admin.transaction().unwrap();
    // a row of an account that is not there (a restore that lost the accounts)
    tx.batch_execute(&format!(
        "INSERT INTO credyt.usage_event (account_id, event_id, customer_id, event_type, data, occurred_at, \
           occurred_at_given, status, fees, charged) \
         VALUES ('{ghost}', 'e1', 'cus_ghost', 'chat', '{{}}', now(), false, 'no_match', '[]', 0)"
    ))
    .unwrap();
    let details: Vec<String> = tx
        .query("SELECT detail FROM credyt.verify_ledger() WHERE \"check\" = 'account_missing'", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    tx.rollback().unwrap();
    assert!(details.iter().any(|d| d.contains(&ghost)), "{details:?}");
}
