//! Webhook delivery benchmark (bench/webhooks.sh runs it): deliveries per second from
//! a backlog, and commit-to-delivery latency of events committed one by one, both
//! through a real credyt-worker to a real local HTTP receiver, in one run.
//!
//! Environment: CREDYT_TEST_DATABASE_URL (a database with credyt installed),
//! CREDYT_WORKER_BIN (a release build), CREDYT_BENCH_EVENTS (backlog, default 5000),
//! CREDYT_BENCH_LATENCY_EVENTS (default 500), CREDYT_BENCH_CONCURRENCY (default 64),
//! CREDYT_BENCH_ROUNDS (default 3).

use credyt_tests::webhooks::{Receiver, Worker};
use credyt_tests::{connect, url};
use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    percentile(&v, 0.5)
}

fn main() {
    let backlog = env_num("CREDYT_BENCH_EVENTS", 5000);
    let latency_events = env_num("CREDYT_BENCH_LATENCY_EVENTS", 500);
    let concurrency = env_num("CREDYT_BENCH_CONCURRENCY", 64).to_string();
    let rounds = env_num("CREDYT_BENCH_ROUNDS", 3);
    let mut admin = connect();
    admin
        .batch_execute(
            "UPDATE credyt.webhook SET enabled = false WHERE enabled; \
             UPDATE credyt.delivery SET status = 'failed', last_error = 'bench reset' WHERE status = 'pending'",
        )
        .unwrap();
    let commit_mode: String = admin
        .query_one("SELECT 'synchronous_commit=' || current_setting('synchronous_commit') || ', fsync=' || current_setting('fsync')", &[])
        .unwrap()
        .get(0);
    let rx = Receiver::start();
    let hook: String =
        admin.query_one("SELECT id FROM credyt.create_webhook($1)", &[&rx.url("/bench")]).unwrap().get(0);
    println!(
        "setup: PostgreSQL 15, {} cores, credyt-worker --concurrency {concurrency} (release), local HTTP/1.1 receiver \
         answering 200 at once, {commit_mode}, {rounds} rounds",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
    );

    let mut rates = Vec::new();
    let mut recorded_rates = Vec::new();
    let mut medians = Vec::new();
    let mut p99s = Vec::new();
    for round in 1..=rounds {
        // 1. Throughput: a backlog of committed events, then a worker starts.
        let before = rx.received().len();
        admin
            .execute("SELECT count(credyt.send_test_event()) FROM generate_series(1, $1::int)", &[&(backlog as i32)])
            .unwrap();
        let started = Instant::now();
        let w = Worker::start(&url(), &["--concurrency", &concurrency]);
        assert!(
            rx.wait_until(Duration::from_secs(300), |r| r.len() >= before + backlog),
            "backlog not delivered:\n{}",
            w.log_text()
        );
        let got = rx.received();
        let window = &got[before..];
        let first = window.iter().map(|r| r.at).min().unwrap();
        let last = window.iter().map(|r| r.at).max().unwrap();
        let rate = backlog as f64 / last.duration_since(first).unwrap_or(Duration::from_millis(1)).as_secs_f64();
        // Until every outcome is recorded in the database as well.
        loop {
            let n: i64 = admin
                .query_one(
                    "SELECT count(*) FROM credyt.delivery WHERE webhook_id = $1 AND status = 'pending'",
                    &[&hook],
                )
                .unwrap()
                .get(0);
            if n == 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let recorded = backlog as f64 / started.elapsed().as_secs_f64();
        // Where the time goes: the worker's mean HTTP attempt, from its own /metrics.
        let (_, metrics) = w.get("/metrics");
        let metric = |name: &str| -> f64 {
            metrics.lines().find_map(|l| l.strip_prefix(name)).and_then(|v| v.trim().parse().ok()).unwrap_or(0.0)
        };
        let mean_attempt = 1000.0 * metric("credyt_worker_attempt_duration_seconds_sum ")
            / metric("credyt_worker_attempt_duration_seconds_count ").max(1.0);
        let trips = metric("credyt_worker_db_round_trip_seconds_count ").max(1.0);
        let mean_trip = 1000.0 * metric("credyt_worker_db_round_trip_seconds_sum ") / trips;
        println!(
            "round {round}: backlog of {backlog} events: {rate:.0} deliveries/s first to last arrival; \
             {recorded:.0}/s from worker start until all recorded delivered; mean HTTP attempt {mean_attempt:.1} ms; \
             {trips:.0} claims and recordings, mean {mean_trip:.2} ms"
        );
        rates.push(rate);
        recorded_rates.push(recorded);

        // 2. Latency: events committed one at a time (autocommit), 5 ms apart, to an idle
        //    worker: from the start of the committing call to the receiver's answer.
        let mut client = connect();
        let mut committed: HashMap<String, SystemTime> = HashMap::new();
        let before = rx.received().len();
        for _ in 0..latency_events {
            // Timed from before the call, so the figure includes the commit itself
            // (an upper bound: the event is committed somewhere inside the call).
            let sent = SystemTime::now();
            let id: String = client.query_one("SELECT credyt.send_test_event()", &[]).unwrap().get(0);
            committed.insert(id, sent);
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(rx.wait_until(Duration::from_secs(120), |r| r.len() >= before + latency_events));
        let mut lat: Vec<f64> = rx.received()[before..]
            .iter()
            .filter_map(|r| {
                committed.get(r.event_id()).map(|c| r.at.duration_since(*c).unwrap_or_default().as_secs_f64() * 1000.0)
            })
            .collect();
        lat.sort_by(|a, b| a.total_cmp(b));
        let (p50, p99) = (percentile(&lat, 0.5), percentile(&lat, 0.99));
        println!(
            "round {round}: commit-to-delivery over {} events committed one by one (from the start of the committing call): median {p50:.1} ms, p99 {p99:.1} ms",
            lat.len()
        );
        medians.push(p50);
        p99s.push(p99);
        drop(w);
    }
    let (rate, recorded, p50, p99) = (median(rates), median(recorded_rates), median(medians), median(p99s));
    println!(
        "webhooks: {rate:.0} deliveries/s (budget >= 1000: ratio {:.2}); {recorded:.0}/s including recording outcomes",
        rate / 1000.0
    );
    println!(
        "webhooks: commit-to-delivery median {p50:.1} ms (budget < 50 ms: ratio {:.2}), p99 {p99:.1} ms",
        p50 / 50.0
    );
    admin.batch_execute(&format!("SELECT credyt.delete_webhook('{hook}')")).unwrap();
}
