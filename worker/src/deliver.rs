//! One delivery attempt: sign the envelope and POST it.

use crate::metrics::METRICS;
use credyt_core::webhook::{check_destination, next_retry, secret_key, signature_headers, url_host, DeliveryOutcome};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A claimed delivery, as `credyt._worker_claim` returns it.
#[derive(Clone, Debug)]
pub struct Claimed {
    pub event_id: String,
    pub webhook_id: String,
    pub claim: i64,
    pub attempts: i32,
    pub url: String,
    pub secret: String,
    pub previous_secret: Option<String>,
    pub payload: String,
    pub created_at: SystemTime,
}

/// What an attempt came to, for `credyt._worker_finish`.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub event_id: String,
    pub webhook_id: String,
    pub claim: i64,
    pub outcome: DeliveryOutcome,
    pub retry_in: Option<Duration>,
    pub error: Option<String>,
    pub status: Option<i32>,
}

/// `credyt.webhook_allow_private` as the database said at the last connect: whether
/// endpoints may reach loopback and private addresses (development and tests only).
pub static ALLOW_PRIVATE: AtomicBool = AtomicBool::new(false);

/// Resolves endpoint hosts and refuses any that resolve to a private, loopback or
/// link-local address, at delivery time: the address connected to is the one checked,
/// so a name that changed its address since the endpoint was created (DNS rebinding)
/// cannot reach the worker's network.
struct PublicOnly;

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if !ALLOW_PRIVATE.load(Ordering::Relaxed) {
                let ips: Vec<IpAddr> = addrs.iter().map(SocketAddr::ip).collect();
                check_destination(&host, &ips)?;
            }
            let addrs: reqwest::dns::Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

/// The same rule for a URL whose host is an address itself (no resolver is asked).
fn refused(url: &str) -> Option<String> {
    if ALLOW_PRIVATE.load(Ordering::Relaxed) {
        return None;
    }
    let host = url_host(url)?;
    host.parse::<IpAddr>().ok()?;
    check_destination(&host, &[]).err()
}

pub fn client(timeout: Duration) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .dns_resolver(std::sync::Arc::new(PublicOnly))
        .timeout(timeout)
        // (origin: a TCP connect to a live host takes milliseconds; 5 s is the first retry)
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        // A redirect is not a delivery: the endpoint must answer 2xx itself.
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("credyt-worker/", env!("CARGO_PKG_VERSION")))
        // (origin: twice the default --concurrency, so one busy endpoint keeps its
        // connections alive between bursts)
        .pool_max_idle_per_host(64)
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))
}

/// Why an attempt failed, in a line; None when the endpoint answered 2xx.
async fn attempt(http: &reqwest::Client, d: &Claimed) -> (Option<String>, Option<i32>) {
    let mut keys = Vec::with_capacity(2);
    for s in std::iter::once(&d.secret).chain(d.previous_secret.iter()) {
        match secret_key(s) {
            Ok(k) => keys.push(k),
            Err(e) => return (Some(format!("endpoint secret unusable: {e}")), None),
        }
    }
    let timestamp = SystemTime::now().duration_since(UNIX_EPOCH).map(|t| t.as_secs() as i64).unwrap_or(0);
    if let Some(why) = refused(&d.url) {
        return (Some(format!("refused: {why}")), None);
    }
    let body = d.payload.as_bytes();
    let (standard, credyt) = signature_headers(&keys, &d.event_id, timestamp, body);
    let sent = http
        .post(&d.url)
        .header("content-type", "application/json")
        .header("webhook-id", &d.event_id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", standard)
        .header("credyt-signature", credyt)
        .body(d.payload.clone())
        .send()
        .await;
    match sent {
        Ok(resp) => {
            let status = resp.status();
            // Read (and drop) the body so the connection can be reused.
            let _ = resp.bytes().await;
            if status.is_success() {
                (None, Some(i32::from(status.as_u16())))
            } else {
                (Some(format!("HTTP {status}")), Some(i32::from(status.as_u16())))
            }
        }
        Err(e) if e.is_timeout() => (Some("timed out".into()), None),
        Err(e) => (Some(crate::log::with_sources(&e)), None),
    }
}

/// Attempts `d` once and decides what follows under `schedule`.
pub async fn deliver(http: &reqwest::Client, d: Claimed, schedule: &[Duration]) -> Outcome {
    let started = Instant::now();
    let (error, status) = attempt(http, &d).await;
    METRICS.attempt.observe(started.elapsed());
    let attempts = d.attempts + 1;
    let (outcome, retry_in) = match &error {
        None => {
            METRICS.delivered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if let Ok(lag) = SystemTime::now().duration_since(d.created_at) {
                METRICS.lag.observe(lag);
            }
            crate::log!("debug", "delivered", "event_id" => d.event_id.as_str(), "webhook_id" => d.webhook_id.as_str(),
                        "attempt" => attempts, "ms" => started.elapsed().as_millis() as u64);
            (DeliveryOutcome::Delivered, None)
        }
        Some(e) => match next_retry(schedule, attempts) {
            Some(wait) => {
                METRICS.retried.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                crate::log!("warn", "attempt failed; will retry", "event_id" => d.event_id.as_str(),
                            "webhook_id" => d.webhook_id.as_str(), "url" => d.url.as_str(), "attempt" => attempts,
                            "error" => e.as_str(), "retry_in_ms" => wait.as_millis() as u64);
                (DeliveryOutcome::Retry, Some(wait))
            }
            None => {
                METRICS.failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                crate::log!("error", "delivery failed for good", "event_id" => d.event_id.as_str(),
                            "webhook_id" => d.webhook_id.as_str(), "url" => d.url.as_str(), "attempt" => attempts,
                            "error" => e.as_str());
                (DeliveryOutcome::Failed, None)
            }
        },
    };
    Outcome { event_id: d.event_id, webhook_id: d.webhook_id, claim: d.claim, outcome, retry_in, error, status }
}
