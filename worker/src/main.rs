//! credyt-worker: delivers webhook events from credyt's outbox (SPEC §10).
//!
//! One database session claims due deliveries (`credyt._worker_claim`: FOR UPDATE
//! SKIP LOCKED, with a lease), wakes on the worker channel's NOTIFY and polls besides,
//! and records outcomes in batches (`credyt._worker_finish`). Each claimed delivery
//! is attempted by its own task, at most `--concurrency` at once. The claims of a
//! worker whose database session is gone (killed, crashed) come back at the next
//! claim of any worker; the lease is only for a worker that hangs while connected.
//! Delivery is at least once. Several workers may run against one database.

mod config;
mod deliver;
mod http;
mod metrics;
mod session;
mod shared;

pub(crate) use credyt_service::{log, shutdown, tls};

use config::Config;
use shared::Shared;
use std::process::ExitCode;
use std::sync::Arc;

fn main() -> ExitCode {
    let cfg = match credyt_service::options::from_process("credyt-worker", config::parse) {
        Ok(c) => c,
        Err(code) => return code,
    };
    log::set_debug(cfg.debug);
    match credyt_service::options::runtime() {
        Ok(rt) => rt.block_on(run(cfg)),
        Err(code) => code,
    }
}

async fn run(cfg: Config) -> ExitCode {
    // A database URL whose TLS settings cannot work is a setup mistake: say so once.
    if let Err(e) = tls::split(&cfg.database_url).and_then(|(_, s)| tls::client_config(&s)) {
        log!("error", "bad database URL", "error" => e);
        return ExitCode::FAILURE;
    }
    let http = match deliver::client(cfg.timeout) {
        Ok(h) => h,
        Err(e) => {
            log!("error", &e);
            return ExitCode::FAILURE;
        }
    };
    let shared = Arc::new(Shared::new(cfg.clone()));
    if let Some(addr) = cfg.metrics_addr {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(listener) => {
                tokio::spawn(http::serve_metrics(listener, shared.clone()));
            }
            Err(e) => {
                log!("error", "cannot listen for /metrics", "addr" => addr.to_string(), "error" => e.to_string());
                return ExitCode::FAILURE;
            }
        }
    }
    log!("info", "credyt-worker started", "worker_id" => cfg.worker_id.as_str(), "concurrency" => cfg.concurrency as u64,
         "metrics_addr" => cfg.metrics_addr.map(|a| a.to_string()).unwrap_or_else(|| "off".into()));

    session::run(shared, http, shutdown::signal()).await
}
