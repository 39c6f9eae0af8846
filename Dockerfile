# syntax=docker/dockerfile:1
# credyt on PostgreSQL 15: a builder stage with the same packages and cargo-pgrx as
# scripts/lib.sh, and a runtime stage on the official PostgreSQL 15 image with pg_cron
# and the credyt-worker and credyt-server binaries (run each as a container of its own
# from the same image: docker run credyt credyt-worker --database-url ..., docker run
# -p 8080:8080 credyt credyt-server --listen 0.0.0.0:8080 --database-url ...).

ARG RUST_IMAGE=rust:1.95.0-slim-bookworm
ARG POSTGRES_IMAGE=postgres:15-bookworm

FROM ${RUST_IMAGE} AS builder
ARG PGRX_VERSION=0.18.1
# The packages scripts/lib.sh installs to build (sudo, curl and chromium serve only its
# test runner: the browser tests of the billing portal).
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      postgresql-15 postgresql-server-dev-15 postgresql-15-cron libclang-dev clang pkg-config ca-certificates \
 && rm -rf /var/lib/apt/lists/*
RUN cargo install cargo-pgrx --version "${PGRX_VERSION}" --locked \
 && cargo pgrx init --pg15 /usr/lib/postgresql/15/bin/pg_config
WORKDIR /src
COPY Cargo.toml Cargo.lock credyt.control ./
COPY core core
COPY tests tests
COPY src src
COPY sql sql
COPY pgrx-tests pgrx-tests
COPY service service
COPY worker worker
COPY server server
RUN grep -q "pgrx = \"=${PGRX_VERSION}\"" Cargo.toml \
 && cargo pgrx package --pg-config /usr/lib/postgresql/15/bin/pg_config --out-dir /out \
 && cargo build --release --locked -p credyt-worker -p credyt-server \
 && install -D target/release/credyt-worker /out/usr/local/bin/credyt-worker \
 && install -D target/release/credyt-server /out/usr/local/bin/credyt-server

FROM ${POSTGRES_IMAGE}
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql-15-cron \
 && rm -rf /var/lib/apt/lists/*
COPY --from=builder /out/usr/share/postgresql/15/extension/ /usr/share/postgresql/15/extension/
COPY --from=builder /out/usr/lib/postgresql/15/lib/ /usr/lib/postgresql/15/lib/
COPY --from=builder /out/usr/local/bin/credyt-worker /usr/local/bin/credyt-worker
COPY --from=builder /out/usr/local/bin/credyt-server /usr/local/bin/credyt-server
RUN printf '%s\n' "CREATE EXTENSION IF NOT EXISTS pg_cron;" "CREATE EXTENSION IF NOT EXISTS credyt;" \
      > /docker-entrypoint-initdb.d/10-credyt.sql
CMD ["postgres", "-c", "shared_preload_libraries=pg_cron", "-c", "cron.database_name=postgres"]
