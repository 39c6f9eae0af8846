-- credyt data model, part 2: the catalog (SPEC §4). Written when products change,
-- read by every usage event; none of it is locked per charge.

-- Custom units of an account (fiat ISO 4217 codes need no row).
CREATE TABLE credyt.asset (
    account_id    text NOT NULL REFERENCES credyt.account (id),
    code          text NOT NULL,
    name          text NOT NULL,
    precision     int NOT NULL,
    rate_currency text NOT NULL,       -- the currency create_asset's rate is in
    label         text,
    symbol        text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account_id, code)
);

-- An asset's exchange rates over time: one unit of the asset costs `rate` units of
-- `source` from valid_from until valid_to (open: until further notice). The rates of
-- one (asset, source) never overlap (add_asset_rate checks under the asset's lock).
CREATE TABLE credyt.asset_rate (
    account_id text NOT NULL,
    asset      text NOT NULL,
    source     text NOT NULL,
    valid_from timestamptz NOT NULL,   -- '-infinity' for the rate given at creation
    valid_to   timestamptz,
    rate       numeric NOT NULL CHECK (rate > 0),
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account_id, asset, source, valid_from),
    FOREIGN KEY (account_id, asset) REFERENCES credyt.asset (account_id, code),
    CHECK (valid_to IS NULL OR valid_to > valid_from)
);

CREATE TABLE credyt.product (
    account_id      text NOT NULL REFERENCES credyt.account (id),
    id              text PRIMARY KEY,
    code            text NOT NULL,
    name            text NOT NULL,
    default_version int,               -- the version new subscriptions get (NULL: none published yet)
    archived_at     timestamptz,       -- archive_product: no new subscriptions, gone from the API's lists
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (account_id, code)
);

-- A version's prices never change. A draft cannot be subscribed to; publishing makes
-- it available; archiving closes it to new subscriptions (existing ones keep billing).
CREATE TABLE credyt.product_version (
    account_id   text NOT NULL,
    product_id   text NOT NULL REFERENCES credyt.product (id),
    version      int NOT NULL,
    prices       jsonb NOT NULL,
    entitlements jsonb NOT NULL,
    status       text NOT NULL CHECK (status IN ('draft', 'published', 'archived')),
    created_at   timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz,
    PRIMARY KEY (product_id, version),
    CHECK ((status = 'draft') = (published_at IS NULL))
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
    quantity    int NOT NULL,           -- what fixed fees multiply
    seats       int NOT NULL,           -- seats asked for (set_seats); seat fees bill at least the assigned users
    starts_at   timestamptz NOT NULL,
    ends_at     timestamptz,            -- set by cancel_subscription
    activated_at timestamptz,           -- when subscription.activated was written (at its start)
    created_at  timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (product_id, version) REFERENCES credyt.product_version (product_id, version)
);
CREATE INDEX subscription_customer ON credyt.subscription (customer_id);
CREATE INDEX subscription_to_activate ON credyt.subscription (account_id, starts_at) WHERE activated_at IS NULL;

CREATE VIEW credyt.products WITH (security_invoker = true) AS
SELECT p.id, p.code, p.name, v.version, v.version IS NOT DISTINCT FROM p.default_version AS is_default, v.prices,
       v.entitlements, v.published_at, p.account_id, v.status, v.created_at, p.archived_at
FROM credyt.product p JOIN credyt.product_version v ON v.product_id = p.id;

CREATE VIEW credyt.subscriptions WITH (security_invoker = true) AS
SELECT s.id, s.customer_id, p.code AS product, s.product_id, s.version, s.quantity, s.starts_at, s.ends_at,
       CASE WHEN s.ends_at IS NOT NULL AND s.ends_at <= now() THEN 'cancelled'
            WHEN s.starts_at > now() THEN 'scheduled' ELSE 'active' END AS status,
       s.account_id, s.created_at, s.seats
FROM credyt.subscription s JOIN credyt.product p ON p.id = s.product_id;

-- rate: the rate in rate_currency in effect now.
CREATE VIEW credyt.assets WITH (security_invoker = true) AS
SELECT a.code, a.name, a.precision,
       (SELECT r.rate FROM credyt.asset_rate r
        WHERE r.account_id = a.account_id AND r.asset = a.code AND r.source = a.rate_currency
          AND r.valid_from <= now() AND (r.valid_to IS NULL OR r.valid_to > now())) AS rate,
       a.rate_currency, a.account_id, a.created_at, a.label, a.symbol
FROM credyt.asset a;

CREATE VIEW credyt.asset_rates WITH (security_invoker = true) AS
SELECT asset, source, valid_from, valid_to, rate, account_id, created_at FROM credyt.asset_rate;

-- The vendors an account's costs come from (usage costs name one by id or external_id).
CREATE TABLE credyt.vendor (
    account_id  text NOT NULL REFERENCES credyt.account (id),
    id          text PRIMARY KEY,
    name        text NOT NULL,
    external_id text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (account_id, external_id)
);

CREATE VIEW credyt.vendors WITH (security_invoker = true) AS
SELECT id, name, external_id, account_id, created_at FROM credyt.vendor;
