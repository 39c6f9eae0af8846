//! The routes of Credyt's API (the paths, fields and status codes of the official
//! `credyt-api` SDK), each onto the SQL API in one transaction.

pub mod accounts;
pub mod assets;
pub mod customers;
pub mod events;
pub mod products;
pub mod topups;
pub mod vendors;
pub mod wallet;
pub mod webhooks;

use crate::db::{Credentials, Db, Session};
use crate::problem::Problem;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::Json;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio_postgres::types::ToSql;
use utoipa::{IntoParams, ToSchema};

/// What every route shares: the database, Stripe's API, the portal's signing key.
#[derive(Clone)]
pub struct App {
    pub db: Db,
    pub stripe: crate::stripe::Stripe,
    pub portal: crate::signing::Portal,
}

/// The request's credentials (X-CREDYT-API-KEY, X-CREDYT-ACCOUNT). Missing key: 401.
pub struct Auth(pub Credentials);

impl<S: Send + Sync> FromRequestParts<S> for Auth {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Problem> {
        let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
        let key = header("x-credyt-api-key").filter(|k| !k.is_empty()).ok_or_else(Problem::unauthorized)?;
        let account = header("x-credyt-account").filter(|a| !a.is_empty()).map(str::to_string);
        Ok(Auth(Credentials { key: key.to_string(), account }))
    }
}

impl Auth {
    /// The request's transaction, authenticated.
    pub async fn session(&self, app: &App) -> Result<Session, Problem> {
        app.db.session(&self.0).await
    }
}

/// A JSON body; one that does not parse is 422 naming the field.
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Problem> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Body(v)),
            Err(JsonRejection::JsonDataError(e)) => {
                let text = e.body_text();
                Err(Problem::invalid(&field_in(&text), text))
            }
            Err(e) => Err(Problem::invalid("body", e.body_text())),
        }
    }
}

/// Query parameters; ones that do not parse are 422.
pub struct Params<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Params<T> {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(Params(v)),
            Err(QueryRejection::FailedToDeserializeQueryString(e)) => Err(Problem::invalid("query", e.body_text())),
            Err(e) => Err(Problem::invalid("query", e.body_text())),
        }
    }
}

/// The field serde names in an error: "missing field `name`", "events[0].id: invalid
/// type ...", "events[0]: missing field `id`" (axum puts its own sentence first).
fn field_in(text: &str) -> String {
    let text = text.split_once("target type: ").map_or(text, |(_, rest)| rest);
    let (path, rest) = match text.split_once(": ") {
        Some((p, r)) if !p.contains(' ') => (Some(p), r),
        _ => (None, text),
    };
    let missing = rest.strip_prefix("missing field `").and_then(|r| r.split_once('`')).map(|(f, _)| f);
    match (path, missing) {
        (Some(p), Some(f)) => format!("{p}.{f}"),
        (None, Some(f)) => f.to_string(),
        (Some(p), None) => p.to_string(),
        (None, None) => "body".to_string(),
    }
}

/// Offset pagination, as Credyt: `offset` (default 0) and `limit` (default 20, at
/// most 100).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Paging {
    /// Items to skip.
    #[param(minimum = 0)]
    pub offset: Option<i64>,
    /// Items to return (1 to 100).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
}

impl Paging {
    pub fn bounds(offset: Option<i64>, limit: Option<i64>) -> Result<(i64, i64), Problem> {
        let offset = offset.unwrap_or(0);
        let limit = limit.unwrap_or(20);
        if offset < 0 {
            return Err(Problem::invalid("offset", "offset must not be negative".into()));
        }
        if !(1..=100).contains(&limit) {
            return Err(Problem::invalid("limit", "limit must be from 1 to 100".into()));
        }
        Ok((offset, limit))
    }
}

/// An optional UTC day (`2026-12-01`) from the query, or 422 naming it.
pub fn day(field: &str, d: &Option<String>) -> Result<(), Problem> {
    match d.as_deref() {
        Some(d) if d.len() != 10 || !credyt_core::period::is_rfc3339(&format!("{d}T00:00:00Z")) => {
            Err(Problem::invalid(field, format!("{field} must be a date such as 2026-12-01")))
        }
        _ => Ok(()),
    }
}

/// The SQL of one offset page as a jsonb `{items, total_count, limit, offset}`: the
/// JSON `item` of each row of `from` (a FROM clause with its WHERE), in `order`;
/// `$n` is the offset and `$n+1` the limit.
pub fn page_sql(item: &str, from: &str, order: &str, n: usize) -> String {
    let (offset, limit) = (n, n + 1);
    format!(
        "SELECT jsonb_build_object('items', coalesce((SELECT jsonb_agg(x.j ORDER BY x.k) FROM \
           (SELECT {item} AS j, row_number() OVER (ORDER BY {order}) AS k {from} \
            ORDER BY {order} OFFSET ${offset}::bigint LIMIT ${limit}::bigint) x), '[]'), \
         'total_count', (SELECT count(*) {from}), 'limit', ${limit}::bigint, 'offset', ${offset}::bigint)"
    )
}

/// A page of items.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub total_count: i64,
    pub limit: i64,
    pub offset: i64,
}

/// A row's jsonb column decoded into a response type (the SQL names the fields; a
/// mismatch is a bug, reported as 500).
pub fn decode<T: DeserializeOwned>(v: serde_json::Value) -> Result<T, Problem> {
    serde_json::from_value(v).map_err(|e| Problem::internal(&format!("response shape: {e}")))
}

/// A read of one jsonb value (a page, an object) in the request's transaction, decoded
/// into the response type.
pub async fn read<T: DeserializeOwned>(
    app: &App,
    auth: &Auth,
    sql: &str,
    args: &[&(dyn ToSql + Sync)],
) -> Result<Json<T>, Problem> {
    let s = auth.session(app).await?;
    let v = s.json(sql, args).await?;
    s.commit().await?;
    Ok(Json(decode(v)?))
}

/// A read of one jsonb row that may be absent: the row decoded, or 404 with `missing`.
pub async fn read_one<T: DeserializeOwned>(
    app: &App,
    auth: &Auth,
    sql: &str,
    args: &[&(dyn ToSql + Sync)],
    missing: impl FnOnce() -> String,
) -> Result<Json<T>, Problem> {
    let s = auth.session(app).await?;
    let row = s.query_opt(sql, args).await?;
    s.commit().await?;
    let row = row.ok_or_else(|| Problem::not_found(missing()))?;
    Ok(Json(decode(row.try_get(0).map_err(Problem::from_db)?)?))
}

/// A number from a request, as text for a numeric parameter: exact, never through f64.
pub fn numeric(n: &serde_json::Number) -> String {
    n.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_errors_name_their_field() {
        assert_eq!(
            field_in(
                "Failed to deserialize the JSON body into the target type: missing field `name` at line 1 column 2"
            ),
            "name"
        );
        assert_eq!(field_in("events[0].id: invalid type: integer `3`, expected a string"), "events[0].id");
        assert_eq!(field_in("events[0]: missing field `id` at line 1 column 9"), "events[0].id");
        assert_eq!(field_in("expected value at line 1 column 1"), "body");
    }
}
