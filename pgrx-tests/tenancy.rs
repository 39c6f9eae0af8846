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
