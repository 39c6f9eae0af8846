-- credyt data model, part 4: the outbox (SPEC §10). Events are written in the
-- transaction of their cause, so a rolled-back cause emits nothing.

CREATE TABLE credyt.event (
    account_id  text NOT NULL,
    id          text PRIMARY KEY,
    -- core::webhook::Topic, the same list (a test sends one event of each)
    event_type  text NOT NULL CHECK (event_type IN ('auto_topup.failed', 'auto_topup.requested',
        'auto_topup.succeeded', 'balance_threshold_hit', 'grant.expired', 'grant.issued', 'hold.expired',
        'outcome.reversed', 'seat.charged', 'subscription.activated', 'usage.limit_exceeded', 'webhook.test')),
    occurred_at timestamptz NOT NULL,
    data        jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX event_account ON credyt.event (account_id, created_at);

-- payload is the webhook envelope, exactly: {"id", "account", "event_type",
-- "occurred_at" (UTC, milliseconds, Z), "data"}, as json to keep that key order.
CREATE VIEW credyt.events WITH (security_invoker = true) AS
SELECT id, account_id, event_type, occurred_at,
       json_build_object('id', id, 'account', account_id, 'event_type', event_type,
                         'occurred_at', to_char(occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
                         'data', data) AS payload,
       created_at
FROM credyt.event;
