-- credyt data model, part 5: credits (SPEC §7). A grant issues lots: one, or a fresh
-- one every period; the clock expires lots and applies their on_expiry policy.

CREATE TABLE credyt.credit_grant (
    account_id   text NOT NULL,
    id           text PRIMARY KEY,
    grant_key    text NOT NULL,          -- the client's grant_id
    customer_id  text NOT NULL REFERENCES credyt.customer (id),
    wallet_name  text NOT NULL,
    asset        text NOT NULL,
    amount       numeric NOT NULL,
    -- (burndown::Purpose and ExpiryPolicy in Rust; grants are not on the charge path,
    -- so their vocabularies are also checked here)
    purpose      text NOT NULL CHECK (purpose IN ('promotion', 'bundled', 'paid')),
    priority     int NOT NULL,
    every        interval,               -- NULL: one-off
    on_expiry    text NOT NULL CHECK (on_expiry IN ('expire', 'rollover', 'reserve')),
    rollover_cap numeric,
    effective_at timestamptz NOT NULL,
    expires_at   timestamptz,            -- one-off: the lot's expiry; recurring: the grant's end
    next_at      timestamptz,            -- recurring: start of the next period to issue
    payload      jsonb NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (account_id, grant_key)
);
CREATE INDEX credit_grant_due ON credyt.credit_grant (account_id, next_at) WHERE next_at IS NOT NULL;

CREATE INDEX lot_expiring ON credyt.lot (account_id, expires_at) WHERE expires_at IS NOT NULL;

CREATE VIEW credyt.grants WITH (security_invoker = true) AS
SELECT id, grant_key AS grant_id, customer_id, wallet_name || ':' || asset AS account_id, asset, amount, purpose,
       priority, every, on_expiry, rollover_cap, effective_at, expires_at, next_at, created_at, account_id AS tenant_id
FROM credyt.credit_grant;

-- Top-ups requested by set_auto_topup when available falls below its threshold, and
-- completed by the payment integration with complete_topup(). At most one pending
-- per wallet account (the wallet row records it; this index backs that up).
-- Checkout top-ups (initiate_topup, paid through a Stripe Checkout Session) live here
-- too: `initiated` until the session exists, then `pending` until Stripe says how it
-- ended (succeeded, failed or expired); they never count in pending_in.
CREATE TABLE credyt.topup (
    account_id        text NOT NULL,
    id                text PRIMARY KEY,
    customer_id       text NOT NULL,
    wallet_name       text NOT NULL,
    asset             text NOT NULL,
    amount            numeric NOT NULL,     -- what is credited, in asset
    status            text NOT NULL CHECK (status IN ('initiated', 'pending', 'succeeded', 'failed', 'expired')),
    kind              text NOT NULL DEFAULT 'auto' CHECK (kind IN ('auto', 'checkout')),
    currency          text,                 -- checkout: what the customer pays in
    payment_amount    numeric,              -- checkout: how much, in currency
    credit_expires_at timestamptz,          -- checkout: the paid lot's expiry
    return_url        text,
    failure_url       text,
    stripe_session    text,                 -- the Checkout Session (cs_…)
    redirect_url      text,                 -- where the customer pays
    session_expires_at timestamptz,
    payment_reference text,
    txn_id            text,
    charge_claimed_until timestamptz,       -- auto: a server is charging the saved card until then
    charge_attempts   integer NOT NULL DEFAULT 0,
    created_at        timestamptz NOT NULL DEFAULT now(),
    completed_at      timestamptz
);
CREATE INDEX topup_auto_pending ON credyt.topup (created_at) WHERE status = 'pending' AND kind = 'auto';
CREATE UNIQUE INDEX topup_one_pending ON credyt.topup (customer_id, wallet_name, asset)
    WHERE status = 'pending' AND kind = 'auto';
CREATE UNIQUE INDEX topup_session ON credyt.topup (stripe_session) WHERE stripe_session IS NOT NULL;

-- Auto top-up settings per wallet account (set_auto_topup).
CREATE VIEW credyt.auto_topups WITH (security_invoker = true) AS
SELECT customer_id, name || ':' || asset AS account_id, asset, topup_enabled AS enabled, topup_threshold AS threshold,
       topup_amount AS amount, pending_topup, account_id AS tenant_id
FROM credyt.wallet_account;

CREATE VIEW credyt.topups WITH (security_invoker = true) AS
SELECT id, customer_id, wallet_name || ':' || asset AS account_id, asset, amount, status, payment_reference,
       txn_id AS transaction_id, created_at, completed_at, account_id AS tenant_id, kind, currency, payment_amount,
       credit_expires_at, return_url, failure_url, redirect_url, session_expires_at
FROM credyt.topup;
