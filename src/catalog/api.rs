//! create_asset, create_product and create_product_version.

use super::*;

#[pg_extern(security_definer)]
#[search_path(@extschema@, pg_temp)]
fn create_asset(
    code: Option<String>,
    name: default!(Option<String>, "NULL"),
    precision: default!(Option<i32>, "2"),
    rate: default!(Option<AnyNumeric>, "NULL"),
    rate_currency: default!(Option<String>, "'USD'"),
    label: default!(Option<String>, "NULL"),
    symbol: default!(Option<String>, "NULL"),
) -> String {
    api(move || {
        let label = validate::optional_text("label", label)?;
        let symbol = validate::optional_text("symbol", symbol)?;
        if symbol.as_deref().is_some_and(|s| s.chars().count() > 2) {
            return Err(CyError::invalid("symbol must be a single character or emoji"));
        }
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
                "INSERT INTO credyt.asset (account_id, code, name, precision, rate_currency, label, symbol) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (account_id, code) DO NOTHING RETURNING code",
                &[
                    account.as_str().into(),
                    code.as_str().into(),
                    name.as_str().into(),
                    precision.into(),
                    rate_currency.as_str().into(),
                    label.into(),
                    symbol.into(),
                ],
            )?;
            let code = inserted
                .ok_or_else(|| CyError::conflict(format!("asset {code} already exists in account {account}")))?;
            if let Some(rate) = rate {
                // The rate given at creation holds for all time until another is added.
                run(
                    c,
                    "INSERT INTO credyt.asset_rate (account_id, asset, source, valid_from, rate) \
                     VALUES ($1, $2, $3, '-infinity', $4)",
                    &[
                        account.as_str().into(),
                        code.as_str().into(),
                        rate_currency.as_str().into(),
                        to_numeric(rate).into(),
                    ],
                )?;
            }
            Ok(code)
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
    publish: default!(Option<bool>, "true"),
) -> String {
    api(move || {
        let publish = validate::required("publish", publish)?;
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
                "INSERT INTO credyt.product (account_id, id, code, name, default_version) \
                 VALUES ($1, $2, $3, $4, CASE WHEN $5 THEN 1 END) \
                 ON CONFLICT (account_id, code) DO NOTHING RETURNING id",
                &[
                    account.as_str().into(),
                    id.as_str().into(),
                    code.as_str().into(),
                    name.as_str().into(),
                    publish.into(),
                ],
            )?;
            if inserted.is_none() {
                return Err(CyError::conflict(format!("a product with code {code:?} already exists"))
                    .hint("publish a new version with credyt.create_product_version()"));
            }
            insert_version(c, &account, &id, 1, publish, parsed, prices, entitlements)?;
            Ok(id)
        })
    })
}

#[pg_extern(security_definer)]
#[search_path(@extschema@, pg_temp)]
fn create_product_version(
    product: Option<String>,
    prices: Option<crate::json::Json>,
    entitlements: default!(Option<crate::json::Json>, "'[]'"),
    publish: default!(Option<bool>, "true"),
    make_default: default!(Option<bool>, "NULL"),
) -> i32 {
    api(move || {
        let publish = validate::required("publish", publish)?;
        let make_default = make_default.unwrap_or(publish);
        if make_default && !publish {
            return Err(CyError::invalid("make_default needs publish: a draft cannot be the default version"));
        }
        let prices = json_arg("prices", prices)?;
        let entitlements = crate::json::optional("entitlements", entitlements, crate::json::MAX_BYTES)?
            .unwrap_or_else(|| serde_json::json!([]));
        Spi::connect_mut(|c| {
            let account = scope(c)?;
            let id = live_product(c, &account, product.as_deref())?.id;
            let parsed = validate_version(c, &account, &prices, &entitlements)?;
            // Lock the product row: concurrent publishers get consecutive versions.
            let version = one::<i32>(
                c,
                "SELECT (SELECT max(version) FROM credyt.product_version WHERE product_id = p.id) + 1 \
                 FROM credyt.product p WHERE p.id = $1 FOR UPDATE",
                &[id.as_str().into()],
            )?
            .ok_or_else(|| CyError::internal("product vanished"))?;
            insert_version(c, &account, &id, version, publish, parsed, prices, entitlements)?;
            if make_default {
                run(
                    c,
                    "UPDATE credyt.product SET default_version = $2 WHERE id = $1",
                    &[id.as_str().into(), version.into()],
                )?;
            }
            Ok(version)
        })
    })
}
