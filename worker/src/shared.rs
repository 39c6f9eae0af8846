//! What the session loop shares with the delivery tasks, the shutdown and the metrics
//! server.

use crate::config::Config;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;
use tokio_postgres::Client;

/// What the main loop shares with the delivery tasks, the signal handler and the
/// metrics server.
pub struct Shared {
    pub cfg: Config,
    /// The live database session, for /metrics; None while reconnecting.
    client: Mutex<Option<Arc<Client>>>,
    stopping: AtomicBool,
    /// Wakes the session loop (and its reconnect wait) when shutdown begins.
    pub stop: Notify,
    /// Claims being attempted: claim token -> (event id, webhook id).
    in_flight: Mutex<HashMap<i64, (String, String)>>,
}

impl Shared {
    pub fn new(cfg: Config) -> Shared {
        Shared {
            cfg,
            client: Mutex::new(None),
            stopping: AtomicBool::new(false),
            stop: Notify::new(),
            in_flight: Mutex::new(HashMap::new()),
        }
    }
    /// Begins the shutdown: no more claims; the session drains and returns.
    pub fn begin_shutdown(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.stop.notify_waiters();
        self.stop.notify_one();
    }
    pub fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }
    pub fn in_flight(&self) -> std::sync::MutexGuard<'_, HashMap<i64, (String, String)>> {
        // A panic while holding this lock cannot leave the map inconsistent.
        self.in_flight.lock().unwrap_or_else(|p| p.into_inner())
    }
    pub fn set_client(&self, c: Option<Arc<Client>>) {
        *self.client.lock().unwrap_or_else(|p| p.into_inner()) = c;
    }
    pub fn client(&self) -> Option<Arc<Client>> {
        self.client.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}
