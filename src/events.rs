//! The outbox (SPEC §10): events written in the caller's transaction, announced at
//! commit on the account's private events channel (payload: the event id) and on the
//! workers' channel, with their deliveries queued
//! beside them (crate::webhooks). credyt.events shows each one with its webhook
//! envelope. tick() prunes what is fully delivered after `credyt.event_retention`.

use crate::error::{CyError, Result};
use crate::spi::{one, run};
pub use credyt_core::webhook::Topic;
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use pgrx::{GucContext, GucFlags, GucRegistry, GucSetting, JsonB};
use serde_json::Value;

/// Seconds an event is kept once every delivery of it has succeeded (or it had
/// none); 0 keeps events for ever. Events with a failed or pending delivery are
/// never pruned, so they can be replayed.
pub static EVENT_RETENTION: GucSetting<i32> = GucSetting::<i32>::new(30 * 86_400);

/// Most events pruned per account per tick; the rest go at the next one. (Origin: the
/// same budget as the clock's HOLDS_PER_TICK, about a second of deletes.)
const PRUNE_PER_TICK: i64 = 10_000;

pub fn init_gucs() {
    GucRegistry::define_int_guc(
        c"credyt.event_retention",
        c"How long delivered events are kept before tick() prunes them (0: for ever).",
        c"Events with a pending or failed delivery are kept whatever this says, so they can be replayed.",
        &EVENT_RETENTION,
        0,
        i32::MAX,
        GucContext::Suset,
        GucFlags::UNIT_S,
    );
}

/// Writes one event for `account` and queues its deliveries; returns its `whe_…` id.
pub fn emit(
    c: &mut SpiClient<'_>,
    account: &str,
    topic: Topic,
    at: TimestampWithTimeZone,
    data: Value,
) -> Result<String> {
    let id = write(c, account, topic, at, data)?;
    crate::deliveries::fan_out(c, &id, account, topic.as_str())?;
    Ok(id)
}

/// Writes one event (of `topic`, occurred `at`) and announces it, without queueing
/// deliveries.
pub fn write(
    c: &mut SpiClient<'_>,
    account: &str,
    topic: Topic,
    at: TimestampWithTimeZone,
    data: Value,
) -> Result<String> {
    let id = crate::ids::new_id("whe")?;
    run(
        c,
        "INSERT INTO credyt.event (account_id, id, event_type, occurred_at, data) VALUES ($1, $2, $3, $4, $5)",
        &[account.into(), id.as_str().into(), topic.as_str().into(), at.into(), JsonB(data).into()],
    )?;
    // Announced to the account on its private channel (payload: the id), and to the
    // workers on theirs (no payload: NOTIFY folds identical ones within a transaction).
    // (A statement of its own: on Citus one that joined the insert's rows with the
    // accounts would send them to every node.)
    one::<bool>(
        c,
        "SELECT pg_notify('credyt_events_' || a.channel_key, $2) IS NULL \
                AND pg_notify(credyt._worker_channel(), '') IS NULL \
         FROM credyt.account a WHERE a.id = $1",
        &[account.into(), id.as_str().into()],
    )?;
    Ok(id)
}

/// Wakes the workers at commit (a replay).
pub fn announce(c: &mut SpiClient<'_>) -> Result<()> {
    run(c, "SELECT pg_notify(credyt._worker_channel(), '')", &[])?;
    Ok(())
}

/// Deletes the events of `accounts` older than the retention at `now` whose
/// deliveries all succeeded (or that had none), with those deliveries. Events being
/// replayed hold a KEY SHARE lock and are skipped.
pub fn prune(c: &mut SpiClient<'_>, accounts: &[String], now: TimestampWithTimeZone) -> Result<i64> {
    let seconds = EVENT_RETENTION.get();
    if seconds == 0 {
        return Ok(0);
    }
    // Per account, oldest first, among the prunable ones only (an event still pending
    // must not keep its account's share of the tick for ever). The deliveries are read
    // through _event_settled() and deleted in a statement of their own: on Citus the
    // events are a Citus local table, which no statement may join with a plain one.
    let pruned = one::<Vec<String>>(
        c,
        "WITH old AS ( \
           SELECT e.id FROM credyt.event e WHERE e.id = ANY (ARRAY( \
             SELECT x.id FROM unnest($1::text[]) AS a(id) CROSS JOIN LATERAL ( \
               SELECT v.id FROM credyt.event v WHERE v.account_id = a.id AND v.created_at < $2 - $3 * interval '1 second' \
                 AND credyt._event_settled(v.id) \
               ORDER BY v.created_at LIMIT $4) x)) \
           FOR UPDATE SKIP LOCKED), \
         pruned AS (DELETE FROM credyt.event e USING old WHERE e.id = old.id RETURNING e.id) \
         SELECT coalesce(array_agg(id), '{}') FROM pruned",
        &[accounts.to_vec().into(), now.into(), f64::from(seconds).into(), PRUNE_PER_TICK.into()],
    )?
    .ok_or_else(|| CyError::internal("pruning returned nothing"))?;
    if pruned.is_empty() {
        return Ok(0);
    }
    let n = pruned.len() as i64;
    run(c, "DELETE FROM credyt.delivery WHERE event_id = ANY($1)", &[pruned.into()])?;
    Ok(n)
}
