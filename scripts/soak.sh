#!/usr/bin/env bash
# Memory soak (DESIGN.md §7; not part of CI): Keyway (--threads 1) in front of 4 redis-server
# backends takes GET/SET/MGET at a fixed rate for a fixed time while its VmRSS is sampled;
# passes when every sample after the warm-up stays within ±10% of the first one.
#
#   scripts/soak.sh [--minutes N] [--rate R]     default: 5 minutes, 20000 requests/s
#
# The rate is held by sending R requests (50 clients, random keys over 100,000) at the start
# of every second and sleeping out the rest of it. KEYWAY_BIN=path skips the build. Listens
# on 127.0.0.1 only and stops every process it started, by PID, on exit.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
MINUTES=5
RATE=20000
WARMUP=10 # seconds before the reference sample
SAMPLE=10 # seconds between samples

while (($#)); do
  case $1 in
    --minutes) MINUTES=${2:?--minutes needs a number}; shift ;;
    --rate) RATE=${2:?--rate needs a number}; shift ;;
    -h | --help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "soak: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
[[ $MINUTES =~ ^[1-9][0-9]*$ && $RATE =~ ^[1-9][0-9]*$ ]] || {
  echo "soak: --minutes and --rate take positive integers" >&2
  exit 2
}

if [[ -z ${KEYWAY_BIN:-} ]]; then
  cargo build --release --manifest-path "$ROOT/Cargo.toml" >&2
  KEYWAY_BIN="$ROOT/target/release/keyway"
fi

WORK=$(mktemp -d)
PIDS=()
cleanup() {
  set +e
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null; done
  wait 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

die() {
  echo "soak: $*" >&2
  tail -n 5 "$WORK"/*.log >&2
  exit 1
}
# shellcheck source=scripts/loopback.sh
source "$ROOT/scripts/loopback.sh"

servers=""
for _ in 1 2 3 4; do
  port=$(free_port)
  redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
    --dir "$WORK" --logfile "$WORK/redis-$port.log" &
  PIDS+=($!)
  servers+="    - 127.0.0.1:$port:1"$'\n'
  wait_port "$port"
done
listen=$(free_port)
stats=$(free_port)
admin=$(free_port)
cat >"$WORK/soak.yml" <<EOF
soak:
  listen: 127.0.0.1:$listen
  hash: fnv1a_64
  distribution: ketama
  redis: true
  servers:
$servers
EOF
"$KEYWAY_BIN" -c "$WORK/soak.yml" --threads 1 -s "$stats" -a 127.0.0.1 \
  --admin "127.0.0.1:$admin" -o "$WORK/keyway.log" &
keyway=$!
PIDS+=("$keyway")
wait_port "$listen"

rss() { awk '/^VmRSS:/ { print $2 }' "/proc/$keyway/status"; }

# One second's worth of requests, split over the three commands.
burst() {
  local n=$((RATE / 3))
  redis-benchmark -h 127.0.0.1 -p "$listen" -c 50 -r 100000 -n "$n" -q -t get,set >/dev/null 2>&1
  redis-benchmark -h 127.0.0.1 -p "$listen" -c 50 -r 100000 -n "$n" -q \
    mget k:__rand_int__ k:__rand_int__ k:__rand_int__ k:__rand_int__ >/dev/null 2>&1
}

echo "soak: $MINUTES min at $RATE requests/s; RSS before load $(rss) KiB"
end=$((SECONDS + MINUTES * 60))
reference="" worst=0 late=0 samples=0
next_sample=$((SECONDS + WARMUP))
while ((SECONDS < end)); do
  started=$EPOCHREALTIME
  burst
  # What is left of this second; a burst that overran it means the rate was not held.
  rest=$(awk -v a="$started" -v b="$EPOCHREALTIME" 'BEGIN { r = 1 - (b - a); print (r > 0) ? r : 0 }')
  [[ $rest == 0 ]] && late=$((late + 1))
  if ((SECONDS >= next_sample)); then
    now=$(rss)
    samples=$((samples + 1))
    [[ -n $reference ]] || reference=$now
    dev=$(awk -v a="$now" -v r="$reference" 'BEGIN { printf "%+.1f", (a - r) * 100 / r }')
    worst=$(awk -v d="$dev" -v w="$worst" 'BEGIN { d = d + 0; d = (d < 0) ? -d : d; print (d > w) ? d : w }')
    printf '  t=%4ds  RSS %6d KiB  (%s%% of the first sample)\n' \
      "$((SECONDS - end + MINUTES * 60))" "$now" "$dev"
    next_sample=$((next_sample + SAMPLE))
  fi
  sleep "$rest"
done
# Which client I/O the proxy ran (KEYWAY_IO=uring selects io_uring), as it logged it.
io=epoll
if grep -q "client I/O through io_uring" "$WORK/keyway.log"; then io=io_uring; fi
echo "soak: client I/O through $io; $samples samples, largest deviation ${worst}% from the first; $late burst(s) overran their second"
awk -v w="$worst" 'BEGIN { exit !(w <= 10) }' && echo "soak: RSS flat (within ±10%)" || {
  echo "soak: RSS moved more than 10%" >&2
  exit 1
}
