-- credyt data model, part 8: running distributed on Citus (README § Running distributed).
--
-- credyt.distribute() places every table once Citus is installed and the workers are
-- registered (scripts/citus.sh does both):
--  * customer-owned tables are distributed by customer (credyt.customer by its id, the
--    others by customer_id), all co-located: a charge is one task on one worker;
--  * the catalog and tenancy tables (accounts, role bindings, API keys, customer
--    references (what an id or external id names: see credyt.customer_ref), assets and
--    rates, vendors, products, versions, prices, model costs, usage rules, webhooks,
--    Stripe connections and events, portal grants, seat assignments) are reference
--    tables, replicated to every node, so that a charge joins them on its worker;
--  * the outbox (credyt.event, credyt.delivery) stays on the coordinator, where
--    credyt-worker's claims (FOR UPDATE SKIP LOCKED over one index) stay one statement.
--    An event is written by a money movement only when something fires (a threshold,
--    an auto top-up, a limit): then that transaction commits on two nodes (Citus's
--    two-phase commit), and never otherwise.
--
-- What Citus requires, changed here on the way:
--  * a unique key of a distributed table includes the distribution column: primary
--    keys become (customer_id, id); the idempotency keys of usage events, ledger
--    transactions, holds, grants and outcomes become per customer (SPEC §6 makes them
--    per account: across shards that would cost every charge a second node, so on a
--    distributed install the same key for a second customer is a new, separate
--    request; for one customer, replays and CY409 work as on one node);
--  * foreign keys are dropped (see below);
--  * row security policies without subqueries (the single-node policies read the
--    account in scope once, through an InitPlan);
--  * plans are no longer forced generic (see below);
--  * the triggers that set catalog generations are dropped: on a server that preloads
--    Citus no backend caches lookups (src/distributed.rs), so none needs them.
-- One-way: a distributed install stays distributed. Running it twice does nothing.
-- Runs a command on every Citus worker (their own transactions), failing if any fails.
CREATE FUNCTION credyt._on_workers(command text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE r record;
BEGIN
    -- (a worker refuses DDL it did not get from the coordinator's own propagation)
    FOR r IN EXECUTE 'SELECT nodename, nodeport, success, result FROM run_command_on_workers($1)'
             USING 'SET citus.enable_ddl_propagation TO off; ' || command LOOP
        IF NOT r.success THEN
            RAISE EXCEPTION 'on worker %:%: %', r.nodename, r.nodeport, r.result;
        END IF;
    END LOOP;
END $$;
REVOKE ALL ON FUNCTION credyt._on_workers(text) FROM PUBLIC;

CREATE FUNCTION credyt.distribute() RETURNS jsonb
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    t text;
    c text;
    f regprocedure;
    reference text[] := ARRAY['account', 'role_binding', 'api_key', 'customer_ref', 'asset', 'asset_rate', 'vendor', 'product',
                              'product_version', 'price', 'model_cost', 'usage_rule', 'webhook', 'stripe_connection',
                              'stripe_event', 'portal_grant', 'seat_assignment'];
    distributed text[] := ARRAY['wallet_account', 'lot', 'entry', 'ledger_txn', 'usage_event', 'hold', 'credit_grant',
                                'topup', 'subscription', 'subscription_fee', 'subscription_charge', 'outcome',
                                'usage_counter', 'stripe_customer'];
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus') THEN
        RAISE EXCEPTION USING ERRCODE = 'CY404', MESSAGE = 'Citus is not installed in this database',
            DETAIL = 'credyt.distribute() places credyt''s tables on a Citus cluster',
            HINT = 'preload citus, CREATE EXTENSION citus and register the workers first (see scripts/citus.sh)';
    END IF;
    IF EXISTS (SELECT 1 FROM pg_dist_partition WHERE logicalrelid = 'credyt.customer'::regclass) THEN
        RETURN jsonb_build_object('distributed', false, 'reason', 'already distributed');
    END IF;
    IF (SELECT count(*) FROM pg_dist_node WHERE noderole = 'primary' AND isactive AND groupid <> 0) < 1 THEN
        RAISE EXCEPTION USING ERRCODE = 'CY404', MESSAGE = 'no Citus worker is registered',
            HINT = 'SELECT citus_set_coordinator_host(...) and citus_add_node(...) first';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_dist_node WHERE groupid = 0) THEN
        RAISE EXCEPTION USING ERRCODE = 'CY404', MESSAGE = 'the Citus coordinator is not registered',
            DETAIL = 'the outbox''s events are a Citus local table, which needs the coordinator in the metadata',
            HINT = 'SELECT citus_set_coordinator_host(host, port) first';
    END IF;

    -- Row security of the sharded tables runs on the workers, as the role the
    -- coordinator serves, and calls current_account() there; Citus does not carry the
    -- extension's grants to the workers. current_account() tells a role only its own
    -- binding (crate::scope), so every role may call it on a worker. It reads the
    -- account and role-binding tables there from inside the shard's query, a nested
    -- query Citus refuses unless told (these read the node's own full copy). (First,
    -- in the workers' own transactions, before this one locks anything there.)
    PERFORM credyt._on_workers('GRANT USAGE ON SCHEMA credyt TO PUBLIC; '
                               'GRANT EXECUTE ON FUNCTION credyt.current_account() TO PUBLIC; '
                               'ALTER FUNCTION credyt.current_account() RESET plan_cache_mode; '
                               'ALTER FUNCTION credyt.current_account() SET citus.allow_nested_distributed_execution = on');

    -- Catalog generations: nothing sets them on a cluster (see above).
    FOREACH t IN ARRAY ARRAY['subscription', 'role_binding', 'asset', 'asset_rate', 'product', 'product_version',
                             'price', 'model_cost', 'usage_rule', 'customer'] LOOP
        EXECUTE format('DROP TRIGGER %I ON credyt.%I', t || '_changed', t);
    END LOOP;
    -- (restores onto a fresh install: not across a cluster)
    DROP TRIGGER platform_gives_way ON credyt.account;

    -- Plans: Citus plans a statement whose shard depends on a parameter when it has
    -- the value (a custom plan, pruned to one shard); a forced generic plan cannot be
    -- distributed (900_security.sql forces them on one node).
    -- And one connection per worker in a call: a call that reads many shards and then
    -- writes one (the clock, a batch) must write over the connection that read it, or
    -- its own two backends on that worker wait on each other (measured: concurrent
    -- ticks cancelled as a distributed deadlock of one transaction).
    FOR f IN SELECT p.oid::regprocedure FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang AND l.lanname = 'c'
             WHERE p.pronamespace = 'credyt'::regnamespace LOOP
        EXECUTE format('ALTER FUNCTION %s RESET plan_cache_mode', f);
        EXECUTE format('ALTER FUNCTION %s SET citus.multi_shard_modify_mode = sequential', f);
        -- (a statement Citus splits into subplans is joined on the coordinator over
        -- intermediate results it estimates at a thousand rows each, which JIT-compiles
        -- a few-row join: measured 115 ms of a 190 ms record_usage)
        EXECUTE format('ALTER FUNCTION %s SET jit = off', f);
    END LOOP;

    -- Policies without subqueries.
    ALTER POLICY tenant ON credyt.account
        USING (id = credyt.current_account() OR parent_id = credyt.current_account());
    FOR t IN SELECT c.relname FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid
             WHERE c.relnamespace = 'credyt'::regnamespace AND p.polname = 'tenant' AND c.relname <> 'account' LOOP
        EXECUTE format('ALTER POLICY tenant ON credyt.%I USING (account_id = credyt.current_account())', t);
    END LOOP;

    -- Foreign keys: dropped, all of them. Citus refuses those from a reference table to
    -- a distributed one, and re-creates the others on every node, where the workers'
    -- own copies of the extension already hold them. (The ledger tables carry none on
    -- one node either; what the catalog ones guarded, the API functions check.)
    FOR t, c IN SELECT r.relname, k.conname FROM pg_constraint k JOIN pg_class r ON r.oid = k.conrelid
                WHERE r.relnamespace = 'credyt'::regnamespace AND k.contype = 'f' LOOP
        EXECUTE format('ALTER TABLE credyt.%I DROP CONSTRAINT %I', t, c);
    END LOOP;

    -- Unique keys with the distribution column.
    ALTER TABLE credyt.entry DROP CONSTRAINT entry_pkey, ADD PRIMARY KEY (customer_id, id);
    ALTER TABLE credyt.ledger_txn DROP CONSTRAINT ledger_txn_pkey, ADD PRIMARY KEY (customer_id, id);
    ALTER TABLE credyt.ledger_txn ALTER COLUMN customer_id SET NOT NULL;
    DROP INDEX credyt.ledger_txn_idem_key;
    CREATE UNIQUE INDEX ledger_txn_idem_key ON credyt.ledger_txn (customer_id, idem_key) WHERE idem_key IS NOT NULL;
    CREATE INDEX ledger_txn_account_idem ON credyt.ledger_txn (account_id, idem_key) WHERE idem_key IS NOT NULL;
    ALTER TABLE credyt.usage_event DROP CONSTRAINT usage_event_pkey, ADD PRIMARY KEY (customer_id, event_id);
    CREATE INDEX usage_event_account ON credyt.usage_event (account_id, event_id);
    ALTER TABLE credyt.hold DROP CONSTRAINT hold_pkey, ADD PRIMARY KEY (customer_id, id);
    ALTER TABLE credyt.hold DROP CONSTRAINT hold_account_id_hold_key_key, ADD UNIQUE (customer_id, hold_key);
    CREATE INDEX hold_account_key ON credyt.hold (account_id, hold_key);
    ALTER TABLE credyt.credit_grant DROP CONSTRAINT credit_grant_pkey, ADD PRIMARY KEY (customer_id, id);
    ALTER TABLE credyt.credit_grant DROP CONSTRAINT credit_grant_account_id_grant_key_key,
        ADD UNIQUE (customer_id, grant_key);
    CREATE INDEX credit_grant_account_key ON credyt.credit_grant (account_id, grant_key);
    ALTER TABLE credyt.topup DROP CONSTRAINT topup_pkey, ADD PRIMARY KEY (customer_id, id);
    DROP INDEX credyt.topup_session;
    CREATE INDEX topup_session ON credyt.topup (stripe_session) WHERE stripe_session IS NOT NULL;
    ALTER TABLE credyt.subscription DROP CONSTRAINT subscription_pkey, ADD PRIMARY KEY (customer_id, id);
    ALTER TABLE credyt.subscription_fee DROP CONSTRAINT subscription_fee_pkey, ADD PRIMARY KEY (customer_id, id);
    ALTER TABLE credyt.subscription_fee DROP CONSTRAINT subscription_fee_subscription_id_version_position_asset_key,
        ADD UNIQUE (customer_id, subscription_id, version, position, asset);
    ALTER TABLE credyt.subscription_charge DROP CONSTRAINT subscription_charge_pkey,
        ADD PRIMARY KEY (customer_id, subscription_id, version, position, asset, period, seq);
    ALTER TABLE credyt.outcome DROP CONSTRAINT outcome_pkey, ADD PRIMARY KEY (customer_id, outcome_key);
    CREATE INDEX outcome_account_key ON credyt.outcome (account_id, outcome_key);
    DROP INDEX credyt.customer_external_id;
    CREATE INDEX customer_external_id ON credyt.customer (account_id, external_id);

    -- Placement: reference tables first (in the order of their foreign keys), then the
    -- customers and everything co-located with them.
    FOREACH t IN ARRAY reference LOOP
        PERFORM create_reference_table(('credyt.' || t)::regclass);
    END LOOP;
    PERFORM create_distributed_table('credyt.customer', 'id');
    FOREACH t IN ARRAY distributed LOOP
        PERFORM create_distributed_table(('credyt.' || t)::regclass, 'customer_id', colocate_with => 'credyt.customer');
    END LOOP;
    -- The outbox stays on the coordinator. Its event table becomes a Citus local table
    -- (a table of the coordinator that Citus knows): a transaction that writes an event
    -- and a customer's shard (a charge that crosses a threshold, a grant) then commits
    -- in two phases, the coordinator's own commit deciding for its deliveries too, so
    -- nothing commits without the rest. A charge that writes no event commits on its
    -- worker alone, in one phase. Citus turns the table into its shard behind a new
    -- table of the same name, which it also creates on the workers, and re-creates the
    -- view over it: the workers' unused copies go first, and the new table and view
    -- become the extension's (the shard no longer). The deliveries stay a plain table:
    -- credyt-worker's claim is a statement Citus would not plan.
    PERFORM credyt._on_workers($w$DO $x$ BEGIN
        -- (to_regclass: a distribute() that failed after this ran left no table here)
        IF to_regclass('credyt.event') IS NOT NULL
           AND NOT EXISTS (SELECT 1 FROM pg_dist_partition WHERE logicalrelid = to_regclass('credyt.event')) THEN
            ALTER EXTENSION credyt DROP VIEW credyt.events;
            ALTER EXTENSION credyt DROP TABLE credyt.event;
            DROP VIEW credyt.events;
            DROP TABLE credyt.event;
        END IF;
    END $x$ $w$);
    ALTER EXTENSION credyt DROP VIEW credyt.events;
    PERFORM citus_add_local_table_to_metadata('credyt.event');
    FOR c IN SELECT shard_name(logicalrelid, shardid) FROM pg_dist_shard WHERE logicalrelid = 'credyt.event'::regclass LOOP
        EXECUTE format('ALTER EXTENSION credyt DROP TABLE %s', c);
    END LOOP;
    ALTER EXTENSION credyt ADD TABLE credyt.event;
    ALTER EXTENSION credyt ADD VIEW credyt.events;
    RETURN jsonb_build_object('distributed', true, 'by', 'customer', 'tables', to_jsonb(ARRAY['customer'] || distributed),
                              'reference', to_jsonb(reference), 'coordinator', to_jsonb(ARRAY['event', 'delivery']));
END $$;
