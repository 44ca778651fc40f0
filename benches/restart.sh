#!/usr/bin/env bash
# Restart time and footprint (issue 23). Writes SIZE_MB of segments as
# 1.1 MB NDJSON bodies into a broker with no exporter, then, RUNS times
# each: a clean stop (SIGTERM) and a kill -9, each followed by a start with
# a cold page cache (`echo 3 > /proc/sys/vm/drop_caches`, as root; warm when
# that is not allowed, and said so), timed from the start to the first
# 200 from /readyz. Prints each time, the median, and the restarted
# broker's RSS (and how much of it is file-backed) after one full read of
# the log through the admin inspect route.
#   sudo bash benches/restart.sh [RUNS=3] [SIZE_MB=2048]
# Never in CI: it drops the machine's page cache.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}; size_mb=${2:-2048}
if [ -z "${WEIR_BIN_DIR:-}" ]; then cargo build --release --bin broker >&2; fi
bin=${WEIR_BIN_DIR:-./target/release}
work=$(mktemp -d -p "${WEIR_BENCH_DIR:-$PWD/target}")
trap 'kill -9 $bpid 2>/dev/null || true; tail -5 "$work/broker.out" >&2; rm -rf "$work"' EXIT
cat > "$work/broker.toml" <<TOML
listen = "127.0.0.1:7174"
data_dir = "$work/data"
admin_token = "adm"
disk_high_watermark = 1.0
max_body_bytes = 4194304
[[tenant]]
name = "load"
token = "load-token"
rate_per_sec = 100000000.0
burst = 100000000
[[topic]]
name = "events"
[[destination]]
name = "f"
topics = ["events"]
token = "f-t"
max_lag_bytes = 1125899906842624
TOML
start() {  # sets $bpid, and $elapsed: ms from start to ready
  local t0 t1
  t0=$(date +%s%N)
  RUST_LOG=warn "$bin/broker" --config "$work/broker.toml" > "$work/broker.out" 2>&1 &
  bpid=$!
  for _ in $(seq 1 3000); do curl -fsS http://127.0.0.1:7174/readyz >/dev/null 2>&1 && break; sleep 0.005; done
  t1=$(date +%s%N)
  elapsed=$(( (t1 - t0) / 1000000 ))
}
cold() {
  sync
  if echo 3 > /proc/sys/vm/drop_caches 2>/dev/null; then echo cold; else echo warm; fi
}
start
python3 - "$size_mb" <<'PY'
import sys, http.client, json
size_mb = int(sys.argv[1])
line = json.dumps({"k": "x" * 1000}) + "\n"
body = (line * (1100 * 1000 // len(line))).encode()
conn = http.client.HTTPConnection("127.0.0.1", 7174)
sent = 0
while sent < size_mb << 20:
    conn.request("POST", "/v1/topics/events/records", body,
                 {"Authorization": "Bearer load-token", "Content-Type": "application/x-ndjson"})
    r = conn.getresponse(); r.read()
    assert r.status == 200, r.status
    sent += len(body)
print(f"wrote {sent >> 20} MiB in {len(body)}-byte bodies", file=sys.stderr)
PY
du -sh "$work/data" >&2
declare -a clean=() killed=()
for i in $(seq 1 "$runs"); do
  kill -TERM $bpid; wait $bpid || true
  cache=$(cold); start; clean+=("$elapsed")
  kill -9 $bpid; wait $bpid 2>/dev/null || true
  cache=$(cold); start; killed+=("$elapsed")
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo "ready after a clean stop ($cache cache), ms: ${clean[*]} (median $(median "${clean[@]}"))"
echo "ready after kill -9 ($cache cache), ms: ${killed[*]} (median $(median "${killed[@]}"))"
# One full read of the log (every frame's head) through the admin API, then the footprint.
curl -fsS -H 'Authorization: Bearer adm' http://127.0.0.1:7174/v1/admin/destinations/f > /dev/null
sleep 3
awk '/^(VmRSS|RssAnon|RssFile)/ {print}' /proc/$bpid/status
python3 - "$bpid" <<'PY'
import sys
total = 0
for line in open(f"/proc/{sys.argv[1]}/maps"):
    if line.rstrip().endswith(".seg"):
        lo, hi = line.split()[0].split("-")
        total += int(hi, 16) - int(lo, 16)
print(f"segment bytes mapped now: {total}")
PY
