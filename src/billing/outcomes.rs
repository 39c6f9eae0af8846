//! Outcomes (SPEC §9): record_outcome charges every matching `outcome` price of the
//! customer's subscriptions; reverse_outcome gives the whole fee back while the
//! settlement window is open.
//!
//! Idempotent by outcome_id per account, like usage events: the outcome row is claimed
//! first (a concurrent duplicate waits on its unique-index entry), then the wallets
//! are drawn. A replay with the same payload returns the original with duplicate =
//! true; occurred_at counts only when both calls gave one. The window of an outcome
//! charged by several prices is the shortest of theirs: the whole fee goes back, or
//! none of it.

use super::*;
use crate::money::{self as money_args};
use credyt_core::billing::outcome_fee;
use credyt_core::pricing::parse_price;
use pgrx::{AnyNumeric, JsonB};

type OutcomeRow = (String, bool, String, JsonB, Option<TimestampWithTimeZone>);

/// One fee of an outcome: (subscription, price position, asset, amount).
type OutcomeFee = (String, i32, String, Decimal);

/// The fees of an outcome: one per matching price and asset, with the prices'
/// shortest settlement window.
fn fees_of(
    c: &mut SpiClient<'_>,
    customer: &str,
    outcome_type: &str,
    value: Option<Decimal>,
    at: TimestampWithTimeZone,
) -> Result<(Vec<OutcomeFee>, Option<TimestampWithTimeZone>)> {
    let t = run(
        c,
        "SELECT s.id AS subscription_id, p.position, p.definition \
         FROM credyt.subscription s JOIN credyt.price p ON p.product_id = s.product_id AND p.version = s.version \
         WHERE s.customer_id = $1 AND s.starts_at <= $3 AND (s.ends_at IS NULL OR s.ends_at > $3) \
           AND p.type = 'outcome' AND p.definition->>'outcome_type' = $2 ORDER BY s.id, p.position",
        &[customer.into(), outcome_type.into(), at.into()],
    )?;
    let mut fees = Vec::new();
    let mut settles: Option<TimestampWithTimeZone> = None;
    for row in t {
        let definition = row.req::<JsonB>("definition")?.0;
        let price = parse_price(&definition, "price").map_err(|e| CyError::internal(format!("stored price: {e}")))?;
        let (sub, position) = (row.req::<String>("subscription_id")?, row.req::<i32>("position")?);
        for pricing in &price.pricing {
            let Some(v) = pricing.values.first() else { continue };
            let fee = outcome_fee(v.unit_price, v.percent, value, v.min_amount, v.max_amount);
            fees.push((sub.clone(), position, pricing.asset.clone(), fee));
        }
        let PriceKind::Outcome { settlement_window, .. } = &price.kind else { continue };
        // (core's one parser of periods: ISO 8601 or interval text; on the UTC calendar)
        let window = credyt_core::period::parse(settlement_window).map_err(CyError::internal)?.to_sql();
        let s = one::<TimestampWithTimeZone>(
            c,
            "SELECT (($1 AT TIME ZONE 'UTC') + $2::interval) AT TIME ZONE 'UTC'",
            &[at.into(), window.as_str().into()],
        )?
        .ok_or_else(|| CyError::internal("no settlement time"))?;
        settles = Some(match settles {
            Some(x) if x.into_inner() <= s.into_inner() => x,
            _ => s,
        });
    }
    Ok((fees, settles))
}

/// Draws each fee of an outcome from the customer's default wallet account in its
/// asset (`who` names the customer), under `txn`. Returns the fees as JSON, and
/// whether anything was drawn.
fn charge_fees(
    c: &mut SpiClient<'_>,
    who: &WalletRef,
    txn: &str,
    fees: &[OutcomeFee],
) -> Result<(serde_json::Value, bool)> {
    let mut listed = Vec::new();
    let mut charged = false;
    for (sub, position, asset, amount) in fees {
        if *amount > Decimal::ZERO {
            let w = WalletRef { asset, ..*who };
            let d = Debit { amount: *amount, draw: DrawFrom::AnyLot, system_account: "revenue", kind: "outcome_fee" };
            wallet::debit(c, &w, txn, d)?;
            charged = true;
        }
        listed.push(json!({"subscription_id": sub, "price": position, "asset": asset, "amount": num(*amount)}));
    }
    Ok((serde_json::Value::Array(listed), charged))
}

/// The original outcome for a replay of `key`, or CY409 when the payload differs.
fn replayed(
    c: &mut SpiClient<'_>,
    account: &str,
    customer: &str,
    key: &str,
    payload: &serde_json::Value,
) -> Result<OutcomeRow> {
    macro_rules! original {
        () => {
            "SELECT status, fees, settles_at, payload::text AS original, \
                    payload - 'occurred_at' = $3 - 'occurred_at' \
                      AND (payload->'occurred_at' = 'null' OR $3->'occurred_at' = 'null' \
                           OR payload->'occurred_at' = $3->'occurred_at') AS same \
             FROM credyt.outcome "
        };
    }
    const BY_ACCOUNT: &str = concat!(original!(), "WHERE account_id = $1 AND outcome_key = $2");
    const BY_CUSTOMER: &str = concat!(original!(), "WHERE customer_id = $4 AND account_id = $1 AND outcome_key = $2");
    let t = run(
        c,
        crate::distributed::pick(BY_ACCOUNT, BY_CUSTOMER),
        &[account.into(), key.into(), JsonB(payload.clone()).into(), customer.into()],
    )?;
    if t.is_empty() {
        return Err(CyError::internal("outcome vanished"));
    }
    let row = t.first();
    if !row.req::<bool>("same")? {
        return Err(CyError::conflict(format!("outcome_id {key:?} was already used with a different payload"))
            .detail(format!("original: {}", row.req::<String>("original")?)));
    }
    Ok((key.to_string(), true, row.req("status")?, row.req("fees")?, row.opt("settles_at")?))
}

/// The customer of outcome `key` (None: unknown). On Citus, where keys are per
/// customer, one that several customers used is CY409.
fn outcome_customer(c: &mut SpiClient<'_>, account: &str, key: &str) -> Result<Option<String>> {
    let t = run(
        c,
        "SELECT customer_id FROM credyt.outcome WHERE account_id = $1 AND outcome_key = $2 LIMIT 2",
        &[account.into(), key.into()],
    )?;
    let found: Vec<String> = t.into_iter().map(|r| r.req::<String>("customer_id")).collect::<Result<_>>()?;
    match found.len() {
        0 | 1 => Ok(found.into_iter().next()),
        _ => Err(CyError::conflict(format!("outcome_id {key:?} names outcomes of several customers"))),
    }
}

#[allow(clippy::too_many_arguments)]
fn record(
    c: &mut SpiClient<'_>,
    customer: Option<String>,
    key: String,
    outcome_type: String,
    value: Option<Decimal>,
    data: serde_json::Value,
    occurred_at: Option<TimestampWithTimeZone>,
) -> Result<OutcomeRow> {
    let account = scope(c)?;
    let customer = crate::customers::resolve(c, &account, customer.as_deref())?;
    let at = occurred_at.unwrap_or_else(pgrx::datetime::now);
    let payload = json!({
        "customer": customer, "outcome_type": outcome_type, "value": value.map(|v| v.normalize().to_string()),
        "data": data, "occurred_at": occurred_at.map(|t| rfc3339(t.into_inner())),
    });
    let txn = crate::ids::new_id("txn")?;
    let claimed = one::<bool>(
        c,
        "INSERT INTO credyt.outcome (account_id, outcome_key, customer_id, outcome_type, value, data, occurred_at, \
           payload, txn_id, status, fees) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'pending', '[]') \
         ON CONFLICT DO NOTHING RETURNING true",
        &[
            account.as_str().into(),
            key.as_str().into(),
            customer.as_str().into(),
            outcome_type.as_str().into(),
            value.map(to_numeric).into(),
            JsonB(data).into(),
            at.into(),
            JsonB(payload.clone()).into(),
            txn.as_str().into(),
        ],
    )?;
    if claimed.is_none() {
        return replayed(c, &account, &customer, &key, &payload);
    }
    let (fees, settles_at) = fees_of(c, &customer, &outcome_type, value, at)?;
    let who = WalletRef { account: &account, customer: &customer, name: "default", asset: "" };
    let (listed, charged) = charge_fees(c, &who, &txn, &fees)?;
    if charged {
        let header_payload = json!({"outcome_id": key, "outcome_type": outcome_type});
        let header = Header {
            id: txn,
            key: None,
            customer: &customer,
            payload: &header_payload,
            description: None,
            metadata: None,
        };
        header.write(c, &account, "outcome")?;
    }
    let status = if fees.is_empty() { "no_match" } else { "charged" };
    let fees = listed;
    run(
        c,
        "UPDATE credyt.outcome SET status = $3, fees = $4, settles_at = $5, txn_id = CASE WHEN $6 THEN txn_id END \
         WHERE customer_id = $7 AND account_id = $1 AND outcome_key = $2",
        &[
            account.as_str().into(),
            key.as_str().into(),
            status.into(),
            JsonB(fees.clone()).into(),
            settles_at.into(),
            charged.into(),
            customer.as_str().into(),
        ],
    )?;
    Ok((key, false, status.to_string(), JsonB(fees), settles_at))
}

/// Records an outcome and charges its fees; returns one row like record_usage.
#[pg_extern(security_definer)]
#[search_path(@extschema@, pg_temp)]
fn record_outcome(
    customer: Option<String>,
    outcome_id: Option<String>,
    outcome_type: Option<String>,
    value: default!(Option<AnyNumeric>, "NULL"),
    data: default!(Option<crate::json::Json>, "'{}'"),
    occurred_at: default!(Option<TimestampWithTimeZone>, "NULL"),
) -> TableIterator<
    'static,
    (
        name!(outcome_id, String),
        name!(duplicate, bool),
        name!(status, String),
        name!(fees, JsonB),
        name!(settles_at, Option<TimestampWithTimeZone>),
    ),
> {
    let row = api(move || {
        let key = validate::key("outcome_id", outcome_id)?;
        let outcome_type = validate::key("outcome_type", outcome_type)?;
        let value = money_args::optional_non_negative("value", value)?;
        let data = crate::json::optional("data", data, crate::json::MAX_BYTES)?.unwrap_or_else(|| json!({}));
        if !data.is_object() {
            return Err(CyError::invalid("data must be a JSON object"));
        }
        let occurred_at = validate::finite("occurred_at", occurred_at)?;
        Spi::connect_mut(|c| record(c, customer, key, outcome_type, value, data, occurred_at))
    });
    TableIterator::new(std::iter::once(row))
}

/// Reverses an outcome: the whole fee back to the lots it drew, once (again: the same
/// reversal). CY410 once the settlement window has closed. Returns the reversal's
/// transaction id.
fn mark_reversed(
    c: &mut SpiClient<'_>,
    account: &str,
    customer: &str,
    key: &str,
    txn: &str,
    reason: Option<&str>,
) -> Result<()> {
    run(
        c,
        "UPDATE credyt.outcome SET status = 'reversed', reversal_txn_id = $3, reversed_at = now(), reversal_reason = $4 \
         WHERE customer_id = $5 AND account_id = $1 AND outcome_key = $2",
        &[account.into(), key.into(), txn.into(), reason.into(), customer.into()],
    )?;
    Ok(())
}

/// Gives the draws of `original` back, in each asset its fees were in, to the lots of
/// `who`'s default wallet account they came from (wallet::restore).
fn restore_fees(
    c: &mut SpiClient<'_>,
    who: &WalletRef,
    fees: &serde_json::Value,
    txn: &str,
    original: &str,
    since: TimestampWithTimeZone,
) -> Result<()> {
    let mut assets: Vec<String> =
        fees.as_array().into_iter().flatten().filter_map(|f| f["asset"].as_str().map(String::from)).collect();
    assets.sort();
    assets.dedup();
    for asset in &assets {
        let w = WalletRef { asset, ..*who };
        wallet::restore(c, &w, txn, (original, "outcome_fee"), since, "outcome_reversal")?;
    }
    Ok(())
}

#[pg_extern(security_definer)]
#[search_path(@extschema@, pg_temp)]
fn reverse_outcome(outcome_id: Option<String>, reason: default!(Option<String>, "NULL")) -> String {
    api(move || {
        let key = validate::key("outcome_id", outcome_id)?;
        let reason = validate::optional_text("reason", reason)?;
        Spi::connect_mut(|c| {
            let account = scope(c)?;
            // its customer first: on Citus the lock is taken on that customer's shard
            let owner = outcome_customer(c, &account, &key)?;
            let t = run(
                c,
                "SELECT customer_id, outcome_type, status, txn_id, reversal_txn_id, fees, recorded_at, \
                        coalesce(settles_at > now(), false) AS open \
                 FROM credyt.outcome WHERE customer_id = $3 AND account_id = $1 AND outcome_key = $2 FOR UPDATE",
                &[account.as_str().into(), key.as_str().into(), owner.into()],
            )?;
            if t.is_empty() {
                return Err(CyError::not_found(format!("unknown outcome {key}")));
            }
            let row = t.first();
            if let Some(done) = row.opt::<String>("reversal_txn_id")? {
                return Ok(done);
            }
            let Some(original) = row.opt::<String>("txn_id")? else {
                return Err(CyError::conflict(format!("outcome {key} charged nothing: there is nothing to reverse")));
            };
            if !row.req::<bool>("open")? {
                return Err(CyError::new(Code::Gone, format!("the settlement window of outcome {key} has closed"))
                    .hint("a reversal is possible only until occurred_at + the price's settlement_window"));
            }
            let customer = row.req::<String>("customer_id")?;
            let fees = row.req::<JsonB>("fees")?.0;
            let since = row.req::<TimestampWithTimeZone>("recorded_at")?;
            let txn = crate::ids::new_id("txn")?;
            restore_fees(
                c,
                &WalletRef { account: &account, customer: &customer, name: "default", asset: "" },
                &fees,
                &txn,
                &original,
                since,
            )?;
            let payload = json!({"outcome_id": key, "reverses": original, "reason": reason});
            let header = Header {
                id: txn.clone(),
                key: None,
                customer: &customer,
                payload: &payload,
                description: reason.as_deref(),
                metadata: None,
            };
            header.write(c, &account, "outcome_reversal")?;
            mark_reversed(c, &account, &customer, &key, &txn, reason.as_deref())?;
            let data = json!({
                "outcome_id": key, "customer_id": customer, "outcome_type": row.req::<String>("outcome_type")?,
                "fees": fees, "reason": reason, "transaction_id": txn,
            });
            events::emit(c, &account, events::Topic::OutcomeReversed, pgrx::datetime::now(), data)?;
            Ok(txn)
        })
    })
}
