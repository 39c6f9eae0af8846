//! Preparing an event (fees, tokens, cost; no writes), claiming its id, charging.

use super::*;

// ---------------------------------------------------------------------------------
// Preparing, claiming, charging

/// An event with everything computed that it will write.
pub(super) struct Prepared {
    pub(super) ev: Event,
    pub(super) customer: String,
    pub(super) model: Option<String>,
    pub(super) input_tokens: Option<i64>,
    pub(super) output_tokens: Option<i64>,
    pub(super) status: UsageStatus,
    pub(super) fees: Value,
    /// fee total per asset
    pub(super) totals: BTreeMap<String, Decimal>,
    pub(super) charged: Decimal,
    pub(super) asset: Option<String>,
    pub(super) cost: Option<Decimal>,
    pub(super) cost_currency: Option<String>,
    pub(super) revenue: Option<Decimal>,
    /// the ledger transaction of its charge: the entries' txn_id, kept on the event row
    pub(super) txn_id: String,
}

/// Computes an event's fees, token detail and cost; writes nothing.
/// `now` is the transaction's timestamp (Postgres microseconds), used when the event
/// gives no occurred_at.
pub(super) fn prepare(c: &mut SpiClient<'_>, l: &mut impl Lookups, ev: Event, now: i64) -> Result<Prepared> {
    prepare_after(c, l, ev, now, Decimal::ZERO)
}

/// prepare() once a free tier has covered `free` of the event (rules::apply).
pub(super) fn prepare_after(
    c: &mut SpiClient<'_>,
    l: &mut impl Lookups,
    ev: Event,
    now: i64,
    free: Decimal,
) -> Result<Prepared> {
    let customer = l.customer(c, &ev.customer)?;
    let (model, input_tokens, output_tokens) = tokens(&ev.data)?;
    let at = ev.occurred_at.map(|t| t.into_inner()).unwrap_or(now);
    let (fees, totals) = fees_of(c, l, &customer, &ev, at, free)?;
    let status = if fees.is_empty() {
        UsageStatus::NoMatch
    } else if totals.values().all(|t| t.is_zero()) {
        UsageStatus::Free
    } else {
        UsageStatus::Charged
    };
    let (charged, asset) = match totals.len() {
        1 => totals.iter().next().map(|(a, t)| (*t, Some(a.clone()))).unwrap_or((Decimal::ZERO, None)),
        _ => (Decimal::ZERO, None),
    };
    let (cost, cost_currency) = match (&ev.costs, &model) {
        (Some(costs), _) => given_costs(costs)?,
        (None, Some(m)) => model_cost(c, l, &ev, m, input_tokens, output_tokens)?,
        (None, None) => (None, None),
    };
    let revenue = match (&asset, &cost_currency) {
        (Some(a), Some(cur)) if a == cur => Some(charged),
        (Some(a), Some(cur)) => l.rate(c, a, cur, at)?.map(|r| round_fee(charged * r)),
        _ => None,
    };
    Ok(Prepared {
        ev,
        customer,
        model,
        input_tokens,
        output_tokens,
        status,
        fees: Value::Array(fees),
        totals,
        charged,
        asset,
        cost,
        cost_currency,
        revenue,
        txn_id: crate::ids::new_id("txn")?,
    })
}

/// The fees of every price of the customer's subscriptions that were active when the
/// event occurred (`at`), and their totals per asset.
fn fees_of(
    c: &mut SpiClient<'_>,
    l: &mut impl Lookups,
    customer: &str,
    ev: &Event,
    at: i64,
    free: Decimal,
) -> Result<(Vec<Value>, BTreeMap<String, Decimal>)> {
    let mut fees = Vec::new();
    let mut totals: BTreeMap<String, Decimal> = BTreeMap::new();
    for sp in l.prices(c, customer, &ev.event_type)? {
        if sp.starts_at > at || sp.ends_at.is_some_and(|e| e <= at) {
            continue; // the subscription was not active when the event occurred
        }
        let (product, version, position) = &sp.key;
        let computed = usage_fees_after(&sp.price, &ev.data, free).map_err(|FeeError::Volume { field, problem }| {
            CyError::invalid(format!("data.{field} {problem}"))
                .detail(format!("required by price {position} of product {product} version {version}"))
        })?;
        for f in computed {
            *totals.entry(f.asset.clone()).or_default() += f.amount;
            let mut fee = json!({"product_id": product, "version": version, "price": position, "asset": f.asset, "amount": num(f.amount)});
            if let Some(v) = f.volume {
                fee["volume"] = num(v);
            }
            fees.push(fee);
        }
    }
    Ok((fees, totals))
}

/// The platform's cost of a model call, from the model's costs (of the vendor the
/// event names, if it names one): (cost, currency), or none when the model has none.
fn model_cost(
    c: &mut SpiClient<'_>,
    l: &mut impl Lookups,
    ev: &Event,
    model: &str,
    input_tokens: Option<i64>,
    output_tokens: Option<i64>,
) -> Result<(Option<Decimal>, Option<String>)> {
    let vendor = ev.data.get("vendor").or_else(|| ev.data.get("provider")).and_then(Value::as_str);
    let costs = l.model_costs(c, model)?;
    Ok(match costs.iter().find(|mc| vendor.is_none_or(|v| v == mc.vendor)) {
        Some(mc) => {
            let cost = token_cost(input_tokens.unwrap_or(0), output_tokens.unwrap_or(0), mc.input, mc.output);
            (Some(cost), Some(mc.currency.clone()))
        }
        None => (None, None),
    })
}

/// Claims the event ids of `events` in one statement. Returns, per event, whether it
/// was newly recorded; an id already taken (before, or earlier in this batch) is not.
fn claim(c: &mut SpiClient<'_>, account: &str, events: &[Prepared]) -> Result<Vec<bool>> {
    let mut first = std::collections::HashSet::new();
    let mut fresh: Vec<&Prepared> = events.iter().filter(|p| first.insert(p.ev.event_id.as_str())).collect();
    // Claim in event-id order: concurrent batches sharing ids then wait on each other
    // in one order instead of deadlocking (wallets are locked after all claims, also
    // in one order).
    fresh.sort_by(|a, b| a.ev.event_id.cmp(&b.ev.event_id));
    macro_rules! col {
        ($f:expr) => {
            fresh.iter().map($f).collect::<Vec<_>>()
        };
    }
    let t = run(
        c,
        // (in a CTE: Citus runs an INSERT … SELECT from an array through the coordinator,
        // and counts the rows it sent, not those it returned, which SPI refuses)
        concat!(
            "WITH claimed AS (",
            usage_event_insert!(),
            "SELECT $1, u.event_id, u.customer_id, u.event_type, u.data, coalesce(u.occurred_at, now()), u.occurred_at IS NOT NULL, \
           u.subject, u.description, u.model, u.input_tokens, u.output_tokens, u.status, u.fees, u.charged, u.asset, \
           u.revenue, u.cost, u.cost_currency, u.costs, u.hold_id, u.txn_id \
         FROM unnest($2::text[], $3::text[], $4::text[], $5::jsonb[], $6::timestamptz[], $7::text[], $8::text[], $9::text[], \
                     $10::int8[], $11::int8[], $12::text[], $13::jsonb[], $14::numeric[], $15::text[], $16::numeric[], \
                     $17::numeric[], $18::text[], $19::jsonb[], $20::text[], $21::text[]) \
           AS u(event_id, customer_id, event_type, data, occurred_at, subject, description, model, input_tokens, \
                output_tokens, status, fees, charged, asset, revenue, cost, cost_currency, costs, hold_id, txn_id) \
         ON CONFLICT DO NOTHING RETURNING event_id) SELECT event_id FROM claimed"
        ),
        &[
            account.into(),
            col!(|p| p.ev.event_id.clone()).into(),
            col!(|p| p.customer.clone()).into(),
            col!(|p| p.ev.event_type.clone()).into(),
            col!(|p| JsonB(p.ev.data.clone())).into(),
            col!(|p| p.ev.occurred_at).into(),
            col!(|p| p.ev.subject.clone()).into(),
            col!(|p| p.ev.description.clone()).into(),
            col!(|p| p.model.clone()).into(),
            col!(|p| p.input_tokens).into(),
            col!(|p| p.output_tokens).into(),
            col!(|p| p.status.as_str().to_string()).into(),
            col!(|p| JsonB(p.fees.clone())).into(),
            col!(|p| to_numeric(p.charged)).into(),
            col!(|p| p.asset.clone()).into(),
            col!(|p| p.revenue.map(to_numeric)).into(),
            col!(|p| p.cost.map(to_numeric)).into(),
            col!(|p| p.cost_currency.clone()).into(),
            col!(|p| p.ev.costs.clone().map(JsonB)).into(),
            col!(|p| p.ev.hold_id.clone()).into(),
            col!(|p| (p.status == UsageStatus::Charged).then(|| p.txn_id.clone())).into(),
        ],
    )?;
    let mut inserted = std::collections::HashSet::new();
    for row in t {
        inserted.insert(row.req::<String>("event_id")?);
    }
    // Only an id's first occurrence can have been the one inserted.
    Ok(events.iter().map(|p| inserted.remove(&p.ev.event_id)).collect())
}

pub(super) fn outcome(p: Prepared, available: Option<Decimal>) -> Outcome {
    Outcome {
        event_id: p.ev.event_id,
        duplicate: false,
        status: p.status,
        fees: p.fees,
        charged: p.charged,
        asset: p.asset,
        available,
    }
}

/// Records one event for `account` the general way (charge::record_one takes the
/// fast one where it can). Everything is computed before the first write; the event
/// row is the header of its charge's ledger transaction.
pub fn record(c: &mut SpiClient<'_>, account: &str, ev: Event) -> Result<Outcome> {
    let now = pgrx::datetime::now().into_inner();
    let mut l = Direct { account };
    let mut p = prepare(c, &mut l, ev, now)?;
    let rules = l.rules(c, &p.customer, &p.ev.event_type)?;
    let applied = apply(c, account, &rules, &p, now)?;
    if applied.limited() {
        return refuse(c, account, p, &applied);
    }
    if applied.free > Decimal::ZERO {
        p = prepare_after(c, &mut l, p.ev, now, applied.free)?;
    }
    let o = record_prepared(c, account, p)?;
    if o.duplicate {
        // a replay counts nothing
        applied.undo(c)?;
    }
    Ok(o)
}

/// The general path's writes for a prepared event: claim, hold, charge.
fn record_prepared(c: &mut SpiClient<'_>, account: &str, p: Prepared) -> Result<Outcome> {
    if !claim(c, account, std::slice::from_ref(&p))?[0] {
        let mut o = replay(c, account, &p.customer, &p.ev)?;
        if let Some(a) = &o.asset {
            o.available = Some(wallet::available_of(c, &p.customer, "default", a)?);
        }
        return Ok(o);
    }
    // Capture the hold: it stops counting before the charge is checked against the
    // limit, so a charge up to the held amount always fits.
    if let Some(reference) = &p.ev.hold_id {
        let hold = holds::find(c, account, reference)?;
        if hold.customer != p.customer {
            return Err(CyError::invalid(format!("hold {reference} belongs to another customer")));
        }
        holds::require_open(&hold, reference)?;
        let captured = p.totals.get(&hold.asset).copied().unwrap_or_default();
        holds::close(c, &hold, holds::HoldStatus::Captured, Some(captured), Some(&p.ev.event_id))?;
    }
    let mut available = None;
    if p.status == UsageStatus::Charged {
        // Assets in sorted order: events charging several assets lock them in one order.
        for (a, total) in &p.totals {
            if total.is_zero() {
                continue;
            }
            let w = WalletRef { account, customer: &p.customer, name: "default", asset: a };
            let after = wallet::debit(
                c,
                &w,
                &p.txn_id,
                Debit { amount: *total, draw: DrawFrom::AnyLot, system_account: "revenue", kind: "usage" },
            )?;
            if p.asset.as_deref() == Some(a.as_str()) {
                available = Some(after);
            }
        }
    } else if let Some(a) = &p.asset {
        available = Some(wallet::available_of(c, &p.customer, "default", a)?);
    }
    Ok(outcome(p, available))
}

/// Records a batch: reads in a few statements, plans every charge in memory on the
/// locked wallets, and writes lots, entries, transactions and wallets in one statement
/// each. Events that name a hold take the one-event path.
/// record_usage(events). `index`: each event's place in the call (for errors).
pub fn record_batch(c: &mut SpiClient<'_>, account: &str, events: Vec<Event>, index: &[usize]) -> Result<Vec<Outcome>> {
    let at = |i: usize| at(index[i]);
    let now = pgrx::datetime::now().into_inner();
    let mut pre = Preloaded::load(c, account, &events)?;
    if needs_single_path(c, account, &pre, &events)? {
        return events.into_iter().enumerate().map(|(i, ev)| record(c, account, ev).map_err(at(i))).collect();
    }
    let mut prepared = Vec::with_capacity(events.len());
    for (i, ev) in events.into_iter().enumerate() {
        prepared.push(prepare(c, &mut pre, ev, now).map_err(at(i))?);
    }
    let fresh = claim(c, account, &prepared)?;
    let mut plan = BatchPlan {
        account,
        state: wallet::lock_many(c, account, &charged_wallets(&prepared, &fresh))?,
        ..Default::default()
    };
    let mut out = Vec::with_capacity(prepared.len());
    for (i, (p, fresh)) in prepared.into_iter().zip(fresh).enumerate() {
        if !fresh {
            let mut o = replay(c, account, &p.customer, &p.ev).map_err(at(i))?;
            if let Some(a) = &o.asset {
                o.available = Some(plan.available_now(c, &p.customer, a)?);
            }
            out.push(o);
            continue;
        }
        let available = match (&p.status, &p.asset) {
            (UsageStatus::Charged, _) => plan.charge(&p).map_err(at(i))?,
            (_, Some(a)) => Some(plan.available_now(c, &p.customer, a)?),
            (_, None) => None,
        };
        out.push(outcome(p, available));
    }
    plan.write(c)?;
    Ok(out)
}

/// record_usage(events) on Citus: the events grouped by the shard of their customer,
/// each group a batch whose statements run on that shard's worker, in shard order (so
/// that concurrent batches claim and lock in one order); the outcomes in the events'
/// order. The call stays one transaction (Citus commits the workers together).
pub fn record_sharded(c: &mut SpiClient<'_>, account: &str, events: Vec<Event>) -> Result<Vec<Outcome>> {
    let refs: Vec<String> = events.iter().map(|e| e.customer.clone()).collect();
    let t = run_once(
        c,
        "SELECT r.i, get_shard_id_for_distribution_column('credyt.customer', coalesce(k.customer_id, r.ref)) AS shard \
         FROM unnest($2::text[]) WITH ORDINALITY r(ref, i) \
         LEFT JOIN credyt.customer_ref k ON k.account_id = $1 AND k.ref = r.ref",
        &[account.into(), refs.into()],
    )?;
    let mut shard_of = vec![0i64; events.len()];
    for row in t {
        shard_of[row.req::<i64>("i")? as usize - 1] = row.req::<i64>("shard")?;
    }
    let mut groups: std::collections::BTreeMap<i64, (Vec<usize>, Vec<Event>)> = Default::default();
    for (i, ev) in events.into_iter().enumerate() {
        let g = groups.entry(shard_of[i]).or_default();
        g.0.push(i);
        g.1.push(ev);
    }
    let mut out: Vec<Option<Outcome>> = (0..shard_of.len()).map(|_| None).collect();
    for (_, (index, evs)) in groups {
        for (i, o) in index.iter().zip(record_batch(c, account, evs, &index)?) {
            out[*i] = Some(o);
        }
    }
    out.into_iter().map(|o| o.ok_or_else(|| CyError::internal("an event of the batch has no outcome"))).collect()
}

/// Prefixes an error with the position of the event it is about.
fn at(i: usize) -> impl Fn(CyError) -> CyError {
    move |e: CyError| CyError { message: format!("events[{i}]: {}", e.message), ..e }
}

/// Holds, customers with a reserve pool (drawn after a wallet's lots) and event types
/// with usage rules (free tiers, limits: counted event by event) take the one-event
/// path.
fn needs_single_path(c: &mut SpiClient<'_>, account: &str, pre: &Preloaded, events: &[Event]) -> Result<bool> {
    if events.iter().any(|e| e.hold_id.is_some()) {
        return Ok(true);
    }
    let ids: Vec<String> = pre.customers.values().cloned().collect();
    let types: Vec<String> =
        events.iter().map(|e| e.event_type.clone()).collect::<std::collections::BTreeSet<_>>().into_iter().collect();
    Ok(one::<bool>(
        c,
        "SELECT EXISTS (SELECT 1 FROM credyt.wallet_account WHERE customer_id = ANY($1) AND name = 'reserve' AND balance > 0) \
             OR EXISTS (SELECT 1 FROM credyt.usage_rule WHERE account_id = $2 AND event_type = ANY($3))",
        &[ids.into(), account.into(), types.into()],
    )?
    .unwrap_or(false))
}

/// Every wallet account the batch's new charged events debit, in one sorted order.
fn charged_wallets(prepared: &[Prepared], fresh: &[bool]) -> std::collections::BTreeSet<wallet::WalletKey> {
    let mut keys = std::collections::BTreeSet::new();
    for (p, _) in prepared.iter().zip(fresh).filter(|(p, f)| **f && p.status == UsageStatus::Charged) {
        for (a, t) in &p.totals {
            if !t.is_zero() {
                keys.insert((p.customer.clone(), a.clone()));
            }
        }
    }
    keys
}

/// A batch's charges, planned on its locked wallets in memory, and what they write.
#[derive(Default)]
struct BatchPlan<'a> {
    account: &'a str,
    state: BTreeMap<wallet::WalletKey, (wallet::Wallet, Vec<wallet::LiveLot>)>,
    bulk: wallet::BulkWrite,
    /// (customer, asset, available, threshold) of each downward threshold crossing
    hits: Vec<(String, String, Decimal, Decimal)>,
    /// (customer, asset, available) of each debit below the auto top-up threshold
    topups: Vec<(String, String, Decimal)>,
}

impl BatchPlan<'_> {
    /// The balance as this batch has left it so far: the locked wallet in memory, else
    /// the table (which this batch has not written yet).
    fn available_now(&self, c: &mut SpiClient<'_>, customer: &str, asset: &str) -> Result<Decimal> {
        match self.state.get(&(customer.to_string(), asset.to_string())) {
            Some((w, _)) => Ok(w.available()),
            None => wallet::available_of(c, customer, "default", asset),
        }
    }

    /// Plans the debits of one charged event; returns available in its asset after them.
    fn charge(&mut self, p: &Prepared) -> Result<Option<Decimal>> {
        let mut available = None;
        for (a, total) in p.totals.iter().filter(|(_, t)| !t.is_zero()) {
            let key = (p.customer.clone(), a.clone());
            let (state, lots) = self.state.get_mut(&key).ok_or_else(|| CyError::internal("wallet not locked"))?;
            let w = WalletRef { account: self.account, customer: &p.customer, name: "default", asset: a };
            let mut book = wallet::Book::new(&w, p.txn_id.clone());
            let debit = Debit { amount: *total, draw: DrawFrom::AnyLot, system_account: "revenue", kind: "usage" };
            let after = wallet::plan_debit(state, lots, &mut book, &debit, None)?;
            if let Some(t) = state.cross_threshold(after) {
                self.hits.push((p.customer.clone(), a.clone(), after, t));
            }
            if state.auto_topup.is_some_and(|(t, _)| state.pending_topup.is_none() && after < t) {
                self.topups.push((p.customer.clone(), a.clone(), after));
            }
            self.bulk.add(book, after);
            if p.asset.as_deref() == Some(a.as_str()) {
                available = Some(after);
            }
        }
        Ok(available)
    }

    /// The writes: lots, entries and wallets (the events, their headers, are claimed).
    fn write(mut self, c: &mut SpiClient<'_>) -> Result<()> {
        let account = self.account;
        std::mem::take(&mut self.bulk).write(c, account, &self.state)?;
        for (customer, asset, available, threshold) in &self.hits {
            let w = WalletRef { account, customer, name: "default", asset };
            wallet::threshold_hit(c, &w, *available, *threshold)?;
        }
        // One request per wallet: the first debit below the threshold asks, later ones see it pending.
        for (customer, asset, available) in &self.topups {
            let w = WalletRef { account, customer, name: "default", asset };
            if let Some((state, _)) = self.state.get_mut(&(customer.clone(), asset.clone())) {
                wallet::request_topup(c, &w, state, *available)?;
            }
        }
        Ok(())
    }
}

/// The event id is taken: the same request gets the original result; another payload
/// is a conflict.
pub(super) fn replay(c: &mut SpiClient<'_>, account: &str, customer: &str, ev: &Event) -> Result<Outcome> {
    macro_rules! original {
        () => {
            "SELECT customer_id = $3 AND event_type = $4 AND data = $5 AND subject IS NOT DISTINCT FROM $6 \
                    AND ($7::timestamptz IS NULL OR NOT occurred_at_given OR occurred_at = $7) AS same, \
                    status, fees::text AS fees, charged::text AS charged, asset, \
                    jsonb_build_object('customer_id', customer_id, 'event_type', event_type, 'data', data, \
                                       'subject', subject, 'occurred_at', occurred_at)::text AS original \
             FROM credyt.usage_event "
        };
    }
    const BY_ACCOUNT: &str = concat!(original!(), "WHERE account_id = $1 AND event_id = $2");
    const BY_CUSTOMER: &str = concat!(original!(), "WHERE customer_id = $3 AND account_id = $1 AND event_id = $2");
    let t = run(
        c,
        crate::distributed::pick(BY_ACCOUNT, BY_CUSTOMER),
        &[
            account.into(),
            ev.event_id.as_str().into(),
            customer.into(),
            ev.event_type.as_str().into(),
            super::charge::data_arg(ev),
            ev.subject.as_deref().into(),
            ev.occurred_at.into(),
        ],
    )?;
    if t.is_empty() {
        return Err(CyError::internal("event id conflicted but no row was found"));
    }
    let row = t.first();
    if !row.req::<bool>("same")? {
        return Err(CyError::conflict(format!(
            "event_id {:?} was already recorded with a different payload",
            ev.event_id
        ))
        .detail(format!("original event: {}", row.req::<String>("original")?))
        .hint("replays must repeat the customer, event_type, data, occurred_at and subject exactly"));
    }
    let status = row.vocab("status", UsageStatus::parse)?;
    let fees: Value = serde_json::from_str(&row.req::<String>("fees")?).map_err(CyError::internal)?;
    let charged = row.amount("charged")?;
    let asset = row.opt::<String>("asset")?;
    // `available` is the balance now: the caller fills it in from where it knows it.
    Ok(Outcome { event_id: ev.event_id.clone(), duplicate: true, status, fees, charged, asset, available: None })
}
