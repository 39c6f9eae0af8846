-- credyt data model, part 1: tables. Read in order: tenancy, customers, the ledger.
-- Every tenant-owned table carries account_id; RLS is enabled and forced in
-- 900_security.sql. Tables are singular nouns; the read views (002_views.sql) are plural.

-- Tenancy ---------------------------------------------------------------------------

-- A tenant. The platform account is the live row without a parent; connected
-- accounts hang under it, sub-organisations under those. Test data lives in a tree of
-- its own (environment 'test'), rooted at the platform's test twin: a test account
-- made for a live one names it in live_id (api keys, src/apikeys.rs). Nothing walks
-- from one tree into the other, so a test key never reaches live data.
CREATE TABLE credyt.account (
    id          text PRIMARY KEY,
    parent_id   text REFERENCES credyt.account (id),
    environment text NOT NULL DEFAULT 'live' CHECK (environment IN ('live', 'test')),
    live_id     text REFERENCES credyt.account (id),
    name        text NOT NULL,
    external_id text,
    metadata    jsonb NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT now(),
    -- The secret part of this account's notification channels (balance_channel(),
    -- events_channel()): PostgreSQL has no permission on LISTEN, so a channel is
    -- private only while its name cannot be guessed. 122 random bits.
    channel_key  text NOT NULL DEFAULT replace(gen_random_uuid()::text, '-', ''),
    -- set_balance_push(): NOTIFY on every balance change (off: it serialises commits)
    balance_push boolean NOT NULL DEFAULT false,
    -- Bumped (from credyt.catalog_gen) by every change to what a charge looks up for
    -- this account: products, prices, model costs, assets, rates, customers' ids (and,
    -- on the platform row, role bindings). Backends cache those lookups and check the
    -- generation in the statement that locks the wallet (src/cache.rs).
    catalog_gen  bigint NOT NULL DEFAULT 0,
    CHECK (id <> parent_id)
);
CREATE UNIQUE INDEX account_one_platform ON credyt.account (environment) WHERE parent_id IS NULL;
CREATE UNIQUE INDEX account_twin ON credyt.account (live_id) WHERE live_id IS NOT NULL;
CREATE UNIQUE INDEX account_external_id ON credyt.account (parent_id, external_id) WHERE external_id IS NOT NULL;
CREATE INDEX account_parent ON credyt.account (parent_id);

-- Roles confined to an account (and its descendants), or (server) to the account an
-- API key authenticated in the current transaction. Keyed by role OID so that
-- renaming a role cannot unbind it.
CREATE TABLE credyt.role_binding (
    role_oid   oid PRIMARY KEY,
    -- On a Citus worker, where a role has another OID, the binding is found by name
    -- (row security is evaluated there: crate::scope).
    role_name  name NOT NULL,
    account_id text REFERENCES credyt.account (id),
    server     boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now(),
    CHECK (server = (account_id IS NULL))
);

-- API keys of credyt-server (create_api_key): only a SHA-256 of the key is kept; the
-- key itself is shown once. A key belongs to an account of its environment.
CREATE TABLE credyt.api_key (
    account_id  text NOT NULL REFERENCES credyt.account (id),
    id          text PRIMARY KEY,
    name        text NOT NULL,
    environment text NOT NULL CHECK (environment IN ('live', 'test')),
    hash        text NOT NULL UNIQUE,           -- hex SHA-256 of the whole key
    prefix      text NOT NULL,                  -- its first characters, to recognise it
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);
CREATE INDEX api_key_account ON credyt.api_key (account_id);

-- Customers ---------------------------------------------------------------------------

CREATE TABLE credyt.customer (
    account_id  text NOT NULL REFERENCES credyt.account (id),
    id          text PRIMARY KEY,
    name        text NOT NULL,
    external_id text,
    email       text,
    cohort      text,
    metadata    jsonb NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT now(),
    catalog_gen bigint NOT NULL DEFAULT 0    -- bumped by changes to the customer's subscriptions
);
CREATE UNIQUE INDEX customer_external_id ON credyt.customer (account_id, external_id);
CREATE INDEX customer_account ON credyt.customer (account_id, created_at);

-- What a reference to a customer (its id, or its external_id) names: one row per id
-- and one per external id, written with the customer (crate::customers). One unique
-- lookup resolves either, and keeps an external id unique in its account (nor may it
-- be the id of another customer of the account). On Citus this is a reference table:
-- customers are sharded by id, so a lookup by external id would otherwise ask them all.
CREATE TABLE credyt.customer_ref (
    account_id  text NOT NULL,
    ref         text NOT NULL,
    customer_id text NOT NULL,
    PRIMARY KEY (account_id, ref)
);
CREATE INDEX customer_ref_customer ON credyt.customer_ref (customer_id);

-- The ledger --------------------------------------------------------------------------

-- One balance of a customer (`name:ASSET`). This row is the lock a money movement
-- takes: everything that changes the wallet (its lots, its entries) is written while
-- holding it. balance = sum of the wallet's entries = sum(lot.remaining) - debt.
CREATE TABLE credyt.wallet_account (
    account_id      text NOT NULL,
    customer_id     text NOT NULL REFERENCES credyt.customer (id),
    name            text NOT NULL,
    asset           text NOT NULL,
    balance         numeric NOT NULL DEFAULT 0,
    debt            numeric NOT NULL DEFAULT 0,                -- never negative
    overdraft_limit numeric,                                   -- >= 0; NULL: any negative balance
    threshold       numeric,                                   -- set_threshold; NULL: none
    threshold_armed boolean NOT NULL DEFAULT true,             -- fires once per downward crossing
    topup_enabled   boolean NOT NULL DEFAULT false,            -- set_auto_topup
    topup_threshold numeric,
    topup_amount    numeric,
    pending_topup   text,                                      -- the one pending top-up, if any
    live            numeric NOT NULL DEFAULT 0,
    held            numeric NOT NULL DEFAULT 0,
    fresh_until     timestamptz,                               -- NULL: nothing changes by time
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (customer_id, name, asset)
) WITH (fillfactor = 50);   -- (as credyt.lot: every charge rewrites its wallet's row)

-- The ledger tables below are written on every charge, so they carry no foreign keys
-- and no CHECK constraints, on purpose. A foreign-key check takes FOR KEY SHARE on the
-- referenced row, and the tenant's account row is shared by every customer, so each
-- charge would write a lock onto it. A CHECK constraint's expression is re-parsed by
-- every INSERT/UPDATE statement (measured: ~9% of a charge's instructions). The
-- values are validated in Rust before they are written, debug-asserted, and every
-- condition is re-checked from the tables by verify_ledger().

-- A ledger transaction: the header of a set of entries that sum to zero per asset.
-- idem_key is the client's transaction_id; replays find the original here.
CREATE TABLE credyt.ledger_txn (
    account_id  text NOT NULL,
    id          text PRIMARY KEY,
    kind        text NOT NULL,
    idem_key    text,
    customer_id text,
    payload     jsonb NOT NULL,
    description text,
    metadata    jsonb NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX ledger_txn_idem_key ON credyt.ledger_txn (account_id, idem_key) WHERE idem_key IS NOT NULL;

-- One credit inside a wallet account. seq orders lots by age for the burn-down.
CREATE TABLE credyt.lot (
    account_id   text NOT NULL,
    id           text NOT NULL,
    seq          bigint GENERATED ALWAYS AS IDENTITY,
    customer_id  text NOT NULL,
    wallet_name  text NOT NULL,
    asset        text NOT NULL,
    purpose      text NOT NULL,          -- promotion | bundled | paid
    priority     int NOT NULL,
    amount       numeric NOT NULL,       -- > 0
    remaining    numeric NOT NULL,
    effective_at timestamptz NOT NULL,
    expires_at   timestamptz,
    on_expiry    text NOT NULL DEFAULT 'expire',   -- expire | rollover | reserve
    rollover_cap numeric,                -- rollover: at most this much carries over
    grant_id     text,                   -- the grant that issued it, if any
    source       text NOT NULL,          -- what created it, e.g. 'adjust:gift'
    txn_id       text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    spent        boolean NOT NULL DEFAULT false,  -- remaining = 0, written with it
    -- (the customer first: a draw names the lots of one customer, and on Citus the
    -- key must hold the distribution column)
    PRIMARY KEY (customer_id, id)
) WITH (fillfactor = 50);
-- (fillfactor: a batch draws every lot of its customers once; with room for each
-- lot's new version on its own page, the draws stay HOT updates, which write no index.
-- Measured: at 100, 99% of a batch's lot updates inserted into every lot index.)
-- (No index on the wallet alone: a generic plan of a draw by (customer, id) preferred
-- it to the primary key and then read every lot the customer ever had, spent ones too.)
-- The burn-down order over the lots that still hold something: a charge reads the
-- first few (a wallet's history of spent lots is not in it). Its predicate is a
-- column that changes only when a lot runs out, so a draw stays a HOT update.
CREATE INDEX lot_burn ON credyt.lot (customer_id, wallet_name, asset, priority, expires_at, seq) WHERE NOT spent;

-- Immutable double-entry lines. A customer leg (system = false) moves a wallet
-- account, and names the lot it credits or draws (NULL for the debt part); a system
-- leg (system = true) moves a per-tenant system account (revenue, promotions,
-- external, adjustments, ...) and still names the customer it concerns. System
-- balances are sums of entries: no shared row is updated per charge.
CREATE TABLE credyt.entry (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id  text NOT NULL,
    txn_id      text NOT NULL,
    customer_id text NOT NULL,
    system      boolean NOT NULL,
    ledger_name text NOT NULL,
    asset       text NOT NULL,
    amount      numeric NOT NULL,        -- never zero
    lot_id      text,
    kind        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
-- Wallet legs only: balance_at() and verify_ledger() read wallet history through it,
-- and every index costs each charge an insertion (no index on txn_id, for that reason).
CREATE INDEX entry_wallet ON credyt.entry (customer_id, ledger_name, asset, created_at) WHERE NOT system;
