-- Growth fixture: two customers on the chat price, one with a single lot and one with
-- 1,000 live lots (same priority and no expiry, so burn-down order is by age and a
-- charge draws the oldest).
SELECT credyt.create_customer('single', 'single'), credyt.create_customer('many', 'many');
SELECT credyt.subscribe('single', 'chat'), credyt.subscribe('many', 'chat');
SELECT credyt.adjust('single', 'fund-single', 'USD', 1000000, 'external_topup');
SELECT count(credyt.adjust('many', 'fund-many-' || i, 'USD', 1000, 'external_topup')) FROM generate_series(1, 1000) i;
SELECT count(*) AS many_live_lots FROM credyt.lots WHERE customer_id = (SELECT id FROM credyt.customers WHERE external_id = 'many');
