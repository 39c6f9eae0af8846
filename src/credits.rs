//! Credits (SPEC §7): grants, one-off or recurring, and what the clock does when a
//! lot expires (its on_expiry policy).
//!
//! A grant issues lots through the ledger's credit path (so a lot repays debt first,
//! like any credit) with `source = 'grant:grt_…'` and entries of kind `grant`: grants
//! stay apart from paid balance in the audit trail. A recurring grant issues a fresh
//! lot each period, lasting one period; the clock issues the periods after the first.

use crate::assets::resolve_asset;
use crate::customers;
use crate::error::{api, CyError, Result};
use crate::events;
use crate::money::{self, stored, to_numeric};
use crate::plan_cache::{one, run};
use crate::tenancy::scope;
use crate::validate;
use crate::wallet::{self, Book, Credit, WalletRef};
use credyt_core::burndown::default_priority;
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use pgrx::{AnyNumeric, GucContext, GucFlags, GucRegistry, GucSetting, JsonB};
use rust_decimal::Decimal;
use serde_json::json;

/// Most recurring grants issued, and most expired lots handled, per account per tick
/// (`credyt.tick_limit`). Per account, so that one tenant with a flood of due work
/// cannot stall the others; 1,000 was the old limit for all accounts together, so no
/// account gets less per tick than before.
pub static TICK_LIMIT: GucSetting<i32> = GucSetting::<i32>::new(1_000);

pub fn init_gucs() {
    GucRegistry::define_int_guc(
        c"credyt.tick_limit",
        c"Most recurring grants and expired lots that one tick() handles per account.",
        c"The rest are due at the next tick; the limit is per account so that no tenant waits on another.",
        &TICK_LIMIT,
        1,
        1_000_000,
        GucContext::Suset,
        GucFlags::default(),
    );
}

pub fn tick_limit() -> i64 {
    i64::from(TICK_LIMIT.get())
}

/// The system account a grant's lots are credited against, by purpose.
fn counter_account(purpose: &str) -> &'static str {
    match purpose {
        "promotion" => "promotions",
        "bundled" => "entitlements",
        _ => "grants",
    }
}

fn num(d: Decimal) -> serde_json::Value {
    serde_json::Value::Number(serde_json::Number::from_string_unchecked(d.normalize().to_string()))
}

/// A grant as the issuer needs it.
struct Grant {
    account: String,
    id: String,
    key: String,
    customer: String,
    wallet_name: String,
    asset: String,
    amount: Decimal,
    purpose: String,
    priority: i32,
    on_expiry: String,
    rollover_cap: Option<Decimal>,
    recurring: bool,
}

/// Decodes (account_id, id, grant_key, customer_id, wallet_name, asset, amount,
/// purpose, priority, on_expiry, rollover_cap, every IS NOT NULL).
fn grant_row(row: &pgrx::spi::SpiHeapTupleData<'_>) -> Result<Grant> {
    Ok(Grant {
        account: row.get::<String>(1)?.unwrap_or_default(),
        id: row.get::<String>(2)?.unwrap_or_default(),
        key: row.get::<String>(3)?.unwrap_or_default(),
        customer: row.get::<String>(4)?.unwrap_or_default(),
        wallet_name: row.get::<String>(5)?.unwrap_or_default(),
        asset: row.get::<String>(6)?.unwrap_or_default(),
        amount: stored(&row.get::<String>(7)?.unwrap_or_default())?,
        purpose: row.get::<String>(8)?.unwrap_or_default(),
        priority: row.get::<i32>(9)?.unwrap_or_default(),
        on_expiry: row.get::<String>(10)?.unwrap_or_default(),
        rollover_cap: row.get::<String>(11)?.map(|s| stored(&s)).transpose()?,
        recurring: row.get::<bool>(12)?.unwrap_or(false),
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
            purpose: &g.purpose,
            priority: g.priority,
            effective_at: Some(start),
            expires_at: end,
            on_expiry: &g.on_expiry,
            rollover_cap: g.rollover_cap,
            grant_id: Some(&g.id),
            source: &source,
            system_account: counter_account(&g.purpose),
            kind: "grant",
        },
    )?;
    events::emit(
        c,
        &g.account,
        "grant.issued",
        start,
        json!({
            "grant_id": g.key, "id": g.id, "customer_id": g.customer,
            "account_id": format!("{}:{}", g.wallet_name, g.asset), "lot_id": lot,
            "amount": num(g.amount), "purpose": g.purpose,
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
            "SELECT next_at, least(next_at + every, coalesce(expires_at, 'infinity')), next_at + every, \
                    next_at <= $2, least(next_at + every, coalesce(expires_at, 'infinity')) > $2, \
                    next_at + every < coalesce(expires_at, 'infinity') \
             FROM credyt.credit_grant WHERE id = $1 AND next_at IS NOT NULL",
            &[g.id.as_str().into(), now.into()],
        )?;
        if t.is_empty() {
            return Ok(issued);
        }
        let row = t.first();
        let start = row.get::<TimestampWithTimeZone>(1)?.ok_or_else(|| CyError::internal("next_at"))?;
        let end = row.get::<TimestampWithTimeZone>(2)?;
        let next = row.get::<TimestampWithTimeZone>(3)?;
        let started = row.get::<bool>(4)?.unwrap_or(false);
        let current = row.get::<bool>(5)?.unwrap_or(false);
        let more = row.get::<bool>(6)?.unwrap_or(false);
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
    const HOUR: i64 = 3_600_000_000;
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
        let (Some(next_at), Some(every)) = (row.get::<TimestampWithTimeZone>(1)?, row.get::<Interval>(2)?) else {
            return Ok(());
        };
        let longest = i64::from(every.months()) * 31 * 24 * HOUR + i64::from(every.days()) * 25 * HOUR + every.micros();
        let behind = now.into_inner().saturating_sub(next_at.into_inner());
        if longest < HOUR || behind <= 0 {
            return Ok(());
        }
        // Keep the last period or two for the period walk, which issues the current one.
        let k = behind / longest - 1;
        if k < 1 {
            return Ok(());
        }
        run(
            c,
            "UPDATE credyt.credit_grant SET next_at = next_at + every * $2 WHERE id = $1",
            &[grant_id.into(), (k as f64).into()],
        )?;
    }
}

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
        let purpose = validate::required("purpose", purpose)?;
        let default = default_priority(&purpose).ok_or_else(|| {
            CyError::invalid(format!("unknown purpose {purpose:?}")).hint("purposes: promotion, bundled, paid")
        })?;
        let priority = match priority {
            Some(p) if p < 0 => return Err(CyError::invalid("priority must not be negative")),
            Some(p) => p,
            None => default,
        };
        for (name, t) in [("effective_at", effective_at), ("expires_at", expires_at)] {
            if t.is_some_and(|t| !t.is_finite()) {
                return Err(CyError::invalid(format!("{name} must be a finite timestamp")));
            }
        }
        let on_expiry = validate::required("on_expiry", on_expiry)?;
        match on_expiry.as_str() {
            "expire" | "rollover" | "reserve" => {}
            other => {
                return Err(CyError::invalid(format!("unknown on_expiry {other:?}"))
                    .hint("policies: expire, rollover, reserve"))
            }
        }
        let rollover_cap = money::optional_non_negative("rollover_cap", rollover_cap)?;
        if rollover_cap.is_some() && on_expiry != "rollover" {
            return Err(CyError::invalid("rollover_cap applies to on_expiry 'rollover' only"));
        }
        let name = validate::wallet_name(account_name)?;
        if let Some(e) = every {
            let period =
                credyt_core::period::Period { months: e.months().into(), days: e.days().into(), micros: e.micros() };
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

/// A validated grant request.
pub struct GrantSpec {
    pub key: String,
    pub customer: String,
    pub wallet_name: String,
    pub asset: String,
    pub amount: Decimal,
    pub purpose: String,
    pub priority: i32,
    /// None: from now. Only a given time is part of the grant's replay identity, so
    /// a retry with the defaults is never a conflict.
    pub effective_at: Option<TimestampWithTimeZone>,
    pub expires_at: Option<TimestampWithTimeZone>,
    pub every: Option<pgrx::datum::Interval>,
    pub on_expiry: String,
    pub rollover_cap: Option<Decimal>,
}

/// Records a grant (idempotent by its key) and issues its first lot. Returns `grt_…`.
pub fn create(c: &mut SpiClient<'_>, account: &str, g: &GrantSpec) -> Result<String> {
    let effective_at = g.effective_at.unwrap_or_else(pgrx::datetime::now);
    let payload = json!({
        "customer": g.customer, "asset": g.asset, "amount": g.amount.normalize().to_string(), "purpose": g.purpose,
        "priority": g.priority, "effective_at": g.effective_at.map(|t| t.into_inner()), "expires_at": g.expires_at.map(|t| t.into_inner()),
        "on_expiry": g.on_expiry, "rollover_cap": g.rollover_cap.map(|d| d.normalize().to_string()), "account_name": g.wallet_name,
    });
    let id = crate::ids::new_id("grt")?;
    let inserted = one::<String>(
        c,
        "INSERT INTO credyt.credit_grant (account_id, id, grant_key, customer_id, wallet_name, asset, amount, purpose, \
           priority, every, on_expiry, rollover_cap, effective_at, expires_at, next_at, payload) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, CASE WHEN $10 IS NOT NULL THEN $13 END, $15) \
         ON CONFLICT (account_id, grant_key) DO NOTHING RETURNING id",
        &[
            account.into(), id.as_str().into(), g.key.as_str().into(), g.customer.as_str().into(),
            g.wallet_name.as_str().into(), g.asset.as_str().into(), to_numeric(g.amount).into(), g.purpose.as_str().into(),
            g.priority.into(), g.every.into(), g.on_expiry.as_str().into(), g.rollover_cap.map(to_numeric).into(),
            effective_at.into(), g.expires_at.into(), JsonB(payload.clone()).into(),
        ],
    )?;
    if inserted.is_none() {
        // Idempotent by grant_id (every is compared as an interval: '1 month' = '1 mon');
        // effective_at counts only when both calls gave one.
        let t = run(
            c,
            "SELECT id, payload - 'effective_at' = $3 - 'effective_at' \
                      AND (payload->'effective_at' = 'null' OR $3->'effective_at' = 'null' \
                           OR payload->'effective_at' = $3->'effective_at') \
                      AND every IS NOT DISTINCT FROM $4, payload::text FROM credyt.credit_grant \
             WHERE account_id = $1 AND grant_key = $2",
            &[account.into(), g.key.as_str().into(), JsonB(payload).into(), g.every.into()],
        )?;
        let row = t.first();
        let existing = row.get::<String>(1)?.unwrap_or_default();
        return if row.get::<bool>(2)?.unwrap_or(false) {
            Ok(existing)
        } else {
            Err(CyError::conflict(format!("grant_id {:?} was already used with a different payload", g.key))
                .detail(format!("original grant {existing}: {}", row.get::<String>(3)?.unwrap_or_default())))
        };
    }
    // Checked once the key is known to be new: a replay after expires_at has passed
    // still returns the original grant. (An error here rolls the insert back.)
    if let Some(exp) = g.expires_at {
        let ok = one::<bool>(c, "SELECT $1 > $2 AND $1 > now()", &[exp.into(), effective_at.into()])?;
        if ok != Some(true) {
            return Err(CyError::invalid("expires_at must be later than effective_at and now"));
        }
    }
    let grant = Grant {
        account: account.to_string(),
        id: id.clone(),
        key: g.key.clone(),
        customer: g.customer.clone(),
        wallet_name: g.wallet_name.clone(),
        asset: g.asset.clone(),
        amount: g.amount,
        purpose: g.purpose.clone(),
        priority: g.priority,
        on_expiry: g.on_expiry.clone(),
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
    let sql =
        "SELECT g.account_id, g.id, g.grant_key, g.customer_id, g.wallet_name, g.asset, g.amount::text, g.purpose, \
                 g.priority, g.on_expiry, g.rollover_cap::text, g.every IS NOT NULL FROM credyt.credit_grant g \
               WHERE g.id = ANY (ARRAY(SELECT d.id FROM unnest($1::text[]) AS a(id) CROSS JOIN LATERAL ( \
                   SELECT x.id FROM credyt.credit_grant x WHERE x.account_id = a.id AND x.next_at <= $2 \
                   ORDER BY x.next_at LIMIT $3) d)) \
                 AND g.next_at <= $2 ORDER BY g.next_at, g.id FOR UPDATE SKIP LOCKED";
    let t = run(c, sql, &[accounts.to_vec().into(), now.into(), tick_limit().into()])?;
    let mut due = Vec::new();
    for row in t {
        due.push(grant_row(&row)?);
    }
    let mut issued = 0;
    for g in &due {
        issued += issue_due(c, g, now, false)?;
    }
    Ok(issued)
}

/// Clock: applies the on_expiry policy of every lot that expired at or before `now`
/// with something left. A wallet another transaction holds is left for the next tick
/// (SKIP LOCKED), so concurrent ticks expire each lot once. Returns lots expired.
pub fn expire_lots(c: &mut SpiClient<'_>, accounts: &[String], now: TimestampWithTimeZone) -> Result<i64> {
    // The wallets of at most tick_limit() expired lots per account (see issue_recurring).
    let t = run(
        c,
        "SELECT DISTINCT l.account_id, l.customer_id, l.wallet_name, l.asset FROM unnest($1::text[]) AS a(id) \
         CROSS JOIN LATERAL (SELECT x.account_id, x.customer_id, x.wallet_name, x.asset FROM credyt.lot x \
           WHERE x.account_id = a.id AND x.expires_at <= $2 AND x.remaining > 0 ORDER BY x.expires_at LIMIT $3) l",
        &[accounts.to_vec().into(), now.into(), tick_limit().into()],
    )?;
    let mut wallets = Vec::new();
    for row in t {
        wallets.push((
            row.get::<String>(1)?.unwrap_or_default(),
            row.get::<String>(2)?.unwrap_or_default(),
            row.get::<String>(3)?.unwrap_or_default(),
            row.get::<String>(4)?.unwrap_or_default(),
        ));
    }
    let mut expired = 0;
    for (account, customer, name, asset) in &wallets {
        let w = WalletRef { account, customer, name, asset };
        let Some(mut wallet) = wallet::try_lock(c, &w)? else { continue };
        // Re-read under the lock: another tick may have just expired them.
        let t = run(
            c,
            "SELECT id, remaining::text, on_expiry, rollover_cap::text, purpose, priority, grant_id, expires_at \
             FROM credyt.lot WHERE customer_id = $1 AND wallet_name = $2 AND asset = $3 \
               AND expires_at <= $4 AND remaining > 0 ORDER BY expires_at, seq",
            &[customer.as_str().into(), name.as_str().into(), asset.as_str().into(), now.into()],
        )?;
        let mut lots = Vec::new();
        for row in t {
            lots.push((
                row.get::<String>(1)?.unwrap_or_default(),
                stored(&row.get::<String>(2)?.unwrap_or_default())?,
                row.get::<String>(3)?.unwrap_or_default(),
                row.get::<String>(4)?.map(|s| stored(&s)).transpose()?,
                row.get::<String>(5)?.unwrap_or_default(),
                row.get::<i32>(6)?.unwrap_or_default(),
                row.get::<String>(7)?,
                row.get::<TimestampWithTimeZone>(8)?.unwrap_or(now),
            ));
        }
        let mut rolled_any = false;
        for (lot_id, remaining, policy, cap, purpose, priority, grant_id, expired_at) in lots {
            let kept =
                if policy == "rollover" { cap.map_or(remaining, |cap| remaining.min(cap)) } else { Decimal::ZERO };
            // reserve: the whole remainder moves to the customer's reserve pool
            let reserved = if policy == "reserve" && name != wallet::RESERVE { remaining } else { Decimal::ZERO };
            let lost = remaining - kept - reserved;
            let txn = wallet::open_txn(c, account, "expiry", customer, json!({"lot": lot_id}), None)?;
            let mut book = Book::new(&w, txn.clone());
            book.take(&lot_id, remaining);
            book.customer_leg(-remaining, Some(lot_id.clone()), "expiry");
            // A new lot of the same purpose and priority, without expiry, effective from the
            // expiry: a time of the clock's (at or before the `now` this tick was given),
            // never the wall clock's, so a tick run for another time dates lots by it.
            let carry = |c: &mut SpiClient<'_>, wallet_name: &str, amount: Decimal, source: String| -> Result<String> {
                let id = crate::ids::new_id("lot")?;
                run(
                    c,
                    "INSERT INTO credyt.lot (account_id, id, customer_id, wallet_name, asset, purpose, priority, amount, \
                       remaining, effective_at, expires_at, source, txn_id, grant_id) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, $9, NULL, $10, $11, $12)",
                    &[
                        account.as_str().into(), id.as_str().into(), customer.as_str().into(), wallet_name.into(),
                        asset.as_str().into(), purpose.as_str().into(), priority.into(), to_numeric(amount).into(),
                        expired_at.into(), source.as_str().into(), txn.as_str().into(), grant_id.as_deref().into(),
                    ],
                )?;
                Ok(id)
            };
            let mut new_lot = None;
            if kept > Decimal::ZERO {
                // rollover: the carried-over remainder stays in this wallet account
                let id = carry(c, name, kept, format!("rollover:{lot_id}"))?;
                book.customer_leg(kept, Some(id.clone()), "rollover");
                new_lot = Some(id);
                rolled_any = true;
            }
            if reserved > Decimal::ZERO {
                // reserve: into the customer's pool, locked after the wallet as every movement does
                let r = WalletRef { account, customer, name: wallet::RESERVE, asset };
                let pool = wallet::lock(c, &r)?;
                let id = carry(c, wallet::RESERVE, reserved, format!("reserve:{lot_id}"))?;
                book.leg_on(wallet::RESERVE, reserved, Some(id.clone()), "reserve");
                new_lot = Some(id);
                wallet::save_pool(c, &r, pool.balance + reserved)?;
            }
            if lost > Decimal::ZERO {
                book.system_leg("expired", lost, "expiry");
            }
            wallet.balance -= lost + reserved;
            wallet::write(c, &wallet, book, None)?;
            if let Some(gid) = grant_id {
                let key = one::<String>(
                    c,
                    "SELECT grant_key FROM credyt.credit_grant WHERE id = $1",
                    &[gid.as_str().into()],
                )?;
                events::emit(
                    c,
                    account,
                    "grant.expired",
                    expired_at,
                    json!({
                        "grant_id": key, "id": gid, "customer_id": customer, "account_id": format!("{name}:{asset}"),
                        "lot_id": lot_id, "expired": num(lost), "rolled_over": num(kept), "reserved": num(reserved),
                        "new_lot_id": new_lot,
                    }),
                )?;
            }
            expired += 1;
        }
        if rolled_any {
            let now_available = wallet::available_of(c, customer, name, asset)?;
            wallet::notify_balance(c, &wallet, &w, now_available)?;
        }
    }
    Ok(expired)
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
        let succeeded = validate::required("succeeded", succeeded)?;
        let reference = validate::optional_text("payment_reference", payment_reference)?;
        Spi::connect_mut(|c| {
            let account = scope(c)?;
            let t = run(
                c,
                "SELECT customer_id, wallet_name, asset, amount::text, status FROM credyt.topup \
                 WHERE id = $1 AND account_id = $2 FOR UPDATE",
                &[id.as_str().into(), account.as_str().into()],
            )?;
            if t.is_empty() {
                return Err(CyError::not_found(format!("unknown top-up {id}")));
            }
            let row = t.first();
            let customer = row.get::<String>(1)?.unwrap_or_default();
            let name = row.get::<String>(2)?.unwrap_or_default();
            let asset = row.get::<String>(3)?.unwrap_or_default();
            let amount = stored(&row.get::<String>(4)?.unwrap_or_default())?;
            let status = row.get::<String>(5)?.unwrap_or_default();
            let outcome = if succeeded { "succeeded" } else { "failed" };
            // Calling it twice is harmless; contradicting the recorded outcome is not.
            match status.as_str() {
                "pending" => {}
                s if s == outcome => return Ok(()),
                s => return Err(CyError::conflict(format!("top-up {id} already {s}"))),
            }
            let w = WalletRef { account: &account, customer: &customer, name: &name, asset: &asset };
            let mut txn_id: Option<String> = None;
            if succeeded {
                let txn =
                    wallet::open_txn(c, &account, "topup", &customer, json!({"topup": id}), reference.as_deref())?;
                let source = format!("topup:{id}");
                wallet::credit(
                    c,
                    &w,
                    &txn,
                    Credit {
                        amount,
                        purpose: "paid",
                        priority: default_priority("paid").unwrap_or(100),
                        effective_at: None,
                        expires_at: None,
                        on_expiry: "expire",
                        rollover_cap: None,
                        grant_id: None,
                        source: &source,
                        system_account: "external",
                        kind: "topup",
                    },
                )?;
                txn_id = Some(txn);
            }
            // (this UPDATE takes the wallet row's lock, after the top-up row's)
            run(
                c,
                "WITH t AS (UPDATE credyt.topup SET status = $2, payment_reference = $3, txn_id = $4, completed_at = now() \
                   WHERE id = $1) \
                 UPDATE credyt.wallet_account SET pending_topup = NULL \
                 WHERE customer_id = $5 AND name = $6 AND asset = $7 AND pending_topup = $1",
                &[id.as_str().into(), outcome.into(), reference.as_deref().into(), txn_id.as_deref().into(),
                  customer.as_str().into(), name.as_str().into(), asset.as_str().into()],
            )?;
            events::emit(
                c,
                &account,
                if succeeded { "auto_topup.succeeded" } else { "auto_topup.failed" },
                pgrx::datetime::now(),
                json!({"topup_id": id, "customer_id": customer, "account_id": format!("{name}:{asset}"),
                       "amount": num(amount), "payment_reference": reference}),
            )?;
            Ok(())
        })
    })
}
