#!/usr/bin/env bash
# What two cores of this machine give to independent work: one `netsleuth analyze --threads 1` run
# alone on core 1, then two at once (cores 0 and 1), round after round. The pair's throughput over
# the lone run's (2 × alone / slower of the pair) is the ceiling any two-thread split of the same
# analysis could reach here; on a shared VM it moves with the neighbours (BENCHMARKS.md, "Per-packet
# cost, fourth pass").
#
#   scripts/two-core-ceiling.sh ROUNDS FILE [NETSLEUTH]
#
# Needs: taskset (util-linux), /usr/bin/time (time), awk.
set -euo pipefail

if [ $# -lt 2 ]; then
    echo "usage: $0 ROUNDS FILE [NETSLEUTH]" >&2
    exit 2
fi
rounds="$1"
file="$2"
root="$(cd "$(dirname "$0")/.." && pwd)"
bin="${3:-$root/target/release/netsleuth}"
if [ ! -x "$bin" ]; then
    echo "two-core-ceiling: $bin not found (cargo build --release -p netsleuth)" >&2
    exit 2
fi
work="$(mktemp -d /tmp/netsleuth-ceiling.XXXXXX)"
trap 'rm -rf "$work"' EXIT

run() { # CORE OUT: one pinned run, its wall seconds written to OUT
    /usr/bin/time -o "$2" -f %e taskset -c "$1" "$bin" analyze --threads 1 --format json "$file" \
        >/dev/null 2>&1 || true
}

cat "$file" >/dev/null
echo "| round | alone s | pair core 0 s | pair core 1 s | ceiling |"
echo "|---:|---:|---:|---:|---:|"
for i in $(seq "$rounds"); do
    run 1 "$work/alone"
    run 0 "$work/p0" &
    run 1 "$work/p1"
    wait
    awk -v i="$i" -v a="$(tail -1 "$work/alone")" -v p="$(tail -1 "$work/p0")" \
        -v q="$(tail -1 "$work/p1")" 'BEGIN {
            m = (p > q) ? p : q
            printf "| %d | %.2f | %.2f | %.2f | %.2f× |\n", i, a, p, q, 2 * a / m
        }'
done
