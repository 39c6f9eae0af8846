//! Auto top-ups charged for real: a loop claims pending auto top-ups whose customer
//! has a saved card (from a Checkout top-up) and charges it off-session (a
//! PaymentIntent with `off_session` and `confirm`), with the top-up id as Stripe's
//! Idempotency-Key, so that a retry, another server or a claim that outlived its lease
//! is the same charge. A success credits the paid lot and emits auto_topup.succeeded; a
//! decline emits auto_topup.failed. No database transaction is open while Stripe is
//! called: the claim commits first, the outcome is recorded after.

use crate::routes::topups::minor_units;
use crate::routes::App;
use crate::stripe::StripeError;
use std::time::Duration;
use tokio_postgres::Row;

/// Top-ups claimed per round, and how long a claim lasts (more than a call's retries).
const BATCH: i32 = 20;
const LEASE_SECS: i32 = 120;

pub async fn run(app: App, every: Duration, mut stop: tokio::sync::watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        match claim(&app).await {
            Ok(rows) => {
                for row in rows {
                    charge(&app, &row).await;
                }
            }
            Err(e) => {
                credyt_service::log!("error", "auto top-up claim failed", "error" => e.detail.clone().unwrap_or_default())
            }
        }
    }
}

async fn claim(app: &App) -> Result<Vec<Row>, crate::problem::Problem> {
    let s = app.db.unauthenticated().await?;
    let rows = s.query("SELECT * FROM credyt._server_claim_auto_topups($1, $2)", &[&BATCH, &LEASE_SECS]).await?;
    s.commit().await?;
    Ok(rows)
}

async fn charge(app: &App, row: &Row) {
    let (id, account, connection, key): (String, String, String, String) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    let (customer, method, currency, amount): (String, String, String, String) =
        (row.get(4), row.get(5), row.get(6), row.get(7));
    let exponent = credyt_core::fiat::minor_units(&currency).unwrap_or(2);
    let Some(minor) = minor_units(&amount, exponent) else {
        credyt_service::log!("error", "auto top-up amount", "topup" => id, "amount" => amount);
        return;
    };
    let mut form: Vec<(String, String)> = [
        ("amount", minor.to_string()),
        ("currency", currency.to_ascii_lowercase()),
        ("customer", customer),
        ("payment_method", method),
        ("off_session", "true".to_string()),
        ("confirm", "true".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    for (k, v) in [("credyt_topup", &id), ("credyt_account", &account), ("credyt_connection", &connection)] {
        form.push((format!("metadata[{k}]"), v.clone()));
    }
    let outcome = match app.stripe.post(&key, "/v1/payment_intents", &form, &id).await {
        Ok(pi) if pi["status"] == "succeeded" => (true, pi["id"].as_str().unwrap_or_default().to_string()),
        Ok(pi) => (false, format!("stripe: payment intent {}", pi["status"].as_str().unwrap_or("unknown"))),
        Err(StripeError::Refused(_, message)) => (false, format!("stripe: {message}")),
        Err(StripeError::Unavailable) => return, // the lease runs out; the next claim asks Stripe again, same key
    };
    let recorded = async {
        let s = app.db.unauthenticated().await?;
        s.query_one("SELECT credyt._server_auto_topup_result($1, $2, $3)", &[&id, &outcome.0, &outcome.1]).await?;
        s.commit().await
    };
    if let Err(e) = recorded.await {
        credyt_service::log!("error", "auto top-up outcome not recorded", "topup" => id,
                             "error" => e.detail.clone().unwrap_or_default());
    }
}
