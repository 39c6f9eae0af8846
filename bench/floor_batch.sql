-- The floor of a batch (see floor_setup.sql): batch.sql's 1,000 events written by hand
-- in one statement: lock the wallets (in one order, as two batches over the same
-- customers must) and the lot each draws, claim the events, two entries each, the
-- lots and wallets by what their customer's events took.
\set span 1000 / :groups
\set base (:client_id % :groups) * :span
\set r random(1, 1000000000000)
WITH e AS (SELECT 'c' || (1 + :base + i % :span) AS c, 'bulk-f-' || :client_id || '-' || :r || '-' || i AS id
           FROM generate_series(1, 1000) i),
     w AS (SELECT 1 FROM floor.wallet_account WHERE customer_id IN (SELECT c FROM e) AND name = 'default' AND asset = 'USD'
           ORDER BY customer_id FOR UPDATE),
     l AS (SELECT cs.c, d.id FROM (SELECT DISTINCT c FROM e) cs,
             LATERAL (SELECT id FROM floor.lot WHERE customer_id = cs.c AND wallet_name = 'default' AND asset = 'USD'
                      AND NOT spent ORDER BY priority, expires_at, seq LIMIT 1 FOR UPDATE) d),
     ev AS (INSERT INTO floor.usage_event (account_id, event_id, customer_id, event_type, data, occurred_at, occurred_at_given,
                                           model, input_tokens, output_tokens, status, fees, charged, asset, txn_id)
            SELECT 'acc_floor', e.id, e.c, 'chat', '{"model": "gpt-4o", "input_tokens": 1200, "output_tokens": 310}', now(), false,
                   'gpt-4o', 1200, 310, 'charged',
                   '[{"asset": "USD", "price": 0, "amount": 0.0041, "volume": 310, "version": 1, "product_id": "prp_01m8yhhbgz114w8rbvsae1fd6n"}]',
                   0.0041, 'USD', 'txn-' || e.id
            FROM e ON CONFLICT DO NOTHING RETURNING customer_id, txn_id),
     lines AS (INSERT INTO floor.entry (account_id, txn_id, customer_id, system, ledger_name, asset, amount, lot_id, kind)
               SELECT 'acc_floor', ev.txn_id, ev.customer_id, s, CASE WHEN s THEN 'revenue' ELSE 'default' END, 'USD',
                      CASE WHEN s THEN 0.0041 ELSE -0.0041 END, CASE WHEN s THEN NULL ELSE l.id END, 'usage'
               FROM ev JOIN l ON l.c = ev.customer_id, (VALUES (false), (true)) AS legs(s)
               RETURNING customer_id, lot_id, amount),
     drawn AS (UPDATE floor.lot x SET remaining = x.remaining - d.took
               FROM (SELECT customer_id, lot_id, -sum(amount) AS took FROM lines WHERE lot_id IS NOT NULL GROUP BY 1, 2) d
               WHERE x.customer_id = d.customer_id AND x.id = d.lot_id AND (SELECT count(*) FROM w) > 0 RETURNING 1),
     saved AS (UPDATE floor.wallet_account x SET balance = x.balance - s.took, live = x.live - s.took, updated_at = now()
               FROM (SELECT customer_id, 0.0041 * count(*) AS took FROM ev GROUP BY 1) s
               WHERE x.customer_id = s.customer_id AND x.name = 'default' AND x.asset = 'USD' RETURNING 1)
SELECT (SELECT count(*) FROM drawn), (SELECT count(*) FROM lines), (SELECT count(*) FROM saved);
