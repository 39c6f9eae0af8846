// Wallets and the ledger (SPEC §5, §2, §12).

#[pg_test]
fn grants_are_consumed_before_paid_balance() {
    fresh_account("Acme");
    Spi::run("SELECT credyt.create_customer('Ann', 'ann')").unwrap();
    Spi::run("SELECT credyt.adjust('ann', 'topup-1', 'USD', 20, 'external_topup')").unwrap();
    Spi::run("SELECT credyt.adjust('ann', 'gift-1', 'USD', 5, 'gift')").unwrap();
    assert_eq!(balance("ann"), "25");
    Spi::run("SELECT credyt.charge('ann', 'c1', 'USD', 7.5)").unwrap();
    assert_eq!(balance("ann"), "17.5");
    assert_eq!(text("SELECT remaining::text FROM credyt.lots WHERE purpose = 'promotion'"), "0");
    assert_eq!(text("SELECT remaining::text FROM credyt.lots WHERE purpose = 'paid'"), "17.5");
    // The charge's entries: one per lot drawn, and revenue.
    assert_eq!(
        text("SELECT string_agg(account_id || ' ' || amount::text || ' ' || kind, ', ' ORDER BY entry_id) \
              FROM credyt.entries WHERE kind = 'charge'"),
        "default:USD -5 charge, default:USD -2.5 charge, revenue:USD 7.5 charge"
    );
    assert_ledger_ok();
}

#[pg_test]
fn burn_down_order_is_priority_then_expiry_then_age() {
    fresh_account("Acme");
    Spi::run("SELECT credyt.create_customer('Ann', 'ann')").unwrap();
    Spi::run("SELECT credyt.adjust('ann', 'p1', 'USD', 1, 'external_topup')").unwrap();
    Spi::run("SELECT credyt.adjust('ann', 'g-noexp', 'USD', 1, 'gift')").unwrap();
    Spi::run("SELECT credyt.adjust('ann', 'g-late', 'USD', 1, 'gift', expires_at => now() + interval '30 days')").unwrap();
    Spi::run("SELECT credyt.adjust('ann', 'g-soon', 'USD', 1, 'gift', expires_at => now() + interval '1 day')").unwrap();
    Spi::run("SELECT credyt.adjust('ann', 'g-newer', 'USD', 1, 'gift')").unwrap();
    // Charges and returns the transaction_ids of the lots it drew, in draw order.
    let order = |amount: &str, key: &str| {
        Spi::run(&format!("SELECT credyt.charge('ann', '{key}', 'USD', {amount})")).unwrap();
        text(&format!(
            "SELECT string_agg(src.idem_key, ',' ORDER BY e.id) FROM credyt.entry e \
             JOIN credyt.ledger_txn ch ON ch.id = e.txn_id JOIN credyt.lot l ON l.id = e.lot_id \
             JOIN credyt.ledger_txn src ON src.id = l.txn_id WHERE ch.idem_key = '{key}' AND e.amount < 0"
        ))
    };
    assert_eq!(order("1", "c1"), "g-soon");
    assert_eq!(order("1", "c2"), "g-late");
    assert_eq!(order("1.5", "c3"), "g-noexp,g-newer");
    assert_eq!(order("1", "c4"), "g-newer,p1");
    assert_eq!(balance("ann"), "0.5");
    assert_ledger_ok();
}

#[pg_test]
fn debt_is_created_and_repaid_by_the_next_credit() {
    fresh_account("Acme");
    Spi::run("SELECT credyt.create_customer('Ann', 'ann')").unwrap();
    Spi::run("SELECT credyt.adjust('ann', 't1', 'USD', 3, 'external_topup')").unwrap();
    Spi::run("SELECT credyt.charge('ann', 'c1', 'USD', 10)").unwrap();
    assert_eq!(balance("ann"), "-7");
    assert_eq!(text("SELECT debt::text FROM credyt.wallet_account"), "7");
    Spi::run("SELECT credyt.adjust('ann', 'g1', 'USD', 5, 'gift')").unwrap();
    assert_eq!(balance("ann"), "-2");
    Spi::run("SELECT credyt.adjust('ann', 't2', 'USD', 10, 'external_topup')").unwrap();
    assert_eq!(balance("ann"), "8");
    assert_eq!(text("SELECT debt::text FROM credyt.wallet_account"), "0");
    assert_eq!(
        text("SELECT string_agg(remaining::text, ',' ORDER BY created_at, id) FROM credyt.lot"),
        "0,0,8"
    );
    assert_ledger_ok();
}

#[pg_test]
fn overdraft_limit_rejects_and_writes_nothing() {
    fresh_account("Acme");
    Spi::run("SELECT credyt.create_customer('Ann', 'ann')").unwrap();
    Spi::run("SELECT credyt.adjust('ann', 't1', 'USD', 3, 'external_topup')").unwrap();
    Spi::run("SELECT credyt.set_overdraft('ann', 'USD', 0)").unwrap();
    let before = ledger_rows();
    assert_eq!(sqlstate_of("SELECT credyt.charge('ann', 'c1', 'USD', 3.01)").as_deref(), Some("CY402"));
    assert_eq!(ledger_rows(), before);
    Spi::run("SELECT credyt.charge('ann', 'c1', 'USD', 3)").unwrap();
    assert_eq!(balance("ann"), "0");
    Spi::run("SELECT credyt.set_overdraft('ann', 'USD', 2)").unwrap();
    Spi::run("SELECT credyt.charge('ann', 'c2', 'USD', 2)").unwrap();
    assert_eq!(sqlstate_of("SELECT credyt.charge('ann', 'c3', 'USD', 0.000000000001)").as_deref(), Some("CY402"));
    // NULL lifts the limit again, as by default.
    Spi::run("SELECT credyt.set_overdraft('ann', 'USD', NULL)").unwrap();
    Spi::run("SELECT credyt.charge('ann', 'c3', 'USD', 100)").unwrap();
    assert_eq!(balance("ann"), "-102");
    assert_ledger_ok();
}

#[pg_test]
fn idempotent_replays_and_conflicts() {
    fresh_account("Acme");
    let cust = text("SELECT credyt.create_customer('Ann', 'ann')");
    let t1 = text("SELECT credyt.adjust('ann', 'k1', 'USD', 10, 'external_topup')");
    let rows = ledger_rows();
    // The same request again (by id instead of external id, 10.00 instead of 10).
    assert_eq!(text(&format!("SELECT credyt.adjust('{cust}', 'k1', 'USD', 10.00, 'external_topup')")), t1);
    assert_eq!(ledger_rows(), rows);
    assert_eq!(sqlstate_of("SELECT credyt.adjust('ann', 'k1', 'USD', 11, 'external_topup')").as_deref(), Some("CY409"));
    assert_eq!(sqlstate_of("SELECT credyt.charge('ann', 'k1', 'USD', 10)").as_deref(), Some("CY409"));
    let c1 = text("SELECT credyt.charge('ann', 'c1', 'USD', 4, description => 'x')");
    assert_eq!(text("SELECT credyt.charge('ann', 'c1', 'USD', 4, description => 'x')"), c1);
    assert_eq!(sqlstate_of("SELECT credyt.charge('ann', 'c1', 'USD', 4, description => 'y')").as_deref(), Some("CY409"));
    assert_eq!(balance("ann"), "6");
    assert_ledger_ok();
}

#[pg_test]
fn bad_input_gets_a_cy_error_and_writes_nothing() {
    fresh_account("Acme");
    Spi::run("SELECT credyt.create_customer('Ann', 'ann')").unwrap();
    Spi::run("SELECT credyt.adjust('ann', 'seed', 'USD', 10, 'external_topup')").unwrap();
    let before = ledger_rows();
    let long_key = "k".repeat(256);
    let cases: Vec<(String, &str)> = vec![
        ("SELECT credyt.charge('ann', 'x', 'USD', 'NaN')".into(), "CY400"),
        ("SELECT credyt.charge('ann', 'x', 'USD', 'Infinity')".into(), "CY400"),
        ("SELECT credyt.charge('ann', 'x', 'USD', '-Infinity')".into(), "CY400"),
        ("SELECT credyt.charge('ann', 'x', 'USD', -1)".into(), "CY400"),
        ("SELECT credyt.charge('ann', 'x', 'USD', 0)".into(), "CY400"),
        ("SELECT credyt.charge('ann', 'x', 'USD', 0.0000000000001)".into(), "CY400"),
        ("SELECT credyt.charge('ann', 'x', 'USD', 1e16)".into(), "CY400"),
        ("SELECT credyt.charge('ann', 'x', 'USD', NULL)".into(), "CY400"),
        ("SELECT credyt.charge('ann', '', 'USD', 1)".into(), "CY400"),
        (format!("SELECT credyt.charge('ann', '{long_key}', 'USD', 1)"), "CY400"),
        ("SELECT credyt.charge('ann', NULL, 'USD', 1)".into(), "CY400"),
        ("SELECT credyt.charge('ann', 'x', 'usd', 1)".into(), "CY404"),
        ("SELECT credyt.charge('ann', 'x', 'XYZ', 1)".into(), "CY404"),
        ("SELECT credyt.charge('nobody', 'x', 'USD', 1)".into(), "CY404"),
        ("SELECT credyt.charge(NULL, 'x', 'USD', 1)".into(), "CY400"),
        ("SELECT credyt.charge('ann', 'x', 'USD', 1, account_name => 'Bad Name')".into(), "CY400"),
        ("SELECT credyt.charge('ann', 'x', 'USD', 1, metadata => '\"str\"')".into(), "CY400"),
        ("SELECT credyt.adjust('ann', 'x', 'USD', 1, 'bonus')".into(), "CY400"),
        ("SELECT credyt.adjust('ann', 'x', 'USD', -1, 'gift')".into(), "CY400"),
        ("SELECT credyt.adjust('ann', 'x', 'USD', 1, 'external_refund')".into(), "CY400"),
        ("SELECT credyt.adjust('ann', 'x', 'USD', 1.001, 'external_topup')".into(), "CY400"),
        ("SELECT credyt.adjust('ann', 'x', 'USD', 0, 'other')".into(), "CY400"),
        ("SELECT credyt.adjust('ann', 'x', 'USD', 1, 'gift', expires_at => now() - interval '1 day')".into(), "CY400"),
        ("SELECT credyt.adjust('ann', 'x', 'USD', 1, 'gift', effective_at => now() + interval '2 days', expires_at => now() + interval '1 day')".into(), "CY400"),
        ("SELECT credyt.adjust('ann', 'x', 'USD', 1, 'gift', expires_at => 'infinity')".into(), "CY400"),
        ("SELECT credyt.adjust('ann', 'x', 'USD', -1, 'other', expires_at => now() + interval '1 day')".into(), "CY400"),
        ("SELECT credyt.adjust('ann', 'x', 'USD', -11, 'external_refund')".into(), "CY402"),
        ("SELECT credyt.set_overdraft('ann', 'USD', -1)".into(), "CY400"),
        ("SELECT credyt.set_overdraft('ann', 'USD', 'NaN')".into(), "CY400"),
        ("SELECT credyt.balance('ann', 'EURO')".into(), "CY404"),
        ("SELECT credyt.balance_at('ann', 'USD', NULL)".into(), "CY400"),
        ("SELECT credyt.create_customer('Bob', '')".into(), "CY400"),
        ("SELECT credyt.create_customer('Bob', 'ann')".into(), "CY409"),
        ("SELECT * FROM credyt.wallet('nobody')".into(), "CY404"),
        ("SELECT * FROM credyt.verify_ledger('acc_nope')".into(), "CY404"),
    ];
    for (sql, code) in &cases {
        assert_eq!(sqlstate_of(sql).as_deref(), Some(*code), "{sql}");
    }
    assert_eq!(ledger_rows(), before, "a failed call wrote something");
    assert_eq!(balance("ann"), "10");
    assert_ledger_ok();
}

#[pg_test]
fn refunds_draw_paid_lots_only() {
    fresh_account("Acme");
    Spi::run("SELECT credyt.create_customer('Ann', 'ann')").unwrap();
    Spi::run("SELECT credyt.adjust('ann', 'g', 'USD', 5, 'gift')").unwrap();
    Spi::run("SELECT credyt.adjust('ann', 't', 'USD', 10, 'external_topup')").unwrap();
    assert_eq!(sqlstate_of("SELECT credyt.adjust('ann', 'r', 'USD', -12, 'external_refund')").as_deref(), Some("CY402"));
    Spi::run("SELECT credyt.adjust('ann', 'r', 'USD', -10, 'external_refund')").unwrap();
    assert_eq!(balance("ann"), "5");
    assert_eq!(text("SELECT remaining::text FROM credyt.lots WHERE purpose = 'promotion'"), "5");
    // A negative 'other' adjustment draws any lot, like a charge.
    Spi::run("SELECT credyt.adjust('ann', 'o', 'USD', -6, 'other')").unwrap();
    assert_eq!(balance("ann"), "-1");
    assert_eq!(
        text("SELECT string_agg(account_id || ' ' || amount::text, ', ' ORDER BY entry_id) FROM credyt.entries WHERE transaction_id = \
              (SELECT id FROM credyt.ledger_txn WHERE idem_key = 'r')"),
        "default:USD -10, external:USD 10"
    );
    assert_ledger_ok();
}

#[pg_test]
fn future_lots_are_not_available_until_effective() {
    fresh_account("Acme");
    Spi::run("SELECT credyt.create_customer('Ann', 'ann')").unwrap();
    Spi::run("SELECT credyt.adjust('ann', 'later', 'USD', 5, 'gift', effective_at => now() + interval '1 day')").unwrap();
    assert_eq!(balance("ann"), "0");
    Spi::run("SELECT credyt.charge('ann', 'c', 'USD', 2)").unwrap();
    assert_eq!(balance("ann"), "-2");
    assert_eq!(text("SELECT remaining::text FROM credyt.lot"), "5");
    assert_ledger_ok();
}

#[pg_test]
fn wallet_lists_accounts_and_balance_at_reads_history() {
    fresh_account("Acme");
    Spi::run("SELECT credyt.create_customer('Ann', 'ann')").unwrap();
    Spi::run("SELECT credyt.adjust('ann', 't1', 'USD', 10, 'external_topup')").unwrap();
    Spi::run("SELECT credyt.adjust('ann', 't2', 'EUR', 4, 'gift', account_name => 'promo')").unwrap();
    Spi::run("SELECT credyt.charge('ann', 'c1', 'USD', 2.5)").unwrap();
    assert_eq!(
        text("SELECT string_agg(account_id || '=' || available::text || '/' || pending_in::text || '/' || pending_out::text, ' ') \
              FROM credyt.wallet('ann')"),
        "default:USD=7.5/0/0 promo:EUR=4/0/0"
    );
    assert_eq!(text("SELECT credyt.balance('ann', 'EUR', 'promo')::text"), "4");
    assert_eq!(text("SELECT credyt.balance_at('ann', 'USD', now())::text"), "7.5");
    assert_eq!(text("SELECT credyt.balance_at('ann', 'USD', now() - interval '1 second')::text"), "0");
    assert_eq!(text("SELECT credyt.balance('ann', 'JPY')::text"), "0");
    assert_ledger_ok();
}

#[pg_test]
fn verify_ledger_reports_tampering() {
    fresh_account("Acme");
    Spi::run("SELECT credyt.create_customer('Ann', 'ann')").unwrap();
    Spi::run("SELECT credyt.adjust('ann', 't1', 'USD', 10, 'external_topup')").unwrap();
    assert_ledger_ok();
    // The test runs as superuser, which can write the tables directly.
    Spi::run("UPDATE credyt.lot SET remaining = remaining + 1").unwrap();
    Spi::run("UPDATE credyt.entry SET amount = amount + 1 WHERE system").unwrap();
    Spi::run("UPDATE credyt.wallet_account SET debt = -1, overdraft_limit = -5").unwrap();
    Spi::run("INSERT INTO credyt.entry (account_id, txn_id, customer_id, system, ledger_name, asset, amount, kind) \
              SELECT account_id, txn_id, customer_id, true, 'revenue', asset, 0, 'charge' FROM credyt.entry LIMIT 1").unwrap();
    Spi::run("UPDATE credyt.lot SET purpose = 'free'").unwrap();
    Spi::run("UPDATE credyt.wallet_account SET live = live + 2").unwrap();
    let problems = ledger_problems().join("\n");
    assert!(problems.contains("wallet_available_mismatch"), "{problems}");
    assert!(problems.contains("wallet_malformed"), "{problems}");
    assert!(problems.contains("entry_zero"), "{problems}");
    assert!(problems.contains("lot_malformed"), "{problems}");
    assert!(problems.contains("transaction_unbalanced"), "{problems}");
    assert!(problems.contains("lot_remaining_mismatch"), "{problems}");
    assert!(problems.contains("wallet_lots_mismatch"), "{problems}");
}

#[pg_test]
fn verify_ledger_notices_orphan_rows() {
    let acc = fresh_account("Acme");
    Spi::run("SELECT credyt.create_customer('Ann', 'ann'); SELECT credyt.adjust('ann', 't1', 'USD', 5, 'external_topup')").unwrap();
    assert_ledger_ok();
    // what a restore that lost the customers would leave: their rows, without them
    Spi::run("SET LOCAL session_replication_role = replica").unwrap();
    Spi::run("DELETE FROM credyt.customer").unwrap();
    Spi::run("SET LOCAL session_replication_role = origin").unwrap();
    let problems = ledger_problems().join("\n");
    assert!(problems.contains("customer_missing: 1 lot rows name customer cust_"), "{problems}");
    // and rows of an account that is gone are seen from the platform's scope
    Spi::run("SET LOCAL session_replication_role = replica").unwrap();
    Spi::run(&format!("DELETE FROM credyt.account WHERE id = '{acc}'")).unwrap();
    Spi::run("SET LOCAL session_replication_role = origin").unwrap();
    Spi::run("RESET credyt.account").unwrap();
    let problems = ledger_problems().join("\n");
    assert!(problems.contains(&format!("account_missing: 1 lot rows belong to account {acc}, which does not exist")), "{problems}");
}
