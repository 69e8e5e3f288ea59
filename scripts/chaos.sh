#!/usr/bin/env bash
# Chaos under load (not part of CI; a 12 s version runs in the test suite as tests/chaos.rs,
# and a 6 s one with a single client, whose lone requests its session writes itself):
# 50 clients (then 1) SET then GET-verify their own keys through Keyway in front of 4 redis-server
# backends while random backends are killed (-9), frozen (SIGSTOP), resumed and restarted
# and the config is reloaded (SIGHUP, POST /reload). Fails on any mismatched reply (another
# request's), any reply that is neither right nor an error reply, any missing reply, and on
# an acknowledged write that does not read back from a backend that never died.
#
#   scripts/chaos.sh [--seconds N] [--seed S]     default: 60 seconds, a seed from the clock
#
# The workload and the chaos are the test in tests/chaos.rs (same checks), run for N seconds;
# it prints the seed (replay with --seed), the actions taken and the counts: requests, right
# replies, error replies by text, mismatches (must be 0). Listens on 127.0.0.1 only; every
# process it starts is stopped by PID when the test ends.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SECONDS_TO_RUN=60
SEED=

while (($#)); do
  case $1 in
    --seconds) SECONDS_TO_RUN=${2:?--seconds needs a number}; shift ;;
    --seed) SEED=${2:?--seed needs a number}; shift ;;
    -h | --help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "chaos: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
[[ $SECONDS_TO_RUN =~ ^[1-9][0-9]*$ && $SECONDS_TO_RUN -le 3600 ]] || {
  echo "chaos: --seconds takes an integer from 1 to 3600" >&2
  exit 2
}
[[ -z $SEED || $SEED =~ ^[0-9]+$ ]] || {
  echo "chaos: --seed takes a non-negative integer" >&2
  exit 2
}

cd "$ROOT"
export KEYWAY_CHAOS_SECS=$SECONDS_TO_RUN
if [[ -n $SEED ]]; then
  export KEYWAY_CHAOS_SEED=$SEED
fi
exec cargo test --test chaos -- --nocapture --test-threads 1
