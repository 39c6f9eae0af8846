//! credyt-server: Credyt's REST API over the credyt extension.
//!
//! Every request is one transaction on a pooled connection: BEGIN, then
//! credyt.authenticate(X-CREDYT-API-KEY, X-CREDYT-ACCOUNT) (the server's role has no
//! account of its own: without a key it can read and write nothing), then the
//! route's SQL API calls, then COMMIT. Errors are problem+json.

mod autotopup;
mod config;
mod db;
mod observe;
mod openapi;
mod portal;
mod problem;
mod routes;
mod signing;
mod stripe;

use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, patch, post};
use axum::Router;
use config::Config;
use routes::{accounts, assets, customers, events, products, topups, vendors, wallet, webhooks, App};
use std::process::ExitCode;
use utoipa::OpenApi;

fn main() -> ExitCode {
    let cfg = match credyt_service::options::from_process("credyt-server", config::parse) {
        Ok(c) => c,
        Err(code) => return code,
    };
    credyt_service::log::set_debug(cfg.debug);
    match credyt_service::options::runtime() {
        Ok(rt) => rt.block_on(run(cfg)),
        Err(code) => code,
    }
}

/// Every route.
fn router(app: App) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi_json))
        .route("/accounts/self", get(accounts::get_self))
        .route("/accounts", post(accounts::create).get(accounts::list))
        .route("/accounts/{accountId}", get(accounts::get))
        .route("/customers", post(customers::create).get(customers::list))
        .route("/customers/stats", get(customers::list_stats))
        .route("/customers/{customerId}", get(customers::get).patch(customers::update))
        .route("/customers/{customerId}/stats", get(customers::get_stats))
        .route("/customers/{customerId}/subscriptions", post(customers::create_subscription))
        .route("/customers/{customerId}/subscriptions/{subscriptionId}", patch(customers::update_subscription))
        .route(
            "/customers/{customerId}/subscriptions/{subscriptionId}/products/{productId}",
            patch(customers::update_subscription_product),
        )
        .route("/products", post(products::create).get(products::list))
        .route("/products/{productId}", get(products::get).post(products::create_version).delete(products::delete))
        .route("/products/{productId}/subscribers", get(products::subscribers))
        .route(
            "/products/{productId}/{version}",
            get(products::get_version).patch(products::update_version).delete(products::archive_version),
        )
        .route("/products/{productId}/{version}/simulate-usage", post(products::simulate_usage))
        .route("/assets", post(assets::create).get(assets::list))
        .route("/assets/{assetCode}", get(assets::get))
        .route("/assets/{assetCode}/rates", post(assets::add_rate))
        .route("/assets/{assetCode}/quote", post(assets::quote))
        .route("/vendors", post(vendors::create).get(vendors::list))
        .route("/vendors/{vendorId}", get(vendors::get))
        .route("/vendors/{vendorId}/stats", get(vendors::stats))
        .route("/customers/{customerId}/wallet", get(wallet::get))
        .route("/customers/{customerId}/wallet/adjustments", post(wallet::adjust))
        .route("/customers/{customerId}/wallet/charges", post(wallet::charge))
        .route("/customers/{customerId}/wallet/transactions/{transactionId}", get(wallet::transaction))
        .route("/customers/{customerId}/wallet/{accountId}/grants", get(wallet::grants))
        .route("/customers/{customerId}/wallet/{accountId}", get(wallet::account))
        .route("/events", post(events::submit).get(events::list))
        .route("/events/{eventId}", get(events::get))
        .route("/webhooks", post(webhooks::create).get(webhooks::list))
        .route("/webhooks/{webhookId}", get(webhooks::get).patch(webhooks::update).delete(webhooks::delete))
        .route("/webhooks/events", get(webhooks::list_events))
        .route("/webhooks/{webhookId}/test/{topic}", post(webhooks::test))
        .route("/webhooks/{webhookId}/test/{topic}/{connectedAccountId}", post(webhooks::test_connected))
        .route("/webhooks/test/{topic}", post(webhooks::test_all))
        .route("/webhooks/test/{topic}/{connectedAccountId}", post(webhooks::test_all_connected))
        .route("/billing-portal/sessions", post(portal::create_session))
        .route("/billing-portal/open", get(portal::open))
        .route("/portal", get(portal::api::page))
        .route("/portal/embed.js", get(portal::api::embed))
        .route("/portal/api/summary", get(portal::api::summary))
        .route("/portal/api/usage", get(portal::api::usage))
        .route("/portal/api/grants", get(portal::api::grants))
        .route("/portal/api/auto-topup", post(portal::api::set_auto_topup))
        .route("/portal/api/top-ups", post(portal::api::top_up))
        .route("/portal/api/stream", get(portal::api::stream))
        .route("/top-ups", post(topups::initiate))
        .route("/top-ups/{topUpId}", get(topups::get))
        .route("/stripe/webhook", post(topups::webhook))
        .fallback(observe::no_route)
        .layer(axum::middleware::from_fn(observe::track))
        .with_state(app)
}

async fn run(cfg: Config) -> ExitCode {
    let db = match db::Db::new(&cfg.database_url, cfg.pool_size, cfg.pool_timeout) {
        Ok(db) => db,
        Err(e) => {
            credyt_service::log!("error", "bad database URL", "error" => e);
            return ExitCode::FAILURE;
        }
    };
    let listener = match tokio::net::TcpListener::bind(cfg.listen).await {
        Ok(l) => l,
        Err(e) => {
            credyt_service::log!("error", "cannot listen", "addr" => cfg.listen.to_string(), "error" => e.to_string());
            return ExitCode::FAILURE;
        }
    };
    credyt_service::log!("info", "credyt-server started", "listen" => cfg.listen.to_string(),
                         "pool_size" => cfg.pool_size as u64);
    let stripe = match stripe::Stripe::new(&cfg.stripe_api_base, cfg.stripe_timeout) {
        Ok(s) => s,
        Err(e) => {
            credyt_service::log!("error", "cannot start", "error" => e);
            return ExitCode::from(1);
        }
    };
    let portal = match portal_signer(&cfg) {
        Ok(p) => p,
        Err(e) => {
            credyt_service::log!("error", "cannot start", "error" => e);
            return ExitCode::from(1);
        }
    };
    let app = App { db, stripe, portal };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    if let Some(every) = cfg.auto_topup_interval {
        tokio::spawn(autotopup::run(app.clone(), every, stop_rx.clone()));
    }
    let serve = axum::serve(listener, router(app)).with_graceful_shutdown(async move {
        credyt_service::shutdown::signal().await;
        let _ = stop_tx.send(true);
    });
    // Requests in flight get --shutdown-timeout to finish once the signal came.
    let mut stop = stop_rx.clone();
    let deadline = async move {
        let _ = stop.wait_for(|s| *s).await;
        tokio::time::sleep(cfg.shutdown_timeout).await;
    };
    tokio::select! {
        r = serve => match r {
            Ok(()) => {
                credyt_service::log!("info", "credyt-server stopped");
                ExitCode::SUCCESS
            }
            Err(e) => {
                credyt_service::log!("error", "server failed", "error" => e.to_string());
                ExitCode::FAILURE
            }
        },
        _ = deadline => {
            credyt_service::log!("warn", "requests still in flight at the shutdown timeout");
            ExitCode::FAILURE
        }
    }
}

/// 200 when the database answers, 503 when not.
async fn healthz(axum::extract::State(app): axum::extract::State<App>) -> impl IntoResponse {
    if app.db.ping().await {
        (StatusCode::OK, "ok\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "database unreachable\n")
    }
}

async fn metrics(axum::extract::State(app): axum::extract::State<App>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], observe::render(app.db.status()))
}

async fn openapi_json() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], openapi::ApiDoc::openapi().to_pretty_json().unwrap_or_default())
}

/// The portal's signer: --portal-signing-key, or a random key for this process.
fn portal_signer(cfg: &Config) -> Result<signing::Portal, String> {
    let key = match &cfg.portal_signing_key {
        Some(k) => k.clone().into_bytes(),
        None => {
            // (links and sessions then end with the process: set one for several servers)
            credyt_service::log!(
                "warn",
                "no --portal-signing-key: a random one signs portal links until this server stops"
            );
            let mut k = vec![0u8; 32];
            getrandom_fill(&mut k)?;
            k
        }
    };
    let public_url = cfg.public_url.clone().unwrap_or_else(|| format!("http://{}", cfg.listen));
    Ok(signing::Portal::new(&key, &public_url))
}

/// Random bytes from the operating system (a portal signing key when none is given).
fn getrandom_fill(buf: &mut [u8]) -> Result<(), String> {
    use std::io::Read;
    std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(buf)).map_err(|e| format!("/dev/urandom: {e}"))
}
