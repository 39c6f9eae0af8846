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
