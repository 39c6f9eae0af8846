-- The same bare minimum as an application writes it by hand: three plain statements in
-- its own transaction (insert the event, update the balance, insert the entry).
\set c random(1, :customers)
\set r random(1, 1000000000000)
BEGIN;
INSERT INTO bench.event (customer, key, amount) VALUES ('c' || :c, 's-' || :client_id || '-' || :r, 0.0125);
UPDATE bench.balance SET balance = balance - 0.0125 WHERE customer = 'c' || :c;
INSERT INTO bench.entry (customer, amount) VALUES ('c' || :c, -0.0125);
END;
