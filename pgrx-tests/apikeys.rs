// API keys, environments and the server role (credyt-server's entry point). The
// server itself is proven over HTTP in tests/tests/server.rs.

/// Creates a server role bound by grant_server, if missing.
#[allow(dead_code)]
fn server_role() {
    Spi::run("DO $$ BEGIN CREATE ROLE credyt_test_server; EXCEPTION WHEN duplicate_object THEN NULL; END $$").unwrap();
    Spi::run("SELECT credyt.grant_server('credyt_test_server')").unwrap();
}

#[pg_test]
fn api_keys_are_shown_once_and_stored_as_hashes() {
    let acme = fresh_account("Acme keys");
    let live = text("SELECT credyt.create_api_key('prod', 'live')");
    let test = text("SELECT credyt.create_api_key('ci')");
    assert!(live.starts_with("sk_live_") && live.len() == 72, "{live}");
    assert!(test.starts_with("sk_test_") && test.len() == 72, "{test}");
    // Only the hash is stored; the list shows a prefix and no secret.
    assert_eq!(count(&format!("SELECT count(*) FROM credyt.api_key WHERE hash = '{}'", credyt_core::apikey::hash_key(&live))), 1);
    assert_eq!(count(&format!("SELECT count(*) FROM credyt.api_key WHERE hash = '{live}' OR prefix = '{live}'")), 0);
    // The live key belongs to Acme; the test key to Acme's test twin, in the test tree.
    assert_eq!(text("SELECT account_id FROM credyt.api_keys WHERE name = 'prod'"), acme);
    let twin = text("SELECT account_id FROM credyt.api_key WHERE name = 'ci'");
    assert_ne!(twin, acme);
    assert_eq!(text(&format!("SELECT environment || ' ' || live_id FROM credyt.account WHERE id = '{twin}'")), format!("test {acme}"));
    let root = text(&format!("SELECT parent_id FROM credyt.account WHERE id = '{twin}'"));
    assert_eq!(
        text(&format!("SELECT concat_ws(' ', environment, parent_id IS NULL, live_id = credyt.platform_account()) FROM credyt.account WHERE id = '{root}'")),
        "test t t",
        "the test tree's root is the platform's twin"
    );
    // A second test key reuses the twin.
    text("SELECT credyt.create_api_key('ci 2', 'test')");
    assert_eq!(count(&format!("SELECT count(*) FROM credyt.account WHERE live_id = '{acme}'")), 1);
    for bad in ["SELECT credyt.create_api_key(NULL)", "SELECT credyt.create_api_key('x', 'prod')", "SELECT credyt.revoke_api_key('key_nope')"] {
        assert!(sqlstate_of(bad).is_some_and(|s| s.starts_with("CY")), "{bad}");
    }
}

#[pg_test]
fn a_server_role_serves_only_the_account_a_key_authenticated() {
    let acme = fresh_account("Acme server");
    let key = text("SELECT credyt.create_api_key('prod', 'live')");
    text("SELECT credyt.create_customer('Ann', 'ann')");
    let sub = text(&format!("SELECT credyt.create_account('Acme EU', parent_id => '{acme}')"));
    Spi::run("RESET credyt.account").unwrap();
    let other = text("SELECT credyt.create_account('Other')");
    server_role();
    Spi::run("SET LOCAL ROLE credyt_test_server").unwrap();
    // Before a key: every function and every view refuses, whatever credyt.account says.
    Spi::run(&format!("SET LOCAL credyt.account = '{acme}'")).unwrap();
    assert_eq!(sqlstate_of("SELECT credyt.current_account()").as_deref(), Some("CY401"));
    assert_eq!(sqlstate_of("SELECT credyt.balance('ann')").as_deref(), Some("CY401"));
    assert_eq!(sqlstate_of("SELECT count(*) FROM credyt.customers").as_deref(), Some("CY401"));
    // The role cannot set the key's account itself.
    assert_eq!(sqlstate_of(&format!("SET LOCAL credyt.key_account = '{acme}'")).as_deref(), Some("42501"));
    assert_eq!(sqlstate_of(&format!("SELECT set_config('credyt.key_account', '{acme}', true)")).as_deref(), Some("42501"));
    // A wrong key, a malformed one or none: CY401 alike.
    for bad in [
        "SELECT credyt.authenticate(NULL)".to_string(),
        "SELECT credyt.authenticate('sk_live_nope')".to_string(),
        format!("SELECT credyt.authenticate('{}')", key.replace("sk_live_", "sk_test_")),
        // (the last character changed: to 0, or to 1 when it was 0)
        format!("SELECT credyt.authenticate('{}{}')", &key[..key.len() - 1], if key.ends_with('0') { '1' } else { '0' }),
    ] {
        assert_eq!(sqlstate_of(&bad).as_deref(), Some("CY401"), "{bad}");
    }
    // An account outside the key's tree, known or not: CY403.
    assert_eq!(sqlstate_of(&format!("SELECT credyt.authenticate('{key}', '{other}')")).as_deref(), Some("CY403"));
    assert_eq!(sqlstate_of(&format!("SELECT credyt.authenticate('{key}', 'acc_nope')")).as_deref(), Some("CY403"));
    assert_eq!(text(&format!("SELECT credyt.authenticate('{key}')")), acme);
    assert_eq!(text("SELECT credyt.current_account()"), acme);
    assert_eq!(count("SELECT count(*) FROM credyt.customers"), 1);
    assert_eq!(text("SELECT environment FROM credyt.account_context()"), "live");
    // A sub-organisation below the key's account.
    assert_eq!(text(&format!("SELECT credyt.authenticate('{key}', '{sub}')")), sub);
    assert_eq!(count("SELECT count(*) FROM credyt.customers"), 0);
    assert_eq!(text("SELECT org_id FROM credyt.account_context()"), acme);
    Spi::run("RESET ROLE").unwrap();
}

#[pg_test]
fn test_keys_never_reach_live_data_nor_revoked_keys_anything() {
    let acme = fresh_account("Acme env");
    let live = text("SELECT credyt.create_api_key('prod', 'live')");
    let test = text("SELECT credyt.create_api_key('ci', 'test')");
    text("SELECT credyt.create_customer('Live Ann', 'ann')");
    let twin = text("SELECT account_id FROM credyt.api_key WHERE name = 'ci'");
    server_role();
    Spi::run("SET LOCAL ROLE credyt_test_server").unwrap();
    assert_eq!(text(&format!("SELECT credyt.authenticate('{test}')")), twin);
    assert_eq!(text("SELECT environment FROM credyt.account_context()"), "test");
    assert_eq!(count("SELECT count(*) FROM credyt.customers"), 0, "the live customer is not in the test tree");
    assert_eq!(sqlstate_of("SELECT credyt.balance('ann')").as_deref(), Some("CY404"));
    assert_eq!(sqlstate_of(&format!("SELECT credyt.authenticate('{test}', '{acme}')")).as_deref(), Some("CY403"));
    text("SELECT credyt.create_customer('Test Ann', 'ann')");
    assert_eq!(text(&format!("SELECT credyt.authenticate('{live}')")), acme);
    assert_eq!(text("SELECT name FROM credyt.customers"), "Live Ann");
    Spi::run("RESET ROLE").unwrap();
    Spi::run(&format!("SET LOCAL credyt.account = '{acme}'")).unwrap();
    let id = text("SELECT id FROM credyt.api_keys WHERE name = 'prod'");
    Spi::run(&format!("SELECT credyt.revoke_api_key('{id}')")).unwrap();
    Spi::run("SET LOCAL ROLE credyt_test_server").unwrap();
    assert_eq!(sqlstate_of(&format!("SELECT credyt.authenticate('{live}')")).as_deref(), Some("CY401"));
    Spi::run("RESET ROLE").unwrap();
}
