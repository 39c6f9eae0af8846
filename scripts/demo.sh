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
