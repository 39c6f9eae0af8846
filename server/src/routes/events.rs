//! /events: POST records usage events of one customer, up to 1,000, in one transaction
//! (new and replayed events alike answer 204); GET lists them with every filter, and
//! one with its fees.

use super::{read, read_one, App, Auth, Body, Page, Params};
use crate::problem::Problem;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use utoipa::{IntoParams, ToSchema};

/// Events of one customer, named by id or by external id.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({"customer_external_id": "user-42", "events": [{"id": "evt-8c1f", "event_type": "chat_completion", "occurred_at": "2026-12-01T10:00:00Z", "subject": "support-agent", "data": {"model": "gpt-4o", "output_tokens": 310}}]}))]
pub struct UsageRequest {
    pub customer_id: Option<String>,
    pub customer_external_id: Option<String>,
    pub events: Vec<UsageEvent>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct UsageEvent {
    /// The idempotency key: an event id is recorded once.
    pub id: String,
    pub event_type: String,
    pub occurred_at: Option<String>,
    pub subject: Option<String>,
    pub description: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub data: Option<Map<String, Value>>,
    pub costs: Option<Vec<CostData>>,
}

/// What the event cost the platform, from a vendor. (id and description are
/// accepted as Credyt takes them; credyt keeps vendor, amount, currency and category.)
#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code)]
pub struct CostData {
    pub id: Option<String>,
    pub vendor_id: Option<String>,
    pub vendor_external_id: Option<String>,
    pub category: Option<String>,
    pub description: Option<String>,
    #[schema(value_type = f64)]
    pub amount: serde_json::Number,
    pub currency: Option<String>,
}

/// Events per request at most (Credyt's limit).
const MAX_EVENTS: usize = 1000;

/// The extension's costs for Credyt's (vendor by external id, else by id).
fn costs(cs: Vec<CostData>) -> Vec<Value> {
    cs.into_iter()
        .map(|c| {
            json!({"vendor": c.vendor_external_id.or(c.vendor_id).unwrap_or_default(), "amount": c.amount,
                   "currency": c.currency, "category": c.category})
        })
        .collect()
}

/// The extension's event for one of the request's.
fn event(customer: &str, e: UsageEvent) -> Value {
    let costs = e.costs.map(costs);
    json!({
        "customer": customer, "event_id": e.id, "event_type": e.event_type, "occurred_at": e.occurred_at,
        "subject": e.subject, "description": e.description, "data": e.data.unwrap_or_default(), "costs": costs,
    })
}

#[utoipa::path(post, path = "/events", tag = "events", request_body = UsageRequest,
    responses((status = 204, description = "recorded, or already recorded (a replay)"), (status = 402, body = Problem),
              (status = 404, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)), operation_id = "events_submit")]
pub async fn submit(State(app): State<App>, auth: Auth, Body(req): Body<UsageRequest>) -> Result<StatusCode, Problem> {
    let customer = match (req.customer_id, req.customer_external_id) {
        (Some(id), _) => id,
        (None, Some(ext)) => ext,
        (None, None) => {
            return Err(Problem::invalid("customer_id", "customer_id or customer_external_id is required".into()))
        }
    };
    if req.events.is_empty() || req.events.len() > MAX_EVENTS {
        return Err(Problem::invalid("events", format!("events must hold 1 to {MAX_EVENTS} events")));
    }
    for (i, e) in req.events.iter().enumerate() {
        if let Some(at) = e.occurred_at.as_deref().filter(|t| !credyt_core::period::is_rfc3339(t)) {
            return Err(Problem::invalid(
                &format!("events[{i}].occurred_at"),
                format!("occurred_at {at:?} is not an RFC 3339 timestamp"),
            ));
        }
    }
    let s = auth.session(&app).await?;
    let mut events = req.events;
    if events.len() == 1 {
        // One event: record_usage's single form, the cheaper path.
        let e = events.remove(0);
        let data = Value::Object(e.data.unwrap_or_default());
        let costs = e.costs.map(|cs| Value::Array(costs(cs)));
        s.last(
            "SELECT event_id FROM credyt.record_usage($1, $2, $3, $4::jsonb, $5::text::timestamptz, $6, $7, $8::jsonb)",
            &[&customer, &e.id, &e.event_type, &data, &e.occurred_at, &e.subject, &e.description, &costs],
        )
        .await?;
    } else {
        let events = Value::Array(events.into_iter().map(|e| event(&customer, e)).collect());
        s.last("SELECT event_id FROM credyt.record_usage($1::jsonb)", &[&events]).await?;
    }
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListEvents {
    #[param(minimum = 0)]
    pub offset: Option<i64>,
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    pub event_id: Option<String>,
    pub customer_id: Option<String>,
    pub customer_external_id: Option<String>,
    pub subject: Option<String>,
    /// On or after this day (YYYY-MM-DD, UTC).
    pub period_from: Option<String>,
    /// On or before this day (YYYY-MM-DD, UTC).
    pub period_to: Option<String>,
    /// Comma-separated event types.
    pub event_types: Option<String>,
    pub has_fees: Option<bool>,
}

/// A recorded usage event in a list.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ListEventsItem {
    pub id: String,
    pub customer_id: String,
    pub external_id: Option<String>,
    pub event_type: String,
    pub subject: Option<String>,
    pub description: Option<String>,
    pub occurred_at: String,
    pub created_at: String,
    /// The event's fees, when they are in one asset.
    #[schema(value_type = Option<f64>)]
    pub total_fees: Option<serde_json::Number>,
    pub fee_currency: Option<String>,
    pub has_fees: bool,
}

/// One fee of an event: which price of which product version charged what.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EventFee {
    pub id: String,
    pub product_id: String,
    pub product_code: String,
    pub product_version: i32,
    pub price_id: String,
    pub price_name: String,
    pub currency: String,
    pub usage_type: Option<String>,
    pub volume_field: Option<String>,
    #[schema(value_type = Option<f64>)]
    pub input_volume: Option<serde_json::Number>,
    #[schema(value_type = f64)]
    pub amount: serde_json::Number,
}

/// A recorded usage event with its fees.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct GetEventResponse {
    pub id: String,
    pub event_type: String,
    pub occurred_at: String,
    pub subject: Option<String>,
    pub description: Option<String>,
    #[schema(value_type = Object)]
    pub data: Value,
    pub customer_id: String,
    pub created_at: String,
    pub fees: Vec<EventFee>,
}

const ITEM_JSON: &str =
    "jsonb_build_object('id', u.event_id, 'customer_id', u.customer_id, 'external_id', c.external_id, \
     'event_type', u.event_type, 'subject', u.subject, 'description', u.description, 'occurred_at', u.occurred_at, \
     'created_at', u.recorded_at, 'total_fees', CASE WHEN u.asset IS NOT NULL THEN u.charged END, \
     'fee_currency', u.asset, 'has_fees', jsonb_array_length(u.fees) > 0)";

/// The fees of event `u`, with their product and price.
const FEES_JSON: &str = "coalesce((SELECT jsonb_agg(jsonb_build_object('id', u.event_id || ':' || f.n, \
       'product_id', f.v->>'product_id', 'product_code', p.code, 'product_version', (f.v->>'version')::int, \
       'price_id', (f.v->>'product_id') || ':' || (f.v->>'version') || ':' || (f.v->>'price'), \
       'price_name', coalesce(p.prices -> (f.v->>'price')::int ->> 'name', 'price ' || (f.v->>'price')), \
       'currency', f.v->>'asset', \
       'usage_type', p.prices -> (f.v->>'price')::int -> 'usage_calculation' ->> 'usage_type', \
       'volume_field', p.prices -> (f.v->>'price')::int -> 'usage_calculation' ->> 'volume_field', \
       'input_volume', f.v->'volume', 'amount', f.v->'amount') ORDER BY f.n) \
     FROM jsonb_array_elements(u.fees) WITH ORDINALITY AS f(v, n) \
     LEFT JOIN credyt.products p ON p.id = f.v->>'product_id' AND p.version = (f.v->>'version')::int), '[]')";

#[utoipa::path(get, path = "/events", tag = "events", params(ListEvents),
    responses((status = 200, body = Page<ListEventsItem>), (status = 422, body = Problem)), operation_id = "events_list")]
pub async fn list(
    State(app): State<App>,
    auth: Auth,
    Params(q): Params<ListEvents>,
) -> Result<Json<Page<ListEventsItem>>, Problem> {
    let (offset, limit) = super::Paging::bounds(q.offset, q.limit)?;
    super::day("period_from", &q.period_from)?;
    super::day("period_to", &q.period_to)?;
    let types: Option<Vec<String>> = q
        .event_types
        .as_deref()
        .map(|t| t.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect());
    let filter = "($1::text IS NULL OR u.event_id = $1) AND ($2::text IS NULL OR u.customer_id = $2) \
         AND ($3::text IS NULL OR c.external_id = $3) AND ($4::text IS NULL OR u.subject = $4) \
         AND ($5::text IS NULL OR u.occurred_at >= ($5::text::date)::timestamp AT TIME ZONE 'UTC') \
         AND ($6::text IS NULL OR u.occurred_at < ($6::text::date + 1)::timestamp AT TIME ZONE 'UTC') \
         AND ($7::text[] IS NULL OR u.event_type = ANY ($7)) AND ($8::bool IS NULL OR (jsonb_array_length(u.fees) > 0) = $8)";
    let from = format!("FROM credyt.usage u JOIN credyt.customers c ON c.id = u.customer_id WHERE {filter}");
    let sql = super::page_sql(ITEM_JSON, &from, "u.occurred_at DESC, u.event_id", 9);
    let args: [&(dyn tokio_postgres::types::ToSql + Sync); 10] = [
        &q.event_id,
        &q.customer_id,
        &q.customer_external_id,
        &q.subject,
        &q.period_from,
        &q.period_to,
        &types,
        &q.has_fees,
        &offset,
        &limit,
    ];
    read(&app, &auth, &sql, &args).await
}

#[utoipa::path(get, path = "/events/{eventId}", tag = "events", params(("eventId" = String, Path)),
    responses((status = 200, body = GetEventResponse), (status = 404, body = Problem)), operation_id = "events_get")]
pub async fn get(
    State(app): State<App>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Json<GetEventResponse>, Problem> {
    let sql = format!(
        "SELECT jsonb_build_object('id', u.event_id, 'event_type', u.event_type, 'occurred_at', u.occurred_at, \
           'subject', u.subject, 'description', u.description, 'data', u.data, 'customer_id', u.customer_id, \
           'created_at', u.recorded_at, 'fees', {FEES_JSON}) FROM credyt.usage u WHERE u.event_id = $1"
    );
    read_one(&app, &auth, &sql, &[&id], || format!("unknown event {id}")).await
}
