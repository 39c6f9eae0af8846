//! Reports (SPEC §9): customer_stats (Credyt's GET /customers/{id}/stats) and
//! account_rollup (the org hierarchy's roll-ups).
//!
//! Revenue is read from the ledger, so every way of earning counts (usage, ad-hoc
//! charges, fixed and seat fees, outcomes, less reversals): the customer's wallet legs
//! of those kinds, by when they were written, through the wallet history index.
//! Costs are the usage events' costs, by when the usage occurred, in their currency.
//! One row per asset: costs count in the row of their currency; margin % is net over
//! gross revenue (NULL without revenue).

use super::*;
use pgrx::AnyNumeric;

/// The entry kinds that earn revenue (their other leg is the tenant's `revenue`).
const REVENUE_KINDS: [&str; 6] = ["usage", "charge", "subscription_fee", "seat_fee", "outcome_fee", "outcome_reversal"];

fn kinds() -> Vec<String> {
    REVENUE_KINDS.iter().map(|k| k.to_string()).collect()
}

fn window(
    from: Option<TimestampWithTimeZone>,
    to: Option<TimestampWithTimeZone>,
) -> Result<(Option<TimestampWithTimeZone>, Option<TimestampWithTimeZone>)> {
    let (from, to) = (validate::finite("from", from)?, validate::finite("to", to)?);
    if let (Some(f), Some(t)) = (from, to) {
        if f.into_inner() > t.into_inner() {
            return Err(CyError::invalid("from must not be after to"));
        }
    }
    Ok((from, to))
}

/// (revenue, cost) as numerics, with net and margin %.
fn figures(revenue: Decimal, cost: Decimal) -> (AnyNumeric, AnyNumeric, AnyNumeric, Option<AnyNumeric>) {
    let net = revenue - cost;
    let pct = (revenue > Decimal::ZERO).then(|| (net * Decimal::ONE_HUNDRED / revenue).round_dp(2));
    (to_numeric(revenue), to_numeric(cost), to_numeric(net), pct.map(to_numeric))
}

type StatsRow = (String, AnyNumeric, AnyNumeric, AnyNumeric, Option<AnyNumeric>);

/// Gross revenue, total costs, net revenue and margin % of a customer in [from, to)
/// (NULL: from the beginning, with no end), per asset.
#[pg_extern(security_definer)]
#[search_path(@extschema@, pg_temp)]
#[allow(clippy::type_complexity)] // (the row type is spelled out for pgrx)
fn customer_stats(
    customer: Option<String>,
    from: default!(Option<TimestampWithTimeZone>, "NULL"),
    to: default!(Option<TimestampWithTimeZone>, "NULL"),
) -> TableIterator<
    'static,
    (
        name!(asset, String),
        name!(gross_revenue, AnyNumeric),
        name!(total_costs, AnyNumeric),
        name!(net_revenue, AnyNumeric),
        name!(margin_pct, Option<AnyNumeric>),
    ),
> {
    let rows = api(move || {
        let (from, to) = window(from, to)?;
        Spi::connect_mut(|c| {
            let account = scope(c)?;
            let customer = crate::customers::resolve(c, &account, customer.as_deref())?;
            let t = run(
                c,
                "WITH r AS (SELECT e.asset, -sum(e.amount) AS revenue FROM credyt.entry e \
                   WHERE e.customer_id = $1 AND NOT e.system AND e.kind = ANY($4) \
                     AND e.created_at >= coalesce($2, '-infinity') AND e.created_at < coalesce($3, 'infinity') GROUP BY 1), \
                 k AS (SELECT u.cost_currency AS asset, sum(u.cost) AS cost FROM credyt.usage_event u \
                   WHERE u.customer_id = $1 AND u.cost IS NOT NULL \
                     AND u.occurred_at >= coalesce($2, '-infinity') AND u.occurred_at < coalesce($3, 'infinity') GROUP BY 1) \
                 SELECT coalesce(r.asset, k.asset) AS asset, coalesce(r.revenue, 0)::text AS revenue, \
                        coalesce(k.cost, 0)::text AS cost FROM r FULL JOIN k ON k.asset = r.asset ORDER BY 1",
                &[customer.as_str().into(), from.into(), to.into(), kinds().into()],
            )?;
            let mut rows: Vec<StatsRow> = Vec::new();
            for row in t {
                let (g, k, n, m) = figures(row.amount("revenue")?, row.amount("cost")?);
                rows.push((row.req("asset")?, g, k, n, m));
            }
            Ok(rows)
        })
    });
    TableIterator::new(rows)
}

type RollupRow = (String, Option<String>, String, Option<String>, i64, i64, AnyNumeric, AnyNumeric, AnyNumeric);

/// For the account in scope and each of its descendants: customers, usage events in
/// [from, to), and revenue, cost and margin per asset (one row with a NULL asset for
/// an account that has neither).
#[pg_extern(security_definer)]
#[search_path(@extschema@, pg_temp)]
#[allow(clippy::type_complexity)] // (the row type is spelled out for pgrx)
fn account_rollup(
    from: default!(Option<TimestampWithTimeZone>, "NULL"),
    to: default!(Option<TimestampWithTimeZone>, "NULL"),
) -> TableIterator<
    'static,
    (
        name!(account_id, String),
        name!(parent_id, Option<String>),
        name!(name, String),
        name!(asset, Option<String>),
        name!(customers, i64),
        name!(usage_events, i64),
        name!(revenue, AnyNumeric),
        name!(cost, AnyNumeric),
        name!(margin, AnyNumeric),
    ),
> {
    let rows = api(move || {
        let (from, to) = window(from, to)?;
        Spi::connect_mut(|c| {
            let root = scope(c)?;
            let accounts = crate::scope::accounts_within(c, &root)?;
            let t = run(
                c,
                "WITH rev AS (SELECT c.account_id, e.asset, -sum(e.amount) AS revenue FROM credyt.customer c \
                   JOIN credyt.entry e ON e.customer_id = c.id AND NOT e.system AND e.kind = ANY($4) \
                     AND e.created_at >= coalesce($2, '-infinity') AND e.created_at < coalesce($3, 'infinity') \
                   WHERE c.account_id = ANY($1) GROUP BY 1, 2), \
                 cost AS (SELECT u.account_id, u.cost_currency AS asset, sum(u.cost) AS cost FROM credyt.usage_event u \
                   WHERE u.account_id = ANY($1) AND u.cost IS NOT NULL \
                     AND u.occurred_at >= coalesce($2, '-infinity') AND u.occurred_at < coalesce($3, 'infinity') GROUP BY 1, 2), \
                 money AS (SELECT coalesce(r.account_id, k.account_id) AS account_id, coalesce(r.asset, k.asset) AS asset, \
                   coalesce(r.revenue, 0) AS revenue, coalesce(k.cost, 0) AS cost \
                   FROM rev r FULL JOIN cost k ON k.account_id = r.account_id AND k.asset = r.asset), \
                 customers AS (SELECT account_id, count(*) AS n FROM credyt.customer WHERE account_id = ANY($1) GROUP BY 1), \
                 events AS (SELECT account_id, count(*) AS n FROM credyt.usage_event WHERE account_id = ANY($1) \
                   AND occurred_at >= coalesce($2, '-infinity') AND occurred_at < coalesce($3, 'infinity') GROUP BY 1) \
                 SELECT a.id, a.parent_id, a.name, m.asset, coalesce(n.n, 0) AS customers, coalesce(v.n, 0) AS events, \
                   coalesce(m.revenue, 0)::text AS revenue, coalesce(m.cost, 0)::text AS cost \
                 FROM credyt.account a LEFT JOIN money m ON m.account_id = a.id \
                   LEFT JOIN customers n ON n.account_id = a.id LEFT JOIN events v ON v.account_id = a.id \
                 WHERE a.id = ANY($1) ORDER BY array_position($1, a.id), m.asset",
                &[accounts.clone().into(), from.into(), to.into(), kinds().into()],
            )?;
            let mut rows: Vec<RollupRow> = Vec::new();
            for row in t {
                let (revenue, cost) = (row.amount("revenue")?, row.amount("cost")?);
                rows.push((
                    row.req("id")?,
                    row.opt("parent_id")?,
                    row.req("name")?,
                    row.opt("asset")?,
                    row.req("customers")?,
                    row.req("events")?,
                    to_numeric(revenue),
                    to_numeric(cost),
                    to_numeric(revenue - cost),
                ));
            }
            Ok(rows)
        })
    });
    TableIterator::new(rows)
}
