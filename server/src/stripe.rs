//! Stripe's API, as credyt-server calls it: form-encoded POSTs with the account's
//! secret key and an Idempotency-Key; every call has a timeout and is retried on
//! network errors, 429 and 5xx with the same key (so Stripe does it once). Callers never
//! hold a database transaction open across a call.

use serde_json::Value;
use std::time::Duration;

#[derive(Clone)]
pub struct Stripe {
    http: reqwest::Client,
    base: String,
}

/// Why a call to Stripe did not succeed.
#[derive(Debug)]
pub enum StripeError {
    /// Stripe answered and refused (4xx but 429): its message
    Refused(u16, String),
    /// no answer after every attempt (network, timeout, 429 or 5xx; logged)
    Unavailable,
}

/// Attempts per call, and the pause before each retry.
const ATTEMPTS: u32 = 3;
const BACKOFF: Duration = Duration::from_millis(300);

impl Stripe {
    pub fn new(base: &str, timeout: Duration) -> Result<Stripe, String> {
        let http = reqwest::Client::builder().timeout(timeout).build().map_err(|e| format!("stripe client: {e}"))?;
        Ok(Stripe { http, base: base.trim_end_matches('/').to_string() })
    }

    /// POST `path` (e.g. `/v1/checkout/sessions`) with `form`; the JSON object Stripe
    /// returns.
    pub async fn post(
        &self,
        key: &str,
        path: &str,
        form: &[(String, String)],
        idempotency: &str,
    ) -> Result<Value, StripeError> {
        let body = {
            let mut s = form_urlencoded::Serializer::new(String::new());
            for (k, v) in form {
                s.append_pair(k, v);
            }
            s.finish()
        };
        let mut last = String::new();
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(BACKOFF * attempt).await;
            }
            let sent = self
                .http
                .post(format!("{}{path}", self.base))
                .bearer_auth(key)
                .header("Idempotency-Key", idempotency)
                .header("Content-Type", "application/x-www-form-urlencoded")
                .header("Stripe-Version", "2024-06-20")
                .body(body.clone())
                .send()
                .await;
            let response = match sent {
                Ok(r) => r,
                Err(e) => {
                    last = format!("{path}: {}", credyt_service::log::with_sources(&e));
                    continue;
                }
            };
            let status = response.status().as_u16();
            let text = response.text().await.unwrap_or_default();
            if status == 429 || status >= 500 {
                last = format!("{path}: HTTP {status}");
                continue;
            }
            let json: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            if status >= 400 {
                let message = json["error"]["message"].as_str().unwrap_or("refused").to_string();
                return Err(StripeError::Refused(status, message));
            }
            return Ok(json);
        }
        credyt_service::log!("error", "stripe unreachable", "error" => last);
        Err(StripeError::Unavailable)
    }
}
