//! The clock (SPEC §11): tick() does the time-based work that is due, and
//! schedule_jobs() has pg_cron call it.
//!
//! Both are administrator functions: they run with the caller's rights and are not
//! given by grant_access(), because tick(now => …) moves time for every account in
//! scope. pg_cron runs tick() as the job's owner.
//!
//! Due today: lot expiry (with each lot's on_expiry policy), the periods of recurring
//! grants, hold expiry, the periods of fixed and seat fees, subscriptions reaching
//! their start, and pruning delivered events (credyt.event_retention).

use crate::error::{api, CyError, Result};
use crate::events;
use crate::scope::{accounts_within, scope};
use crate::spi::{one, run, Row};
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use pgrx::JsonB;
use serde_json::json;

/// Most holds expired per account per tick; the rest are due at the next one.
/// (Origin: one hold's expiry is one UPDATE row and one event, about 0.1 ms, so 10,000
/// keep an account's share of a tick near a second, well inside pg_cron's minute.)
const HOLDS_PER_TICK: i64 = 10_000;

/// What expire_holds() writes once its due holds are claimed (`due`): the holds, and
/// the held figure of wallet rows that still count them. Shared by the two claims.
macro_rules! expire_claimed_holds {
    () => {
        ", done AS (UPDATE credyt.hold h SET status = 'expired', closed_at = $2 FROM due \
           WHERE h.customer_id = due.customer_id AND h.id = due.id \
           RETURNING h.account_id, h.id, h.hold_key, h.customer_id, h.wallet_name, h.asset, h.amount, h.expires_at) \
         , unheld AS ( \
           UPDATE credyt.wallet_account w SET held = w.held - x.amount \
           FROM (SELECT customer_id, wallet_name, asset, sum(amount) AS amount FROM done WHERE expires_at > now() \
                 GROUP BY 1, 2, 3) x \
           WHERE w.customer_id = x.customer_id AND w.name = x.wallet_name AND w.asset = x.asset) \
         SELECT account_id, id, hold_key, customer_id, wallet_name || ':' || asset AS wallet, amount::text AS amount, \
           expires_at FROM done"
    };
}

/// Marks the active holds that expired at or before `now` as expired, each exactly
/// once however many ticks run at the same time (SKIP LOCKED), and emits
/// `hold.expired` for each.
fn expire_holds(c: &mut SpiClient<'_>, accounts: &[String], now: TimestampWithTimeZone) -> Result<i64> {
    // Per account (as credits::issue_recurring): one tenant's flood of expired
    // holds does not hold back another's. A tick ahead of the clock expires holds
    // that still count in their wallet rows' held: `unheld` takes them out.
    const ALL: &str = concat!(
        "WITH due AS (SELECT customer_id, id FROM credyt.hold WHERE id = ANY (ARRAY( \
                        SELECT x.id FROM unnest($1::text[]) AS a(id) CROSS JOIN LATERAL ( \
                          SELECT h.id FROM credyt.hold h WHERE h.account_id = a.id AND h.status = 'active' \
                            AND h.expires_at <= $2 ORDER BY h.expires_at, h.id LIMIT $3) x)) \
                      AND status = 'active' AND expires_at <= $2 ORDER BY expires_at, id FOR UPDATE SKIP LOCKED) ",
        expire_claimed_holds!()
    );
    // On Citus (crate::distributed::due_by_customer): found per account, claimed per customer.
    const DUE: &str = "SELECT customer_id, id FROM credyt.hold WHERE account_id = $1 AND status = 'active' \
                       AND expires_at <= $2 ORDER BY expires_at, id LIMIT $3";
    const ONE_CUSTOMER: &str = concat!(
        "WITH due AS (SELECT customer_id, id FROM credyt.hold WHERE customer_id = $1 AND id = ANY($3::text[]) \
           AND status = 'active' AND expires_at <= $2 ORDER BY expires_at, id FOR UPDATE SKIP LOCKED) ",
        expire_claimed_holds!()
    );
    let mut expired = Vec::new();
    if crate::distributed::active() {
        for (customer, ids) in crate::distributed::due_by_customer(c, DUE, accounts, now, HOLDS_PER_TICK)? {
            expired_holds(run(c, ONE_CUSTOMER, &[customer.into(), now.into(), ids.into()])?, &mut expired)?;
        }
    } else {
        expired_holds(run(c, ALL, &[accounts.to_vec().into(), now.into(), HOLDS_PER_TICK.into()])?, &mut expired)?;
    }
    let n = expired.len() as i64;
    for (account, data, at) in expired {
        events::emit(c, &account, events::Topic::HoldExpired, at, data)?;
    }
    Ok(n)
}

/// The rows of expire_claimed_holds!(), as the account, the event's data and its time.
fn expired_holds(
    t: crate::spi::Table<'_>,
    into: &mut Vec<(String, serde_json::Value, TimestampWithTimeZone)>,
) -> Result<()> {
    for row in t {
        into.push((
            row.req::<String>("account_id")?,
            json!({
                "hold_id": row.opt::<String>("hold_key")?,
                "id": row.req::<String>("id")?,
                "customer_id": row.req::<String>("customer_id")?,
                "account_id": row.req::<String>("wallet")?,
                "amount": serde_json::Number::from_string_unchecked(row.req::<String>("amount")?),
            }),
            row.req::<TimestampWithTimeZone>("expires_at")?,
        ));
    }
    Ok(())
}

/// Deletes the usage counters (free tiers, limits) of windows that ended more than 35
/// days before `now`: an event that late is not expected, and one would start its
/// window afresh. At most 10,000 per account per tick.
fn prune_counters(c: &mut SpiClient<'_>, accounts: &[String], now: TimestampWithTimeZone) -> Result<i64> {
    // (on Citus, which runs neither the lateral LIMIT nor a DELETE's LIMIT across
    // shards: every such counter, each shard deleting its own)
    const ALL: &str = "WITH gone AS (DELETE FROM credyt.usage_counter u USING ( \
           SELECT x.customer_id, x.kind, x.event_type, x.window_start FROM unnest($1::text[]) AS a(id) \
           CROSS JOIN LATERAL (SELECT customer_id, kind, event_type, window_start FROM credyt.usage_counter \
             WHERE account_id = a.id AND window_end < $2 - interval '35 days' LIMIT 10000) x) d \
         WHERE (u.customer_id, u.kind, u.event_type, u.window_start) = (d.customer_id, d.kind, d.event_type, d.window_start) \
         RETURNING 1) SELECT count(*) FROM gone";
    const SHARDED: &str = "WITH gone AS (DELETE FROM credyt.usage_counter \
           WHERE account_id = ANY($1::text[]) AND window_end < $2 - interval '35 days' RETURNING 1) \
         SELECT count(*) FROM gone";
    let sql = if crate::distributed::active() { SHARDED } else { ALL };
    Ok(one::<i64>(c, sql, &[accounts.to_vec().into(), now.into()])?.unwrap_or(0))
}

#[pg_extern]
#[search_path(@extschema@, pg_temp)]
fn tick(now: default!(Option<TimestampWithTimeZone>, "now()")) -> JsonB {
    api(move || {
        let now = crate::validate::required_time("now", now)?;
        Spi::connect_mut(|c| {
            // On Citus ticks run one at a time: a tick claims its rows customer by
            // customer there, on many shards, and two interleaved ticks would wait on
            // each other's shards across the cluster. (On one node they claim with
            // SKIP LOCKED in one statement and share the work.) Before anything else,
            // so that a waiting tick holds nothing on any node.
            if crate::distributed::active() {
                run(c, "SELECT pg_advisory_xact_lock(hashtextextended('credyt.tick', 0))", &[])?;
            }
            let root = scope(c)?;
            let accounts = accounts_within(c, &root)?;
            // Prune first, so the events this tick writes are not pruned by it when
            // `now` is moved ahead of the clock.
            let events_pruned = events::prune(c, &accounts, now)?;
            // Expire before issuing: a period's lot expires before the next one arrives.
            let lots_expired = crate::credits::expire_lots(c, &accounts, now)?;
            let grants_issued = crate::credits::issue_recurring(c, &accounts, now)?;
            let holds_expired = expire_holds(c, &accounts, now)?;
            let fees_charged = crate::billing::charge_recurring(c, &accounts, now)?;
            let counters_pruned = prune_counters(c, &accounts, now)?;
            let subscriptions_activated = crate::catalog::activate(c, &accounts, now, None)?;
            Ok(JsonB(json!({
                "lots_expired": lots_expired,
                "grants_issued": grants_issued,
                "holds_expired": holds_expired,
                "fees_charged": fees_charged,
                "counters_pruned": counters_pruned,
                "subscriptions_activated": subscriptions_activated,
                "events_pruned": events_pruned,
            })))
        })
    })
}

fn pg_cron_installed(c: &mut SpiClient<'_>) -> Result<bool> {
    Ok(one::<bool>(c, "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'pg_cron')", &[])?
        .unwrap_or(false))
}

#[pg_extern]
#[search_path(@extschema@, pg_temp)]
fn schedule_jobs(schedule: default!(Option<String>, "'* * * * *'")) -> i64 {
    api(move || {
        let schedule = crate::validate::required("schedule", schedule)?;
        if schedule.trim().is_empty() || schedule.len() > 100 {
            return Err(CyError::invalid("schedule must be a cron expression such as '* * * * *'"));
        }
        Spi::connect_mut(|c| {
            if !pg_cron_installed(c)? {
                let db = one::<String>(c, "SELECT current_database()::text", &[])?.unwrap_or_default();
                return Err(CyError::invalid("pg_cron is not installed in this database")
                    .detail("credyt.schedule_jobs() registers credyt.tick() with pg_cron")
                    .hint(format!(
                        "install the postgresql-15-cron package, add shared_preload_libraries = 'pg_cron' and \
                         cron.database_name = '{db}' to postgresql.conf, restart PostgreSQL, then run \
                         CREATE EXTENSION pg_cron; in database {db}"
                    )));
            }
            // cron.schedule(name, …) replaces an existing job of that name.
            one::<i64>(
                c,
                "SELECT cron.schedule('credyt-tick', $1, 'SELECT credyt.tick()')",
                &[schedule.as_str().into()],
            )?
            .ok_or_else(|| CyError::internal("cron.schedule returned no job id"))
        })
    })
}
