//! Prices in Credyt's JSON shape (SPEC §4): validation with errors that name the
//! offending field, dimensional matching, and fee math for usage-based prices.
//!
//! Numbers are read exactly: serde_json is built with `arbitrary_precision`, so a
//! JSON number's literal text reaches `Decimal` without passing through `f64`.

use crate::billing::{Recurrence, Unit};
use crate::money::{round_fee, SCALE};
use rust_decimal::Decimal;
use serde_json::{Map, Value};
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsageType {
    Unit,
    Volume,
    UnitAndVolume,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PriceKind {
    Usage {
        event_type: String,
        usage_type: UsageType,
        volume_field: Option<String>,
        billable_dimensions: Vec<String>,
    },
    /// `recurring: None` is a one_time fee, charged at subscribe
    Fixed {
        recurring: Option<Recurrence>,
    },
    Seat {
        recurring: Recurrence,
    },
    Outcome {
        outcome_type: String,
        settlement_window: String,
    },
}

/// One row of a price's value table: the dimensions it applies to and its rates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriceValue {
    /// (dimension, value or "*")
    pub dimensions: Vec<(String, String)>,
    pub unit_price: Option<Decimal>,
    pub volume_rate: Option<Decimal>,
    pub package_size: Decimal,
    pub min_amount: Option<Decimal>,
    pub max_amount: Option<Decimal>,
    pub percent: Option<Decimal>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pricing {
    pub asset: String,
    pub values: Vec<PriceValue>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Price {
    pub kind: PriceKind,
    pub pricing: Vec<Pricing>,
}

impl Price {
    pub fn type_name(&self) -> &'static str {
        match self.kind {
            PriceKind::Usage { .. } => "usage_based",
            PriceKind::Fixed { .. } => "fixed",
            PriceKind::Seat { .. } => "seat",
            PriceKind::Outcome { .. } => "outcome",
        }
    }
    pub fn event_type(&self) -> Option<&str> {
        match &self.kind {
            PriceKind::Usage { event_type, .. } => Some(event_type),
            _ => None,
        }
    }
    pub fn assets(&self) -> impl Iterator<Item = &str> {
        self.pricing.iter().map(|p| p.asset.as_str())
    }
}

/// A validation error: the JSON path of the field and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriceError {
    pub field: String,
    pub problem: String,
}

impl std::fmt::Display for PriceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.field, self.problem)
    }
}

fn err<T>(field: &str, problem: impl Into<String>) -> Result<T, PriceError> {
    Err(PriceError { field: field.to_string(), problem: problem.into() })
}

/// Reads a JSON number (or numeric string) exactly.
pub fn exact_number(v: &Value) -> Option<Decimal> {
    let text = match v {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.trim().to_string(),
        _ => return None,
    };
    if text.contains(['e', 'E']) {
        Decimal::from_scientific(&text).ok()
    } else {
        Decimal::from_str(&text).ok()
    }
}

fn object<'a>(v: &'a Value, field: &str) -> Result<&'a Map<String, Value>, PriceError> {
    v.as_object().map_or_else(|| err(field, "must be a JSON object"), Ok)
}

fn string(o: &Map<String, Value>, key: &str, path: &str) -> Result<String, PriceError> {
    let field = format!("{path}.{key}");
    match o.get(key) {
        Some(Value::String(s)) if !s.trim().is_empty() && s.len() <= 255 => Ok(s.clone()),
        Some(Value::String(_)) => err(&field, "must be 1 to 255 characters"),
        Some(_) => err(&field, "must be a string"),
        None => err(&field, "is required"),
    }
}

/// An optional non-negative amount with at most 12 fractional digits.
fn amount(o: &Map<String, Value>, key: &str, path: &str) -> Result<Option<Decimal>, PriceError> {
    let field = format!("{path}.{key}");
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => {
            let d = exact_number(v).map_or_else(|| err(&field, "must be a number"), Ok)?.normalize();
            if d.is_sign_negative() && !d.is_zero() {
                return err(&field, "must not be negative");
            }
            if d.scale() > SCALE {
                return err(&field, format!("has more than {SCALE} fractional digits"));
            }
            if d > crate::money::max_amount() {
                return err(&field, "exceeds 10^15");
            }
            Ok(Some(d))
        }
    }
}

/// A fixed or seat price's `billing_model`: `{type: recurring, recurring: {interval:
/// day|week|month|year, interval_count}}`, or for a fixed price `{type: one_time}`.
/// Returns None for one_time.
fn billing_model(o: &Map<String, Value>, path: &str, one_time_allowed: bool) -> Result<Option<Recurrence>, PriceError> {
    let bm_path = format!("{path}.billing_model");
    let bm = object(o.get("billing_model").unwrap_or(&Value::Null), &bm_path)?;
    match bm.get("type").and_then(Value::as_str) {
        Some("recurring") => {}
        Some("one_time") if one_time_allowed => return Ok(None),
        _ if one_time_allowed => return err(&format!("{bm_path}.type"), "must be \"recurring\" or \"one_time\""),
        _ => return err(&format!("{bm_path}.type"), "must be \"recurring\""),
    }
    let rec_path = format!("{bm_path}.recurring");
    let rec = object(bm.get("recurring").unwrap_or(&Value::Null), &rec_path)?;
    let interval_path = format!("{rec_path}.interval");
    let Some((unit, times)) = rec.get("interval").and_then(Value::as_str).and_then(interval_unit) else {
        return err(
            &interval_path,
            "must be one of day, week, month, year, or a period of whole days, weeks, months or years (P1M, '3 months')",
        );
    };
    let count = match rec.get("interval_count") {
        None | Some(Value::Null) => 1,
        Some(v) => match exact_number(v).filter(|d| d.fract().is_zero()).and_then(|d| i64::try_from(d).ok()) {
            Some(n) => n,
            None => return err(&format!("{rec_path}.interval_count"), "must be a whole number"),
        },
    };
    Recurrence::new(unit, count.saturating_mul(times)).map(Some).or_else(|why| {
        let field = if times == 1 { format!("{rec_path}.interval_count") } else { interval_path.clone() };
        err(&field, why)
    })
}

/// A billing interval: a unit (Credyt's day|week|month|year) or a period through the
/// one parser of periods (`P1M`, `P2W`, `'3 months'`), as (unit, how many of it).
fn interval_unit(s: &str) -> Option<(Unit, i64)> {
    if let Some(u) = Unit::parse(s) {
        return Some((u, 1));
    }
    let p = crate::period::parse(s).ok()?;
    match (p.months, p.days, p.micros) {
        (m, 0, 0) if m > 0 && m % 12 == 0 => Some((Unit::Year, m / 12)),
        (m, 0, 0) if m > 0 => Some((Unit::Month, m)),
        (0, d, 0) if d > 0 && d % 7 == 0 => Some((Unit::Week, d / 7)),
        (0, d, 0) if d > 0 => Some((Unit::Day, d)),
        _ => None,
    }
}

/// A required, non-empty JSON array.
fn nonempty_array<'v>(v: Option<&'v Value>, field: &str) -> Result<&'v Vec<Value>, PriceError> {
    match v {
        Some(Value::Array(a)) if !a.is_empty() => Ok(a),
        Some(Value::Array(_)) => err(field, "must not be empty"),
        Some(_) => err(field, "must be an array"),
        None => err(field, "is required"),
    }
}

/// A pricing's `values`, in either form: flat rows that carry their own `dimensions`,
/// or Credyt's dimensional groups `{name, dimensions, values: [rows]}` whose rows share
/// the group's dimensions. Both become the same flat rows.
fn parse_values(v: Option<&Value>, path: &str, kind: &PriceKind) -> Result<Vec<PriceValue>, PriceError> {
    let field = format!("{path}.values");
    let arr = nonempty_array(v, &field)?;
    let mut out = Vec::with_capacity(arr.len());
    for (i, item) in arr.iter().enumerate() {
        let vpath = format!("{field}[{i}]");
        match item.get("values") {
            Some(rows) => {
                let o = object(item, &vpath)?;
                for key in o.keys() {
                    if !matches!(key.as_str(), "name" | "dimensions" | "values") {
                        return err(&format!("{vpath}.{key}"), "is not a known field of a dimensional price");
                    }
                }
                optional_name(o, &vpath)?;
                let dimensions = parse_dimensions(o.get("dimensions"), &vpath, kind)?;
                let rows_path = format!("{vpath}.values");
                for (j, row) in nonempty_array(Some(rows), &rows_path)?.iter().enumerate() {
                    let rpath = format!("{rows_path}[{j}]");
                    if row.get("dimensions").is_some() {
                        return err(&format!("{rpath}.dimensions"), "is given by the enclosing dimensional price");
                    }
                    let mut value = parse_value(row, &rpath, kind)?;
                    value.dimensions = dimensions.clone();
                    out.push(value);
                }
            }
            None => out.push(parse_value(item, &vpath, kind)?),
        }
    }
    Ok(out)
}

/// An optional `name`: a string of 1 to 255 characters.
fn optional_name(o: &Map<String, Value>, path: &str) -> Result<(), PriceError> {
    match o.get("name") {
        None | Some(Value::Null) => Ok(()),
        Some(_) => string(o, "name", path).map(|_| ()),
    }
}

/// A value's (or a dimensional group's) `dimensions`: each a billable dimension of the
/// price, with a string value ("*" matches any).
fn parse_dimensions(d: Option<&Value>, vpath: &str, kind: &PriceKind) -> Result<Vec<(String, String)>, PriceError> {
    let dims_allowed: &[String] = match kind {
        PriceKind::Usage { billable_dimensions, .. } => billable_dimensions,
        _ => &[],
    };
    let mut dimensions = Vec::new();
    if let Some(d) = d {
        let dpath = format!("{vpath}.dimensions");
        for (k, val) in object(d, &dpath)? {
            if !dims_allowed.contains(k) {
                return err(&format!("{dpath}.{k}"), "is not one of the price's billable_dimensions");
            }
            match val {
                Value::String(s) => dimensions.push((k.clone(), s.clone())),
                _ => return err(&format!("{dpath}.{k}"), "must be a string (\"*\" matches any value)"),
            }
        }
    }
    Ok(dimensions)
}

/// One row of a pricing's `values`, at `vpath`.
fn parse_value(item: &Value, vpath: &str, kind: &PriceKind) -> Result<PriceValue, PriceError> {
    let o = object(item, vpath)?;
    for key in o.keys() {
        match key.as_str() {
            "name" | "dimensions" | "unit_price" | "volume_rate" | "package_size" | "min_amount" | "max_amount"
            | "percent" => {}
            "up_to" => {
                return err(&format!("{vpath}.up_to"), "belongs to tiered prices, which credyt does not offer yet")
            }
            _ => return err(&format!("{vpath}.{key}"), "is not a known field"),
        }
    }
    optional_name(o, vpath)?;
    let dimensions = parse_dimensions(o.get("dimensions"), vpath, kind)?;
    // (read in this order, so that the first bad field is the one reported)
    let (unit_price, volume_rate, percent) =
        (amount(o, "unit_price", vpath)?, amount(o, "volume_rate", vpath)?, amount(o, "percent", vpath)?);
    let package_size = amount(o, "package_size", vpath)?.unwrap_or(Decimal::ONE);
    if package_size.is_zero() {
        return err(&format!("{vpath}.package_size"), "must be greater than zero");
    }
    let (min_amount, max_amount) = (amount(o, "min_amount", vpath)?, amount(o, "max_amount", vpath)?);
    let value = PriceValue { dimensions, unit_price, volume_rate, package_size, min_amount, max_amount, percent };
    if let (Some(lo), Some(hi)) = (value.min_amount, value.max_amount) {
        if lo > hi {
            return err(&format!("{vpath}.min_amount"), "must not exceed max_amount");
        }
    }
    check_value_fields(&value, vpath, kind)?;
    Ok(value)
}

/// The fields each kind of price needs in a value, and those it refuses.
fn check_value_fields(v: &PriceValue, vpath: &str, kind: &PriceKind) -> Result<(), PriceError> {
    match kind {
        PriceKind::Usage { usage_type, .. } => {
            let needs_unit = matches!(usage_type, UsageType::Unit | UsageType::UnitAndVolume);
            let needs_volume = matches!(usage_type, UsageType::Volume | UsageType::UnitAndVolume);
            if needs_unit && v.unit_price.is_none() {
                return err(&format!("{vpath}.unit_price"), "is required by this usage_type");
            }
            if needs_volume && v.volume_rate.is_none() {
                return err(&format!("{vpath}.volume_rate"), "is required by this usage_type");
            }
            if v.percent.is_some() {
                return err(&format!("{vpath}.percent"), "applies to outcome prices only");
            }
        }
        PriceKind::Fixed { .. } | PriceKind::Seat { .. } => {
            if v.unit_price.is_none() {
                return err(&format!("{vpath}.unit_price"), "is required");
            }
        }
        PriceKind::Outcome { .. } => {
            if v.unit_price.is_none() && v.percent.is_none() {
                return err(&format!("{vpath}.unit_price"), "or percent is required");
            }
            if v.percent.is_some_and(|p| p > Decimal::ONE_HUNDRED) {
                return err(&format!("{vpath}.percent"), "must be at most 100");
            }
        }
    }
    Ok(())
}

/// Validates one price. `path` names it in errors, e.g. `prices[0]`.
pub fn parse_price(v: &Value, path: &str) -> Result<Price, PriceError> {
    let o = object(v, path)?;
    // Credyt's own fields: a name, an id, and `pricing_model` (only "flat" here).
    optional_name(o, path)?;
    if let Some(id) = o.get("id").filter(|i| !i.is_null()) {
        if !id.is_string() {
            return err(&format!("{path}.id"), "must be a string");
        }
    }
    match o.get("pricing_model").map(|m| m.as_str()) {
        None | Some(Some("flat")) => {}
        Some(_) => {
            return err(
                &format!("{path}.pricing_model"),
                "must be \"flat\" (tiered, bulk and package prices are not offered yet)",
            )
        }
    }
    let type_field = format!("{path}.type");
    let kind = match o.get("type").and_then(Value::as_str) {
        Some("usage_based") => {
            // Credyt gives usage prices `billing_model: {type: real_time}`; that is what they are.
            if let Some(bm) = o.get("billing_model") {
                let bm_path = format!("{path}.billing_model");
                if object(bm, &bm_path)?.get("type").and_then(Value::as_str) != Some("real_time") {
                    return err(&format!("{bm_path}.type"), "must be \"real_time\" for a usage_based price");
                }
            }
            usage_calculation(o, path)?
        }
        Some("fixed") => PriceKind::Fixed { recurring: billing_model(o, path, true)? },
        Some("seat") => match billing_model(o, path, false)? {
            Some(recurring) => PriceKind::Seat { recurring },
            None => return err(&format!("{path}.billing_model.type"), "must be \"recurring\""),
        },
        Some("outcome") => {
            let outcome_type = string(o, "outcome_type", path)?;
            let settlement_window = string(o, "settlement_window", path)?;
            match crate::period::parse(&settlement_window) {
                Ok(p) if p.months >= 0 && p.days >= 0 && p.micros >= 0 && p.comparable_micros() > 0 => {}
                Ok(_) => return err(&format!("{path}.settlement_window"), "must be a positive period such as P7D"),
                Err(why) => return err(&format!("{path}.settlement_window"), why),
            }
            PriceKind::Outcome { outcome_type, settlement_window }
        }
        Some(_) => return err(&type_field, "must be one of usage_based, fixed, seat, outcome"),
        None => return err(&type_field, "is required"),
    };
    let pricing_field = format!("{path}.pricing");
    let arr = nonempty_array(o.get("pricing"), &pricing_field)?;
    let mut pricing = Vec::with_capacity(arr.len());
    for (i, p) in arr.iter().enumerate() {
        let ppath = format!("{pricing_field}[{i}]");
        let po = object(p, &ppath)?;
        let asset = string(po, "asset", &ppath)?;
        if pricing.iter().any(|x: &Pricing| x.asset == asset) {
            return err(&format!("{ppath}.asset"), "appears twice in this price");
        }
        let values = parse_values(po.get("values"), &ppath, &kind)?;
        if !matches!(kind, PriceKind::Usage { .. }) && values.len() != 1 {
            return err(&format!("{ppath}.values"), "must hold exactly one value for a price that is not usage_based");
        }
        pricing.push(Pricing { asset, values });
    }
    Ok(Price { kind, pricing })
}

/// A usage-based price's `usage_calculation`.
fn usage_calculation(o: &Map<String, Value>, path: &str) -> Result<PriceKind, PriceError> {
    let uc_path = format!("{path}.usage_calculation");
    let uc = object(o.get("usage_calculation").unwrap_or(&Value::Null), &uc_path)?;
    let event_type = string(uc, "event_type", &uc_path)?;
    let usage_type = match uc.get("usage_type").and_then(Value::as_str) {
        Some("unit") => UsageType::Unit,
        Some("volume") => UsageType::Volume,
        Some("unit_and_volume") => UsageType::UnitAndVolume,
        _ => return err(&format!("{uc_path}.usage_type"), "must be one of unit, volume, unit_and_volume"),
    };
    for (key, only) in [("unit_aggregation", "count"), ("volume_aggregation", "sum")] {
        match uc.get(key) {
            None | Some(Value::Null) => {}
            Some(v) if v.as_str() == Some(only) => {}
            Some(_) => {
                return err(
                    &format!("{uc_path}.{key}"),
                    format!("must be \"{only}\" (custom aggregations are not offered)"),
                )
            }
        }
    }
    let volume_field = match uc.get("volume_field") {
        None | Some(Value::Null) => None,
        Some(_) => Some(string(uc, "volume_field", &uc_path)?),
    };
    if usage_type != UsageType::Unit && volume_field.is_none() {
        return err(&format!("{uc_path}.volume_field"), "is required by this usage_type");
    }
    let billable_dimensions = match uc.get("billable_dimensions") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => {
            let mut dims = Vec::new();
            for (i, d) in a.iter().enumerate() {
                match d.as_str() {
                    Some(s) if !s.is_empty() && !dims.iter().any(|x: &String| x == s) => dims.push(s.to_string()),
                    _ => {
                        return err(
                            &format!("{uc_path}.billable_dimensions[{i}]"),
                            "must be a distinct, non-empty string",
                        )
                    }
                }
            }
            dims
        }
        Some(_) => return err(&format!("{uc_path}.billable_dimensions"), "must be an array of strings"),
    };
    Ok(PriceKind::Usage { event_type, usage_type, volume_field, billable_dimensions })
}

/// Validates a product's price list.
pub fn parse_prices(v: &Value) -> Result<Vec<Price>, PriceError> {
    let arr = match v {
        Value::Array(a) if !a.is_empty() => a,
        Value::Array(_) => return err("prices", "must not be empty"),
        _ => return err("prices", "must be a JSON array of prices"),
    };
    arr.iter().enumerate().map(|(i, p)| parse_price(p, &format!("prices[{i}]"))).collect()
}

/// A product entitlement (SPEC §7): credit issued at subscribe time and renewed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entitlement {
    pub name: String,
    pub asset: String,
    pub amount: Decimal,
    pub purpose: crate::burndown::Purpose,
    pub priority: Option<i32>,
    /// the period as Postgres interval text (parsed from ISO 8601 or interval text),
    /// or None for a one-off entitlement
    pub every: Option<String>,
    /// how long a one-off entitlement lasts (Postgres interval text; None: until used)
    pub lasts: Option<String>,
    pub on_expiry: crate::burndown::ExpiryPolicy,
}

/// Validates a product's entitlements list.
pub fn parse_entitlements(v: &Value) -> Result<Vec<Entitlement>, PriceError> {
    let arr = match v {
        Value::Array(a) => a,
        _ => return err("entitlements", "must be a JSON array"),
    };
    arr.iter().enumerate().map(|(i, e)| parse_entitlement(e, &format!("entitlements[{i}]"))).collect()
}

/// The fields an entitlement may have: credyt's (`every`, `on_expiry`) and Credyt's
/// (`lifecycle`, `accounting`).
const ENTITLEMENT_FIELDS: &[&str] =
    &["name", "asset", "amount", "purpose", "priority", "every", "on_expiry", "lifecycle", "accounting"];

/// One entitlement, at `path`.
fn parse_entitlement(e: &Value, path: &str) -> Result<Entitlement, PriceError> {
    let o = object(e, path)?;
    if let Some(key) = o.keys().find(|k| !ENTITLEMENT_FIELDS.contains(&k.as_str())) {
        return err(&format!("{path}.{key}"), "is not a known field");
    }
    if let Some(a) = o.get("accounting").filter(|a| !a.is_null()) {
        accounting(a, &format!("{path}.accounting"))?;
    }
    let name = string(o, "name", path)?;
    let asset = string(o, "asset", path)?;
    let amount = match amount(o, "amount", path)? {
        Some(a) if !a.is_zero() => a,
        Some(_) => return err(&format!("{path}.amount"), "must be greater than zero"),
        None => return err(&format!("{path}.amount"), "is required"),
    };
    let purpose = match o.get("purpose") {
        None | Some(Value::Null) => crate::burndown::Purpose::Bundled,
        Some(v) => match v.as_str().and_then(crate::burndown::Purpose::parse) {
            Some(p) => p,
            None => return err(&format!("{path}.purpose"), "must be one of promotion, bundled, paid"),
        },
    };
    let priority = match o.get("priority") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => match n.to_string().parse::<i32>() {
            Ok(p) if p >= 0 => Some(p),
            _ => return err(&format!("{path}.priority"), "must be a non-negative integer"),
        },
        Some(_) => return err(&format!("{path}.priority"), "must be a non-negative integer"),
    };
    let (every, lasts, on_expiry) = timing(o, path)?;
    Ok(Entitlement { name, asset, amount, purpose, priority, every, lasts, on_expiry })
}

/// When an entitlement renews (`every`), how long a one-off lasts, and what happens to
/// what is left: from `every`/`on_expiry`, or from Credyt's `lifecycle`.
type Timing = (Option<String>, Option<String>, crate::burndown::ExpiryPolicy);

fn timing(o: &Map<String, Value>, path: &str) -> Result<Timing, PriceError> {
    let every = match o.get("every") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => {
            match crate::period::parse(s).and_then(|p| p.check_recurring().map(|_| p).map_err(String::from)) {
                Ok(p) => Some(p.to_sql()),
                Err(why) => return err(&format!("{path}.every"), why),
            }
        }
        Some(_) => return err(&format!("{path}.every"), "must be a period such as P1M or '1 month'"),
    };
    let on_expiry = match o.get("on_expiry") {
        None | Some(Value::Null) => crate::burndown::ExpiryPolicy::Expire,
        Some(v) => match v.as_str().and_then(crate::burndown::ExpiryPolicy::parse) {
            Some(p) => p,
            None => return err(&format!("{path}.on_expiry"), "must be one of expire, rollover, reserve"),
        },
    };
    let Some(l) = o.get("lifecycle").filter(|l| !l.is_null()) else {
        return Ok((every, None, on_expiry));
    };
    let lpath = format!("{path}.lifecycle");
    if every.is_some() || o.get("on_expiry").is_some_and(|v| !v.is_null()) {
        return err(&lpath, "and every/on_expiry are two ways to say the same: give one");
    }
    Ok(match lifecycle(l, &lpath)? {
        (period, Some(policy)) => (Some(period), None, policy),
        (period, None) => (None, Some(period), crate::burndown::ExpiryPolicy::Expire),
    })
}

/// Credyt's `lifecycle: {duration: day|week|month|year, duration_count, refresh:
/// {strategy: expire_and_replace|rollover}}`: the period as interval text, and, when it
/// refreshes, what happens to what is left at each renewal.
fn lifecycle(v: &Value, lpath: &str) -> Result<(String, Option<crate::burndown::ExpiryPolicy>), PriceError> {
    let o = object(v, lpath)?;
    for key in o.keys() {
        if !matches!(key.as_str(), "duration" | "duration_count" | "refresh") {
            return err(&format!("{lpath}.{key}"), "is not a known field");
        }
    }
    let unit = match o.get("duration").and_then(Value::as_str) {
        Some(u @ ("day" | "week" | "month" | "year")) => u,
        _ => return err(&format!("{lpath}.duration"), "must be one of day, week, month, year"),
    };
    let count = match o.get("duration_count") {
        None | Some(Value::Null) => 1,
        Some(Value::Number(n)) => match n.to_string().parse::<i32>() {
            Ok(c) if (1..=1000).contains(&c) => c,
            _ => return err(&format!("{lpath}.duration_count"), "must be a whole number from 1 to 1000"),
        },
        Some(_) => return err(&format!("{lpath}.duration_count"), "must be a whole number from 1 to 1000"),
    };
    let period = crate::period::parse(&format!("{count} {unit}"))
        .map_err(|why| PriceError { field: format!("{lpath}.duration"), problem: why })?;
    let refresh = match o.get("refresh") {
        None | Some(Value::Null) => None,
        Some(r) => {
            let rpath = format!("{lpath}.refresh");
            let ro = object(r, &rpath)?;
            if let Some(key) = ro.keys().find(|k| k.as_str() != "strategy") {
                return err(&format!("{rpath}.{key}"), "is not a known field");
            }
            match ro.get("strategy").and_then(Value::as_str) {
                Some("expire_and_replace") => Some(crate::burndown::ExpiryPolicy::Expire),
                Some("rollover") => Some(crate::burndown::ExpiryPolicy::Rollover),
                _ => return err(&format!("{rpath}.strategy"), "must be one of expire_and_replace, rollover"),
            }
        }
    };
    if let (Some(_), Err(why)) = (refresh, period.check_recurring()) {
        return err(&format!("{lpath}.duration_count"), format!("of a refreshing entitlement: the period {why}"));
    }
    Ok((period.to_sql(), refresh))
}

/// Credyt's `accounting: {revenue_basis, cost_basis: auto}`, checked and kept in the
/// stored JSON (credyt's margins come from fees and costs, not from it).
fn accounting(v: &Value, apath: &str) -> Result<(), PriceError> {
    let o = object(v, apath)?;
    for key in o.keys() {
        if !matches!(key.as_str(), "revenue_basis" | "cost_basis") {
            return err(&format!("{apath}.{key}"), "is not a known field");
        }
    }
    if amount(o, "revenue_basis", apath)?.is_none() {
        return err(&format!("{apath}.revenue_basis"), "is required");
    }
    match o.get("cost_basis") {
        None | Some(Value::Null) => Ok(()),
        Some(v) if v.as_str() == Some("auto") => Ok(()),
        Some(_) => err(&format!("{apath}.cost_basis"), "must be \"auto\""),
    }
}

/// The text of a dimension's value in an event's data.
fn dimension_text(data: &Value, key: &str) -> Option<String> {
    match data.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Picks the value row for an event: rows whose dimensions all match (exactly, or by
/// "*"); the most exact matches win, then the earliest row.
pub fn select_value<'p>(values: &'p [PriceValue], data: &Value) -> Option<&'p PriceValue> {
    let mut best: Option<(usize, &PriceValue)> = None;
    for v in values {
        let mut exact = 0;
        let mut ok = true;
        for (k, want) in &v.dimensions {
            if want == "*" {
                continue;
            }
            match dimension_text(data, k) {
                Some(got) if &got == want => exact += 1,
                _ => {
                    ok = false;
                    break;
                }
            }
        }
        if ok && best.is_none_or(|(e, _)| exact > e) {
            best = Some((exact, v));
        }
    }
    best.map(|(_, v)| v)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeeError {
    /// The event lacks (or has a malformed) volume field the price needs.
    Volume { field: String, problem: &'static str },
}

/// One fee of one price in one asset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fee {
    pub asset: String,
    pub amount: Decimal,
    pub volume: Option<Decimal>,
}

/// The token fields' aliases (OpenAI's names): a price on `output_tokens` bills an
/// event that reports `completion_tokens`, and so on.
fn alias(field: &str) -> Option<&'static str> {
    match field {
        "input_tokens" => Some("prompt_tokens"),
        "prompt_tokens" => Some("input_tokens"),
        "output_tokens" => Some("completion_tokens"),
        "completion_tokens" => Some("output_tokens"),
        _ => None,
    }
}

/// Reads a usage volume from event data: a non-negative exact number.
pub fn volume_of(data: &Value, field: &str) -> Result<Decimal, FeeError> {
    let v = data
        .get(field)
        .or_else(|| alias(field).and_then(|a| data.get(a)))
        .ok_or(FeeError::Volume { field: field.to_string(), problem: "is missing" })?;
    let d = exact_number(v).ok_or(FeeError::Volume { field: field.to_string(), problem: "must be a number" })?;
    if d.is_sign_negative() && !d.is_zero() {
        return Err(FeeError::Volume { field: field.to_string(), problem: "must not be negative" });
    }
    if d.normalize().scale() > SCALE || d > crate::money::max_amount() {
        return Err(FeeError::Volume {
            field: field.to_string(),
            problem: "must have at most 12 fractional digits and be at most 10^15",
        });
    }
    Ok(d)
}

/// fee = unit_price (+) volume × volume_rate / package_size, rounded half-even at the
/// 12th digit, clamped to [min_amount, max_amount].
pub fn value_fee(usage_type: UsageType, v: &PriceValue, volume: Option<Decimal>) -> Decimal {
    let mut fee = Decimal::ZERO;
    if matches!(usage_type, UsageType::Unit | UsageType::UnitAndVolume) {
        fee += v.unit_price.unwrap_or_default();
    }
    if let (true, Some(vol)) = (matches!(usage_type, UsageType::Volume | UsageType::UnitAndVolume), volume) {
        let rate = v.volume_rate.unwrap_or_default();
        // volume and rate are each at most 10^15 with 12 decimals: multiply in two
        // steps through checked ops, saturating at the amount cap (a fee that large is
        // clamped or rejected by the caller's balance bound anyway).
        let gross = vol.checked_mul(rate).and_then(|x| x.checked_div(v.package_size));
        fee += gross.unwrap_or(crate::money::max_amount());
    }
    let mut fee = round_fee(fee);
    if let Some(lo) = v.min_amount {
        fee = fee.max(lo);
    }
    if let Some(hi) = v.max_amount {
        fee = fee.min(hi);
    }
    fee
}

/// The fees a usage price charges for one event: one per pricing entry whose value
/// table has a row for the event's dimensions.
pub fn usage_fees(price: &Price, data: &Value) -> Result<Vec<Fee>, FeeError> {
    usage_fees_after(price, data, Decimal::ZERO)
}

/// usage_fees() once a free tier has covered `free` of the event, in the price's
/// terms (an event for a unit price, volume otherwise): a wholly free event pays
/// nothing (not even a min_amount); a partly free one pays for the rest of its volume
/// (and its unit price).
pub fn usage_fees_after(price: &Price, data: &Value, free: Decimal) -> Result<Vec<Fee>, FeeError> {
    let PriceKind::Usage { usage_type, volume_field, .. } = &price.kind else {
        return Ok(Vec::new());
    };
    let mut fees = Vec::new();
    let mut volume: Option<Decimal> = None;
    for p in &price.pricing {
        let Some(v) = select_value(&p.values, data) else { continue };
        if *usage_type != UsageType::Unit && volume.is_none() {
            if let Some(f) = volume_field {
                volume = Some(volume_of(data, f)?);
            }
        }
        let billable = volume.map(|x| (x - free).max(Decimal::ZERO));
        let wholly_free = free > Decimal::ZERO
            && match (usage_type, billable) {
                (UsageType::Unit, _) | (_, None) => free >= Decimal::ONE,
                (_, Some(b)) => b.is_zero(),
            };
        let amount = if wholly_free { Decimal::ZERO } else { value_fee(*usage_type, v, billable) };
        fees.push(Fee { asset: p.asset.clone(), amount, volume });
    }
    Ok(fees)
}

/// What a model call cost the platform (SPEC §6): tokens at the model's price per
/// million, input and output, rounded as fees are.
pub fn token_cost(
    input_tokens: i64,
    output_tokens: i64,
    input_per_million: Decimal,
    output_per_million: Decimal,
) -> Decimal {
    let million = Decimal::from(1_000_000);
    crate::money::round_fee(
        Decimal::from(input_tokens) * input_per_million / million
            + Decimal::from(output_tokens) * output_per_million / million,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }
    fn price(v: Value) -> Price {
        parse_price(&v, "prices[0]").unwrap()
    }
    fn fee_of(p: &Price, data: Value) -> Vec<(String, Decimal)> {
        usage_fees(p, &data).unwrap().into_iter().map(|f| (f.asset, f.amount)).collect()
    }
    fn usage(usage_type: &str, values: Value) -> Price {
        price(json!({
            "type": "usage_based",
            "usage_calculation": {"event_type": "chat", "usage_type": usage_type, "volume_field": "tokens",
                                  "billable_dimensions": ["model", "tier"]},
            "pricing": [{"asset": "USD", "values": values}]
        }))
    }

    #[test]
    fn token_cost_is_per_million_and_rounded() {
        let d = |s: &str| s.parse::<Decimal>().unwrap();
        assert_eq!(token_cost(1_000_000, 0, d("3"), d("15")), d("3"));
        assert_eq!(token_cost(1200, 300, d("3"), d("15")), d("0.0081"));
        assert_eq!(token_cost(0, 0, d("3"), d("15")), Decimal::ZERO);
        // a third of a unit per token: rounded to the fee precision, not truncated
        assert_eq!(token_cost(1, 0, d("333333.333333333333"), d("0")), d("0.333333333333"));
        assert_eq!(token_cost(1, 0, d("0.0000005"), d("0")), Decimal::ZERO, "half to even at the 12th digit");
        assert_eq!(token_cost(3, 0, d("0.0000005"), d("0")), d("0.000000000002"));
    }

    #[test]
    fn unit_volume_and_both() {
        let unit = usage("unit", json!([{"unit_price": "0.05"}]));
        assert_eq!(fee_of(&unit, json!({})), vec![("USD".into(), d("0.05"))]);
        let vol = usage("volume", json!([{"volume_rate": 0.002}]));
        assert_eq!(fee_of(&vol, json!({"tokens": 1500})), vec![("USD".into(), d("3"))]);
        let both = usage("unit_and_volume", json!([{"unit_price": 0.01, "volume_rate": 0.000002}]));
        assert_eq!(fee_of(&both, json!({"tokens": "1234"})), vec![("USD".into(), d("0.012468"))]);
    }

    #[test]
    fn package_size_divides_and_rounding_is_half_even_at_12_digits() {
        let p = usage("volume", json!([{"volume_rate": 0.03, "package_size": 1000}]));
        assert_eq!(fee_of(&p, json!({"tokens": 1})), vec![("USD".into(), d("0.00003"))]);
        let p = usage("volume", json!([{"volume_rate": 1, "package_size": 3}]));
        // 1/3 = 0.333333333333|33... -> 0.333333333333
        assert_eq!(fee_of(&p, json!({"tokens": 1})), vec![("USD".into(), d("0.333333333333"))]);
        let p = usage("volume", json!([{"volume_rate": "0.000000000005", "package_size": 1}]));
        // 0.5e-12 rounds to even (0), 1.5e-12 to 2e-12, 2.5e-12 to 2e-12
        assert_eq!(fee_of(&p, json!({"tokens": 0.1})), vec![("USD".into(), d("0"))]);
        assert_eq!(fee_of(&p, json!({"tokens": 0.3})), vec![("USD".into(), d("0.000000000002"))]);
        assert_eq!(fee_of(&p, json!({"tokens": 0.5})), vec![("USD".into(), d("0.000000000002"))]);
    }

    #[test]
    fn clamps() {
        let p = usage("volume", json!([{"volume_rate": 0.01, "min_amount": 0.5, "max_amount": 2}]));
        assert_eq!(fee_of(&p, json!({"tokens": 1})), vec![("USD".into(), d("0.5"))]);
        assert_eq!(fee_of(&p, json!({"tokens": 100})), vec![("USD".into(), d("1"))]);
        assert_eq!(fee_of(&p, json!({"tokens": 1000})), vec![("USD".into(), d("2"))]);
    }

    #[test]
    fn dimensions_exact_before_wildcard_and_no_match_means_no_fee() {
        let p = usage(
            "unit",
            json!([
                {"dimensions": {"model": "*"}, "unit_price": 1},
                {"dimensions": {"model": "gpt-4o"}, "unit_price": 5},
                {"dimensions": {"model": "gpt-4o", "tier": "batch"}, "unit_price": 3}
            ]),
        );
        assert_eq!(fee_of(&p, json!({"model": "gpt-4o"})), vec![("USD".into(), d("5"))]);
        assert_eq!(fee_of(&p, json!({"model": "gpt-4o", "tier": "batch"})), vec![("USD".into(), d("3"))]);
        assert_eq!(fee_of(&p, json!({"model": "claude"})), vec![("USD".into(), d("1"))]);
        let strict = usage("unit", json!([{"dimensions": {"model": "gpt-4o"}, "unit_price": 5}]));
        assert_eq!(fee_of(&strict, json!({"model": "claude"})), vec![]);
        assert_eq!(fee_of(&strict, json!({})), vec![]);
    }

    #[test]
    fn one_fee_per_pricing_entry() {
        let p = price(json!({
            "type": "usage_based",
            "usage_calculation": {"event_type": "chat", "usage_type": "unit"},
            "pricing": [{"asset": "USD", "values": [{"unit_price": 1}]}, {"asset": "credits", "values": [{"unit_price": 10}]}]
        }));
        assert_eq!(fee_of(&p, json!({})), vec![("USD".into(), d("1")), ("credits".into(), d("10"))]);
    }

    #[test]
    fn volume_errors_name_the_field() {
        let p = usage("volume", json!([{"volume_rate": 1}]));
        assert_eq!(usage_fees(&p, &json!({})), Err(FeeError::Volume { field: "tokens".into(), problem: "is missing" }));
        assert!(usage_fees(&p, &json!({"tokens": -1})).is_err());
        assert!(usage_fees(&p, &json!({"tokens": "abc"})).is_err());
        assert!(usage_fees(&p, &json!({"tokens": true})).is_err());
        let out = price(json!({"type": "usage_based",
            "usage_calculation": {"event_type": "chat", "usage_type": "volume", "volume_field": "output_tokens"},
            "pricing": [{"asset": "USD", "values": [{"volume_rate": 2}]}]}));
        assert_eq!(fee_of(&out, json!({"completion_tokens": 3})), vec![("USD".into(), d("6"))]);
    }

    #[test]
    fn validation_names_the_field() {
        let bad = |v: Value| parse_price(&v, "prices[0]").unwrap_err().to_string();
        assert_eq!(bad(json!([])), "prices[0] must be a JSON object");
        assert_eq!(bad(json!({})), "prices[0].type is required");
        assert_eq!(bad(json!({"type": "magic"})), "prices[0].type must be one of usage_based, fixed, seat, outcome");
        assert_eq!(
            bad(json!({"type": "usage_based", "usage_calculation": {"event_type": "x", "usage_type": "unit"}})),
            "prices[0].pricing is required"
        );
        assert_eq!(
            bad(
                json!({"type": "usage_based", "usage_calculation": {"event_type": "x", "usage_type": "volume"}, "pricing": []})
            ),
            "prices[0].usage_calculation.volume_field is required by this usage_type"
        );
        let u = |values: Value| {
            json!({"type": "usage_based",
            "usage_calculation": {"event_type": "x", "usage_type": "unit", "billable_dimensions": ["model"]},
            "pricing": [{"asset": "USD", "values": values}]})
        };
        assert_eq!(
            bad(u(json!([{"unit_price": -1}]))),
            "prices[0].pricing[0].values[0].unit_price must not be negative"
        );
        assert_eq!(bad(u(json!([{}]))), "prices[0].pricing[0].values[0].unit_price is required by this usage_type");
        assert_eq!(bad(u(json!([{"unit_price": "x"}]))), "prices[0].pricing[0].values[0].unit_price must be a number");
        assert_eq!(
            bad(u(json!([{"unit_price": 1, "package_size": 0}]))),
            "prices[0].pricing[0].values[0].package_size must be greater than zero"
        );
        assert_eq!(
            bad(u(json!([{"unit_price": 1, "min_amount": 3, "max_amount": 2}]))),
            "prices[0].pricing[0].values[0].min_amount must not exceed max_amount"
        );
        assert_eq!(
            bad(u(json!([{"unit_price": 1, "dimensions": {"region": "eu"}}]))),
            "prices[0].pricing[0].values[0].dimensions.region is not one of the price's billable_dimensions"
        );
        assert_eq!(
            bad(u(json!([{"unit_price": "0.0000000000001"}]))),
            "prices[0].pricing[0].values[0].unit_price has more than 12 fractional digits"
        );
        assert_eq!(
            bad(u(json!([{"unit_price": 1, "typo": 1}]))),
            "prices[0].pricing[0].values[0].typo is not a known field"
        );
        assert_eq!(
            bad(json!({"type": "fixed", "billing_model": {"type": "recurring", "recurring": {"interval": "hour"}},
                       "pricing": [{"asset": "USD", "values": [{"unit_price": 1}]}]})),
            "prices[0].billing_model.recurring.interval must be one of day, week, month, year, or a period of whole days, weeks, months or years (P1M, '3 months')"
        );
        assert_eq!(
            bad(json!({"type": "outcome", "outcome_type": "resolved", "settlement_window": "weekly",
                       "pricing": [{"asset": "USD", "values": [{"percent": 5}]}]})),
            "prices[0].settlement_window \"weekly\" is not a period (ISO 8601 such as P1M, or interval text such as '1 month')"
        );
        assert_eq!(
            bad(json!({"type": "outcome", "outcome_type": "resolved", "settlement_window": "P0D",
                       "pricing": [{"asset": "USD", "values": [{"percent": 5}]}]})),
            "prices[0].settlement_window must be a positive period such as P7D"
        );
        // Postgres interval text is a period too (SPEC §9)
        price(json!({"type": "outcome", "outcome_type": "resolved", "settlement_window": "7 days",
                     "pricing": [{"asset": "USD", "values": [{"percent": 5}]}]}));
        assert_eq!(parse_prices(&json!([])).unwrap_err().to_string(), "prices must not be empty");
    }

    #[test]
    fn free_tiers_take_off_events_or_volume() {
        let unit = price(json!({"type": "usage_based", "usage_calculation": {"event_type": "e", "usage_type": "unit"},
                                "pricing": [{"asset": "USD", "values": [{"unit_price": 2, "min_amount": 1}]}]}));
        let amounts = |p: &Price, data: Value, free: &str| -> Vec<String> {
            usage_fees_after(p, &data, Decimal::from_str(free).unwrap())
                .unwrap()
                .iter()
                .map(|f| f.amount.normalize().to_string())
                .collect()
        };
        assert_eq!(amounts(&unit, json!({}), "0"), ["2"]);
        assert_eq!(amounts(&unit, json!({}), "1"), ["0"], "wholly free: no min_amount");
        let vol = price(json!({"type": "usage_based",
            "usage_calculation": {"event_type": "e", "usage_type": "unit_and_volume", "volume_field": "tokens"},
            "pricing": [{"asset": "USD", "values": [{"unit_price": 0.5, "volume_rate": 0.01}]}]}));
        assert_eq!(amounts(&vol, json!({"tokens": 100}), "0"), ["1.5"]);
        assert_eq!(amounts(&vol, json!({"tokens": 100}), "40"), ["1.1"], "60 billable and the unit price");
        assert_eq!(amounts(&vol, json!({"tokens": 100}), "100"), ["0"]);
        // a zero volume with nothing free is priced as before
        assert_eq!(amounts(&vol, json!({"tokens": 0}), "0"), ["0.5"]);
    }

    #[test]
    fn other_price_types_parse() {
        let f =
            price(json!({"type": "seat", "billing_model": {"type": "recurring", "recurring": {"interval": "month"}},
                             "pricing": [{"asset": "USD", "values": [{"unit_price": 20}]}]}));
        assert_eq!(f.kind, PriceKind::Seat { recurring: Recurrence { unit: Unit::Month, count: 1 } });
        let q = price(json!({"type": "fixed", "billing_model": {"type": "recurring",
                               "recurring": {"interval": "month", "interval_count": 3}},
                             "pricing": [{"asset": "USD", "values": [{"unit_price": 90}]}]}));
        assert_eq!(q.kind, PriceKind::Fixed { recurring: Some(Recurrence { unit: Unit::Month, count: 3 }) });
        let once = price(json!({"type": "fixed", "billing_model": {"type": "one_time"},
                                "pricing": [{"asset": "USD", "values": [{"unit_price": 99}]}]}));
        assert_eq!(once.kind, PriceKind::Fixed { recurring: None });
        // a period through the one parser: ISO 8601 or interval text
        for (interval, unit, count) in [
            ("P1M", Unit::Month, 1),
            ("P3M", Unit::Month, 3),
            ("P1Y", Unit::Year, 1),
            ("P2W", Unit::Week, 2),
            ("P10D", Unit::Day, 10),
            ("3 months", Unit::Month, 3),
            ("1 year", Unit::Year, 1),
            ("14 days", Unit::Week, 2),
        ] {
            let p = price(
                json!({"type": "fixed", "billing_model": {"type": "recurring", "recurring": {"interval": interval}},
                                 "pricing": [{"asset": "USD", "values": [{"unit_price": 1}]}]}),
            );
            assert_eq!(p.kind, PriceKind::Fixed { recurring: Some(Recurrence { unit, count }) }, "{interval}");
        }
        let bad = |v: Value| parse_prices(&json!([v])).unwrap_err().to_string();
        assert_eq!(
            bad(json!({"type": "seat", "billing_model": {"type": "one_time"},
                       "pricing": [{"asset": "USD", "values": [{"unit_price": 1}]}]})),
            "prices[0].billing_model.type must be \"recurring\""
        );
        for count in [json!(0), json!(1.5), json!("x"), json!(121)] {
            assert!(bad(json!({"type": "fixed", "billing_model": {"type": "recurring",
                                 "recurring": {"interval": "day", "interval_count": count}},
                               "pricing": [{"asset": "USD", "values": [{"unit_price": 1}]}]}))
            .starts_with("prices[0].billing_model.recurring.interval_count must be a whole number"));
        }
        assert_eq!(
            bad(json!({"type": "fixed", "billing_model": {"type": "one_time"},
                       "pricing": [{"asset": "USD", "values": [{"unit_price": 1}, {"unit_price": 2}]}]})),
            "prices[0].pricing[0].values must hold exactly one value for a price that is not usage_based"
        );
        let o = price(json!({"type": "outcome", "outcome_type": "ticket_resolved", "settlement_window": "PT48H",
                             "pricing": [{"asset": "USD", "values": [{"unit_price": 2, "percent": 1.5}]}]}));
        assert_eq!(o.type_name(), "outcome");
    }

    #[test]
    fn entitlements() {
        let ok = parse_entitlements(&json!([{"name": "monthly credits", "asset": "USD", "amount": "10.5",
                                            "every": "P1M", "on_expiry": "rollover"}]))
        .unwrap();
        assert_eq!(ok[0].amount, d("10.5"));
        assert_eq!(ok[0].purpose.as_str(), "bundled");
        let bad = |v: Value| parse_entitlements(&v).unwrap_err().to_string();
        assert_eq!(bad(json!({})), "entitlements must be a JSON array");
        assert_eq!(bad(json!([{"name": "x", "asset": "USD"}])), "entitlements[0].amount is required");
        assert_eq!(
            bad(json!([{"name": "x", "asset": "USD", "amount": 0}])),
            "entitlements[0].amount must be greater than zero"
        );
        assert_eq!(
            bad(json!([{"name": "x", "asset": "USD", "amount": 1, "every": "monthly"}])),
            "entitlements[0].every \"monthly\" is not a period (ISO 8601 such as P1M, or interval text such as '1 month')"
        );
        let pg = parse_entitlements(&json!([{"name": "x", "asset": "USD", "amount": 1, "every": "1 month"}])).unwrap();
        assert_eq!(pg[0].every.as_deref(), Some("1 months 0 days 0 microseconds"));
        assert_eq!(
            bad(json!([{"name": "x", "asset": "USD", "amount": 1, "every": "PT1M"}])),
            "entitlements[0].every must be at least one hour"
        );
        assert_eq!(
            bad(json!([{"name": "x", "asset": "USD", "amount": 1, "on_expiry": "keep"}])),
            "entitlements[0].on_expiry must be one of expire, rollover, reserve"
        );
    }

    #[test]
    fn credyts_own_form_is_accepted() {
        // Credyt's SDK form: name and billing_model, dimensional groups with nested rows.
        let p = price(json!({"name": "Chat", "type": "usage_based", "billing_model": {"type": "real_time"},
            "pricing_model": "flat",
            "usage_calculation": {"event_type": "chat", "usage_type": "unit", "unit_aggregation": "count",
                                  "billable_dimensions": ["model"]},
            "pricing": [{"asset": "USD", "values": [
                {"name": "GPT", "dimensions": {"model": "gpt-4o"}, "values": [{"name": "per call", "unit_price": 0.5}]},
                {"dimensions": {"model": "*"}, "values": [{"unit_price": 0.1}]}]}]}));
        assert_eq!(p.pricing[0].values.len(), 2);
        assert_eq!(p.pricing[0].values[0].dimensions, vec![("model".to_string(), "gpt-4o".to_string())]);
        assert_eq!(fee_of(&p, json!({"model": "gpt-4o"})), vec![("USD".to_string(), d("0.5"))]);
        assert_eq!(fee_of(&p, json!({"model": "other"})), vec![("USD".to_string(), d("0.1"))]);
        let bad = |v: Value| parse_price(&v, "prices[0]").unwrap_err().to_string();
        let u = |extra: Value, values: Value| {
            let mut p = json!({"type": "usage_based", "usage_calculation": {"event_type": "x", "usage_type": "unit",
                "billable_dimensions": ["model"]}, "pricing": [{"asset": "USD", "values": values}]});
            p.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            p
        };
        assert_eq!(
            bad(u(json!({"billing_model": {"type": "recurring"}}), json!([{"unit_price": 1}]))),
            "prices[0].billing_model.type must be \"real_time\" for a usage_based price"
        );
        assert_eq!(
            bad(u(json!({"pricing_model": "tiered"}), json!([{"unit_price": 1}]))),
            "prices[0].pricing_model must be \"flat\" (tiered, bulk and package prices are not offered yet)"
        );
        assert_eq!(
            bad(u(
                json!({}),
                json!([{"dimensions": {"model": "a"}, "values": [{"dimensions": {"model": "b"}, "unit_price": 1}]}])
            )),
            "prices[0].pricing[0].values[0].values[0].dimensions is given by the enclosing dimensional price"
        );
        assert_eq!(
            bad(u(json!({}), json!([{"dimensions": {"model": "a"}, "values": [{"volume_rate": 1}]}]))),
            "prices[0].pricing[0].values[0].values[0].unit_price is required by this usage_type"
        );
        assert_eq!(
            bad(u(json!({}), json!([{"dimensions": {"model": "a"}, "values": []}]))),
            "prices[0].pricing[0].values[0].values must not be empty"
        );
        assert_eq!(
            bad(u(json!({}), json!([{"unit_price": 1, "up_to": 10}]))),
            "prices[0].pricing[0].values[0].up_to belongs to tiered prices, which credyt does not offer yet"
        );
        // Credyt's entitlement lifecycle
        let e = parse_entitlements(&json!([
            {"name": "monthly", "asset": "USD", "amount": 5, "purpose": "bundled",
             "lifecycle": {"duration": "month", "refresh": {"strategy": "rollover"}},
             "accounting": {"revenue_basis": 0.8, "cost_basis": "auto"}},
            {"name": "trial", "asset": "USD", "amount": 1, "purpose": "promotion",
             "lifecycle": {"duration": "day", "duration_count": 14}}]))
        .unwrap();
        assert_eq!(e[0].every.as_deref(), Some("1 months 0 days 0 microseconds"));
        assert_eq!(e[0].on_expiry.as_str(), "rollover");
        assert_eq!((e[1].every.as_deref(), e[1].lasts.as_deref()), (None, Some("0 months 14 days 0 microseconds")));
        let bad_e = |v: Value| parse_entitlements(&json!([v])).unwrap_err().to_string();
        assert_eq!(
            bad_e(json!({"name": "x", "asset": "USD", "amount": 1, "lifecycle": {"duration": "hour"}})),
            "entitlements[0].lifecycle.duration must be one of day, week, month, year"
        );
        assert_eq!(
            bad_e(
                json!({"name": "x", "asset": "USD", "amount": 1, "every": "P1M", "lifecycle": {"duration": "month"}})
            ),
            "entitlements[0].lifecycle and every/on_expiry are two ways to say the same: give one"
        );
        assert_eq!(
            bad_e(json!({"name": "x", "asset": "USD", "amount": 1,
                         "lifecycle": {"duration": "month", "refresh": {"strategy": "keep"}}})),
            "entitlements[0].lifecycle.refresh.strategy must be one of expire_and_replace, rollover"
        );
        assert_eq!(
            bad_e(json!({"name": "x", "asset": "USD", "amount": 1, "accounting": {"cost_basis": "auto"}})),
            "entitlements[0].accounting.revenue_basis is required"
        );
    }

    #[test]
    fn numbers_are_exact() {
        assert_eq!(exact_number(&serde_json::from_str::<Value>("0.1").unwrap()), Some(d("0.1")));
        assert_eq!(exact_number(&serde_json::from_str::<Value>("1e-7").unwrap()), Some(d("0.0000001")));
        assert_eq!(exact_number(&serde_json::from_str::<Value>("0.000000000001").unwrap()), Some(d("0.000000000001")));
    }

    /// Property: fees are never negative, respect their clamps, and a price with
    /// several rows charges exactly the fee of the row select_value picks.
    #[test]
    fn property_fees_are_non_negative_and_clamped() {
        let mut rng = crate::testing::XorShift(0x51_7CC1_B727_220A);
        let mut rnd = |n: u64| rng.below(n);
        for _ in 0..5_000 {
            let unit = Decimal::new(rnd(100_000) as i64, (rnd(7)) as u32);
            let rate = Decimal::new(rnd(100_000) as i64, (rnd(13)) as u32);
            let pkg = Decimal::new(rnd(5000) as i64 + 1, 0);
            let lo = Decimal::new(rnd(1000) as i64, 2);
            let hi = lo + Decimal::new(rnd(1000) as i64, 2);
            let vol = Decimal::new(rnd(10_000_000) as i64, (rnd(4)) as u32);
            let ut = [UsageType::Unit, UsageType::Volume, UsageType::UnitAndVolume][rnd(3) as usize];
            let clamp = rnd(2) == 0;
            let v = PriceValue {
                dimensions: vec![],
                unit_price: Some(unit),
                volume_rate: Some(rate),
                package_size: pkg,
                min_amount: clamp.then_some(lo),
                max_amount: clamp.then_some(hi),
                percent: None,
            };
            let fee = value_fee(ut, &v, Some(vol));
            assert!(fee >= Decimal::ZERO);
            assert!(fee.scale() <= SCALE);
            if clamp {
                assert!(fee >= lo && fee <= hi, "{fee} not in [{lo}, {hi}]");
            } else {
                let mut exact = Decimal::ZERO;
                if ut != UsageType::Volume {
                    exact += unit;
                }
                if ut != UsageType::Unit {
                    exact += vol * rate / pkg;
                }
                assert!((fee - exact).abs() <= Decimal::new(5, 13), "{fee} vs {exact}");
            }
        }
    }
}
