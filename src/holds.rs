//! Holds (SPEC §6): reservations of funds that a usage event captures or that are
//! released. A hold is written under its wallet account's lock and counts in
//! `pending_out` and against `available` while it is active and unexpired.

use crate::error::{api, CyError, Result};
use crate::money::{self, to_numeric};
use crate::scope::scope;
use crate::spi::{run, Row};
use crate::validate;
use crate::wallet::{self, WalletRef};
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use pgrx::AnyNumeric;
use rust_decimal::Decimal;

/// Where a hold is in its life: parsed once from its column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HoldStatus {
    Active,
    Captured,
    Released,
    Expired,
}

impl HoldStatus {
    pub fn parse(s: &str) -> Option<HoldStatus> {
        match s {
            "active" => Some(HoldStatus::Active),
            "captured" => Some(HoldStatus::Captured),
            "released" => Some(HoldStatus::Released),
            "expired" => Some(HoldStatus::Expired),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            HoldStatus::Active => "active",
            HoldStatus::Captured => "captured",
            HoldStatus::Released => "released",
            HoldStatus::Expired => "expired",
        }
    }
}

/// A hold as stored.
pub struct Hold {
    pub id: String,
    pub customer: String,
    pub wallet_name: String,
    pub asset: String,
    pub status: HoldStatus,
    pub expired: bool,
}

/// What hold_row() decodes.
macro_rules! hold_columns {
    () => {
        "SELECT id, customer_id, wallet_name, asset, status, expires_at <= now() AS expired FROM credyt.hold "
    };
}

/// Finds a hold by its `hld_…` id or the client's hold_id, locking its row.
pub fn find(c: &mut SpiClient<'_>, account: &str, reference: &str) -> Result<Hold> {
    const BY_ID: &str = concat!(hold_columns!(), "WHERE id = $2 AND account_id = $1 FOR UPDATE");
    const BY_KEY: &str = concat!(hold_columns!(), "WHERE account_id = $1 AND hold_key = $2 FOR UPDATE");
    if crate::distributed::active() {
        return find_sharded(c, account, reference);
    }
    let mut t = run(c, BY_ID, &[account.into(), reference.into()])?;
    if t.is_empty() {
        t = run(c, BY_KEY, &[account.into(), reference.into()])?;
    }
    if t.is_empty() {
        return Err(CyError::not_found(format!("unknown hold {reference}")));
    }
    hold_row(&t.first())
}

fn hold_row(row: &impl Row) -> Result<Hold> {
    Ok(Hold {
        id: row.req::<String>("id")?,
        customer: row.req::<String>("customer_id")?,
        wallet_name: row.req::<String>("wallet_name")?,
        asset: row.req::<String>("asset")?,
        status: row.vocab("status", HoldStatus::parse)?,
        expired: row.req::<bool>("expired")?,
    })
}

/// find() on Citus, where a lock is taken on one shard: the hold's customer first (its
/// id, else its hold_id: per customer there, so one that several customers used is
/// CY409), then its row on that customer's shard.
fn find_sharded(c: &mut SpiClient<'_>, account: &str, reference: &str) -> Result<Hold> {
    let t = run(
        c,
        "SELECT customer_id, id FROM credyt.hold WHERE account_id = $1 AND (id = $2 OR hold_key = $2) \
         ORDER BY id = $2 DESC LIMIT 2",
        &[account.into(), reference.into()],
    )?;
    let found: Vec<(String, String)> =
        t.into_iter().map(|r| Ok((r.req::<String>("customer_id")?, r.req::<String>("id")?))).collect::<Result<_>>()?;
    let (customer, id) = match found.as_slice() {
        [] => return Err(CyError::not_found(format!("unknown hold {reference}"))),
        [one] => one.clone(),
        [first, ..] if first.1 == reference => first.clone(),
        _ => {
            return Err(CyError::conflict(format!("hold_id {reference:?} names holds of several customers"))
                .hint("name the hold by its hld_… id"))
        }
    };
    const LOCK: &str = concat!(hold_columns!(), "WHERE customer_id = $1 AND id = $2 FOR UPDATE");
    let t = run(c, LOCK, &[customer.as_str().into(), id.as_str().into()])?;
    if t.is_empty() {
        return Err(CyError::not_found(format!("unknown hold {reference}")));
    }
    hold_row(&t.first())
}

/// Closes an active hold as captured (with the amount charged against it) or
/// released. The caller holds the wallet lock.
pub fn close(
    c: &mut SpiClient<'_>,
    hold: &Hold,
    status: HoldStatus,
    captured: Option<Decimal>,
    event_id: Option<&str>,
) -> Result<()> {
    // The wallet row's held drops with it (the hold was active and unexpired).
    run(
        c,
        "WITH h AS (UPDATE credyt.hold SET status = $2, captured = $3, event_id = $4, closed_at = now() \
             WHERE customer_id = $5 AND id = $1 RETURNING wallet_name, asset, amount) \
         UPDATE credyt.wallet_account w SET held = w.held - h.amount FROM h \
         WHERE w.customer_id = $5 AND w.name = h.wallet_name AND w.asset = h.asset",
        &[
            hold.id.as_str().into(),
            status.as_str().into(),
            captured.map(to_numeric).into(),
            event_id.into(),
            hold.customer.as_str().into(),
        ],
    )?;
    Ok(())
}

/// Checks that a hold can still be captured or released.
pub fn require_open(hold: &Hold, reference: &str) -> Result<()> {
    match (hold.status, hold.expired) {
        (HoldStatus::Active, false) => Ok(()),
        (HoldStatus::Active, true) | (HoldStatus::Expired, _) => {
            Err(CyError::new(crate::error::Code::Gone, format!("hold {reference} has expired"))
                .hint("authorize a new hold"))
        }
        (status, _) => Err(CyError::conflict(format!("hold {reference} is already {}", status.as_str()))),
    }
}

/// The hold this hold_id already names, if it names one with the same customer,
/// asset and amount; CY409 if it names another.
fn existing(c: &mut SpiClient<'_>, w: &WalletRef, key: &str, amount: Decimal) -> Result<Option<String>> {
    macro_rules! original {
        () => {
            "SELECT id, customer_id = $3 AND asset = $4 AND amount = $5 AS same FROM credyt.hold "
        };
    }
    const BY_ACCOUNT: &str = concat!(original!(), "WHERE account_id = $1 AND hold_key = $2");
    const BY_CUSTOMER: &str = concat!(original!(), "WHERE customer_id = $3 AND account_id = $1 AND hold_key = $2");
    let t = run(
        c,
        crate::distributed::pick(BY_ACCOUNT, BY_CUSTOMER),
        &[w.account.into(), key.into(), w.customer.into(), w.asset.into(), to_numeric(amount).into()],
    )?;
    if t.is_empty() {
        return Ok(None);
    }
    let row = t.first();
    let id = row.req::<String>("id")?;
    if row.req::<bool>("same")? {
        Ok(Some(id))
    } else {
        Err(CyError::conflict(format!("hold_id {key:?} was already used with a different payload"))
            .detail(format!("existing hold {id}")))
    }
}

#[pg_extern(security_definer)]
#[search_path(@extschema@, pg_temp)]
fn authorize(
    customer: Option<String>,
    hold_id: Option<String>,
    asset: Option<String>,
    amount: Option<AnyNumeric>,
    expires_in: default!(Option<Interval>, "'15 minutes'"),
) -> String {
    api(move || {
        let key = validate::key("hold_id", hold_id)?;
        let amount = money::positive("amount", amount)?;
        let expires_in = validate::required("expires_in", expires_in)?;
        Spi::connect_mut(|c| {
            let ok = crate::spi::one::<bool>(
                c,
                "SELECT $1 > interval '0' AND $1 <= interval '366 days'",
                &[expires_in.into()],
            )?;
            if ok != Some(true) {
                return Err(CyError::invalid("expires_in must be positive and at most 366 days"));
            }
            let t = wallet::Target::resolve(c, asset.as_deref(), customer.as_deref())?;
            let (account, asset, customer) = (&t.account, &t.asset, &t.customer);
            let w = t.wallet("default");
            let mut wallet = wallet::lock(c, &w)?;
            // Idempotent by hold_id: the same request returns the same hold.
            if let Some(id) = existing(c, &w, &key, amount)? {
                return Ok(id);
            }
            let before = wallet.available();
            let after = before - amount;
            if let Some(limit) = wallet.limit {
                if after < -limit {
                    return Err(CyError::insufficient(format!(
                        "insufficient funds to hold {amount} {} for customer {customer}",
                        asset.code
                    ))
                    .detail(format!("available {before}, overdraft limit {limit}"))
                    .hint("top up the wallet, or hold a smaller amount"));
                }
            }
            let id = crate::ids::new_id("hld")?;
            let expires_at = crate::spi::one::<TimestampWithTimeZone>(
                c,
                "INSERT INTO credyt.hold (account_id, id, hold_key, customer_id, wallet_name, asset, amount, status, expires_at) \
                 VALUES ($1, $2, $3, $4, 'default', $5, $6, 'active', now() + $7) RETURNING expires_at",
                &[account.as_str().into(), id.as_str().into(), key.as_str().into(), customer.as_str().into(),
                  asset.code.as_str().into(), to_numeric(amount).into(), expires_in.into()],
            )?
            .ok_or_else(|| CyError::internal("hold insert returned no row"))?;
            wallet.add_hold(amount, expires_at.into_inner());
            wallet::notify_balance(c, &wallet, &w, after)?;
            let hit = wallet.cross_threshold(after);
            wallet::save_holds(c, &w, &wallet)?;
            if let Some(t) = hit {
                wallet::threshold_hit(c, &w, after, t)?;
            }
            wallet::request_topup(c, &w, &mut wallet, after)?;
            Ok(id)
        })
    })
}

#[pg_extern(security_definer)]
#[search_path(@extschema@, pg_temp)]
fn release(hold_id: Option<String>) {
    api(move || {
        let reference = validate::required("hold_id", hold_id)?;
        Spi::connect_mut(|c| {
            let account = scope(c)?;
            let probe = find(c, &account, &reference)?;
            let w = WalletRef {
                account: &account,
                customer: &probe.customer,
                name: &probe.wallet_name,
                asset: &probe.asset,
            };
            let mut wallet = wallet::lock(c, &w)?;
            let hold = find(c, &account, &reference)?; // re-read under the wallet lock
            match (hold.status, hold.expired) {
                // Releasing twice, or an expired hold, changes nothing.
                (HoldStatus::Released | HoldStatus::Expired, _) | (HoldStatus::Active, true) => Ok(()),
                (HoldStatus::Captured, _) => Err(CyError::conflict(format!("hold {reference} was already captured"))),
                (HoldStatus::Active, false) => {
                    close(c, &hold, HoldStatus::Released, None, None)?;
                    let now = wallet::available_of(c, w.customer, w.name, w.asset)?;
                    let was = wallet.armed;
                    wallet.rearm(now);
                    if wallet.armed != was {
                        wallet::save_armed(c, &w, wallet.armed)?;
                    }
                    wallet::notify_balance(c, &wallet, &w, now)
                }
            }
        })
    })
}
