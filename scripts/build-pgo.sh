#!/usr/bin/env bash
# Builds Keyway with profile-guided optimisation: an instrumented build serves a bounded
# training load (redis-benchmark through Keyway to four local redis-servers on loopback), and
# the release build is then compiled with the profile it recorded. The result is
# target/pgo/release/keyway, and its profile target/pgo/keyway.profdata.
#
#   scripts/build-pgo.sh            # ~4 minutes: two release builds and ~10 s of load
#
# Same source, same behaviour: only the compiler's layout and inlining decisions change, led
# by which branches the data path takes. What it saves is in docs/bench/profile.md
# ("Profile-guided optimisation"). Installs redis-server and rustup's llvm-tools if missing;
# everything it starts listens on 127.0.0.1 and is stopped by PID.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

log() { echo "[$(date +%H:%M:%S)] $*" >&2; }
die() {
  log "error: $*"
  exit 1
}

if ! command -v redis-server >/dev/null || ! command -v redis-benchmark >/dev/null; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq redis-server redis-tools >/dev/null
fi
SYSROOT_BIN="$(rustc --print sysroot)/lib/rustlib/$(rustc -vV | awk '/^host:/ { print $2 }')/bin"
PROFDATA="$SYSROOT_BIN/llvm-profdata"
if [[ ! -x $PROFDATA ]]; then
  log "installing rustup's llvm-tools (llvm-profdata, matching rustc's LLVM)"
  rustup component add llvm-tools >&2
fi
[[ -x $PROFDATA ]] || die "no llvm-profdata at $PROFDATA"

WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT INT TERM
# shellcheck source=scripts/loopback.sh
source "$ROOT/scripts/loopback.sh"

# Both builds keep every [profile.release] setting: a change there (LTO, say) changes the
# symbols' hashes, and the profile then matches nothing (tried: fat LTO for the second build
# alone gave the plain build's counts). The optimised build below checks that it fits.
log "instrumented build (target/pgo-instrumented)"
CARGO_TARGET_DIR="$ROOT/target/pgo-instrumented" \
  RUSTFLAGS="${RUSTFLAGS:-} -Cprofile-generate=$WORK/unused" \
  cargo build --release --bin keyway >&2
INSTRUMENTED="$ROOT/target/pgo-instrumented/release/keyway"

# The benchmark's configuration (scripts/bench.sh): four shards, ketama over fnv1a_64.
BACKENDS=()
for _ in 1 2 3 4; do
  port=$(free_port)
  redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$WORK" \
    --logfile "$WORK/redis-$port.log" &
  PIDS+=($!)
  BACKENDS+=("$port")
done
PORT=$(free_port)
{
  echo "train:"
  echo "  listen: 127.0.0.1:$PORT"
  echo "  redis: true"
  echo "  hash: fnv1a_64"
  echo "  distribution: ketama"
  echo "  servers:"
  for port in "${BACKENDS[@]}"; do echo "    - 127.0.0.1:$port:1"; done
} >"$WORK/train.yml"
for port in "${BACKENDS[@]}"; do wait_port "$port"; done
mkdir "$WORK/profiles"
LLVM_PROFILE_FILE="$WORK/profiles/keyway-%p-%m.profraw" "$INSTRUMENTED" -c "$WORK/train.yml" \
  --threads 1 -s "$(free_port)" -a 127.0.0.1 --admin "127.0.0.1:$(free_port)" \
  -o "$WORK/keyway.log" &
KEYWAY=$!
PIDS+=("$KEYWAY")
wait_port "$PORT"

# The data path's common requests, each a fixed count: single-key reads and writes of small
# and 1 KiB values, unpipelined and pipelined, one client and fifty, multi-key splits and
# merges, lists and other types, and what Keyway answers itself (PING).
bench() {
  redis-benchmark -h 127.0.0.1 -p "$PORT" -r 10000 -q "$@" >/dev/null 2>>"$WORK/bench.err" ||
    die "redis-benchmark failed ($*): $(tail -n 3 "$WORK/bench.err")"
}
log "training load"
bench -t set -n 20000 -d 16
bench -t get,set -n 60000 -c 50 -d 16
bench -t get,set -n 200000 -c 50 -P 16 -d 16
bench -t get,set -n 30000 -c 50 -d 1024
bench -t get,set -n 100000 -c 50 -P 16 -d 1024
bench -t get -n 10000 -c 1
bench -n 30000 -c 50 mget key:__rand_int__ key:__rand_int__ key:__rand_int__ key:__rand_int__ \
  key:__rand_int__ key:__rand_int__ key:__rand_int__ key:__rand_int__ key:__rand_int__ key:__rand_int__
bench -t ping,incr,lpush,rpush,lpop,rpop,sadd,hset,spop,zadd,zpopmin,mset -n 10000 -c 50
bench -t lrange_100 -n 10000 -c 50

kill -INT "$KEYWAY" # a graceful stop writes the profile
wait "$KEYWAY" || true
compgen -G "$WORK/profiles/*.profraw" >/dev/null || die "the training run wrote no profile"
mkdir -p "$ROOT/target/pgo"
"$PROFDATA" merge -o "$ROOT/target/pgo/keyway.profdata" "$WORK"/profiles/*.profraw

log "optimised build (target/pgo)"
# A profile that fits nothing still builds, into a binary no faster than the plain one. LLVM
# names each function the profile has no data for (asked for here) or data of another shape
# (by default); those of a profile just recorded from the same source should be none.
CARGO_TARGET_DIR="$ROOT/target/pgo" \
  RUSTFLAGS="${RUSTFLAGS:-} -Cprofile-use=$ROOT/target/pgo/keyway.profdata -Cllvm-args=-pgo-warn-missing-function" \
  cargo build --release --bin keyway 2>"$WORK/optimised.log" ||
  { cat "$WORK/optimised.log" >&2; die "the optimised build failed"; }
unfit='no profile data available for function|hash mismatch'
grep -vE "$unfit" "$WORK/optimised.log" >&2 || true
count=$(grep -cE "$unfit" "$WORK/optimised.log" || true)
if [ "$count" -gt 0 ]; then
  grep -E "$unfit" "$WORK/optimised.log" | head -5 >&2
  die "the profile does not fit $count function(s) of the optimised build (tried: fat LTO for this build alone, 4,027): its settings differ from the instrumented build's"
fi
log "built target/pgo/release/keyway (the profile fits every function)"
