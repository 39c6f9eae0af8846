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
            let p = live_product(c, &account, product.as_deref())?;
            let version = subscribable(c, &p, version)?;
            let id = crate::ids::new_id("sub")?;
            run(
                c,
                "INSERT INTO credyt.subscription (account_id, id, customer_id, product_id, version, quantity, seats, starts_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $6, $7)",
                &[account.as_str().into(), id.as_str().into(), customer.as_str().into(), p.id.as_str().into(),
                  version.into(), quantity.into(), starts_at.into()],
            )?;
            let prices = provision(c, &account, &customer, &p.id, version, starts_at, &format!("{id}:"))?;
            let fees = crate::billing::Subscribed {
                account: &account,
                customer: &customer,
                subscription: &id,
                version,
                prices: &prices,
                starts_at,
            };
            crate::billing::start(c, &fees)?;
            activate(c, std::slice::from_ref(&account), pgrx::datetime::now(), Some((&customer, &id)))?;
            Ok(id)
        })
    })
}

/// The version a new subscription (or a move) gets: the one asked for, or the
/// default; it must be published.
fn subscribable(c: &mut SpiClient<'_>, p: &Product, version: Option<i32>) -> Result<i32> {
    let version = match (version, p.default_version) {
        (Some(v), _) | (None, Some(v)) => v,
        (None, None) => {
            return Err(CyError::conflict(format!("product {} has no published version", p.id))
                .hint("publish one with credyt.publish_product_version()"))
        }
    };
    let status = one::<String>(
        c,
        "SELECT status FROM credyt.product_version WHERE product_id = $1 AND version = $2",
        &[p.id.as_str().into(), version.into()],
    )?
    .ok_or_else(|| CyError::not_found(format!("product {} has no version {version}", p.id)))?;
    if status != "published" {
        return Err(CyError::conflict(format!(
            "version {version} of product {} is {status}: only published versions can be subscribed to",
            p.id
        )));
    }
    Ok(version)
}

/// Provisions the default wallet account of every asset a version's prices charge in
/// and issues its entitlements from `from`, with grant keys under `key_prefix`.
/// Returns the version's prices.
#[allow(clippy::too_many_arguments)]
fn provision(
    c: &mut SpiClient<'_>,
    account: &str,
    customer: &str,
    product: &str,
    version: i32,
    from: TimestampWithTimeZone,
    key_prefix: &str,
) -> Result<Vec<Price>> {
    let t = run(
        c,
        "SELECT prices, entitlements FROM credyt.product_version WHERE product_id = $1 AND version = $2",
        &[product.into(), version.into()],
    )?;
    if t.is_empty() {
        return Err(CyError::not_found(format!("product {product} has no version {version}")));
    }
    let row = t.first();
    let prices = parse_prices(&row.req::<JsonB>("prices")?.0)
        .map_err(|e| CyError::internal(format!("stored prices invalid: {e}")))?;
    let entitlements = parse_entitlements(&row.req::<JsonB>("entitlements")?.0)
        .map_err(|e| CyError::internal(format!("stored entitlements invalid: {e}")))?;
    let assets: BTreeSet<&str> = prices.iter().flat_map(|p| p.assets()).collect();
    for asset in assets {
        crate::wallet::ensure(c, &crate::wallet::WalletRef { account, customer, name: "default", asset })?;
    }
    issue_entitlements(c, account, key_prefix, customer, entitlements, from)?;
    Ok(prices)
}

/// Issues a subscription's entitlements: one grant each, recurring when it has `every`,
/// from the subscription's start; cancel_subscription ends them. Their keys are
/// `key_prefix` (`sub_…:`) then `index:name`.
fn issue_entitlements(
    c: &mut SpiClient<'_>,
    account: &str,
    key_prefix: &str,
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
        // A one-off entitlement with a lifecycle lasts that long from the start.
        let expires_at = match &e.lasts {
            Some(period) => one::<TimestampWithTimeZone>(
                c,
                "SELECT $1 + $2::interval",
                &[starts_at.into(), period.as_str().into()],
            )?,
            None => None,
        };
        let spec = crate::credits::GrantSpec {
            key: format!("{key_prefix}{i}:{}", e.name),
            customer: customer.to_string(),
            wallet_name: "default".into(),
            asset: e.asset,
            amount: e.amount,
            purpose: e.purpose,
            priority: e.priority.unwrap_or(e.purpose.default_priority()),
            effective_at: Some(starts_at),
            expires_at,
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
            let s = lock_subscription(c, &account, &id)?;
            if s.ended {
                return Err(CyError::conflict(format!("subscription {id} is already cancelled")));
            }
            end(c, &account, &s.customer, &id, at)
        })
    })
}

/// A subscription, locked.
struct Subscription {
    customer: String,
    product: String,
    version: i32,
    starts_at: TimestampWithTimeZone,
    /// it has an end (past or scheduled)
    ended: bool,
    /// its end has passed
    over: bool,
}

fn lock_subscription(c: &mut SpiClient<'_>, account: &str, id: &str) -> Result<Subscription> {
    let customer = crate::billing::subscription_customer(c, account, id)?;
    let t = run(
        c,
        "SELECT customer_id, product_id, version, starts_at, ends_at IS NOT NULL AS ended, \
                coalesce(ends_at <= now(), false) AS over \
         FROM credyt.subscription WHERE customer_id = $3 AND id = $1 AND account_id = $2 FOR UPDATE",
        &[id.into(), account.into(), customer.into()],
    )?;
    if t.is_empty() {
        return Err(CyError::not_found(format!("unknown subscription {id}")));
    }
    let row = t.first();
    Ok(Subscription {
        customer: row.req("customer_id")?,
        product: row.req("product_id")?,
        version: row.req("version")?,
        starts_at: row.req("starts_at")?,
        ended: row.req("ended")?,
        over: row.req("over")?,
    })
}

/// Ends a subscription at `at` (at its start when `at` is earlier): its prices stop
/// matching events after it and its recurring entitlements issue no period from then.
fn end(c: &mut SpiClient<'_>, account: &str, customer: &str, id: &str, at: TimestampWithTimeZone) -> Result<()> {
    let ends = one::<TimestampWithTimeZone>(
        c,
        "UPDATE credyt.subscription SET ends_at = greatest($2, starts_at) WHERE customer_id = $3 AND id = $1 \
         RETURNING ends_at",
        &[id.into(), at.into(), customer.into()],
    )?
    .ok_or_else(|| CyError::internal("subscription vanished"))?;
    crate::credits::end_grants(c, account, &format!("{id}:"), ends)
}

/// Sets a subscription's status as Credyt's API does: `inactive` ends it now (already
/// ended: nothing to do); `active` keeps an active one active. A subscription that has
/// ended stays ended (subscribe again), and a scheduled one becomes active at its
/// start, so either asked to be `active` is CY409.
#[pg_extern(security_definer)]
#[search_path(@extschema@, pg_temp)]
fn set_subscription_status(subscription_id: Option<String>, status: Option<String>) {
    api(move || {
        let id = validate::required("subscription_id", subscription_id)?;
        let active = validate::vocab(
            "status",
            status,
            |s| match s {
                "active" => Some(true),
                "inactive" => Some(false),
                _ => None,
            },
            "active, inactive",
        )?;
        Spi::connect_mut(|c| {
            let account = scope(c)?;
            let s = lock_subscription(c, &account, &id)?;
            match (active, s.ended, s.over) {
                (false, true, _) => Ok(()),
                (false, false, _) => end(c, &account, &s.customer, &id, pgrx::datetime::now()),
                (true, _, true) => Err(CyError::conflict(format!("subscription {id} has ended"))
                    .hint("an ended subscription stays ended: subscribe the customer again")),
                (true, true, false) => {
                    Err(CyError::conflict(format!("subscription {id} is cancelled from its end date"))
                        .hint("a cancellation is final: subscribe the customer again after it"))
                }
                (true, false, false) => {
                    let started = one::<bool>(c, "SELECT $1 <= now()", &[s.starts_at.into()])?.unwrap_or(false);
                    if started {
                        Ok(())
                    } else {
                        Err(CyError::conflict(format!(
                            "subscription {id} is scheduled: it becomes active at its start"
                        )))
                    }
                }
            }
        })
    })
}

/// Moves a subscription to another published version of its product (NULL: the
/// default) from now on: events from now are priced by it; the old version's
/// recurring entitlements stop and the new version's are issued from now (or from
/// the start of a scheduled subscription). The same version again changes nothing.
#[pg_extern(security_definer)]
#[search_path(@extschema@, pg_temp)]
fn change_subscription_version(subscription_id: Option<String>, version: default!(Option<i32>, "NULL")) -> i32 {
    api(move || {
        let id = validate::required("subscription_id", subscription_id)?;
        Spi::connect_mut(|c| {
            let account = scope(c)?;
            let s = lock_subscription(c, &account, &id)?;
            if s.ended {
                return Err(CyError::conflict(format!("subscription {id} is cancelled")));
            }
            let p = live_product(c, &account, Some(&s.product))?;
            let version = subscribable(c, &p, version)?;
            if version == s.version {
                return Ok(version);
            }
            let from = one::<TimestampWithTimeZone>(c, "SELECT greatest(now(), $1)", &[s.starts_at.into()])?
                .ok_or_else(|| CyError::internal("no time"))?;
            run(
                c,
                "UPDATE credyt.subscription SET version = $2 WHERE customer_id = $3 AND id = $1",
                &[id.as_str().into(), version.into(), s.customer.as_str().into()],
            )?;
            crate::credits::end_grants(c, &account, &format!("{id}:"), from)?;
            // New keys for the new version's grants: `sub_…:v2@<micros>:index:name`.
            let micros =
                one::<i64>(c, "SELECT (extract(epoch FROM $1) * 1000000)::bigint", &[from.into()])?.unwrap_or_default();
            let prices =
                provision(c, &account, &s.customer, &p.id, version, from, &format!("{id}:v{version}@{micros}:"))?;
            let fees = crate::billing::Subscribed {
                account: &account,
                customer: &s.customer,
                subscription: &id,
                version,
                prices: &prices,
                starts_at: s.starts_at,
            };
            crate::billing::change_version(c, &fees, from)?;
            Ok(version)
        })
    })
}

/// What activate() writes once its due subscriptions are claimed (`due`).
macro_rules! activate_claimed {
    () => {
        "done AS (UPDATE credyt.subscription s SET activated_at = now() FROM due \
           WHERE s.customer_id = due.customer_id AND s.id = due.id \
           RETURNING s.account_id, s.id, s.customer_id, s.product_id, s.version, s.quantity, s.starts_at) \
         SELECT d.account_id, d.id, d.customer_id, d.product_id, p.code, d.version, d.quantity, d.starts_at \
         FROM done d JOIN credyt.product p ON p.id = d.product_id ORDER BY d.starts_at, d.id"
    };
}

/// Marks the subscriptions that have started by `now` as active, each once (SKIP
/// LOCKED: concurrent ticks activate each once), and emits `subscription.activated`
/// (occurred_at: its start). `only`: one subscription (subscribe). A subscription
/// cancelled before its start never becomes active. At most 10,000 per account per call.
pub fn activate(
    c: &mut SpiClient<'_>,
    accounts: &[String],
    now: TimestampWithTimeZone,
    only: Option<(&str, &str)>,
) -> Result<i64> {
    const ALL: &str = concat!(
        "WITH due AS (SELECT customer_id, id FROM credyt.subscription WHERE id = ANY (ARRAY( \
             SELECT x.id FROM unnest($1::text[]) AS a(id) CROSS JOIN LATERAL ( \
               SELECT s.id FROM credyt.subscription s WHERE s.account_id = a.id AND s.activated_at IS NULL \
                 AND s.starts_at <= $2 AND (s.ends_at IS NULL OR s.ends_at > s.starts_at) AND ($3::text IS NULL OR s.id = $3) \
               ORDER BY s.starts_at LIMIT 10000) x)) \
           AND activated_at IS NULL AND starts_at <= $2 FOR UPDATE SKIP LOCKED), ",
        activate_claimed!()
    );
    // On Citus (crate::distributed::due_by_customer): found per account, claimed per customer.
    const DUE: &str = "SELECT customer_id, id FROM credyt.subscription WHERE account_id = $1 AND activated_at IS NULL \
           AND starts_at <= $2 AND (ends_at IS NULL OR ends_at > starts_at) ORDER BY starts_at LIMIT $3";
    const ONE_CUSTOMER: &str = concat!(
        "WITH due AS (SELECT customer_id, id FROM credyt.subscription WHERE customer_id = $1 AND id = ANY($3::text[]) \
           AND activated_at IS NULL AND starts_at <= $2 FOR UPDATE SKIP LOCKED), ",
        activate_claimed!()
    );
    let mut rows = Vec::new();
    match (crate::distributed::active(), only) {
        (false, _) => rows.push(run(c, ALL, &[accounts.to_vec().into(), now.into(), only.map(|o| o.1).into()])?),
        (true, Some((customer, id))) => {
            rows.push(run(c, ONE_CUSTOMER, &[customer.into(), now.into(), vec![id.to_string()].into()])?);
        }
        (true, None) => {
            for (customer, ids) in crate::distributed::due_by_customer(c, DUE, accounts, now, 10_000)? {
                rows.push(run(c, ONE_CUSTOMER, &[customer.into(), now.into(), ids.into()])?);
            }
        }
    }
    let mut started = Vec::new();
    for row in rows.into_iter().flatten() {
        let at = row.req::<TimestampWithTimeZone>("starts_at")?;
        let data = serde_json::json!({
            "subscription_id": row.req::<String>("id")?, "customer_id": row.req::<String>("customer_id")?,
            "product_id": row.req::<String>("product_id")?, "product": row.req::<String>("code")?,
            "version": row.req::<i32>("version")?, "quantity": row.req::<i32>("quantity")?,
            "starts_at": credyt_core::billing::rfc3339(at.into_inner()),
        });
        started.push((row.req::<String>("account_id")?, at, data));
    }
    let n = started.len() as i64;
    for (account, at, data) in started {
        crate::events::emit(c, &account, crate::events::Topic::SubscriptionActivated, at, data)?;
    }
    Ok(n)
}
