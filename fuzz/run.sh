#!/usr/bin/env bash
# Runs one fuzz target with the options the figures in README.md were measured with.
#
#   fuzz/run.sh TARGET [SECONDS]      # default 600
#
# One libFuzzer worker (-fork=1) that carries on after a crash, timeout or OOM and leaves each in
# fuzz/artifacts/TARGET/; new inputs go to fuzz/corpus/TARGET/. Overflow checks and debug assertions
# are on; no sanitizer (the fuzzed code has no `unsafe`), for speed.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
target="${1:?usage: run.sh TARGET [SECONDS]}"
secs="${2:-600}"
case "$target" in
  capture_reader) max_len=65536 ;;
  packet_decoder) max_len=16384 ;;
  dns_decoder) max_len=16384 ;;
  bundle_reader) max_len=262144 ;;
  node_parsers) max_len=65536 ;;
  *) echo "run.sh: unknown target $target" >&2; exit 2 ;;
esac
cd "$here"
[ -d "corpus/$target" ] || ./seed.sh
exec cargo +nightly fuzz run -s none -a "$target" -- \
  -max_total_time="$secs" -rss_limit_mb=2048 -max_len="$max_len" -timeout=10 \
  -fork=1 -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1
