//! The connection pool and the one-transaction-per-request session: BEGIN, then
//! credyt.authenticate(key, account) (the server role's only way to an account in
//! scope), the request's statements, COMMIT. A session dropped before its commit (an
//! error, a client gone) rolls back before its connection goes back to the pool, so an
//! open transaction is never handed to another request.

use crate::observe::METRICS;
use crate::problem::Problem;
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod};
use std::time::{Duration, Instant};
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

#[derive(Clone)]
pub struct Db {
    pool: Pool,
    wait: Duration,
}

/// What a request authenticates with: X-CREDYT-API-KEY and X-CREDYT-ACCOUNT.
pub struct Credentials {
    pub key: String,
    pub account: Option<String>,
}

impl Db {
    pub fn new(database_url: &str, size: usize, wait: Duration) -> Result<Db, String> {
        let (pg, tls) = credyt_service::tls::configure(database_url, "credyt-server")?;
        let manager = Manager::from_config(pg, tls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let pool = Pool::builder(manager).max_size(size).build().map_err(|e| format!("pool: {e}"))?;
        Ok(Db { pool, wait })
    }

    /// A connection, waiting at most --pool-timeout (503 after).
    async fn connection(&self) -> Result<Object, Problem> {
        let started = Instant::now();
        let got = tokio::time::timeout(self.wait, self.pool.get()).await;
        METRICS.pool_wait.observe(started.elapsed());
        match got {
            Ok(Ok(c)) => Ok(c),
            Ok(Err(e)) => {
                credyt_service::log!("error", "no database connection", "error" => e.to_string());
                Err(Problem::unavailable("the database is unreachable"))
            }
            Err(_) => Err(Problem::unavailable("every database connection is busy")),
        }
    }

    /// Opens a request's transaction and authenticates its key in it: BEGIN and the
    /// key's check are sent together (pipelined), one round trip.
    pub async fn session(&self, creds: &Credentials) -> Result<Session, Problem> {
        let conn = self.connection().await?;
        let s = Session { conn: Some(conn), done: false };
        let c = s.conn()?;
        let auth = c.prepare_cached("SELECT credyt.authenticate($1, $2)").await.map_err(Problem::from_db)?;
        let args: [&(dyn ToSql + Sync); 2] = [&creds.key, &creds.account];
        // (join! polls in order: BEGIN is queued on the connection before the check)
        let (begun, authenticated) = tokio::join!(c.batch_execute("BEGIN"), c.query_one(&auth, &args));
        begun.map_err(Problem::from_db)?;
        authenticated.map_err(Problem::from_db)?;
        Ok(s)
    }

    /// A transaction with no key authenticated: it can reach nothing but what needs no
    /// account (Stripe's webhook, which the database verifies by its signature).
    pub async fn unauthenticated(&self) -> Result<Session, Problem> {
        let conn = self.connection().await?;
        let s = Session { conn: Some(conn), done: false };
        s.conn()?.batch_execute("BEGIN").await.map_err(Problem::from_db)?;
        Ok(s)
    }

    /// (open, idle) connections of the pool.
    pub fn status(&self) -> (usize, usize) {
        let s = self.pool.status();
        (s.size, s.available)
    }

    /// Whether the database answers (GET /healthz).
    pub async fn ping(&self) -> bool {
        match tokio::time::timeout(Duration::from_secs(2), self.pool.get()).await {
            Ok(Ok(c)) => c.simple_query("SELECT 1").await.is_ok(),
            _ => false,
        }
    }
}

pub struct Session {
    conn: Option<Object>,
    done: bool,
}

impl Session {
    fn conn(&self) -> Result<&Object, Problem> {
        self.conn.as_ref().ok_or_else(|| Problem::internal("the session is closed"))
    }

    pub async fn query_one(&self, sql: &str, args: &[&(dyn ToSql + Sync)]) -> Result<Row, Problem> {
        let c = self.conn()?;
        let st = c.prepare_cached(sql).await.map_err(Problem::from_db)?;
        c.query_one(&st, args).await.map_err(Problem::from_db)
    }

    pub async fn query_opt(&self, sql: &str, args: &[&(dyn ToSql + Sync)]) -> Result<Option<Row>, Problem> {
        let c = self.conn()?;
        let st = c.prepare_cached(sql).await.map_err(Problem::from_db)?;
        c.query_opt(&st, args).await.map_err(Problem::from_db)
    }

    pub async fn query(&self, sql: &str, args: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>, Problem> {
        let c = self.conn()?;
        let st = c.prepare_cached(sql).await.map_err(Problem::from_db)?;
        c.query(&st, args).await.map_err(Problem::from_db)
    }

    /// The first column of a one-row statement that returns jsonb.
    pub async fn json(&self, sql: &str, args: &[&(dyn ToSql + Sync)]) -> Result<serde_json::Value, Problem> {
        let row = self.query_one(sql, args).await?;
        row.try_get::<_, serde_json::Value>(0).map_err(Problem::from_db)
    }

    /// The request's last statement and its COMMIT, sent together (one round trip). If
    /// the statement fails, the COMMIT of the failed transaction rolls it back.
    pub async fn last(mut self, sql: &str, args: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>, Problem> {
        let c = self.conn()?;
        let st = c.prepare_cached(sql).await.map_err(Problem::from_db)?;
        let (rows, committed) = tokio::join!(c.query(&st, args), c.batch_execute("COMMIT"));
        committed.map_err(Problem::from_db)?;
        self.done = true;
        rows.map_err(Problem::from_db)
    }

    pub async fn commit(mut self) -> Result<(), Problem> {
        self.conn()?.batch_execute("COMMIT").await.map_err(Problem::from_db)?;
        self.done = true;
        Ok(())
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if !self.done {
            if let Some(conn) = self.conn.take() {
                // Rolled back before the pool sees the connection again; one that cannot
                // even roll back is closed instead.
                tokio::spawn(async move {
                    if conn.batch_execute("ROLLBACK").await.is_err() {
                        drop(Object::take(conn));
                    }
                });
            }
        }
    }
}
