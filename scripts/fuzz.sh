#!/usr/bin/env bash
# The fuzzer at length (the suite runs 10,000 calls): bash scripts/fuzz.sh [CALLS] [SEED]
# Defaults: 100,000 calls, seed 1. Uses the project-local cluster and a fresh database.
source "$(dirname "$0")/lib.sh"
ensure_setup
install_extension
ensure_cluster
fresh_database credyt_fuzz
psql_admin -d postgres -qc "ALTER DATABASE credyt_fuzz SET credyt.webhook_allow_private = on"
ensure_venv
CREDYT_TEST_DATABASE_URL="$(database_url credyt_fuzz)" CREDYT_FUZZ_CALLS="${1:-100000}" CREDYT_FUZZ_SEED="${2:-1}" \
    "$VENV/bin/python" "$ROOT/tests/fuzz/fuzz.py"
