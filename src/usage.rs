//! Usage (SPEC §6): record_usage, single and batch; matching against the prices of
//! the customer's subscriptions; fees, token detail, costs; idempotency by event_id.
//!
//! One event runs in this order:
//! 1. validate; resolve the customer; match prices (read-only) and compute the fees,
//!    token detail and cost — all before anything is written;
//! 2. claim the event_id by inserting the event row (a replay stops here);
//! 3. capture the hold, if one is named;
//! 4. charge each asset's total through the ledger (one transaction per event).

use crate::assets::resolve_asset;
use crate::customers;
use crate::error::{api, CyError, Result};
use crate::holds;
use crate::money::{self, stored, to_numeric};
use crate::plan_cache::{one, run, run_once};
use crate::tenancy::scope;
use crate::validate;
use crate::wallet::{self, Debit, DrawFrom, WalletRef};
use credyt_core::money::round_fee;
use credyt_core::pricing::{exact_number, usage_fees, FeeError, Price};
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use pgrx::{AnyNumeric, JsonB};
use rust_decimal::Decimal;
use serde_json::{json, Map, Value};
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

thread_local! {
    /// Parsed prices by (product id, version, position). Published versions never
    /// change, so an entry is valid for the life of the backend.
    static PRICES: RefCell<HashMap<(String, i32, i32), Rc<Price>>> = RefCell::new(HashMap::new());
}

/// One usage event, validated.
pub struct Event {
    pub customer: String,
    pub event_id: String,
    pub event_type: String,
    pub data: Value,
    pub occurred_at: Option<TimestampWithTimeZone>,
    pub subject: Option<String>,
    pub description: Option<String>,
    pub costs: Option<Value>,
    pub hold_id: Option<String>,
}

pub struct Outcome {
    pub event_id: String,
    pub duplicate: bool,
    pub status: String,
    pub fees: Value,
    pub charged: Decimal,
    pub asset: Option<String>,
    pub available: Option<Decimal>,
}

fn num(d: Decimal) -> Value {
    Value::Number(serde_json::Number::from_string_unchecked(d.normalize().to_string()))
}

/// Token detail from the event's data: model, input/prompt and output/completion tokens.
fn tokens(data: &Value) -> Result<(Option<String>, Option<i64>, Option<i64>)> {
    let model = match data.get("model") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.chars().count() <= 255 => Some(s.clone()),
        Some(_) => return Err(CyError::invalid("data.model must be a string of at most 255 characters")),
    };
    let count = |names: [&str; 2]| -> Result<Option<i64>> {
        for n in names {
            if let Some(v) = data.get(n) {
                if v.is_null() {
                    continue;
                }
                let d = exact_number(v).filter(|d| d.fract().is_zero() && !d.is_sign_negative());
                return match d.and_then(|d| {
                    i64::try_from(d.mantissa())
                        .ok()
                        .filter(|_| d.scale() == 0)
                        .or_else(|| d.normalize().to_string().parse().ok())
                }) {
                    Some(i) => Ok(Some(i)),
                    None => Err(CyError::invalid(format!("data.{n} must be a non-negative integer"))),
                };
            }
        }
        Ok(None)
    };
    Ok((model, count(["input_tokens", "prompt_tokens"])?, count(["output_tokens", "completion_tokens"])?))
}

/// Costs given with the event: [{vendor, amount, currency, category}], summed when
/// they share a currency.
fn given_costs(costs: &Value) -> Result<(Option<Decimal>, Option<String>)> {
    let arr = costs
        .as_array()
        .ok_or_else(|| CyError::invalid("costs must be a JSON array of {vendor, amount, currency, category}"))?;
    let mut total: BTreeMap<String, Decimal> = BTreeMap::new();
    for (i, item) in arr.iter().enumerate() {
        let o = item.as_object().ok_or_else(|| CyError::invalid(format!("costs[{i}] must be a JSON object")))?;
        for k in o.keys() {
            if !matches!(k.as_str(), "vendor" | "amount" | "currency" | "category") {
                return Err(CyError::invalid(format!("costs[{i}].{k} is not a known field")));
            }
        }
        if !matches!(o.get("vendor").and_then(|v| v.as_str()), Some(s) if !s.is_empty()) {
            return Err(CyError::invalid(format!("costs[{i}].vendor must be a non-empty string")));
        }
        if o.get("category").is_some_and(|v| !v.is_string() && !v.is_null()) {
            return Err(CyError::invalid(format!("costs[{i}].category must be a string")));
        }
        let amount = o
            .get("amount")
            .and_then(exact_number)
            .map(|d| d.normalize())
            .filter(|d| !d.is_sign_negative() && d.scale() <= 12 && *d <= credyt_core::money::max_amount())
            .ok_or_else(|| {
                CyError::invalid(format!("costs[{i}].amount must be a non-negative number with at most 12 decimals"))
            })?;
        let currency = o.get("currency").and_then(Value::as_str).unwrap_or("USD");
        if credyt_core::fiat::minor_units(currency).is_none() {
            return Err(CyError::invalid(format!("costs[{i}].currency {currency} is not an ISO 4217 currency")));
        }
        *total.entry(currency.to_string()).or_default() += amount;
    }
    Ok(match total.len() {
        1 => total.into_iter().next().map(|(cur, amt)| (Some(amt), Some(cur))).unwrap_or((None, None)),
        _ => (None, None),
    })
}

// ---------------------------------------------------------------------------------
// What preparing an event reads, per event (one call) or preloaded (a batch)

type PriceKey = (String, i32, i32);

/// A price of one of the customer's subscriptions, with the subscription's window
/// (microseconds since 2000-01-01, as Postgres keeps timestamps).
struct SubscribedPrice {
    key: PriceKey,
    starts_at: i64,
    ends_at: Option<i64>,
    price: Rc<Price>,
}

struct ModelCost {
    vendor: String,
    input: Decimal,
    output: Decimal,
    currency: String,
}

trait Lookups {
    fn customer(&mut self, c: &mut SpiClient<'_>, reference: &str) -> Result<String>;
    /// Every price of the customer's subscriptions (any time) for this event type.
    fn prices(&mut self, c: &mut SpiClient<'_>, customer: &str, event_type: &str) -> Result<Vec<Rc<SubscribedPrice>>>;
    /// Costs of a model, most recently set first.
    fn model_costs(&mut self, c: &mut SpiClient<'_>, model: &str) -> Result<Vec<Rc<ModelCost>>>;
    fn rate(&mut self, c: &mut SpiClient<'_>, asset: &str, currency: &str) -> Result<Option<Decimal>>;
}

/// The parsed price for a stored definition, from the per-backend cache.
fn price_of(key: &PriceKey, definition: &str) -> Result<Rc<Price>> {
    if let Some(p) = PRICES.with(|p| p.borrow().get(key).cloned()) {
        return Ok(p);
    }
    let value: Value = serde_json::from_str(definition).map_err(CyError::internal)?;
    let price = Rc::new(
        credyt_core::pricing::parse_price(&value, "price")
            .map_err(|e| CyError::internal(format!("stored price: {e}")))?,
    );
    PRICES.with(|p| p.borrow_mut().insert(key.clone(), price.clone()));
    Ok(price)
}

/// Reads a row of (product_id, version, position, starts_at, ends_at, definition)
/// starting at column `from`.
fn subscribed_price(row: &pgrx::spi::SpiHeapTupleData<'_>, from: usize) -> Result<Rc<SubscribedPrice>> {
    let key = (
        row.get::<String>(from)?.unwrap_or_default(),
        row.get::<i32>(from + 1)?.unwrap_or_default(),
        row.get::<i32>(from + 2)?.unwrap_or_default(),
    );
    let starts_at = row.get::<TimestampWithTimeZone>(from + 3)?.map(|t| t.into_inner()).unwrap_or_default();
    let ends_at = row.get::<TimestampWithTimeZone>(from + 4)?.map(|t| t.into_inner());
    let price = price_of(&key, &row.get::<String>(from + 5)?.unwrap_or_default())?;
    Ok(Rc::new(SubscribedPrice { key, starts_at, ends_at, price }))
}

fn model_cost_row(row: &pgrx::spi::SpiHeapTupleData<'_>, from: usize) -> Result<Rc<ModelCost>> {
    Ok(Rc::new(ModelCost {
        vendor: row.get::<String>(from)?.unwrap_or_default(),
        input: stored(&row.get::<String>(from + 1)?.unwrap_or_default())?,
        output: stored(&row.get::<String>(from + 2)?.unwrap_or_default())?,
        currency: row.get::<String>(from + 3)?.unwrap_or_default(),
    }))
}

/// One call: each lookup is a query through a kept plan.
struct Direct<'a> {
    account: &'a str,
}

impl Lookups for Direct<'_> {
    fn customer(&mut self, c: &mut SpiClient<'_>, reference: &str) -> Result<String> {
        customers::resolve(c, self.account, Some(reference))
    }
    fn prices(&mut self, c: &mut SpiClient<'_>, customer: &str, event_type: &str) -> Result<Vec<Rc<SubscribedPrice>>> {
        let t = run(
            c,
            "SELECT p.product_id, p.version, p.position, s.starts_at, s.ends_at, p.definition::text \
             FROM credyt.subscription s JOIN credyt.price p \
               ON p.product_id = s.product_id AND p.version = s.version AND p.event_type = $2 \
             WHERE s.customer_id = $1 ORDER BY s.id, p.position",
            &[customer.into(), event_type.into()],
        )?;
        let mut out = Vec::new();
        for row in t {
            out.push(subscribed_price(&row, 1)?);
        }
        Ok(out)
    }
    fn model_costs(&mut self, c: &mut SpiClient<'_>, model: &str) -> Result<Vec<Rc<ModelCost>>> {
        let t = run(
            c,
            "SELECT vendor, input_per_million::text, output_per_million::text, currency FROM credyt.model_cost \
             WHERE account_id = $1 AND model = $2 ORDER BY updated_at DESC",
            &[self.account.into(), model.into()],
        )?;
        let mut out = Vec::new();
        for row in t {
            out.push(model_cost_row(&row, 1)?);
        }
        Ok(out)
    }
    fn rate(&mut self, c: &mut SpiClient<'_>, asset: &str, currency: &str) -> Result<Option<Decimal>> {
        one::<String>(
            c,
            "SELECT rate::text FROM credyt.asset WHERE account_id = $1 AND code = $2 AND rate_currency = $3 AND rate IS NOT NULL",
            &[self.account.into(), asset.into(), currency.into()],
        )?
        .map(|r| stored(&r))
        .transpose()
    }
}

/// A batch: everything its events need, read in four statements up front.
struct Preloaded {
    account: String,
    customers: HashMap<String, String>,
    prices: HashMap<(String, String), Vec<Rc<SubscribedPrice>>>,
    model_costs: HashMap<String, Vec<Rc<ModelCost>>>,
    rates: HashMap<(String, String), Decimal>,
}

impl Preloaded {
    fn load(c: &mut SpiClient<'_>, account: &str, events: &[Event]) -> Result<Preloaded> {
        let refs: Vec<String> =
            events.iter().map(|e| e.customer.clone()).collect::<std::collections::BTreeSet<_>>().into_iter().collect();
        let mut customers = HashMap::new();
        let t = run_once(
            c,
            "SELECT r.ref, coalesce(i.id, e.id) FROM unnest($2::text[]) r(ref) \
             LEFT JOIN credyt.customer i ON i.id = r.ref AND i.account_id = $1 \
             LEFT JOIN credyt.customer e ON e.account_id = $1 AND e.external_id = r.ref",
            &[account.into(), refs.into()],
        )?;
        for row in t {
            if let (Some(r), Some(id)) = (row.get::<String>(1)?, row.get::<String>(2)?) {
                customers.insert(r, id);
            }
        }
        let ids: Vec<String> =
            customers.values().cloned().collect::<std::collections::BTreeSet<_>>().into_iter().collect();
        let types: Vec<String> = events
            .iter()
            .map(|e| e.event_type.clone())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut prices: HashMap<(String, String), Vec<Rc<SubscribedPrice>>> = HashMap::new();
        let t = run_once(
            c,
            "SELECT s.customer_id, p.event_type, p.product_id, p.version, p.position, s.starts_at, s.ends_at, \
                    p.definition::text \
             FROM credyt.subscription s JOIN credyt.price p ON p.product_id = s.product_id AND p.version = s.version \
             WHERE s.customer_id = ANY($1) AND p.event_type = ANY($2) ORDER BY s.id, p.position",
            &[ids.into(), types.into()],
        )?;
        for row in t {
            let key = (row.get::<String>(1)?.unwrap_or_default(), row.get::<String>(2)?.unwrap_or_default());
            prices.entry(key).or_default().push(subscribed_price(&row, 3)?);
        }
        let models: Vec<String> = events
            .iter()
            .filter(|e| e.costs.is_none())
            .filter_map(|e| e.data.get("model").and_then(Value::as_str).map(str::to_string))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut model_costs: HashMap<String, Vec<Rc<ModelCost>>> = HashMap::new();
        if !models.is_empty() {
            let t = run_once(
                c,
                "SELECT model, vendor, input_per_million::text, output_per_million::text, currency FROM credyt.model_cost \
                 WHERE account_id = $1 AND model = ANY($2) ORDER BY updated_at DESC",
                &[account.into(), models.into()],
            )?;
            for row in t {
                model_costs
                    .entry(row.get::<String>(1)?.unwrap_or_default())
                    .or_default()
                    .push(model_cost_row(&row, 2)?);
            }
        }
        let mut rates = HashMap::new();
        let t = run(
            c,
            "SELECT code, rate_currency, rate::text FROM credyt.asset WHERE account_id = $1 AND rate IS NOT NULL",
            &[account.into()],
        )?;
        for row in t {
            rates.insert(
                (row.get::<String>(1)?.unwrap_or_default(), row.get::<String>(2)?.unwrap_or_default()),
                stored(&row.get::<String>(3)?.unwrap_or_default())?,
            );
        }
        Ok(Preloaded { account: account.to_string(), customers, prices, model_costs, rates })
    }
}

impl Lookups for Preloaded {
    fn customer(&mut self, _: &mut SpiClient<'_>, reference: &str) -> Result<String> {
        self.customers.get(reference).cloned().ok_or_else(|| {
            CyError::not_found(format!("unknown customer {reference}"))
                .detail(format!("no customer with that id or external_id in account {}", self.account))
        })
    }
    fn prices(&mut self, _: &mut SpiClient<'_>, customer: &str, event_type: &str) -> Result<Vec<Rc<SubscribedPrice>>> {
        Ok(self.prices.get(&(customer.to_string(), event_type.to_string())).cloned().unwrap_or_default())
    }
    fn model_costs(&mut self, _: &mut SpiClient<'_>, model: &str) -> Result<Vec<Rc<ModelCost>>> {
        Ok(self.model_costs.get(model).cloned().unwrap_or_default())
    }
    fn rate(&mut self, _: &mut SpiClient<'_>, asset: &str, currency: &str) -> Result<Option<Decimal>> {
        Ok(self.rates.get(&(asset.to_string(), currency.to_string())).copied())
    }
}

// ---------------------------------------------------------------------------------
// Preparing, claiming, charging

/// An event with everything computed that it will write.
struct Prepared {
    ev: Event,
    customer: String,
    model: Option<String>,
    input_tokens: Option<i64>,
    output_tokens: Option<i64>,
    status: &'static str,
    fees: Value,
    /// fee total per asset
    totals: BTreeMap<String, Decimal>,
    charged: Decimal,
    asset: Option<String>,
    cost: Option<Decimal>,
    cost_currency: Option<String>,
    revenue: Option<Decimal>,
    txn_id: String,
}

/// Computes an event's fees, token detail and cost; writes nothing.
/// `now` is the transaction's timestamp (Postgres microseconds), used when the event
/// gives no occurred_at.
fn prepare(c: &mut SpiClient<'_>, l: &mut impl Lookups, ev: Event, now: i64) -> Result<Prepared> {
    let customer = l.customer(c, &ev.customer)?;
    let (model, input_tokens, output_tokens) = tokens(&ev.data)?;
    let at = ev.occurred_at.map(|t| t.into_inner()).unwrap_or(now);

    let mut fees = Vec::new();
    let mut totals: BTreeMap<String, Decimal> = BTreeMap::new();
    for sp in l.prices(c, &customer, &ev.event_type)? {
        if sp.starts_at > at || sp.ends_at.is_some_and(|e| e <= at) {
            continue; // the subscription was not active when the event occurred
        }
        let (product, version, position) = &sp.key;
        let computed = usage_fees(&sp.price, &ev.data).map_err(|FeeError::Volume { field, problem }| {
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
    let status = if fees.is_empty() {
        "no_match"
    } else if totals.values().all(|t| t.is_zero()) {
        "free"
    } else {
        "charged"
    };
    let (charged, asset) = match totals.len() {
        1 => totals.iter().next().map(|(a, t)| (*t, Some(a.clone()))).unwrap_or((Decimal::ZERO, None)),
        _ => (Decimal::ZERO, None),
    };

    let (cost, cost_currency) = match (&ev.costs, &model) {
        (Some(costs), _) => given_costs(costs)?,
        (None, Some(m)) => {
            let vendor = ev.data.get("vendor").or_else(|| ev.data.get("provider")).and_then(Value::as_str);
            let costs = l.model_costs(c, m)?;
            match costs.iter().find(|mc| vendor.is_none_or(|v| v == mc.vendor)) {
                Some(mc) => {
                    let million = Decimal::from(1_000_000);
                    let cost = Decimal::from(input_tokens.unwrap_or(0)) * mc.input / million
                        + Decimal::from(output_tokens.unwrap_or(0)) * mc.output / million;
                    (Some(round_fee(cost)), Some(mc.currency.clone()))
                }
                None => (None, None),
            }
        }
        (None, None) => (None, None),
    };
    let revenue = match (&asset, &cost_currency) {
        (Some(a), Some(cur)) if a == cur => Some(charged),
        (Some(a), Some(cur)) => l.rate(c, a, cur)?.map(|r| round_fee(charged * r)),
        _ => None,
    };
    let fees = Value::Array(fees);
    Ok(Prepared {
        ev,
        customer,
        model,
        input_tokens,
        output_tokens,
        status,
        fees,
        totals,
        charged,
        asset,
        cost,
        cost_currency,
        revenue,
        txn_id: crate::ids::new_id("txn")?,
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
        "INSERT INTO credyt.usage_event (account_id, event_id, customer_id, event_type, data, occurred_at, occurred_at_given, \
           subject, description, model, input_tokens, output_tokens, status, fees, charged, asset, revenue, cost, \
           cost_currency, costs, hold_id, txn_id) \
         SELECT $1, u.event_id, u.customer_id, u.event_type, u.data, coalesce(u.occurred_at, now()), u.occurred_at IS NOT NULL, \
           u.subject, u.description, u.model, u.input_tokens, u.output_tokens, u.status, u.fees, u.charged, u.asset, \
           u.revenue, u.cost, u.cost_currency, u.costs, u.hold_id, u.txn_id \
         FROM unnest($2::text[], $3::text[], $4::text[], $5::jsonb[], $6::timestamptz[], $7::text[], $8::text[], $9::text[], \
                     $10::int8[], $11::int8[], $12::text[], $13::jsonb[], $14::numeric[], $15::text[], $16::numeric[], \
                     $17::numeric[], $18::text[], $19::jsonb[], $20::text[], $21::text[]) \
           AS u(event_id, customer_id, event_type, data, occurred_at, subject, description, model, input_tokens, \
                output_tokens, status, fees, charged, asset, revenue, cost, cost_currency, costs, hold_id, txn_id) \
         ON CONFLICT (account_id, event_id) DO NOTHING RETURNING event_id",
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
            col!(|p| p.status.to_string()).into(),
            col!(|p| JsonB(p.fees.clone())).into(),
            col!(|p| to_numeric(p.charged)).into(),
            col!(|p| p.asset.clone()).into(),
            col!(|p| p.revenue.map(to_numeric)).into(),
            col!(|p| p.cost.map(to_numeric)).into(),
            col!(|p| p.cost_currency.clone()).into(),
            col!(|p| p.ev.costs.clone().map(JsonB)).into(),
            col!(|p| p.ev.hold_id.clone()).into(),
            col!(|p| (p.status == "charged").then(|| p.txn_id.clone())).into(),
        ],
    )?;
    let mut inserted = std::collections::HashSet::new();
    for row in t {
        inserted.insert(row.get::<String>(1)?.unwrap_or_default());
    }
    // Only an id's first occurrence can have been the one inserted.
    Ok(events.iter().map(|p| inserted.remove(&p.ev.event_id)).collect())
}

fn outcome(p: Prepared, available: Option<Decimal>) -> Outcome {
    Outcome {
        event_id: p.ev.event_id,
        duplicate: false,
        status: p.status.into(),
        fees: p.fees,
        charged: p.charged,
        asset: p.asset,
        available,
    }
}

const OPEN_USAGE_TXN: &str = "INSERT INTO credyt.ledger_txn (account_id, id, kind, customer_id, payload, description) \
     SELECT $1, u.id, 'usage', u.customer_id, jsonb_build_object('event_id', u.event_id), u.description \
     FROM unnest($2::text[], $3::text[], $4::text[], $5::text[]) AS u(id, customer_id, event_id, description)";

/// Records one event for `account`. Everything is computed before the first write.
pub fn record(c: &mut SpiClient<'_>, account: &str, ev: Event) -> Result<Outcome> {
    let now = pgrx::datetime::now().into_inner();
    let p = prepare(c, &mut Direct { account }, ev, now)?;
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
        holds::close(c, &hold, "captured", Some(captured), Some(&p.ev.event_id))?;
    }
    let mut available = None;
    if p.status == "charged" {
        run(
            c,
            OPEN_USAGE_TXN,
            &[
                account.into(),
                vec![p.txn_id.clone()].into(),
                vec![p.customer.clone()].into(),
                vec![p.ev.event_id.clone()].into(),
                vec![p.ev.description.clone()].into(),
            ],
        )?;
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
pub fn record_batch(c: &mut SpiClient<'_>, account: &str, events: Vec<Event>) -> Result<Vec<Outcome>> {
    let at = |i: usize| move |e: CyError| CyError { message: format!("events[{i}]: {}", e.message), ..e };
    let now = pgrx::datetime::now().into_inner();
    let mut pre = Preloaded::load(c, account, &events)?;
    // Holds, and customers with a reserve pool (drawn after a wallet's lots), take the
    // one-event path.
    let ids: Vec<String> = pre.customers.values().cloned().collect();
    let pooled = one::<bool>(
        c,
        "SELECT EXISTS (SELECT 1 FROM credyt.wallet_account WHERE customer_id = ANY($1) AND name = 'reserve' AND balance > 0)",
        &[ids.into()],
    )?
    .unwrap_or(false);
    if pooled || events.iter().any(|e| e.hold_id.is_some()) {
        return events.into_iter().enumerate().map(|(i, ev)| record(c, account, ev).map_err(at(i))).collect();
    }
    let mut prepared = Vec::with_capacity(events.len());
    for (i, ev) in events.into_iter().enumerate() {
        prepared.push(prepare(c, &mut pre, ev, now).map_err(at(i))?);
    }
    let fresh = claim(c, account, &prepared)?;

    // Lock every wallet account the batch charges, in one sorted order, with its lots.
    let mut keys = std::collections::BTreeSet::new();
    for (p, _) in prepared.iter().zip(&fresh).filter(|(p, f)| **f && p.status == "charged") {
        for (a, t) in &p.totals {
            if !t.is_zero() {
                keys.insert((p.customer.clone(), a.clone()));
            }
        }
    }
    let mut state = wallet::lock_many(c, account, &keys)?;

    let mut bulk = wallet::BulkWrite::default();
    let mut hits = Vec::new();
    let mut topups = Vec::new();
    let (mut txn_ids, mut txn_customers, mut txn_events, mut txn_descriptions) = (vec![], vec![], vec![], vec![]);
    let mut out = Vec::with_capacity(prepared.len());
    for (i, (p, fresh)) in prepared.into_iter().zip(fresh).enumerate() {
        // The balance as this batch has left it so far: the locked wallet in memory,
        // else the table (which this batch has not written yet).
        let now_available = |c: &mut SpiClient<'_>,
                             state: &BTreeMap<(String, String), (wallet::Wallet, Vec<wallet::LiveLot>)>,
                             asset: &str| {
            match state.get(&(p.customer.clone(), asset.to_string())) {
                Some((w, lots)) => Ok(wallet::available(lots, w)),
                None => wallet::available_of(c, &p.customer, "default", asset),
            }
        };
        if !fresh {
            let customer = p.customer.clone();
            let mut o = replay(c, account, &customer, &p.ev).map_err(at(i))?;
            if let Some(a) = &o.asset {
                o.available = Some(now_available(c, &state, a)?);
            }
            out.push(o);
            continue;
        }
        let mut available = None;
        if p.status == "charged" {
            txn_ids.push(p.txn_id.clone());
            txn_customers.push(p.customer.clone());
            txn_events.push(p.ev.event_id.clone());
            txn_descriptions.push(p.ev.description.clone());
            for (a, total) in &p.totals {
                if total.is_zero() {
                    continue;
                }
                let key = (p.customer.clone(), a.clone());
                let (wallet_state, lots) = state.get_mut(&key).ok_or_else(|| CyError::internal("wallet not locked"))?;
                let w = WalletRef { account, customer: &p.customer, name: "default", asset: a };
                let mut book = wallet::Book::new(&w, p.txn_id.clone());
                let debit = Debit { amount: *total, draw: DrawFrom::AnyLot, system_account: "revenue", kind: "usage" };
                let after = wallet::plan_debit(wallet_state, lots, &mut book, &debit, None).map_err(at(i))?;
                if let Some(t) = wallet_state.cross_threshold(after) {
                    hits.push((p.customer.clone(), a.clone(), after, t));
                }
                if let Some((t, _)) = wallet_state.auto_topup {
                    if wallet_state.pending_topup.is_none() && after < t {
                        topups.push((p.customer.clone(), a.clone(), after));
                    }
                }
                bulk.add(book, after);
                if p.asset.as_deref() == Some(a.as_str()) {
                    available = Some(after);
                }
            }
        } else if let Some(a) = &p.asset {
            available = Some(now_available(c, &state, a)?);
        }
        out.push(outcome(p, available));
    }
    if !txn_ids.is_empty() {
        run_once(
            c,
            OPEN_USAGE_TXN,
            &[account.into(), txn_ids.into(), txn_customers.into(), txn_events.into(), txn_descriptions.into()],
        )?;
    }
    bulk.write(c, account, &state)?;
    for (customer, asset, available, threshold) in hits {
        let w = WalletRef { account, customer: &customer, name: "default", asset: &asset };
        wallet::threshold_hit(c, &w, available, threshold)?;
    }
    // One request per wallet: the first debit below the threshold asks, later ones see it pending.
    for (customer, asset, available) in topups {
        let w = WalletRef { account, customer: &customer, name: "default", asset: &asset };
        if let Some((wallet_state, _)) = state.get_mut(&(customer.clone(), asset.clone())) {
            wallet::request_topup(c, &w, wallet_state, available)?;
        }
    }
    Ok(out)
}

/// The event id is taken: the same request gets the original result; another payload
/// is a conflict.
fn replay(c: &mut SpiClient<'_>, account: &str, customer: &str, ev: &Event) -> Result<Outcome> {
    let t = run(
        c,
        "SELECT customer_id = $3 AND event_type = $4 AND data = $5 AND subject IS NOT DISTINCT FROM $6 \
                AND ($7::timestamptz IS NULL OR NOT occurred_at_given OR occurred_at = $7), \
                status, fees::text, charged::text, asset, \
                jsonb_build_object('customer_id', customer_id, 'event_type', event_type, 'data', data, \
                                   'subject', subject, 'occurred_at', occurred_at)::text \
         FROM credyt.usage_event WHERE account_id = $1 AND event_id = $2",
        &[
            account.into(),
            ev.event_id.as_str().into(),
            customer.into(),
            ev.event_type.as_str().into(),
            JsonB(ev.data.clone()).into(),
            ev.subject.as_deref().into(),
            ev.occurred_at.into(),
        ],
    )?;
    if t.is_empty() {
        return Err(CyError::internal("event id conflicted but no row was found"));
    }
    let row = t.first();
    if !row.get::<bool>(1)?.unwrap_or(false) {
        return Err(CyError::conflict(format!(
            "event_id {:?} was already recorded with a different payload",
            ev.event_id
        ))
        .detail(format!("original event: {}", row.get::<String>(6)?.unwrap_or_default()))
        .hint("replays must repeat the customer, event_type, data, occurred_at and subject exactly"));
    }
    let status = row.get::<String>(2)?.unwrap_or_default();
    let fees: Value = serde_json::from_str(&row.get::<String>(3)?.unwrap_or_default()).map_err(CyError::internal)?;
    let charged = stored(&row.get::<String>(4)?.unwrap_or_default())?;
    let asset = row.get::<String>(5)?;
    // `available` is the balance now: the caller fills it in from where it knows it.
    Ok(Outcome { event_id: ev.event_id.clone(), duplicate: true, status, fees, charged, asset, available: None })
}

fn event_type(v: Option<String>) -> Result<String> {
    let v = validate::required("event_type", v)?;
    let n = v.chars().count();
    if n == 0 || n > 255 {
        return Err(CyError::invalid("event_type must be 1 to 255 characters"));
    }
    Ok(v)
}

fn data_object(v: Option<Value>) -> Result<Value> {
    let v = v.unwrap_or_else(|| json!({}));
    if !v.is_object() {
        return Err(CyError::invalid("data must be a JSON object")
            .hint("pass e.g. '{\"model\": \"gpt-4o\", \"input_tokens\": 1200}'"));
    }
    Ok(v)
}

fn subject(v: Option<String>) -> Result<Option<String>> {
    match v {
        Some(s) if s.is_empty() || s.chars().count() > 255 => {
            Err(CyError::invalid("subject must be 1 to 255 characters"))
        }
        other => Ok(other),
    }
}

type UsageRow = (
    name!(event_id, String),
    name!(duplicate, bool),
    name!(status, String),
    name!(fees, JsonB),
    name!(charged, AnyNumeric),
    name!(asset, Option<String>),
    name!(available, Option<AnyNumeric>),
);

fn row(o: Outcome) -> UsageRow {
    (o.event_id, o.duplicate, o.status, JsonB(o.fees), to_numeric(o.charged), o.asset, o.available.map(to_numeric))
}

#[pg_extern(security_definer, name = "record_usage")]
#[search_path(@extschema@, pg_temp)]
#[allow(clippy::too_many_arguments, clippy::type_complexity)] // (the row type: see record_usage_batch)
fn record_usage(
    customer: Option<String>,
    event_id: Option<String>,
    event_type: Option<String>,
    data: default!(Option<crate::json::Json>, "'{}'"),
    occurred_at: default!(Option<TimestampWithTimeZone>, "NULL"),
    subject: default!(Option<String>, "NULL"),
    description: default!(Option<String>, "NULL"),
    costs: default!(Option<crate::json::Json>, "NULL"),
    hold_id: default!(Option<String>, "NULL"),
) -> TableIterator<
    'static,
    (
        name!(event_id, String),
        name!(duplicate, bool),
        name!(status, String),
        name!(fees, JsonB),
        name!(charged, AnyNumeric),
        name!(asset, Option<String>),
        name!(available, Option<AnyNumeric>),
    ),
> {
    let outcome = api(move || {
        let ev = Event {
            customer: validate::required("customer", customer)?,
            event_id: validate::key("event_id", event_id)?,
            event_type: self::event_type(event_type)?,
            data: data_object(crate::json::optional("data", data, crate::json::MAX_BYTES)?)?,
            occurred_at: match occurred_at {
                Some(t) if !t.is_finite() => return Err(CyError::invalid("occurred_at must be a finite timestamp")),
                other => other,
            },
            subject: self::subject(subject)?,
            description: validate::optional_text("description", description)?,
            costs: crate::json::optional("costs", costs, crate::json::MAX_BYTES)?,
            hold_id,
        };
        Spi::connect_mut(|c| {
            let account = scope(c)?;
            record(c, &account, ev)
        })
    });
    TableIterator::new(std::iter::once(row(outcome)))
}

/// An RFC 3339 timestamp such as 2026-01-07T13:19:18.265Z, checked before it is cast.
fn rfc3339(s: &str) -> bool {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| r.clone().all(|i| b.get(i).is_some_and(u8::is_ascii_digit));
    if b.len() < 20 || !digits(0..4) || b[4] != b'-' || !digits(5..7) || b[7] != b'-' || !digits(8..10) {
        return false;
    }
    if !matches!(b[10], b'T' | b't' | b' ')
        || !digits(11..13)
        || b[13] != b':'
        || !digits(14..16)
        || b[16] != b':'
        || !digits(17..19)
    {
        return false;
    }
    let mut i = 19;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == start || i - start > 6 {
            return false;
        }
    }
    match &b[i..] {
        [b'Z' | b'z'] => true,
        [b'+' | b'-', h1, h2, b':', m1, m2] => [h1, h2, m1, m2].iter().all(|c| c.is_ascii_digit()),
        _ => false,
    }
}

/// Parses one element of the batch form.
fn batch_event(c: &mut SpiClient<'_>, v: &Value) -> Result<Event> {
    let o: &Map<String, Value> = v.as_object().ok_or_else(|| CyError::invalid("must be a JSON object"))?;
    for k in o.keys() {
        if !matches!(
            k.as_str(),
            "customer"
                | "event_id"
                | "event_type"
                | "data"
                | "occurred_at"
                | "subject"
                | "description"
                | "costs"
                | "hold_id"
        ) {
            return Err(CyError::invalid(format!("{k} is not a known field")));
        }
    }
    let text = |k: &str| -> Result<Option<String>> {
        match o.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(CyError::invalid(format!("{k} must be a string"))),
        }
    };
    let occurred_at = match text("occurred_at")? {
        None => None,
        Some(s) if rfc3339(&s) => one::<TimestampWithTimeZone>(c, "SELECT $1::timestamptz", &[s.as_str().into()])?,
        Some(s) => {
            return Err(CyError::invalid(format!("occurred_at {s:?} is not an RFC 3339 timestamp"))
                .hint("e.g. 2026-01-07T13:19:18.265Z"))
        }
    };
    Ok(Event {
        customer: validate::required("customer", text("customer")?)?,
        event_id: validate::key("event_id", text("event_id")?)?,
        event_type: event_type(text("event_type")?)?,
        data: data_object(o.get("data").filter(|d| !d.is_null()).cloned())?,
        occurred_at,
        subject: subject(text("subject")?)?,
        description: validate::optional_text("description", text("description")?)?,
        costs: o.get("costs").filter(|d| !d.is_null()).cloned(),
        hold_id: text("hold_id")?,
    })
}

/// At most this many events per batch call. (Origin: ten of SPEC §13's 1,000-event
/// batches; the batch's arrays and its one transaction stay a few MB.)
const MAX_BATCH: usize = 10_000;

// The row type is spelled out again: pg_extern reads the signature's tokens, so a type
// alias would not name the columns.
#[pg_extern(security_definer, name = "record_usage")]
#[search_path(@extschema@, pg_temp)]
#[allow(clippy::type_complexity)]
fn record_usage_batch(
    events: Option<crate::json::Json>,
) -> TableIterator<
    'static,
    (
        name!(event_id, String),
        name!(duplicate, bool),
        name!(status, String),
        name!(fees, JsonB),
        name!(charged, AnyNumeric),
        name!(asset, Option<String>),
        name!(available, Option<AnyNumeric>),
    ),
> {
    let outcomes = api(move || {
        // 10,000 events of up to a few KiB each
        let events = crate::json::required("events", events, crate::json::MAX_BATCH_BYTES)?;
        let arr = match events {
            Value::Array(a) => a,
            _ => return Err(CyError::invalid("events must be a JSON array of events")),
        };
        if arr.len() > MAX_BATCH {
            return Err(CyError::invalid(format!("events has {} elements; at most {MAX_BATCH} per call", arr.len())));
        }
        Spi::connect_mut(|c| {
            let account = scope(c)?;
            let mut events = Vec::with_capacity(arr.len());
            for (i, v) in arr.iter().enumerate() {
                events.push(
                    batch_event(c, v).map_err(|e| CyError { message: format!("events[{i}]: {}", e.message), ..e })?,
                );
            }
            record_batch(c, &account, events)
        })
    });
    TableIterator::new(outcomes.into_iter().map(row))
}

#[pg_extern(security_definer)]
#[search_path(@extschema@, pg_temp)]
fn set_model_cost(
    vendor: Option<String>,
    model: Option<String>,
    input_per_million: Option<AnyNumeric>,
    output_per_million: Option<AnyNumeric>,
    currency: default!(Option<String>, "'USD'"),
) {
    api(move || {
        let vendor = validate::key("vendor", vendor)?;
        let model = validate::key("model", model)?;
        let input = money::optional_non_negative("input_per_million", input_per_million)?
            .ok_or_else(|| CyError::invalid("input_per_million must not be NULL"))?;
        let output = money::optional_non_negative("output_per_million", output_per_million)?
            .ok_or_else(|| CyError::invalid("output_per_million must not be NULL"))?;
        let currency = validate::required("currency", currency)?;
        Spi::connect_mut(|c| {
            let account = scope(c)?;
            let asset = resolve_asset(c, &account, Some(&currency))?;
            if credyt_core::fiat::minor_units(&asset.code).is_none() {
                return Err(CyError::invalid(format!("currency {currency} must be an ISO 4217 currency")));
            }
            run(
                c,
                "INSERT INTO credyt.model_cost (account_id, vendor, model, input_per_million, output_per_million, currency) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (account_id, vendor, model) DO UPDATE \
                 SET input_per_million = EXCLUDED.input_per_million, output_per_million = EXCLUDED.output_per_million, \
                     currency = EXCLUDED.currency, updated_at = now()",
                &[account.as_str().into(), vendor.as_str().into(), model.as_str().into(), to_numeric(input).into(),
                  to_numeric(output).into(), currency.as_str().into()],
            )?;
            Ok(())
        })
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc3339() {
        assert!(super::rfc3339("2026-01-07T13:19:18.265Z"));
        assert!(super::rfc3339("2026-01-07T13:19:18+02:00"));
        assert!(!super::rfc3339("2026-01-07"));
        assert!(!super::rfc3339("yesterday"));
        assert!(!super::rfc3339("2026-01-07T13:19:18.1234567Z"));
    }
}
