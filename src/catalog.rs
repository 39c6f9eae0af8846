//! The catalog (SPEC §4): assets. Fiat currencies (ISO 4217) are usable without
//! being created; custom units arrive with create_asset.

use crate::error::{CyError, Result};

#[derive(Debug, Clone)]
pub struct Asset {
    pub code: String,
    /// Minor units: bounds payment and top-up amounts, never ledger arithmetic.
    pub precision: u32,
}

pub fn resolve_asset(code: Option<&str>) -> Result<Asset> {
    let code = code.ok_or_else(|| CyError::invalid("asset must not be NULL"))?;
    if let Some(precision) = credyt_core::fiat::minor_units(code) {
        return Ok(Asset { code: code.to_string(), precision });
    }
    let upper = code.to_ascii_uppercase();
    let err = CyError::not_found(format!("unknown asset {code}"));
    Err(if credyt_core::fiat::minor_units(&upper).is_some() {
        err.hint(format!("fiat codes are uppercase ISO 4217 codes: did you mean {upper}?"))
    } else {
        err.hint("use an ISO 4217 currency code such as USD")
    })
}
