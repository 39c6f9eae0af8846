#!/usr/bin/env bash
# Installs what is missing and runs every test layer:
#   1. core/ unit and property tests (no database);
#   2. #[pg_test] in-database tests (cargo pgrx test, its own throwaway cluster);
#   3. tests/: real client connections with ordinary roles against the project-local
#      cluster (tenancy isolation, concurrency, model-based, errors, replays, backups,
#      kill -9 of a cluster of its own), and credyt-worker processes delivering to a
#      local HTTP receiver (webhooks);
#   4. credyt-server driven by the official Credyt SDK (tests/server/sdk_test.py);
#   5. the fuzzer: every granted function with generated and malformed arguments.
source "$(dirname "$0")/lib.sh"
ensure_setup
ensure_python_verifier
LOG="$(mktemp)"
trap 'rm -f "$LOG"' EXIT

say "style: cargo fmt --check, cargo clippy -D warnings on every crate, scripts/layout.py"
(cd "$ROOT" && cargo fmt --all -- --check)
python3 "$ROOT/scripts/layout.py"
(cd "$ROOT" && cargo clippy -p credyt-core -p credyt-service -p credyt-worker -p credyt-server -p credyt-tests \
    --all-targets -- -D warnings)
(cd "$ROOT" && cargo clippy -p credyt --features pg15 --all-targets -- -D warnings)

say "1/5 core, service, worker and server unit tests"
(cd "$ROOT" && cargo test -p credyt-core -p credyt-service -p credyt-worker -p credyt-server) 2>&1 | tee -a "$LOG"

say "2/5 in-database tests (cargo pgrx test pg15)"
if [ "$(id -u)" -eq 0 ]; then
    mkdir -p "$CREDYT_PGROOT/pgrx-test" && chown postgres "$CREDYT_PGROOT" "$CREDYT_PGROOT/pgrx-test"
    (cd "$ROOT" && CARGO_PGRX_TEST_RUNAS=postgres CARGO_PGRX_TEST_PGDATA="$CREDYT_PGROOT/pgrx-test" \
        cargo pgrx test pg15) 2>&1 | tee -a "$LOG"
else
    (cd "$ROOT" && cargo pgrx test pg15) 2>&1 | tee -a "$LOG"
fi

say "3/5 out-of-process tests"
install_extension
ensure_cluster
fresh_database credyt_test
# The tests' webhook receivers listen on 127.0.0.1, which credyt refuses by default.
psql_admin -d postgres -qc "ALTER DATABASE credyt_test SET credyt.webhook_allow_private = on"
# pg_cron runs jobs only in the cluster's cron.database_name (credyt): the clock test
# schedules tick() there, on a freshly installed extension.
psql_admin -d credyt -q -c "DROP EXTENSION IF EXISTS credyt CASCADE" -c "CREATE EXTENSION credyt" \
    -c "CREATE EXTENSION IF NOT EXISTS pg_cron"
(cd "$ROOT" && cargo build -p credyt-worker)
(cd "$ROOT" && CREDYT_TEST_DATABASE_URL="$(database_url credyt_test)" CREDYT_CRON_DATABASE_URL="$(database_url credyt)" \
    CREDYT_WORKER_BIN="$ROOT/target/debug/credyt-worker" cargo test -p credyt-tests -- --test-threads=4) 2>&1 | tee -a "$LOG"

say "4/5 credyt-server with the official Credyt SDK (tests/server/sdk_test.py)"
ensure_venv
psql_admin -d credyt_test -q -c "DO \$\$ BEGIN CREATE ROLE credyt_server LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END \$\$" \
    -c "SELECT credyt.grant_server('credyt_server')" >/dev/null
(cd "$ROOT" && cargo build -p credyt-server)
SERVER_PORT="${CREDYT_TEST_SERVER_PORT:-18080}"
# (Stripe is the tests' fake: localstripe behind tests/server/fake_stripe.py, on this port)
STRIPE_PORT="${CREDYT_TEST_STRIPE_PORT:-18095}"
PORTAL_KEY="$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')"
"$ROOT/target/debug/credyt-server" --database-url "$(database_url credyt_test) user=credyt_server" \
    --listen "127.0.0.1:$SERVER_PORT" --stripe-api-base "http://127.0.0.1:$STRIPE_PORT" \
    --auto-topup-interval 500ms --portal-signing-key "$PORTAL_KEY" >"$LOG.server" 2>&1 &
SERVER_PID=$!
trap 'kill "$SERVER_PID" 2>/dev/null || true; rm -f "$LOG" "$LOG.server" "$LOG.st"' EXIT
"$VENV/bin/python" - "$SERVER_PORT" <<'PY'
import sys, time, urllib.request
for _ in range(100):
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/healthz", timeout=1)
        break
    except Exception:
        time.sleep(0.1)
PY
CREDYT_TEST_DATABASE_URL="$(database_url credyt_test)" CREDYT_SERVER_URL="http://127.0.0.1:$SERVER_PORT" \
    CREDYT_WORKER_BIN="$ROOT/target/debug/credyt-worker" CREDYT_TEST_STRIPE_PORT="$STRIPE_PORT" \
    "$VENV/bin/python" "$ROOT/tests/server/sdk_test.py" 2>&1 | tee -a "$LOG"
# The billing portal in headless Chromium (Playwright), then what is in the server's log.
CREDYT_TEST_DATABASE_URL="$(database_url credyt_test)" CREDYT_SERVER_URL="http://127.0.0.1:$SERVER_PORT" \
    CREDYT_TEST_STRIPE_PORT="$STRIPE_PORT" CREDYT_PORTAL_SIGNING_KEY="$PORTAL_KEY" CREDYT_SERVER_LOG="$LOG.server" \
    "$VENV/bin/python" "$ROOT/tests/server/portal_test.py" 2>&1 | tee -a "$LOG"
# schemathesis against the live server, every operation, a bounded number of examples
# each: no 5xx, every status, content type, header and body as the document says, and
# schema-invalid input refused. (Not positive_data_acceptance: schema-valid input that
# the extension refuses on its merits, an unknown reason or a past expiry, is a 422.)
ST_ACCOUNT="$(psql_admin -d credyt_test -qtA -c "SELECT credyt.create_account('schemathesis')")"
ST_KEY="$(psql_admin -d credyt_test -qtA -c "SET credyt.account = '$ST_ACCOUNT'" -c "SELECT credyt.create_api_key('st', 'live')" | tail -n 1)"
if "$VENV/bin/schemathesis" run "http://127.0.0.1:$SERVER_PORT/openapi.json" -H "X-CREDYT-API-KEY: $ST_KEY" \
        --max-examples 10 --seed 1 --checks all --exclude-checks positive_data_acceptance --no-color 2>&1 | tee -a "$LOG.st"; then
    echo "test result: ok. 1 passed; 0 failed; 0 ignored (schemathesis)" | tee -a "$LOG"
else
    echo "test result: FAILED. 0 passed; 1 failed; 0 ignored (schemathesis)" | tee -a "$LOG"
    exit 1
fi
# SIGTERM: the server finishes what is in flight and exits 0.
kill -TERM "$SERVER_PID" && wait "$SERVER_PID" || { cat "$LOG.server"; exit 1; }

say "5/5 fuzzing every granted function (tests/fuzz/fuzz.py, ${CREDYT_FUZZ_CALLS:-10000} calls)"
ensure_venv
CREDYT_TEST_DATABASE_URL="$(database_url credyt_test)" CREDYT_FUZZ_CALLS="${CREDYT_FUZZ_CALLS:-10000}" \
    "$VENV/bin/python" "$ROOT/tests/fuzz/fuzz.py" 2>&1 | tee -a "$LOG"

# One line for all the layers.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "credyt: %d passed, %d failed\n", p, f }' "$LOG"
