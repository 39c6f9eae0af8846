//! Conversions between SQL numeric and exact decimals, with SPEC §2's checks.

use crate::error::{CyError, Result};
use credyt_core::money::{self, AmountError};
use pgrx::AnyNumeric;
use rust_decimal::Decimal;
use std::str::FromStr;

fn bad(param: &str, e: AmountError) -> CyError {
    CyError::invalid(format!("{param} {}", e.describe()))
        .hint("amounts are exact decimals with at most 12 fractional digits and at most 10^15")
}

fn required(param: &str, v: Option<AnyNumeric>) -> Result<String> {
    v.map(|n| n.to_string()).ok_or_else(|| CyError::invalid(format!("{param} must not be NULL")))
}

/// A strictly positive amount argument.
pub fn positive(param: &str, v: Option<AnyNumeric>) -> Result<Decimal> {
    money::parse_positive(&required(param, v)?).map_err(|e| bad(param, e))
}

/// A signed, non-zero amount argument.
pub fn non_zero(param: &str, v: Option<AnyNumeric>) -> Result<Decimal> {
    let d = money::parse_amount(&required(param, v)?).map_err(|e| bad(param, e))?;
    if d.is_zero() {
        return Err(bad(param, AmountError::Zero));
    }
    Ok(d)
}

/// An optional non-negative amount argument (NULL stays None).
pub fn optional_non_negative(param: &str, v: Option<AnyNumeric>) -> Result<Option<Decimal>> {
    match v {
        None => Ok(None),
        Some(n) => money::parse_non_negative(&n.to_string()).map(Some).map_err(|e| bad(param, e)),
    }
}

/// An optional amount of either sign (NULL stays None), e.g. a threshold.
pub fn optional_signed(param: &str, v: Option<AnyNumeric>) -> Result<Option<Decimal>> {
    match v {
        None => Ok(None),
        Some(n) => money::parse_amount(&n.to_string()).map(Some).map_err(|e| bad(param, e)),
    }
}

/// A value read back from the ledger's own tables (as text).
pub fn stored(text: &str) -> Result<Decimal> {
    Decimal::from_str(text).map_err(|e| CyError::internal(format!("stored amount {text:?}: {e}")))
}

pub fn to_numeric(d: Decimal) -> AnyNumeric {
    // The text form of a Decimal is always a valid numeric literal; were it not, the
    // statement fails rather than write a zero.
    AnyNumeric::try_from(d.normalize().to_string().as_str())
        .unwrap_or_else(|e| CyError::internal(format!("amount {d} as numeric: {e}")).raise())
}

/// An amount as an exact JSON number (event payloads): its shortest decimal text.
pub fn json_number(d: Decimal) -> serde_json::Value {
    serde_json::Value::Number(serde_json::Number::from_string_unchecked(d.normalize().to_string()))
}
