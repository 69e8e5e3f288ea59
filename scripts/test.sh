#!/usr/bin/env bash
# Installs what the tests need (Debian packages), then runs every check CI runs:
# format, lints, unit + integration tests (against real redis-server / nutcracker), fuzz build.
set -euo pipefail
cd "$(dirname "$0")/.."

# command → Debian package that provides it
declare -A packages=(
  [redis-server]=redis-server [redis-sentinel]=redis-sentinel [redis-cli]=redis-tools
  [redis-benchmark]=redis-tools [memcached]=memcached [nutcracker]=nutcracker
  [openssl]=openssl
  [etcd]=etcd-server [etcdctl]=etcd-client [protoc]=protobuf-compiler
)
missing=()
for cmd in "${!packages[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || [ -x "/usr/sbin/$cmd" ] || missing+=("${packages[$cmd]}")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "installing: ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# Debian starts the packaged services on install; the tests start their own on free ports.
export PATH="$PATH:/usr/sbin"

# Real client libraries for the compatibility tests: redis-py (5.x speaks RESP2 by default)
# and pymemcache.
python3 -c 'import redis' 2>/dev/null || python3 -m pip install -q 'redis>=5,<6'
python3 -c 'import pymemcache' 2>/dev/null || python3 -m pip install -q pymemcache
# Node.js client libraries (ioredis, node-redis, BullMQ), pinned by tests/clients/package-lock.json,
# installed from the npm registry into the test work dir (tests/node_clients.rs runs them).
command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || {
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq nodejs npm >/dev/null
}
libs=target/client-libs
if ! cmp -s tests/clients/package-lock.json "$libs/package-lock.json" || [ ! -d "$libs/node_modules" ]; then
  mkdir -p "$libs"
  cp tests/clients/package.json tests/clients/package-lock.json "$libs/"
  npm ci --prefix "$libs" --no-audit --no-fund --loglevel=error >/dev/null
fi

# promtool (Debian `prometheus`) checks the alerting rules' PromQL; a unit test in src/metrics
# checks the metric names they use even where it cannot be installed.
command -v promtool >/dev/null 2>&1 || {
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq prometheus >/dev/null \
    || echo "promtool unavailable (package prometheus): the rules get the unit test only"
}

rustup component add rustfmt clippy >/dev/null 2>&1 || true

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --all-targets -- -D warnings
echo "== cargo doc (warnings denied)"
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --quiet
if command -v promtool >/dev/null 2>&1; then
  echo "== promtool check rules"
  promtool check rules conf/prometheus/alerts.yml
fi
echo "== cargo test"
cargo test --all-targets
cargo test --doc
# The data path once more with client I/O through io_uring (--io uring, via KEYWAY_IO), where
# the kernel offers it: the same assertions must hold on both I/O paths.
if [ "$(cat /proc/sys/kernel/io_uring_disabled 2>/dev/null || echo 0)" = 0 ]; then
  echo "== cargo test, data path with KEYWAY_IO=uring"
  uring_suites=(bad_input blocking client_limits commands connections fanout faults handshake
    io_uring keyspace lifecycle malformed many_clients memcache memcache_live node_clients
    pipelining protocol_switch pubsub python_clients tls transactions)
  KEYWAY_IO=uring cargo test "${uring_suites[@]/#/--test=}"
fi
# The build to ship where instructions matter: profile-guided (scripts/build-pgo.sh, which
# must keep working), and data-path suites against it.
echo "== PGO build, and data-path suites against it"
scripts/build-pgo.sh
KEYWAY_TEST_BIN="$PWD/target/pgo/release/keyway" cargo test --test=pipelining --test=commands \
  --test=faults --test=fanout
echo "== fuzz targets build"
cargo check --manifest-path fuzz/Cargo.toml
