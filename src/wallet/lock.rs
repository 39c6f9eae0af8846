//! Reading and locking wallet accounts and their live lots.

use super::*;

const LOCK_WALLET: &str = concat!(
    "SELECT ",
    wallet_columns!(),
    "FROM credyt.wallet_account w WHERE w.customer_id = $1 AND w.name = $2 AND w.asset = $3 FOR UPDATE OF w"
);

/// Decodes the columns of wallet_columns!().
pub(super) fn wallet_row(row: &impl Row) -> Result<Wallet> {
    Ok(Wallet {
        balance: row.amount("balance")?,
        debt: row.amount("debt")?,
        limit: row.opt_amount("overdraft_limit")?,
        held: row.amount("held")?,
        threshold: row.opt_amount("threshold")?,
        armed: row.req::<bool>("threshold_armed")?,
        auto_topup: match (
            row.req::<bool>("topup_enabled")?,
            row.opt_amount("topup_threshold")?,
            row.opt_amount("topup_amount")?,
        ) {
            (true, Some(t), Some(a)) => Some((t, a)),
            _ => None,
        },
        pending_topup: row.opt::<String>("pending_topup")?,
        push: row.opt::<String>("push")?,
    })
}

/// Decodes the columns of lot_columns!().
pub(super) fn live_lot_row(row: &impl Row) -> Result<LiveLot> {
    Ok(LiveLot {
        id: row.req::<String>("lot_id")?,
        purpose: row.vocab("purpose", Purpose::parse)?,
        view: LotView {
            priority: row.req::<i32>("priority")?,
            expires_at: row.opt::<TimestampWithTimeZone>("expires_at")?.map(|t| t.into_inner()),
            seq: row.req::<i64>("seq")?,
            remaining: row.amount("remaining")?,
        },
    })
}

pub(super) fn read_locked(c: &mut SpiClient<'_>, w: &WalletRef) -> Result<Option<Wallet>> {
    let t = run(c, LOCK_WALLET, &[w.customer.into(), w.name.into(), w.asset.into()])?;
    if t.is_empty() {
        return Ok(None);
    }
    Ok(Some(wallet_row(&t.first())?))
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
    Ok(Some(wallet_row(&t.first())?))
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
    let one = |s: &str| vec![s.to_string()];
    run(c, ENSURE_WALLETS, &[w.account.into(), one(w.customer).into(), one(w.name).into(), one(w.asset).into()])?;
    Ok(())
}

/// Creates the wallet accounts (customer, name, asset) that do not exist yet: the one
/// place a wallet account is inserted.
pub(super) const ENSURE_WALLETS: &str = "INSERT INTO credyt.wallet_account (account_id, customer_id, name, asset) \
     SELECT $1, u.c, u.n, u.a FROM unnest($2::text[], $3::text[], $4::text[]) AS u(c, n, a) \
     ON CONFLICT (customer_id, name, asset) DO NOTHING";

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
    let mut header = Headers::default();
    header.push(txn.clone(), None, customer, &payload, description, None);
    header.write(c, account, kind, Plan::Kept)?;
    Ok(txn)
}

/// Lots that are effective and not expired now, with something remaining.
pub fn live_lots(c: &mut SpiClient<'_>, w: &WalletRef) -> Result<Vec<LiveLot>> {
    let t = run(
        c,
        concat!(
            "SELECT ",
            lot_columns!(),
            "FROM credyt.lot l WHERE l.customer_id = $1 AND l.wallet_name = $2 AND l.asset = $3 AND ",
            live_lot!()
        ),
        &[w.customer.into(), w.name.into(), w.asset.into()],
    )?;
    let mut lots = Vec::with_capacity(t.len());
    for row in t {
        lots.push(live_lot_row(&row)?);
    }
    Ok(lots)
}

/// available = live lots remaining − debt − active holds (SPEC §5): the one place
/// the rule is written.
pub fn available_from(live: Decimal, debt: Decimal, held: Decimal) -> Decimal {
    live - debt - held
}

/// Available of a locked wallet and its live lots.
pub fn available(lots: &[LiveLot], wallet: &Wallet) -> Decimal {
    available_from(lots.iter().map(|l| l.view.remaining).sum::<Decimal>(), wallet.debt, wallet.held)
}

/// Decodes the columns of available_columns!() into the available balance.
pub(super) fn available_row(row: &impl Row) -> Result<Decimal> {
    Ok(available_from(row.amount("live")?, row.amount("debt")?, row.amount("held")?))
}

/// The balance push payload (SPEC §10).
pub(super) fn balance_payload(w: &WalletRef, available: Decimal) -> String {
    json!({
        "account": w.account,
        "customer_id": w.customer,
        "account_id": format!("{}:{}", w.name, w.asset),
        "available": money::json_number(available),
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
    let t = run(
        c,
        concat!(
            "SELECT ",
            available_columns!(),
            "FROM credyt.wallet_account w WHERE w.customer_id = $1 AND w.name = $2 AND w.asset = $3"
        ),
        &[customer.into(), name.into(), asset.into()],
    )?;
    if t.is_empty() {
        return Ok(Decimal::ZERO);
    }
    available_row(&t.first())
}
