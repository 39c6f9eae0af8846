//! Idempotency: a client's transaction_id, claimed before anything is locked.

use super::*;

// ---------------------------------------------------------------------------------
// Idempotency

/// The headers of ledger transactions (`credyt.ledger_txn`), written in one statement:
/// the one place a transaction header is inserted.
#[derive(Default)]
pub struct Headers {
    id: Vec<String>,
    key: Vec<Option<String>>,
    customer: Vec<String>,
    payload: Vec<serde_json::Value>,
    description: Vec<Option<String>>,
    metadata: Vec<Option<serde_json::Value>>,
}

/// How a statement is planned: through the backend's kept plan (one row), or for the
/// argument values at hand (a batch; see spi::run_once).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    Kept,
    Once,
}

impl Headers {
    /// Adds a header; `key` is the client's transaction_id, when it names one.
    pub fn push(
        &mut self,
        id: String,
        key: Option<&str>,
        customer: &str,
        payload: &serde_json::Value,
        description: Option<&str>,
        metadata: Option<&serde_json::Value>,
    ) {
        self.id.push(id);
        self.key.push(key.map(str::to_string));
        self.customer.push(customer.to_string());
        self.payload.push(payload.clone());
        self.description.push(description.map(str::to_string));
        self.metadata.push(metadata.cloned());
    }

    pub fn is_empty(&self) -> bool {
        self.id.is_empty()
    }

    /// Inserts the headers; returns the ids written (a header whose key the account
    /// already used is not).
    pub fn write(self, c: &mut SpiClient<'_>, account: &str, kind: &str, plan: Plan) -> Result<Vec<String>> {
        // One column list and one conflict rule; a single header (every movement but a
        // batch) goes as VALUES, which costs a third of an unnest of one-element arrays.
        macro_rules! insert {
            ($rows:expr) => {
                concat!(
                    "INSERT INTO credyt.ledger_txn (account_id, id, kind, idem_key, customer_id, payload, \
                       description, metadata) ",
                    $rows,
                    " ON CONFLICT (account_id, idem_key) WHERE idem_key IS NOT NULL DO NOTHING RETURNING id"
                )
            };
        }
        const ONE: &str = insert!("VALUES ($1, $3, $2, $4, $5, $6, $7, coalesce($8, '{}'))");
        const MANY: &str = insert!(
            "SELECT $1, u.id, $2, u.idem_key, u.customer_id, u.payload::jsonb, u.description, \
               coalesce(u.metadata::jsonb, '{}') \
             FROM unnest($3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[]) \
               AS u(id, idem_key, customer_id, payload, description, metadata)"
        );
        let t = if let (Plan::Kept, 1) = (plan, self.id.len()) {
            let mut h = self;
            let args = [
                account.into(),
                kind.into(),
                h.id.pop().into(),
                h.key.pop().flatten().into(),
                h.customer.pop().into(),
                h.payload.pop().map(JsonB).into(),
                h.description.pop().flatten().into(),
                h.metadata.pop().flatten().map(JsonB).into(),
            ];
            run(c, ONE, &args)?
        } else {
            let args = [
                account.into(),
                kind.into(),
                self.id.into(),
                self.key.into(),
                self.customer.into(),
                self.payload.iter().map(|p| p.to_string()).collect::<Vec<_>>().into(),
                self.description.into(),
                self.metadata.iter().map(|m| m.as_ref().map(|m| m.to_string())).collect::<Vec<_>>().into(),
            ];
            match plan {
                Plan::Kept => run(c, MANY, &args)?,
                Plan::Once => run_once(c, MANY, &args)?,
            }
        };
        let mut written = Vec::with_capacity(t.len());
        for row in t {
            written.push(row.req::<String>("id")?);
        }
        Ok(written)
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
    let mut header = Headers::default();
    header.push(crate::ids::new_id("txn")?, Some(key), customer, &payload, description, Some(&metadata));
    let inserted = header.write(c, account, kind, Plan::Kept)?.pop();
    if let Some(id) = inserted {
        return Ok(Claim::New(id));
    }
    let t = run(
        c,
        "SELECT id, payload = $3 AS same, payload::text AS payload FROM credyt.ledger_txn WHERE account_id = $1 AND idem_key = $2",
        &[account.into(), key.into(), JsonB(payload.clone()).into()],
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
