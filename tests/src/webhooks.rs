//! For the webhook tests and benchmark: a real local HTTP receiver (std only, so it
//! shares no code with the worker's HTTP stack) and a credyt-worker process.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

/// One request the receiver got.
#[derive(Clone, Debug)]
pub struct Received {
    pub path: String,
    /// Header names in lowercase.
    pub headers: HashMap<String, String>,
    pub body: String,
    pub at: SystemTime,
}

impl Received {
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).map(String::as_str).unwrap_or("")
    }
    /// The event id (the `webhook-id` header).
    pub fn event_id(&self) -> &str {
        self.header("webhook-id")
    }
}

/// How the receiver answers requests for one path.
#[derive(Clone, Debug, Default)]
pub struct Behaviour {
    /// Status codes for the first requests, in order; then `then`.
    pub first: Vec<u16>,
    /// Status after `first` (0 means 200).
    pub then: u16,
    /// Wait before answering.
    pub delay: Duration,
}

#[derive(Default)]
struct State {
    received: Vec<Received>,
    behaviours: HashMap<String, Behaviour>,
    counts: HashMap<String, usize>,
}

/// A local HTTP/1.1 server (keep-alive, a thread per connection) that records
/// every request and answers as told per path (200 by default).
pub struct Receiver {
    pub addr: SocketAddr,
    state: Arc<(Mutex<State>, Condvar)>,
}

impl Receiver {
    pub fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the receiver");
        let addr = listener.local_addr().unwrap();
        let state: Arc<(Mutex<State>, Condvar)> = Arc::default();
        let s = state.clone();
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let s = s.clone();
                thread::spawn(move || serve(stream, s));
            }
        });
        Receiver { addr, state }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn behave(&self, path: &str, b: Behaviour) {
        self.state.0.lock().unwrap().behaviours.insert(path.to_string(), b);
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.0.lock().unwrap().received.clone()
    }

    pub fn on(&self, path: &str) -> Vec<Received> {
        self.received().into_iter().filter(|r| r.path == path).collect()
    }

    /// Waits until `done` holds for what was received; false on timeout.
    pub fn wait_until(&self, timeout: Duration, done: impl Fn(&[Received]) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        let (m, cv) = &*self.state;
        let mut g = m.lock().unwrap();
        loop {
            if done(&g.received) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            g = cv.wait_timeout(g, (deadline - now).min(Duration::from_millis(200))).unwrap().0;
        }
    }
}

fn serve(stream: TcpStream, state: Arc<(Mutex<State>, Condvar)>) {
    let _ = stream.set_nodelay(true);
    let Ok(mut out) = stream.try_clone() else { return };
    let mut r = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
        let mut headers = HashMap::new();
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
            }
        }
        let len: usize = headers.get("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
        let mut body = vec![0u8; len];
        if r.read_exact(&mut body).is_err() {
            return;
        }
        let behaviour = {
            let (m, _) = &*state;
            let mut g = m.lock().unwrap();
            let n = *g.counts.entry(path.clone()).and_modify(|c| *c += 1).or_insert(1);
            let b = g.behaviours.get(&path).cloned().unwrap_or_default();
            let status = b.first.get(n - 1).copied().unwrap_or(if b.then == 0 { 200 } else { b.then });
            (status, b.delay)
        };
        if !behaviour.1.is_zero() {
            thread::sleep(behaviour.1);
        }
        let (status, _) = behaviour;
        {
            // Recorded when answered, so a request the worker gave up on (timeout)
            // shows up only as the attempt it was.
            let (m, cv) = &*state;
            m.lock().unwrap().received.push(Received {
                path: path.clone(),
                headers,
                body: String::from_utf8_lossy(&body).into_owned(),
                at: SystemTime::now(),
            });
            cv.notify_all();
        }
        let reason = if status < 300 { "OK" } else { "Error" };
        if out.write_all(format!("HTTP/1.1 {status} {reason}\r\ncontent-length: 0\r\n\r\n").as_bytes()).is_err() {
            return;
        }
    }
}

/// The credyt-worker binary: `CREDYT_WORKER_BIN`, else the workspace's debug build.
pub fn worker_bin() -> PathBuf {
    std::env::var_os("CREDYT_WORKER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/debug/credyt-worker"))
}

/// A free local TCP port (bound, then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A running credyt-worker, its logs in a file.
pub struct Worker {
    child: Child,
    pub log: PathBuf,
    pub metrics: SocketAddr,
}

impl Worker {
    /// Starts a worker on `database_url` with `args` added to the defaults, and waits
    /// until it listens for events.
    pub fn start(database_url: &str, args: &[&str]) -> Worker {
        let w = Worker::spawn(database_url, args);
        let deadline = Instant::now() + Duration::from_secs(20);
        while !w.log_text().contains("listening for events") {
            assert!(Instant::now() < deadline, "the worker did not connect:\n{}", w.log_text());
            thread::sleep(Duration::from_millis(20));
        }
        w
    }

    /// Starts a worker without waiting for it to connect.
    pub fn spawn(database_url: &str, args: &[&str]) -> Worker {
        let bin = worker_bin();
        assert!(bin.exists(), "{} is missing: cargo build -p credyt-worker (scripts/test.sh does)", bin.display());
        let metrics = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let log = std::env::temp_dir().join(format!("{}.log", crate::unique("credyt-worker")));
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(bin)
            .arg("--database-url")
            .arg(database_url)
            .arg("--metrics-addr")
            .arg(metrics.to_string())
            .args(args)
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("start credyt-worker");
        Worker { child, log, metrics }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill").arg(format!("-{sig}")).arg(self.pid().to_string()).status().unwrap();
        assert!(ok.success(), "kill -{sig} failed");
    }

    /// Waits for the process to exit, for at most `timeout`.
    pub fn wait(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// GET `path` from the worker's metrics address: (status, body).
    pub fn get(&self, path: &str) -> (u16, String) {
        let mut s = TcpStream::connect(self.metrics).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        let status = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
        (status, body)
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
