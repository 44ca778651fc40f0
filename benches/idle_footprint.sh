#!/usr/bin/env bash
# What an empty broker costs (issue 23): the broker on its embedded
# defaults (no --config) in a fresh directory, started RUNS times; for
# each, the time to the first 200 from /readyz and the disk its data
# directory takes (allocated bytes, and apparent file sizes), before any
# request. Prints each figure and the median.
#   bash benches/idle_footprint.sh [RUNS=3]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
if [ -z "${WEIR_BIN_DIR:-}" ]; then cargo build --release --bin broker >&2; fi
bin=$(cd "${WEIR_BIN_DIR:-./target/release}" && pwd)
declare -a disk=() apparent=() ready=()
for _ in $(seq 1 "$runs"); do
  work=$(mktemp -d -p "${WEIR_BENCH_DIR:-$PWD/target}")
  t0=$(date +%s%N)
  (cd "$work" && RUST_LOG=warn exec "$bin/broker" > broker.out 2>&1) &
  bpid=$!
  for _ in $(seq 1 2000); do curl -fsS http://127.0.0.1:7070/readyz >/dev/null 2>&1 && break; sleep 0.005; done
  t1=$(date +%s%N)
  ready+=("$(( (t1 - t0) / 1000000 ))")
  disk+=("$(du -s --block-size=1 "$work/weir-data" | cut -f1)")
  apparent+=("$(du -s --apparent-size --block-size=1 "$work/weir-data" | cut -f1)")
  kill -TERM $bpid; wait $bpid || true
  rm -rf "$work"
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo "empty broker, embedded defaults: disk bytes ${disk[*]} (median $(median "${disk[@]}")); apparent ${apparent[*]}; ready ms ${ready[*]} (median $(median "${ready[@]}"))"
