#!/usr/bin/env bash
# Benchmarks, measured in one run and interleaved (this machine's fsync speed swings,
# so only ratios taken side by side mean anything). Prints its setup beside every figure.
#   CREDYT_BENCH_SECONDS (default 10) per round, CREDYT_BENCH_ROUNDS (default 3),
#   CREDYT_BENCH_PARTS (default "ratios push rules batch balance growth"): which parts run,
#   CREDYT_BENCH_HISTORY (default 2000000): earlier usage events of the growth database.
source "$(dirname "$0")/../scripts/lib.sh"
SECONDS_PER_ROUND="${CREDYT_BENCH_SECONDS:-10}"
ROUNDS="${CREDYT_BENCH_ROUNDS:-3}"
CLIENTS=8
ensure_setup
install_extension --release
ensure_cluster
fresh_database credyt_bench
ACCOUNT="$(psql_admin -d credyt_bench -qtA -f "$ROOT/bench/setup.sql" | tail -n 1)"
# The floor: the rows a charge writes, written by hand (bench/floor_setup.sql).
psql_admin -d credyt_bench -q -v ON_ERROR_STOP=1 -f "$ROOT/bench/floor_setup.sql" >/dev/null
export PGOPTIONS="-c credyt.account=$ACCOUNT"
PGBENCH=(/usr/lib/postgresql/15/bin/pgbench -h "$CREDYT_PGROOT" -p "$CREDYT_PGPORT" -U postgres -n -M prepared)

tps() { # script, clients, extra args... -> TPS (in database $BENCH_DB, default credyt_bench)
    local script="$1" clients="$2"; shift 2
    "${PGBENCH[@]}" -c "$clients" -j 2 -T "$SECONDS_PER_ROUND" -f "$ROOT/bench/$script" "$@" "${BENCH_DB:-credyt_bench}" 2>/dev/null \
        | sed -n 's/^tps = \([0-9.]*\).*/\1/p'
}
median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

commit_mode="$(psql_admin -d credyt_bench -tAc "SELECT 'synchronous_commit=' || current_setting('synchronous_commit') || ', fsync=' || current_setting('fsync')")"
echo "setup: PostgreSQL 15, $(nproc) cores, $CLIENTS clients, $ROUNDS interleaved rounds of ${SECONDS_PER_ROUND}s, $commit_mode, pgbench -M prepared"

# Each workload against both bare baselines, rounds interleaved: W1 W2 B1 B3 ... per round.
ratio_rows() { # label customers script... (each script's median TPS and its ratio to both baselines)
    local label="$1" n="$2"; shift 2
    local s
    for s in "$@" baseline.sql baseline_statements.sql; do : >"/tmp/credyt-bench-${s%.sql}"; done
    for _ in $(seq "$ROUNDS"); do
        for s in "$@" baseline.sql baseline_statements.sql; do
            tps "$s" "$CLIENTS" -D customers="$n" >>"/tmp/credyt-bench-${s%.sql}"
        done
    done
    local b t; b="$(median </tmp/credyt-bench-baseline)"; t="$(median </tmp/credyt-bench-baseline_statements)"
    for s in "$@"; do
        local w; w="$(median <"/tmp/credyt-bench-${s%.sql}")"
        printf '%s, %s, %d clients: %.0f TPS; bare baseline as three statements: %.0f TPS, ratio %.2f (budget >= 0.80); as one statement: %.0f TPS, ratio %.2f\n' \
            "${s%.sql}" "$label" "$CLIENTS" "$w" "$t" "$(awk -v w="$w" -v b="$t" 'BEGIN { print w / b }')" \
            "$b" "$(awk -v w="$w" -v b="$b" 'BEGIN { print w / b }')"
    done
}
PARTS=" ${CREDYT_BENCH_PARTS:-ratios push rules batch balance growth} "
part() { [[ "$PARTS" == *" $1 "* ]]; }

if part ratios; then
# (floor_usage: usage.sql's charge written by hand, the least any SQL charge costs)
ratio_rows "1000 customers" 1000 usage.sql charge.sql floor_usage.sql
ratio_rows "one hot customer" 1 usage.sql charge.sql floor_usage.sql
fi

# What the live balance push costs: NOTIFY serialises committing transactions. It is
# opt-in per account (set_balance_push, off by default, as above).
if part push; then
balance_push() { psql_admin -d credyt_bench -qc "SET credyt.account = '$ACCOUNT'" -c "SELECT credyt.set_balance_push($1)" >/dev/null; }
: >/tmp/credyt-bench-on; : >/tmp/credyt-bench-off
for _ in $(seq "$ROUNDS"); do
    balance_push true
    tps usage.sql "$CLIENTS" -D customers=1000 >>/tmp/credyt-bench-on
    balance_push false
    tps usage.sql "$CLIENTS" -D customers=1000 >>/tmp/credyt-bench-off
done
printf 'usage, 1000 customers, %d clients: %.0f TPS with the balance push on, %.0f TPS with it off (the default)\n' \
    "$CLIENTS" "$(median </tmp/credyt-bench-on)" "$(median </tmp/credyt-bench-off)"
fi

# What usage rules cost (SPEC §9): the same charge of an event type under a usage
# limit that never refuses and a free tier of 0 (both counted per event, every event
# charged) against one without rules, rounds interleaved.
if part rules; then
psql_admin -d credyt_bench -q -c "SET credyt.account = '$ACCOUNT'" -c "SELECT credyt.create_product('ruled', 'Ruled', \
    (SELECT jsonb_set(prices, '{0,usage_calculation,event_type}', '\"chat_ruled\"') FROM credyt.products WHERE code = 'chat'))" \
    -c "SELECT count(credyt.subscribe('c' || i, 'ruled')) FROM generate_series(1, 1000) i" \
    -c "SELECT credyt.set_usage_limit('chat_ruled', 1000000000, '1 month'), credyt.set_free_tier('chat_ruled', 0, 'month')" >/dev/null
: >/tmp/credyt-bench-ruled; : >/tmp/credyt-bench-plain
for _ in $(seq "$ROUNDS"); do
    tps usage_ruled.sql "$CLIENTS" -D customers=1000 >>/tmp/credyt-bench-ruled
    tps usage.sql "$CLIENTS" -D customers=1000 >>/tmp/credyt-bench-plain
done
ruled="$(median </tmp/credyt-bench-ruled)"; plain="$(median </tmp/credyt-bench-plain)"
printf 'usage, 1000 customers, %d clients: %.0f TPS under a usage limit and a free tier, %.0f TPS without rules; ratio %.2f\n' \
    "$CLIENTS" "$ruled" "$plain" "$(awk -v r="$ruled" -v p="$plain" 'BEGIN { print r / p }')"
fi

if part batch; then
# Two shapes, interleaved: both clients over the same 1,000 customers (each batch waits
# for the other's wallet locks and commit), and over disjoint halves (groups=2).
for g in 1 2; do : >"/tmp/credyt-bench-batch-$g"; : >"/tmp/credyt-bench-floor-batch-$g"; done
for _ in $(seq "$ROUNDS"); do
    for g in 1 2; do
        tps batch.sql 2 -D groups=$g >>"/tmp/credyt-bench-batch-$g"
        tps floor_batch.sql 2 -D groups=$g >>"/tmp/credyt-bench-floor-batch-$g"
    done
done
for g in 1 2; do
    shape="the same 1000 customers"; [ "$g" = 2 ] && shape="disjoint halves of the customers"
    printf 'record_usage(events jsonb), batches of 1000, 2 clients over %s: %.0f events/s (budget >= 50000); the same rows written by hand (floor_batch): %.0f events/s\n' \
        "$shape" "$(median <"/tmp/credyt-bench-batch-$g" | awk '{ print $1 * 1000 }')" \
        "$(median <"/tmp/credyt-bench-floor-batch-$g" | awk '{ print $1 * 1000 }')"
done
fi

if part balance; then
: >/tmp/credyt-bench-balance
for _ in $(seq "$ROUNDS"); do tps balance.sql "$CLIENTS" >>/tmp/credyt-bench-balance; done
printf 'balance(), 1000 customers, %d clients: %.0f calls/s (budget >= 20000)\n' "$CLIENTS" "$(median </tmp/credyt-bench-balance)"
fi
if part growth; then
# Growth (SPEC §13): a wallet with 1,000 live lots against one with a single lot, the
# same workload on one hot wallet each, rounds interleaved.
psql_admin -d credyt_bench -q -c "SET credyt.account = '$ACCOUNT'" -f "$ROOT/bench/lots.sql" >/dev/null
: >/tmp/credyt-bench-many; : >/tmp/credyt-bench-single
for _ in $(seq "$ROUNDS"); do
    tps usage_one.sql "$CLIENTS" -D who=many >>/tmp/credyt-bench-many
    tps usage_one.sql "$CLIENTS" -D who=single >>/tmp/credyt-bench-single
done
many="$(median </tmp/credyt-bench-many)"; single="$(median </tmp/credyt-bench-single)"
printf 'usage on one wallet, %d clients: %.0f TPS with 1000 live lots, %.0f TPS with one lot; ratio %.2f (budget >= 0.90)\n' \
    "$CLIENTS" "$many" "$single" "$(awk -v m="$many" -v s="$single" 'BEGIN { print m / s }')"

# Growth: a database holding HISTORY earlier usage events (default 2 million, loaded
# through record_usage batches) against an empty one, the same workload, interleaved.
HISTORY="${CREDYT_BENCH_HISTORY:-2000000}"
for db in credyt_bench_empty credyt_bench_full; do
    fresh_database "$db"
    psql_admin -d "$db" -qtA -f "$ROOT/bench/setup.sql" | tail -n 1 >"/tmp/credyt-bench-account-$db"
done
FULL_ACCOUNT="$(cat /tmp/credyt-bench-account-credyt_bench_full)"
EMPTY_ACCOUNT="$(cat /tmp/credyt-bench-account-credyt_bench_empty)"
load_start=$SECONDS
PGOPTIONS="-c credyt.account=$FULL_ACCOUNT" "${PGBENCH[@]}" -c 2 -j 2 -t "$((HISTORY / 2000))" -f "$ROOT/bench/batch.sql" -D groups=1 \
    credyt_bench_full >/dev/null 2>&1
held="$(psql_admin -d credyt_bench_full -tAc "SELECT count(*) FROM credyt.usage_event")"
psql_admin -d credyt_bench_full -qc "VACUUM ANALYZE"
psql_admin -d credyt_bench_empty -qc "VACUUM ANALYZE"
echo "loaded $held earlier usage events in $((SECONDS - load_start))s"
: >/tmp/credyt-bench-full; : >/tmp/credyt-bench-empty
for _ in $(seq "$ROUNDS"); do
    PGOPTIONS="-c credyt.account=$FULL_ACCOUNT" BENCH_DB=credyt_bench_full tps usage.sql "$CLIENTS" -D customers=1000 \
        >>/tmp/credyt-bench-full
    PGOPTIONS="-c credyt.account=$EMPTY_ACCOUNT" BENCH_DB=credyt_bench_empty tps usage.sql "$CLIENTS" -D customers=1000 \
        >>/tmp/credyt-bench-empty
done
full="$(median </tmp/credyt-bench-full)"; empty="$(median </tmp/credyt-bench-empty)"
printf 'usage, 1000 customers, %d clients: %.0f TPS over %s earlier events, %.0f TPS over none; ratio %.2f (budget >= 0.90)\n' \
    "$CLIENTS" "$full" "$held" "$empty" "$(awk -v f="$full" -v e="$empty" 'BEGIN { print f / e }')"
fi

# (the floor's own books: a floor statement that failed would show here, not as a figure)
psql_admin -d credyt_bench -tAc "SELECT 'floor after the run: ' || CASE WHEN (SELECT sum(remaining) FROM floor.lot) = \
    (SELECT sum(balance) FROM floor.wallet_account) AND (SELECT coalesce(sum(amount), 0) FROM floor.entry) = 0 \
    AND (SELECT count(*) FROM floor.entry) = 2 * (SELECT count(*) FROM floor.usage_event) \
    THEN (SELECT count(*) FROM floor.usage_event) || ' events, consistent' ELSE 'INCONSISTENT' END"
for db in credyt_bench credyt_bench_full credyt_bench_empty; do
    psql_admin -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$db'" | grep -q 1 || continue
    a="$(psql_admin -d "$db" -tAc "SELECT id FROM credyt.account WHERE name = 'bench'")"
    psql_admin -d "$db" -tAc "SELECT CASE WHEN count(*) = 0 THEN 'verify_ledger after the run ($db): consistent' \
        ELSE 'verify_ledger after the run ($db): ' || count(*) || ' problems' END FROM credyt.verify_ledger('$a')"
done
