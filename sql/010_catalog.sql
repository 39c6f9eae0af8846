-- credyt data model, part 2: the catalog (SPEC §4). Written when products change,
-- read by every usage event; none of it is locked per charge.

-- Custom units of an account (fiat ISO 4217 codes need no row).
CREATE TABLE credyt.asset (
    account_id    text NOT NULL REFERENCES credyt.account (id),
    code          text NOT NULL,
    name          text NOT NULL,
    precision     int NOT NULL,
    rate          numeric,             -- value of one unit in rate_currency
    rate_currency text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account_id, code)
);

CREATE TABLE credyt.product (
    account_id      text NOT NULL REFERENCES credyt.account (id),
    id              text PRIMARY KEY,
    code            text NOT NULL,
    name            text NOT NULL,
    default_version int NOT NULL,      -- the version new subscriptions get
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (account_id, code)
);

-- Published versions never change: subscriptions are pinned to one.
CREATE TABLE credyt.product_version (
    account_id   text NOT NULL,
    product_id   text NOT NULL REFERENCES credyt.product (id),
    version      int NOT NULL,
    prices       jsonb NOT NULL,
    entitlements jsonb NOT NULL,
    published_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (product_id, version)
);

-- The prices of a version, one row each, validated, for matching by event type.
CREATE TABLE credyt.price (
    account_id text NOT NULL,
    product_id text NOT NULL,
    version    int NOT NULL,
    position   int NOT NULL,
    type       text NOT NULL,
    event_type text,
    definition jsonb NOT NULL,
    PRIMARY KEY (product_id, version, position),
    FOREIGN KEY (product_id, version) REFERENCES credyt.product_version (product_id, version)
);
CREATE INDEX price_event_type ON credyt.price (product_id, version, event_type);

CREATE TABLE credyt.subscription (
    account_id  text NOT NULL,
    id          text PRIMARY KEY,
    customer_id text NOT NULL REFERENCES credyt.customer (id),
    product_id  text NOT NULL,
    version     int NOT NULL,
    quantity    int NOT NULL,
    starts_at   timestamptz NOT NULL,
    ends_at     timestamptz,            -- set by cancel_subscription
    created_at  timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (product_id, version) REFERENCES credyt.product_version (product_id, version)
);
CREATE INDEX subscription_customer ON credyt.subscription (customer_id);

CREATE VIEW credyt.products WITH (security_invoker = true) AS
SELECT p.id, p.code, p.name, v.version, v.version = p.default_version AS is_default, v.prices, v.entitlements,
       v.published_at, p.account_id
FROM credyt.product p JOIN credyt.product_version v ON v.product_id = p.id;

CREATE VIEW credyt.subscriptions WITH (security_invoker = true) AS
SELECT s.id, s.customer_id, p.code AS product, s.product_id, s.version, s.quantity, s.starts_at, s.ends_at,
       CASE WHEN s.ends_at IS NOT NULL AND s.ends_at <= now() THEN 'cancelled'
            WHEN s.starts_at > now() THEN 'scheduled' ELSE 'active' END AS status,
       s.account_id, s.created_at
FROM credyt.subscription s JOIN credyt.product p ON p.id = s.product_id;

CREATE VIEW credyt.assets WITH (security_invoker = true) AS
SELECT code, name, precision, rate, rate_currency, account_id, created_at FROM credyt.asset;
