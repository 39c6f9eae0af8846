-- credyt data model: recurring fees (SPEC §9: fixed fees and seats). A subscription's
-- fixed and seat prices become fee rows; the clock charges each period of each row
-- once, in advance. Nothing here is locked by a usage charge.

-- One recurring (or one_time) fee of a subscription: a fixed or seat price of its
-- version, in one asset. Period k starts at `anchor + k × interval` on the UTC
-- calendar (core::billing); next_period is the next one to charge, next_at its start.
CREATE TABLE credyt.subscription_fee (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id      text NOT NULL,
    subscription_id text NOT NULL REFERENCES credyt.subscription (id),
    version         int NOT NULL,          -- the version whose price it is
    position        int NOT NULL,          -- the price's place in the version's prices
    asset           text NOT NULL,
    customer_id     text NOT NULL,
    type            text NOT NULL CHECK (type IN ('fixed', 'seat')),
    unit_price      numeric NOT NULL CHECK (unit_price >= 0),
    interval_unit   text CHECK (interval_unit IN ('day', 'week', 'month', 'year')),  -- NULL: one_time
    interval_count  int CHECK (interval_count BETWEEN 1 AND 120),
    anchor          timestamptz NOT NULL,  -- period 0 starts here
    next_period     bigint,                -- NULL: nothing more to charge
    next_at         timestamptz,
    billed_period   bigint,                -- the last period charged,
    billed_quantity int NOT NULL DEFAULT 0, -- and the quantity charged for it so far (seats)
    UNIQUE (subscription_id, version, position, asset),
    CHECK ((interval_unit IS NULL) = (interval_count IS NULL)),
    CHECK ((next_period IS NULL) = (next_at IS NULL))
);
CREATE INDEX subscription_fee_due ON credyt.subscription_fee (account_id, next_at) WHERE next_at IS NOT NULL;

-- Each charge of a fee: seq 0 is a period's charge in advance, seq 1, 2, … the prorated
-- rest of the period for seats added during it. The primary key is the once-per-period
-- guarantee. status `unpaid`: the clock found the wallet past its overdraft limit, so
-- nothing moved (the amount is owed, not drawn).
CREATE TABLE credyt.subscription_charge (
    account_id      text NOT NULL,
    subscription_id text NOT NULL,
    version         int NOT NULL,
    position        int NOT NULL,
    asset           text NOT NULL,
    period          bigint NOT NULL,
    seq             int NOT NULL,
    customer_id     text NOT NULL,
    type            text NOT NULL,
    period_start    timestamptz NOT NULL,
    period_end      timestamptz,           -- NULL: a one_time fee
    quantity        int NOT NULL,
    amount          numeric NOT NULL CHECK (amount >= 0),
    status          text NOT NULL CHECK (status IN ('charged', 'unpaid')),
    txn_id          text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (subscription_id, version, position, asset, period, seq)
);
CREATE INDEX subscription_charge_customer ON credyt.subscription_charge (customer_id, created_at);

-- The users holding a seat of a subscription (assign_seat / unassign_seat).
CREATE TABLE credyt.seat_assignment (
    account_id      text NOT NULL,
    subscription_id text NOT NULL REFERENCES credyt.subscription (id),
    user_ref        text NOT NULL,
    assigned_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (subscription_id, user_ref)
);

CREATE VIEW credyt.subscription_charges WITH (security_invoker = true) AS
SELECT subscription_id, customer_id, type, version, position, asset, period, seq > 0 AS prorated, period_start, period_end,
       quantity, amount, status, txn_id AS transaction_id, account_id, created_at
FROM credyt.subscription_charge;

-- One row per subscription with seat prices: the seats asked for, the users assigned,
-- and the quantity billed (at least the assigned users).
CREATE VIEW credyt.seats WITH (security_invoker = true) AS
SELECT s.id AS subscription_id, s.customer_id, s.seats AS quantity,
       (SELECT count(*) FROM credyt.seat_assignment a WHERE a.subscription_id = s.id)::int AS assigned,
       greatest(s.seats, (SELECT count(*) FROM credyt.seat_assignment a WHERE a.subscription_id = s.id))::int AS billed_quantity,
       coalesce((SELECT array_agg(a.user_ref ORDER BY a.assigned_at, a.user_ref) FROM credyt.seat_assignment a
                 WHERE a.subscription_id = s.id), '{}') AS users,
       s.account_id
FROM credyt.subscription s
WHERE EXISTS (SELECT 1 FROM credyt.subscription_fee f WHERE f.customer_id = s.customer_id AND f.subscription_id = s.id
                AND f.type = 'seat');

-- Outcomes (record_outcome): one row per outcome_id of an account, claimed before
-- anything is charged (its unique key is the idempotency). txn_id: the ledger
-- transaction of its fees (NULL when they came to nothing). settles_at: the end of
-- the shortest settlement window of the prices that charged it.
CREATE TABLE credyt.outcome (
    account_id        text NOT NULL,
    outcome_key       text NOT NULL,
    customer_id       text NOT NULL REFERENCES credyt.customer (id),
    outcome_type      text NOT NULL,
    value             numeric,
    data              jsonb NOT NULL,
    occurred_at       timestamptz NOT NULL,
    payload           jsonb NOT NULL,      -- the replay identity
    status            text NOT NULL CHECK (status IN ('pending', 'charged', 'no_match', 'reversed')),
    fees              jsonb NOT NULL,      -- [{subscription_id, price, asset, amount}]
    txn_id            text,
    settles_at        timestamptz,
    recorded_at       timestamptz NOT NULL DEFAULT now(),
    reversed_at       timestamptz,
    reversal_txn_id   text,
    reversal_reason   text,
    PRIMARY KEY (account_id, outcome_key)
);
CREATE INDEX outcome_customer ON credyt.outcome (customer_id, occurred_at);

CREATE VIEW credyt.outcomes WITH (security_invoker = true) AS
SELECT outcome_key AS outcome_id, customer_id, outcome_type, value, data, status, fees, txn_id AS transaction_id,
       occurred_at, settles_at, reversed_at, reversal_reason, reversal_txn_id AS reversal_transaction_id,
       account_id, recorded_at
FROM credyt.outcome;

-- Free tiers and usage limits (set_free_tier, set_usage_limit): one rule per kind,
-- event type and scope (a customer, a cohort, or the account: both NULL). The most
-- specific applies. A change sets the account's catalog generation (charges cache
-- the rules they read).
CREATE TABLE credyt.usage_rule (
    account_id  text NOT NULL REFERENCES credyt.account (id),
    kind        text NOT NULL CHECK (kind IN ('free_tier', 'limit')),
    event_type  text NOT NULL,
    customer_id text REFERENCES credyt.customer (id),
    cohort      text,
    quantity    numeric NOT NULL CHECK (quantity >= 0),   -- the allowance, or max_events
    per         text NOT NULL,                              -- day|week|month, or the limit's interval as text
    per_months  int NOT NULL DEFAULT 0,                     -- the window: whole months,
    per_micros  bigint NOT NULL DEFAULT 0,                  -- or a fixed length (week: -1)
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CHECK (customer_id IS NULL OR cohort IS NULL)
);
CREATE UNIQUE INDEX usage_rule_scope ON credyt.usage_rule
    (account_id, kind, event_type, coalesce(customer_id, ''), coalesce(cohort, ''));
CREATE TRIGGER usage_rule_changed AFTER INSERT OR UPDATE OR DELETE ON credyt.usage_rule
    FOR EACH ROW EXECUTE FUNCTION credyt._catalog_changed();

-- What a customer has used of a rule in one window: a row per customer, so that no
-- row shared by customers is updated per event. alerted: the window's
-- usage.limit_exceeded has been written.
CREATE TABLE credyt.usage_counter (
    account_id   text NOT NULL,
    customer_id  text NOT NULL REFERENCES credyt.customer (id),
    kind         text NOT NULL,
    event_type   text NOT NULL,
    window_start timestamptz NOT NULL,
    window_end   timestamptz NOT NULL,
    used         numeric NOT NULL,
    alerted      boolean NOT NULL DEFAULT false,
    PRIMARY KEY (customer_id, kind, event_type, window_start)
);
CREATE INDEX usage_counter_end ON credyt.usage_counter (account_id, window_end);

CREATE VIEW credyt.usage_rules WITH (security_invoker = true) AS
SELECT kind, event_type, customer_id, cohort, quantity, per, account_id, updated_at FROM credyt.usage_rule;
