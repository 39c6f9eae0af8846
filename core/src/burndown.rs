//! The burn-down order (SPEC §5): which lots a charge draws from, and how much.
//!
//! Only lots that are effective and not expired at the time of the charge are
//! candidates (the caller filters them). They are consumed by priority ascending,
//! then earliest expiry (no expiry last), then oldest. Whatever the lots cannot
//! cover is the shortfall, which the caller turns into debt (or rejects against the
//! overdraft limit).

use rust_decimal::Decimal;

/// A lot as the burn-down sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LotView {
    pub priority: i32,
    /// Expiry as microseconds since the epoch; `None` never expires.
    pub expires_at: Option<i64>,
    /// Creation sequence: smaller is older.
    pub seq: i64,
    pub remaining: Decimal,
}

/// The sort key of the consumption order.
fn key(l: &LotView) -> (i32, bool, i64, i64) {
    (l.priority, l.expires_at.is_none(), l.expires_at.unwrap_or(i64::MAX), l.seq)
}

/// Returns the indices of `lots` in consumption order.
pub fn consumption_order(lots: &[LotView]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..lots.len()).collect();
    idx.sort_by_key(|&i| key(&lots[i]));
    idx
}

/// How a charge is covered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation {
    /// (index into the input slice, amount taken), in consumption order.
    pub takes: Vec<(usize, Decimal)>,
    /// What the lots could not cover.
    pub shortfall: Decimal,
}

/// Draws `amount` (> 0) from `lots` in consumption order.
pub fn allocate(lots: &[LotView], amount: Decimal) -> Allocation {
    let mut need = amount;
    let mut takes = Vec::new();
    for i in consumption_order(lots) {
        if need.is_zero() {
            break;
        }
        let have = lots[i].remaining;
        if have <= Decimal::ZERO {
            continue;
        }
        let take = have.min(need);
        need -= take;
        takes.push((i, take));
    }
    Allocation { takes, shortfall: need }
}

/// What a lot is for (SPEC §1): a fixed vocabulary, parsed once where text enters
/// (an argument, a JSON field, a column) so that a typo cannot compile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    Promotion,
    Bundled,
    Paid,
}

impl Purpose {
    pub const NAMES: &'static str = "promotion, bundled, paid";

    pub fn parse(s: &str) -> Option<Purpose> {
        match s {
            "promotion" => Some(Purpose::Promotion),
            "bundled" => Some(Purpose::Bundled),
            "paid" => Some(Purpose::Paid),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::Promotion => "promotion",
            Purpose::Bundled => "bundled",
            Purpose::Paid => "paid",
        }
    }

    /// The default priority (SPEC §5: promotion 10, bundled 20, paid 100).
    pub fn default_priority(self) -> i32 {
        match self {
            Purpose::Promotion => 10,
            Purpose::Bundled => 20,
            Purpose::Paid => 100,
        }
    }
}

/// What happens to a lot's remainder when it expires (SPEC §7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExpiryPolicy {
    Expire,
    Rollover,
    Reserve,
}

impl ExpiryPolicy {
    pub const NAMES: &'static str = "expire, rollover, reserve";

    pub fn parse(s: &str) -> Option<ExpiryPolicy> {
        match s {
            "expire" => Some(ExpiryPolicy::Expire),
            "rollover" => Some(ExpiryPolicy::Rollover),
            "reserve" => Some(ExpiryPolicy::Reserve),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ExpiryPolicy::Expire => "expire",
            ExpiryPolicy::Rollover => "rollover",
            ExpiryPolicy::Reserve => "reserve",
        }
    }
}

/// Where an expiring lot's remainder goes (SPEC §7): kept in its wallet account as a
/// new lot (rollover, up to the cap), moved to the customer's reserve pool (reserve,
/// unless the lot is already in the pool), or lost. The three always sum to the
/// remainder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExpirySplit {
    pub kept: Decimal,
    pub reserved: Decimal,
    pub lost: Decimal,
}

pub fn split_expiry(policy: ExpiryPolicy, remaining: Decimal, cap: Option<Decimal>, in_pool: bool) -> ExpirySplit {
    let kept = match policy {
        ExpiryPolicy::Rollover => cap.map_or(remaining, |cap| remaining.min(cap)),
        _ => Decimal::ZERO,
    };
    let reserved = if policy == ExpiryPolicy::Reserve && !in_pool { remaining } else { Decimal::ZERO };
    ExpirySplit { kept, reserved, lost: remaining - kept - reserved }
}

/// Default priorities per lot purpose, from its text.
pub fn default_priority(purpose: &str) -> Option<i32> {
    Purpose::parse(purpose).map(Purpose::default_priority)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }
    #[test]
    fn expiry_split_sums_to_the_remainder() {
        let split = |p, r: &str, cap: Option<&str>, pool| split_expiry(p, d(r), cap.map(d), pool);
        let s = |k: &str, r: &str, l: &str| ExpirySplit { kept: d(k), reserved: d(r), lost: d(l) };
        assert_eq!(split(ExpiryPolicy::Expire, "7", None, false), s("0", "0", "7"));
        assert_eq!(split(ExpiryPolicy::Rollover, "7", None, false), s("7", "0", "0"));
        assert_eq!(split(ExpiryPolicy::Rollover, "7", Some("2.5"), false), s("2.5", "0", "4.5"));
        assert_eq!(split(ExpiryPolicy::Rollover, "2", Some("5"), false), s("2", "0", "0"));
        assert_eq!(split(ExpiryPolicy::Reserve, "7", None, false), s("0", "7", "0"));
        // a lot already in the reserve pool has nowhere further to go
        assert_eq!(split(ExpiryPolicy::Reserve, "7", None, true), s("0", "0", "7"));
    }

    fn lot(priority: i32, expires_at: Option<i64>, seq: i64, remaining: &str) -> LotView {
        LotView { priority, expires_at, seq, remaining: d(remaining) }
    }

    #[test]
    fn priority_then_expiry_then_age() {
        let lots = vec![
            lot(100, None, 1, "5"),       // paid, oldest
            lot(10, None, 5, "1"),        // promotion without expiry
            lot(10, Some(2_000), 4, "1"), // promotion expiring later
            lot(10, Some(1_000), 6, "1"), // promotion expiring first
            lot(20, Some(500), 2, "1"),   // bundled
            lot(100, None, 0, "5"),       // paid, older still
        ];
        assert_eq!(consumption_order(&lots), vec![3, 2, 1, 4, 5, 0]);
    }

    #[test]
    fn takes_across_lots_and_reports_shortfall() {
        let lots = vec![lot(100, None, 1, "3"), lot(10, None, 2, "2.5")];
        let a = allocate(&lots, d("4"));
        assert_eq!(a.takes, vec![(1, d("2.5")), (0, d("1.5"))]);
        assert_eq!(a.shortfall, d("0"));
        let b = allocate(&lots, d("7.25"));
        assert_eq!(b.takes, vec![(1, d("2.5")), (0, d("3"))]);
        assert_eq!(b.shortfall, d("1.75"));
    }

    #[test]
    fn empty_lots_are_skipped() {
        let lots = vec![lot(10, None, 1, "0"), lot(100, None, 2, "1")];
        let a = allocate(&lots, d("0.5"));
        assert_eq!(a.takes, vec![(1, d("0.5"))]);
    }

    /// Property: for random lots and amounts, takes never exceed a lot's remainder,
    /// takes plus shortfall equal the amount, and lots are drained strictly in order.
    #[test]
    fn property_allocation_conserves_and_respects_order() {
        let mut rng = crate::testing::XorShift(0x9E37_79B9_7F4A_7C15);
        let mut rnd = |n: u64| rng.below(n);
        for _ in 0..2_000 {
            let n = rnd(6) as usize;
            let lots: Vec<LotView> = (0..n)
                .map(|i| LotView {
                    priority: [10, 20, 100][rnd(3) as usize],
                    expires_at: if rnd(2) == 0 { None } else { Some(rnd(5) as i64) },
                    seq: i as i64,
                    remaining: Decimal::new(rnd(10_000) as i64, 2),
                })
                .collect();
            let amount = Decimal::new(rnd(30_000) as i64 + 1, 2);
            let a = allocate(&lots, amount);
            let taken: Decimal = a.takes.iter().map(|t| t.1).sum();
            assert_eq!(taken + a.shortfall, amount);
            assert!(a.shortfall >= Decimal::ZERO);
            for (i, t) in &a.takes {
                assert!(*t > Decimal::ZERO && *t <= lots[*i].remaining);
            }
            // every lot before the last one touched is fully drained
            let order = consumption_order(&lots);
            if let Some((last, _)) = a.takes.last() {
                let pos = order.iter().position(|x| x == last).unwrap();
                for &i in &order[..pos] {
                    let took = a.takes.iter().find(|t| t.0 == i).map(|t| t.1).unwrap_or_default();
                    assert_eq!(took, lots[i].remaining);
                }
            }
            if a.shortfall > Decimal::ZERO {
                let total: Decimal = lots.iter().map(|l| l.remaining).sum();
                assert_eq!(total + a.shortfall, amount);
            }
        }
    }

    #[test]
    fn purposes() {
        assert_eq!(default_priority("promotion"), Some(10));
        assert_eq!(default_priority("bundled"), Some(20));
        assert_eq!(default_priority("paid"), Some(100));
        assert_eq!(default_priority("gift"), None);
        for p in [Purpose::Promotion, Purpose::Bundled, Purpose::Paid] {
            assert_eq!(Purpose::parse(p.as_str()), Some(p));
        }
        for e in [ExpiryPolicy::Expire, ExpiryPolicy::Rollover, ExpiryPolicy::Reserve] {
            assert_eq!(ExpiryPolicy::parse(e.as_str()), Some(e));
        }
        assert_eq!(ExpiryPolicy::parse("keep"), None);
    }
}
