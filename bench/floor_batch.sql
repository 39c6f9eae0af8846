-- The floor of a batch (see floor_setup.sql): batch.sql's 1,000 events, one per
-- customer, written by hand in one statement: lock the wallets (in one order, as two
-- batches over the same customers must) and the lots they draw, claim the events, draw
-- the lots, two entries each, the wallets.
\set r random(1, 1000000000000)
WITH e AS (SELECT 'c' || (1 + i % 1000) AS c, 'bulk-f-' || :client_id || '-' || :r || '-' || i AS id FROM generate_series(1, 1000) i),
     w AS (SELECT 1 FROM floor.wallet_account WHERE customer_id IN (SELECT c FROM e) AND name = 'default' AND asset = 'USD'
           ORDER BY customer_id FOR UPDATE),
     l AS (SELECT e.c, d.id FROM e, LATERAL (SELECT id FROM floor.lot WHERE customer_id = e.c AND wallet_name = 'default' AND asset = 'USD'
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
               FROM ev JOIN l ON l.c = ev.customer_id, (VALUES (false), (true)) AS legs(s) RETURNING customer_id, lot_id),
     drawn AS (UPDATE floor.lot x SET remaining = x.remaining - 0.0041 FROM lines
               WHERE x.customer_id = lines.customer_id AND x.id = lines.lot_id AND (SELECT count(*) FROM w) > 0 RETURNING 1),
     saved AS (UPDATE floor.wallet_account x SET balance = x.balance - 0.0041, live = x.live - 0.0041, updated_at = now()
               FROM ev WHERE x.customer_id = ev.customer_id AND x.name = 'default' AND x.asset = 'USD' RETURNING 1)
SELECT (SELECT count(*) FROM drawn), (SELECT count(*) FROM lines), (SELECT count(*) FROM saved);
