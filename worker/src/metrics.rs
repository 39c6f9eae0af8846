//! Prometheus metrics, kept in atomics and rendered in the text format on
//! `GET /metrics`, beside `GET /healthz`.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Histogram bucket bounds in seconds.
const BUCKETS: [f64; 13] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

pub struct Histogram {
    counts: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    const fn new() -> Self {
        Histogram {
            counts: [const { AtomicU64::new(0) }; BUCKETS.len()],
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        for (i, bound) in BUCKETS.iter().enumerate() {
            if s <= *bound {
                self.counts[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (i, bound) in BUCKETS.iter().enumerate() {
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {}", self.counts[i].load(Ordering::Relaxed));
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum {}", self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6);
        let _ = writeln!(out, "{name}_count {count}");
    }
}

pub struct Metrics {
    pub delivered: AtomicU64,
    pub retried: AtomicU64,
    pub failed: AtomicU64,
    pub in_flight: AtomicU64,
    /// One HTTP attempt, request to response.
    pub attempt: Histogram,
    /// From the event's transaction to its successful delivery.
    pub lag: Histogram,
    /// One claim or one recording of outcomes: a database round trip with a commit.
    pub db: Histogram,
}

pub static METRICS: Metrics = Metrics {
    delivered: AtomicU64::new(0),
    retried: AtomicU64::new(0),
    failed: AtomicU64::new(0),
    in_flight: AtomicU64::new(0),
    attempt: Histogram::new(),
    lag: Histogram::new(),
    db: Histogram::new(),
};

/// The exposition text; `queue` is (due, pending) when the database answered.
pub fn render(queue: Option<(i64, i64)>) -> String {
    let m = &METRICS;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP credyt_worker_deliveries_total Delivery attempts by outcome: delivered, retry (will be tried again), failed (gave up).\n\
         # TYPE credyt_worker_deliveries_total counter"
    );
    for (outcome, c) in [("delivered", &m.delivered), ("retry", &m.retried), ("failed", &m.failed)] {
        let _ = writeln!(out, "credyt_worker_deliveries_total{{outcome=\"{outcome}\"}} {}", c.load(Ordering::Relaxed));
    }
    let _ = writeln!(
        out,
        "# HELP credyt_worker_in_flight Deliveries being attempted now.\n# TYPE credyt_worker_in_flight gauge\n\
         credyt_worker_in_flight {}",
        m.in_flight.load(Ordering::Relaxed)
    );
    if let Some((due, pending)) = queue {
        let _ = writeln!(
            out,
            "# HELP credyt_worker_queue_due Deliveries due now and not claimed, across all workers.\n\
             # TYPE credyt_worker_queue_due gauge\ncredyt_worker_queue_due {due}\n\
             # HELP credyt_worker_queue_pending Pending deliveries, including scheduled retries and claimed ones.\n\
             # TYPE credyt_worker_queue_pending gauge\ncredyt_worker_queue_pending {pending}"
        );
    }
    m.attempt.render(
        &mut out,
        "credyt_worker_attempt_duration_seconds",
        "One HTTP delivery attempt, request to response.",
    );
    m.lag.render(
        &mut out,
        "credyt_worker_delivery_lag_seconds",
        "From the event's transaction to its successful delivery.",
    );
    m.db.render(
        &mut out,
        "credyt_worker_db_round_trip_seconds",
        "One claim or one recording of outcomes, with its commit.",
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let h = Histogram::new();
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_millis(40));
        h.observe(Duration::from_secs(100));
        let mut s = String::new();
        h.render(&mut s, "x", "help");
        assert!(s.contains("x_bucket{le=\"0.005\"} 1\n"), "{s}");
        assert!(s.contains("x_bucket{le=\"0.05\"} 2\n"), "{s}");
        assert!(s.contains("x_bucket{le=\"60\"} 2\n"), "{s}");
        assert!(s.contains("x_bucket{le=\"+Inf\"} 3\n"), "{s}");
        assert!(s.contains("x_count 3\n"), "{s}");
    }
}
