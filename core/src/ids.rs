//! Identifiers: a lowercase prefix plus a lowercase 26-character ULID.
//!
//! The extension feeds the generator the wall clock and strong randomness from
//! Postgres; the generator makes ids monotonic within one backend, so ids issued
//! in one millisecond still sort in issue order (`ORDER BY id` is issue order).

/// Crockford's base32 alphabet, lowercase, as in the SPEC's examples.
const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";

/// Encodes 48 bits of milliseconds and 80 bits of randomness as 26 characters.
pub fn encode_ulid(ms: u64, random: u128) -> String {
    let value: u128 = ((ms as u128 & 0xFFFF_FFFF_FFFF) << 80) | (random & ((1u128 << 80) - 1));
    let mut out = [0u8; 26];
    for (i, slot) in out.iter_mut().enumerate() {
        let shift = 5 * (25 - i);
        *slot = ALPHABET[((value >> shift) & 0x1F) as usize];
    }
    // The alphabet is ASCII, so this cannot fail.
    String::from_utf8(out.to_vec()).unwrap_or_default()
}

/// Monotonic ULID state for one backend.
#[derive(Debug, Default)]
pub struct Monotonic {
    last_ms: u64,
    last_random: u128,
}

impl Monotonic {
    /// Returns the next (ms, random) pair. Within the same millisecond (or if the
    /// clock stepped back) the random part of the previous id is incremented, as the
    /// ULID spec prescribes; if it would overflow 80 bits the millisecond is advanced.
    pub fn next(&mut self, now_ms: u64, fresh_random: u128) -> (u64, u128) {
        const MASK: u128 = (1u128 << 80) - 1;
        if now_ms > self.last_ms {
            self.last_ms = now_ms;
            self.last_random = fresh_random & MASK;
        } else if self.last_random == MASK {
            self.last_ms += 1;
            self.last_random = fresh_random & MASK;
        } else {
            self.last_random += 1;
        }
        (self.last_ms, self.last_random)
    }

    pub fn id(&mut self, prefix: &str, now_ms: u64, fresh_random: u128) -> String {
        let (ms, r) = self.next(now_ms, fresh_random);
        let mut s = String::with_capacity(prefix.len() + 27);
        s.push_str(prefix);
        s.push('_');
        s.push_str(&encode_ulid(ms, r));
        s
    }
}

/// A backend's source of the random part of ids: xoshiro256** (Blackman and Vigna),
/// seeded once from a strong random source. Ids are names, not secrets (keys, tokens
/// and signing secrets take strong randomness of their own), so what they need is that
/// two backends never draw the same sequence, which independent 256-bit seeds give.
/// (A 300-call profile showed OpenSSL at 35,000 instructions per id; over 1,000 calls
/// most of that proved to be its first call, so the saving per id is small.)
#[derive(Debug)]
pub struct Stream([u64; 4]);

impl Stream {
    /// A stream from a 32-byte seed; an all-zero seed (the one xoshiro cannot leave) is
    /// replaced by a constant one.
    pub fn new(seed: [u8; 32]) -> Stream {
        let mut s = [0u64; 4];
        for (i, word) in s.iter_mut().enumerate() {
            let mut b = [0u8; 8];
            b.copy_from_slice(&seed[i * 8..i * 8 + 8]);
            *word = u64::from_le_bytes(b);
        }
        if s == [0; 4] {
            s = [0x9e37_79b9_7f4a_7c15, 0xbf58_476d_1ce4_e5b9, 0x94d0_49bb_1331_11eb, 1];
        }
        Stream(s)
    }

    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.0;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    pub fn next_u128(&mut self) -> u128 {
        (u128::from(self.next_u64()) << 64) | u128::from(self.next_u64())
    }
}

/// Client-supplied idempotency keys are free text of 1 to 255 characters.
pub const MAX_KEY_CHARS: usize = 255;

/// Checks a client-supplied key; returns the reason it is unacceptable.
pub fn check_client_key(key: &str) -> Result<(), &'static str> {
    let n = key.chars().count();
    if n == 0 {
        Err("must not be empty")
    } else if n > MAX_KEY_CHARS {
        Err("must be at most 255 characters")
    } else if key.contains('\0') {
        Err("must not contain NUL characters")
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_matches_the_reference_sequence() {
        // xoshiro256** from state (1, 2, 3, 4): the reference implementation's first outputs.
        let mut seed = [0u8; 32];
        for (i, v) in [1u64, 2, 3, 4].iter().enumerate() {
            seed[i * 8..i * 8 + 8].copy_from_slice(&v.to_le_bytes());
        }
        let mut s = Stream::new(seed);
        let got: Vec<u64> = (0..4).map(|_| s.next_u64()).collect();
        assert_eq!(got, vec![11520, 0, 1509978240, 1215971899390074240]);
    }

    #[test]
    fn streams_of_different_seeds_differ_and_zero_is_replaced() {
        let mut a = Stream::new([0u8; 32]);
        let mut b = Stream::new([1u8; 32]);
        let (x, y) = (a.next_u128(), b.next_u128());
        assert_ne!(x, 0);
        assert_ne!(x, y);
    }

    #[test]
    fn encodes_known_vectors() {
        assert_eq!(encode_ulid(0, 0), "00000000000000000000000000");
        assert_eq!(encode_ulid(0xFFFF_FFFF_FFFF, u128::MAX), "7zzzzzzzzzzzzzzzzzzzzzzzzz");
        // 1469918176385 ms is the timestamp of the ULID spec's example 01ARYZ6S41...
        assert!(encode_ulid(1_469_918_176_385, 0).starts_with("01aryz6s41"));
    }

    #[test]
    fn monotonic_within_a_millisecond_and_across_clock_steps_back() {
        let mut g = Monotonic::default();
        let a = g.id("txn", 1000, 5);
        let b = g.id("txn", 1000, 1);
        let c = g.id("txn", 999, 0); // clock stepped back
        let d = g.id("txn", 1001, 0);
        assert!(a < b && b < c && c < d, "{a} {b} {c} {d}");
        assert_eq!(a.len(), 4 + 26);
    }

    #[test]
    fn overflow_of_random_part_advances_the_millisecond() {
        let mut g = Monotonic::default();
        let max = (1u128 << 80) - 1;
        let (ms1, r1) = g.next(10, max);
        let (ms2, _) = g.next(10, 7);
        assert_eq!((ms1, r1), (10, max));
        assert_eq!(ms2, 11);
    }

    #[test]
    fn client_keys() {
        assert!(check_client_key("evt-1").is_ok());
        assert!(check_client_key("").is_err());
        assert!(check_client_key(&"x".repeat(255)).is_ok());
        assert!(check_client_key(&"x".repeat(256)).is_err());
        assert!(check_client_key(&"é".repeat(255)).is_ok(), "counted in characters, not bytes");
    }
}
