//! The SQL-facing credit functions: grant(), set_auto_topup(), complete_topup().

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
            let lots = wallet::live_lots(c, &w)?;
            let now = wallet::available(&lots, &wallet);
            wallet::request_topup(c, &w, &mut wallet, now)
        })
    })
}

#[pg_extern(security_definer)]
#[search_path(@extschema@, pg_temp)]
fn complete_topup(
    topup_id: Option<String>,
    succeeded: Option<bool>,
    payment_reference: default!(Option<String>, "NULL"),
) {
    api(move || {
        let id = validate::required("topup_id", topup_id)?;
        let outcome =
            if validate::required("succeeded", succeeded)? { TopupStatus::Succeeded } else { TopupStatus::Failed };
        let reference = validate::optional_text("payment_reference", payment_reference)?;
        Spi::connect_mut(|c| {
            let account = scope(c)?;
            let Some(topup) = pending_topup(c, &account, &id, outcome)? else { return Ok(()) };
            let w = WalletRef { account: &account, customer: &topup.customer, name: &topup.name, asset: &topup.asset };
            let txn_id = match outcome {
                TopupStatus::Succeeded => Some(credit_topup(c, &w, &id, topup.amount, reference.as_deref())?),
                _ => None,
            };
            // (this UPDATE takes the wallet row's lock, after the top-up row's)
            run(
                c,
                "WITH t AS (UPDATE credyt.topup SET status = $2, payment_reference = $3, txn_id = $4, completed_at = now() \
                   WHERE id = $1) \
                 UPDATE credyt.wallet_account SET pending_topup = NULL \
                 WHERE customer_id = $5 AND name = $6 AND asset = $7 AND pending_topup = $1",
                &[id.as_str().into(), outcome.as_str().into(), reference.as_deref().into(), txn_id.as_deref().into(),
                  w.customer.into(), w.name.into(), w.asset.into()],
            )?;
            let topic = if outcome == TopupStatus::Succeeded {
                events::Topic::AutoTopupSucceeded
            } else {
                events::Topic::AutoTopupFailed
            };
            events::emit(
                c,
                &account,
                topic,
                pgrx::datetime::now(),
                json!({"topup_id": id, "customer_id": w.customer, "account_id": format!("{}:{}", w.name, w.asset),
                       "amount": num(topup.amount), "payment_reference": reference}),
            )?;
            Ok(())
        })
    })
}

/// A top-up's status (SPEC §7); the table's CHECK holds the same list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TopupStatus {
    Pending,
    Succeeded,
    Failed,
}

impl TopupStatus {
    fn as_str(self) -> &'static str {
        match self {
            TopupStatus::Pending => "pending",
            TopupStatus::Succeeded => "succeeded",
            TopupStatus::Failed => "failed",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        [TopupStatus::Pending, TopupStatus::Succeeded, TopupStatus::Failed].into_iter().find(|v| v.as_str() == s)
    }
}

/// A pending top-up, locked.
struct PendingTopup {
    customer: String,
    name: String,
    asset: String,
    amount: Decimal,
}

/// Locks the top-up and returns it while it is pending; None when it already has this
/// outcome (calling complete_topup twice is harmless), CY409 when it has the other.
fn pending_topup(c: &mut SpiClient<'_>, account: &str, id: &str, outcome: TopupStatus) -> Result<Option<PendingTopup>> {
    let t = run(
        c,
        "SELECT customer_id, wallet_name, asset, amount::text AS amount, status FROM credyt.topup \
         WHERE id = $1 AND account_id = $2 FOR UPDATE",
        &[id.into(), account.into()],
    )?;
    if t.is_empty() {
        return Err(CyError::not_found(format!("unknown top-up {id}")));
    }
    let row = t.first();
    match row.vocab("status", TopupStatus::parse)? {
        TopupStatus::Pending => {}
        s if s == outcome => return Ok(None),
        s => return Err(CyError::conflict(format!("top-up {id} already {}", s.as_str()))),
    }
    Ok(Some(PendingTopup {
        customer: row.req::<String>("customer_id")?,
        name: row.req::<String>("wallet_name")?,
        asset: row.req::<String>("asset")?,
        amount: row.amount("amount")?,
    }))
}

/// Credits a succeeded top-up as a `paid` lot; returns its ledger transaction.
fn credit_topup(
    c: &mut SpiClient<'_>,
    w: &WalletRef,
    id: &str,
    amount: Decimal,
    reference: Option<&str>,
) -> Result<String> {
    let txn = wallet::open_txn(c, w.account, "topup", w.customer, json!({"topup": id}), reference)?;
    let source = format!("topup:{id}");
    wallet::credit(
        c,
        w,
        &txn,
        Credit {
            amount,
            purpose: Purpose::Paid,
            priority: Purpose::Paid.default_priority(),
            effective_at: None,
            expires_at: None,
            on_expiry: ExpiryPolicy::Expire,
            rollover_cap: None,
            grant_id: None,
            source: &source,
            system_account: "external",
            kind: "topup",
        },
    )?;
    Ok(txn)
}
