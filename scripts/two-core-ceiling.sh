#!/usr/bin/env bash
# What two cores of this machine give to independent work, and how much of it netsleuth's own
# two-thread analysis takes. Round after round: one `netsleuth analyze --threads 1` run alone on
# core 1; two of them at once (cores 0 and 1); one `--threads 2` run on cores 0,1. The pair's
# throughput over the lone run's (2 × alone / slower of the pair) is the ceiling any two-thread
# split of the same analysis could reach in that moment; on a shared VM it moves with the
# neighbours (a median of 1.8–2.0× in the earlier sessions of BENCHMARKS.md, 1.71× in the
# twentieth pass's). The two-thread run over the lone one is what the split reached, and its share
# of the round's ceiling is what the split itself costs, whatever the machine's phase.
#
#   scripts/two-core-ceiling.sh ROUNDS FILE [NETSLEUTH]
#
# Prints one row a round, then the medians and quartiles over the rounds. Wall times are taken with
# bash's $EPOCHREALTIME (microseconds), not /usr/bin/time's 10 ms.
#
# Needs: taskset (util-linux), awk, python3.
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

run() { # CORES THREADS OUT: one pinned run, its wall seconds written to OUT
    local start=$EPOCHREALTIME
    # Exit status 1 (an incident found) is a complete run.
    taskset -c "$1" "$bin" analyze --threads "$2" --format json "$file" >/dev/null 2>&1 || true
    local end=$EPOCHREALTIME
    echo "$start $end" | awk '{ printf "%.6f\n", $2 - $1 }' >"$3"
}

cat "$file" >/dev/null # from the page cache from the first round on
for i in $(seq "$rounds"); do
    run 1 1 "$work/alone"
    run 0 1 "$work/p0" &
    run 1 1 "$work/p1"
    wait
    run 0,1 2 "$work/two"
    echo "$(cat "$work/alone") $(cat "$work/p0") $(cat "$work/p1") $(cat "$work/two")" >>"$work/rounds"
done
python3 - "$work/rounds" <<'PY'
import statistics as st
import sys

print("| round | alone s | pair core 0 s | pair core 1 s | ceiling | two threads s | two threads | of the ceiling |")
print("|---:|---:|---:|---:|---:|---:|---:|---:|")
cols = {"ceiling": [], "two": [], "share": []}
for i, line in enumerate(open(sys.argv[1]), 1):
    alone, p0, p1, two = map(float, line.split())
    ceiling = 2 * alone / max(p0, p1)
    ratio = alone / two
    cols["ceiling"].append(ceiling)
    cols["two"].append(ratio)
    cols["share"].append(ratio / ceiling)
    print(f"| {i} | {alone:.3f} | {p0:.3f} | {p1:.3f} | {ceiling:.2f}× | {two:.3f} | {ratio:.2f}× | {ratio / ceiling:.0%} |")


def summary(v, fmt):
    q = st.quantiles(v, n=4) if len(v) > 1 else v * 3
    return f"{fmt(st.median(v))} ({fmt(q[0])}–{fmt(q[2])})"


times = "×"
print()
print(f"Median (quartiles) over {len(cols['two'])} rounds: ceiling {summary(cols['ceiling'], lambda x: f'{x:.2f}{times}')}, "
      f"two threads {summary(cols['two'], lambda x: f'{x:.2f}{times}')}, "
      f"two threads' share of the round's ceiling {summary(cols['share'], lambda x: f'{x:.0%}')}.")
PY
