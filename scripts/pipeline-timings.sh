#!/usr/bin/env bash
# Where two threads' time goes, round after round: one thread (core 1) and two (cores 0 and 1) in
# turn on one capture, each with `analyze --timings`, and per round the packets' time of each run,
# each half's work and waiting, and what the halves' work leaves possible: one thread's packets over
# the busier half's work is what two threads would reach if they never waited for each other.
#
#   scripts/pipeline-timings.sh ROUNDS FILE [BINARY]
#
# BINARY defaults to target/release/netsleuth. Needs: taskset (util-linux), python3.
# (BENCHMARKS.md, "Per-packet cost, twenty-second pass".)
set -euo pipefail

if [ $# -lt 2 ]; then
    echo "usage: $0 ROUNDS FILE [BINARY]" >&2
    exit 2
fi
rounds="$1"
file="$2"
bin="${3:-target/release/netsleuth}"
work="$(mktemp -d /tmp/netsleuth-timings.XXXXXX)"
trap 'rm -rf "$work"' EXIT

cat "$file" >/dev/null # from the page cache from the first round on
for i in $(seq "$rounds"); do
    # Exit status 1 (an incident found) is a complete run.
    taskset -c 1 "$bin" analyze --threads 1 --timings --format json "$file" 2>"$work/one.$i" >/dev/null || true
    taskset -c 0,1 "$bin" analyze --threads 2 --timings --format json "$file" 2>"$work/two.$i" >/dev/null || true
done
python3 - "$work" "$rounds" <<'PY'
import re
import statistics as st
import sys

work, rounds = sys.argv[1], int(sys.argv[2])


# A duration as `--timings` prints it (`1.234 s`, `12.3 ms`, `700 µs`), in seconds.
D = r"([\d.]+) (s|ms|µs)"
UNIT = {"s": 1.0, "ms": 1e-3, "µs": 1e-6}


def secs(m, at=1):
    return float(m.group(at)) * UNIT[m.group(at + 1)]


def parse(path):
    text = open(path).read()
    t = {"all": secs(re.search(rf"\): {D} in all", text)),
         "packets": secs(re.search(rf"\n  the packets +{D}", text))}
    for half in ("reading thread", "back"):
        m = re.search(rf"\n    {half} +{D} busy .*?, {D} waiting", text)
        if m:
            t[half] = (secs(m, 1), secs(m, 3))
    return t


rows = []
print("| round | one thread: packets s | two: packets s | two over one | reading thread busy / waited s | back busy / waited s | one thread over the busier half's work |")
print("|---:|---:|---:|---:|---:|---:|---:|")
for i in range(1, rounds + 1):
    one, two = parse(f"{work}/one.{i}"), parse(f"{work}/two.{i}")
    (rb, rw), (bb, bw) = two["reading thread"], two["back"]
    row = {"one": one["packets"], "two": two["packets"], "ratio": one["packets"] / two["packets"],
           "all": one["all"] / two["all"], "rb": rb, "rw": rw, "bb": bb, "bw": bw,
           "bound": one["packets"] / max(rb, bb)}
    rows.append(row)
    print(f"| {i} | {row['one']:.3f} | {row['two']:.3f} | {row['ratio']:.2f}× | {rb:.3f} / {rw:.3f} | {bb:.3f} / {bw:.3f} | {row['bound']:.2f}× |")


def med(k):
    return st.median(r[k] for r in rows)


print()
print(f"Medians over {rounds} rounds: one thread's packets {med('one'):.3f} s, two threads' {med('two'):.3f} s "
      f"({med('ratio'):.2f}× the packets, {med('all'):.2f}× in all); reading thread {med('rb'):.3f} s busy, "
      f"{med('rw'):.3f} s waiting; back {med('bb'):.3f} s busy, {med('bw'):.3f} s waiting; "
      f"one thread over the busier half's work {med('bound'):.2f}×.")
PY
