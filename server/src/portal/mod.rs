//! The billing portal: a customer sees and funds their own wallet. POST
//! /billing-portal/sessions (an API key) makes a database grant for one customer and
//! wraps it in a signed link (HS256 JWT, 10 minutes, purpose `portal-link`); opening it
//! trades it for a session cookie (HttpOnly, SameSite, purpose `portal-session`, as long
//! as the grant) and the page. Every portal request opens its transaction with
//! credyt.authenticate_portal, which confines it to the grant's customer in the
//! database. An expired or tampered link lands on the grant's failure_url.

pub mod api;

use crate::db::Session;
use crate::problem::Problem;
use crate::routes::topups::Opener;
use crate::routes::{App, Auth, Body};
use crate::signing::{grant_named, now, Claims, COOKIE, LINK, LINK_SECS, SESSION};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({"customer_id": "cust_01m8…", "return_url": "https://app.example.com/account",
    "failure_url": "https://app.example.com/account?portal=expired"}))]
pub struct CreateSessionRequest {
    pub customer_id: String,
    pub return_url: String,
    pub failure_url: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CreateSessionResponse {
    /// The pre-authenticated portal link (valid 10 minutes).
    pub redirect_url: String,
    pub expires_at: String,
}

#[utoipa::path(post, path = "/billing-portal/sessions", tag = "billing-portal", request_body = CreateSessionRequest,
    responses((status = 200, body = CreateSessionResponse), (status = 404, body = Problem)), operation_id = "billing_portal_create_session")]
pub async fn create_session(
    State(app): State<App>,
    auth: Auth,
    Body(req): Body<CreateSessionRequest>,
) -> Result<Json<CreateSessionResponse>, Problem> {
    let s = auth.session(&app).await?;
    if s.query_opt("SELECT 1 FROM credyt.customers WHERE id = $1", &[&req.customer_id]).await?.is_none() {
        return Err(Problem::not_found(format!("unknown customer {}", req.customer_id)));
    }
    let g = s
        .query_one(
            "SELECT grant_id, secret, extract(epoch FROM expires_at)::bigint FROM credyt.create_portal_grant($1, $2, $3)",
            &[&req.customer_id, &req.return_url, &req.failure_url],
        )
        .await?;
    let exp = now() + LINK_SECS;
    let at: String = s.query_one("SELECT to_jsonb(to_timestamp($1::bigint)) #>> '{}'", &[&exp]).await?.get(0);
    s.commit().await?;
    let claims = Claims { typ: LINK.into(), gid: g.get(0), sec: g.get(1), until: g.get(2), exp };
    let token = app.portal.sign(&claims)?;
    Ok(Json(CreateSessionResponse {
        redirect_url: format!("{}/billing-portal/open?token={token}", app.portal.public_url),
        expires_at: at,
    }))
}

#[derive(Deserialize)]
pub struct OpenQuery {
    token: Option<String>,
}

/// Opens a portal link: a session cookie and the page, or the grant's failure_url.
pub async fn open(State(app): State<App>, Query(q): Query<OpenQuery>) -> Response {
    let token = q.token.unwrap_or_default();
    if let Some(link) = app.portal.verify(&token, LINK) {
        let session = Claims { typ: SESSION.into(), exp: link.until, ..link };
        if let Ok(cookie) = app.portal.sign(&session) {
            let secure = if app.portal.secure() { "; Secure; SameSite=None" } else { "; SameSite=Lax" };
            let max_age = (session.exp - now()).max(0);
            let set = format!("{COOKIE}={cookie}; HttpOnly; Path=/portal; Max-Age={max_age}{secure}");
            // The session also travels in the fragment (never sent to a server, dropped from
            // the address at once): an embedded portal keeps it in sessionStorage, for
            // browsers that keep third-party cookies from iframes.
            let to = format!("/portal#session={cookie}");
            return (StatusCode::SEE_OTHER, [(header::SET_COOKIE, set), (header::LOCATION, to)]).into_response();
        }
    }
    // (the grant a bad link names says where it goes; nothing else of it is revealed)
    let failure = match grant_named(&token) {
        Some((gid, sec)) => failure_url(&app, &gid, &sec).await,
        None => None,
    };
    match failure {
        Some(url) => (StatusCode::SEE_OTHER, [(header::LOCATION, url)]).into_response(),
        None => (StatusCode::BAD_REQUEST, Html(page_message("This billing link is not valid."))).into_response(),
    }
}

async fn failure_url(app: &App, gid: &str, sec: &str) -> Option<String> {
    let s = app.db.unauthenticated().await.ok()?;
    let url =
        s.query_one("SELECT credyt.portal_failure_url($1, $2)", &[&gid, &sec]).await.ok()?.get::<_, Option<String>>(0);
    let _ = s.commit().await;
    url
}

fn page_message(text: &str) -> String {
    format!("<!doctype html><html lang=\"en\"><meta charset=\"utf-8\"><title>Billing</title><p>{text}</p></html>")
}

/// The portal session of a request (its cookie), verified.
pub struct PortalSession {
    gid: String,
    sec: String,
}

impl PortalSession {
    /// From the session cookie, or `Authorization: Bearer` (what the page sends when it
    /// holds the session itself), or `query` (the live stream's `?session=`).
    pub fn from_headers(app: &App, headers: &HeaderMap) -> Option<PortalSession> {
        PortalSession::from_request(app, headers, None)
    }

    pub fn from_request(app: &App, headers: &HeaderMap, query: Option<&str>) -> Option<PortalSession> {
        let cookie = headers.get(header::COOKIE).and_then(|v| v.to_str().ok()).and_then(|cs| {
            cs.split(';').find_map(|c| c.trim().strip_prefix(&format!("{COOKIE}=")).map(str::to_string))
        });
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").map(str::to_string));
        [bearer, query.map(str::to_string), cookie].into_iter().flatten().find_map(|token| {
            let c = app.portal.verify(&token, SESSION)?;
            Some(PortalSession { gid: c.gid, sec: c.sec })
        })
    }

    /// The request's transaction, confined in the database to the session's customer:
    /// (the session, the customer's id, its return_url).
    pub async fn open(&self, app: &App) -> Result<(Session, String, String), Problem> {
        let s = app.db.unauthenticated().await?;
        let row = s
            .query_one(
                "SELECT customer_id, return_url FROM credyt.authenticate_portal($1, $2)",
                &[&self.gid, &self.sec],
            )
            .await?;
        Ok((s, row.get(0), row.get(1)))
    }
}

impl Opener for PortalSession {
    async fn open(&self, app: &App) -> Result<(Session, Option<String>), Problem> {
        let (s, customer, _) = PortalSession::open(self, app).await?;
        Ok((s, Some(customer)))
    }
}
