#!/usr/bin/env bash
# A cache hit over the proxy's TLS listener against nginx serving the same
# page over TLS with the same certificate (the target: ≥ 0.8× nginx).
# Prints a markdown report on stdout (progress on stderr).
#
#   bench/tls-hits.sh
#
# The proxy serves examples/site from the example origin with --tls-cert;
# one crawler request renders /products/1, then wrk asks for it as Googlebot
# (HIT) over TLS with keep-alive. nginx serves the rendered bytes as a file
# over TLS. Both are measured in BENCH_ROUNDS rotated rounds.
#
# Environment: BENCH_DURATION (10s), BENCH_CONNECTIONS (64), BENCH_THREADS
# (2), BENCH_ROUNDS (3), BENCH_SETTLE (3), PRERENDER_BIN and ORIGIN_BIN
# (skip the build), CARGO_TARGET_DIR, CHROME_PATH.
set -euo pipefail

PAGE=/products/1

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BENCH_NAME=tls-bench
# shellcheck source=bench/lib.sh
. "$repo_root/bench/lib.sh"
help_if_asked "$@"
wrk_settings 3

install_bench_deps
command -v openssl >/dev/null || die "openssl is missing"
NGINX="$(find_nginx)" || die "nginx not found"

release_binaries origin

make_workdir
origin_port="" proxy_port="" admin_port="" nginx_port=""
free_port origin_port
free_port proxy_port
free_port admin_port
free_port nginx_port

log "certificate"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
  -subj /CN=localhost -addext subjectAltName=DNS:localhost \
  -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null

log "origin on $origin_port, proxy on $proxy_port (TLS)"
"$origin_bin" --dir "$repo_root/examples/site" --listen "127.0.0.1:$origin_port" >/dev/null 2>&1 &
pids+=($!)
RUST_LOG=warn "$proxy_bin" serve --listen "127.0.0.1:$proxy_port" --admin-listen "127.0.0.1:$admin_port" \
  --origin "http://127.0.0.1:$origin_port" --tls-cert "$work/cert.pem" --tls-key "$work/key.pem" \
  --browsers 1 --tabs-per-browser 1 >/dev/null 2>"$work/proxy.log" &
pids+=($!)
wait_http "http://127.0.0.1:$admin_port/readyz" 30 || die "proxy not ready"

log "rendering $PAGE once"
mkdir -p "$work/html/products"
curl -ksS -A "$BOT_UA" -o "$work/html/products/1" "https://localhost:$proxy_port$PAGE"
hit="$(curl -ksS -A "$BOT_UA" -o /dev/null -D - "https://localhost:$proxy_port$PAGE" | tr -d '\r' | awk -F': ' 'tolower($1) == "x-prerender-cache" { print $2 }')"
[ "$hit" = "HIT" ] || die "expected a HIT, got '$hit'"
bytes="$(wc -c <"$work/html/products/1")"

cat >"$work/nginx.conf" <<EOF
$(nginx_conf_head nginx auto 1024)
  default_type text/html;
  keepalive_requests 100000;
  server {
    listen 127.0.0.1:$nginx_port ssl;
    ssl_certificate $work/cert.pem;
    ssl_certificate_key $work/key.pem;
    root $work/html;
  }
}
EOF
start_nginx nginx || die "nginx did not start"

run() { # URL -> req/s
  sleep "$SETTLE_SECS"
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" -H "User-Agent: $BOT_UA" "$1" 2>/dev/null |
    awk '/Requests\/sec/ { print $2 }'
}
proxy_runs=()
nginx_runs=()
for round in $(seq 1 "$ROUNDS"); do
  if [ $((round % 2)) -eq 1 ]; then
    proxy_runs+=("$(run "https://localhost:$proxy_port$PAGE")")
    nginx_runs+=("$(run "https://localhost:$nginx_port$PAGE")")
  else
    nginx_runs+=("$(run "https://localhost:$nginx_port$PAGE")")
    proxy_runs+=("$(run "https://localhost:$proxy_port$PAGE")")
  fi
  log "round $round: proxy ${proxy_runs[-1]} req/s, nginx ${nginx_runs[-1]} req/s"
done
p="$(printf '%s\n' "${proxy_runs[@]}" | median)"
n="$(printf '%s\n' "${nginx_runs[@]}" | median)"
ratio="$(awk -v p="$p" -v n="$n" 'BEGIN { printf "%.2f", p / n }')"

cat <<EOF
### Cache hit over TLS against nginx over TLS

$(nproc) cores, wrk -t$THREADS -c$CONNECTIONS -d$DURATION, keep-alive, $ROUNDS rotated rounds, $PAGE ($bytes bytes, identity), same ECDSA P-256 certificate.

| server | median req/s | runs |
|---|---|---|
| prerender-proxy, \`--tls-cert\`, HIT | $p | ${proxy_runs[*]} |
| nginx, static file over TLS (one worker per core) | $n | ${nginx_runs[*]} |

Ratio: **${ratio}×** nginx.
EOF
