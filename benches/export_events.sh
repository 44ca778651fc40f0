#!/usr/bin/env bash
# Event-mode webhook export: one record per request, signed (one whsec_
# secret), at the adaptive limit, against a loopback receiver (nginx
# answering 204 to every POST after reading its body; Python's threaded
# server if nginx is absent, which then bounds the figure). A backlog of
# N records (~200 bytes each, as http_load.lua's) is ingested first, then
# one exporter drains it; events/s of each run and the median are printed.
#   bash benches/export_events.sh [RUNS=3] [RECORDS=150000]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}; records=${2:-150000}
source benches/export_common.sh
secret="whsec_$(head -c 32 /dev/urandom | base64)"
nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)
rates=()
for i in $(seq 1 "$runs"); do
  new_run
  start_broker
  python3 -c 'import sys
rec = "{\"event\":\"page_view\",\"user\":\"u-000123\",\"url\":\"https://example.com/products/42?ref=home\",\"ts\":1700000000000,\"pad\":\"" + "x" * 96 + "\"}\n"
sys.stdout.write(rec * 1000)' > "$work/body.ndjson"
  for _ in $(seq 1 $((records / 1000))); do
    curl -fsS -o /dev/null -H 'Authorization: Bearer load-token' -H 'Content-Type: application/x-ndjson' \
      --data-binary @"$work/body.ndjson" http://127.0.0.1:7172/v1/topics/events/records
  done
  sleep 0.6  # a maintenance pass publishes the lag
  total=$(lag_records)
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  if [ -x "$nginx_bin" ]; then
    mkdir -p "$work/nginx"
    cat > "$work/nginx.conf" <<NGINX
worker_processes 1;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $work/nginx;
  client_body_buffer_size 64k;
  server { listen 127.0.0.1:$port; location / { return 204; } }
}
NGINX
    "$nginx_bin" -c "$work/nginx.conf" -g 'daemon off;' &
  else
    python3 - "$port" <<'PY' &
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(204); self.end_headers()
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
PY
  fi
  spid=$!
  for _ in $(seq 1 50); do curl -fsS -o /dev/null -X POST "http://127.0.0.1:$port/" 2>/dev/null && break; sleep 0.1; done
  start=$(date +%s.%N)
  RUST_LOG=warn "$bin/exporter" --broker http://127.0.0.1:7172 --destination f --token f-t \
    --sink "http://127.0.0.1:$port/hook" --webhook-mode event --sign-secret "$secret" \
    ${WEIR_EXPORTER_ARGS:-} > "$work/exporter.out" 2>&1 &
  epid=$!
  drain
  end=$(date +%s.%N)
  kill $epid $bpid $spid 2>/dev/null || true
  wait $epid $bpid $spid 2>/dev/null || true
  rate=$(python3 -c "print(round($total / ($end - $start)))")
  rates+=("$rate")
  echo "run $i: $total events in $(python3 -c "print(round($end - $start, 2))") s: $rate events/s"
  rm -rf "$work"
done
printf '%s\n' "${rates[@]}" | sort -n | awk '{a[NR]=$1} END {print "median of " NR ": " a[int((NR+1)/2)] " events/s"}'
