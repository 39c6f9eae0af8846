-- 1,000 events per call over 1,000 / :groups customers: with groups=1 every client's
-- batch spreads over all 1,000 (so concurrent batches wait for each other's wallet
-- locks); with groups=2 two clients batch over disjoint halves, two events a customer.
\set span 1000 / :groups
\set base (:client_id % :groups) * :span
\set r random(1, 1000000000000)
SELECT count(*) FROM credyt.record_usage((
    SELECT jsonb_agg(jsonb_build_object('customer', 'c' || (1 + :base + i % :span), 'event_id', 'bulk-' || :client_id || '-' || :r || '-' || i,
                                        'event_type', 'chat', 'data', '{"model": "gpt-4o", "input_tokens": 1200, "output_tokens": 310}'::jsonb))
    FROM generate_series(1, 1000) i));
