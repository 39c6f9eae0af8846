//! The catalog (SPEC §4): assets, products and their immutable versions, prices,
//! subscriptions. Fiat currencies (ISO 4217) are usable without being created;
//! custom units are created per account.

use crate::assets::{fiat, resolve_asset};
use crate::customers;
use crate::error::{api, CyError, Result};
use crate::money::{self, to_numeric};
use crate::plan_cache::{one, run};
use crate::tenancy::scope;
use crate::validate;
use credyt_core::pricing::{parse_entitlements, parse_prices, Price, PriceError};
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use pgrx::{AnyNumeric, JsonB};
use std::collections::BTreeSet;

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

fn publish(
    c: &mut SpiClient<'_>,
    account: &str,
    product: &str,
    version: i32,
    prices: Vec<(Price, serde_json::Value)>,
    all_prices: serde_json::Value,
    entitlements: serde_json::Value,
) -> Result<()> {
    run(
        c,
        "INSERT INTO credyt.product_version (account_id, product_id, version, prices, entitlements) VALUES ($1, $2, $3, $4, $5)",
        &[account.into(), product.into(), version.into(), JsonB(all_prices).into(), JsonB(entitlements).into()],
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

#[pg_extern(security_definer)]
#[search_path(@extschema@, pg_temp)]
fn create_asset(
    code: Option<String>,
    name: default!(Option<String>, "NULL"),
    precision: default!(Option<i32>, "2"),
    rate: default!(Option<AnyNumeric>, "NULL"),
    rate_currency: default!(Option<String>, "'USD'"),
) -> String {
    api(move || {
        let code = asset_code(code)?;
        let name = validate::name("name", Some(name.unwrap_or_else(|| code.clone())))?;
        let precision = validate::required("precision", precision)?;
        if !(0..=12).contains(&precision) {
            return Err(CyError::invalid("precision must be between 0 and 12").detail(format!("got {precision}")));
        }
        let rate = money::optional_non_negative("rate", rate)?;
        if rate.is_some_and(|r| r.is_zero()) {
            return Err(CyError::invalid("rate must be greater than zero"));
        }
        let rate_currency = validate::required("rate_currency", rate_currency)?;
        if fiat(&rate_currency).is_none() {
            return Err(CyError::invalid(format!("rate_currency {rate_currency} is not an ISO 4217 currency")));
        }
        Spi::connect_mut(|c| {
            let account = scope(c)?;
            let inserted = one::<String>(
                c,
                "INSERT INTO credyt.asset (account_id, code, name, precision, rate, rate_currency) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (account_id, code) DO NOTHING RETURNING code",
                &[
                    account.as_str().into(),
                    code.as_str().into(),
                    name.as_str().into(),
                    precision.into(),
                    rate.map(to_numeric).into(),
                    rate_currency.as_str().into(),
                ],
            )?;
            inserted.ok_or_else(|| CyError::conflict(format!("asset {code} already exists in account {account}")))
        })
    })
}

#[pg_extern(security_definer)]
#[search_path(@extschema@, pg_temp)]
fn create_product(
    code: Option<String>,
    name: Option<String>,
    prices: Option<crate::json::Json>,
    entitlements: default!(Option<crate::json::Json>, "'[]'"),
) -> String {
    api(move || {
        let code = validate::key("code", code)?;
        let name = validate::name("name", name)?;
        let prices = json_arg("prices", prices)?;
        let entitlements = crate::json::optional("entitlements", entitlements, crate::json::MAX_BYTES)?
            .unwrap_or_else(|| serde_json::json!([]));
        Spi::connect_mut(|c| {
            let account = scope(c)?;
            let parsed = validate_version(c, &account, &prices, &entitlements)?;
            let id = crate::ids::new_id("prp")?;
            let inserted = one::<String>(
                c,
                "INSERT INTO credyt.product (account_id, id, code, name, default_version) VALUES ($1, $2, $3, $4, 1) \
                 ON CONFLICT (account_id, code) DO NOTHING RETURNING id",
                &[account.as_str().into(), id.as_str().into(), code.as_str().into(), name.as_str().into()],
            )?;
            if inserted.is_none() {
                return Err(CyError::conflict(format!("a product with code {code:?} already exists"))
                    .hint("publish a new version with credyt.create_product_version()"));
            }
            publish(c, &account, &id, 1, parsed, prices, entitlements)?;
            Ok(id)
        })
    })
}

/// A product named by its `prp_…` id or its code, inside `account`.
fn resolve_product(c: &mut SpiClient<'_>, account: &str, product: Option<&str>) -> Result<(String, i32)> {
    let product = product.ok_or_else(|| CyError::invalid("product must not be NULL"))?;
    let t = run(
        c,
        "(SELECT id, default_version FROM credyt.product WHERE id = $2 AND account_id = $1) \
         UNION ALL (SELECT id, default_version FROM credyt.product WHERE account_id = $1 AND code = $2) LIMIT 1",
        &[account.into(), product.into()],
    )?;
    if t.is_empty() {
        return Err(
            CyError::not_found(format!("unknown product {product}")).hint("name a product by its prp_ id or its code")
        );
    }
    let row = t.first();
    Ok((row.get::<String>(1)?.unwrap_or_default(), row.get::<i32>(2)?.unwrap_or(1)))
}

#[pg_extern(security_definer)]
#[search_path(@extschema@, pg_temp)]
fn create_product_version(
    product: Option<String>,
    prices: Option<crate::json::Json>,
    entitlements: default!(Option<crate::json::Json>, "'[]'"),
) -> i32 {
    api(move || {
        let prices = json_arg("prices", prices)?;
        let entitlements = crate::json::optional("entitlements", entitlements, crate::json::MAX_BYTES)?
            .unwrap_or_else(|| serde_json::json!([]));
        Spi::connect_mut(|c| {
            let account = scope(c)?;
            let (id, _) = resolve_product(c, &account, product.as_deref())?;
            let parsed = validate_version(c, &account, &prices, &entitlements)?;
            // Lock the product row: concurrent publishers get consecutive versions.
            let version = one::<i32>(
                c,
                "SELECT (SELECT max(version) FROM credyt.product_version WHERE product_id = p.id) + 1 \
                 FROM credyt.product p WHERE p.id = $1 FOR UPDATE",
                &[id.as_str().into()],
            )?
            .ok_or_else(|| CyError::internal("product vanished"))?;
            publish(c, &account, &id, version, parsed, prices, entitlements)?;
            run(
                c,
                "UPDATE credyt.product SET default_version = $2 WHERE id = $1",
                &[id.as_str().into(), version.into()],
            )?;
            Ok(version)
        })
    })
}

#[pg_extern(security_definer)]
#[search_path(@extschema@, pg_temp)]
fn subscribe(
    customer: Option<String>,
    product: Option<String>,
    version: default!(Option<i32>, "NULL"),
    starts_at: default!(Option<TimestampWithTimeZone>, "now()"),
    quantity: default!(Option<i32>, "1"),
) -> String {
    api(move || {
        let quantity = validate::required("quantity", quantity)?;
        if quantity < 1 {
            return Err(CyError::invalid("quantity must be at least 1").detail(format!("got {quantity}")));
        }
        let starts_at = validate::required("starts_at", starts_at)?;
        if !starts_at.is_finite() {
            return Err(CyError::invalid("starts_at must be a finite timestamp"));
        }
        Spi::connect_mut(|c| {
            let account = scope(c)?;
            let customer = customers::resolve(c, &account, customer.as_deref())?;
            let (product_id, default_version) = resolve_product(c, &account, product.as_deref())?;
            let version = version.unwrap_or(default_version);
            let t = run(
                c,
                "SELECT prices, entitlements FROM credyt.product_version WHERE product_id = $1 AND version = $2",
                &[product_id.as_str().into(), version.into()],
            )?;
            if t.is_empty() {
                return Err(CyError::not_found(format!("product {product_id} has no version {version}")));
            }
            let row = t.first();
            let prices = row.get::<JsonB>(1)?.ok_or_else(|| CyError::internal("prices"))?;
            let entitlements = row.get::<JsonB>(2)?.ok_or_else(|| CyError::internal("entitlements"))?;
            let id = crate::ids::new_id("sub")?;
            run(
                c,
                "INSERT INTO credyt.subscription (account_id, id, customer_id, product_id, version, quantity, starts_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
                &[account.as_str().into(), id.as_str().into(), customer.as_str().into(), product_id.as_str().into(),
                  version.into(), quantity.into(), starts_at.into()],
            )?;
            // Provision the default wallet account of every asset the prices charge in.
            let parsed =
                parse_prices(&prices.0).map_err(|e| CyError::internal(format!("stored prices invalid: {e}")))?;
            let assets: BTreeSet<&str> = parsed.iter().flat_map(|p| p.assets()).collect();
            for asset in assets {
                crate::wallet::ensure(
                    c,
                    &crate::wallet::WalletRef { account: &account, customer: &customer, name: "default", asset },
                )?;
            }
            // Issue the version's entitlements: one grant each, recurring when it has
            // `every`, from the subscription's start; cancel_subscription ends them.
            let ents = parse_entitlements(&entitlements.0)
                .map_err(|e| CyError::internal(format!("stored entitlements invalid: {e}")))?;
            for (i, e) in ents.into_iter().enumerate() {
                let every = match &e.every {
                    // (core's period parser has made it Postgres interval text)
                    Some(period) => one::<pgrx::datum::Interval>(c, "SELECT $1::interval", &[period.as_str().into()])?,
                    None => None,
                };
                let priority = e.priority.or_else(|| credyt_core::burndown::default_priority(&e.purpose)).unwrap_or(20);
                crate::credits::create(
                    c,
                    &account,
                    &crate::credits::GrantSpec {
                        key: format!("{id}:{i}:{}", e.name),
                        customer: customer.clone(),
                        wallet_name: "default".into(),
                        asset: e.asset,
                        amount: e.amount,
                        purpose: e.purpose,
                        priority,
                        effective_at: Some(starts_at),
                        expires_at: None,
                        every,
                        on_expiry: e.on_expiry,
                        rollover_cap: None,
                    },
                )?;
            }
            Ok(id)
        })
    })
}

#[pg_extern(security_definer)]
#[search_path(@extschema@, pg_temp)]
fn cancel_subscription(subscription_id: Option<String>, at: default!(Option<TimestampWithTimeZone>, "now()")) {
    api(move || {
        let id = validate::required("subscription_id", subscription_id)?;
        let at = validate::required("at", at)?;
        if !at.is_finite() {
            return Err(CyError::invalid("at must be a finite timestamp"));
        }
        Spi::connect_mut(|c| {
            let account = scope(c)?;
            let t = run(
                c,
                "SELECT ends_at IS NOT NULL, starts_at <= $3 FROM credyt.subscription WHERE id = $1 AND account_id = $2 FOR UPDATE",
                &[id.as_str().into(), account.as_str().into(), at.into()],
            )?;
            if t.is_empty() {
                return Err(CyError::not_found(format!("unknown subscription {id}")));
            }
            let row = t.first();
            if row.get::<bool>(1)?.unwrap_or(false) {
                return Err(CyError::conflict(format!("subscription {id} is already cancelled")));
            }
            // Cancelling before the start simply ends it at its start.
            let ends = one::<TimestampWithTimeZone>(
                c,
                "UPDATE credyt.subscription SET ends_at = greatest($2, starts_at) WHERE id = $1 RETURNING ends_at",
                &[id.as_str().into(), at.into()],
            )?
            .ok_or_else(|| CyError::internal("subscription vanished"))?;
            // Its recurring entitlements issue no period from then on.
            crate::credits::end_grants(c, &account, &format!("{id}:"), ends)
        })
    })
}
