-- credyt data model, part 6: webhook endpoints and deliveries (SPEC §10).
--
-- An event gets one delivery row per endpoint that should receive it, written in
-- the event's own transaction, so a rolled-back cause queues nothing. credyt-worker
-- claims due rows with FOR UPDATE SKIP LOCKED through the _worker_* functions below.

CREATE TABLE credyt.webhook (
    account_id      text NOT NULL,
    id              text PRIMARY KEY,
    url             text NOT NULL,
    topics          text[] NOT NULL,
    -- true: receives the events of the accounts below account_id, not its own
    connect         boolean NOT NULL,
    enabled         boolean NOT NULL DEFAULT true,
    secret          text NOT NULL,
    -- after a rotation the old secret signs too (a second signature) until then
    previous_secret text,
    previous_until  timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    deleted_at      timestamptz
);
CREATE INDEX webhook_live ON credyt.webhook (account_id) WHERE enabled AND deleted_at IS NULL;

-- next_attempt_at doubles as the lease: a claim moves it to the end of the lease,
-- so the claims of a worker that hangs come due again by themselves. claimed_session
-- names the claiming database session (pid and start time): the claims of a session
-- that is gone (a worker killed with its connection) come back at the next claim,
-- without waiting for the lease. claim is the token of the claim in force; a
-- worker's result counts only while it still holds it.
CREATE SEQUENCE credyt.delivery_claim_seq;
CREATE TABLE credyt.delivery (
    account_id      text NOT NULL,      -- the endpoint's account
    event_id        text NOT NULL,
    webhook_id      text NOT NULL,
    status          text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text,
    last_status     integer,            -- HTTP status of the last attempt, if one came back
    claim           bigint,
    claimed_by      text,
    claimed_session text,
    delivered_at    timestamptz,
    failed_at       timestamptz,        -- when the worker gave up (status 'failed')
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (event_id, webhook_id)
);
CREATE INDEX delivery_due ON credyt.delivery (next_attempt_at) WHERE status = 'pending';
-- True when every delivery of the event succeeded (or it had none): what tick() may
-- prune. A function, not a subquery, so that on Citus (where the events are a Citus
-- local table and the deliveries a plain one) the statement that selects the events
-- names only their table; one node inlines it.
CREATE FUNCTION credyt._event_settled(event_id text) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT NOT EXISTS (SELECT 1 FROM credyt.delivery d WHERE d.event_id = $1 AND d.status <> 'delivered')
$$;
REVOKE ALL ON FUNCTION credyt._event_settled(text) FROM PUBLIC;
-- (webhook_id, event_id), not (webhook_id): with one busy endpoint, the planner may
-- reach rows by this index when it records outcomes, and on webhook_id alone that means
-- walking the endpoint's whole queue for every row.
CREATE INDEX delivery_webhook ON credyt.delivery (webhook_id, event_id) WHERE status = 'pending';
CREATE INDEX delivery_account ON credyt.delivery (account_id, created_at);
-- the claims in flight (a few per worker), for reclaiming those of dead sessions
CREATE INDEX delivery_claimed ON credyt.delivery (claimed_session) WHERE claim IS NOT NULL;

-- Endpoints, without their secrets (create_webhook and update_webhook(rotate_secret
-- => true) return a secret once).
CREATE VIEW credyt.webhooks WITH (security_invoker = true) AS
SELECT id, account_id, url, topics, connect, enabled, previous_until AS previous_secret_until, created_at, updated_at
FROM credyt.webhook
WHERE deleted_at IS NULL;

CREATE VIEW credyt.deliveries WITH (security_invoker = true) AS
SELECT event_id, webhook_id, status, attempts, next_attempt_at, last_error, last_status,
       delivered_at, created_at, account_id, failed_at
FROM credyt.delivery;

-- The delivery log of the account in scope: its endpoints' deliveries with their
-- events, connected accounts' events included (those rows are another account's, which
-- the scope's row-level security hides: so a function that filters by the scope
-- itself). Newest first, or, with `newer`, the rows after the cursor oldest first;
-- the cursor is a delivery's (created_at, event_id, webhook_id).
CREATE FUNCTION credyt.delivery_log(webhook_id text = NULL, status text = NULL, time_gte timestamptz = NULL,
                                    time_lte timestamptz = NULL, cursor_at timestamptz = NULL,
                                    cursor_event text = NULL, cursor_webhook text = NULL, newer boolean = false,
                                    max_rows integer = 20)
RETURNS TABLE (event_id text, webhook_id text, status text, attempts integer, last_status integer, last_error text,
               delivered_at timestamptz, failed_at timestamptz, created_at timestamptz, event_type text,
               event_account_id text, data jsonb)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    WITH base AS NOT MATERIALIZED (
        SELECT d.event_id, d.webhook_id, d.status, d.attempts, d.last_status, d.last_error, d.delivered_at,
               d.failed_at, d.created_at, e.event_type, e.account_id AS event_account_id, e.data
        FROM credyt.delivery d JOIN credyt.event e ON e.id = d.event_id
        WHERE d.account_id = credyt.current_account()
          AND ($1 IS NULL OR d.webhook_id = $1) AND ($2 IS NULL OR d.status = $2)
          AND ($3 IS NULL OR d.created_at >= $3) AND ($4 IS NULL OR d.created_at <= $4))
    (SELECT * FROM base b WHERE $8
        AND ($5 IS NULL OR (b.created_at, b.event_id, b.webhook_id) > ($5, $6, $7))
     ORDER BY b.created_at, b.event_id, b.webhook_id LIMIT $9)
    UNION ALL
    (SELECT * FROM base b WHERE NOT $8
        AND ($5 IS NULL OR (b.created_at, b.event_id, b.webhook_id) < ($5, $6, $7))
     ORDER BY b.created_at DESC, b.event_id DESC, b.webhook_id DESC LIMIT $9)
$$;

-- The worker's side. SECURITY DEFINER, so the worker's role needs nothing but
-- EXECUTE on these (credyt.grant_worker gives it). Not part of the application API.
-- plpgsql keeps one generic plan per session, often made while the table is new and
-- has no statistics; a join there becomes a sequential scan of the whole queue on
-- every call. So rows are reached by ctid or by `= ANY` on the primary key, which
-- plan as TID and index scans whatever the statistics say.

-- Claims up to n due deliveries for lease_ms, oldest due first, skipping rows other
-- workers hold. Returns what a delivery needs: the envelope exactly as
-- credyt.events shows it, the endpoint and its secrets.
CREATE FUNCTION credyt._worker_claim(worker text, n integer, lease_ms bigint)
RETURNS TABLE (event_id text, webhook_id text, claim bigint, attempts integer, url text,
               secret text, previous_secret text, payload text, created_at timestamptz)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
-- Only the ordered scan of delivery_due stops after n rows. Without statistics (a new
-- queue) the planner prefers a bitmap scan and a sort of everything due, which makes
-- every claim cost the whole backlog, and a backlog after an outage is exactly when
-- claims must stay cheap.
SET enable_bitmapscan = off SET enable_seqscan = off AS $$
DECLARE
    ev_ids text[];
    hook_ids text[];
    claim_ids bigint[];
    tries integer[];
BEGIN
    -- Claims whose session is gone are due again now. (pg_stat_activity lists every
    -- backend; the in-flight claims are few and reached by delivery_claimed.) A
    -- session counts as gone only when no backend has its pid, or the backend with
    -- its pid started at another time: where the start time cannot be read (an owner
    -- without pg_read_all_stats sees other roles' backend_start as NULL), the pid
    -- alone keeps the claim, and its lease decides.
    UPDATE credyt.delivery d
    SET next_attempt_at = now(), claim = NULL, claimed_by = NULL, claimed_session = NULL
    WHERE d.claim IS NOT NULL AND d.status = 'pending'
      AND NOT EXISTS (
          SELECT 1 FROM pg_catalog.pg_stat_activity a
          WHERE a.pid::text = split_part(d.claimed_session, ':', 1)
            AND (a.backend_start IS NULL OR a.pid || ':' || extract(epoch FROM a.backend_start) = d.claimed_session));
    -- Claimed first, then joined with the endpoints and envelopes: on Citus the
    -- endpoints are a reference table, and a statement that reads one is planned by
    -- Citus, which refuses the claim's nextval() in it.
    WITH me AS (
        SELECT a.pid || ':' || extract(epoch FROM a.backend_start) AS session
        FROM pg_catalog.pg_stat_activity a WHERE a.pid = pg_backend_pid()
    ), due AS (
        SELECT d.ctid FROM credyt.delivery d
        WHERE d.status = 'pending' AND d.next_attempt_at <= now()
        ORDER BY d.next_attempt_at
        LIMIT n
        FOR UPDATE SKIP LOCKED
    ), claimed AS (
        -- the rows just locked, by their ctid: a lock holds the version in place
        UPDATE credyt.delivery d
        SET next_attempt_at = now() + lease_ms * interval '1 millisecond',
            claim = nextval('credyt.delivery_claim_seq'), claimed_by = worker,
            claimed_session = (SELECT me.session FROM me)
        WHERE d.ctid = ANY (ARRAY(SELECT due.ctid FROM due))
        RETURNING d.event_id, d.webhook_id, d.claim, d.attempts
    )
    SELECT array_agg(c.event_id), array_agg(c.webhook_id), array_agg(c.claim), array_agg(c.attempts)
    INTO ev_ids, hook_ids, claim_ids, tries FROM claimed c;
    RETURN QUERY
    SELECT u.event_id, u.webhook_id, u.claim, u.attempts, w.url, w.secret,
           CASE WHEN w.previous_until > now() THEN w.previous_secret END,
           e.payload::text, e.created_at
    FROM unnest(ev_ids, hook_ids, claim_ids, tries) AS u(event_id, webhook_id, claim, attempts)
    JOIN credyt.webhook w ON w.id = u.webhook_id
    JOIN credyt.events e ON e.id = u.event_id;
END $$;

-- Records the outcomes of attempts: 'delivered', 'retry' (after retry_ms) or
-- 'failed'. A result whose claim is no longer in force (the lease ran out and
-- another worker took the row, or the endpoint was disabled) changes nothing.
CREATE FUNCTION credyt._worker_finish(event_ids text[], webhook_ids text[], claims bigint[], outcomes text[],
                                      retry_ms bigint[], errors text[], statuses integer[])
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE n integer;
BEGIN
    UPDATE credyt.delivery d
    SET attempts = d.attempts + 1,
        status = CASE r.outcome WHEN 'delivered' THEN 'delivered' WHEN 'failed' THEN 'failed' ELSE 'pending' END,
        next_attempt_at = CASE WHEN r.outcome = 'retry' THEN now() + r.retry_ms * interval '1 millisecond'
                               ELSE d.next_attempt_at END,
        delivered_at = CASE WHEN r.outcome = 'delivered' THEN now() END,
        failed_at = CASE WHEN r.outcome = 'failed' THEN now() END,
        last_error = r.error, last_status = r.status, claim = NULL, claimed_by = NULL, claimed_session = NULL
    FROM unnest(event_ids, webhook_ids, claims, outcomes, retry_ms, errors, statuses)
         AS r(event_id, webhook_id, claim, outcome, retry_ms, error, status)
    WHERE d.event_id = ANY (event_ids) AND d.event_id = r.event_id AND d.webhook_id = r.webhook_id
      AND d.claim = r.claim AND d.status = 'pending' AND r.outcome IN ('delivered', 'retry', 'failed');
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END $$;

-- Gives claims back unattempted (a worker shutting down): due again at once.
CREATE FUNCTION credyt._worker_release(event_ids text[], webhook_ids text[], claims bigint[])
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE n integer;
BEGIN
    UPDATE credyt.delivery d
    SET next_attempt_at = now(), claim = NULL, claimed_by = NULL, claimed_session = NULL
    FROM unnest(event_ids, webhook_ids, claims) AS r(event_id, webhook_id, claim)
    WHERE d.event_id = ANY (event_ids) AND d.event_id = r.event_id AND d.webhook_id = r.webhook_id
      AND d.claim = r.claim AND d.status = 'pending';
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END $$;

-- The name of the channel the workers LISTEN on (payload empty): derived from the
-- platform account's channel key, so only roles that may run this function learn it.
CREATE FUNCTION credyt._worker_channel() RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT 'credyt_worker_' || channel_key FROM credyt.account WHERE parent_id IS NULL
$$;

-- The queue for /metrics: deliveries due now (not held by a live claim) and all
-- pending ones (including scheduled retries).
CREATE FUNCTION credyt._worker_queue(OUT due bigint, OUT pending bigint)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT count(*) FILTER (WHERE next_attempt_at <= now()), count(*)
    FROM credyt.delivery WHERE status = 'pending'
$$;
