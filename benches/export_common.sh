# Shared by export_throughput.sh and first_delivery.sh (sourced, not run):
# one broker on 127.0.0.1:7172 with an unlimited tenant `load`, topic
# `events` and destination `f` (token f-t), in a fresh directory per run.

command -v wrk >/dev/null || { export DEBIAN_FRONTEND=noninteractive; apt-get update -qq && apt-get install -y -qq wrk; }
# WEIR_BIN_DIR=dir runs that build's broker and exporter instead of this
# tree's (to compare two builds in turn on the same machine and load).
if [ -z "${WEIR_BIN_DIR:-}" ]; then cargo build --release --bin broker --bin exporter >&2; fi
bin=${WEIR_BIN_DIR:-./target/release}

# A fresh work directory with broker.toml (WEIR_BROKER_EXTRA: more top-level
# keys) and load.lua (http_load.lua aimed at this broker); sets $work.
new_run() {
  work=$(mktemp -d -p "${WEIR_BENCH_DIR:-$PWD/target}")
  cat > "$work/broker.toml" <<TOML
listen = "127.0.0.1:7172"
data_dir = "$work/data"
admin_token = "adm"
disk_high_watermark = 1.0
${WEIR_BROKER_EXTRA:-}
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
TOML
  sed 's/7171/7172/' benches/http_load.lua > "$work/load.lua"
}

# Start the broker of $work and wait until it is ready; sets $bpid.
start_broker() {
  RUST_LOG=warn "$bin/broker" --config "$work/broker.toml" > "$work/broker.out" 2>&1 &
  bpid=$!
  for _ in $(seq 1 100); do curl -fsS http://127.0.0.1:7172/readyz >/dev/null 2>&1 && break; sleep 0.1; done
}

# The destination's lag, read without a Python start per poll (that cost
# a fifth of the CPU the exporter and broker share on a small machine).
lag_records() {
  curl -fsS -H 'Authorization: Bearer adm' http://127.0.0.1:7172/v1/admin/destinations/f \
    | grep -o '"lag_records":[0-9]*' | cut -d: -f2
}

# Wait (at most 60 s) until the exporter has caught up.
drain() {
  for _ in $(seq 1 600); do [ "$(lag_records)" = 0 ] && return; sleep 0.1; done
  echo "the exporter did not catch up" >&2; exit 1
}
