-- credyt data model, part 3b: catalog generations (src/cache.rs).
--
-- A backend keeps what a charge looks up (the account in scope, customer ids, a
-- customer's subscribed prices, model costs, assets) and checks it against these
-- generations in the statement that locks the wallet. Every change to a looked-up
-- table sets a new generation here, in the changing transaction: it becomes visible
-- when that transaction commits, so the very next call in every backend sees it.
-- Values come from a sequence, never reused, so a rolled-back change cannot leave a
-- generation that a later commit repeats.
CREATE SEQUENCE credyt.catalog_gen;

CREATE FUNCTION credyt._catalog_changed() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF TG_TABLE_NAME = 'subscription' THEN
        -- a customer's prices: that customer's generation
        UPDATE credyt.customer SET catalog_gen = nextval('credyt.catalog_gen')
        WHERE id IN (NEW.customer_id, OLD.customer_id);
    ELSIF TG_TABLE_NAME = 'role_binding' THEN
        -- the account in scope of a role: the platform rows' generation
        UPDATE credyt.account SET catalog_gen = nextval('credyt.catalog_gen') WHERE parent_id IS NULL;
    ELSE
        UPDATE credyt.account SET catalog_gen = nextval('credyt.catalog_gen')
        WHERE id IN (NEW.account_id, OLD.account_id);
    END IF;
    RETURN NULL;
END $$;

-- Every table a charge looks up, but customers: one row trigger each.
DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['subscription', 'role_binding', 'asset', 'asset_rate', 'product', 'product_version',
                             'price', 'model_cost'] LOOP
        EXECUTE format('CREATE TRIGGER %I AFTER INSERT OR UPDATE OR DELETE ON credyt.%I '
                       'FOR EACH ROW EXECUTE FUNCTION credyt._catalog_changed()', t || '_changed', t);
    END LOOP;
END $$;
-- Customers: only a changed external id changes what a reference resolves to, and a
-- changed cohort which usage rules apply.
CREATE TRIGGER customer_changed AFTER UPDATE OF external_id, cohort OR DELETE ON credyt.customer
    FOR EACH ROW EXECUTE FUNCTION credyt._catalog_changed();
