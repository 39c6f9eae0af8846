//! /customers: create, list (external_id lookups answer 303 or 404), get, update, stats,
//! and their subscriptions (create, activate or deactivate, move to another version).

use super::{decode, read, read_one, App, Auth, Body, Page, Params};
use crate::problem::Problem;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::{IntoParams, ToSchema};

#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({"name": "Ann", "external_id": "user-42", "email": "ann@example.com", "subscriptions": [{"products": [{"code": "chat", "version": "default"}]}]}))]
pub struct CreateCustomerRequest {
    pub name: String,
    pub external_id: Option<String>,
    pub email: Option<String>,
    pub metadata: Option<BTreeMap<String, String>>,
    /// Products to subscribe the customer to at once.
    pub subscriptions: Option<Vec<CreateCustomerSubscription>>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({"products": [{"code": "chat", "version": "default"}]}))]
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
        Ok((product, self.version_number(&format!("{path}.version"))?))
    }

    /// The version asked for: a number, or None for the default.
    fn version_number(&self, field: &str) -> Result<Option<i32>, Problem> {
        match &self.version {
            None => Ok(None),
            Some(VersionRef::Number(n)) => Ok(Some(*n)),
            Some(VersionRef::Named(v)) if v == "default" => Ok(None),
            Some(VersionRef::Named(v)) => {
                Err(Problem::invalid(field, format!("version {v:?} is not a number or \"default\"")))
            }
        }
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
#[schema(example = json!({"name": "Ann B."}))]
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

/// One subscription `s` (of credyt.subscriptions) as JSON.
macro_rules! subscription_json {
    () => {
        "jsonb_build_object('id', s.id, 'started_at', s.starts_at, \
           'status', CASE s.status WHEN 'cancelled' THEN 'inactive' ELSE s.status END, \
           'products', jsonb_build_array(jsonb_build_object('id', s.product_id, 'code', s.product, 'version', s.version)))"
    };
}
const SUBSCRIPTION_JSON: &str = subscription_json!();

/// The JSON of one customer's subscriptions, from credyt.subscriptions `s`.
const SUBSCRIPTIONS_JSON: &str = concat!(
    "coalesce((SELECT jsonb_agg(",
    subscription_json!(),
    " ORDER BY s.created_at, s.id) FROM credyt.subscriptions s WHERE s.customer_id = c.id), '[]')"
);

/// Active subscriptions of customer `c`.
const ACTIVE_COUNT: &str =
    "(SELECT count(*) FROM credyt.subscriptions s WHERE s.customer_id = c.id AND s.status = 'active')";

#[utoipa::path(post, path = "/customers", tag = "customers", request_body = CreateCustomerRequest,
    responses((status = 201, body = CreateCustomerResponse), (status = 404, body = Problem, description = "a subscription's product is unknown"),
              (status = 409, body = Problem), (status = 422, body = Problem)), operation_id = "customers_create")]
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
            &super::page_sql(
                &format!(
                    "jsonb_build_object('id', c.id, 'external_id', c.external_id, 'name', c.name, 'email', c.email, \
                       'active_subscription_count', {ACTIVE_COUNT})"
                ),
                &format!("FROM credyt.customers c WHERE {filter}"),
                "c.created_at, c.id",
                5,
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

/// Revenue against cost in USD over a period: fees charged in USD (and fees in custom
/// units at their rate, when the event has a USD cost), the events' USD costs.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CustomerProfitability {
    #[schema(value_type = f64)]
    pub gross_revenue: serde_json::Number,
    #[schema(value_type = f64)]
    pub total_costs: serde_json::Number,
    #[schema(value_type = f64)]
    pub net_revenue: serde_json::Number,
    /// net_revenue / gross_revenue in percent, 2 decimals (0 without revenue)
    #[schema(value_type = f64)]
    pub margin: serde_json::Number,
    pub currency: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CustomerStatsItem {
    pub id: String,
    pub external_id: Option<String>,
    pub name: String,
    pub stats: CustomerProfitability,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CustomerStatsPage {
    pub summary: CustomerProfitability,
    pub period_from: String,
    pub period_to: String,
    pub items: Vec<CustomerStatsItem>,
    pub total_count: i64,
    pub limit: i64,
    pub offset: i64,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListStats {
    #[param(minimum = 0)]
    pub offset: Option<i64>,
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    /// First UTC day (inclusive); the first of this month when not given.
    pub period_from: Option<String>,
    /// Last UTC day (inclusive); today when not given.
    pub period_to: Option<String>,
}

/// The period `p(f, t)` (UTC days) from parameters $1 and $2.
const PERIOD: &str = "(SELECT coalesce($1::text::date, date_trunc('month', now() AT TIME ZONE 'UTC')::date) AS f, \
                              coalesce($2::text::date, (now() AT TIME ZONE 'UTC')::date) AS t)";

/// The profitability of the usage rows `u` in scope of a FROM clause, as JSON.
const PROFIT_JSON: &str = "jsonb_build_object('gross_revenue', x.revenue, 'total_costs', x.costs, \
       'net_revenue', x.revenue - x.costs, \
       'margin', CASE WHEN x.revenue > 0 THEN round(100 * (x.revenue - x.costs) / x.revenue, 2) ELSE 0 END, \
       'currency', 'USD')";

/// Sums over usage events `u` (of customers `c`) in the period `p`.
const PROFIT_SUMS: &str = "SELECT coalesce(sum(CASE WHEN u.asset = 'USD' THEN u.charged \
                                                 WHEN u.cost_currency = 'USD' THEN coalesce(u.revenue, 0) ELSE 0 END), 0) AS revenue, \
                                  coalesce(sum(CASE WHEN u.cost_currency = 'USD' THEN u.cost ELSE 0 END), 0) AS costs \
                           FROM credyt.usage_event u \
                           WHERE u.occurred_at >= p.f::timestamp AT TIME ZONE 'UTC' \
                             AND u.occurred_at < (p.t + 1)::timestamp AT TIME ZONE 'UTC'";

#[utoipa::path(get, path = "/customers/stats", tag = "customers", params(ListStats),
    responses((status = 200, body = CustomerStatsPage), (status = 422, body = Problem)), operation_id = "customers_list_stats")]
pub async fn list_stats(
    State(app): State<App>,
    auth: Auth,
    Params(q): Params<ListStats>,
) -> Result<Json<CustomerStatsPage>, Problem> {
    let (offset, limit) = super::Paging::bounds(q.offset, q.limit)?;
    super::day("period_from", &q.period_from)?;
    super::day("period_to", &q.period_to)?;
    // (the page's rows read the period p of the outer query)
    let page = super::page_sql(
        &format!(
            "jsonb_build_object('id', c.id, 'external_id', c.external_id, 'name', c.name, \
               'stats', (SELECT {PROFIT_JSON} FROM ({PROFIT_SUMS} AND u.customer_id = c.id) x))"
        ),
        "FROM credyt.customers c",
        "c.created_at, c.id",
        3,
    );
    let sql = format!(
        "SELECT ({page}) || jsonb_build_object('summary', (SELECT {PROFIT_JSON} FROM ({PROFIT_SUMS}) x), \
           'period_from', p.f, 'period_to', p.t) FROM {PERIOD} p"
    );
    read(&app, &auth, &sql, &[&q.period_from, &q.period_to, &offset, &limit]).await
}

#[utoipa::path(get, path = "/customers/{customerId}/stats", tag = "customers",
    params(("customerId" = String, Path, description = "The customer's id")),
    responses((status = 200, body = CustomerProfitability), (status = 404, body = Problem)), operation_id = "customers_get_stats")]
pub async fn get_stats(
    State(app): State<App>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Json<CustomerProfitability>, Problem> {
    // (this month, as the list's default period)
    let none: Option<String> = None;
    let sql = format!(
        "SELECT (SELECT {PROFIT_JSON} FROM ({PROFIT_SUMS} AND u.customer_id = c.id) x) \
         FROM credyt.customers c, {PERIOD} p WHERE c.id = $3"
    );
    read_one(&app, &auth, &sql, &[&none, &none, &id], || format!("unknown customer {id}")).await
}

#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({"status": "inactive"}))]
pub struct UpdateCustomerSubscriptionRequest {
    /// active or inactive
    pub status: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({"version": "default"}))]
pub struct UpdateCustomerSubscriptionProductRequest {
    /// A version number, or "default".
    pub version: VersionRef,
}

#[utoipa::path(post, path = "/customers/{customerId}/subscriptions", tag = "customers", request_body = CreateCustomerSubscription,
    params(("customerId" = String, Path, description = "The customer's id")),
    responses((status = 201, body = CustomerSubscription), (status = 404, body = Problem), (status = 409, body = Problem),
              (status = 422, body = Problem)), operation_id = "customers_create_subscription")]
pub async fn create_subscription(
    State(app): State<App>,
    auth: Auth,
    Path(id): Path<String>,
    Body(req): Body<CreateCustomerSubscription>,
) -> Result<(StatusCode, Json<CustomerSubscription>), Problem> {
    if let Some(t) = req.starts_at.as_deref().filter(|t| !credyt_core::period::is_rfc3339(t)) {
        return Err(Problem::invalid("starts_at", format!("starts_at {t:?} is not an RFC 3339 timestamp")));
    }
    // A credyt subscription is one product at one version.
    let [product] = &req.products[..] else {
        return Err(Problem::invalid(
            "products",
            "a subscription here has exactly one product: create one subscription per product".into(),
        ));
    };
    let (product, version) = product.reference("products[0]")?;
    let s = auth.session(&app).await?;
    if s.query_opt("SELECT 1 FROM credyt.customers WHERE id = $1", &[&id]).await?.is_none() {
        return Err(Problem::not_found(format!("unknown customer {id}")));
    }
    let sub: String = s
        .query_one(
            "SELECT credyt.subscribe($1, $2, $3, coalesce($4::text::timestamptz, now()))",
            &[&id, &product, &version, &req.starts_at],
        )
        .await?
        .get(0);
    let v = s.json(&format!("SELECT {SUBSCRIPTION_JSON} FROM credyt.subscriptions s WHERE s.id = $1"), &[&sub]).await?;
    s.commit().await?;
    Ok((StatusCode::CREATED, Json(decode(v)?)))
}

/// The customer's subscription in the path, locked-in: 404 when it is not theirs.
async fn subscription_of(s: &crate::db::Session, customer: &str, sub: &str) -> Result<String, Problem> {
    s.query_opt("SELECT product_id FROM credyt.subscriptions WHERE id = $1 AND customer_id = $2", &[&sub, &customer])
        .await?
        .map(|r| r.get(0))
        .ok_or_else(|| Problem::not_found(format!("customer {customer} has no subscription {sub}")))
}

#[utoipa::path(patch, path = "/customers/{customerId}/subscriptions/{subscriptionId}", tag = "customers",
    request_body = UpdateCustomerSubscriptionRequest,
    params(("customerId" = String, Path), ("subscriptionId" = String, Path)),
    responses((status = 204), (status = 404, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)),
    operation_id = "customers_update_subscription")]
pub async fn update_subscription(
    State(app): State<App>,
    auth: Auth,
    Path((customer, sub)): Path<(String, String)>,
    Body(req): Body<UpdateCustomerSubscriptionRequest>,
) -> Result<StatusCode, Problem> {
    let s = auth.session(&app).await?;
    subscription_of(&s, &customer, &sub).await?;
    s.query_one("SELECT credyt.set_subscription_status($1, $2)", &[&sub, &req.status]).await?;
    s.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(patch, path = "/customers/{customerId}/subscriptions/{subscriptionId}/products/{productId}", tag = "customers",
    request_body = UpdateCustomerSubscriptionProductRequest,
    params(("customerId" = String, Path), ("subscriptionId" = String, Path), ("productId" = String, Path, description = "The product's id or code")),
    responses((status = 204), (status = 404, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)),
    operation_id = "customers_update_subscription_product")]
pub async fn update_subscription_product(
    State(app): State<App>,
    auth: Auth,
    Path((customer, sub, product)): Path<(String, String, String)>,
    Body(req): Body<UpdateCustomerSubscriptionProductRequest>,
) -> Result<StatusCode, Problem> {
    let version = SubscriptionProduct { id: None, code: None, version: Some(req.version) }.version_number("version")?;
    let s = auth.session(&app).await?;
    let subscribed = subscription_of(&s, &customer, &sub).await?;
    let same = s
        .query_opt("SELECT 1 FROM credyt.product WHERE id = $1 AND (id = $2 OR code = $2)", &[&subscribed, &product])
        .await?;
    if same.is_none() {
        return Err(Problem::not_found(format!("subscription {sub} has no product {product}")));
    }
    s.query_one("SELECT credyt.change_subscription_version($1, $2)", &[&sub, &version]).await?;
    s.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
