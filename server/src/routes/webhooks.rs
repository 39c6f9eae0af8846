//! /webhooks: endpoints (create, list, get with its secret, update, delete) and test
//! events, onto create_webhook, update_webhook, delete_webhook and send_test_event.

use super::{decode, read, read_one, App, Auth, Body, Params};
use crate::problem::Problem;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({"url": "https://example.com/credyt/webhooks", "topics": ["grant.*", "balance_threshold_hit"], "connect": false}))]
pub struct CreateWebhookDestinationRequest {
    pub url: String,
    /// Event types, prefixes such as `grant.*`, or `*` (the default).
    pub topics: Option<Vec<String>>,
    /// Also receive the events of the accounts below this one.
    pub connect: Option<bool>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CreateWebhookDestinationResponse {
    pub id: String,
    /// `whsec_…`, shown here and by GET /webhooks/{id}.
    pub secret: String,
    pub created_at: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct WebhookDestinationWithoutSecret {
    pub id: String,
    pub url: String,
    pub topics: Vec<String>,
    pub connect: bool,
    pub enabled: bool,
    pub created_at: String,
    pub updated_at: String,
}

/// An endpoint with its signing secret (to its own account only).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct WebhookDestination {
    #[serde(flatten)]
    pub endpoint: WebhookDestinationWithoutSecret,
    pub secret: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct WebhookDestinations {
    pub items: Vec<WebhookDestinationWithoutSecret>,
    pub total_count: i64,
}

#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({"enabled": false}))]
pub struct UpdateWebhookDestinationRequest {
    pub url: Option<String>,
    pub topics: Option<Vec<String>>,
    pub enabled: Option<bool>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListWebhooks {
    pub enabled: Option<bool>,
    pub connect: Option<bool>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TestWebhookResponse {
    /// The test event's id.
    pub id: String,
}

const ENDPOINT_JSON: &str = "jsonb_build_object('id', w.id, 'url', w.url, 'topics', to_jsonb(w.topics), \
     'connect', w.connect, 'enabled', w.enabled, 'created_at', w.created_at, 'updated_at', w.updated_at)";

#[utoipa::path(post, path = "/webhooks", tag = "webhooks", request_body = CreateWebhookDestinationRequest,
    responses((status = 201, body = CreateWebhookDestinationResponse), (status = 422, body = Problem)),
    operation_id = "webhooks_create")]
pub async fn create(
    State(app): State<App>,
    auth: Auth,
    Body(req): Body<CreateWebhookDestinationRequest>,
) -> Result<(StatusCode, Json<CreateWebhookDestinationResponse>), Problem> {
    let s = auth.session(&app).await?;
    let topics = req.topics.unwrap_or_else(|| vec!["*".into()]);
    let row = s
        .query_one(
            "SELECT id, secret FROM credyt.create_webhook($1, $2, $3)",
            &[&req.url, &topics, &req.connect.unwrap_or(false)],
        )
        .await?;
    let (id, secret): (String, String) = (row.get(0), row.get(1));
    // (a statement of its own: the new endpoint is not in the snapshot of the one that made it)
    let created: String =
        s.query_one("SELECT to_jsonb(created_at) #>> '{}' FROM credyt.webhooks WHERE id = $1", &[&id]).await?.get(0);
    s.commit().await?;
    Ok((StatusCode::CREATED, Json(CreateWebhookDestinationResponse { id, secret, created_at: created })))
}

#[utoipa::path(get, path = "/webhooks", tag = "webhooks", params(ListWebhooks),
    responses((status = 200, body = WebhookDestinations)), operation_id = "webhooks_list")]
pub async fn list(
    State(app): State<App>,
    auth: Auth,
    Params(q): Params<ListWebhooks>,
) -> Result<Json<WebhookDestinations>, Problem> {
    let sql = format!(
        "SELECT jsonb_build_object('items', coalesce(jsonb_agg({ENDPOINT_JSON} ORDER BY w.created_at, w.id), '[]'), \
           'total_count', count(*)) FROM credyt.webhooks w WHERE w.account_id = credyt.current_account() \
           AND ($1::bool IS NULL OR w.enabled = $1) AND ($2::bool IS NULL OR w.connect = $2)"
    );
    read(&app, &auth, &sql, &[&q.enabled, &q.connect]).await
}

#[utoipa::path(get, path = "/webhooks/{webhookId}", tag = "webhooks", params(("webhookId" = String, Path)),
    responses((status = 200, body = WebhookDestination), (status = 404, body = Problem)), operation_id = "webhooks_get")]
pub async fn get(
    State(app): State<App>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Json<WebhookDestination>, Problem> {
    let sql = format!(
        "SELECT {ENDPOINT_JSON} || jsonb_build_object('secret', credyt.webhook_secret(w.id)) \
         FROM credyt.webhooks w WHERE w.id = $1 AND w.account_id = credyt.current_account()"
    );
    read_one(&app, &auth, &sql, &[&id], || format!("unknown webhook {id}")).await
}

/// 404 unless the endpoint is the account's own.
async fn own(s: &crate::db::Session, id: &str) -> Result<(), Problem> {
    match s
        .query_opt("SELECT 1 FROM credyt.webhooks WHERE id = $1 AND account_id = credyt.current_account()", &[&id])
        .await?
    {
        Some(_) => Ok(()),
        None => Err(Problem::not_found(format!("unknown webhook {id}"))),
    }
}

#[utoipa::path(patch, path = "/webhooks/{webhookId}", tag = "webhooks", params(("webhookId" = String, Path)),
    request_body = UpdateWebhookDestinationRequest,
    responses((status = 200, body = WebhookDestinationWithoutSecret), (status = 404, body = Problem), (status = 422, body = Problem)),
    operation_id = "webhooks_update")]
pub async fn update(
    State(app): State<App>,
    auth: Auth,
    Path(id): Path<String>,
    Body(req): Body<UpdateWebhookDestinationRequest>,
) -> Result<Json<WebhookDestinationWithoutSecret>, Problem> {
    let s = auth.session(&app).await?;
    own(&s, &id).await?;
    s.query_one(
        "SELECT count(*) FROM credyt.update_webhook($1, $2, $3, $4)",
        &[&id, &req.url, &req.topics, &req.enabled],
    )
    .await?;
    let v = s.json(&format!("SELECT {ENDPOINT_JSON} FROM credyt.webhooks w WHERE w.id = $1"), &[&id]).await?;
    s.commit().await?;
    Ok(Json(decode(v)?))
}

#[utoipa::path(delete, path = "/webhooks/{webhookId}", tag = "webhooks", params(("webhookId" = String, Path)),
    responses((status = 204), (status = 404, body = Problem)), operation_id = "webhooks_delete")]
pub async fn delete(State(app): State<App>, auth: Auth, Path(id): Path<String>) -> Result<StatusCode, Problem> {
    let s = auth.session(&app).await?;
    own(&s, &id).await?;
    s.query_one("SELECT credyt.delete_webhook($1)", &[&id]).await?;
    s.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A test event of `topic` to one endpoint of the account's own (or to all its
/// endpoints that take it), from the account or from a connected account below it.
async fn send_test(
    app: &App,
    auth: &Auth,
    topic: &str,
    webhook: Option<&str>,
    account: Option<&str>,
) -> Result<(StatusCode, Json<TestWebhookResponse>), Problem> {
    let s = auth.session(app).await?;
    if let Some(id) = webhook {
        own(&s, id).await?;
    }
    let event: String =
        s.query_one("SELECT credyt.send_test_event($1, $2, $3)", &[&topic, &webhook, &account]).await?.get(0);
    s.commit().await?;
    Ok((StatusCode::ACCEPTED, Json(TestWebhookResponse { id: event })))
}

#[utoipa::path(post, path = "/webhooks/{webhookId}/test/{topic}", tag = "webhooks",
    params(("webhookId" = String, Path), ("topic" = String, Path, description = "an event type")),
    responses((status = 202, body = TestWebhookResponse), (status = 404, body = Problem), (status = 409, body = Problem),
              (status = 422, body = Problem)), operation_id = "webhooks_test")]
pub async fn test(
    State(app): State<App>,
    auth: Auth,
    Path((id, topic)): Path<(String, String)>,
) -> Result<(StatusCode, Json<TestWebhookResponse>), Problem> {
    send_test(&app, &auth, &topic, Some(&id), None).await
}

#[utoipa::path(post, path = "/webhooks/test/{topic}", tag = "webhooks",
    params(("topic" = String, Path, description = "an event type")),
    responses((status = 202, body = TestWebhookResponse), (status = 422, body = Problem)), operation_id = "webhooks_test_all")]
pub async fn test_all(
    State(app): State<App>,
    auth: Auth,
    Path(topic): Path<String>,
) -> Result<(StatusCode, Json<TestWebhookResponse>), Problem> {
    send_test(&app, &auth, &topic, None, None).await
}

#[utoipa::path(post, path = "/webhooks/{webhookId}/test/{topic}/{connectedAccountId}", tag = "webhooks",
    params(("webhookId" = String, Path), ("topic" = String, Path, description = "an event type"),
           ("connectedAccountId" = String, Path, description = "the account below this one the event comes from")),
    responses((status = 202, body = TestWebhookResponse), (status = 404, body = Problem), (status = 409, body = Problem),
              (status = 422, body = Problem)), operation_id = "webhooks_test_connected")]
pub async fn test_connected(
    State(app): State<App>,
    auth: Auth,
    Path((id, topic, account)): Path<(String, String, String)>,
) -> Result<(StatusCode, Json<TestWebhookResponse>), Problem> {
    send_test(&app, &auth, &topic, Some(&id), Some(&account)).await
}

#[utoipa::path(post, path = "/webhooks/test/{topic}/{connectedAccountId}", tag = "webhooks",
    params(("topic" = String, Path, description = "an event type"),
           ("connectedAccountId" = String, Path, description = "the account below this one the event comes from")),
    responses((status = 202, body = TestWebhookResponse), (status = 404, body = Problem), (status = 422, body = Problem)),
    operation_id = "webhooks_test_all_connected")]
pub async fn test_all_connected(
    State(app): State<App>,
    auth: Auth,
    Path((topic, account)): Path<(String, String)>,
) -> Result<(StatusCode, Json<TestWebhookResponse>), Problem> {
    send_test(&app, &auth, &topic, None, Some(&account)).await
}

/// One delivery of an event to one of the account's endpoints.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct WebhookEventListItem {
    /// The event's id.
    pub id: String,
    pub destination_id: String,
    pub topic: String,
    /// When the event was queued for the endpoint.
    pub time: String,
    pub successful_at: Option<String>,
    /// When the worker gave up on it.
    pub failed_at: Option<String>,
    /// status (pending, delivered, failed), attempts, last_status, last_error
    #[schema(value_type = Object)]
    pub metadata: serde_json::Value,
    /// The event as delivered (the envelope's `data`).
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CursorPaginationMetadata {
    pub limit: i64,
    /// Pass as `next` for the page after this one (older deliveries).
    pub next: Option<String>,
    /// Pass as `prev` for the page before this one (newer deliveries).
    pub prev: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CursorPageWebhookEventListItem {
    pub models: Vec<WebhookEventListItem>,
    pub pagination: CursorPaginationMetadata,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListDeliveries {
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    /// A cursor from `pagination.next`.
    pub next: Option<String>,
    /// A cursor from `pagination.prev`.
    pub prev: Option<String>,
    pub destination_id: Option<String>,
    /// `Success` (delivered) or `Failed` (given up)
    pub status: Option<String>,
    pub time_gte: Option<String>,
    pub time_lte: Option<String>,
}

/// A position in the delivery log: `micros.event_id.webhook_id` of a delivery.
struct Cursor {
    micros: i64,
    event: String,
    webhook: String,
}

impl Cursor {
    fn parse(field: &str, text: &str) -> Result<Cursor, Problem> {
        let bad = || Problem::invalid(field, format!("{field} is not a cursor from pagination"));
        let mut parts = text.splitn(3, '.');
        let micros = parts.next().and_then(|m| m.parse::<i64>().ok()).ok_or_else(bad)?;
        let event = parts.next().filter(|e| !e.is_empty()).ok_or_else(bad)?.to_string();
        let webhook = parts.next().filter(|w| !w.is_empty()).ok_or_else(bad)?.to_string();
        Ok(Cursor { micros, event, webhook })
    }
}

/// The delivery log's query, checked.
struct LogQuery {
    limit: i64,
    /// the delivery status asked for
    status: Option<&'static str>,
    cursor: Option<Cursor>,
    /// going back (prev): the rows newer than the cursor
    newer: bool,
}

fn log_query(q: &ListDeliveries) -> Result<LogQuery, Problem> {
    let limit = q.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(Problem::invalid("limit", "limit must be from 1 to 100".into()));
    }
    let status = match q.status.as_deref() {
        None => None,
        Some(s) if s.eq_ignore_ascii_case("success") => Some("delivered"),
        Some(s) if s.eq_ignore_ascii_case("failed") => Some("failed"),
        Some(_) => return Err(Problem::invalid("status", "status must be Success or Failed".into())),
    };
    for (field, t) in [("time_gte", &q.time_gte), ("time_lte", &q.time_lte)] {
        if let Some(t) = t.as_deref().filter(|t| !credyt_core::period::is_rfc3339(t)) {
            return Err(Problem::invalid(field, format!("{field} {t:?} is not an RFC 3339 timestamp")));
        }
    }
    let (cursor, newer) = match (&q.next, &q.prev) {
        (Some(_), Some(_)) => return Err(Problem::invalid("next", "give next or prev, not both".into())),
        (Some(n), None) => (Some(Cursor::parse("next", n)?), false),
        (None, Some(p)) => (Some(Cursor::parse("prev", p)?), true),
        (None, None) => (None, false),
    };
    Ok(LogQuery { limit, status, cursor, newer })
}

#[utoipa::path(get, path = "/webhooks/events", tag = "webhooks", params(ListDeliveries),
    responses((status = 200, body = CursorPageWebhookEventListItem), (status = 422, body = Problem)),
    operation_id = "webhooks_list_events")]
pub async fn list_events(
    State(app): State<App>,
    auth: Auth,
    Params(q): Params<ListDeliveries>,
) -> Result<Json<CursorPageWebhookEventListItem>, Problem> {
    let LogQuery { limit, status, cursor, newer } = log_query(&q)?;
    let (micros, event, webhook) = match &cursor {
        Some(c) => (Some(c.micros), Some(c.event.clone()), Some(c.webhook.clone())),
        None => (None, None, None),
    };
    // Newest first. Going back (prev), the log gives the newer rows in ascending
    // order, turned round here. One row more than the page tells whether there is another.
    let sql = "SELECT coalesce(jsonb_agg(jsonb_build_object('id', d.event_id, 'destination_id', d.webhook_id, \
                 'topic', d.event_type, 'time', d.created_at, 'successful_at', d.delivered_at, 'failed_at', d.failed_at, \
                 'metadata', jsonb_build_object('status', d.status, 'attempts', d.attempts, 'last_status', d.last_status, \
                                                'last_error', d.last_error, 'account_id', d.event_account_id), \
                 'data', d.data, \
                 'cursor', ((extract(epoch FROM d.created_at) * 1000000)::bigint)::text || '.' || d.event_id || '.' || d.webhook_id) \
                 ORDER BY d.n), '[]') \
               FROM credyt.delivery_log($1, $2, $3::text::timestamptz, $4::text::timestamptz, \
                      'epoch'::timestamptz + $5::bigint * interval '1 microsecond', $6, $7, $8, $9::int + 1) WITH ORDINALITY AS d(event_id, webhook_id, status, attempts, last_status, last_error, \
                      delivered_at, failed_at, created_at, event_type, event_account_id, data, n)";
    let s = auth.session(&app).await?;
    let v = s
        .json(
            sql,
            &[&q.destination_id, &status, &q.time_gte, &q.time_lte, &micros, &event, &webhook, &newer, &(limit as i32)],
        )
        .await?;
    s.commit().await?;
    let mut rows = v.as_array().cloned().unwrap_or_default();
    let more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    if newer {
        rows.reverse();
    }
    let cursor_of = |r: Option<&serde_json::Value>| r.and_then(|r| r["cursor"].as_str()).map(str::to_string);
    // Older rows exist past the last one when the read found more (going forward) or
    // when we came back from there (going back); newer ones before the first likewise.
    let next = if (!newer && more) || (newer && cursor.is_some()) { cursor_of(rows.last()) } else { None };
    let prev = if (newer && more) || (!newer && cursor.is_some()) { cursor_of(rows.first()) } else { None };
    let models = rows
        .into_iter()
        .map(|mut r| {
            if let Some(o) = r.as_object_mut() {
                o.remove("cursor");
            }
            decode(r)
        })
        .collect::<Result<Vec<WebhookEventListItem>, Problem>>()?;
    Ok(Json(CursorPageWebhookEventListItem { models, pagination: CursorPaginationMetadata { limit, next, prev } }))
}
