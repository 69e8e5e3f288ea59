#!/usr/bin/env bash
# Side-by-side load benchmark (DESIGN.md §7): direct Redis, nutcracker (default -v 5 and -v 4)
# and Keyway (--threads 1 and 2) on the same nutcracker.yml and the same 4 redis-server
# backends, driven by redis-benchmark in interleaved rounds.
#
#   scripts/bench.sh [--rounds N] [--quick] [--out DIR]   throughput / latency / CPU / memory
#   scripts/bench.sh --strace [--quick]                   syscalls per request (strace -c)
#   scripts/bench.sh --callgrind [--quick]                instructions per request (callgrind)
#   scripts/bench.sh --blocking [--rounds N] [--quick]    blocking pops: BRPOP vs RPOP
#
# --tls adds two targets beside the plaintext ones, both Keyway 1 thread on the same backends:
# kw_tls (redis-benchmark --tls to a `tls:` listener) and kw_btls (plaintext clients, the pool
# reaching the backends' TLS ports through `server_tls:`); certificates made here by openssl.
# The summary gains their ratios to kw_1t (e.g. `ONLY="kw_1t kw_tls kw_btls" scripts/bench.sh
# --tls --rounds 3`); kw_tls's idle connections (memory, get_16B_idle1000) are TLS ones. It
# takes no part in the application or blocking modes (their drivers speak plaintext).
#
# --pools adds two pool variants, both Keyway 1 thread, priced against kw_1t in the summary:
# kw_sc4 (the same 4 backends with `server_connections: 4`, whatever SERVER_CONNECTIONS says)
# and kw_cl (a `cluster:` pool over a Redis Cluster of 3 masters, no replicas, started here
# on its own loopback ports; its keys are prefilled through Keyway). kw_cl / kw_1t compares a
# cluster pool of 3 nodes (slot map, CRC16) with a ketama pool of 4 servers, not the same
# backends. E.g. `ONLY="kw_1t kw_sc4 kw_cl" scripts/bench.sh --pools --rounds 3`. Opt-in: the
# default run keeps its length and its targets.
#
# KEYWAY_BIN=path skips the build (default: `cargo build --release` in this repository).
# URING=1 adds Keyway with client I/O through io_uring (targets ku_1t, ku_2t: --io uring;
# the price table holds ku_1t / kw_1t).
# PREDIXY_BIN=path adds predixy (target px: 1 worker thread, a StandaloneServerPool over the
# same 4 backends, its config converted from the benchmark's nutcracker.yml by
# bench_report.py predixy-conf): the C++ multi-threaded peer. Its source is public
# (joyieldInc/predixy) and builds with `make` after `-include ctime` on GCC 12+, e.g.
# `make CXX="g++ -include ctime"`.
# BASE_BIN=path adds a baseline Keyway (targets kb_1t, kb_2t: same flags, another binary), and
# the summary gains an after/before table: the regression check of a change, in one run.
# SERVER_CONNECTIONS=N writes `server_connections: N` into every proxy's config (default: the
# key is absent, nutcracker's default 1). ONLY="t1 t2 ..." runs just those targets (ids as in
# TARGETS below; the direct target is always started, as backend 1). LOAD_BIN=path: the
# keyway-load binary (default: built with Keyway, target/release/keyway-load).
# CALLGRIND_ONLY="w1 w2" counts just those workloads under --callgrind; LOAD_ONLY="w1 w2" runs
# just those of the load run's (e.g. many rounds of one workload: a change's A/B).
#
# --workloads LIST picks the load run's workloads: default (the redis-benchmark ones, the
# default list), pubsub, blpop; e.g. `scripts/bench.sh --workloads pubsub,blpop --rounds 3`.
# pubsub and blpop are application workloads driven by keyway-load (src/bin/keyway-load.rs):
# pub/sub (publish rate, deliveries/s, publish -> delivery latency) and blocking pops (BLPOP
# woken by LPUSH: pops/s, push -> pop latency), Keyway vs direct Redis (nutcracker: n/a, it
# has neither).
#
# Outputs in bench-results/ (or --out): results.csv, memory.csv, summary.md, chart.png for the
# load run; apps.csv, apps.md for the application workloads; strace.csv, callgrind.csv,
# profile.md for the profile modes; logs/ holds configs,
# process logs and raw strace / callgrind output. Everything listens on
# 127.0.0.1 only, and every process started here is stopped by PID on exit.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
HELPER="$ROOT/scripts/bench_report.py"
# shellcheck source=scripts/loopback.sh
source "$ROOT/scripts/loopback.sh"

ROUNDS=3
QUICK=0
DO_LOAD=1
DO_STRACE=0
DO_CALLGRIND=0
DO_BLOCKING=0
DO_TLS=0
DO_POOLS=0
OUT="$ROOT/bench-results"
WORKLOAD_GROUPS=(default) # --workloads: default (redis-benchmark), pubsub, blpop

KEYSPACE=10000      # -r: keys v16:000000000000.. and v1k:..; prefilled on every backend
IDLE_CONNS=1000     # idle client connections for the memory and idle+load workloads
LIST_LEN=600        # elements in `mylist`, enough for LRANGE 0 599
CLK_TCK=$(getconf CLK_TCK)
V16=0123456789abcdef
V1K=$(printf 'x%.0s' $(seq 1024))

# Targets in the order each round visits them. The direct target is backend 1 itself.
# kw_acl is kw_1t with ACL users (`users:`): its default user has key patterns and a
# category rule, so every request runs the full check; kw_acl / kw_1t prices the ACL.
TARGETS=(direct nc_default nc_v4 kw_1t kw_2t kw_acl)
PROXY_TARGETS=(nc_default nc_v4 kw_1t kw_2t kw_acl)
declare -A PORT=()  # target -> listen port
declare -A PID=()   # target -> pid whose CPU and memory are measured

PIDS=()             # every long-running process started, stopped by cleanup
IDLE_PID=""
WORK=""

usage() {
  # The header comment, up to the first line that is not one.
  awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"
  exit "${1:-0}"
}

die() {
  echo "bench: $*" >&2
  exit 1
}

log() {
  printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2
}

parse_args() {
  while (($#)); do
    case $1 in
      --rounds) ROUNDS=${2:?--rounds needs a number}; shift ;;
      --quick) QUICK=1 ;;
      --strace) DO_STRACE=1; DO_LOAD=0 ;;
      --callgrind) DO_CALLGRIND=1; DO_LOAD=0 ;;
      --blocking) DO_BLOCKING=1; DO_LOAD=0 ;;
      --tls) DO_TLS=1 ;;
      --pools) DO_POOLS=1 ;;
      --out) OUT=${2:?--out needs a directory}; shift ;;
      --workloads)
        IFS=, read -r -a WORKLOAD_GROUPS <<<"${2:?--workloads needs a list, e.g. pubsub,blpop}"
        shift
        ;;
      -h | --help) usage ;;
      *) echo "bench: unknown argument $1" >&2; usage 2 ;;
    esac
    shift
  done
  [[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "--rounds must be a positive integer"
  local g
  for g in "${WORKLOAD_GROUPS[@]}"; do
    [[ $g == default || $g == pubsub || $g == blpop ]] ||
      die "--workloads: unknown $g (default, pubsub, blpop)"
  done
  if [[ -n ${URING:-} ]]; then
    TARGETS+=(ku_1t ku_2t)
    PROXY_TARGETS+=(ku_1t ku_2t)
  fi
  if [[ -n ${PREDIXY_BIN:-} ]]; then
    [[ -x $PREDIXY_BIN ]] || die "PREDIXY_BIN=$PREDIXY_BIN is not executable"
    TARGETS+=(px)
    PROXY_TARGETS+=(px)
  fi
  if [[ -n ${BASE_BIN:-} ]]; then
    [[ -x $BASE_BIN ]] || die "BASE_BIN=$BASE_BIN is not executable"
    TARGETS+=(kb_1t kb_2t)
    PROXY_TARGETS+=(kb_1t kb_2t)
  fi
  if ((DO_TLS)); then
    TARGETS+=(kw_tls kw_btls)
    PROXY_TARGETS+=(kw_tls kw_btls)
  fi
  if ((DO_POOLS)); then
    TARGETS+=(kw_sc4 kw_cl)
    PROXY_TARGETS+=(kw_sc4 kw_cl)
  fi
  if [[ -n ${ONLY:-} ]]; then
    local only=() t
    read -r -a only <<<"$ONLY"
    for t in "${only[@]}"; do
      [[ " ${TARGETS[*]} " == *" $t "* ]] || die "ONLY: unknown target $t"
    done
    TARGETS=(direct)
    PROXY_TARGETS=()
    for t in "${only[@]}"; do
      [[ $t == direct ]] && continue
      TARGETS+=("$t")
      PROXY_TARGETS+=("$t")
    done
  fi
  # --quick: one round and smaller counts, about a minute in all.
  if ((QUICK)); then ROUNDS=1; fi
}

# Stops everything this script started, by PID: idle-connection holder, proxies, backends.
# errexit is off here: a process that already exited must not abort the rest of the cleanup.
cleanup() {
  local pid
  set +e
  if [[ -n $IDLE_PID ]]; then kill "$IDLE_PID" 2>/dev/null; fi
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  wait 2>/dev/null || true
  return 0
}

# apt-get install for tools the benchmark drives; sudo only when not root.
apt_install() {
  local sudo=""
  [[ $(id -u) -eq 0 ]] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
}

ensure_tools() {
  local missing=()
  command -v redis-server >/dev/null || missing+=(redis-server)
  command -v redis-benchmark >/dev/null || missing+=(redis-tools)
  command -v nutcracker >/dev/null || missing+=(nutcracker)
  if ((DO_STRACE)) && ! command -v strace >/dev/null; then missing+=(strace); fi
  if ((DO_CALLGRIND)) && ! command -v valgrind >/dev/null; then missing+=(valgrind); fi
  if ((DO_TLS)) && ! command -v openssl >/dev/null; then missing+=(openssl); fi
  if ((${#missing[@]})); then apt_install "${missing[@]}"; fi
  command -v python3 >/dev/null || die "python3 is needed (idle connections, report)"
  # The chart needs matplotlib; install it for this user if it is missing.
  if ((DO_LOAD)) && ! python3 -c 'import matplotlib' 2>/dev/null; then
    log "installing matplotlib (pip)"
    python3 -m pip install --quiet --user matplotlib 2>/dev/null ||
      python3 -m pip install --quiet matplotlib
  fi
}

build_keyway() {
  if [[ -n ${KEYWAY_BIN:-} ]]; then
    [[ -x $KEYWAY_BIN ]] || die "KEYWAY_BIN=$KEYWAY_BIN is not executable"
    return
  fi
  log "building keyway (cargo build --release)"
  (cd "$ROOT" && cargo build --release --quiet)
  KEYWAY_BIN="$ROOT/target/release/keyway"
}

# keyway-load drives the application workloads; built unless LOAD_BIN names one.
build_load() {
  wants_group pubsub || wants_group blpop || return 0
  if [[ -n ${LOAD_BIN:-} ]]; then
    [[ -x $LOAD_BIN ]] || die "LOAD_BIN=$LOAD_BIN is not executable"
    return
  fi
  LOAD_BIN="$ROOT/target/release/keyway-load"
  if [[ ! -x $LOAD_BIN || -n $(find "$ROOT/src/bin/keyway-load.rs" -newer "$LOAD_BIN") ]]; then
    log "building keyway-load (cargo build --release --bin keyway-load)"
    (cd "$ROOT" && cargo build --release --quiet --bin keyway-load)
  fi
}

wants_group() {
  [[ " ${WORKLOAD_GROUPS[*]} " == *" $1 "* ]]
}

# utime and stime of the whole process (all threads), in clock ticks: /proc/PID/stat fields
# 14 and 15. The comm field may contain spaces, so split after its closing parenthesis.
cpu_ticks() {
  local line rest fields
  read -r line <"/proc/$1/stat"
  rest=${line##*) }
  read -r -a fields <<<"$rest"
  echo "${fields[11]} ${fields[12]}"
}

rss_kib() {
  awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"
}

# ------------------------------------------------------------------------------- setup
# --tls: a CA and a certificate it issued for 127.0.0.1, in WORK/tls.
make_certs() {
  local dir="$WORK/tls"
  mkdir -p "$dir"
  (
    cd "$dir"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
      -keyout ca.key -out ca.pem -subj /CN=bench-ca \
      -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout server.key \
      -out server.csr -subj /CN=bench 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n' >server.ext
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -set_serial 1 -days 2 \
      -out server.pem -extfile server.ext 2>/dev/null
  ) || die "openssl could not make the benchmark's certificates"
}

# redis-cli / redis-benchmark flags to reach a target: TLS for kw_tls.
client_args() {
  if [[ $1 == kw_tls ]]; then echo "--tls --cacert $WORK/tls/ca.pem"; fi
}

BACKENDS=()
TLS_BACKENDS=()     # --tls: each backend's TLS port, in BACKENDS' order
start_backends() {
  local port tls=()
  for _ in 1 2 3 4; do
    port=$(free_port)
    tls=()
    if ((DO_TLS)); then
      TLS_BACKENDS+=("$(free_port)")
      tls=(--tls-port "${TLS_BACKENDS[-1]}" --tls-cert-file "$WORK/tls/server.pem"
        --tls-key-file "$WORK/tls/server.key" --tls-ca-cert-file "$WORK/tls/ca.pem"
        --tls-auth-clients no)
    fi
    redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
      --dir "$WORK" --logfile "$WORK/redis-$port.log" "${tls[@]}" &
    PIDS+=($!)
    BACKENDS+=("$port")
    if [[ -z ${PID[direct]:-} ]]; then PID[direct]=$!; PORT[direct]=$port; fi
  done
  for port in "${BACKENDS[@]}"; do wait_port "$port"; done
}

# --pools: kw_cl's Redis Cluster, 3 masters with every slot, no replicas. Each node's bus
# listens 10000 above its port: ports below 22768 keep the bus below the ephemeral range.
CLUSTER=()
start_cluster() {
  local port
  for _ in 1 2 3; do
    port=$(free_port)
    while ((port >= 22768)) || (exec 3<>"/dev/tcp/127.0.0.1/$((port + 10000))") 2>/dev/null; do
      port=$(free_port)
    done
    redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
      --cluster-enabled yes --cluster-config-file "$WORK/nodes-$port.conf" \
      --dir "$WORK" --logfile "$WORK/cluster-$port.log" &
    PIDS+=($!)
    CLUSTER+=("$port")
  done
  for port in "${CLUSTER[@]}"; do wait_port "$port"; done
  redis-cli --cluster create "${CLUSTER[@]/#/127.0.0.1:}" --cluster-yes \
    >"$WORK/cluster-create.log" 2>&1 || die "redis-cli --cluster create failed (see $WORK/cluster-create.log)"
  for port in "${CLUSTER[@]}"; do
    for _ in $(seq 100); do
      redis-cli -p "$port" cluster info | grep -q '^cluster_state:ok' && continue 2
      sleep 0.1
    done
    die "cluster node $port not ok after 10 s"
  done
}

# One nutcracker.yml per proxy, identical but for the listen port (and, for the TLS targets,
# `tls:` or `server_tls:` with the backends' TLS ports: the same ring, the same keys).
write_conf() {
  local file=$1 port=$2 target=${3:-} b
  {
    echo "bench:"
    echo "  listen: 127.0.0.1:$port"
    echo "  redis: true"
    if [[ $target == kw_sc4 ]]; then
      echo "  server_connections: 4"
    elif [[ -n ${SERVER_CONNECTIONS:-} ]]; then
      echo "  server_connections: $SERVER_CONNECTIONS"
    fi
    if [[ $target == kw_cl ]]; then
      # A cluster pool: every node a seed; no hash, distribution or servers (rejected).
      echo "  cluster:"
      for b in "${CLUSTER[@]}"; do echo "    - 127.0.0.1:$b"; done
      return
    fi
    echo "  hash: fnv1a_64"
    echo "  distribution: ketama"
    if [[ $target == kw_acl ]]; then
      # The workloads' keys (v16:*, v1k:*, mylist) under three patterns; every command but
      # @admin: the command bit, the keys and (for pub/sub) the channels are all checked.
      echo "  users:"
      echo "    - \"default on nopass ~v16:* ~v1k:* ~mylist &* +@all -@admin\""
    fi
    if [[ $target == kw_tls ]]; then
      printf '  tls:\n    cert: %s\n    key: %s\n' "$WORK/tls/server.pem" "$WORK/tls/server.key"
    fi
    if [[ $target == kw_btls ]]; then
      printf '  server_tls:\n    ca: %s\n' "$WORK/tls/ca.pem"
    fi
    echo "  servers:"
    local i
    for i in "${!BACKENDS[@]}"; do
      b=${BACKENDS[$i]}
      # Every key is on every backend (prefill), so the TLS ports may place keys otherwise.
      [[ $target == kw_btls ]] && b=${TLS_BACKENDS[$i]}
      echo "    - 127.0.0.1:$b:1"
    done
  } >"$file"
}

# Prints the command line of a proxy target listening on PORT (config written here).
proxy_cmd() {
  local target=$1 port=$2 conf="$WORK/$1-$2.yml"
  write_conf "$conf" "$port" "$target"
  case $target in
    nc_default) echo nutcracker -c "$conf" -s "$(free_port)" -a 127.0.0.1 -o "$WORK/$target-$port.log" ;;
    nc_v4) echo nutcracker -c "$conf" -s "$(free_port)" -a 127.0.0.1 -v 4 -o "$WORK/$target-$port.log" ;;
    px)
      python3 "$HELPER" predixy-conf "$conf" "$WORK/px-$port.log" >"$WORK/px-$port.conf"
      echo "$PREDIXY_BIN" "$WORK/px-$port.conf" ;;
    kw_1t | kw_2t | kb_1t | kb_2t | ku_1t | ku_2t | kw_acl | kw_tls | kw_btls | kw_sc4 | kw_cl)
      # Each Keyway gets its own stats and admin ports, so several run side by side.
      local bin=$KEYWAY_BIN io=epoll threads=1
      [[ $target == kb_* ]] && bin=$BASE_BIN
      [[ $target == ku_* ]] && io=uring
      [[ $target == k?_2t ]] && threads=2
      echo "$bin" -c "$conf" --threads "$threads" --io "$io" -s "$(free_port)" -a 127.0.0.1 \
        --admin "127.0.0.1:$(free_port)" -o "$WORK/$target-$port.log" ;;
    *) die "unknown proxy $target" ;;
  esac
}

start_proxies() {
  local target port cmd
  for target in "${PROXY_TARGETS[@]}"; do
    port=$(free_port)
    read -r -a cmd <<<"$(proxy_cmd "$target" "$port")"
    "${cmd[@]}" &
    PIDS+=($!)
    PID[$target]=$!
    PORT[$target]=$port
  done
  for target in "${PROXY_TARGETS[@]}"; do wait_port "${PORT[$target]}"; done
}

# Every key the read workloads touch exists on every backend, so GET, MGET and LRANGE hit
# whether a target is one backend (direct) or routes the key to any of the four. The
# cluster's keys are written once, through kw_cl (each to its slot's master).
prefill() {
  local port elems=() ports=("${BACKENDS[@]}")
  mapfile -t elems < <(seq -f 'element-%08g' 1 "$LIST_LEN")
  if [[ -n ${PORT[kw_cl]:-} ]]; then ports+=("${PORT[kw_cl]}"); fi
  for port in "${ports[@]}"; do
    python3 "$HELPER" prefill v16: "$KEYSPACE" 16 | redis-cli -p "$port" --pipe >/dev/null
    python3 "$HELPER" prefill v1k: "$KEYSPACE" 1024 | redis-cli -p "$port" --pipe >/dev/null
    redis-cli -p "$port" del mylist >/dev/null
    redis-cli -p "$port" rpush mylist "${elems[@]}" >/dev/null
  done
}

# Fails loudly if a target does not answer the read workloads with real data: a proxy that
# answered errors would otherwise post excellent numbers.
check_targets() {
  local target port got tls=()
  for target in "${TARGETS[@]}"; do
    port=${PORT[$target]}
    read -r -a tls <<<"$(client_args "$target")"
    got=$(redis-cli -p "$port" "${tls[@]}" get v16:000000000042)
    [[ $got == "vvvvvvvvvvvvvvvv" ]] || die "$target: GET returned '$got'"
    got=$(redis-cli -p "$port" "${tls[@]}" mget v16:000000000001 v16:000000000002 v16:000000000003 \
      v16:000000000004 v16:000000000005 v16:000000000006 v16:000000000007 \
      v16:000000000008 v16:000000000009 v16:000000000010 | grep -c '^vvvvvvvvvvvvvvvv$')
    [[ $got == 10 ]] || die "$target: MGET returned $got of 10 values"
    got=$(redis-cli -p "$port" "${tls[@]}" lrange mylist 0 599 | wc -l)
    [[ $got == "$LIST_LEN" ]] || die "$target: LRANGE returned $got elements"
    # Connect every proxy to its backends before anything is measured.
    redis-benchmark -p "$port" "${tls[@]}" -c 50 -n 5000 -r "$KEYSPACE" get v16:__rand_int__ \
      >/dev/null 2>>"$WORK/redis-benchmark.err"
  done
}

# ------------------------------------------------------------------------ workloads
WORKLOADS=(
  set_16B_P1 get_16B_P1 set_16B_P16 get_16B_P16
  set_1KiB_P1 get_1KiB_P1 set_1KiB_P16 get_1KiB_P16
  mget_10keys lrange_100 lrange_600 get_16B_c1 get_16B_idle1000
)
if [[ -n ${LOAD_ONLY:-} ]]; then read -r -a WORKLOADS <<<"$LOAD_ONLY"; fi

# Sets WL_N (requests; WL_LOAD_N in the load run), WL_C (clients), WL_P (pipeline), WL_IDLE
# (idle connections held during the run) and WL_CMD (the command, __rand_int__ drawn from the
# prefilled keyspace). Counts are sized so that one run takes about a second on a 2-core
# machine.
workload_spec() {
  WL_C=50 WL_P=1 WL_IDLE=0
  case $1 in
    set_16B_P1) WL_N=50000 WL_CMD=(set v16:__rand_int__ "$V16") ;;
    get_16B_P1) WL_N=50000 WL_CMD=(get v16:__rand_int__) ;;
    set_16B_P16) WL_N=300000 WL_P=16 WL_CMD=(set v16:__rand_int__ "$V16") ;;
    get_16B_P16) WL_N=300000 WL_P=16 WL_CMD=(get v16:__rand_int__) ;;
    set_1KiB_P1) WL_N=40000 WL_CMD=(set v1k:__rand_int__ "$V1K") ;;
    get_1KiB_P1) WL_N=40000 WL_CMD=(get v1k:__rand_int__) ;;
    set_1KiB_P16) WL_N=150000 WL_P=16 WL_CMD=(set v1k:__rand_int__ "$V1K") ;;
    get_1KiB_P16) WL_N=150000 WL_P=16 WL_CMD=(get v1k:__rand_int__) ;;
    mget_10keys)
      WL_N=20000
      WL_CMD=(mget)
      for _ in $(seq 10); do WL_CMD+=(v16:__rand_int__); done
      ;;
    lrange_100) WL_N=20000 WL_CMD=(lrange mylist 0 99) ;;
    lrange_600) WL_N=8000 WL_CMD=(lrange mylist 0 599) ;;
    get_16B_c1) WL_N=8000 WL_C=1 WL_CMD=(get v16:__rand_int__) ;;
    get_16B_idle1000) WL_N=50000 WL_IDLE=$IDLE_CONNS WL_CMD=(get v16:__rand_int__) ;;
    *) die "unknown workload $1" ;;
  esac
  if ((QUICK)); then WL_N=$((WL_N / 2)); fi
  # The load run's count: one client's run three times longer, as its CPU is counted in
  # 10 ms ticks (8,000 GETs took about 25 of them: ±4% from rounding alone).
  WL_LOAD_N=$WL_N
  if ((WL_C == 1)); then WL_LOAD_N=$((WL_N * 3)); fi
}

CLIENT_ARGS=()      # redis-benchmark flags of the target being measured (client_args)

# Runs redis-benchmark once; prints "ops_per_sec p50_ms p99_ms" from its --csv line
# ("test","rps","avg","min","p50","p95","p99","max"; read from the end because the test
# name is the command line).
run_benchmark() {
  local port=$1 clients=$2 requests=$3 pipeline=$4 out line
  shift 4
  if ! out=$(redis-benchmark -h 127.0.0.1 -p "$port" "${CLIENT_ARGS[@]}" -c "$clients" \
    -n "$requests" -P "$pipeline" -r "$KEYSPACE" --precision 3 --csv "$@" \
    2>>"$WORK/redis-benchmark.err"); then
    die "redis-benchmark failed on port $port ($*)"
  fi
  line=$(tail -n 1 <<<"$out" | tr -d '"')
  awk -F, '$(NF-6) ~ /^[0-9.]+$/ { print $(NF-6), $(NF-3), $(NF-1); ok = 1 }
           END { exit !ok }' <<<"$line" || die "unparsable redis-benchmark output: $line"
}

# Holds IDLE_CONNS idle connections to a port (helper process), waiting until all are open.
idle_open() {
  local port=$1 n=$2 ca=()
  [[ ${3:-} == kw_tls ]] && ca=("$WORK/tls/ca.pem")
  rm -f "$WORK/idle.state"
  python3 "$HELPER" idle "$port" "$n" "$WORK/idle.state" "${ca[@]}" &
  IDLE_PID=$!
  idle_wait opened
}

idle_wait() {
  for _ in $(seq 300); do
    [[ $(cat "$WORK/idle.state" 2>/dev/null) == "$1" ]] && return 0
    kill -0 "$IDLE_PID" 2>/dev/null || die "idle-connection helper exited"
    sleep 0.1
  done
  die "idle connections not $1 after 30 s"
}

# One PING on every idle connection, so the proxy has read and written on each.
idle_ping() {
  kill -USR1 "$IDLE_PID"
  idle_wait pinged
}

idle_close() {
  kill "$IDLE_PID" 2>/dev/null || true
  wait "$IDLE_PID" 2>/dev/null || true
  IDLE_PID=""
}

# VmRSS before and after IDLE_CONNS connections (then after one PING each), per target.
measure_memory() {
  local target pid before opened pinged
  echo "target,connections,rss_before_kib,rss_connected_kib,rss_pinged_kib,kib_per_conn_connected,kib_per_conn_pinged" \
    >"$OUT/memory.csv"
  for target in "${TARGETS[@]}"; do
    pid=${PID[$target]}
    before=$(rss_kib "$pid")
    idle_open "${PORT[$target]}" "$IDLE_CONNS" "$target"
    sleep 0.5 # let the proxy finish accepting and registering the last connections
    opened=$(rss_kib "$pid")
    idle_ping
    sleep 0.2
    pinged=$(rss_kib "$pid")
    idle_close
    awk -v t="$target" -v n="$IDLE_CONNS" -v b="$before" -v o="$opened" -v p="$pinged" \
      'BEGIN { printf "%s,%d,%d,%d,%d,%.2f,%.2f\n", t, n, b, o, p, (o-b)/n, (p-b)/n }' \
      >>"$OUT/memory.csv"
    log "memory $target: RSS $before -> $opened -> $pinged KiB for $IDLE_CONNS connections"
  done
}

# One measured run of a workload on a target, appended to results.csv.
run_one() {
  local wl=$1 target=$2 round=$3 port pid u0 s0 u1 s1 rps p50 p99 cpu sys
  port=${PORT[$target]} pid=${PID[$target]}
  workload_spec "$wl"
  read -r -a CLIENT_ARGS <<<"$(client_args "$target")"
  ((WL_IDLE)) && idle_open "$port" "$WL_IDLE" "$target"
  read -r u0 s0 < <(cpu_ticks "$pid")
  read -r rps p50 p99 < <(run_benchmark "$port" "$WL_C" "$WL_LOAD_N" "$WL_P" "${WL_CMD[@]}")
  read -r u1 s1 < <(cpu_ticks "$pid")
  ((WL_IDLE)) && idle_close
  [[ -n $rps ]] || die "$wl on $target: no result"
  read -r cpu sys < <(awk -v u=$((u1 - u0)) -v s=$((s1 - s0)) -v hz="$CLK_TCK" -v n="$WL_LOAD_N" \
    'BEGIN { printf "%.3f %.3f\n", (u + s) / hz / (n / 1e6), u + s ? s / (u + s) : 0 }')
  echo "$wl,$target,$round,$rps,$p50,$p99,$cpu,$sys" >>"$OUT/results.csv"
  printf '  %-18s %-10s %12s ops/s  p50 %7s  p99 %7s ms  cpu %7s s/Mreq (%s kernel)\n' \
    "$wl" "$target" "$rps" "$p50" "$p99" "$cpu" "$sys" >&2
}

write_meta() {
  {
    echo "date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    echo "machine: $(nproc) cores, $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo), kernel $(uname -r)"
    echo "keyway: $("$KEYWAY_BIN" -V 2>&1 | head -n 1) ($KEYWAY_BIN)"
    echo "nutcracker: $(nutcracker -V 2>&1 | head -n 1)"
    echo "redis-server: $(redis-server --version | awk '{ print $3 }'); redis-benchmark: $(redis-benchmark --version | awk '{ print $2 }')"
    echo "config: 4 redis-server backends on loopback, ketama + fnv1a_64, redis: true, server_connections: ${SERVER_CONNECTIONS:-1 (default)}, defaults otherwise; keyspace $KEYSPACE keys per value size"
    if ((DO_POOLS)); then echo "--pools: kw_sc4 has server_connections: 4; kw_cl is a cluster pool over a Redis Cluster of 3 masters, no replicas (not the 4 backends above)"; fi
    if [[ -n ${BASE_BIN:-} ]]; then echo "baseline keyway: $BASE_BIN"; fi
    echo "mode: $*"
    # Anything else running competes for the same cores; say so next to the numbers.
    echo "load average at start (1/5/15 min): $(cut -d' ' -f1-3 /proc/loadavg)"
  } >"$OUT/meta.txt"
}

# TARGETS in round $1's order: turned by one each round, so that no target always runs first
# or last (after the same neighbour, on a machine that neighbour warmed or loaded).
targets_of_round() {
  local k=$((($1 - 1) % ${#TARGETS[@]}))
  printf '%s\n' "${TARGETS[@]:k}" "${TARGETS[@]:0:k}"
}

# The redis-benchmark workloads (--workloads default): memory per idle connection, then every
# workload on every target, round after round.
default_workloads() {
  local round wl target order
  log "memory per idle connection ($IDLE_CONNS connections per target)"
  measure_memory
  echo "workload,target,round,ops_per_sec,p50_ms,p99_ms,cpu_s_per_mreq,kernel_share" >"$OUT/results.csv"
  for round in $(seq "$ROUNDS"); do
    log "round $round of $ROUNDS"
    mapfile -t order < <(targets_of_round "$round")
    for wl in "${WORKLOADS[@]}"; do
      for target in "${order[@]}"; do run_one "$wl" "$target" "$round"; done
    done
  done
}

# ------------------------------------------------------------ application workloads
# keyway-load arguments of an application workload; counts sized for a few seconds per run.
app_spec() {
  local n
  case $1 in
    pubsub)
      n=50000
      ((QUICK)) && n=25000
      # 50 subscribers on 10 channels (5 each), 4 publishers waiting for each PUBLISH reply.
      APP_ARGS=(pubsub --subscribers 50 --channels 10 --publishers 4 --messages "$n" --size 64)
      ;;
    blpop)
      n=50000
      ((QUICK)) && n=25000
      # 20 producer/consumer pairs, one list each: every pop wakes a blocked BLPOP.
      APP_ARGS=(blpop --pairs 20 --items "$n")
      ;;
    *) die "unknown application workload $1" ;;
  esac
}

# One run of an application workload on a target, appended to apps.csv: the rate (publishes
# or pops per second), deliveries per second (pub/sub), p50/p99 latency and the target's CPU
# per million deliveries or pops. nutcracker has neither pub/sub nor blocking pops: n/a. A
# target that fails the run (an error reply, a lost or reordered message) is recorded with
# its error, not measured.
run_app() {
  local wl=$1 target=$2 round=$3 port pid u0 s0 u1 s1 out err line rate deliver p50 p99 ops cpu
  if [[ $target == nc_* ]]; then
    local what="pub/sub"
    [[ $wl == blpop ]] && what="blocking commands"
    echo "$wl,$target,$round,,,,,,n/a,nutcracker has no $what" >>"$OUT/apps.csv"
    return
  fi
  if [[ $target == kw_tls ]]; then
    echo "$wl,$target,$round,,,,,,n/a,keyway-load speaks plaintext" >>"$OUT/apps.csv"
    return
  fi
  port=${PORT[$target]} pid=${PID[$target]}
  app_spec "$wl"
  err="$WORK/keyway-load-$wl-$target-$round.err"
  read -r u0 s0 < <(cpu_ticks "$pid")
  if ! out=$("$LOAD_BIN" --addr "127.0.0.1:$port" --max-seconds 30 "${APP_ARGS[@]}" 2>"$err"); then
    line=$(grep -m1 . "$err" | tr ',' ';' | cut -c1-200)
    echo "$wl,$target,$round,,,,,,failed,${line:-no output}" >>"$OUT/apps.csv"
    printf '  %-18s %-10s FAILED: %s\n' "$wl" "$target" "$line" >&2
    return
  fi
  read -r u1 s1 < <(cpu_ticks "$pid")
  kv() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<" $out"; }
  if [[ $wl == pubsub ]]; then
    rate=$(kv publish_per_sec) deliver=$(kv deliver_per_sec) ops=$(kv delivered)
  else
    rate=$(kv pop_per_sec) deliver="" ops=$(kv popped)
  fi
  p50=$(kv p50_ms) p99=$(kv p99_ms)
  cpu=$(awk -v t=$((u1 - u0 + s1 - s0)) -v hz="$CLK_TCK" -v n="$ops" \
    'BEGIN { printf "%.3f", t / hz / (n / 1e6) }')
  echo "$wl,$target,$round,$rate,$deliver,$p50,$p99,$cpu,ok," >>"$OUT/apps.csv"
  printf '  %-18s %-10s %8s /s  deliveries %8s /s  p50 %7s  p99 %7s ms  cpu %7s s/M\n' \
    "$wl" "$target" "$rate" "${deliver:--}" "$p50" "$p99" "$cpu" >&2
}

app_workloads() {
  local round wl target order
  echo "workload,target,round,rate_per_sec,deliver_per_sec,p50_ms,p99_ms,cpu_s_per_mop,status,detail" >"$OUT/apps.csv"
  for round in $(seq "$ROUNDS"); do
    log "application workloads, round $round of $ROUNDS"
    mapfile -t order < <(targets_of_round "$round")
    for wl in "${WORKLOAD_GROUPS[@]}"; do
      [[ $wl == default ]] && continue
      for target in "${order[@]}"; do run_app "$wl" "$target" "$round"; done
    done
  done
}

load_mode() {
  write_meta "load, $ROUNDS round(s), workloads ${WORKLOAD_GROUPS[*]}$( ((QUICK)) && echo ', --quick (half request counts)')"
  if wants_group default; then default_workloads; fi
  if wants_group pubsub || wants_group blpop; then app_workloads; fi
  echo "load average at end (1/5/15 min): $(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/meta.txt"
  if wants_group default; then
    python3 "$HELPER" report "$OUT"
    log "wrote $OUT/results.csv, memory.csv, summary.md, chart.png"
    cat "$OUT/summary.md"
  fi
  if [[ -s $OUT/apps.csv ]] && (wants_group pubsub || wants_group blpop); then
    python3 "$HELPER" apps "$OUT"
    log "wrote $OUT/apps.csv, apps.md"
    cat "$OUT/apps.md"
  fi
}

# ---------------------------------------------------------------------- profile modes
# `strace -c` of each target (all its threads) during an unpipelined GET run; the count
# of syscalls divided by the requests. The top syscalls are reported per request too.
strace_mode() {
  local target clients n pid sfile spid total top
  echo "target,clients,requests,syscalls,syscalls_per_req,top" >"$OUT/strace.csv"
  for target in "${TARGETS[@]}"; do
    for clients in 50 1; do
      n=20000
      ((clients == 1)) && n=5000
      ((QUICK)) && n=$((n / 2))
      pid=${PID[$target]}
      sfile="$WORK/strace-$target-$clients.txt"
      strace -f -c -o "$sfile" -p "$pid" 2>>"$WORK/strace.err" &
      spid=$!
      PIDS+=("$spid")
      sleep 1 # attaching to every thread takes a moment
      read -r -a CLIENT_ARGS <<<"$(client_args "$target")"
      run_benchmark "${PORT[$target]}" "$clients" "$n" 1 get v16:__rand_int__ >/dev/null
      kill -INT "$spid"
      wait "$spid" || true
      total=$(awk '$NF == "total" { print $4 }' "$sfile")
      [[ -n $total ]] || die "no strace summary for $target (see $sfile)"
      top=$(awk -v n="$n" '/^-/ { body = 1; next } body && $NF != "total" && NF >= 5 {
              printf "%s %s\n", $4, $NF }' "$sfile" | sort -rn | head -n 5 |
        awk -v n="$n" '{ printf "%s%s %.2f", sep, $2, $1 / n; sep = "; " }')
      awk -v t="$target" -v c="$clients" -v n="$n" -v s="$total" -v top="$top" \
        'BEGIN { printf "%s,%d,%d,%d,%.2f,%s\n", t, c, n, s, s / n, top }' >>"$OUT/strace.csv"
      log "strace $target c=$clients: $total syscalls for $n requests ($top)"
    done
  done
}

# Each proxy (a fresh instance) under callgrind, for each of CALLGRIND_WORKLOADS: warm up,
# zero the counters, run a fixed number of requests, dump, and divide the instructions (Ir) by
# the requests. The workloads are the load run's (workload_spec), at 2/5 of its counts.
read -r -a CALLGRIND_WORKLOADS <<<"${CALLGRIND_ONLY:-get_16B_P1 get_16B_c1 mget_10keys lrange_600}"
callgrind_mode() {
  local target port pid cmd n wl dumps dump ir top areas
  echo "target,workload,clients,requests,ir,ir_per_req,top,areas" >"$OUT/callgrind.csv"
  for target in "${PROXY_TARGETS[@]}"; do
    port=$(free_port)
    read -r -a cmd <<<"$(proxy_cmd "$target" "$port")"
    valgrind --tool=callgrind --callgrind-out-file="$WORK/callgrind.$target.%p" \
      "${cmd[@]}" 2>"$WORK/valgrind-$target.log" &
    pid=$!
    PIDS+=("$pid")
    wait_port "$port" 120
    read -r -a CLIENT_ARGS <<<"$(client_args "$target")"
    dumps=0
    for wl in "${CALLGRIND_WORKLOADS[@]}"; do
      workload_spec "$wl"
      n=$((WL_N * 2 / 5))
      run_benchmark "$port" "$WL_C" $((n / 10 + 200)) "$WL_P" "${WL_CMD[@]}" >/dev/null
      callgrind_control -z "$pid" >/dev/null
      run_benchmark "$port" "$WL_C" "$n" "$WL_P" "${WL_CMD[@]}" >/dev/null
      callgrind_control -d "$pid" >/dev/null
      dumps=$((dumps + 1))
      dump="$WORK/callgrind.$target.$pid.$dumps" # callgrind_control -d numbers its dumps
      [[ -s $dump ]] || die "no callgrind dump for $target $wl (see $WORK/valgrind-$target.log)"
      IFS=$'\t' read -r ir top areas < <(python3 "$HELPER" callgrind "$dump")
      awk -v t="$target" -v w="$wl" -v c="$WL_C" -v n="$n" -v ir="$ir" -v top="$top" \
        -v areas="$areas" 'BEGIN { printf "%s,%s,%d,%d,%d,%.0f,%s,%s\n", t, w, c, n, ir, ir / n, top, areas }' \
        >>"$OUT/callgrind.csv"
      log "callgrind $target $wl: $ir Ir for $n requests"
    done
    kill "$pid"
    wait "$pid" || true
  done
}

# ---------------------------------------------------------------------- blocking mode
# The price of a dedicated connection: BRPOP on a list that always has an element (so it never
# waits, and only the dedicated connection differs: Keyway opens one per blocking command,
# with its connect and setup) against RPOP of the same list, on direct Redis and Keyway.
# nutcracker refuses blocking commands, so it is left out.
blocking_mode() {
  local round target port cmd n rps p50 p99 fill
  write_meta "blocking pops, $ROUNDS round(s)$( ((QUICK)) && echo ', --quick (half request counts)')"
  echo "workload,target,round,ops_per_sec,p50_ms,p99_ms" >"$OUT/blocking.csv"
  n=20000
  ((QUICK)) && n=$((n / 2))
  for round in $(seq "$ROUNDS"); do
    for target in "${TARGETS[@]}"; do
      [[ $target == nc_* || $target == kw_tls ]] && continue
      port=${PORT[$target]}
      for cmd in rpop brpop; do
        # Enough elements that no pop waits: n pops by 50 clients, plus slack.
        fill=$(printf 'x %.0s' $(seq 1000))
        for _ in $(seq $(((n + 2000) / 1000))); do
          # shellcheck disable=SC2086 # one argument per element
          redis-cli -p "$port" rpush bq $fill >/dev/null
        done
        if [[ $cmd == rpop ]]; then
          read -r rps p50 p99 < <(run_benchmark "$port" 50 "$n" 1 rpop bq)
        else
          read -r rps p50 p99 < <(run_benchmark "$port" 50 "$n" 1 brpop bq 1)
        fi
        redis-cli -p "$port" del bq >/dev/null
        echo "$cmd,$target,$round,$rps,$p50,$p99" >>"$OUT/blocking.csv"
        printf '  %-6s %-10s %12s ops/s  p50 %7s  p99 %7s ms\n' "$cmd" "$target" "$rps" "$p50" "$p99" >&2
      done
    done
  done
  log "wrote $OUT/blocking.csv"
}

main() {
  parse_args "$@"
  ensure_tools
  build_keyway
  build_load
  mkdir -p "$OUT"
  # Logs, configs and raw strace/callgrind output stay in OUT/logs for inspection.
  WORK="$OUT/logs"
  rm -rf "$WORK"
  mkdir -p "$WORK"
  trap cleanup EXIT
  trap 'exit 130' INT TERM
  ulimit -n "$(ulimit -Hn)" 2>/dev/null || true # 1,000 idle clients need the descriptors
  log "starting 4 redis-server backends, 2 nutcrackers, 2 keyways"
  if ((DO_TLS)); then make_certs; fi
  start_backends
  if [[ " ${PROXY_TARGETS[*]} " == *" kw_cl "* ]]; then start_cluster; fi
  start_proxies
  log "prefilling $KEYSPACE keys x 2 sizes and a $LIST_LEN-element list on every backend"
  prefill
  check_targets
  if ((DO_LOAD)); then load_mode; fi
  if ((DO_BLOCKING)); then blocking_mode; fi
  if ((DO_STRACE || DO_CALLGRIND)); then
    write_meta "profile:$( ((DO_STRACE)) && echo ' strace')$( ((DO_CALLGRIND)) && echo ' callgrind')"
    if ((DO_STRACE)); then strace_mode; fi
    if ((DO_CALLGRIND)); then callgrind_mode; fi
    python3 "$HELPER" profile "$OUT"
    cat "$OUT/profile.md"
  fi
}

main "$@"
