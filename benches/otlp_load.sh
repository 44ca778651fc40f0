#!/usr/bin/env bash
# OTLP/HTTP ingest beside NDJSON, in one run of one broker: 64 keep-alive
# connections, 10 records of ~200 B per request (an OTLP protobuf logs export
# of 10 log records; an NDJSON body of 10 lines), RUNS alternating pairs of
# SECS seconds; prints records/s and p99 of each, the medians and the ratio.
#   bash benches/otlp_load.sh [RUNS=3] [SECS=15]
# WEIR_BROKER_BIN=path runs that binary instead of building this tree's.
# Needs wrk (Debian) and .venv-ci's opentelemetry-proto (.ci/run makes it).
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}; secs=${2:-15}
command -v wrk >/dev/null || { export DEBIAN_FRONTEND=noninteractive; apt-get update -qq && apt-get install -y -qq wrk; }
py=${WEIR_PYTHON:-.venv-ci/bin/python}
bin=${WEIR_BROKER_BIN:-}
if [ -z "$bin" ]; then cargo build --release --bin broker >&2; bin=./target/release/broker; fi
work=$(mktemp -d -p "${WEIR_BENCH_DIR:-$PWD/target}")
"$py" benches/otlp_body.py "$work/logs.bin"
export OTLP_BODY="$work/logs.bin"
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
# One request of each first: both must be accepted.
curl -fsS -o /dev/null -H 'Authorization: Bearer load-token' -H 'Content-Type: application/x-protobuf' \
  --data-binary @"$OTLP_BODY" http://127.0.0.1:7171/v1/logs
run() { # label script path
  local out r p non2xx
  out=$(wrk -t2 -c64 -d"${secs}s" --latency -s "$2" "http://127.0.0.1:7171$3")
  r=$(awk '/Requests\/sec/ {printf "%.0f", $2 * 10}' <<<"$out")
  p=$(awk '$1=="99%" {print $2}' <<<"$out")
  non2xx=$(awk '/Non-2xx/ {print $4}' <<<"$out")
  echo "$1 records/s=$r p99=$p non-2xx=${non2xx:-0}" >&2
  echo "$r"
}
otlp=(); ndjson=()
for i in $(seq 1 "$runs"); do
  otlp+=("$(run "run $i otlp  " benches/otlp_load.lua /v1/logs)")
  ndjson+=("$(run "run $i ndjson" benches/http_load.lua /v1/topics/events/records)")
done
med() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
mo=$(med "${otlp[@]}"); mn=$(med "${ndjson[@]}")
echo "median records/s: otlp=$mo ndjson=$mn ratio=$(awk -v a="$mo" -v b="$mn" 'BEGIN {printf "%.2f", a / b}')"
