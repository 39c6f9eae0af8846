//! subscribe and cancel_subscription: a customer on a pinned product version.

use super::*;

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
        let starts_at = validate::required_time("starts_at", starts_at)?;
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
            let prices = parse_prices(&row.req::<JsonB>("prices")?.0)
                .map_err(|e| CyError::internal(format!("stored prices invalid: {e}")))?;
            let entitlements = parse_entitlements(&row.req::<JsonB>("entitlements")?.0)
                .map_err(|e| CyError::internal(format!("stored entitlements invalid: {e}")))?;
            let id = crate::ids::new_id("sub")?;
            run(
                c,
                "INSERT INTO credyt.subscription (account_id, id, customer_id, product_id, version, quantity, starts_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
                &[account.as_str().into(), id.as_str().into(), customer.as_str().into(), product_id.as_str().into(),
                  version.into(), quantity.into(), starts_at.into()],
            )?;
            // Provision the default wallet account of every asset the prices charge in.
            let assets: BTreeSet<&str> = prices.iter().flat_map(|p| p.assets()).collect();
            for asset in assets {
                crate::wallet::ensure(
                    c,
                    &crate::wallet::WalletRef { account: &account, customer: &customer, name: "default", asset },
                )?;
            }
            issue_entitlements(c, &account, &id, &customer, entitlements, starts_at)?;
            Ok(id)
        })
    })
}

/// Issues a subscription's entitlements: one grant each, recurring when it has `every`,
/// from the subscription's start; cancel_subscription ends them.
fn issue_entitlements(
    c: &mut SpiClient<'_>,
    account: &str,
    subscription: &str,
    customer: &str,
    entitlements: Vec<credyt_core::pricing::Entitlement>,
    starts_at: TimestampWithTimeZone,
) -> Result<()> {
    for (i, e) in entitlements.into_iter().enumerate() {
        let every = match &e.every {
            // (core's period parser has made it Postgres interval text)
            Some(period) => one::<pgrx::datum::Interval>(c, "SELECT $1::interval", &[period.as_str().into()])?,
            None => None,
        };
        let spec = crate::credits::GrantSpec {
            key: format!("{subscription}:{i}:{}", e.name),
            customer: customer.to_string(),
            wallet_name: "default".into(),
            asset: e.asset,
            amount: e.amount,
            purpose: e.purpose,
            priority: e.priority.unwrap_or(e.purpose.default_priority()),
            effective_at: Some(starts_at),
            expires_at: None,
            every,
            on_expiry: e.on_expiry,
            rollover_cap: None,
        };
        crate::credits::create(c, account, &spec)?;
    }
    Ok(())
}

#[pg_extern(security_definer)]
#[search_path(@extschema@, pg_temp)]
fn cancel_subscription(subscription_id: Option<String>, at: default!(Option<TimestampWithTimeZone>, "now()")) {
    api(move || {
        let id = validate::required("subscription_id", subscription_id)?;
        let at = validate::required_time("at", at)?;
        Spi::connect_mut(|c| {
            let account = scope(c)?;
            let t = run(
                c,
                "SELECT ends_at IS NOT NULL AS ended FROM credyt.subscription WHERE id = $1 AND account_id = $2 FOR UPDATE",
                &[id.as_str().into(), account.as_str().into()],
            )?;
            if t.is_empty() {
                return Err(CyError::not_found(format!("unknown subscription {id}")));
            }
            let row = t.first();
            if row.req::<bool>("ended")? {
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
