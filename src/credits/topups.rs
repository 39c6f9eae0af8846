//! Top-ups: auto top-ups (set_auto_topup requests them) and checkout top-ups
//! (initiate_topup; paid through Stripe Checkout), completed by complete_topup or by
//! Stripe's webhook (crate::stripe). A succeeded top-up is a `paid` lot.

use super::*;
use crate::assets::rate_at;

/// A top-up's status; the table's CHECK holds the same list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TopupStatus {
    /// a checkout top-up whose Checkout Session does not exist yet
    Initiated,
    Pending,
    Succeeded,
    Failed,
    /// a checkout top-up whose session expired unpaid
    Expired,
}

impl TopupStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TopupStatus::Initiated => "initiated",
            TopupStatus::Pending => "pending",
            TopupStatus::Succeeded => "succeeded",
            TopupStatus::Failed => "failed",
            TopupStatus::Expired => "expired",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        [
            TopupStatus::Initiated,
            TopupStatus::Pending,
            TopupStatus::Succeeded,
            TopupStatus::Failed,
            TopupStatus::Expired,
        ]
        .into_iter()
        .find(|v| v.as_str() == s)
    }
}

/// An open (initiated or pending) top-up, locked.
struct OpenTopup {
    customer: String,
    name: String,
    asset: String,
    amount: Decimal,
    checkout: bool,
    credit_expires_at: Option<TimestampWithTimeZone>,
}

/// Locks the top-up and returns it while it is open; None when it already has this
/// outcome (completing twice is harmless), CY409 when it has another.
fn open_topup(c: &mut SpiClient<'_>, account: &str, id: &str, outcome: TopupStatus) -> Result<Option<OpenTopup>> {
    // its customer first: on Citus the lock is taken on that customer's shard
    let unknown = || CyError::not_found(format!("unknown top-up {id}"));
    let customer = one::<String>(
        c,
        "SELECT customer_id FROM credyt.topup WHERE id = $1 AND account_id = $2",
        &[id.into(), account.into()],
    )?
    .ok_or_else(unknown)?;
    let t = run(
        c,
        "SELECT customer_id, wallet_name, asset, amount::text AS amount, status, kind, credit_expires_at \
         FROM credyt.topup WHERE customer_id = $3 AND id = $1 AND account_id = $2 FOR UPDATE",
        &[id.into(), account.into(), customer.into()],
    )?;
    if t.is_empty() {
        return Err(unknown());
    }
    let row = t.first();
    match row.vocab("status", TopupStatus::parse)? {
        TopupStatus::Pending | TopupStatus::Initiated => {}
        s if s == outcome => return Ok(None),
        s => return Err(CyError::conflict(format!("top-up {id} already {}", s.as_str()))),
    }
    let checkout = row.req::<String>("kind")? == "checkout";
    if outcome == TopupStatus::Expired && !checkout {
        return Err(CyError::conflict(format!("top-up {id} is an auto top-up: it does not expire")));
    }
    Ok(Some(OpenTopup {
        customer: row.req::<String>("customer_id")?,
        name: row.req::<String>("wallet_name")?,
        asset: row.req::<String>("asset")?,
        amount: row.amount("amount")?,
        checkout,
        credit_expires_at: row.opt("credit_expires_at")?,
    }))
}

/// Credits a succeeded top-up as a `paid` lot; returns its ledger transaction.
fn credit_topup(
    c: &mut SpiClient<'_>,
    w: &WalletRef,
    id: &str,
    t: &OpenTopup,
    reference: Option<&str>,
) -> Result<String> {
    let txn = wallet::open_txn(c, w.account, "topup", w.customer, json!({"topup": id}), reference)?;
    let source = format!("topup:{id}");
    wallet::credit(
        c,
        w,
        &txn,
        Credit {
            amount: t.amount,
            purpose: Purpose::Paid,
            priority: Purpose::Paid.default_priority(),
            effective_at: None,
            expires_at: t.credit_expires_at,
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

/// Ends an open top-up of `account` with `outcome`: succeeded credits its lot. Returns
/// false when it already had that outcome (nothing done). An auto top-up clears the
/// wallet's pending top-up and emits auto_topup.succeeded or auto_topup.failed.
pub fn finish(
    c: &mut SpiClient<'_>,
    account: &str,
    id: &str,
    outcome: TopupStatus,
    reference: Option<&str>,
) -> Result<bool> {
    let Some(topup) = open_topup(c, account, id, outcome)? else { return Ok(false) };
    let w = WalletRef { account, customer: &topup.customer, name: &topup.name, asset: &topup.asset };
    let txn_id = match outcome {
        TopupStatus::Succeeded => Some(credit_topup(c, &w, id, &topup, reference)?),
        _ => None,
    };
    // (this UPDATE takes the wallet row's lock, after the top-up row's)
    run(
        c,
        "WITH t AS (UPDATE credyt.topup SET status = $2, payment_reference = $3, txn_id = $4, completed_at = now() \
           WHERE customer_id = $5 AND id = $1) \
         UPDATE credyt.wallet_account SET pending_topup = NULL \
         WHERE customer_id = $5 AND name = $6 AND asset = $7 AND pending_topup = $1",
        &[
            id.into(),
            outcome.as_str().into(),
            reference.into(),
            txn_id.as_deref().into(),
            w.customer.into(),
            w.name.into(),
            w.asset.into(),
        ],
    )?;
    if topup.checkout {
        return Ok(true);
    }
    let topic = if outcome == TopupStatus::Succeeded {
        events::Topic::AutoTopupSucceeded
    } else {
        events::Topic::AutoTopupFailed
    };
    events::emit(
        c,
        account,
        topic,
        pgrx::datetime::now(),
        json!({"topup_id": id, "customer_id": w.customer, "account_id": format!("{}:{}", w.name, w.asset),
               "amount": money::json_number(topup.amount), "payment_reference": reference}),
    )?;
    Ok(true)
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
            finish(c, &account, &id, outcome, reference.as_deref()).map(|_| ())
        })
    })
}

/// A checkout top-up: the customer pays `amount` of `currency` and receives, in the
/// `account_name:asset` wallet account, the amount at `exchange_rate` (what one unit of
/// the asset costs in the currency; the asset's rate now when not given), rounded down
/// to the asset's precision, as a paid lot expiring at `credit_expires_at` (a year from
/// now by default). Status `initiated` until the payment page exists.
#[pg_extern(security_definer)]
#[search_path(@extschema@, pg_temp)]
#[allow(clippy::too_many_arguments)]
fn initiate_topup(
    customer: Option<String>,
    amount: Option<AnyNumeric>,
    currency: default!(Option<String>, "'USD'"),
    asset: default!(Option<String>, "NULL"),
    exchange_rate: default!(Option<AnyNumeric>, "NULL"),
    credit_expires_at: default!(Option<TimestampWithTimeZone>, "now() + interval '1 year'"),
    account_name: default!(Option<String>, "'default'"),
    return_url: default!(Option<String>, "NULL"),
    failure_url: default!(Option<String>, "NULL"),
) -> String {
    api(move || {
        let amount = money::positive("amount", amount)?;
        let currency = validate::required("currency", currency)?;
        let fiat = crate::assets::fiat(&currency)
            .ok_or_else(|| CyError::invalid(format!("currency {currency} is not an ISO 4217 currency")))?;
        credyt_core::money::check_precision(amount, fiat.precision)
            .map_err(|e| CyError::invalid(format!("amount {}", e.describe())))?;
        let exchange_rate = money::optional_non_negative("exchange_rate", exchange_rate)?;
        if exchange_rate.is_some_and(|r| r.is_zero()) {
            return Err(CyError::invalid("exchange_rate must be greater than zero"));
        }
        let credit_expires_at = validate::finite("credit_expires_at", credit_expires_at)?;
        validate::expiry_after(None, credit_expires_at)
            .map_err(|_| CyError::invalid("credit_expires_at must be in the future"))?;
        let name = validate::wallet_name(account_name)?;
        let (return_url, failure_url) =
            (validate::optional_url("return_url", return_url)?, validate::optional_url("failure_url", failure_url)?);
        Spi::connect_mut(|c| {
            let account = scope(c)?;
            let customer = customers::resolve(c, &account, customer.as_deref())?;
            let asset = resolve_asset(c, &account, Some(asset.as_deref().unwrap_or(&currency)))?;
            let rate = match exchange_rate {
                Some(r) => r,
                None => rate_at(c, &account, &asset.code, &currency, pgrx::datetime::now())?.ok_or_else(|| {
                    CyError::not_found(format!("{} has no rate in {currency}", asset.code))
                        .hint("pass exchange_rate, or add one with credyt.add_asset_rate()")
                })?,
            };
            let credited =
                (amount / rate).round_dp_with_strategy(asset.precision, rust_decimal::RoundingStrategy::ToZero);
            if credited.is_zero() {
                return Err(CyError::invalid(format!("amount buys no whole unit of {} at {rate}", asset.code)));
            }
            let w = WalletRef { account: &account, customer: &customer, name: &name, asset: &asset.code };
            wallet::ensure(c, &w)?;
            let id = crate::ids::new_id("top")?;
            run(
                c,
                "INSERT INTO credyt.topup (account_id, id, customer_id, wallet_name, asset, amount, status, kind, currency, \
                   payment_amount, credit_expires_at, return_url, failure_url) \
                 VALUES ($1, $2, $3, $4, $5, $6, 'initiated', 'checkout', $7, $8, $9, $10, $11)",
                &[account.as_str().into(), id.as_str().into(), customer.as_str().into(), name.as_str().into(),
                  asset.code.as_str().into(), to_numeric(credited).into(), currency.as_str().into(),
                  to_numeric(amount).into(), credit_expires_at.into(), return_url.into(), failure_url.into()],
            )?;
            Ok(id)
        })
    })
}
