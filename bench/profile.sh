#!/usr/bin/env bash
# Instruction counts per call of one SQL statement, with callgrind, in a single-user
# backend on a copy of the bench database: repeatable where wall-clock timings are not.
#
#   bash bench/profile.sh "SELECT credyt.charge('c\$c', 'p-\$i', 'USD', 0.01)" [calls]
#
# In the statement, $i is the call number (1..calls) and $c a customer number (1..1000).
# Needs the bench database (bash bench/run.sh creates it) and valgrind.
source "$(dirname "$0")/../scripts/lib.sh"
STATEMENT="${1:?usage: bench/profile.sh \"SQL with \$i and \$c\" [calls]}"
CALLS="${2:-300}"
command -v valgrind >/dev/null || "${SUDO[@]}" apt-get install -y -qq valgrind >/dev/null
install_extension --release
ensure_cluster
ACCOUNT="$(psql_admin -d credyt_bench -tAc "SELECT id FROM credyt.account WHERE name = 'bench'" 2>/dev/null || true)"
[ -n "$ACCOUNT" ] || { echo "error: no bench database; run bash bench/run.sh first" >&2; exit 1; }
WORK="$CREDYT_PGROOT/profile"
psql_admin -d postgres -qc "CHECKPOINT"
rm -rf "$WORK" && mkdir -p "$WORK"
[ "$(id -u)" -eq 0 ] && chown postgres "$WORK"
# A copy of the running cluster's data directory, started in single-user mode.
as_pg cp -a "$PGDATA_DIR" "$WORK/data"
as_pg rm -f "$WORK/data/postmaster.pid"
as_pg sed -i "s/^shared_preload_libraries.*//" "$WORK/data/postgresql.conf"
{
    echo "SET credyt.account = '$ACCOUNT';"
    for i in $(seq 1 "$CALLS"); do
        c=$((i % 1000 + 1))
        echo "${STATEMENT//\$i/$i}" | sed "s/\\\$c/$c/g"
    done
} >"$WORK/in.sql"
chmod 644 "$WORK/in.sql"
( cd "$WORK" && as_pg valgrind --tool=callgrind --callgrind-out-file="$WORK/callgrind.out" \
    "$PG_BIN/postgres" --single -D "$WORK/data" -c synchronous_commit=off credyt_bench \
    <"$WORK/in.sql" >"$WORK/out.txt" 2>"$WORK/valgrind.txt" )
echo "instructions per call ($CALLS calls of: $STATEMENT)"
callgrind_annotate --inclusive=yes "$WORK/callgrind.out" 2>/dev/null \
    | grep -E "PROGRAM TOTALS|credyt::" | head -25 \
    | awk -v n="$CALLS" '{ gsub(",", "", $1); printf "%10.0f  %s\n", $1 / n, $0 }' | cut -c1-160
