#!/usr/bin/env bash
# Runs Keyway on the embedded demo config: 4 local redis shards (127.0.0.1:7001-7004) behind
# Keyway on 127.0.0.1:22121. Installs redis-server if missing, builds release, stops
# everything it started on Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v redis-server >/dev/null 2>&1; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq redis-server redis-tools >/dev/null
fi
cargo build --release

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

for port in 7001 7002 7003 7004; do
  redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
    --dir "$work" --logfile "$work/redis-$port.log" &
  pids+=($!)
done
./target/release/keyway -c conf/keyway.yml "$@" &
pids+=($!)

for _ in $(seq 50); do
  (exec 3<>/dev/tcp/127.0.0.1/22121) 2>/dev/null && break
  sleep 0.1
done
cat <<MSG

Keyway is listening on 127.0.0.1:22121 (pool "main", 4 redis shards on 7001-7004).
  redis-cli -p 22121 set hello world
  redis-cli -p 22121 mget hello missing
  redis-benchmark -p 22121 -t get,set -q
  curl -s 127.0.0.1:22223/metrics     # admin: /metrics /healthz /pools, POST /reload
Ctrl-C stops Keyway and the shards.
MSG
wait "${pids[@]}"
