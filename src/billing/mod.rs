//! Recurring fees (SPEC §9): fixed fees and seats, charged in advance per period.
//!
//! subscribe() turns each `fixed` and `seat` price of the version into fee rows
//! (`credyt.subscription_fee`, one per price and asset) and charges what is due; the
//! clock charges the periods after. Periods are on the UTC calendar and computed from
//! the subscription's start each time (core::billing). Each period of a fee is charged
//! once: the clock claims fee rows with SKIP LOCKED, and `credyt.subscription_charge`'s
//! primary key (fee, period, seq) refuses a second charge whatever happens.
//!
//! A charge is a ledger transaction (`ledger_txn` kind `subscription_fee` or `seat_fee`)
//! that names the subscription and period, drawn like any fee (burn-down order, debt,
//! thresholds). Called by a person (subscribe, set_seats, assign_seat), a charge past
//! the overdraft limit raises CY402 and writes nothing. At the clock there is nobody to
//! tell: the period is recorded `unpaid` (nothing moves) and the schedule goes on.
//!
//! The files: this one reads and charges fees; `seats` holds set_seats, assign_seat
//! and unassign_seat; `outcomes` record_outcome and reverse_outcome; `reports`
//! customer_stats and account_rollup.

use crate::error::{api, Code, CyError, Result};
use crate::events;
use crate::money::{json_number as num, to_numeric};
use crate::scope::scope;
use crate::spi::{one, run, Row};
use crate::validate;
use crate::wallet::{self, Debit, DrawFrom, Header, WalletRef};
use credyt_core::billing::{prorate, rfc3339, Recurrence, Unit};
use credyt_core::pricing::{Price, PriceKind};
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use rust_decimal::Decimal;
use serde_json::json;

mod outcomes;
mod reports;
mod seats;

/// Most periods of one fee charged by one call (a subscription backdated years, a clock
/// that was down); the rest are due at the next tick.
const PERIODS_PER_CALL: i64 = 400;

/// One fee row, as the charger needs it.
struct Fee {
    id: i64,
    account: String,
    subscription: String,
    version: i32,
    position: i32,
    asset: String,
    customer: String,
    seat: bool,
    unit_price: Decimal,
    recurring: Option<Recurrence>,
    anchor: i64,
    next_period: Option<i64>,
    billed_period: Option<i64>,
    billed_quantity: i32,
}

/// The columns fee_row() decodes.
macro_rules! fee_columns {
    () => {
        "SELECT f.id, f.account_id, f.subscription_id, f.version, f.position, f.asset, f.customer_id, f.type, \
           f.unit_price::text AS unit_price, f.interval_unit, f.interval_count, f.anchor, f.next_period, \
           f.billed_period, f.billed_quantity FROM credyt.subscription_fee f "
    };
}

fn fee_row(row: &impl Row) -> Result<Fee> {
    let recurring = match row.opt::<String>("interval_unit")? {
        Some(u) => {
            let unit = Unit::parse(&u).ok_or_else(|| CyError::internal(format!("interval_unit {u}")))?;
            Some(Recurrence::new(unit, row.req::<i32>("interval_count")?.into()).map_err(CyError::internal)?)
        }
        None => None,
    };
    Ok(Fee {
        id: row.req("id")?,
        account: row.req("account_id")?,
        subscription: row.req("subscription_id")?,
        version: row.req("version")?,
        position: row.req("position")?,
        asset: row.req("asset")?,
        customer: row.req("customer_id")?,
        seat: row.req::<String>("type")? == "seat",
        unit_price: row.amount("unit_price")?,
        recurring,
        anchor: row.req::<TimestampWithTimeZone>("anchor")?.into_inner(),
        next_period: row.opt("next_period")?,
        billed_period: row.opt("billed_period")?,
        billed_quantity: row.req("billed_quantity")?,
    })
}

impl Fee {
    /// [start, end) of period k (a one_time fee: its one "period" starts at the anchor
    /// and has no end).
    fn period(&self, k: i64) -> (i64, Option<i64>) {
        match &self.recurring {
            Some(r) => (r.start(self.anchor, k), Some(r.start(self.anchor, k + 1))),
            None => (self.anchor, None),
        }
    }
}

/// What one charge is for.
struct Charge {
    period: i64,
    /// 0: the period's charge; 1, 2, …: prorated seats added during it
    seq: i32,
    start: i64,
    end: Option<i64>,
    quantity: i32,
    amount: Decimal,
}

/// Charges `ch` of `fee`: records it (once: a second charge of the same period and seq
/// writes nothing and returns false), draws it from the customer's default wallet
/// account, and emits `seat.charged` for seats. `strict`: past the overdraft limit is
/// CY402; otherwise the charge is recorded `unpaid`.
fn bill(c: &mut SpiClient<'_>, fee: &Fee, ch: &Charge, strict: bool) -> Result<bool> {
    let txn = crate::ids::new_id("txn")?;
    let (start, end) = (wallet::time_at(ch.start)?, wallet::at_time(ch.end)?);
    let recorded = one::<bool>(
        c,
        "INSERT INTO credyt.subscription_charge (account_id, subscription_id, version, position, asset, period, seq, \
           customer_id, type, period_start, period_end, quantity, amount, status, txn_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, 'charged', $14) \
         ON CONFLICT DO NOTHING RETURNING true",
        &[
            fee.account.as_str().into(),
            fee.subscription.as_str().into(),
            fee.version.into(),
            fee.position.into(),
            fee.asset.as_str().into(),
            ch.period.into(),
            ch.seq.into(),
            fee.customer.as_str().into(),
            (if fee.seat { "seat" } else { "fixed" }).into(),
            start.into(),
            end.into(),
            ch.quantity.into(),
            to_numeric(ch.amount).into(),
            txn.as_str().into(),
        ],
    )?;
    if recorded.is_none() {
        return Ok(false);
    }
    let drawn = ch.amount > Decimal::ZERO && draw(c, fee, ch, &txn, strict)?;
    let status = if drawn || ch.amount.is_zero() { "charged" } else { "unpaid" };
    if !drawn {
        run(
            c,
            "UPDATE credyt.subscription_charge SET status = $3, txn_id = NULL \
             WHERE customer_id = $4 AND subscription_id = $1 AND txn_id = $2",
            &[fee.subscription.as_str().into(), txn.as_str().into(), status.into(), fee.customer.as_str().into()],
        )?;
    }
    if fee.seat {
        let data = json!({
            "subscription_id": fee.subscription, "customer_id": fee.customer,
            "account_id": format!("default:{}", fee.asset), "quantity": ch.quantity, "amount": num(ch.amount),
            "period_start": rfc3339(ch.start), "period_end": ch.end.map(rfc3339), "prorated": ch.seq > 0,
            "status": status, "transaction_id": drawn.then_some(&txn),
        });
        events::emit(c, &fee.account, events::Topic::SeatCharged, pgrx::datetime::now(), data)?;
    }
    Ok(true)
}

/// Draws a charge from the customer's default wallet account under `txn` and writes
/// its header. False when the wallet is past its overdraft limit and `!strict` (then
/// nothing was written: the overdraft check comes before any write).
fn draw(c: &mut SpiClient<'_>, fee: &Fee, ch: &Charge, txn: &str, strict: bool) -> Result<bool> {
    let kind = if fee.seat { "seat_fee" } else { "subscription_fee" };
    let w = WalletRef { account: &fee.account, customer: &fee.customer, name: "default", asset: &fee.asset };
    let d = Debit { amount: ch.amount, draw: DrawFrom::AnyLot, system_account: "revenue", kind };
    match wallet::debit(c, &w, txn, d) {
        Ok(_) => {}
        Err(e) if !strict && e.code == Code::InsufficientFunds => return Ok(false),
        Err(e) => return Err(e),
    }
    let payload = json!({
        "subscription_id": fee.subscription, "price": fee.position, "version": fee.version, "period": ch.period,
        "period_start": rfc3339(ch.start), "period_end": ch.end.map(rfc3339), "quantity": ch.quantity,
        "prorated": ch.seq > 0,
    });
    let header = Header {
        id: txn.to_string(),
        key: None,
        customer: &fee.customer,
        payload: &payload,
        description: None,
        metadata: None,
    };
    header.write(c, &fee.account, kind)?;
    Ok(true)
}

/// What a subscription's fees bill now: `quantity` for fixed fees, `seats` for seat
/// fees (the seats asked for, but at least the users assigned), and its end
/// (microseconds), if it has one.
struct Counts {
    quantity: i32,
    seats: i32,
    ends: Option<i64>,
}

impl Counts {
    fn read(c: &mut SpiClient<'_>, customer: &str, subscription: &str) -> Result<Counts> {
        let t = run(
            c,
            "SELECT s.quantity, greatest(s.seats, (SELECT count(*) FROM credyt.seat_assignment a \
               WHERE a.subscription_id = $1))::int AS seats, s.ends_at FROM credyt.subscription s \
             WHERE s.customer_id = $2 AND s.id = $1",
            &[subscription.into(), customer.into()],
        )?;
        if t.is_empty() {
            return Err(CyError::internal("subscription vanished"));
        }
        let row = t.first();
        Ok(Counts {
            quantity: row.req("quantity")?,
            seats: row.req("seats")?,
            ends: row.opt::<TimestampWithTimeZone>("ends_at")?.map(|t| t.into_inner()),
        })
    }

    /// The quantity `fee` bills.
    fn of(&self, fee: &Fee) -> i32 {
        if fee.seat {
            self.seats
        } else {
            self.quantity
        }
    }
}

/// Charges the periods of a locked fee row that have started by `now` (at most
/// PERIODS_PER_CALL), stopping at the subscription's end, and moves next_period on.
/// Returns how many charges were made.
fn charge_due(c: &mut SpiClient<'_>, fee: &mut Fee, now: i64, strict: bool) -> Result<i64> {
    let counts = Counts::read(c, &fee.customer, &fee.subscription)?;
    let (qty, ends) = (counts.of(fee), counts.ends);
    let mut charged = 0;
    while let Some(k) = fee.next_period {
        let (start, end) = fee.period(k);
        if ends.is_some_and(|e| start >= e) || (fee.recurring.is_some() && start > now) || charged >= PERIODS_PER_CALL {
            if ends.is_some_and(|e| start >= e) {
                fee.next_period = None;
            }
            break;
        }
        let amount = credyt_core::money::round_fee(fee.unit_price * Decimal::from(qty));
        if bill(c, fee, &Charge { period: k, seq: 0, start, end, quantity: qty, amount }, strict)? {
            charged += 1;
        }
        (fee.billed_period, fee.billed_quantity) = (Some(k), qty);
        fee.next_period = fee.recurring.map(|_| k + 1);
    }
    let next_at = wallet::at_time(fee.next_period.map(|k| fee.period(k).0))?;
    run(
        c,
        "UPDATE credyt.subscription_fee SET next_period = $2, next_at = $3, billed_period = $4, billed_quantity = $5 \
         WHERE customer_id = $6 AND id = $1",
        &[
            fee.id.into(),
            fee.next_period.into(),
            next_at.into(),
            fee.billed_period.into(),
            fee.billed_quantity.into(),
            fee.customer.as_str().into(),
        ],
    )?;
    Ok(charged)
}

/// The customer of subscription `id` of the account: what a call naming only the
/// subscription needs first (on Citus its rows are on that customer's shard).
pub fn subscription_customer(c: &mut SpiClient<'_>, account: &str, id: &str) -> Result<String> {
    one::<String>(
        c,
        "SELECT customer_id FROM credyt.subscription WHERE id = $1 AND account_id = $2",
        &[id.into(), account.into()],
    )?
    .ok_or_else(|| CyError::not_found(format!("unknown subscription {id}")))
}

/// Locks one subscription's fees and charges what is due of them (subscribe,
/// set_seats). Returns them as they are now, locked.
fn charge_subscription(c: &mut SpiClient<'_>, customer: &str, subscription: &str, now: i64) -> Result<Vec<Fee>> {
    const SQL: &str =
        concat!(fee_columns!(), "WHERE f.customer_id = $2 AND f.subscription_id = $1 ORDER BY f.id FOR UPDATE");
    let t = run(c, SQL, &[subscription.into(), customer.into()])?;
    let mut fees = Vec::new();
    for row in t {
        fees.push(fee_row(&row)?);
    }
    for fee in fees.iter_mut().filter(|f| f.next_period.is_some()) {
        charge_due(c, fee, now, true)?;
    }
    Ok(fees)
}

/// A subscription on one version of its product, as its fees need it.
pub struct Subscribed<'a> {
    pub account: &'a str,
    pub customer: &'a str,
    pub subscription: &'a str,
    pub version: i32,
    pub prices: &'a [Price],
    /// the subscription's start: period 0 of every recurring fee starts here
    pub starts_at: TimestampWithTimeZone,
}

/// Inserts the version's fee rows (one per fixed or seat price and asset), each
/// starting at the period `first` gives for its recurrence, then charges what is due
/// now. One_time fees only with `one_time` (they are due at once, at subscribe).
fn open_fees(c: &mut SpiClient<'_>, s: &Subscribed, first: impl Fn(&Recurrence) -> i64, one_time: bool) -> Result<()> {
    let mut any = false;
    let anchor = s.starts_at.into_inner();
    for (position, p) in s.prices.iter().enumerate() {
        let (seat, recurring) = match &p.kind {
            PriceKind::Fixed { recurring } => (false, *recurring),
            PriceKind::Seat { recurring } => (true, Some(*recurring)),
            _ => continue,
        };
        if recurring.is_none() && !one_time {
            continue;
        }
        let (unit, count, next_period, next_at) = match recurring {
            Some(r) => (Some(r.unit.as_str()), Some(r.count as i32), first(&r), r.start(anchor, first(&r))),
            None => (None, None, 0, anchor.min(pgrx::datetime::now().into_inner())),
        };
        for pricing in &p.pricing {
            let unit_price = pricing.values.first().and_then(|v| v.unit_price).unwrap_or(Decimal::ZERO);
            run(
                c,
                "INSERT INTO credyt.subscription_fee (account_id, subscription_id, version, position, asset, customer_id, \
                   type, unit_price, interval_unit, interval_count, anchor, next_period, next_at) \
                 VALUES ($1, $2, $3, $4, $5, $13, $6, $7, $8, $9, $10, $11, $12)",
                &[
                    s.account.into(), s.subscription.into(), s.version.into(), (position as i32).into(),
                    pricing.asset.as_str().into(), (if seat { "seat" } else { "fixed" }).into(),
                    to_numeric(unit_price).into(), unit.into(), count.into(), s.starts_at.into(), next_period.into(),
                    wallet::time_at(next_at)?.into(), s.customer.into(),
                ],
            )?;
            any = true;
        }
    }
    if any {
        charge_subscription(c, s.customer, s.subscription, pgrx::datetime::now().into_inner())?;
    }
    Ok(())
}

/// A new subscription's fees, and the charges due now: a one_time fee at once,
/// recurring ones at each period's start from the subscription's start (a backdated
/// start charges the periods since, up to PERIODS_PER_CALL; the clock does the rest).
pub fn start(c: &mut SpiClient<'_>, s: &Subscribed) -> Result<()> {
    open_fees(c, s, |_| 0, true)
}

/// A subscription moves to another version from `from`: the old version's fees stop
/// (a period paid in advance is not refunded) and the new version's recurring fees
/// start with the next period of the same billing cycle (period 0 when it has not
/// started). One_time fees are not charged again.
pub fn change_version(c: &mut SpiClient<'_>, s: &Subscribed, from: TimestampWithTimeZone) -> Result<()> {
    run(
        c,
        "UPDATE credyt.subscription_fee SET next_period = NULL, next_at = NULL \
         WHERE customer_id = $3 AND subscription_id = $1 AND version <> $2",
        &[s.subscription.into(), s.version.into(), s.customer.into()],
    )?;
    let (anchor, at) = (s.starts_at.into_inner(), from.into_inner());
    open_fees(c, s, |r| if at <= anchor { 0 } else { r.index_at(anchor, at) + 1 }, false)
}

/// Clock: charges the fee periods due at `now`, at most tick_limit() fee rows of each
/// account per tick (oldest due first), each claimed with SKIP LOCKED so that
/// concurrent ticks charge each period once. Returns how many charges were made.
pub fn charge_recurring(c: &mut SpiClient<'_>, accounts: &[String], now: TimestampWithTimeZone) -> Result<i64> {
    const ALL: &str = concat!(
        fee_columns!(),
        "WHERE f.id = ANY (ARRAY(SELECT d.id FROM unnest($1::text[]) AS a(id) CROSS JOIN LATERAL ( \
             SELECT x.id FROM credyt.subscription_fee x WHERE x.account_id = a.id AND x.next_at <= $2 \
             ORDER BY x.next_at LIMIT $3) d)) \
           AND f.next_at <= $2 ORDER BY f.next_at, f.id FOR UPDATE SKIP LOCKED"
    );
    // On Citus (crate::distributed::due_by_customer): found per account, claimed per customer.
    const DUE: &str = "SELECT customer_id, id::text AS id FROM credyt.subscription_fee \
                       WHERE account_id = $1 AND next_at <= $2 ORDER BY next_at LIMIT $3";
    const ONE_CUSTOMER: &str = concat!(
        fee_columns!(),
        "WHERE f.customer_id = $1 AND f.id = ANY($3::text[]::bigint[]) AND f.next_at <= $2 \
         ORDER BY f.next_at, f.id FOR UPDATE SKIP LOCKED"
    );
    let limit = crate::credits::tick_limit();
    let mut due = Vec::new();
    if crate::distributed::active() {
        for (customer, ids) in crate::distributed::due_by_customer(c, DUE, accounts, now, limit)? {
            for row in run(c, ONE_CUSTOMER, &[customer.into(), now.into(), ids.into()])? {
                due.push(fee_row(&row)?);
            }
        }
    } else {
        for row in run(c, ALL, &[accounts.to_vec().into(), now.into(), limit.into()])? {
            due.push(fee_row(&row)?);
        }
    }
    let mut charged = 0;
    for mut fee in due {
        charged += charge_due(c, &mut fee, now.into_inner(), false)?;
    }
    Ok(charged)
}
