#!/usr/bin/env bash
# Webhook delivery benchmark: a release credyt-worker delivering to a local HTTP
# receiver, on the project-local cluster. Prints its setup beside every figure:
#   deliveries/s draining a backlog (budget >= 1,000/s), and commit-to-delivery
#   latency of events committed one by one (budget: median < 50 ms; p99 reported).
# CREDYT_BENCH_EVENTS (5000), CREDYT_BENCH_LATENCY_EVENTS (500),
# CREDYT_BENCH_CONCURRENCY (64), CREDYT_BENCH_ROUNDS (3).
source "$(dirname "$0")/../scripts/lib.sh"
ensure_setup
install_extension --release
ensure_cluster
fresh_database credyt_bench_webhooks
(cd "$ROOT" && cargo build --release -p credyt-worker && cargo build --release -p credyt-tests --bin webhook_bench)
CREDYT_TEST_DATABASE_URL="$(database_url credyt_bench_webhooks)" \
CREDYT_WORKER_BIN="$ROOT/target/release/credyt-worker" \
    "$ROOT/target/release/webhook_bench"
