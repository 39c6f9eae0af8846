#!/usr/bin/env bash
# Installs what is missing, builds credyt, starts a project-local PostgreSQL 15 and
# runs a short demo that prints a customer's wallet.
source "$(dirname "$0")/lib.sh"
ensure_setup
install_extension
ensure_cluster
fresh_database credyt_demo
# The demo's webhook endpoint is on 127.0.0.1, which credyt refuses unless allowed.
psql_admin -d postgres -qc "ALTER DATABASE credyt_demo SET credyt.webhook_allow_private = on"
say "demo (database credyt_demo, psql: psql -h $CREDYT_PGROOT -p $CREDYT_PGPORT -U postgres credyt_demo)"
psql_admin -d credyt_demo -q -f "$ROOT/scripts/demo.sql"

# Credyt's REST API over the same database: credyt-server, as a role that serves only
# what an API key authenticates, and one usage event billed with curl.
say "credyt-server (the REST API) on 127.0.0.1:${CREDYT_DEMO_PORT:-8080}"
(cd "$ROOT" && cargo build -q -p credyt-server)
psql_admin -d credyt_demo -q -c "DO \$\$ BEGIN CREATE ROLE credyt_server LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END \$\$" \
    -c "SELECT credyt.grant_server('credyt_server')" >/dev/null
KEY="$(psql_admin -d credyt_demo -qtA \
    -c "SELECT set_config('credyt.account', (SELECT id FROM credyt.account WHERE external_id = 'acme'), false)" \
    -c "SELECT credyt.create_product('chat', 'Chat', '[{\"type\": \"usage_based\", \"usage_calculation\": {\"event_type\": \"chat\", \"usage_type\": \"unit\"}, \"pricing\": [{\"asset\": \"USD\", \"values\": [{\"unit_price\": 0.01}]}]}]')" \
    -c "SELECT credyt.subscribe('user-42', 'chat')" -c "SELECT credyt.create_api_key('demo', 'live')" | tail -n 1)"
"$ROOT/target/debug/credyt-server" --database-url "$(database_url credyt_demo) user=credyt_server" \
    --listen "127.0.0.1:${CREDYT_DEMO_PORT:-8080}" &
SERVER_PID=$!
trap 'kill "$SERVER_PID" 2>/dev/null || true' EXIT
API="http://127.0.0.1:${CREDYT_DEMO_PORT:-8080}"
for _ in $(seq 50); do curl -fs "$API/healthz" >/dev/null && break; sleep 0.2; done
CUSTOMER="$(curl -fs "$API/customers?limit=1" -H "X-CREDYT-API-KEY: $KEY" | sed 's/.*"id":"\([^"]*\)".*/\1/')"
echo "POST /events (one chat event for customer $CUSTOMER, at 0.01 USD; occurred_at defaults to now):"
curl -fsS -X POST "$API/events" -H "X-CREDYT-API-KEY: $KEY" -H 'Content-Type: application/json' -w '%{http_code}\n' \
    -d "{\"customer_id\": \"$CUSTOMER\", \"events\": [{\"id\": \"demo-evt-1\", \"event_type\": \"chat\"}]}"
echo "GET /customers/$CUSTOMER/wallet:"
curl -fsS "$API/customers/$CUSTOMER/wallet" -H "X-CREDYT-API-KEY: $KEY"
echo
echo "The API key of the demo account: $KEY (the server stops with this script; run it yourself with"
echo "  cargo run -p credyt-server -- --database-url \"$(database_url credyt_demo) user=credyt_server\")"

