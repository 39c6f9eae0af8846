//! Idempotency: a client's transaction_id, claimed before anything is locked.

use super::*;

// ---------------------------------------------------------------------------------
// Idempotency

/// A ledger transaction's header (`credyt.ledger_txn`), for movements other than usage
/// (a usage event's row is its charge's header). `key` is the client's transaction_id,
/// when it names one.
pub struct Header<'a> {
    pub id: String,
    pub key: Option<&'a str>,
    pub customer: &'a str,
    pub payload: &'a serde_json::Value,
    pub description: Option<&'a str>,
    pub metadata: Option<&'a serde_json::Value>,
}

impl Header<'_> {
    /// Inserts the header: the one place one is. Returns its id, or None when the
    /// account already used its key.
    pub fn write(self, c: &mut SpiClient<'_>, account: &str, kind: &str) -> Result<Option<String>> {
        one::<String>(
            c,
            "INSERT INTO credyt.ledger_txn (account_id, id, kind, idem_key, customer_id, payload, description, metadata) \
             VALUES ($1, $3, $2, $4, $5, $6, $7, coalesce($8, '{}')) \
             ON CONFLICT DO NOTHING RETURNING id",
            &[
                account.into(),
                kind.into(),
                self.id.into(),
                self.key.into(),
                self.customer.into(),
                JsonB(self.payload.clone()).into(),
                self.description.into(),
                self.metadata.cloned().map(JsonB).into(),
            ],
        )
    }
}

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
    let header = Header {
        id: crate::ids::new_id("txn")?,
        key: Some(key),
        customer,
        payload: &payload,
        description,
        metadata: Some(&metadata),
    };
    let inserted = header.write(c, account, kind)?;
    if let Some(id) = inserted {
        return Ok(Claim::New(id));
    }
    macro_rules! original {
        () => {
            "SELECT id, payload = $3 AS same, payload::text AS payload FROM credyt.ledger_txn "
        };
    }
    const BY_ACCOUNT: &str = concat!(original!(), "WHERE account_id = $1 AND idem_key = $2");
    const BY_CUSTOMER: &str = concat!(original!(), "WHERE customer_id = $4 AND account_id = $1 AND idem_key = $2");
    let t = run(
        c,
        crate::distributed::pick(BY_ACCOUNT, BY_CUSTOMER),
        &[account.into(), key.into(), JsonB(payload.clone()).into(), customer.into()],
    )?;
    if t.is_empty() {
        return Err(CyError::internal("idempotency key conflicted but no row was found"));
    }
    let row = t.first();
    let existing = row.req::<String>("id")?;
    if row.req::<bool>("same")? {
        Ok(Claim::Replay(existing))
    } else {
        let original = row.req::<String>("payload")?;
        Err(CyError::conflict(format!("transaction_id {key:?} was already used with a different payload"))
            .detail(format!("original transaction {existing}: {original}; this request: {payload}"))
            .hint("use a new transaction_id for a new movement; replay only identical requests"))
    }
}

pub(super) fn micros(t: Option<TimestampWithTimeZone>) -> serde_json::Value {
    t.map(|t| json!(t.into_inner())).unwrap_or(serde_json::Value::Null)
}
