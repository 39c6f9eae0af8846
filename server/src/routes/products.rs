//! /products: products and their versions (create, list, get, new version, publish,
//! make default, archive), simulated usage and subscribers. Prices and entitlements
//! travel in Credyt's JSON form, which the extension validates and stores as given
//! (it accepts Credyt's dimensional groups, names, billing models and lifecycles).

use super::events::UsageEvent;
use super::{decode, read, read_one, App, Auth, Body, Page, Paging, Params};
use crate::problem::Problem;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::{IntoParams, ToSchema};

#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({"name": "Chat API", "code": "chat", "prices": [{"name": "Completions", "type": "usage_based", "billing_model": {"type": "real_time"}, "usage_calculation": {"event_type": "chat_completion", "usage_type": "unit_and_volume", "volume_field": "output_tokens", "billable_dimensions": ["model"]}, "pricing": [{"asset": "USD", "values": [{"dimensions": {"model": "gpt-4o"}, "values": [{"unit_price": 0.001, "volume_rate": 0.01, "package_size": 1000}]}, {"dimensions": {"model": "*"}, "values": [{"unit_price": 0.0005, "volume_rate": 0.002, "package_size": 1000}]}]}]}], "entitlements": [{"name": "Monthly credit", "asset": "USD", "amount": 5.0, "purpose": "bundled", "lifecycle": {"duration": "month", "refresh": {"strategy": "expire_and_replace"}}}]}))]
pub struct CreateProductRequest {
    pub name: String,
    pub code: String,
    /// Prices in Credyt's form (`usage_based` with `usage_calculation`, `fixed`, ...).
    #[schema(value_type = Vec<Object>)]
    pub prices: Vec<Value>,
    #[schema(value_type = Option<Vec<Object>>)]
    pub entitlements: Option<Vec<Value>>,
    /// Publish version 1 at once (the default); false keeps it a draft.
    pub publish: Option<bool>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({"prices": [{"name": "Completions", "type": "usage_based", "billing_model": {"type": "real_time"}, "usage_calculation": {"event_type": "chat_completion", "usage_type": "unit"}, "pricing": [{"asset": "USD", "values": [{"unit_price": 0.002}]}]}], "publish": false}))]
pub struct CreateProductVersionRequest {
    #[schema(value_type = Option<Vec<Object>>)]
    pub entitlements: Option<Vec<Value>>,
    #[schema(value_type = Vec<Object>)]
    pub prices: Vec<Value>,
    /// Publish the version and make it the default (the default); false keeps it a draft.
    pub publish: Option<bool>,
}

/// A version just created.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CreateProductResponse {
    pub id: String,
    pub code: String,
    pub version: i32,
    /// draft, published or archived
    pub status: String,
    pub is_default: bool,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct GetProductDataResponse {
    pub id: String,
    pub code: String,
    pub name: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ProductDefaultVersion {
    pub version: i32,
    #[schema(value_type = Vec<Object>)]
    pub entitlements: Vec<Value>,
    #[schema(value_type = Vec<Object>)]
    pub prices: Vec<Value>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ProductVersionReference {
    pub version: i32,
    pub created_at: String,
    pub status: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct GetProductResponse {
    pub id: String,
    pub code: String,
    pub name: String,
    /// None while no version is published.
    pub default_version: Option<ProductDefaultVersion>,
    pub versions: Vec<ProductVersionReference>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct GetProductVersionResponse {
    pub id: String,
    pub version: i32,
    pub code: String,
    pub name: String,
    #[schema(value_type = Vec<Object>)]
    pub prices: Vec<Value>,
    #[schema(value_type = Vec<Object>)]
    pub entitlements: Vec<Value>,
    pub status: String,
    pub is_default: bool,
}

#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({"publish": true, "make_default": true}))]
pub struct UpdateProductVersionRequest {
    /// true publishes a draft (a published version cannot be unpublished).
    pub publish: Option<bool>,
    /// true makes the (published) version the default.
    pub make_default: Option<bool>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({"events": [{"id": "sim-1", "event_type": "chat_completion", "occurred_at": "2026-12-01T10:00:00Z", "data": {"model": "gpt-4o", "output_tokens": 500}}]}))]
pub struct SimulateUsageRequest {
    pub events: Vec<UsageEvent>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CalculatedFee {
    /// `product:version:position`
    pub price_id: String,
    pub price_name: String,
    pub currency: String,
    /// The event's id.
    pub usage_id: String,
    pub event_type: String,
    #[schema(value_type = Option<Object>)]
    pub dimensions: Option<Value>,
    pub usage_type: String,
    pub volume_field: Option<String>,
    #[schema(value_type = Option<f64>)]
    pub input_volume: Option<serde_json::Number>,
    #[schema(value_type = Option<f64>)]
    pub unit_price: Option<serde_json::Number>,
    #[schema(value_type = Option<f64>)]
    pub volume_rate: Option<serde_json::Number>,
    #[schema(value_type = Option<f64>)]
    pub package_size: Option<serde_json::Number>,
    #[schema(value_type = f64)]
    pub amount: serde_json::Number,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SimulateUsageResponse {
    pub fees: Vec<CalculatedFee>,
    /// One per event that no price of the version charges.
    pub warnings: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ProductSubscriberResponse {
    pub customer_id: String,
    pub customer_name: String,
    pub external_id: Option<String>,
    pub email: Option<String>,
    pub subscription_id: String,
    /// active, scheduled or inactive
    pub subscription_status: String,
    pub started_at: String,
    pub renews_at: Option<String>,
    /// The product's id.
    pub product_rate_plan_id: String,
    pub version: i32,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListProducts {
    #[param(minimum = 0)]
    pub offset: Option<i64>,
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    /// The product with this code.
    pub code: Option<String>,
}

/// The products the API shows: not archived.
const LIVE: &str = "p.archived_at IS NULL";

/// The product in the path (its id or code), not archived: its id, or 404.
async fn product_id(s: &crate::db::Session, product: &str) -> Result<String, Problem> {
    let row = s
        .query_opt(
            "SELECT id FROM credyt.product p WHERE (p.id = $1 OR p.code = $1) AND p.archived_at IS NULL \
             ORDER BY p.id = $1 DESC LIMIT 1",
            &[&product],
        )
        .await?;
    row.map(|r| r.get(0)).ok_or_else(|| Problem::not_found(format!("unknown product {product}")))
}

/// The version in a path: a number, or `default` for the product's default version.
async fn version_of(s: &crate::db::Session, product: &str, version: &str) -> Result<i32, Problem> {
    if version == "default" {
        let row = s.query_one("SELECT default_version FROM credyt.product WHERE id = $1", &[&product]).await?;
        return row
            .get::<_, Option<i32>>(0)
            .ok_or_else(|| Problem::not_found(format!("product {product} has no published version yet")));
    }
    version
        .parse::<i32>()
        .map_err(|_| Problem::invalid("version", format!("version {version:?} is not a number or \"default\"")))
}

/// The answer for a version just created.
async fn created(s: &crate::db::Session, id: &str, version: i32) -> Result<Value, Problem> {
    s.json(
        "SELECT jsonb_build_object('id', id, 'code', code, 'version', version, 'status', status, 'is_default', is_default) \
         FROM credyt.products WHERE id = $1 AND version = $2",
        &[&id, &version],
    )
    .await
}

fn json_array(v: Option<Vec<Value>>) -> Value {
    Value::Array(v.unwrap_or_default())
}

#[utoipa::path(post, path = "/products", tag = "products", request_body = CreateProductRequest,
    responses((status = 201, body = CreateProductResponse), (status = 409, body = Problem), (status = 422, body = Problem)),
    operation_id = "products_create")]
pub async fn create(
    State(app): State<App>,
    auth: Auth,
    Body(req): Body<CreateProductRequest>,
) -> Result<(StatusCode, Json<CreateProductResponse>), Problem> {
    let s = auth.session(&app).await?;
    let publish = req.publish.unwrap_or(true);
    let prices = Value::Array(req.prices);
    let entitlements = json_array(req.entitlements);
    let id: String = s
        .query_one(
            "SELECT credyt.create_product($1, $2, $3::jsonb, $4::jsonb, $5)",
            &[&req.code, &req.name, &prices, &entitlements, &publish],
        )
        .await?
        .get(0);
    let v = created(&s, &id, 1).await?;
    s.commit().await?;
    Ok((StatusCode::CREATED, Json(decode(v)?)))
}

#[utoipa::path(get, path = "/products", tag = "products", params(ListProducts),
    responses((status = 200, body = Page<GetProductDataResponse>), (status = 422, body = Problem)), operation_id = "products_list")]
pub async fn list(
    State(app): State<App>,
    auth: Auth,
    Params(q): Params<ListProducts>,
) -> Result<Json<Page<GetProductDataResponse>>, Problem> {
    let (offset, limit) = Paging::bounds(q.offset, q.limit)?;
    let filter = format!("{LIVE} AND ($1::text IS NULL OR p.code = $1)");
    let sql = super::page_sql(
        "jsonb_build_object('id', p.id, 'code', p.code, 'name', p.name)",
        &format!("FROM credyt.product p WHERE {filter}"),
        "p.created_at, p.id",
        2,
    );
    read(&app, &auth, &sql, &[&q.code, &offset, &limit]).await
}

#[utoipa::path(get, path = "/products/{productId}", tag = "products",
    params(("productId" = String, Path, description = "The product's id or code")),
    responses((status = 200, body = GetProductResponse), (status = 404, body = Problem)), operation_id = "products_get")]
pub async fn get(
    State(app): State<App>,
    auth: Auth,
    Path(product): Path<String>,
) -> Result<Json<GetProductResponse>, Problem> {
    let sql = format!(
        "SELECT jsonb_build_object('id', p.id, 'code', p.code, 'name', p.name, \
           'default_version', (SELECT jsonb_build_object('version', v.version, 'entitlements', v.entitlements, 'prices', v.prices) \
              FROM credyt.product_version v WHERE v.product_id = p.id AND v.version = p.default_version), \
           'versions', (SELECT jsonb_agg(jsonb_build_object('version', v.version, 'created_at', v.created_at, 'status', v.status) \
              ORDER BY v.version) FROM credyt.product_version v WHERE v.product_id = p.id)) \
         FROM credyt.product p WHERE (p.id = $1 OR p.code = $1) AND {LIVE} ORDER BY p.id = $1 DESC LIMIT 1"
    );
    read_one(&app, &auth, &sql, &[&product], || format!("unknown product {product}")).await
}

#[utoipa::path(delete, path = "/products/{productId}", tag = "products",
    params(("productId" = String, Path, description = "The product's id or code")),
    responses((status = 204, description = "archived: no new subscriptions; existing ones keep billing"), (status = 404, body = Problem)),
    operation_id = "products_delete")]
pub async fn delete(State(app): State<App>, auth: Auth, Path(product): Path<String>) -> Result<StatusCode, Problem> {
    let s = auth.session(&app).await?;
    let id = product_id(&s, &product).await?;
    s.query_one("SELECT credyt.archive_product($1)", &[&id]).await?;
    s.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/products/{productId}", tag = "products", request_body = CreateProductVersionRequest,
    params(("productId" = String, Path, description = "The product's id or code")),
    responses((status = 201, body = CreateProductResponse), (status = 404, body = Problem), (status = 409, body = Problem)),
    operation_id = "products_create_version")]
pub async fn create_version(
    State(app): State<App>,
    auth: Auth,
    Path(product): Path<String>,
    Body(req): Body<CreateProductVersionRequest>,
) -> Result<(StatusCode, Json<CreateProductResponse>), Problem> {
    let s = auth.session(&app).await?;
    let id = product_id(&s, &product).await?;
    let publish = req.publish.unwrap_or(true);
    let prices = Value::Array(req.prices);
    let entitlements = json_array(req.entitlements);
    let version: i32 = s
        .query_one(
            "SELECT credyt.create_product_version($1, $2::jsonb, $3::jsonb, $4)",
            &[&id, &prices, &entitlements, &publish],
        )
        .await?
        .get(0);
    let v = created(&s, &id, version).await?;
    s.commit().await?;
    Ok((StatusCode::CREATED, Json(decode(v)?)))
}

#[utoipa::path(get, path = "/products/{productId}/{version}", tag = "products",
    params(("productId" = String, Path, description = "The product's id or code"), ("version" = String, Path, description = "A version number, or `default`")),
    responses((status = 200, body = GetProductVersionResponse), (status = 404, body = Problem)), operation_id = "products_get_version")]
pub async fn get_version(
    State(app): State<App>,
    auth: Auth,
    Path((product, version)): Path<(String, String)>,
) -> Result<Json<GetProductVersionResponse>, Problem> {
    let s = auth.session(&app).await?;
    let id = product_id(&s, &product).await?;
    let version = version_of(&s, &id, &version).await?;
    let row = s
        .query_opt(
            "SELECT jsonb_build_object('id', v.id, 'version', v.version, 'code', v.code, 'name', v.name, \
               'prices', v.prices, 'entitlements', v.entitlements, 'status', v.status, 'is_default', v.is_default) \
             FROM credyt.products v WHERE v.id = $1 AND v.version = $2",
            &[&id, &version],
        )
        .await?;
    s.commit().await?;
    let row = row.ok_or_else(|| Problem::not_found(format!("product {product} has no version {version}")))?;
    Ok(Json(decode(row.try_get(0).map_err(Problem::from_db)?)?))
}

#[utoipa::path(patch, path = "/products/{productId}/{version}", tag = "products", request_body = UpdateProductVersionRequest,
    params(("productId" = String, Path, description = "The product's id or code"), ("version" = String, Path, description = "A version number, or `default`")),
    responses((status = 204), (status = 404, body = Problem), (status = 409, body = Problem)), operation_id = "products_update_version")]
pub async fn update_version(
    State(app): State<App>,
    auth: Auth,
    Path((product, version)): Path<(String, String)>,
    Body(req): Body<UpdateProductVersionRequest>,
) -> Result<StatusCode, Problem> {
    let s = auth.session(&app).await?;
    let id = product_id(&s, &product).await?;
    let version = version_of(&s, &id, &version).await?;
    let row = s
        .query_opt("SELECT status, is_default FROM credyt.products WHERE id = $1 AND version = $2", &[&id, &version])
        .await?
        .ok_or_else(|| Problem::not_found(format!("product {product} has no version {version}")))?;
    let (status, is_default): (String, bool) = (row.get(0), row.get(1));
    if req.publish == Some(false) && status != "draft" {
        return Err(Problem::conflict(format!("version {version} is {status}: a version cannot be unpublished")));
    }
    if req.make_default == Some(false) && is_default {
        return Err(Problem::conflict(format!(
            "version {version} is the default: make another version the default instead"
        )));
    }
    if req.publish == Some(true) {
        s.query_one("SELECT credyt.publish_product_version($1, $2)", &[&id, &version]).await?;
    }
    if req.make_default == Some(true) {
        s.query_one("SELECT credyt.set_default_version($1, $2)", &[&id, &version]).await?;
    }
    s.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(delete, path = "/products/{productId}/{version}", tag = "products",
    params(("productId" = String, Path, description = "The product's id or code"), ("version" = String, Path, description = "A version number, or `default`")),
    responses((status = 204, description = "archived: its subscribers keep it"), (status = 404, body = Problem), (status = 409, body = Problem)),
    operation_id = "products_archive_version")]
pub async fn archive_version(
    State(app): State<App>,
    auth: Auth,
    Path((product, version)): Path<(String, String)>,
) -> Result<StatusCode, Problem> {
    let s = auth.session(&app).await?;
    let id = product_id(&s, &product).await?;
    let version = version_of(&s, &id, &version).await?;
    s.query_one("SELECT credyt.archive_product_version($1, $2)", &[&id, &version]).await?;
    s.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/products/{productId}/{version}/simulate-usage", tag = "products", request_body = SimulateUsageRequest,
    params(("productId" = String, Path, description = "The product's id or code"), ("version" = String, Path, description = "A version number, or `default`")),
    responses((status = 200, body = SimulateUsageResponse), (status = 404, body = Problem), (status = 422, body = Problem)),
    operation_id = "products_simulate_usage")]
pub async fn simulate_usage(
    State(app): State<App>,
    auth: Auth,
    Path((product, version)): Path<(String, String)>,
    Body(req): Body<SimulateUsageRequest>,
) -> Result<Json<SimulateUsageResponse>, Problem> {
    let events: Vec<Value> = req
        .events
        .iter()
        .map(|e| json!({"event_id": e.id, "event_type": e.event_type, "data": e.data.clone().unwrap_or_default()}))
        .collect();
    let s = auth.session(&app).await?;
    let id = product_id(&s, &product).await?;
    let version = version_of(&s, &id, &version).await?;
    let out =
        s.json("SELECT credyt.simulate_usage($1, $2, $3::jsonb)", &[&id, &version, &Value::Array(events)]).await?;
    s.commit().await?;
    let fees = out["fees"].as_array().cloned().unwrap_or_default();
    let warnings =
        out["warnings"].as_array().into_iter().flatten().filter_map(|w| w.as_str().map(String::from)).collect();
    let fees = fees
        .iter()
        .map(|f| {
            decode(json!({
                "price_id": format!("{}:{}:{}", f["product_id"].as_str().unwrap_or_default(), f["version"], f["price"]),
                "price_name": f["price_name"], "currency": f["asset"], "usage_id": f["event_id"],
                "event_type": f["event_type"], "dimensions": f.get("dimensions"), "usage_type": f["usage_type"],
                "volume_field": f["volume_field"], "input_volume": f["volume"], "unit_price": f.get("unit_price"),
                "volume_rate": f.get("volume_rate"), "package_size": f.get("package_size"), "amount": f["amount"],
            }))
        })
        .collect::<Result<Vec<CalculatedFee>, Problem>>()?;
    Ok(Json(SimulateUsageResponse { fees, warnings }))
}

#[utoipa::path(get, path = "/products/{productId}/subscribers", tag = "products", params(("productId" = String, Path), Paging),
    responses((status = 200, body = Page<ProductSubscriberResponse>), (status = 404, body = Problem)), operation_id = "products_get_subscribers")]
pub async fn subscribers(
    State(app): State<App>,
    auth: Auth,
    Path(product): Path<String>,
    Params(q): Params<Paging>,
) -> Result<Json<Page<ProductSubscriberResponse>>, Problem> {
    let (offset, limit) = Paging::bounds(q.offset, q.limit)?;
    let s = auth.session(&app).await?;
    let id = product_id(&s, &product).await?;
    let v = s
        .json(
            &super::page_sql(
                "jsonb_build_object('customer_id', c.id, 'customer_name', c.name, 'external_id', c.external_id, \
                   'email', c.email, 'subscription_id', s.id, \
                   'subscription_status', CASE s.status WHEN 'cancelled' THEN 'inactive' ELSE s.status END, \
                   'started_at', s.starts_at, 'renews_at', NULL, 'product_rate_plan_id', s.product_id, 'version', s.version)",
                "FROM credyt.subscriptions s JOIN credyt.customers c ON c.id = s.customer_id WHERE s.product_id = $1",
                "s.created_at, s.id",
                2,
            ),
            &[&id, &offset, &limit],
        )
        .await?;
    s.commit().await?;
    Ok(Json(decode(v)?))
}
