-- credyt data model, part 8: the billing portal. A grant lets one customer of one
-- account see and fund their own wallet for a while; credyt-server wraps it in signed,
-- single-purpose tokens (a 10-minute link, then a session cookie).

CREATE TABLE credyt.portal_grant (
    account_id  text NOT NULL,
    id          text PRIMARY KEY,          -- prt_…
    customer_id text NOT NULL REFERENCES credyt.customer (id),
    secret_hash text NOT NULL,             -- SHA-256 of the grant's secret (never stored)
    return_url  text NOT NULL,
    failure_url text NOT NULL,
    expires_at  timestamptz NOT NULL,      -- the portal session's end
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX portal_grant_expiry ON credyt.portal_grant (expires_at);
