//! /customers: create, list (external_id lookups answer 303 or 404), get, update.

use super::{decode, read_one, App, Auth, Body, Page, Params};
use crate::problem::Problem;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::{IntoParams, ToSchema};

#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateCustomerRequest {
    pub name: String,
    pub external_id: Option<String>,
    pub email: Option<String>,
    pub metadata: Option<BTreeMap<String, String>>,
    /// Products to subscribe the customer to at once.
    pub subscriptions: Option<Vec<CreateCustomerSubscription>>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateCustomerSubscription {
    /// When the subscription starts (now when not given).
    pub starts_at: Option<String>,
    pub products: Vec<SubscriptionProduct>,
}

/// A product to subscribe to, by id or by code, at a version or the default one.
#[derive(Debug, Deserialize, ToSchema)]
pub struct SubscriptionProduct {
    pub id: Option<String>,
    pub code: Option<String>,
    pub version: Option<VersionRef>,
}

/// A version number, or "default".
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum VersionRef {
    Number(i32),
    Named(String),
}

impl SubscriptionProduct {
    /// (product reference, version) for credyt.subscribe.
    fn reference(&self, path: &str) -> Result<(String, Option<i32>), Problem> {
        let product = self
            .id
            .clone()
            .or_else(|| self.code.clone())
            .ok_or_else(|| Problem::invalid(&format!("{path}.id"), "a product needs its id or its code".into()))?;
        let version = match &self.version {
            None => None,
            Some(VersionRef::Number(n)) => Some(*n),
            Some(VersionRef::Named(v)) if v == "default" => None,
            Some(VersionRef::Named(v)) => {
                return Err(Problem::invalid(
                    &format!("{path}.version"),
                    format!("version {v:?} is not a number or \"default\""),
                ))
            }
        };
        Ok((product, version))
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CustomerSubscription {
    pub id: String,
    pub started_at: Option<String>,
    pub status: String,
    pub products: Vec<CustomerSubscriptionProduct>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CustomerSubscriptionProduct {
    pub id: String,
    pub code: String,
    pub version: i32,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CreateCustomerResponse {
    pub id: String,
    pub subscriptions: Vec<CustomerSubscription>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CustomerSummary {
    pub id: String,
    pub external_id: Option<String>,
    pub name: String,
    pub email: Option<String>,
    pub active_subscription_count: i64,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct GetCustomerResponse {
    pub id: String,
    pub external_id: Option<String>,
    pub name: String,
    pub email: Option<String>,
    pub active_subscription_count: i64,
    pub created_at: String,
    pub metadata: Option<BTreeMap<String, String>>,
    pub subscriptions: Vec<CustomerSubscription>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct UpdateCustomerRequest {
    pub name: Option<String>,
    pub external_id: Option<String>,
    pub email: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListCustomers {
    #[param(minimum = 0)]
    pub offset: Option<i64>,
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    /// Customers with this id.
    pub customer_id: Option<String>,
    /// The customer with this external id: 303 to it, or 404.
    pub external_id: Option<String>,
    pub email: Option<String>,
    pub name: Option<String>,
    /// `active` (with an active subscription) or `inactive`.
    pub status: Option<String>,
}

/// The JSON of one customer's subscriptions, from credyt.subscriptions `s`.
const SUBSCRIPTIONS_JSON: &str =
    "coalesce((SELECT jsonb_agg(jsonb_build_object('id', s.id, 'started_at', s.starts_at, \
       'status', CASE s.status WHEN 'cancelled' THEN 'inactive' ELSE s.status END, \
       'products', jsonb_build_array(jsonb_build_object('id', s.product_id, 'code', s.product, 'version', s.version))) \
       ORDER BY s.created_at, s.id) FROM credyt.subscriptions s WHERE s.customer_id = c.id), '[]')";

/// Active subscriptions of customer `c`.
const ACTIVE_COUNT: &str =
    "(SELECT count(*) FROM credyt.subscriptions s WHERE s.customer_id = c.id AND s.status = 'active')";

#[utoipa::path(post, path = "/customers", tag = "customers", request_body = CreateCustomerRequest,
    responses((status = 201, body = CreateCustomerResponse), (status = 409, body = Problem), (status = 422, body = Problem)), operation_id = "customers_create")]
pub async fn create(
    State(app): State<App>,
    auth: Auth,
    Body(req): Body<CreateCustomerRequest>,
) -> Result<(StatusCode, Json<CreateCustomerResponse>), Problem> {
    let s = auth.session(&app).await?;
    let metadata = serde_json::to_value(req.metadata.unwrap_or_default()).unwrap_or_default();
    let id: String = s
        .query_one(
            "SELECT credyt.create_customer($1, $2, email => $3, metadata => $4::jsonb)",
            &[&req.name, &req.external_id, &req.email, &metadata],
        )
        .await?
        .get(0);
    for (i, sub) in req.subscriptions.unwrap_or_default().iter().enumerate() {
        if let Some(t) = sub.starts_at.as_deref().filter(|t| !credyt_core::period::is_rfc3339(t)) {
            let field = format!("subscriptions[{i}].starts_at");
            return Err(Problem::invalid(&field, format!("starts_at {t:?} is not an RFC 3339 timestamp")));
        }
        for (j, p) in sub.products.iter().enumerate() {
            let (product, version) = p.reference(&format!("subscriptions[{i}].products[{j}]"))?;
            s.query_one(
                "SELECT credyt.subscribe($1, $2, $3, coalesce($4::text::timestamptz, now()))",
                &[&id, &product, &version, &sub.starts_at],
            )
            .await?;
        }
    }
    let v = s
        .json(&format!("SELECT jsonb_build_object('id', c.id, 'subscriptions', {SUBSCRIPTIONS_JSON}) FROM credyt.customers c WHERE c.id = $1"), &[&id])
        .await?;
    s.commit().await?;
    Ok((StatusCode::CREATED, Json(decode(v)?)))
}

#[utoipa::path(get, path = "/customers", tag = "customers", params(ListCustomers),
    responses((status = 200, body = Page<CustomerSummary>), (status = 303, description = "external_id matched: Location is the customer"), (status = 404, body = Problem)), operation_id = "customers_list")]
pub async fn list(
    State(app): State<App>,
    auth: Auth,
    Params(q): Params<ListCustomers>,
) -> Result<Json<Page<CustomerSummary>>, Problem> {
    let (offset, limit) = super::Paging::bounds(q.offset, q.limit)?;
    let active = match q.status.as_deref() {
        None => None,
        Some("active") => Some(true),
        Some("inactive") => Some(false),
        Some(_) => return Err(Problem::invalid("status", "status must be active or inactive".into())),
    };
    let s = auth.session(&app).await?;
    if let Some(ext) = &q.external_id {
        let found = s.query_opt("SELECT id FROM credyt.customers WHERE external_id = $1", &[ext]).await?;
        s.commit().await?;
        return match found {
            Some(row) => Err(Problem::see_other(format!("/customers/{}", row.get::<_, String>(0)))),
            None => Err(Problem::not_found(format!("no customer with external_id {ext}"))),
        };
    }
    let filter = format!(
        "($1::text IS NULL OR c.id = $1) AND ($2::text IS NULL OR c.email = $2) AND ($3::text IS NULL OR c.name = $3) \
         AND ($4::bool IS NULL OR ({ACTIVE_COUNT} > 0) = $4)"
    );
    let v = s
        .json(
            &format!(
                "SELECT jsonb_build_object('items', coalesce((SELECT jsonb_agg(x.j ORDER BY x.created_at, x.id) FROM \
                   (SELECT jsonb_build_object('id', c.id, 'external_id', c.external_id, 'name', c.name, 'email', c.email, \
                      'active_subscription_count', {ACTIVE_COUNT}) AS j, c.created_at, c.id \
                    FROM credyt.customers c WHERE {filter} ORDER BY c.created_at, c.id OFFSET $5::bigint LIMIT $6::bigint) x), '[]'), \
                 'total_count', (SELECT count(*) FROM credyt.customers c WHERE {filter}), 'limit', $6::bigint, 'offset', $5::bigint)"
            ),
            &[&q.customer_id, &q.email, &q.name, &active, &offset, &limit],
        )
        .await?;
    s.commit().await?;
    Ok(Json(decode(v)?))
}

#[utoipa::path(get, path = "/customers/{customerId}", tag = "customers",
    params(("customerId" = String, Path, description = "The customer's id")),
    responses((status = 200, body = GetCustomerResponse), (status = 404, body = Problem)), operation_id = "customers_get")]
pub async fn get(
    State(app): State<App>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Json<GetCustomerResponse>, Problem> {
    let sql = format!(
        "SELECT jsonb_build_object('id', c.id, 'external_id', c.external_id, 'name', c.name, 'email', c.email, \
           'active_subscription_count', {ACTIVE_COUNT}, 'created_at', c.created_at, 'metadata', c.metadata, \
           'subscriptions', {SUBSCRIPTIONS_JSON}) FROM credyt.customers c WHERE c.id = $1"
    );
    read_one(&app, &auth, &sql, &[&id], || format!("unknown customer {id}")).await
}

#[utoipa::path(patch, path = "/customers/{customerId}", tag = "customers", request_body = UpdateCustomerRequest,
    params(("customerId" = String, Path, description = "The customer's id")),
    responses((status = 204), (status = 404, body = Problem), (status = 409, body = Problem)), operation_id = "customers_update")]
pub async fn update(
    State(app): State<App>,
    auth: Auth,
    Path(id): Path<String>,
    Body(req): Body<UpdateCustomerRequest>,
) -> Result<StatusCode, Problem> {
    let s = auth.session(&app).await?;
    // (only a cust_ id names a customer in a path)
    if s.query_opt("SELECT 1 FROM credyt.customers WHERE id = $1", &[&id]).await?.is_none() {
        return Err(Problem::not_found(format!("unknown customer {id}")));
    }
    s.query_one("SELECT credyt.update_customer($1, $2, $3, $4)", &[&id, &req.name, &req.external_id, &req.email])
        .await?;
    s.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
