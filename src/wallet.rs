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

use crate::assets::{resolve_asset, Asset};
use crate::customers;
use crate::error::{api, CyError, Result};
use crate::money::{self, stored, to_numeric};
use crate::plan_cache::{one, run, run_once};
use crate::tenancy::scope;
use crate::validate;
use credyt_core::burndown::{allocate, default_priority, LotView};
use credyt_core::money::balance_in_range;
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use pgrx::{AnyNumeric, JsonB};
use rust_decimal::Decimal;
use serde_json::json;
use std::collections::BTreeMap;

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
    pub held: Decimal,
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
    let n =
        |d: Decimal| serde_json::Value::Number(serde_json::Number::from_string_unchecked(d.normalize().to_string()));
    crate::events::emit(
        c,
        w.account,
        "balance_threshold_hit",
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
    run(
        c,
        "WITH t AS (INSERT INTO credyt.topup (account_id, id, customer_id, wallet_name, asset, amount, status) \
           VALUES ($1, $2, $3, $4, $5, $6, 'pending')) \
         UPDATE credyt.wallet_account SET pending_topup = $2 WHERE customer_id = $3 AND name = $4 AND asset = $5",
        &[
            w.account.into(),
            id.as_str().into(),
            w.customer.into(),
            w.name.into(),
            w.asset.into(),
            to_numeric(amount).into(),
        ],
    )?;
    let n =
        |d: Decimal| serde_json::Value::Number(serde_json::Number::from_string_unchecked(d.normalize().to_string()));
    crate::events::emit(
        c,
        w.account,
        "auto_topup.requested",
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

/// Stores a reserve pool's balance after a movement drew from or added to it.
pub fn save_pool(c: &mut SpiClient<'_>, w: &WalletRef, balance: Decimal) -> Result<()> {
    run(
        c,
        "UPDATE credyt.wallet_account SET balance = $4, updated_at = now() WHERE customer_id = $1 AND name = $2 AND asset = $3",
        &[w.customer.into(), RESERVE.into(), w.asset.into(), to_numeric(balance).into()],
    )?;
    Ok(())
}

/// A lot that a charge may draw from now.
#[derive(Clone)]
pub struct LiveLot {
    pub id: String,
    pub purpose: String,
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
// Reading and locking

/// A lot (aliased `l`) that a movement may draw now: effective, not expired, with
/// something remaining. Written once, spliced into each statement with concat!.
macro_rules! live_lot {
    () => {
        "l.remaining > 0 AND l.effective_at <= now() AND (l.expires_at IS NULL OR l.expires_at > now())"
    };
}

/// The columns wallet_row() decodes, for every statement that locks wallet rows: the
/// row's state and the sum of its active, unexpired holds.
macro_rules! wallet_columns {
    () => {
        "w.balance::text, w.debt::text, w.overdraft_limit::text, \
         (SELECT coalesce(sum(h.amount), 0)::text FROM credyt.hold h WHERE h.customer_id = w.customer_id \
            AND h.wallet_name = w.name AND h.asset = w.asset AND h.status = 'active' AND h.expires_at > now()), \
         w.threshold::text, w.threshold_armed, w.topup_enabled, w.topup_threshold::text, w.topup_amount::text, \
         w.pending_topup, \
         (SELECT 'credyt_balance_' || a.channel_key FROM credyt.account a WHERE a.id = w.account_id AND a.balance_push) "
    };
}

const LOCK_WALLET: &str = concat!(
    "SELECT ",
    wallet_columns!(),
    "FROM credyt.wallet_account w WHERE w.customer_id = $1 AND w.name = $2 AND w.asset = $3 FOR UPDATE OF w"
);

/// Decodes (balance, debt, overdraft_limit, held as text, threshold as text,
/// threshold_armed, topup_enabled, topup_threshold, topup_amount, pending_topup),
/// starting at column `from`.
fn wallet_row(row: &pgrx::spi::SpiHeapTupleData<'_>, from: usize) -> Result<Wallet> {
    Ok(Wallet {
        balance: stored(&row.get::<String>(from)?.unwrap_or_default())?,
        debt: stored(&row.get::<String>(from + 1)?.unwrap_or_default())?,
        limit: row.get::<String>(from + 2)?.map(|s| stored(&s)).transpose()?,
        held: stored(&row.get::<String>(from + 3)?.unwrap_or_default())?,
        threshold: row.get::<String>(from + 4)?.map(|s| stored(&s)).transpose()?,
        armed: row.get::<bool>(from + 5)?.unwrap_or(true),
        auto_topup: match (row.get::<bool>(from + 6)?, row.get::<String>(from + 7)?, row.get::<String>(from + 8)?) {
            (Some(true), Some(t), Some(a)) => Some((stored(&t)?, stored(&a)?)),
            _ => None,
        },
        pending_topup: row.get::<String>(from + 9)?,
        push: row.get::<String>(from + 10)?,
    })
}

/// Decodes (id, purpose, priority, expires_at, seq, remaining as text) from column `from`.
fn live_lot_row(row: &pgrx::spi::SpiHeapTupleData<'_>, from: usize) -> Result<LiveLot> {
    Ok(LiveLot {
        id: row.get::<String>(from)?.unwrap_or_default(),
        purpose: row.get::<String>(from + 1)?.unwrap_or_default(),
        view: LotView {
            priority: row.get::<i32>(from + 2)?.unwrap_or_default(),
            expires_at: row.get::<TimestampWithTimeZone>(from + 3)?.map(|t| t.into_inner()),
            seq: row.get::<i64>(from + 4)?.unwrap_or_default(),
            remaining: stored(&row.get::<String>(from + 5)?.unwrap_or_default())?,
        },
    })
}

fn read_locked(c: &mut SpiClient<'_>, w: &WalletRef) -> Result<Option<Wallet>> {
    let t = run(c, LOCK_WALLET, &[w.customer.into(), w.name.into(), w.asset.into()])?;
    if t.is_empty() {
        return Ok(None);
    }
    Ok(Some(wallet_row(&t.first().get_heap_tuple()?.ok_or_else(|| CyError::internal("no row"))?, 1)?))
}

/// Locks the wallet account row unless another transaction holds it (then None): for
/// the clock, which comes back at the next tick rather than wait.
pub fn try_lock(c: &mut SpiClient<'_>, w: &WalletRef) -> Result<Option<Wallet>> {
    let t = run(
        c,
        concat!(
            "SELECT ",
            wallet_columns!(),
            "FROM credyt.wallet_account w WHERE w.customer_id = $1 AND w.name = $2 AND w.asset = $3 \
             FOR UPDATE OF w SKIP LOCKED"
        ),
        &[w.customer.into(), w.name.into(), w.asset.into()],
    )?;
    if t.is_empty() {
        return Ok(None);
    }
    Ok(Some(wallet_row(&t.first().get_heap_tuple()?.ok_or_else(|| CyError::internal("no row"))?, 1)?))
}

/// Locks the wallet account row, creating it on first use. This is the one lock a
/// money movement takes; concurrent movements on one wallet serialise here.
pub fn lock(c: &mut SpiClient<'_>, w: &WalletRef) -> Result<Wallet> {
    if let Some(wallet) = read_locked(c, w)? {
        return Ok(wallet);
    }
    ensure(c, w)?;
    read_locked(c, w)?.ok_or_else(|| CyError::internal("wallet account vanished after insert"))
}

/// Creates the wallet account if it does not exist yet (subscribe provisions them; a
/// first movement creates its own).
pub fn ensure(c: &mut SpiClient<'_>, w: &WalletRef) -> Result<()> {
    run(
        c,
        "INSERT INTO credyt.wallet_account (account_id, customer_id, name, asset) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (customer_id, name, asset) DO NOTHING",
        &[w.account.into(), w.customer.into(), w.name.into(), w.asset.into()],
    )?;
    Ok(())
}

/// Writes the header of a ledger transaction that no client key names (grants, expiry,
/// top-ups); returns its `txn_…` id. (Client-keyed ones go through claim().)
pub fn open_txn(
    c: &mut SpiClient<'_>,
    account: &str,
    kind: &str,
    customer: &str,
    payload: serde_json::Value,
    description: Option<&str>,
) -> Result<String> {
    let txn = crate::ids::new_id("txn")?;
    run(
        c,
        "INSERT INTO credyt.ledger_txn (account_id, id, kind, customer_id, payload, description) \
         VALUES ($1, $2, $3, $4, $5, $6)",
        &[account.into(), txn.as_str().into(), kind.into(), customer.into(), JsonB(payload).into(), description.into()],
    )?;
    Ok(txn)
}

/// Lots that are effective and not expired now, with something remaining.
pub fn live_lots(c: &mut SpiClient<'_>, w: &WalletRef) -> Result<Vec<LiveLot>> {
    let t = run(
        c,
        concat!(
            "SELECT l.id, l.purpose, l.priority, l.expires_at, l.seq, l.remaining::text FROM credyt.lot l \
             WHERE l.customer_id = $1 AND l.wallet_name = $2 AND l.asset = $3 AND ",
            live_lot!()
        ),
        &[w.customer.into(), w.name.into(), w.asset.into()],
    )?;
    let mut lots = Vec::with_capacity(t.len());
    for row in t {
        lots.push(live_lot_row(&row, 1)?);
    }
    Ok(lots)
}

/// available = live lots remaining − debt − active holds (SPEC §5).
pub fn available(lots: &[LiveLot], wallet: &Wallet) -> Decimal {
    lots.iter().map(|l| l.view.remaining).sum::<Decimal>() - wallet.debt - wallet.held
}

/// The balance push payload (SPEC §10).
fn balance_payload(w: &WalletRef, available: Decimal) -> String {
    json!({
        "account": w.account,
        "customer_id": w.customer,
        "account_id": format!("{}:{}", w.name, w.asset),
        "available": serde_json::Number::from_string_unchecked(available.normalize().to_string()),
    })
    .to_string()
}

/// Pushes `available` on the account's balance channel (`wallet.push`, present when
/// set_balance_push is on), delivered at commit.
pub fn notify_balance(c: &mut SpiClient<'_>, wallet: &Wallet, w: &WalletRef, available: Decimal) -> Result<()> {
    if let Some(channel) = &wallet.push {
        run(c, "SELECT pg_notify($1, $2)", &[channel.as_str().into(), balance_payload(w, available).into()])?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------
// Movements

/// Repays debt from live lots, in burn-down order ("the next credit repays first").
fn settle_debt(lots: &mut [LiveLot], wallet: &mut Wallet, book: &mut Book) {
    if wallet.debt <= Decimal::ZERO {
        return;
    }
    let views: Vec<LotView> = lots.iter().map(|l| l.view.clone()).collect();
    let alloc = allocate(&views, wallet.debt);
    let mut repaid = Decimal::ZERO;
    for (i, take) in alloc.takes {
        lots[i].view.remaining -= take;
        book.take(&lots[i].id, take);
        book.customer_leg(-take, Some(lots[i].id.clone()), "debt_repayment");
        repaid += take;
    }
    if repaid > Decimal::ZERO {
        book.customer_leg(repaid, None, "debt_repayment");
        wallet.debt -= repaid;
    }
}

pub struct Credit<'a> {
    pub amount: Decimal,
    pub purpose: &'a str,
    pub priority: i32,
    pub effective_at: Option<TimestampWithTimeZone>,
    pub expires_at: Option<TimestampWithTimeZone>,
    /// expire | rollover | reserve, and the rollover cap
    pub on_expiry: &'a str,
    pub rollover_cap: Option<Decimal>,
    pub grant_id: Option<&'a str>,
    pub source: &'a str,
    pub system_account: &'a str,
    pub kind: &'static str,
}

/// Credits a new lot to the wallet; the lot repays any debt first. Returns its id.
pub fn credit(c: &mut SpiClient<'_>, w: &WalletRef, txn_id: &str, cr: Credit) -> Result<String> {
    let mut wallet = lock(c, w)?;
    let balance = wallet.balance + cr.amount;
    if !balance_in_range(balance) {
        return Err(CyError::invalid(format!("the balance of {}:{} would exceed 10^16", w.name, w.asset)));
    }
    let lot_id = crate::ids::new_id("lot")?;
    run(
        c,
        "INSERT INTO credyt.lot (account_id, id, customer_id, wallet_name, asset, purpose, priority, amount, \
           remaining, effective_at, expires_at, source, txn_id, on_expiry, rollover_cap, grant_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, coalesce($9, now()), $10, $11, $12, $13, $14, $15)",
        &[
            w.account.into(),
            lot_id.as_str().into(),
            w.customer.into(),
            w.name.into(),
            w.asset.into(),
            cr.purpose.into(),
            cr.priority.into(),
            to_numeric(cr.amount).into(),
            cr.effective_at.into(),
            cr.expires_at.into(),
            cr.source.into(),
            txn_id.into(),
            cr.on_expiry.into(),
            cr.rollover_cap.map(to_numeric).into(),
            cr.grant_id.into(),
        ],
    )?;
    let mut book = Book::new(w, txn_id.to_string());
    book.customer_leg(cr.amount, Some(lot_id.clone()), cr.kind);
    book.system_leg(cr.system_account, -cr.amount, cr.kind);
    if wallet.debt > Decimal::ZERO {
        let mut lots = live_lots(c, w)?; // includes the new lot when it is effective now
        settle_debt(&mut lots, &mut wallet, &mut book);
    }
    wallet.balance = balance;
    // Available after the credit (settling debt does not change it): it re-arms the
    // threshold and goes out on credyt_balance, with the write.
    let after = if wallet.threshold.is_some() || wallet.push.is_some() {
        let a = available_of(c, w.customer, w.name, w.asset)?;
        wallet.rearm(a);
        Some(a)
    } else {
        None
    };
    write(c, &wallet, book, after)?;
    Ok(lot_id)
}

/// Which lots a debit may draw from.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum DrawFrom {
    /// every live lot, in burn-down order; the shortfall becomes debt
    AnyLot,
    /// only `paid` lots, and never into debt (refunds of real money)
    PaidOnly,
}

pub struct Debit<'a> {
    pub amount: Decimal,
    pub draw: DrawFrom,
    pub system_account: &'a str,
    pub kind: &'static str,
}

/// Draws an amount from the wallet in burn-down order, honouring the overdraft limit.
/// Returns the available balance afterwards.
pub fn debit(c: &mut SpiClient<'_>, w: &WalletRef, txn_id: &str, d: Debit) -> Result<Decimal> {
    let mut wallet = lock(c, w)?;
    let mut lots = live_lots(c, w)?;
    let mut book = Book::new(w, txn_id.to_string());
    // The reserve pool is read (and locked) only when the wallet's own lots, after
    // repaying debt, cannot cover the amount.
    let own: Decimal = lots.iter().map(|l| l.view.remaining).sum();
    let mut pool = if d.draw == DrawFrom::AnyLot && (own - wallet.debt).max(Decimal::ZERO) < d.amount {
        reserve_pool(c, w)?
    } else {
        None
    };
    let after = plan_debit(&mut wallet, &mut lots, &mut book, &d, pool.as_mut())?;
    let hit = wallet.cross_threshold(after);
    write(c, &wallet, book, Some(after))?;
    if let Some(p) = &pool {
        save_pool(c, w, p.wallet.balance)?;
        let r = WalletRef { account: w.account, customer: w.customer, name: RESERVE, asset: w.asset };
        notify_balance(c, &p.wallet, &r, available(&p.lots, &p.wallet))?;
    }
    if let Some(t) = hit {
        threshold_hit(c, w, after, t)?;
    }
    request_topup(c, w, &mut wallet, after)?;
    Ok(after)
}

/// The in-memory part of a debit: settles debt, draws lots in burn-down order, checks
/// the overdraft limit, and records the legs and lot takes in `book`. `wallet` and
/// `lots` are updated, so several debits can be planned one after another on one
/// locked wallet (the batch form of record_usage does). Returns available afterwards.
pub fn plan_debit(
    wallet: &mut Wallet,
    lots: &mut [LiveLot],
    book: &mut Book,
    d: &Debit,
    pool: Option<&mut Pool>,
) -> Result<Decimal> {
    let w = book.wallet_ref;
    settle_debt(lots, wallet, book);
    // The reserve pool is drawn after every lot of the wallet, before debt; its
    // available balance counts toward the overdraft check.
    let pool_available = pool.as_ref().map_or(Decimal::ZERO, |p| available(&p.lots, &p.wallet).max(Decimal::ZERO));
    let own_before = available(lots, wallet);
    let before = own_before + pool_available;

    let candidates: Vec<usize> =
        (0..lots.len()).filter(|&i| d.draw == DrawFrom::AnyLot || lots[i].purpose == "paid").collect();
    let views: Vec<LotView> = candidates.iter().map(|&i| lots[i].view.clone()).collect();
    let alloc = allocate(&views, d.amount);
    if alloc.shortfall > Decimal::ZERO && d.draw == DrawFrom::PaidOnly {
        let refundable = d.amount - alloc.shortfall;
        return Err(CyError::insufficient(format!(
            "refund of {} {} exceeds the refundable paid balance of {}:{}",
            d.amount, w.asset, w.name, w.asset
        ))
        .detail(format!("refundable paid balance: {refundable}"))
        .hint("only paid lots (top-ups) can be refunded; promotional credit cannot"));
    }
    let after = before - d.amount;
    if let Some(limit) = wallet.limit {
        if after < -limit {
            return Err(CyError::insufficient(format!(
                "insufficient funds in {}:{} of customer {}",
                w.name, w.asset, w.customer
            ))
            .detail(format!("available {before}, requested {}, overdraft limit {limit}", d.amount))
            .hint("top up the wallet, or raise the limit with credyt.set_overdraft()"));
        }
    }
    // What the pool covers of the shortfall (planned here, written after the wallet's
    // own lots so that the entries read in consumption order).
    let mut shortfall = alloc.shortfall;
    let mut pool_takes = Vec::new();
    let mut from_pool = Decimal::ZERO;
    if let (Some(p), true) = (pool.as_deref(), shortfall > Decimal::ZERO && d.draw == DrawFrom::AnyLot) {
        let views: Vec<LotView> = p.lots.iter().map(|l| l.view.clone()).collect();
        let pa = allocate(&views, shortfall);
        from_pool = pa.takes.iter().map(|t| t.1).sum();
        pool_takes = pa.takes;
        shortfall = pa.shortfall;
    }
    let balance = wallet.balance - (d.amount - from_pool);
    if !balance_in_range(balance) {
        return Err(CyError::invalid(format!("the balance of {}:{} would fall below -10^16", w.name, w.asset)));
    }
    for (j, take) in alloc.takes {
        let lot = &mut lots[candidates[j]];
        lot.view.remaining -= take;
        let id = lot.id.clone();
        book.take(&id, take);
        book.customer_leg(-take, Some(id), d.kind);
    }
    if let Some(p) = pool {
        for (j, take) in pool_takes {
            let lot = &mut p.lots[j];
            lot.view.remaining -= take;
            let id = lot.id.clone();
            book.take(&id, take);
            book.leg_on(RESERVE, -take, Some(id), d.kind);
        }
        p.wallet.balance -= from_pool;
    }
    if shortfall > Decimal::ZERO {
        book.customer_leg(-shortfall, None, d.kind);
        wallet.debt += shortfall;
    }
    book.system_leg(d.system_account, d.amount, d.kind);
    wallet.balance = balance;
    // The wallet account's own available (the pool is an account of its own).
    Ok(own_before - (d.amount - from_pool))
}

/// Writes lot remainders, the entries and the wallet row in one statement, with the
/// balance push when `notify` carries the available balance afterwards.
///
/// Lots are matched with `id = ANY(...)`, which a kept generic plan serves from the
/// primary key (a join to unnest() would be planned as a scan of the lot table).
pub fn write(c: &mut SpiClient<'_>, wallet: &Wallet, book: Book, notify: Option<Decimal>) -> Result<()> {
    let w = book.wallet_ref;
    debug_assert!(
        book.legs.iter().map(|l| l.amount).sum::<Decimal>().is_zero(),
        "transaction {} does not sum to zero",
        book.txn_id
    );
    debug_assert!(wallet.debt >= Decimal::ZERO);
    let (take_ids, takes): (Vec<String>, Vec<AnyNumeric>) =
        book.takes.into_iter().map(|(id, t)| (id, to_numeric(t))).unzip();
    let n_takes = take_ids.len() as i64;
    let n_legs = book.legs.len() as i64;
    let mut system = Vec::with_capacity(book.legs.len());
    let mut names = Vec::with_capacity(book.legs.len());
    let mut amounts = Vec::with_capacity(book.legs.len());
    let mut lot_ids = Vec::with_capacity(book.legs.len());
    let mut kinds = Vec::with_capacity(book.legs.len());
    for leg in book.legs {
        system.push(leg.system);
        names.push(leg.ledger_name);
        amounts.push(to_numeric(leg.amount));
        lot_ids.push(leg.lot_id);
        kinds.push(leg.kind.to_string());
    }
    let payload = match notify {
        Some(available) if wallet.push.is_some() => Some(balance_payload(w, available)),
        _ => None,
    };
    let t = run(
        c,
        "WITH drawn AS ( \
           UPDATE credyt.lot l SET remaining = l.remaining - ($11::numeric[])[array_position($10::text[], l.id)] \
           WHERE l.id = ANY($10::text[]) RETURNING 1), \
         lines AS ( \
           INSERT INTO credyt.entry (account_id, txn_id, customer_id, system, ledger_name, asset, amount, lot_id, kind) \
           SELECT $1, $2, $3, u.system, u.ledger_name, $4, u.amount, u.lot_id, u.kind \
           FROM unnest($5::bool[], $6::text[], $7::numeric[], $8::text[], $9::text[]) \
             AS u(system, ledger_name, amount, lot_id, kind) RETURNING 1), \
         saved AS ( \
           UPDATE credyt.wallet_account SET balance = $12, debt = $13, threshold_armed = $16, updated_at = now() \
           WHERE customer_id = $3 AND name = $14 AND asset = $4 RETURNING 1) \
         SELECT (SELECT count(*) FROM drawn), (SELECT count(*) FROM lines), (SELECT count(*) FROM saved), \
                CASE WHEN $15::text IS NOT NULL THEN pg_notify($17, $15) END IS NULL",
        &[
            w.account.into(),
            book.txn_id.as_str().into(),
            w.customer.into(),
            w.asset.into(),
            system.into(),
            names.into(),
            amounts.into(),
            lot_ids.into(),
            kinds.into(),
            take_ids.into(),
            takes.into(),
            to_numeric(wallet.balance).into(),
            to_numeric(wallet.debt).into(),
            w.name.into(),
            payload.into(),
            wallet.armed.into(),
            wallet.push.as_deref().into(),
        ],
    )?;
    let row = t.first();
    let counts = (row.get::<i64>(1)?, row.get::<i64>(2)?, row.get::<i64>(3)?);
    if counts != (Some(n_takes), Some(n_legs), Some(1)) {
        return Err(CyError::internal(format!(
            "ledger write touched {counts:?} rows, expected ({n_takes}, {n_legs}, 1)"
        )));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------
// Many wallets at once (the batch form of record_usage)

type WalletKey = (String, String);

/// Locks the `default` wallet accounts of `keys` (customer, asset), creating missing
/// ones, in one sorted order, and reads their live lots: three statements in all.
pub fn lock_many(
    c: &mut SpiClient<'_>,
    account: &str,
    keys: &std::collections::BTreeSet<WalletKey>,
) -> Result<BTreeMap<WalletKey, (Wallet, Vec<LiveLot>)>> {
    let mut state = BTreeMap::new();
    if keys.is_empty() {
        return Ok(state);
    }
    let customers: Vec<String> = keys.iter().map(|k| k.0.clone()).collect();
    let assets: Vec<String> = keys.iter().map(|k| k.1.clone()).collect();
    run_once(
        c,
        "INSERT INTO credyt.wallet_account (account_id, customer_id, name, asset) \
         SELECT $1, u.c, 'default', u.a FROM unnest($2::text[], $3::text[]) AS u(c, a) \
         ON CONFLICT (customer_id, name, asset) DO NOTHING",
        &[account.into(), customers.clone().into(), assets.clone().into()],
    )?;
    let t = run_once(
        c,
        concat!(
            "SELECT w.customer_id, w.asset, ",
            wallet_columns!(),
            "FROM credyt.wallet_account w JOIN unnest($1::text[], $2::text[]) AS u(c, a) \
               ON w.customer_id = u.c AND w.name = 'default' AND w.asset = u.a \
             ORDER BY w.customer_id, w.asset FOR UPDATE OF w"
        ),
        &[customers.clone().into(), assets.clone().into()],
    )?;
    for row in t {
        let key = (row.get::<String>(1)?.unwrap_or_default(), row.get::<String>(2)?.unwrap_or_default());
        let wallet = wallet_row(&row, 3)?;
        state.insert(key, (wallet, Vec::new()));
    }
    let t = run_once(
        c,
        concat!(
            "SELECT l.customer_id, l.asset, l.id, l.purpose, l.priority, l.expires_at, l.seq, l.remaining::text \
             FROM credyt.lot l JOIN unnest($1::text[], $2::text[]) AS u(c, a) \
               ON l.customer_id = u.c AND l.wallet_name = 'default' AND l.asset = u.a WHERE ",
            live_lot!()
        ),
        &[customers.into(), assets.into()],
    )?;
    for row in t {
        let key = (row.get::<String>(1)?.unwrap_or_default(), row.get::<String>(2)?.unwrap_or_default());
        let lot = live_lot_row(&row, 3)?;
        if let Some(s) = state.get_mut(&key) {
            s.1.push(lot);
        }
    }
    if state.len() != keys.len() {
        return Err(CyError::internal("a wallet account could not be locked"));
    }
    Ok(state)
}

/// The writes of many planned debits, made in one statement per table.
#[derive(Default)]
pub struct BulkWrite {
    txn: Vec<String>,
    customer: Vec<String>,
    system: Vec<bool>,
    name: Vec<String>,
    asset: Vec<String>,
    amount: Vec<AnyNumeric>,
    lot: Vec<Option<String>>,
    kind: Vec<String>,
    takes: BTreeMap<String, Decimal>,
    /// available after the last debit of each wallet, for the balance push
    last: BTreeMap<WalletKey, Decimal>,
}

impl BulkWrite {
    /// Adds a planned debit (its book) and the wallet's available balance after it.
    pub fn add(&mut self, book: Book, after: Decimal) {
        let w = book.wallet_ref;
        debug_assert!(book.legs.iter().map(|l| l.amount).sum::<Decimal>().is_zero());
        for leg in book.legs {
            self.txn.push(book.txn_id.clone());
            self.customer.push(w.customer.to_string());
            self.system.push(leg.system);
            self.name.push(leg.ledger_name);
            self.asset.push(w.asset.to_string());
            self.amount.push(to_numeric(leg.amount));
            self.lot.push(leg.lot_id);
            self.kind.push(leg.kind.to_string());
        }
        for (id, t) in book.takes {
            *self.takes.entry(id).or_default() += t;
        }
        self.last.insert((w.customer.to_string(), w.asset.to_string()), after);
    }

    /// Writes lot remainders, entries and the final state of every wallet in `state`.
    pub fn write(
        self,
        c: &mut SpiClient<'_>,
        account: &str,
        state: &BTreeMap<WalletKey, (Wallet, Vec<LiveLot>)>,
    ) -> Result<()> {
        if !self.takes.is_empty() {
            let (ids, takes): (Vec<String>, Vec<AnyNumeric>) =
                self.takes.into_iter().map(|(id, t)| (id, to_numeric(t))).unzip();
            run_once(
                c,
                "UPDATE credyt.lot l SET remaining = l.remaining - u.take \
                 FROM unnest($1::text[], $2::numeric[]) AS u(id, take) WHERE l.id = u.id",
                &[ids.into(), takes.into()],
            )?;
        }
        if !self.txn.is_empty() {
            run_once(
                c,
                "INSERT INTO credyt.entry (account_id, txn_id, customer_id, system, ledger_name, asset, amount, lot_id, kind) \
                 SELECT $1, u.* FROM unnest($2::text[], $3::text[], $4::bool[], $5::text[], $6::text[], $7::numeric[], \
                                            $8::text[], $9::text[]) AS u",
                &[account.into(), self.txn.into(), self.customer.into(), self.system.into(), self.name.into(),
                  self.asset.into(), self.amount.into(), self.lot.into(), self.kind.into()],
            )?;
        }
        if state.is_empty() {
            return Ok(());
        }
        let mut cs = Vec::new();
        let mut assets = Vec::new();
        let mut balances = Vec::new();
        let mut debts = Vec::new();
        let mut armed = Vec::new();
        // (one account's wallets: one channel)
        let channel = state.values().find_map(|(wallet, _)| wallet.push.clone());
        for ((cust, asset), (wallet, _)) in state {
            cs.push(cust.clone());
            assets.push(asset.clone());
            balances.push(to_numeric(wallet.balance));
            debts.push(to_numeric(wallet.debt));
            armed.push(wallet.armed);
        }
        run_once(
            c,
            "UPDATE credyt.wallet_account w SET balance = u.b, debt = u.d, threshold_armed = u.armed, updated_at = now() \
             FROM unnest($1::text[], $2::text[], $3::numeric[], $4::numeric[], $5::bool[]) AS u(c, a, b, d, armed) \
             WHERE w.customer_id = u.c AND w.name = 'default' AND w.asset = u.a",
            &[cs.into(), assets.into(), balances.into(), debts.into(), armed.into()],
        )?;
        if let (Some(channel), false) = (channel, self.last.is_empty()) {
            let payloads: Vec<String> = self
                .last
                .iter()
                .map(|((customer, asset), available)| {
                    balance_payload(&WalletRef { account, customer, name: "default", asset }, *available)
                })
                .collect();
            run_once(c, "SELECT pg_notify($2, x) FROM unnest($1::text[]) AS x", &[payloads.into(), channel.into()])?;
        }
        Ok(())
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

// ---------------------------------------------------------------------------------
// Idempotency

pub enum Claim {
    /// The key is new: proceed and write under this transaction id.
    New(String),
    /// The same request was already applied: return its id, write nothing.
    Replay(String),
}

/// Claims a client's transaction_id for this account. Under concurrency the second
/// claimant waits on the first one's unique-index entry, then sees its outcome.
#[allow(clippy::too_many_arguments)]
pub fn claim(
    c: &mut SpiClient<'_>,
    account: &str,
    kind: &str,
    key: &str,
    customer: &str,
    payload: serde_json::Value,
    description: Option<&str>,
    metadata: serde_json::Value,
) -> Result<Claim> {
    let id = crate::ids::new_id("txn")?;
    let inserted = one::<String>(
        c,
        "INSERT INTO credyt.ledger_txn (account_id, id, kind, idem_key, customer_id, payload, description, metadata) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
         ON CONFLICT (account_id, idem_key) WHERE idem_key IS NOT NULL DO NOTHING RETURNING id",
        &[
            account.into(),
            id.as_str().into(),
            kind.into(),
            key.into(),
            customer.into(),
            JsonB(payload.clone()).into(),
            description.into(),
            JsonB(metadata).into(),
        ],
    )?;
    if let Some(id) = inserted {
        return Ok(Claim::New(id));
    }
    let t = run(
        c,
        "SELECT id, payload = $3, payload::text FROM credyt.ledger_txn WHERE account_id = $1 AND idem_key = $2",
        &[account.into(), key.into(), JsonB(payload.clone()).into()],
    )?;
    if t.is_empty() {
        return Err(CyError::internal("idempotency key conflicted but no row was found"));
    }
    let row = t.first();
    let existing = row.get::<String>(1)?.unwrap_or_default();
    if row.get::<bool>(2)?.unwrap_or(false) {
        Ok(Claim::Replay(existing))
    } else {
        let original = row.get::<String>(3)?.unwrap_or_default();
        Err(CyError::conflict(format!("transaction_id {key:?} was already used with a different payload"))
            .detail(format!("original transaction {existing}: {original}; this request: {payload}"))
            .hint("use a new transaction_id for a new movement; replay only identical requests"))
    }
}

fn micros(t: Option<TimestampWithTimeZone>) -> serde_json::Value {
    t.map(|t| json!(t.into_inner())).unwrap_or(serde_json::Value::Null)
}

fn check_time(param: &str, t: Option<TimestampWithTimeZone>) -> Result<()> {
    match t {
        Some(t) if !t.is_finite() => Err(CyError::invalid(format!("{param} must be a finite timestamp"))),
        _ => Ok(()),
    }
}

// ---------------------------------------------------------------------------------
// The API

const REASONS: &str = "gift, external_topup, external_refund, other";

#[pg_extern(security_definer)]
#[search_path(@extschema@, pg_temp)]
#[allow(clippy::too_many_arguments)]
fn adjust(
    customer: Option<String>,
    transaction_id: Option<String>,
    asset: Option<String>,
    amount: Option<AnyNumeric>,
    reason: Option<String>,
    account_name: default!(Option<String>, "'default'"),
    description: default!(Option<String>, "NULL"),
    effective_at: default!(Option<TimestampWithTimeZone>, "NULL"),
    expires_at: default!(Option<TimestampWithTimeZone>, "NULL"),
    metadata: default!(Option<crate::json::Json>, "'{}'"),
) -> String {
    api(move || {
        let key = validate::key("transaction_id", transaction_id)?;
        let amount = money::non_zero("amount", amount)?;
        let reason = validate::required("reason", reason)?;
        let name = validate::wallet_name(account_name)?;
        let description = validate::optional_text("description", description)?;
        let metadata = validate::metadata(metadata)?;
        check_time("effective_at", effective_at)?;
        check_time("expires_at", expires_at)?;
        let credit = amount > Decimal::ZERO;
        match (reason.as_str(), credit) {
            ("gift" | "external_topup", false) => {
                return Err(CyError::invalid(format!("amount must be positive for reason {reason}"))
                    .detail(format!("got {amount}")))
            }
            ("external_refund", true) => {
                return Err(CyError::invalid("amount must be negative for reason external_refund")
                    .detail(format!("got {amount}"))
                    .hint(format!("pass the refund as a negative amount, e.g. -{amount}")))
            }
            ("gift" | "external_topup" | "external_refund" | "other", _) => {}
            _ => return Err(CyError::invalid(format!("unknown reason {reason:?}")).hint(format!("reasons: {REASONS}"))),
        }
        if !credit && (effective_at.is_some() || expires_at.is_some()) {
            return Err(CyError::invalid("effective_at and expires_at apply to credits only")
                .hint("a negative adjustment draws existing lots; it creates none"));
        }
        Spi::connect_mut(|c| {
            let account = scope(c)?;
            let asset: Asset = resolve_asset(c, &account, asset.as_deref())?;
            if matches!(reason.as_str(), "external_topup" | "external_refund") {
                credyt_core::money::check_precision(amount, asset.precision).map_err(|e| {
                    CyError::invalid(format!("amount {}", e.describe()))
                        .detail(format!("{} has {} decimal places", asset.code, asset.precision))
                })?;
            }
            let customer = customers::resolve(c, &account, customer.as_deref())?;
            let payload = json!({
                "op": "adjust", "customer": customer, "asset": asset.code, "amount": amount.normalize().to_string(),
                "reason": reason, "account_name": name, "description": description,
                "effective_at": micros(effective_at), "expires_at": micros(expires_at), "metadata": metadata,
            });
            let txn =
                match claim(c, &account, "adjust", &key, &customer, payload, description.as_deref(), metadata.clone())?
                {
                    Claim::Replay(id) => return Ok(id),
                    Claim::New(id) => id,
                };
            // Checked once the key is new, so that a replay after expires_at has passed
            // returns the original; the error rolls the claim back.
            if let Some(exp) = expires_at {
                let ok = one::<bool>(
                    c,
                    "SELECT $1 > greatest(coalesce($2, now()), now())",
                    &[exp.into(), effective_at.into()],
                )?;
                if ok != Some(true) {
                    return Err(CyError::invalid("expires_at must be later than effective_at and now"));
                }
            }
            let w = WalletRef { account: &account, customer: &customer, name: &name, asset: &asset.code };
            let source = format!("adjust:{reason}");
            match (reason.as_str(), credit) {
                ("gift", _) => credit_lot(
                    c,
                    &w,
                    &txn,
                    amount,
                    "promotion",
                    effective_at,
                    expires_at,
                    &source,
                    "promotions",
                    "gift",
                )?,
                ("external_topup", _) => credit_lot(
                    c,
                    &w,
                    &txn,
                    amount,
                    "paid",
                    effective_at,
                    expires_at,
                    &source,
                    "external",
                    "external_topup",
                )?,
                ("other", true) => {
                    credit_lot(c, &w, &txn, amount, "paid", effective_at, expires_at, &source, "adjustments", "other")?
                }
                ("external_refund", _) => {
                    debit(
                        c,
                        &w,
                        &txn,
                        Debit {
                            amount: -amount,
                            draw: DrawFrom::PaidOnly,
                            system_account: "external",
                            kind: "external_refund",
                        },
                    )?;
                }
                _ => {
                    debit(
                        c,
                        &w,
                        &txn,
                        Debit { amount: -amount, draw: DrawFrom::AnyLot, system_account: "adjustments", kind: "other" },
                    )?;
                }
            }
            Ok(txn)
        })
    })
}

#[allow(clippy::too_many_arguments)]
fn credit_lot(
    c: &mut SpiClient<'_>,
    w: &WalletRef,
    txn: &str,
    amount: Decimal,
    purpose: &str,
    effective_at: Option<TimestampWithTimeZone>,
    expires_at: Option<TimestampWithTimeZone>,
    source: &str,
    system_account: &str,
    kind: &'static str,
) -> Result<()> {
    let priority = default_priority(purpose).ok_or_else(|| CyError::internal(format!("purpose {purpose}")))?;
    credit(
        c,
        w,
        txn,
        Credit {
            amount,
            purpose,
            priority,
            effective_at,
            expires_at,
            on_expiry: "expire",
            rollover_cap: None,
            grant_id: None,
            source,
            system_account,
            kind,
        },
    )?;
    Ok(())
}

#[pg_extern(security_definer)]
#[search_path(@extschema@, pg_temp)]
fn charge(
    customer: Option<String>,
    transaction_id: Option<String>,
    asset: Option<String>,
    amount: Option<AnyNumeric>,
    account_name: default!(Option<String>, "'default'"),
    description: default!(Option<String>, "NULL"),
    metadata: default!(Option<crate::json::Json>, "'{}'"),
) -> String {
    api(move || {
        let key = validate::key("transaction_id", transaction_id)?;
        let amount = money::positive("amount", amount)?;
        let name = validate::wallet_name(account_name)?;
        let description = validate::optional_text("description", description)?;
        let metadata = validate::metadata(metadata)?;
        Spi::connect_mut(|c| {
            let account = scope(c)?;
            let asset = resolve_asset(c, &account, asset.as_deref())?;
            let customer = customers::resolve(c, &account, customer.as_deref())?;
            let payload = json!({
                "op": "charge", "customer": customer, "asset": asset.code, "amount": amount.normalize().to_string(),
                "account_name": name, "description": description, "metadata": metadata,
            });
            let txn =
                match claim(c, &account, "charge", &key, &customer, payload, description.as_deref(), metadata.clone())?
                {
                    Claim::Replay(id) => return Ok(id),
                    Claim::New(id) => id,
                };
            let w = WalletRef { account: &account, customer: &customer, name: &name, asset: &asset.code };
            debit(c, &w, &txn, Debit { amount, draw: DrawFrom::AnyLot, system_account: "revenue", kind: "charge" })?;
            Ok(txn)
        })
    })
}

#[pg_extern(security_definer)]
#[search_path(@extschema@, pg_temp)]
fn set_overdraft(
    customer: Option<String>,
    asset: Option<String>,
    limit: Option<AnyNumeric>,
    account_name: default!(Option<String>, "'default'"),
) {
    api(move || {
        let limit = money::optional_non_negative("limit", limit)?;
        let name = validate::wallet_name(account_name)?;
        Spi::connect_mut(|c| {
            let t = Target::resolve(c, asset.as_deref(), customer.as_deref())?;
            let w = t.wallet(&name);
            lock(c, &w)?;
            run(
                c,
                "UPDATE credyt.wallet_account SET overdraft_limit = $4, updated_at = now() \
                 WHERE customer_id = $1 AND name = $2 AND asset = $3",
                &[w.customer.into(), w.name.into(), w.asset.into(), limit.map(to_numeric).into()],
            )?;
            Ok(())
        })
    })
}

/// Sets (or, with NULL, removes) the threshold below which available triggers one
/// balance_threshold_hit per downward crossing. Set while already below, it fires at once.
#[pg_extern(security_definer)]
#[search_path(@extschema@, pg_temp)]
fn set_threshold(
    customer: Option<String>,
    asset: Option<String>,
    threshold: Option<AnyNumeric>,
    account_name: default!(Option<String>, "'default'"),
) {
    api(move || {
        let threshold = money::optional_signed("threshold", threshold)?;
        let name = validate::wallet_name(account_name)?;
        Spi::connect_mut(|c| {
            let t = Target::resolve(c, asset.as_deref(), customer.as_deref())?;
            let w = t.wallet(&name);
            let wallet = lock(c, &w)?;
            let lots = live_lots(c, &w)?;
            let now = available(&lots, &wallet);
            let armed = threshold.is_none_or(|t| now >= t);
            run(
                c,
                "UPDATE credyt.wallet_account SET threshold = $4, threshold_armed = $5, updated_at = now() \
                 WHERE customer_id = $1 AND name = $2 AND asset = $3",
                &[w.customer.into(), w.name.into(), w.asset.into(), threshold.map(to_numeric).into(), armed.into()],
            )?;
            if let (Some(t), false) = (threshold, armed) {
                threshold_hit(c, &w, now, t)?;
            }
            Ok(())
        })
    })
}

/// Available balance of one wallet account (0 for one never used).
pub fn available_of(c: &mut SpiClient<'_>, customer: &str, name: &str, asset: &str) -> Result<Decimal> {
    let v = one::<String>(
        c,
        concat!(
            "SELECT (coalesce((SELECT sum(l.remaining) FROM credyt.lot l \
                   WHERE l.customer_id = $1 AND l.wallet_name = $2 AND l.asset = $3 AND ",
            live_lot!(),
            "), 0) \
                 - coalesce((SELECT debt FROM credyt.wallet_account \
                   WHERE customer_id = $1 AND name = $2 AND asset = $3), 0) \
                 - coalesce((SELECT sum(amount) FROM credyt.hold WHERE customer_id = $1 AND wallet_name = $2 \
                   AND asset = $3 AND status = 'active' AND expires_at > now()), 0))::text"
        ),
        &[customer.into(), name.into(), asset.into()],
    )?;
    stored(&v.unwrap_or_else(|| "0".into()))
}

#[pg_extern(security_definer, stable)]
#[search_path(@extschema@, pg_temp)]
fn balance(
    customer: Option<String>,
    asset: default!(Option<String>, "'USD'"),
    account_name: default!(Option<String>, "'default'"),
) -> AnyNumeric {
    api(move || {
        let name = validate::wallet_name(account_name)?;
        Spi::connect_mut(|c| {
            let t = Target::resolve(c, asset.as_deref(), customer.as_deref())?;
            Ok(to_numeric(available_of(c, &t.customer, &name, &t.asset.code)?))
        })
    })
}

#[pg_extern(security_definer, stable)]
#[search_path(@extschema@, pg_temp)]
fn balance_at(
    customer: Option<String>,
    asset: Option<String>,
    at: Option<TimestampWithTimeZone>,
    account_name: default!(Option<String>, "'default'"),
) -> AnyNumeric {
    api(move || {
        let at = validate::required("at", at)?;
        let name = validate::wallet_name(account_name)?;
        Spi::connect_mut(|c| {
            let t = Target::resolve(c, asset.as_deref(), customer.as_deref())?;
            let (customer, asset) = (t.customer, t.asset);
            let v = one::<String>(
                c,
                "SELECT coalesce(sum(amount), 0)::text FROM credyt.entry \
                 WHERE customer_id = $1 AND ledger_name = $2 AND asset = $3 AND NOT system AND created_at <= $4",
                &[customer.as_str().into(), name.as_str().into(), asset.code.as_str().into(), at.into()],
            )?;
            Ok(to_numeric(stored(&v.unwrap_or_else(|| "0".into()))?))
        })
    })
}

#[pg_extern(security_definer, stable)]
#[search_path(@extschema@, pg_temp)]
fn wallet(
    customer: Option<String>,
) -> TableIterator<
    'static,
    (
        name!(account_id, String),
        name!(name, String),
        name!(asset, String),
        name!(available, AnyNumeric),
        name!(pending_in, AnyNumeric),
        name!(pending_out, AnyNumeric),
    ),
> {
    let rows = api(move || {
        Spi::connect_mut(|c| {
            let account = scope(c)?;
            let customer = customers::resolve(c, &account, customer.as_deref())?;
            let t = run(
                c,
                concat!(
                    "SELECT w.name, w.asset, (coalesce(l.live, 0) - w.debt - coalesce(h.held, 0))::text, \
                        coalesce(h.held, 0)::text, coalesce(p.pending, 0)::text FROM credyt.wallet_account w \
                 LEFT JOIN LATERAL (SELECT sum(l.remaining) AS live FROM credyt.lot l \
                   WHERE l.customer_id = w.customer_id AND l.wallet_name = w.name AND l.asset = w.asset AND ",
                    live_lot!(),
                    ") l ON true \
                 LEFT JOIN LATERAL (SELECT sum(amount) AS held FROM credyt.hold \
                   WHERE customer_id = w.customer_id AND wallet_name = w.name AND asset = w.asset \
                     AND status = 'active' AND expires_at > now()) h ON true \
                 LEFT JOIN LATERAL (SELECT sum(amount) AS pending FROM credyt.topup \
                   WHERE customer_id = w.customer_id AND wallet_name = w.name AND asset = w.asset \
                     AND status = 'pending') p ON true \
                 WHERE w.customer_id = $1 ORDER BY w.name, w.asset"
                ),
                &[customer.as_str().into()],
            )?;
            let mut rows = Vec::new();
            for row in t {
                let name = row.get::<String>(1)?.unwrap_or_default();
                let asset = row.get::<String>(2)?.unwrap_or_default();
                let avail = stored(&row.get::<String>(3)?.unwrap_or_default())?;
                let held = stored(&row.get::<String>(4)?.unwrap_or_default())?;
                let pending_in = stored(&row.get::<String>(5)?.unwrap_or_default())?;
                rows.push((format!("{name}:{asset}"), name, asset, avail, held, pending_in));
            }
            Ok(rows)
        })
    });
    TableIterator::new(rows.into_iter().map(|(id, name, asset, avail, held, pending_in)| {
        (id, name, asset, to_numeric(avail), to_numeric(pending_in), to_numeric(held))
    }))
}

// ---------------------------------------------------------------------------------
// Verification

/// One query per invariant; each returns (check, detail) rows for what is broken.
/// $1 is the array of accounts to check.
const CHECKS: &[&str] = &[
    "SELECT 'transaction_unbalanced', format('transaction %s does not sum to zero in %s: %s', txn_id, asset, sum(amount)) \
     FROM credyt.entry WHERE account_id = ANY($1) GROUP BY txn_id, asset HAVING sum(amount) <> 0",
    "SELECT 'wallet_balance_mismatch', format('wallet %s:%s of %s has balance %s but its entries sum to %s', \
            w.name, w.asset, w.customer_id, w.balance, coalesce(e.total, 0)) \
     FROM credyt.wallet_account w LEFT JOIN (SELECT customer_id, ledger_name, asset, sum(amount) AS total \
        FROM credyt.entry WHERE NOT system AND account_id = ANY($1) GROUP BY 1, 2, 3) e \
       ON e.customer_id = w.customer_id AND e.ledger_name = w.name AND e.asset = w.asset \
     WHERE w.account_id = ANY($1) AND w.balance <> coalesce(e.total, 0)",
    "SELECT 'entries_without_wallet', format('entries of %s:%s of %s have no wallet account', e.ledger_name, e.asset, e.customer_id) \
     FROM (SELECT DISTINCT customer_id, ledger_name, asset FROM credyt.entry WHERE NOT system AND account_id = ANY($1)) e \
     WHERE NOT EXISTS (SELECT 1 FROM credyt.wallet_account w \
       WHERE w.customer_id = e.customer_id AND w.name = e.ledger_name AND w.asset = e.asset)",
    "SELECT 'wallet_debt_mismatch', format('wallet %s:%s of %s has debt %s but its debt entries sum to %s', \
            w.name, w.asset, w.customer_id, w.debt, -coalesce(e.total, 0)) \
     FROM credyt.wallet_account w LEFT JOIN (SELECT customer_id, ledger_name, asset, sum(amount) AS total \
        FROM credyt.entry WHERE NOT system AND lot_id IS NULL AND account_id = ANY($1) GROUP BY 1, 2, 3) e \
       ON e.customer_id = w.customer_id AND e.ledger_name = w.name AND e.asset = w.asset \
     WHERE w.account_id = ANY($1) AND w.debt <> -coalesce(e.total, 0)",
    "SELECT 'wallet_lots_mismatch', format('wallet %s:%s of %s has balance %s but lots remaining %s minus debt %s', \
            w.name, w.asset, w.customer_id, w.balance, coalesce(l.total, 0), w.debt) \
     FROM credyt.wallet_account w LEFT JOIN (SELECT customer_id, wallet_name, asset, sum(remaining) AS total \
        FROM credyt.lot WHERE account_id = ANY($1) GROUP BY 1, 2, 3) l \
       ON l.customer_id = w.customer_id AND l.wallet_name = w.name AND l.asset = w.asset \
     WHERE w.account_id = ANY($1) AND w.balance <> coalesce(l.total, 0) - w.debt",
    "SELECT 'lot_remaining_mismatch', format('lot %s has remaining %s but its entries sum to %s', l.id, l.remaining, coalesce(e.total, 0)) \
     FROM credyt.lot l LEFT JOIN (SELECT lot_id, sum(amount) AS total FROM credyt.entry \
        WHERE lot_id IS NOT NULL AND account_id = ANY($1) GROUP BY 1) e ON e.lot_id = l.id \
     WHERE l.account_id = ANY($1) AND l.remaining <> coalesce(e.total, 0)",
    "SELECT 'lot_out_of_range', format('lot %s has remaining %s outside [0, %s]', id, remaining, amount) \
     FROM credyt.lot WHERE account_id = ANY($1) AND (remaining < 0 OR remaining > amount)",
    "SELECT 'lot_malformed', format('lot %s has amount %s, purpose %s, effective %s, expires %s', id, amount, purpose, effective_at, expires_at) \
     FROM credyt.lot WHERE account_id = ANY($1) AND (amount <= 0 OR purpose NOT IN ('promotion', 'bundled', 'paid') \
       OR expires_at <= effective_at)",
    "SELECT 'wallet_malformed', format('wallet %s:%s of %s has debt %s and overdraft limit %s', name, asset, customer_id, debt, overdraft_limit) \
     FROM credyt.wallet_account WHERE account_id = ANY($1) AND (debt < 0 OR overdraft_limit < 0)",
    "SELECT 'entry_zero', format('entry %s of transaction %s has amount zero', id, txn_id) \
     FROM credyt.entry WHERE account_id = ANY($1) AND amount = 0",
    "SELECT 'entry_without_transaction', format('entry %s names unknown transaction %s', e.id, e.txn_id) \
     FROM credyt.entry e WHERE e.account_id = ANY($1) \
       AND NOT EXISTS (SELECT 1 FROM credyt.ledger_txn t WHERE t.id = e.txn_id AND t.account_id = e.account_id)",
    // Rows of a customer that does not exist in their account (a restore that lost
    // the customers, or a write that went around the API).
    "SELECT 'customer_missing', format('%s %s rows name customer %s, which does not exist in account %s', \
            count(*), x.tbl, x.customer_id, x.account_id) \
     FROM (SELECT 'lot' AS tbl, account_id, customer_id FROM credyt.lot WHERE account_id = ANY($1) \
           UNION ALL SELECT 'entry', account_id, customer_id FROM credyt.entry WHERE account_id = ANY($1) \
           UNION ALL SELECT 'ledger_txn', account_id, customer_id FROM credyt.ledger_txn \
             WHERE account_id = ANY($1) AND customer_id IS NOT NULL \
           UNION ALL SELECT 'usage_event', account_id, customer_id FROM credyt.usage_event WHERE account_id = ANY($1) \
           UNION ALL SELECT 'hold', account_id, customer_id FROM credyt.hold WHERE account_id = ANY($1) \
           UNION ALL SELECT 'topup', account_id, customer_id FROM credyt.topup WHERE account_id = ANY($1) \
           UNION ALL SELECT 'subscription', account_id, customer_id FROM credyt.subscription WHERE account_id = ANY($1)) x \
     WHERE NOT EXISTS (SELECT 1 FROM credyt.customer c WHERE c.id = x.customer_id AND c.account_id = x.account_id) \
     GROUP BY x.tbl, x.customer_id, x.account_id",
    // Rows of an account that does not exist: none of them is in any scope, so this is
    // checked from the platform's scope, over every row.
    "SELECT 'account_missing', format('%s %s rows belong to account %s, which does not exist', count(*), x.tbl, x.account_id) \
     FROM (SELECT 'customer' AS tbl, account_id FROM credyt.customer UNION ALL SELECT 'wallet_account', account_id FROM credyt.wallet_account \
           UNION ALL SELECT 'lot', account_id FROM credyt.lot UNION ALL SELECT 'entry', account_id FROM credyt.entry \
           UNION ALL SELECT 'ledger_txn', account_id FROM credyt.ledger_txn UNION ALL SELECT 'usage_event', account_id FROM credyt.usage_event \
           UNION ALL SELECT 'hold', account_id FROM credyt.hold UNION ALL SELECT 'credit_grant', account_id FROM credyt.credit_grant \
           UNION ALL SELECT 'topup', account_id FROM credyt.topup UNION ALL SELECT 'asset', account_id FROM credyt.asset \
           UNION ALL SELECT 'product', account_id FROM credyt.product UNION ALL SELECT 'subscription', account_id FROM credyt.subscription \
           UNION ALL SELECT 'event', account_id FROM credyt.event UNION ALL SELECT 'webhook', account_id FROM credyt.webhook \
           UNION ALL SELECT 'role_binding', account_id FROM credyt.role_binding) x \
     WHERE (SELECT a.parent_id IS NULL FROM credyt.account a WHERE a.id = ($1::text[])[1]) \
       AND NOT EXISTS (SELECT 1 FROM credyt.account a WHERE a.id = x.account_id) \
     GROUP BY x.tbl, x.account_id",
];

#[pg_extern(security_definer, stable)]
#[search_path(@extschema@, pg_temp)]
fn verify_ledger(
    account_id: default!(Option<String>, "NULL"),
) -> TableIterator<'static, (name!(check, String), name!(detail, String))> {
    let rows = api(move || {
        Spi::connect_mut(|c| {
            let scope = scope(c)?;
            let root = match account_id {
                Some(a) => {
                    crate::tenancy::require_within_scope(c, &a, &scope)?;
                    a
                }
                None => scope,
            };
            let accounts = crate::tenancy::accounts_within(c, &root)?;
            let mut problems = Vec::new();
            for sql in CHECKS {
                let t = run(c, sql, &[accounts.clone().into()])?;
                for row in t {
                    problems
                        .push((row.get::<String>(1)?.unwrap_or_default(), row.get::<String>(2)?.unwrap_or_default()));
                }
            }
            Ok(problems)
        })
    });
    TableIterator::new(rows)
}
