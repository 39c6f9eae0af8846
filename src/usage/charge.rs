//! The charge of one event in two statements: the first locks the wallet and reads it
//! with the lots the charge draws and the catalog generations; the second claims the
//! event id and, only if the claim succeeds, writes the event, its entries, the lots
//! and the wallet (writable CTEs). The event row is the ledger transaction's header:
//! its txn_id names the entries. Lookups come from the backend's cache (Cached), and
//! the generations the first statement reads say whether they may be used.
//!
//! Holds, events charging several assets and wallets with a reserve pool to draw go
//! the general way (record::record), which writes the same rows in more statements.

use super::*;

/// What the fast path made of an event.
pub(super) enum Fast {
    Done(Outcome),
    /// a cached lookup was stale (and is forgotten): prepare the event again
    Stale(Event),
    /// the general path's case
    General(Event),
}

/// Records one event: the fast path, with the general one for its exceptions.
pub fn record_one(c: &mut SpiClient<'_>, mut ev: Event) -> Result<Outcome> {
    let now = pgrx::datetime::now().into_inner();
    // What the usage rules counted for the event (once, whatever the retries).
    let mut applied: Option<Applied> = None;
    // Each retry follows a catalog change that committed during this call.
    for _ in 0..3 {
        let (account, scope_gen) = crate::scope::scope_cached(c)?;
        let mut l = Cached::new(&account);
        let mut p = prepare(c, &mut l, ev, now)?;
        if applied.is_none() {
            let rules = l.rules(c, &p.customer, &p.ev.event_type)?;
            let a = apply(c, &account, &rules, &p, now)?;
            if a.limited() {
                // (refused under cached rules: refused only if they are the rules now)
                let now_rules = Direct { account: &account }.rules(c, &p.customer, &p.ev.event_type)?;
                if *now_rules == *rules {
                    return refuse(c, &account, p, &a);
                }
                forget_rules(&p.customer);
                ev = p.ev;
                continue;
            }
            applied = Some(a);
        }
        let free = applied.as_ref().map_or(Decimal::ZERO, |a| a.free);
        if free > Decimal::ZERO {
            p = prepare_after(c, &mut l, p.ev, now, free)?;
        }
        ev = match fast(c, &account, p, &l, scope_gen)? {
            Fast::Done(o) if o.duplicate => return undone(c, &mut applied).map(|_| o),
            Fast::Done(o) => return Ok(o),
            // What the rules counted under stale lookups is counted again, afresh.
            Fast::Stale(back) => {
                undone(c, &mut applied)?;
                back
            }
            // (the general path reads everything afresh, the rules too)
            Fast::General(back) => {
                undone(c, &mut applied)?;
                return record(c, &account, back);
            }
        };
    }
    undone(c, &mut applied)?;
    let account = scope(c)?;
    record(c, &account, ev)
}

/// Gives back what the rules counted for an event (a replay, or counted again).
fn undone(c: &mut SpiClient<'_>, applied: &mut Option<Applied>) -> Result<()> {
    match applied.take() {
        Some(a) => a.undo(c),
        None => Ok(()),
    }
}

fn fast(c: &mut SpiClient<'_>, account: &str, p: Prepared, l: &Cached, scope_gen: i64) -> Result<Fast> {
    let mut charged = p.totals.iter().filter(|(_, t)| !t.is_zero());
    let one = charged.next().map(|(a, t)| (a.clone(), *t));
    if p.ev.hold_id.is_some() || charged.next().is_some() {
        return Ok(Fast::General(p.ev));
    }
    let Some((asset, total)) = one.filter(|_| p.status == UsageStatus::Charged) else {
        return uncharged(c, account, p, l, scope_gen);
    };
    let w = WalletRef { account, customer: &p.customer, name: "default", asset: &asset };
    let d = wallet::lock_to_draw(c, &w, total, true)?;
    let gens = d.gens.ok_or_else(|| CyError::internal("no generations read"))?;
    if !l.fresh(&p.customer, &gens, scope_gen) {
        return Ok(Fast::Stale(p.ev));
    }
    let (mut state, mut lots) = (d.wallet, d.lots);
    let before = state.available();
    // Short of the wallet's own lots: a reserve pool, if any, is drawn the general way.
    if (state.live - state.debt).max(Decimal::ZERO) < total && wallet::reserve_pool(c, &w)?.is_some() {
        return Ok(Fast::General(p.ev));
    }
    let mut book = wallet::Book::new(&w, p.txn_id.clone());
    let debit = Debit { amount: total, draw: DrawFrom::AnyLot, system_account: "revenue", kind: "usage" };
    let after = wallet::plan_debit(&mut state, &mut lots, &mut book, &debit, None)?;
    let hit = state.cross_threshold(after);
    if !write(c, account, &p, Some((&state, book, after)))? {
        return replayed(c, account, &p, before);
    }
    if let Some(t) = hit {
        wallet::threshold_hit(c, &w, after, t)?;
    }
    wallet::request_topup(c, &w, &mut state, after)?;
    let available = (p.asset.as_deref() == Some(asset.as_str())).then_some(after);
    Ok(Fast::Done(outcome(p, available)))
}

/// An event that charges nothing (no price matched, or every fee is zero): the
/// generations and the balance in one statement, then the claim.
fn uncharged(c: &mut SpiClient<'_>, account: &str, p: Prepared, l: &Cached, scope_gen: i64) -> Result<Fast> {
    let (gens, available) = wallet::gens_and_available(c, account, &p.customer, "default", p.asset.as_deref())?;
    if !l.fresh(&p.customer, &gens, scope_gen) {
        return Ok(Fast::Stale(p.ev));
    }
    if !write(c, account, &p, None)? {
        return replayed(c, account, &p, available.unwrap_or_default());
    }
    Ok(Fast::Done(outcome(p, available)))
}

/// The event id was taken: the original's result, with the balance now.
fn replayed(c: &mut SpiClient<'_>, account: &str, p: &Prepared, available: Decimal) -> Result<Fast> {
    let mut o = replay(c, account, &p.customer, &p.ev)?;
    if o.asset.is_some() {
        o.available = Some(available);
    }
    Ok(Fast::Done(o))
}

/// The claim of an event that charges nothing.
const EVENT: &str = concat!(
    usage_event_insert!(),
    "VALUES ($1, $2, $3, $4, $5, coalesce($6, now()), $6 IS NOT NULL, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, \
       $17, $18, $19, $20, $21) \
     ON CONFLICT DO NOTHING RETURNING 1"
);
/// The claim of a charged event and, conditioned on it, its writes. ($38: the lot drawn
/// when it is only one, see lot_bounds!; CHARGE_MANY draws several.)
macro_rules! charge_sql {
    ($bounds:expr) => {
        concat!(
    "WITH ev AS (",
    usage_event_insert!(),
    "VALUES ($1, $2, $3, $4, $5, coalesce($6, now()), $6 IS NOT NULL, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, \
       $17, $18, $19, $20, $21) \
     ON CONFLICT DO NOTHING RETURNING 1), \
     drawn AS ( \
       UPDATE credyt.lot l SET remaining = l.remaining - ($23::numeric[])[array_position($22::text[], l.id)], \
         spent = l.remaining = ($23::numeric[])[array_position($22::text[], l.id)] \
       WHERE l.customer_id = $3 AND l.id = ANY($22::text[]) ",
    $bounds,
    " AND EXISTS (SELECT FROM ev) RETURNING 1), \
     lines AS ( \
       INSERT INTO credyt.entry (account_id, txn_id, customer_id, system, ledger_name, asset, amount, lot_id, kind) \
       SELECT $1, $21, $3, u.system, u.ledger_name, $37, u.amount, u.lot_id, u.kind \
       FROM unnest($24::bool[], $25::text[], $26::numeric[], $27::text[], $28::text[]) \
         AS u(system, ledger_name, amount, lot_id, kind) WHERE EXISTS (SELECT FROM ev) RETURNING 1), \
     saved AS ( \
       UPDATE credyt.wallet_account w SET balance = $29, debt = $30, threshold_armed = $31, live = $32, held = $33, \
         fresh_until = $34, updated_at = now() \
       WHERE w.customer_id = $3 AND w.name = 'default' AND w.asset = $37 AND EXISTS (SELECT FROM ev) RETURNING 1) \
     SELECT claimed, (SELECT count(*) FROM drawn) AS drawn, (SELECT count(*) FROM lines) AS lines, \
            (SELECT count(*) FROM saved) AS saved, \
            CASE WHEN $35::text IS NOT NULL AND claimed > 0 THEN pg_notify($36, $35) END IS NULL AS notified \
     FROM (SELECT count(*) AS claimed FROM ev) e"
)
    };
}
const CHARGE: &str = charge_sql!(crate::lot_bounds!("$38"));
const CHARGE_MANY: &str = charge_sql!("AND $38::text IS NULL");

/// The second statement: claims the event id and, when the claim succeeds, writes the
/// event, and for a charge its lots, entries and wallet (with the balance push). False
/// when the id was already taken (then nothing is written). On Citus the claim is a
/// statement of its own, followed by wallet::write's.
fn write(
    c: &mut SpiClient<'_>,
    account: &str,
    p: &Prepared,
    charge: Option<(&wallet::Wallet, wallet::Book, Decimal)>,
) -> Result<bool> {
    let mut args = event_args(account, p);
    let Some((state, book, after)) = charge else {
        return Ok(run(c, EVENT, &args)?.len() == 1);
    };
    if crate::distributed::active() {
        // (on Citus no INSERT runs inside a CTE: see wallet::write)
        if run(c, EVENT, &args)?.len() != 1 {
            return Ok(false);
        }
        wallet::write(c, state, book, Some(after))?;
        return Ok(true);
    }
    let w = book.wallet_ref;
    let payload = state.push.as_ref().map(|_| wallet::balance_payload(w, after));
    let wallet::BookColumns { take_ids, takes, legs } = book.columns();
    let expected = (take_ids.len() as i64, legs.amount.len() as i64);
    let (sql, one) = wallet::one_lot(&take_ids, CHARGE, CHARGE_MANY);
    args.extend([
        take_ids.into(),
        takes.into(),
        legs.system.into(),
        legs.name.into(),
        legs.amount.into(),
        legs.lot.into(),
        legs.kind.into(),
        to_numeric(state.balance).into(),
        to_numeric(state.debt).into(),
        state.armed.into(),
        to_numeric(state.live).into(),
        to_numeric(state.held).into(),
        wallet::at_time(state.fresh_until)?.into(),
        payload.into(),
        state.push.as_deref().into(),
        w.asset.to_string().into(),
        one.into(),
    ]);
    let row = run(c, sql, &args)?.first();
    if row.req::<i64>("claimed")? == 0 {
        return Ok(false);
    }
    let counts = (row.req::<i64>("drawn")?, row.req::<i64>("lines")?, row.req::<i64>("saved")?);
    if counts != (expected.0, expected.1, 1) {
        return Err(CyError::internal(format!(
            "usage write touched {counts:?} rows, expected ({}, {}, 1)",
            expected.0, expected.1
        )));
    }
    Ok(true)
}

/// The event's data as a statement argument: the caller's own jsonb when it was one.
pub(super) fn data_arg(ev: &Event) -> pgrx::datum::DatumWithOid<'static> {
    match ev.data_datum {
        // SAFETY: the datum is the jsonb argument of the SQL call this event is part of,
        // alive until the call returns; the statement runs within it.
        Some(d) => unsafe { pgrx::datum::DatumWithOid::new(d, pgrx::pg_sys::JSONBOID) },
        None => JsonB(ev.data.clone()).into(),
    }
}

/// The event's columns, $1 to $21.
fn event_args(account: &str, p: &Prepared) -> Vec<pgrx::datum::DatumWithOid<'static>> {
    vec![
        account.to_string().into(),
        p.ev.event_id.clone().into(),
        p.customer.clone().into(),
        p.ev.event_type.clone().into(),
        data_arg(&p.ev),
        p.ev.occurred_at.into(),
        p.ev.subject.clone().into(),
        p.ev.description.clone().into(),
        p.model.clone().into(),
        p.input_tokens.into(),
        p.output_tokens.into(),
        p.status.as_str().to_string().into(),
        JsonB(p.fees.clone()).into(),
        to_numeric(p.charged).into(),
        p.asset.clone().into(),
        p.revenue.map(to_numeric).into(),
        p.cost.map(to_numeric).into(),
        p.cost_currency.clone().into(),
        p.ev.costs.clone().map(JsonB).into(),
        p.ev.hold_id.clone().into(),
        (p.status == UsageStatus::Charged).then(|| p.txn_id.clone()).into(),
    ]
}
