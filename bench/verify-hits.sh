#!/usr/bin/env bash
# What crawler verification costs on cache hits: two proxies serve the same
# cached page to "Googlebot", one with verify_crawlers = off and one with
# log (the default), measured with wrk in the same run, in rotated rounds.
# Prints a markdown report on stdout (progress on stderr).
#
#   bench/verify-hits.sh
#
# Each request claims Googlebot and comes through a trusted proxy
# (X-Forwarded-For names 66.249.66.1, which a local dnsmasq verifies), so
# the `log` proxy runs the whole check on every hit: the claim's regex,
# the client address, the verdict cache and the counter.
#
# Environment: BENCH_DURATION (10s), BENCH_CONNECTIONS (64), BENCH_THREADS
# (2), BENCH_ROUNDS (6; each round runs both, the order alternating),
# BENCH_SETTLE (3 idle seconds before each run), PRERENDER_BIN and
# ORIGIN_BIN (skip the build), CARGO_TARGET_DIR, CHROME_PATH.
set -euo pipefail

CLIENT=66.249.66.1
HOST=www.example.test
PAGE=/products/1

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BENCH_NAME=verify-bench
# shellcheck source=bench/lib.sh
. "$repo_root/bench/lib.sh"
help_if_asked "$@"
wrk_settings 6

install_bench_deps
dnsmasq_bin="$(command -v dnsmasq || echo /usr/sbin/dnsmasq)"

release_binaries origin

make_workdir

dns_port="" origin_port=""
free_port dns_port
free_port origin_port
as_root=()
[ "$(id -u)" -ne 0 ] || as_root=(--user=root)
"$dnsmasq_bin" --keep-in-foreground --no-resolv --no-hosts --no-poll --conf-file=/dev/null \
  --pid-file= --bind-interfaces --listen-address=127.0.0.1 --port="$dns_port" "${as_root[@]}" \
  --local=/in-addr.arpa/ --local=/com/ \
  --host-record=crawl-66-249-66-1.googlebot.com,$CLIENT 2>"$work/dnsmasq.log" &
pids+=($!)
"$origin_bin" --dir "$repo_root/examples/site" --listen "127.0.0.1:$origin_port" >"$work/origin.log" 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:$origin_port/" 30 || die "origin did not start"

declare -A port admin
for mode in off log; do
  free_port "port[$mode]"
  free_port "admin[$mode]"
  # setsid: each proxy in a session of its own, as a service runs (see
  # bench/HISTORY.md, "Autogroup scheduling").
  setsid "$proxy_bin" serve --listen "127.0.0.1:${port[$mode]}" --admin-listen "127.0.0.1:${admin[$mode]}" \
    --origin "http://127.0.0.1:$origin_port" --domain "$HOST" --browsers 1 --tabs-per-browser 1 \
    --trusted-proxies 127.0.0.1 --dns-resolver "127.0.0.1:$dns_port" --verify-crawlers "$mode" \
    >"$work/proxy-$mode.log" 2>&1 &
  pids+=($!)
done
for mode in off log; do
  wait_http "http://127.0.0.1:${admin[$mode]}/readyz" 60 || die "proxy ($mode) not ready"
  for _ in 1 2; do
    curl -fs -o /dev/null -H "Host: $HOST" -H "User-Agent: $BOT_UA" -H "X-Forwarded-For: $CLIENT" \
      "http://127.0.0.1:${port[$mode]}$PAGE" || die "warm-up of $mode failed"
  done
  cache="$(curl -fs -o /dev/null -D - -H "Host: $HOST" -H "User-Agent: $BOT_UA" -H "X-Forwarded-For: $CLIENT" \
    "http://127.0.0.1:${port[$mode]}$PAGE" | tr -d '\r' | awk -F': ' 'tolower($1) == "x-prerender-cache" { print $2 }')"
  [ "$cache" = HIT ] || die "$mode: the page is not a hit ($cache)"
done

# "COUNT SUM" of the proxy's hit durations (bot, hit).
hit_totals() { # MODE
  curl -fs --max-time 5 "http://127.0.0.1:${admin[$1]}/metrics" | awk '
    /^prerender_request_duration_seconds_(count|sum)\{/ && /kind="bot"/ && /cache="hit"/ {
      if ($1 ~ /_count/) c = $NF; else s = $NF }
    END { printf "%d %.9f\n", c, s }'
}

run() { # MODE -> "RPS P99_MS ERRORS PROXY_MEAN_US"
  local mode="$1" before after out
  sleep "$SETTLE_SECS"
  before="$(hit_totals "$mode")"
  out="$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency \
    -H "Host: $HOST" -H "User-Agent: $BOT_UA" -H "X-Forwarded-For: $CLIENT" \
    "http://127.0.0.1:${port[$mode]}$PAGE" 2>&1)"
  after="$(hit_totals "$mode")"
  printf '%s\n' "$out" >>"$work/wrk-$mode.log"
  local wrk_line proxy_mean
  wrk_line="$(printf '%s\n' "$out" | wrk_summary)"
  proxy_mean="$(awk -v b="$before" -v a="$after" 'BEGIN {
    split(b, x, " "); split(a, y, " ")
    n = y[1] - x[1]; if (n <= 0) { print 0; exit }
    printf "%.1f", (y[2] - x[2]) / n * 1e6 }')"
  echo "$wrk_line $proxy_mean"
}

load_before="$(cut -d' ' -f1-3 /proc/loadavg)"
for ((r = 1; r <= ROUNDS; r++)); do
  if ((r % 2)); then order=(off log); else order=(log off); fi
  for mode in "${order[@]}"; do
    log "round $r/$ROUNDS: $mode"
    run "$mode" >>"$work/runs-$mode"
  done
done
load_after="$(cut -d' ' -f1-3 /proc/loadavg)"

col() { awk -v c="$2" '{ print $c }' "$work/runs-$1" | median; }
errors() { awk '{ s += $3 } END { print s + 0 }' "$work/runs-$1"; }
claims="$(curl -fs "http://127.0.0.1:${admin[log]}/metrics" |
  awk '/^prerender_crawler_verifications_total\{family="googlebot",result="verified"\}/ { print $NF }')"

echo "| verify_crawlers | req/s (median) | wrk p99 ms (median) | proxy mean µs per hit (median) | errors | runs (req/s / p99 ms / µs) |"
echo "|---|---|---|---|---|---|"
for mode in off log; do
  runs="$(awk '{ printf "%s%s/%s/%s", (NR > 1 ? ", " : ""), $1, $2, $4 }' "$work/runs-$mode")"
  echo "| $mode | $(col "$mode" 1) | $(col "$mode" 2) | $(col "$mode" 4) | $(errors "$mode") | $runs |"
done
echo
echo "wrk -t$THREADS -c$CONNECTIONS -d$DURATION, $ROUNDS rounds (order alternating); load average $load_before before, $load_after after; $(nproc) cores."
echo "Googlebot claims counted verified by the \`log\` proxy: ${claims:-0}."
