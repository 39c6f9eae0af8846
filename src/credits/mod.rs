//! Credits (SPEC §7): grants, one-off or recurring, and what the clock does when a
//! lot expires (its on_expiry policy).
//!
//! A grant issues lots through the ledger's credit path (so a lot repays debt first,
//! like any credit) with `source = 'grant:grt_…'` and entries of kind `grant`: grants
//! stay apart from paid balance in the audit trail. A recurring grant issues a fresh
//! lot each period, lasting one period; the clock issues the periods after the first.

//!
//! The files: this one holds what grants and expiry share (the tick limit, counter
//! accounts); `grants` records grants and issues their periods; `expiry` applies the
//! on_expiry policies at the clock; `api` the SQL functions (grant, auto top-up);
//! `topups` completes top-ups and starts checkout ones.

use crate::assets::resolve_asset;
use crate::customers;
use crate::error::{api, CyError, Result};
use crate::events;
use crate::money::{self, to_numeric};
use crate::scope::scope;
use crate::spi::{one, run, Row};
use crate::validate;
use crate::wallet::{self, Book, Credit, Wallet, WalletRef};
use credyt_core::burndown::{ExpiryPolicy, Purpose};
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use pgrx::{AnyNumeric, GucContext, GucFlags, GucRegistry, GucSetting, JsonB};
use rust_decimal::Decimal;
use serde_json::json;

mod api;
mod expiry;
mod grants;
pub mod topups;

pub use expiry::*;
pub use grants::*;

/// Most recurring grants issued, and most expired lots handled, per account per tick
/// (`credyt.tick_limit`). Per account, so that one tenant with a flood of due work
/// cannot stall the others; 1,000 was the old limit for all accounts together, so no
/// account gets less per tick than before.
pub static TICK_LIMIT: GucSetting<i32> = GucSetting::<i32>::new(1_000);

pub fn init_gucs() {
    GucRegistry::define_int_guc(
        c"credyt.tick_limit",
        c"Most recurring grants and expired lots that one tick() handles per account.",
        c"The rest are due at the next tick; the limit is per account so that no tenant waits on another.",
        &TICK_LIMIT,
        1,
        1_000_000,
        GucContext::Suset,
        GucFlags::default(),
    );
}

pub fn tick_limit() -> i64 {
    i64::from(TICK_LIMIT.get())
}

/// An interval as core's period arithmetic sees it.
fn period_of(i: &Interval) -> credyt_core::period::Period {
    credyt_core::period::Period { months: i.months().into(), days: i.days().into(), micros: i.micros() }
}

/// The system account a grant's lots are credited against, by purpose.
fn counter_account(purpose: Purpose) -> &'static str {
    match purpose {
        Purpose::Promotion => "promotions",
        Purpose::Bundled => "entitlements",
        Purpose::Paid => "grants",
    }
}

use money::json_number as num;
