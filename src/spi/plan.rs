//! Prepared SPI plans, kept per backend and keyed by their constant SQL text.
//!
//! Every statement credyt runs is a `&'static str` with `$n` parameters; the first
//! use in a backend prepares and keeps it (`SPI_keepplan`), later uses execute the
//! kept plan. Postgres' plan cache revalidates kept plans after DDL, and the API
//! runs as the function owner, so the role never varies under a cached plan.

use super::{AddrMap, Table};
use crate::error::Result;
use pgrx::datum::DatumWithOid;
use pgrx::spi::{OwnedPreparedStatement, SpiClient};
use pgrx::PgOid;
use std::cell::RefCell;
use std::rc::Rc;

thread_local! {
    /// Keyed by the statement's address and length: every statement is a `'static`
    /// constant, so its address names it, and hashing two words instead of the whole
    /// text saves a few thousand instructions per statement run. (Two constants with
    /// the same text at two addresses only get a plan each.)
    static PLANS: RefCell<AddrMap<(usize, usize), Rc<OwnedPreparedStatement>>> =
        RefCell::new(AddrMap::default());
}

fn key(sql: &'static str) -> (usize, usize) {
    (sql.as_ptr() as usize, sql.len())
}

/// Executes `sql` with `args` through the backend's kept plan for it.
pub fn run<'conn>(client: &mut SpiClient<'conn>, sql: &'static str, args: &[DatumWithOid]) -> Result<Table<'conn>> {
    // Clone the Rc out so no RefCell borrow is held while the statement runs: it may
    // call back into credyt (and so into this cache).
    let cached = PLANS.with(|p| p.borrow().get(&key(sql)).cloned());
    let plan = match cached {
        Some(plan) => plan,
        None => {
            let oids: Vec<PgOid> = args.iter().map(|a| PgOid::from(a.oid())).collect();
            let plan = Rc::new(client.prepare_mut(sql, &oids)?.keep());
            PLANS.with(|p| p.borrow_mut().insert(key(sql), plan.clone()));
            plan
        }
    };
    Ok(Table { inner: client.update(&*plan, None, args)?, sql })
}

/// First column of the first row, if any row came back.
pub fn one<T: pgrx::FromDatum + pgrx::IntoDatum>(
    client: &mut SpiClient<'_>,
    sql: &'static str,
    args: &[DatumWithOid],
) -> Result<Option<T>> {
    let table = run(client, sql, args)?;
    if table.is_empty() {
        return Ok(None);
    }
    Ok(table.inner.first().get::<T>(1)?)
}

/// Executes `sql` planned for these very argument values, without keeping the plan:
/// for statements over arrays (a batch) whose best plan depends on how many elements
/// they hold, which a kept generic plan cannot know. Planning once per batch is cheap.
pub fn run_once<'conn>(
    client: &mut SpiClient<'conn>,
    sql: &'static str,
    args: &[DatumWithOid],
) -> Result<Table<'conn>> {
    Ok(Table { inner: client.update(sql, None, args)?, sql })
}
