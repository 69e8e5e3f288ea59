# syntax=docker/dockerfile:1
#
# Keyway image: build with the Rust toolchain, run on a slim Debian of the same release (so the
# binary's glibc matches). Used by docker-compose.yml; standalone:
#
#   docker build -t keyway .
#   docker run --rm -v "$PWD/conf/compose/keyway.yml:/etc/keyway/keyway.yml:ro" -p 22121:22121 keyway

FROM rust:1-bookworm AS build
# protoc: the etcd client's build script compiles etcd's protobuf definitions.
RUN apt-get update \
 && apt-get install -y --no-install-recommends protobuf-compiler \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Only what `cargo build` needs: the manifest names the benches, so they must be present too.
COPY Cargo.toml Cargo.lock ./
COPY benches benches
COPY src src
# Cache mounts keep the registry and target dir between builds; the binary is copied out of the
# cached target dir in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin keyway \
 && cp target/release/keyway /usr/local/bin/keyway

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin keyway
COPY --from=build /usr/local/bin/keyway /usr/local/bin/keyway
USER keyway
# 22121 redis pool, 22122 memcached pool, 22124 Sentinel-managed pool,
# 22222 nutcracker stats JSON, 22223 admin HTTP (/metrics /healthz /pools /reload).
EXPOSE 22121 22122 22124 22222 22223
# SIGTERM: stop accepting, finish in-flight requests (10 s grace), exit 0.
STOPSIGNAL SIGTERM
# The admin port listens beyond loopback here, so it takes a token: mount one at
# /etc/keyway/admin.token (docs/security.md), or override the command.
CMD ["keyway", "-c", "/etc/keyway/keyway.yml", "--admin", "0.0.0.0:22223", "--admin-token", "/etc/keyway/admin.token", "-s", "22222"]
