//! Usage (SPEC §6): record_usage, single and batch; matching against the prices of
//! the customer's subscriptions; fees, token detail, costs; idempotency by event_id.
//!
//! One event runs in this order:
//! 1. validate; resolve the customer; match prices (read-only) and compute the fees,
//!    token detail and cost — all before anything is written;
//! 2. claim the event_id by inserting the event row (a replay stops here);
//! 3. capture the hold, if one is named;
//! 4. charge each asset's total through the ledger (one transaction per event).

//!
//! The files: this one holds the nouns (an event, its outcome) and the token and cost
//! detail read from an event; `lookups` what preparing an event reads (per event, or
//! preloaded for a batch); `record` preparing, claiming and charging; `api` the SQL
//! functions.

use crate::assets::resolve_asset;
use crate::customers;
use crate::error::{api, CyError, Result};
use crate::holds;
use crate::money::{self, to_numeric};
use crate::scope::scope;
use crate::spi::{one, run, run_once, Row};
use crate::validate;
use crate::wallet::{self, Debit, DrawFrom, WalletRef};
use credyt_core::money::round_fee;
use credyt_core::pricing::{exact_number, token_cost, usage_fees_after, FeeError, Price};
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use pgrx::{AnyNumeric, JsonB};
use rust_decimal::Decimal;
use serde_json::{json, Map, Value};
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

/// The insert of a usage event row: the one column list every claim writes (one
/// event, one charged event, a batch).
macro_rules! usage_event_insert {
    () => {
        "INSERT INTO credyt.usage_event (account_id, event_id, customer_id, event_type, data, occurred_at, \
           occurred_at_given, subject, description, model, input_tokens, output_tokens, status, fees, charged, asset, \
           revenue, cost, cost_currency, costs, hold_id, txn_id) "
    };
}

mod api;
mod charge;
mod lookups;
mod record;
mod rules;

pub use charge::*;
use lookups::*;
pub use record::*;
pub use rules::init_gucs;
use rules::*;

/// What became of an event (SPEC §6) as preparing it decides: charged, matched but
/// free (every fee zero), or matching no price. (The column and the returned row
/// carry its text.)
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UsageStatus {
    Charged,
    Free,
    NoMatch,
    /// refused by a usage limit: returned, never recorded
    Limited,
}

impl UsageStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            UsageStatus::Charged => "charged",
            UsageStatus::Free => "free",
            UsageStatus::NoMatch => "no_match",
            UsageStatus::Limited => "limited",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [UsageStatus::Charged, UsageStatus::Free, UsageStatus::NoMatch].into_iter().find(|v| v.as_str() == s)
    }
}

/// One usage event, validated.
pub struct Event {
    pub customer: String,
    pub event_id: String,
    pub event_type: String,
    pub data: Value,
    /// `data` as the caller's jsonb argument, when it was one: stored as it came, not
    /// encoded again (valid until the SQL call returns; an event lives within it)
    pub data_datum: Option<pgrx::pg_sys::Datum>,
    pub occurred_at: Option<TimestampWithTimeZone>,
    pub subject: Option<String>,
    pub description: Option<String>,
    pub costs: Option<Value>,
    pub hold_id: Option<String>,
}

pub struct Outcome {
    pub event_id: String,
    pub duplicate: bool,
    pub status: UsageStatus,
    pub fees: Value,
    pub charged: Decimal,
    pub asset: Option<String>,
    pub available: Option<Decimal>,
}

use money::json_number as num;

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
