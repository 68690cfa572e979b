# Shared by the bench scripts (sourced, not run): logging, --help from the
# script's header comment, tools, a temp dir cleaned up with every process
# started, free ports and readiness waits.
#
# The sourcing script sets BENCH_NAME (log prefix) before sourcing, appends
# the PIDs it starts to `pids` and the nginx pid files to `nginx_pidfiles`.
# shellcheck shell=bash

log() { printf '[%s] %s\n' "$BENCH_NAME" "$*" >&2; }
die() { printf '[%s] error: %s\n' "$BENCH_NAME" "$*" >&2; exit 1; }

# Prints the calling script's header comment (its usage) when $1 asks for help.
help_if_asked() { # "$@"
  case "${1:-}" in
    -h | --help)
      awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"
      exit 0
      ;;
  esac
}

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo "$@"
  else die "need root for: $*"
  fi
}

find_chrome() {
  local c
  for c in "${CHROME_PATH:-}" /usr/lib/chromium/chromium "$(command -v chromium 2>/dev/null || true)" \
    "$(command -v google-chrome 2>/dev/null || true)"; do
    if [ -n "$c" ] && [ -x "$c" ]; then printf '%s\n' "$c"; return 0; fi
  done
  return 1
}

# nginx lives in /usr/sbin, which is not on every user's PATH.
find_nginx() {
  command -v nginx 2>/dev/null || { [ -x /usr/sbin/nginx ] && echo /usr/sbin/nginx; } || return 1
}

# The crawler the scripts claim to be.
# shellcheck disable=SC2034  # read by the sourcing script
BOT_UA='Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)'

# wrk's settings from the environment each script's header lists: sets
# DURATION (BENCH_DURATION, 10s), CONNECTIONS (BENCH_CONNECTIONS, 64),
# THREADS (BENCH_THREADS, 2), SETTLE_SECS (BENCH_SETTLE, 3: idle seconds
# before each run, so that no run starts while the previous one is still
# winding down) and, given DEFAULT_ROUNDS, ROUNDS (BENCH_ROUNDS).
# shellcheck disable=SC2034  # read by the sourcing script
wrk_settings() { # [DEFAULT_ROUNDS]
  DURATION="${BENCH_DURATION:-10s}"
  CONNECTIONS="${BENCH_CONNECTIONS:-64}"
  THREADS="${BENCH_THREADS:-2}"
  SETTLE_SECS="${BENCH_SETTLE:-3}"
  if [ -n "${1:-}" ]; then ROUNDS="${BENCH_ROUNDS:-$1}"; fi
}

# Everything .ci/install-deps installs with --all (nginx, wrk, …); dies
# without wrk.
install_bench_deps() {
  "$repo_root/.ci/install-deps" --all
  command -v wrk >/dev/null || die "wrk is missing"
}

bench_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo_root="$(cd "$bench_dir/.." && pwd)"

# The shop fixture (bench/fixtures/shop by default), as an absolute path;
# dies when DIR is not it.
shop_fixture() { # [DIR]
  local dir="${1:-$bench_dir/fixtures/shop}"
  if [ ! -f "$dir/index.html" ] || [ ! -f "$dir/static-rendered.html" ] || [ ! -d "$dir/api" ]; then
    die "$dir is not the shop fixture (index.html, static-rendered.html, api/)"
  fi
  (cd "$dir" && pwd)
}

# --- temp dir and cleanup -----------------------------------------------------

pids=()
nginx_pidfiles=()
work=""

# Creates $work and installs the cleanup: every PID in `pids` is killed and
# waited for, every nginx in `nginx_pidfiles` stopped; $work is removed
# unless BENCH_KEEP=1 or the script failed.
make_workdir() {
  work="$(mktemp -d "${TMPDIR:-/tmp}/prerender-$BENCH_NAME.XXXXXX")"
  # nginx workers may run as another user (nobody) when started as root.
  chmod 755 "$work"
  trap bench_cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
}

# shellcheck disable=SC2317  # called through the EXIT trap
bench_cleanup() {
  local status=$?
  trap - EXIT INT TERM
  local pidfile
  for pidfile in "${nginx_pidfiles[@]}"; do
    if [ -f "$pidfile" ]; then kill -QUIT "$(cat "$pidfile")" 2>/dev/null || true; fi
  done
  if [ "${#pids[@]}" -gt 0 ]; then
    kill "${pids[@]}" 2>/dev/null || true
    wait "${pids[@]}" 2>/dev/null || true
  fi
  if [ "${BENCH_KEEP:-0}" = 1 ] || [ "$status" -ne 0 ]; then
    log "logs and configs kept in $work"
  else
    rm -rf "$work"
  fi
  exit "$status"
}

# --- ports and readiness --------------------------------------------------------

# Ports are picked below the kernel's ephemeral range: a port there can be
# the local end of an outgoing connection (nginx to its upstream, wrk),
# which a connect test does not see and which makes a later bind fail.
ephemeral_low="$(awk '{ print $1 }' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)"
[ "$ephemeral_low" -gt 11000 ] || ephemeral_low=32768
used_ports=" "
free_port() { # VAR: sets VAR to a port nothing listens on
  local candidate _
  for _ in $(seq 200); do
    candidate=$((10000 + RANDOM % (ephemeral_low - 10000)))
    case "$used_ports" in *" $candidate "*) continue ;; esac
    # A successful connect means something listens there.
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$candidate") 2>/dev/null; then
      used_ports="$used_ports$candidate "
      printf -v "$1" '%s' "$candidate"
      return 0
    fi
  done
  die "no free port found"
}

wait_http() { # URL SECONDS [PID]: until URL answers 2xx; fails when PID exits
  local deadline=$((SECONDS + $2))
  until curl -fsS -o /dev/null --max-time 2 "$1" 2>/dev/null; do
    if [ -n "${3:-}" ] && ! kill -0 "$3" 2>/dev/null; then return 1; fi
    [ "$SECONDS" -lt "$deadline" ] || return 1
    sleep 0.3
  done
}

# nginx's temp directories under DIR (http-level directives).
temp_paths() { # DIR
  local kind
  for kind in client_body proxy fastcgi uwsgi scgi; do printf '  %s_temp_path %s/%s;\n' "$kind" "$1" "${kind#client_}"; done
}

# --- binaries -------------------------------------------------------------------

# Sets proxy_bin: PRERENDER_BIN, or a release build of this checkout. With
# "origin", also origin_bin: ORIGIN_BIN, or the example origin of that build.
release_binaries() { # [origin]
  local target="${CARGO_TARGET_DIR:-$repo_root/target}" build=(--bin prerender-proxy) need_origin=0
  if [ "${1:-}" = origin ]; then need_origin=1; build+=(--example origin); fi
  if [ -z "${PRERENDER_BIN:-}" ] || { [ "$need_origin" -eq 1 ] && [ -z "${ORIGIN_BIN:-}" ]; }; then
    log "building (release)"
    (cd "$repo_root" && cargo build --release --locked "${build[@]}" >&2)
  fi
  proxy_bin="${PRERENDER_BIN:-$target/release/prerender-proxy}"
  # shellcheck disable=SC2034  # read by the sourcing script
  origin_bin="${ORIGIN_BIN:-$target/release/examples/origin}"
  [ -x "$proxy_bin" ] || die "$proxy_bin is not executable"
}

# --- nginx sites ------------------------------------------------------------------

# The top of an nginx configuration of the bench's own, NAME: pid file
# $work/NAME.pid, error log $work/NAME-error.log, temp directories under
# $work/NAME-tmp (made here), WORKERS worker processes (auto) of
# CONNECTIONS connections (4096) each, no access log. Opens the http block;
# the caller writes the rest of it and the closing brace.
nginx_conf_head() { # NAME [WORKERS] [CONNECTIONS]
  mkdir -p "$work/$1-tmp"
  cat <<EOF
# Written by bench/$(basename "$0").
worker_processes ${2:-auto};
pid $work/$1.pid;
error_log $work/$1-error.log warn;
events { worker_connections ${3:-4096}; }
http {
  access_log off;
$(temp_paths "$work/$1-tmp")
EOF
}

# Starts the nginx of $work/NAME.conf ($NGINX, else the one on the PATH),
# logging to $work/NAME-error.log; it is stopped on exit.
start_nginx() { # NAME
  nginx_pidfiles+=("$work/$1.pid")
  "${NGINX:-nginx}" -e "$work/$1-error.log" -c "$work/$1.conf"
}

# The shop's origin (http-level): $fixture on $origin_port with the
# single-page-app fallback; EXTRA goes inside the server block.
# shellcheck disable=SC2154  # fixture and origin_port: set by the sourcing script
origin_site() { # [EXTRA]
  cat <<EOF
  server {
    listen 127.0.0.1:$origin_port;
    root $fixture;${1:+
    $1}
    location ^~ /api/ { try_files \$uri =404; }
    location ^~ /assets/ { try_files \$uri =404; }
    location / { try_files \$uri /index.html; }
  }
EOF
}

# The reverse-proxy reference (http-level): nginx proxy_pass to the origin
# over a keepalive upstream, listening on PORT.
reverse_proxy_site() { # PORT
  cat <<EOF
  upstream bench_origin {
    server 127.0.0.1:$origin_port;
    keepalive 64;
  }
  server {
    listen 127.0.0.1:$1;
    location / {
      proxy_pass http://bench_origin;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$host;
      proxy_set_header X-Forwarded-For \$remote_addr;
      proxy_set_header X-Forwarded-Proto \$scheme;
      proxy_max_temp_file_size 0;
    }
  }
EOF
}

# --- wrk and figures --------------------------------------------------------------

# wrk's output on stdin as "REQ_PER_SEC P99_MS ERRORS".
wrk_summary() {
  awk '
    function ms(v) {
      if (v ~ /us$/) return substr(v, 1, length(v) - 2) / 1000
      if (v ~ /ms$/) return substr(v, 1, length(v) - 2) + 0
      if (v ~ /s$/)  return substr(v, 1, length(v) - 1) * 1000
      return v + 0
    }
    $1 == "99%" { p99 = ms($2) }
    $1 == "Requests/sec:" { rps = $2 }
    /Non-2xx or 3xx responses:/ { bad += $NF }
    /Socket errors:/ { bad += 1 }
    END { printf "%.0f %.2f %d\n", rps, p99, bad }'
}

# wrk with latency percentiles after SETTLE_SECS idle seconds (the output
# appended to $work/wrk.log); prints "REQ_PER_SEC P99_MS ERRORS".
run_wrk() { # URL [wrk header args...]
  local url="$1" out
  shift
  sleep "$SETTLE_SECS"
  out="$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency "$@" "$url" 2>&1)" || {
    printf '%s\n' "$out" >&2
    echo "0 0 wrk-failed"
    return 0
  }
  printf '%s\n' "$out" >>"$work/wrk.log"
  printf '%s\n' "$out" | wrk_summary
}

# The median of the numbers on stdin (0 for none).
median() { sort -n | awk '{ v[NR] = $1 } END { if (NR == 0) print 0; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
# A ÷ B as "1.23×" ("n/a" when B is 0).
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) print "n/a"; else printf "%.2f×\n", a / b }'; }

# The same reverse proxy in an nginx of its own, on PORT, whose workers do
# not also serve the origin (the shape of a deployment, where the proxy and
# the origin are different processes or machines): writes
# $work/nginx-own.conf (pid $work/nginx-own.pid, log
# $work/nginx-own-error.log).
write_own_reverse_proxy_conf() { # PORT
  cat >"$work/nginx-own.conf" <<EOF
$(nginx_conf_head nginx-own)
  keepalive_requests 100000;
  server_tokens off;
$(reverse_proxy_site "$1")
}
EOF
}
