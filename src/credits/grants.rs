//! Grants: recorded once (idempotent by grant_id), their lots issued at once or
//! period by period, caught up arithmetically after a gap.

use super::*;

/// A grant as the issuer needs it.
struct Grant {
    account: String,
    id: String,
    key: String,
    customer: String,
    wallet_name: String,
    asset: String,
    amount: Decimal,
    purpose: Purpose,
    priority: i32,
    on_expiry: ExpiryPolicy,
    rollover_cap: Option<Decimal>,
    recurring: bool,
}

/// Decodes a credit_grant row selected as `SELECT g.*, g.amount::text AS amount_text,
/// g.rollover_cap::text AS rollover_cap_text`.
fn grant_row(row: &impl Row) -> Result<Grant> {
    Ok(Grant {
        account: row.req::<String>("account_id")?,
        id: row.req::<String>("id")?,
        key: row.req::<String>("grant_key")?,
        customer: row.req::<String>("customer_id")?,
        wallet_name: row.req::<String>("wallet_name")?,
        asset: row.req::<String>("asset")?,
        amount: row.amount("amount_text")?,
        purpose: row.vocab("purpose", Purpose::parse)?,
        priority: row.req::<i32>("priority")?,
        on_expiry: row.vocab("on_expiry", ExpiryPolicy::parse)?,
        rollover_cap: row.opt_amount("rollover_cap_text")?,
        recurring: row.opt::<Interval>("every")?.is_some(),
    })
}

/// Issues one lot of `g` for [start, end) and emits grant.issued.
fn issue(
    c: &mut SpiClient<'_>,
    g: &Grant,
    start: TimestampWithTimeZone,
    end: Option<TimestampWithTimeZone>,
) -> Result<String> {
    let txn = wallet::open_txn(c, &g.account, "grant", &g.customer, json!({"grant": g.id}), None)?;
    let w = WalletRef { account: &g.account, customer: &g.customer, name: &g.wallet_name, asset: &g.asset };
    let source = format!("grant:{}", g.id);
    let lot = wallet::credit(
        c,
        &w,
        &txn,
        Credit {
            amount: g.amount,
            purpose: g.purpose,
            priority: g.priority,
            effective_at: Some(start),
            expires_at: end,
            on_expiry: g.on_expiry,
            rollover_cap: g.rollover_cap,
            grant_id: Some(&g.id),
            source: &source,
            system_account: counter_account(g.purpose),
            kind: "grant",
        },
    )?;
    events::emit(
        c,
        &g.account,
        events::Topic::GrantIssued,
        start,
        json!({
            "grant_id": g.key, "id": g.id, "customer_id": g.customer,
            "account_id": format!("{}:{}", g.wallet_name, g.asset), "lot_id": lot,
            "amount": num(g.amount), "purpose": g.purpose.as_str(),
        }),
    )?;
    Ok(lot)
}

/// Issues the periods of a recurring grant that are due at `now` (the first one
/// always, when `first`), advancing next_at. A period that ended before `now` is
/// skipped: each lot lasts one period, so a late clock does not issue stale credit.
/// Returns how many lots were issued.
fn issue_due(c: &mut SpiClient<'_>, g: &Grant, now: TimestampWithTimeZone, first: bool) -> Result<i64> {
    catch_up(c, &g.id, now)?;
    let mut issued = 0;
    let mut first = first;
    loop {
        // (start, end of the period capped by the grant's end, next start, start <= now, end > now)
        let t = run(
            c,
            "SELECT next_at AS start, least(next_at + every, coalesce(expires_at, 'infinity')) AS end, \
                    next_at + every AS next, next_at <= $2 AS started, \
                    least(next_at + every, coalesce(expires_at, 'infinity')) > $2 AS current, \
                    next_at + every < coalesce(expires_at, 'infinity') AS more \
             FROM credyt.credit_grant WHERE id = $1 AND next_at IS NOT NULL",
            &[g.id.as_str().into(), now.into()],
        )?;
        if t.is_empty() {
            return Ok(issued);
        }
        let row = t.first();
        let start = row.req::<TimestampWithTimeZone>("start")?;
        let end = row.opt::<TimestampWithTimeZone>("end")?;
        let next = row.opt::<TimestampWithTimeZone>("next")?;
        let started = row.req::<bool>("started")?;
        let current = row.req::<bool>("current")?;
        let more = row.req::<bool>("more")?;
        if !started && !first {
            return Ok(issued);
        }
        // (a first period that already ended issues nothing: it would be stale credit)
        if current {
            issue(c, g, start, end.filter(|e| e.is_finite()))?;
            issued += 1;
        }
        first = false;
        run(
            c,
            "UPDATE credyt.credit_grant SET next_at = $2 WHERE id = $1",
            &[g.id.as_str().into(), if more { next } else { None }.into()],
        )?;
        if !more {
            return Ok(issued);
        }
    }
}

/// Moves a recurring grant that is far behind `now` (a start years ago, a clock that
/// was down) to within a couple of periods of it, arithmetically: `next_at + every * k`
/// for a k that cannot overshoot, because each of the k periods is counted at its
/// longest (a month of 31 days, a day of 25 hours across a DST change). Each round
/// leaves at most a few percent of the gap, so a 50-year-old daily grant takes four
/// statements, not 18,000. Periods wholly in the past issue nothing, so skipping them
/// changes no balance.
fn catch_up(c: &mut SpiClient<'_>, grant_id: &str, now: TimestampWithTimeZone) -> Result<()> {
    loop {
        let t = run(
            c,
            "SELECT next_at, every FROM credyt.credit_grant WHERE id = $1 AND next_at IS NOT NULL AND every IS NOT NULL",
            &[grant_id.into()],
        )?;
        if t.is_empty() {
            return Ok(());
        }
        let row = t.first();
        let (next_at, every) = (row.req::<TimestampWithTimeZone>("next_at")?, row.req::<Interval>("every")?);
        // The last period or two are left for the period walk, which issues the current one.
        let Some(k) = period_of(&every).periods_to_skip(next_at.into_inner(), now.into_inner()) else {
            return Ok(());
        };
        run(
            c,
            "UPDATE credyt.credit_grant SET next_at = next_at + every * $2 WHERE id = $1",
            &[grant_id.into(), (k as f64).into()],
        )?;
    }
}

/// A validated grant request.
pub struct GrantSpec {
    pub key: String,
    pub customer: String,
    pub wallet_name: String,
    pub asset: String,
    pub amount: Decimal,
    pub purpose: Purpose,
    pub priority: i32,
    /// None: from now. Only a given time is part of the grant's replay identity, so
    /// a retry with the defaults is never a conflict.
    pub effective_at: Option<TimestampWithTimeZone>,
    pub expires_at: Option<TimestampWithTimeZone>,
    pub every: Option<pgrx::datum::Interval>,
    pub on_expiry: ExpiryPolicy,
    pub rollover_cap: Option<Decimal>,
}

/// Records a grant (idempotent by its key) and issues its first lot. Returns `grt_…`.
pub fn create(c: &mut SpiClient<'_>, account: &str, g: &GrantSpec) -> Result<String> {
    let effective_at = g.effective_at.unwrap_or_else(pgrx::datetime::now);
    let payload = json!({
        "customer": g.customer, "asset": g.asset, "amount": g.amount.normalize().to_string(), "purpose": g.purpose.as_str(),
        "priority": g.priority, "effective_at": g.effective_at.map(|t| t.into_inner()), "expires_at": g.expires_at.map(|t| t.into_inner()),
        "on_expiry": g.on_expiry.as_str(), "rollover_cap": g.rollover_cap.map(|d| d.normalize().to_string()), "account_name": g.wallet_name,
    });
    let id = crate::ids::new_id("grt")?;
    let inserted = one::<String>(
        c,
        "INSERT INTO credyt.credit_grant (account_id, id, grant_key, customer_id, wallet_name, asset, amount, purpose, \
           priority, every, on_expiry, rollover_cap, effective_at, expires_at, next_at, payload) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, CASE WHEN $10 IS NOT NULL THEN $13 END, $15) \
         ON CONFLICT DO NOTHING RETURNING id",
        &[
            account.into(), id.as_str().into(), g.key.as_str().into(), g.customer.as_str().into(),
            g.wallet_name.as_str().into(), g.asset.as_str().into(), to_numeric(g.amount).into(), g.purpose.as_str().into(),
            g.priority.into(), g.every.into(), g.on_expiry.as_str().into(), g.rollover_cap.map(to_numeric).into(),
            effective_at.into(), g.expires_at.into(), JsonB(payload.clone()).into(),
        ],
    )?;
    if inserted.is_none() {
        return replayed(c, account, g, payload);
    }
    // Checked once the key is known to be new: a replay after expires_at has passed
    // still returns the original grant. (An error here rolls the insert back.)
    crate::validate::expiry_after(Some(effective_at), g.expires_at)?;
    let grant = Grant {
        account: account.to_string(),
        id: id.clone(),
        key: g.key.clone(),
        customer: g.customer.clone(),
        wallet_name: g.wallet_name.clone(),
        asset: g.asset.clone(),
        amount: g.amount,
        purpose: g.purpose,
        priority: g.priority,
        on_expiry: g.on_expiry,
        rollover_cap: g.rollover_cap,
        recurring: g.every.is_some(),
    };
    if grant.recurring {
        issue_due(c, &grant, pgrx::datetime::now(), true)?;
    } else {
        issue(c, &grant, effective_at, g.expires_at)?;
    }
    Ok(id)
}

/// The grant_id is taken: the same request gets the original grant, another is CY409.
/// (every is compared as an interval: '1 month' = '1 mon'; effective_at counts only
/// when both calls gave one.)
fn replayed(c: &mut SpiClient<'_>, account: &str, g: &GrantSpec, payload: serde_json::Value) -> Result<String> {
    macro_rules! original {
        () => {
            "SELECT id, payload - 'effective_at' = $3 - 'effective_at' \
                      AND (payload->'effective_at' = 'null' OR $3->'effective_at' = 'null' \
                           OR payload->'effective_at' = $3->'effective_at') \
                      AND every IS NOT DISTINCT FROM $4 AS same, payload::text AS payload FROM credyt.credit_grant "
        };
    }
    const BY_ACCOUNT: &str = concat!(original!(), "WHERE account_id = $1 AND grant_key = $2");
    const BY_CUSTOMER: &str = concat!(original!(), "WHERE customer_id = $5 AND account_id = $1 AND grant_key = $2");
    let t = run(
        c,
        crate::distributed::pick(BY_ACCOUNT, BY_CUSTOMER),
        &[account.into(), g.key.as_str().into(), JsonB(payload).into(), g.every.into(), g.customer.as_str().into()],
    )?;
    let row = t.first();
    let existing = row.req::<String>("id")?;
    if row.req::<bool>("same")? {
        Ok(existing)
    } else {
        Err(CyError::conflict(format!("grant_id {:?} was already used with a different payload", g.key))
            .detail(format!("original grant {existing}: {}", row.req::<String>("payload")?)))
    }
}

/// Ends the recurring grants whose keys start with `prefix` at `at`: no period starts
/// at or after it (a cancelled subscription's entitlements).
pub fn end_grants(c: &mut SpiClient<'_>, account: &str, prefix: &str, at: TimestampWithTimeZone) -> Result<()> {
    run(
        c,
        "UPDATE credyt.credit_grant SET expires_at = least(coalesce(expires_at, $3), $3), \
           next_at = CASE WHEN next_at >= $3 THEN NULL ELSE next_at END \
         WHERE account_id = $1 AND starts_with(grant_key, $2) AND every IS NOT NULL",
        &[account.into(), prefix.into(), at.into()],
    )?;
    Ok(())
}

/// Clock: issues the periods of recurring grants due at `now`. Each grant row is
/// claimed with SKIP LOCKED, so concurrent ticks issue each period once.
pub fn issue_recurring(c: &mut SpiClient<'_>, accounts: &[String], now: TimestampWithTimeZone) -> Result<i64> {
    // At most tick_limit() grants of each account, oldest due first, so that one
    // account with a flood of due grants cannot crowd out the others.
    const ALL: &str = "SELECT g.*, g.amount::text AS amount_text, g.rollover_cap::text AS rollover_cap_text \
           FROM credyt.credit_grant g \
           WHERE g.id = ANY (ARRAY(SELECT d.id FROM unnest($1::text[]) AS a(id) CROSS JOIN LATERAL ( \
               SELECT x.id FROM credyt.credit_grant x WHERE x.account_id = a.id AND x.next_at <= $2 \
               ORDER BY x.next_at LIMIT $3) d)) \
             AND g.next_at <= $2 ORDER BY g.next_at, g.id FOR UPDATE SKIP LOCKED";
    // On Citus (crate::distributed::due_by_customer): found per account, claimed per customer.
    const DUE: &str = "SELECT customer_id, id FROM credyt.credit_grant WHERE account_id = $1 AND next_at <= $2 \
                       ORDER BY next_at LIMIT $3";
    const ONE_CUSTOMER: &str = "SELECT g.*, g.amount::text AS amount_text, g.rollover_cap::text AS rollover_cap_text \
           FROM credyt.credit_grant g WHERE g.customer_id = $1 AND g.id = ANY($3::text[]) AND g.next_at <= $2 \
           ORDER BY g.next_at, g.id FOR UPDATE SKIP LOCKED";
    let mut due = Vec::new();
    if crate::distributed::active() {
        for (customer, ids) in crate::distributed::due_by_customer(c, DUE, accounts, now, tick_limit())? {
            for row in run(c, ONE_CUSTOMER, &[customer.into(), now.into(), ids.into()])? {
                due.push(grant_row(&row)?);
            }
        }
    } else {
        for row in run(c, ALL, &[accounts.to_vec().into(), now.into(), tick_limit().into()])? {
            due.push(grant_row(&row)?);
        }
    }
    let mut issued = 0;
    for g in &due {
        issued += issue_due(c, g, now, false)?;
    }
    Ok(issued)
}
