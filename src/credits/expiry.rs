//! Lot expiry at the clock: expire, rollover or reserve, per lot's on_expiry.

use super::*;
use credyt_core::burndown::{split_expiry, ExpirySplit};

/// Clock: applies the on_expiry policy of every lot that expired at or before `now`
/// with something left. A wallet another transaction holds is left for the next tick
/// (SKIP LOCKED), so concurrent ticks expire each lot once. Returns lots expired.
pub fn expire_lots(c: &mut SpiClient<'_>, accounts: &[String], now: TimestampWithTimeZone) -> Result<i64> {
    // The wallets of at most tick_limit() expired lots per account (see issue_recurring).
    const ALL: &str =
        "SELECT DISTINCT l.account_id, l.customer_id, l.wallet_name, l.asset FROM unnest($1::text[]) AS a(id) \
         CROSS JOIN LATERAL (SELECT x.account_id, x.customer_id, x.wallet_name, x.asset FROM credyt.lot x \
           WHERE x.account_id = a.id AND x.expires_at <= $2 AND x.remaining > 0 ORDER BY x.expires_at LIMIT $3) l";
    // (on Citus, which runs no lateral LIMIT over a list: account by account)
    const ONE_ACCOUNT: &str = "SELECT DISTINCT l.account_id, l.customer_id, l.wallet_name, l.asset FROM ( \
           SELECT x.account_id, x.customer_id, x.wallet_name, x.asset FROM credyt.lot x \
           WHERE x.account_id = $1 AND x.expires_at <= $2 AND x.remaining > 0 ORDER BY x.expires_at LIMIT $3) l";
    let mut found = Vec::new();
    if crate::distributed::active() {
        for account in accounts {
            found.push(run(c, ONE_ACCOUNT, &[account.as_str().into(), now.into(), tick_limit().into()])?);
        }
    } else {
        found.push(run(c, ALL, &[accounts.to_vec().into(), now.into(), tick_limit().into()])?);
    }
    let mut wallets = Vec::new();
    for row in found.into_iter().flatten() {
        wallets.push((
            row.req::<String>("account_id")?,
            row.req::<String>("customer_id")?,
            row.req::<String>("wallet_name")?,
            row.req::<String>("asset")?,
        ));
    }
    let mut expired = 0;
    for (account, customer, name, asset) in &wallets {
        expired += expire_wallet(c, &WalletRef { account, customer, name, asset }, now)?;
    }
    Ok(expired)
}

/// A lot past its expiry with something left, as the expiry reads it (one row of DUE).
struct ExpiredLot {
    id: String,
    remaining: Decimal,
    policy: ExpiryPolicy,
    cap: Option<Decimal>,
    purpose: Purpose,
    priority: i32,
    grant_id: Option<String>,
    expired_at: TimestampWithTimeZone,
}

impl ExpiredLot {
    fn from_row(row: &impl Row) -> Result<ExpiredLot> {
        Ok(ExpiredLot {
            id: row.req::<String>("id")?,
            remaining: row.amount("remaining")?,
            policy: row.vocab("on_expiry", ExpiryPolicy::parse)?,
            cap: row.opt_amount("cap")?,
            purpose: row.vocab("purpose", Purpose::parse)?,
            priority: row.req::<i32>("priority")?,
            grant_id: row.opt::<String>("grant_id")?,
            expired_at: row.req::<TimestampWithTimeZone>("expires_at")?,
        })
    }
}

/// Expires the due lots of one wallet account, unless another transaction holds it.
fn expire_wallet(c: &mut SpiClient<'_>, w: &WalletRef, now: TimestampWithTimeZone) -> Result<i64> {
    let Some(mut wallet) = wallet::try_lock(c, w)? else { return Ok(0) };
    // Re-read under the lock: another tick may have just expired them.
    const DUE: &str = "SELECT id, remaining::text AS remaining, on_expiry, rollover_cap::text AS cap, purpose, \
           priority, grant_id, expires_at FROM credyt.lot WHERE customer_id = $1 AND wallet_name = $2 AND asset = $3 \
           AND expires_at <= $4 AND remaining > 0 ORDER BY expires_at, seq";
    let t = run(c, DUE, &[w.customer.into(), w.name.into(), w.asset.into(), now.into()])?;
    let mut lots = Vec::new();
    for row in t {
        lots.push(ExpiredLot::from_row(&row)?);
    }
    let mut rolled_any = false;
    for lot in &lots {
        let split = split_expiry(lot.policy, lot.remaining, lot.cap, w.name == wallet::RESERVE);
        let new_lot = expire_one(c, w, &mut wallet, lot, split)?;
        rolled_any |= split.kept > Decimal::ZERO;
        if let Some(gid) = &lot.grant_id {
            emit_expired(c, w, lot, gid, split, new_lot)?;
        }
    }
    if rolled_any {
        let now_available = wallet::available_of(c, w.customer, w.name, w.asset)?;
        wallet::notify_balance(c, &wallet, w, now_available)?;
    }
    Ok(lots.len() as i64)
}

/// Writes one lot's expiry as a ledger transaction: the remainder leaves the lot, the
/// kept part comes back as a new lot in the wallet account, the reserved part as a new
/// lot in the reserve pool, the rest goes to the `expired` system account. Returns the
/// new lot, if any.
fn expire_one(
    c: &mut SpiClient<'_>,
    w: &WalletRef,
    wallet: &mut Wallet,
    lot: &ExpiredLot,
    split: ExpirySplit,
) -> Result<Option<String>> {
    let txn = wallet::open_txn(c, w.account, "expiry", w.customer, json!({"lot": lot.id}), None)?;
    let mut book = Book::new(w, txn.clone());
    book.take(&lot.id, lot.remaining);
    book.customer_leg(-lot.remaining, Some(lot.id.clone()), "expiry");
    let mut new_lot = None;
    if split.kept > Decimal::ZERO {
        // rollover: the carried-over remainder stays in this wallet account
        let id = carry(c, w, w.name, lot, split.kept, &format!("rollover:{}", lot.id), &txn)?;
        book.customer_leg(split.kept, Some(id.clone()), "rollover");
        new_lot = Some(id);
    }
    if split.reserved > Decimal::ZERO {
        // reserve: into the customer's pool, locked after the wallet as every movement does
        let r = WalletRef { account: w.account, customer: w.customer, name: wallet::RESERVE, asset: w.asset };
        let pool = wallet::lock(c, &r)?;
        let id = carry(c, w, wallet::RESERVE, lot, split.reserved, &format!("reserve:{}", lot.id), &txn)?;
        book.leg_on(wallet::RESERVE, split.reserved, Some(id.clone()), "reserve");
        new_lot = Some(id);
        let mut pool = pool;
        pool.balance += split.reserved;
        wallet::save_pool(c, &r, &pool)?;
        wallet::refresh(c, &r)?;
    }
    if split.lost > Decimal::ZERO {
        book.system_leg("expired", split.lost, "expiry");
    }
    wallet.balance -= split.lost + split.reserved;
    wallet::write(c, wallet, book, None)?;
    // (the tick's time may differ from the transaction's: live is summed afresh)
    wallet::refresh(c, w)?;
    Ok(new_lot)
}

/// A new lot of the expired lot's purpose and priority, without expiry, effective from
/// the expiry: a time of the clock's (at or before the `now` this tick was given), never
/// the wall clock's, so a tick run for another time dates lots by it.
fn carry(
    c: &mut SpiClient<'_>,
    w: &WalletRef,
    wallet_name: &str,
    lot: &ExpiredLot,
    amount: Decimal,
    source: &str,
    txn: &str,
) -> Result<String> {
    let id = crate::ids::new_id("lot")?;
    run(
        c,
        "INSERT INTO credyt.lot (account_id, id, customer_id, wallet_name, asset, purpose, priority, amount, \
           remaining, effective_at, expires_at, source, txn_id, grant_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, $9, NULL, $10, $11, $12)",
        &[
            w.account.into(),
            id.as_str().into(),
            w.customer.into(),
            wallet_name.into(),
            w.asset.into(),
            lot.purpose.as_str().into(),
            lot.priority.into(),
            to_numeric(amount).into(),
            lot.expired_at.into(),
            source.into(),
            txn.into(),
            lot.grant_id.as_deref().into(),
        ],
    )?;
    Ok(id)
}

/// grant.expired for a lot that a grant issued.
fn emit_expired(
    c: &mut SpiClient<'_>,
    w: &WalletRef,
    lot: &ExpiredLot,
    grant_id: &str,
    split: ExpirySplit,
    new_lot: Option<String>,
) -> Result<()> {
    let key = one::<String>(c, "SELECT grant_key FROM credyt.credit_grant WHERE id = $1", &[grant_id.into()])?;
    events::emit(
        c,
        w.account,
        events::Topic::GrantExpired,
        lot.expired_at,
        json!({
            "grant_id": key, "id": grant_id, "customer_id": w.customer,
            "account_id": format!("{}:{}", w.name, w.asset), "lot_id": lot.id, "expired": num(split.lost),
            "rolled_over": num(split.kept), "reserved": num(split.reserved), "new_lot_id": new_lot,
        }),
    )?;
    Ok(())
}
