//! Assets as every domain names them (SPEC §1, §4): fiat codes, usable without being
//! created, and the custom units an account creates (`catalog::create_asset`). A leaf:
//! it imports no domain, so the catalog, credits, usage and the wallet can all use it.

use crate::error::{CyError, Result};
use crate::spi::{one, Row};
use pgrx::spi::SpiClient;

#[derive(Debug, Clone)]
pub struct Asset {
    pub code: String,
    /// Minor units: bound payment and top-up amounts, never ledger arithmetic.
    pub precision: u32,
}

/// A fiat currency by its ISO 4217 code (uppercase), if it is one.
pub fn fiat(code: &str) -> Option<Asset> {
    credyt_core::fiat::minor_units(code).map(|precision| Asset { code: code.to_string(), precision })
}

/// Resolves an asset code for `account`: a fiat currency, or one of its custom units.
pub fn resolve_asset(c: &mut SpiClient<'_>, account: &str, code: Option<&str>) -> Result<Asset> {
    let code = code.ok_or_else(|| CyError::invalid("asset must not be NULL"))?;
    if let Some(a) = fiat(code) {
        return Ok(a);
    }
    if let Some(p) = one::<i32>(
        c,
        "SELECT precision FROM credyt.asset WHERE account_id = $1 AND code = $2",
        &[account.into(), code.into()],
    )? {
        return Ok(Asset { code: code.to_string(), precision: p as u32 });
    }
    let upper = code.to_ascii_uppercase();
    let e = CyError::not_found(format!("unknown asset {code}"));
    Err(if fiat(&upper).is_some() {
        e.hint(format!("fiat codes are uppercase ISO 4217 codes: did you mean {upper}?"))
    } else {
        e.hint("use an ISO 4217 currency code such as USD, or create the unit with credyt.create_asset()")
    })
}

thread_local! {
    /// Custom units' precision by (account, code), under the account's catalog generation.
    static UNITS: std::cell::RefCell<credyt_core::cache::Owned<String, String, u32>> = Default::default();
}

/// resolve_asset(), with the account's catalog generation a custom unit was read
/// under (none for a fiat code, which no table decides); the caller checks it
/// (crate::wallet::Gens) before it relies on the answer.
pub fn resolve_asset_cached(c: &mut SpiClient<'_>, account: &str, code: Option<&str>) -> Result<(Asset, Option<i64>)> {
    let code = code.ok_or_else(|| CyError::invalid("asset must not be NULL"))?;
    if let Some(a) = fiat(code) {
        return Ok((a, None));
    }
    let owner = account.to_string();
    if let Some((precision, gen)) = credyt_core::cache::get(&UNITS, &owner, &code.to_string()) {
        return Ok((Asset { code: code.to_string(), precision }, Some(gen)));
    }
    let t = crate::spi::run(
        c,
        "SELECT (SELECT precision FROM credyt.asset WHERE account_id = $1 AND code = $2) AS precision, \
           (SELECT catalog_gen FROM credyt.account WHERE id = $1) AS gen",
        &[account.into(), code.into()],
    )?;
    let row = t.first();
    let gen = row.opt::<i64>("gen")?.unwrap_or(-1);
    match row.opt::<i32>("precision")? {
        Some(p) => {
            credyt_core::cache::put(&UNITS, &owner, gen, code.to_string(), p as u32);
            Ok((Asset { code: code.to_string(), precision: p as u32 }, Some(gen)))
        }
        None => resolve_asset(c, account, Some(code)).map(|a| (a, Some(gen))),
    }
}

/// Forgets the account's cached units unless read under generation `gen`.
pub fn check_units(account: &str, gen: i64) -> bool {
    credyt_core::cache::check(&UNITS, &account.to_string(), gen)
}

/// What one unit of `asset` costs in `source` at `at`: 1 for an asset in itself, the
/// custom unit's rate then in effect, or None when it has none.
pub fn rate_at(
    c: &mut SpiClient<'_>,
    account: &str,
    asset: &str,
    source: &str,
    at: pgrx::datum::TimestampWithTimeZone,
) -> Result<Option<rust_decimal::Decimal>> {
    if asset == source {
        return Ok(Some(rust_decimal::Decimal::ONE));
    }
    one::<String>(
        c,
        "SELECT rate::text FROM credyt.asset_rate WHERE account_id = $1 AND asset = $2 AND source = $3 \
           AND valid_from <= $4 AND (valid_to IS NULL OR valid_to > $4)",
        &[account.into(), asset.into(), source.into(), at.into()],
    )?
    .map(|r| crate::money::stored(&r))
    .transpose()
}
