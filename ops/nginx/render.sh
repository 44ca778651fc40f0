#!/usr/bin/env bash
# Renders the ingest proxy's nginx configuration from
# ops/nginx/weir-proxy.conf.template to stdout (docs/scale-out.md).
# ops/scale-out/run.sh and tests/scale_out_proxy.rs run it, and
# ops/k8s/nginx.conf is its output for the Kubernetes example:
#
#   WEIR_PROXY_BROKERS="weir-broker-0.weir-broker:7070 weir-broker-1.weir-broker:7070" \
#   WEIR_PROXY_LISTEN=8080 WEIR_PROXY_TEMP_DIR=/tmp ops/nginx/render.sh >ops/k8s/nginx.conf
#
# Environment:
#   WEIR_PROXY_BROKERS       every broker as host:port, space separated (required);
#                            each becomes `server host:port max_fails=0;`
#   WEIR_PROXY_LISTEN        nginx's listen address or port (required)
#   WEIR_PROXY_TEMP_DIR      pid file and body/proxy temp dirs (default /tmp)
#   WEIR_PROXY_READ_TIMEOUT  how long to wait for a broker's answer (default 60s)
#
# Plain bash, no envsubst: the placeholders are ${WEIR_PROXY_*} only, and
# nginx's own $variables are left alone. Exit 2 when a value is missing or
# a placeholder is left over.
set -euo pipefail
# Bash 5.2 would put the matched text where a value holds `&`.
shopt -u patsub_replacement 2>/dev/null || true

template="$(dirname "$0")/weir-proxy.conf.template"
: "${WEIR_PROXY_BROKERS:?WEIR_PROXY_BROKERS: the brokers as host:port, space separated}"
: "${WEIR_PROXY_LISTEN:?WEIR_PROXY_LISTEN: the address or port nginx listens on}"
WEIR_PROXY_TEMP_DIR=${WEIR_PROXY_TEMP_DIR:-/tmp}
WEIR_PROXY_READ_TIMEOUT=${WEIR_PROXY_READ_TIMEOUT:-60s}

servers=""
for b in $WEIR_PROXY_BROKERS; do
  [ -n "$servers" ] && servers+=$'\n    '
  servers+="server $b max_fails=0;"
done

text=$(<"$template")
text=${text//'${WEIR_PROXY_SERVERS}'/$servers}
text=${text//'${WEIR_PROXY_LISTEN}'/$WEIR_PROXY_LISTEN}
text=${text//'${WEIR_PROXY_TEMP_DIR}'/$WEIR_PROXY_TEMP_DIR}
text=${text//'${WEIR_PROXY_READ_TIMEOUT}'/$WEIR_PROXY_READ_TIMEOUT}
# The template's header comment names the placeholders in prose
# (`${WEIR_PROXY_*}`); any other one left is a placeholder without a value.
left=$(printf '%s\n' "$text" | grep -o '\${WEIR_PROXY_[A-Z_]*}' | sort -u || true)
if [ -n "$left" ]; then
  echo "render.sh: no value for $(echo $left)" >&2
  exit 2
fi
printf '%s\n' "$text"
