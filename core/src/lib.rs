//! Postgres-free logic shared by the credyt extension and the worker:
//! identifiers, money rules, the burn-down order, the fiat table and webhook signing.
//! Everything here is pure and tested in milliseconds (`cargo test -p credyt-core`).

pub mod apikey;
pub mod billing;
pub mod burndown;
pub mod cache;
pub mod fiat;
pub mod ids;
pub mod money;
pub mod period;
pub mod pricing;
pub mod stripe;
pub mod webhook;

/// Test support shared by the modules' property tests.
#[cfg(test)]
pub(crate) mod testing {
    /// A seeded xorshift64 generator: failures replay from the seed.
    pub struct XorShift(pub u64);

    impl XorShift {
        /// A number below `n`.
        pub fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }
}
