//! Stripe (SPEC §15): an account connects its own Stripe account; credyt-server
//! creates Checkout Sessions for top-ups with its key; Stripe's webhook is verified
//! here, in the database, with the webhook secret of the connection the event names, so
//! that no code outside can complete a top-up without Stripe's signature.

use crate::credits::topups::{finish, TopupStatus};
use crate::error::{api, CyError, Result};
use crate::scope::{is_server, scope};
use crate::spi::{one, run, Row};
use crate::validate;
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use serde_json::Value;

/// Connects the account in scope to its Stripe account (again: replaces the keys).
#[pg_extern(security_definer)]
#[search_path(@extschema@, pg_temp)]
fn connect_stripe(secret_key: Option<String>, webhook_secret: Option<String>) {
    api(move || {
        let key = validate::required("secret_key", secret_key)?;
        let live = ["sk_live_", "rk_live_"].iter().any(|p| key.starts_with(p));
        let test = ["sk_test_", "rk_test_"].iter().any(|p| key.starts_with(p));
        if !(live || test)
            || key.len() < 16
            || key.len() > 255
            || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(CyError::invalid("secret_key must be a Stripe secret or restricted key (sk_… or rk_…)"));
        }
        let secret = validate::required("webhook_secret", webhook_secret)?;
        if !secret.starts_with("whsec_") || secret.len() < 12 || secret.len() > 255 {
            return Err(CyError::invalid("webhook_secret must be a Stripe webhook signing secret (whsec_…)"));
        }
        let hint = format!("{}…{}", &key[..8], &key[key.len() - 4..]);
        Spi::connect_mut(|c| {
            let account = scope(c)?;
            run(
                c,
                "INSERT INTO credyt.stripe_connection (account_id, secret_key, webhook_secret, key_hint, livemode) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (account_id) DO UPDATE SET secret_key = EXCLUDED.secret_key, \
                   webhook_secret = EXCLUDED.webhook_secret, key_hint = EXCLUDED.key_hint, livemode = EXCLUDED.livemode, \
                   connected_at = EXCLUDED.connected_at",
                &[account.as_str().into(), key.as_str().into(), secret.as_str().into(), hint.as_str().into(), live.into()],
            )?;
            Ok(())
        })
    })
}

/// The Stripe connection that collects for `account`: its own, else the nearest
/// ancestor's (a platform collects for its connected accounts). (account, secret key)
fn connection_for(c: &mut SpiClient<'_>, account: &str) -> Result<Option<(String, String)>> {
    let t = run(
        c,
        "WITH RECURSIVE up(id, parent_id, depth) AS ( \
           SELECT id, parent_id, 0 FROM credyt.account WHERE id = $1 \
           UNION ALL SELECT a.id, a.parent_id, up.depth + 1 FROM credyt.account a JOIN up ON a.id = up.parent_id \
             WHERE up.depth < 64) \
         SELECT s.account_id, s.secret_key FROM up JOIN credyt.stripe_connection s ON s.account_id = up.id \
         ORDER BY up.depth LIMIT 1",
        &[account.into()],
    )?;
    if t.is_empty() {
        return Ok(None);
    }
    let row = t.first();
    Ok(Some((row.req("account_id")?, row.req("secret_key")?)))
}

/// For credyt-server only (a server role, with a key authenticated): the Stripe secret
/// key that collects for the account in scope, and whose connection it is.
#[pg_extern(security_definer)]
#[search_path(@extschema@, pg_temp)]
fn _server_stripe_key() -> TableIterator<'static, (name!(connection, String), name!(secret_key, String))> {
    api(|| {
        Spi::connect_mut(|c| {
            if !is_server(c)? {
                return Err(CyError::forbidden("only credyt-server may read Stripe keys"));
            }
            let account = scope(c)?;
            let (connection, key) = connection_for(c, &account)?.ok_or_else(|| {
                CyError::conflict(format!("account {account} has no Stripe connection"))
                    .hint("connect one with credyt.connect_stripe(secret_key, webhook_secret)")
            })?;
            Ok(TableIterator::once((connection, key)))
        })
    })
}

/// For credyt-server only: a checkout top-up's Checkout Session exists; the top-up is
/// pending until Stripe says how it ended. A second call with the same session is
/// harmless.
#[pg_extern(security_definer)]
#[search_path(@extschema@, pg_temp)]
fn _server_topup_session(
    topup_id: Option<String>,
    session_id: Option<String>,
    redirect_url: Option<String>,
    expires_at: Option<TimestampWithTimeZone>,
) {
    api(move || {
        let id = validate::required("topup_id", topup_id)?;
        let session = validate::required("session_id", session_id)?;
        let url = validate::required("redirect_url", redirect_url)?;
        Spi::connect_mut(|c| {
            if !is_server(c)? {
                return Err(CyError::forbidden("only credyt-server records Checkout Sessions"));
            }
            let account = scope(c)?;
            let n = one::<i64>(
                c,
                "WITH u AS (UPDATE credyt.topup SET status = 'pending', stripe_session = $3, redirect_url = $4, \
                   session_expires_at = $5 WHERE id = $1 AND account_id = $2 AND kind = 'checkout' \
                   AND (status = 'initiated' OR (status = 'pending' AND stripe_session = $3)) RETURNING 1) \
                 SELECT count(*) FROM u",
                &[
                    id.as_str().into(),
                    account.as_str().into(),
                    session.as_str().into(),
                    url.as_str().into(),
                    expires_at.into(),
                ],
            )?;
            if n != Some(1) {
                return Err(CyError::conflict(format!("top-up {id} is not a checkout top-up awaiting its session")));
            }
            Ok(())
        })
    })
}

/// Stripe's webhook: `payload` exactly as received, `signature` its Stripe-Signature
/// header. Verified with the webhook secret of the connection its object's metadata
/// names (credyt_connection; credyt_account and credyt_topup say whose top-up), within
/// five minutes; each Stripe event is handled once. Returns what it did: succeeded,
/// failed, expired, pending, duplicate or ignored (an event that is not credyt's).
#[pg_extern(security_definer)]
#[search_path(@extschema@, pg_temp)]
fn stripe_webhook(payload: Option<String>, signature: Option<String>) -> String {
    api(move || {
        let payload = validate::required("payload", payload)?;
        let signature = validate::required("signature", signature)?;
        if payload.len() > crate::json::MAX_BYTES {
            return Err(CyError::invalid("payload is larger than 1 MiB"));
        }
        credyt_core::stripe::parse(&signature)
            .map_err(|e| CyError::invalid(format!("invalid Stripe signature: {}", e.describe())))?;
        let event: Value = serde_json::from_str(&payload)
            .ok()
            .filter(|e: &Value| e["id"].is_string() && e["type"].is_string() && e["data"]["object"].is_object())
            .ok_or_else(|| CyError::invalid("payload is not a Stripe event (id, type, data.object)"))?;
        let object = &event["data"]["object"];
        let meta = |k: &str| object["metadata"][k].as_str().map(str::to_string);
        let (Some(connection), Some(account), Some(topup)) =
            (meta("credyt_connection"), meta("credyt_account"), meta("credyt_topup"))
        else {
            return Ok("ignored".to_string());
        };
        Spi::connect_mut(|c| {
            let secret = one::<String>(
                c,
                "SELECT webhook_secret FROM credyt.stripe_connection WHERE account_id = $1",
                &[connection.as_str().into()],
            )?
            .ok_or_else(|| CyError::invalid("invalid Stripe signature: the event names no Stripe connection"))?;
            let now = one::<i64>(c, "SELECT extract(epoch FROM now())::bigint", &[])?.unwrap_or_default();
            credyt_core::stripe::verify(&secret, &signature, payload.as_bytes(), now)
                .map_err(|e| CyError::invalid(format!("invalid Stripe signature: {}", e.describe())))?;
            // The connection must be the one that collects for the account.
            if connection_for(c, &account)?.map(|(a, _)| a).as_deref() != Some(connection.as_str()) {
                return Err(CyError::invalid(
                    "invalid Stripe signature: the connection does not collect for that account",
                ));
            }
            handle(c, &event, &account, &topup)
        })
    })
}

/// A verified Stripe event about `topup` of `account`, once.
fn handle(c: &mut SpiClient<'_>, event: &Value, account: &str, topup: &str) -> Result<String> {
    let (id, kind) = (event["id"].as_str().unwrap_or_default(), event["type"].as_str().unwrap_or_default());
    let object = &event["data"]["object"];
    let outcome = match kind {
        "checkout.session.completed" if object["payment_status"] == "paid" => Some(TopupStatus::Succeeded),
        "checkout.session.completed" => None, // an asynchronous payment: it ends later
        "checkout.session.async_payment_succeeded" | "payment_intent.succeeded" => Some(TopupStatus::Succeeded),
        "checkout.session.async_payment_failed" | "payment_intent.payment_failed" => Some(TopupStatus::Failed),
        "checkout.session.expired" => Some(TopupStatus::Expired),
        _ => return Ok("ignored".to_string()),
    };
    let said = outcome.map_or("pending", |o| o.as_str());
    let first = one::<String>(
        c,
        "INSERT INTO credyt.stripe_event (account_id, id, event_type, topup_id, outcome) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT DO NOTHING RETURNING id",
        &[account.into(), id.into(), kind.into(), topup.into(), said.into()],
    )?;
    if first.is_none() {
        return Ok("duplicate".to_string());
    }
    remember_card(c, account, topup, object)?;
    let Some(outcome) = outcome else { return Ok(said.to_string()) };
    let reference = object["payment_intent"].as_str().or_else(|| object["id"].as_str());
    // A late failure after a success (or the reverse) is not applied twice: the first
    // outcome stands, and the event is recorded as seen.
    match finish(c, account, topup, outcome, reference) {
        Ok(_) => Ok(said.to_string()),
        Err(e) if e.code == crate::error::Code::Conflict => Ok(format!("ignored ({})", e.message)),
        Err(e) => Err(e),
    }
}

/// The Stripe customer and card of a paid top-up, kept for off-session payments.
fn remember_card(c: &mut SpiClient<'_>, account: &str, topup: &str, object: &Value) -> Result<()> {
    let Some(stripe_customer) = object["customer"].as_str() else { return Ok(()) };
    let method = object["payment_method"].as_str();
    run(
        c,
        "INSERT INTO credyt.stripe_customer (account_id, customer_id, stripe_customer, payment_method) \
         SELECT $1, t.customer_id, $3, $4 FROM credyt.topup t WHERE t.id = $2 AND t.account_id = $1 \
         ON CONFLICT (customer_id) DO UPDATE SET stripe_customer = EXCLUDED.stripe_customer, \
           payment_method = coalesce(EXCLUDED.payment_method, credyt.stripe_customer.payment_method), updated_at = EXCLUDED.updated_at",
        &[account.into(), topup.into(), stripe_customer.into(), method.into()],
    )?;
    Ok(())
}

/// Attempts at charging a saved card for one auto top-up before credyt gives up on it
/// (it stays pending; complete_topup can still end it).
const MAX_CHARGE_ATTEMPTS: i32 = 5;

/// For credyt-server only (a server role; no key needed: it works for every account):
/// claims up to `n` pending auto top-ups whose customer has a saved card and whose
/// account has a Stripe connection that collects for it, for `lease_seconds`, so that
/// one server charges each (and Stripe's Idempotency-Key, the top-up id, makes a second
/// attempt the same charge). The amount is the top-up's in its fiat asset, or, for a
/// custom unit, its value at the unit's rate now in the rate's currency, rounded up to
/// whole minor units (the customer never pays less than what is credited).
#[pg_extern(security_definer)]
#[search_path(@extschema@, pg_temp)]
#[allow(clippy::type_complexity)]
fn _server_claim_auto_topups(
    n: Option<i32>,
    lease_seconds: Option<i32>,
) -> TableIterator<
    'static,
    (
        name!(topup_id, String),
        name!(account_id, String),
        name!(connection, String),
        name!(secret_key, String),
        name!(stripe_customer, String),
        name!(payment_method, String),
        name!(currency, String),
        name!(amount, String),
    ),
> {
    api(move || {
        let n = validate::required("n", n)?.clamp(1, 100);
        let lease = validate::required("lease_seconds", lease_seconds)?.clamp(5, 3600);
        Spi::connect_mut(|c| {
            if !is_server(c)? {
                return Err(CyError::forbidden("only credyt-server charges saved cards"));
            }
            let claimed = claim_auto_topups(c, n, lease)?;
            let mut out = Vec::new();
            for (id, account, customer, asset, amount) in claimed {
                let Some((connection, key)) = connection_for(c, &account)? else { continue };
                let Some((currency, price)) = price_of(c, &account, &asset, amount)? else { continue };
                let t = run(
                    c,
                    "SELECT stripe_customer, payment_method FROM credyt.stripe_customer WHERE customer_id = $1",
                    &[customer.as_str().into()],
                )?;
                let row = t.first();
                out.push((
                    id,
                    account,
                    connection,
                    key,
                    row.req("stripe_customer")?,
                    row.req("payment_method")?,
                    currency,
                    price.to_string(),
                ));
            }
            Ok(TableIterator::new(out))
        })
    })
}

/// A claimed auto top-up: id, account, customer, asset, amount.
type Claimed = (String, String, String, String, rust_decimal::Decimal);

/// Leases up to `n` pending auto top-ups of customers with a saved card, oldest first,
/// for `lease` seconds, counting the attempt. One node claims them in one statement
/// (FOR UPDATE SKIP LOCKED). Citus locks no rows across shards: there they are found
/// without a lock, then each is claimed on its customer's shard by an UPDATE that
/// re-checks that it is still unclaimed, so two servers never both claim one.
fn claim_auto_topups(c: &mut SpiClient<'_>, n: i32, lease: i32) -> Result<Vec<Claimed>> {
    macro_rules! due {
        () => {
            "t.status = 'pending' AND t.kind = 'auto' \
             AND (t.charge_claimed_until IS NULL OR t.charge_claimed_until < now()) AND t.charge_attempts < $3"
        };
    }
    macro_rules! claim {
        () => {
            "UPDATE credyt.topup t SET charge_claimed_until = now() + $2 * interval '1 second', \
               charge_attempts = t.charge_attempts + 1 "
        };
    }
    macro_rules! returning {
        () => {
            " RETURNING t.id, t.account_id, t.customer_id, t.asset, t.amount::text AS amount"
        };
    }
    if !crate::distributed::active() {
        let sql = concat!(
            "WITH due AS (SELECT t.id FROM credyt.topup t JOIN credyt.stripe_customer sc ON sc.customer_id = t.customer_id \
               WHERE sc.payment_method IS NOT NULL AND ",
            due!(),
            " ORDER BY t.created_at LIMIT $1 FOR UPDATE OF t SKIP LOCKED) ",
            claim!(),
            "FROM due WHERE t.id = due.id",
            returning!()
        );
        return claimed_rows(run(c, sql, &[n.into(), lease.into(), MAX_CHARGE_ATTEMPTS.into()])?);
    }
    let found = run(
        c,
        concat!(
            "SELECT t.customer_id, t.id FROM credyt.topup t JOIN credyt.stripe_customer sc \
               ON sc.customer_id = t.customer_id WHERE sc.payment_method IS NOT NULL AND ",
            due!(),
            " ORDER BY t.created_at LIMIT $1"
        ),
        &[n.into(), lease.into(), MAX_CHARGE_ATTEMPTS.into()],
    )?;
    let mut due = Vec::new();
    for row in found {
        due.push((row.req::<String>("customer_id")?, row.req::<String>("id")?));
    }
    let mut rows = Vec::new();
    for (customer, id) in due {
        let sql = concat!(claim!(), "WHERE t.customer_id = $4 AND t.id = $5 AND ", due!(), returning!());
        let args = [n.into(), lease.into(), MAX_CHARGE_ATTEMPTS.into(), customer.into(), id.into()];
        rows.extend(claimed_rows(run(c, sql, &args)?)?);
    }
    Ok(rows)
}

fn claimed_rows(t: crate::spi::Table<'_>) -> Result<Vec<Claimed>> {
    let mut claimed = Vec::new();
    for row in t {
        claimed.push((
            row.req::<String>("id")?,
            row.req::<String>("account_id")?,
            row.req::<String>("customer_id")?,
            row.req::<String>("asset")?,
            row.amount("amount")?,
        ));
    }
    Ok(claimed)
}

/// What credited `amount` of `asset` costs: (currency, amount in it), or None for a
/// custom unit without a rate now.
fn price_of(
    c: &mut SpiClient<'_>,
    account: &str,
    asset: &str,
    amount: rust_decimal::Decimal,
) -> Result<Option<(String, rust_decimal::Decimal)>> {
    if let Some(f) = crate::assets::fiat(asset) {
        return Ok(Some((f.code, amount)));
    }
    let currency = one::<String>(
        c,
        "SELECT rate_currency FROM credyt.asset WHERE account_id = $1 AND code = $2",
        &[account.into(), asset.into()],
    )?;
    let Some(currency) = currency else { return Ok(None) };
    let Some(rate) = crate::assets::rate_at(c, account, asset, &currency, pgrx::datetime::now())? else {
        return Ok(None);
    };
    let places = credyt_core::fiat::minor_units(&currency).unwrap_or(2);
    Ok(Some((currency, (amount * rate).round_dp_with_strategy(places, rust_decimal::RoundingStrategy::AwayFromZero))))
}

/// For credyt-server only: the outcome of charging a saved card for an auto top-up
/// (the PaymentIntent's id as the reference, or Stripe's refusal): succeeded credits the
/// paid lot and emits auto_topup.succeeded, failed emits auto_topup.failed. Twice with
/// one outcome is harmless (Stripe's webhook may say the same).
#[pg_extern(security_definer)]
#[search_path(@extschema@, pg_temp)]
fn _server_auto_topup_result(topup_id: Option<String>, succeeded: Option<bool>, reference: Option<String>) -> bool {
    api(move || {
        let id = validate::required("topup_id", topup_id)?;
        let outcome =
            if validate::required("succeeded", succeeded)? { TopupStatus::Succeeded } else { TopupStatus::Failed };
        Spi::connect_mut(|c| {
            if !is_server(c)? {
                return Err(CyError::forbidden("only credyt-server records charges of saved cards"));
            }
            let account = one::<String>(
                c,
                "SELECT account_id FROM credyt.topup WHERE id = $1 AND kind = 'auto'",
                &[id.as_str().into()],
            )?
            .ok_or_else(|| CyError::not_found(format!("unknown auto top-up {id}")))?;
            finish(c, &account, &id, outcome, reference.as_deref())
        })
    })
}
