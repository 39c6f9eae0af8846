// Recurring fees (SPEC §9): fixed fees and seats, charged in advance per period.

#[allow(dead_code)]
const FIXED_PRICES: &str = r#"[
  {"type": "fixed", "billing_model": {"type": "recurring", "recurring": {"interval": "month"}},
   "pricing": [{"asset": "USD", "values": [{"unit_price": 10}]}]},
  {"type": "fixed", "billing_model": {"type": "one_time"},
   "pricing": [{"asset": "USD", "values": [{"unit_price": 5}]}]}]"#;

#[allow(dead_code)]
const SEAT_PRICE: &str = r#"[{"type": "seat",
   "billing_model": {"type": "recurring", "recurring": {"interval": "day"}},
   "pricing": [{"asset": "USD", "values": [{"unit_price": 30}]}]}]"#;

#[allow(dead_code)]
fn charges(sub: &str) -> Vec<String> {
    Spi::connect(|c| {
        let t = c
            .select(
                "SELECT period || ':' || seq || ':' || quantity || ':' || amount::text || ':' || status || ':' \
                        || to_char(period_start AT TIME ZONE 'UTC', 'YYYY-MM-DD') \
                 FROM credyt.subscription_charge WHERE subscription_id = $1 ORDER BY position, period, seq",
                None,
                &[sub.into()],
            )
            .unwrap();
        t.map(|r| r.get::<String>(1).unwrap().unwrap()).collect()
    })
}

#[pg_test]
fn fixed_fees_charge_each_period_once_in_advance() {
    fresh_account("Acme");
    Spi::run("SET LOCAL TimeZone = 'America/New_York'").unwrap(); // periods are UTC whatever the session says
    Spi::run("SELECT credyt.create_customer('Ann', 'ann'); SELECT credyt.adjust('ann', 'g', 'USD', 100, 'gift')").unwrap();
    Spi::run(&format!("SELECT credyt.create_product('pro', 'Pro', '{FIXED_PRICES}')")).unwrap();
    let sub = text("SELECT credyt.subscribe('ann', 'pro', starts_at => '2027-01-31 09:00Z', quantity => 2)");
    // the one_time fee at once; the first month at its start
    assert_eq!(charges(&sub), vec!["0:0:2:10:charged:2027-01-31"]);
    assert_eq!(balance("ann"), "90");
    let tick = |at: &str| -> i64 {
        count(&format!("SELECT (credyt.tick('{at}') ->> 'fees_charged')::bigint"))
    };
    assert_eq!(tick("2027-01-31 08:59Z"), 0);
    assert_eq!(tick("2027-01-31 09:00Z"), 1);
    assert_eq!(tick("2027-01-31 09:00Z"), 0, "once per period, whatever the number of ticks");
    assert_eq!(tick("2027-02-15Z"), 0);
    // the 31st falls on the 28th in February and comes back in March
    assert_eq!(tick("2027-03-31 09:00Z"), 2);
    let got = charges(&sub);
    assert_eq!(
        got,
        ["0:0:2:20:charged:2027-01-31", "1:0:2:20:charged:2027-02-28", "2:0:2:20:charged:2027-03-31",
         "0:0:2:10:charged:2027-01-31"]
    );
    assert_eq!(balance("ann"), "30");
    // each charge is a ledger transaction naming the subscription and its period
    assert_eq!(
        count(&format!(
            "SELECT count(*) FROM credyt.ledger_txn WHERE kind = 'subscription_fee' AND payload->>'subscription_id' = '{sub}'"
        )),
        4
    );
    assert_eq!(
        text("SELECT payload->>'period_start' FROM credyt.ledger_txn WHERE kind = 'subscription_fee' AND payload->>'period' = '1' \
              AND payload->>'price' = '0'"),
        "2027-02-28T09:00:00Z"
    );
    // cancelled: no period starting at or after the end is charged
    Spi::run(&format!("SELECT credyt.cancel_subscription('{sub}', '2027-04-15Z')")).unwrap();
    assert_eq!(tick("2027-06-01Z"), 0);
    assert_eq!(charges(&sub).len(), 4);
    assert_eq!(balance("ann"), "30");
    assert_ledger_ok();
}

#[pg_test]
fn clock_charges_past_the_overdraft_limit_as_unpaid() {
    fresh_account("Acme");
    Spi::run("SELECT credyt.create_customer('Ann', 'ann'); SELECT credyt.adjust('ann', 'g', 'USD', 12, 'gift')").unwrap();
    Spi::run("SELECT credyt.set_overdraft('ann', 'USD', 0)").unwrap();
    Spi::run(&format!("SELECT credyt.create_product('pro', 'Pro', '{FIXED_PRICES}')")).unwrap();
    // at subscribe, a person is told: CY402 and nothing written
    let before = ledger_rows() + count("SELECT count(*) FROM credyt.subscription");
    assert_eq!(
        sqlstate_of("SELECT credyt.subscribe('ann', 'pro', starts_at => now() - interval '1 day', quantity => 3)").as_deref(),
        Some("CY402")
    );
    assert_eq!(ledger_rows() + count("SELECT count(*) FROM credyt.subscription"), before);
    let sub = text("SELECT credyt.subscribe('ann', 'pro', starts_at => now() + interval '1 day')");
    assert_eq!(balance("ann"), "7");
    // at the clock nobody is: the period is recorded unpaid and nothing moves
    assert_eq!(count("SELECT (credyt.tick(now() + interval '1 day') ->> 'fees_charged')::bigint"), 1);
    assert_eq!(
        text(&format!("SELECT status || ' ' || amount || ' ' || (txn_id IS NULL) FROM credyt.subscription_charge \
                       WHERE subscription_id = '{sub}' AND period = 0 AND position = 0")),
        "unpaid 10 true"
    );
    assert_eq!(balance("ann"), "7");
    assert_ledger_ok();
}

#[pg_test]
fn seats_prorate_increases_and_apply_decreases_next_period() {
    fresh_account("Acme");
    Spi::run("SELECT credyt.create_customer('Ann', 'ann'); SELECT credyt.adjust('ann', 'g', 'USD', 1000, 'gift')").unwrap();
    Spi::run(&format!("SELECT credyt.create_product('team', 'Team', '{SEAT_PRICE}')")).unwrap();
    // a daily seat period that started 6 hours ago: 18 of 24 hours are left
    let sub = text("SELECT credyt.subscribe('ann', 'team', starts_at => now() - interval '6 hours', quantity => 2)");
    assert_eq!(balance("ann"), "940");
    let seats = |sql: &str| count(&format!("SELECT {sql}::bigint"));
    // +2 seats: 2 × 30 × 0.75
    assert_eq!(seats(&format!("credyt.set_seats('{sub}', 4)")), 4);
    assert_eq!(balance("ann"), "895");
    // a decrease changes nothing now
    assert_eq!(seats(&format!("credyt.set_seats('{sub}', 1)")), 1);
    assert_eq!(balance("ann"), "895");
    // two users fit in the 4 seats paid for this period; the fifth is one more seat
    for u in ["u1", "u2", "u3", "u4"] {
        seats(&format!("credyt.assign_seat('{sub}', '{u}')"));
    }
    assert_eq!(balance("ann"), "895");
    assert_eq!(seats(&format!("credyt.assign_seat('{sub}', 'u5')")), 5);
    assert_eq!(seats(&format!("credyt.assign_seat('{sub}', 'u5')")), 5, "assigning again changes nothing");
    assert_eq!(balance("ann"), "872.5");
    assert_eq!(
        text(&format!("SELECT quantity || ' ' || assigned || ' ' || billed_quantity || ' ' || array_to_string(users, ',') \
                       FROM credyt.seats WHERE subscription_id = '{sub}'")),
        "5 5 5 u1,u2,u3,u4,u5"
    );
    // next period: the billed quantity is at least the users assigned
    seats(&format!("credyt.set_seats('{sub}', 3)"));
    seats(&format!("credyt.unassign_seat('{sub}', 'u5')"));
    assert_eq!(count("SELECT (credyt.tick(now() + interval '18 hours') ->> 'fees_charged')::bigint"), 1);
    assert_eq!(balance("ann"), "752.5"); // 4 × 30
    let got = charges(&sub);
    assert_eq!(got.iter().map(|c| c.rsplit_once(':').unwrap().0).collect::<Vec<_>>(),
               ["0:0:2:60:charged", "0:1:2:45:charged", "0:2:1:22.5:charged", "1:0:4:120:charged"]);
    assert_eq!(count("SELECT count(*) FROM credyt.event WHERE event_type = 'seat.charged'"), 4);
    assert_eq!(
        text("SELECT data->>'prorated' || ' ' || (data->>'quantity') || ' ' || (data->>'amount') FROM credyt.event \
              WHERE event_type = 'seat.charged' ORDER BY occurred_at, id OFFSET 1 LIMIT 1"),
        "true 2 45"
    );
    assert_eq!(count("SELECT count(*) FROM credyt.ledger_txn WHERE kind = 'seat_fee'"), 4);
    assert_ledger_ok();
}

#[pg_test]
fn seat_calls_reject_bad_input_and_write_nothing() {
    fresh_account("Acme");
    Spi::run("SELECT credyt.create_customer('Ann', 'ann'); SELECT credyt.adjust('ann', 'g', 'USD', 40, 'gift')").unwrap();
    Spi::run("SELECT credyt.set_overdraft('ann', 'USD', 0)").unwrap();
    Spi::run(&format!("SELECT credyt.create_product('team', 'Team', '{SEAT_PRICE}')")).unwrap();
    let sub = text("SELECT credyt.subscribe('ann', 'team', starts_at => now() + interval '1 day')");
    let before = ledger_rows() + count("SELECT count(*) FROM credyt.seat_assignment") + count("SELECT sum(seats) FROM credyt.subscription");
    for (sql, code) in [
        ("credyt.set_seats('sub_nope', 2)".to_string(), "CY404"),
        (format!("credyt.set_seats('{sub}', -1)"), "CY400"),
        (format!("credyt.set_seats('{sub}', NULL)"), "CY400"),
        (format!("credyt.assign_seat('{sub}', '')"), "CY400"),
        (format!("credyt.unassign_seat('{sub}', 'nobody')"), "CY404"),
        ("credyt.assign_seat(NULL, 'u1')".to_string(), "CY400"),
    ] {
        assert_eq!(sqlstate_of(&format!("SELECT {sql}")).as_deref(), Some(code), "{sql}");
    }
    assert_eq!(ledger_rows() + count("SELECT count(*) FROM credyt.seat_assignment") + count("SELECT sum(seats) FROM credyt.subscription"), before);
    // a started subscription with too little money: the seat increase is CY402, and undone
    let live = text("SELECT credyt.subscribe('ann', 'team', starts_at => now() - interval '23 hours')");
    assert_eq!(balance("ann"), "10");
    // 9 more seats for the last hour: 9 × 30 / 24 = 11.25
    assert_eq!(sqlstate_of(&format!("SELECT credyt.set_seats('{live}', 10)")).as_deref(), Some("CY402"));
    assert_eq!(count(&format!("SELECT seats::bigint FROM credyt.subscription WHERE id = '{live}'")), 1);
    assert_eq!(balance("ann"), "10");
    // another tenant's subscription is unknown
    fresh_account("Bolt");
    assert_eq!(sqlstate_of(&format!("SELECT credyt.set_seats('{sub}', 2)")).as_deref(), Some("CY404"));
    assert_eq!(sqlstate_of(&format!("SELECT credyt.assign_seat('{sub}', 'x')")).as_deref(), Some("CY404"));
    assert_ledger_ok();
}

#[pg_test]
fn a_new_version_bills_from_the_next_period() {
    fresh_account("Acme");
    Spi::run("SELECT credyt.create_customer('Ann', 'ann'); SELECT credyt.adjust('ann', 'g', 'USD', 100, 'gift')").unwrap();
    Spi::run(&format!("SELECT credyt.create_product('pro', 'Pro', '{FIXED_PRICES}')")).unwrap();
    let sub = text("SELECT credyt.subscribe('ann', 'pro', starts_at => now() - interval '1 day')");
    assert_eq!(balance("ann"), "85");
    Spi::run(r#"SELECT credyt.create_product_version('pro', '[{"type": "fixed",
        "billing_model": {"type": "recurring", "recurring": {"interval": "month"}},
        "pricing": [{"asset": "USD", "values": [{"unit_price": 25}]}]}]')"#).unwrap();
    Spi::run(&format!("SELECT credyt.change_subscription_version('{sub}')")).unwrap();
    assert_eq!(balance("ann"), "85", "the period paid in advance stands; no second one_time fee");
    assert_eq!(count("SELECT (credyt.tick(now() + interval '32 days') ->> 'fees_charged')::bigint"), 1);
    assert_eq!(balance("ann"), "60");
    assert_eq!(
        text(&format!("SELECT string_agg(version || ':' || period || ':' || amount, ' ' ORDER BY created_at, version) \
                       FROM credyt.subscription_charge WHERE subscription_id = '{sub}' AND seq = 0 AND position = 0")),
        "1:0:10 2:1:25"
    );
    assert_ledger_ok();
}

#[allow(dead_code)]
const OUTCOME_PRICES: &str = r#"[
  {"type": "outcome", "outcome_type": "ticket_resolved", "settlement_window": "P7D",
   "pricing": [{"asset": "USD", "values": [{"unit_price": 2, "percent": 10, "max_amount": 30}]}]},
  {"type": "outcome", "outcome_type": "lead", "settlement_window": "2 days",
   "pricing": [{"asset": "USD", "values": [{"unit_price": 5}]}]}]"#;

#[allow(dead_code)]
fn outcome(sql: &str) -> String {
    text(&format!("SELECT o.duplicate || ' ' || o.status || ' ' || coalesce(o.fees #>> '{{0,amount}}', '-') FROM {sql} o"))
}

#[pg_test]
fn outcomes_charge_once_and_reverse_to_the_lots_they_drew() {
    fresh_account("Acme");
    Spi::run("SELECT credyt.create_customer('Ann', 'ann'); SELECT credyt.adjust('ann', 'g', 'USD', 20, 'gift'); \
              SELECT credyt.adjust('ann', 't', 'USD', 50, 'external_topup')").unwrap();
    Spi::run(&format!("SELECT credyt.create_product('agent', 'Agent', '{OUTCOME_PRICES}')")).unwrap();
    Spi::run("SELECT credyt.subscribe('ann', 'agent', starts_at => now() - interval '30 days')").unwrap();
    // 2 + 10% of 100
    assert_eq!(outcome("credyt.record_outcome('ann', 'o1', 'ticket_resolved', value => 100)"), "false charged 12");
    assert_eq!(balance("ann"), "58");
    // a replay (with or without the defaults) is the original; another payload is CY409
    assert_eq!(outcome("credyt.record_outcome('ann', 'o1', 'ticket_resolved', 100)"), "true charged 12");
    assert_eq!(outcome("credyt.record_outcome('ann', 'o1', 'ticket_resolved', 100, occurred_at => now())"), "true charged 12");
    assert_eq!(sqlstate_of("SELECT credyt.record_outcome('ann', 'o1', 'ticket_resolved', 101)").as_deref(), Some("CY409"));
    assert_eq!(balance("ann"), "58");
    // clamped; no price: no fee, no error
    assert_eq!(outcome("credyt.record_outcome('ann', 'o2', 'ticket_resolved', value => 10000)"), "false charged 30");
    assert_eq!(outcome("credyt.record_outcome('ann', 'o3', 'refund_issued')"), "false no_match -");
    assert_eq!(balance("ann"), "28");
    // o1 drew the promotion lot first (priority 10); its reversal gives it back there, once
    let rev = text("SELECT credyt.reverse_outcome('o1', 'customer complaint')");
    assert!(rev.starts_with("txn_"));
    assert_eq!(text("SELECT credyt.reverse_outcome('o1')"), rev);
    assert_eq!(balance("ann"), "40");
    // (o1 took 12 of the gift's 20, o2 the other 8 and 22 of the paid lot; o1's 12 go back to the gift)
    assert_eq!(text("SELECT remaining::text FROM credyt.lot WHERE source = 'adjust:gift'"), "12");
    assert_eq!(
        text("SELECT status || ' ' || reversal_reason FROM credyt.outcomes WHERE outcome_id = 'o1'"),
        "reversed customer complaint"
    );
    assert_eq!(count("SELECT count(*) FROM credyt.event WHERE event_type = 'outcome.reversed'"), 1);
    assert_eq!(sqlstate_of("SELECT credyt.reverse_outcome('o3')").as_deref(), Some("CY409"));
    assert_eq!(sqlstate_of("SELECT credyt.reverse_outcome('nope')").as_deref(), Some("CY404"));
    // after the window: CY410, nothing written
    Spi::run("SELECT credyt.record_outcome('ann', 'old', 'lead', occurred_at => now() - interval '3 days')").unwrap();
    assert_eq!(sqlstate_of("SELECT credyt.reverse_outcome('old')").as_deref(), Some("CY410"));
    assert_eq!(balance("ann"), "35");
    assert_ledger_ok();
}

#[pg_test]
fn a_reversal_forgives_debt_and_replaces_an_expired_lot() {
    fresh_account("Acme");
    Spi::run("SELECT credyt.create_customer('Ann', 'ann'); SELECT credyt.adjust('ann', 'g', 'USD', 3, 'gift')").unwrap();
    Spi::run(&format!("SELECT credyt.create_product('agent', 'Agent', '{OUTCOME_PRICES}')")).unwrap();
    Spi::run("SELECT credyt.subscribe('ann', 'agent', starts_at => now() - interval '1 day')").unwrap();
    // 5 on 3 of credit: 3 from the lot, 2 into debt
    Spi::run("SELECT credyt.record_outcome('ann', 'l1', 'lead')").unwrap();
    assert_eq!(balance("ann"), "-2");
    // the gift lot expires before the reversal
    Spi::run("UPDATE credyt.lot SET effective_at = now() - interval '2 seconds', expires_at = now() - interval '1 second' \
              WHERE source = 'adjust:gift'; \
              UPDATE credyt.wallet_account SET fresh_until = now()").unwrap();
    Spi::run("SELECT credyt.tick()").unwrap();
    Spi::run("SELECT credyt.reverse_outcome('l1')").unwrap();
    assert_eq!(balance("ann"), "3");
    assert_eq!(
        text("SELECT purpose || ' ' || remaining || ' ' || (expires_at IS NULL) FROM credyt.lot \
              WHERE source LIKE 'outcome_reversal:%'"),
        "promotion 3 true"
    );
    assert_eq!(count("SELECT count(*) FROM credyt.wallet_account WHERE debt > 0"), 0);
    assert_ledger_ok();
}

#[pg_test]
fn outcome_calls_reject_bad_input_and_write_nothing() {
    fresh_account("Acme");
    Spi::run("SELECT credyt.create_customer('Ann', 'ann')").unwrap();
    Spi::run(&format!("SELECT credyt.create_product('agent', 'Agent', '{OUTCOME_PRICES}')")).unwrap();
    Spi::run("SELECT credyt.subscribe('ann', 'agent')").unwrap();
    let before = ledger_rows() + count("SELECT count(*) FROM credyt.outcome");
    for (sql, code) in [
        ("credyt.record_outcome('nobody', 'o', 'lead')", "CY404"),
        ("credyt.record_outcome('ann', '', 'lead')", "CY400"),
        ("credyt.record_outcome('ann', 'o', NULL)", "CY400"),
        ("credyt.record_outcome('ann', 'o', 'lead', value => -1)", "CY400"),
        ("credyt.record_outcome('ann', 'o', 'lead', data => '[1]')", "CY400"),
        ("credyt.record_outcome('ann', 'o', 'lead', occurred_at => 'infinity')", "CY400"),
        ("credyt.reverse_outcome(NULL)", "CY400"),
    ] {
        assert_eq!(sqlstate_of(&format!("SELECT * FROM {sql}")).as_deref(), Some(code), "{sql}");
    }
    // a percent above 100 and a window that is no period are refused at creation
    for bad in [
        r#"[{"type": "outcome", "outcome_type": "x", "settlement_window": "P7D", "pricing": [{"asset": "USD", "values": [{"percent": 101}]}]}]"#,
        r#"[{"type": "outcome", "outcome_type": "x", "settlement_window": "soon", "pricing": [{"asset": "USD", "values": [{"percent": 1}]}]}]"#,
    ] {
        assert_eq!(sqlstate_of(&format!("SELECT credyt.create_product('bad', 'Bad', '{bad}')")).as_deref(), Some("CY400"));
    }
    assert_eq!(ledger_rows() + count("SELECT count(*) FROM credyt.outcome"), before);
    // another tenant's outcome is unknown
    Spi::run("SELECT credyt.record_outcome('ann', 'mine', 'lead')").unwrap();
    fresh_account("Bolt");
    assert_eq!(sqlstate_of("SELECT credyt.reverse_outcome('mine')").as_deref(), Some("CY404"));
    assert_ledger_ok();
}

#[pg_test]
fn customer_stats_count_every_way_of_earning() {
    fresh_account("Acme");
    Spi::run("SELECT credyt.create_customer('Ann', 'ann'); SELECT credyt.adjust('ann', 'g', 'USD', 100, 'gift')").unwrap();
    Spi::run(&format!("SELECT credyt.create_product('agent', 'Agent', '{OUTCOME_PRICES}')")).unwrap();
    Spi::run(&format!("SELECT credyt.create_product('pro', 'Pro', '{FIXED_PRICES}')")).unwrap();
    Spi::run("SELECT credyt.subscribe('ann', 'agent', starts_at => now() - interval '1 hour'); \
              SELECT credyt.subscribe('ann', 'pro', starts_at => now() - interval '1 hour')").unwrap(); // 10 + 5
    Spi::run("SELECT credyt.charge('ann', 'c1', 'USD', 3)").unwrap();
    Spi::run("SELECT * FROM credyt.record_outcome('ann', 'o1', 'lead'); SELECT * FROM credyt.record_outcome('ann', 'o2', 'lead')").unwrap();
    Spi::run("SELECT credyt.reverse_outcome('o2')").unwrap();
    // usage with a cost: 0.5 charged by a plain price, 0.2 of cost
    Spi::run(r#"SELECT credyt.create_product('chat', 'Chat', '[{"type": "usage_based",
        "usage_calculation": {"event_type": "chat", "usage_type": "unit"},
        "pricing": [{"asset": "USD", "values": [{"unit_price": 0.5}]}]}]')"#).unwrap();
    Spi::run("SELECT credyt.subscribe('ann', 'chat', starts_at => now() - interval '1 hour')").unwrap();
    Spi::run(r#"SELECT * FROM credyt.record_usage('ann', 'u1', 'chat',
        costs => '[{"vendor": "openai", "amount": 0.2, "currency": "USD"}]')"#).unwrap();
    // 15 + 3 + 5 + 5 - 5 + 0.5 = 23.5 of revenue, 0.2 of cost
    assert_eq!(
        text("SELECT asset || ' ' || gross_revenue || ' ' || total_costs || ' ' || net_revenue || ' ' || margin_pct \
              FROM credyt.customer_stats('ann')"),
        "USD 23.5 0.2 23.3 99.15"
    );
    assert_eq!(count("SELECT count(*) FROM credyt.customer_stats('ann', \"from\" => now() + interval '1 second')"), 0);
    assert_eq!(sqlstate_of("SELECT * FROM credyt.customer_stats('ann', \"from\" => now(), \"to\" => now() - interval '1 day')").as_deref(), Some("CY400"));
    assert_eq!(sqlstate_of("SELECT * FROM credyt.customer_stats('nobody')").as_deref(), Some("CY404"));
    assert_ledger_ok();
}

#[pg_test]
fn account_rollups_see_descendants_and_never_ancestors() {
    let parent = fresh_account("Parent");
    let child = text(&format!("SELECT credyt.create_account('Child', parent_id => '{parent}')"));
    let grandchild = text(&format!("SELECT credyt.create_account('Grandchild', parent_id => '{child}')"));
    let sibling = text(&format!("SELECT credyt.create_account('Sibling', parent_id => '{parent}')"));
    for (acc, amount) in [(&parent, 1), (&child, 2), (&grandchild, 4)] {
        Spi::run(&format!("SET LOCAL credyt.account = '{acc}'")).unwrap();
        Spi::run(&format!("SELECT credyt.create_customer('C', 'c'); SELECT credyt.charge('c', 'k', 'USD', {amount})")).unwrap();
    }
    let rollup = || -> Vec<String> {
        let mut rows: Vec<String> = Spi::connect(|c| {
            c.select(
                "SELECT name || ':' || coalesce(asset, '-') || ':' || customers || ':' || revenue FROM credyt.account_rollup()",
                None,
                &[],
            )
            .unwrap()
            .map(|r| r.get::<String>(1).unwrap().unwrap())
            .collect()
        });
        rows.sort();
        rows
    };
    Spi::run(&format!("SET LOCAL credyt.account = '{parent}'")).unwrap();
    assert_eq!(rollup(), ["Child:USD:1:2", "Grandchild:USD:1:4", "Parent:USD:1:1", "Sibling:-:0:0"]);
    Spi::run(&format!("SET LOCAL credyt.account = '{child}'")).unwrap();
    assert_eq!(rollup(), ["Child:USD:1:2", "Grandchild:USD:1:4"]);
    Spi::run(&format!("SET LOCAL credyt.account = '{sibling}'")).unwrap();
    assert_eq!(rollup(), ["Sibling:-:0:0"]);
    assert_eq!(count(&format!("SELECT count(*) FROM credyt.account_rollup() WHERE account_id = '{parent}'")), 0);
}

#[allow(dead_code)]
fn usage_status(customer: &str, event: &str, data: &str) -> String {
    text(&format!(
        "SELECT status || ' ' || charged FROM credyt.record_usage('{customer}', '{event}', 'chat', data => '{data}')"
    ))
}

#[allow(dead_code)]
fn chat_product(values: &str, usage: &str) {
    Spi::run(&format!(
        r#"SELECT credyt.create_product('chat', 'Chat', '[{{"type": "usage_based",
            "usage_calculation": {{"event_type": "chat", {usage}}},
            "pricing": [{{"asset": "USD", "values": [{values}]}}]}}]')"#
    ))
    .unwrap();
}

#[pg_test]
fn free_tiers_most_specific_rule_wins_and_replays_count_nothing() {
    fresh_account("Acme");
    chat_product(r#"{"unit_price": 1, "min_amount": 1}"#, r#""usage_type": "unit""#);
    Spi::run("SELECT credyt.create_customer('Ann', 'ann'); SELECT credyt.create_customer('Bob', 'bob', cohort => 'pro'); \
              SELECT credyt.create_customer('Vic', 'vic', cohort => 'pro')").unwrap();
    for who in ["ann", "bob", "vic"] {
        Spi::run(&format!("SELECT credyt.subscribe('{who}', 'chat', starts_at => now() - interval '1 hour')")).unwrap();
    }
    // one event before any rule: charged (and the lookups it caches must not outlive the rules)
    assert_eq!(usage_status("ann", "a0", "{}"), "charged 1");
    Spi::run("SELECT credyt.set_free_tier('chat', 3, 'day'); SELECT credyt.set_free_tier('chat', 5, 'day', cohort => 'pro'); \
              SELECT credyt.set_free_tier('chat', 0, 'day', customer => 'vic')").unwrap();
    let statuses = |who: &str, n: usize| -> Vec<String> { (0..n).map(|i| usage_status(who, &format!("{who}{}", i + 1), "{}")).collect() };
    assert_eq!(statuses("ann", 4), ["free 0", "free 0", "free 0", "charged 1"]);
    assert_eq!(statuses("bob", 6).iter().filter(|s| s.starts_with("free")).count(), 5);
    assert_eq!(statuses("vic", 2), ["charged 1", "charged 1"]);
    // a replay is the original, and uses no allowance
    assert_eq!(text("SELECT duplicate || ' ' || status FROM credyt.record_usage('ann', 'ann1', 'chat')"), "true free");
    assert_eq!(
        text("SELECT quantity || ' ' || used || ' ' || remaining FROM credyt.free_tier_usage('ann', 'chat')"),
        "3 4 0"
    );
    assert_eq!(text("SELECT quantity || ' ' || remaining FROM credyt.free_tier_usage('bob', 'chat')"), "5 0");
    // removing the customer's rule: Vic falls back to the cohort's
    Spi::run("SELECT credyt.set_free_tier('chat', NULL, NULL, customer => 'vic')").unwrap();
    assert_eq!(usage_status("vic", "vic9", "{}"), "free 0");
    assert_eq!(count("SELECT count(*) FROM credyt.usage_rules"), 2);
    // the batch form applies the rules too
    assert_eq!(
        text(r#"SELECT string_agg(status, ',') FROM credyt.record_usage('[{"customer": "vic", "event_id": "b1", "event_type": "chat"},
                 {"customer": "vic", "event_id": "b2", "event_type": "chat"}]'::jsonb)"#),
        "free,free"
    );
    assert_eq!(balance("ann"), "-2");
    assert_ledger_ok();
}

#[pg_test]
fn a_volume_free_tier_charges_only_the_part_beyond_it() {
    fresh_account("Acme");
    chat_product(r#"{"volume_rate": 0.01}"#, r#""usage_type": "volume", "volume_field": "tokens""#);
    Spi::run("SELECT credyt.create_customer('Ann', 'ann'); SELECT credyt.subscribe('ann', 'chat', starts_at => now() - interval '1 hour')").unwrap();
    Spi::run("SELECT credyt.set_free_tier('chat', 1000, 'month')").unwrap();
    assert_eq!(usage_status("ann", "e1", r#"{"tokens": 600}"#), "free 0");
    assert_eq!(usage_status("ann", "e2", r#"{"tokens": 600}"#), "charged 2"); // 200 beyond the 1000
    assert_eq!(usage_status("ann", "e3", r#"{"tokens": 100}"#), "charged 1");
    assert_eq!(text("SELECT used || ' ' || remaining FROM credyt.free_tier_usage('ann', 'chat')"), "1300 0");
    assert_eq!(balance("ann"), "-3");
    assert_ledger_ok();
}

#[pg_test]
fn usage_limits_refuse_without_recording_and_alert_once() {
    fresh_account("Acme");
    chat_product(r#"{"unit_price": 1}"#, r#""usage_type": "unit""#);
    Spi::run("SELECT credyt.create_customer('Ann', 'ann'); SELECT credyt.subscribe('ann', 'chat', starts_at => now() - interval '1 hour')").unwrap();
    Spi::run("SELECT credyt.set_usage_limit('chat', 3, '1 hour'); SELECT credyt.set_free_tier('chat', 1, 'day')").unwrap();
    let got: Vec<String> = (1..=5).map(|i| usage_status("ann", &format!("e{i}"), "{}")).collect();
    assert_eq!(got, ["free 0", "charged 1", "charged 1", "limited 0", "limited 0"]);
    assert_eq!(count("SELECT count(*) FROM credyt.usage"), 3, "limited events are not recorded");
    assert_eq!(count("SELECT count(*) FROM credyt.event WHERE event_type = 'usage.limit_exceeded'"), 1);
    assert_eq!(
        text("SELECT data->>'max_events' || ' ' || (data->>'event_id') FROM credyt.event WHERE event_type = 'usage.limit_exceeded'"),
        "3 e4"
    );
    // a replay of a recorded event is its original, limit or not
    assert_eq!(text("SELECT duplicate || ' ' || status FROM credyt.record_usage('ann', 'e2', 'chat')"), "true charged");
    // the batch form too
    assert_eq!(
        text(r#"SELECT string_agg(status, ',') FROM credyt.record_usage('[{"customer": "ann", "event_id": "b1", "event_type": "chat"}]'::jsonb)"#),
        "limited"
    );
    Spi::run("SET LOCAL credyt.usage_limit_error = on").unwrap();
    assert_eq!(sqlstate_of("SELECT * FROM credyt.record_usage('ann', 'e9', 'chat')").as_deref(), Some("CY429"));
    Spi::run("SET LOCAL credyt.usage_limit_error = off").unwrap();
    // another customer has a window of its own; a higher limit lets more through
    Spi::run("SELECT credyt.set_usage_limit('chat', 4, '1 hour')").unwrap();
    assert_eq!(usage_status("ann", "e6", "{}"), "charged 1");
    assert_eq!(balance("ann"), "-3");
    // the clock forgets counters of windows long over
    assert_eq!(count("SELECT (credyt.tick(now() + interval '40 days') ->> 'counters_pruned')::bigint"), 2);
    assert_eq!(count("SELECT count(*) FROM credyt.usage_counter"), 0);
    assert_ledger_ok();
}

#[pg_test]
fn usage_rules_reject_bad_input_and_write_nothing() {
    fresh_account("Acme");
    Spi::run("SELECT credyt.create_customer('Ann', 'ann')").unwrap();
    for (sql, code) in [
        ("credyt.set_free_tier('chat', 10, 'hour')", "CY400"),
        ("credyt.set_free_tier('chat', -1, 'day')", "CY400"),
        ("credyt.set_free_tier('chat', 10, NULL)", "CY400"),
        ("credyt.set_free_tier('', 10, 'day')", "CY400"),
        ("credyt.set_free_tier('chat', 10, 'day', customer => 'ann', cohort => 'pro')", "CY400"),
        ("credyt.set_free_tier('chat', 10, 'day', customer => 'nobody')", "CY404"),
        ("credyt.set_usage_limit('chat', 10, '1 month 2 days')", "CY400"),
        ("credyt.set_usage_limit('chat', 10, '0 seconds')", "CY400"),
        ("credyt.set_usage_limit('chat', 10, '2 years')", "CY400"),
        ("credyt.set_usage_limit('chat', -1, '1 hour')", "CY400"),
        ("credyt.set_usage_limit('chat', 10, NULL)", "CY400"),
    ] {
        assert_eq!(sqlstate_of(&format!("SELECT {sql}")).as_deref(), Some(code), "{sql}");
    }
    assert_eq!(count("SELECT count(*) FROM credyt.usage_rule"), 0);
    assert_eq!(count("SELECT count(*) FROM credyt.free_tier_usage('ann', 'chat')"), 0);
}

#[pg_test]
fn subscriptions_are_activated_once_at_their_start() {
    fresh_account("Acme");
    Spi::run(&format!("SELECT credyt.create_product('pro', 'Pro', '{FIXED_PRICES}')")).unwrap();
    Spi::run("SELECT credyt.create_customer('Ann', 'ann'); SELECT credyt.adjust('ann', 'g', 'USD', 100, 'gift')").unwrap();
    let activated = || count("SELECT count(*) FROM credyt.event WHERE event_type = 'subscription.activated'");
    let now = text("SELECT credyt.subscribe('ann', 'pro')");
    assert_eq!(activated(), 1, "a subscription that starts at once is active at once");
    assert_eq!(
        text(&format!("SELECT data->>'product' || ' ' || (data->>'version') FROM credyt.event \
                       WHERE event_type = 'subscription.activated' AND data->>'subscription_id' = '{now}'")),
        "pro 1"
    );
    let later = text("SELECT credyt.subscribe('ann', 'pro', starts_at => now() + interval '2 days')");
    let never = text("SELECT credyt.subscribe('ann', 'pro', starts_at => now() + interval '1 day')");
    Spi::run(&format!("SELECT credyt.cancel_subscription('{never}', now())")).unwrap();
    assert_eq!(activated(), 1);
    let tick = |ahead: &str| count(&format!("SELECT (credyt.tick(now() + interval '{ahead}') ->> 'subscriptions_activated')::bigint"));
    assert_eq!(tick("1 day"), 0);
    assert_eq!(tick("2 days"), 1);
    assert_eq!(tick("3 days"), 0, "once");
    assert_eq!(
        text(&format!("SELECT count(*)::text FROM credyt.event WHERE event_type = 'subscription.activated' \
                       AND data->>'subscription_id' IN ('{later}', '{never}')")),
        "1"
    );
    assert_ledger_ok();
}
