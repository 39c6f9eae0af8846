//! Lot expiry at the clock: expire, rollover or reserve, per lot's on_expiry.

use super::*;

/// Clock: applies the on_expiry policy of every lot that expired at or before `now`
/// with something left. A wallet another transaction holds is left for the next tick
/// (SKIP LOCKED), so concurrent ticks expire each lot once. Returns lots expired.
pub fn expire_lots(c: &mut SpiClient<'_>, accounts: &[String], now: TimestampWithTimeZone) -> Result<i64> {
    // The wallets of at most tick_limit() expired lots per account (see issue_recurring).
    let t = run(
        c,
        "SELECT DISTINCT l.account_id, l.customer_id, l.wallet_name, l.asset FROM unnest($1::text[]) AS a(id) \
         CROSS JOIN LATERAL (SELECT x.account_id, x.customer_id, x.wallet_name, x.asset FROM credyt.lot x \
           WHERE x.account_id = a.id AND x.expires_at <= $2 AND x.remaining > 0 ORDER BY x.expires_at LIMIT $3) l",
        &[accounts.to_vec().into(), now.into(), tick_limit().into()],
    )?;
    let mut wallets = Vec::new();
    for row in t {
        wallets.push((
            row.get::<String>(1)?.unwrap_or_default(),
            row.get::<String>(2)?.unwrap_or_default(),
            row.get::<String>(3)?.unwrap_or_default(),
            row.get::<String>(4)?.unwrap_or_default(),
        ));
    }
    let mut expired = 0;
    for (account, customer, name, asset) in &wallets {
        let w = WalletRef { account, customer, name, asset };
        let Some(mut wallet) = wallet::try_lock(c, &w)? else { continue };
        // Re-read under the lock: another tick may have just expired them.
        let t = run(
            c,
            "SELECT id, remaining::text, on_expiry, rollover_cap::text, purpose, priority, grant_id, expires_at \
             FROM credyt.lot WHERE customer_id = $1 AND wallet_name = $2 AND asset = $3 \
               AND expires_at <= $4 AND remaining > 0 ORDER BY expires_at, seq",
            &[customer.as_str().into(), name.as_str().into(), asset.as_str().into(), now.into()],
        )?;
        let mut lots = Vec::new();
        for row in t {
            lots.push((
                row.get::<String>(1)?.unwrap_or_default(),
                stored(&row.get::<String>(2)?.unwrap_or_default())?,
                crate::error::stored_vocab("lot.on_expiry", row.get::<String>(3)?, ExpiryPolicy::parse)?,
                row.get::<String>(4)?.map(|s| stored(&s)).transpose()?,
                row.get::<String>(5)?.unwrap_or_default(),
                row.get::<i32>(6)?.unwrap_or_default(),
                row.get::<String>(7)?,
                row.get::<TimestampWithTimeZone>(8)?.unwrap_or(now),
            ));
        }
        let mut rolled_any = false;
        for (lot_id, remaining, policy, cap, purpose, priority, grant_id, expired_at) in lots {
            let kept = if policy == ExpiryPolicy::Rollover {
                cap.map_or(remaining, |cap| remaining.min(cap))
            } else {
                Decimal::ZERO
            };
            // reserve: the whole remainder moves to the customer's reserve pool
            let reserved =
                if policy == ExpiryPolicy::Reserve && name != wallet::RESERVE { remaining } else { Decimal::ZERO };
            let lost = remaining - kept - reserved;
            let txn = wallet::open_txn(c, account, "expiry", customer, json!({"lot": lot_id}), None)?;
            let mut book = Book::new(&w, txn.clone());
            book.take(&lot_id, remaining);
            book.customer_leg(-remaining, Some(lot_id.clone()), "expiry");
            // A new lot of the same purpose and priority, without expiry, effective from the
            // expiry: a time of the clock's (at or before the `now` this tick was given),
            // never the wall clock's, so a tick run for another time dates lots by it.
            let carry = |c: &mut SpiClient<'_>, wallet_name: &str, amount: Decimal, source: String| -> Result<String> {
                let id = crate::ids::new_id("lot")?;
                run(
                    c,
                    "INSERT INTO credyt.lot (account_id, id, customer_id, wallet_name, asset, purpose, priority, amount, \
                       remaining, effective_at, expires_at, source, txn_id, grant_id) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, $9, NULL, $10, $11, $12)",
                    &[
                        account.as_str().into(), id.as_str().into(), customer.as_str().into(), wallet_name.into(),
                        asset.as_str().into(), purpose.as_str().into(), priority.into(), to_numeric(amount).into(),
                        expired_at.into(), source.as_str().into(), txn.as_str().into(), grant_id.as_deref().into(),
                    ],
                )?;
                Ok(id)
            };
            let mut new_lot = None;
            if kept > Decimal::ZERO {
                // rollover: the carried-over remainder stays in this wallet account
                let id = carry(c, name, kept, format!("rollover:{lot_id}"))?;
                book.customer_leg(kept, Some(id.clone()), "rollover");
                new_lot = Some(id);
                rolled_any = true;
            }
            if reserved > Decimal::ZERO {
                // reserve: into the customer's pool, locked after the wallet as every movement does
                let r = WalletRef { account, customer, name: wallet::RESERVE, asset };
                let pool = wallet::lock(c, &r)?;
                let id = carry(c, wallet::RESERVE, reserved, format!("reserve:{lot_id}"))?;
                book.leg_on(wallet::RESERVE, reserved, Some(id.clone()), "reserve");
                new_lot = Some(id);
                wallet::save_pool(c, &r, pool.balance + reserved)?;
            }
            if lost > Decimal::ZERO {
                book.system_leg("expired", lost, "expiry");
            }
            wallet.balance -= lost + reserved;
            wallet::write(c, &wallet, book, None)?;
            if let Some(gid) = grant_id {
                let key = one::<String>(
                    c,
                    "SELECT grant_key FROM credyt.credit_grant WHERE id = $1",
                    &[gid.as_str().into()],
                )?;
                events::emit(
                    c,
                    account,
                    "grant.expired",
                    expired_at,
                    json!({
                        "grant_id": key, "id": gid, "customer_id": customer, "account_id": format!("{name}:{asset}"),
                        "lot_id": lot_id, "expired": num(lost), "rolled_over": num(kept), "reserved": num(reserved),
                        "new_lot_id": new_lot,
                    }),
                )?;
            }
            expired += 1;
        }
        if rolled_any {
            let now_available = wallet::available_of(c, customer, name, asset)?;
            wallet::notify_balance(c, &wallet, &w, now_available)?;
        }
    }
    Ok(expired)
}
