//! Prometheus metrics, kept in atomics and rendered in the text format on
//! `GET /metrics`, beside `GET /healthz`.

use credyt_service::metrics::Histogram;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

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
