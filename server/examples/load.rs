//! A load generator for bench/server.sh: N clients, each on one keep-alive HTTP/1.1
//! connection, POST /events for a fixed time, every event id new. Prints the events
//! per second, the requests per second and the latency percentiles.
//!
//!   cargo run --release -p credyt-server --example load -- ADDR KEY CLIENTS SECONDS EVENTS_PER_REQUEST CUSTOMERS

use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

struct Args {
    addr: String,
    key: String,
    clients: usize,
    seconds: u64,
    per_request: usize,
    customers: usize,
}

fn args() -> Args {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let n = |i: usize| a.get(i).and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("argument {i}"));
    Args {
        addr: a.first().cloned().expect("ADDR"),
        key: a.get(1).cloned().expect("KEY"),
        clients: n(2),
        seconds: n(3) as u64,
        per_request: n(4),
        customers: n(5),
    }
}

/// One request on the connection; returns the status.
async fn post(r: &mut BufReader<TcpStream>, addr: &str, key: &str, body: &str) -> std::io::Result<u16> {
    let head = format!(
        "POST /events HTTP/1.1\r\nHost: {addr}\r\nX-CREDYT-API-KEY: {key}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    );
    r.get_mut().write_all(head.as_bytes()).await?;
    r.get_mut().write_all(body.as_bytes()).await?;
    let mut line = String::new();
    r.read_line(&mut line).await?;
    let status: u16 = line.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let mut length = 0usize;
    loop {
        line.clear();
        r.read_line(&mut line).await?;
        if line == "\r\n" || line.is_empty() {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
    }
    let mut rest = vec![0u8; length];
    r.read_exact(&mut rest).await?;
    if status != 204 {
        eprintln!("status {status}: {}", String::from_utf8_lossy(&rest));
    }
    Ok(status)
}

#[tokio::main]
async fn main() {
    let a = args();
    let started = Instant::now();
    let deadline = started + Duration::from_secs(a.seconds);
    let mut tasks = Vec::new();
    for client in 0..a.clients {
        let (addr, key, per, customers) = (a.addr.clone(), a.key.clone(), a.per_request, a.customers);
        tasks.push(tokio::spawn(async move {
            let stream = TcpStream::connect(&addr).await.expect("connect");
            stream.set_nodelay(true).ok();
            let mut r = BufReader::new(stream);
            let mut latencies = Vec::new();
            let mut n = 0u64;
            while Instant::now() < deadline {
                let customer = (n as usize * 7919 + client * 104_729) % customers + 1;
                let events: Vec<String> = (0..per)
                    .map(|i| format!(r#"{{"id": "h-{client}-{n}-{i}-{}", "event_type": "chat", "data": {{"model": "gpt-4o", "input_tokens": 1200, "output_tokens": 310}}}}"#, started.elapsed().as_nanos()))
                    .collect();
                let body = format!(r#"{{"customer_external_id": "c{customer}", "events": [{}]}}"#, events.join(","));
                let t = Instant::now();
                let status = post(&mut r, &addr, &key, &body).await.expect("request");
                assert_eq!(status, 204, "every request must be recorded");
                latencies.push(t.elapsed());
                n += 1;
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("client"));
    }
    let secs = started.elapsed().as_secs_f64();
    all.sort();
    let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)].as_secs_f64() * 1000.0;
    println!(
        "requests={} events={} seconds={secs:.1} rps={:.0} eps={:.0} p50_ms={:.2} p99_ms={:.2}",
        all.len(),
        all.len() * a.per_request,
        all.len() as f64 / secs,
        (all.len() * a.per_request) as f64 / secs,
        pct(0.50),
        pct(0.99)
    );
}
