//! Usage (SPEC §6): record_usage, single and batch; matching against the prices of
//! the customer's subscriptions; fees, token detail, costs; idempotency by event_id.
//!
//! One event runs in this order:
//! 1. validate; resolve the customer; match prices (read-only) and compute the fees,
//!    token detail and cost — all before anything is written;
//! 2. claim the event_id by inserting the event row (a replay stops here);
//! 3. capture the hold, if one is named;
//! 4. charge each asset's total through the ledger (one transaction per event).

use crate::catalog::resolve_asset;
use crate::customers;
use crate::error::{api, CyError, Result};
use crate::holds;
use crate::money::{self, stored, to_numeric};
use crate::plan_cache::{one, run};
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
                return match d.and_then(|d| i64::try_from(d.mantissa()).ok().filter(|_| d.scale() == 0).or_else(|| d.normalize().to_string().parse().ok())) {
                    Some(i) => Ok(Some(i)),
                    None => Err(CyError::invalid(format!("data.{n} must be a non-negative integer"))),
                };
            }
        }
        Ok(None)
    };
    Ok((model, count(["input_tokens", "prompt_tokens"])?, count(["output_tokens", "completion_tokens"])?))
}

/// The prices of the customer's subscriptions active at `at` that bill this event type.
fn matching_prices(
    c: &mut SpiClient<'_>,
    customer: &str,
    event_type: &str,
    at: Option<TimestampWithTimeZone>,
) -> Result<Vec<((String, i32, i32), Rc<Price>)>> {
    let t = run(
        c,
        "SELECT p.product_id, p.version, p.position, p.definition::text FROM credyt.subscription s \
         JOIN credyt.price p ON p.product_id = s.product_id AND p.version = s.version AND p.event_type = $2 \
         WHERE s.customer_id = $1 AND s.starts_at <= coalesce($3, now()) \
           AND (s.ends_at IS NULL OR s.ends_at > coalesce($3, now())) \
         ORDER BY s.id, p.position",
        &[customer.into(), event_type.into(), at.into()],
    )?;
    let mut out = Vec::new();
    for row in t {
        let key = (
            row.get::<String>(1)?.unwrap_or_default(),
            row.get::<i32>(2)?.unwrap_or_default(),
            row.get::<i32>(3)?.unwrap_or_default(),
        );
        let cached = PRICES.with(|p| p.borrow().get(&key).cloned());
        let price = match cached {
            Some(p) => p,
            None => {
                let text = row.get::<String>(4)?.unwrap_or_default();
                let value: Value = serde_json::from_str(&text).map_err(CyError::internal)?;
                let price = Rc::new(
                    credyt_core::pricing::parse_price(&value, "price").map_err(|e| CyError::internal(format!("stored price: {e}")))?,
                );
                PRICES.with(|p| p.borrow_mut().insert(key.clone(), price.clone()));
                price
            }
        };
        out.push((key, price));
    }
    Ok(out)
}

/// Costs given with the event: [{vendor, amount, currency, category}], summed when
/// they share a currency.
fn given_costs(costs: &Value) -> Result<(Option<Decimal>, Option<String>)> {
    let arr = costs.as_array().ok_or_else(|| CyError::invalid("costs must be a JSON array of {vendor, amount, currency, category}"))?;
    let mut total: BTreeMap<String, Decimal> = BTreeMap::new();
    for (i, item) in arr.iter().enumerate() {
        let o = item.as_object().ok_or_else(|| CyError::invalid(format!("costs[{i}] must be a JSON object")))?;
        for k in o.keys() {
            if !matches!(k.as_str(), "vendor" | "amount" | "currency" | "category") {
                return Err(CyError::invalid(format!("costs[{i}].{k} is not a known field")));
            }
        }
        if !o.get("vendor").is_some_and(|v| v.as_str().is_some_and(|s| !s.is_empty())) {
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
            .ok_or_else(|| CyError::invalid(format!("costs[{i}].amount must be a non-negative number with at most 12 decimals")))?;
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

/// A cost derived from set_model_cost and the token counts.
fn derived_cost(
    c: &mut SpiClient<'_>,
    account: &str,
    data: &Value,
    model: &str,
    input: Option<i64>,
    output: Option<i64>,
) -> Result<(Option<Decimal>, Option<String>)> {
    let vendor = data.get("vendor").or_else(|| data.get("provider")).and_then(Value::as_str);
    let t = run(
        c,
        "SELECT input_per_million::text, output_per_million::text, currency FROM credyt.model_cost \
         WHERE account_id = $1 AND model = $2 AND ($3::text IS NULL OR vendor = $3) ORDER BY updated_at DESC LIMIT 1",
        &[account.into(), model.into(), vendor.into()],
    )?;
    if t.is_empty() {
        return Ok((None, None));
    }
    let row = t.first();
    let ipm = stored(&row.get::<String>(1)?.unwrap_or_default())?;
    let opm = stored(&row.get::<String>(2)?.unwrap_or_default())?;
    let million = Decimal::from(1_000_000);
    let cost = Decimal::from(input.unwrap_or(0)) * ipm / million + Decimal::from(output.unwrap_or(0)) * opm / million;
    Ok((Some(round_fee(cost)), row.get::<String>(3)?))
}

/// Records one event for `account`. Everything is computed before the first write.
pub fn record(c: &mut SpiClient<'_>, account: &str, ev: Event) -> Result<Outcome> {
    let customer = customers::resolve(c, account, Some(&ev.customer))?;
    let (model, input_tokens, output_tokens) = tokens(&ev.data)?;

    // Fees, one per matching price and pricing entry.
    let mut fees = Vec::new();
    let mut totals: BTreeMap<String, Decimal> = BTreeMap::new();
    let matched = matching_prices(c, &customer, &ev.event_type, ev.occurred_at)?;
    for ((product, version, position), price) in &matched {
        let computed = usage_fees(price, &ev.data).map_err(|FeeError::Volume { field, problem }| {
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

    // Cost, and revenue in the cost's currency.
    let (cost, cost_currency) = match (&ev.costs, &model) {
        (Some(costs), _) => given_costs(costs)?,
        (None, Some(m)) => derived_cost(c, account, &ev.data, m, input_tokens, output_tokens)?,
        (None, None) => (None, None),
    };
    let revenue = match (&asset, &cost_currency) {
        (Some(a), Some(cur)) if a == cur => Some(charged),
        (Some(a), Some(cur)) => {
            let t = run(
                c,
                "SELECT rate::text FROM credyt.asset WHERE account_id = $1 AND code = $2 AND rate_currency = $3 AND rate IS NOT NULL",
                &[account.into(), a.as_str().into(), cur.as_str().into()],
            )?;
            if t.is_empty() {
                None
            } else {
                Some(round_fee(charged * stored(&t.first().get::<String>(1)?.unwrap_or_default())?))
            }
        }
        _ => None,
    };

    // Claim the event id.
    let txn_id = crate::ids::new_id("txn")?;
    let fees_json = Value::Array(fees);
    let inserted = one::<bool>(
        c,
        "INSERT INTO credyt.usage_event (account_id, event_id, customer_id, event_type, data, occurred_at, occurred_at_given, \
           subject, description, model, input_tokens, output_tokens, status, fees, charged, asset, revenue, cost, \
           cost_currency, costs, hold_id, txn_id) \
         VALUES ($1, $2, $3, $4, $5, coalesce($6, now()), $6 IS NOT NULL, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, \
           $17, $18, $19, $20, $21) \
         ON CONFLICT (account_id, event_id) DO NOTHING RETURNING true",
        &[
            account.into(),
            ev.event_id.as_str().into(),
            customer.as_str().into(),
            ev.event_type.as_str().into(),
            JsonB(ev.data.clone()).into(),
            ev.occurred_at.into(),
            ev.subject.as_deref().into(),
            ev.description.as_deref().into(),
            model.as_deref().into(),
            input_tokens.into(),
            output_tokens.into(),
            status.into(),
            JsonB(fees_json.clone()).into(),
            to_numeric(charged).into(),
            asset.as_deref().into(),
            revenue.map(to_numeric).into(),
            cost.map(to_numeric).into(),
            cost_currency.as_deref().into(),
            ev.costs.clone().map(JsonB).into(),
            ev.hold_id.as_deref().into(),
            (status == "charged").then_some(txn_id.as_str()).into(),
        ],
    )?;
    if inserted.is_none() {
        return replay(c, account, &customer, &ev);
    }

    // Capture the hold: it stops counting before the charge is checked against the
    // limit, so a charge up to the held amount always fits.
    if let Some(reference) = &ev.hold_id {
        let hold = holds::find(c, account, reference)?;
        if hold.customer != customer {
            return Err(CyError::invalid(format!("hold {reference} belongs to another customer")));
        }
        holds::require_open(&hold, reference)?;
        let captured = totals.get(&hold.asset).copied().unwrap_or_default();
        holds::close(c, &hold, "captured", Some(captured), Some(&ev.event_id))?;
    }

    let mut available = None;
    if status == "charged" {
        run(
            c,
            "INSERT INTO credyt.ledger_txn (account_id, id, kind, customer_id, payload, description) \
             VALUES ($1, $2, 'usage', $3, $4, $5)",
            &[
                account.into(),
                txn_id.as_str().into(),
                customer.as_str().into(),
                JsonB(json!({"event_id": ev.event_id})).into(),
                ev.description.as_deref().into(),
            ],
        )?;
        // Assets in sorted order: events charging several assets lock them in one order.
        for (a, total) in &totals {
            if total.is_zero() {
                continue;
            }
            let w = WalletRef { account, customer: &customer, name: "default", asset: a };
            let after = wallet::debit(c, &w, &txn_id, Debit { amount: *total, draw: DrawFrom::AnyLot, system_account: "revenue", kind: "usage" })?;
            if asset.as_deref() == Some(a.as_str()) {
                available = Some(after);
            }
        }
    } else if let Some(a) = &asset {
        available = Some(wallet::available_of(c, &customer, "default", a)?);
    }
    Ok(Outcome { event_id: ev.event_id, duplicate: false, status: status.into(), fees: fees_json, charged, asset, available })
}

/// The event id is taken: the same request gets the original result (with the
/// balance as it is now); another payload is a conflict.
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
        return Err(CyError::conflict(format!("event_id {:?} was already recorded with a different payload", ev.event_id))
            .detail(format!("original event: {}", row.get::<String>(6)?.unwrap_or_default()))
            .hint("replays must repeat the customer, event_type, data, occurred_at and subject exactly"));
    }
    let status = row.get::<String>(2)?.unwrap_or_default();
    let fees: Value = serde_json::from_str(&row.get::<String>(3)?.unwrap_or_default()).map_err(CyError::internal)?;
    let charged = stored(&row.get::<String>(4)?.unwrap_or_default())?;
    let asset = row.get::<String>(5)?;
    let available = match &asset {
        Some(a) => Some(wallet::available_of(c, customer, "default", a)?),
        None => None,
    };
    Ok(Outcome { event_id: ev.event_id.clone(), duplicate: true, status, fees, charged, asset, available })
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
        return Err(CyError::invalid("data must be a JSON object").hint("pass e.g. '{\"model\": \"gpt-4o\", \"input_tokens\": 1200}'"));
    }
    Ok(v)
}

fn subject(v: Option<String>) -> Result<Option<String>> {
    match v {
        Some(s) if s.is_empty() || s.chars().count() > 255 => Err(CyError::invalid("subject must be 1 to 255 characters")),
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
#[allow(clippy::too_many_arguments)]
fn record_usage(
    customer: Option<String>,
    event_id: Option<String>,
    event_type: Option<String>,
    data: default!(Option<JsonB>, "'{}'"),
    occurred_at: default!(Option<TimestampWithTimeZone>, "NULL"),
    subject: default!(Option<String>, "NULL"),
    description: default!(Option<String>, "NULL"),
    costs: default!(Option<JsonB>, "NULL"),
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
            data: data_object(data.map(|j| j.0))?,
            occurred_at: match occurred_at {
                Some(t) if !t.is_finite() => return Err(CyError::invalid("occurred_at must be a finite timestamp")),
                other => other,
            },
            subject: self::subject(subject)?,
            description: validate::optional_text("description", description)?,
            costs: costs.map(|j| j.0),
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
    if !matches!(b[10], b'T' | b't' | b' ') || !digits(11..13) || b[13] != b':' || !digits(14..16) || b[16] != b':' || !digits(17..19) {
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
            "customer" | "event_id" | "event_type" | "data" | "occurred_at" | "subject" | "description" | "costs" | "hold_id"
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

/// At most this many events per batch call.
const MAX_BATCH: usize = 10_000;

#[pg_extern(security_definer, name = "record_usage")]
#[search_path(@extschema@, pg_temp)]
fn record_usage_batch(events: Option<JsonB>) -> TableIterator<
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
        let events = validate::required("events", events)?.0;
        let arr = match events {
            Value::Array(a) => a,
            _ => return Err(CyError::invalid("events must be a JSON array of events")),
        };
        if arr.len() > MAX_BATCH {
            return Err(CyError::invalid(format!("events has {} elements; at most {MAX_BATCH} per call", arr.len())));
        }
        Spi::connect_mut(|c| {
            let account = scope(c)?;
            let mut out = Vec::with_capacity(arr.len());
            for (i, v) in arr.iter().enumerate() {
                let at = |e: CyError| CyError { message: format!("events[{i}]: {}", e.message), ..e };
                let ev = batch_event(c, v).map_err(at)?;
                out.push(record(c, &account, ev).map_err(at)?);
            }
            Ok(out)
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
