//! Identifier generation for this backend: core's monotonic ULIDs fed with the wall
//! clock and Postgres' strong random source.

use crate::error::{CyError, Result};
use credyt_core::ids::Monotonic;
use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

thread_local! {
    static GENERATOR: RefCell<Monotonic> = RefCell::new(Monotonic::default());
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
    let mut bytes = [0u8; 16];
    strong_random(&mut bytes)?;
    let random = u128::from_le_bytes(bytes);
    Ok(GENERATOR.with(|g| g.borrow_mut().id(prefix, ms, random)))
}
