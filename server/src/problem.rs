//! Errors as RFC 7807 problem+json: a CY SQLSTATE maps to its HTTP status (CY400 is
//! 422 with an `errors` map by field), PostgreSQL's own input errors to 422, anything
//! else to 500 with nothing of the internals in the body.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use std::collections::BTreeMap;
use utoipa::ToSchema;

/// A problem (RFC 7807), boxed: it travels in every `Err`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(transparent)]
pub struct Problem(Box<ProblemBody>);

impl std::ops::Deref for Problem {
    type Target = ProblemBody;
    fn deref(&self) -> &ProblemBody {
        &self.0
    }
}

impl std::ops::DerefMut for Problem {
    fn deref_mut(&mut self) -> &mut ProblemBody {
        &mut self.0
    }
}

/// The body of a problem. `errors` (on 422) names the fields at fault.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProblemBody {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<BTreeMap<String, Vec<String>>>,
    /// The CY code, when the extension raised one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(skip)]
    pub location: Option<String>,
}

impl Problem {
    pub fn new(status: StatusCode, title: &str, detail: Option<String>) -> Problem {
        Problem(Box::new(ProblemBody {
            kind: format!("https://credyt.dev/problems/{}", status.as_u16()),
            title: title.to_string(),
            status: status.as_u16(),
            detail,
            errors: None,
            code: None,
            location: None,
        }))
    }

    pub fn unauthorized() -> Problem {
        Problem::new(StatusCode::UNAUTHORIZED, "Unauthorized", Some("a valid X-CREDYT-API-KEY is required".into()))
    }

    pub fn not_found(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::NOT_FOUND, "Not Found", Some(detail.into()))
    }

    pub fn bad_request(detail: String) -> Problem {
        Problem::new(StatusCode::BAD_REQUEST, "Bad Request", Some(detail))
    }

    pub fn bad_gateway(detail: String) -> Problem {
        Problem::new(StatusCode::BAD_GATEWAY, "Bad Gateway", Some(detail))
    }

    pub fn conflict(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::CONFLICT, "Conflict", Some(detail.into()))
    }

    pub fn unavailable(detail: &str) -> Problem {
        Problem::new(StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable", Some(detail.into()))
    }

    pub fn internal(detail: &str) -> Problem {
        credyt_service::log!("error", "internal error", "error" => detail);
        Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error", None)
    }

    /// 422 for a request body or query that does not parse, naming the field.
    pub fn invalid(field: &str, message: String) -> Problem {
        let mut p = Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "Validation failed", Some(message.clone()));
        p.errors = Some(BTreeMap::from([(field.to_string(), vec![message])]));
        p
    }

    /// A 303 to `location` (GET /customers?external_id=...).
    pub fn see_other(location: String) -> Problem {
        let mut p = Problem::new(StatusCode::SEE_OTHER, "See Other", None);
        p.location = Some(location);
        p
    }

    /// The HTTP form of a database error: the extension's CY codes by meaning.
    pub fn from_db(e: tokio_postgres::Error) -> Problem {
        let Some(db) = e.as_db_error() else {
            // A lost connection is the database's unavailability; anything else (a row
            // count or a type the code did not expect) is a bug here.
            let io = std::error::Error::source(&e).is_some_and(|s| s.is::<std::io::Error>());
            if e.is_closed() || io {
                credyt_service::log!("error", "database error", "error" => credyt_service::log::with_sources(&e));
                return Problem::unavailable("the database connection failed");
            }
            return Problem::internal(&credyt_service::log::with_sources(&e));
        };
        let code = db.code().code();
        let message = db.message().to_string();
        let status = match code {
            "CY400" => StatusCode::UNPROCESSABLE_ENTITY,
            "CY401" => return Problem::unauthorized(),
            "CY402" => StatusCode::PAYMENT_REQUIRED,
            "CY403" => StatusCode::FORBIDDEN,
            "CY404" => StatusCode::NOT_FOUND,
            "CY409" => StatusCode::CONFLICT,
            "CY410" => StatusCode::GONE,
            "CY429" => StatusCode::TOO_MANY_REQUESTS,
            // invalid input of PostgreSQL's own types (a malformed number or timestamp)
            c if c.starts_with("22") => StatusCode::UNPROCESSABLE_ENTITY,
            _ => return Problem::internal(&format!("{code}: {message}")),
        };
        let title = status.canonical_reason().unwrap_or("Error");
        let detail = match db.detail() {
            Some(d) if status != StatusCode::FORBIDDEN => format!("{message} ({d})"),
            _ => message.clone(),
        };
        let mut p = Problem::new(status, title, Some(detail));
        p.code = code.starts_with("CY").then(|| code.to_string());
        if status == StatusCode::UNPROCESSABLE_ENTITY {
            let field = field_of(&message);
            p.errors = Some(BTreeMap::from([(field, vec![message])]));
        }
        p
    }
}

/// The field an error message is about: its first word, the extension's convention
/// ("amount must be positive", "events[3]: data.tokens ..."), else "body".
fn field_of(message: &str) -> String {
    // "invalid price JSON: prices[0].pricing[0].unit_price ..." names its field after the colon
    let message = ["invalid price JSON: ", "invalid entitlements JSON: "]
        .iter()
        .find_map(|p| message.strip_prefix(p))
        .unwrap_or(message);
    let mut words = message.split([' ', ':']);
    let first = match words.next().unwrap_or("") {
        "unknown" => words.next().unwrap_or(""),
        w => w,
    };
    if !first.is_empty() && first.chars().all(|c| c.is_ascii_alphanumeric() || "_.[]".contains(c)) {
        first.to_string()
    } else {
        "body".to_string()
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if let Some(location) = &self.location {
            return (status, [(header::LOCATION, location.clone())]).into_response();
        }
        let body = serde_json::to_string(&self).unwrap_or_default();
        (status, [(header::CONTENT_TYPE, "application/problem+json")], body).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_field_the_message_starts_with() {
        assert_eq!(field_of("amount must be positive"), "amount");
        assert_eq!(field_of("events[3]: data.tokens must be a number"), "events[3]");
        assert_eq!(field_of("unknown reason \"x\""), "reason");
        assert_eq!(field_of("'x' is bad"), "body");
        assert_eq!(
            field_of("invalid price JSON: prices[0].pricing[0].values[1].unit_price must not be negative"),
            "prices[0].pricing[0].values[1].unit_price"
        );
    }
}
