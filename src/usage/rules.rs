//! Free tiers and usage limits (SPEC §9): rules on an event type for a customer, a
//! cohort or the whole account (the most specific applies), counted per customer and
//! window in `credyt.usage_counter`.
//!
//! Before an event is charged: a usage limit counts it (every event of the type, in
//! the window of its recording time), and past `max_events` it is not recorded and not
//! charged (status `limited`, one `usage.limit_exceeded` per customer, type and
//! window; with `credyt.usage_limit_error = on`, CY429 instead). Then a free tier
//! counts what the event's first matching price counts (an event for a unit price,
//! volume otherwise) in the calendar window of its occurred_at, and the fees are
//! computed for the part beyond the allowance. A counter row belongs to one customer:
//! its upsert serialises that customer's events of that type, and no row shared by
//! customers is written. An event that turns out to be a replay gives back what it
//! counted.

use super::*;
use credyt_core::billing::{free_part, rfc3339, Window};
use pgrx::{GucContext, GucFlags, GucRegistry, GucSetting};

pub static USAGE_LIMIT_ERROR: GucSetting<bool> = GucSetting::<bool>::new(false);

pub fn init_gucs() {
    GucRegistry::define_bool_guc(
        c"credyt.usage_limit_error",
        c"Raise CY429 for an event past a usage limit, instead of returning it with status limited.",
        c"Off by default: a raise rolls back the caller's transaction, and the usage.limit_exceeded event with it.",
        &USAGE_LIMIT_ERROR,
        GucContext::Userset,
        GucFlags::default(),
    );
}

/// One rule as an event applies it.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Rule {
    pub(super) quantity: Decimal,
    pub(super) window: Window,
}

/// The rules that apply to one customer's events of one type.
#[derive(Clone, Debug, Default, PartialEq)]
pub(super) struct Rules {
    pub(super) free_tier: Option<Rule>,
    pub(super) limit: Option<Rule>,
}

/// The rules for customer $2 and event type $3 of account $1, with how specific each
/// is (rank: 2 the customer's, 1 its cohort's, 0 the account's), as rule_row() decodes.
macro_rules! rule_lookup {
    () => {
        "SELECT r.kind, r.quantity::text AS quantity, r.per_months, r.per_micros, \
           CASE WHEN r.customer_id IS NOT NULL THEN 2 WHEN r.cohort IS NOT NULL THEN 1 ELSE 0 END AS rank \
         FROM credyt.usage_rule r \
         WHERE r.account_id = $1 AND r.event_type = $3 AND (r.customer_id = $2 OR (r.customer_id IS NULL \
           AND (r.cohort IS NULL OR r.cohort = (SELECT cohort FROM credyt.customer WHERE id = $2))))"
    };
}
pub(super) use rule_lookup;

/// Decodes one row of rule_lookup!() (None: the NULLs of a LEFT JOIN without rules).
pub(super) fn rule_row(row: &impl Row) -> Result<Option<(i32, String, Rule)>> {
    let Some(kind) = row.opt::<String>("kind")? else { return Ok(None) };
    let window = window_of(row.req::<i32>("per_months")?, row.req::<i64>("per_micros")?)?;
    Ok(Some((row.req::<i32>("rank")?, kind, Rule { quantity: row.amount("quantity")?, window })))
}

/// The rules of decoded rows: the most specific of each kind wins.
pub(super) fn pick(mut rows: Vec<(i32, String, Rule)>) -> Rules {
    rows.sort_by_key(|r| -r.0);
    let mut rules = Rules::default();
    for (_, kind, rule) in rows {
        match kind.as_str() {
            "free_tier" if rules.free_tier.is_none() => rules.free_tier = Some(rule),
            "limit" if rules.limit.is_none() => rules.limit = Some(rule),
            _ => {}
        }
    }
    rules
}

/// A stored window: whole months, a week (-1) or a fixed length.
fn window_of(months: i32, micros: i64) -> Result<Window> {
    match (months, micros) {
        (m, _) if m > 0 => Ok(Window::Months(m as u32)),
        (_, -1) => Ok(Window::Week),
        (_, len) if len > 0 => Ok(Window::Fixed(len)),
        _ => Err(CyError::internal(format!("stored window {months} months {micros} µs"))),
    }
}

/// What a counter holds: its key, the amount counted.
pub(super) struct Counted {
    kind: &'static str,
    window_start: i64,
    quantity: Decimal,
}

/// What the rules made of an event before it is charged.
#[derive(Default)]
pub(super) struct Applied {
    /// the part of the event a free tier covers, in its first price's terms
    pub(super) free: Decimal,
    counted: Vec<Counted>,
    /// whose counters they are: (customer id, event type)
    counter: (String, String),
    /// the limit that refused it (not recorded), and its window
    refused: Option<(Rule, (i64, i64))>,
}

/// The amount an event counts against a free tier: its first fee's volume, or 1.
fn counts_as(p: &Prepared) -> Option<Decimal> {
    let first = p.fees.as_array()?.first()?;
    Some(first.get("volume").and_then(exact_number).unwrap_or(Decimal::ONE))
}

/// Adds `quantity` to a customer's counter of (kind, event type, window); with a cap,
/// only while the count stays within it. Returns the new count, or None when the cap
/// refused it.
#[allow(clippy::too_many_arguments)]
fn count(
    c: &mut SpiClient<'_>,
    account: &str,
    p: &Prepared,
    kind: &'static str,
    (start, end): (i64, i64),
    quantity: Decimal,
    cap: Option<Decimal>,
) -> Result<Option<Decimal>> {
    if cap.is_some_and(|cap| quantity > cap) {
        return Ok(None); // (more than the cap on its own: refused by any count)
    }
    let used = one::<String>(
        c,
        "INSERT INTO credyt.usage_counter AS u (account_id, customer_id, kind, event_type, window_start, window_end, used) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) \
         ON CONFLICT (customer_id, kind, event_type, window_start) DO UPDATE SET used = u.used + EXCLUDED.used \
           WHERE $8::numeric IS NULL OR u.used + EXCLUDED.used <= $8 \
         RETURNING used::text",
        &[
            account.into(),
            p.customer.as_str().into(),
            kind.into(),
            p.ev.event_type.as_str().into(),
            wallet::time_at(start)?.into(),
            wallet::time_at(end)?.into(),
            to_numeric(quantity).into(),
            cap.map(to_numeric).into(),
        ],
    )?;
    used.map(|u| money::stored(&u)).transpose()
}

/// Applies the rules to a prepared event (`now`: the transaction's time): counts it
/// against a usage limit and a free tier. A limited event has written nothing: the
/// caller, once it knows the rules were current, calls refuse().
pub(super) fn apply(c: &mut SpiClient<'_>, account: &str, rules: &Rules, p: &Prepared, now: i64) -> Result<Applied> {
    let mut applied = Applied { counter: (p.customer.clone(), p.ev.event_type.clone()), ..Default::default() };
    if let Some(limit) = &rules.limit {
        let window = limit.window.bounds(now);
        if count(c, account, p, "limit", window, Decimal::ONE, Some(limit.quantity))?.is_none() {
            // A replay of an event recorded before is not a new event: it gets the original.
            if recorded(c, account, &p.customer, &p.ev.event_id)? {
                return Ok(applied);
            }
            applied.refused = Some((limit.clone(), window));
            return Ok(applied);
        }
        applied.counted.push(Counted { kind: "limit", window_start: window.0, quantity: Decimal::ONE });
    }
    if let (Some(tier), Some(q)) = (&rules.free_tier, counts_as(p)) {
        let at = p.ev.occurred_at.map(|t| t.into_inner()).unwrap_or(now);
        let window = tier.window.bounds(at);
        let used = count(c, account, p, "free_tier", window, q, None)?.unwrap_or(q);
        applied.free = free_part(tier.quantity, used - q, q);
        applied.counted.push(Counted { kind: "free_tier", window_start: window.0, quantity: q });
    }
    Ok(applied)
}

/// A limited event: CY429 with credyt.usage_limit_error on; otherwise the window's
/// usage.limit_exceeded (once) and the row that says `limited`.
pub(super) fn refuse(c: &mut SpiClient<'_>, account: &str, p: Prepared, applied: &Applied) -> Result<Outcome> {
    let Some((limit, window)) = &applied.refused else { return Err(CyError::internal("refused by no limit")) };
    if USAGE_LIMIT_ERROR.get() {
        return Err(CyError::new(
            crate::error::Code::TooManyRequests,
            format!("usage limit of {} {} events reached for customer {}", limit.quantity, p.ev.event_type, p.customer),
        )
        .detail(format!("the window ends at {}", rfc3339(window.1)))
        .hint("the event was not recorded: send it again after the window, or raise the limit"));
    }
    exceeded(c, account, &p, limit, *window)?;
    Ok(limited(p))
}

/// Whether the account (on Citus: the customer) has recorded this event id.
fn recorded(c: &mut SpiClient<'_>, account: &str, customer: &str, event_id: &str) -> Result<bool> {
    const BY_ACCOUNT: &str = "SELECT EXISTS (SELECT 1 FROM credyt.usage_event WHERE account_id = $1 AND event_id = $2)";
    const BY_CUSTOMER: &str = "SELECT EXISTS (SELECT 1 FROM credyt.usage_event \
                               WHERE customer_id = $3 AND account_id = $1 AND event_id = $2)";
    Ok(one::<bool>(
        c,
        crate::distributed::pick(BY_ACCOUNT, BY_CUSTOMER),
        &[account.into(), event_id.into(), customer.into()],
    )?
    .unwrap_or(false))
}

/// Writes usage.limit_exceeded for the window, once.
fn exceeded(c: &mut SpiClient<'_>, account: &str, p: &Prepared, limit: &Rule, (start, end): (i64, i64)) -> Result<()> {
    let first = one::<bool>(
        c,
        "INSERT INTO credyt.usage_counter AS u (account_id, customer_id, kind, event_type, window_start, window_end, used, alerted) \
         VALUES ($1, $2, 'limit', $3, $4, $5, 0, true) \
         ON CONFLICT (customer_id, kind, event_type, window_start) DO UPDATE SET alerted = true WHERE NOT u.alerted \
         RETURNING true",
        &[
            account.into(),
            p.customer.as_str().into(),
            p.ev.event_type.as_str().into(),
            wallet::time_at(start)?.into(),
            wallet::time_at(end)?.into(),
        ],
    )?;
    if first.is_some() {
        let data = json!({
            "customer_id": p.customer, "event_type": p.ev.event_type, "event_id": p.ev.event_id,
            "max_events": num(limit.quantity), "window_start": rfc3339(start), "window_end": rfc3339(end),
        });
        crate::events::emit(c, account, crate::events::Topic::UsageLimitExceeded, pgrx::datetime::now(), data)?;
    }
    Ok(())
}

impl Applied {
    /// Refused by a usage limit: not to be recorded.
    pub(super) fn limited(&self) -> bool {
        self.refused.is_some()
    }

    /// An event that was a replay counts nothing: gives its counts back.
    pub(super) fn undo(&self, c: &mut SpiClient<'_>) -> Result<()> {
        let (customer, event_type) = (&self.counter.0, &self.counter.1);
        for k in &self.counted {
            run(
                c,
                "UPDATE credyt.usage_counter SET used = used - $5 \
                 WHERE customer_id = $1 AND kind = $2 AND event_type = $3 AND window_start = $4",
                &[
                    customer.as_str().into(),
                    k.kind.into(),
                    event_type.as_str().into(),
                    wallet::time_at(k.window_start)?.into(),
                    to_numeric(k.quantity).into(),
                ],
            )?;
        }
        Ok(())
    }
}

/// The row a limited event returns: not recorded, not charged.
fn limited(p: Prepared) -> Outcome {
    Outcome {
        event_id: p.ev.event_id,
        duplicate: false,
        status: UsageStatus::Limited,
        fees: json!([]),
        charged: Decimal::ZERO,
        asset: None,
        available: None,
    }
}

// ---------------------------------------------------------------------------------
// The SQL functions

/// A rule's scope, validated: a customer, a cohort, or (both None) the account.
fn rule_scope(
    c: &mut SpiClient<'_>,
    account: &str,
    customer: Option<String>,
    cohort: Option<String>,
) -> Result<(Option<String>, Option<String>)> {
    let cohort = validate::optional_text("cohort", cohort)?;
    if customer.is_some() && cohort.is_some() {
        return Err(CyError::invalid("a rule is for a customer or for a cohort, not both")
            .hint("pass customer => … or cohort => …, or neither for the whole account"));
    }
    let customer = customer.map(|r| customers::resolve(c, account, Some(&r))).transpose()?;
    Ok((customer, cohort))
}

/// Sets (or with `quantity` NULL removes) one rule.
#[allow(clippy::too_many_arguments)]
fn set_rule(
    kind: &'static str,
    event_type: Option<String>,
    quantity: Option<Decimal>,
    per: Option<(String, Window)>,
    customer: Option<String>,
    cohort: Option<String>,
) -> Result<()> {
    let event_type = super::api::event_type(event_type)?;
    Spi::connect_mut(|c| {
        let account = scope(c)?;
        let (customer, cohort) = rule_scope(c, &account, customer, cohort)?;
        let args = [
            account.as_str().into(),
            kind.into(),
            event_type.as_str().into(),
            customer.as_deref().into(),
            cohort.as_deref().into(),
        ];
        let Some((quantity, (per, window))) = quantity.zip(per) else {
            run(
                c,
                "DELETE FROM credyt.usage_rule WHERE account_id = $1 AND kind = $2 AND event_type = $3 \
                   AND customer_id IS NOT DISTINCT FROM $4 AND cohort IS NOT DISTINCT FROM $5",
                &args,
            )?;
            return Ok(());
        };
        let (months, micros) = match window {
            Window::Months(m) => (m as i32, 0),
            Window::Week => (0, -1),
            Window::Fixed(len) => (0, len),
        };
        let [a, k, e, cu, co] = args;
        run(
            c,
            "INSERT INTO credyt.usage_rule (account_id, kind, event_type, customer_id, cohort, quantity, per, per_months, per_micros) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
             ON CONFLICT (account_id, kind, event_type, (coalesce(customer_id, '')), (coalesce(cohort, ''))) DO UPDATE \
               SET quantity = EXCLUDED.quantity, per = EXCLUDED.per, per_months = EXCLUDED.per_months, \
                   per_micros = EXCLUDED.per_micros, updated_at = EXCLUDED.updated_at",
            &[a, k, e, cu, co, to_numeric(quantity).into(), per.as_str().into(), months.into(), micros.into()],
        )?;
        Ok(())
    })
}

/// The first `quantity` units of an event type per calendar `per` (day, week, month;
/// UTC) are free, for a customer, a cohort or the account. NULL removes the rule.
#[pg_extern(security_definer)]
#[search_path(@extschema@, pg_temp)]
fn set_free_tier(
    event_type: Option<String>,
    quantity: Option<AnyNumeric>,
    per: Option<String>,
    customer: default!(Option<String>, "NULL"),
    cohort: default!(Option<String>, "NULL"),
) {
    api(move || {
        let quantity = money::optional_non_negative("quantity", quantity)?;
        let per = match (&quantity, per) {
            (None, _) => None,
            (Some(_), p) => {
                let p = validate::required("per", p)?;
                let w = Window::per(&p).ok_or_else(|| {
                    CyError::invalid(format!("per must be day, week or month, not {p:?}"))
                        .hint("free tiers count calendar periods in UTC")
                })?;
                Some((p, w))
            }
        };
        set_rule("free_tier", event_type, quantity, per, customer, cohort)
    })
}

/// At most `max_events` events of a type per `per` (a fixed length, or whole months)
/// for a customer, a cohort or the account; past it, events are not recorded. NULL
/// removes the rule.
#[pg_extern(security_definer)]
#[search_path(@extschema@, pg_temp)]
fn set_usage_limit(
    event_type: Option<String>,
    max_events: Option<i32>,
    per: Option<pgrx::datum::Interval>,
    customer: default!(Option<String>, "NULL"),
    cohort: default!(Option<String>, "NULL"),
) {
    api(move || {
        if max_events.is_some_and(|m| m < 0) {
            return Err(CyError::invalid("max_events must not be negative"));
        }
        let per = match max_events {
            None => None,
            Some(_) => {
                let i = validate::required("per", per)?;
                let w = Window::of_interval(i.months().into(), i.days().into(), i.micros()).map_err(|why| {
                    CyError::invalid(format!("per {why}")).hint("e.g. '1 minute', '1 hour', '1 day', '1 month'")
                })?;
                Some((Spi::get_one_with_args::<String>("SELECT $1::text", &[i.into()])?.unwrap_or_default(), w))
            }
        };
        set_rule("limit", event_type, max_events.map(Decimal::from), per, customer, cohort)
    })
}

type AllowanceRow = (AnyNumeric, AnyNumeric, AnyNumeric, TimestampWithTimeZone, TimestampWithTimeZone);

/// What is left of the free tier that applies to a customer's events of a type, in the
/// current window (no row: no free tier applies).
#[pg_extern(security_definer)]
#[search_path(@extschema@, pg_temp)]
#[allow(clippy::type_complexity)] // (the row type is spelled out for pgrx)
fn free_tier_usage(
    customer: Option<String>,
    event_type: Option<String>,
) -> TableIterator<
    'static,
    (
        name!(quantity, AnyNumeric),
        name!(used, AnyNumeric),
        name!(remaining, AnyNumeric),
        name!(window_start, TimestampWithTimeZone),
        name!(window_end, TimestampWithTimeZone),
    ),
> {
    let rows = api(move || {
        let event_type = super::api::event_type(event_type)?;
        Spi::connect_mut(|c| {
            let account = scope(c)?;
            let customer = customers::resolve(c, &account, customer.as_deref())?;
            let rules = Direct { account: &account }.rules(c, &customer, &event_type)?;
            let Some(tier) = &rules.free_tier else { return Ok(Vec::<AllowanceRow>::new()) };
            let (start, end) = tier.window.bounds(pgrx::datetime::now().into_inner());
            let (start, end) = (wallet::time_at(start)?, wallet::time_at(end)?);
            let used = one::<String>(
                c,
                "SELECT used::text FROM credyt.usage_counter \
                 WHERE customer_id = $1 AND kind = 'free_tier' AND event_type = $2 AND window_start = $3",
                &[customer.as_str().into(), event_type.as_str().into(), start.into()],
            )?
            .map(|u| money::stored(&u))
            .transpose()?
            .unwrap_or_default();
            let left = free_part(tier.quantity, used, tier.quantity);
            Ok(vec![(to_numeric(tier.quantity), to_numeric(used), to_numeric(left), start, end)])
        })
    });
    TableIterator::new(rows)
}
