//! /customers/{customerId}/wallet: balances per wallet account, adjustments.

use super::{decode, numeric, App, Auth, Body, Page};
use crate::problem::Problem;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::{IntoParams, ToSchema};

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct WalletAccountSummary {
    /// `name:asset`, e.g. `default:USD`
    pub id: String,
    pub name: String,
    pub asset: String,
    #[schema(value_type = f64)]
    pub available: serde_json::Number,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct GetWalletResponse {
    pub accounts: Vec<WalletAccountSummary>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct GetAccountDetailsResponse {
    pub id: String,
    pub name: String,
    pub asset: String,
    #[schema(value_type = f64)]
    pub available: serde_json::Number,
    #[schema(value_type = f64)]
    pub pending_in: serde_json::Number,
    #[schema(value_type = f64)]
    pub pending_out: serde_json::Number,
}

#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({"transaction_id": "top-2026-12-01", "asset": "USD", "amount": 20.0, "reason": "external_topup", "description": "Top-up by card"}))]
pub struct CreateAdjustmentRequest {
    /// The idempotency key: the same request again returns the same adjustment.
    pub transaction_id: String,
    pub account_name: Option<String>,
    pub asset: String,
    #[schema(value_type = f64)]
    pub amount: serde_json::Number,
    pub description: Option<String>,
    /// gift, external_topup, external_refund or other
    pub reason: String,
    pub effective_at: Option<String>,
    pub expires_at: Option<String>,
    pub metadata: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CreateAdjustmentResponse {
    /// The request's transaction_id.
    pub id: String,
    pub created_at: String,
}

/// The customer in the path exists in the account served (404 before anything else).
async fn customer_exists(s: &crate::db::Session, id: &str) -> Result<(), Problem> {
    match s.query_opt("SELECT 1 FROM credyt.customers WHERE id = $1", &[&id]).await? {
        Some(_) => Ok(()),
        None => Err(Problem::not_found(format!("unknown customer {id}"))),
    }
}

const ACCOUNT_JSON: &str = "jsonb_build_object('id', w.account_id, 'name', w.name, 'asset', w.asset, \
     'available', w.available, 'pending_in', w.pending_in, 'pending_out', w.pending_out)";

#[utoipa::path(get, path = "/customers/{customerId}/wallet", tag = "wallet",
    params(("customerId" = String, Path)),
    responses((status = 200, body = GetWalletResponse), (status = 404, body = Problem)), operation_id = "wallet_get")]
pub async fn get(
    State(app): State<App>,
    auth: Auth,
    Path(customer): Path<String>,
) -> Result<Json<GetWalletResponse>, Problem> {
    let s = auth.session(&app).await?;
    customer_exists(&s, &customer).await?;
    let v = s
        .json(
            &format!(
                "SELECT jsonb_build_object('accounts', coalesce(jsonb_agg({ACCOUNT_JSON} - 'pending_in' - 'pending_out' \
                   ORDER BY w.name, w.asset), '[]')) FROM credyt.wallet($1) w"
            ),
            &[&customer],
        )
        .await?;
    s.commit().await?;
    Ok(Json(decode(v)?))
}

#[utoipa::path(get, path = "/customers/{customerId}/wallet/{accountId}", tag = "wallet",
    params(("customerId" = String, Path), ("accountId" = String, Path, description = "name:asset, e.g. default:USD")),
    responses((status = 200, body = GetAccountDetailsResponse), (status = 404, body = Problem)), operation_id = "wallet_account")]
pub async fn account(
    State(app): State<App>,
    auth: Auth,
    Path((customer, account)): Path<(String, String)>,
) -> Result<Json<GetAccountDetailsResponse>, Problem> {
    let s = auth.session(&app).await?;
    customer_exists(&s, &customer).await?;
    let row = s
        .query_opt(
            &format!("SELECT {ACCOUNT_JSON} FROM credyt.wallet($1) w WHERE w.account_id = $2"),
            &[&customer, &account],
        )
        .await?;
    s.commit().await?;
    let row = row.ok_or_else(|| Problem::not_found(format!("customer {customer} has no wallet account {account}")))?;
    Ok(Json(decode(row.get(0))?))
}

#[utoipa::path(post, path = "/customers/{customerId}/wallet/adjustments", tag = "wallet",
    params(("customerId" = String, Path)), request_body = CreateAdjustmentRequest,
    responses((status = 201, body = CreateAdjustmentResponse), (status = 402, body = Problem), (status = 404, body = Problem),
              (status = 409, body = Problem), (status = 422, body = Problem)), operation_id = "wallet_adjust")]
pub async fn adjust(
    State(app): State<App>,
    auth: Auth,
    Path(customer): Path<String>,
    Body(req): Body<CreateAdjustmentRequest>,
) -> Result<(StatusCode, Json<CreateAdjustmentResponse>), Problem> {
    let s = auth.session(&app).await?;
    customer_exists(&s, &customer).await?;
    let metadata = serde_json::to_value(req.metadata.unwrap_or_default()).unwrap_or_default();
    let amount = numeric(&req.amount);
    let name = req.account_name.unwrap_or_else(|| "default".into());
    let row = s
        .query_one(
            "SELECT credyt.adjust($1, $2, $3, $4::text::numeric, $5, $6, $7, $8::text::timestamptz, \
               $9::text::timestamptz, $10::jsonb)",
            &[
                &customer,
                &req.transaction_id,
                &req.asset,
                &amount,
                &req.reason,
                &name,
                &req.description,
                &req.effective_at,
                &req.expires_at,
                &metadata,
            ],
        )
        .await?;
    let txn: String = row.get(0);
    // (a statement of its own: the adjustment's rows are not in the snapshot of the
    // statement that wrote them)
    let row = s
        .query_one("SELECT to_jsonb(min(created_at)) #>> '{}' FROM credyt.entries WHERE transaction_id = $1", &[&txn])
        .await?;
    let created_at: Option<String> = row.get(0);
    s.commit().await?;
    Ok((
        StatusCode::CREATED,
        Json(CreateAdjustmentResponse { id: req.transaction_id, created_at: created_at.unwrap_or_default() }),
    ))
}

#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({"transaction_id": "api-call-77", "asset": "USD", "amount": 1.5, "description": "API call"}))]
pub struct CreateChargeRequest {
    /// The idempotency key.
    pub transaction_id: String,
    pub account_name: Option<String>,
    pub asset: String,
    #[schema(value_type = f64)]
    pub amount: serde_json::Number,
    pub subject: Option<String>,
    pub description: Option<String>,
    pub metadata: Option<BTreeMap<String, String>>,
}

/// Credyt answers a charge with an empty object.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreateChargeResponse {}

#[utoipa::path(post, path = "/customers/{customerId}/wallet/charges", tag = "wallet",
    params(("customerId" = String, Path)), request_body = CreateChargeRequest,
    responses((status = 201, body = CreateChargeResponse), (status = 402, body = Problem), (status = 404, body = Problem),
              (status = 409, body = Problem), (status = 422, body = Problem)), operation_id = "wallet_charge")]
pub async fn charge(
    State(app): State<App>,
    auth: Auth,
    Path(customer): Path<String>,
    Body(req): Body<CreateChargeRequest>,
) -> Result<(StatusCode, Json<CreateChargeResponse>), Problem> {
    let s = auth.session(&app).await?;
    customer_exists(&s, &customer).await?;
    let mut metadata = req.metadata.unwrap_or_default();
    if let Some(subject) = req.subject {
        metadata.insert("subject".into(), subject);
    }
    let metadata = serde_json::to_value(metadata).unwrap_or_default();
    let name = req.account_name.unwrap_or_else(|| "default".into());
    s.query_one(
        "SELECT credyt.charge($1, $2, $3, $4::text::numeric, $5, $6, $7::jsonb)",
        &[&customer, &req.transaction_id, &req.asset, &numeric(&req.amount), &name, &req.description, &metadata],
    )
    .await?;
    s.commit().await?;
    Ok((StatusCode::CREATED, Json(CreateChargeResponse {})))
}

/// A ledger transaction as it touched the customer's wallet.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct GetTransactionResponse {
    /// The client's transaction_id, else credyt's `txn_…` id.
    pub id: String,
    /// `adjustment` or `fee` (a charge or a usage event)
    #[serde(rename = "type")]
    pub kind: String,
    pub account_id: String,
    pub asset: String,
    #[schema(value_type = f64)]
    pub amount: serde_json::Number,
    pub description: Option<String>,
    pub metadata: Option<BTreeMap<String, String>>,
    pub created_at: String,
    pub executed_at: Option<String>,
}

#[utoipa::path(get, path = "/customers/{customerId}/wallet/transactions/{transactionId}", tag = "wallet",
    params(("customerId" = String, Path), ("transactionId" = String, Path, description = "the client's transaction_id or a txn_ id")),
    responses((status = 200, body = GetTransactionResponse), (status = 404, body = Problem)), operation_id = "wallet_transaction")]
pub async fn transaction(
    State(app): State<App>,
    auth: Auth,
    Path((customer, id)): Path<(String, String)>,
) -> Result<Json<GetTransactionResponse>, Problem> {
    let s = auth.session(&app).await?;
    customer_exists(&s, &customer).await?;
    let row = s
        .query_opt(
            "SELECT jsonb_build_object('id', coalesce(t.transaction_id, t.id), \
               'type', CASE WHEN t.kind IN ('usage', 'charge') THEN 'fee' ELSE 'adjustment' END, \
               'account_id', e.account_id, 'asset', e.asset, 'amount', e.amount, 'description', t.description, \
               'metadata', t.metadata, 'created_at', t.created_at, 'executed_at', t.created_at) \
             FROM credyt.transactions t \
             JOIN LATERAL (SELECT e.account_id, e.asset, sum(e.amount) AS amount FROM credyt.entries e \
               WHERE e.transaction_id = t.id AND NOT e.system AND e.customer_id = t.customer_id \
               GROUP BY e.account_id, e.asset ORDER BY e.account_id LIMIT 1) e ON true \
             WHERE t.customer_id = $1 AND (t.transaction_id = $2 OR t.id = $2) ORDER BY t.transaction_id = $2 DESC LIMIT 1",
            &[&customer, &id],
        )
        .await?;
    s.commit().await?;
    let row = row.ok_or_else(|| Problem::not_found(format!("unknown transaction {id}")))?;
    Ok(Json(decode(row.get(0))?))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListGrants {
    #[param(minimum = 0)]
    pub offset: Option<i64>,
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    /// promotion, bundled or paid
    pub purpose: Option<String>,
    pub exclude_expired: Option<bool>,
    pub effective_from: Option<String>,
    pub effective_to: Option<String>,
    pub expired_from: Option<String>,
    pub expired_to: Option<String>,
}

/// A credit lot of a wallet account ("grant" in Credyt's API).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CreditGrantItem {
    pub id: String,
    #[schema(value_type = f64)]
    pub available: serde_json::Number,
    pub effective_at: String,
    pub expires_at: Option<String>,
    pub purpose: String,
    pub created_at: String,
}

#[utoipa::path(get, path = "/customers/{customerId}/wallet/{accountId}/grants", tag = "wallet",
    params(("customerId" = String, Path), ("accountId" = String, Path), ListGrants),
    responses((status = 200, body = Page<CreditGrantItem>), (status = 404, body = Problem), (status = 422, body = Problem)),
    operation_id = "wallet_grants")]
pub async fn grants(
    State(app): State<App>,
    auth: Auth,
    Path((customer, account)): Path<(String, String)>,
    super::Params(q): super::Params<ListGrants>,
) -> Result<Json<Page<CreditGrantItem>>, Problem> {
    let (offset, limit) = super::Paging::bounds(q.offset, q.limit)?;
    for (field, t) in [
        ("effective_from", &q.effective_from),
        ("effective_to", &q.effective_to),
        ("expired_from", &q.expired_from),
        ("expired_to", &q.expired_to),
    ] {
        if t.as_deref().is_some_and(|t| !credyt_core::period::is_rfc3339(t)) {
            return Err(Problem::invalid(field, format!("{field} must be an RFC 3339 timestamp")));
        }
    }
    let s = auth.session(&app).await?;
    customer_exists(&s, &customer).await?;
    let filter = "l.customer_id = $1 AND l.account_id = $2 AND ($3::text IS NULL OR l.purpose = $3) \
         AND (NOT coalesce($4::bool, false) OR l.expires_at IS NULL OR l.expires_at > now()) \
         AND ($5::text IS NULL OR l.effective_at >= $5::text::timestamptz) \
         AND ($6::text IS NULL OR l.effective_at <= $6::text::timestamptz) \
         AND ($7::text IS NULL OR l.expires_at >= $7::text::timestamptz) \
         AND ($8::text IS NULL OR l.expires_at <= $8::text::timestamptz)";
    let v = s
        .json(
            &super::page_sql(
                "jsonb_build_object('id', l.id, 'available', l.remaining, 'effective_at', l.effective_at, \
                   'expires_at', l.expires_at, 'purpose', l.purpose, 'created_at', l.created_at)",
                &format!("FROM credyt.lots l WHERE {filter}"),
                "l.created_at, l.id",
                9,
            ),
            &[
                &customer,
                &account,
                &q.purpose,
                &q.exclude_expired,
                &q.effective_from,
                &q.effective_to,
                &q.expired_from,
                &q.expired_to,
                &offset,
                &limit,
            ],
        )
        .await?;
    s.commit().await?;
    Ok(Json(decode(v)?))
}
