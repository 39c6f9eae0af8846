//! What the server tells its operators: a request id on every response (the client's
//! X-Request-Id, else a fresh one), a JSON log line per request, and Prometheus
//! metrics: requests by route and status, latency, waits for a pooled connection.

use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use credyt_service::metrics::Histogram;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

pub struct Metrics {
    /// (method, route, status) → requests
    requests: Mutex<BTreeMap<(String, String, u16), u64>>,
    pub latency: Histogram,
    pub pool_wait: Histogram,
    pub in_flight: AtomicU64,
}

pub static METRICS: Metrics = Metrics {
    requests: Mutex::new(BTreeMap::new()),
    latency: Histogram::new(),
    pool_wait: Histogram::new(),
    in_flight: AtomicU64::new(0),
};

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A request id unique within this process's life: its start time and a counter.
fn new_request_id() -> String {
    static START: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let start = *START.get_or_init(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
    });
    format!("req_{start:x}_{:x}", NEXT_ID.fetch_add(1, Ordering::Relaxed))
}

/// The middleware: request id in and out, metrics, one log line.
pub async fn track(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().to_string();
    let route =
        req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_string()).unwrap_or_else(|| "unmatched".into());
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_string)
        .unwrap_or_else(new_request_id);
    METRICS.in_flight.fetch_add(1, Ordering::Relaxed);
    let mut res = next.run(req).await;
    METRICS.in_flight.fetch_sub(1, Ordering::Relaxed);
    let elapsed = started.elapsed();
    let status = res.status();
    METRICS.latency.observe(elapsed);
    if let Ok(mut m) = METRICS.requests.lock() {
        *m.entry((method.clone(), route.clone(), status.as_u16())).or_default() += 1;
    }
    if let Ok(v) = HeaderValue::from_str(&id) {
        res.headers_mut().insert("x-request-id", v);
    }
    let level = if status.is_server_error() { "error" } else { "debug" };
    if level == "error" || credyt_service::log::debug_enabled() {
        credyt_service::log::emit(
            level,
            "request",
            &[
                ("request_id", id.into()),
                ("method", method.into()),
                ("route", route.into()),
                ("status", status.as_u16().into()),
                ("ms", (elapsed.as_secs_f64() * 1000.0).into()),
            ],
        );
    }
    res
}

/// The exposition text of GET /metrics.
pub fn render(pool: (usize, usize)) -> String {
    let m = &METRICS;
    let mut out = String::new();
    let _ = writeln!(out, "# HELP credyt_server_requests_total Requests by method, route and status.");
    let _ = writeln!(out, "# TYPE credyt_server_requests_total counter");
    if let Ok(reqs) = m.requests.lock() {
        for ((method, route, status), n) in reqs.iter() {
            let _ = writeln!(
                out,
                "credyt_server_requests_total{{method=\"{method}\",route=\"{}\",status=\"{status}\"}} {n}",
                route.replace('"', "")
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP credyt_server_in_flight Requests being served now.\n# TYPE credyt_server_in_flight gauge\n\
         credyt_server_in_flight {}\n\
         # HELP credyt_server_pool_connections Database connections open, and idle among them.\n\
         # TYPE credyt_server_pool_connections gauge\n\
         credyt_server_pool_connections{{state=\"open\"}} {}\ncredyt_server_pool_connections{{state=\"idle\"}} {}",
        m.in_flight.load(Ordering::Relaxed),
        pool.0,
        pool.1
    );
    m.latency.render(&mut out, "credyt_server_request_duration_seconds", "One request, received to answered.");
    m.pool_wait.render(&mut out, "credyt_server_pool_wait_seconds", "Waiting for a pooled database connection.");
    out
}

/// 404 for a path no route has, as a problem.
pub async fn no_route() -> crate::problem::Problem {
    crate::problem::Problem::new(StatusCode::NOT_FOUND, "Not Found", Some("no such route".into()))
}
