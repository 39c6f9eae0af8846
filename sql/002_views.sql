-- Read views. security_invoker: they run with the reader's rights, so row-level
-- security on the tables decides what each tenant sees.

-- The account in scope and the accounts directly below it (the account policy).
CREATE VIEW credyt.accounts WITH (security_invoker = true) AS
SELECT id, parent_id, environment, name, external_id, metadata, created_at
FROM credyt.account;

CREATE VIEW credyt.api_keys WITH (security_invoker = true) AS
SELECT id, account_id, name, environment, prefix, created_at, revoked_at
FROM credyt.api_key;

CREATE VIEW credyt.customers WITH (security_invoker = true) AS
SELECT id, account_id, name, external_id, email, cohort, metadata, created_at
FROM credyt.customer;

CREATE VIEW credyt.lots WITH (security_invoker = true) AS
SELECT id, customer_id, wallet_name || ':' || asset AS account_id, asset, purpose, priority,
       amount, remaining, effective_at, expires_at, on_expiry, source,
       txn_id AS transaction_id, account_id AS tenant_id, created_at
FROM credyt.lot;

-- (credyt.transactions, over ledger_txn and the usage events, is in 020_usage.sql)

CREATE VIEW credyt.entries WITH (security_invoker = true) AS
SELECT txn_id AS transaction_id, customer_id, ledger_name || ':' || asset AS account_id, asset,
       amount, kind, system, lot_id, account_id AS tenant_id, created_at, id AS entry_id
FROM credyt.entry;
