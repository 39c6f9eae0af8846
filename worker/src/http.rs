//! `/healthz` and Prometheus `/metrics`, on hyper (which reqwest brings anyway).

use crate::shared::Shared;
use crate::{log, metrics};
use http_body_util::Full;
use hyper::body::Bytes;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

pub async fn serve_metrics(listener: tokio::net::TcpListener, shared: Arc<Shared>) {
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                log!("warn", "metrics accept failed", "error" => e.to_string());
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(respond(req, &shared).await) }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, svc).await;
        });
    }
}

fn reply(status: u16, content_type: &str, body: String) -> hyper::Response<Full<Bytes>> {
    let mut r = hyper::Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    if let Ok(v) = hyper::header::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

async fn respond(req: hyper::Request<hyper::body::Incoming>, shared: &Shared) -> hyper::Response<Full<Bytes>> {
    if req.method() != hyper::Method::GET {
        return reply(405, "text/plain", "GET only\n".into());
    }
    let client = shared.client().filter(|c| !c.is_closed());
    match req.uri().path() {
        "/healthz" => match (client, shared.stopping()) {
            (_, true) => reply(503, "text/plain", "stopping\n".into()),
            (Some(_), false) => reply(200, "text/plain", "ok\n".into()),
            (None, false) => reply(503, "text/plain", "database unreachable\n".into()),
        },
        "/metrics" => {
            let queue = match client {
                Some(c) => {
                    let q = c.query_one("SELECT due, pending FROM credyt._worker_queue()", &[]);
                    match tokio::time::timeout(Duration::from_secs(2), q).await {
                        Ok(Ok(row)) => row.try_get::<_, i64>("due").ok().zip(row.try_get::<_, i64>("pending").ok()),
                        _ => None,
                    }
                }
                None => None,
            };
            reply(200, "text/plain; version=0.0.4", metrics::render(queue))
        }
        _ => reply(404, "text/plain", "not found: try /healthz or /metrics\n".into()),
    }
}
