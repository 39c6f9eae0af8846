//! API keys of credyt-server: `sk_live_…` / `sk_test_…`, 32 random bytes in hex after
//! the prefix. Only the SHA-256 of a key is stored; a key is shown once.

use sha2::{Digest, Sha256};

/// The environments data lives in: live, and test (a separate account tree).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Environment {
    Live,
    Test,
}

impl Environment {
    pub const NAMES: &'static str = "live, test";

    pub fn parse(s: &str) -> Option<Environment> {
        match s {
            "live" => Some(Environment::Live),
            "test" => Some(Environment::Test),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Environment::Live => "live",
            Environment::Test => "test",
        }
    }
}

/// Bytes of randomness in a key.
pub const KEY_BYTES: usize = 32;

/// The key for `random` bytes in `env`.
pub fn format_key(env: Environment, random: &[u8; KEY_BYTES]) -> String {
    let mut key = format!("sk_{}_", env.as_str());
    for b in random {
        key.push_str(&format!("{b:02x}"));
    }
    key
}

/// What is stored of a key: the hex SHA-256 of its whole text.
pub fn hash_key(key: &str) -> String {
    let digest = Sha256::digest(key.as_bytes());
    let mut hex = String::with_capacity(64);
    for b in digest {
        hex.push_str(&format!("{b:02x}"));
    }
    hex
}

/// The first characters of a key, shown in lists so that a key can be recognised.
pub fn key_prefix(key: &str) -> String {
    key.chars().take(16).collect()
}

/// True when `key` has the shape of a key (a cheap check before any lookup).
pub fn looks_like_key(key: &str) -> bool {
    let rest = key.strip_prefix("sk_live_").or_else(|| key.strip_prefix("sk_test_"));
    rest.is_some_and(|r| r.len() == 2 * KEY_BYTES && r.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_have_their_environment_and_hash_to_sha256() {
        let key = format_key(Environment::Test, &[0xab; KEY_BYTES]);
        assert!(key.starts_with("sk_test_abab"));
        assert_eq!(key.len(), 8 + 64);
        assert!(looks_like_key(&key));
        assert!(!looks_like_key(&key[..key.len() - 1]));
        assert!(!looks_like_key("sk_prod_00"));
        assert!(!looks_like_key(&key.replace("sk_test_", "sk_live_x")));
        // SHA-256 of "abc", the standard test vector
        assert_eq!(hash_key("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert_eq!(key_prefix(&key), "sk_test_abababab");
        assert_eq!(Environment::parse("live"), Some(Environment::Live));
        assert_eq!(Environment::parse("prod"), None);
    }
}
