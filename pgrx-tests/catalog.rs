// The catalog: assets, products, versions, subscriptions (SPEC §4).

#[allow(dead_code)]
const CHAT_PRICE: &str = r#"[{"type": "usage_based",
  "usage_calculation": {"event_type": "chat", "usage_type": "unit_and_volume", "volume_field": "output_tokens",
                        "billable_dimensions": ["model"]},
  "pricing": [{"asset": "USD", "values": [
      {"dimensions": {"model": "gpt-4o"}, "unit_price": 0.001, "volume_rate": 0.01, "package_size": 1000},
      {"dimensions": {"model": "*"}, "unit_price": 0.0005, "volume_rate": 0.002, "package_size": 1000}]}]}]"#;

#[pg_test]
fn custom_assets() {
    fresh_account("Acme");
    assert_eq!(text("SELECT credyt.create_asset('tokens', 'AI tokens', 0, rate => 0.00001)"), "tokens");
    assert_eq!(sqlstate_of("SELECT credyt.create_asset('tokens')").as_deref(), Some("CY409"));
    assert_eq!(sqlstate_of("SELECT credyt.create_asset('USD')").as_deref(), Some("CY409"));
    assert_eq!(sqlstate_of("SELECT credyt.create_asset('gpu hours')").as_deref(), Some("CY400"));
    assert_eq!(sqlstate_of("SELECT credyt.create_asset('gpu', \"precision\" => 13)").as_deref(), Some("CY400"));
    assert_eq!(sqlstate_of("SELECT credyt.create_asset('gpu', rate => 0)").as_deref(), Some("CY400"));
    assert_eq!(sqlstate_of("SELECT credyt.create_asset('gpu', rate => 1, rate_currency => 'XYZ')").as_deref(), Some("CY400"));
    Spi::run("SELECT credyt.create_customer('Ann', 'ann')").unwrap();
    Spi::run("SELECT credyt.adjust('ann', 'g', 'tokens', 5000, 'gift')").unwrap();
    // a unit's precision bounds payments: 0 decimals for tokens
    assert_eq!(sqlstate_of("SELECT credyt.adjust('ann', 't', 'tokens', 1.5, 'external_topup')").as_deref(), Some("CY400"));
    assert_eq!(text("SELECT credyt.balance('ann', 'tokens')::text"), "5000");
    // another tenant does not have the unit
    fresh_account("Bolt");
    Spi::run("SELECT credyt.create_customer('Bob', 'bob')").unwrap();
    assert_eq!(sqlstate_of("SELECT credyt.balance('bob', 'tokens')").as_deref(), Some("CY404"));
    assert_ledger_ok();
}

#[pg_test]
fn invalid_price_json_is_rejected_naming_the_field() {
    fresh_account("Acme");
    let before = ledger_rows() + count("SELECT count(*) FROM credyt.product");
    let cases = [
        ("'{}'", "invalid price JSON: prices must be a JSON array of prices"),
        (r#"'[{"type": "usage_based", "usage_calculation": {"event_type": "chat", "usage_type": "unit"}, "pricing": [{"asset": "USD", "values": [{"unit_price": -1}]}]}]'"#,
         "invalid price JSON: prices[0].pricing[0].values[0].unit_price must not be negative"),
        (r#"'[{"type": "usage_based", "usage_calculation": {"event_type": "chat", "usage_type": "unit"}, "pricing": [{"asset": "XYZ", "values": [{"unit_price": 1}]}]}]'"#,
         "invalid price JSON: prices[0].pricing[0].asset: unknown asset XYZ"),
    ];
    for (prices, message) in cases {
        let got = error_of(&format!("SELECT credyt.create_product('p', 'P', {prices})"));
        assert_eq!(got.as_deref(), Some(format!("CY400 {message}").as_str()));
    }
    let bad_ent = r#"SELECT credyt.create_product('p', 'P', '[]'::jsonb || '[{"type": "fixed", "billing_model": {"type": "recurring", "recurring": {"interval": "month"}}, "pricing": [{"asset": "USD", "values": [{"unit_price": 9}]}]}]', '[{"name": "x"}]')"#;
    assert_eq!(sqlstate_of(bad_ent).as_deref(), Some("CY400"));
    assert_eq!(ledger_rows() + count("SELECT count(*) FROM credyt.product"), before);
}

#[pg_test]
fn versions_are_published_and_subscribers_stay_pinned() {
    fresh_account("Acme");
    let prp = text(&format!("SELECT credyt.create_product('chat', 'Chat', '{CHAT_PRICE}')"));
    assert!(prp.starts_with("prp_"));
    assert_eq!(sqlstate_of(&format!("SELECT credyt.create_product('chat', 'Again', '{CHAT_PRICE}')")).as_deref(), Some("CY409"));
    Spi::run("SELECT credyt.create_customer('Old', 'old'); SELECT credyt.create_customer('New', 'new')").unwrap();
    let sub = text("SELECT credyt.subscribe('old', 'chat')");
    assert!(sub.starts_with("sub_"));
    let v2 = r#"[{"type": "usage_based", "usage_calculation": {"event_type": "chat", "usage_type": "unit"},
                 "pricing": [{"asset": "USD", "values": [{"unit_price": 1}]}]}]"#;
    assert_eq!(Spi::get_one::<i32>(&format!("SELECT credyt.create_product_version('{prp}', '{v2}')")).unwrap(), Some(2));
    assert_eq!(count("SELECT count(*) FROM credyt.products WHERE code = 'chat' AND is_default AND version = 2"), 1);
    Spi::run("SELECT credyt.subscribe('new', 'chat')").unwrap();
    let fee = |cust: &str| text(&format!(
        "SELECT charged::text FROM credyt.record_usage('{cust}', 'e-{cust}', 'chat', '{{\"model\": \"gpt-4o\", \"output_tokens\": 1000}}')"
    ));
    assert_eq!(fee("old"), "0.011"); // v1: 0.001 + 1000 * 0.01 / 1000
    assert_eq!(fee("new"), "1"); // v2
    // subscribing to an explicit old version works; an unknown one does not
    Spi::run("SELECT credyt.create_customer('Pin', 'pin')").unwrap();
    Spi::run("SELECT credyt.subscribe('pin', 'chat', version => 1)").unwrap();
    assert_eq!(fee("pin"), "0.011");
    assert_eq!(sqlstate_of("SELECT credyt.subscribe('pin', 'chat', version => 9)").as_deref(), Some("CY404"));
    assert_eq!(sqlstate_of("SELECT credyt.subscribe('pin', 'nope')").as_deref(), Some("CY404"));
    assert_eq!(sqlstate_of("SELECT credyt.subscribe('pin', 'chat', quantity => 0)").as_deref(), Some("CY400"));
    assert_eq!(sqlstate_of("SELECT credyt.create_product_version('nope', '[]')").as_deref(), Some("CY404"));
    assert_ledger_ok();
}

#[pg_test]
fn subscribe_provisions_wallets_and_cancel_stops_matching() {
    fresh_account("Acme");
    Spi::run("SELECT credyt.create_asset('credits', \"precision\" => 0)").unwrap();
    let prices = r#"[{"type": "usage_based", "usage_calculation": {"event_type": "img", "usage_type": "unit"},
                      "pricing": [{"asset": "credits", "values": [{"unit_price": 3}]}, {"asset": "EUR", "values": [{"unit_price": 0}]}]}]"#;
    Spi::run(&format!("SELECT credyt.create_product('img', 'Images', '{prices}')")).unwrap();
    Spi::run("SELECT credyt.create_customer('Ann', 'ann')").unwrap();
    let sub = text("SELECT credyt.subscribe('ann', 'img')");
    assert_eq!(text("SELECT string_agg(account_id, ',' ORDER BY account_id) FROM credyt.wallet('ann')"), "default:EUR,default:credits");
    assert_eq!(text("SELECT status FROM credyt.record_usage('ann', 'e1', 'img')"), "charged");
    assert_eq!(text("SELECT credyt.balance('ann', 'credits')::text"), "-3");
    Spi::run(&format!("SELECT credyt.cancel_subscription('{sub}')")).unwrap();
    assert_eq!(sqlstate_of(&format!("SELECT credyt.cancel_subscription('{sub}')")).as_deref(), Some("CY409"));
    assert_eq!(sqlstate_of("SELECT credyt.cancel_subscription('sub_nope')").as_deref(), Some("CY404"));
    assert_eq!(text("SELECT status FROM credyt.record_usage('ann', 'e2', 'img')"), "no_match");
    assert_eq!(text("SELECT credyt.balance('ann', 'credits')::text"), "-3");
    assert_ledger_ok();
}

#[pg_test]
fn drafts_defaults_and_archived_versions() {
    fresh_account("Acme");
    // A draft product: no default, cannot be subscribed to.
    let prp = text(&format!("SELECT credyt.create_product('chat', 'Chat', '{CHAT_PRICE}', publish => false)"));
    Spi::run("SELECT credyt.create_customer('Ann', 'ann')").unwrap();
    assert_eq!(text("SELECT status FROM credyt.products WHERE code = 'chat'"), "draft");
    assert_eq!(error_of("SELECT credyt.subscribe('ann', 'chat')").as_deref().map(|e| &e[..5]), Some("CY409"));
    assert_eq!(sqlstate_of("SELECT credyt.subscribe('ann', 'chat', 1)").as_deref(), Some("CY409"));
    assert_eq!(sqlstate_of("SELECT credyt.set_default_version('chat', 1)").as_deref(), Some("CY409"));
    // Publishing the first version makes it the default.
    Spi::run("SELECT credyt.publish_product_version('chat', 1)").unwrap();
    Spi::run("SELECT credyt.publish_product_version('chat', 1)").unwrap(); // twice: harmless
    assert_eq!(text("SELECT is_default::text FROM credyt.products WHERE code = 'chat' AND version = 1"), "true");
    // A second version as a draft stays out of the way; make_default needs publish.
    assert_eq!(
        sqlstate_of(&format!("SELECT credyt.create_product_version('chat', '{CHAT_PRICE}', publish => false, make_default => true)"))
            .as_deref(),
        Some("CY400")
    );
    assert_eq!(text(&format!("SELECT credyt.create_product_version('chat', '{CHAT_PRICE}', publish => false)::text")), "2");
    assert_eq!(text(&format!("SELECT credyt.create_product_version('chat', '{CHAT_PRICE}', make_default => false)::text")), "3");
    assert_eq!(text("SELECT string_agg(version || ':' || status || ':' || is_default, ',' ORDER BY version) FROM credyt.products"),
               "1:published:true,2:draft:false,3:published:false");
    let sub = text("SELECT credyt.subscribe('ann', 'chat')");
    assert_eq!(text(&format!("SELECT version::text FROM credyt.subscriptions WHERE id = '{sub}'")), "1");
    Spi::run("SELECT credyt.set_default_version('chat', 3)").unwrap();
    // The default cannot be archived; another version can, and its subscribers keep billing.
    assert_eq!(sqlstate_of("SELECT credyt.archive_product_version('chat', 3)").as_deref(), Some("CY409"));
    Spi::run("SELECT credyt.archive_product_version('chat', 1)").unwrap();
    Spi::run("SELECT credyt.archive_product_version('chat', 1)").unwrap(); // twice: harmless
    assert_eq!(sqlstate_of("SELECT credyt.subscribe('ann', 'chat', 1)").as_deref(), Some("CY409"));
    assert_eq!(sqlstate_of("SELECT credyt.publish_product_version('chat', 1)").as_deref(), Some("CY409"));
    assert_eq!(sqlstate_of("SELECT credyt.publish_product_version('chat', 9)").as_deref(), Some("CY404"));
    Spi::run("SELECT credyt.adjust('ann', 'top', 'USD', 10, 'external_topup')").unwrap();
    let r = text("SELECT status || ' ' || charged FROM credyt.record_usage('ann', 'e1', 'chat', '{\"model\": \"gpt-4o\", \"output_tokens\": 1000}')");
    assert_eq!(r, "charged 0.011");
    // Archiving the product closes it: no subscriptions, no versions; billing goes on.
    Spi::run(&format!("SELECT credyt.archive_product('{prp}')")).unwrap();
    assert_eq!(sqlstate_of("SELECT credyt.subscribe('ann', 'chat')").as_deref(), Some("CY409"));
    assert_eq!(sqlstate_of(&format!("SELECT credyt.create_product_version('chat', '{CHAT_PRICE}')")).as_deref(), Some("CY409"));
    assert_eq!(count("SELECT count(*) FROM credyt.products WHERE status <> 'archived'"), 0);
    let r = text("SELECT status FROM credyt.record_usage('ann', 'e2', 'chat', '{\"model\": \"x\", \"output_tokens\": 1}')");
    assert_eq!(r, "charged");
    assert_ledger_ok();
}

#[pg_test]
fn credyts_price_form_and_simulated_fees() {
    fresh_account("Acme");
    let prices = r#"[{"name": "Chat", "type": "usage_based", "billing_model": {"type": "real_time"},
        "usage_calculation": {"event_type": "chat", "usage_type": "unit_and_volume", "volume_field": "output_tokens",
                              "billable_dimensions": ["model"]},
        "pricing": [{"asset": "USD", "values": [
            {"dimensions": {"model": "gpt-4o"}, "values": [{"unit_price": 0.001, "volume_rate": 0.01, "package_size": 1000}]},
            {"dimensions": {"model": "*"}, "values": [{"unit_price": 0.0005, "volume_rate": 0.002, "package_size": 1000}]}]}]}]"#;
    let ents = r#"[{"name": "trial", "asset": "USD", "amount": 2, "purpose": "promotion", "lifecycle": {"duration": "day", "duration_count": 14}}]"#;
    Spi::run(&format!("SELECT credyt.create_product('chat', 'Chat', '{prices}', '{ents}')")).unwrap();
    // The stored JSON is what was given.
    assert_eq!(text("SELECT prices->0->>'name' FROM credyt.products WHERE code = 'chat'"), "Chat");
    let before = ledger_rows();
    let fees = text(r#"SELECT credyt.simulate_usage('chat', 1, '[{"event_id": "a", "event_type": "chat", "data": {"model": "gpt-4o", "output_tokens": 2000}},
                                                           {"event_id": "b", "event_type": "chat", "data": {"model": "other", "output_tokens": 1000}},
                                                           {"event_id": "c", "event_type": "image"}]')::text"#);
    let out: serde_json::Value = serde_json::from_str(&fees).unwrap();
    assert_eq!(out["warnings"], serde_json::json!(["event c: no price of version 1 charges a image event with this data"]));
    let fees = &out["fees"];
    let amounts: Vec<(String, String)> = fees
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["event_id"].as_str().unwrap().to_string(), f["amount"].to_string()))
        .collect();
    assert_eq!(amounts, vec![("a".into(), "0.021".into()), ("b".into(), "0.0025".into())]);
    assert_eq!(fees[0]["price_name"], "Chat");
    assert_eq!(fees[0]["dimensions"]["model"], "gpt-4o");
    assert_eq!(ledger_rows(), before); // nothing charged
    assert_eq!(count("SELECT count(*) FROM credyt.usage"), 0);
    assert_eq!(
        error_of(r#"SELECT credyt.simulate_usage('chat', 1, '[{"event_id": "a", "event_type": "chat", "data": {"model": "x"}}]')"#).as_deref(),
        Some("CY400 events[0]: data.output_tokens is missing")
    );
    assert_eq!(sqlstate_of("SELECT credyt.simulate_usage('chat', 7, '[{\"event_id\": \"a\", \"event_type\": \"chat\"}]')").as_deref(), Some("CY404"));
    assert_eq!(sqlstate_of("SELECT credyt.simulate_usage('chat', 1, '[]')").as_deref(), Some("CY400"));
    // A one-off entitlement with a lifecycle expires after its duration.
    Spi::run("SELECT credyt.create_customer('Ann', 'ann')").unwrap();
    Spi::run("SELECT credyt.subscribe('ann', 'chat')").unwrap();
    assert_eq!(
        text("SELECT (expires_at - effective_at)::text FROM credyt.grants WHERE customer_id = (SELECT id FROM credyt.customers WHERE external_id = 'ann')"),
        "14 days"
    );
    assert_ledger_ok();
}

#[pg_test]
fn subscription_status_and_version_moves() {
    fresh_account("Acme");
    let ents = r#"[{"name": "monthly", "asset": "USD", "amount": 5, "every": "P1M"}]"#;
    Spi::run(&format!("SELECT credyt.create_product('chat', 'Chat', '{CHAT_PRICE}', '{ents}')")).unwrap();
    let cheap = r#"[{"type": "usage_based", "usage_calculation": {"event_type": "chat", "usage_type": "unit"},
                    "pricing": [{"asset": "USD", "values": [{"unit_price": 0.0001}]}]}]"#;
    let ents2 = r#"[{"name": "monthly", "asset": "USD", "amount": 7, "every": "P1M"}]"#;
    Spi::run(&format!("SELECT credyt.create_product_version('chat', '{cheap}', '{ents2}', make_default => false)")).unwrap();
    Spi::run("SELECT credyt.create_customer('Ann', 'ann')").unwrap();
    let sub = text("SELECT credyt.subscribe('ann', 'chat')");
    assert_eq!(balance("ann"), "5");
    // active → active: nothing; unknown status: CY400
    Spi::run(&format!("SELECT credyt.set_subscription_status('{sub}', 'active')")).unwrap();
    assert_eq!(sqlstate_of(&format!("SELECT credyt.set_subscription_status('{sub}', 'paused')")).as_deref(), Some("CY400"));
    // Move to version 2: its price bills from now; its entitlement is issued, the old one's renewal stops.
    assert_eq!(text(&format!("SELECT credyt.change_subscription_version('{sub}', 2)::text")), "2");
    assert_eq!(text(&format!("SELECT credyt.change_subscription_version('{sub}', 2)::text")), "2"); // again: nothing
    assert_eq!(balance("ann"), "12");
    assert_eq!(count("SELECT count(*) FROM credyt.grants WHERE next_at IS NOT NULL"), 1);
    let r = text("SELECT charged::text FROM credyt.record_usage('ann', 'e1', 'chat', '{\"model\": \"gpt-4o\", \"output_tokens\": 1000}')");
    assert_eq!(r, "0.0001");
    assert_eq!(sqlstate_of(&format!("SELECT credyt.change_subscription_version('{sub}', 9)")).as_deref(), Some("CY404"));
    // Deactivating ends it now; a second time is harmless; it cannot come back.
    Spi::run(&format!("SELECT credyt.set_subscription_status('{sub}', 'inactive')")).unwrap();
    Spi::run(&format!("SELECT credyt.set_subscription_status('{sub}', 'inactive')")).unwrap();
    assert_eq!(count("SELECT count(*) FROM credyt.grants WHERE next_at IS NOT NULL"), 0);
    assert_eq!(sqlstate_of(&format!("SELECT credyt.set_subscription_status('{sub}', 'active')")).as_deref(), Some("CY409"));
    assert_eq!(sqlstate_of(&format!("SELECT credyt.change_subscription_version('{sub}', 1)")).as_deref(), Some("CY409"));
    assert_eq!(sqlstate_of("SELECT credyt.set_subscription_status('sub_nope', 'inactive')").as_deref(), Some("CY404"));
    // A scheduled subscription becomes active at its start, not on request.
    let later = text("SELECT credyt.subscribe('ann', 'chat', starts_at => now() + interval '1 day')");
    assert_eq!(sqlstate_of(&format!("SELECT credyt.set_subscription_status('{later}', 'active')")).as_deref(), Some("CY409"));
    assert_ledger_ok();
}

#[pg_test]
fn asset_rates_over_time_and_quotes() {
    fresh_account("Acme");
    Spi::run("SELECT credyt.create_asset('credits', 'Credits', 0, rate => 0.01)").unwrap();
    let q = |sql: &str| text(&format!("SELECT amount || ' ' || rate || ' ' || inverse_rate FROM credyt.quote_asset({sql})"));
    assert_eq!(q("'credits', 'USD', 10"), "1000 0.01 100");
    // From tomorrow for a week, 0.02; then 0.01 again.
    Spi::run("SELECT credyt.add_asset_rate('credits', 'USD', 0.02, now() + interval '1 day', now() + interval '8 days')").unwrap();
    assert_eq!(q("'credits', 'USD', 10, now() + interval '2 days'"), "500 0.02 50");
    assert_eq!(q("'credits', 'USD', 10, now() + interval '9 days'"), "1000 0.01 100");
    assert_eq!(q("'credits', 'USD', 10"), "1000 0.01 100");
    assert_eq!(count("SELECT count(*) FROM credyt.asset_rates"), 3);
    // Overlapping a rate that starts inside the span: CY409, nothing written.
    assert_eq!(
        sqlstate_of("SELECT credyt.add_asset_rate('credits', 'USD', 0.03, now(), now() + interval '3 days')").as_deref(),
        Some("CY409")
    );
    assert_eq!(count("SELECT count(*) FROM credyt.asset_rates"), 3);
    // Rounded down to the asset's precision; past the rates of a source: CY404.
    assert_eq!(q("'credits', 'USD', 0.015"), "1 0.01 100");
    assert_eq!(sqlstate_of("SELECT * FROM credyt.quote_asset('credits', 'EUR', 10)").as_deref(), Some("CY404"));
    assert_eq!(sqlstate_of("SELECT * FROM credyt.quote_asset('nope', 'USD', 10)").as_deref(), Some("CY404"));
    assert_eq!(sqlstate_of("SELECT credyt.add_asset_rate('USD', 'EUR', 1)").as_deref(), Some("CY409"));
    assert_eq!(sqlstate_of("SELECT credyt.add_asset_rate('credits', 'credits', 1)").as_deref(), Some("CY400"));
    assert_eq!(sqlstate_of("SELECT credyt.add_asset_rate('credits', 'USD', 0)").as_deref(), Some("CY400"));
    assert_eq!(
        sqlstate_of("SELECT credyt.add_asset_rate('credits', 'USD', 1, now(), now() - interval '1 day')").as_deref(),
        Some("CY400")
    );
    // An open rate from now closes the one in effect.
    Spi::run("SELECT credyt.add_asset_rate('credits', 'EUR', 0.009)").unwrap();
    assert_eq!(q("'credits', 'EUR', 9"), "1000 0.009 111.111111111111");
    assert_eq!(text("SELECT rate::text FROM credyt.assets WHERE code = 'credits'"), "0.01");
    // Vendors: unique external ids.
    assert!(text("SELECT credyt.create_vendor('OpenAI', 'openai')").starts_with("ven_"));
    assert_eq!(sqlstate_of("SELECT credyt.create_vendor('Other', 'openai')").as_deref(), Some("CY409"));
    assert_eq!(sqlstate_of("SELECT credyt.create_vendor('')").as_deref(), Some("CY400"));
    assert_eq!(count("SELECT count(*) FROM credyt.vendors"), 1);
}
