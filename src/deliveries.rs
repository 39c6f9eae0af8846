//! Deliveries (SPEC §10): which endpoints receive an event, and its delivery rows,
//! queued in the event's own transaction. The outbox (crate::events) calls fan_out for
//! every event it writes; the webhook functions (crate::webhooks) queue replays. An
//! endpoint receives its own account's events, or, with `connect = true`, the events of
//! every account below its own. credyt-worker does the sending.

use crate::error::Result;
use crate::spi::{one, run, Row};
use credyt_core::webhook::topic_matches;
use pgrx::spi::SpiClient;

/// The endpoints that receive events of `account`: its own plain endpoints, and the
/// connect endpoints of the accounts above it. Enabled and not deleted only.
/// (id, account_id, topics)
pub fn routes(c: &mut SpiClient<'_>, account: &str) -> Result<Vec<(String, String, Vec<String>)>> {
    let t = run(
        c,
        "WITH RECURSIVE up(id, depth) AS ( \
           SELECT parent_id, 1 FROM credyt.account WHERE id = $1 \
           UNION ALL SELECT a.parent_id, up.depth + 1 FROM credyt.account a JOIN up ON a.id = up.id \
             WHERE a.parent_id IS NOT NULL AND up.depth < 64) \
         SELECT w.id, w.account_id, w.topics FROM credyt.webhook w \
         WHERE w.enabled AND w.deleted_at IS NULL AND w.account_id = $1 AND NOT w.connect \
         UNION ALL \
         SELECT w.id, w.account_id, w.topics FROM up JOIN credyt.webhook w ON w.account_id = up.id \
         WHERE w.enabled AND w.deleted_at IS NULL AND w.connect",
        &[account.into()],
    )?;
    let mut out = Vec::new();
    for row in t {
        let topics: Vec<Option<String>> = row.req("topics")?;
        out.push((row.req::<String>("id")?, row.req::<String>("account_id")?, topics.into_iter().flatten().collect()));
    }
    Ok(out)
}

/// Queues deliveries of `event_id` to `targets` (webhook id, its account): new rows,
/// or, for a replay, the existing row made pending again with a fresh schedule.
pub fn queue(c: &mut SpiClient<'_>, event_id: &str, targets: Vec<(String, String)>) -> Result<i64> {
    if targets.is_empty() {
        return Ok(0);
    }
    let (ids, accounts): (Vec<String>, Vec<String>) = targets.into_iter().unzip();
    Ok(one::<i64>(
        c,
        "WITH q AS (INSERT INTO credyt.delivery (account_id, event_id, webhook_id) \
           SELECT a, $1, w FROM unnest($2::text[], $3::text[]) AS t(w, a) \
           ON CONFLICT (event_id, webhook_id) DO UPDATE SET status = 'pending', attempts = 0, \
             next_attempt_at = now(), last_error = NULL, last_status = NULL, claim = NULL, claimed_by = NULL, \
             delivered_at = NULL, failed_at = NULL \
           RETURNING 1) \
         SELECT count(*) FROM q",
        &[event_id.into(), ids.into(), accounts.into()],
    )?
    .unwrap_or(0))
}

/// The endpoints that route and subscribe to an event of `event_type` of `account`:
/// (webhook id, its account).
pub fn subscribed(c: &mut SpiClient<'_>, account: &str, event_type: &str) -> Result<Vec<(String, String)>> {
    Ok(routes(c, account)?
        .into_iter()
        .filter(|(_, _, topics)| topic_matches(topics, event_type))
        .map(|(id, acc, _)| (id, acc))
        .collect())
}

/// Queues the deliveries of a just-written event to every endpoint that routes and
/// subscribes to it.
pub fn fan_out(c: &mut SpiClient<'_>, event_id: &str, account: &str, event_type: &str) -> Result<i64> {
    let targets = subscribed(c, account, event_type)?;
    queue(c, event_id, targets)
}
