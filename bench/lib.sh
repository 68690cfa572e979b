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

bench_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

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
