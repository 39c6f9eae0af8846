// Credits: grants, expiry policies, recurring periods (SPEC §7, §11).

#[pg_test]
fn a_one_off_grant_is_idempotent_drawn_first_and_expires() {
    fresh_account("Acme");
    Spi::run("SELECT credyt.create_customer('Ann', 'ann'); SELECT credyt.adjust('ann', 'top', 'USD', 10, 'external_topup')").unwrap();
    let g = text("SELECT credyt.grant('ann', 'welcome', 'USD', 5, expires_at => now() + interval '1 day')");
    assert!(g.starts_with("grt_"));
    assert_eq!(text("SELECT credyt.grant('ann', 'welcome', 'USD', 5.00, expires_at => now() + interval '1 day')"), g);
    assert_eq!(sqlstate_of("SELECT credyt.grant('ann', 'welcome', 'USD', 6, expires_at => now() + interval '1 day')").as_deref(), Some("CY409"));
    Spi::run("SELECT credyt.charge('ann', 'c1', 'USD', 2)").unwrap();
    assert_eq!(text(&format!("SELECT remaining::text FROM credyt.lots WHERE source = 'grant:{g}'")), "3");
    assert_eq!(balance("ann"), "13");
    assert_eq!(text("SELECT (credyt.tick(now() + interval '2 days')->>'lots_expired')"), "1");
    assert_eq!(text("SELECT (credyt.tick(now() + interval '2 days')->>'lots_expired')"), "0", "ticking twice expires once");
    assert_eq!(balance("ann"), "10");
    assert_eq!(
        text("SELECT string_agg(account_id || ' ' || amount::text || ' ' || kind, ', ' ORDER BY entry_id) FROM credyt.entries \
              WHERE kind IN ('grant', 'expiry')"),
        "default:USD 5 grant, promotions:USD -5 grant, default:USD -3 expiry, expired:USD 3 expiry"
    );
    assert_eq!(
        text("SELECT string_agg(event_type || ':' || (payload->'data'->>'grant_id') || ':' || coalesce(payload->'data'->>'expired', payload->'data'->>'amount'), ',' ORDER BY created_at, event_type DESC) FROM credyt.events"),
        "grant.issued:welcome:5,grant.expired:welcome:3"
    );
    assert_ledger_ok();
}

#[pg_test]
fn rollover_carries_the_remainder_up_to_the_cap() {
    fresh_account("Acme");
    Spi::run("SELECT credyt.create_customer('Ann', 'ann')").unwrap();
    Spi::run("SELECT credyt.grant('ann', 'g', 'USD', 10, purpose => 'bundled', expires_at => now() + interval '1 day', \
              on_expiry => 'rollover', rollover_cap => 4)").unwrap();
    Spi::run("SELECT credyt.charge('ann', 'c', 'USD', 3)").unwrap();
    Spi::run("SELECT credyt.tick(now() + interval '2 days')").unwrap();
    // (the carried-over lot is effective from the expiry, in this test's future: read the ledger balance)
    let ledger_balance = || text("SELECT balance::text FROM credyt.wallet_account");
    assert_eq!(ledger_balance(), "4");
    assert_eq!(
        text("SELECT string_agg(concat_ws(' ', l.purpose, l.amount, l.remaining, l.expires_at IS NULL, left(l.source, 9)), ', ' \
              ORDER BY t.seq) FROM credyt.lots l JOIN credyt.lot t ON t.id = l.id"),
        "bundled 10 0 f grant:grt, bundled 4 4 t rollover:"
    );
    assert_eq!(text("SELECT payload->'data'->>'rolled_over' || '/' || (payload->'data'->>'expired') FROM credyt.events WHERE event_type = 'grant.expired'"), "4/3");
    // uncapped rollover keeps everything
    Spi::run("SELECT credyt.grant('ann', 'g2', 'USD', 2, expires_at => now() + interval '3 days', on_expiry => 'rollover')").unwrap();
    Spi::run("SELECT credyt.tick(now() + interval '4 days')").unwrap();
    assert_eq!(ledger_balance(), "6");
    assert_ledger_ok();
}

#[pg_test]
fn recurring_grants_issue_one_lot_per_period() {
    fresh_account("Acme");
    // These look at events after moving the clock months ahead: keep them.
    Spi::run("SET LOCAL credyt.event_retention = 0").unwrap();
    Spi::run("SELECT credyt.create_customer('Ann', 'ann')").unwrap();
    Spi::run("SELECT credyt.grant('ann', 'monthly', 'USD', 5, purpose => 'bundled', every => '1 month')").unwrap();
    // amount@months-from-now-to-effective-months-to-expiry
    let lots = || text("SELECT string_agg(amount || '@' || to_char(age(effective_at, now()), 'MM') || '-' || to_char(age(expires_at, now()), 'MM'), ',' ORDER BY effective_at) FROM credyt.lots");
    assert_eq!(lots(), "5@00-01");
    assert_eq!(text("SELECT credyt.tick(now() + interval '1 month 1 day')::text"), r#"{"fees_charged": 0, "lots_expired": 1, "events_pruned": 0, "grants_issued": 1, "holds_expired": 0, "counters_pruned": 0, "subscriptions_activated": 0}"#);
    assert_eq!(text("SELECT credyt.tick(now() + interval '1 month 1 day')::text"), r#"{"fees_charged": 0, "lots_expired": 0, "events_pruned": 0, "grants_issued": 0, "holds_expired": 0, "counters_pruned": 0, "subscriptions_activated": 0}"#);
    assert_eq!(lots(), "5@00-01,5@01-02");
    // a clock that was down for a period does not issue the period that has passed
    Spi::run("SELECT credyt.tick(now() + interval '3 months 1 day')").unwrap();
    assert_eq!(lots(), "5@00-01,5@01-02,5@03-04");
    assert_eq!(count("SELECT count(*) FROM credyt.events WHERE event_type = 'grant.issued'"), 3);
    assert_eq!(count("SELECT count(*) FROM credyt.events WHERE event_type = 'grant.expired'"), 2);
    // a recurring grant that ends stops issuing
    Spi::run("SELECT credyt.grant('ann', 'two', 'USD', 1, every => '1 day', expires_at => now() + interval '2 days')").unwrap();
    Spi::run("SELECT credyt.tick(now() + interval '1 day 1 hour')").unwrap();
    Spi::run("SELECT credyt.tick(now() + interval '5 days')").unwrap();
    assert_eq!(count("SELECT count(*) FROM credyt.lots l JOIN credyt.grants g ON l.source = 'grant:' || g.id WHERE g.grant_id = 'two'"), 2);
    assert_eq!(count("SELECT count(*) FROM credyt.grants WHERE grant_id = 'two' AND next_at IS NULL"), 1);
    assert_ledger_ok();
}

#[pg_test]
fn bad_grants_are_rejected_and_write_nothing() {
    fresh_account("Acme");
    Spi::run("SELECT credyt.create_customer('Ann', 'ann')").unwrap();
    let before = ledger_rows() + count("SELECT count(*) FROM credyt.credit_grant");
    let cases = [
        ("SELECT credyt.grant('ann', 'x', 'USD', 1, on_expiry => 'keep')", "CY400"),
        ("SELECT credyt.grant('ann', 'x', 'USD', 1, on_expiry => 'rollover', rollover_cap => -1)", "CY400"),
        ("SELECT credyt.grant('ann', 'x', 'USD', 1, rollover_cap => 1)", "CY400"),
        ("SELECT credyt.grant('ann', 'x', 'USD', 1, every => '0 days')", "CY400"),
        ("SELECT credyt.grant('ann', 'x', 'USD', 1, every => '-1 day')", "CY400"),
        ("SELECT credyt.grant('ann', 'x', 'USD', 1, every => '2 years')", "CY400"),
        ("SELECT credyt.grant('ann', 'x', 'USD', 1, purpose => 'free')", "CY400"),
        ("SELECT credyt.grant('ann', 'x', 'USD', 1, priority => -1)", "CY400"),
        ("SELECT credyt.grant('ann', 'x', 'USD', 0)", "CY400"),
        ("SELECT credyt.grant('ann', 'x', 'USD', 1, expires_at => now() - interval '1 day')", "CY400"),
        ("SELECT credyt.grant('ann', 'x', 'USD', 1, effective_at => 'infinity')", "CY400"),
        ("SELECT credyt.grant('ann', '', 'USD', 1)", "CY400"),
        ("SELECT credyt.grant('ann', 'x', 'XYZ', 1)", "CY404"),
        ("SELECT credyt.grant('ghost', 'x', 'USD', 1)", "CY404"),
    ];
    for (sql, code) in cases {
        assert_eq!(sqlstate_of(sql).as_deref(), Some(code), "{sql}");
    }
    assert_eq!(ledger_rows() + count("SELECT count(*) FROM credyt.credit_grant"), before);
}

#[pg_test]
fn entitlements_are_issued_at_subscribe_renewed_and_stopped_by_cancel() {
    fresh_account("Acme");
    // These look at events after moving the clock months ahead: keep them.
    Spi::run("SET LOCAL credyt.event_retention = 0").unwrap();
    let prices = r#"[{"type": "usage_based", "usage_calculation": {"event_type": "chat", "usage_type": "unit"},
                      "pricing": [{"asset": "USD", "values": [{"unit_price": 1}]}]}]"#;
    let ents = r#"[{"name": "monthly credits", "asset": "USD", "amount": 10, "every": "P1M", "on_expiry": "rollover"},
                   {"name": "welcome", "asset": "USD", "amount": 3, "purpose": "promotion"}]"#;
    Spi::run(&format!("SELECT credyt.create_product('pro', 'Pro', '{prices}', '{ents}')")).unwrap();
    Spi::run("SELECT credyt.create_customer('Ann', 'ann')").unwrap();
    let sub = text("SELECT credyt.subscribe('ann', 'pro')");
    assert_eq!(balance("ann"), "13");
    assert_eq!(
        text("SELECT string_agg(purpose || ' ' || amount || ' ' || (every IS NOT NULL), ', ' ORDER BY grant_id) FROM credyt.grants"),
        "bundled 10 true, promotion 3 false"
    );
    Spi::run("SELECT * FROM credyt.record_usage('ann', 'e1', 'chat')").unwrap(); // draws the promotion first
    // next period: the first month's 10 rolls over, a fresh 10 arrives
    assert_eq!(text("SELECT credyt.tick(now() + interval '1 month 1 day')->>'grants_issued'"), "1");
    assert_eq!(text("SELECT balance::text FROM credyt.wallet_account"), "22");
    // cancelled: no more periods
    Spi::run(&format!("SELECT credyt.cancel_subscription('{sub}', now() + interval '1 month 2 days')")).unwrap();
    assert_eq!(text("SELECT credyt.tick(now() + interval '3 months')->>'grants_issued'"), "0");
    assert_eq!(count("SELECT count(*) FROM credyt.events WHERE event_type = 'grant.issued'"), 3);
    assert_ledger_ok();
}

#[pg_test]
fn thresholds_fire_once_per_downward_crossing_and_rearm() {
    fresh_account("Acme");
    Spi::run("SELECT credyt.create_customer('Ann', 'ann'); SELECT credyt.adjust('ann', 't1', 'USD', 20, 'external_topup')").unwrap();
    Spi::run("SELECT credyt.set_threshold('ann', 'USD', 10)").unwrap();
    let hits = || count("SELECT count(*) FROM credyt.events WHERE event_type = 'balance_threshold_hit'");
    Spi::run("SELECT credyt.charge('ann', 'c1', 'USD', 5)").unwrap();
    assert_eq!(hits(), 0);
    Spi::run("SELECT credyt.charge('ann', 'c2', 'USD', 6)").unwrap(); // 9 < 10
    assert_eq!(hits(), 1);
    assert_eq!(
        text("SELECT concat_ws('|', payload->'data'->>'account_id', payload->'data'->'available', payload->'data'->'threshold', \
              json_typeof(payload->'data'->'available')) FROM credyt.events WHERE event_type = 'balance_threshold_hit'"),
        "default:USD|9|10|number"
    );
    Spi::run("SELECT credyt.charge('ann', 'c3', 'USD', 1)").unwrap(); // still below: no second event
    Spi::run("SELECT credyt.adjust('ann', 't2', 'USD', 1, 'external_topup')").unwrap(); // 9: not re-armed
    Spi::run("SELECT * FROM credyt.record_usage('ann', 'u1', 'none')").unwrap();
    assert_eq!(hits(), 1);
    Spi::run("SELECT credyt.adjust('ann', 't3', 'USD', 5, 'external_topup')").unwrap(); // 14: re-armed
    Spi::run("SELECT credyt.authorize('ann', 'h1', 'USD', 5)").unwrap(); // a hold crosses too: 9
    assert_eq!(hits(), 2);
    Spi::run("SELECT credyt.release('h1')").unwrap(); // 14: re-armed
    Spi::run("SELECT credyt.charge('ann', 'c4', 'USD', 4.5)").unwrap(); // 9.5
    assert_eq!(hits(), 3);
    // set while already below: fires at once; removing it stops everything
    Spi::run("SELECT credyt.set_threshold('ann', 'USD', 100)").unwrap();
    assert_eq!(hits(), 4);
    Spi::run("SELECT credyt.set_threshold('ann', 'USD', NULL)").unwrap();
    Spi::run("SELECT credyt.charge('ann', 'c5', 'USD', 9)").unwrap();
    assert_eq!(hits(), 4);
    assert_eq!(sqlstate_of("SELECT credyt.set_threshold('ann', 'XYZ', 1)").as_deref(), Some("CY404"));
    assert_eq!(sqlstate_of("SELECT credyt.set_threshold('ann', 'USD', 'NaN')").as_deref(), Some("CY400"));
    assert_eq!(sqlstate_of("SELECT credyt.set_threshold('ghost', 'USD', 1)").as_deref(), Some("CY404"));
    assert_ledger_ok();
}

#[pg_test]
fn auto_topup_requests_once_and_completes_idempotently() {
    fresh_account("Acme");
    Spi::run("SELECT credyt.create_customer('Ann', 'ann'); SELECT credyt.adjust('ann', 't1', 'USD', 20, 'external_topup')").unwrap();
    Spi::run("SELECT credyt.set_auto_topup('ann', 'USD', 10, 25)").unwrap();
    let pending = || text("SELECT coalesce(string_agg(status, ','), '') FROM credyt.topups WHERE status = 'pending'");
    Spi::run("SELECT credyt.charge('ann', 'c1', 'USD', 5)").unwrap();
    assert_eq!(pending(), "");
    Spi::run("SELECT credyt.charge('ann', 'c2', 'USD', 6)").unwrap(); // 9 < 10
    Spi::run("SELECT credyt.charge('ann', 'c3', 'USD', 1)").unwrap(); // still one pending
    assert_eq!(pending(), "pending");
    assert_eq!(text("SELECT available || '/' || pending_in FROM credyt.wallet('ann')"), "8/25");
    let top = text("SELECT id FROM credyt.topups");
    assert!(top.starts_with("top_"));
    assert_eq!(text("SELECT payload->'data'->>'topup_id' FROM credyt.events WHERE event_type = 'auto_topup.requested'"), top);
    Spi::run(&format!("SELECT credyt.complete_topup('{top}', true, 'pi_123')")).unwrap();
    Spi::run(&format!("SELECT credyt.complete_topup('{top}', true, 'pi_123')")).unwrap(); // harmless twice
    assert_eq!(sqlstate_of(&format!("SELECT credyt.complete_topup('{top}', false)")).as_deref(), Some("CY409"));
    assert_eq!(text("SELECT available || '/' || pending_in FROM credyt.wallet('ann')"), "33/0");
    assert_eq!(text(&format!("SELECT purpose || ' ' || amount FROM credyt.lots WHERE source = 'topup:{top}'")), "paid 25");
    assert_eq!(count("SELECT count(*) FROM credyt.events WHERE event_type = 'auto_topup.succeeded'"), 1);
    // a failed payment clears the pending top-up; the next fall asks again
    Spi::run("SELECT credyt.charge('ann', 'c4', 'USD', 30)").unwrap(); // 3
    let second = text("SELECT id FROM credyt.topups WHERE status = 'pending'");
    Spi::run(&format!("SELECT credyt.complete_topup('{second}', false)")).unwrap();
    assert_eq!(count("SELECT count(*) FROM credyt.events WHERE event_type = 'auto_topup.failed'"), 1);
    assert_eq!(text("SELECT available || '/' || pending_in FROM credyt.wallet('ann')"), "3/0");
    Spi::run("SELECT credyt.charge('ann', 'c5', 'USD', 1)").unwrap();
    assert_eq!(pending(), "pending");
    // bad input
    for (sql, code) in [
        ("SELECT credyt.set_auto_topup('ann', 'USD', 10, 0)", "CY400"),
        ("SELECT credyt.set_auto_topup('ann', 'USD', 10, 1.001)", "CY400"),
        ("SELECT credyt.set_auto_topup('ann', 'USD', NULL, 5)", "CY400"),
        ("SELECT credyt.set_auto_topup('ann', 'XYZ', 10, 5)", "CY404"),
        ("SELECT credyt.complete_topup('top_nope', true)", "CY404"),
        ("SELECT credyt.complete_topup(NULL, true)", "CY400"),
    ] {
        assert_eq!(sqlstate_of(sql).as_deref(), Some(code), "{sql}");
    }
    assert_ledger_ok();
}

/// Moves the lots whose source is like `source` into the past: effective `from` ago,
/// expiring `to` ago (the in-database tests cannot wait for the wall clock). Wallet
/// rows keep when time next changes their figures (fresh_until): moving time by hand
/// makes that moment now.
fn backdate_lots(source: &str, from: &str, to: &str) {
    Spi::run(&format!(
        "UPDATE credyt.lot SET effective_at = now() - interval '{from}', expires_at = now() - interval '{to}' \
         WHERE source LIKE '{source}' AND remaining > 0"
    ))
    .unwrap();
    Spi::run("UPDATE credyt.wallet_account SET fresh_until = now()").unwrap();
}

#[pg_test]
fn the_reserve_pool_takes_expired_credit_and_is_drawn_after_all_lots() {
    fresh_account("Acme");
    Spi::run("SELECT credyt.create_customer('Ann', 'ann')").unwrap();
    Spi::run("SELECT credyt.grant('ann', 'g', 'USD', 10, expires_at => now() + interval '1 day', on_expiry => 'reserve')").unwrap();
    Spi::run("SELECT credyt.charge('ann', 'c1', 'USD', 3)").unwrap();
    // The pool's lot is dated by the expiry (a clock time, never the wall's): let the
    // grant's lot have expired already, so the pool is live for the charges below.
    backdate_lots("grant:%", "2 days", "1 day");
    assert_eq!(text("SELECT credyt.tick(now())->>'lots_expired'"), "1");
    let wallets = || text("SELECT string_agg(account_id || '=' || balance, ' ' ORDER BY account_id) FROM \
                           (SELECT name || ':' || asset AS account_id, balance FROM credyt.wallet_account) w");
    assert_eq!(wallets(), "default:USD=0 reserve:USD=7");
    assert_eq!(
        text("SELECT payload->'data'->>'reserved' || '/' || (payload->'data'->>'expired') FROM credyt.events WHERE event_type = 'grant.expired'"),
        "7/0"
    );
    // the pool is drawn after every lot of the wallet (even a paid one), before debt
    Spi::run("SELECT credyt.adjust('ann', 'top', 'USD', 5, 'external_topup')").unwrap();
    Spi::run("SELECT credyt.charge('ann', 'c2', 'USD', 8)").unwrap(); // 5 paid + 3 from the pool
    assert_eq!(wallets(), "default:USD=0 reserve:USD=4");
    assert_eq!(
        text("SELECT string_agg(account_id || ' ' || amount::text, ', ' ORDER BY entry_id) FROM credyt.entries \
              WHERE transaction_id = (SELECT id FROM credyt.ledger_txn WHERE idem_key = 'c2')"),
        "default:USD -5, reserve:USD -3, revenue:USD 8"
    );
    // the pool counts toward the overdraft limit; past it, debt
    Spi::run("SELECT credyt.set_overdraft('ann', 'USD', 0)").unwrap();
    assert_eq!(sqlstate_of("SELECT credyt.charge('ann', 'c3', 'USD', 4.01)").as_deref(), Some("CY402"));
    Spi::run("SELECT credyt.set_overdraft('ann', 'USD', NULL)").unwrap();
    Spi::run("SELECT credyt.charge('ann', 'c4', 'USD', 6)").unwrap(); // 4 from the pool, 2 of debt
    assert_eq!(wallets(), "default:USD=-2 reserve:USD=0");
    assert_eq!(text("SELECT debt::text FROM credyt.wallet_account WHERE name = 'default'"), "2");
    // usage charged in a batch takes the same path for a customer with a pool
    let prices = r#"[{"type": "usage_based", "usage_calculation": {"event_type": "chat", "usage_type": "unit"},
                      "pricing": [{"asset": "USD", "values": [{"unit_price": 1}]}]}]"#;
    Spi::run(&format!("SELECT credyt.create_product('p', 'P', '{prices}')")).unwrap();
    Spi::run("SELECT credyt.subscribe('ann', 'p')").unwrap();
    Spi::run("SELECT credyt.grant('ann', 'g2', 'USD', 5, expires_at => now() + interval '3 days', on_expiry => 'reserve')").unwrap(); // repays the debt of 2
    backdate_lots("grant:%", "2 days", "1 second");
    Spi::run("SELECT credyt.tick(now())").unwrap();
    assert_eq!(wallets(), "default:USD=0 reserve:USD=3");
    Spi::run(r#"SELECT * FROM credyt.record_usage('[{"customer": "ann", "event_id": "e1", "event_type": "chat"}]'::jsonb)"#).unwrap();
    assert_eq!(wallets(), "default:USD=0 reserve:USD=2");
    assert_ledger_ok();
}

#[pg_test]
fn periods_take_both_forms_and_last_an_hour() {
    fresh_account("Acme");
    Spi::run("SELECT credyt.create_customer('Ann', 'ann')").unwrap();
    let prices = r#"[{"type": "usage_based", "usage_calculation": {"event_type": "chat", "usage_type": "unit"},
                      "pricing": [{"asset": "USD", "values": [{"unit_price": 1}]}]}]"#;
    let ents = r#"[{"name": "monthly", "asset": "USD", "amount": 10, "every": "1 month"},
                   {"name": "weekly", "asset": "USD", "amount": 1, "every": "P1W"}]"#;
    Spi::run(&format!("SELECT credyt.create_product('pro', 'Pro', '{prices}', '{ents}')")).unwrap();
    Spi::run("SELECT credyt.subscribe('ann', 'pro')").unwrap();
    assert_eq!(text("SELECT string_agg(every::text, ', ' ORDER BY amount) FROM credyt.grants"), "7 days, 1 mon");
    let before = ledger_rows() + count("SELECT count(*) FROM credyt.credit_grant") + count("SELECT count(*) FROM credyt.product");
    for (sql, message) in [
        (format!(r#"SELECT credyt.create_product('bad', 'Bad', '{prices}', '[{{"name": "x", "asset": "USD", "amount": 1, "every": "PT1M"}}]')"#),
         "entitlements[0].every must be at least one hour"),
        (format!(r#"SELECT credyt.create_product('bad', 'Bad', '{prices}', '[{{"name": "x", "asset": "USD", "amount": 1, "every": "fortnightly"}}]')"#),
         "entitlements[0].every \"fortnightly\" is not a period"),
        ("SELECT credyt.grant('ann', 'tiny', 'USD', 1, every => '1 microsecond')".into(), "every must be at least one hour"),
        ("SELECT credyt.grant('ann', 'tiny', 'USD', 1, every => '59 minutes')".into(), "every must be at least one hour"),
        ("SELECT credyt.grant('ann', 'tiny', 'USD', 1, every => '1 month -40 days')".into(), "every must not be negative"),
        ("SELECT credyt.grant('ann', 'tiny', 'USD', 1, every => '13 months')".into(), "every must be at most one year"),
    ] {
        let e = error_of(&sql).unwrap_or_else(|| panic!("accepted: {sql}"));
        assert!(e.starts_with("CY400") && e.contains(message), "{sql}: {e}");
    }
    assert_eq!(ledger_rows() + count("SELECT count(*) FROM credyt.credit_grant") + count("SELECT count(*) FROM credyt.product"), before);
    Spi::run("SELECT credyt.grant('ann', 'hourly', 'USD', 1, every => '1 hour')").unwrap();
}

#[pg_test]
fn old_recurring_grants_issue_the_current_period() {
    fresh_account("Acme");
    Spi::run("SELECT credyt.create_customer('Ann', 'ann')").unwrap();
    // 50 years of daily periods: the catch-up jumps, then issues today's lot alone
    Spi::run("SELECT credyt.grant('ann', 'old', 'USD', 1, effective_at => now() - interval '50 years', every => '1 day')").unwrap();
    assert_eq!(count("SELECT count(*) FROM credyt.lots"), 1);
    assert_eq!(
        text("SELECT (effective_at <= now() AND expires_at > now() AND expires_at - effective_at = interval '1 day')::text FROM credyt.lots"),
        "true"
    );
    assert_eq!(text("SELECT (next_at = (SELECT expires_at FROM credyt.lots))::text FROM credyt.grants"), "true");
    assert_eq!(balance("ann"), "1");
    // a subscription that started 50 years ago with a monthly entitlement: the same
    let prices = r#"[{"type": "usage_based", "usage_calculation": {"event_type": "chat", "usage_type": "unit"},
                      "pricing": [{"asset": "USD", "values": [{"unit_price": 1}]}]}]"#;
    let ents = r#"[{"name": "monthly", "asset": "USD", "amount": 10, "every": "P1M"}]"#;
    Spi::run(&format!("SELECT credyt.create_product('pro', 'Pro', '{prices}', '{ents}')")).unwrap();
    Spi::run("SELECT credyt.subscribe('ann', 'pro', starts_at => now() - interval '50 years')").unwrap();
    assert_eq!(count("SELECT count(*) FROM credyt.lots"), 2);
    assert_eq!(balance("ann"), "11");
    // and the clock goes on from there, one period at a time
    assert_eq!(text("SELECT credyt.tick(now() + interval '1 day 1 hour')->>'grants_issued'"), "1");
    assert_eq!(text("SELECT credyt.tick(now() + interval '1 day 1 hour')->>'grants_issued'"), "0");
    assert_ledger_ok();
}

#[pg_test]
fn one_tick_serves_every_account_up_to_its_limit() {
    Spi::run("SET LOCAL credyt.event_retention = 0").unwrap();
    Spi::run("SET LOCAL credyt.tick_limit = 5").unwrap();
    fresh_account("Busy");
    Spi::run("SELECT credyt.create_customer('Ann', 'ann')").unwrap();
    for i in 0..12 {
        Spi::run(&format!("SELECT credyt.grant('ann', 'daily-{i}', 'USD', 1, every => '1 day')")).unwrap();
    }
    fresh_account("Quiet");
    Spi::run("SELECT credyt.create_customer('Bob', 'bob')").unwrap();
    Spi::run("SELECT credyt.grant('bob', 'daily', 'USD', 1, every => '1 day')").unwrap();
    Spi::run("RESET credyt.account").unwrap();
    // the busy account gets 5 per tick; the quiet one is served in the first
    let issued = || text("SELECT credyt.tick(now() + interval '1 day 1 hour')->>'grants_issued'");
    assert_eq!(issued(), "6");
    assert_eq!(count("SELECT count(*) FROM credyt.lot l JOIN credyt.customer c ON c.id = l.customer_id WHERE c.external_id = 'bob'"), 2);
    assert_eq!(issued(), "5");
    assert_eq!(issued(), "2");
    assert_eq!(issued(), "0");
    assert_ledger_ok();
}

#[pg_test]
fn rollover_and_reserve_lots_take_the_clock_time() {
    fresh_account("Acme");
    Spi::run("SELECT credyt.create_customer('Ann', 'ann')").unwrap();
    Spi::run("SELECT credyt.grant('ann', 'r', 'USD', 10, expires_at => now() + interval '1 day', on_expiry => 'rollover')").unwrap();
    Spi::run("SELECT credyt.grant('ann', 's', 'USD', 5, expires_at => now() + interval '1 day', on_expiry => 'reserve')").unwrap();
    // a tick run for a time ahead of the wall clock
    assert_eq!(text("SELECT credyt.tick(now() + interval '3 days')->>'lots_expired'"), "2");
    assert_eq!(
        text("SELECT string_agg(left(source, 8) || ' ' || (effective_at = now() + interval '1 day'), ', ' ORDER BY source) \
              FROM credyt.lots WHERE source LIKE 'r%'"),
        "reserve: true, rollover true"
    );
    assert_ledger_ok();
}

/// A Stripe webhook event about a top-up, and its Stripe-Signature header at `t`.
#[allow(dead_code)]
fn stripe_event(secret: &str, id: &str, kind: &str, object: serde_json::Value, t: i64) -> (String, String) {
    let body = serde_json::json!({"id": id, "type": kind, "data": {"object": object}}).to_string();
    let header = format!("t={t},v1={}", credyt_core::stripe::sign(secret, t, body.as_bytes()));
    (body, header)
}

#[pg_test]
fn checkout_top_ups_complete_through_signed_stripe_events_once() {
    let acc = fresh_account("Acme");
    assert_eq!(sqlstate_of("SELECT credyt.connect_stripe('pk_test_123456789012', 'whsec_abcdef')").as_deref(), Some("CY400"));
    assert_eq!(sqlstate_of("SELECT credyt.connect_stripe('sk_test_123456789012', 'nope')").as_deref(), Some("CY400"));
    Spi::run("SELECT credyt.connect_stripe('sk_test_123456789012', 'whsec_abcdef')").unwrap();
    assert_eq!(text("SELECT key_hint FROM credyt.stripe_connections"), "sk_test_…9012");
    Spi::run("SELECT credyt.create_customer('Ann', 'ann')").unwrap();
    Spi::run("SELECT credyt.create_asset('credits', \"precision\" => 0, rate => 0.01)").unwrap();
    // $10 buys 1,000 credits at the asset's rate; 0.015 USD is refused (cents).
    let top = text("SELECT credyt.initiate_topup('ann', 10, 'USD', 'credits', return_url => 'https://app.example/ok')");
    assert_eq!(text(&format!("SELECT status || ' ' || amount || ' ' || payment_amount || ' ' || currency FROM credyt.topups WHERE id = '{top}'")),
               "initiated 1000 10 USD");
    assert_eq!(text(&format!("SELECT (credit_expires_at - now() BETWEEN interval '364 days' AND interval '366 days')::text FROM credyt.topups WHERE id = '{top}'")), "true");
    assert_eq!(sqlstate_of("SELECT credyt.initiate_topup('ann', 0.015)").as_deref(), Some("CY400"));
    assert_eq!(sqlstate_of("SELECT credyt.initiate_topup('ann', 10, 'EUR', 'credits')").as_deref(), Some("CY404"));
    assert_eq!(sqlstate_of("SELECT credyt.initiate_topup('ann', 10, return_url => 'javascript:alert(1)')").as_deref(), Some("CY400"));
    assert_eq!(sqlstate_of("SELECT credyt.initiate_topup('ann', 10, credit_expires_at => now() - interval '1 day')").as_deref(), Some("CY400"));
    // Only a server role records sessions or reads the key.
    assert_eq!(sqlstate_of(&format!("SELECT credyt._server_topup_session('{top}', 'cs_1', 'https://pay', now())")).as_deref(), Some("CY403"));
    assert_eq!(sqlstate_of("SELECT * FROM credyt._server_stripe_key()").as_deref(), Some("CY403"));
    assert_eq!(sqlstate_of("SELECT * FROM credyt._server_claim_auto_topups(10, 60)").as_deref(), Some("CY403"));
    assert_eq!(sqlstate_of(&format!("SELECT credyt._server_auto_topup_result('{top}', true, 'pi_x')")).as_deref(), Some("CY403"));
    let now = count("SELECT extract(epoch FROM now())::bigint");
    let meta = serde_json::json!({"credyt_connection": acc, "credyt_account": acc, "credyt_topup": top});
    let paid = serde_json::json!({"id": "cs_1", "payment_status": "paid", "payment_intent": "pi_1", "customer": "cus_1", "metadata": meta});
    let call = |(body, header): (String, String)| outcome_of(&format!("SELECT credyt.stripe_webhook($b${body}$b$, '{header}')"));
    // Tampered, stale and wrongly signed events change nothing.
    let (body, header) = stripe_event("whsec_abcdef", "evt_1", "checkout.session.completed", paid.clone(), now);
    assert!(call((body.replace("paid", "PAID"), header.clone())).starts_with("CY400 invalid Stripe signature"));
    assert!(call(stripe_event("whsec_abcdef", "evt_1", "checkout.session.completed", paid.clone(), now - 400)).starts_with("CY400"));
    assert!(call(stripe_event("whsec_other", "evt_1", "checkout.session.completed", paid.clone(), now)).starts_with("CY400"));
    assert_eq!(text(&format!("SELECT status FROM credyt.topups WHERE id = '{top}'")), "initiated");
    // The signed event credits 1,000 credits as a paid lot expiring with the top-up; once.
    assert_eq!(call((body.clone(), header.clone())), "succeeded");
    assert_eq!(call((body, header)), "duplicate");
    assert_eq!(text("SELECT credyt.balance('ann', 'credits')::text"), "1000");
    assert_eq!(text("SELECT purpose || ' ' || (expires_at IS NOT NULL) FROM credyt.lots WHERE asset = 'credits'"), "paid true");
    assert_eq!(text(&format!("SELECT status || ' ' || payment_reference FROM credyt.topups WHERE id = '{top}'")), "succeeded pi_1");
    // A later event of another kind about the same top-up does not undo it.
    let failed = serde_json::json!({"id": "pi_1", "metadata": meta});
    assert!(call(stripe_event("whsec_abcdef", "evt_2", "payment_intent.payment_failed", failed, now)).starts_with("ignored"));
    assert_eq!(text("SELECT credyt.balance('ann', 'credits')::text"), "1000");
    // An unpaid session that expires: expired, nothing credited; events not about credyt: ignored.
    let late = text("SELECT credyt.initiate_topup('ann', 5)");
    let meta2 = serde_json::json!({"credyt_connection": acc, "credyt_account": acc, "credyt_topup": late});
    assert_eq!(call(stripe_event("whsec_abcdef", "evt_3", "checkout.session.expired", serde_json::json!({"id": "cs_2", "metadata": meta2}), now)), "expired");
    assert_eq!(call(stripe_event("whsec_abcdef", "evt_4", "customer.created", serde_json::json!({"id": "cus_2"}), now)), "ignored");
    assert_eq!(text("SELECT credyt.balance('ann')::text"), "0");
    assert_eq!(text("SELECT stripe_customer FROM credyt.stripe_customer"), "cus_1");
    assert_ledger_ok();
}
