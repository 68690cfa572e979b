#!/usr/bin/env bash
# Human passthrough through the raw relay against hyper alone, on the same
# binary, the same listener threads and the same origin pool; nginx
# proxy_pass (in the origin's nginx and in an nginx of its own) as the
# reference. Prints a markdown report on stdout (progress on stderr).
#
#   bench/relay.sh [FIXTURE_DIR]
#
# Two proxies run side by side (each in a session of its own, one idle while
# the other is measured): one as shipped, one with
# PRERENDER_PASSTHROUGH_RELAY=off, where every request goes to hyper's
# HTTP/1 server and the full path's origin pool. The four contenders are
# measured in BENCH_ROUNDS rotated rounds on /p/1 and the JSON file
# (/api/products/1.json), and reported as medians with every run listed.
#
# Environment: BENCH_DURATION (10s), BENCH_CONNECTIONS (64), BENCH_THREADS (2),
# BENCH_SETTLE (3), BENCH_ROUNDS (4), PRERENDER_BIN (skip the build),
# CHROME_PATH, CARGO_TARGET_DIR, BENCH_KEEP=1.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BENCH_NAME=relay
# shellcheck source=bench/lib.sh
. "$repo_root/bench/lib.sh"
help_if_asked "$@"
wrk_settings 4
fixture="$(shop_fixture "${1:-}")"
NGINX="$(find_nginx)" || die "nginx not found"
command -v wrk >/dev/null || die "wrk not found"
CHROME_PATH="$(find_chrome)" || die "no Chromium found; set CHROME_PATH"
export CHROME_PATH

make_workdir

origin_port="" reverse_port="" own_port=""
free_port origin_port
free_port reverse_port
free_port own_port

cat >"$work/nginx.conf" <<EOF
$(nginx_conf_head nginx)
  include /etc/nginx/mime.types;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 100000;
  server_tokens off;
$(origin_site)
$(reverse_proxy_site "$reverse_port")
}
EOF
write_own_reverse_proxy_conf "$own_port"
start_nginx nginx
start_nginx nginx-own
wait_http "http://127.0.0.1:$origin_port/" 10 || die "nginx did not start"
wait_http "http://127.0.0.1:$own_port/" 10 || die "nginx (own) did not start"

release_binaries

# Starts a proxy in a session of its own (as bench/run.sh does); sets
# PORT_VAR to its public port.
start_proxy() { # NAME PORT_VAR RELAY(on|off)
  local port admin
  free_port port
  free_port admin
  PRERENDER_PASSTHROUGH_RELAY="$3" setsid "$proxy_bin" serve --browsers 1 \
    --listen "127.0.0.1:$port" --admin-listen "127.0.0.1:$admin" \
    --origin "http://127.0.0.1:$origin_port" >>"$work/$1.log" 2>&1 &
  pids+=("$!")
  wait_http "http://127.0.0.1:$admin/readyz" 60 || die "proxy $1 not ready (see $work/$1.log)"
  printf -v "$2" '%s' "$port"
}
relay_port="" hyper_port=""
start_proxy relay relay_port on
start_proxy hyper hyper_port off

column_median() { awk -v c="$2" '{ print $c }' "$1" | median; }

# Both proxies must answer the origin's shell to people.
for port in "$relay_port" "$hyper_port"; do
  curl -fs --max-time 10 "http://127.0.0.1:$port/p/1" | grep -q Loading || die "proxy on $port did not pass /p/1 through"
done

printf '# raw relay against hyper alone\n\n'
printf -- '- date: %s; machine: %s cores, %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$(nproc)" \
  "$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
printf -- '- proxy: %s (%s); wrk -t%s -c%s -d%s, %s s idle before each run, %s rotated rounds\n' \
  "$("$proxy_bin" --version 2>/dev/null | head -n 1)" "$(git -C "$repo_root" rev-parse --short HEAD 2>/dev/null || echo unknown)" \
  "$THREADS" "$CONNECTIONS" "$DURATION" "$SETTLE_SECS" "$ROUNDS"
printf -- '- load average before: %s\n\n' "$(cut -d' ' -f1-3 /proc/loadavg)"
printf '| path | relay req/s | hyper req/s | relay ÷ hyper | nginx proxy_pass | own nginx proxy_pass | relay ÷ nginx | hyper ÷ nginx | p99 relay / hyper / nginx / own | runs |\n'
printf '|---|---|---|---|---|---|---|---|---|---|\n'
loads=""
for path in /p/1 /api/products/1.json; do
  for who in relay hyper reverse own; do : >"$work/runs-$who"; done
  for round in $(seq 1 "$ROUNDS"); do
    order=(relay hyper reverse own)
    for ((k = 0; k < (round - 1) % 4; k++)); do order=("${order[@]:1}" "${order[0]}"); done
    log "$path round $round: ${order[*]} (load $(cut -d' ' -f1 /proc/loadavg))"
    loads="$loads${loads:+, }$path r$round $(cut -d' ' -f1 /proc/loadavg)"
    for who in "${order[@]}"; do
      case "$who" in
        relay) run_wrk "http://127.0.0.1:$relay_port$path" >>"$work/runs-relay" ;;
        hyper) run_wrk "http://127.0.0.1:$hyper_port$path" >>"$work/runs-hyper" ;;
        reverse) run_wrk "http://127.0.0.1:$reverse_port$path" >>"$work/runs-reverse" ;;
        own) run_wrk "http://127.0.0.1:$own_port$path" >>"$work/runs-own" ;;
      esac
    done
  done
  declare -A rps p99 each
  for who in relay hyper reverse own; do
    rps[$who]="$(column_median "$work/runs-$who" 1)"
    p99[$who]="$(column_median "$work/runs-$who" 2)"
    each[$who]="$(awk '{ printf "%s%s/%sms%s", (NR > 1 ? ", " : ""), $1, $2, ($3 != 0 ? " (" $3 " errors)" : "") }' "$work/runs-$who")"
  done
  printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s / %s / %s / %s ms | relay %s; hyper %s; nginx %s; own nginx %s |\n' \
    "$path" "${rps[relay]}" "${rps[hyper]}" "$(ratio "${rps[relay]}" "${rps[hyper]}")" \
    "${rps[reverse]}" "${rps[own]}" "$(ratio "${rps[relay]}" "${rps[reverse]}")" "$(ratio "${rps[hyper]}" "${rps[reverse]}")" \
    "${p99[relay]}" "${p99[hyper]}" "${p99[reverse]}" "${p99[own]}" \
    "${each[relay]}" "${each[hyper]}" "${each[reverse]}" "${each[own]}"
done
printf '\n- 1-minute load average at the start of each round: %s\n' "$loads"
printf -- '- load average after: %s\n' "$(cut -d' ' -f1-3 /proc/loadavg)"
log "done"
