//! Periods (SPEC §9: "Periods in JSON accept ISO 8601 (`P1M`) and Postgres interval
//! text (`1 month`)"). One parser for every period that JSON carries: entitlements'
//! `every`, outcome prices' `settlement_window`. The result keeps Postgres' three
//! interval fields (months, days, microseconds), because a month and a day are not a
//! fixed number of seconds, and renders as text that `::interval` reads back exactly.

/// A period, in Postgres' interval fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    pub months: i64,
    pub days: i64,
    pub micros: i64,
}

const MICROS_PER_SECOND: i64 = 1_000_000;
const MICROS_PER_HOUR: i64 = 3_600 * MICROS_PER_SECOND;
const MICROS_PER_DAY: i64 = 24 * MICROS_PER_HOUR;

impl Period {
    /// Postgres interval text that reads back as exactly this period.
    pub fn to_sql(&self) -> String {
        format!("{} months {} days {} microseconds", self.months, self.days, self.micros)
    }

    /// The length Postgres uses to compare intervals (a month is 30 days, a day 24
    /// hours), in microseconds. Saturates rather than overflows.
    pub fn comparable_micros(&self) -> i64 {
        self.months
            .saturating_mul(30 * MICROS_PER_DAY)
            .saturating_add(self.days.saturating_mul(MICROS_PER_DAY))
            .saturating_add(self.micros)
    }

    /// The most wall-clock time one period can span: a month of 31 days, a day of 25
    /// hours (across a DST change). Counting k periods at this length cannot overshoot
    /// where adding the period k times lands (the clock's catch-up relies on it).
    pub fn longest_micros(&self) -> i64 {
        self.months
            .saturating_mul(31 * MICROS_PER_DAY)
            .saturating_add(self.days.saturating_mul(25 * MICROS_PER_HOUR))
            .saturating_add(self.micros)
    }

    /// How many whole periods can be skipped from `from` to `to` (microseconds) without
    /// passing `to`, keeping the last one or two for the caller to walk: None when the
    /// gap is too small to be worth a jump.
    pub fn periods_to_skip(&self, from: i64, to: i64) -> Option<i64> {
        let longest = self.longest_micros();
        let behind = to.saturating_sub(from);
        if longest < MICROS_PER_HOUR || behind <= 0 {
            return None;
        }
        let k = behind / longest - 1;
        (k >= 1).then_some(k)
    }

    /// Recurring periods must last at least an hour and at most a year: a shorter one
    /// would make the clock issue a lot per tick for ever (issue 9), a longer one is a
    /// one-off grant with an expiry.
    pub fn check_recurring(&self) -> Result<(), &'static str> {
        if self.months < 0 || self.days < 0 || self.micros < 0 {
            return Err("must not be negative");
        }
        let len = self.comparable_micros();
        if len < MICROS_PER_HOUR {
            return Err("must be at least one hour");
        }
        if len > 360 * MICROS_PER_DAY {
            return Err("must be at most one year");
        }
        Ok(())
    }
}

/// Parses an ISO 8601 duration (`P1M`, `P7D`, `PT48H`, `P1Y2M3DT4H5M6S`, `P2W`) or
/// Postgres interval text (`1 month`, `7 days`, `2 weeks 3 hours`, `1 mon`, `90
/// minutes`). Whole numbers only, except for seconds; no signs: a period is a length.
pub fn parse(s: &str) -> Result<Period, String> {
    let s = s.trim();
    if s.is_empty() || s.len() > 100 {
        return Err("must be a period such as P1M or '1 month'".into());
    }
    let parsed = if s.starts_with('P') { parse_iso(s) } else { parse_postgres(s) };
    parsed.ok_or_else(|| format!("{s:?} is not a period (ISO 8601 such as P1M, or interval text such as '1 month')"))
}

/// A whole number of at most 9 digits (large enough for any period we accept, small
/// enough never to overflow once scaled to microseconds).
fn whole(digits: &str) -> Option<i64> {
    if digits.is_empty() || digits.len() > 9 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Seconds with up to six fractional digits, in microseconds.
fn seconds(text: &str) -> Option<i64> {
    let (int, frac) = match text.split_once(['.', ',']) {
        Some((i, f)) => (i, f),
        None => (text, ""),
    };
    if frac.len() > 6 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let whole_part = whole(int)?;
    let frac_micros = if frac.is_empty() { 0 } else { format!("{frac:0<6}").parse::<i64>().ok()? };
    Some(whole_part * MICROS_PER_SECOND + frac_micros)
}

fn add(p: &mut Period, unit: Unit, n: &str) -> Option<()> {
    match unit {
        Unit::Second => p.micros = p.micros.checked_add(seconds(n)?)?,
        other => {
            let n = whole(n)?;
            match other {
                Unit::Year => p.months = p.months.checked_add(n.checked_mul(12)?)?,
                Unit::Month => p.months = p.months.checked_add(n)?,
                Unit::Week => p.days = p.days.checked_add(n.checked_mul(7)?)?,
                Unit::Day => p.days = p.days.checked_add(n)?,
                Unit::Hour => p.micros = p.micros.checked_add(n.checked_mul(MICROS_PER_HOUR)?)?,
                Unit::Minute => p.micros = p.micros.checked_add(n.checked_mul(60 * MICROS_PER_SECOND)?)?,
                Unit::Second => unreachable!("handled above"),
            }
        }
    }
    Some(())
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Unit {
    Year,
    Month,
    Week,
    Day,
    Hour,
    Minute,
    Second,
}

/// `P[nY][nM][nW][nD][T[nH][nM][nS]]`, each unit at most once and in that order.
fn parse_iso(s: &str) -> Option<Period> {
    let rest = s.strip_prefix('P')?;
    let (date, time) = match rest.split_once('T') {
        Some((d, t)) => (d, Some(t)),
        None => (rest, None),
    };
    let mut p = Period { months: 0, days: 0, micros: 0 };
    let mut groups =
        walk_iso(&mut p, date, &[('Y', Unit::Year), ('M', Unit::Month), ('W', Unit::Week), ('D', Unit::Day)])?;
    if let Some(t) = time {
        match walk_iso(&mut p, t, &[('H', Unit::Hour), ('M', Unit::Minute), ('S', Unit::Second)])? {
            0 => return None, // "P1DT" has an empty time part
            n => groups += n,
        }
    }
    (groups > 0).then_some(p)
}

/// Adds the `number unit` groups of one part of an ISO duration; returns how many.
fn walk_iso(p: &mut Period, part: &str, units: &[(char, Unit)]) -> Option<usize> {
    let mut number = String::new();
    let mut last: Option<usize> = None;
    let mut groups = 0;
    for ch in part.chars() {
        if ch.is_ascii_digit() || ch == '.' || ch == ',' {
            number.push(ch);
            continue;
        }
        let pos = units.iter().position(|(c, _)| *c == ch)?;
        if number.is_empty() || last.is_some_and(|l| pos <= l) {
            return None;
        }
        add(p, units[pos].1, &number)?;
        number.clear();
        last = Some(pos);
        groups += 1;
    }
    number.is_empty().then_some(groups)
}

/// `n unit [n unit ...]` with Postgres' unit spellings (singular, plural and short).
fn parse_postgres(s: &str) -> Option<Period> {
    let words: Vec<&str> = s.split_whitespace().collect();
    if words.is_empty() || !words.len().is_multiple_of(2) {
        return None;
    }
    let mut p = Period { months: 0, days: 0, micros: 0 };
    let mut seen: Vec<Unit> = Vec::new();
    for pair in words.chunks(2) {
        let unit = match pair[1].to_ascii_lowercase().as_str() {
            "year" | "years" | "yr" | "yrs" | "y" => Unit::Year,
            "month" | "months" | "mon" | "mons" => Unit::Month,
            "week" | "weeks" | "w" => Unit::Week,
            "day" | "days" | "d" => Unit::Day,
            "hour" | "hours" | "hr" | "hrs" | "h" => Unit::Hour,
            "minute" | "minutes" | "min" | "mins" | "m" => Unit::Minute,
            "second" | "seconds" | "sec" | "secs" | "s" => Unit::Second,
            _ => return None,
        };
        if seen.contains(&unit) {
            return None;
        }
        seen.push(unit);
        add(&mut p, unit, pair[0])?;
    }
    Some(p)
}

/// An RFC 3339 timestamp such as 2026-01-07T13:19:18.265Z, checked before it is cast.
pub fn is_rfc3339(s: &str) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn p(months: i64, days: i64, micros: i64) -> Period {
        Period { months, days, micros }
    }

    #[test]
    fn rfc3339_timestamps() {
        assert!(is_rfc3339("2026-01-07T13:19:18.265Z"));
        assert!(is_rfc3339("2026-01-07T13:19:18+02:00"));
        assert!(!is_rfc3339("2026-01-07"));
        assert!(!is_rfc3339("yesterday"));
        assert!(!is_rfc3339("2026-01-07T13:19:18.1234567Z"));
    }

    #[test]
    fn iso_and_postgres_forms_agree() {
        for (iso, pg, want) in [
            ("P1M", "1 month", p(1, 0, 0)),
            ("P7D", "7 days", p(0, 7, 0)),
            ("P2W", "2 weeks", p(0, 14, 0)),
            ("P1Y", "1 year", p(12, 0, 0)),
            ("PT48H", "48 hours", p(0, 0, 48 * MICROS_PER_HOUR)),
            ("PT90M", "90 minutes", p(0, 0, 90 * 60 * MICROS_PER_SECOND)),
            (
                "P1Y2M3DT4H5M6.5S",
                "1 year 2 mons 3 days 4 hours 5 mins 6.5 secs",
                p(14, 3, 4 * MICROS_PER_HOUR + 306_500_000),
            ),
        ] {
            assert_eq!(parse(iso), Ok(want), "{iso}");
            assert_eq!(parse(pg), Ok(want), "{pg}");
        }
        assert_eq!(parse("  1 MONTH "), Ok(p(1, 0, 0)));
        assert_eq!(parse("1 mon").unwrap().to_sql(), "1 months 0 days 0 microseconds");
    }

    #[test]
    fn malformed_periods_are_refused() {
        for bad in [
            "",
            "P",
            "PT",
            "P1DT",
            "7D",
            "PD",
            "P1D1M",
            "P1M1M",
            "P-1M",
            "monthly",
            "1",
            "month",
            "1 month 2",
            "-1 month",
            "1 fortnight",
            "1 month 1 month",
            "1.5 months",
            "P1.5M",
            "1e3 days",
            "9999999999 days",
            "PT1.1234567S",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn skipping_never_passes_the_target() {
        let day = parse("1 day").unwrap();
        assert_eq!(day.periods_to_skip(0, MICROS_PER_HOUR), None);
        assert_eq!(day.periods_to_skip(0, 3 * MICROS_PER_DAY), Some(1)); // 72 h / 25 h = 2, minus one
        let fifty_years = 50 * 366 * MICROS_PER_DAY;
        let k = day.periods_to_skip(0, fifty_years).unwrap();
        assert!(k * MICROS_PER_DAY <= fifty_years && k > 17_000, "{k}");
        let month = parse("P1M").unwrap();
        let k = month.periods_to_skip(0, fifty_years).unwrap();
        assert!(k * 31 * MICROS_PER_DAY <= fifty_years && k > 580, "{k}");
        assert_eq!(month.periods_to_skip(10, 5), None);
    }

    #[test]
    fn recurring_periods_last_an_hour_to_a_year() {
        assert!(parse("PT1H").unwrap().check_recurring().is_ok());
        assert!(parse("1 year").unwrap().check_recurring().is_ok());
        assert_eq!(parse("59 minutes").unwrap().check_recurring(), Err("must be at least one hour"));
        assert_eq!(parse("PT0.000001S").unwrap().check_recurring(), Err("must be at least one hour"));
        assert_eq!(parse("P0D").unwrap().check_recurring(), Err("must be at least one hour"));
        assert_eq!(parse("13 months").unwrap().check_recurring(), Err("must be at most one year"));
        assert_eq!(parse("P1Y1D").unwrap().check_recurring(), Err("must be at most one year"));
    }

    #[test]
    fn generated_periods_round_trip_through_both_forms() {
        let mut rng = crate::testing::XorShift(0x5EED_0009);
        for _ in 0..2_000 {
            let (y, m, d, h, mi, s) =
                (rng.below(3), rng.below(13), rng.below(40), rng.below(30), rng.below(70), rng.below(100));
            let iso = format!("P{y}Y{m}M{d}DT{h}H{mi}M{s}S");
            let pg = format!("{y} years {m} months {d} days {h} hours {mi} minutes {s} seconds");
            let a = parse(&iso).unwrap();
            assert_eq!(Ok(a), parse(&pg));
            let want = (y as i64 * 12 + m as i64, d as i64, ((h * 3600 + mi * 60 + s) as i64) * MICROS_PER_SECOND);
            assert_eq!((a.months, a.days, a.micros), want);
        }
    }
}
