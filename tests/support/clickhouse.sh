#!/usr/bin/env bash
# Start a throwaway ClickHouse server on loopback for the export tests.
#   tests/support/clickhouse.sh DIR HTTP_PORT   -> prints the HTTP URL once it answers /ping
# Installs Debian's clickhouse-server when it is missing. The server runs
# until its pid (DIR/pid) is killed.
set -euo pipefail
dir=${1:?usage: clickhouse.sh DIR HTTP_PORT}
port=${2:?usage: clickhouse.sh DIR HTTP_PORT}
if ! command -v clickhouse-server >/dev/null 2>&1; then
  echo "installing clickhouse-server (Debian package)" >&2
  export DEBIAN_FRONTEND=noninteractive
  (apt-get update -qq && apt-get install -y -qq clickhouse-server clickhouse-client) >&2
fi
mkdir -p "$dir"/{data,tmp,user_files,format_schemas,log}
src=/etc/clickhouse-server
sed -e "s#<http_port>8123</http_port>#<http_port>$port</http_port>#" \
    -e "s#<tcp_port>9000</tcp_port>#<tcp_port>$((port + 1))</tcp_port>#" \
    -e "s#<interserver_http_port>9009</interserver_http_port>#<interserver_http_port>$((port + 2))</interserver_http_port>#" \
    -e "s#<tcp_port_secure>9440</tcp_port_secure>##" \
    -e "s#<listen_host>::1</listen_host>##" \
    -e "s#/var/lib/clickhouse/tmp/#$dir/tmp/#" \
    -e "s#/var/lib/clickhouse/user_files/#$dir/user_files/#" \
    -e "s#/var/lib/clickhouse/format_schemas/#$dir/format_schemas/#" \
    -e "s#/var/lib/clickhouse/#$dir/data/#" \
    -e "s#/var/log/clickhouse-server/#$dir/log/#g" \
    -e "s#<users_config>users.xml</users_config>#<users_config>$src/users.xml</users_config>#" \
    "$src/config.xml" > "$dir/config.xml"
clickhouse-server --config-file="$dir/config.xml" > "$dir/log/stdout.log" 2>&1 &
echo $! > "$dir/pid"
for _ in $(seq 1 120); do
  if curl -fsS "http://127.0.0.1:$port/ping" >/dev/null 2>&1; then
    echo "http://127.0.0.1:$port"
    exit 0
  fi
  if ! kill -0 "$(cat "$dir/pid")" 2>/dev/null; then
    echo "clickhouse-server exited; see $dir/log" >&2
    tail -20 "$dir/log/"*.log >&2 || true
    exit 1
  fi
  sleep 0.5
done
echo "clickhouse-server did not answer /ping within 60 s" >&2
exit 1
