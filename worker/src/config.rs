//! Command-line options, each with an environment variable beside it.

use credyt_core::webhook::{parse_schedule, RETRY_SCHEDULE};
use credyt_service::options::{Options, Parsed};
use std::net::SocketAddr;
use std::time::Duration;

pub const USAGE: &str = "\
credyt-worker: delivers credyt's webhook events from the outbox, signed, at least once.

usage: credyt-worker [--database-url URL] [options]

  --database-url URL       PostgreSQL connection URL or key=value string      [DATABASE_URL]
  --concurrency N          deliveries in flight at once (default 32)        [CREDYT_WORKER_CONCURRENCY]
  --timeout DUR            per-attempt HTTP timeout (default 10s)           [CREDYT_WORKER_TIMEOUT]
  --lease DUR              how long a claim is held before another worker
                           may take it; must exceed --timeout (default 60s) [CREDYT_WORKER_LEASE]
  --poll-interval DUR      polling fallback besides LISTEN (default 1s)     [CREDYT_WORKER_POLL_INTERVAL]
  --metrics-addr ADDR      /healthz and /metrics; 'off' disables them
                           (default 127.0.0.1:9187)                         [CREDYT_WORKER_METRICS_ADDR]
  --retry-schedule LIST    waits before each retry; for tests only
                           (default 5s,5m,30m,2h,5h,10h,10h)                [CREDYT_WORKER_RETRY_SCHEDULE]
  --shutdown-timeout DUR   on SIGTERM/SIGINT, how long in-flight deliveries
                           may finish before their claims are released
                           (default 30s)                                    [CREDYT_WORKER_SHUTDOWN_TIMEOUT]
  --worker-id NAME         recorded on claims (default: host name and pid)  [CREDYT_WORKER_ID]
  --log-level LEVEL        info, or debug to log every delivery (default info) [CREDYT_WORKER_LOG_LEVEL]
  --help, --version

Durations are whole numbers with a unit: 500ms, 5s, 5m, 2h.
";

#[derive(Clone, Debug)]
pub struct Config {
    pub database_url: String,
    pub concurrency: usize,
    pub timeout: Duration,
    pub lease: Duration,
    pub poll_interval: Duration,
    pub metrics_addr: Option<SocketAddr>,
    pub retry_schedule: Vec<Duration>,
    pub shutdown_timeout: Duration,
    pub worker_id: String,
    pub debug: bool,
}

/// The options the worker knows.
const KNOWN: &[&str] = &[
    "database-url",
    "concurrency",
    "timeout",
    "lease",
    "poll-interval",
    "metrics-addr",
    "retry-schedule",
    "shutdown-timeout",
    "worker-id",
    "log-level",
];

/// Reads options from `args` (without the program name), falling back to `env`.
pub fn parse(args: &[String], env: &dyn Fn(&str) -> Option<String>) -> Result<Parsed<Config>, String> {
    let o = match Options::read(args, env, KNOWN, USAGE, &format!("credyt-worker {}", env!("CARGO_PKG_VERSION"))) {
        Ok(o) => o,
        Err(Ok(text)) => return Ok(Parsed::Exit(text)),
        Err(Err(why)) => return Err(why),
    };
    let database_url = o.database_url()?;
    let concurrency = o.number("concurrency", "CREDYT_WORKER_CONCURRENCY", 32, 1..=10_000)?;
    let timeout = o.duration("timeout", "CREDYT_WORKER_TIMEOUT", Duration::from_secs(10))?;
    let lease = o.duration("lease", "CREDYT_WORKER_LEASE", Duration::from_secs(60))?;
    let poll_interval = o.duration("poll-interval", "CREDYT_WORKER_POLL_INTERVAL", Duration::from_secs(1))?;
    let shutdown_timeout = o.duration("shutdown-timeout", "CREDYT_WORKER_SHUTDOWN_TIMEOUT", Duration::from_secs(30))?;
    if timeout.is_zero() || poll_interval.is_zero() {
        return Err("--timeout and --poll-interval must be more than zero".into());
    }
    // A claim must outlive its attempt, or a slow endpoint gets the same event from
    // two workers at once.
    if lease < timeout + Duration::from_secs(1) {
        return Err(format!("--lease ({lease:?}) must exceed --timeout ({timeout:?}) by at least 1s"));
    }
    let metrics_addr = match o.get("metrics-addr", "CREDYT_WORKER_METRICS_ADDR").as_deref() {
        Some("off") => None,
        None => Some(SocketAddr::from(([127, 0, 0, 1], 9187))),
        Some(v) => {
            Some(v.parse().map_err(|_| format!("--metrics-addr: {v:?} is not an address such as 127.0.0.1:9187"))?)
        }
    };
    let retry_schedule = match o.get("retry-schedule", "CREDYT_WORKER_RETRY_SCHEDULE") {
        None => RETRY_SCHEDULE.to_vec(),
        Some(v) => parse_schedule(&v).map_err(|e| format!("--retry-schedule: {e}"))?,
    };
    let worker_id = o.get("worker-id", "CREDYT_WORKER_ID").unwrap_or_else(default_worker_id);
    let debug = o.debug("CREDYT_WORKER_LOG_LEVEL")?;
    Ok(Parsed::Run(Config {
        database_url,
        concurrency,
        timeout,
        lease,
        poll_interval,
        metrics_addr,
        retry_schedule,
        shutdown_timeout,
        worker_id,
        debug,
    }))
}

/// host-pid, so that the worker's claims name the machine and process.
fn default_worker_id() -> String {
    let host = std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_string()).unwrap_or_default();
    format!("{}-{}", if host.is_empty() { "worker" } else { &host }, std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str], env: &[(&str, &str)]) -> Result<Config, String> {
        credyt_service::options::parse_literal(parse, args, env)
    }

    #[test]
    fn flags_win_over_the_environment() {
        let c =
            run(&["--database-url", "postgres://a", "--concurrency=4"], &[("DATABASE_URL", "postgres://b")]).unwrap();
        assert_eq!((c.database_url.as_str(), c.concurrency), ("postgres://a", 4));
        let c = run(&[], &[("DATABASE_URL", "postgres://b"), ("CREDYT_WORKER_RETRY_SCHEDULE", "1s,2s")]).unwrap();
        assert_eq!(c.database_url, "postgres://b");
        assert_eq!(c.retry_schedule, vec![Duration::from_secs(1), Duration::from_secs(2)]);
        assert_eq!(c.retry_schedule.len(), 2);
        let c = run(&["--database-url", "x"], &[]).unwrap();
        assert_eq!(c.retry_schedule, RETRY_SCHEDULE.to_vec());
        assert_eq!(c.metrics_addr, Some(SocketAddr::from(([127, 0, 0, 1], 9187))));
        assert_eq!(run(&["--database-url", "x", "--metrics-addr", "off"], &[]).unwrap().metrics_addr, None);
    }

    #[test]
    fn bad_options_are_refused_with_the_reason() {
        for (args, needle) in [
            (vec![], "no database"),
            (vec!["--database-url", "x", "--concurrency", "0"], "--concurrency"),
            (vec!["--database-url", "x", "--timeout", "5"], "--timeout"),
            (vec!["--database-url", "x", "--timeout", "60s"], "--lease"),
            (vec!["--database-url", "x", "--bogus", "1"], "unknown option"),
            (vec!["--database-url"], "needs a value"),
            (vec!["--database-url", "x", "--metrics-addr", "nowhere"], "--metrics-addr"),
            (vec!["--database-url", "x", "--log-level", "loud"], "--log-level"),
            (vec!["stray"], "unexpected argument"),
        ] {
            let e = run(&args, &[]).unwrap_err();
            assert!(e.contains(needle), "{args:?}: {e}");
        }
    }
}
