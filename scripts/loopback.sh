# Sourced by the scripts that start servers on loopback (bench.sh, soak.sh, build-pgo.sh):
# free ports and waiting for a listener. Needs WORK (the script's work dir) and die().

# A loopback port nothing listens on, below the ephemeral range so that outgoing
# connections cannot take it between this check and the bind. Ports handed out are listed in
# WORK/ports (callers run this in `$(...)` subshells, which would lose a variable), so that
# two processes started one after the other are never given the same one.
free_port() {
  local port
  while true; do
    port=$((20000 + RANDOM % 10000))
    grep -qx "$port" "$WORK/ports" 2>/dev/null && continue
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "$port" >>"$WORK/ports"
      echo "$port"
      return
    fi
  done
}

# Waits until something listens on 127.0.0.1:PORT, for SECONDS (default 10).
wait_port() {
  local port=$1 tries=$((${2:-10} * 10))
  for _ in $(seq "$tries"); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
    sleep 0.1
  done
  die "nothing listens on 127.0.0.1:$port (see $WORK/*.log)"
}
