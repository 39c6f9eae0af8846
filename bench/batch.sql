-- 1,000 events per call, spread over the 1,000 customers.
\set r random(1, 1000000000000)
SELECT count(*) FROM credyt.record_usage((
    SELECT jsonb_agg(jsonb_build_object('customer', 'c' || (1 + i % 1000), 'event_id', 'bulk-' || :client_id || '-' || :r || '-' || i,
                                        'event_type', 'chat', 'data', '{"model": "gpt-4o", "input_tokens": 1200, "output_tokens": 310}'::jsonb))
    FROM generate_series(1, 1000) i));
