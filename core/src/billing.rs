//! Recurring fees (SPEC §9: fixed fees and seats): billing periods on the UTC calendar,
//! proration, and the fee of an outcome.
//!
//! Times are Postgres timestamps: microseconds since 2000-01-01 00:00 UTC. Periods are
//! counted on the UTC calendar whatever the session's TimeZone, so a monthly fee falls
//! on the same instant for every reader and no period is 23 or 25 hours long.
//! Period k of a subscription starts at `anchor + k × interval` computed from the
//! anchor each time (never by adding to the previous start), so a fee anchored on the
//! 31st falls on the last day of shorter months and returns to the 31st after them.

use crate::money::round_fee;
use rust_decimal::Decimal;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Day,
    Week,
    Month,
    Year,
}

impl Unit {
    pub fn as_str(self) -> &'static str {
        match self {
            Unit::Day => "day",
            Unit::Week => "week",
            Unit::Month => "month",
            Unit::Year => "year",
        }
    }

    pub fn parse(s: &str) -> Option<Unit> {
        match s {
            "day" => Some(Unit::Day),
            "week" => Some(Unit::Week),
            "month" => Some(Unit::Month),
            "year" => Some(Unit::Year),
            _ => None,
        }
    }
}

/// A billing interval: `count` units (`interval: month, interval_count: 3` bills
/// quarterly).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recurrence {
    pub unit: Unit,
    pub count: u32,
}

/// The most intervals a recurrence may span (ten years of months, a year of days).
pub const MAX_COUNT: u32 = 120;

const MICROS_PER_DAY: i64 = 86_400_000_000;
/// Days from 1970-01-01 to 2000-01-01 (the Postgres epoch).
const EPOCH_DAYS: i64 = 10_957;

/// (year, month 1–12, day 1–31) of a day counted from 1970-01-01 (proleptic Gregorian).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// The day counted from 1970-01-01 of a civil date.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 } as i64;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

pub fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

pub fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// `t` plus `months` calendar months, the day clamped to the end of a shorter month
/// (as Postgres' `+ interval '1 month'` does), the time of day kept.
pub fn add_months(t: i64, months: i64) -> i64 {
    let days = t.div_euclid(MICROS_PER_DAY);
    let time = t.rem_euclid(MICROS_PER_DAY);
    let (y, m, d) = civil_from_days(days + EPOCH_DAYS);
    let total = y * 12 + (m as i64 - 1) + months;
    let (ny, nm) = (total.div_euclid(12), total.rem_euclid(12) as u32 + 1);
    let nd = d.min(days_in_month(ny, nm));
    (days_from_civil(ny, nm, nd) - EPOCH_DAYS) * MICROS_PER_DAY + time
}

/// A Postgres timestamp as RFC 3339 text in UTC (`2027-02-28T09:00:00Z`, microseconds
/// only when there are some), for JSON payloads that read the same in every TimeZone.
pub fn rfc3339(t: i64) -> String {
    let days = t.div_euclid(MICROS_PER_DAY);
    let micros = t.rem_euclid(MICROS_PER_DAY);
    let (y, m, d) = civil_from_days(days + EPOCH_DAYS);
    let secs = micros / 1_000_000;
    let (hh, mm, ss, frac) = (secs / 3600, secs / 60 % 60, secs % 60, micros % 1_000_000);
    if frac == 0 {
        format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}Z")
    } else {
        format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}.{frac:06}Z")
    }
}

impl Recurrence {
    /// Checks `interval_count` (1 ..= MAX_COUNT).
    pub fn new(unit: Unit, count: i64) -> Result<Recurrence, String> {
        if !(1..=MAX_COUNT as i64).contains(&count) {
            return Err(format!("must be a whole number from 1 to {MAX_COUNT}"));
        }
        Ok(Recurrence { unit, count: count as u32 })
    }

    /// The start of period `k` (0: the anchor itself).
    pub fn start(&self, anchor: i64, k: i64) -> i64 {
        let n = k * self.count as i64;
        match self.unit {
            Unit::Day => anchor + n * MICROS_PER_DAY,
            Unit::Week => anchor + 7 * n * MICROS_PER_DAY,
            Unit::Month => add_months(anchor, n),
            Unit::Year => add_months(anchor, 12 * n),
        }
    }

    /// The period that contains `t`: the k with start(k) <= t < start(k + 1); periods
    /// before the anchor have negative k.
    pub fn index_at(&self, anchor: i64, t: i64) -> i64 {
        // An estimate from the shortest length a period can have, then walked to the exact one.
        let shortest = match self.unit {
            Unit::Day => MICROS_PER_DAY,
            Unit::Week => 7 * MICROS_PER_DAY,
            Unit::Month => 28 * MICROS_PER_DAY,
            Unit::Year => 365 * MICROS_PER_DAY,
        } * self.count as i64;
        let mut k = (t - anchor).div_euclid(shortest);
        while self.start(anchor, k) > t {
            k -= 1;
        }
        while self.start(anchor, k + 1) <= t {
            k += 1;
        }
        k
    }

    /// Postgres interval text of one period.
    pub fn to_sql(&self) -> String {
        format!("{} {}s", self.count, self.unit.as_str())
    }
}

/// The part of a period's fee for the time left in it: `amount × left / length` (in
/// any one unit: the charge path passes whole seconds), rounded half-even to the fee
/// scale. `left` is clamped to [0, length].
pub fn prorate(amount: Decimal, left: i64, length: i64) -> Decimal {
    if length <= 0 || left <= 0 {
        return Decimal::ZERO;
    }
    let left = left.min(length);
    if left == length {
        return round_fee(amount);
    }
    // amount × left can exceed Decimal's 96 bits only for absurd amounts: fall back to
    // dividing first (still exact to the fee scale for any amount a balance can hold).
    match amount.checked_mul(Decimal::from(left)) {
        Some(p) => round_fee(p / Decimal::from(length)),
        None => round_fee(amount * (Decimal::from(left) / Decimal::from(length))),
    }
}

/// The fee of an outcome price: `unit_price` plus `percent` of `value` (an outcome
/// without a value pays no percentage), clamped to [min_amount, max_amount], never
/// negative.
pub fn outcome_fee(
    unit_price: Option<Decimal>,
    percent: Option<Decimal>,
    value: Option<Decimal>,
    min_amount: Option<Decimal>,
    max_amount: Option<Decimal>,
) -> Decimal {
    let mut fee = unit_price.unwrap_or(Decimal::ZERO);
    if let (Some(p), Some(v)) = (percent, value) {
        fee += v * p / Decimal::ONE_HUNDRED;
    }
    if let Some(min) = min_amount {
        fee = fee.max(min);
    }
    if let Some(max) = max_amount {
        fee = fee.min(max);
    }
    round_fee(fee.max(Decimal::ZERO))
}

/// The windows usage rules count in (free tiers, usage limits), on the UTC calendar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    /// whole calendar months, `n` at a time, counted from January 2000
    Months(u32),
    /// weeks from Monday 00:00 UTC
    Week,
    /// a fixed length (microseconds), counted from 2000-01-01 00:00 UTC
    Fixed(i64),
}

/// 2000-01-03, the first Monday after the Postgres epoch, in microseconds.
const FIRST_MONDAY: i64 = 2 * MICROS_PER_DAY;

impl Window {
    /// A free tier's `per`: day, week or month (calendar periods in UTC).
    pub fn per(s: &str) -> Option<Window> {
        match s {
            "day" => Some(Window::Fixed(MICROS_PER_DAY)),
            "week" => Some(Window::Week),
            "month" => Some(Window::Months(1)),
            _ => None,
        }
    }

    /// A usage limit's `per` interval: whole months, or days and time (not both), from
    /// one second to one year.
    pub fn of_interval(months: i64, days: i64, micros: i64) -> Result<Window, &'static str> {
        if months < 0 || days < 0 || micros < 0 {
            return Err("must not be negative");
        }
        match (months, days.saturating_mul(MICROS_PER_DAY).saturating_add(micros)) {
            (0, len) if len < 1_000_000 => Err("must be at least one second"),
            (0, len) if len > 366 * MICROS_PER_DAY => Err("must be at most one year"),
            (0, len) => Ok(Window::Fixed(len)),
            (m, 0) if m <= 12 => Ok(Window::Months(m as u32)),
            (_, 0) => Err("must be at most one year"),
            _ => Err("must be whole months, or days and time, not both"),
        }
    }

    /// [start, end) of the window that contains `t`.
    pub fn bounds(&self, t: i64) -> (i64, i64) {
        match *self {
            Window::Fixed(len) => {
                let start = t.div_euclid(len) * len;
                (start, start + len)
            }
            Window::Week => {
                let len = 7 * MICROS_PER_DAY;
                let start = FIRST_MONDAY + (t - FIRST_MONDAY).div_euclid(len) * len;
                (start, start + len)
            }
            Window::Months(n) => {
                let days = t.div_euclid(MICROS_PER_DAY);
                let (y, m, _) = civil_from_days(days + EPOCH_DAYS);
                let since = (y - 2000) * 12 + (m as i64 - 1);
                let first = since.div_euclid(n as i64) * n as i64;
                (add_months(0, first), add_months(0, first + n as i64))
            }
        }
    }
}

/// The part of `quantity` that an allowance still covers when `used` of it is gone.
pub fn free_part(allowance: Decimal, used: Decimal, quantity: Decimal) -> Decimal {
    (allowance - used).max(Decimal::ZERO).min(quantity.max(Decimal::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::XorShift;
    use std::str::FromStr;

    /// A Postgres timestamp of a UTC civil time.
    fn at(y: i64, m: u32, d: u32, hh: i64) -> i64 {
        (days_from_civil(y, m, d) - EPOCH_DAYS) * MICROS_PER_DAY + hh * 3_600_000_000
    }
    fn dec(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    #[test]
    fn civil_round_trip() {
        for z in [-800_000_i64, -1, 0, 1, 10_957, 11_016, 20_000, 2_932_896] {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y, m, d), z);
        }
        assert_eq!(civil_from_days(EPOCH_DAYS), (2000, 1, 1));
        assert_eq!(civil_from_days(EPOCH_DAYS + 59), (2000, 2, 29));
    }

    #[test]
    fn months_clamp_and_return() {
        let monthly = Recurrence::new(Unit::Month, 1).unwrap();
        let jan31 = at(2027, 1, 31, 9);
        assert_eq!(monthly.start(jan31, 1), at(2027, 2, 28, 9));
        assert_eq!(monthly.start(jan31, 2), at(2027, 3, 31, 9));
        assert_eq!(monthly.start(jan31, 3), at(2027, 4, 30, 9));
        // leap year
        assert_eq!(monthly.start(at(2028, 1, 31, 0), 1), at(2028, 2, 29, 0));
        let yearly = Recurrence::new(Unit::Year, 1).unwrap();
        assert_eq!(yearly.start(at(2028, 2, 29, 0), 1), at(2029, 2, 28, 0));
        assert_eq!(yearly.start(at(2028, 2, 29, 0), 4), at(2032, 2, 29, 0));
        let quarterly = Recurrence::new(Unit::Month, 3).unwrap();
        assert_eq!(quarterly.start(at(2026, 11, 30, 0), 1), at(2027, 2, 28, 0));
        let fortnight = Recurrence::new(Unit::Week, 2).unwrap();
        assert_eq!(fortnight.start(at(2026, 12, 25, 0), 1), at(2027, 1, 8, 0));
        assert_eq!(Recurrence::new(Unit::Day, 1).unwrap().start(at(2026, 3, 28, 12), 2), at(2026, 3, 30, 12));
    }

    #[test]
    fn windows_on_the_utc_calendar() {
        let t = at(2027, 3, 17, 15) + 123;
        assert_eq!(Window::per("day").unwrap().bounds(t), (at(2027, 3, 17, 0), at(2027, 3, 18, 0)));
        // 2027-03-17 is a Wednesday: its week is Monday the 15th to Monday the 22nd
        assert_eq!(Window::per("week").unwrap().bounds(t), (at(2027, 3, 15, 0), at(2027, 3, 22, 0)));
        assert_eq!(Window::per("month").unwrap().bounds(t), (at(2027, 3, 1, 0), at(2027, 4, 1, 0)));
        assert_eq!(Window::per("month").unwrap().bounds(at(2028, 2, 29, 23)), (at(2028, 2, 1, 0), at(2028, 3, 1, 0)));
        assert_eq!(Window::of_interval(3, 0, 0).unwrap().bounds(t), (at(2027, 1, 1, 0), at(2027, 4, 1, 0)));
        assert_eq!(
            Window::of_interval(0, 0, 3_600_000_000).unwrap().bounds(t),
            (at(2027, 3, 17, 15), at(2027, 3, 17, 16))
        );
        assert!(Window::per("hour").is_none());
        assert!(Window::of_interval(1, 1, 0).is_err());
        assert!(Window::of_interval(0, 0, 999_999).is_err());
        assert!(Window::of_interval(13, 0, 0).is_err());
        assert!(Window::of_interval(0, 400, 0).is_err());
        assert!(Window::of_interval(0, -1, 0).is_err());
    }

    #[test]
    fn windows_cover_every_instant_property() {
        let mut rng = XorShift(7);
        let windows = [
            Window::per("day").unwrap(),
            Window::Week,
            Window::Months(1),
            Window::Months(5),
            Window::Fixed(90_000_000),
        ];
        for _ in 0..5_000 {
            let w = windows[rng.below(windows.len() as u64) as usize];
            let t = (rng.below(80 * 366 * MICROS_PER_DAY as u64) as i64) - 10 * 366 * MICROS_PER_DAY;
            let (s, e) = w.bounds(t);
            assert!(s <= t && t < e, "{w:?} {t}");
            // the next window starts where this one ends
            assert_eq!(w.bounds(e).0, e, "{w:?} {t}");
            assert_eq!(w.bounds(s), (s, e));
        }
    }

    #[test]
    fn allowances() {
        assert_eq!(free_part(dec("100"), dec("0"), dec("1")), dec("1"));
        assert_eq!(free_part(dec("100"), dec("99.5"), dec("2")), dec("0.5"));
        assert_eq!(free_part(dec("100"), dec("100"), dec("1")), dec("0"));
        assert_eq!(free_part(dec("100"), dec("250"), dec("1")), dec("0"));
        assert_eq!(free_part(dec("0"), dec("0"), dec("3")), dec("0"));
        // in any order of events, what is free adds up to the allowance at most
        let mut rng = XorShift(11);
        for _ in 0..1_000 {
            let allowance = Decimal::from(rng.below(500));
            let (mut used, mut free) = (Decimal::ZERO, Decimal::ZERO);
            for _ in 0..50 {
                let q = Decimal::new(rng.below(10_000) as i64, 2);
                free += free_part(allowance, used, q);
                used += q;
            }
            assert_eq!(free, allowance.min(used));
        }
    }

    #[test]
    fn rfc3339_is_utc() {
        assert_eq!(rfc3339(0), "2000-01-01T00:00:00Z");
        assert_eq!(rfc3339(at(2027, 2, 28, 9) + 1_500), "2027-02-28T09:00:00.001500Z");
        assert_eq!(rfc3339(-1), "1999-12-31T23:59:59.999999Z");
    }

    #[test]
    fn counts_are_checked() {
        assert!(Recurrence::new(Unit::Month, 0).is_err());
        assert!(Recurrence::new(Unit::Month, -1).is_err());
        assert!(Recurrence::new(Unit::Month, 121).is_err());
        assert_eq!(Recurrence::new(Unit::Week, 2).unwrap().to_sql(), "2 weeks");
    }

    #[test]
    fn index_at_finds_the_period_property() {
        let mut rng = XorShift(0x5eed_cafe);
        for _ in 0..3_000 {
            let unit = [Unit::Day, Unit::Week, Unit::Month, Unit::Year][rng.below(4) as usize];
            let r = Recurrence::new(unit, 1 + rng.below(13) as i64).unwrap();
            let anchor = at(1990 + rng.below(60) as i64, 1 + rng.below(12) as u32, 1 + rng.below(31) as u32, 0)
                .min(at(2100, 1, 1, 0));
            let t = anchor + (rng.below(40 * 366) as i64 - 5 * 366) * MICROS_PER_DAY / 3;
            let k = r.index_at(anchor, t);
            assert!(r.start(anchor, k) <= t && t < r.start(anchor, k + 1), "{r:?} {anchor} {t} {k}");
            // starts are strictly increasing
            assert!(r.start(anchor, k) < r.start(anchor, k + 1));
        }
    }

    #[test]
    fn proration_over_months_of_28_to_31_days() {
        let monthly = Recurrence::new(Unit::Month, 1).unwrap();
        for (y, m, days) in [(2027, 2, 28), (2028, 2, 29), (2027, 4, 30), (2027, 1, 31)] {
            let start = at(y, m, 1, 0);
            let end = monthly.start(start, 1);
            assert_eq!(end - start, days * MICROS_PER_DAY);
            // ten days left
            let left = 10 * MICROS_PER_DAY;
            assert_eq!(prorate(dec("31"), left, end - start), round_fee(dec("310") / Decimal::from(days)));
        }
        // half of a 30-day month of 10.00 is 5.00; the whole is the whole; none is nothing
        assert_eq!(prorate(dec("10"), 15 * MICROS_PER_DAY, 30 * MICROS_PER_DAY), dec("5"));
        assert_eq!(prorate(dec("10"), 40 * MICROS_PER_DAY, 30 * MICROS_PER_DAY), dec("10"));
        assert_eq!(prorate(dec("10"), 0, 30 * MICROS_PER_DAY), Decimal::ZERO);
        assert_eq!(prorate(dec("10"), -5, 30 * MICROS_PER_DAY), Decimal::ZERO);
        // 1/3 of 1: half-even at the 12th digit
        assert_eq!(prorate(dec("1"), 1, 3), dec("0.333333333333"));
        assert_eq!(prorate(dec("2"), 1, 3), dec("0.666666666667"));
    }

    #[test]
    fn proration_property() {
        let mut rng = XorShift(42);
        for _ in 0..5_000 {
            let amount = Decimal::new(rng.below(10_000_000) as i64, rng.below(6) as u32);
            let len = 1 + rng.below(400 * MICROS_PER_DAY as u64) as i64;
            let a = rng.below(len as u64 + 1) as i64;
            let (pa, pb) = (prorate(amount, a, len), prorate(amount, len - a, len));
            assert!(pa >= Decimal::ZERO && pa <= amount);
            // the two parts of a period add up to its fee, to within the rounding of each
            assert!((pa + pb - amount).abs() <= dec("0.000000000001"), "{amount} {a} {len}");
            // more time left never costs less
            assert!(prorate(amount, (a + 1).min(len), len) >= pa);
        }
    }

    #[test]
    fn outcome_fees_property() {
        let mut rng = XorShift(99);
        for _ in 0..5_000 {
            let unit = (rng.below(2) == 0).then(|| Decimal::new(rng.below(1_000) as i64, 2));
            let pct = (rng.below(2) == 0).then(|| Decimal::new(rng.below(10_001) as i64, 2)); // 0 .. 100
            let value = Decimal::new(rng.below(1_000_000) as i64, 2);
            let min = (rng.below(3) == 0).then(|| Decimal::new(rng.below(500) as i64, 2));
            let max = (rng.below(3) == 0).then(|| min.unwrap_or_default() + Decimal::new(rng.below(5_000) as i64, 2));
            let fee = outcome_fee(unit, pct, Some(value), min, max);
            assert!(fee >= Decimal::ZERO);
            assert!(min.is_none_or(|m| fee >= m) && max.is_none_or(|m| fee <= m), "{fee} {min:?} {max:?}");
            // never more than the unit price and the whole value, unless a minimum says so
            let ceiling = unit.unwrap_or_default() + pct.map_or(Decimal::ZERO, |_| value);
            assert!(fee <= ceiling.max(min.unwrap_or_default()));
            // a larger value never costs less
            assert!(outcome_fee(unit, pct, Some(value + Decimal::ONE), min, max) >= fee);
        }
    }

    #[test]
    fn outcome_fees() {
        let d = |s| Some(dec(s));
        assert_eq!(outcome_fee(d("2"), None, None, None, None), dec("2"));
        assert_eq!(outcome_fee(None, d("1.5"), d("200"), None, None), dec("3"));
        assert_eq!(outcome_fee(d("1"), d("10"), d("50"), None, None), dec("6"));
        // clamped
        assert_eq!(outcome_fee(None, d("10"), d("5"), d("1"), None), dec("1"));
        assert_eq!(outcome_fee(None, d("10"), d("5000"), None, d("100")), dec("100"));
        // a percentage with no value pays the unit price alone
        assert_eq!(outcome_fee(d("0.5"), d("10"), None, None, None), dec("0.5"));
        // 12 digits, half-even
        assert_eq!(outcome_fee(None, d("33.3333333333333"), d("1"), None, None), dec("0.333333333333"));
    }
}
