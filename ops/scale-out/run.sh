#!/usr/bin/env bash
# Two brokers behind nginx on loopback, each owning the tenants nginx hashes
# to it (docs/scale-out.md). Sends multi-tenant load through nginx, kills
# one broker (-9) mid-load and starts it again, then checks:
#   1. each tenant's records sit on one broker only;
#   2. nothing acknowledged is lost (in the owning broker's WAL, and at the
#      exporters' file sinks);
#   3. the tenants of the other broker saw no error;
#   4. both brokers' exporters delivered everything.
# Exit 0 when all hold, 1 otherwise. Needs bash, curl and nginx (Debian's
# package; installed with apt-get when missing). Usage:
#   ops/scale-out/run.sh            # builds target/debug if needed
#   WEIR_BIN=target/release REQUESTS=400 ops/scale-out/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."

BIN=${WEIR_BIN:-target/debug}
REQUESTS=${REQUESTS:-200}     # requests per tenant
BATCH=5                       # records per request
TENANTS=(t1 t2 t3 t4 t5 t6 t7 t8)

if [ ! -x "$BIN/broker" ] || [ ! -x "$BIN/exporter" ] || [ ! -x "$BIN/broker-admin" ]; then
  echo "building the binaries (cargo build --bins)"
  cargo build --bins --quiet
fi
if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then
  echo "installing nginx (Debian package)"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends nginx >/dev/null
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

WORK=$(mktemp -d /tmp/weir-scale-out.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ -n "${KEEP:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT

free_port() {
  local p
  for _ in $(seq 1 200); do
    # Below the kernel's ephemeral range, which outgoing connections use.
    p=$((10000 + RANDOM % 20000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return; fi
  done
  echo "no free port" >&2; exit 1
}
P1=$(free_port); P2=$(free_port); PN=$(free_port)

# The same tenant configuration on both brokers: ownership is by routing.
broker_config() { # $1 port, $2 data dir
  cat <<EOF
listen = "127.0.0.1:$1"
data_dir = "$2"
admin_token = "admin-secret"
maintenance_interval_ms = 100
# This demo runs on whatever disk /tmp is on; do not refuse for a full one.
disk_high_watermark = 1.0
EOF
  for t in "${TENANTS[@]}"; do
    printf '\n[[tenant]]\nname = "%s"\ntoken = "tok-%s"\nrate_per_sec = 100000.0\nburst = 200000\n' "$t" "$t"
  done
  printf '\n[[topic]]\nname = "events"\n\n[[destination]]\nname = "files"\ntopics = ["events"]\ntoken = "files-secret"\n'
}
broker_config "$P1" "$WORK/b1" >"$WORK/b1.toml"
broker_config "$P2" "$WORK/b2" >"$WORK/b2.toml"

start_broker() { # $1 name
  "$BIN/broker" --config "$WORK/$1.toml" >>"$WORK/$1.log" 2>&1 &
  PIDS+=($!); eval "PID_$1=$!"
}
wait_ready() { # $1 port, $2 pid
  for _ in $(seq 1 300); do
    kill -0 "$2" 2>/dev/null || { echo "broker on port $1 exited; its log:" >&2; tail -5 "$WORK"/b*.log >&2; exit 1; }
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$1/readyz")" = 200 ] && return 0
    sleep 0.1
  done
  echo "broker on port $1 not ready after 30 s" >&2; exit 1
}
start_exporter() { # $1 name, $2 port
  "$BIN/exporter" --broker "http://127.0.0.1:$2" --destination files --token files-secret \
    --sink "file:$WORK/out-$1.ndjson" --wait-ms 500 >>"$WORK/exp-$1.log" 2>&1 &
  PIDS+=($!)
}
start_broker b1; start_broker b2
wait_ready "$P1" "$PID_b1"; wait_ready "$P2" "$PID_b2"
start_exporter b1 "$P1"; start_exporter b2 "$P2"

# The shipped proxy configuration (ops/nginx/weir-proxy.conf.template),
# rendered for these two brokers; nginx logs to stderr, kept in error.log.
mkdir -p "$WORK/nginx/tmp"; chmod 755 "$WORK" "$WORK/nginx"; chmod 777 "$WORK/nginx/tmp"
WEIR_PROXY_BROKERS="127.0.0.1:$P1 127.0.0.1:$P2" WEIR_PROXY_LISTEN="127.0.0.1:$PN" \
  WEIR_PROXY_TEMP_DIR="$WORK/nginx/tmp" ops/nginx/render.sh >"$WORK/nginx/nginx.conf"
"$NGINX" -e stderr -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" -g 'daemon off;' 2>"$WORK/nginx/error.log" &
PID_nginx=$!; PIDS+=($!)
for _ in $(seq 1 100); do
  kill -0 "$PID_nginx" 2>/dev/null || { echo "nginx exited: $(tail -2 "$WORK/nginx/error.log")" >&2; exit 1; }
  (exec 3<>"/dev/tcp/127.0.0.1/$PN") 2>/dev/null && break
  sleep 0.1
done
echo "brokers b1 :$P1 and b2 :$P2 behind nginx :$PN; ${#TENANTS[@]} tenants x $REQUESTS requests x $BATCH records"

# A producer: each request is retried with the same Idempotency-Key until
# it is acknowledged; every non-200 answer is written down. It spells the
# scheme as clients do (RFC 9110: case-insensitive), one spelling per
# request: the proxy must route them all to the tenant's one broker.
SCHEMES=("Bearer " "bearer " "BEARER   ")
produce() { # $1 tenant
  local t=$1 i k body code tries auth
  for i in $(seq 1 "$REQUESTS"); do
    auth="${SCHEMES[$((i % ${#SCHEMES[@]}))]}tok-$t"
    body=""
    for k in $(seq 1 $BATCH); do body+="{\"tenant\":\"$t\",\"seq\":$i,\"k\":$k}"$'\n'; done
    for tries in $(seq 1 200); do
      code=$(curl -s -o "$WORK/resp-$t" -w '%{http_code}' --max-time 10 -X POST \
        -H "Authorization: $auth" -H 'Content-Type: application/x-ndjson' \
        -H "Idempotency-Key: $t-$i" --data-binary "$body" \
        "http://127.0.0.1:$PN/v1/topics/events/records" || echo 000)
      if [ "$code" = 200 ]; then echo "$i" >>"$WORK/acked-$t"; break; fi
      echo "$i $code $(head -c 200 "$WORK/resp-$t" 2>/dev/null | tr -d '\n')" >>"$WORK/errors-$t"
      sleep 0.2
    done
  done
}
LOAD=()
for t in "${TENANTS[@]}"; do : >"$WORK/acked-$t"; : >"$WORK/errors-$t"; produce "$t" & LOAD+=($!); done

# Mid-load: kill -9 broker b2 once a quarter of the load is acknowledged, start it again.
total=$(( ${#TENANTS[@]} * REQUESTS ))
for _ in $(seq 1 600); do
  [ "$(cat "$WORK"/acked-* | wc -l)" -ge $((total / 4)) ] && break
  sleep 0.05
done
echo "kill -9 b2 with $(cat "$WORK"/acked-* | wc -l)/$total requests acknowledged"
kill -9 "$PID_b2"; wait "$PID_b2" 2>/dev/null || true
sleep 1
start_broker b2; wait_ready "$P2" "$PID_b2"
echo "b2 restarted and ready with $(cat "$WORK"/acked-* | wc -l)/$total acknowledged"
for p in "${LOAD[@]}"; do wait "$p"; done
echo "load done: $(cat "$WORK"/acked-* | wc -l)/$total requests acknowledged"

# Both exporters drain what they own.
expected=$((total * BATCH))
for _ in $(seq 1 600); do
  got=$(cat "$WORK"/out-b*.ndjson 2>/dev/null | sort -u | wc -l)
  [ "$got" -ge "$expected" ] && break
  sleep 0.1
done

fail=0
check() { if [ "$1" = ok ]; then echo "ok    $2"; else echo "FAIL  $2"; fail=1; fi; }
"$BIN/broker-admin" dump --data-dir "$WORK/b1" >"$WORK/dump-b1"
"$BIN/broker-admin" dump --data-dir "$WORK/b2" >"$WORK/dump-b2"
printf '%-7s %-7s %9s %9s %9s %9s %9s\n' tenant broker on-b1 on-b2 acked errors delivered
for t in "${TENANTS[@]}"; do
  n1=$(grep -c "\"tenant\":\"$t\"" "$WORK/dump-b1" || true)
  n2=$(grep -c "\"tenant\":\"$t\"" "$WORK/dump-b2" || true)
  owner=b1; [ "$n2" -gt 0 ] && owner=b2
  acked=$(sort -u "$WORK/acked-$t" | wc -l)
  errs=$(wc -l <"$WORK/errors-$t")
  # Every acknowledged record, as the sinks must hold it.
  for i in $(sort -un "$WORK/acked-$t"); do
    for k in $(seq 1 $BATCH); do echo "{\"tenant\":\"$t\",\"seq\":$i,\"k\":$k}"; done
  done | sort -u >"$WORK/want-$t"
  cat "$WORK"/out-b*.ndjson | grep "\"tenant\":\"$t\"" | sort -u >"$WORK/have-$t" || true
  delivered=$(comm -12 "$WORK/want-$t" "$WORK/have-$t" | wc -l)
  # In the owner's WAL: the dump's payload field holds the record, escaped.
  sed -n 's/.*"payload":"\(.*\)","tenant":.*/\1/p' "$WORK/dump-$owner" | sed 's/\\"/"/g' | grep "\"tenant\":\"$t\"" \
    | sort -u >"$WORK/wal-$t" || true
  in_wal=$(comm -12 "$WORK/want-$t" "$WORK/wal-$t" | wc -l)
  printf '%-7s %-7s %9s %9s %9s %9s %9s\n' "$t" "$owner" "$n1" "$n2" "$acked" "$errs" "$delivered"
  echo "$t $owner $n1 $n2 $acked $errs $delivered $in_wal" >>"$WORK/summary"
done
echo
while read -r t owner n1 n2 acked errs delivered in_wal; do
  [ "$n1" -eq 0 ] || [ "$n2" -eq 0 ] && r=ok || r=no
  check $r "$t: records on one broker only ($owner)"
  [ "$acked" -eq "$REQUESTS" ] && r=ok || r=no
  check $r "$t: every request acknowledged in the end ($acked/$REQUESTS)"
  [ "$in_wal" -eq $((acked * BATCH)) ] && r=ok || r=no
  check $r "$t: every acknowledged record in $owner's WAL ($in_wal/$((acked * BATCH)))"
  [ "$delivered" -eq $((acked * BATCH)) ] && r=ok || r=no
  check $r "$t: every acknowledged record delivered by $owner's exporter ($delivered/$((acked * BATCH)))"
  if [ "$owner" = b1 ]; then
    [ "$errs" -eq 0 ] && r=ok || r=no
    check $r "$t: owned by the broker that stayed up, saw no error ($errs)"
  else
    codes=$(awk '{print $2}' "$WORK/errors-$t" | sort | uniq -c | awk '{printf "%s x%s ", $2, $1}')
    echo "info  $t: owned by the restarted broker, retried through ${errs} error answer(s): ${codes:-none}"
  fi
done <"$WORK/summary"
owners=$(awk '{print $2}' "$WORK/summary" | sort -u | wc -l)
[ "$owners" -eq 2 ] && r=ok || r=no
check $r "both brokers own tenants ($(awk '$2=="b1"' "$WORK/summary" | wc -l) on b1, $(awk '$2=="b2"' "$WORK/summary" | wc -l) on b2)"
sample=$(grep -h -m1 ' 503 ' "$WORK"/errors-* 2>/dev/null | head -1 | cut -d' ' -f3- || true)
[ -n "$sample" ] && echo "info  a 503 from nginx while b2 was down: $sample"
if [ $fail -eq 0 ]; then echo "PASS"; else echo "FAILED (work dir kept: $WORK)"; KEEP=1; fi
exit $fail
