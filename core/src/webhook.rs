//! Webhooks (SPEC §10), the parts with no Postgres and no network in them: endpoint
//! secrets, the two signatures, topic filters, URL rules and the retry schedule.
//! The extension uses them to create and route endpoints; the worker to sign and to
//! decide when to try again.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use std::time::Duration;

/// Standard Webhooks secrets: this prefix, then the key in base64.
pub const SECRET_PREFIX: &str = "whsec_";

/// Bytes of key in a secret credyt generates (Standard Webhooks asks for 24 to 64).
pub const SECRET_BYTES: usize = 32;

/// Every event type credyt writes or the contract names, plus the test event: the
/// topics of events. Topic filters are checked against this list, so a misspelt topic
/// is an error rather than an endpoint that silently never fires.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Topic {
    AutoTopupFailed,
    AutoTopupRequested,
    AutoTopupSucceeded,
    BalanceThresholdHit,
    GrantExpired,
    GrantIssued,
    HoldExpired,
    OutcomeReversed,
    SeatCharged,
    SubscriptionActivated,
    UsageLimitExceeded,
    WebhookTest,
}

impl Topic {
    pub const ALL: [Topic; 12] = [
        Topic::AutoTopupFailed,
        Topic::AutoTopupRequested,
        Topic::AutoTopupSucceeded,
        Topic::BalanceThresholdHit,
        Topic::GrantExpired,
        Topic::GrantIssued,
        Topic::HoldExpired,
        Topic::OutcomeReversed,
        Topic::SeatCharged,
        Topic::SubscriptionActivated,
        Topic::UsageLimitExceeded,
        Topic::WebhookTest,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Topic::AutoTopupFailed => "auto_topup.failed",
            Topic::AutoTopupRequested => "auto_topup.requested",
            Topic::AutoTopupSucceeded => "auto_topup.succeeded",
            Topic::BalanceThresholdHit => "balance_threshold_hit",
            Topic::GrantExpired => "grant.expired",
            Topic::GrantIssued => "grant.issued",
            Topic::HoldExpired => "hold.expired",
            Topic::OutcomeReversed => "outcome.reversed",
            Topic::SeatCharged => "seat.charged",
            Topic::SubscriptionActivated => "subscription.activated",
            Topic::UsageLimitExceeded => "usage.limit_exceeded",
            Topic::WebhookTest => "webhook.test",
        }
    }

    pub fn parse(s: &str) -> Option<Topic> {
        Topic::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

/// What one delivery attempt came to, as the worker records it
/// (`credyt._worker_finish`, whose statement names the same three).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryOutcome {
    /// The endpoint answered 2xx.
    Delivered,
    /// It did not; another attempt follows the retry schedule.
    Retry,
    /// It did not, and the schedule is spent.
    Failed,
}

impl DeliveryOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryOutcome::Delivered => "delivered",
            DeliveryOutcome::Retry => "retry",
            DeliveryOutcome::Failed => "failed",
        }
    }
}

/// The retry schedule of SPEC §10: the waits before the 2nd … 8th attempt. After the
/// 8th failed attempt the delivery is failed.
pub const RETRY_SCHEDULE: &[Duration] = &[
    Duration::from_secs(5),
    Duration::from_secs(5 * 60),
    Duration::from_secs(30 * 60),
    Duration::from_secs(2 * 3600),
    Duration::from_secs(5 * 3600),
    Duration::from_secs(10 * 3600),
    Duration::from_secs(10 * 3600),
];

/// A secret for `key` (the random bytes), as `whsec_<base64>`.
pub fn format_secret(key: &[u8]) -> String {
    format!("{SECRET_PREFIX}{}", B64.encode(key))
}

/// The key bytes of a `whsec_…` secret.
pub fn secret_key(secret: &str) -> Result<Vec<u8>, String> {
    let b64 =
        secret.strip_prefix(SECRET_PREFIX).ok_or_else(|| format!("a webhook secret starts with {SECRET_PREFIX}"))?;
    let key = B64.decode(b64).map_err(|e| format!("a webhook secret is {SECRET_PREFIX} then base64: {e}"))?;
    if !(24..=64).contains(&key.len()) {
        return Err(format!("a webhook secret's key is 24 to 64 bytes, not {}", key.len()));
    }
    Ok(key)
}

pub(crate) fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC takes a key of any length, so new_from_slice cannot fail.
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC accepts any key length");
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

/// The Standard Webhooks signature of one message: `v1,<base64 HMAC-SHA256 of
/// "id.timestamp.body">`.
pub fn standard_signature(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    let t = timestamp.to_string();
    let mac = hmac_sha256(key, &[id.as_bytes(), b".", t.as_bytes(), b".", body]);
    format!("v1,{}", B64.encode(mac))
}

/// Credyt's signature: hex HMAC-SHA256 of "timestamp.body", with the same key as
/// the Standard Webhooks signature.
pub fn credyt_signature(key: &[u8], timestamp: i64, body: &[u8]) -> String {
    let t = timestamp.to_string();
    let mac = hmac_sha256(key, &[t.as_bytes(), b".", body]);
    let mut hex = String::with_capacity(64);
    for b in mac {
        hex.push_str(&format!("{b:02x}"));
    }
    hex
}

/// The signature headers of one delivery, signed with every key in `keys` (two
/// while a rotated-out secret is still honoured): (`webhook-signature`,
/// `Credyt-Signature`).
pub fn signature_headers(keys: &[Vec<u8>], id: &str, timestamp: i64, body: &[u8]) -> (String, String) {
    let standard: Vec<String> = keys.iter().map(|k| standard_signature(k, id, timestamp, body)).collect();
    let mut credyt = format!("t={timestamp}");
    for k in keys {
        credyt.push_str(",v0=");
        credyt.push_str(&credyt_signature(k, timestamp, body));
    }
    (standard.join(" "), credyt)
}

/// Checks one topic filter: an event type, `*`, or a prefix ending in `.*` that
/// some event type has (`grant.*`).
pub fn check_topic(topic: &str) -> Result<(), String> {
    if topic == "*" || Topic::parse(topic).is_some() {
        return Ok(());
    }
    if let Some(prefix) = topic.strip_suffix(".*") {
        if Topic::ALL.iter().any(|t| t.as_str().strip_prefix(prefix).is_some_and(|rest| rest.starts_with('.'))) {
            return Ok(());
        }
    }
    let types: Vec<&str> = Topic::ALL.iter().map(|t| t.as_str()).collect();
    Err(format!(
        "unknown topic {topic:?}: a topic is '*', an event type, or a prefix such as 'grant.*'; event types: {}",
        types.join(", ")
    ))
}

/// True when `event_type` matches one of `topics`.
pub fn topic_matches(topics: &[String], event_type: &str) -> bool {
    topics.iter().any(|t| {
        t == "*"
            || t == event_type
            || t.strip_suffix('*').is_some_and(|prefix| prefix.ends_with('.') && event_type.starts_with(prefix))
    })
}

/// Checks an endpoint URL: http or https, a host, no credentials, no spaces or
/// control characters, at most 2,048 characters.
pub fn check_url(url: &str) -> Result<(), String> {
    if url.len() > 2048 {
        return Err("url is longer than 2048 characters".into());
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("url must not contain spaces or control characters".into());
    }
    let lower = url.to_ascii_lowercase();
    let rest = lower
        .strip_prefix("https://")
        .or_else(|| lower.strip_prefix("http://"))
        .ok_or_else(|| format!("url must start with http:// or https://, got {url:?}"))?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.contains('@') {
        return Err("url must not carry credentials (user:password@)".into());
    }
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        authority.rsplit_once(':').map_or(authority, |(h, _)| h)
    };
    if host.is_empty() {
        return Err(format!("url has no host: {url:?}"));
    }
    if !authority.starts_with('[') {
        if let Some((_, port)) = authority.rsplit_once(':') {
            if port.parse::<u16>().ok().filter(|p| *p > 0).is_none() {
                return Err(format!("url has an invalid port: {url:?}"));
            }
        }
    }
    Ok(())
}

/// The host of a URL that [`check_url`] accepted, without brackets around an IPv6
/// literal, lowercased.
pub fn url_host(url: &str) -> Option<String> {
    let lower = url.to_ascii_lowercase();
    let rest = lower.strip_prefix("https://").or_else(|| lower.strip_prefix("http://"))?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    (!host.is_empty()).then(|| host.to_string())
}

/// Addresses a webhook must never reach (server-side request forgery from where the
/// worker runs): loopback, private (RFC 1918, IPv6 unique-local), carrier-grade NAT,
/// link-local (which holds the cloud metadata service, 169.254.169.254), unspecified,
/// broadcast, multicast, and the IPv4 addresses IPv6 forms embed.
pub fn is_private(ip: std::net::IpAddr) -> bool {
    use std::net::IpAddr;
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || o[0] == 0
                || (o[0] == 100 && (64..128).contains(&o[1])) // 100.64.0.0/10, shared address space
                || (o[0] == 192 && o[1] == 0 && o[2] == 0) // 192.0.0.0/24, IETF protocol assignments
                || o[0] >= 240 // reserved
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_private(IpAddr::V4(v4));
            }
            let s = v6.segments();
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // fc00::/7 unique local
                || (s[0] & 0xffc0) == 0xfe80 // fe80::/10 link local
                || (s[0] == 0 && s[1] == 0 && s[2] == 0 && s[3] == 0 && s[4] == 0 && s[5] == 0) // ::a.b.c.d (deprecated compat)
                || (s[0] == 0x64 && s[1] == 0xff9b) // 64:ff9b::/96 NAT64 reaches IPv4 behind it
                || (s[0] == 0x2002) // 6to4 embeds an IPv4 address
        }
    }
}

/// Whether a host name is one that always means this machine or its private network,
/// whatever DNS says (`localhost`, `*.localhost`, `*.internal`, `*.local`).
pub fn is_private_name(host: &str) -> bool {
    let h = host.trim_end_matches('.');
    h == "localhost" || [".localhost", ".internal", ".local", ".localdomain"].iter().any(|s| h.ends_with(s))
}

/// Checks the host of an accepted URL against [`is_private`] and [`is_private_name`],
/// given the addresses it resolves to (none for an IP literal, which is checked
/// itself). Err names what is refused.
pub fn check_destination(host: &str, resolved: &[std::net::IpAddr]) -> Result<(), String> {
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return if is_private(ip) { Err(format!("url points at {ip}, a private or loopback address")) } else { Ok(()) };
    }
    if is_private_name(host) {
        return Err(format!("url points at {host:?}, a name for this machine or a private network"));
    }
    match resolved.iter().find(|ip| is_private(**ip)) {
        Some(ip) => Err(format!("url's host {host:?} resolves to {ip}, a private or loopback address")),
        None => Ok(()),
    }
}

/// Parses a schedule such as `5s,5m,30m,2h` (units ms, s, m, h).
pub fn parse_schedule(text: &str) -> Result<Vec<Duration>, String> {
    text.split(',').map(|s| parse_duration(s.trim())).collect()
}

/// Parses one duration: a whole number with the unit ms, s, m or h.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().map_err(|_| format!("{s:?} is not a duration such as 500ms, 5s, 5m or 2h"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        "h" => Ok(Duration::from_secs(n * 3600)),
        _ => Err(format!("{s:?} is not a duration such as 500ms, 5s, 5m or 2h")),
    }
}

/// What happens after failed attempt number `attempts` (1-based) under `schedule`:
/// the wait before the next attempt, or None when the delivery has failed for good.
pub fn next_retry(schedule: &[Duration], attempts: i32) -> Option<Duration> {
    usize::try_from(attempts).ok().and_then(|a| a.checked_sub(1)).and_then(|i| schedule.get(i)).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test vector published with the Standard Webhooks libraries.
    #[test]
    fn standard_webhooks_test_vector() {
        let key = secret_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let sig = standard_signature(&key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, br#"{"test": 2432232314}"#);
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    /// RFC 4231 test case 2 (key "Jefe") checks the HMAC; the framing is "t.body".
    #[test]
    fn credyt_signature_is_hex_hmac_of_timestamp_dot_body() {
        let hex = |mac: [u8; 32]| mac.iter().map(|b| format!("{b:02x}")).collect::<String>();
        assert_eq!(
            hex(hmac_sha256(b"Jefe", &[b"what do ya want ", b"for nothing?"])),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(credyt_signature(b"k", 12, b"{}"), hex(hmac_sha256(b"k", &[b"12.{}"])));
    }

    #[test]
    fn headers_carry_one_signature_per_key() {
        let keys = vec![vec![1u8; 32], vec![2u8; 32]];
        let (standard, credyt) = signature_headers(&keys, "whe_1", 1700000000, b"{}");
        assert_eq!(standard.split(' ').count(), 2);
        assert!(standard.split(' ').all(|s| s.starts_with("v1,")));
        assert!(credyt.starts_with("t=1700000000,v0="));
        assert_eq!(credyt.matches(",v0=").count(), 2);
    }

    #[test]
    fn secrets_round_trip_and_bad_ones_are_refused() {
        let s = format_secret(&[7u8; SECRET_BYTES]);
        assert!(s.starts_with("whsec_"));
        assert_eq!(secret_key(&s).unwrap(), vec![7u8; SECRET_BYTES]);
        assert!(secret_key("sk_abc").is_err());
        assert!(secret_key("whsec_!!").is_err());
        assert!(secret_key(&format_secret(&[1u8; 8])).is_err());
    }

    #[test]
    fn topics() {
        for ok in ["*", "grant.*", "auto_topup.*", "hold.expired", "webhook.test", "balance_threshold_hit"] {
            assert!(check_topic(ok).is_ok(), "{ok}");
        }
        for bad in ["", "grant", "grant.", "gra*", "balance_treshold_hit", "nope.*", "*.expired", "grant.issued.*"] {
            assert!(check_topic(bad).is_err(), "{bad}");
        }
        let t = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(topic_matches(&t(&["*"]), "grant.issued"));
        assert!(topic_matches(&t(&["grant.*"]), "grant.issued"));
        assert!(!topic_matches(&t(&["grant.*"]), "hold.expired"));
        assert!(!topic_matches(&t(&["grant.*"]), "grants.x"));
        assert!(topic_matches(&t(&["hold.expired", "grant.issued"]), "grant.issued"));
        assert!(!topic_matches(&t(&[]), "grant.issued"));
    }

    #[test]
    fn urls() {
        for ok in ["https://example.com/hooks", "http://127.0.0.1:8080/x?y=1", "HTTPS://EXAMPLE.COM", "http://[::1]:9/"]
        {
            assert!(check_url(ok).is_ok(), "{ok}");
        }
        for bad in [
            "ftp://example.com",
            "example.com",
            "https://",
            "https:///path",
            "https://user:pw@example.com",
            "https://exa mple.com",
            "http://host:0/",
            "http://host:99999/",
            "http://host:abc/",
        ] {
            assert!(check_url(bad).is_err(), "{bad}");
        }
        assert!(check_url(&format!("https://e.com/{}", "a".repeat(2050))).is_err());
    }

    #[test]
    fn schedules() {
        assert_eq!(
            parse_schedule("500ms, 1s,2m,1h").unwrap(),
            vec![
                Duration::from_millis(500),
                Duration::from_secs(1),
                Duration::from_secs(120),
                Duration::from_secs(3600)
            ]
        );
        assert!(parse_schedule("5").is_err());
        assert!(parse_schedule("5d").is_err());
        assert!(parse_schedule("").is_err());
        assert_eq!(next_retry(RETRY_SCHEDULE, 1), Some(Duration::from_secs(5)));
        assert_eq!(next_retry(RETRY_SCHEDULE, 7), Some(Duration::from_secs(36000)));
        assert_eq!(next_retry(RETRY_SCHEDULE, 8), None);
        assert_eq!(next_retry(RETRY_SCHEDULE, 0), None);
    }

    #[test]
    fn private_destinations_are_refused() {
        for bad in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fc00::1",
            "fd12::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a00:1",
            "2002:7f00:1::1",
        ] {
            assert!(check_destination(bad, &[]).is_err(), "{bad} accepted");
        }
        for good in ["93.184.215.14", "8.8.8.8", "2606:4700::1111", "100.128.0.1", "172.32.0.1"] {
            assert!(check_destination(good, &[]).is_ok(), "{good} refused");
        }
        for name in ["localhost", "api.localhost", "metadata.google.internal", "printer.local"] {
            assert!(check_destination(name, &[]).is_err(), "{name} accepted");
        }
        let lo: std::net::IpAddr = "127.0.0.1".parse().unwrap();
        let public: std::net::IpAddr = "93.184.215.14".parse().unwrap();
        assert!(check_destination("rebind.example", &[public, lo]).is_err());
        assert!(check_destination("example.com", &[public]).is_ok());
        assert_eq!(url_host("https://[::1]:8080/x").as_deref(), Some("::1"));
        assert_eq!(url_host("http://Example.COM:80/x?y").as_deref(), Some("example.com"));
    }
}
