#!/usr/bin/env bash
# The crash test at length: kill -9 of a whole cluster mid-stream, N rounds (default 50),
# then the same checks as the suite's 5 rounds (tests/tests/crash.rs).
#   bash scripts/crash.sh [ROUNDS]
source "$(dirname "$0")/lib.sh"
ensure_setup
install_extension
say "crash test, ${1:-50} rounds"
(cd "$ROOT" && CREDYT_CRASH_ROUNDS="${1:-50}" cargo test -p credyt-tests --test crash -- --nocapture) 2>&1 | grep -E '^crash|test result|panicked'
