//! The catalog (SPEC §4): assets, products and their immutable versions, prices,
//! subscriptions. Fiat currencies (ISO 4217) are usable without being created;
//! custom units are created per account.

//!
//! The files: this one validates and publishes versions and resolves products; `api`
//! creates assets, products and versions; `versions` publishes, defaults and archives
//! them and simulates their fees; `rates` keeps assets' exchange rates and quotes;
//! `subscribe` starts, ends and moves subscriptions (with their wallet accounts and
//! entitlements).

use crate::assets::{fiat, resolve_asset};
use crate::customers;
use crate::error::{api, CyError, Result};
use crate::money::{self, to_numeric};
use crate::scope::scope;
use crate::spi::{one, run, Row};
use crate::validate;
use credyt_core::pricing::{parse_entitlements, parse_prices, Price, PriceError};
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use pgrx::{AnyNumeric, JsonB};
use std::collections::BTreeSet;

mod api;
mod rates;
mod subscribe;

pub use subscribe::activate;
mod versions;

fn price_error(e: PriceError) -> CyError {
    CyError::invalid(format!("invalid price JSON: {e}")).hint("see the price shape in the README (SPEC §4)")
}

/// Validates a version's prices and entitlements, including that every asset they name
/// exists for the account. Returns the parsed prices with their JSON.
fn validate_version(
    c: &mut SpiClient<'_>,
    account: &str,
    prices: &serde_json::Value,
    entitlements: &serde_json::Value,
) -> Result<Vec<(Price, serde_json::Value)>> {
    let parsed = parse_prices(prices).map_err(price_error)?;
    for (i, p) in parsed.iter().enumerate() {
        for (j, asset) in p.assets().enumerate() {
            resolve_asset(c, account, Some(asset)).map_err(|e| {
                CyError::invalid(format!("invalid price JSON: prices[{i}].pricing[{j}].asset: {}", e.message))
            })?;
        }
    }
    let ents = parse_entitlements(entitlements).map_err(|e| {
        CyError::invalid(format!("invalid entitlements JSON: {e}"))
            .hint("entitlements are [{name, asset, amount, purpose, priority, every, on_expiry}]")
    })?;
    for (i, e) in ents.iter().enumerate() {
        resolve_asset(c, account, Some(&e.asset)).map_err(|err| {
            CyError::invalid(format!("invalid entitlements JSON: entitlements[{i}].asset: {}", err.message))
        })?;
    }
    let arr = prices.as_array().cloned().unwrap_or_default();
    Ok(parsed.into_iter().zip(arr).collect())
}

/// Stores a validated version, published or as a draft, with its price rows.
#[allow(clippy::too_many_arguments)]
fn insert_version(
    c: &mut SpiClient<'_>,
    account: &str,
    product: &str,
    version: i32,
    publish: bool,
    prices: Vec<(Price, serde_json::Value)>,
    all_prices: serde_json::Value,
    entitlements: serde_json::Value,
) -> Result<()> {
    run(
        c,
        "INSERT INTO credyt.product_version (account_id, product_id, version, prices, entitlements, status, published_at) \
         VALUES ($1, $2, $3, $4, $5, CASE WHEN $6 THEN 'published' ELSE 'draft' END, CASE WHEN $6 THEN now() END)",
        &[
            account.into(),
            product.into(),
            version.into(),
            JsonB(all_prices).into(),
            JsonB(entitlements).into(),
            publish.into(),
        ],
    )?;
    for (position, (price, json)) in prices.into_iter().enumerate() {
        run(
            c,
            "INSERT INTO credyt.price (account_id, product_id, version, position, type, event_type, definition) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[
                account.into(),
                product.into(),
                version.into(),
                (position as i32).into(),
                price.type_name().into(),
                price.event_type().into(),
                JsonB(json).into(),
            ],
        )?;
    }
    Ok(())
}

/// Prices and entitlements: JSON of at most 1 MiB.
fn json_arg(param: &str, v: Option<crate::json::Json>) -> Result<serde_json::Value> {
    crate::json::required(param, v, crate::json::MAX_BYTES)
}

/// A custom unit's code: a letter, then letters, digits or '_', at most 32; never a
/// fiat code.
fn asset_code(code: Option<String>) -> Result<String> {
    let code = validate::required("code", code)?;
    let ok = code.len() <= 32
        && code.chars().next().is_some_and(|ch| ch.is_ascii_alphabetic())
        && code.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_');
    if !ok {
        return Err(CyError::invalid(format!("asset code {code:?} is not valid"))
            .hint("use a letter, then letters, digits or '_' (at most 32), e.g. 'tokens' or 'gpu_hours'"));
    }
    if fiat(&code).is_some() {
        return Err(CyError::conflict(format!("{code} is an ISO 4217 currency and needs no creating")));
    }
    Ok(code)
}

/// A product as resolve_product finds it.
struct Product {
    id: String,
    /// None until a version is published
    default_version: Option<i32>,
    archived: bool,
}

/// A product named by its `prp_…` id or its code, inside `account`.
fn resolve_product(c: &mut SpiClient<'_>, account: &str, product: Option<&str>) -> Result<Product> {
    let product = product.ok_or_else(|| CyError::invalid("product must not be NULL"))?;
    let t = run(
        c,
        "(SELECT id, default_version, archived_at IS NOT NULL AS archived FROM credyt.product WHERE id = $2 AND account_id = $1) \
         UNION ALL (SELECT id, default_version, archived_at IS NOT NULL FROM credyt.product WHERE account_id = $1 AND code = $2) LIMIT 1",
        &[account.into(), product.into()],
    )?;
    if t.is_empty() {
        return Err(
            CyError::not_found(format!("unknown product {product}")).hint("name a product by its prp_ id or its code")
        );
    }
    let row = t.first();
    Ok(Product {
        id: row.req::<String>("id")?,
        default_version: row.opt::<i32>("default_version")?,
        archived: row.req::<bool>("archived")?,
    })
}

/// An unarchived product, for changes to it.
fn live_product(c: &mut SpiClient<'_>, account: &str, product: Option<&str>) -> Result<Product> {
    let p = resolve_product(c, account, product)?;
    if p.archived {
        return Err(CyError::conflict(format!("product {} is archived", p.id)));
    }
    Ok(p)
}

/// A version's status, with the version row locked (for a change of status).
fn lock_version(c: &mut SpiClient<'_>, product: &str, version: Option<i32>) -> Result<(i32, VersionStatus)> {
    let version = validate::required("version", version)?;
    let status = one::<String>(
        c,
        "SELECT status FROM credyt.product_version WHERE product_id = $1 AND version = $2 FOR UPDATE",
        &[product.into(), version.into()],
    )?
    .ok_or_else(|| CyError::not_found(format!("product {product} has no version {version}")))?;
    let status = VersionStatus::parse(&status).ok_or_else(|| CyError::internal(format!("version status {status}")))?;
    Ok((version, status))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum VersionStatus {
    Draft,
    Published,
    Archived,
}

impl VersionStatus {
    fn parse(s: &str) -> Option<VersionStatus> {
        match s {
            "draft" => Some(VersionStatus::Draft),
            "published" => Some(VersionStatus::Published),
            "archived" => Some(VersionStatus::Archived),
            _ => None,
        }
    }
}
