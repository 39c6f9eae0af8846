//! verify_ledger(): every invariant re-checked from the tables.

use super::*;

// ---------------------------------------------------------------------------------
// Verification

/// One query per invariant; each returns (check, detail) rows for what is broken.
/// $1 is the array of accounts to check. Rows of one ledger fact are joined by their
/// customer too (a transaction's entries, a lot's entries, an entry's header all name
/// one customer): on Citus that keeps each check a query of every shard on its own.
const CHECKS: &[&str] = &[
    "SELECT 'transaction_unbalanced' AS check, format('transaction %s does not sum to zero in %s: %s', txn_id, asset, sum(amount)) AS detail \
     FROM credyt.entry WHERE account_id = ANY($1) GROUP BY customer_id, txn_id, asset HAVING sum(amount) <> 0",
    "SELECT 'wallet_balance_mismatch' AS check, format('wallet %s:%s of %s has balance %s but its entries sum to %s', \
            w.name, w.asset, w.customer_id, w.balance, coalesce(e.total, 0)) AS detail \
     FROM credyt.wallet_account w LEFT JOIN (SELECT customer_id, ledger_name, asset, sum(amount) AS total \
        FROM credyt.entry WHERE NOT system AND account_id = ANY($1) GROUP BY 1, 2, 3) e \
       ON e.customer_id = w.customer_id AND e.ledger_name = w.name AND e.asset = w.asset \
     WHERE w.account_id = ANY($1) AND w.balance <> coalesce(e.total, 0)",
    "SELECT 'entries_without_wallet' AS check, format('entries of %s:%s of %s have no wallet account', e.ledger_name, e.asset, e.customer_id) AS detail \
     FROM (SELECT DISTINCT customer_id, ledger_name, asset FROM credyt.entry WHERE NOT system AND account_id = ANY($1)) e \
     WHERE NOT EXISTS (SELECT 1 FROM credyt.wallet_account w \
       WHERE w.customer_id = e.customer_id AND w.name = e.ledger_name AND w.asset = e.asset)",
    "SELECT 'wallet_debt_mismatch' AS check, format('wallet %s:%s of %s has debt %s but its debt entries sum to %s', \
            w.name, w.asset, w.customer_id, w.debt, -coalesce(e.total, 0)) AS detail \
     FROM credyt.wallet_account w LEFT JOIN (SELECT customer_id, ledger_name, asset, sum(amount) AS total \
        FROM credyt.entry WHERE NOT system AND lot_id IS NULL AND account_id = ANY($1) GROUP BY 1, 2, 3) e \
       ON e.customer_id = w.customer_id AND e.ledger_name = w.name AND e.asset = w.asset \
     WHERE w.account_id = ANY($1) AND w.debt <> -coalesce(e.total, 0)",
    "SELECT 'wallet_lots_mismatch' AS check, format('wallet %s:%s of %s has balance %s but lots remaining %s minus debt %s', \
            w.name, w.asset, w.customer_id, w.balance, coalesce(l.total, 0), w.debt) AS detail \
     FROM credyt.wallet_account w LEFT JOIN (SELECT customer_id, wallet_name, asset, sum(remaining) AS total \
        FROM credyt.lot WHERE account_id = ANY($1) GROUP BY 1, 2, 3) l \
       ON l.customer_id = w.customer_id AND l.wallet_name = w.name AND l.asset = w.asset \
     WHERE w.account_id = ANY($1) AND w.balance <> coalesce(l.total, 0) - w.debt",
    "SELECT 'lot_remaining_mismatch' AS check, format('lot %s has remaining %s but its entries sum to %s', l.id, l.remaining, coalesce(e.total, 0)) AS detail \
     FROM credyt.lot l LEFT JOIN (SELECT customer_id, lot_id, sum(amount) AS total FROM credyt.entry \
        WHERE lot_id IS NOT NULL AND account_id = ANY($1) GROUP BY 1, 2) e ON e.customer_id = l.customer_id AND e.lot_id = l.id \
     WHERE l.account_id = ANY($1) AND l.remaining <> coalesce(e.total, 0)",
    "SELECT 'lot_out_of_range' AS check, format('lot %s has remaining %s outside [0, %s]', id, remaining, amount) AS detail \
     FROM credyt.lot WHERE account_id = ANY($1) AND (remaining < 0 OR remaining > amount)",
    "SELECT 'lot_malformed' AS check, format('lot %s has amount %s, purpose %s, effective %s, expires %s', id, amount, purpose, effective_at, expires_at) AS detail \
     FROM credyt.lot WHERE account_id = ANY($1) AND (amount <= 0 OR purpose NOT IN ('promotion', 'bundled', 'paid') \
       OR expires_at <= effective_at)",
    "SELECT 'wallet_malformed' AS check, format('wallet %s:%s of %s has debt %s and overdraft limit %s', name, asset, customer_id, debt, overdraft_limit) AS detail \
     FROM credyt.wallet_account WHERE account_id = ANY($1) AND (debt < 0 OR overdraft_limit < 0)",
    "SELECT 'entry_zero' AS check, format('entry %s of transaction %s has amount zero', id, txn_id) AS detail \
     FROM credyt.entry WHERE account_id = ANY($1) AND amount = 0",
    "SELECT 'entry_without_transaction' AS check, format('entry %s names unknown transaction %s', e.id, e.txn_id) AS detail \
     FROM credyt.entry e WHERE e.account_id = ANY($1) \
       AND NOT EXISTS (SELECT 1 FROM credyt.ledger_txn t WHERE t.customer_id = e.customer_id AND t.id = e.txn_id \
         AND t.account_id = e.account_id) \
       AND NOT EXISTS (SELECT 1 FROM credyt.usage_event u WHERE u.customer_id = e.customer_id AND u.txn_id = e.txn_id \
         AND u.account_id = e.account_id)",
    // A charged usage event's fees, per asset, against what its entries took from the
    // customer's wallet accounts (lots, the reserve pool and debt alike). Fees that are
    // not an array count as none, so that their entries are reported, not an error.
    "SELECT 'usage_charge_mismatch' AS check, format('usage event %s of %s has fees of %s %s but its entries debit %s', \
            coalesce(f.event_id, e.event_id), coalesce(f.customer_id, e.customer_id), coalesce(f.total, 0), \
            coalesce(f.asset, e.asset), coalesce(e.total, 0)) AS detail \
     FROM (SELECT u.customer_id, u.event_id, x->>'asset' AS asset, sum((x->>'amount')::numeric) AS total \
           FROM credyt.usage_event u \
           CROSS JOIN LATERAL jsonb_array_elements(CASE jsonb_typeof(u.fees) WHEN 'array' THEN u.fees ELSE '[]' END) x \
           WHERE u.account_id = ANY($1) AND u.status = 'charged' GROUP BY 1, 2, 3) f \
     FULL JOIN (SELECT en.customer_id, u.event_id, en.asset, -sum(en.amount) AS total FROM credyt.entry en \
           JOIN credyt.usage_event u ON u.customer_id = en.customer_id AND u.txn_id = en.txn_id AND u.account_id = en.account_id \
           WHERE en.account_id = ANY($1) AND NOT en.system GROUP BY 1, 2, 3) e \
       ON e.customer_id = f.customer_id AND e.event_id = f.event_id AND e.asset = f.asset \
     WHERE coalesce(f.total, 0) <> coalesce(e.total, 0)",
    // What a wallet row keeps for available (live, held, fresh_until) against its lots
    // and holds, while the row says it is fresh.
    concat!(
        "SELECT 'wallet_available_mismatch' AS check, format('wallet %s:%s of %s keeps live %s, held %s, fresh until %s; \
                its lots and holds say %s, %s, %s', x.name, x.asset, x.customer_id, x.live, x.held, x.fresh_until, \
                x.live_now, x.held_now, x.next) AS detail \
         FROM (SELECT w.name, w.asset, w.customer_id, w.live, w.held, w.fresh_until, ",
        live_sum!("w.customer_id"),
        " AS live_now, ",
        held_sum!("w.customer_id"),
        " AS held_now, ",
        next_change!("w.customer_id"),
        " AS next FROM credyt.wallet_account w WHERE w.account_id = ANY($1) AND ",
        fresh!(),
        ") x WHERE x.live <> x.live_now OR x.held <> x.held_now \
           OR (x.next IS NOT NULL AND (x.fresh_until IS NULL OR x.fresh_until > x.next))"
    ),
    "SELECT 'lot_spent_mismatch' AS check, format('lot %s has remaining %s but spent %s', id, remaining, spent) AS detail \
     FROM credyt.lot WHERE account_id = ANY($1) AND spent <> (remaining = 0)",
    // Rows of a customer that does not exist in their account (a restore that lost
    // the customers, or a write that went around the API).
    "SELECT 'customer_missing' AS check, format('%s %s rows name customer %s, which does not exist in account %s', \
            count(*), x.tbl, x.customer_id, x.account_id) AS detail \
     FROM (SELECT 'lot' AS tbl, account_id, customer_id FROM credyt.lot WHERE account_id = ANY($1) \
           UNION ALL SELECT 'entry', account_id, customer_id FROM credyt.entry WHERE account_id = ANY($1) \
           UNION ALL SELECT 'ledger_txn', account_id, customer_id FROM credyt.ledger_txn \
             WHERE account_id = ANY($1) AND customer_id IS NOT NULL \
           UNION ALL SELECT 'usage_event', account_id, customer_id FROM credyt.usage_event WHERE account_id = ANY($1) \
           UNION ALL SELECT 'hold', account_id, customer_id FROM credyt.hold WHERE account_id = ANY($1) \
           UNION ALL SELECT 'topup', account_id, customer_id FROM credyt.topup WHERE account_id = ANY($1) \
           UNION ALL SELECT 'subscription', account_id, customer_id FROM credyt.subscription WHERE account_id = ANY($1)) x \
     WHERE NOT EXISTS (SELECT 1 FROM credyt.customer c WHERE c.id = x.customer_id AND c.account_id = x.account_id) \
     GROUP BY x.tbl, x.customer_id, x.account_id",
    // A customer that its id or its external id does not find (credyt.customer_ref).
    "SELECT 'customer_ref_missing' AS check, format('customer %s of account %s is not found by its id or external id %s', \
            c.id, c.account_id, c.external_id) AS detail \
     FROM credyt.customer c WHERE c.account_id = ANY($1) \
       AND (NOT EXISTS (SELECT 1 FROM credyt.customer_ref k WHERE k.account_id = c.account_id AND k.ref = c.id \
              AND k.customer_id = c.id) \
         OR (c.external_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM credyt.customer_ref k \
              WHERE k.account_id = c.account_id AND k.ref = c.external_id AND k.customer_id = c.id)))",
    // Rows of an account that does not exist: none of them is in any scope, so this is
    // checked from the platform's scope, over every row.
    "SELECT 'account_missing' AS check, format('%s %s rows belong to account %s, which does not exist', count(*), x.tbl, x.account_id) AS detail \
     FROM (SELECT 'customer' AS tbl, account_id FROM credyt.customer UNION ALL SELECT 'wallet_account', account_id FROM credyt.wallet_account \
           UNION ALL SELECT 'lot', account_id FROM credyt.lot UNION ALL SELECT 'entry', account_id FROM credyt.entry \
           UNION ALL SELECT 'ledger_txn', account_id FROM credyt.ledger_txn UNION ALL SELECT 'usage_event', account_id FROM credyt.usage_event \
           UNION ALL SELECT 'hold', account_id FROM credyt.hold UNION ALL SELECT 'credit_grant', account_id FROM credyt.credit_grant \
           UNION ALL SELECT 'topup', account_id FROM credyt.topup UNION ALL SELECT 'asset', account_id FROM credyt.asset \
           UNION ALL SELECT 'product', account_id FROM credyt.product UNION ALL SELECT 'subscription', account_id FROM credyt.subscription \
           UNION ALL SELECT 'event', account_id FROM credyt.event UNION ALL SELECT 'webhook', account_id FROM credyt.webhook \
           UNION ALL SELECT 'role_binding', account_id FROM credyt.role_binding WHERE NOT server) x \
     WHERE (SELECT a.parent_id IS NULL FROM credyt.account a WHERE a.id = ($1::text[])[1]) \
       AND NOT EXISTS (SELECT 1 FROM credyt.account a WHERE a.id = x.account_id) \
     GROUP BY x.tbl, x.account_id",
];

#[pg_extern(security_definer, stable)]
#[search_path(@extschema@, pg_temp)]
fn verify_ledger(
    account_id: default!(Option<String>, "NULL"),
) -> TableIterator<'static, (name!(check, String), name!(detail, String))> {
    let rows = api(move || {
        Spi::connect_mut(|c| {
            let scope = scope(c)?;
            let root = match account_id {
                Some(a) => {
                    crate::scope::require_within_scope(c, &a, &scope)?;
                    a
                }
                None => scope,
            };
            let accounts = crate::scope::accounts_within(c, &root)?;
            let mut problems = Vec::new();
            for sql in CHECKS {
                let t = run(c, sql, &[accounts.clone().into()])?;
                for row in t {
                    problems.push((row.req::<String>("check")?, row.req::<String>("detail")?));
                }
            }
            Ok(problems)
        })
    });
    TableIterator::new(rows)
}
