//! A role bound to one tenant tries to read and write another tenant's data through
//! every public function and every table, over a real connection, and fails each time.

use credyt_tests::*;
use std::collections::BTreeSet;

/// What B has: entries, lots, balance, seats and outcomes.
const B_ROWS: &str = "SELECT (SELECT count(*) FROM credyt.entry) || '/' || (SELECT count(*) FROM credyt.lot) || '/' \
     || credyt.balance('b-ext') || '/' || (SELECT string_agg(quantity || ':' || array_to_string(users, ','), ',') \
     FROM credyt.seats) || '/' || (SELECT string_agg(status, ',') FROM credyt.outcomes)";

#[test]
fn a_bound_role_cannot_reach_another_tenant() {
    let mut admin = connect();
    let a = Tenant::create(&mut admin, "Tenant A");
    let b = Tenant::create(&mut admin, "Tenant B");
    let mut sb = b.session();
    let b_cust = text(&mut sb, "SELECT credyt.create_customer('Bea', 'b-ext')");
    sb.batch_execute("SELECT credyt.adjust('b-ext', 'b-top', 'USD', 50, 'external_topup')").unwrap();
    sb.batch_execute(
        r#"SELECT credyt.create_product('b-prod', 'B product', '[{"type": "usage_based",
             "usage_calculation": {"event_type": "chat", "usage_type": "unit"},
             "pricing": [{"asset": "USD", "values": [{"unit_price": 1}]}]}]');
           SELECT credyt.authorize('b-ext', 'b-hold', 'USD', 5);
           SELECT credyt.create_asset('b_credits', rate => 0.01);
           SELECT credyt.create_vendor('B vendor', 'b-vendor');
           SELECT credyt.connect_stripe('sk_test_bbbbbbbbbbbbbbbb', 'whsec_bbbbbbbbbbbb');"#,
    )
    .unwrap();
    let b_sub = text(&mut sb, "SELECT credyt.subscribe('b-ext', 'b-prod')");
    // A seat subscription with a user, and a charged outcome
    sb.batch_execute(
        r#"SELECT credyt.create_product('b-team', 'B team', '[{"type": "seat",
             "billing_model": {"type": "recurring", "recurring": {"interval": "month"}},
             "pricing": [{"asset": "USD", "values": [{"unit_price": 1}]}]},
           {"type": "outcome", "outcome_type": "won", "settlement_window": "P30D",
             "pricing": [{"asset": "USD", "values": [{"unit_price": 1}]}]}]');"#,
    )
    .unwrap();
    let b_seats = text(&mut sb, "SELECT credyt.subscribe('b-ext', 'b-team')");
    sb.batch_execute(&format!(
        "SELECT credyt.assign_seat('{b_seats}', 'b-user'); SELECT * FROM credyt.record_outcome('b-ext', 'b-out', 'won')"
    ))
    .unwrap();
    sb.batch_execute("SELECT credyt.set_auto_topup('b-ext', 'USD', 100, 10)").unwrap(); // 50 < 100: requests one
    let b_topup = text(&mut sb, "SELECT id FROM credyt.topups");
    let b_hold = text(&mut sb, "SELECT id FROM credyt.holds WHERE hold_id = 'b-hold'");
    // (port 9, discard: nothing listens, so no worker delivers anywhere real)
    let b_hook = text(&mut sb, "SELECT id FROM credyt.create_webhook('http://127.0.0.1:9/b')");
    let b_event = text(&mut sb, "SELECT credyt.send_test_event()");
    let b_checkout = text(&mut sb, "SELECT credyt.initiate_topup('b-ext', 10)");
    let b_grant =
        text(&mut sb, "SELECT grant_id FROM credyt.create_portal_grant('b-ext', 'https://b/ok', 'https://b/ko')");
    let b_key = text(&mut sb, "SELECT credyt.create_api_key('b key', 'live')");
    let b_key_id = text(&mut sb, "SELECT id FROM credyt.api_keys");
    let b_rows_before = text(&mut sb, B_ROWS);
    let mut sa = a.session();
    text(&mut sa, "SELECT credyt.create_customer('Ann', 'a-ext')");
    let b_products: i64 =
        admin.query_one("SELECT count(*) FROM credyt.product WHERE account_id = $1", &[&b.account]).unwrap().get(0);
    let role = bound_role(&mut admin, &a.account);
    let mut app = connect_as(&role);
    assert_eq!(text(&mut app, "SELECT credyt.current_account()"), a.account);

    // Every function the role may execute, by name: each is attacked below.
    let granted: BTreeSet<String> = app
        .query(
            "SELECT DISTINCT p.proname::text FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace \
             WHERE n.nspname = 'credyt' AND has_function_privilege(p.oid, 'EXECUTE')",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut attacked = BTreeSet::new();
    let mut attack = |app: &mut postgres::Client, name: &str, sql: String, want: &str| {
        attacked.insert(name.to_string());
        assert_eq!(fails(app, &sql), want, "{sql}");
    };

    // B's customer, named by id or by external id, is unknown from A's scope.
    for r in [b_cust.as_str(), "b-ext"] {
        attack(&mut app, "balance", format!("SELECT credyt.balance('{r}')"), "CY404");
        attack(&mut app, "balance_at", format!("SELECT credyt.balance_at('{r}', 'USD', now())"), "CY404");
        attack(&mut app, "wallet", format!("SELECT * FROM credyt.wallet('{r}')"), "CY404");
        attack(&mut app, "adjust", format!("SELECT credyt.adjust('{r}', 'x1', 'USD', 1, 'gift')"), "CY404");
        attack(&mut app, "adjust", format!("SELECT credyt.adjust('{r}', 'x2', 'USD', -1, 'other')"), "CY404");
        attack(&mut app, "charge", format!("SELECT credyt.charge('{r}', 'x3', 'USD', 1)"), "CY404");
        attack(&mut app, "set_overdraft", format!("SELECT credyt.set_overdraft('{r}', 'USD', 0)"), "CY404");
        attack(&mut app, "record_usage", format!("SELECT * FROM credyt.record_usage('{r}', 'z1', 'chat')"), "CY404");
        attack(
            &mut app,
            "record_usage",
            format!(
                r#"SELECT * FROM credyt.record_usage('[{{"customer": "{r}", "event_id": "z2", "event_type": "chat"}}]'::jsonb)"#
            ),
            "CY404",
        );
        attack(&mut app, "authorize", format!("SELECT credyt.authorize('{r}', 'z3', 'USD', 1)"), "CY404");
        attack(&mut app, "subscribe", format!("SELECT credyt.subscribe('{r}', 'b-prod')"), "CY404");
        attack(&mut app, "grant", format!("SELECT credyt.grant('{r}', 'z5', 'USD', 1)"), "CY404");
        attack(&mut app, "set_threshold", format!("SELECT credyt.set_threshold('{r}', 'USD', 1)"), "CY404");
        attack(&mut app, "set_auto_topup", format!("SELECT credyt.set_auto_topup('{r}', 'USD', 1, 5)"), "CY404");
        attack(&mut app, "update_customer", format!("SELECT credyt.update_customer('{r}', name => 'Eve')"), "CY404");
        attack(&mut app, "record_outcome", format!("SELECT * FROM credyt.record_outcome('{r}', 'z6', 'won')"), "CY404");
        attack(&mut app, "customer_stats", format!("SELECT * FROM credyt.customer_stats('{r}')"), "CY404");
        attack(&mut app, "free_tier_usage", format!("SELECT * FROM credyt.free_tier_usage('{r}', 'chat')"), "CY404");
        attack(&mut app, "set_free_tier", format!("SELECT credyt.set_free_tier('chat', 1, 'day', '{r}')"), "CY404");
        attack(
            &mut app,
            "set_usage_limit",
            format!("SELECT credyt.set_usage_limit('chat', 1, '1 hour', '{r}')"),
            "CY404",
        );
    }
    // B's seats and outcomes, by id
    let seat_calls = [
        ("set_seats", format!("SELECT credyt.set_seats('{b_seats}', 9)")),
        ("assign_seat", format!("SELECT credyt.assign_seat('{b_seats}', 'eve')")),
        ("unassign_seat", format!("SELECT credyt.unassign_seat('{b_seats}', 'b-user')")),
        ("reverse_outcome", "SELECT credyt.reverse_outcome('b-out')".to_string()),
    ];
    for (name, sql) in seat_calls.clone() {
        attack(&mut app, name, sql, "CY404");
    }
    // A's roll-up names A alone (1 / 0 when no row is B's: the division by zero is the proof)
    attack(
        &mut app,
        "account_rollup",
        format!("SELECT 1 / count(*)::int FROM credyt.account_rollup() WHERE account_id = '{}'", b.account),
        "22012",
    );
    attack(&mut app, "revoke_api_key", format!("SELECT credyt.revoke_api_key('{b_key_id}')"), "CY404");
    // authenticate() checks a key, but only a server role serves the key's account: B's
    // own key leaves a bound role where it was.
    attack(&mut app, "authenticate", "SELECT credyt.authenticate('sk_live_nope')".into(), "CY401");
    app.batch_execute("BEGIN").unwrap();
    assert_eq!(text(&mut app, &format!("SELECT credyt.authenticate('{b_key}')")), b.account);
    assert_eq!(text(&mut app, "SELECT credyt.current_account()"), a.account);
    assert_eq!(fails(&mut app, "SELECT credyt.balance('b-ext')"), "CY404");
    app.batch_execute("ROLLBACK").unwrap();
    for h in ["b-hold", b_hold.as_str()] {
        attack(&mut app, "release", format!("SELECT credyt.release('{h}')"), "CY404");
        attack(
            &mut app,
            "record_usage",
            format!("SELECT * FROM credyt.record_usage('a-ext', 'z4', 'chat', hold_id => '{h}')"),
            "CY404",
        );
    }
    attack(&mut app, "cancel_subscription", format!("SELECT credyt.cancel_subscription('{b_sub}')"), "CY404");
    attack(
        &mut app,
        "update_webhook",
        format!("SELECT credyt.update_webhook('{b_hook}', url => 'http://127.0.0.1:9/a')"),
        "CY404",
    );
    attack(
        &mut app,
        "update_webhook",
        format!("SELECT credyt.update_webhook('{b_hook}', rotate_secret => true)"),
        "CY404",
    );
    attack(&mut app, "delete_webhook", format!("SELECT credyt.delete_webhook('{b_hook}')"), "CY404");
    attack(&mut app, "webhook_secret", format!("SELECT credyt.webhook_secret('{b_hook}')"), "CY404");
    attack(&mut app, "replay_event", format!("SELECT credyt.replay_event('{b_event}')"), "CY404");
    attack(&mut app, "send_test_event", format!("SELECT credyt.send_test_event(webhook_id => '{b_hook}')"), "CY404");
    attack(&mut app, "complete_topup", format!("SELECT credyt.complete_topup('{b_topup}', true)"), "CY404");
    attack(&mut app, "create_product_version", "SELECT credyt.create_product_version('b-prod', '[]')".into(), "CY404");
    // B's catalog, named from A's scope: unknown (CY404); from a forged scope, CY403 below.
    let catalog_calls = [
        ("publish_product_version", "SELECT credyt.publish_product_version('b-prod', 1)".to_string()),
        ("set_default_version", "SELECT credyt.set_default_version('b-prod', 1)".into()),
        ("archive_product_version", "SELECT credyt.archive_product_version('b-prod', 1)".into()),
        ("archive_product", "SELECT credyt.archive_product('b-prod')".into()),
        (
            "simulate_usage",
            r#"SELECT credyt.simulate_usage('b-prod', 1, '[{"event_id": "x", "event_type": "chat"}]')"#.into(),
        ),
        ("set_subscription_status", format!("SELECT credyt.set_subscription_status('{b_sub}', 'inactive')")),
        ("change_subscription_version", format!("SELECT credyt.change_subscription_version('{b_sub}', 1)")),
        ("add_asset_rate", "SELECT credyt.add_asset_rate('b_credits', 'USD', 2)".into()),
        ("quote_asset", "SELECT * FROM credyt.quote_asset('b_credits', 'USD', 10)".into()),
        ("initiate_topup", "SELECT credyt.initiate_topup('b-ext', 10)".into()),
    ];
    for (name, sql) in catalog_calls.clone() {
        attack(&mut app, name, sql, "CY404");
    }
    // A Stripe event naming B's top-up, signed with anything but B's webhook secret.
    let forged = format!(
        r#"{{"id": "evt_x", "type": "checkout.session.completed", "data": {{"object": {{"payment_status": "paid",
             "metadata": {{"credyt_connection": "{0}", "credyt_account": "{0}", "credyt_topup": "{b_checkout}"}}}}}}}}"#,
        b.account
    );
    attack(&mut app, "stripe_webhook", format!("SELECT credyt.stripe_webhook($j${forged}$j$, 't=1,v1=00')"), "CY400");
    // A portal grant is its secret: a guessed one is refused, and names no failure URL.
    attack(
        &mut app,
        "authenticate_portal",
        format!("SELECT * FROM credyt.authenticate_portal('{b_grant}', 'guess')"),
        "CY401",
    );
    attack(
        &mut app,
        "portal_failure_url",
        // (NULL, so 1 / (1 - 1): the division by zero is the proof)
        format!("SELECT 1 / ((credyt.portal_failure_url('{b_grant}', 'guess') IS NULL)::int - 1)"),
        "22012",
    );
    // B's vendor external id is free in A's account: the call succeeds, and only then
    // does the division by zero (1 / (true - 1)) fail the statement and roll it back.
    attack(
        &mut app,
        "create_vendor",
        "SELECT 1 / ((credyt.create_vendor('A vendor', 'b-vendor') LIKE 'ven_%')::int - 1)".into(),
        "22012",
    );
    assert_eq!(
        admin
            .query_one("SELECT count(*) FROM credyt.vendor WHERE account_id = $1", &[&b.account])
            .unwrap()
            .get::<_, i64>(0),
        1
    );
    attack(&mut app, "verify_ledger", format!("SELECT * FROM credyt.verify_ledger('{}')", b.account), "CY403");
    attack(
        &mut app,
        "create_account",
        format!("SELECT credyt.create_account('x', parent_id => '{}')", b.account),
        "CY403",
    );
    attack(&mut app, "create_account", "SELECT credyt.create_account('connected')".into(), "CY403");

    // Naming B as the account in scope is refused by every function and every view.
    app.batch_execute(&format!("SET credyt.account = '{}'", b.account)).unwrap();
    for (name, sql) in [
        ("current_account", "SELECT credyt.current_account()".to_string()),
        ("create_customer", "SELECT credyt.create_customer('Eve')".into()),
        ("balance", "SELECT credyt.balance('b-ext')".into()),
        ("balance_at", "SELECT credyt.balance_at('b-ext', 'USD', now())".into()),
        ("wallet", "SELECT * FROM credyt.wallet('b-ext')".into()),
        ("adjust", "SELECT credyt.adjust('b-ext', 'y1', 'USD', -50, 'external_refund')".into()),
        ("charge", "SELECT credyt.charge('b-ext', 'y2', 'USD', 50)".into()),
        ("set_overdraft", "SELECT credyt.set_overdraft('b-ext', 'USD', 0)".into()),
        ("verify_ledger", "SELECT * FROM credyt.verify_ledger()".into()),
        ("create_account", "SELECT credyt.create_account('sub')".into()),
        ("create_asset", "SELECT credyt.create_asset('stolen')".into()),
        ("create_product", r#"SELECT credyt.create_product('p', 'P', '[]')"#.into()),
        ("create_product_version", "SELECT credyt.create_product_version('b-prod', '[]')".into()),
        ("subscribe", "SELECT credyt.subscribe('b-ext', 'b-prod')".into()),
        ("cancel_subscription", format!("SELECT credyt.cancel_subscription('{b_sub}')")),
        ("record_usage", "SELECT * FROM credyt.record_usage('b-ext', 'y3', 'chat')".into()),
        ("record_outcome", "SELECT * FROM credyt.record_outcome('b-ext', 'y6', 'won')".into()),
        ("customer_stats", "SELECT * FROM credyt.customer_stats('b-ext')".into()),
        ("account_rollup", "SELECT * FROM credyt.account_rollup()".into()),
        ("set_free_tier", "SELECT credyt.set_free_tier('chat', 1, 'day')".into()),
        ("set_usage_limit", "SELECT credyt.set_usage_limit('chat', 1, '1 hour')".into()),
        ("free_tier_usage", "SELECT * FROM credyt.free_tier_usage('b-ext', 'chat')".into()),
        ("authorize", "SELECT credyt.authorize('b-ext', 'y4', 'USD', 1)".into()),
        ("release", "SELECT credyt.release('b-hold')".into()),
        ("set_model_cost", "SELECT credyt.set_model_cost('v', 'm', 1, 1)".into()),
        ("grant", "SELECT credyt.grant('b-ext', 'y5', 'USD', 1)".into()),
        ("set_threshold", "SELECT credyt.set_threshold('b-ext', 'USD', 1)".into()),
        ("set_auto_topup", "SELECT credyt.set_auto_topup('b-ext', 'USD', 1, 5)".into()),
        ("complete_topup", "SELECT credyt.complete_topup('top_x', true)".into()),
        ("create_webhook", "SELECT credyt.create_webhook('http://127.0.0.1:9/x')".into()),
        ("send_test_event", "SELECT credyt.send_test_event()".into()),
        ("update_webhook", format!("SELECT credyt.update_webhook('{b_hook}', enabled => false)")),
        ("delete_webhook", format!("SELECT credyt.delete_webhook('{b_hook}')")),
        ("replay_event", format!("SELECT credyt.replay_event('{b_event}')")),
        ("balance_channel", "SELECT credyt.balance_channel()".into()),
        ("events_channel", "SELECT credyt.events_channel()".into()),
        ("set_balance_push", "SELECT credyt.set_balance_push(true)".into()),
        ("create_api_key", "SELECT credyt.create_api_key('stolen', 'live')".into()),
        ("webhook_secret", format!("SELECT credyt.webhook_secret('{b_hook}')")),
        ("account_context", "SELECT * FROM credyt.account_context()".into()),
        ("update_customer", "SELECT credyt.update_customer('b-ext', name => 'Eve')".into()),
        ("create_vendor", "SELECT credyt.create_vendor('Eve')".into()),
        ("delivery_log", "SELECT count(*) FROM credyt.delivery_log()".into()),
        ("connect_stripe", "SELECT credyt.connect_stripe('sk_test_eeeeeeeeeeeeeeee', 'whsec_eeeeeeeeeeee')".into()),
        (
            "create_portal_grant",
            "SELECT * FROM credyt.create_portal_grant('b-ext', 'https://a/ok', 'https://a/ko')".into(),
        ),
    ]
    .into_iter()
    .chain(catalog_calls)
    .chain(seat_calls)
    {
        attack(&mut app, name, sql, "CY403");
    }
    for view in [
        "customers",
        "lots",
        "entries",
        "usage",
        "holds",
        "products",
        "subscriptions",
        "assets",
        "margins",
        "events",
        "grants",
        "topups",
        "webhooks",
        "deliveries",
        "api_keys",
        "accounts",
        "transactions",
        "asset_rates",
        "vendors",
        "stripe_connections",
        "auto_topups",
        "subscription_charges",
        "seats",
        "outcomes",
        "usage_rules",
    ] {
        assert_eq!(fails(&mut app, &format!("SELECT count(*) FROM credyt.{view}")), "CY403", "{view}");
    }
    app.batch_execute("RESET credyt.account").unwrap();
    // Stripe keys and portal secrets are readable by no application role at all.
    for sql in [
        "SELECT secret_key FROM credyt.stripe_connection",
        "SELECT webhook_secret FROM credyt.stripe_connection",
        "SELECT secret_hash FROM credyt.portal_grant",
    ] {
        assert_eq!(fails(&mut app, sql), "42501", "{sql}");
    }
    // B's delivery log is B's: A's scope sees none of it.
    let log = format!("SELECT count(*) FROM credyt.delivery_log('{b_hook}')");
    assert_eq!(app.query_one(log.as_str(), &[]).unwrap().get::<_, i64>(0), 0);
    assert!(sb.query_one(log.as_str(), &[]).unwrap().get::<_, i64>(0) >= 1);
    // platform_account() reveals only the platform's id, which is not tenant data.
    attacked.insert("platform_account".into());
    text(&mut app, "SELECT credyt.platform_account()");
    assert_eq!(granted, attacked, "every granted function must be attacked here");

    // Tables: reads see only A's rows; writes are refused outright.
    for table in ["customer", "lot", "entry"] {
        let n: i64 = app
            .query_one(&format!("SELECT count(*) FROM credyt.{table} WHERE account_id <> $1"), &[&a.account])
            .unwrap()
            .get(0);
        assert_eq!(n, 0, "{table} leaks rows of other tenants");
    }
    for sql in [
        "SELECT count(*) FROM credyt.usage WHERE customer_id = $1",
        "SELECT count(*) FROM credyt.holds WHERE customer_id = $1",
        "SELECT count(*) FROM credyt.subscriptions WHERE customer_id = $1",
        "SELECT count(*) FROM credyt.customers WHERE id = $1",
        "SELECT count(*) FROM credyt.lots WHERE customer_id = $1",
        "SELECT count(*) FROM credyt.entries WHERE customer_id = $1",
    ] {
        let n: i64 = app.query_one(sql, &[&b_cust]).unwrap().get(0);
        assert_eq!(n, 0, "{sql} leaks B's customer");
    }
    // every table, with its first updatable column (to write an UPDATE that parses)
    let tables: Vec<(String, String)> = admin
        .query(
            "SELECT c.relname::text, (SELECT a.attname::text FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 \
                    AND a.attidentity = '' AND a.attgenerated = '' AND NOT a.attisdropped ORDER BY a.attnum LIMIT 1) \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = 'credyt' AND c.relkind = 'r'",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert!(tables.len() >= 15, "{tables:?}");
    for (t, col) in &tables {
        assert_eq!(fails(&mut app, &format!("DELETE FROM credyt.{t}")), "42501", "DELETE {t}");
        assert_eq!(fails(&mut app, &format!("UPDATE credyt.{t} SET {col} = {col}")), "42501", "UPDATE {t}");
        assert_eq!(fails(&mut app, &format!("INSERT INTO credyt.{t} DEFAULT VALUES")), "42501", "INSERT {t}");
    }
    for t in ["wallet_account", "ledger_txn", "account", "role_binding", "price", "model_cost"] {
        assert_eq!(fails(&mut app, &format!("SELECT * FROM credyt.{t}")), "42501", "SELECT {t}");
    }
    // Endpoint secrets are not readable by application roles, not even their own.
    assert_eq!(fails(&mut app, "SELECT secret FROM credyt.webhook"), "42501");
    assert_eq!(fails(&mut sb, "SELECT previous_secret FROM credyt.webhook"), "42501");
    for sql in ["SELECT count(*) FROM credyt.webhooks", "SELECT count(*) FROM credyt.deliveries"] {
        let n: i64 = app.query_one(sql, &[]).unwrap().get(0);
        assert_eq!(n, 0, "{sql} leaks B's");
    }
    let n: i64 = sb.query_one("SELECT count(*) FROM credyt.deliveries", &[]).unwrap().get(0);
    assert_eq!(n, 1, "B sees its own delivery");
    // Administrator and internal functions, and escaping through roles.
    assert_eq!(fails(&mut app, &format!("SELECT credyt.bind_role('{role}', '{}')", b.account)), "42501");
    assert_eq!(fails(&mut app, &format!("SELECT credyt.grant_access('{role}')")), "42501");
    assert_eq!(fails(&mut app, "SELECT credyt._new_id('acc')"), "42501");
    assert_eq!(fails(&mut app, "SELECT credyt.tick(now() + interval '1 year')"), "42501");
    assert_eq!(fails(&mut app, "SELECT credyt.schedule_jobs()"), "42501");
    assert_eq!(fails(&mut app, &format!("SELECT credyt.grant_worker('{role}')")), "42501");
    assert_eq!(fails(&mut app, "SELECT * FROM credyt._worker_claim('w', 10, 1000)"), "42501");
    assert_eq!(fails(&mut app, "SELECT * FROM credyt._worker_queue()"), "42501");

    assert_eq!(fails(&mut app, "SET ROLE postgres"), "42501");

    // B is untouched.
    let mut sb = b.session();
    let b_rows_after = text(&mut sb, B_ROWS);
    assert_eq!(b_rows_before, b_rows_after);
    assert_eq!(text(&mut sb, "SELECT status FROM credyt.holds WHERE hold_id = 'b-hold'"), "active");
    assert_eq!(text(&mut sb, "SELECT string_agg(status, ',') FROM credyt.subscriptions"), "active,active");
    let b_products_after: i64 =
        admin.query_one("SELECT count(*) FROM credyt.product WHERE account_id = $1", &[&b.account]).unwrap().get(0);
    assert_eq!(b_products, b_products_after);
    assert!(ledger_problems(&mut sb).is_empty());
}

#[test]
fn a_bound_login_cannot_escape_through_set_role() {
    let mut admin = connect();
    let a = Tenant::create(&mut admin, "Tenant A2");
    let b = Tenant::create(&mut admin, "Tenant B2");
    let role = bound_role(&mut admin, &a.account);
    // An unbound role the bound login is a member of: SET ROLE to it keeps the binding.
    let helper = unique("credyt_t_unbound");
    admin
        .batch_execute(&format!(
            "CREATE ROLE {helper}; SELECT credyt.grant_access('{helper}'); GRANT {helper} TO {role};"
        ))
        .unwrap();
    let mut app = connect_as(&role);
    app.batch_execute(&format!("SET ROLE {helper}")).unwrap();
    assert_eq!(text(&mut app, "SELECT credyt.current_account()"), a.account);
    app.batch_execute(&format!("SET credyt.account = '{}'", b.account)).unwrap();
    assert_eq!(fails(&mut app, "SELECT credyt.current_account()"), "CY403");
}
