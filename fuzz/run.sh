#!/usr/bin/env bash
# Builds and runs every fuzz target for SECONDS each (default 60), starting
# from the committed seeds in fuzz/corpus/<target>/. What the fuzzer finds
# on the way goes to a scratch directory, so the committed corpus stays
# small; a crashing input is kept in fuzz/artifacts/<target>/.
#
#   fuzz/run.sh [SECONDS]          all targets
#   TARGETS="cache_key" fuzz/run.sh 300
#
# Needs a nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`).
# FUZZ_SANITIZER=address turns AddressSanitizer on (the default, none, is
# faster; the crate's own code is safe Rust). Exits non-zero if any target
# finds a crash.
set -u

seconds="${1:-60}"
here="$(cd "$(dirname "$0")" && pwd)"
targets="${TARGETS:-cache_key bot_match config_parse admin_json sitemap relay_response_head relay_chunked relay_plan proxy_header}"
sanitizer="${FUZZ_SANITIZER:-none}"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT

cd "$here/.."
# Overflow checks on: an arithmetic overflow is a finding too.
flags=(--fuzz-dir "$here" --sanitizer "$sanitizer" --debug-assertions)

cargo +nightly fuzz build "${flags[@]}" || exit 2

failed=()
for target in $targets; do
    echo "== $target: ${seconds}s"
    mkdir -p "$scratch/$target"
    # The first corpus directory receives new inputs; the seeds are read only.
    if ! cargo +nightly fuzz run "${flags[@]}" "$target" \
        "$scratch/$target" "$here/corpus/$target" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1; then
        failed+=("$target")
    fi
done

if [ "${#failed[@]}" -ne 0 ]; then
    echo "crashes in: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
    exit 1
fi
echo "no crashes"
