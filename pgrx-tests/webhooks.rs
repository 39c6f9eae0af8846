// Webhook endpoints, routing and the worker's queue functions (SPEC §10). The
// worker itself, signing and real HTTP are proven in tests/tests/webhooks.rs.

/// Creates an endpoint in the account in scope; returns its id.
#[allow(dead_code)]
fn webhook(url: &str, topics: &str, connect: bool) -> String {
    text(&format!("SELECT id FROM credyt.create_webhook('{url}', '{topics}', {connect})"))
}

/// "webhook_id=status/attempts" of every delivery of `event`, sorted by endpoint.
#[allow(dead_code)]
fn deliveries_of(event: &str) -> String {
    Spi::get_one::<String>(&format!(
        "SELECT string_agg(webhook_id || '=' || status || '/' || attempts, ',' ORDER BY webhook_id) \
         FROM credyt.delivery WHERE event_id = '{event}'"
    ))
    .expect("deliveries")
    .unwrap_or_default()
}

#[pg_test]
fn create_webhook_validates_and_returns_a_standard_secret() {
    fresh_account("Acme");
    let row = text("SELECT id || ' ' || secret FROM credyt.create_webhook('https://example.com/hooks')");
    let (id, secret) = row.split_once(' ').unwrap();
    assert!(id.starts_with("whd_"), "{id}");
    assert_eq!(credyt_core::webhook::secret_key(secret).unwrap().len(), 32, "{secret}");
    assert_eq!(
        text(&format!("SELECT concat_ws('|', url, topics::text, connect, enabled) FROM credyt.webhooks WHERE id = '{id}'")),
        "https://example.com/hooks|{*}|f|t"
    );
    let before = count("SELECT count(*) FROM credyt.webhook");
    for bad in [
        "SELECT credyt.create_webhook(NULL)",
        "SELECT credyt.create_webhook('ftp://example.com')",
        "SELECT credyt.create_webhook('example.com/hooks')",
        "SELECT credyt.create_webhook('https://user:pw@example.com')",
        "SELECT credyt.create_webhook('https://example.com', '{}')",
        "SELECT credyt.create_webhook('https://example.com', NULL)",
        "SELECT credyt.create_webhook('https://example.com', '{grant.issued,NULL}')",
        "SELECT credyt.create_webhook('https://example.com', '{balance_treshold_hit}')",
        "SELECT credyt.create_webhook('https://example.com', '{nope.*}')",
        "SELECT credyt.create_webhook('https://example.com', '{*}', NULL)",
        "SELECT credyt.update_webhook(NULL)",
        "SELECT credyt.update_webhook('whd_nope')",
        "SELECT credyt.delete_webhook('whd_nope')",
        "SELECT credyt.send_test_event('grant.*')",
        "SELECT credyt.send_test_event('no.such')",
        "SELECT credyt.send_test_event(NULL)",
        "SELECT credyt.replay_event(NULL)",
        "SELECT credyt.replay_event('whe_nope')",
    ] {
        let code = sqlstate_of(bad).unwrap_or_else(|| panic!("no error from {bad}"));
        assert!(code.starts_with("CY"), "{bad}: {code}");
    }
    assert_eq!(error_of("SELECT credyt.create_webhook('ftp://x')").unwrap().split(' ').next(), Some("CY400"));
    assert_eq!(error_of("SELECT credyt.update_webhook('whd_nope')").unwrap().split(' ').next(), Some("CY404"));
    assert_eq!(count("SELECT count(*) FROM credyt.webhook"), before, "failed calls wrote nothing");
}

#[pg_test]
fn every_topic_is_a_storable_event_type() {
    // The table's CHECK and core's Topic name the same list: an event of each topic is
    // written, and a type outside it is refused by the table itself.
    fresh_account("Topics");
    for topic in credyt_core::webhook::Topic::ALL {
        let id = text(&format!("SELECT credyt.send_test_event('{}')", topic.as_str()));
        assert_eq!(text(&format!("SELECT event_type FROM credyt.event WHERE id = '{id}'")), topic.as_str());
    }
    let refused = sqlstate_of(
        "INSERT INTO credyt.event (account_id, id, event_type, occurred_at, data) \
         SELECT account_id, 'whe_x', 'no.such', now(), '{}' FROM credyt.event LIMIT 1",
    );
    assert_eq!(refused.as_deref(), Some("23514"), "check_violation");
}

#[pg_test]
fn events_route_by_account_topic_and_connect() {
    Spi::run("RESET credyt.account").unwrap();
    let platform_connect = webhook("https://platform.example/connect", "{*}", true);
    let platform_own = webhook("https://platform.example/own", "{*}", false);
    let a = fresh_account("A");
    let a_grants = webhook("https://a.example/grants", "{grant.*}", false);
    let a_holds = webhook("https://a.example/holds", "{hold.expired}", false);
    let a_connect = webhook("https://a.example/connect", "{*}", true);
    let sub = text(&format!("SELECT credyt.create_account('A team', parent_id => '{a}')"));
    fresh_account("B");
    let b_all = webhook("https://b.example/all", "{*}", false);

    Spi::run(&format!("SET LOCAL credyt.account = '{a}'")).unwrap();
    let e = text("SELECT credyt.send_test_event('grant.issued')");
    let mut expect = [format!("{a_grants}=pending/0"), format!("{platform_connect}=pending/0")];
    expect.sort();
    assert_eq!(deliveries_of(&e), expect.join(","));
    // A sub-organisation's event reaches the connect endpoints of every account above it.
    Spi::run(&format!("SET LOCAL credyt.account = '{sub}'")).unwrap();
    let e = text("SELECT credyt.send_test_event()");
    let mut expect = [format!("{a_connect}=pending/0"), format!("{platform_connect}=pending/0")];
    expect.sort();
    assert_eq!(deliveries_of(&e), expect.join(","));
    Spi::run("RESET credyt.account").unwrap();
    let e = text("SELECT credyt.send_test_event('hold.expired')");
    assert_eq!(deliveries_of(&e), format!("{platform_own}=pending/0"), "the platform's own events skip its connect endpoint");
    let _ = (a_holds, b_all);

    // A real event (a grant) is routed the same way, in the grant's transaction.
    Spi::run(&format!("SET LOCAL credyt.account = '{a}'")).unwrap();
    Spi::run("SELECT credyt.create_customer('Ann', 'ann'); SELECT credyt.grant('ann', 'g1', 'USD', 5)").unwrap();
    let issued = text("SELECT id FROM credyt.events WHERE event_type = 'grant.issued' AND payload->'data'->>'customer_id' IS NOT NULL");
    let mut expect = [format!("{a_grants}=pending/0"), format!("{platform_connect}=pending/0")];
    expect.sort();
    assert_eq!(deliveries_of(&issued), expect.join(","));
    assert_ledger_ok();
}

#[pg_test]
fn a_test_event_to_one_endpoint_and_disabled_or_deleted_endpoints() {
    fresh_account("Acme");
    let grants = webhook("https://a.example/grants", "{grant.*}", false);
    let other = webhook("https://a.example/other", "{hold.expired}", false);
    // to one endpoint, whatever its topics
    let to_other = text(&format!("SELECT credyt.send_test_event(webhook_id => '{other}')"));
    assert_eq!(deliveries_of(&to_other), format!("{other}=pending/0"));
    assert_eq!(text(&format!("SELECT payload->'data'->>'webhook_id' FROM credyt.events WHERE id = '{to_other}'")), other);

    // Disabling fails what is pending for the endpoint and stops new deliveries.
    let pending = text("SELECT credyt.send_test_event('grant.expired')");
    Spi::run(&format!("SELECT credyt.update_webhook('{grants}', enabled => false)")).unwrap();
    assert_eq!(deliveries_of(&pending), format!("{grants}=failed/0"));
    assert_eq!(text(&format!("SELECT last_error FROM credyt.deliveries WHERE event_id = '{pending}'")), "webhook disabled");
    let e = text("SELECT credyt.send_test_event('grant.expired')");
    assert_eq!(deliveries_of(&e), "");
    assert_eq!(sqlstate_of(&format!("SELECT credyt.send_test_event(webhook_id => '{grants}')")).as_deref(), Some("CY409"));
    assert_eq!(sqlstate_of(&format!("SELECT credyt.replay_event('{pending}', '{grants}')")).as_deref(), Some("CY409"));
    // Enabled again, the failed delivery can be replayed.
    Spi::run(&format!("SELECT credyt.update_webhook('{grants}', enabled => true)")).unwrap();
    assert_eq!(count(&format!("SELECT credyt.replay_event('{pending}')")), 1);
    assert_eq!(deliveries_of(&pending), format!("{grants}=pending/0"));

    // Updates: url and topics validated and applied.
    assert_eq!(sqlstate_of(&format!("SELECT credyt.update_webhook('{other}', url => 'mailto:x')")).as_deref(), Some("CY400"));
    Spi::run(&format!("SELECT credyt.update_webhook('{other}', url => 'http://127.0.0.1:9/x', topics => '{{grant.*,grant.*}}')")).unwrap();
    assert_eq!(text(&format!("SELECT url || ' ' || topics::text FROM credyt.webhooks WHERE id = '{other}'")), "http://127.0.0.1:9/x {grant.*}");

    // Deleting: gone from the view, pending deliveries failed, further calls CY404.
    Spi::run(&format!("SELECT credyt.delete_webhook('{other}')")).unwrap();
    assert_eq!(count(&format!("SELECT count(*) FROM credyt.webhooks WHERE id = '{other}'")), 0);
    assert_eq!(text(&format!("SELECT status || ' ' || last_error FROM credyt.deliveries WHERE event_id = '{to_other}'")), "failed webhook deleted");
    assert_eq!(sqlstate_of(&format!("SELECT credyt.update_webhook('{other}', enabled => true)")).as_deref(), Some("CY404"));
    assert_eq!(sqlstate_of(&format!("SELECT credyt.delete_webhook('{other}')")).as_deref(), Some("CY404"));
    assert_eq!(count(&format!("SELECT credyt.replay_event('{e}')")), 1, "the replay goes to the endpoints that receive it now");
}

#[pg_test]
fn replay_requires_a_route() {
    let a = fresh_account("A");
    let a_hook = webhook("https://a.example/", "{*}", false);
    let e = text("SELECT credyt.send_test_event()");
    fresh_account("B");
    let b_hook = webhook("https://b.example/", "{*}", false);
    // B can't see A's event, nor A's endpoint.
    assert_eq!(sqlstate_of(&format!("SELECT credyt.replay_event('{e}')")).as_deref(), Some("CY404"));
    assert_eq!(sqlstate_of(&format!("SELECT credyt.update_webhook('{a_hook}', enabled => false)")).as_deref(), Some("CY404"));
    // The platform sees both, but B's endpoint does not receive A's events.
    Spi::run("RESET credyt.account").unwrap();
    assert_eq!(sqlstate_of(&format!("SELECT credyt.replay_event('{e}', '{b_hook}')")).as_deref(), Some("CY409"));
    assert_eq!(count(&format!("SELECT credyt.replay_event('{e}', '{a_hook}')")), 1);
    let _ = a;
}

#[pg_test]
fn the_worker_claims_finishes_and_retries_through_its_functions() {
    fresh_account("Acme");
    let row = text("SELECT id || ' ' || secret FROM credyt.create_webhook('https://a.example/')");
    let (hook, secret) = row.split_once(' ').unwrap();
    let e1 = text("SELECT credyt.send_test_event()");
    let e2 = text("SELECT credyt.send_test_event()");
    assert_eq!(text("SELECT due || '/' || pending FROM credyt._worker_queue()"), "2/2");
    // The claim carries the envelope exactly as credyt.events shows it, and the secret.
    assert_eq!(
        count(&format!(
            "SELECT count(*) FROM credyt._worker_claim('w1', 10, 60000) c JOIN credyt.events e ON e.id = c.event_id \
             WHERE c.payload = e.payload::text AND c.secret = '{secret}' AND c.previous_secret IS NULL AND c.attempts = 0"
        )),
        2
    );
    assert_eq!(count("SELECT count(*) FROM credyt._worker_claim('w2', 10, 60000)"), 0, "claimed rows are not due");
    assert_eq!(text("SELECT due || '/' || pending FROM credyt._worker_queue()"), "0/2");
    let claim = |e: &str| count(&format!("SELECT claim FROM credyt.delivery WHERE event_id = '{e}'"));
    let (c1, c2) = (claim(&e1), claim(&e2));
    // A stale claim token changes nothing.
    assert_eq!(
        count(&format!(
            "SELECT credyt._worker_finish('{{{e1}}}', '{{{hook}}}', '{{{}}}', '{{delivered}}', '{{0}}', '{{NULL}}', '{{200}}')",
            c1 + 1000
        )),
        0
    );
    // e1 delivered, e2 retried at once (0 ms).
    assert_eq!(
        count(&format!(
            "SELECT credyt._worker_finish('{{{e1},{e2}}}', '{{{hook},{hook}}}', '{{{c1},{c2}}}', '{{delivered,retry}}', \
             '{{0,0}}', '{{NULL,\"HTTP 500\"}}', '{{200,500}}')"
        )),
        2
    );
    assert_eq!(deliveries_of(&e1), format!("{hook}=delivered/1"));
    assert_eq!(deliveries_of(&e2), format!("{hook}=pending/1"));
    assert_eq!(text(&format!("SELECT last_error || ' ' || last_status FROM credyt.deliveries WHERE event_id = '{e2}'")), "HTTP 500 500");
    // Released claims are due again at once, attempts unchanged; then failed for good.
    assert_eq!(count("SELECT count(*) FROM credyt._worker_claim('w1', 10, 60000)"), 1);
    let c2 = claim(&e2);
    assert_eq!(count(&format!("SELECT credyt._worker_release('{{{e2}}}', '{{{hook}}}', '{{{c2}}}')")), 1);
    assert_eq!(count("SELECT count(*) FROM credyt._worker_claim('w1', 10, 60000) WHERE attempts = 1"), 1);
    let c2 = claim(&e2);
    assert_eq!(
        count(&format!(
            "SELECT credyt._worker_finish('{{{e2}}}', '{{{hook}}}', '{{{c2}}}', '{{failed}}', '{{NULL}}', '{{timeout}}', '{{NULL}}')"
        )),
        1
    );
    assert_eq!(deliveries_of(&e2), format!("{hook}=failed/2"));

    // Rotation: the old secret still signs for 24 hours; without rotation no secret comes back.
    let new = text(&format!("SELECT secret FROM credyt.update_webhook('{hook}', rotate_secret => true)"));
    assert_ne!(new, secret);
    text("SELECT credyt.send_test_event()");
    assert_eq!(
        text("SELECT c.secret || ' ' || c.previous_secret FROM credyt._worker_claim('w1', 10, 60000) c"),
        format!("{new} {secret}")
    );
    let none = Spi::get_one::<String>(&format!("SELECT secret FROM credyt.update_webhook('{hook}', enabled => true)")).unwrap();
    assert!(none.is_none());
}

#[pg_test]
fn tick_prunes_delivered_events_after_the_retention_and_keeps_failed_ones() {
    fresh_account("Acme");
    webhook("https://a.example/", "{webhook.test}", false);
    let delivered = text("SELECT credyt.send_test_event()");
    let failed = text("SELECT credyt.send_test_event()");
    let pending = text("SELECT credyt.send_test_event()");
    let quiet = text("SELECT credyt.send_test_event('grant.issued')");
    assert_eq!(deliveries_of(&quiet), "");
    Spi::run(&format!("UPDATE credyt.delivery SET status = 'delivered' WHERE event_id = '{delivered}'")).unwrap();
    Spi::run(&format!("UPDATE credyt.delivery SET status = 'failed' WHERE event_id = '{failed}'")).unwrap();
    Spi::run("SET LOCAL credyt.event_retention = '7d'").unwrap();
    assert_eq!(text("SELECT credyt.tick(now() + interval '6 days')->>'events_pruned'"), "0", "not yet");
    assert_eq!(text("SELECT credyt.tick(now() + interval '8 days')->>'events_pruned'"), "2");
    let left = text("SELECT string_agg(id, ',' ORDER BY id) FROM credyt.events");
    let mut expect = [failed.clone(), pending.clone()];
    expect.sort();
    assert_eq!(left, expect.join(","), "delivered and delivery-less events pruned; failed and pending kept");
    assert_eq!(count(&format!("SELECT count(*) FROM credyt.delivery WHERE event_id IN ('{delivered}', '{quiet}')")), 0);
    Spi::run("SET LOCAL credyt.event_retention = 0").unwrap();
    Spi::run(&format!("UPDATE credyt.delivery SET status = 'delivered' WHERE event_id = '{pending}'")).unwrap();
    assert_eq!(text("SELECT credyt.tick(now() + interval '100 days')->>'events_pruned'"), "0", "0 keeps events for ever");
    assert_eq!(sqlstate_of("SET credyt.event_retention = -1").as_deref(), Some("22023"));
}

#[pg_test]
fn grant_worker_checks_its_role() {
    assert_eq!(sqlstate_of("SELECT credyt.grant_worker(NULL)").as_deref(), Some("CY400"));
    assert_eq!(sqlstate_of("SELECT credyt.grant_worker('no_such_role_here')").as_deref(), Some("CY404"));
    Spi::run("CREATE ROLE credyt_pg_test_worker").unwrap();
    Spi::run("SELECT credyt.grant_worker('credyt_pg_test_worker')").unwrap();
    assert_eq!(
        count("SELECT count(*) FROM pg_proc p WHERE p.pronamespace = 'credyt'::regnamespace \
               AND has_function_privilege('credyt_pg_test_worker', p.oid, 'EXECUTE')"),
        5,
        "the five _worker_ functions and nothing else"
    );
    assert!(!Spi::get_one::<bool>("SELECT has_table_privilege('credyt_pg_test_worker', 'credyt.delivery', 'SELECT')").unwrap().unwrap());
}

#[pg_test]
fn private_endpoints_are_refused_unless_allowed() {
    fresh_account("Acme");
    Spi::run("SET LOCAL credyt.webhook_allow_private = off").unwrap();
    let before = count("SELECT count(*) FROM credyt.webhook");
    for url in [
        "http://127.0.0.1:9/x", "http://localhost:8080/x", "http://api.localhost/x", "http://10.1.2.3/x",
        "http://192.168.0.10/x", "http://172.20.0.1/x", "http://169.254.169.254/latest/meta-data", "http://[::1]:80/x",
        "http://[fd00::1]/x", "http://[::ffff:127.0.0.1]/x", "http://0.0.0.0/x", "http://metadata.google.internal/x",
    ] {
        let e = error_of(&format!("SELECT credyt.create_webhook('{url}')")).unwrap_or_else(|| panic!("accepted {url}"));
        assert!(e.starts_with("CY400") && e.contains("url"), "{url}: {e}");
    }
    assert_eq!(count("SELECT count(*) FROM credyt.webhook"), before);
    let id = webhook("https://example.com/hooks", "{*}", false);
    assert_eq!(
        sqlstate_of(&format!("SELECT credyt.update_webhook('{id}', url => 'http://127.0.0.1:9/x')")).as_deref(),
        Some("CY400")
    );
    assert_eq!(text(&format!("SELECT url FROM credyt.webhooks WHERE id = '{id}'")), "https://example.com/hooks");
    // an administrator may allow them, for local development
    Spi::run("SET LOCAL credyt.webhook_allow_private = on").unwrap();
    webhook("http://127.0.0.1:9/x", "{*}", false);
}

#[pg_test]
fn worker_claims_name_their_session() {
    fresh_account("Acme");
    let channel = text("SELECT credyt._worker_channel()");
    assert!(channel.starts_with("credyt_worker_") && channel.len() == 46, "{channel}");
    assert_ne!(channel, text("SELECT credyt.events_channel()"));
    let id = webhook("http://127.0.0.1:9/x", "{*}", false);
    text("SELECT credyt.send_test_event()");
    let claimed = text("SELECT string_agg(webhook_id, ',') FROM credyt._worker_claim('w', 10, 60000)");
    assert_eq!(claimed, id);
    // the claim names this very session, so it stays claimed while the session lives
    assert_eq!(
        text("SELECT (claimed_session = (SELECT pid || ':' || extract(epoch FROM backend_start) FROM pg_stat_activity \
               WHERE pid = pg_backend_pid()))::text FROM credyt.delivery"),
        "true"
    );
    assert_eq!(count("SELECT count(*) FROM credyt._worker_claim('w2', 10, 60000)"), 0);
    // a claim of a session that is gone comes back at once, without its lease running out
    Spi::run("UPDATE credyt.delivery SET claimed_session = '2147483647:0'").unwrap();
    assert_eq!(text("SELECT string_agg(webhook_id, ',') FROM credyt._worker_claim('w2', 10, 60000)"), id);
}
