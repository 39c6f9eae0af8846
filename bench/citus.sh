#!/usr/bin/env bash
# record_usage on Citus (a coordinator and two workers on this machine, scripts/citus.sh)
# beside one PostgreSQL, in one run, rounds interleaved: TPS of single events spread
# over 1,000 customers, and events/s of batches of 1,000. On one machine the three
# nodes share its cores, so this measures what Citus's routing costs a charge, not
# what more machines would add (README § Running distributed).
#   CREDYT_BENCH_SECONDS (default 10) per round, CREDYT_BENCH_ROUNDS (default 3).
source "$(dirname "$0")/../scripts/citus.sh"
SECONDS_PER_ROUND="${CREDYT_BENCH_SECONDS:-10}"
ROUNDS="${CREDYT_BENCH_ROUNDS:-3}"
CLIENTS=8
citus_up --release
ensure_cluster
fresh_database credyt_bench
C="${CITUS_PORTS[0]}"
psql_node "$C" -d "$CITUS_DB" -q -c "DROP EXTENSION IF EXISTS credyt CASCADE" -c "DROP SCHEMA IF EXISTS bench CASCADE" \
    -c "CREATE EXTENSION credyt"
psql_node "$C" -d "$CITUS_DB" -qc "SELECT credyt.distribute()" >/dev/null
SINGLE_ACCOUNT="$(psql_admin -d credyt_bench -qtA -f "$ROOT/bench/setup.sql" | tail -n 1)"
CITUS_ACCOUNT="$(psql_node "$C" -d "$CITUS_DB" -qtA -f "$ROOT/bench/setup.sql" | tail -n 1)"

tps() { # single|citus script -> TPS
    local where="$1" script="$2" host port db account
    if [ "$where" = single ]; then
        host="$CREDYT_PGROOT" port="$CREDYT_PGPORT" db=credyt_bench account="$SINGLE_ACCOUNT"
    else
        host="$CITUS_ROOT" port="$C" db="$CITUS_DB" account="$CITUS_ACCOUNT"
    fi
    PGOPTIONS="-c credyt.account=$account" /usr/lib/postgresql/15/bin/pgbench -h "$host" -p "$port" -U postgres -n \
        -M prepared -c "$CLIENTS" -j 2 -T "$SECONDS_PER_ROUND" -f "$ROOT/bench/$script" -D customers=1000 "$db" \
        2>/dev/null | sed -n 's/^tps = \([0-9.]*\).*/\1/p'
}
median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

echo "setup: PostgreSQL 15, $(nproc) cores shared by every node, $CLIENTS clients, $ROUNDS interleaved rounds of \
${SECONDS_PER_ROUND}s, pgbench -M prepared; Citus $CITUS_VERSION: coordinator + 2 workers, 32 shards, on this machine"
# Each mode for every database (the cluster's on each node): with commits flushed, as
# deployed, and without, which leaves the CPU that routing costs (a charge on Citus
# commits on its worker, and with two-phase commit when the coordinator wrote too).
commits() {
    psql_admin -d postgres -qc "ALTER DATABASE credyt_bench SET synchronous_commit = $1"
    local p
    for p in "${CITUS_PORTS[@]}"; do psql_node "$p" -d postgres -qc "ALTER DATABASE $CITUS_DB SET synchronous_commit = $1"; done
}
for mode in on off; do
    commits "$mode"
    for s in usage batch; do
        : >"/tmp/credyt-citus-$s-single"; : >"/tmp/credyt-citus-$s-citus"
    done
    for _ in $(seq "$ROUNDS"); do
        for s in usage batch; do
            tps single "$s.sql" >>"/tmp/credyt-citus-$s-single"
            tps citus "$s.sql" >>"/tmp/credyt-citus-$s-citus"
        done
    done
    one="$(median </tmp/credyt-citus-usage-single)"; cl="$(median </tmp/credyt-citus-usage-citus)"
    printf 'record_usage, 1000 customers, %d clients, synchronous_commit=%s: one node %.0f TPS; Citus %.0f TPS; Citus/one node %.2f\n' \
        "$CLIENTS" "$mode" "$one" "$cl" "$(awk -v a="$cl" -v b="$one" 'BEGIN { print a / b }')"
    one="$(median </tmp/credyt-citus-batch-single)"; cl="$(median </tmp/credyt-citus-batch-citus)"
    printf 'record_usage(events), batches of 1000, %d clients, synchronous_commit=%s: one node %.0f events/s; Citus %.0f events/s; Citus/one node %.2f\n' \
        "$CLIENTS" "$mode" "$(awk -v t="$one" 'BEGIN { print t * 1000 }')" "$(awk -v t="$cl" 'BEGIN { print t * 1000 }')" \
        "$(awk -v a="$cl" -v b="$one" 'BEGIN { print a / b }')"
done
commits on
verify="SELECT count(*) FROM credyt.verify_ledger()"
echo "verify_ledger: one node $(psql_admin -d credyt_bench -qtA -c "SET credyt.account = '$SINGLE_ACCOUNT'" -c "$verify" | tail -n 1) \
problems, Citus $(psql_node "$C" -d "$CITUS_DB" -qtA -c "SET credyt.account = '$CITUS_ACCOUNT'" -c "$verify" | tail -n 1) problems"
