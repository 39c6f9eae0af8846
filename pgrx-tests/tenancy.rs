// Tenancy: accounts, the account in scope, role bindings (SPEC §3).

#[pg_test]
fn platform_account_exists_and_is_the_default_scope() {
    let platform = text("SELECT credyt.platform_account()");
    assert!(platform.starts_with("acc_") && platform.len() == 30, "{platform}");
    assert_eq!(text("SELECT credyt.current_account()"), platform);
    assert_eq!(count("SELECT count(*) FROM credyt.account WHERE parent_id IS NULL"), 1);
}

#[pg_test]
fn setting_the_account_switches_scope_and_isolates_customers() {
    let a = text("SELECT credyt.create_account('Acme', 'acme')");
    let b = text("SELECT credyt.create_account('Bolt')");
    Spi::run(&format!("SET LOCAL credyt.account = '{a}'")).unwrap();
    assert_eq!(text("SELECT credyt.current_account()"), a);
    let cust = text("SELECT credyt.create_customer('Ann', 'ann')");
    assert_eq!(text("SELECT credyt.adjust('ann', 't1', 'USD', 10, 'gift')").len(), 30);
    Spi::run(&format!("SET LOCAL credyt.account = '{b}'")).unwrap();
    // B can name the same external id for its own customer; A's is invisible.
    assert_eq!(sqlstate_of(&format!("SELECT credyt.balance('{cust}')")).as_deref(), Some("CY404"));
    assert_eq!(sqlstate_of("SELECT credyt.balance('ann')").as_deref(), Some("CY404"));
    let other = text("SELECT credyt.create_customer('Ann of Bolt', 'ann')");
    assert_ne!(other, cust);
    assert_eq!(balance("ann"), "0");
    Spi::run(&format!("SET LOCAL credyt.account = '{a}'")).unwrap();
    assert_eq!(balance("ann"), "10");
}

#[pg_test]
fn account_errors() {
    let a = text("SELECT credyt.create_account('Acme', 'acme')");
    let before = ledger_rows();
    assert_eq!(sqlstate_of("SELECT credyt.create_account('Acme again', 'acme')").as_deref(), Some("CY409"));
    assert_eq!(sqlstate_of("SELECT credyt.create_account('')").as_deref(), Some("CY400"));
    assert_eq!(sqlstate_of("SELECT credyt.create_account(NULL)").as_deref(), Some("CY400"));
    assert_eq!(sqlstate_of("SELECT credyt.create_account('x', parent_id => 'acc_nope')").as_deref(), Some("CY404"));
    assert_eq!(sqlstate_of("SELECT credyt.create_account('x', metadata => '[1]')").as_deref(), Some("CY400"));
    assert_eq!(ledger_rows(), before);
    // A sub-organisation of A, created from A's scope.
    Spi::run(&format!("SET LOCAL credyt.account = '{a}'")).unwrap();
    let sub = text(&format!("SELECT credyt.create_account('Acme EU', parent_id => '{a}')"));
    assert_eq!(text(&format!("SELECT parent_id FROM credyt.account WHERE id = '{sub}'")), a);
    // From A's scope, a connected account under the platform is out of reach.
    assert_eq!(sqlstate_of("SELECT credyt.create_account('rogue')").as_deref(), Some("CY403"));
    Spi::run("SET LOCAL credyt.account = 'acc_unknown'").unwrap();
    assert_eq!(sqlstate_of("SELECT credyt.current_account()").as_deref(), Some("CY404"));
}

#[pg_test]
fn a_bound_role_is_confined_to_its_account_and_descendants() {
    let a = text("SELECT credyt.create_account('Acme')");
    let b = text("SELECT credyt.create_account('Bolt')");
    Spi::run(&format!("SET LOCAL credyt.account = '{a}'")).unwrap();
    let sub = text(&format!("SELECT credyt.create_account('Acme EU', parent_id => '{a}')"));
    Spi::run("RESET credyt.account").unwrap();
    Spi::run("CREATE ROLE credyt_pgtest_app").unwrap();
    Spi::run("SELECT credyt.grant_access('credyt_pgtest_app')").unwrap();
    Spi::run(&format!("SELECT credyt.bind_role('credyt_pgtest_app', '{a}')")).unwrap();
    Spi::run("SET LOCAL ROLE credyt_pgtest_app").unwrap();
    assert_eq!(text("SELECT credyt.current_account()"), a);
    Spi::run(&format!("SET LOCAL credyt.account = '{sub}'")).unwrap();
    assert_eq!(text("SELECT credyt.current_account()"), sub);
    Spi::run(&format!("SET LOCAL credyt.account = '{b}'")).unwrap();
    assert_eq!(sqlstate_of("SELECT credyt.current_account()").as_deref(), Some("CY403"));
    assert_eq!(sqlstate_of("SELECT count(*) FROM credyt.customers").as_deref(), Some("CY403"));
    // Administrator functions and tables stay closed.
    Spi::run("RESET credyt.account").unwrap();
    assert_eq!(sqlstate_of(&format!("SELECT credyt.bind_role('credyt_pgtest_app', '{b}')")).as_deref(), Some("42501"));
    assert_eq!(sqlstate_of("SELECT credyt.grant_access('credyt_pgtest_app')").as_deref(), Some("42501"));
    assert_eq!(sqlstate_of("INSERT INTO credyt.account (id, name) VALUES ('acc_x', 'x')").as_deref(), Some("42501"));
    assert_eq!(sqlstate_of("SELECT credyt._new_id('x')").as_deref(), Some("42501"));
    Spi::run("RESET ROLE").unwrap();
}

#[pg_test]
fn bind_role_errors() {
    let a = text("SELECT credyt.create_account('Acme')");
    assert_eq!(sqlstate_of(&format!("SELECT credyt.bind_role('no_such_role_x', '{a}')")).as_deref(), Some("CY404"));
    Spi::run("CREATE ROLE credyt_pgtest_b").unwrap();
    assert_eq!(sqlstate_of("SELECT credyt.bind_role('credyt_pgtest_b', 'acc_missing')").as_deref(), Some("CY404"));
    assert_eq!(sqlstate_of("SELECT credyt.grant_access('no_such_role_x')").as_deref(), Some("CY404"));
}

#[pg_test]
fn read_views_are_security_invoker() {
    let views = count(
        "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = 'credyt' AND c.relkind = 'v' \
           AND NOT coalesce(c.reloptions @> ARRAY['security_invoker=true'], false)",
    );
    assert_eq!(views, 0, "every read view must be security_invoker");
    let unforced = count(
        "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = 'credyt' AND c.relkind = 'r' AND NOT (c.relrowsecurity AND c.relforcerowsecurity)",
    );
    assert_eq!(unforced, 0, "every table must have RLS enabled and forced");
}

#[pg_test]
fn accounts_have_private_channels() {
    let a = fresh_account("A");
    let (a_balance, a_events) = (text("SELECT credyt.balance_channel()"), text("SELECT credyt.events_channel()"));
    assert!(a_balance.starts_with("credyt_balance_") && a_balance.len() <= 63, "{a_balance}");
    assert!(a_events.starts_with("credyt_events_") && a_events.len() <= 63, "{a_events}");
    assert_eq!(text("SELECT credyt.balance_channel()"), a_balance, "stable");
    fresh_account("B");
    assert_ne!(text("SELECT credyt.balance_channel()"), a_balance);
    assert_ne!(text("SELECT credyt.events_channel()"), a_events);
    // off by default; set_balance_push turns it on for the account in scope only
    assert_eq!(text(&format!("SELECT balance_push::text FROM credyt.account WHERE id = '{a}'")), "false");
    Spi::run(&format!("SET LOCAL credyt.account = '{a}'")).unwrap();
    Spi::run("SELECT credyt.set_balance_push(true)").unwrap();
    assert_eq!(count("SELECT count(*) FROM credyt.account WHERE balance_push"), 1);
    assert_eq!(sqlstate_of("SELECT credyt.set_balance_push(NULL)").as_deref(), Some("CY400"));
}

#[pg_test]
fn deep_or_oversized_json_arguments_are_refused_by_name() {
    fresh_account("Acme");
    Spi::run("SELECT credyt.create_customer('Ann', 'ann')").unwrap();
    let before = ledger_rows() + count("SELECT count(*) FROM credyt.usage_event") + count("SELECT count(*) FROM credyt.product");
    let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
    for levels in [33, 127, 128, 1000] {
        let d = deep(levels);
        for (sql, param) in [
            (format!(r#"SELECT credyt.create_customer('x', metadata => '{{"a": {d}}}')"#), "metadata"),
            (format!("SELECT credyt.create_product('p', 'P', '{d}')"), "prices"),
            (format!("SELECT credyt.create_product('p', 'P', '[]', '{d}')"), "entitlements"),
            (format!(r#"SELECT * FROM credyt.record_usage('ann', 'e1', 'chat', data => '{{"a": {d}}}')"#), "data"),
            (format!("SELECT * FROM credyt.record_usage('ann', 'e1', 'chat', costs => '{d}')"), "costs"),
            (format!("SELECT * FROM credyt.record_usage('{d}'::jsonb)"), "events"),
            (format!(r#"SELECT credyt.adjust('ann', 't', 'USD', 1, 'gift', metadata => '{{"a": {d}}}')"#), "metadata"),
            (format!(r#"SELECT credyt.create_account('x', metadata => '{{"a": {d}}}')"#), "metadata"),
        ] {
            let e = error_of(&sql).unwrap_or_else(|| panic!("accepted {levels} levels: {}", &sql[..60]));
            assert!(e.starts_with(&format!("CY400 {param} is nested too deeply")), "{levels} levels: {e}");
        }
    }
    let big = format!(r#"{{"a": "{}"}}"#, "x".repeat(2 << 20));
    let e = error_of(&format!("SELECT * FROM credyt.record_usage('ann', 'e1', 'chat', data => '{big}')")).unwrap();
    assert!(e.starts_with("CY400 data is too large"), "{e}");
    assert_eq!(ledger_rows() + count("SELECT count(*) FROM credyt.usage_event") + count("SELECT count(*) FROM credyt.product"), before);
    // 32 levels are fine
    Spi::run(&format!(r#"SELECT credyt.create_customer('y', metadata => '{{"a": {}}}')"#, deep(31))).unwrap();
}

#[pg_test]
fn update_customer_changes_given_fields_and_refuses_bad_input() {
    fresh_account("Acme update");
    let ann = text("SELECT credyt.create_customer('Ann', 'ann', 'ann@example.com')");
    text("SELECT credyt.create_customer('Bob', 'bob')");
    Spi::run("SELECT credyt.update_customer('ann', name => 'Ann B.')").unwrap();
    // NULL keeps a field as it is.
    assert_eq!(
        text(&format!("SELECT concat_ws('|', name, external_id, email) FROM credyt.customers WHERE id = '{ann}'")),
        "Ann B.|ann|ann@example.com"
    );
    Spi::run(&format!("SELECT credyt.update_customer('{ann}', external_id => 'ann-2', email => 'a@b.c')")).unwrap();
    assert_eq!(text(&format!("SELECT external_id || ' ' || email FROM credyt.customers WHERE id = '{ann}'")), "ann-2 a@b.c");
    let before = text("SELECT string_agg(concat_ws('|', id, name, external_id, email), ',' ORDER BY id) FROM credyt.customers");
    for (sql, code) in [
        ("SELECT credyt.update_customer('ann-2', external_id => 'bob')", "CY409"),
        ("SELECT credyt.update_customer('ann-2', name => '')", "CY400"),
        ("SELECT credyt.update_customer(NULL, name => 'x')", "CY400"),
        ("SELECT credyt.update_customer('nobody', name => 'x')", "CY404"),
    ] {
        assert_eq!(sqlstate_of(sql).as_deref(), Some(code), "{sql}");
    }
    assert_eq!(
        text("SELECT string_agg(concat_ws('|', id, name, external_id, email), ',' ORDER BY id) FROM credyt.customers"),
        before,
        "refused updates wrote nothing"
    );
}

#[pg_test]
fn portal_grants_confine_a_transaction_to_their_customer() {
    let acc = fresh_account("Acme");
    Spi::run("SELECT credyt.create_customer('Ann', 'ann'); SELECT credyt.create_customer('Bob', 'bob')").unwrap();
    Spi::run("SELECT credyt.adjust('bob', 'b1', 'USD', 5, 'external_topup')").unwrap();
    assert_eq!(
        sqlstate_of("SELECT * FROM credyt.create_portal_grant('ann', 'javascript:x', 'https://a/ko')").as_deref(),
        Some("CY400")
    );
    assert_eq!(
        sqlstate_of("SELECT * FROM credyt.create_portal_grant('ann', 'https://a/ok', 'https://a/ko', '1 minute')").as_deref(),
        Some("CY400")
    );
    assert_eq!(sqlstate_of("SELECT * FROM credyt.create_portal_grant('nobody', 'https://a/ok', 'https://a/ko')").as_deref(), Some("CY404"));
    let (gid, secret) = Spi::connect(|c| {
        let row = c
            .select("SELECT grant_id, secret FROM credyt.create_portal_grant('ann', 'https://a/ok', 'https://a/ko')", None, &[])
            .unwrap()
            .first();
        (row.get::<String>(1).unwrap().unwrap(), row.get::<String>(2).unwrap().unwrap())
    });
    assert_eq!(secret.len(), 64);
    assert_eq!(count("SELECT count(*) FROM credyt.portal_grant WHERE secret_hash = '{secret}'".replace("{secret}", &secret).as_str()), 0);
    // A wrong or unknown secret: CY401 alike.
    assert_eq!(sqlstate_of(&format!("SELECT * FROM credyt.authenticate_portal('{gid}', 'x')")).as_deref(), Some("CY401"));
    assert_eq!(sqlstate_of(&format!("SELECT * FROM credyt.authenticate_portal('prt_x', '{secret}')")).as_deref(), Some("CY401"));
    assert_eq!(text(&format!("SELECT credyt.portal_failure_url('{gid}', '{secret}')")), "https://a/ko");
    assert_eq!(count(&format!("SELECT count(credyt.portal_failure_url('{gid}', 'wrong'))")), 0);
    // Authenticated: only Ann resolves; Bob is unknown, by id or external id.
    let ann = text(&format!("SELECT customer_id FROM credyt.authenticate_portal('{gid}', '{secret}')"));
    assert_eq!(ann, text("SELECT id FROM credyt.customers WHERE external_id = 'ann'"));
    assert_eq!(balance("ann"), "0");
    assert_eq!(sqlstate_of("SELECT credyt.balance('bob', 'USD')").as_deref(), Some("CY404"));
    assert_eq!(sqlstate_of("SELECT credyt.set_auto_topup('bob', 'USD', 1, 5)").as_deref(), Some("CY404"));
    assert_eq!(sqlstate_of("SELECT credyt.initiate_topup('bob', 5)").as_deref(), Some("CY404"));
    assert_eq!(
        sqlstate_of(r#"SELECT * FROM credyt.record_usage('[{"customer": "bob", "event_id": "x1", "event_type": "chat"}]')"#)
            .as_deref(),
        Some("CY404")
    );
    assert_eq!(sqlstate_of("SELECT * FROM credyt.record_usage('bob', 'x2', 'chat')").as_deref(), Some("CY404"));
    Spi::run("SELECT set_config('credyt.portal_customer', '', true)").unwrap();
    // Expired: CY401.
    Spi::run(&format!("UPDATE credyt.portal_grant SET expires_at = now() - interval '1 second' WHERE id = '{gid}'")).unwrap();
    assert_eq!(sqlstate_of(&format!("SELECT * FROM credyt.authenticate_portal('{gid}', '{secret}')")).as_deref(), Some("CY401"));
    let _ = acc;
}
