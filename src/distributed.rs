//! credyt on Citus (sql/080_distribute.sql, README § Running distributed). A leaf:
//! imports no domain.
//!
//! On a distributed install the catalog tables are reference tables and the
//! customer-owned ones are sharded, so the triggers that set catalog generations
//! (sql/025_generations.sql) cannot run where the rows change: distribute() drops them.
//! A backend of a server that preloads Citus therefore keeps no lookups: it reads what
//! a charge looks up in the call that uses it (credyt_core::cache::set_enabled).

use crate::error::Result;
use crate::spi::{run, Row};
use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use std::sync::atomic::{AtomicBool, Ordering};

static ACTIVE: AtomicBool = AtomicBool::new(false);

/// True in a backend of a server that preloads Citus: the statements that cannot run
/// across shards (the clock's claims of many customers' rows) run customer by customer.
pub fn active() -> bool {
    ACTIVE.load(Ordering::Relaxed)
}

/// True when the server preloads Citus (it must, to run it).
fn citus_preloaded() -> bool {
    let p = unsafe { pg_sys::GetConfigOption(c"shared_preload_libraries".as_ptr(), true, false) };
    if p.is_null() {
        return false;
    }
    let libs = unsafe { std::ffi::CStr::from_ptr(p) }.to_string_lossy().to_string();
    libs.split(',').any(|l| l.trim().trim_matches('"') == "citus")
}

thread_local! {
    static ON_WORKER: std::cell::Cell<Option<bool>> = const { std::cell::Cell::new(None) };
}

/// True on a Citus worker node (a node of the cluster other than the coordinator),
/// where credyt runs only the row security of the queries the coordinator sends.
pub fn on_worker(c: &mut SpiClient<'_>) -> Result<bool> {
    if !active() {
        return Ok(false);
    }
    if let Some(known) = ON_WORKER.with(|w| w.get()) {
        return Ok(known);
    }
    let citus = crate::spi::one::<bool>(
        c,
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'citus')",
        &[],
    )?;
    // (pg_dist_local_group exists only with the extension: a statement of its own)
    let worker = citus == Some(true)
        && crate::spi::one::<bool>(c, "SELECT groupid <> 0 FROM pg_dist_local_group", &[])?.unwrap_or(false);
    ON_WORKER.with(|w| w.set(Some(worker)));
    Ok(worker)
}

/// `one_node`, or on Citus `sharded`: the same statement keyed by the customer. An
/// idempotency key is per account on one node (SPEC §6) and per customer on Citus,
/// where a lookup by account alone would ask every shard (sql/080_distribute.sql).
pub fn pick(one_node: &'static str, sharded: &'static str) -> &'static str {
    if active() {
        sharded
    } else {
        one_node
    }
}

/// At library load: no backend caches where Citus is preloaded.
pub fn init() {
    if citus_preloaded() {
        ACTIVE.store(true, Ordering::Relaxed);
        credyt_core::cache::set_enabled(false);
    }
}

/// The clock on Citus. One node claims the due rows of every account in one statement
/// (a lateral subquery per account, FOR UPDATE SKIP LOCKED); Citus runs neither a
/// lateral LIMIT over a list of accounts nor a lock across shards. So the due rows are
/// found per account without a lock (`due`: $1 the account, $2 now, $3 the limit;
/// returns customer_id and id, oldest first, across the shards), and each customer's
/// are then claimed by the caller in a statement on that customer's shard. Returns the
/// ids per customer, in the order found.
pub fn due_by_customer(
    c: &mut SpiClient<'_>,
    due: &'static str,
    accounts: &[String],
    now: TimestampWithTimeZone,
    limit: i64,
) -> Result<Vec<(String, Vec<String>)>> {
    let mut groups: Vec<(String, Vec<String>)> = Vec::new();
    let mut index = std::collections::HashMap::new();
    for account in accounts {
        for row in run(c, due, &[account.as_str().into(), now.into(), limit.into()])? {
            let (customer, id) = (row.req::<String>("customer_id")?, row.req::<String>("id")?);
            let i = *index.entry(customer.clone()).or_insert_with(|| {
                groups.push((customer, Vec::new()));
                groups.len() - 1
            });
            groups[i].1.push(id);
        }
    }
    Ok(groups)
}
