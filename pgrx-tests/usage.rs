// Usage: record_usage, fees, idempotency, token detail, costs, holds (SPEC §6).

/// An account with customer 'ann' subscribed to a product with the chat price
/// (dimensional, unit and volume) and an image price (unit) in USD.
#[allow(dead_code)]
fn usage_fixture() {
    fresh_account("Acme");
    let prices = r#"[
      {"type": "usage_based",
       "usage_calculation": {"event_type": "chat", "usage_type": "unit_and_volume", "volume_field": "output_tokens",
                             "billable_dimensions": ["model"]},
       "pricing": [{"asset": "USD", "values": [
          {"dimensions": {"model": "gpt-4o"}, "unit_price": 0.001, "volume_rate": 0.01, "package_size": 1000},
          {"dimensions": {"model": "*"}, "unit_price": 0.0005, "volume_rate": 0.002, "package_size": 1000}]}]},
      {"type": "usage_based", "usage_calculation": {"event_type": "chat", "usage_type": "unit"},
       "pricing": [{"asset": "USD", "values": [{"unit_price": 0.0001}]}]},
      {"type": "usage_based", "usage_calculation": {"event_type": "thumbnail", "usage_type": "unit"},
       "pricing": [{"asset": "USD", "values": [{"unit_price": 0}]}]}]"#;
    Spi::run(&format!("SELECT credyt.create_product('ai', 'AI', '{prices}')")).unwrap();
    Spi::run("SELECT credyt.create_customer('Ann', 'ann')").unwrap();
    Spi::run("SELECT credyt.subscribe('ann', 'ai')").unwrap();
    Spi::run("SELECT credyt.adjust('ann', 'top', 'USD', 10, 'external_topup')").unwrap();
}

#[allow(dead_code)]
fn usage_row(sql: &str) -> String {
    text(&format!(
        "SELECT concat_ws('|', status, charged, asset, available, duplicate) FROM ({sql}) r"
    ))
}

#[pg_test]
fn record_usage_charges_every_matching_price() {
    usage_fixture();
    let r = usage_row(
        r#"SELECT * FROM credyt.record_usage('ann', 'evt-1', 'chat', '{"model": "gpt-4o", "input_tokens": 1200, "output_tokens": 310}')"#,
    );
    // 0.001 + 310 * 0.01 / 1000 = 0.0041, plus 0.0001 from the second price
    assert_eq!(r, "charged|0.0042|USD|9.9958|f");
    assert_eq!(
        text("SELECT fees::text FROM credyt.usage WHERE event_id = 'evt-1'")
            .matches("\"amount\"")
            .count(),
        2
    );
    // wildcard fallback for another model
    let r = usage_row(r#"SELECT * FROM credyt.record_usage('ann', 'evt-2', 'chat', '{"model": "llama", "output_tokens": 1000}')"#);
    assert_eq!(r, "charged|0.0026|USD|9.9932|f"); // 0.0005 + 0.002 + 0.0001
    assert_eq!(balance("ann"), "9.9932");
    assert_eq!(
        text("SELECT string_agg(account_id || ' ' || amount::text, ', ' ORDER BY entry_id) FROM credyt.entries WHERE kind = 'usage'"),
        "default:USD -0.0042, revenue:USD 0.0042, default:USD -0.0026, revenue:USD 0.0026"
    );
    assert_ledger_ok();
}

#[pg_test]
fn unmatched_and_free_events_are_stored_without_a_fee() {
    usage_fixture();
    assert_eq!(usage_row("SELECT * FROM credyt.record_usage('ann', 'u1', 'unknown_type')"), "no_match|0|f");
    assert_eq!(usage_row("SELECT * FROM credyt.record_usage('ann', 'u2', 'thumbnail')"), "free|0|USD|10|f");
    assert_eq!(count("SELECT count(*) FROM credyt.usage WHERE event_id IN ('u1', 'u2')"), 2);
    assert_eq!(count("SELECT count(*) FROM credyt.entries WHERE kind = 'usage'"), 0);
    assert_eq!(balance("ann"), "10");
}

#[pg_test]
fn replays_are_duplicates_and_conflicts_are_cy409() {
    usage_fixture();
    let ev = r#"SELECT * FROM credyt.record_usage('ann', 'evt-1', 'chat', '{"model": "gpt-4o", "output_tokens": 310}', subject => 'agent-7')"#;
    assert_eq!(usage_row(ev), "charged|0.0042|USD|9.9958|f");
    let rows = ledger_rows() + count("SELECT count(*) FROM credyt.usage_event");
    assert_eq!(usage_row(ev), "charged|0.0042|USD|9.9958|t");
    assert_eq!(ledger_rows() + count("SELECT count(*) FROM credyt.usage_event"), rows);
    let changed = [
        r#"SELECT * FROM credyt.record_usage('ann', 'evt-1', 'chat', '{"model": "gpt-4o", "output_tokens": 311}', subject => 'agent-7')"#,
        r#"SELECT * FROM credyt.record_usage('ann', 'evt-1', 'other', '{"model": "gpt-4o", "output_tokens": 310}', subject => 'agent-7')"#,
        r#"SELECT * FROM credyt.record_usage('ann', 'evt-1', 'chat', '{"model": "gpt-4o", "output_tokens": 310}', subject => 'agent-8')"#,
    ];
    for sql in changed {
        assert_eq!(sqlstate_of(sql).as_deref(), Some("CY409"), "{sql}");
    }
    assert_eq!(ledger_rows() + count("SELECT count(*) FROM credyt.usage_event"), rows);
    // occurred_at is part of the identity when both calls give it
    Spi::run("SELECT * FROM credyt.record_usage('ann', 'evt-t', 'u', occurred_at => '2026-01-01T00:00:00Z')").unwrap();
    assert_eq!(usage_row("SELECT * FROM credyt.record_usage('ann', 'evt-t', 'u', occurred_at => '2026-01-01T01:00:00+01:00')"), "no_match|0|t");
    assert_eq!(usage_row("SELECT * FROM credyt.record_usage('ann', 'evt-t', 'u')"), "no_match|0|t");
    assert_eq!(sqlstate_of("SELECT * FROM credyt.record_usage('ann', 'evt-t', 'u', occurred_at => '2020-01-01')").as_deref(), Some("CY409"));
    assert_ledger_ok();
}

#[pg_test]
fn bad_events_are_rejected_and_write_nothing() {
    usage_fixture();
    let before = ledger_rows() + count("SELECT count(*) FROM credyt.usage_event");
    let long = "e".repeat(256);
    let cases: Vec<(String, &str)> = vec![
        (r#"SELECT * FROM credyt.record_usage('ann', 'x', 'chat', '{"model": "gpt-4o"}')"#.into(), "CY400"), // volume missing
        (r#"SELECT * FROM credyt.record_usage('ann', 'x', 'chat', '{"output_tokens": -5}')"#.into(), "CY400"),
        (r#"SELECT * FROM credyt.record_usage('ann', 'x', 'chat', '{"output_tokens": "many"}')"#.into(), "CY400"),
        (r#"SELECT * FROM credyt.record_usage('ann', 'x', 'chat', '[1, 2]')"#.into(), "CY400"),
        (r#"SELECT * FROM credyt.record_usage('ann', 'x', 'u', '{"input_tokens": 1.5}')"#.into(), "CY400"),
        ("SELECT * FROM credyt.record_usage('ann', '', 'u')".into(), "CY400"),
        (format!("SELECT * FROM credyt.record_usage('ann', '{long}', 'u')"), "CY400"),
        ("SELECT * FROM credyt.record_usage('ann', 'x', '')".into(), "CY400"),
        ("SELECT * FROM credyt.record_usage('ann', 'x', NULL)".into(), "CY400"),
        ("SELECT * FROM credyt.record_usage('ghost', 'x', 'u')".into(), "CY404"),
        ("SELECT * FROM credyt.record_usage('ann', 'x', 'u', occurred_at => 'infinity')".into(), "CY400"),
        (r#"SELECT * FROM credyt.record_usage('ann', 'x', 'u', costs => '{"a": 1}')"#.into(), "CY400"),
        (r#"SELECT * FROM credyt.record_usage('ann', 'x', 'u', costs => '[{"vendor": "openai", "amount": -1}]')"#.into(), "CY400"),
        ("SELECT * FROM credyt.record_usage('ann', 'x', 'u', hold_id => 'nope')".into(), "CY404"),
        ("SELECT * FROM credyt.record_usage('[1]'::jsonb)".into(), "CY400"),
        ("SELECT * FROM credyt.record_usage('{}'::jsonb)".into(), "CY400"),
        (r#"SELECT * FROM credyt.record_usage('[{"customer": "ann", "event_id": "b", "event_type": "u", "occurred_at": "yesterday"}]'::jsonb)"#.into(), "CY400"),
        (r#"SELECT * FROM credyt.record_usage('[{"customer": "ann", "event_id": "b", "event_type": "u", "colour": "red"}]'::jsonb)"#.into(), "CY400"),
    ];
    for (sql, code) in &cases {
        assert_eq!(sqlstate_of(sql).as_deref(), Some(*code), "{sql}");
    }
    assert_eq!(ledger_rows() + count("SELECT count(*) FROM credyt.usage_event"), before);
    let msg = error_of(r#"SELECT * FROM credyt.record_usage('ann', 'x', 'chat', '{"model": "gpt-4o"}')"#).unwrap();
    assert!(msg.contains("data.output_tokens is missing"), "{msg}");
}

#[pg_test]
fn token_detail_costs_and_margins() {
    usage_fixture();
    Spi::run("SELECT credyt.set_model_cost('openai', 'gpt-4o', 2.5, 10)").unwrap();
    Spi::run(r#"SELECT * FROM credyt.record_usage('ann', 'a', 'chat', '{"model": "gpt-4o", "prompt_tokens": 1000, "completion_tokens": 200}', subject => 'bot')"#).unwrap();
    Spi::run(r#"SELECT * FROM credyt.record_usage('ann', 'b', 'chat', '{"model": "gpt-4o", "output_tokens": 100}', subject => 'bot',
                 costs => '[{"vendor": "openai", "amount": 0.001, "currency": "USD", "category": "llm"}, {"vendor": "aws", "amount": "0.0005"}]')"#).unwrap();
    assert_eq!(
        text("SELECT concat_ws('|', model, input_tokens, output_tokens, subject, cost) FROM credyt.usage WHERE event_id = 'a'"),
        "gpt-4o|1000|200|bot|0.0045" // 1000 * 2.5/1e6 + 200 * 10/1e6
    );
    assert_eq!(text("SELECT cost::text FROM credyt.usage WHERE event_id = 'b'"), "0.0015");
    // a: fee 0.001 + 200*0.01/1000 + 0.0001 = 0.0031; b: 0.001 + 0.001 + 0.0001 = 0.0021
    assert_eq!(
        text("SELECT concat_ws('|', revenue, cost, margin, margin_pct, events) FROM credyt.margins WHERE subject = 'bot' AND model = 'gpt-4o'"),
        "0.0052|0.0060|-0.0008|-15.38|2"
    );
    assert_eq!(sqlstate_of("SELECT credyt.set_model_cost('openai', 'gpt-4o', -1, 1)").as_deref(), Some("CY400"));
    assert_eq!(sqlstate_of("SELECT credyt.set_model_cost('openai', 'gpt-4o', 1, 1, 'credits')").as_deref(), Some("CY404"));
    assert_ledger_ok();
}

#[pg_test]
fn batch_records_each_event_and_fails_whole() {
    usage_fixture();
    let batch = r#"[
      {"customer": "ann", "event_id": "b1", "event_type": "chat", "data": {"model": "gpt-4o", "output_tokens": 310}},
      {"customer": "ann", "event_id": "b2", "event_type": "nothing", "occurred_at": "2026-01-07T13:19:18.265Z"},
      {"customer": "ann", "event_id": "b1", "event_type": "chat", "data": {"model": "gpt-4o", "output_tokens": 310}}]"#;
    assert_eq!(
        text(&format!("SELECT string_agg(concat_ws('|', event_id, status, charged, duplicate), ', ') FROM credyt.record_usage('{batch}'::jsonb)")),
        "b1|charged|0.0042|f, b2|no_match|0|f, b1|charged|0.0042|t"
    );
    let before = ledger_rows() + count("SELECT count(*) FROM credyt.usage_event");
    let bad = r#"[{"customer": "ann", "event_id": "b3", "event_type": "chat", "data": {"model": "x", "output_tokens": 1}},
                  {"customer": "ann", "event_id": "b4", "event_type": "chat", "data": {"model": "x"}}]"#;
    let msg = error_of(&format!("SELECT * FROM credyt.record_usage('{bad}'::jsonb)")).unwrap();
    assert!(msg.starts_with("CY400 events[1]: data.output_tokens is missing"), "{msg}");
    assert_eq!(ledger_rows() + count("SELECT count(*) FROM credyt.usage_event"), before);
    assert_ledger_ok();
}

#[pg_test]
fn holds_reserve_capture_and_release() {
    usage_fixture();
    Spi::run("SELECT credyt.set_overdraft('ann', 'USD', 0)").unwrap();
    let h = text("SELECT credyt.authorize('ann', 'job-1', 'USD', 4)");
    assert!(h.starts_with("hld_"));
    assert_eq!(text("SELECT credyt.authorize('ann', 'job-1', 'USD', 4)"), h, "idempotent by hold_id");
    assert_eq!(sqlstate_of("SELECT credyt.authorize('ann', 'job-1', 'USD', 5)").as_deref(), Some("CY409"));
    assert_eq!(text("SELECT available || '/' || pending_out FROM credyt.wallet('ann')"), "6/4");
    assert_eq!(sqlstate_of("SELECT credyt.authorize('ann', 'job-2', 'USD', 6.01)").as_deref(), Some("CY402"));
    assert_eq!(sqlstate_of("SELECT credyt.charge('ann', 'c', 'USD', 6.5)").as_deref(), Some("CY402"));
    // capture: the fee is charged, the rest of the hold is released
    let r = usage_row(r#"SELECT * FROM credyt.record_usage('ann', 'e1', 'chat', '{"model": "gpt-4o", "output_tokens": 310}', hold_id => 'job-1')"#);
    assert_eq!(r, "charged|0.0042|USD|9.9958|f");
    assert_eq!(text("SELECT status || ' ' || captured FROM credyt.holds WHERE hold_id = 'job-1'"), "captured 0.0042");
    assert_eq!(sqlstate_of("SELECT * FROM credyt.record_usage('ann', 'e2', 'chat', '{\"output_tokens\": 1}', hold_id => 'job-1')").as_deref(), Some("CY409"));
    assert_eq!(sqlstate_of("SELECT credyt.release('job-1')").as_deref(), Some("CY409"));
    // release
    Spi::run("SELECT credyt.authorize('ann', 'job-3', 'USD', 9)").unwrap();
    assert_eq!(text("SELECT pending_out::text FROM credyt.wallet('ann')"), "9");
    Spi::run("SELECT credyt.release('job-3')").unwrap();
    Spi::run("SELECT credyt.release('job-3')").unwrap(); // harmless twice
    assert_eq!(text("SELECT available || '/' || pending_out FROM credyt.wallet('ann')"), "9.9958/0");
    // an expired hold no longer counts and cannot be captured
    Spi::run("SELECT credyt.authorize('ann', 'job-4', 'USD', 1)").unwrap();
    Spi::run("UPDATE credyt.hold SET expires_at = now() - interval '1 second' WHERE hold_key = 'job-4'").unwrap();
    // (time moved by hand: the wallet row's figures were right until then)
    Spi::run("UPDATE credyt.wallet_account SET fresh_until = now()").unwrap();
    assert_eq!(text("SELECT status FROM credyt.holds WHERE hold_id = 'job-4'"), "expired");
    assert_eq!(balance("ann"), "9.9958");
    assert_eq!(sqlstate_of("SELECT * FROM credyt.record_usage('ann', 'e3', 'thumbnail', hold_id => 'job-4')").as_deref(), Some("CY410"));
    assert_eq!(sqlstate_of("SELECT credyt.authorize('ann', 'job-5', 'USD', 1, '-1 minute')").as_deref(), Some("CY400"));
    assert_ledger_ok();
}

#[pg_test]
fn batch_gives_the_same_results_as_one_by_one() {
    // The same 300 events, one by one in tenant A and as one batch in tenant B.
    let mut seed: u64 = 0x2545_F491_4F6C_DD1D;
    let mut rnd = |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let mut events = Vec::new();
    for i in 0..300u64 {
        let customer = ["ann", "bob", "cat"][rnd(3) as usize];
        let id = if i > 10 && rnd(10) == 0 { format!("e{}", rnd(i)) } else { format!("e{i}") };
        let model = ["gpt-4o", "llama", "claude"][rnd(3) as usize];
        let kind = if rnd(8) == 0 { "unknown" } else { "chat" };
        let tokens = rnd(5000);
        events.push((id, customer, kind, format!(r#"{{"model": "{model}", "output_tokens": {tokens}}}"#)));
    }
    // a duplicate id must repeat its original payload exactly: keep the first payload per id
    let mut first: std::collections::HashMap<String, (String, String, String)> = std::collections::HashMap::new();
    for (id, cu, k, d) in &events {
        first.entry(id.clone()).or_insert((cu.to_string(), k.to_string(), d.clone()));
    }
    let events: Vec<(String, String, String, String)> =
        events.iter().map(|(id, ..)| { let f = &first[id]; (id.clone(), f.0.clone(), f.1.clone(), f.2.clone()) }).collect();

    let setup = |name: &str| {
        usage_fixture();
        let _ = name;
        Spi::run("SELECT credyt.create_customer('Bob', 'bob'); SELECT credyt.subscribe('bob', 'ai'); \
                  SELECT credyt.create_customer('Cat', 'cat'); SELECT credyt.subscribe('cat', 'ai'); \
                  SELECT credyt.adjust('bob', 'g', 'USD', 0.5, 'gift')").unwrap();
        text("SELECT credyt.current_account()")
    };
    let summary = || {
        text("SELECT string_agg(concat_ws(':', c.external_id, w.account_id, w.available), ' ' ORDER BY c.external_id, w.account_id) \
              FROM credyt.customers c CROSS JOIN LATERAL credyt.wallet(c.id) w WHERE c.account_id = credyt.current_account()")
            + " / "
            + &text("SELECT string_agg(trim_scale(l.remaining)::text, ',' ORDER BY c.external_id, l.remaining) FROM credyt.lots l \
                     JOIN credyt.customers c ON c.id = l.customer_id WHERE l.tenant_id = credyt.current_account()")
    };

    setup("A");
    let mut one_by_one = Vec::new();
    for (id, cu, k, d) in &events {
        one_by_one.push(text(&format!(
            "SELECT concat_ws('|', event_id, duplicate, status, charged, asset, available) FROM credyt.record_usage('{cu}', '{id}', '{k}', '{d}')"
        )));
    }
    let a = summary();
    assert_ledger_ok();

    setup("B");
    let batch: Vec<String> = events
        .iter()
        .map(|(id, cu, k, d)| format!(r#"{{"customer": "{cu}", "event_id": "{id}", "event_type": "{k}", "data": {d}}}"#))
        .collect();
    let batched: Vec<String> = Spi::connect(|c| {
        c.select(
            &format!(
                "SELECT concat_ws('|', event_id, duplicate, status, charged, asset, available) FROM credyt.record_usage('[{}]'::jsonb)",
                batch.join(",")
            ),
            None,
            &[],
        )
        .unwrap()
        .map(|r| r.get::<String>(1).unwrap().unwrap())
        .collect()
    });
    let b = summary();
    assert_eq!(batched, one_by_one);
    assert_eq!(b, a);
    assert!(one_by_one.iter().any(|r| r.contains("|t|")), "the events include replays");
    assert!(one_by_one.iter().any(|r| r.contains("no_match")));
    assert_ledger_ok();
}
