//! What the portal page reads and does, each in one transaction confined to the
//! session's customer: the summary (balances, spend this month, auto top-up settings),
//! usage history, grants, auto top-up settings, a top-up through Stripe, and the live
//! balances as server-sent events.

use super::PortalSession;
use crate::problem::Problem;
use crate::routes::App;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::Value;
use std::convert::Infallible;
use std::time::Duration;

/// The page: plain HTML, CSS and JavaScript, no build step. It holds no data (its
/// reads need the session), so it is served as it is; `frame-ancestors *` lets any site
/// embed it, which is what it is for.
pub async fn page() -> Response {
    let csp = "frame-ancestors *";
    (
        [(axum::http::header::CONTENT_SECURITY_POLICY, csp), (axum::http::header::CACHE_CONTROL, "no-store")],
        Html(include_str!("index.html")),
    )
        .into_response()
}

/// The web component: `<script src=".../portal/embed.js"></script>` and
/// `<credyt-portal src="{redirect_url}"></credyt-portal>`.
pub async fn embed() -> Response {
    ([(axum::http::header::CONTENT_TYPE, "text/javascript; charset=utf-8")], include_str!("embed.js")).into_response()
}

fn session(app: &App, headers: &HeaderMap) -> Result<PortalSession, Problem> {
    PortalSession::from_headers(app, headers).ok_or_else(Problem::unauthorized)
}

/// One jsonb read in the portal's transaction: $1 the customer, then `more`.
async fn read(
    app: &App,
    headers: &HeaderMap,
    sql: &str,
    more: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<Json<Value>, Problem> {
    let p = session(app, headers)?;
    let (s, customer, _) = p.open(app).await?;
    let mut args: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = vec![&customer];
    args.extend_from_slice(more);
    let v = s.json(sql, &args).await?;
    s.commit().await?;
    Ok(Json(v))
}

/// The customer's balances per wallet account, with each asset's precision and symbol.
const BALANCES: &str = "coalesce((SELECT jsonb_agg(jsonb_build_object('id', w.account_id, 'asset', w.asset, \
       'available', w.available, 'pending_in', w.pending_in, 'precision', coalesce(a.precision, NULL), \
       'symbol', a.symbol, 'custom', a.code IS NOT NULL) ORDER BY w.account_id) \
     FROM credyt.wallet($1) w LEFT JOIN credyt.assets a ON a.code = w.asset), '[]')";

pub async fn summary(State(app): State<App>, headers: HeaderMap) -> Result<Json<Value>, Problem> {
    let p = session(&app, &headers)?;
    let (s, customer, back) = p.open(&app).await?;
    let sql = format!(
        "SELECT jsonb_build_object('customer', (SELECT jsonb_build_object('id', c.id, 'name', c.name) \
             FROM credyt.customers c WHERE c.id = $1), \
           'return_url', $2::text, 'balances', {BALANCES}, \
           'spend_this_month', coalesce((SELECT jsonb_agg(jsonb_build_object('asset', u.asset, 'amount', u.total)) FROM \
              (SELECT asset, sum(charged) AS total FROM credyt.usage WHERE customer_id = $1 AND asset IS NOT NULL \
                 AND occurred_at >= date_trunc('month', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' GROUP BY asset) u), '[]'), \
           'auto_topup', coalesce((SELECT jsonb_agg(jsonb_build_object('id', t.account_id, 'enabled', t.enabled, \
              'threshold', t.threshold, 'amount', t.amount) ORDER BY t.account_id) \
              FROM credyt.auto_topups t WHERE t.customer_id = $1), '[]'))"
    );
    let v = s.json(&sql, &[&customer, &back]).await?;
    s.commit().await?;
    Ok(Json(v))
}

#[derive(Deserialize)]
pub struct StreamQuery {
    session: Option<String>,
}

#[derive(Deserialize)]
pub struct UsagePage {
    offset: Option<i64>,
}

pub async fn usage(
    State(app): State<App>,
    headers: HeaderMap,
    Query(q): Query<UsagePage>,
) -> Result<Json<Value>, Problem> {
    let offset = q.offset.unwrap_or(0).max(0);
    let sql = "SELECT jsonb_build_object('offset', $2::bigint, 'limit', 10, \
                 'total_count', (SELECT count(*) FROM credyt.usage WHERE customer_id = $1), \
                 'items', coalesce((SELECT jsonb_agg(x.j ORDER BY x.k) FROM (SELECT jsonb_build_object('id', u.event_id, \
                   'event_type', u.event_type, 'occurred_at', u.occurred_at, 'subject', u.subject, 'model', u.model, \
                   'charged', u.charged, 'asset', u.asset, \
                   'products', (SELECT jsonb_agg(DISTINCT p.name) FROM jsonb_array_elements(u.fees) f \
                      JOIN credyt.products p ON p.id = f->>'product_id' AND p.version = (f->>'version')::int)) AS j, \
                   row_number() OVER (ORDER BY u.occurred_at DESC, u.event_id) AS k \
                   FROM credyt.usage u WHERE u.customer_id = $1 ORDER BY u.occurred_at DESC, u.event_id \
                   OFFSET $2::bigint LIMIT 10) x), '[]'))";
    read(&app, &headers, sql, &[&offset]).await
}

pub async fn grants(State(app): State<App>, headers: HeaderMap) -> Result<Json<Value>, Problem> {
    let sql = "SELECT coalesce(jsonb_agg(jsonb_build_object('id', l.id, 'account_id', l.account_id, 'asset', l.asset, \
                 'purpose', l.purpose, 'remaining', l.remaining, 'expires_at', l.expires_at) \
                 ORDER BY l.expires_at NULLS LAST, l.created_at), '[]') \
               FROM credyt.lots l WHERE l.customer_id = $1 AND l.remaining > 0 \
                 AND (l.expires_at IS NULL OR l.expires_at > now())";
    read(&app, &headers, sql, &[]).await
}

#[derive(Deserialize)]
pub struct AutoTopup {
    /// `name:asset`
    account_id: String,
    enabled: bool,
    threshold: serde_json::Number,
    amount: serde_json::Number,
}

pub async fn set_auto_topup(
    State(app): State<App>,
    headers: HeaderMap,
    crate::routes::Body(req): crate::routes::Body<AutoTopup>,
) -> Result<Json<Value>, Problem> {
    let (name, asset) = req
        .account_id
        .split_once(':')
        .ok_or_else(|| Problem::invalid("account_id", "account_id is name:asset, e.g. default:USD".into()))?;
    let p = session(&app, &headers)?;
    let (s, customer, _) = p.open(&app).await?;
    s.query_one(
        "SELECT credyt.set_auto_topup($1, $2, $3::text::numeric, $4::text::numeric, $5, $6)",
        &[&customer, &asset, &req.threshold.to_string(), &req.amount.to_string(), &name, &req.enabled],
    )
    .await?;
    s.commit().await?;
    Ok(Json(serde_json::json!({"saved": true})))
}

#[derive(Deserialize)]
pub struct TopUp {
    amount: serde_json::Number,
    currency: String,
    asset: Option<String>,
}

/// A top-up through Stripe Checkout, as POST /top-ups, for the session's customer; the
/// page sends the customer to `redirect_url`.
pub async fn top_up(
    State(app): State<App>,
    headers: HeaderMap,
    crate::routes::Body(req): crate::routes::Body<TopUp>,
) -> Result<Json<Value>, Problem> {
    let p = session(&app, &headers)?;
    let back = format!("{}/portal", app.portal.public_url);
    let made = crate::routes::topups::checkout(
        &app,
        &p,
        crate::routes::topups::CheckoutRequest {
            customer: None,
            amount: req.amount,
            currency: req.currency,
            asset: req.asset,
            exchange_rate: None,
            credit_expires_at: None,
            account_name: None,
            return_url: back.clone(),
            failure_url: back,
            description: None,
            metadata: None,
        },
    )
    .await?;
    Ok(Json(serde_json::to_value(made).unwrap_or_default()))
}

/// Live balances: an event whenever they change (read every 250 ms, one statement).
pub async fn stream(
    State(app): State<App>,
    headers: HeaderMap,
    Query(q): Query<StreamQuery>,
) -> Result<Sse<impl futures_util::Stream<Item = Result<Event, Infallible>>>, Problem> {
    // (EventSource cannot send headers: the page passes its session in the query)
    let p = PortalSession::from_request(&app, &headers, q.session.as_deref()).ok_or_else(Problem::unauthorized)?;
    let sql = format!("SELECT {BALANCES}::text");
    let events = futures_util::stream::unfold((app, p, sql, None::<String>), |(app, p, sql, last)| async move {
        loop {
            let now = async {
                let (s, customer, _) = p.open(&app).await?;
                let v: String = s.query_one(&sql, &[&customer]).await?.get(0);
                s.commit().await?;
                Ok::<String, Problem>(v)
            };
            match now.await {
                Ok(v) if last.as_deref() != Some(v.as_str()) => {
                    let e = Event::default().event("balances").data(v.clone());
                    return Some((Ok(e), (app, p, sql, Some(v))));
                }
                Ok(_) => {}
                Err(_) => return None, // the session ended
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}
