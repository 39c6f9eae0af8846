//! /top-ups: a checkout top-up paid through a Stripe Checkout Session (created with
//! the secret key of the Stripe connection that collects for the account), its status,
//! and Stripe's webhook, which the database verifies and applies (stripe_webhook).
//! The call to Stripe happens between two transactions, never inside one.

use super::{decode, numeric, read_one, App, Auth, Body};
use crate::db::Session;
use crate::problem::Problem;
use crate::stripe::StripeError;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TopUpDestination {
    /// The wallet account's name (`default` when not given).
    pub account_name: Option<String>,
    /// The wallet account's asset (the top-up's currency when not given).
    pub asset: Option<String>,
    /// What one unit of the asset costs in the currency (the asset's rate now when not given).
    #[schema(value_type = Option<f64>)]
    pub exchange_rate: Option<serde_json::Number>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({"customer_id": "cust_01m8…", "amount": 20.0, "currency": "USD",
    "return_url": "https://app.example.com/billing", "failure_url": "https://app.example.com/billing?failed=1"}))]
pub struct InitiateTopUpRequest {
    pub customer_id: String,
    /// In the currency's major unit, e.g. 20.00 (dollars).
    #[schema(value_type = f64)]
    pub amount: serde_json::Number,
    pub currency: String,
    /// What the customer sees on the payment page.
    pub description: Option<String>,
    pub destination: Option<TopUpDestination>,
    /// When the paid credit expires (a year after the top-up when not given).
    pub credit_expires_at: Option<String>,
    pub return_url: String,
    pub failure_url: String,
    /// Kept on the Checkout Session's metadata (keys starting `credyt_` are credyt's).
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<std::collections::BTreeMap<String, String>>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct InitiateTopUpResponse {
    pub id: String,
    /// initiated, pending, succeeded, failed or expired
    pub status: String,
    /// Where the customer pays (Stripe Checkout).
    pub redirect_url: String,
    pub created_at: String,
    pub expires_at: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct GetTopUpResponse {
    pub id: String,
    pub customer_id: String,
    /// What the customer pays, in `currency`.
    #[schema(value_type = f64)]
    pub amount: serde_json::Number,
    pub currency: String,
    pub destination: TopUpDestination,
    pub status: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct StripeWebhookResponse {
    pub received: bool,
    /// What credyt did: succeeded, failed, expired, pending, duplicate or ignored.
    pub outcome: String,
}

/// A checkout top-up asked for, through the API (a customer named) or the portal (the
/// session's customer).
pub struct CheckoutRequest {
    pub customer: Option<String>,
    pub amount: serde_json::Number,
    pub currency: String,
    pub asset: Option<String>,
    pub exchange_rate: Option<serde_json::Number>,
    pub credit_expires_at: Option<String>,
    pub account_name: Option<String>,
    pub return_url: String,
    pub failure_url: String,
    pub description: Option<String>,
    pub metadata: Option<std::collections::BTreeMap<String, String>>,
}

impl From<InitiateTopUpRequest> for CheckoutRequest {
    fn from(r: InitiateTopUpRequest) -> CheckoutRequest {
        let d = r.destination;
        CheckoutRequest {
            customer: Some(r.customer_id),
            amount: r.amount,
            currency: r.currency,
            asset: d.as_ref().and_then(|d| d.asset.clone()),
            exchange_rate: d.as_ref().and_then(|d| d.exchange_rate.clone()),
            credit_expires_at: r.credit_expires_at,
            account_name: d.and_then(|d| d.account_name),
            return_url: r.return_url,
            failure_url: r.failure_url,
            description: r.description,
            metadata: r.metadata,
        }
    }
}

/// Who asks for a top-up: an API key, or a portal session (confined to its customer).
pub trait Opener {
    /// The request's transaction, and the customer it is confined to, if any.
    fn open(&self, app: &App) -> impl std::future::Future<Output = Result<(Session, Option<String>), Problem>> + Send;
}

impl Opener for Auth {
    async fn open(&self, app: &App) -> Result<(Session, Option<String>), Problem> {
        Ok((self.session(app).await?, None))
    }
}

/// A checkout top-up as Stripe's Checkout Session needs it, and its connection.
struct Checkout {
    account: String,
    connection: String,
    key: String,
    currency: String,
    minor_units: i64,
    asset: String,
    credited: String,
}

/// The form of the Checkout Session for top-up `id` (payment mode, the card saved for
/// later off-session top-ups, credyt's ids in the metadata of the session and of its
/// PaymentIntent, which is how stripe_webhook finds the top-up).
fn session_form(id: &str, t: &Checkout, req: &CheckoutRequest) -> Vec<(String, String)> {
    let name = req.description.clone().unwrap_or_else(|| format!("Top-up: {} {}", t.credited, t.asset));
    let mut form: Vec<(String, String)> = [
        ("mode", "payment".to_string()),
        ("success_url", req.return_url.clone()),
        ("cancel_url", req.failure_url.clone()),
        ("client_reference_id", id.to_string()),
        ("customer_creation", "always".to_string()),
        ("line_items[0][quantity]", "1".to_string()),
        ("line_items[0][price_data][currency]", t.currency.to_ascii_lowercase()),
        ("line_items[0][price_data][unit_amount]", t.minor_units.to_string()),
        ("line_items[0][price_data][product_data][name]", name),
        ("payment_intent_data[setup_future_usage]", "off_session".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    // The client's metadata rides on the session (credyt's own keys win).
    for (k, v) in req.metadata.iter().flatten().filter(|(k, _)| !k.starts_with("credyt_")).take(40) {
        form.push((format!("metadata[{k}]"), v.clone()));
    }
    for prefix in ["metadata", "payment_intent_data[metadata]"] {
        for (k, v) in [("credyt_topup", id), ("credyt_account", &t.account), ("credyt_connection", &t.connection)] {
            form.push((format!("{prefix}[{k}]"), v.to_string()));
        }
    }
    form
}

/// The first transaction of a top-up: the checkout top-up recorded (initiated) and
/// what its Checkout Session needs, committed before Stripe is called.
async fn prepare(app: &App, who: &impl Opener, req: &CheckoutRequest) -> Result<(String, Checkout), Problem> {
    let (s, confined) = who.open(app).await?;
    let customer = confined.or_else(|| req.customer.clone()).unwrap_or_default();
    let id: String = s
        .query_one(
            "SELECT credyt.initiate_topup($1, $2::text::numeric, $3, $4, $5::text::numeric, \
               coalesce($6::text::timestamptz, now() + interval '1 year'), coalesce($7, 'default'), $8, $9)",
            &[
                &customer,
                &numeric(&req.amount),
                &req.currency,
                &req.asset,
                &req.exchange_rate.as_ref().map(numeric),
                &req.credit_expires_at,
                &req.account_name,
                &req.return_url,
                &req.failure_url,
            ],
        )
        .await?
        .get(0);
    let key = s.query_one("SELECT connection, secret_key FROM credyt._server_stripe_key()", &[]).await?;
    let t = s
        .query_one(
            "SELECT credyt.current_account(), payment_amount::text, currency, asset, amount::text \
             FROM credyt.topups WHERE id = $1",
            &[&id],
        )
        .await?;
    s.commit().await?;
    let currency: String = t.get(2);
    let exponent = credyt_core::fiat::minor_units(&currency).unwrap_or(2);
    let major: String = t.get(1);
    let minor = minor_units(&major, exponent).ok_or_else(|| Problem::internal(&format!("top-up amount {major}")))?;
    let checkout = Checkout {
        account: t.get(0),
        connection: key.get(0),
        key: key.get(1),
        currency,
        minor_units: minor,
        asset: t.get(3),
        credited: t.get(4),
    };
    Ok((id, checkout))
}

#[utoipa::path(post, path = "/top-ups", tag = "top-ups", request_body = InitiateTopUpRequest,
    responses((status = 201, body = InitiateTopUpResponse), (status = 404, body = Problem), (status = 409, body = Problem),
              (status = 502, body = Problem, description = "Stripe refused the Checkout Session")),
    operation_id = "top_ups_initiate")]
pub async fn initiate(
    State(app): State<App>,
    auth: Auth,
    Body(req): Body<InitiateTopUpRequest>,
) -> Result<(StatusCode, Json<InitiateTopUpResponse>), Problem> {
    Ok((StatusCode::CREATED, Json(checkout(&app, &auth, req.into()).await?)))
}

/// A checkout top-up: recorded, then its Checkout Session created at Stripe (no
/// transaction open meanwhile), then the session recorded.
pub async fn checkout(app: &App, who: &impl Opener, req: CheckoutRequest) -> Result<InitiateTopUpResponse, Problem> {
    if let Some(t) = req.credit_expires_at.as_deref().filter(|t| !credyt_core::period::is_rfc3339(t)) {
        return Err(Problem::invalid(
            "credit_expires_at",
            format!("credit_expires_at {t:?} is not an RFC 3339 timestamp"),
        ));
    }
    let (id, checkout) = prepare(app, who, &req).await?;
    let form = session_form(&id, &checkout, &req);
    let created =
        app.stripe.post(&checkout.key, "/v1/checkout/sessions", &form, &format!("credyt-{id}-checkout")).await;
    let (s, _) = who.open(app).await?;
    let session = match created {
        Ok(v) => v,
        Err(StripeError::Refused(status, message)) => {
            s.query_one("SELECT credyt.complete_topup($1, false, $2)", &[&id, &format!("stripe: {message}")]).await?;
            s.commit().await?;
            return Err(Problem::bad_gateway(format!("Stripe refused the Checkout Session ({status}): {message}")));
        }
        Err(StripeError::Unavailable) => {
            return Err(Problem::unavailable("Stripe did not answer; the top-up stays initiated"))
        }
    };
    let (sid, url) = (session["id"].as_str().unwrap_or_default(), session["url"].as_str().unwrap_or_default());
    let expires = session["expires_at"].as_i64().unwrap_or_default();
    s.query_one(
        "SELECT credyt._server_topup_session($1, $2, $3, CASE WHEN $4::bigint > 0 THEN to_timestamp($4::bigint) END)",
        &[&id, &sid, &url, &expires],
    )
    .await?;
    let v = s
        .json(
            "SELECT jsonb_build_object('id', id, 'status', status, 'redirect_url', redirect_url, 'created_at', created_at, \
               'expires_at', coalesce(session_expires_at, created_at + interval '24 hours')) FROM credyt.topups WHERE id = $1",
            &[&id],
        )
        .await?;
    s.commit().await?;
    decode(v)
}

#[utoipa::path(get, path = "/top-ups/{topUpId}", tag = "top-ups", params(("topUpId" = String, Path)),
    responses((status = 200, body = GetTopUpResponse), (status = 404, body = Problem)), operation_id = "top_ups_get")]
pub async fn get(
    State(app): State<App>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Json<GetTopUpResponse>, Problem> {
    let sql = "SELECT jsonb_build_object('id', t.id, 'customer_id', t.customer_id, \
                 'amount', coalesce(t.payment_amount, t.amount), 'currency', coalesce(t.currency, t.asset), \
                 'destination', jsonb_build_object('account_name', split_part(t.account_id, ':', 1), 'asset', t.asset, \
                   'exchange_rate', CASE WHEN t.payment_amount IS NOT NULL AND t.amount > 0 \
                                         THEN trim_scale(round(t.payment_amount / t.amount, 12)) END), \
                 'status', t.status) FROM credyt.topups t WHERE t.id = $1";
    read_one(&app, &auth, sql, &[&id], || format!("unknown top-up {id}")).await
}

#[utoipa::path(post, path = "/stripe/webhook", tag = "top-ups", security(()),
    request_body(content = String, description = "a Stripe event, exactly as Stripe sends it"),
    params(("Stripe-Signature" = String, Header, description = "t=…,v1=…")),
    responses((status = 200, body = StripeWebhookResponse), (status = 400, body = Problem, description = "a bad signature or payload")),
    operation_id = "stripe_webhook")]
pub async fn webhook(
    State(app): State<App>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<StripeWebhookResponse>, Problem> {
    let signature = headers
        .get("stripe-signature")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| Problem::bad_request("the Stripe-Signature header is missing".into()))?
        .to_string();
    let payload =
        String::from_utf8(body.to_vec()).map_err(|_| Problem::bad_request("the payload is not UTF-8".into()))?;
    let s = app.db.unauthenticated().await?;
    let outcome = match s.query_one("SELECT credyt.stripe_webhook($1, $2)", &[&payload, &signature]).await {
        Ok(row) => row.get::<_, String>(0),
        Err(p) if p.status == 422 => return Err(Problem::bad_request(p.detail.clone().unwrap_or_default())),
        Err(p) => return Err(p),
    };
    s.commit().await?;
    Ok(Json(StripeWebhookResponse { received: true, outcome }))
}

/// An amount in major units ("20.5") in minor units (2050 with 2 decimals); None when
/// it has more decimals than the currency (initiate_topup refuses those) or overflows.
pub fn minor_units(major: &str, exponent: u32) -> Option<i64> {
    let (whole, frac) = major.split_once('.').unwrap_or((major, ""));
    let frac = frac.trim_end_matches('0');
    if frac.len() > exponent as usize || !whole.chars().chain(frac.chars()).all(|c| c.is_ascii_digit()) {
        return None;
    }
    let digits = format!("{whole}{frac:0<width$}", width = exponent as usize);
    digits.parse::<i64>().ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn minor_units() {
        assert_eq!(super::minor_units("20", 2), Some(2000));
        assert_eq!(super::minor_units("20.5", 2), Some(2050));
        assert_eq!(super::minor_units("20.50", 2), Some(2050));
        assert_eq!(super::minor_units("1000", 0), Some(1000));
        assert_eq!(super::minor_units("0.015", 2), None);
        assert_eq!(super::minor_units("-1", 2), None);
    }
}
