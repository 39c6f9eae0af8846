-- credyt data model, part 3: usage (SPEC §6).

-- One row per usage event: the idempotency record (primary key), the token-level
-- detail, the fees and the cost. Replays are answered from here.
CREATE TABLE credyt.usage_event (
    account_id        text NOT NULL,
    event_id          text NOT NULL,
    customer_id       text NOT NULL,
    event_type        text NOT NULL,
    data              jsonb NOT NULL,
    occurred_at       timestamptz NOT NULL,
    occurred_at_given boolean NOT NULL,   -- part of the replay identity only when given
    subject           text,
    description       text,
    model             text,
    input_tokens      bigint,
    output_tokens     bigint,
    status            text NOT NULL,      -- charged | no_match | free
    fees              jsonb NOT NULL,
    charged           numeric NOT NULL,   -- total of the fees when they share one asset
    asset             text,
    revenue           numeric,            -- charged, in cost_currency (custom units at their rate)
    cost              numeric,
    cost_currency     text,
    costs             jsonb,
    hold_id           text,
    txn_id            text,
    recorded_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account_id, event_id)
);
CREATE INDEX usage_event_customer ON credyt.usage_event (customer_id, occurred_at);
CREATE INDEX usage_event_subject ON credyt.usage_event (customer_id, subject, occurred_at) WHERE subject IS NOT NULL;
CREATE INDEX usage_event_model ON credyt.usage_event (account_id, model, occurred_at) WHERE model IS NOT NULL;

-- What a model costs the tenant, to derive an event's cost from its token counts.
CREATE TABLE credyt.model_cost (
    account_id         text NOT NULL REFERENCES credyt.account (id),
    vendor             text NOT NULL,
    model              text NOT NULL,
    input_per_million  numeric NOT NULL,
    output_per_million numeric NOT NULL,
    currency           text NOT NULL,
    updated_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account_id, vendor, model)
);
CREATE INDEX model_cost_model ON credyt.model_cost (account_id, model);

-- Reservations of funds. An active hold past expires_at no longer counts; the clock
-- marks it expired.
CREATE TABLE credyt.hold (
    account_id  text NOT NULL,
    id          text PRIMARY KEY,
    hold_key    text NOT NULL,           -- the client's hold_id
    customer_id text NOT NULL,
    wallet_name text NOT NULL,
    asset       text NOT NULL,
    amount      numeric NOT NULL,
    status      text NOT NULL,           -- active | captured | released | expired
    expires_at  timestamptz NOT NULL,
    captured    numeric,
    event_id    text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    closed_at   timestamptz,
    UNIQUE (account_id, hold_key)
);
CREATE INDEX hold_wallet ON credyt.hold (customer_id, wallet_name, asset) WHERE status = 'active';
-- the clock's expiry, per account (clock::expire_holds)
CREATE INDEX hold_due ON credyt.hold (account_id, expires_at) WHERE status = 'active';

-- Ledger transactions: the client's transaction_id (when it gave one) beside the id.
-- A usage event's row is the header of its charge (its txn_id names the entries).
CREATE VIEW credyt.transactions WITH (security_invoker = true) AS
SELECT id, idem_key AS transaction_id, kind, customer_id, description, metadata, created_at, account_id AS tenant_id
FROM credyt.ledger_txn
UNION ALL
SELECT txn_id, NULL, 'usage', customer_id, description, '{}'::jsonb, recorded_at, account_id
FROM credyt.usage_event WHERE txn_id IS NOT NULL;

CREATE VIEW credyt.usage WITH (security_invoker = true) AS
SELECT event_id, customer_id, event_type, subject, model, input_tokens, output_tokens, status, charged, asset,
       cost, occurred_at, recorded_at, cost_currency, fees, data, description, hold_id, txn_id AS transaction_id,
       account_id, costs
FROM credyt.usage_event;

-- Revenue against cost, per account, customer, subject, model and day, in the cost's
-- currency (revenue in a custom unit is converted at the unit's rate).
CREATE VIEW credyt.margins WITH (security_invoker = true) AS
SELECT account_id, customer_id, subject, model, date_trunc('day', occurred_at) AS day, cost_currency AS currency,
       sum(revenue) AS revenue, sum(cost) AS cost, sum(revenue) - sum(cost) AS margin,
       CASE WHEN sum(revenue) > 0 THEN round(100 * (sum(revenue) - sum(cost)) / sum(revenue), 2) END AS margin_pct,
       count(*) AS events
FROM credyt.usage_event
WHERE cost IS NOT NULL
GROUP BY account_id, customer_id, subject, model, date_trunc('day', occurred_at), cost_currency;

CREATE VIEW credyt.holds WITH (security_invoker = true) AS
SELECT id, hold_key AS hold_id, customer_id, wallet_name || ':' || asset AS account_id, asset, amount,
       CASE WHEN status = 'active' AND expires_at <= now() THEN 'expired' ELSE status END AS status,
       expires_at, captured, event_id, created_at, closed_at, account_id AS tenant_id
FROM credyt.hold;
