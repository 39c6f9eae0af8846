-- A tenant, a customer, money in and out, and the wallet afterwards.
\pset footer off
SELECT credyt.create_account('Acme AI', 'acme') AS account \gset
SET credyt.account = :'account';
SELECT credyt.create_customer('Ada Lovelace', 'user-42', 'ada@example.com') AS customer \gset
SELECT credyt.adjust('user-42', 'stripe-pi-001', 'USD', 20.00, 'external_topup') AS topup_txn;
SELECT credyt.adjust('user-42', 'welcome-credit', 'USD', 5, 'gift',
                     expires_at => now() + interval '30 days') AS gift_txn;
SELECT credyt.charge('user-42', 'chat-7f3a', 'USD', 0.004375, description => 'gpt-4o, 1200 in / 310 out') AS charge_txn;
-- Replaying the same charge changes nothing:
SELECT credyt.charge('user-42', 'chat-7f3a', 'USD', 0.004375, description => 'gpt-4o, 1200 in / 310 out') AS replay_txn;
\echo
\echo 'Wallet of customer user-42:'
SELECT * FROM credyt.wallet('user-42');
\echo 'Lots (the gift is drawn first):'
SELECT purpose, amount, remaining, expires_at IS NOT NULL AS expires FROM credyt.lots ORDER BY priority;
\echo 'Ledger check (no rows = consistent):'
SELECT * FROM credyt.verify_ledger();
\echo 'A webhook endpoint and a test event: one delivery, pending until credyt-worker runs'
\echo '(cargo run -p credyt-worker -- --database-url "host=... dbname=credyt_demo"):'
SELECT id AS webhook FROM credyt.create_webhook('http://127.0.0.1:8080/credyt', '{*}') \gset
SELECT credyt.send_test_event() AS test_event \gset
SELECT event_id = :'test_event' AS is_test_event, webhook_id = :'webhook' AS to_endpoint, status, attempts
FROM credyt.deliveries;
SELECT payload FROM credyt.events WHERE id = :'test_event';
