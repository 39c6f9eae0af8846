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
