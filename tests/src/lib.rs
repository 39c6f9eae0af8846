//! Support for the out-of-process tests: what a real client sees over a real
//! connection, with ordinary roles. The database comes from
//! `CREDYT_TEST_DATABASE_URL` (scripts/test.sh sets it up); without it the tests fail.

use postgres::{Client, NoTls};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;

pub fn url() -> String {
    std::env::var("CREDYT_TEST_DATABASE_URL")
        .expect("CREDYT_TEST_DATABASE_URL is not set: run these tests through scripts/test.sh")
}

pub fn connect() -> Client {
    Client::connect(&url(), NoTls).expect("connect as the test superuser")
}

/// Connects as `role` (the test cluster trusts local connections).
pub fn connect_as(role: &str) -> Client {
    let url = format!("{} user={role}", url());
    Client::connect(&url, NoTls).unwrap_or_else(|e| panic!("connect as {role}: {e}"))
}

/// A name unique to this test run and call.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_micros();
    format!("{prefix}_{}_{n}", t % 1_000_000_000_000)
}

/// The SQLSTATE of a failed statement.
pub fn sqlstate(e: &postgres::Error) -> String {
    e.code().map(|c| c.code().to_string()).unwrap_or_else(|| format!("no SQLSTATE: {e}"))
}

/// Runs a statement that must fail and returns its SQLSTATE.
pub fn fails(c: &mut Client, sql: &str) -> String {
    match c.batch_execute(sql) {
        Ok(()) => panic!("expected an error from: {sql}"),
        Err(e) => sqlstate(&e),
    }
}

pub fn text(c: &mut Client, sql: &str) -> String {
    c.query_one(sql, &[]).unwrap_or_else(|e| panic!("{sql}: {e}")).get::<_, String>(0)
}

/// verify_ledger() over everything the client's scope sees, as "check: detail".
pub fn ledger_problems(c: &mut Client) -> Vec<String> {
    c.query("SELECT \"check\" || ': ' || detail FROM credyt.verify_ledger()", &[])
        .expect("verify_ledger")
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect()
}

/// A connected account, and an application role bound to it.
pub struct Tenant {
    pub account: String,
    pub role: String,
}

impl Tenant {
    pub fn create(admin: &mut Client, name: &str) -> Tenant {
        let account = text(admin, &format!("SELECT credyt.create_account('{name}')"));
        let role = bound_role(admin, &account);
        Tenant { account, role }
    }

    /// A session as the tenant's application role: an ordinary role, so row-level
    /// security applies to everything it reads.
    pub fn session(&self) -> Client {
        connect_as(&self.role)
    }
}

/// Creates a LOGIN role bound to `account`, with grant_access.
pub fn bound_role(admin: &mut Client, account: &str) -> String {
    let role = unique("credyt_t_role");
    admin
        .batch_execute(&format!(
            "CREATE ROLE {role} LOGIN; SELECT credyt.grant_access('{role}'); SELECT credyt.bind_role('{role}', '{account}');"
        ))
        .unwrap();
    role
}

/// A tiny deterministic PRNG (xorshift64*), so failures replay from their seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// Runs `work(client_index, connection)` on `clients` connections as `role`, all
/// released at once by a barrier, and returns their results in client order.
pub fn on_clients<T: Send + 'static>(
    clients: usize,
    role: &str,
    work: impl Fn(usize, &mut Client) -> T + Send + Sync + 'static,
) -> Vec<T> {
    let barrier = Arc::new(Barrier::new(clients));
    let work = Arc::new(work);
    let handles: Vec<_> = (0..clients)
        .map(|i| {
            let (role, barrier, work) = (role.to_string(), barrier.clone(), work.clone());
            thread::spawn(move || {
                let mut c = connect_as(&role);
                barrier.wait();
                work(i, &mut c)
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().expect("client thread")).collect()
}

/// 0..n in an order fixed by `seed` (Fisher-Yates).
pub fn shuffled(n: u64, seed: u64) -> Vec<u64> {
    let mut rng = Rng::new(seed);
    let mut order: Vec<u64> = (0..n).collect();
    for j in (1..order.len()).rev() {
        order.swap(j, rng.below(j as u64 + 1) as usize);
    }
    order
}
pub mod cluster;
pub mod webhooks;
