-- Bench fixture: one tenant with 1,000 funded customers (c1..c1000) subscribed to a
-- dimensional chat price, and the bare
-- baseline's three tables, shaped like the work a charge must do at minimum.
SELECT credyt.create_account('bench') AS account \gset
SET credyt.account = :'account';
SELECT count(credyt.create_customer('c' || i, 'c' || i)) FROM generate_series(1, 1000) i;
SELECT count(credyt.adjust('c' || i, 'fund-' || i, 'USD', 1000000, 'external_topup')) FROM generate_series(1, 1000) i;
SELECT credyt.create_product('chat', 'Chat', '[{"type": "usage_based",
  "usage_calculation": {"event_type": "chat", "usage_type": "unit_and_volume", "volume_field": "output_tokens",
                        "billable_dimensions": ["model"]},
  "pricing": [{"asset": "USD", "values": [
     {"dimensions": {"model": "gpt-4o"}, "unit_price": 0.001, "volume_rate": 0.00001},
     {"dimensions": {"model": "*"}, "unit_price": 0.0005, "volume_rate": 0.000002}]}]}]');
SELECT count(credyt.subscribe('c' || i, 'chat')) FROM generate_series(1, 1000) i;

CREATE SCHEMA bench;
CREATE TABLE bench.event (id bigserial PRIMARY KEY, customer text NOT NULL, key text NOT NULL, amount numeric NOT NULL,
                          created_at timestamptz NOT NULL DEFAULT now());
CREATE UNIQUE INDEX ON bench.event (key);
CREATE TABLE bench.balance (customer text PRIMARY KEY, balance numeric NOT NULL);
CREATE TABLE bench.entry (id bigserial PRIMARY KEY, customer text NOT NULL, amount numeric NOT NULL,
                          created_at timestamptz NOT NULL DEFAULT now());
INSERT INTO bench.balance SELECT 'c' || i, 1000000 FROM generate_series(1, 1000) i;
\echo :account
