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

/// Marks the active holds that expired at or before `now` as expired, each exactly
/// once however many ticks run at the same time (SKIP LOCKED), and emits
/// `hold.expired` for each.
fn expire_holds(c: &mut SpiClient<'_>, accounts: &[String], now: TimestampWithTimeZone) -> Result<i64> {
    let t = run(
        c,
        // Per account (as credits::issue_recurring): one tenant's flood of expired
        // holds does not hold back another's. A tick ahead of the clock expires holds
        // that still count in their wallet rows' held: `unheld` takes them out.
        "WITH due AS (SELECT id FROM credyt.hold WHERE id = ANY (ARRAY( \
                        SELECT x.id FROM unnest($1::text[]) AS a(id) CROSS JOIN LATERAL ( \
                          SELECT h.id FROM credyt.hold h WHERE h.account_id = a.id AND h.status = 'active' \
                            AND h.expires_at <= $2 ORDER BY h.expires_at, h.id LIMIT $3) x)) \
                      AND status = 'active' AND expires_at <= $2 ORDER BY expires_at, id FOR UPDATE SKIP LOCKED) \
         , done AS (UPDATE credyt.hold h SET status = 'expired', closed_at = $2 FROM due WHERE h.id = due.id \
           RETURNING h.account_id, h.id, h.hold_key, h.customer_id, h.wallet_name, h.asset, h.amount, h.expires_at) \
         , unheld AS ( \
           UPDATE credyt.wallet_account w SET held = w.held - x.amount \
           FROM (SELECT customer_id, wallet_name, asset, sum(amount) AS amount FROM done WHERE expires_at > now() \
                 GROUP BY 1, 2, 3) x \
           WHERE w.customer_id = x.customer_id AND w.name = x.wallet_name AND w.asset = x.asset) \
         SELECT account_id, id, hold_key, customer_id, wallet_name || ':' || asset AS wallet, amount::text AS amount, \
           expires_at FROM done",
        &[accounts.to_vec().into(), now.into(), HOLDS_PER_TICK.into()],
    )?;
    let mut expired = Vec::new();
    for row in t {
        expired.push((
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
    let n = expired.len() as i64;
    for (account, data, at) in expired {
        events::emit(c, &account, events::Topic::HoldExpired, at, data)?;
    }
    Ok(n)
}

/// Deletes the usage counters (free tiers, limits) of windows that ended more than 35
/// days before `now`: an event that late is not expected, and one would start its
/// window afresh. At most 10,000 per account per tick.
fn prune_counters(c: &mut SpiClient<'_>, accounts: &[String], now: TimestampWithTimeZone) -> Result<i64> {
    Ok(one::<i64>(
        c,
        "WITH gone AS (DELETE FROM credyt.usage_counter u USING ( \
           SELECT x.customer_id, x.kind, x.event_type, x.window_start FROM unnest($1::text[]) AS a(id) \
           CROSS JOIN LATERAL (SELECT customer_id, kind, event_type, window_start FROM credyt.usage_counter \
             WHERE account_id = a.id AND window_end < $2 - interval '35 days' LIMIT 10000) x) d \
         WHERE (u.customer_id, u.kind, u.event_type, u.window_start) = (d.customer_id, d.kind, d.event_type, d.window_start) \
         RETURNING 1) SELECT count(*) FROM gone",
        &[accounts.to_vec().into(), now.into()],
    )?
    .unwrap_or(0))
}

#[pg_extern]
#[search_path(@extschema@, pg_temp)]
fn tick(now: default!(Option<TimestampWithTimeZone>, "now()")) -> JsonB {
    api(move || {
        let now = crate::validate::required_time("now", now)?;
        Spi::connect_mut(|c| {
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
