#!/usr/bin/env bash
# /metrics with many tenants (issue 24): a broker with TENANTS tenants
# configured (one topic, one destination), scraped RUNS times, with the
# default metrics_max_tenant_series (1000) and, as the peer in the same
# run, with the cap off (1000000: every tenant its own series, as before
# v1.2). Prints per setting: scrape bytes, series, the median scrape time,
# and the broker's RSS after the scrapes.
#   bash benches/tenant_scale.sh [TENANTS=10000] [RUNS=5]
set -euo pipefail
cd "$(dirname "$0")/.."
tenants=${1:-10000}; runs=${2:-5}
if [ -z "${WEIR_BIN_DIR:-}" ]; then cargo build --release --bin broker >&2; fi
bin=${WEIR_BIN_DIR:-./target/release}
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
for cap in 1000 1000000; do
  work=$(mktemp -d -p "${WEIR_BENCH_DIR:-$PWD/target}")
  python3 - "$work" "$tenants" "$cap" <<'PY'
import sys
work, n, cap = sys.argv[1], int(sys.argv[2]), sys.argv[3]
with open(f"{work}/broker.toml", "w") as f:
    f.write(f'listen = "127.0.0.1:7175"\ndata_dir = "{work}/data"\nadmin_token = "adm-token-0123456789"\n')
    f.write(f"metrics_max_tenant_series = {cap}\n")
    for i in range(n):
        f.write(f'[[tenant]]\nname = "t{i:05d}"\ntoken = "tenant-token-{i:05d}-abcdefgh"\nrate_per_sec = 100.0\nburst = 100\n')
    f.write('[[topic]]\nname = "events"\n[[destination]]\nname = "d"\ntopics = ["events"]\ntoken = "d-token-0123456789"\n')
PY
  RUST_LOG=warn "$bin/broker" --config "$work/broker.toml" > "$work/broker.out" 2>&1 &
  bpid=$!
  for _ in $(seq 1 600); do curl -fsS http://127.0.0.1:7175/readyz >/dev/null 2>&1 && break; sleep 0.05; done
  declare -a times=()
  for _ in $(seq 1 "$runs"); do
    times+=("$(curl -fsS -o "$work/metrics.txt" -w '%{time_total}' -H 'Authorization: Bearer adm-token-0123456789' http://127.0.0.1:7175/metrics)")
  done
  bytes=$(wc -c < "$work/metrics.txt"); series=$(grep -vc '^#' "$work/metrics.txt")
  rss=$(awk '/^VmRSS/ {print $2}' /proc/$bpid/status)
  echo "metrics_max_tenant_series=$cap, $tenants tenants: /metrics $bytes bytes, $series series, scrape s ${times[*]} (median $(median "${times[@]}")), RSS ${rss} kB"
  kill -TERM $bpid; wait $bpid || true
  rm -rf "$work"
  unset times
done
