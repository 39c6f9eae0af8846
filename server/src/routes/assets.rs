//! /assets: an account's custom units (create, list, get with their rates over time),
//! new rates and quotes, onto create_asset, add_asset_rate and quote_asset.

use super::{decode, numeric, read, read_one, App, Auth, Body, Page, Paging, Params};
use crate::problem::Problem;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({"code": "credits", "name": "Credits", "precision": 0, "symbol": "C", "rates": [{"source": "USD", "inverse_rate": 100}]}))]
pub struct CreateAssetRequest {
    /// A letter, then letters, digits or `_` (at most 32); never an ISO 4217 code.
    pub code: String,
    pub name: String,
    /// Decimal places (0 to 12; 2 when not given).
    pub precision: Option<i32>,
    pub label: Option<String>,
    pub symbol: Option<String>,
    /// Starting rates, one per source currency.
    pub rates: Option<Vec<StartingExchangeRate>>,
}

/// What one unit costs in `source` (`rate`), or what one unit of `source` buys
/// (`inverse_rate`): one of the two.
#[derive(Debug, Deserialize, ToSchema)]
pub struct StartingExchangeRate {
    pub source: String,
    #[schema(value_type = Option<f64>)]
    pub rate: Option<serde_json::Number>,
    #[schema(value_type = Option<f64>)]
    pub inverse_rate: Option<serde_json::Number>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CreateAssetResponse {
    pub code: String,
    pub created_at: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ListAssetsItem {
    pub code: String,
    pub name: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AssetExchangeRate {
    pub valid_from: String,
    pub valid_to: Option<String>,
    /// One unit of the asset costs this much of the source.
    #[schema(value_type = f64)]
    pub rate: serde_json::Number,
    /// One unit of the source buys this much of the asset.
    #[schema(value_type = f64)]
    pub inverse_rate: serde_json::Number,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AssetRates {
    pub source: String,
    pub schedule: Vec<AssetExchangeRate>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct GetAssetResponse {
    pub code: String,
    pub name: String,
    pub precision: i32,
    pub label: Option<String>,
    pub symbol: Option<String>,
    pub rates: Vec<AssetRates>,
    pub created_at: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({"source": "USD", "rate": 0.02, "valid_from": "2027-01-01T00:00:00Z"}))]
pub struct AddAssetRateRequest {
    pub source: String,
    /// From when (now when not given); the rate then in effect ends there.
    pub valid_from: Option<String>,
    /// Until when (open when not given).
    pub valid_to: Option<String>,
    #[schema(value_type = f64)]
    pub rate: serde_json::Number,
}

#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({"source": "USD", "amount": 5.0}))]
pub struct QuoteAssetRequest {
    pub source: String,
    #[schema(value_type = f64)]
    pub amount: serde_json::Number,
    /// The moment whose rate applies (now when not given).
    pub exchange_at: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct QuoteAssetResponse {
    pub source: String,
    #[schema(value_type = f64)]
    pub source_amount: serde_json::Number,
    pub destination: String,
    /// Rounded down to the asset's precision.
    #[schema(value_type = f64)]
    pub destination_amount: serde_json::Number,
    #[schema(value_type = f64)]
    pub rate: serde_json::Number,
    #[schema(value_type = f64)]
    pub inverse_rate: serde_json::Number,
}

/// An optional RFC 3339 time from a body field, or 422 naming it.
fn time(field: &str, t: &Option<String>) -> Result<(), Problem> {
    match t.as_deref() {
        Some(t) if !credyt_core::period::is_rfc3339(t) => {
            Err(Problem::invalid(field, format!("{field} {t:?} is not an RFC 3339 timestamp")))
        }
        _ => Ok(()),
    }
}

/// A rate as text for numeric: given, or 1 / inverse_rate rounded at 12 digits (SQL).
fn starting_rate(i: usize, r: &StartingExchangeRate) -> Result<(Option<String>, Option<String>), Problem> {
    match (&r.rate, &r.inverse_rate) {
        (Some(rate), None) => Ok((Some(numeric(rate)), None)),
        (None, Some(inverse)) => Ok((None, Some(numeric(inverse)))),
        _ => Err(Problem::invalid(&format!("rates[{i}].rate"), "give either rate or inverse_rate".into())),
    }
}

/// A rate in effect from creation shows it as its start.
const RATES_JSON: &str =
    "coalesce((SELECT jsonb_agg(jsonb_build_object('source', g.source, 'schedule', g.schedule) ORDER BY g.source) \
     FROM (SELECT r.source, jsonb_agg(jsonb_build_object( \
             'valid_from', CASE WHEN isfinite(r.valid_from) THEN r.valid_from ELSE a.created_at END, \
             'valid_to', r.valid_to, 'rate', r.rate, 'inverse_rate', trim_scale(round(1 / r.rate, 12))) \
             ORDER BY r.valid_from) AS schedule \
           FROM credyt.asset_rates r WHERE r.asset = a.code GROUP BY r.source) g), '[]')";

#[utoipa::path(post, path = "/assets", tag = "assets", request_body = CreateAssetRequest,
    responses((status = 201, body = CreateAssetResponse), (status = 409, body = Problem), (status = 422, body = Problem)),
    operation_id = "assets_create")]
pub async fn create(
    State(app): State<App>,
    auth: Auth,
    Body(req): Body<CreateAssetRequest>,
) -> Result<(StatusCode, Json<CreateAssetResponse>), Problem> {
    let rates = req.rates.unwrap_or_default();
    let rates = rates
        .iter()
        .enumerate()
        .map(|(i, r)| starting_rate(i, r).map(|(rate, inverse)| (r.source.clone(), rate, inverse)))
        .collect::<Result<Vec<_>, Problem>>()?;
    let precision = req.precision.unwrap_or(2);
    let s = auth.session(&app).await?;
    let (first, more) = match rates.split_first() {
        Some((f, m)) => (Some(f), m),
        None => (None, &[][..]),
    };
    let (source, rate, inverse) = match first {
        Some((s, r, i)) => (Some(s.clone()), r.clone(), i.clone()),
        None => (None, None, None),
    };
    s.query_one(
        "SELECT credyt.create_asset($1, $2, $3, coalesce($4::text::numeric, round(1 / $5::text::numeric, 12)), \
           coalesce($6, 'USD'), $7, $8)",
        &[&req.code, &req.name, &precision, &rate, &inverse, &source, &req.label, &req.symbol],
    )
    .await?;
    // Further sources: their rates from now.
    for (source, rate, inverse) in more {
        s.query_one(
            "SELECT credyt.add_asset_rate($1, $2, coalesce($3::text::numeric, round(1 / $4::text::numeric, 12)))",
            &[&req.code, source, rate, inverse],
        )
        .await?;
    }
    let v = s
        .json(
            "SELECT jsonb_build_object('code', code, 'created_at', created_at) FROM credyt.assets WHERE code = $1",
            &[&req.code],
        )
        .await?;
    s.commit().await?;
    Ok((StatusCode::CREATED, Json(decode(v)?)))
}

#[utoipa::path(get, path = "/assets", tag = "assets", params(Paging),
    responses((status = 200, body = Page<ListAssetsItem>), (status = 422, body = Problem)), operation_id = "assets_list")]
pub async fn list(
    State(app): State<App>,
    auth: Auth,
    Params(q): Params<Paging>,
) -> Result<Json<Page<ListAssetsItem>>, Problem> {
    let (offset, limit) = Paging::bounds(q.offset, q.limit)?;
    let sql = super::page_sql(
        "jsonb_build_object('code', a.code, 'name', a.name)",
        "FROM credyt.assets a",
        "a.created_at, a.code",
        1,
    );
    read(&app, &auth, &sql, &[&offset, &limit]).await
}

#[utoipa::path(get, path = "/assets/{assetCode}", tag = "assets", params(("assetCode" = String, Path)),
    responses((status = 200, body = GetAssetResponse), (status = 404, body = Problem)), operation_id = "assets_get")]
pub async fn get(
    State(app): State<App>,
    auth: Auth,
    Path(code): Path<String>,
) -> Result<Json<GetAssetResponse>, Problem> {
    let sql = format!(
        "SELECT jsonb_build_object('code', a.code, 'name', a.name, 'precision', a.precision, 'label', a.label, \
           'symbol', a.symbol, 'rates', {RATES_JSON}, 'created_at', a.created_at) FROM credyt.assets a WHERE a.code = $1"
    );
    read_one(&app, &auth, &sql, &[&code], || format!("unknown asset {code}")).await
}

#[utoipa::path(post, path = "/assets/{assetCode}/rates", tag = "assets", request_body = AddAssetRateRequest,
    params(("assetCode" = String, Path)),
    responses((status = 204), (status = 404, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)),
    operation_id = "assets_add_rate")]
pub async fn add_rate(
    State(app): State<App>,
    auth: Auth,
    Path(code): Path<String>,
    Body(req): Body<AddAssetRateRequest>,
) -> Result<StatusCode, Problem> {
    time("valid_from", &req.valid_from)?;
    time("valid_to", &req.valid_to)?;
    let s = auth.session(&app).await?;
    s.query_one(
        "SELECT credyt.add_asset_rate($1, $2, $3::text::numeric, coalesce($4::text::timestamptz, now()), $5::text::timestamptz)",
        &[&code, &req.source, &numeric(&req.rate), &req.valid_from, &req.valid_to],
    )
    .await?;
    s.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/assets/{assetCode}/quote", tag = "assets", request_body = QuoteAssetRequest,
    params(("assetCode" = String, Path)),
    responses((status = 200, body = QuoteAssetResponse), (status = 404, body = Problem), (status = 422, body = Problem)),
    operation_id = "assets_quote")]
pub async fn quote(
    State(app): State<App>,
    auth: Auth,
    Path(code): Path<String>,
    Body(req): Body<QuoteAssetRequest>,
) -> Result<Json<QuoteAssetResponse>, Problem> {
    time("exchange_at", &req.exchange_at)?;
    let sql =
        "SELECT jsonb_build_object('source', q.source, 'source_amount', q.source_amount, 'destination', q.asset, \
                 'destination_amount', q.amount, 'rate', q.rate, 'inverse_rate', q.inverse_rate) \
               FROM credyt.quote_asset($1, $2, $3::text::numeric, coalesce($4::text::timestamptz, now())) q";
    read(&app, &auth, sql, &[&code, &req.source, &numeric(&req.amount), &req.exchange_at]).await
}
