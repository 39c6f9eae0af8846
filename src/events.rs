//! The outbox (SPEC §10): events written in the caller's transaction, announced on
//! `credyt_events` (payload: the event id) at commit. credyt.events shows each one
//! with its webhook envelope.

use crate::error::Result;
use crate::plan_cache::one;
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use pgrx::JsonB;
use serde_json::Value;

/// Writes one event for `account`; returns its `whe_…` id.
pub fn emit(
    c: &mut SpiClient<'_>,
    account: &str,
    event_type: &str,
    occurred_at: TimestampWithTimeZone,
    data: Value,
) -> Result<String> {
    let id = crate::ids::new_id("whe")?;
    one::<bool>(
        c,
        "WITH e AS (INSERT INTO credyt.event (account_id, id, event_type, occurred_at, data) \
           VALUES ($1, $2, $3, $4, $5) RETURNING id) \
         SELECT pg_notify('credyt_events', id) IS NULL FROM e",
        &[account.into(), id.as_str().into(), event_type.into(), occurred_at.into(), JsonB(data).into()],
    )?;
    Ok(id)
}
