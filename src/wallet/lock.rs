//! Reading and locking wallet accounts and their live lots.

use super::*;

const LOCK_WALLET: &str = concat!(
    "SELECT ",
    wallet_columns!(),
    "FROM ",
    wallet_source!(),
    "WHERE w.customer_id = $1 AND w.name = $2 AND w.asset = $3 FOR UPDATE OF w"
);

/// Decodes the columns of wallet_columns!().
pub(super) fn wallet_row(row: &impl Row) -> Result<Wallet> {
    Ok(Wallet {
        balance: row.amount("balance")?,
        debt: row.amount("debt")?,
        limit: row.opt_amount("overdraft_limit")?,
        live: row.amount("live")?,
        held: row.amount("held")?,
        fresh_until: row.opt::<TimestampWithTimeZone>("fresh_until")?.map(|t| t.into_inner()),
        fresh: row.req::<bool>("fresh")?,
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

/// The statement that locks a wallet to draw from it reads, with it, the first live
/// lot in burn-down order (as one text array, a scalar subquery: fewer plan nodes to
/// start than a join); a charge that needs more reads all the live lots in a second
/// statement. (Origin: the first lot covers almost every charge; bench/run.sh's
/// 1,000-lot wallet charges as fast as a one-lot wallet.)
macro_rules! draw_columns {
    () => {
        concat!(
            "SELECT ",
            wallet_columns!(),
            ", w.xmin = (SELECT w2.xmin FROM credyt.wallet_account w2 WHERE w2.customer_id = $1 AND w2.name = $2 \
               AND w2.asset = $3) AS current, \
             ",
            first_lot_column!("$1")
        )
    };
}

/// The first live lot in burn-down order of the wallet account aliased `w`, as one text
/// array (first_lot() decodes it).
macro_rules! first_lot_column {
    ($c:literal) => {
        concat!(
            "(SELECT ARRAY[l.id, l.purpose, l.priority::text, \
                (extract(epoch FROM l.expires_at) * 1000000 - 946684800000000)::int8::text, l.seq::text, \
                l.remaining::text] FROM credyt.lot l WHERE ",
            of_lots!($c),
            " AND ",
            live_lot!(),
            " ORDER BY ",
            burn_order!(),
            " LIMIT 1) AS first_lot "
        )
    };
}
macro_rules! draw_from {
    () => {
        concat!("FROM ", wallet_source!(), "WHERE w.customer_id = $1 AND w.name = $2 AND w.asset = $3 FOR UPDATE OF w")
    };
}

/// Decodes draw_columns!()'s first_lot (microseconds since 2000-01-01 for expires_at,
/// as Postgres keeps timestamps).
fn first_lot(row: &impl Row) -> Result<Option<LiveLot>> {
    let Some(v) = row.opt::<Vec<Option<String>>>("first_lot")? else { return Ok(None) };
    let field = |i: usize| v.get(i).cloned().flatten();
    let bad = || CyError::internal("first_lot is malformed");
    let int = |i: usize| field(i).and_then(|s| s.parse::<i64>().ok());
    Ok(Some(LiveLot {
        id: field(0).ok_or_else(bad)?,
        purpose: field(1).as_deref().and_then(Purpose::parse).ok_or_else(bad)?,
        view: LotView {
            priority: int(2).and_then(|p| i32::try_from(p).ok()).ok_or_else(bad)?,
            expires_at: int(3),
            seq: int(4).ok_or_else(bad)?,
            remaining: stored(&field(5).ok_or_else(bad)?)?,
        },
    }))
}

/// The catalog generations a cached charge checks (crate::cache), read in the
/// statement that locks its wallet: the platform's, the account's, the customer's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gens {
    pub platform: i64,
    pub account: i64,
    pub customer: i64,
}

impl Gens {
    /// Decodes the columns platform_gen, account_gen and customer_gen (-1 for a
    /// customer that does not exist).
    fn read(row: &impl Row) -> Result<Gens> {
        Ok(Gens {
            platform: row.req::<i64>("platform_gen")?,
            account: row.req::<i64>("account_gen")?,
            customer: row.opt::<i64>("customer_gen")?.unwrap_or(-1),
        })
    }
}

/// A wallet locked to draw from, with the live lots a draw of the amount asked for
/// needs (the first in burn-down order, or all of them).
pub struct Drawable {
    pub wallet: Wallet,
    pub lots: Vec<LiveLot>,
    pub gens: Option<Gens>,
}

/// Locks the wallet account (creating it on first use) and reads, in the same
/// statement, the first live lots in burn-down order: enough for `amount` after the
/// debt, or all of them. `with_gens`: also the catalog generations (the platform's,
/// the account's, the customer's).
///
/// A statement that waited for the lock sees the wallet row as committed by the
/// transaction it waited for, but everything else (the lot) as of its start: then
/// the row's xmin differs from the snapshot's, and the lot is read again, now holding
/// the lock, on a snapshot that has the other transaction's writes. (The generations
/// stay those of the call's start: a catalog change committed while it waited applies
/// from the next call.)
pub fn lock_to_draw(c: &mut SpiClient<'_>, w: &WalletRef, amount: Decimal, with_gens: bool) -> Result<Drawable> {
    const PLAIN: &str = concat!(draw_columns!(), draw_from!());
    const WITH_GENS: &str = concat!(
        draw_columns!(),
        ", (SELECT catalog_gen FROM credyt.account WHERE parent_id IS NULL AND environment = 'live') AS platform_gen, \
           (SELECT catalog_gen FROM credyt.customer WHERE id = $1) AS customer_gen ",
        draw_from!()
    );
    for _ in 0..2 {
        let sql = if with_gens { WITH_GENS } else { PLAIN };
        let t = run(c, sql, &[w.customer.into(), w.name.into(), w.asset.into()])?;
        if t.is_empty() {
            ensure(c, w)?;
            continue;
        }
        let row = t.first();
        let gens = if with_gens { Some(Gens::read(&row)?) } else { None };
        let mut wallet = wallet_row(&row)?;
        let first = match row.opt::<bool>("current")?.unwrap_or(false) {
            true => first_lot(&row)?,
            false => {
                const AGAIN: &str = concat!(
                    "SELECT ",
                    first_lot_column!("$1"),
                    "FROM credyt.wallet_account w WHERE w.customer_id = $1 AND w.name = $2 AND w.asset = $3"
                );
                first_lot(&run(c, AGAIN, &[w.customer.into(), w.name.into(), w.asset.into()])?.first())?
            }
        };
        let lots: Vec<LiveLot> = first.into_iter().collect();
        freshen(c, w, &mut wallet)?;
        let read: Decimal = lots.iter().map(|l| l.view.remaining).sum();
        let lots = if !lots.is_empty() && read < amount + wallet.debt { live_lots(c, w)? } else { lots };
        return Ok(Drawable { wallet, lots, gens });
    }
    Err(CyError::internal("wallet account could not be locked"))
}

/// The catalog generations of the account and customer, and the available balance of
/// the customer's wallet account `name` in `asset` when one is named (0 for one never
/// used), without a lock: what balance() and a charge-free event read.
pub fn gens_and_available(
    c: &mut SpiClient<'_>,
    account: &str,
    customer: &str,
    name: &str,
    asset: Option<&str>,
) -> Result<(Gens, Option<Decimal>)> {
    let t = run(
        c,
        "SELECT (SELECT catalog_gen FROM credyt.account WHERE parent_id IS NULL AND environment = 'live') AS platform_gen, \
           (SELECT catalog_gen FROM credyt.account WHERE id = $1) AS account_gen, \
           (SELECT catalog_gen FROM credyt.customer WHERE id = $2) AS customer_gen, \
           w.available, w.fresh \
         FROM (SELECT 1) one LEFT JOIN (SELECT (w.live - w.debt - w.held)::text AS available, \
             (w.fresh_until IS NULL OR w.fresh_until > now()) AS fresh \
           FROM credyt.wallet_account w WHERE w.customer_id = $2 AND w.name = $4 AND w.asset = $3) w ON true",
        &[account.into(), customer.into(), asset.into(), name.into()],
    )?;
    let row = t.first();
    let gens = Gens::read(&row)?;
    let fresh = row.opt::<bool>("fresh")?.unwrap_or(true);
    let available = row.opt::<String>("available")?.map(|a| stored(&a)).transpose()?;
    let available = match (asset, fresh) {
        (None, _) => None,
        (Some(_), true) => Some(available.unwrap_or_default()),
        (Some(a), false) => Some(available_of(c, customer, name, a)?),
    };
    Ok((gens, available))
}

pub(super) fn read_locked(c: &mut SpiClient<'_>, w: &WalletRef) -> Result<Option<Wallet>> {
    let t = run(c, LOCK_WALLET, &[w.customer.into(), w.name.into(), w.asset.into()])?;
    if t.is_empty() {
        return Ok(None);
    }
    let mut wallet = wallet_row(&t.first())?;
    freshen(c, w, &mut wallet)?;
    Ok(Some(wallet))
}

/// A locked wallet read past its fresh_until: live, held and the next such moment,
/// summed from its lots and holds (its row gets them with the movement's write).
pub(super) fn freshen(c: &mut SpiClient<'_>, w: &WalletRef, wallet: &mut Wallet) -> Result<()> {
    if wallet.fresh {
        return Ok(());
    }
    let t = run(
        c,
        concat!(
            "SELECT ",
            live_sum!("$1"),
            "::text AS live, ",
            held_sum!("$1"),
            "::text AS held, ",
            next_change!("$1"),
            " AS fresh_until FROM credyt.wallet_account w WHERE w.customer_id = $1 AND w.name = $2 AND w.asset = $3"
        ),
        &[w.customer.into(), w.name.into(), w.asset.into()],
    )?;
    let row = t.first();
    wallet.live = row.amount("live")?;
    wallet.held = row.amount("held")?;
    wallet.fresh_until = row.opt::<TimestampWithTimeZone>("fresh_until")?.map(|t| t.into_inner());
    wallet.fresh = true;
    Ok(())
}

/// Locks the wallet account row unless another transaction holds it (then None): for
/// the clock, which comes back at the next tick rather than wait.
pub fn try_lock(c: &mut SpiClient<'_>, w: &WalletRef) -> Result<Option<Wallet>> {
    let t = run(
        c,
        concat!(
            "SELECT ",
            wallet_columns!(),
            "FROM ",
            wallet_source!(),
            "WHERE w.customer_id = $1 AND w.name = $2 AND w.asset = $3 FOR UPDATE OF w SKIP LOCKED"
        ),
        &[w.customer.into(), w.name.into(), w.asset.into()],
    )?;
    if t.is_empty() {
        return Ok(None);
    }
    let mut wallet = wallet_row(&t.first())?;
    freshen(c, w, &mut wallet)?;
    Ok(Some(wallet))
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
    // (VALUES, not ENSURE_WALLETS' unnest: Citus routes it to the customer's shard, where
    // an INSERT from a SELECT of no table would be copied in, in two phases)
    run(
        c,
        "INSERT INTO credyt.wallet_account (account_id, customer_id, name, asset) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (customer_id, name, asset) DO NOTHING",
        &[w.account.into(), w.customer.into(), w.name.into(), w.asset.into()],
    )?;
    Ok(())
}

/// Creates the wallet accounts (customer, name, asset) that do not exist yet, many at
/// once (ensure() creates one).
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
    let header = Header { id: txn.clone(), key: None, customer, payload: &payload, description, metadata: None };
    header.write(c, account, kind)?;
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
            live_lot!(),
            " ORDER BY ",
            burn_order!()
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

/// Decodes the column of available_columns!(): the available balance.
pub(super) fn available_row(row: &impl Row) -> Result<Decimal> {
    row.amount("available")
}

/// The balance push payload (SPEC §10).
pub fn balance_payload(w: &WalletRef, available: Decimal) -> String {
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

/// Available balance of one wallet account (0 for one never used): the row's figures
/// while fresh, else summed from its lots and holds.
pub fn available_of(c: &mut SpiClient<'_>, customer: &str, name: &str, asset: &str) -> Result<Decimal> {
    let t = run(
        c,
        concat!(
            "SELECT (w.live - w.debt - w.held)::text AS available, ",
            fresh!(),
            " AS fresh FROM credyt.wallet_account w WHERE w.customer_id = $1 AND w.name = $2 AND w.asset = $3"
        ),
        &[customer.into(), name.into(), asset.into()],
    )?;
    if t.is_empty() {
        return Ok(Decimal::ZERO);
    }
    let row = t.first();
    if row.req::<bool>("fresh")? {
        return available_row(&row);
    }
    let t = run(
        c,
        concat!(
            "SELECT ",
            available_columns!("$1"),
            "FROM credyt.wallet_account w WHERE w.customer_id = $1 AND w.name = $2 AND w.asset = $3"
        ),
        &[customer.into(), name.into(), asset.into()],
    )?;
    available_row(&t.first())
}
