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

#[utoipa::path(post, path = "/webhooks/{webhookId}/test/{topic}", tag = "webhooks",
    params(("webhookId" = String, Path), ("topic" = String, Path, description = "an event type")),
    responses((status = 202, body = TestWebhookResponse), (status = 404, body = Problem), (status = 409, body = Problem),
              (status = 422, body = Problem)), operation_id = "webhooks_test")]
pub async fn test(
    State(app): State<App>,
    auth: Auth,
    Path((id, topic)): Path<(String, String)>,
) -> Result<(StatusCode, Json<TestWebhookResponse>), Problem> {
    let s = auth.session(&app).await?;
    own(&s, &id).await?;
    let event: String = s.query_one("SELECT credyt.send_test_event($1, $2)", &[&topic, &id]).await?.get(0);
    s.commit().await?;
    Ok((StatusCode::ACCEPTED, Json(TestWebhookResponse { id: event })))
}

#[utoipa::path(post, path = "/webhooks/test/{topic}", tag = "webhooks",
    params(("topic" = String, Path, description = "an event type")),
    responses((status = 202, body = TestWebhookResponse), (status = 422, body = Problem)), operation_id = "webhooks_test_all")]
pub async fn test_all(
    State(app): State<App>,
    auth: Auth,
    Path(topic): Path<String>,
) -> Result<(StatusCode, Json<TestWebhookResponse>), Problem> {
    let s = auth.session(&app).await?;
    let event: String = s.query_one("SELECT credyt.send_test_event($1)", &[&topic]).await?.get(0);
    s.commit().await?;
    Ok((StatusCode::ACCEPTED, Json(TestWebhookResponse { id: event })))
}
