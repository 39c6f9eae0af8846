//! Command-line options, each with an environment variable beside it (the worker's
//! conventions: credyt_service::options).

use credyt_service::options::{Options, Parsed};
use std::net::SocketAddr;
use std::time::Duration;

pub const USAGE: &str = "\
credyt-server: Credyt's REST API over the credyt extension.

usage: credyt-server [--database-url URL] [options]

  --database-url URL       PostgreSQL connection URL or key=value string, as a
                           role given credyt.grant_server()                 [DATABASE_URL]
  --listen ADDR            where to serve HTTP (default 127.0.0.1:8080)     [CREDYT_SERVER_LISTEN]
  --pool-size N            database connections at most (default 16)        [CREDYT_SERVER_POOL_SIZE]
  --pool-timeout DUR       how long a request waits for a connection
                           before it is answered 503 (default 5s)           [CREDYT_SERVER_POOL_TIMEOUT]
  --shutdown-timeout DUR   on SIGTERM/SIGINT, how long requests in flight
                           may finish (default 30s)                         [CREDYT_SERVER_SHUTDOWN_TIMEOUT]
  --log-level LEVEL        info, or debug to log every request (default info) [CREDYT_SERVER_LOG_LEVEL]
  --stripe-api-base URL    Stripe's API (default https://api.stripe.com; a
                           local fake in tests)                             [CREDYT_STRIPE_API_BASE]
  --stripe-timeout DUR     per call to Stripe, before a retry (default 10s) [CREDYT_STRIPE_TIMEOUT]
  --public-url URL         where the server is reached from outside, for portal
                           links (default http://LISTEN)                    [CREDYT_PUBLIC_URL]
  --portal-signing-key K   the secret (32+ characters) that signs portal links
                           and sessions (default: random per process)       [CREDYT_PORTAL_SIGNING_KEY]
  --auto-topup-interval DUR  how often pending auto top-ups are charged to
                           saved cards (default 2s; off disables)           [CREDYT_AUTO_TOPUP_INTERVAL]
  --help, --version

Durations are whole numbers with a unit: 500ms, 5s, 5m, 2h.
";

const KNOWN: &[&str] = &[
    "database-url",
    "listen",
    "pool-size",
    "pool-timeout",
    "shutdown-timeout",
    "log-level",
    "stripe-api-base",
    "stripe-timeout",
    "auto-topup-interval",
    "public-url",
    "portal-signing-key",
];

#[derive(Clone, Debug)]
pub struct Config {
    pub database_url: String,
    pub listen: SocketAddr,
    pub pool_size: usize,
    pub pool_timeout: Duration,
    pub shutdown_timeout: Duration,
    pub debug: bool,
    pub stripe_api_base: String,
    pub stripe_timeout: Duration,
    /// None: off
    pub auto_topup_interval: Option<Duration>,
    pub public_url: Option<String>,
    pub portal_signing_key: Option<String>,
}

/// Reads options from `args` (without the program name), falling back to `env`.
pub fn parse(args: &[String], env: &dyn Fn(&str) -> Option<String>) -> Result<Parsed<Config>, String> {
    let version = format!("credyt-server {}", env!("CARGO_PKG_VERSION"));
    let o = match Options::read(args, env, KNOWN, USAGE, &version) {
        Ok(o) => o,
        Err(Ok(text)) => return Ok(Parsed::Exit(text)),
        Err(Err(why)) => return Err(why),
    };
    let database_url = o.database_url()?;
    let listen = match o.get("listen", "CREDYT_SERVER_LISTEN") {
        None => SocketAddr::from(([127, 0, 0, 1], 8080)),
        Some(v) => v.parse().map_err(|_| format!("--listen: {v:?} is not an address such as 127.0.0.1:8080"))?,
    };
    let pool_size = o.number("pool-size", "CREDYT_SERVER_POOL_SIZE", 16, 1..=1000)?;
    let pool_timeout = o.duration("pool-timeout", "CREDYT_SERVER_POOL_TIMEOUT", Duration::from_secs(5))?;
    let shutdown_timeout = o.duration("shutdown-timeout", "CREDYT_SERVER_SHUTDOWN_TIMEOUT", Duration::from_secs(30))?;
    let debug = o.debug("CREDYT_SERVER_LOG_LEVEL")?;
    let stripe_api_base =
        o.get("stripe-api-base", "CREDYT_STRIPE_API_BASE").unwrap_or_else(|| "https://api.stripe.com".to_string());
    if !(stripe_api_base.starts_with("https://") || stripe_api_base.starts_with("http://")) {
        return Err(format!("--stripe-api-base: {stripe_api_base:?} is not an http(s) URL"));
    }
    let stripe_timeout = o.duration("stripe-timeout", "CREDYT_STRIPE_TIMEOUT", Duration::from_secs(10))?;
    let auto_topup_interval = match o.get("auto-topup-interval", "CREDYT_AUTO_TOPUP_INTERVAL").as_deref() {
        Some("off") => None,
        _ => Some(o.duration("auto-topup-interval", "CREDYT_AUTO_TOPUP_INTERVAL", Duration::from_secs(2))?),
    };
    let public_url = o.get("public-url", "CREDYT_PUBLIC_URL");
    if public_url.as_deref().is_some_and(|u| !(u.starts_with("https://") || u.starts_with("http://"))) {
        return Err("--public-url: not an http(s) URL".to_string());
    }
    let portal_signing_key = o.get("portal-signing-key", "CREDYT_PORTAL_SIGNING_KEY");
    if portal_signing_key.as_deref().is_some_and(|k| k.len() < 32) {
        return Err("--portal-signing-key: at least 32 characters".to_string());
    }
    Ok(Parsed::Run(Config {
        database_url,
        listen,
        pool_size,
        pool_timeout,
        shutdown_timeout,
        debug,
        stripe_api_base,
        stripe_timeout,
        auto_topup_interval,
        public_url,
        portal_signing_key,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str], env: &[(&str, &str)]) -> Result<Config, String> {
        credyt_service::options::parse_literal(parse, args, env)
    }

    #[test]
    fn options_and_their_defaults() {
        let c = run(&["--database-url", "postgres://a", "--pool-size=4"], &[("CREDYT_SERVER_LISTEN", "0.0.0.0:9000")])
            .unwrap();
        assert_eq!((c.database_url.as_str(), c.pool_size), ("postgres://a", 4));
        assert_eq!(c.listen, SocketAddr::from(([0, 0, 0, 0], 9000)));
        let c = run(&[], &[("DATABASE_URL", "postgres://b")]).unwrap();
        assert_eq!(c.listen, SocketAddr::from(([127, 0, 0, 1], 8080)));
        assert_eq!((c.pool_size, c.pool_timeout, c.debug), (16, Duration::from_secs(5), false));
        for (args, needle) in [
            (vec![], "no database"),
            (vec!["--database-url", "x", "--pool-size", "0"], "--pool-size"),
            (vec!["--database-url", "x", "--listen", "nowhere"], "--listen"),
            (vec!["--database-url", "x", "--pool-timeout", "5"], "--pool-timeout"),
            (vec!["--database-url", "x", "--bogus", "1"], "unknown option"),
        ] {
            let e = run(&args, &[]).unwrap_err();
            assert!(e.contains(needle), "{args:?}: {e}");
        }
    }
}
