-- The floor of one charge: floor.charge (bench/floor_setup.sql) on usage.sql's customers.
\set c random(1, :customers)
\set r random(1, 1000000000000)
SELECT floor.charge('c' || :c, :client_id || '-' || :r);
