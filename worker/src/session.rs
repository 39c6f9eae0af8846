//! The worker's database sessions: connect (with TLS, src/tls.rs), claim due
//! deliveries and dispatch them, record outcomes in batches, reconnect with backoff,
//! and drain at shutdown.

use crate::config::Config;
use crate::deliver::{self, Claimed, Outcome};
use crate::metrics::METRICS;
use crate::shared::Shared;
use crate::{log, tls};
use std::future::Future;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, Notify, Semaphore};
use tokio_postgres::config::SslMode;
use tokio_postgres::{AsyncMessage, Client, NoTls, Statement};

/// Runs sessions, reconnecting after a lost one, until `shutdown` resolves and the
/// last session has drained. Exits with failure on a setup mistake.
pub async fn run(
    shared: Arc<Shared>,
    http: reqwest::Client,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> ExitCode {
    let s = shared.clone();
    tokio::spawn(async move {
        shutdown.await;
        s.begin_shutdown();
    });
    let cfg = &shared.cfg;
    let slots = Arc::new(Semaphore::new(cfg.concurrency));
    let (results_tx, mut results) = mpsc::unbounded_channel::<Outcome>();
    // Outcomes not yet recorded; they survive a lost session and are recorded by the next.
    let mut unrecorded: Vec<Outcome> = Vec::new();
    // Reconnect backoff: 250 ms doubling to 30 s (origin: a restarting PostgreSQL is
    // back within a second or two; a longer outage should not be hammered).
    let mut backoff = Duration::from_millis(250);
    loop {
        match session(&shared, &http, &slots, &results_tx, &mut results, &mut unrecorded).await {
            Ok(()) => break,
            Err(SessionError::Fatal(e)) => {
                log!("error", &e);
                return ExitCode::FAILURE;
            }
            Err(SessionError::Retry(e)) => {
                shared.set_client(None);
                log!("error", "database session lost; reconnecting", "error" => e, "retry_in_ms" => backoff.as_millis() as u64);
            }
        }
        if shared.stopping() {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shared.stop.notified() => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
    log!("info", "credyt-worker stopped", "worker_id" => cfg.worker_id.as_str(),
         "unrecorded" => unrecorded.len() as u64, "in_flight" => shared.in_flight().len() as u64);
    ExitCode::SUCCESS
}

/// Why a session ended with an error: worth reconnecting, or a setup mistake that
/// reconnecting cannot fix.
enum SessionError {
    Retry(String),
    Fatal(String),
}

impl From<String> for SessionError {
    fn from(s: String) -> Self {
        SessionError::Retry(s)
    }
}

/// Errors in preparing the worker's statements that mean the database is not set
/// up for it, with what to do.
fn setup_error(e: tokio_postgres::Error) -> SessionError {
    let code = e.code().map(|c| c.code().to_string()).unwrap_or_default();
    let hint = match code.as_str() {
        "42501" => {
            "grant the worker's role what it needs, as the extension's owner: SELECT credyt.grant_worker('<role>')"
        }
        "42883" | "3F000" => "install credyt in this database first: CREATE EXTENSION credyt",
        _ => return SessionError::Retry(db_err(e)),
    };
    SessionError::Fatal(format!("{}; {hint}", db_err(e)))
}

/// The statements of one session, prepared once.
struct Statements {
    claim: Statement,
    finish: Statement,
    release: Statement,
}

async fn connect(cfg: &Config) -> Result<(Client, Arc<Notify>), String> {
    let (url, settings) = tls::split(&cfg.database_url)?;
    let mut pg: tokio_postgres::Config = url.parse().map_err(|e| format!("bad database URL: {e}"))?;
    if pg.get_application_name().is_none() {
        pg.application_name("credyt-worker");
    }
    let wake = Arc::new(Notify::new());
    // As libpq, no TLS over Unix-domain sockets (PostgreSQL offers none there).
    let unix_only = pg.get_hosts().iter().all(|h| matches!(h, tokio_postgres::config::Host::Unix(_)));
    let tls_config = if unix_only { None } else { tls::client_config(&settings)? };
    let client = match tls_config {
        None => {
            let (client, conn) =
                pg.connect(NoTls).await.map_err(|e| format!("cannot connect: {}", log::with_sources(&e)))?;
            tokio::spawn(drive(conn, wake.clone()));
            client
        }
        Some(config) => {
            pg.ssl_mode(if settings.mode == tls::Mode::Prefer { SslMode::Prefer } else { SslMode::Require });
            let (client, conn) = pg
                .connect(tls::MakeRustls(config))
                .await
                .map_err(|e| format!("cannot connect: {}", log::with_sources(&e)))?;
            tokio::spawn(drive(conn, wake.clone()));
            client
        }
    };
    Ok((client, wake))
}

/// Drives the connection and turns notifications into wake-ups.
async fn drive<S, T>(mut conn: tokio_postgres::Connection<S, T>, w: Arc<Notify>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        match std::future::poll_fn(|cx| conn.poll_message(cx)).await {
            Some(Ok(AsyncMessage::Notification(_))) => w.notify_one(),
            Some(Ok(_)) => {}
            Some(Err(e)) => {
                log!("error", "database connection failed", "error" => e.to_string());
                break;
            }
            None => break,
        }
    }
    // Wake the loop so that its next query finds the connection closed.
    w.notify_one();
}

fn db_err(e: tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => e.to_string(),
    }
}

/// A value of a column, by name; a missing column or another type is an error that
/// names it (the session then reconnects and logs it).
fn column<'r, T: tokio_postgres::types::FromSql<'r>>(row: &'r tokio_postgres::Row, name: &str) -> Result<T, String> {
    row.try_get(name).map_err(|e| format!("column {name}: {e}"))
}

impl Claimed {
    /// Decodes a row of `credyt._worker_claim`.
    fn from_row(row: &tokio_postgres::Row) -> Result<Claimed, String> {
        Ok(Claimed {
            event_id: column(row, "event_id")?,
            webhook_id: column(row, "webhook_id")?,
            claim: column(row, "claim")?,
            attempts: column(row, "attempts")?,
            url: column(row, "url")?,
            secret: column(row, "secret")?,
            previous_secret: column(row, "previous_secret")?,
            payload: column(row, "payload")?,
            created_at: column(row, "created_at")?,
        })
    }
}

/// Connects, learns the worker's channel and settings, listens, prepares the
/// statements.
async fn open(cfg: &Config) -> Result<(Arc<Client>, Arc<Notify>, Statements), SessionError> {
    let (client, wake) = connect(cfg).await?;
    // The worker's own commits (claims and outcomes) need not wait for the disk: one
    // lost in a crash only means a delivery is sent again, which at-least-once allows.
    client.batch_execute("SET synchronous_commit = off").await.map_err(db_err)?;
    // The wake-up channel's name is private to the worker's role (PostgreSQL has no
    // permission on LISTEN), and so is whether endpoints may be private addresses.
    let row = client
        .query_one(
            "SELECT credyt._worker_channel() AS channel, \
                    coalesce(current_setting('credyt.webhook_allow_private', true), 'off') \
                      IN ('on', 'true', '1', 'yes') AS allow_private",
            &[],
        )
        .await
        .map_err(setup_error)?;
    let channel: String = column(&row, "channel")?;
    deliver::ALLOW_PRIVATE.store(column(&row, "allow_private")?, Ordering::Relaxed);
    client.batch_execute(&format!("LISTEN \"{}\"", channel.replace('"', ""))).await.map_err(db_err)?;
    let st = Statements {
        claim: client
            .prepare(
                "SELECT event_id, webhook_id, claim, attempts, url, secret, previous_secret, payload, created_at \
                      FROM credyt._worker_claim($1, $2, $3)",
            )
            .await
            .map_err(setup_error)?,
        finish: client
            .prepare("SELECT credyt._worker_finish($1, $2, $3, $4, $5, $6, $7) AS applied")
            .await
            .map_err(setup_error)?,
        release: client.prepare("SELECT credyt._worker_release($1, $2, $3)").await.map_err(setup_error)?,
    };
    Ok((Arc::new(client), wake, st))
}

/// One database session: claims and dispatches until asked to stop (Ok) or the
/// database fails (Err: the caller reconnects).
async fn session(
    shared: &Arc<Shared>,
    http: &reqwest::Client,
    slots: &Arc<Semaphore>,
    results_tx: &mpsc::UnboundedSender<Outcome>,
    results: &mut mpsc::UnboundedReceiver<Outcome>,
    unrecorded: &mut Vec<Outcome>,
) -> Result<(), SessionError> {
    let cfg = &shared.cfg;
    let (client, wake, st) = open(cfg).await?;
    shared.set_client(Some(client.clone()));
    log!("info", "connected; listening for events", "worker_id" => cfg.worker_id.as_str());
    loop {
        while let Ok(o) = results.try_recv() {
            unrecorded.push(o);
        }
        if !unrecorded.is_empty() {
            record(&client, &st, shared, unrecorded).await?;
        }
        if shared.stopping() {
            return Ok(drain(&client, &st, shared, results, unrecorded).await?);
        }
        if claim_and_dispatch(&client, &st, shared, http, slots, results_tx).await? {
            continue; // more may be due
        }
        tokio::select! {
            _ = wake.notified() => {}
            Some(o) = results.recv() => unrecorded.push(o),
            _ = tokio::time::sleep(cfg.poll_interval) => {}
            _ = shared.stop.notified() => {}
        }
        if client.is_closed() {
            return Err(SessionError::Retry("the database connection closed".into()));
        }
    }
}

/// Claims as many due deliveries as there are free slots and starts each one. Returns
/// true when every slot was filled (more may be due).
async fn claim_and_dispatch(
    client: &Client,
    st: &Statements,
    shared: &Arc<Shared>,
    http: &reqwest::Client,
    slots: &Arc<Semaphore>,
    results_tx: &mpsc::UnboundedSender<Outcome>,
) -> Result<bool, SessionError> {
    let cfg = &shared.cfg;
    let free = slots.available_permits();
    if free == 0 {
        return Ok(false);
    }
    let started = Instant::now();
    let lease_ms = cfg.lease.as_millis() as i64;
    let rows = client.query(&st.claim, &[&cfg.worker_id, &(free as i32), &lease_ms]).await.map_err(db_err)?;
    METRICS.db.observe(started.elapsed());
    let full = rows.len() == free;
    for row in rows {
        let d = Claimed::from_row(&row)?;
        // Only the session loop takes slots, and `free` were free.
        let Ok(slot) = slots.clone().try_acquire_owned() else { break };
        shared.in_flight().insert(d.claim, (d.event_id.clone(), d.webhook_id.clone()));
        METRICS.in_flight.fetch_add(1, Ordering::Relaxed);
        let (http, tx, schedule) = (http.clone(), results_tx.clone(), cfg.retry_schedule.clone());
        tokio::spawn(async move {
            let outcome = deliver::deliver(&http, d, &schedule).await;
            METRICS.in_flight.fetch_sub(1, Ordering::Relaxed);
            // Free the slot before reporting, so that the loop, woken by the report,
            // finds it free.
            drop(slot);
            let _ = tx.send(outcome);
        });
    }
    Ok(full)
}

/// Records outcomes in one statement. On failure they stay in `unrecorded`.
async fn record(
    client: &Client,
    st: &Statements,
    shared: &Shared,
    unrecorded: &mut Vec<Outcome>,
) -> Result<(), String> {
    let events: Vec<&str> = unrecorded.iter().map(|o| o.event_id.as_str()).collect();
    let hooks: Vec<&str> = unrecorded.iter().map(|o| o.webhook_id.as_str()).collect();
    let claims: Vec<i64> = unrecorded.iter().map(|o| o.claim).collect();
    let outcomes: Vec<&str> = unrecorded.iter().map(|o| o.outcome.as_str()).collect();
    let retry_ms: Vec<Option<i64>> = unrecorded.iter().map(|o| o.retry_in.map(|d| d.as_millis() as i64)).collect();
    let errors: Vec<Option<&str>> = unrecorded.iter().map(|o| o.error.as_deref()).collect();
    let statuses: Vec<Option<i32>> = unrecorded.iter().map(|o| o.status).collect();
    let started = Instant::now();
    let row = client
        .query_one(&st.finish, &[&events, &hooks, &claims, &outcomes, &retry_ms, &errors, &statuses])
        .await
        .map_err(db_err)?;
    METRICS.db.observe(started.elapsed());
    let applied: i32 = column(&row, "applied")?;
    if (applied as usize) < unrecorded.len() {
        // The lease ran out (or the endpoint was disabled) before the outcome came:
        // another attempt may follow. At least once, so nothing is lost.
        log!("warn", "outcomes recorded after their claim ended were ignored",
             "ignored" => (unrecorded.len() - applied as usize) as u64);
    }
    {
        let mut in_flight = shared.in_flight();
        for c in &claims {
            in_flight.remove(c);
        }
    }
    unrecorded.clear();
    Ok(())
}

/// Shutdown: lets in-flight deliveries finish for up to --shutdown-timeout, records
/// their outcomes, and gives back the claims of those still running.
async fn drain(
    client: &Client,
    st: &Statements,
    shared: &Shared,
    results: &mut mpsc::UnboundedReceiver<Outcome>,
    unrecorded: &mut Vec<Outcome>,
) -> Result<(), String> {
    let deadline = Instant::now() + shared.cfg.shutdown_timeout;
    loop {
        let waiting = shared.in_flight().len().saturating_sub(unrecorded.len());
        if waiting == 0 {
            break;
        }
        tokio::select! {
            Some(o) = results.recv() => unrecorded.push(o),
            _ = tokio::time::sleep_until(deadline.into()) => break,
        }
    }
    if !unrecorded.is_empty() {
        record(client, st, shared, unrecorded).await?;
    }
    let left: Vec<(i64, (String, String))> = shared.in_flight().drain().collect();
    if !left.is_empty() {
        let claims: Vec<i64> = left.iter().map(|(c, _)| *c).collect();
        let events: Vec<&str> = left.iter().map(|(_, (e, _))| e.as_str()).collect();
        let hooks: Vec<&str> = left.iter().map(|(_, (_, w))| w.as_str()).collect();
        client.query_one(&st.release, &[&events, &hooks, &claims]).await.map_err(db_err)?;
        log!("info", "released unfinished claims", "count" => claims.len() as u64);
    }
    Ok(())
}
