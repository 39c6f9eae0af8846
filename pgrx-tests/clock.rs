// The clock and the outbox (SPEC §10, §11).

#[pg_test]
fn tick_expires_holds_once_and_writes_the_envelope() {
    fresh_account("Acme");
    Spi::run("SELECT credyt.create_customer('Ann', 'ann'); SELECT credyt.adjust('ann', 't', 'USD', 10, 'external_topup')").unwrap();
    Spi::run("SELECT credyt.authorize('ann', 'short', 'USD', 2, '10 minutes')").unwrap();
    Spi::run("SELECT credyt.authorize('ann', 'long', 'USD', 3, '1 hour')").unwrap();
    assert_eq!(balance("ann"), "5");
    assert_eq!(text("SELECT credyt.tick(now() + interval '20 minutes')->>'holds_expired'"), "1");
    assert_eq!(text("SELECT credyt.tick(now() + interval '20 minutes')->>'holds_expired'"), "0", "ticking twice does nothing twice");
    assert_eq!(text("SELECT string_agg(hold_id || '=' || status, ',' ORDER BY hold_id) FROM credyt.holds"), "long=active,short=expired");
    assert_eq!(text("SELECT credyt.tick(now() + interval '2 hours')->>'holds_expired'"), "1");
    assert_eq!(count("SELECT count(*) FROM credyt.events WHERE event_type = 'hold.expired'"), 2);
    // the envelope, exactly: keys in this order, UTC milliseconds, data as JSON
    assert_eq!(
        text("SELECT string_agg(k, ',') FROM (SELECT json_object_keys(payload) AS k FROM credyt.events \
              WHERE payload->'data'->>'hold_id' = 'short') x"),
        "id,account,event_type,occurred_at,data"
    );
    let acc = text("SELECT credyt.current_account()");
    assert_eq!(
        text("SELECT concat_ws('|', payload->>'id' LIKE 'whe\\_%', payload->>'account', payload->>'event_type', \
                  payload->>'occurred_at' ~ '^\\d{4}-\\d\\d-\\d\\dT\\d\\d:\\d\\d:\\d\\d\\.\\d{3}Z$', \
                  payload->'data'->>'account_id', payload->'data'->>'amount', json_typeof(payload->'data'->'amount')) \
              FROM credyt.events WHERE payload->'data'->>'hold_id' = 'short'"),
        format!("t|{acc}|hold.expired|t|default:USD|2|number")
    );
    // an expired hold no longer counts, before and after the tick alike
    assert_eq!(balance("ann"), "10");
    assert_ledger_ok();
}

#[pg_test]
fn tick_and_schedule_jobs_reject_bad_input() {
    assert_eq!(sqlstate_of("SELECT credyt.tick(NULL)").as_deref(), Some("CY400"));
    assert_eq!(sqlstate_of("SELECT credyt.tick('infinity')").as_deref(), Some("CY400"));
    assert_eq!(sqlstate_of("SELECT credyt.schedule_jobs('')").as_deref(), Some("CY400"));
}

#[pg_test]
fn schedule_jobs_needs_pg_cron_and_registers_tick() {
    // The test cluster preloads pg_cron, but the extension is not created yet.
    let msg = error_of("SELECT credyt.schedule_jobs()").unwrap();
    assert!(msg.starts_with("CY400 pg_cron is not installed"), "{msg}");
    Spi::run(
        "CREATE OR REPLACE FUNCTION pg_temp.hint_of(stmt text) RETURNS text LANGUAGE plpgsql AS $f$ \
         DECLARE h text; BEGIN EXECUTE stmt; RETURN NULL; \
         EXCEPTION WHEN OTHERS THEN GET STACKED DIAGNOSTICS h = PG_EXCEPTION_HINT; RETURN h; END $f$",
    )
    .unwrap();
    let hint = text("SELECT pg_temp.hint_of('SELECT credyt.schedule_jobs()')");
    assert!(hint.contains("shared_preload_libraries = 'pg_cron'") && hint.contains("CREATE EXTENSION pg_cron"), "{hint}");
    Spi::run("CREATE EXTENSION pg_cron").unwrap();
    let id = Spi::get_one::<i64>("SELECT credyt.schedule_jobs('*/5 * * * *')").unwrap().unwrap();
    assert_eq!(
        text(&format!("SELECT schedule || ' ' || command FROM cron.job WHERE jobid = {id}")),
        "*/5 * * * * SELECT credyt.tick()"
    );
    // scheduling again replaces the job
    assert_eq!(Spi::get_one::<i64>("SELECT credyt.schedule_jobs()").unwrap(), Some(id));
    assert_eq!(count("SELECT count(*) FROM cron.job WHERE jobname = 'credyt-tick'"), 1);
}
