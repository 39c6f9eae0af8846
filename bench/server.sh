#!/usr/bin/env bash
# credyt-server against SQL, side by side: POST /events from 8 concurrent clients (one
# event per request, and batches of 100 events of one customer), interleaved round by
# round with the same record_usage calls over SQL (pgbench -M prepared, 8 clients).
# Prints events/s of both, the ratio (goal: HTTP >= 0.8 of SQL) and the HTTP p50/p99.
#   CREDYT_BENCH_SECONDS (default 10) per round, CREDYT_BENCH_ROUNDS (default 3).
source "$(dirname "$0")/../scripts/lib.sh"
SECONDS_PER_ROUND="${CREDYT_BENCH_SECONDS:-10}"
ROUNDS="${CREDYT_BENCH_ROUNDS:-3}"
CLIENTS=8
PORT="${CREDYT_BENCH_SERVER_PORT:-18090}"
ensure_setup
install_extension --release
ensure_cluster
fresh_database credyt_bench
ACCOUNT="$(psql_admin -d credyt_bench -qtA -f "$ROOT/bench/setup.sql" | tail -n 1)"
psql_admin -d credyt_bench -q -c "DO \$\$ BEGIN CREATE ROLE credyt_server LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END \$\$" \
    -c "SELECT credyt.grant_server('credyt_server')" >/dev/null
KEY="$(psql_admin -d credyt_bench -qtA -c "SET credyt.account = '$ACCOUNT'" -c "SELECT credyt.create_api_key('bench', 'live')" | tail -n 1)"
(cd "$ROOT" && cargo build -q --release -p credyt-server --bin credyt-server --example load)
"$ROOT/target/release/credyt-server" --database-url "$(database_url credyt_bench) user=credyt_server" \
    --listen "127.0.0.1:$PORT" --pool-size "$CLIENTS" >/tmp/credyt-bench-server.log 2>&1 &
SERVER_PID=$!
trap 'kill "$SERVER_PID" 2>/dev/null || true' EXIT
for _ in $(seq 50); do curl -fs "http://127.0.0.1:$PORT/healthz" >/dev/null && break; sleep 0.2; done

export PGOPTIONS="-c credyt.account=$ACCOUNT"
PGBENCH=(/usr/lib/postgresql/15/bin/pgbench -h "$CREDYT_PGROOT" -p "$CREDYT_PGPORT" -U postgres -n -M prepared)
BATCH="$(mktemp)"
cat >"$BATCH" <<'SQL'
\set c random(1, 1000)
\set r random(1, 1000000000000)
SELECT count(*) FROM credyt.record_usage((
    SELECT jsonb_agg(jsonb_build_object('customer', 'c' || :c, 'event_id', 'sb-' || :client_id || '-' || :r || '-' || i,
                                        'event_type', 'chat', 'data', '{"model": "gpt-4o", "input_tokens": 1200, "output_tokens": 310}'::jsonb))
    FROM generate_series(1, 100) i));
SQL
sql_eps() { # script, events per transaction -> events/s
    "${PGBENCH[@]}" -c "$CLIENTS" -j 2 -T "$SECONDS_PER_ROUND" -D customers=1000 -f "$1" credyt_bench 2>/dev/null \
        | awk -v n="$2" '/^tps = / { print $3 * n } /^latency average/ { print "lat " $4 > "/dev/stderr" }'
}
http_run() { # events per request -> "eps p50 p99"
    "$ROOT/target/release/examples/load" "127.0.0.1:$PORT" "$KEY" "$CLIENTS" "$SECONDS_PER_ROUND" "$1" 1000 \
        | sed -n 's/.*eps=\([0-9]*\) p50_ms=\([0-9.]*\) p99_ms=\([0-9.]*\).*/\1 \2 \3/p'
}
median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

commit_mode="$(psql_admin -d credyt_bench -tAc "SELECT 'synchronous_commit=' || current_setting('synchronous_commit') || ', fsync=' || current_setting('fsync')")"
echo "setup: PostgreSQL 15, $(nproc) cores, $CLIENTS clients, $ROUNDS interleaved rounds of ${SECONDS_PER_ROUND}s, $commit_mode; HTTP: credyt-server (release, pool of $CLIENTS), keep-alive HTTP/1.1; SQL: pgbench -M prepared"
for shape in single batch; do
    : >"/tmp/credyt-bench-http-$shape"; : >"/tmp/credyt-bench-sql-$shape"
done
for _ in $(seq "$ROUNDS"); do
    http_run 1 >>/tmp/credyt-bench-http-single
    sql_eps "$ROOT/bench/usage.sql" 1 2>/dev/null >>/tmp/credyt-bench-sql-single
    http_run 100 >>/tmp/credyt-bench-http-batch
    sql_eps "$BATCH" 100 2>/dev/null >>/tmp/credyt-bench-sql-batch
done
for shape in single batch; do
    label="one event per request"; [ "$shape" = batch ] && label="batches of 100 events"
    h="$(awk '{ print $1 }' "/tmp/credyt-bench-http-$shape" | median)"
    p50="$(awk '{ print $2 }' "/tmp/credyt-bench-http-$shape" | median)"
    p99="$(awk '{ print $3 }' "/tmp/credyt-bench-http-$shape" | median)"
    s="$(median <"/tmp/credyt-bench-sql-$shape")"
    printf 'POST /events, %s, %d clients: %.0f events/s over HTTP, %.0f events/s over SQL; ratio %.2f (goal >= 0.80); HTTP p50 %.2f ms, p99 %.2f ms\n' \
        "$label" "$CLIENTS" "$h" "$s" "$(awk -v h="$h" -v s="$s" 'BEGIN { print h / s }')" "$p50" "$p99"
done
psql_admin -d credyt_bench -tAc "SELECT CASE WHEN count(*) = 0 THEN 'verify_ledger after the run: consistent' ELSE 'verify_ledger after the run: ' || count(*) || ' problems' END FROM credyt.verify_ledger('$ACCOUNT')"
rm -f "$BATCH"
