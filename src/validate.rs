//! Argument checks shared by every API function. Each returns CY400 naming the
//! parameter, before anything is written.

use crate::error::{CyError, Result};
use credyt_core::ids::check_client_key;
use pgrx::datum::TimestampWithTimeZone;

/// A required human-readable name: 1 to 200 characters.
pub fn name(param: &str, v: Option<String>) -> Result<String> {
    let v = required(param, v)?;
    let n = v.trim().chars().count();
    if n == 0 || n > 200 {
        return Err(
            CyError::invalid(format!("{param} must be 1 to 200 characters")).detail(format!("got {n} characters"))
        );
    }
    Ok(v)
}

pub fn required<T>(param: &str, v: Option<T>) -> Result<T> {
    v.ok_or_else(|| CyError::invalid(format!("{param} must not be NULL")))
}

/// A client-supplied idempotency key or external id: 1 to 255 characters.
pub fn key(param: &str, v: Option<String>) -> Result<String> {
    let v = required(param, v)?;
    check_client_key(&v)
        .map_err(|why| CyError::invalid(format!("{param} {why}")).hint("keys are free text of 1 to 255 characters"))?;
    Ok(v)
}

pub fn optional_key(param: &str, v: Option<String>) -> Result<Option<String>> {
    v.map(|k| key(param, Some(k))).transpose()
}

/// Metadata must be a JSON object (NULL means empty) of reasonable size.
pub fn metadata(v: Option<crate::json::Json>) -> Result<serde_json::Value> {
    let value = crate::json::optional("metadata", v, crate::json::MAX_BYTES)?.unwrap_or_else(|| serde_json::json!({}));
    if !value.is_object() {
        return Err(CyError::invalid("metadata must be a JSON object").hint("pass e.g. '{\"plan\": \"pro\"}'::jsonb"));
    }
    if value.to_string().len() > 16 * 1024 {
        return Err(CyError::invalid("metadata must be at most 16 KiB"));
    }
    Ok(value)
}

/// Free text such as a description: at most 1,000 characters.
pub fn optional_text(param: &str, v: Option<String>) -> Result<Option<String>> {
    if let Some(s) = &v {
        if s.chars().count() > 1000 {
            return Err(CyError::invalid(format!("{param} must be at most 1000 characters")));
        }
    }
    Ok(v)
}

/// An optional http(s) URL of at most 2048 characters (where a customer is sent back).
pub fn optional_url(param: &str, v: Option<String>) -> Result<Option<String>> {
    if v.as_deref().is_some_and(|u| !(u.starts_with("https://") || u.starts_with("http://")) || u.len() > 2048) {
        return Err(CyError::invalid(format!("{param} must be an http(s) URL of at most 2048 characters")));
    }
    Ok(v)
}

/// A wallet account name: lowercase letters, digits, '_' and '-', 1 to 64 characters.
pub fn wallet_name(v: Option<String>) -> Result<String> {
    let v = v.unwrap_or_else(|| "default".to_string());
    let ok = !v.is_empty()
        && v.len() <= 64
        && v.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if !ok {
        return Err(CyError::invalid(format!("account_name {v:?} is not a valid wallet account name"))
            .hint("use 1 to 64 lowercase letters, digits, '_' or '-', e.g. 'default' or 'reserve'"));
    }
    Ok(v)
}

/// A timestamp argument, which must be finite when given.
pub fn finite(param: &str, t: Option<TimestampWithTimeZone>) -> Result<Option<TimestampWithTimeZone>> {
    match t {
        Some(t) if !t.is_finite() => Err(CyError::invalid(format!("{param} must be a finite timestamp"))),
        t => Ok(t),
    }
}

/// A timestamp argument that must be given, and finite.
pub fn required_time(param: &str, t: Option<TimestampWithTimeZone>) -> Result<TimestampWithTimeZone> {
    let t = required(param, t)?;
    finite(param, Some(t)).map(|_| t)
}

/// An argument from a fixed vocabulary (an enum's `parse`); `names` lists it for the hint.
pub fn vocab<T>(param: &str, v: Option<String>, parse: impl Fn(&str) -> Option<T>, names: &str) -> Result<T> {
    let v = required(param, v)?;
    parse(&v).ok_or_else(|| CyError::invalid(format!("unknown {param} {v:?}")).hint(names.to_string()))
}

/// A credit's expires_at must be later than its effective_at (now when not given) and
/// than now (the transaction's start, as SQL's now()).
pub fn expiry_after(
    effective_at: Option<TimestampWithTimeZone>,
    expires_at: Option<TimestampWithTimeZone>,
) -> Result<()> {
    let Some(exp) = expires_at else { return Ok(()) };
    let now = pgrx::datetime::now().into_inner();
    if exp.into_inner() <= effective_at.map_or(now, |t| t.into_inner()).max(now) {
        return Err(CyError::invalid("expires_at must be later than effective_at and now"));
    }
    Ok(())
}
