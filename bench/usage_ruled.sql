\set c random(1, :customers)
\set r random(1, 1000000000000)
SELECT charged FROM credyt.record_usage('c' || :c, 'u-' || :client_id || '-' || :r, 'chat_ruled',
    '{"model": "gpt-4o", "input_tokens": 1200, "output_tokens": 310}');
