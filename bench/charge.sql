\set c random(1, :customers)
\set r random(1, 1000000000000)
SELECT credyt.charge('c' || :c, 'b-' || :client_id || '-' || :r, 'USD', 0.0125);
