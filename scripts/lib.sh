# Shared set-up for scripts/demo.sh, scripts/test.sh and bench/run.sh. Sourced, not run.
#
# Works on a fresh Debian 12 machine as root or as a user with sudo. Every step is
# skipped when already done, so re-running is fast: packages are checked with dpkg,
# cargo-pgrx with its version, the cluster with its PG_VERSION file and pg_ctl status.
# Postgres never runs as root: as root, the cluster belongs to the `postgres` OS user.

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config
PG_BIN=/usr/lib/postgresql/15/bin
PGRX_VERSION="$(sed -n 's/^pgrx = "=\([0-9.]*\)"/\1/p' "$ROOT/Cargo.toml")"
# The project-local cluster: its own directory, socket and port.
CREDYT_PGROOT="${CREDYT_PGROOT:-/tmp/credyt-pg-$(id -un)}"
CREDYT_PGPORT="${CREDYT_PGPORT:-54329}"
PGDATA_DIR="$CREDYT_PGROOT/data"
APT_PACKAGES=(postgresql-15 postgresql-server-dev-15 postgresql-15-cron libclang-dev clang sudo curl chromium)

if [ "$(id -u)" -eq 0 ]; then SUDO=(); else SUDO=(sudo); fi
export PATH="$HOME/.cargo/bin:$PATH"

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

# Runs a command as the cluster's owner: `postgres` when we are root, else ourselves.
as_pg() {
    if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

ensure_packages() {
    local missing=()
    for p in "${APT_PACKAGES[@]}"; do
        dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        say "installing Debian packages: ${missing[*]}"
        if [ "$(id -u)" -ne 0 ] && ! command -v sudo >/dev/null; then
            echo "error: need root or sudo to install ${missing[*]}" >&2
            exit 1
        fi
        "${SUDO[@]}" apt-get update -qq
        "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
}

ensure_cargo_pgrx() {
    if [ "$(cargo pgrx --version 2>/dev/null || true)" != "cargo-pgrx $PGRX_VERSION" ]; then
        say "installing cargo-pgrx $PGRX_VERSION (takes several minutes once)"
        cargo install cargo-pgrx --version "$PGRX_VERSION" --locked
    fi
    local cfg="${PGRX_HOME:-$HOME/.pgrx}/config.toml"
    if ! grep -qs "pg15 = \"$PG_CONFIG\"" "$cfg"; then
        say "cargo pgrx init --pg15 $PG_CONFIG"
        cargo pgrx init --pg15 "$PG_CONFIG"
    fi
    # As a normal user, cargo-pgrx installs into the system's extension directories:
    # give this user those two directories (and any credyt files in them).
    if [ "$(id -u)" -ne 0 ]; then
        local d
        for d in "$("$PG_CONFIG" --sharedir)/extension" "$("$PG_CONFIG" --pkglibdir)"; do
            if [ ! -w "$d" ]; then
                say "making $d writable for $(id -un)"
                sudo chown "$(id -un)" "$d"
            fi
            find "$d" -maxdepth 1 -name 'credyt*' ! -user "$(id -un)" -exec sudo chown "$(id -un)" {} + 2>/dev/null || true
        done
    fi
}

ensure_setup() {
    ensure_packages
    ensure_cargo_pgrx
}

# The webhook tests check signatures with the official Standard Webhooks library
# (PyPI), independent of the worker's own signing code.
STANDARDWEBHOOKS_VERSION=1.1.0
ensure_python_verifier() {
    if python3 -c 'import standardwebhooks' 2>/dev/null; then return; fi
    if ! command -v python3 >/dev/null || ! python3 -m pip --version >/dev/null 2>&1; then
        say "installing Debian packages: python3 python3-pip"
        "${SUDO[@]}" apt-get update -qq
        "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-pip >/dev/null
    fi
    say "installing standardwebhooks $STANDARDWEBHOOKS_VERSION from PyPI (the tests' independent verifier)"
    # Debian's own Python refuses global installs (PEP 668); a user install is enough.
    python3 -m pip install -q "standardwebhooks==$STANDARDWEBHOOKS_VERSION" 2>/dev/null \
        || python3 -m pip install -q --user --break-system-packages "standardwebhooks==$STANDARDWEBHOOKS_VERSION"
}

# The project's own Python environment, for the fuzzer (tests/fuzz/fuzz.py) and the
# server's SDK test (tests/server/sdk_test.py): pinned packages from PyPI, installed
# once into $ROOT/.venv. credyt-api is the official Credyt SDK.
VENV="$ROOT/.venv"
PY_PACKAGES=("hypothesis==6.170.15" "psycopg[binary]==3.3.9" "credyt-api==0.2.0" "requests==2.34.2"
             "openapi-spec-validator==0.9.0" "schemathesis==4.32.5" "localstripe==1.15.10" "stripe==16.1.0" "playwright==1.49.1")
ensure_venv() {
    if [ ! -x "$VENV/bin/python" ]; then
        say "creating the project's Python environment in $VENV"
        if ! python3 -m venv "$VENV" 2>/dev/null; then
            rm -rf "$VENV"
            "${SUDO[@]}" apt-get update -qq
            "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
            python3 -m venv "$VENV"
        fi
    fi
    if ! "$VENV/bin/python" -c 'import hypothesis, psycopg, credytapi, requests, openapi_spec_validator, schemathesis, localstripe, stripe, playwright' \
        2>/dev/null; then
        say "installing ${PY_PACKAGES[*]} from PyPI into $VENV"
        "$VENV/bin/pip" install -q "${PY_PACKAGES[@]}"
    fi
}

# Builds and installs the extension into the system PostgreSQL 15.
# $1: extra cargo-pgrx flags (e.g. --release).
install_extension() {
    say "building and installing the credyt extension ${1:-}"
    (cd "$ROOT" && cargo pgrx install --pg-config "$PG_CONFIG" ${1:-} >/dev/null)
}

# Initialises (once) and starts a cluster as its owner: $1 its data directory, $2 its
# log file, $3 the lines to add to its postgresql.conf at initdb.
start_pg_cluster() {
    local dir="$1" log="$2" conf="$3"
    if [ ! -f "$dir/PG_VERSION" ]; then
        say "initdb $dir"
        as_pg "$PG_BIN/initdb" -D "$dir" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null
        printf '%s\n' "$conf" | as_pg tee -a "$dir/postgresql.conf" >/dev/null
    fi
    if ! as_pg "$PG_BIN/pg_ctl" -D "$dir" status >/dev/null 2>&1; then
        say "starting PostgreSQL 15 in $dir"
        if ! as_pg "$PG_BIN/pg_ctl" -D "$dir" -l "$log" -w -t 60 start >/dev/null; then
            echo "error: PostgreSQL did not start; the end of its log:" >&2
            tail -n 30 "$log" >&2 || true
            exit 1
        fi
    fi
}

# Starts (initialising once) the project-local cluster with pg_cron preloaded.
ensure_cluster() {
    mkdir -p "$CREDYT_PGROOT"
    if [ "$(id -u)" -eq 0 ]; then chown postgres "$CREDYT_PGROOT"; fi
    start_pg_cluster "$PGDATA_DIR" "$CREDYT_PGROOT/postgres.log" "# credyt project-local cluster
port = $CREDYT_PGPORT
listen_addresses = '127.0.0.1'
unix_socket_directories = '$CREDYT_PGROOT'
shared_preload_libraries = 'pg_cron'
cron.database_name = 'credyt'
max_connections = 200"
    psql_admin -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = 'credyt'" | grep -q 1 \
        || psql_admin -d postgres -qc "CREATE DATABASE credyt"
}

psql_admin() {
    PGOPTIONS="-c client_min_messages=warning" psql -X -v ON_ERROR_STOP=1 -h "$CREDYT_PGROOT" -p "$CREDYT_PGPORT" -U postgres "$@"
}

# (Re)creates database $1 with the extension freshly installed.
fresh_database() {
    psql_admin -d postgres -qc "DROP DATABASE IF EXISTS $1 WITH (FORCE)"
    psql_admin -d postgres -qc "CREATE DATABASE $1"
    psql_admin -d "$1" -qc "CREATE EXTENSION credyt"
}

database_url() {
    echo "host=$CREDYT_PGROOT port=$CREDYT_PGPORT user=postgres dbname=$1"
}
