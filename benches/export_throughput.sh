#!/usr/bin/env bash
# Export throughput beside ingest, in one run: the broker ingests for SECS
# seconds at 64 connections x 10 records per request (wrk, as http_load.sh),
# then one exporter with default flags drains that backlog to a sink; both
# rates are printed. SINK is file (default) or webhook (a loopback sink
# that reads each body and answers 200).
#   bash benches/export_throughput.sh [RUNS=3] [SECS=10] [SINK=file]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}; secs=${2:-10}; kind=${3:-file}
source benches/export_common.sh
for i in $(seq 1 "$runs"); do
  new_run
  start_broker
  out=$(wrk -t2 -c64 -d"${secs}s" -s "$work/load.lua" http://127.0.0.1:7172/v1/topics/events/records)
  ingest_rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  sleep 0.6  # a maintenance pass publishes the lag
  total=$(lag_records)
  spid=""
  if [ "$kind" = webhook ]; then
    python3 - "$work/sink.port" <<'PY' &
import http.server, socket, sys
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(200); self.send_header("content-length", "0"); self.end_headers()
    def log_message(self, *a): pass
s = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
open(sys.argv[1], "w").write(str(s.server_address[1]))
s.serve_forever()
PY
    spid=$!
    for _ in $(seq 1 50); do [ -s "$work/sink.port" ] && break; sleep 0.1; done
    sink="http://127.0.0.1:$(cat "$work/sink.port")/"
  else
    sink="file:$work/out.ndjson"
  fi
  start=$(date +%s.%N)
  RUST_LOG=warn "$bin/exporter" --broker http://127.0.0.1:7172 --destination f --token f-t --sink "$sink" ${WEIR_EXPORTER_ARGS:-} > "$work/exporter.out" 2>&1 &
  epid=$!
  drain
  end=$(date +%s.%N)
  bytes=$(stat -c %s "$work/out.ndjson" 2>/dev/null || echo 0)
  kill $epid $bpid ${spid:-} 2>/dev/null || true
  wait $epid $bpid 2>/dev/null || true
  python3 - "$ingest_rps" "$total" "$start" "$end" "$bytes" "$i" "$kind" <<'PY'
import sys
rps, total, start, end, size, i, kind = float(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5]), sys.argv[6], sys.argv[7]
ingest = rps * 10
export = total / (end - start)
mib = f" {size / (end - start) / 2**20:.1f} MiB/s" if size else ""
print(f"run {i} ({kind}): ingest {ingest:,.0f} records/s; export {export:,.0f} records/s{mib} ({total:,} records in {end - start:.1f} s); export/ingest x{export / ingest:.2f}")
PY
  rm -rf "$work"
done
