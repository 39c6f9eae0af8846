-- Least privilege, in one place (runs last).
--  * Row-level security on every tenant table, enabled and forced: rows of the
--    account in scope only. (SECURITY DEFINER API functions run as the owner, which
--    bypasses RLS as a superuser; they filter by the account in scope themselves.)
--  * No table privileges for PUBLIC; application roles get what grant_access() gives.
--  * The platform account exists from install.
--  * pg_dump keeps the data (extension tables are otherwise skipped).

ALTER TABLE credyt.account ENABLE ROW LEVEL SECURITY;
ALTER TABLE credyt.account FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant ON credyt.account
    USING (id = (SELECT credyt.current_account()) OR parent_id = (SELECT credyt.current_account()));

ALTER TABLE credyt.role_binding ENABLE ROW LEVEL SECURITY;
ALTER TABLE credyt.role_binding FORCE ROW LEVEL SECURITY;   -- no policy: invisible to non-owners

DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['api_key', 'customer', 'customer_ref', 'wallet_account', 'ledger_txn', 'lot', 'entry', 'asset', 'asset_rate', 'vendor', 'product',
                              'product_version', 'price', 'subscription', 'usage_event', 'model_cost', 'hold', 'event', 'credit_grant', 'topup',
                              'webhook', 'delivery', 'stripe_connection', 'stripe_event', 'stripe_customer', 'portal_grant',
                              'subscription_fee', 'subscription_charge', 'seat_assignment', 'outcome', 'usage_rule', 'usage_counter'] LOOP
        EXECUTE format('ALTER TABLE credyt.%I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE credyt.%I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY tenant ON credyt.%I USING (account_id = (SELECT credyt.current_account()))', t);
    END LOOP;
END $$;

-- credyt keeps one prepared plan per statement per backend (src/spi/plan.rs). Left to
-- itself, Postgres re-plans such statements as "custom plans" on every execution when
-- it guesses a parameter-specific plan is cheaper, which costs more than the query.
-- The statements are simple index lookups, so the generic plan is always right: force
-- it inside the API functions (only while they run).
DO $$
DECLARE f regprocedure;
BEGIN
    FOR f IN
        SELECT p.oid::regprocedure FROM pg_proc p
        JOIN pg_language l ON l.oid = p.prolang AND l.lanname = 'c'
        WHERE p.pronamespace = 'credyt'::regnamespace
    LOOP
        EXECUTE format('ALTER FUNCTION %s SET plan_cache_mode = force_generic_plan', f);
    END LOOP;
END $$;

REVOKE ALL ON ALL TABLES IN SCHEMA credyt FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA credyt FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA credyt FROM PUBLIC;

-- Gives an application role what it needs: the schema, EXECUTE on the API (every
-- function of the extension except the internal ones, prefixed '_', and the
-- administrator's bind_role, grant_access, grant_worker, tick and schedule_jobs), SELECT on the read
-- views and on the tables they read (the views are security_invoker, so RLS applies to the reader);
-- of credyt.webhook, every column but the secrets.
-- Checks the role a grant_* function was given, and serialises granting callers:
-- concurrent GRANTs on one object fail with "tuple concurrently updated".
CREATE FUNCTION credyt._grant_lock(role name) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF role IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'CY400', MESSAGE = 'role must not be NULL';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = role) THEN
        RAISE EXCEPTION USING ERRCODE = 'CY404', MESSAGE = format('unknown role %s', role),
            HINT = 'create the role first: CREATE ROLE ... LOGIN';
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('credyt.grant_access'));
END $$;
REVOKE ALL ON FUNCTION credyt._grant_lock(name) FROM PUBLIC;

CREATE FUNCTION credyt.grant_access(role name) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    f regprocedure;
    v regclass;
BEGIN
    PERFORM credyt._grant_lock(role);
    EXECUTE format('GRANT USAGE ON SCHEMA credyt TO %I', role);
    FOR f IN
        SELECT p.oid::regprocedure FROM pg_proc p
        JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e'
        JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'credyt'
        JOIN pg_namespace n ON n.oid = p.pronamespace AND n.nspname = 'credyt'
        WHERE p.proname !~ '^_'
          AND p.proname NOT IN ('bind_role', 'grant_access', 'grant_worker', 'grant_server', 'tick', 'schedule_jobs', 'distribute')
    LOOP
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO %I', f, role);
    END LOOP;
    FOR v IN
        SELECT c.oid::regclass FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'credyt' AND c.relkind = 'v'
    LOOP
        EXECUTE format('GRANT SELECT ON %s TO %I', v, role);
    END LOOP;
    EXECUTE format('GRANT SELECT ON credyt.customer, credyt.lot, credyt.entry, credyt.asset, credyt.asset_rate, credyt.vendor, credyt.product, '
                   'credyt.product_version, credyt.subscription, credyt.usage_event, credyt.hold, credyt.event, credyt.credit_grant, credyt.topup, credyt.delivery, '
                   'credyt.subscription_fee, credyt.subscription_charge, credyt.seat_assignment, credyt.outcome, '
                   'credyt.usage_rule, credyt.usage_counter TO %I', role);
    EXECUTE format('GRANT SELECT (account_id, customer_id, name, asset, topup_enabled, topup_threshold, topup_amount, '
                   'pending_topup) ON credyt.wallet_account TO %I', role);
    -- (stripe_connection: only its hint, through credyt.stripe_connections; never the keys)
    EXECUTE format('GRANT SELECT (account_id, key_hint, livemode, connected_at) ON credyt.stripe_connection TO %I', role);
    EXECUTE format('GRANT SELECT (id, account_id, url, topics, connect, enabled, previous_until, created_at, updated_at, deleted_at) '
                   'ON credyt.webhook TO %I', role);
    EXECUTE format('GRANT SELECT (id, account_id, name, environment, prefix, created_at, revoked_at) ON credyt.api_key TO %I', role);
    EXECUTE format('GRANT SELECT (id, idem_key, kind, customer_id, description, metadata, created_at, account_id) '
                   'ON credyt.ledger_txn TO %I', role);
    -- (not channel_key: it is what keeps an account's channels private)
    EXECUTE format('GRANT SELECT (id, parent_id, environment, name, external_id, metadata, created_at) ON credyt.account TO %I', role);
END $$;
REVOKE ALL ON FUNCTION credyt.grant_access(name) FROM PUBLIC;

-- Gives credyt-worker's role what it needs, and nothing else: the schema and the
-- _worker_* functions (SECURITY DEFINER: it has no table privileges).
CREATE FUNCTION credyt.grant_worker(role name) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM credyt._grant_lock(role);
    EXECUTE format('GRANT USAGE ON SCHEMA credyt TO %I', role);
    EXECUTE format('GRANT EXECUTE ON FUNCTION credyt._worker_claim(text, integer, bigint), '
                   'credyt._worker_finish(text[], text[], bigint[], text[], bigint[], text[], integer[]), '
                   'credyt._worker_release(text[], text[], bigint[]), credyt._worker_queue(), credyt._worker_channel() TO %I', role);
END $$;
REVOKE ALL ON FUNCTION credyt.grant_worker(name) FROM PUBLIC;

-- Gives credyt-server's role what it needs: what an application role gets, and
-- binds it as a server role. A server role has no account of its own: every API
-- function and every policy raises CY401 for it until credyt.authenticate() has
-- checked an API key in the current transaction, and then serves that key's account
-- (or the account below it that the request names) until the transaction ends.
CREATE FUNCTION credyt.grant_server(role name) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    -- (looked up first: on Citus role_binding is a reference table, whose INSERT takes
    -- no subquery)
    role_id oid := (SELECT oid FROM pg_roles WHERE rolname = role);
BEGIN
    PERFORM credyt.grant_access(role);
    -- what only the server calls (each also checks that its caller is a server role)
    EXECUTE format('GRANT EXECUTE ON FUNCTION credyt._server_stripe_key(), '
                   'credyt._server_topup_session(text, text, text, timestamptz), '
                   'credyt._server_claim_auto_topups(integer, integer), '
                   'credyt._server_auto_topup_result(text, boolean, text) TO %I', role);
    INSERT INTO credyt.role_binding (role_oid, role_name, account_id, server)
    VALUES (role_id, role, NULL, true)
    ON CONFLICT (role_oid) DO UPDATE SET account_id = NULL, server = true, role_name = EXCLUDED.role_name,
        created_at = EXCLUDED.created_at;
END $$;
REVOKE ALL ON FUNCTION credyt.grant_server(name) FROM PUBLIC;

-- pg_restore runs CREATE EXTENSION, which creates a fresh platform account, and then
-- loads the dumped rows, the original platform account among them. The fresh one,
-- which nothing refers to yet, gives way, so the copy keeps the original's id (and
-- every tenant below it). A platform account in use never gives way: then the
-- unique index refuses the second one, as it should.
CREATE FUNCTION credyt._platform_gives_way() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    DELETE FROM credyt.account a
    WHERE a.parent_id IS NULL AND a.environment = 'live' AND a.id <> NEW.id
      AND NOT EXISTS (SELECT 1 FROM credyt.account x WHERE x.live_id = a.id)
      AND NOT EXISTS (SELECT 1 FROM credyt.account x WHERE x.parent_id = a.id)
      AND NOT EXISTS (SELECT 1 FROM credyt.role_binding x WHERE x.account_id = a.id)
      AND NOT EXISTS (SELECT 1 FROM credyt.customer x WHERE x.account_id = a.id)
      AND NOT EXISTS (SELECT 1 FROM credyt.asset x WHERE x.account_id = a.id)
      AND NOT EXISTS (SELECT 1 FROM credyt.vendor x WHERE x.account_id = a.id)
      AND NOT EXISTS (SELECT 1 FROM credyt.product x WHERE x.account_id = a.id)
      AND NOT EXISTS (SELECT 1 FROM credyt.model_cost x WHERE x.account_id = a.id)
      AND NOT EXISTS (SELECT 1 FROM credyt.webhook x WHERE x.account_id = a.id)
      AND NOT EXISTS (SELECT 1 FROM credyt.event x WHERE x.account_id = a.id);
    RETURN NEW;
END $$;
REVOKE ALL ON FUNCTION credyt._platform_gives_way() FROM PUBLIC;
CREATE TRIGGER platform_gives_way BEFORE INSERT ON credyt.account
    FOR EACH ROW WHEN (NEW.parent_id IS NULL AND NEW.environment = 'live') EXECUTE FUNCTION credyt._platform_gives_way();

INSERT INTO credyt.account (id, name) VALUES (credyt._new_id('acc'), 'platform');

-- One call per statement: each call rewrites the pg_extension row.
DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['account', 'role_binding', 'api_key', 'customer', 'customer_ref', 'wallet_account', 'ledger_txn', 'lot', 'entry',
                             'asset', 'asset_rate', 'vendor', 'product', 'product_version', 'price', 'subscription',
                             'usage_event', 'model_cost', 'hold', 'event', 'credit_grant', 'topup',
                             'webhook', 'delivery', 'stripe_connection', 'stripe_event', 'stripe_customer', 'portal_grant',
                             'subscription_fee', 'subscription_charge', 'seat_assignment', 'outcome', 'usage_rule', 'usage_counter'] LOOP
        PERFORM pg_catalog.pg_extension_config_dump(('credyt.' || t)::regclass, '');
    END LOOP;
    PERFORM pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('credyt.lot', 'seq')::regclass, '');
    PERFORM pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('credyt.entry', 'id')::regclass, '');
    PERFORM pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('credyt.subscription_fee', 'id')::regclass, '');
    PERFORM pg_catalog.pg_extension_config_dump('credyt.delivery_claim_seq'::regclass, '');
    -- (generations must never repeat: restored past every value the dump's rows hold)
    PERFORM pg_catalog.pg_extension_config_dump('credyt.catalog_gen'::regclass, '');
END $$;
