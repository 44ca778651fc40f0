#!/usr/bin/env bash
# HTTP ingest load: 64 keep-alive connections, 10 records of ~200 B per
# request, RUNS runs of SECS seconds; prints each run and the medians.
#   bash benches/http_load.sh [RUNS=3] [SECS=15]
# WEIR_BROKER_BIN=path runs that binary instead of building this tree's
# (to compare two builds in turn, on the same machine and load tool).
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}; secs=${2:-15}
command -v wrk >/dev/null || { export DEBIAN_FRONTEND=noninteractive; apt-get update -qq && apt-get install -y -qq wrk; }
bin=${WEIR_BROKER_BIN:-}
if [ -z "$bin" ]; then cargo build --release --bin broker >&2; bin=./target/release/broker; fi
work=$(mktemp -d -p "${WEIR_BENCH_DIR:-$PWD/target}")
cat > "$work/broker.toml" <<TOML
listen = "127.0.0.1:7171"
data_dir = "$work/data"
admin_token = "load-admin"
[[tenant]]
name = "load"
token = "load-token"
rate_per_sec = 100000000.0
burst = 100000000
[[topic]]
name = "events"
TOML
RUST_LOG=warn "$bin" --config "$work/broker.toml" > "$work/broker.out" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 1 100); do curl -fsS http://127.0.0.1:7171/readyz >/dev/null 2>&1 && break; sleep 0.1; done
rps=(); p99=()
for i in $(seq 1 "$runs"); do
  out=$(wrk -t2 -c64 -d"${secs}s" --latency -s benches/http_load.lua http://127.0.0.1:7171/v1/topics/events/records)
  r=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p=$(awk '$1=="99%" {print $2}' <<<"$out")
  non2xx=$(awk '/Non-2xx/ {print $4}' <<<"$out")
  echo "run $i: req/s=$r p99=$p non-2xx=${non2xx:-0}"
  rps+=("$r"); p99+=("$p")
done
echo "median req/s: $(printf '%s\n' "${rps[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')"
echo "p99 per run: ${p99[*]}"
curl -fsS http://127.0.0.1:7171/metrics | grep -E '^weir_wal_(fsyncs|commits)_total|^weir_wal_batches_per_commit_(sum|count)' || true
