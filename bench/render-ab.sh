#!/usr/bin/env bash
# A/B of the render path of two prerender-proxy binaries on the shop
# fixture, in rotated rounds (A B, B A, …) so neither always runs first:
# per run, a fresh `serve --origin` with its defaults (2 browsers × 4 tabs),
# one warm-up render, then (c) miss latency: 20 distinct product pages one
# at a time (median), and (d) renders/s: 40 distinct pages, 4 in flight.
# Every answer is checked for the product heading. Prints one line per run
# and the medians per binary. See bench/README.md ("Render A/B").
#
#   bench/render-ab.sh BEFORE_BIN AFTER_BIN [FIXTURE_DIR]
#   ROUNDS=6 bench/render-ab.sh …
set -euo pipefail

BENCH_NAME=render-ab
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"
help_if_asked "$@"

before="${1:?usage: render-ab.sh BEFORE_BIN AFTER_BIN [FIXTURE_DIR]}"
after="${2:?usage: render-ab.sh BEFORE_BIN AFTER_BIN [FIXTURE_DIR]}"
ROUNDS="${ROUNDS:-4}"
SERIAL_PAGES=20
THROUGHPUT_PAGES=40
IN_FLIGHT=4
PRODUCTS=20

fixture="$(shop_fixture "${3:-}")"
make_workdir
proxy_pid=""

origin_port=""
free_port origin_port
cat >"$work/nginx.conf" <<EOF
$(nginx_conf_head nginx 1 1024)
  include /etc/nginx/mime.types;
$(origin_site)
}
EOF
start_nginx nginx

cat >"$work/fetch.sh" <<'EOF'
#!/usr/bin/env bash
# fetch.sh BASE PATH N → "N STATUS SECONDS OK(1/0)"
out="$(mktemp)"
read -r code secs < <(curl -s -o "$out" -w '%{http_code} %{time_total}\n' -H "User-Agent: $BOT_UA" "$1$2")
ok=0; grep -q "data-product-id=\"$3\"" "$out" && ok=1
rm -f "$out"
echo "$3 $code $secs $ok"
EOF
chmod +x "$work/fetch.sh"
export BOT_UA

run() { # LABEL BIN TAG → "LABEL MEDIAN_MS PAGES_PER_S WRONG LOAD"
  local label="$1" bin="$2" tag="$3" port admin load
  free_port port
  free_port admin
  setsid "$bin" serve --origin "http://127.0.0.1:$origin_port" \
    --listen "127.0.0.1:$port" --admin-listen "127.0.0.1:$admin" >"$work/$tag.log" 2>&1 &
  proxy_pid=$!
  pids+=("$proxy_pid")
  wait_http "http://127.0.0.1:$admin/readyz" 30 "$proxy_pid" || die "$tag: proxy not ready"
  local base="http://127.0.0.1:$port"
  "$work/fetch.sh" "$base" "/p/1/warm-$tag" 1 >/dev/null
  load="$(cut -d' ' -f1 /proc/loadavg)"
  local serial
  serial="$(for n in $(seq 1 "$SERIAL_PAGES"); do "$work/fetch.sh" "$base" "/p/$n/c-$tag" "$n"; done)"
  local start end through
  start="$(date +%s.%N)"
  through="$(for i in $(seq 1 "$THROUGHPUT_PAGES"); do echo "/p/$(( (i - 1) % PRODUCTS + 1 ))/d$i-$tag $(( (i - 1) % PRODUCTS + 1 ))"; done \
    | xargs -P "$IN_FLIGHT" -L 1 "$work/fetch.sh" "$base")"
  end="$(date +%s.%N)"
  kill "$proxy_pid"; wait "$proxy_pid" 2>/dev/null || true; proxy_pid=""
  local med pps wrong
  med="$(printf '%s\n' "$serial" | awk '{ print $3 * 1000 }' | median)"
  pps="$(awk -v n="$THROUGHPUT_PAGES" -v a="$start" -v b="$end" 'BEGIN { printf "%.2f", n / (b - a) }')"
  wrong="$(printf '%s\n%s\n' "$serial" "$through" | awk '$2 != 200 || $4 != 1' | wc -l)"
  printf '%s %.0f %s %s %s\n' "$label" "$med" "$pps" "$wrong" "$load"
}

echo "run  binary  miss_median_ms  renders_per_s  wrong  load1"
for round in $(seq 1 "$ROUNDS"); do
  if [ $((round % 2)) -eq 1 ]; then order="before after"; else order="after before"; fi
  for which in $order; do
    bin="$before"; [ "$which" = after ] && bin="$after"
    line="$(run "$which" "$bin" "r$round-$which")"
    echo "$round $line"
    echo "$line" >>"$work/results"
  done
done
for which in before after; do
  m="$(awk -v w="$which" '$1 == w { print $2 }' "$work/results" | median)"
  p="$(awk -v w="$which" '$1 == w { print $3 }' "$work/results" | median)"
  echo "median $which: miss ${m} ms, ${p} renders/s"
done
