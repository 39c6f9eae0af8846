//! Wallets and the ledger (SPEC §5): lots, immutable double-entry transactions,
//! burn-down, debt and the overdraft limit.
//!
//! A money movement on a wallet account runs in this order:
//! 1. validate every argument (nothing is written before this passes);
//! 2. claim the idempotency key (a replay stops here, writing nothing);
//! 3. lock the wallet account row — the only row locked, and it belongs to the customer;
//! 4. read its live lots, compute in Rust (core's burn-down), check the overdraft limit;
//! 5. write: new lot, lot remainders, entries (one statement), the wallet row.
//!
//! The wallet row holds `balance` (= sum of its entries) and `debt`; lots hold their
//! `remaining`. Each customer leg of a transaction names the lot it moves, or none for
//! the debt part, so `lot.remaining = sum(entries of the lot)` and
//! `debt = -sum(entries without a lot)` hold at all times; verify_ledger() checks them.

//!
//! The files: this one holds the nouns (the wallet, its lots, the book of legs) and the
//! rules on them; `lock` reads and locks; `movement` plans credits and debits (core's
//! burn-down); `write` writes a planned book, for one wallet or a batch; `claim` holds
//! the idempotency claims; `api` the SQL-facing functions; `verify` verify_ledger().

use crate::assets::{resolve_asset, Asset};
use crate::customers;
use crate::error::{api, CyError, Result};
use crate::money::{self, stored, to_numeric};
use crate::scope::scope;
use crate::spi::{one, run, run_once, Row};
use crate::validate;
use credyt_core::burndown::{allocate, ExpiryPolicy, LotView, Purpose};
use credyt_core::money::balance_in_range;
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use pgrx::{AnyNumeric, JsonB};
use rust_decimal::Decimal;
use serde_json::json;
use std::collections::BTreeMap;

/// A lot (aliased `l`) that a movement may draw now: effective, not expired, with
/// something remaining. Written once, spliced into each statement with concat!.
macro_rules! live_lot {
    () => {
        "NOT l.spent AND l.remaining > 0 AND l.effective_at <= now() AND (l.expires_at IS NULL OR l.expires_at > now())"
    };
}

/// The lots and holds of the wallet account aliased `w`, from `l` (credyt.lot) and `h`
/// (credyt.hold). Written once, spliced with concat!. `$c` is the customer: the
/// statement's parameter when it reads one wallet (`"$1"`: on Citus, a subquery keyed by
/// the parameter is seen to stay on the wallet's shard; one correlated to `w` is not,
/// and a wallet read FOR UPDATE must be one task), else `"w.customer_id"`.
macro_rules! of_lots {
    ($c:literal) => {
        concat!("l.customer_id = ", $c, " AND l.wallet_name = w.name AND l.asset = w.asset")
    };
}
macro_rules! of_holds {
    ($c:literal) => {
        concat!(
            "h.customer_id = ",
            $c,
            " AND h.wallet_name = w.name AND h.asset = w.asset AND h.status = 'active' AND h.expires_at > now()"
        )
    };
}

/// The sum of the active, unexpired holds on the wallet account aliased `w`, as a
/// scalar subquery.
macro_rules! held_sum {
    ($c:literal) => {
        concat!("(SELECT coalesce(sum(h.amount), 0) FROM credyt.hold h WHERE ", of_holds!($c), ")")
    };
}

/// The sum of the live lots of the wallet account aliased `w`, as a scalar subquery.
macro_rules! live_sum {
    ($c:literal) => {
        concat!(
            "(SELECT coalesce(sum(l.remaining), 0) FROM credyt.lot l WHERE ",
            of_lots!($c),
            " AND ",
            live_lot!(),
            ")"
        )
    };
}

/// The first moment after now at which time alone changes the live lots or active
/// holds of the wallet account aliased `w` (NULL: never), as a scalar subquery.
macro_rules! next_change {
    ($c:literal) => {
        concat!(
            "(SELECT min(x.t) FROM (SELECT CASE WHEN l.effective_at > now() THEN l.effective_at ELSE l.expires_at END AS t \
               FROM credyt.lot l WHERE ",
            of_lots!($c),
            " AND NOT l.spent AND l.remaining > 0 AND (l.expires_at IS NULL OR l.expires_at > now()) \
             UNION ALL SELECT h.expires_at FROM credyt.hold h WHERE ",
            of_holds!($c),
            ") x)"
        )
    };
}

/// Whether the wallet row aliased `w` still has right live and held figures.
macro_rules! fresh {
    () => {
        "(w.fresh_until IS NULL OR w.fresh_until > now())"
    };
}

/// The columns wallet_row() decodes, for every statement that locks wallet rows, from
/// wallet_source!(): the row's state, whether its live and held figures are still
/// fresh (if not, freshen() sums them), and the account's balance channel.
macro_rules! wallet_columns {
    () => {
        concat!(
            "w.balance::text AS balance, w.debt::text AS debt, w.overdraft_limit::text AS overdraft_limit, \
             w.live::text AS live, w.held::text AS held, w.fresh_until, ",
            fresh!(),
            " AS fresh, w.threshold::text AS threshold, w.threshold_armed, w.topup_enabled, \
             w.topup_threshold::text AS topup_threshold, w.topup_amount::text AS topup_amount, w.pending_topup, \
             CASE WHEN a.balance_push THEN 'credyt_balance_' || a.channel_key END AS push, a.catalog_gen AS account_gen "
        )
    };
}

/// The tables wallet_columns!() reads: a wallet account `w` and its tenant `a`.
macro_rules! wallet_source {
    () => {
        "credyt.wallet_account w JOIN credyt.account a ON a.id = w.account_id "
    };
}

/// The columns live_lot_row() decodes, from a lot aliased `l`.
macro_rules! lot_columns {
    () => {
        "l.id AS lot_id, l.purpose, l.priority, l.expires_at, l.seq, l.remaining::text AS remaining "
    };
}

/// The burn-down order of lots aliased `l` (core::burndown's, and the lot_burn index's).
macro_rules! burn_order {
    () => {
        "l.priority, l.expires_at, l.seq"
    };
}

/// The column available_row() decodes, for a wallet account aliased `w`: one row's
/// figures while fresh, else summed from its lots and holds.
macro_rules! available_columns {
    ($c:literal) => {
        concat!(
            "(CASE WHEN ",
            fresh!(),
            " THEN w.live - w.debt - w.held ELSE ",
            live_sum!($c),
            " - w.debt - ",
            held_sum!($c),
            " END)::text AS available "
        )
    };
}

mod api;
mod claim;
mod lock;
mod movement;
mod verify;
mod write;

pub use claim::*;
pub use lock::*;
pub use movement::*;
pub use write::*;

/// The wallet account a movement applies to.
pub struct WalletRef<'a> {
    pub account: &'a str,
    pub customer: &'a str,
    pub name: &'a str,
    pub asset: &'a str,
}

/// The locked wallet row, with the sum of its active holds.
pub struct Wallet {
    pub balance: Decimal,
    pub debt: Decimal,
    pub limit: Option<Decimal>,
    /// the remaining of the live lots, and the sum of the active holds
    pub live: Decimal,
    pub held: Decimal,
    /// until when live and held stay right by time alone (Postgres microseconds)
    pub fresh_until: Option<i64>,
    /// live and held are right now (false: read past fresh_until, until freshen())
    pub fresh: bool,
    /// set_threshold: alert when available falls below; armed until it fires, re-armed
    /// when available is back at or above.
    pub threshold: Option<Decimal>,
    pub armed: bool,
    /// set_auto_topup: (threshold, amount) when enabled, and the pending top-up
    pub auto_topup: Option<(Decimal, Decimal)>,
    pub pending_topup: Option<String>,
    /// The account's balance channel, when set_balance_push is on for it.
    pub push: Option<String>,
}

impl Wallet {
    /// available = live lots remaining − debt − active holds (SPEC §5).
    pub fn available(&self) -> Decimal {
        available_from(self.live, self.debt, self.held)
    }

    /// Brings fresh_until forward to `at` when that is sooner.
    pub fn fresh_before(&mut self, at: Option<i64>) {
        if let Some(at) = at {
            self.fresh_until = Some(self.fresh_until.map_or(at, |f| f.min(at)));
        }
    }

    /// Accounts for a new lot of `amount` in the wallet: live now, or from its
    /// effective time; either way time changes it at its start or its expiry.
    pub fn add_lot(&mut self, amount: Decimal, effective_at: Option<i64>, expires_at: Option<i64>, now: i64) {
        match effective_at.filter(|e| *e > now) {
            Some(later) => self.fresh_before(Some(later)),
            None if expires_at.is_none_or(|x| x > now) => {
                self.live += amount;
                self.fresh_before(expires_at);
            }
            None => {}
        }
    }

    /// Accounts for a new active hold.
    pub fn add_hold(&mut self, amount: Decimal, expires_at: i64) {
        self.held += amount;
        self.fresh_before(Some(expires_at));
    }

    /// Applies the threshold rule to the available balance after a change. Returns the
    /// threshold when this change crossed it downward (one event per crossing).
    pub fn cross_threshold(&mut self, available: Decimal) -> Option<Decimal> {
        let t = self.threshold?;
        if self.armed && available < t {
            self.armed = false;
            Some(t)
        } else {
            self.rearm(available);
            None
        }
    }

    /// Re-arms the threshold once available is back at or above it (credits, releases).
    pub fn rearm(&mut self, available: Decimal) {
        if self.threshold.is_some_and(|t| !self.armed && available >= t) {
            self.armed = true;
        }
    }
}

/// Emits balance_threshold_hit (SPEC §10) for a downward crossing.
pub fn threshold_hit(c: &mut SpiClient<'_>, w: &WalletRef, available: Decimal, threshold: Decimal) -> Result<()> {
    let n = money::json_number;
    crate::events::emit(
        c,
        w.account,
        crate::events::Topic::BalanceThresholdHit,
        pgrx::datetime::now(),
        json!({
            "customer_id": w.customer,
            "account_id": format!("{}:{}", w.name, w.asset),
            "available": n(available),
            "threshold": n(threshold),
        }),
    )?;
    Ok(())
}

/// Requests an auto top-up when available fell below the wallet's auto top-up threshold
/// and none is pending: a `top_…` row (counted in pending_in), the wallet's record of it,
/// and auto_topup.requested. The caller holds the wallet lock, so there is never a
/// second pending top-up for one wallet account.
pub fn request_topup(c: &mut SpiClient<'_>, w: &WalletRef, wallet: &mut Wallet, available: Decimal) -> Result<()> {
    let Some((threshold, amount)) = wallet.auto_topup else { return Ok(()) };
    if wallet.pending_topup.is_some() || available >= threshold {
        return Ok(());
    }
    let id = crate::ids::new_id("top")?;
    let args = [
        w.account.into(),
        id.as_str().into(),
        w.customer.into(),
        w.name.into(),
        w.asset.into(),
        to_numeric(amount).into(),
    ];
    // (two statements: on Citus an INSERT in a CTE would be sent to every worker)
    run(
        c,
        "INSERT INTO credyt.topup (account_id, id, customer_id, wallet_name, asset, amount, status) \
         VALUES ($1, $2, $3, $4, $5, $6, 'pending')",
        &args,
    )?;
    run(
        c,
        "UPDATE credyt.wallet_account SET pending_topup = $2 WHERE customer_id = $3 AND name = $4 AND asset = $5",
        &args,
    )?;
    let n = money::json_number;
    crate::events::emit(
        c,
        w.account,
        crate::events::Topic::AutoTopupRequested,
        pgrx::datetime::now(),
        json!({
            "topup_id": id, "customer_id": w.customer, "account_id": format!("{}:{}", w.name, w.asset),
            "amount": n(amount), "available": n(available), "threshold": n(threshold),
        }),
    )?;
    wallet.pending_topup = Some(id);
    Ok(())
}

/// Stores the threshold state of a locked wallet (after a hold changed available).
pub fn save_armed(c: &mut SpiClient<'_>, w: &WalletRef, armed: bool) -> Result<()> {
    run(
        c,
        "UPDATE credyt.wallet_account SET threshold_armed = $4 WHERE customer_id = $1 AND name = $2 AND asset = $3",
        &[w.customer.into(), w.name.into(), w.asset.into(), armed.into()],
    )?;
    Ok(())
}

/// The wallet account that holds a customer's reserve pool, per asset (SPEC §5, §7).
pub const RESERVE: &str = "reserve";

/// A customer's locked reserve pool (`reserve:ASSET`) and its live lots.
pub struct Pool {
    pub wallet: Wallet,
    pub lots: Vec<LiveLot>,
}

/// Locks and reads the reserve pool of the wallet's customer and asset, if it holds
/// anything. Callers hold the charged wallet's lock first: the pool is always locked
/// second, so two movements never wait on each other in a cycle.
pub fn reserve_pool(c: &mut SpiClient<'_>, w: &WalletRef) -> Result<Option<Pool>> {
    if w.name == RESERVE {
        return Ok(None);
    }
    let r = WalletRef { account: w.account, customer: w.customer, name: RESERVE, asset: w.asset };
    let Some(wallet) = read_locked(c, &r)? else { return Ok(None) };
    let lots = live_lots(c, &r)?;
    if lots.is_empty() {
        return Ok(None);
    }
    Ok(Some(Pool { wallet, lots }))
}

/// Stores a reserve pool's balance and live lots after a movement drew from it.
pub fn save_pool(c: &mut SpiClient<'_>, w: &WalletRef, pool: &Wallet) -> Result<()> {
    run(
        c,
        "UPDATE credyt.wallet_account SET balance = $4, live = $5, updated_at = now() \
         WHERE customer_id = $1 AND name = $2 AND asset = $3",
        &[
            w.customer.into(),
            RESERVE.into(),
            w.asset.into(),
            to_numeric(pool.balance).into(),
            to_numeric(pool.live).into(),
        ],
    )?;
    Ok(())
}

/// Recomputes a wallet account's live, held and fresh_until from its lots and holds:
/// after the clock, whose time may differ from the transaction's, changed them.
pub fn refresh(c: &mut SpiClient<'_>, w: &WalletRef) -> Result<()> {
    run(
        c,
        concat!(
            "UPDATE credyt.wallet_account w SET live = ",
            live_sum!("$1"),
            ", held = ",
            held_sum!("$1"),
            ", fresh_until = ",
            next_change!("$1"),
            " WHERE w.customer_id = $1 AND w.name = $2 AND w.asset = $3"
        ),
        &[w.customer.into(), w.name.into(), w.asset.into()],
    )?;
    Ok(())
}

/// Stores a locked wallet's threshold state and holds (after a hold changed available).
pub fn save_holds(c: &mut SpiClient<'_>, w: &WalletRef, wallet: &Wallet) -> Result<()> {
    run(
        c,
        "UPDATE credyt.wallet_account SET threshold_armed = $4, held = $5, fresh_until = $6 \
         WHERE customer_id = $1 AND name = $2 AND asset = $3",
        &[
            w.customer.into(),
            w.name.into(),
            w.asset.into(),
            wallet.armed.into(),
            to_numeric(wallet.held).into(),
            at_time(wallet.fresh_until)?.into(),
        ],
    )?;
    Ok(())
}

/// A lot that a charge may draw from now.
#[derive(Clone)]
pub struct LiveLot {
    pub id: String,
    pub purpose: Purpose,
    pub view: LotView,
}

/// One line of a transaction, before it is written.
pub struct Leg {
    pub system: bool,
    pub ledger_name: String,
    pub amount: Decimal,
    pub lot_id: Option<String>,
    pub kind: &'static str,
}

/// Everything a transaction writes besides its header.
pub struct Book<'w> {
    pub wallet_ref: &'w WalletRef<'w>,
    pub txn_id: String,
    pub legs: Vec<Leg>,
    /// lot id -> amount drawn from it
    pub takes: BTreeMap<String, Decimal>,
}

impl<'w> Book<'w> {
    pub fn new(wallet_ref: &'w WalletRef<'w>, txn_id: String) -> Self {
        Book { wallet_ref, txn_id, legs: Vec::new(), takes: BTreeMap::new() }
    }
    pub fn customer_leg(&mut self, amount: Decimal, lot_id: Option<String>, kind: &'static str) {
        let name = self.wallet_ref.name.to_string();
        self.legs.push(Leg { system: false, ledger_name: name, amount, lot_id, kind });
    }
    /// A leg on another wallet account of the same customer and asset (the reserve pool).
    pub fn leg_on(&mut self, ledger_name: &str, amount: Decimal, lot_id: Option<String>, kind: &'static str) {
        self.legs.push(Leg { system: false, ledger_name: ledger_name.to_string(), amount, lot_id, kind });
    }
    pub fn system_leg(&mut self, system_account: &str, amount: Decimal, kind: &'static str) {
        self.legs.push(Leg { system: true, ledger_name: system_account.to_string(), amount, lot_id: None, kind });
    }
    pub fn take(&mut self, lot_id: &str, amount: Decimal) {
        *self.takes.entry(lot_id.to_string()).or_default() += amount;
    }
}

// ---------------------------------------------------------------------------------
// What a wallet-level call names

/// The account in scope, and the asset and customer a wallet-level call names in it.
pub struct Target {
    pub account: String,
    pub asset: Asset,
    pub customer: String,
}

impl Target {
    /// Resolves scope, then asset, then customer (CY403/CY404 as each fails).
    pub fn resolve(c: &mut SpiClient<'_>, asset: Option<&str>, customer: Option<&str>) -> Result<Target> {
        let account = scope(c)?;
        let asset = resolve_asset(c, &account, asset)?;
        let customer = customers::resolve(c, &account, customer)?;
        Ok(Target { account, asset, customer })
    }

    pub fn wallet<'a>(&'a self, name: &'a str) -> WalletRef<'a> {
        WalletRef { account: &self.account, customer: &self.customer, name, asset: &self.asset.code }
    }
}
