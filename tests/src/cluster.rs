//! Throwaway PostgreSQL clusters for the tests that need one of their own: the crash
//! test kills one, the TLS test gives one a certificate. They run as the `postgres`
//! OS user when the tests run as root (PostgreSQL refuses root).

use crate::webhooks::free_port;
use postgres::{Client, NoTls};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

fn is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| o.stdout == b"0\n").unwrap_or(false)
}

/// Runs a PostgreSQL tool as the cluster's owner: `postgres` when we are root.
fn pg_tool(tool: &str) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--", &format!("{PG_BIN}/{tool}")]);
        c
    } else {
        Command::new(format!("{PG_BIN}/{tool}"))
    }
}

/// A throwaway cluster in its own directory, on its own port (Unix socket in that
/// directory, and TCP on 127.0.0.1), with `conf` added to its postgresql.conf.
pub struct Cluster {
    pub dir: PathBuf,
    pub port: u16,
}

impl Cluster {
    pub fn create(conf: &str) -> Cluster {
        let c = Cluster::init(conf);
        c.start();
        c
    }

    /// Initialises the cluster without starting it (to change its files first).
    pub fn init(conf: &str) -> Cluster {
        let dir = std::env::temp_dir().join(crate::unique("credyt-crash"));
        std::fs::create_dir_all(&dir).unwrap();
        if is_root() {
            assert!(Command::new("chown").arg("postgres").arg(&dir).status().unwrap().success());
        }
        let data = dir.join("data");
        let out = pg_tool("initdb")
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8"])
            .output()
            .unwrap();
        assert!(out.status.success(), "initdb: {}", String::from_utf8_lossy(&out.stderr));
        let port = free_port();
        let conf = format!(
            "port = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\nmax_connections = 40\n{conf}",
            dir.display()
        );
        let mut f = std::fs::OpenOptions::new().append(true).open(data.join("postgresql.conf")).unwrap();
        std::io::Write::write_all(&mut f, conf.as_bytes()).unwrap();
        Cluster { dir, port }
    }

    /// Gives a file of the cluster's directory to the cluster's owner (as root).
    pub fn own(&self, path: &Path) {
        if is_root() {
            assert!(Command::new("chown").arg("postgres").arg(path).status().unwrap().success());
        }
    }

    pub fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    pub fn start(&self) {
        let out = pg_tool("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .arg("-l")
            .arg(self.dir.join("postgres.log"))
            .args(["-w", "-t", "120", "start"])
            .output()
            .unwrap();
        let log = std::fs::read_to_string(self.dir.join("postgres.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(30).collect();
        assert!(
            out.status.success(),
            "the cluster did not start; its log ends:\n{}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }

    /// SIGKILL to the postmaster and every process of the cluster: a power cut.
    pub fn crash(&self) {
        let pidfile = std::fs::read_to_string(self.data().join("postmaster.pid")).unwrap();
        let pid = pidfile.lines().next().unwrap().trim().to_string();
        let _ = Command::new("kill").args(["-KILL", &pid]).status();
        let _ = Command::new("pkill").args(["-KILL", "-P", &pid]).status();
        // wait until nothing of it runs
        let deadline = Instant::now() + Duration::from_secs(30);
        while Path::new(&format!("/proc/{pid}")).exists()
            || Command::new("pgrep").args(["-P", &pid]).output().map(|o| !o.stdout.is_empty()).unwrap_or(false)
        {
            assert!(Instant::now() < deadline, "the killed cluster did not go away");
            thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self) -> String {
        format!("host={} port={} user=postgres dbname=postgres connect_timeout=5", self.dir.display(), self.port)
    }

    pub fn connect(&self) -> Client {
        Client::connect(&self.url(), NoTls).expect("connect to the crash-test cluster")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = pg_tool("pg_ctl").arg("-D").arg(self.data()).args(["-m", "immediate", "stop"]).output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
