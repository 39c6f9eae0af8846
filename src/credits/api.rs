//! The SQL-facing credit functions: grant(), set_auto_topup().

use super::*;

#[pg_extern(security_definer, name = "grant")]
#[search_path(@extschema@, pg_temp)]
#[allow(clippy::too_many_arguments)]
fn grant_credit(
    customer: Option<String>,
    grant_id: Option<String>,
    asset: Option<String>,
    amount: Option<AnyNumeric>,
    purpose: default!(Option<String>, "'promotion'"),
    priority: default!(Option<i32>, "NULL"),
    effective_at: default!(Option<TimestampWithTimeZone>, "NULL"),
    expires_at: default!(Option<TimestampWithTimeZone>, "NULL"),
    every: default!(Option<Interval>, "NULL"),
    on_expiry: default!(Option<String>, "'expire'"),
    rollover_cap: default!(Option<AnyNumeric>, "NULL"),
    account_name: default!(Option<String>, "'default'"),
) -> String {
    api(move || {
        let key = validate::key("grant_id", grant_id)?;
        let amount = money::positive("amount", amount)?;
        let purpose = validate::vocab("purpose", purpose, Purpose::parse, &format!("purposes: {}", Purpose::NAMES))?;
        let default = purpose.default_priority();
        let priority = match priority {
            Some(p) if p < 0 => return Err(CyError::invalid("priority must not be negative")),
            Some(p) => p,
            None => default,
        };
        let effective_at = validate::finite("effective_at", effective_at)?;
        let expires_at = validate::finite("expires_at", expires_at)?;
        let policies = format!("policies: {}", ExpiryPolicy::NAMES);
        let on_expiry = validate::vocab("on_expiry", on_expiry, ExpiryPolicy::parse, &policies)?;
        let rollover_cap = money::optional_non_negative("rollover_cap", rollover_cap)?;
        if rollover_cap.is_some() && on_expiry != ExpiryPolicy::Rollover {
            return Err(CyError::invalid("rollover_cap applies to on_expiry 'rollover' only"));
        }
        let name = validate::wallet_name(account_name)?;
        if let Some(e) = every {
            let period = period_of(&e);
            period.check_recurring().map_err(|why| {
                CyError::invalid(format!("every {why}"))
                    .hint("recurring grants take a period from one hour to one year, e.g. '1 month' or '7 days'")
            })?;
        }
        Spi::connect_mut(|c| {
            let account = scope(c)?;
            let asset = resolve_asset(c, &account, asset.as_deref())?;
            let customer = customers::resolve(c, &account, customer.as_deref())?;
            create(
                c,
                &account,
                &GrantSpec {
                    key,
                    customer,
                    wallet_name: name,
                    asset: asset.code,
                    amount,
                    purpose,
                    priority,
                    effective_at,
                    expires_at,
                    every,
                    on_expiry,
                    rollover_cap,
                },
            )
        })
    })
}

// ---------------------------------------------------------------------------------
// Auto top-up (SPEC §8)

#[pg_extern(security_definer)]
#[search_path(@extschema@, pg_temp)]
fn set_auto_topup(
    customer: Option<String>,
    asset: Option<String>,
    threshold: Option<AnyNumeric>,
    amount: Option<AnyNumeric>,
    account_name: default!(Option<String>, "'default'"),
    enabled: default!(Option<bool>, "true"),
) {
    api(move || {
        let enabled = validate::required("enabled", enabled)?;
        let threshold = money::optional_signed("threshold", threshold)?;
        let amount = money::positive("amount", amount)?;
        let threshold = threshold.ok_or_else(|| CyError::invalid("threshold must not be NULL"))?;
        let name = validate::wallet_name(account_name)?;
        Spi::connect_mut(|c| {
            let t = wallet::Target::resolve(c, asset.as_deref(), customer.as_deref())?;
            credyt_core::money::check_precision(amount, t.asset.precision).map_err(|e| {
                CyError::invalid(format!("amount {}", e.describe()))
                    .detail(format!("{} has {} decimal places", t.asset.code, t.asset.precision))
            })?;
            let w = t.wallet(&name);
            let mut wallet = wallet::lock(c, &w)?;
            run(
                c,
                "UPDATE credyt.wallet_account SET topup_enabled = $4, topup_threshold = $5, topup_amount = $6, updated_at = now() \
                 WHERE customer_id = $1 AND name = $2 AND asset = $3",
                &[w.customer.into(), w.name.into(), w.asset.into(), enabled.into(), to_numeric(threshold).into(), to_numeric(amount).into()],
            )?;
            // Already below: request one now rather than at the next charge.
            wallet.auto_topup = enabled.then_some((threshold, amount));
            let now = wallet.available();
            wallet::request_topup(c, &w, &mut wallet, now)
        })
    })
}
