//! /vendors: who costs come from (create, list, get) and what they cost per category,
//! summed from the `costs` of usage events that name the vendor by id or external_id.

use super::{decode, read, read_one, App, Auth, Body, Page, Params};
use crate::problem::Problem;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({"name": "OpenAI", "external_id": "openai"}))]
pub struct CreateVendorRequest {
    pub name: String,
    /// Your id for the vendor, unique in the account; usage costs may name it.
    pub external_id: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CreateVendorResponse {
    pub id: String,
    pub created_at: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct VendorSummary {
    pub id: String,
    pub external_id: Option<String>,
    pub name: String,
    pub created_at: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct VendorCategoryStats {
    /// The cost's category (`uncategorized` when it has none).
    pub category: String,
    #[schema(value_type = f64)]
    pub cost: serde_json::Number,
}

/// Costs in USD (Credyt's default cost currency); costs in other currencies are not
/// summed here.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct VendorStats {
    #[schema(value_type = f64)]
    pub total_costs: serde_json::Number,
    pub categories: Vec<VendorCategoryStats>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListVendors {
    #[param(minimum = 0)]
    pub offset: Option<i64>,
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    pub external_id: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct VendorStatsQuery {
    /// First UTC day (inclusive); all time when not given.
    pub period_from: Option<String>,
    /// Last UTC day (inclusive); today when not given.
    pub period_to: Option<String>,
    pub category: Option<String>,
}

const VENDOR_JSON: &str =
    "jsonb_build_object('id', v.id, 'external_id', v.external_id, 'name', v.name, 'created_at', v.created_at)";

#[utoipa::path(post, path = "/vendors", tag = "vendors", request_body = CreateVendorRequest,
    responses((status = 201, body = CreateVendorResponse), (status = 409, body = Problem), (status = 422, body = Problem)),
    operation_id = "vendors_create")]
pub async fn create(
    State(app): State<App>,
    auth: Auth,
    Body(req): Body<CreateVendorRequest>,
) -> Result<(StatusCode, Json<CreateVendorResponse>), Problem> {
    let s = auth.session(&app).await?;
    let id: String = s.query_one("SELECT credyt.create_vendor($1, $2)", &[&req.name, &req.external_id]).await?.get(0);
    // (a statement of its own: the new row is not in the snapshot of the one that made it)
    let v = s
        .json(
            "SELECT jsonb_build_object('id', v.id, 'created_at', v.created_at) FROM credyt.vendors v WHERE v.id = $1",
            &[&id],
        )
        .await?;
    s.commit().await?;
    Ok((StatusCode::CREATED, Json(decode(v)?)))
}

#[utoipa::path(get, path = "/vendors", tag = "vendors", params(ListVendors),
    responses((status = 200, body = Page<VendorSummary>), (status = 422, body = Problem)), operation_id = "vendors_list")]
pub async fn list(
    State(app): State<App>,
    auth: Auth,
    Params(q): Params<ListVendors>,
) -> Result<Json<Page<VendorSummary>>, Problem> {
    let (offset, limit) = super::Paging::bounds(q.offset, q.limit)?;
    let filter = "($1::text IS NULL OR v.external_id = $1)";
    let sql = super::page_sql(VENDOR_JSON, &format!("FROM credyt.vendors v WHERE {filter}"), "v.created_at, v.id", 2);
    read(&app, &auth, &sql, &[&q.external_id, &offset, &limit]).await
}

#[utoipa::path(get, path = "/vendors/{vendorId}", tag = "vendors", params(("vendorId" = String, Path)),
    responses((status = 200, body = VendorSummary), (status = 404, body = Problem)), operation_id = "vendors_get")]
pub async fn get(State(app): State<App>, auth: Auth, Path(id): Path<String>) -> Result<Json<VendorSummary>, Problem> {
    let sql = format!("SELECT {VENDOR_JSON} FROM credyt.vendors v WHERE v.id = $1");
    read_one(&app, &auth, &sql, &[&id], || format!("unknown vendor {id}")).await
}

#[utoipa::path(get, path = "/vendors/{vendorId}/stats", tag = "vendors", params(("vendorId" = String, Path), VendorStatsQuery),
    responses((status = 200, body = VendorStats), (status = 404, body = Problem), (status = 422, body = Problem)),
    operation_id = "vendors_stats")]
pub async fn stats(
    State(app): State<App>,
    auth: Auth,
    Path(id): Path<String>,
    Params(q): Params<VendorStatsQuery>,
) -> Result<Json<VendorStats>, Problem> {
    super::day("period_from", &q.period_from)?;
    super::day("period_to", &q.period_to)?;
    let sql = "SELECT jsonb_build_object('total_costs', coalesce(sum(t.cost), 0), \
                 'categories', coalesce(jsonb_agg(jsonb_build_object('category', t.category, 'cost', t.cost) \
                                                  ORDER BY t.category) FILTER (WHERE t.category IS NOT NULL), '[]')) \
               FROM credyt.vendors v LEFT JOIN LATERAL ( \
                 SELECT coalesce(c->>'category', 'uncategorized') AS category, sum((c->>'amount')::numeric) AS cost \
                 FROM credyt.usage u CROSS JOIN LATERAL jsonb_array_elements(coalesce(u.costs, '[]')) c \
                 WHERE c->>'vendor' IN (v.id, v.external_id) AND coalesce(c->>'currency', 'USD') = 'USD' \
                   AND ($2::text IS NULL OR u.occurred_at >= $2::date::timestamp AT TIME ZONE 'UTC') \
                   AND ($3::text IS NULL OR u.occurred_at < ($3::date + 1)::timestamp AT TIME ZONE 'UTC') \
                   AND ($4::text IS NULL OR c->>'category' = $4) \
                 GROUP BY 1) t ON true \
               WHERE v.id = $1 GROUP BY v.id";
    read_one(&app, &auth, sql, &[&id, &q.period_from, &q.period_to, &q.category], || format!("unknown vendor {id}"))
        .await
}
