//! TLS to PostgreSQL for credyt-worker (issue 9): a cluster of the test's own that
//! accepts TCP connections over TLS only, with a certificate from a CA made here.
//! verify-full with that CA connects and delivers; another CA, or a name the
//! certificate does not carry, is refused; plain connections are refused by the server.

use credyt_tests::cluster::Cluster;
use credyt_tests::webhooks::{Receiver, Worker};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl").current_dir(dir).args(args).output().expect("openssl");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A CA (`<name>.crt`, `<name>.key`) in `dir`.
fn ca(dir: &Path, name: &str) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.crt"),
            "-subj",
            &format!("/CN={name}"),
            "-days",
            "2",
        ],
    );
}

/// Waits until the worker's log says `what`; false after `timeout`.
fn log_says(w: &Worker, what: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if w.log_text().contains(what) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

#[test]
fn the_worker_connects_with_verify_full_and_refuses_what_it_cannot_verify() {
    let cluster = Cluster::init("ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n");
    let data = cluster.data();
    let certs = cluster.dir.join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    ca(&certs, "credyt-test-ca");
    ca(&certs, "another-ca");
    openssl(
        &certs,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ],
    );
    std::fs::write(certs.join("san.ext"), "subjectAltName=DNS:localhost,IP:127.0.0.1\n").unwrap();
    openssl(
        &certs,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "credyt-test-ca.crt",
            "-CAkey",
            "credyt-test-ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "2",
            "-extfile",
            "san.ext",
        ],
    );
    for f in ["server.crt", "server.key"] {
        std::fs::copy(certs.join(f), data.join(f)).unwrap();
        cluster.own(&data.join(f));
    }
    let mut perms = std::fs::metadata(data.join("server.key")).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o600);
    std::fs::set_permissions(data.join("server.key"), perms).unwrap();
    // TCP only over TLS; the Unix socket stays for the test's own set-up
    let hba = std::fs::read_to_string(data.join("pg_hba.conf")).unwrap();
    std::fs::write(
        data.join("pg_hba.conf"),
        format!("hostssl all all 127.0.0.1/32 trust\nhostnossl all all 127.0.0.1/32 reject\n{hba}"),
    )
    .unwrap();
    cluster.start();
    let mut admin = cluster.connect();
    admin
        .batch_execute("CREATE EXTENSION credyt; ALTER DATABASE postgres SET credyt.webhook_allow_private = on")
        .unwrap();
    let rx = Receiver::start();
    let ca_file = certs.join("credyt-test-ca.crt");
    let tcp = |extra: &str| format!("host=localhost port={} user=postgres dbname=postgres {extra}", cluster.port);

    // verify-full against our CA: connected over TLS, and it delivers
    let w = Worker::start(&tcp(&format!("sslmode=verify-full sslrootcert={}", ca_file.display())), &[]);
    let mut admin = cluster.connect();
    admin.batch_execute(&format!("SELECT credyt.create_webhook('{}')", rx.url("/tls"))).unwrap();
    let event: String = admin.query_one("SELECT credyt.send_test_event()", &[]).unwrap().get(0);
    assert!(
        rx.wait_until(Duration::from_secs(20), |r| r.iter().any(|m| m.event_id() == event)),
        "nothing delivered over TLS"
    );
    let tls_sessions: i64 = admin
        .query_one(
            "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
             WHERE a.application_name = 'credyt-worker' AND s.ssl",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(tls_sessions, 1, "the worker's session is not encrypted");
    drop(w);

    // require without a CA file: encrypted, unverified (libpq's meaning)
    let w = Worker::start(&tcp("sslmode=require"), &[]);
    drop(w);

    // refused: another CA; the right CA but a name the certificate lacks; no TLS at all
    let another = certs.join("another-ca.crt");
    for (url, why) in [
        (tcp(&format!("sslmode=verify-full sslrootcert={}", another.display())), "invalid peer certificate"),
        (
            format!("host=127.0.0.2 hostaddr=127.0.0.1 port={} user=postgres dbname=postgres sslmode=verify-full sslrootcert={}",
                    cluster.port, ca_file.display()),
            "invalid peer certificate",
        ),
        (tcp("sslmode=disable"), "no encryption"),
    ] {
        let w = Worker::spawn(&url, &[]);
        assert!(log_says(&w, why, Duration::from_secs(20)), "{url}: expected a refusal ({why}):\n{}", w.log_text());
        assert!(!w.log_text().contains("listening for events"), "{url} connected");
    }
    // a verify mode without a CA file is a setup mistake, said once
    let mut w = Worker::spawn(&tcp("sslmode=verify-full"), &[]);
    assert!(w.wait(Duration::from_secs(10)).is_some_and(|s| !s.success()));
    assert!(w.log_text().contains("sslrootcert"), "{}", w.log_text());
}
