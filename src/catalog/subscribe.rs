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
                // (parse_entitlements has checked both vocabularies)
                let purpose = Purpose::parse(&e.purpose)
                    .ok_or_else(|| CyError::internal(format!("stored entitlement purpose {:?}", e.purpose)))?;
                let on_expiry = ExpiryPolicy::parse(&e.on_expiry)
                    .ok_or_else(|| CyError::internal(format!("stored entitlement on_expiry {:?}", e.on_expiry)))?;
                let priority = e.priority.unwrap_or(purpose.default_priority());
                crate::credits::create(
                    c,
                    &account,
                    &crate::credits::GrantSpec {
                        key: format!("{id}:{i}:{}", e.name),
                        customer: customer.clone(),
                        wallet_name: "default".into(),
                        asset: e.asset,
                        amount: e.amount,
                        purpose,
                        priority,
                        effective_at: Some(starts_at),
                        expires_at: None,
                        every,
                        on_expiry,
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
