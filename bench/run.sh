#!/usr/bin/env bash
# Benchmark prerender-proxy against nginx on this machine; prints a markdown
# report on stdout (progress goes to stderr). See bench/README.md.
#
#   bench/run.sh [--redis] [FIXTURE_DIR]     full run (≈ 9 min; ≈ 18 min with --redis)
#   bench/run.sh --check [FIXTURE_DIR]       only write the nginx configs and `nginx -t` them
#
# FIXTURE_DIR is the shop fixture (default: bench/fixtures/shop). --redis
# adds a second pass with the proxy on a local redis-server. Installs wrk,
# nginx, curl and Chromium (and redis-server for --redis) with apt when
# missing.
#
# Environment: BENCH_DURATION (10s), BENCH_CONNECTIONS (64), BENCH_THREADS (2),
# BENCH_SETTLE (3, idle seconds before each wrk run), BENCH_PASSTHROUGH_ROUNDS
# (4, rotated rounds of the passthrough runs), PRERENDER_BIN (skip the build
# and use this binary), CHROME_PATH, CARGO_TARGET_DIR, BENCH_KEEP=1 (keep the
# temp dir with logs and configs).
set -euo pipefail

# --- settings ---------------------------------------------------------------

# wrk's settings (DURATION, CONNECTIONS, THREADS, SETTLE_SECS) and BOT_UA
# come from bench/lib.sh (wrk_settings, below).
# (b) is measured in this many rounds, each in a rotated order; a multiple
# of 4 puts each of the four contenders in each position equally often.
PASSTHROUGH_ROUNDS="${BENCH_PASSTHROUGH_ROUNDS:-4}"
# The fixture page's own work (load, fetch, 200 ms timer), from the
# fixture's README: a render can never be faster than this.
PAGE_WORK_MS=350
MISS_SERIAL_PAGES=20     # (c)
THROUGHPUT_PAGES=40      # (d)
THROUGHPUT_IN_FLIGHT=4   # (d)
DEDUP_CLIENTS=20         # (e)
# The proxy-side latency goal for cache hits, from the proxy's own
# request-duration histogram (wrk on the same cores inflates its figures).
HIT_P99_GOAL_MS=2
# Chromium flags of the one-process-per-page reference for (d); the
# virtual time budget lets the page's 200 ms timer fire before the DOM is
# dumped (without it --dump-dom prints the "Loading…" shell).
DUMP_DOM_FLAGS=(--headless=new --no-sandbox --disable-gpu --disable-dev-shm-usage
  --disable-background-networking --disable-component-update --no-first-run --disable-sync
  --virtual-time-budget=10000)
RSS_AFTER_RENDERS=100    # (f)
FIXTURE_PRODUCTS=40      # products 1..40 exist in the fixture
READY_TIMEOUT_SECS=60
REQUEST_TIMEOUT_SECS=40  # render timeout (20 s) plus generous slack

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BENCH_NAME=bench
# shellcheck source=bench/lib.sh
. "$repo_root/bench/lib.sh"
help_if_asked "$@"
wrk_settings

check_only=0
with_redis=0
fixture=""
while [ $# -gt 0 ]; do
  case "$1" in
    --check) check_only=1 ;;
    --redis) with_redis=1 ;;
    -*) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
    *) fixture="$1" ;;
  esac
  shift
done
fixture="$(shop_fixture "$fixture")"

# --- tools --------------------------------------------------------------------

install_missing() {
  local packages=()
  find_nginx >/dev/null || packages+=(nginx-light)
  if [ "$check_only" -eq 0 ]; then
    command -v wrk >/dev/null 2>&1 || packages+=(wrk)
    command -v curl >/dev/null 2>&1 || packages+=(curl)
    find_chrome >/dev/null || packages+=(chromium fonts-liberation)
    if [ "$with_redis" -eq 1 ]; then command -v redis-server >/dev/null 2>&1 || packages+=(redis-server); fi
  fi
  [ "${#packages[@]}" -eq 0 ] && return 0
  command -v apt-get >/dev/null 2>&1 || die "missing ${packages[*]}: install them first"
  log "installing ${packages[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${packages[@]}" >&2
  # Debian starts the packaged services; the benchmark runs its own.
  for service in nginx redis-server; do
    if printf '%s\n' "${packages[@]}" | grep -q "^$service"; then
      as_root systemctl disable --now "$service" >/dev/null 2>&1 || true
    fi
  done
}

install_missing
NGINX="$(find_nginx)" || die "nginx not found"

# --- temp dir, ports, cleanup ---------------------------------------------------

make_workdir

origin_port="" static_port="" reverse_port="" own_reverse_port=""
free_port origin_port
free_port static_port
free_port reverse_port
free_port own_reverse_port

# --- nginx: origin, static reference, reverse-proxy references ------------------

write_nginx_config() {
  cat >"$work/nginx.conf" <<EOF
$(nginx_conf_head nginx)
  include /etc/nginx/mime.types;
  default_type application/octet-stream;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 100000;
  server_tokens off;
  # One line per request: the dedup measurement counts document fetches.
  log_format origin '\$request_uri|\$http_x_prerender|\$status';

  # The site's origin: the fixture with a single-page-app fallback.
$(origin_site "access_log $work/origin-access.log origin;")

  # Reference for cache hits: a web server sending the rendered page from disk.
  server {
    listen 127.0.0.1:$static_port;
    root $fixture;
    default_type text/html;
    location / { try_files /static-rendered.html =404; }
  }

  # Reference for human passthrough: nginx as a reverse proxy to the same origin.
$(reverse_proxy_site "$reverse_port")
}
EOF
  write_own_reverse_proxy_conf "$own_reverse_port"
}

write_nginx_config
"$NGINX" -t -q -e "$work/nginx-error.log" -c "$work/nginx.conf" || die "nginx rejected $work/nginx.conf"
"$NGINX" -t -q -e "$work/nginx-own-error.log" -c "$work/nginx-own.conf" || die "nginx rejected $work/nginx-own.conf"
if [ "$check_only" -eq 1 ]; then
  log "nginx configuration is valid"
  exit 0
fi

start_nginx nginx
start_nginx nginx-own
wait_http "http://127.0.0.1:$origin_port/" 10 || die "nginx did not start (see $work/nginx-error.log)"
wait_http "http://127.0.0.1:$static_port/" 10 || die "nginx static server did not start"
wait_http "http://127.0.0.1:$own_reverse_port/" 10 || die "nginx reverse proxy of its own did not start (see $work/nginx-own-error.log)"

# --- the proxy -------------------------------------------------------------------

CHROME_PATH="$(find_chrome)" || die "no Chromium found; set CHROME_PATH"
export CHROME_PATH
release_binaries

# The proxy and redis-server run in sessions of their own, as the nginx
# daemons do (and as a service does): with autogroup scheduling
# (/proc/sys/kernel/sched_autogroup_enabled), the kernel first divides CPU
# time between sessions, and a server left in the bench's session would
# share wrk's half instead of competing with it as nginx does. Started
# from a script without job control, setsid calls setsid(2) and execs, so
# $! is the server's own pid.
own_session=""
command -v setsid >/dev/null 2>&1 && own_session=setsid

proxy_pid=""
proxy_port=""
admin_port=""
redis_pid=""

start_proxy() { # extra serve flags...
  free_port proxy_port
  free_port admin_port
  $own_session "$proxy_bin" serve \
    --listen "127.0.0.1:$proxy_port" \
    --admin-listen "127.0.0.1:$admin_port" \
    --origin "http://127.0.0.1:$origin_port" \
    "$@" >>"$work/proxy.log" 2>&1 &
  proxy_pid=$!
  pids+=("$proxy_pid")
  if ! wait_http "http://127.0.0.1:$admin_port/readyz" "$READY_TIMEOUT_SECS" "$proxy_pid"; then
    tail -n 30 "$work/proxy.log" >&2 || true
    die "proxy exited or not ready within ${READY_TIMEOUT_SECS}s (see above)"
  fi
}

stop_proxy() {
  kill "$proxy_pid" 2>/dev/null || true
  wait "$proxy_pid" 2>/dev/null || true
  proxy_pid=""
}

redis_url=""
start_redis() {
  local port
  free_port port
  mkdir -p "$work/redis"
  $own_session redis-server --bind 127.0.0.1 --port "$port" --dir "$work/redis" --save '' --appendonly no \
    --maxmemory 256mb --maxmemory-policy allkeys-lru >"$work/redis.log" 2>&1 &
  redis_pid=$!
  pids+=("$redis_pid")
  local deadline=$((SECONDS + 10))
  until redis-cli -p "$port" ping >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$deadline" ] || die "redis-server did not start (see $work/redis.log)"
    sleep 0.2
  done
  redis_url="redis://127.0.0.1:$port"
}

# --- helpers -----------------------------------------------------------------------

# One request as a crawler: prints "PATH STATUS SECONDS CACHE MARKER" where
# MARKER is 1 when the body carries the product heading of the expected id.
cat >"$work/fetch.sh" <<'EOF'
#!/usr/bin/env bash
set -u
base="$1" path="$2" id="$3"
body="$(mktemp)" headers="$(mktemp)"
out="$(curl -s --max-time "$REQUEST_TIMEOUT_SECS" -A "$BOT_UA" -D "$headers" -o "$body" \
  -w '%{http_code} %{time_total}' "$base$path")" || out="000 0"
cache="$(tr -d '\r' <"$headers" | awk 'tolower($1) == "x-prerender-cache:" { print $2 }')"
marker=0
grep -q "data-product-id=\"$id\"" "$body" && marker=1
printf '%s %s %s %s\n' "$path" "$out" "${cache:--}" "$marker"
rm -f "$body" "$headers"
EOF
chmod +x "$work/fetch.sh"
export BOT_UA REQUEST_TIMEOUT_SECS

# Reads "PATH ID" lines on stdin, fetches them N at a time, results on stdout.
fetch_many() { # BASE IN_FLIGHT
  xargs -P "$2" -L 1 "$work/fetch.sh" "$1"
}

now() { date +%s.%N; }

# Medians over the "RPS P99 ERRORS [PROXY_P99]" lines of FILE, column by
# column (errors are summed); prints one line of the same shape.
runs_summary() { # FILE
  local col n cols out=""
  cols="$(awk '{ print NF }' "$1" | sort -n | head -n 1)"
  for ((col = 1; col <= cols; col++)); do
    if [ "$col" -eq 3 ]; then
      n="$(awk '{ if ($3 ~ /^[0-9]+$/) s += $3; else failed = 1 }
        END { if (failed) print "wrk-failed"; else print s + 0 }' "$1")"
    else
      n="$(awk -v c="$col" '{ print $c }' "$1" | median)"
    fi
    out="$out${out:+ }$n"
  done
  printf '%s\n' "$out"
}

# The runs of FILE as "RPS/P99ms, ..." for the notes column.
runs_list() { # FILE
  awk '{ printf "%s%s/%sms", (NR > 1 ? ", " : ""), $1, $2 }' "$1"
}

# The proxy's request-duration histogram for one kind and cache result:
# "LE COUNT" lines (cumulative), from the admin listener's /metrics.
scrape_durations() { # KIND CACHE
  curl -fs --max-time 5 "http://127.0.0.1:$admin_port/metrics" | awk -v kind="$1" -v cache="$2" '
    index($0, "prerender_request_duration_seconds_bucket{") == 1 &&
    index($0, "kind=\"" kind "\"") && index($0, "cache=\"" cache "\"") {
      match($0, /le="[^"]*"/); le = substr($0, RSTART + 4, RLENGTH - 5)
      print le, $NF
    }'
}

# p99 in ms of the requests observed between two scrapes, interpolated
# linearly inside its bucket as Prometheus' histogram_quantile does; prints
# "P99_MS COUNT".
histogram_p99() { # BEFORE AFTER
  awk 'NR == FNR { before[$1] = $2; next }
    { le[++n] = $1; delta[n] = $2 - before[$1] }
    END {
      total = delta[n]
      if (total <= 0) { print "0 0"; exit }
      want = 0.99 * total; lower = 0; prev = 0
      for (i = 1; i <= n; i++) {
        if (delta[i] >= want) {
          if (le[i] == "+Inf") { printf "%.3f %d\n", lower * 1000, total; exit }
          frac = (delta[i] > prev) ? (want - prev) / (delta[i] - prev) : 1
          printf "%.3f %d\n", (lower + (le[i] - lower) * frac) * 1000, total; exit
        }
        if (le[i] != "+Inf") lower = le[i]
        prev = delta[i]
      }
    }' <(printf '%s\n' "$1") <(printf '%s\n' "$2")
}

# wrk against the proxy, also reading the proxy's own p99 for KIND/CACHE
# from its histogram over the run; prints "REQ_PER_SEC P99_MS ERRORS PROXY_P99_MS".
run_wrk_proxy() { # KIND CACHE URL [wrk header args...]
  local kind="$1" cache="$2" before after p99
  shift 2
  before="$(scrape_durations "$kind" "$cache")"
  local wrk_out
  wrk_out="$(run_wrk "$@")"
  after="$(scrape_durations "$kind" "$cache")"
  read -r p99 _ < <(histogram_p99 "$before" "$after")
  printf '%s %s\n' "$wrk_out" "$p99"
}

# One Chromium process per page, as `chromium --dump-dom` renders it:
# "PATH 1|0" (1 when the dump carries the product heading).
cat >"$work/dump-dom.sh" <<'EOF2'
#!/usr/bin/env bash
set -u
base="$1" path="$2" id="$3"
profile="$(mktemp -d)"
marker=0
read -ra flags <<<"$DUMP_DOM_ARGS"
if timeout "$REQUEST_TIMEOUT_SECS" "$CHROME_PATH" "${flags[@]}" --user-data-dir="$profile" \
  --dump-dom "$base$path" 2>/dev/null | grep -q "data-product-id=\"$id\""; then
  marker=1
fi
rm -rf "$profile"
printf '%s %s\n' "$path" "$marker"
EOF2
chmod +x "$work/dump-dom.sh"
DUMP_DOM_ARGS="${DUMP_DOM_FLAGS[*]}"
export DUMP_DOM_ARGS

# Resident memory of a process and all its descendants (the proxy and every
# Chromium process it started): "RSS_MB PSS_MB PROCESSES". RSS counts shared
# pages once per process; PSS splits them, so it is the fairer total.
tree_memory() { # PID
  local tree
  # /proc/PID/stat: the name (field 2) may hold spaces and parentheses, so
  # the fields are read after its last ") ".
  tree="$(cat /proc/[0-9]*/stat 2>/dev/null | awk -v root="$1" '
    { rest = $0; sub(/.*\) /, "", rest); split(rest, f, " "); parent[$1] = f[2] }
    END {
      keep[root] = 1; changed = 1
      while (changed) {
        changed = 0
        for (p in parent) if (!(p in keep) && (parent[p] in keep)) { keep[p] = 1; changed = 1 }
      }
      for (p in keep) print p
    }')"
  local files=() pid
  for pid in $tree; do
    [ -r "/proc/$pid/status" ] && files+=("/proc/$pid/status")
    [ -r "/proc/$pid/smaps_rollup" ] && files+=("/proc/$pid/smaps_rollup")
  done
  [ "${#files[@]}" -gt 0 ] || { echo "0 0 0"; return 0; }
  awk -v n="$(printf '%s\n' "$tree" | wc -l)" '
    /^VmRSS:/ { rss += $2 } /^Pss:/ { pss += $2 }
    END { printf "%.0f %.0f %d\n", rss / 1024, pss / 1024, n }' "${files[@]}" 2>/dev/null || echo "0 0 0"
}

rows=()
row() { rows+=("| $1 | $2 | $3 | $4 | $5 |"); }
renders_done=0

# --- one pass of all measurements ------------------------------------------------------

run_pass() { # LABEL
  local label="$1" base="http://127.0.0.1:$proxy_port"
  local mem_idle results line bad

  # (f, first half) idle memory, before any render.
  sleep 2
  mem_idle="$(tree_memory "$proxy_pid")"
  renders_done=0

  # (a) cache hit vs nginx sending the same page from disk.
  log "[$label] (a) cache hit"
  line="$("$work/fetch.sh" "$base" /p/1 1)"
  renders_done=$((renders_done + 1))
  line="$("$work/fetch.sh" "$base" /p/1 1)"
  read -r _ code _ cache marker <<<"$line"
  if [ "$code" = 200 ] && [ "$cache" = HIT ] && [ "$marker" = 1 ]; then
    local ref_rps ref_p99 ref_bad rps p99 proxy_p99
    read -r ref_rps ref_p99 ref_bad < <(run_wrk "http://127.0.0.1:$static_port/p/1" -H "User-Agent: $BOT_UA")
    read -r rps p99 bad proxy_p99 < <(run_wrk_proxy bot hit "$base/p/1" -H "User-Agent: $BOT_UA")
    line="$("$work/fetch.sh" "$base" /p/1 1)"
    read -r _ code _ cache marker <<<"$line"
    [ "$cache" = HIT ] || bad="$bad, not HIT afterwards ($cache)"
    row "(a) cache hit, req/s (c$CONNECTIONS, $DURATION)" "$rps" "$ref_rps (nginx, static file)" "$(ratio "$rps" "$ref_rps")" "errors: $bad / ref $ref_bad"
    row "(a) cache hit, p99 latency" "${p99} ms" "${ref_p99} ms" "$(ratio "$p99" "$ref_p99")" "lower is better"
    row "(a) cache hit, p99 proxy-side" "${proxy_p99} ms" "${HIT_P99_GOAL_MS} ms (goal)" "$(ratio "$proxy_p99" "$HIT_P99_GOAL_MS")" "the proxy's own time (prerender_request_duration_seconds, same wrk run); wrk's p99 above adds wrk and the kernel on the same cores"
  else
    row "(a) cache hit" "failed" "-" "-" "second request for /p/1 answered: $line (want 200 HIT 1)"
  fi

  # (b) human passthrough vs nginx proxy_pass to the same origin (in the
  # origin's nginx, and in an nginx of its own), and vs the origin nginx
  # serving the file. The four are measured in PASSTHROUGH_ROUNDS rounds,
  # each round in a rotated order (round 1: reverse proxy, proxy, own
  # reverse proxy, direct; round 2: proxy, own, direct, reverse; ...), so
  # that no contender always runs right after the same other one (see
  # "Order" in bench/README.md); medians are reported.
  log "[$label] (b) human passthrough, $PASSTHROUGH_ROUNDS rotated rounds"
  local shell_headers
  shell_headers="$(curl -s --max-time 10 -D - -o "$work/human-body" "$base/p/1" | tr -d '\r')" || true
  if grep -q 'Loading' "$work/human-body" && ! printf '%s' "$shell_headers" | grep -qi '^x-prerender-cache:'; then
    local path kind round k who rps p99 bad proxy_p99
    local -a order
    for path in /p/1 /api/products/1.json; do
      # The JSON file is a static asset to the proxy (passed through as such).
      kind=human
      case "$path" in *.json) kind=asset ;; esac
      # One "RPS P99 ERRORS [PROXY_P99]" line per run, per contender.
      : >"$work/pass-reverse" ; : >"$work/pass-own" ; : >"$work/pass-proxy" ; : >"$work/pass-direct"
      for round in $(seq 1 "$PASSTHROUGH_ROUNDS"); do
        order=(reverse proxy own direct)
        for ((k = 0; k < (round - 1) % 4; k++)); do order=("${order[@]:1}" "${order[0]}"); done
        for who in "${order[@]}"; do
          case "$who" in
            reverse) run_wrk "http://127.0.0.1:$reverse_port$path" >>"$work/pass-reverse" ;;
            own) run_wrk "http://127.0.0.1:$own_reverse_port$path" >>"$work/pass-own" ;;
            proxy) run_wrk_proxy "$kind" none "$base$path" >>"$work/pass-proxy" ;;
            direct) run_wrk "http://127.0.0.1:$origin_port$path" >>"$work/pass-direct" ;;
          esac
        done
      done
      local ref_rps ref_p99 ref_bad direct_rps direct_p99 direct_bad
      read -r ref_rps ref_p99 ref_bad < <(runs_summary "$work/pass-reverse")
      local own_rps own_p99 own_bad
      read -r own_rps own_p99 own_bad < <(runs_summary "$work/pass-own")
      read -r rps p99 bad proxy_p99 < <(runs_summary "$work/pass-proxy")
      read -r direct_rps direct_p99 direct_bad < <(runs_summary "$work/pass-direct")
      local each
      each="runs: proxy $(runs_list "$work/pass-proxy"); nginx proxy_pass $(runs_list "$work/pass-reverse"); nginx proxy_pass, own nginx $(runs_list "$work/pass-own"); nginx direct $(runs_list "$work/pass-direct")"
      row "(b) human $path, req/s (median of $PASSTHROUGH_ROUNDS)" "$rps" "$ref_rps (nginx proxy_pass)" "$(ratio "$rps" "$ref_rps")" "errors: $bad / ref $ref_bad"
      row "(b) human $path, p99 latency (median of $PASSTHROUGH_ROUNDS)" "${p99} ms" "${ref_p99} ms" "$(ratio "$p99" "$ref_p99")" "lower is better; proxy-side p99 ${proxy_p99} ms (origin's answer included)"
      row "(b) human $path, req/s vs nginx proxy_pass in its own nginx (median of $PASSTHROUGH_ROUNDS)" "$rps" "$own_rps (nginx proxy_pass, own nginx)" "$(ratio "$rps" "$own_rps")" "errors: $bad / ref $own_bad"
      row "(b) human $path, p99 vs nginx proxy_pass in its own nginx (median of $PASSTHROUGH_ROUNDS)" "${p99} ms" "${own_p99} ms" "$(ratio "$p99" "$own_p99")" "lower is better; this nginx's workers serve only the proxying, not the origin"
      row "(b) human $path, req/s vs nginx direct (median of $PASSTHROUGH_ROUNDS)" "$rps" "$direct_rps (nginx serving the file)" "$(ratio "$rps" "$direct_rps")" "errors: $bad / ref $direct_bad; direct p99 ${direct_p99} ms"
      row "(b) human $path, each run" "-" "-" "-" "$each"
    done
  else
    row "(b) human passthrough" "failed" "-" "-" "a request without a crawler UA did not get the origin's shell"
  fi

  # (c) miss latency, one page at a time.
  log "[$label] (c) miss latency, $MISS_SERIAL_PAGES pages one at a time"
  results="$(for n in $(seq 1 "$MISS_SERIAL_PAGES"); do echo "/p/$n/c $n"; done | fetch_many "$base" 1)"
  renders_done=$((renders_done + MISS_SERIAL_PAGES))
  local med bad_c serial_secs
  bad_c="$(printf '%s\n' "$results" | awk '$2 != 200 || $4 != "MISS" || $5 != 1' | wc -l)"
  med="$(printf '%s\n' "$results" | awk '{ print $3 * 1000 }' | median)"
  serial_secs="$(printf '%s\n' "$results" | awk '{ s += $3 } END { print s }')"
  row "(c) miss latency, median of $MISS_SERIAL_PAGES" "$(printf '%.0f' "$med") ms" "$PAGE_WORK_MS ms (page's own work)" "$(ratio "$med" "$PAGE_WORK_MS")" "overhead $(awk -v m="$med" -v w="$PAGE_WORK_MS" 'BEGIN { printf "%.0f", m - w }') ms; wrong answers: $bad_c"

  # (d) throughput with a few renders in flight.
  log "[$label] (d) $THROUGHPUT_PAGES pages, $THROUGHPUT_IN_FLIGHT in flight"
  local start elapsed pps serial_pps bad_d
  start="$(now)"
  results="$(for i in $(seq 1 "$THROUGHPUT_PAGES"); do
    n=$(( (i - 1) % FIXTURE_PRODUCTS + 1 )); echo "/p/$n/d$i $n"; done | fetch_many "$base" "$THROUGHPUT_IN_FLIGHT")"
  elapsed="$(awk -v a="$start" -v b="$(now)" 'BEGIN { print b - a }')"
  renders_done=$((renders_done + THROUGHPUT_PAGES))
  bad_d="$(printf '%s\n' "$results" | awk '$2 != 200 || $4 != "MISS" || $5 != 1' | wc -l)"
  pps="$(awk -v n="$THROUGHPUT_PAGES" -v e="$elapsed" 'BEGIN { printf "%.2f", n / e }')"
  serial_pps="$(awk -v n="$MISS_SERIAL_PAGES" -v s="$serial_secs" 'BEGIN { if (s > 0) printf "%.2f", n / s; else print 0 }')"
  row "(d) renders/s, $THROUGHPUT_IN_FLIGHT in flight" "$pps" "$serial_pps (1 in flight, from c)" "$(ratio "$pps" "$serial_pps")" "wrong answers: $bad_d"

  # (d, reference) the same pages, one `chromium --dump-dom` process each.
  log "[$label] (d) reference: $THROUGHPUT_PAGES pages with chromium --dump-dom, $THROUGHPUT_IN_FLIGHT in flight"
  local dump_pps bad_dump
  start="$(now)"
  results="$(for i in $(seq 1 "$THROUGHPUT_PAGES"); do
    n=$(( (i - 1) % FIXTURE_PRODUCTS + 1 )); echo "/p/$n/dump$i $n"; done |
    xargs -P "$THROUGHPUT_IN_FLIGHT" -L 1 "$work/dump-dom.sh" "http://127.0.0.1:$origin_port")"
  elapsed="$(awk -v a="$start" -v b="$(now)" 'BEGIN { print b - a }')"
  bad_dump="$(printf '%s\n' "$results" | awk '$2 != 1' | wc -l)"
  dump_pps="$(awk -v n="$THROUGHPUT_PAGES" -v e="$elapsed" 'BEGIN { printf "%.2f", n / e }')"
  row "(d) renders/s vs chromium --dump-dom" "$pps" "$dump_pps (one chromium per page)" "$(ratio "$pps" "$dump_pps")" "reference wrong answers: $bad_dump; chromium ${DUMP_DOM_ARGS}, fresh --user-data-dir each, from the origin directly"

  # (e) dedup: simultaneous misses for one new path.
  log "[$label] (e) $DEDUP_CLIENTS simultaneous misses for one path"
  local dedup_path="/p/7/dedup-$label" fetches bad_e
  results="$(for _ in $(seq 1 "$DEDUP_CLIENTS"); do echo "$dedup_path 7"; done | fetch_many "$base" "$DEDUP_CLIENTS")"
  renders_done=$((renders_done + 1))
  sleep 1
  fetches="$(grep -c "^$dedup_path|" "$work/origin-access.log" || true)"
  bad_e="$(printf '%s\n' "$results" | awk '$2 != 200 || $5 != 1' | wc -l)"
  row "(e) origin document fetches for $DEDUP_CLIENTS simultaneous misses" "$fetches" "1 (one render)" "$(ratio "$fetches" 1)" "wrong answers: $bad_e"

  # (f) memory of the proxy and its browsers, idle and after renders.
  log "[$label] (f) memory after $RSS_AFTER_RENDERS renders"
  if [ "$renders_done" -lt "$RSS_AFTER_RENDERS" ]; then
    local more=$((RSS_AFTER_RENDERS - renders_done))
    for i in $(seq 1 "$more"); do
      n=$(( (i - 1) % FIXTURE_PRODUCTS + 1 )); echo "/p/$n/f$i $n"
    done | fetch_many "$base" "$THROUGHPUT_IN_FLIGHT" >/dev/null
    renders_done=$RSS_AFTER_RENDERS
  fi
  sleep 2
  local mem_after idle_rss idle_pss idle_n after_rss after_pss after_n
  mem_after="$(tree_memory "$proxy_pid")"
  read -r idle_rss idle_pss idle_n <<<"$mem_idle"
  read -r after_rss after_pss after_n <<<"$mem_after"
  row "(f) RSS of proxy + browsers after $renders_done renders" "$after_rss MB ($after_n processes)" "$idle_rss MB idle ($idle_n processes)" "$(ratio "$after_rss" "$idle_rss")" "PSS $after_pss MB after, $idle_pss MB idle"
}

print_report() { # LABEL
  printf '\n### %s\n\n' "$1"
  printf '| measurement | prerender-proxy | reference | ratio | notes |\n'
  printf '|---|---|---|---|---|\n'
  printf '%s\n' "${rows[@]}"
  rows=()
}

# --- run --------------------------------------------------------------------------------

printf '# prerender-proxy benchmark\n\n'
printf -- '- date: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
printf -- '- machine: %s cores, %s\n' "$(nproc)" "$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
proxy_version="$(timeout 5 "$proxy_bin" --version 2>/dev/null | head -n 1)" || true
printf -- '- proxy: %s (%s)\n' "${proxy_version:-prerender-proxy}" \
  "$(git -C "$repo_root" rev-parse --short HEAD 2>/dev/null || echo unknown)"
printf -- '- browser: %s\n' "$("$CHROME_PATH" --version 2>/dev/null || echo "$CHROME_PATH")"
printf -- '- nginx: %s; wrk -t%s -c%s -d%s, %s s idle before each run; passthrough (b) in %s rotated rounds, medians\n' "$("$NGINX" -v 2>&1 | sed 's/.*: //')" "$THREADS" "$CONNECTIONS" "$DURATION" "$SETTLE_SECS" "$PASSTHROUGH_ROUNDS"
printf -- '- fixture: %s\n' "$fixture"

log "pass 1: embedded store"
start_proxy
run_pass embedded
stop_proxy
print_report "Embedded store (serve, no --redis)"

if [ "$with_redis" -eq 1 ]; then
  log "pass 2: Redis"
  start_redis
  start_proxy --redis "$redis_url"
  run_pass redis
  stop_proxy
  print_report "Redis (serve --redis $redis_url)"
fi

printf '\nRatios: proxy ÷ reference (for latency and memory, lower is better; for\n'
printf 'req/s and renders/s, higher is better). See bench/README.md.\n'
log "done"
