-- record_usage on one named customer (-D who=..., a parameter under -M prepared), as
-- usage.sql does for many.
\set r random(1, 1000000000000)
SELECT charged FROM credyt.record_usage(:who, 'w-' || :client_id || '-' || :r, 'chat',
    '{"model": "gpt-4o", "input_tokens": 1200, "output_tokens": 310}');
