#!/usr/bin/env bash
# credyt distributed on Citus: a coordinator and two workers on this machine.
#
#   bash scripts/citus.sh          builds and installs Citus 13.2.2 once (from ../shared/citus,
#                                  skipped when installed), starts the three clusters, registers
#                                  the nodes, installs credyt and calls credyt.distribute()
#   bash scripts/citus.sh test     the same, then the out-of-process suites against the coordinator
#                                  (tenancy, routing, storms, model, usage, clock, webhooks)
#   bash scripts/citus.sh stop     stops the three clusters
#
# Each node is a project-local cluster (never run as root: as root they belong to the
# `postgres` OS user) with its own directory and port, citus and pg_cron preloaded.
# Re-running is fast: every step is skipped when already done.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

CITUS_VERSION=13.2.2
CITUS_SRC="${CREDYT_CITUS_SRC:-$ROOT/../shared/citus}"
CITUS_ROOT="${CREDYT_CITUS_ROOT:-/tmp/credyt-citus-$(id -un)}"
CITUS_PORTS=(54340 54341 54342)   # coordinator, worker 1, worker 2
CITUS_DB=credyt
CITUS_BUILD_PACKAGES=(libzstd-dev liblz4-dev libcurl4-openssl-dev libkrb5-dev libssl-dev libselinux1-dev
                      libxslt1-dev libpam0g-dev libreadline-dev make gcc)

citus_installed() {
    local control
    control="$("$PG_CONFIG" --sharedir)/extension/citus.control"
    [ -f "$("$PG_CONFIG" --pkglibdir)/citus.so" ] && [ -f "$control" ] \
        && grep -qs "^# citus $CITUS_VERSION$" "$control"
}

ensure_citus() {
    if citus_installed; then return; fi
    local missing=() p
    for p in "${CITUS_BUILD_PACKAGES[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
    if [ "${#missing[@]}" -gt 0 ]; then
        say "installing Debian packages to build Citus: ${missing[*]}"
        "${SUDO[@]}" apt-get update -qq
        "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
    local build="$ROOT/target/citus-build"
    say "building Citus $CITUS_VERSION from $CITUS_SRC (about 6 minutes, once)"
    rm -rf "$build" && mkdir -p "$build"
    tar xzf "$CITUS_SRC/citus-$CITUS_VERSION.tar.gz" -C "$build"
    (cd "$build/citus-$CITUS_VERSION" \
        && patch -s -p1 <"$CITUS_SRC/pg15-have_createdb_privilege.patch" \
        && ./configure -q PG_CONFIG="$PG_CONFIG" >/dev/null \
        && make -s -j"$(nproc)" >/dev/null 2>"$build/make.err" \
        && "${SUDO[@]}" make -s install >/dev/null) || { tail -n 30 "$build/make.err" >&2; exit 1; }
    # the installed version, for the check above (citus.control names only the SQL version)
    echo "# citus $CITUS_VERSION" | "${SUDO[@]}" tee -a "$("$PG_CONFIG" --sharedir)/extension/citus.control" >/dev/null
}

node_dir() { echo "$CITUS_ROOT/node$1"; }

psql_node() {
    local port="$1"; shift
    PGOPTIONS="-c client_min_messages=warning" psql -X -v ON_ERROR_STOP=1 -h "$CITUS_ROOT" -p "$port" -U postgres "$@"
}

ensure_node() {
    local i="$1" port="${CITUS_PORTS[$1]}"
    mkdir -p "$CITUS_ROOT"
    if [ "$(id -u)" -eq 0 ]; then chown postgres "$CITUS_ROOT"; fi
    start_pg_cluster "$(node_dir "$i")" "$CITUS_ROOT/node$i.log" "# credyt on Citus, node $i
port = $port
listen_addresses = '127.0.0.1'
unix_socket_directories = '$CITUS_ROOT'
shared_preload_libraries = 'citus,pg_cron'
cron.database_name = '$CITUS_DB'
max_connections = 300
max_prepared_transactions = 200"
}

# The database on every node, Citus in it, the workers registered with the coordinator,
# then credyt installed (Citus propagates CREATE EXTENSION to the workers) and distributed.
ensure_cluster_db() {
    local i port
    for i in 0 1 2; do
        port="${CITUS_PORTS[$i]}"
        psql_node "$port" -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$CITUS_DB'" | grep -q 1 \
            || psql_node "$port" -d postgres -qc "CREATE DATABASE $CITUS_DB"
        psql_node "$port" -d "$CITUS_DB" -qc "CREATE EXTENSION IF NOT EXISTS citus"
    done
    local c="${CITUS_PORTS[0]}"
    psql_node "$c" -d "$CITUS_DB" -qc "SELECT citus_set_coordinator_host('127.0.0.1', $c)" >/dev/null
    for i in 1 2; do
        psql_node "$c" -d "$CITUS_DB" -tAc \
            "SELECT 1 FROM pg_dist_node WHERE nodeport = ${CITUS_PORTS[$i]}" | grep -q 1 \
            || psql_node "$c" -d "$CITUS_DB" -qc "SELECT citus_add_node('127.0.0.1', ${CITUS_PORTS[$i]})" >/dev/null
    done
    if ! psql_node "$c" -d "$CITUS_DB" -tAc "SELECT 1 FROM pg_extension WHERE extname = 'credyt'" | grep -q 1; then
        say "installing credyt on the coordinator and distributing it"
        psql_node "$c" -d "$CITUS_DB" -q -c "CREATE EXTENSION IF NOT EXISTS pg_cron" -c "CREATE EXTENSION credyt" \
            -c "ALTER DATABASE $CITUS_DB SET credyt.webhook_allow_private = on"
        psql_node "$c" -d "$CITUS_DB" -qc "SELECT credyt.distribute()" >/dev/null
    fi
}

citus_url() { echo "host=$CITUS_ROOT port=${CITUS_PORTS[0]} user=postgres dbname=$CITUS_DB"; }

citus_up() { # $1: cargo-pgrx flags for the extension (bench/citus.sh: --release)
    ensure_setup
    ensure_citus
    install_extension "${1:-}"
    local i
    for i in 0 1 2; do ensure_node "$i"; done
    ensure_cluster_db
    say "credyt on Citus: coordinator $(citus_url)"
}

# The out-of-process suites that matter most, against the coordinator.
citus_test() {
    citus_up
    ensure_python_verifier
    # a fresh credyt on every run (tests leave tenants behind)
    local c="${CITUS_PORTS[0]}"
    say "reinstalling credyt on the cluster"
    psql_node "$c" -d "$CITUS_DB" -q -c "DROP EXTENSION IF EXISTS credyt CASCADE" -c "CREATE EXTENSION credyt"
    psql_node "$c" -d "$CITUS_DB" -qc "SELECT credyt.distribute()" >/dev/null
    (cd "$ROOT" && cargo build -p credyt-worker)
    (cd "$ROOT" && CREDYT_TEST_DATABASE_URL="$(citus_url)" CREDYT_CRON_DATABASE_URL="$(citus_url)" \
        CREDYT_WORKER_BIN="$ROOT/target/debug/credyt-worker" CREDYT_TEST_CITUS=1 \
        cargo test -p credyt-tests --test citus --test tenancy --test concurrency --test model --test usage \
            --test clock --test webhooks -- --test-threads=2)
}

# (bench/citus.sh sources this file for its functions)
[[ "${BASH_SOURCE[0]}" == "$0" ]] || return 0
case "${1:-up}" in
    up) citus_up ;;
    test) citus_test ;;
    stop)
        for i in 0 1 2; do
            as_pg "$PG_BIN/pg_ctl" -D "$(node_dir "$i")" -m fast stop >/dev/null 2>&1 || true
        done
        ;;
    *) echo "usage: $0 [up|test|stop]" >&2; exit 2 ;;
esac
