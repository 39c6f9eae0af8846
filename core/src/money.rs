//! Money rules (SPEC §2): exact decimals, at most 12 fractional digits, no NaN or
//! infinities, and bounds that keep every sum the extension computes exact.
//!
//! `rust_decimal` holds 28 significant digits. With 12 fractional digits that leaves
//! 16 integer digits, so single amounts are capped at 10^15 and wallet balances at
//! ±10^16: any sum of two such values still fits without rounding.

use rust_decimal::{Decimal, RoundingStrategy};
use std::str::FromStr;

/// Fractional digits kept by fees and accepted in amounts.
pub const SCALE: u32 = 12;

/// Largest single amount (10^15) accepted by any call.
pub fn max_amount() -> Decimal {
    Decimal::from(1_000_000_000_000_000i64)
}

/// Largest magnitude of a wallet balance (10^16).
pub fn max_balance() -> Decimal {
    Decimal::from(10_000_000_000_000_000i64)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AmountError {
    NotANumber,
    Infinite,
    Unparsable(String),
    TooPrecise { digits: u32 },
    TooLarge,
    Negative,
    Zero,
    PrecisionExceeded { precision: u32 },
}

impl AmountError {
    /// A sentence to append after the parameter's name.
    pub fn describe(&self) -> String {
        match self {
            AmountError::NotANumber => "is NaN; amounts must be finite numbers".into(),
            AmountError::Infinite => "is infinite; amounts must be finite numbers".into(),
            AmountError::Unparsable(s) => format!("is not a number ({s})"),
            AmountError::TooPrecise { digits } => format!("has {digits} fractional digits; at most {SCALE} are kept"),
            AmountError::TooLarge => "exceeds the maximum amount of 10^15".into(),
            AmountError::Negative => "must not be negative".into(),
            AmountError::Zero => "must be greater than zero".into(),
            AmountError::PrecisionExceeded { precision } => {
                format!("has more fractional digits than the asset's precision ({precision})")
            }
        }
    }
}

/// Parses the text form of a SQL numeric into an exact decimal, enforcing the
/// 12-digit scale and the 10^15 bound. Sign is checked by the caller.
pub fn parse_amount(text: &str) -> Result<Decimal, AmountError> {
    let t = text.trim();
    match t {
        "NaN" => return Err(AmountError::NotANumber),
        "Infinity" | "-Infinity" | "+Infinity" => return Err(AmountError::Infinite),
        _ => {}
    }
    // The fractional digits of the text itself, trailing zeros aside: `from_str`
    // would round a 30-digit fraction silently, and we must reject it instead.
    if let Some((_, frac)) = t.split_once('.') {
        let frac = frac.split(['e', 'E']).next().unwrap_or("");
        let significant = frac.trim_end_matches('0').len() as u32;
        if significant > SCALE {
            return Err(AmountError::TooPrecise { digits: significant });
        }
    }
    let int_digits = t.trim_start_matches(['-', '+']).split('.').next().unwrap_or("").trim_start_matches('0').len();
    if int_digits > 16 {
        return Err(AmountError::TooLarge);
    }
    let d = Decimal::from_str(t).map_err(|e| AmountError::Unparsable(e.to_string()))?;
    let d = d.normalize();
    if d.scale() > SCALE {
        return Err(AmountError::TooPrecise { digits: d.scale() });
    }
    if d.abs() > max_amount() {
        return Err(AmountError::TooLarge);
    }
    Ok(d)
}

/// An amount that must be strictly positive.
pub fn parse_positive(text: &str) -> Result<Decimal, AmountError> {
    let d = parse_amount(text)?;
    if d.is_sign_negative() && !d.is_zero() {
        Err(AmountError::Negative)
    } else if d.is_zero() {
        Err(AmountError::Zero)
    } else {
        Ok(d)
    }
}

/// An amount that may be zero but not negative (limits, thresholds).
pub fn parse_non_negative(text: &str) -> Result<Decimal, AmountError> {
    let d = parse_amount(text)?;
    if d.is_sign_negative() && !d.is_zero() {
        Err(AmountError::Negative)
    } else {
        Ok(d)
    }
}

/// Payments and top-ups must be expressible in the asset's minor units.
pub fn check_precision(d: Decimal, precision: u32) -> Result<(), AmountError> {
    if d.normalize().scale() > precision {
        Err(AmountError::PrecisionExceeded { precision })
    } else {
        Ok(())
    }
}

/// Rounds a computed fee to 12 fractional digits, half to even.
pub fn round_fee(d: Decimal) -> Decimal {
    d.round_dp_with_strategy(SCALE, RoundingStrategy::MidpointNearestEven).normalize()
}

/// True when a balance stays inside the representable bound.
pub fn balance_in_range(d: Decimal) -> bool {
    d.abs() <= max_balance()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    #[test]
    fn parses_exact_amounts() {
        assert_eq!(parse_amount("10").unwrap(), d("10"));
        assert_eq!(parse_amount("10.500").unwrap(), d("10.5"));
        assert_eq!(parse_amount("0.000000000001").unwrap(), d("0.000000000001"));
        assert_eq!(parse_amount("-3.25").unwrap(), d("-3.25"));
        assert_eq!(parse_amount("1000000000000000").unwrap(), max_amount());
    }

    #[test]
    fn trailing_zeros_do_not_count_as_precision() {
        assert_eq!(parse_amount("1.0000000000000000000").unwrap(), d("1"));
    }

    #[test]
    fn rejects_what_money_must_not_be() {
        assert_eq!(parse_amount("NaN"), Err(AmountError::NotANumber));
        assert_eq!(parse_amount("Infinity"), Err(AmountError::Infinite));
        assert_eq!(parse_amount("-Infinity"), Err(AmountError::Infinite));
        assert_eq!(parse_amount("0.0000000000001"), Err(AmountError::TooPrecise { digits: 13 }));
        assert_eq!(parse_amount("1.000000000000000000000000000001"), Err(AmountError::TooPrecise { digits: 30 }));
        assert_eq!(parse_amount("1000000000000000.01"), Err(AmountError::TooLarge));
        assert_eq!(parse_amount("123456789012345678901234567890"), Err(AmountError::TooLarge));
        assert!(matches!(parse_amount("abc"), Err(AmountError::Unparsable(_))));
    }

    #[test]
    fn signs() {
        assert_eq!(parse_positive("0"), Err(AmountError::Zero));
        assert_eq!(parse_positive("-0.01"), Err(AmountError::Negative));
        assert_eq!(parse_non_negative("0").unwrap(), Decimal::ZERO);
        assert_eq!(parse_non_negative("-1"), Err(AmountError::Negative));
    }

    #[test]
    fn precision_of_payments() {
        assert!(check_precision(d("10.25"), 2).is_ok());
        assert!(check_precision(d("10.250"), 2).is_ok());
        assert_eq!(check_precision(d("10.255"), 2), Err(AmountError::PrecisionExceeded { precision: 2 }));
        assert!(check_precision(d("10"), 0).is_ok());
    }

    #[test]
    fn fees_round_half_even_at_the_twelfth_digit() {
        assert_eq!(round_fee(d("0.0000000000005")), d("0"));
        assert_eq!(round_fee(d("0.0000000000015")), d("0.000000000002"));
        assert_eq!(round_fee(d("0.0000000000025")), d("0.000000000002"));
        assert_eq!(round_fee(d("1.23456789012349")), d("1.234567890123"));
    }

    #[test]
    fn sums_at_the_bounds_stay_exact() {
        let a = max_balance() - d("0.000000000001");
        let b = max_amount() + d("0.000000000001");
        let s = a.checked_add(b).unwrap();
        assert_eq!(s, d("11000000000000000"));
        assert_eq!(s.scale().min(12), s.scale());
    }
}
