//! Idempotency: a client's transaction_id, claimed before anything is locked.

use super::*;

// ---------------------------------------------------------------------------------
// Idempotency

pub enum Claim {
    /// The key is new: proceed and write under this transaction id.
    New(String),
    /// The same request was already applied: return its id, write nothing.
    Replay(String),
}

/// Claims a client's transaction_id for this account. Under concurrency the second
/// claimant waits on the first one's unique-index entry, then sees its outcome.
#[allow(clippy::too_many_arguments)]
pub fn claim(
    c: &mut SpiClient<'_>,
    account: &str,
    kind: &str,
    key: &str,
    customer: &str,
    payload: serde_json::Value,
    description: Option<&str>,
    metadata: serde_json::Value,
) -> Result<Claim> {
    let id = crate::ids::new_id("txn")?;
    let inserted = one::<String>(
        c,
        "INSERT INTO credyt.ledger_txn (account_id, id, kind, idem_key, customer_id, payload, description, metadata) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
         ON CONFLICT (account_id, idem_key) WHERE idem_key IS NOT NULL DO NOTHING RETURNING id",
        &[
            account.into(),
            id.as_str().into(),
            kind.into(),
            key.into(),
            customer.into(),
            JsonB(payload.clone()).into(),
            description.into(),
            JsonB(metadata).into(),
        ],
    )?;
    if let Some(id) = inserted {
        return Ok(Claim::New(id));
    }
    let t = run(
        c,
        "SELECT id, payload = $3, payload::text FROM credyt.ledger_txn WHERE account_id = $1 AND idem_key = $2",
        &[account.into(), key.into(), JsonB(payload.clone()).into()],
    )?;
    if t.is_empty() {
        return Err(CyError::internal("idempotency key conflicted but no row was found"));
    }
    let row = t.first();
    let existing = row.get::<String>(1)?.unwrap_or_default();
    if row.get::<bool>(2)?.unwrap_or(false) {
        Ok(Claim::Replay(existing))
    } else {
        let original = row.get::<String>(3)?.unwrap_or_default();
        Err(CyError::conflict(format!("transaction_id {key:?} was already used with a different payload"))
            .detail(format!("original transaction {existing}: {original}; this request: {payload}"))
            .hint("use a new transaction_id for a new movement; replay only identical requests"))
    }
}

pub(super) fn micros(t: Option<TimestampWithTimeZone>) -> serde_json::Value {
    t.map(|t| json!(t.into_inner())).unwrap_or(serde_json::Value::Null)
}

pub(super) fn check_time(param: &str, t: Option<TimestampWithTimeZone>) -> Result<()> {
    match t {
        Some(t) if !t.is_finite() => Err(CyError::invalid(format!("{param} must be a finite timestamp"))),
        _ => Ok(()),
    }
}
