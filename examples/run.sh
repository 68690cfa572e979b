#!/usr/bin/env bash
# Try prerender-proxy on this machine in one command.
#
#   examples/run.sh
#
# Builds the proxy and the example origin, serves examples/site on
# 127.0.0.1:8080, puts the proxy in front of it on 127.0.0.1:3000 (admin on
# 127.0.0.1:3001, embedded cache: no Redis needed) and keeps both running
# until Ctrl-C. On Debian/Ubuntu it installs Chromium (and curl) with apt
# when they are missing. Rust must already be installed (https://rustup.rs).
#
# Environment: CARGO_TARGET_DIR is respected; CHROME_PATH picks the browser;
# PRERENDER_ADMIN_TOKEN replaces the demo admin token made for each run.
set -euo pipefail

PROXY_LISTEN=127.0.0.1:3000
ADMIN_LISTEN=127.0.0.1:3001
ORIGIN_LISTEN=127.0.0.1:8080
# The first start launches a browser; a slow machine may need a while.
READY_TIMEOUT_SECS=60

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    die "need root to run: $* (install sudo or run this as root)"
  fi
}

# Debian's /usr/bin/chromium is a wrapper script that adds its own flags; the
# proxy wants the real binary.
find_chrome() {
  local candidate
  for candidate in "${CHROME_PATH:-}" /usr/lib/chromium/chromium /usr/lib/chromium-browser/chromium-browser \
    "$(command -v chromium 2>/dev/null || true)" "$(command -v chromium-browser 2>/dev/null || true)" \
    "$(command -v google-chrome 2>/dev/null || true)"; do
    if [ -n "$candidate" ] && [ -x "$candidate" ]; then
      printf '%s\n' "$candidate"
      return 0
    fi
  done
  return 1
}

install_missing() {
  local packages=()
  find_chrome >/dev/null || packages+=(chromium fonts-liberation)
  command -v curl >/dev/null 2>&1 || packages+=(curl)
  [ "${#packages[@]}" -eq 0 ] && return 0
  command -v apt-get >/dev/null 2>&1 ||
    die "missing ${packages[*]}; install them with your package manager (or set CHROME_PATH)"
  say "Installing ${packages[*]} with apt"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${packages[@]}"
}

port_free() {
  # bash's /dev/tcp connects: success means something already listens there.
  ! (exec 3<>"/dev/tcp/${1%:*}/${1##*:}") 2>/dev/null
}

command -v cargo >/dev/null 2>&1 || die "cargo not found: install Rust from https://rustup.rs first"
install_missing
chrome="$(find_chrome)" || die "no Chromium found after installing; set CHROME_PATH"
export CHROME_PATH="$chrome"

for addr in "$PROXY_LISTEN" "$ADMIN_LISTEN" "$ORIGIN_LISTEN"; do
  port_free "$addr" || die "$addr is already in use; stop what listens there and try again"
done

say "Building (release)"
cargo build --release --bin prerender-proxy --example origin
target_dir="${CARGO_TARGET_DIR:-$repo_root/target}"
proxy_bin="$target_dir/release/prerender-proxy"
origin_bin="$target_dir/release/examples/origin"
[ -x "$proxy_bin" ] || die "$proxy_bin was not built"
[ -x "$origin_bin" ] || die "$origin_bin was not built"

pids=()
# shellcheck disable=SC2317  # called through the EXIT trap
cleanup() {
  local status=$?
  trap - EXIT INT TERM
  if [ "${#pids[@]}" -gt 0 ]; then
    say "Stopping"
    kill "${pids[@]}" 2>/dev/null || true
    wait "${pids[@]}" 2>/dev/null || true
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

say "Starting the example origin on http://$ORIGIN_LISTEN"
"$origin_bin" --dir "$repo_root/examples/site" --listen "$ORIGIN_LISTEN" &
pids+=($!)

# A demo admin token, new on every run (the admin listener is on loopback):
# the dashboard link printed below carries it, so the dashboard opens signed in.
ADMIN_TOKEN="${PRERENDER_ADMIN_TOKEN:-demo-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')}"
export PRERENDER_ADMIN_TOKEN="$ADMIN_TOKEN"

say "Starting prerender-proxy on http://$PROXY_LISTEN (browser: $CHROME_PATH)"
"$proxy_bin" serve \
  --listen "$PROXY_LISTEN" \
  --admin-listen "$ADMIN_LISTEN" \
  --origin "http://$ORIGIN_LISTEN" &
pids+=($!)

deadline=$((SECONDS + READY_TIMEOUT_SECS))
until curl -fsS -o /dev/null "http://$ADMIN_LISTEN/readyz" 2>/dev/null; do
  for pid in "${pids[@]}"; do
    kill -0 "$pid" 2>/dev/null || die "a process exited during start-up (see its output above)"
  done
  [ "$SECONDS" -lt "$deadline" ] || die "not ready after ${READY_TIMEOUT_SECS}s: http://$ADMIN_LISTEN/readyz"
  sleep 0.5
done

cat >&2 <<EOF

  prerender-proxy is ready.

  As a crawler (rendered by Chromium on the first request, then from cache;
  see the X-Prerender-Cache header):
    curl -A 'Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)' -i http://$PROXY_LISTEN/products/1

  As a person (the origin's untouched "Loading…" shell):
    curl -i http://$PROXY_LISTEN/products/1

  Also try /, /about, /products/2, /old-about (301) and /no-such-page (404).
  Dashboard (signed in with this run's demo admin token):
    http://$ADMIN_LISTEN/#token=$ADMIN_TOKEN
  The admin API with the same token:
    curl -H 'Authorization: Bearer $ADMIN_TOKEN' http://$ADMIN_LISTEN/api/v1/stats
  Health and metrics: http://$ADMIN_LISTEN/readyz  http://$ADMIN_LISTEN/metrics

  Press Ctrl-C to stop.

EOF

# Runs until Ctrl-C, or until either process exits on its own.
set +e
wait -n "${pids[@]}"
status=$?
set -e
say "A process stopped (exit status $status); stopping the rest"
exit "$status"
