//! Movements planned in memory: credits repay debt first, debits draw lots in
//! burn-down order (core::burndown) and honour the overdraft limit.

use super::*;

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
        wallet.live -= take;
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
    pub purpose: Purpose,
    pub priority: i32,
    pub effective_at: Option<TimestampWithTimeZone>,
    pub expires_at: Option<TimestampWithTimeZone>,
    /// expire | rollover | reserve, and the rollover cap
    pub on_expiry: ExpiryPolicy,
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
            cr.purpose.as_str().into(),
            cr.priority.into(),
            to_numeric(cr.amount).into(),
            cr.effective_at.into(),
            cr.expires_at.into(),
            cr.source.into(),
            txn_id.into(),
            cr.on_expiry.as_str().into(),
            cr.rollover_cap.map(to_numeric).into(),
            cr.grant_id.into(),
        ],
    )?;
    let mut book = Book::new(w, txn_id.to_string());
    book.customer_leg(cr.amount, Some(lot_id.clone()), cr.kind);
    book.system_leg(cr.system_account, -cr.amount, cr.kind);
    let micros = |t: Option<TimestampWithTimeZone>| t.map(|t| t.into_inner());
    wallet.add_lot(cr.amount, micros(cr.effective_at), micros(cr.expires_at), pgrx::datetime::now().into_inner());
    if wallet.debt > Decimal::ZERO {
        let mut lots = live_lots(c, w)?; // includes the new lot when it is effective now
        settle_debt(&mut lots, &mut wallet, &mut book);
    }
    wallet.balance = balance;
    // Available after the credit (settling debt does not change it): it re-arms the
    // threshold and goes out on credyt_balance, with the write.
    let after = wallet.available();
    wallet.rearm(after);
    write(c, &wallet, book, Some(after))?;
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
    let drawable = lock_to_draw(c, w, d.amount, false)?;
    debit_locked(c, w, txn_id, drawable, d)
}

/// debit() on a wallet already locked to draw from (lock_to_draw).
pub fn debit_locked(c: &mut SpiClient<'_>, w: &WalletRef, txn_id: &str, locked: Drawable, d: Debit) -> Result<Decimal> {
    let Drawable { mut wallet, mut lots, .. } = locked;
    if d.draw == DrawFrom::PaidOnly {
        // (the lots read with the lock are the first in burn-down order, of any purpose)
        lots = live_lots(c, w)?;
    }
    let mut book = Book::new(w, txn_id.to_string());
    // The reserve pool is read (and locked) only when the wallet's own lots, after
    // repaying debt, cannot cover the amount.
    let mut pool = if d.draw == DrawFrom::AnyLot && (wallet.live - wallet.debt).max(Decimal::ZERO) < d.amount {
        reserve_pool(c, w)?
    } else {
        None
    };
    let after = plan_debit(&mut wallet, &mut lots, &mut book, &d, pool.as_mut())?;
    let hit = wallet.cross_threshold(after);
    write(c, &wallet, book, Some(after))?;
    if let Some(p) = &pool {
        save_pool(c, w, &p.wallet)?;
        let r = WalletRef { account: w.account, customer: w.customer, name: RESERVE, asset: w.asset };
        notify_balance(c, &p.wallet, &r, p.wallet.available())?;
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
    let pool_available = pool.as_ref().map_or(Decimal::ZERO, |p| p.wallet.available().max(Decimal::ZERO));
    let own_before = wallet.available();
    let before = own_before + pool_available;

    let candidates: Vec<usize> =
        (0..lots.len()).filter(|&i| d.draw == DrawFrom::AnyLot || lots[i].purpose == Purpose::Paid).collect();
    let views: Vec<LotView> = candidates.iter().map(|&i| lots[i].view.clone()).collect();
    let alloc = allocate(&views, d.amount);
    let after = before - d.amount;
    check_funds(w, wallet, d, alloc.shortfall, before, after)?;
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
        wallet.live -= take;
        let id = lot.id.clone();
        book.take(&id, take);
        book.customer_leg(-take, Some(id), d.kind);
    }
    if let Some(p) = pool {
        for (j, take) in pool_takes {
            let lot = &mut p.lots[j];
            lot.view.remaining -= take;
            p.wallet.live -= take;
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

/// The guards of a debit: a refund draws paid lots only and never goes into debt; any
/// debit stays within the overdraft limit.
fn check_funds(
    w: &WalletRef,
    wallet: &Wallet,
    d: &Debit,
    shortfall: Decimal,
    before: Decimal,
    after: Decimal,
) -> Result<()> {
    if shortfall > Decimal::ZERO && d.draw == DrawFrom::PaidOnly {
        let refundable = d.amount - shortfall;
        return Err(CyError::insufficient(format!(
            "refund of {} {} exceeds the refundable paid balance of {}:{}",
            d.amount, w.asset, w.name, w.asset
        ))
        .detail(format!("refundable paid balance: {refundable}"))
        .hint("only paid lots (top-ups) can be refunded; promotional credit cannot"));
    }
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
    Ok(())
}

/// What one transaction drew from one place of a wallet (restore()).
struct Part {
    /// the lot (None: the debt it created)
    lot: Option<String>,
    /// drawn from this wallet account (false: from its reserve pool)
    own: bool,
    drawn: Decimal,
    purpose: Purpose,
    /// the lot is still effective and unexpired
    live: bool,
    expires_at: Option<i64>,
}

/// The draws of transaction `original` (its legs of kind `drawn_as`) on the wallet
/// account and its reserve pool, per lot.
fn drawn_by(
    c: &mut SpiClient<'_>,
    w: &WalletRef,
    original: &str,
    drawn_as: &str,
    since: TimestampWithTimeZone,
) -> Result<Vec<Part>> {
    let t = run(
        c,
        "SELECT e.ledger_name = $2 AS own, e.lot_id, (-sum(e.amount))::text AS drawn, l.purpose, l.expires_at, \
                coalesce(l.effective_at <= now() AND (l.expires_at IS NULL OR l.expires_at > now()), false) AS live \
         FROM credyt.entry e LEFT JOIN credyt.lot l ON l.customer_id = e.customer_id AND l.id = e.lot_id \
         WHERE e.customer_id = $1 AND e.ledger_name IN ($2, 'reserve') AND e.asset = $3 AND NOT e.system \
           AND e.created_at >= $5 AND e.txn_id = $4 AND e.kind = $6 \
         GROUP BY e.ledger_name, e.lot_id, l.purpose, l.expires_at, l.effective_at ORDER BY e.lot_id",
        &[w.customer.into(), w.name.into(), w.asset.into(), original.into(), since.into(), drawn_as.into()],
    )?;
    let mut parts = Vec::new();
    for row in t {
        let drawn = row.amount("drawn")?;
        if drawn <= Decimal::ZERO {
            continue;
        }
        parts.push(Part {
            lot: row.opt::<String>("lot_id")?,
            own: row.req::<bool>("own")?,
            drawn,
            purpose: row.opt::<String>("purpose")?.and_then(|p| Purpose::parse(&p)).unwrap_or(Purpose::Paid),
            live: row.req::<bool>("live")?,
            expires_at: row.opt::<TimestampWithTimeZone>("expires_at")?.map(|t| t.into_inner()),
        });
    }
    Ok(parts)
}

/// Gives back to a wallet what transaction `original` drew from it (a reversed
/// outcome), under transaction `txn_id`: each lot it drew that is still live gets its
/// draw back, the debt it created is forgiven, and what cannot go back where it came
/// from (a lot that has expired since, the reserve pool, debt already repaid) comes
/// back as a new lot of the same purpose without expiry (repaid debt: `paid`). Returns
/// the amount given back. `since`: when `original` was written (its entries are found
/// through the wallet's history index from then). Only the draw's own legs (kind
/// `drawn_as`) go back: debt the draw repaid on its way stays repaid.
pub fn restore(
    c: &mut SpiClient<'_>,
    w: &WalletRef,
    txn_id: &str,
    (original, drawn_as): (&str, &str),
    since: TimestampWithTimeZone,
    kind: &'static str,
) -> Result<Decimal> {
    let mut wallet = lock(c, w)?;
    let mut book = Book::new(w, txn_id.to_string());
    let mut new_lots: Vec<(Purpose, Decimal)> = Vec::new();
    let mut back = Decimal::ZERO;
    for part in drawn_by(c, w, original, drawn_as, since)? {
        back += part.drawn;
        match (part.lot, part.own, part.live) {
            (Some(id), true, true) => {
                book.take(&id, -part.drawn);
                book.customer_leg(part.drawn, Some(id), kind);
                wallet.live += part.drawn;
                wallet.fresh_before(part.expires_at);
            }
            (None, true, _) => {
                // the debt it created: forgiven while it is still owed, a paid lot once repaid
                let forgiven = part.drawn.min(wallet.debt);
                if forgiven > Decimal::ZERO {
                    book.customer_leg(forgiven, None, kind);
                    wallet.debt -= forgiven;
                }
                if part.drawn > forgiven {
                    new_lots.push((Purpose::Paid, part.drawn - forgiven));
                }
            }
            _ => new_lots.push((part.purpose, part.drawn)),
        }
    }
    let in_book: Decimal = book.legs.iter().map(|l| l.amount).sum();
    if in_book > Decimal::ZERO {
        book.system_leg("revenue", -in_book, kind);
        wallet.balance += in_book;
        let after = wallet.available();
        wallet.rearm(after);
        write(c, &wallet, book, Some(after))?;
    }
    for (purpose, amount) in new_lots {
        let source = format!("{kind}:{original}");
        let lot = Credit {
            amount,
            purpose,
            priority: purpose.default_priority(),
            effective_at: None,
            expires_at: None,
            on_expiry: ExpiryPolicy::Expire,
            rollover_cap: None,
            grant_id: None,
            source: &source,
            system_account: "revenue",
            kind,
        };
        credit(c, w, txn_id, lot)?;
    }
    Ok(back)
}
