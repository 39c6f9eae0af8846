-- credyt data model, part 7: Stripe (payments for top-ups). An account connects its
-- own Stripe account; its keys are readable by no application role (no grant, and RLS).

CREATE TABLE credyt.stripe_connection (
    account_id     text PRIMARY KEY REFERENCES credyt.account (id),
    secret_key     text NOT NULL,       -- sk_… or rk_…: what the server calls Stripe with
    webhook_secret text NOT NULL,       -- whsec_…: what Stripe signs its webhooks with
    key_hint       text NOT NULL,       -- sk_test_…1234: enough to tell keys apart
    livemode       boolean NOT NULL,
    connected_at   timestamptz NOT NULL DEFAULT now()
);

CREATE VIEW credyt.stripe_connections WITH (security_invoker = true) AS
SELECT account_id, key_hint, livemode, connected_at FROM credyt.stripe_connection;

-- Stripe events already handled (a replayed webhook changes nothing).
CREATE TABLE credyt.stripe_event (
    account_id  text NOT NULL,
    id          text NOT NULL,          -- evt_…
    event_type  text NOT NULL,
    topup_id    text,
    outcome     text NOT NULL,          -- what it did
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account_id, id)
);

-- A customer's Stripe customer and saved card (from a completed checkout), for
-- off-session payments.
CREATE TABLE credyt.stripe_customer (
    account_id     text NOT NULL,
    customer_id    text PRIMARY KEY REFERENCES credyt.customer (id),
    stripe_customer text NOT NULL,
    payment_method text,
    updated_at     timestamptz NOT NULL DEFAULT now()
);
