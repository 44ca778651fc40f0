#!/usr/bin/env bash
# Ingest -> first delivery at half of peak ingest load, in one run: the
# broker's peak ingest rate is measured first (wrk, 64 connections x 10
# records per request, as http_load.sh, with the exporter running), then
# the load is tuned to about half of it (connections, each pausing 2 ms
# between requests), and held for SECS seconds while one exporter with
# default flags delivers to a file sink. The latency is the exporter's own
# weir_exporter_delivery_seconds (WAL append to delivered at the sink) over
# that window, from histogram bucket deltas (linear within a bucket), and
# the broker's weir_delivery_latency_seconds (ingest to commit) beside it.
#   bash benches/first_delivery.sh [RUNS=3] [SECS=10]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}; secs=${2:-10}
source benches/export_common.sh
rate() {  # connections secs -> records/s
  wrk -t2 -c"$1" -d"$2s" -s "$work/paced.lua" http://127.0.0.1:7172/v1/topics/events/records | awk '/Requests\/sec/ {print $2 * 10}'
}
for i in $(seq 1 "$runs"); do
  new_run
  { cat "$work/load.lua"; echo 'function delay() return 2 end'; } > "$work/paced.lua"
  start_broker
  RUST_LOG=warn "$bin/exporter" --broker http://127.0.0.1:7172 --destination f --token f-t \
    --sink "file:$work/out.ndjson" --metrics-listen 127.0.0.1:7173 > "$work/exporter.out" 2>&1 &
  epid=$!
  peak=$(wrk -t2 -c64 -d5s -s "$work/load.lua" http://127.0.0.1:7172/v1/topics/events/records | awk '/Requests\/sec/ {print $2 * 10}')
  drain
  target=$(python3 -c "print($peak / 2)")
  conns=16
  for _ in 1 2 3; do  # tune the connections to about half of the peak
    got=$(rate "$conns" 3); drain
    conns=$(python3 -c "print(max(1, min(256, round($conns * $target / max($got, 1)))))")
  done
  curl -fsS http://127.0.0.1:7173/metrics > "$work/before.txt"
  curl -fsS http://127.0.0.1:7172/metrics > "$work/broker_before.txt"
  held=$(rate "$conns" "$secs")
  drain
  curl -fsS http://127.0.0.1:7173/metrics > "$work/after.txt"
  curl -fsS http://127.0.0.1:7172/metrics > "$work/broker_after.txt"
  kill $epid $bpid 2>/dev/null || true
  wait $epid $bpid 2>/dev/null || true
  python3 - "$work" "$peak" "$held" "$conns" "$i" <<'PY'
import re, sys
work, peak, held, conns, i = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4], sys.argv[5]
def buckets(path, name, labels):
    out = {}
    for line in open(path):
        m = re.match(name + r'_bucket\{(.*)\} (\S+)', line)
        if m and all(l in m.group(1) for l in labels):
            le = re.search(r'le="([^"]+)"', m.group(1)).group(1)
            out[float("inf") if le == "+Inf" else float(le)] = float(m.group(2))
    return out
def quantile(name, labels, q, before, after):
    b, a = buckets(f"{work}/{before}", name, labels), buckets(f"{work}/{after}", name, labels)
    edges = sorted(a)
    counts = [a[e] - b.get(e, 0) for e in edges]
    total = counts[-1]
    if total <= 0:
        return float("nan"), 0
    rank, lo, prev = q * total, 0.0, 0.0
    for e, c in zip(edges, counts):
        if c >= rank:
            if e == float("inf"):
                return lo * 1000, total
            return (lo + (e - lo) * (rank - prev) / max(c - prev, 1e-9)) * 1000, total
        lo, prev = e, c
    return float("nan"), total
exp = [quantile("weir_exporter_delivery_seconds", ['destination="f"'], q, "before.txt", "after.txt") for q in (0.5, 0.99)]
brk = quantile("weir_delivery_latency_seconds", ['destination="f"', 'priority="normal"'], 0.99, "broker_before.txt", "broker_after.txt")
print(f"run {i}: peak ingest {peak:,.0f} records/s; held {held:,.0f} records/s ({held / peak:.2f} of peak, {conns} paced connections); "
      f"ingest->delivered at the sink p50 {exp[0][0]:.1f} ms, p99 {exp[1][0]:.1f} ms ({exp[1][1]:,.0f} records); "
      f"ingest->commit p99 {brk[0]:.1f} ms")
PY
  rm -rf "$work"
done
