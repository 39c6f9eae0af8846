//! Reading and locking wallet accounts and their live lots.

use super::*;

const LOCK_WALLET: &str = concat!(
    "SELECT ",
    wallet_columns!(),
    "FROM credyt.wallet_account w WHERE w.customer_id = $1 AND w.name = $2 AND w.asset = $3 FOR UPDATE OF w"
);

/// Decodes (balance, debt, overdraft_limit, held as text, threshold as text,
/// threshold_armed, topup_enabled, topup_threshold, topup_amount, pending_topup),
/// starting at column `from`.
pub(super) fn wallet_row(row: &pgrx::spi::SpiHeapTupleData<'_>, from: usize) -> Result<Wallet> {
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
pub(super) fn live_lot_row(row: &pgrx::spi::SpiHeapTupleData<'_>, from: usize) -> Result<LiveLot> {
    Ok(LiveLot {
        id: row.get::<String>(from)?.unwrap_or_default(),
        purpose: crate::error::stored_vocab("lot.purpose", row.get::<String>(from + 1)?, Purpose::parse)?,
        view: LotView {
            priority: row.get::<i32>(from + 2)?.unwrap_or_default(),
            expires_at: row.get::<TimestampWithTimeZone>(from + 3)?.map(|t| t.into_inner()),
            seq: row.get::<i64>(from + 4)?.unwrap_or_default(),
            remaining: stored(&row.get::<String>(from + 5)?.unwrap_or_default())?,
        },
    })
}

pub(super) fn read_locked(c: &mut SpiClient<'_>, w: &WalletRef) -> Result<Option<Wallet>> {
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
pub(super) fn balance_payload(w: &WalletRef, available: Decimal) -> String {
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
