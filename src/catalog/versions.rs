//! A version's life (draft → published → archived), the default version, archiving a
//! product, and simulate_usage: the fees a version would charge, without charging.

use super::*;
use credyt_core::pricing::{select_value, usage_fees, FeeError, PriceKind, UsageType};
use serde_json::{json, Value};

/// Publishes a draft (a published version stays published; an archived one cannot
/// come back).
#[pg_extern(security_definer)]
#[search_path(@extschema@, pg_temp)]
fn publish_product_version(product: Option<String>, version: Option<i32>) {
    api(move || {
        Spi::connect_mut(|c| {
            let account = scope(c)?;
            let p = live_product(c, &account, product.as_deref())?;
            let (version, status) = lock_version(c, &p.id, version)?;
            match status {
                VersionStatus::Published => Ok(()),
                VersionStatus::Archived => {
                    Err(CyError::conflict(format!("version {version} of product {} is archived", p.id)))
                }
                VersionStatus::Draft => {
                    run(
                        c,
                        "UPDATE credyt.product_version SET status = 'published', published_at = now() \
                         WHERE product_id = $1 AND version = $2",
                        &[p.id.as_str().into(), version.into()],
                    )?;
                    // The first version published becomes the default.
                    run(
                        c,
                        "UPDATE credyt.product SET default_version = $2 WHERE id = $1 AND default_version IS NULL",
                        &[p.id.as_str().into(), version.into()],
                    )?;
                    Ok(())
                }
            }
        })
    })
}

/// Makes a published version the one new subscriptions get.
#[pg_extern(security_definer)]
#[search_path(@extschema@, pg_temp)]
fn set_default_version(product: Option<String>, version: Option<i32>) {
    api(move || {
        Spi::connect_mut(|c| {
            let account = scope(c)?;
            let p = live_product(c, &account, product.as_deref())?;
            let (version, status) = lock_version(c, &p.id, version)?;
            if status != VersionStatus::Published {
                return Err(CyError::conflict(format!(
                    "version {version} of product {} is {}: only a published version can be the default",
                    p.id,
                    if status == VersionStatus::Draft { "a draft" } else { "archived" }
                ))
                .hint("publish it first with credyt.publish_product_version()"));
            }
            run(
                c,
                "UPDATE credyt.product SET default_version = $2 WHERE id = $1",
                &[p.id.as_str().into(), version.into()],
            )?;
            Ok(())
        })
    })
}

/// Closes a version to new subscriptions; its subscribers keep it and keep being
/// billed by it. The default version cannot be archived (make another the default
/// first); archiving twice is harmless.
#[pg_extern(security_definer)]
#[search_path(@extschema@, pg_temp)]
fn archive_product_version(product: Option<String>, version: Option<i32>) {
    api(move || {
        Spi::connect_mut(|c| {
            let account = scope(c)?;
            let p = live_product(c, &account, product.as_deref())?;
            // (the product row's lock orders this against set_default_version)
            run(c, "SELECT 1 FROM credyt.product WHERE id = $1 FOR UPDATE", &[p.id.as_str().into()])?;
            let default_version =
                one::<i32>(c, "SELECT default_version FROM credyt.product WHERE id = $1", &[p.id.as_str().into()])?;
            let (version, status) = lock_version(c, &p.id, version)?;
            if status == VersionStatus::Archived {
                return Ok(());
            }
            if default_version == Some(version) {
                return Err(CyError::conflict(format!("version {version} is the default version of product {}", p.id))
                    .hint("make another version the default first (credyt.set_default_version)"));
            }
            run(
                c,
                "UPDATE credyt.product_version SET status = 'archived', published_at = coalesce(published_at, now()) \
                 WHERE product_id = $1 AND version = $2",
                &[p.id.as_str().into(), version.into()],
            )?;
            Ok(())
        })
    })
}

/// Archives a product and every version of it: no new subscriptions or versions.
/// Existing subscriptions keep billing until they are cancelled.
#[pg_extern(security_definer)]
#[search_path(@extschema@, pg_temp)]
fn archive_product(product: Option<String>) {
    api(move || {
        Spi::connect_mut(|c| {
            let account = scope(c)?;
            let p = resolve_product(c, &account, product.as_deref())?;
            run(
                c,
                "UPDATE credyt.product SET archived_at = coalesce(archived_at, now()) WHERE id = $1",
                &[p.id.as_str().into()],
            )?;
            run(
                c,
                "UPDATE credyt.product_version SET status = 'archived', published_at = coalesce(published_at, now()) \
                 WHERE product_id = $1 AND status <> 'archived'",
                &[p.id.as_str().into()],
            )?;
            Ok(())
        })
    })
}

/// The fees `events` (`[{event_id, event_type, data}]`, at most 1,000) would be
/// charged by a version of a product (drafts too): `{fees, warnings}`, one JSON object
/// per fee in event order with the price and the value row that produced it, and a
/// warning for each event that no price charges. Writes nothing.
#[pg_extern(security_definer)]
#[search_path(@extschema@, pg_temp)]
fn simulate_usage(product: Option<String>, version: Option<i32>, events: Option<crate::json::Json>) -> JsonB {
    api(move || {
        let events = json_arg("events", events)?;
        let events = match events.as_array() {
            Some(a) if !a.is_empty() && a.len() <= 1000 => a.clone(),
            _ => return Err(CyError::invalid("events must be a JSON array of 1 to 1000 events")),
        };
        Spi::connect_mut(|c| {
            let account = scope(c)?;
            let p = resolve_product(c, &account, product.as_deref())?;
            let version = version.or(p.default_version).ok_or_else(|| {
                CyError::invalid("version must not be NULL").detail(format!("product {} has no default version", p.id))
            })?;
            let prices = one::<JsonB>(
                c,
                "SELECT prices FROM credyt.product_version WHERE product_id = $1 AND version = $2",
                &[p.id.as_str().into(), version.into()],
            )?
            .ok_or_else(|| CyError::not_found(format!("product {} has no version {version}", p.id)))?
            .0;
            let parsed = parse_prices(&prices).map_err(|e| CyError::internal(format!("stored prices invalid: {e}")))?;
            let (mut fees, mut warnings) = (Vec::new(), Vec::new());
            for (i, e) in events.iter().enumerate() {
                let found = event_fees(&p.id, version, &prices, &parsed, i, e)?;
                if found.is_empty() {
                    let (id, kind) = (&e["event_id"], &e["event_type"]);
                    warnings.push(Value::String(format!(
                        "event {}: no price of version {version} charges a {} event with this data",
                        id.as_str().unwrap_or_default(),
                        kind.as_str().unwrap_or_default()
                    )));
                }
                fees.extend(found);
            }
            Ok(JsonB(json!({"fees": fees, "warnings": warnings})))
        })
    })
}

/// The fees one simulated event (`events[i]`) would be charged by a version's prices.
fn event_fees(
    product: &str,
    version: i32,
    prices: &Value,
    parsed: &[Price],
    i: usize,
    e: &Value,
) -> Result<Vec<Value>> {
    let at = format!("events[{i}]");
    let event_id = e.get("event_id").or_else(|| e.get("id")).and_then(Value::as_str);
    let event_type = e.get("event_type").and_then(Value::as_str);
    let (Some(event_id), Some(event_type)) = (event_id, event_type) else {
        return Err(CyError::invalid(format!("{at} needs an event_id and an event_type")));
    };
    let data = e.get("data").cloned().unwrap_or_else(|| json!({}));
    if !data.is_object() {
        return Err(CyError::invalid(format!("{at}.data must be a JSON object")));
    }
    let mut fees = Vec::new();
    for (position, price) in parsed.iter().enumerate() {
        let PriceKind::Usage { event_type: et, usage_type, volume_field, .. } = &price.kind else { continue };
        if et != event_type {
            continue;
        }
        let found = usage_fees(price, &data)
            .map_err(|FeeError::Volume { field, problem }| CyError::invalid(format!("{at}: data.{field} {problem}")))?;
        for fee in found {
            let row = price.pricing.iter().find(|x| x.asset == fee.asset).and_then(|x| select_value(&x.values, &data));
            let name = prices[position].get("name").and_then(Value::as_str);
            let mut out = json!({
                "event_id": event_id, "event_type": event_type, "product_id": product, "version": version,
                "price": position, "price_name": name.map_or_else(|| format!("price {position}"), str::to_string),
                "usage_type": match usage_type {
                    UsageType::Unit => "unit", UsageType::Volume => "volume", UsageType::UnitAndVolume => "unit_and_volume",
                },
                "volume_field": volume_field, "asset": fee.asset, "amount": money::json_number(fee.amount),
                "volume": fee.volume.map(money::json_number),
            });
            if let Some(row) = row {
                out["dimensions"] =
                    Value::Object(row.dimensions.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect());
                out["unit_price"] = row.unit_price.map(money::json_number).unwrap_or(Value::Null);
                out["volume_rate"] = row.volume_rate.map(money::json_number).unwrap_or(Value::Null);
                out["package_size"] = money::json_number(row.package_size);
            }
            fees.push(out);
        }
    }
    Ok(fees)
}
