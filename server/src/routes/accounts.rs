//! /accounts: the key's own account, and the connected accounts below it.

use super::{read, read_one, App, Auth, Body, Page, Paging, Params};
use crate::problem::Problem;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::ToSchema;

/// The account a request is served as.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AccountContext {
    pub account_id: String,
    /// `live` or `test`: each environment is an account tree of its own.
    pub environment: String,
    /// The connected account (below the platform) the account belongs to.
    pub org_id: Option<String>,
    pub name: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({"name": "Acme EU", "external_id": "acme-eu", "metadata": {"region": "eu"}}))]
pub struct CreateAccountRequest {
    pub name: String,
    pub external_id: Option<String>,
    pub metadata: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreateAccountResponse {
    pub id: String,
}

/// A connected account (or sub-organisation).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ConnectedAccount {
    pub id: String,
    pub external_id: Option<String>,
    pub name: String,
    pub created_at: String,
    pub metadata: Option<BTreeMap<String, String>>,
}

const ACCOUNT_JSON: &str = "jsonb_build_object('id', id, 'external_id', external_id, 'name', name, \
     'created_at', created_at, 'metadata', metadata)";

#[utoipa::path(get, path = "/accounts/self", tag = "accounts",
    responses((status = 200, body = AccountContext), (status = 401, body = Problem)), operation_id = "accounts_get_self")]
pub async fn get_self(State(app): State<App>, auth: Auth) -> Result<Json<AccountContext>, Problem> {
    let sql = "SELECT jsonb_build_object('account_id', account_id, 'environment', environment, 'org_id', org_id, \
         'name', name) FROM credyt.account_context()";
    read(&app, &auth, sql, &[]).await
}

#[utoipa::path(post, path = "/accounts", tag = "accounts", request_body = CreateAccountRequest,
    responses((status = 201, body = CreateAccountResponse), (status = 409, body = Problem), (status = 422, body = Problem)), operation_id = "accounts_create")]
pub async fn create(
    State(app): State<App>,
    auth: Auth,
    Body(req): Body<CreateAccountRequest>,
) -> Result<(StatusCode, Json<CreateAccountResponse>), Problem> {
    let s = auth.session(&app).await?;
    let metadata = serde_json::to_value(req.metadata.unwrap_or_default()).unwrap_or_default();
    let row = s
        .query_one(
            "SELECT credyt.create_account($1, $2, parent_id => credyt.current_account(), metadata => $3::jsonb)",
            &[&req.name, &req.external_id, &metadata],
        )
        .await?;
    let id: String = row.get(0);
    s.commit().await?;
    Ok((StatusCode::CREATED, Json(CreateAccountResponse { id })))
}

#[utoipa::path(get, path = "/accounts", tag = "accounts", params(Paging),
    responses((status = 200, body = Page<ConnectedAccount>)), operation_id = "accounts_list")]
pub async fn list(
    State(app): State<App>,
    auth: Auth,
    Params(p): Params<Paging>,
) -> Result<Json<Page<ConnectedAccount>>, Problem> {
    let (offset, limit) = Paging::bounds(p.offset, p.limit)?;
    let sql = super::page_sql(
        ACCOUNT_JSON,
        "FROM credyt.accounts WHERE parent_id = credyt.current_account()",
        "created_at, id",
        1,
    );
    read(&app, &auth, &sql, &[&offset, &limit]).await
}

#[utoipa::path(get, path = "/accounts/{accountId}", tag = "accounts",
    params(("accountId" = String, Path, description = "The account's id")),
    responses((status = 200, body = ConnectedAccount), (status = 404, body = Problem)), operation_id = "accounts_get")]
pub async fn get(
    State(app): State<App>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Json<ConnectedAccount>, Problem> {
    let sql = format!(
        "SELECT {ACCOUNT_JSON} FROM credyt.accounts WHERE id = $1 \
         AND (id = credyt.current_account() OR parent_id = credyt.current_account())"
    );
    read_one(&app, &auth, &sql, &[&id], || format!("unknown account {id}")).await
}
