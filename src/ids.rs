//! Identifier generation for this backend: core's monotonic ULIDs fed with the wall
//! clock and a stream seeded once per backend from Postgres' strong random source.

use crate::error::{CyError, Result};
use credyt_core::ids::{Monotonic, Stream};
use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

thread_local! {
    static GENERATOR: RefCell<Monotonic> = RefCell::new(Monotonic::default());
    /// (seeded on the backend's first id, so never shared through a fork)
    static STREAM: RefCell<Option<Stream>> = const { RefCell::new(None) };
}

/// Fills `buf` from Postgres' strong random source.
pub fn strong_random(buf: &mut [u8]) -> Result<()> {
    let ok = unsafe { pgrx::pg_sys::pg_strong_random(buf.as_mut_ptr().cast(), buf.len()) };
    if !ok {
        return Err(CyError::internal("pg_strong_random failed"));
    }
    Ok(())
}

pub fn new_id(prefix: &str) -> Result<String> {
    let ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
    let random = STREAM.with(|s| -> Result<u128> {
        let mut s = s.borrow_mut();
        if s.is_none() {
            let mut seed = [0u8; 32];
            strong_random(&mut seed)?;
            *s = Some(Stream::new(seed));
        }
        Ok(s.as_mut().map_or(0, Stream::next_u128))
    })?;
    Ok(GENERATOR.with(|g| g.borrow_mut().id(prefix, ms, random)))
}
