-- The floor, which bench/run.sh prints in its ratios and batch parts: credyt's own
-- ledger tables, copied with their indexes, defaults and fill factors into schema
-- floor, holding the bench's wallets and lots under the customers' references
-- (c1..c1000). floor.charge (floor_usage.sql) and floor_batch.sql write into them, by
-- hand, the rows a charge writes: what any SQL implementation of the ledger must at
-- least do, with none of the work around it.
CREATE SCHEMA floor;
CREATE TABLE floor.usage_event (LIKE credyt.usage_event INCLUDING ALL);
CREATE TABLE floor.entry (LIKE credyt.entry INCLUDING ALL);
CREATE TABLE floor.lot (LIKE credyt.lot INCLUDING ALL) WITH (fillfactor = 50);
CREATE TABLE floor.wallet_account (LIKE credyt.wallet_account INCLUDING ALL) WITH (fillfactor = 50);
CREATE TEMP TABLE refs AS
    SELECT customer_id, ref FROM credyt.customer_ref WHERE ref ~ '^c[0-9]+$';
INSERT INTO floor.wallet_account (account_id, customer_id, name, asset, balance, debt, live, held)
    SELECT w.account_id, r.ref, w.name, w.asset, w.balance, w.debt, w.live, w.held
    FROM credyt.wallet_account w JOIN refs r USING (customer_id);
INSERT INTO floor.lot (account_id, id, customer_id, wallet_name, asset, purpose, priority, amount, remaining,
                       effective_at, source, txn_id)
    SELECT l.account_id, l.id, r.ref, l.wallet_name, l.asset, l.purpose, l.priority, l.amount, l.remaining,
           l.effective_at, l.source, l.txn_id
    FROM credyt.lot l JOIN refs r USING (customer_id);
VACUUM ANALYZE floor.wallet_account, floor.lot;

-- The floor of one charge: in one statement, by hand, what a charge of usage.sql's
-- event writes: claim the event (its row with credyt's indexes), draw the first live
-- lot, two entries, the wallet. Amounts and the fees are constants: no pricing, no
-- lookups, no checks, and no lock taken before the updates take theirs (credyt locks
-- the wallet first, to plan the draw on what it holds). A PL/pgSQL function, as
-- record_usage is a function: its statement's plan is kept, and bench/profile.sh can
-- count it: bash bench/profile.sh "SELECT floor.charge('c\$c', 'p-\$i')" 1000
CREATE FUNCTION floor.charge(customer text, key text) RETURNS void LANGUAGE plpgsql AS $fn$
DECLARE n_drawn bigint; n_lines bigint; n_saved bigint;
BEGIN
    WITH l AS (SELECT id FROM floor.lot WHERE customer_id = customer AND wallet_name = 'default' AND asset = 'USD' AND NOT spent
               ORDER BY priority, expires_at, seq LIMIT 1),
         ev AS (INSERT INTO floor.usage_event (account_id, event_id, customer_id, event_type, data, occurred_at, occurred_at_given,
                                               model, input_tokens, output_tokens, status, fees, charged, asset, txn_id)
                VALUES ('acc_floor', 'f-' || key, customer, 'chat',
                        '{"model": "gpt-4o", "input_tokens": 1200, "output_tokens": 310}', now(), false, 'gpt-4o', 1200, 310,
                        'charged', '[{"asset": "USD", "price": 0, "amount": 0.0041, "volume": 310, "version": 1, "product_id": "prp_01m8yhhbgz114w8rbvsae1fd6n"}]',
                        0.0041, 'USD', 'txn-f-' || key)
                ON CONFLICT DO NOTHING RETURNING txn_id),
         drawn AS (UPDATE floor.lot SET remaining = remaining - 0.0041 WHERE customer_id = customer AND id = (SELECT id FROM l)
                   AND EXISTS (SELECT FROM ev) RETURNING 1),
         lines AS (INSERT INTO floor.entry (account_id, txn_id, customer_id, system, ledger_name, asset, amount, lot_id, kind)
                   SELECT 'acc_floor', ev.txn_id, customer, s, CASE WHEN s THEN 'revenue' ELSE 'default' END, 'USD',
                          CASE WHEN s THEN 0.0041 ELSE -0.0041 END, CASE WHEN s THEN NULL ELSE (SELECT id FROM l) END, 'usage'
                   FROM ev, (VALUES (false), (true)) AS legs(s) RETURNING 1),
         saved AS (UPDATE floor.wallet_account SET balance = balance - 0.0041, live = live - 0.0041, updated_at = now()
                   WHERE customer_id = customer AND name = 'default' AND asset = 'USD' AND EXISTS (SELECT FROM ev) RETURNING 1)
    SELECT (SELECT count(*) FROM drawn), (SELECT count(*) FROM lines), (SELECT count(*) FROM saved) INTO n_drawn, n_lines, n_saved;
    IF (n_drawn, n_lines, n_saved) <> (1, 2, 1) THEN
        RAISE EXCEPTION 'floor charge wrote (%, %, %) rows', n_drawn, n_lines, n_saved;
    END IF;
END
$fn$;
