#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 60) and prints, per target, the executions
# and whether it found a crash; exits non-zero if any did.
#
#   scripts/fuzz.sh 120            # every target, 120 s each
#   scripts/fuzz.sh 30 memcache    # only the named targets
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`). Its instrumentation needs nightly features:
# on a stable toolchain RUSTC_BOOTSTRAP=1 unlocks them (set here unless already set).
# Sanitizer: FUZZ_SANITIZER (default `address`; `none` where ASan is unavailable).
#
# The committed corpus (fuzz/corpus/<target>) is read, never written: new inputs go to
# fuzz/target/corpus/<target>, crashes to fuzz/artifacts/<target>/. A crash becomes a named
# seed in fuzz/corpus/<target>/, a unit test beside the code, and a fix.
#
# The config target runs in a network namespace of its own (`unshare -n`): the config loader
# resolves `listen` hostnames, and fuzzed hostnames must never reach a DNS server.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

seconds=${1:-60}
shift || true
export RUSTC_BOOTSTRAP=${RUSTC_BOOTSTRAP:-1}
sanitizer=${FUZZ_SANITIZER:-address}

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "cargo-fuzz is missing: cargo install cargo-fuzz" >&2
  exit 2
fi

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo fuzz list)
fi

mkdir -p target/fuzz-logs
summary=()
failed=0
for target in "${targets[@]}"; do
  # Debug assertions on: an arithmetic overflow is a finding too.
  cargo fuzz build --debug-assertions -s "$sanitizer" "$target"
  work="target/corpus/$target"
  seeds="corpus/$target"
  mkdir -p "$work" "$seeds"
  log="target/fuzz-logs/$target.log"
  run=(cargo fuzz run --debug-assertions -s "$sanitizer" "$target" "$work" "$seeds" --
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1)
  if [ -f "dict/$target.dict" ]; then
    run+=(-dict="dict/$target.dict")
  fi
  if [ "$target" = config ]; then
    if ! unshare -n true 2>/dev/null; then
      echo "config: skipped, it needs 'unshare -n' (root or user namespaces) to keep" \
        "fuzzed hostnames off the network" >&2
      summary+=("config: NOT RUN (no network namespace)")
      failed=1
      continue
    fi
    run=(unshare -n "${run[@]}")
  fi
  echo "== $target: ${seconds}s"
  status=0
  "${run[@]}" >"$log" 2>&1 || status=$?
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
  if [ "$status" -eq 0 ]; then
    summary+=("$target: ${runs:-?} executions, no crash")
  else
    failed=1
    summary+=("$target: ${runs:-?} executions, FAILED (exit $status): see $log and artifacts/$target/")
    tail -n 30 "$log" >&2
  fi
done

echo
printf '%s\n' "${summary[@]}"
exit "$failed"
