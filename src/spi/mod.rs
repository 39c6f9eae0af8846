//! The SPI layer every domain reads and writes through: kept plans (`plan`) and rows
//! decoded by column name (`row`). Imports no domain.

mod plan;
mod row;

/// A hasher for keys that are addresses (of `'static` statements and column names):
/// FxHash's multiply-rotate, a few instructions where SipHash takes a hundred.
#[derive(Default)]
pub struct AddrHasher(u64);

impl std::hash::Hasher for AddrHasher {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(u64::from(*b));
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

/// A HashMap keyed by addresses.
type AddrMap<K, V> = std::collections::HashMap<K, V, std::hash::BuildHasherDefault<AddrHasher>>;

pub use plan::{one, run, run_once};
pub use row::{Row, Table};
