-- The bare minimum a charge writes, in one statement: an event row, a balance
-- update, an entry.
\set c random(1, :customers)
\set r random(1, 1000000000000)
WITH ev AS (INSERT INTO bench.event (customer, key, amount) VALUES ('c' || :c, 'b-' || :client_id || '-' || :r, 0.0125) RETURNING customer, amount),
     bal AS (UPDATE bench.balance b SET balance = b.balance - ev.amount FROM ev WHERE b.customer = ev.customer RETURNING b.customer)
INSERT INTO bench.entry (customer, amount) SELECT customer, -amount FROM ev;
