//! The billing portal's tokens: HS256 JWTs (jsonwebtoken) signed with the server's
//! portal key, each of one purpose: a link (`portal-link`, 10 minutes) or a session
//! (`portal-session`, as long as its grant). A leaf: routes and the portal both use it.

use crate::problem::Problem;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use std::time::{SystemTime, UNIX_EPOCH};

/// The portal's signing key and where it is served from.
#[derive(Clone)]
pub struct Portal {
    enc: EncodingKey,
    dec: DecodingKey,
    /// the server's public base URL, e.g. https://billing.example.com
    pub public_url: String,
}

impl Portal {
    pub fn new(key: &[u8], public_url: &str) -> Portal {
        Portal {
            enc: EncodingKey::from_secret(key),
            dec: DecodingKey::from_secret(key),
            public_url: public_url.trim_end_matches('/').to_string(),
        }
    }

    pub fn secure(&self) -> bool {
        self.public_url.starts_with("https://")
    }
}

pub const LINK: &str = "portal-link";
pub const SESSION: &str = "portal-session";
pub const COOKIE: &str = "credyt_portal";
/// How long a portal link may be opened.
pub const LINK_SECS: i64 = 600;

/// A token's claims: its purpose, the grant and its secret, until when.
#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    pub typ: String,
    pub gid: String,
    pub sec: String,
    /// the grant's end (a link carries it to the session)
    pub until: i64,
    pub exp: i64,
}

pub fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or_default()
}

impl Portal {
    pub fn sign(&self, c: &Claims) -> Result<String, Problem> {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), c, &self.enc)
            .map_err(|e| Problem::internal(&format!("jwt: {e}")))
    }

    /// A token's claims when it is ours, unexpired and of purpose `typ`.
    pub fn verify(&self, token: &str, typ: &str) -> Option<Claims> {
        let mut v = Validation::new(Algorithm::HS256);
        v.leeway = 0;
        v.set_required_spec_claims(&["exp"]);
        let c = jsonwebtoken::decode::<Claims>(token, &self.dec, &v).ok()?.claims;
        (c.typ == typ).then_some(c)
    }
}

/// The grant (and secret) a token names, without trusting it, to find where a bad link
/// goes: the database answers only when the secret is the grant's.
pub fn grant_named(token: &str) -> Option<(String, String)> {
    let mut v = Validation::new(Algorithm::HS256);
    v.insecure_disable_signature_validation();
    v.validate_exp = false;
    v.set_required_spec_claims::<&str>(&[]);
    jsonwebtoken::decode::<Claims>(token, &DecodingKey::from_secret(b""), &v).ok().map(|d| (d.claims.gid, d.claims.sec))
}
