#!/usr/bin/env bash
# Commands measured in turn on one capture, round after round, so that a shared machine's slow
# moments fall on every command alike (on the 2-core VM of BENCHMARKS.md, the same run varies by
# ±20 % over minutes; rows measured one after the other then compare the moments, not the commands).
#
#   scripts/interleaved-bench.sh RUNS FILE -- LABEL CPUS COMMAND... [-- LABEL CPUS COMMAND...]...
#
# Each COMMAND gets FILE as its last argument and runs pinned with `taskset -c CPUS`, under
# /usr/bin/time. Prints a Markdown table: median wall time and its MB/s (10^6 bytes), the best run's
# MB/s, median CPU time (user + system), the largest peak RSS, the median of minor page faults, and
# the first command's wall time over this one's, round by round (median and quartiles of the
# rounds). The faults tell the page cache's state, which changes the figures: a capture file
# written moments ago sits in small folios, mapped 64 KiB a fault (~3,400 faults a run for the
# 183 MB bench capture), one read cold by netsleuth's mapping in huge ones, mapped 2 MiB a fault
# (~600-1,100 in all; one thread ran 14-19 % faster, BENCHMARKS.md "eleventh pass" and "nineteenth
# pass"). Example
# (BENCHMARKS.md, "Per-packet cost"):
#
#   scripts/interleaved-bench.sh 15 snap128.pcap \
#       -- one-thread 1 target/release/netsleuth analyze --threads 1 --format json \
#       -- two-threads 0,1 target/release/netsleuth analyze --threads 2 --format json
#
# Needs: taskset (util-linux), /usr/bin/time (time), python3.
set -euo pipefail

if [ $# -lt 5 ] || [ "$3" != "--" ]; then
    echo "usage: $0 RUNS FILE -- LABEL CPUS COMMAND... [-- LABEL CPUS COMMAND...]..." >&2
    exit 2
fi
runs="$1"
file="$2"
shift 3
cmds=()
cur=""
for a in "$@"; do
    if [ "$a" = "--" ]; then
        [ -n "$cur" ] && cmds+=("$cur")
        cur=""
    else
        cur="$cur $a"
    fi
done
[ -n "$cur" ] && cmds+=("$cur")

work="$(mktemp -d /tmp/netsleuth-interleaved.XXXXXX)"
trap 'rm -rf "$work"' EXIT
cat "$file" >/dev/null # from the page cache from the first round on
for ((r = 0; r < runs; r++)); do
    for i in "${!cmds[@]}"; do
        # shellcheck disable=SC2086 # the command's words
        set -- ${cmds[$i]}
        label="$1"
        cpus="$2"
        shift 2
        start=$EPOCHREALTIME
        # Exit status 1 (an incident found) is a complete run.
        /usr/bin/time -o "$work/time" -f "%U %S %M %R" taskset -c "$cpus" "$@" "$file" >/dev/null 2>&1 || true
        end=$EPOCHREALTIME
        echo "$i $label $start $end $(tail -1 "$work/time")" >>"$work/runs"
    done
done
python3 - "$work/runs" "$(stat -c %s "$file")" <<'PY'
import statistics as st
import sys

rows = {}
for line in open(sys.argv[1]):
    i, label, start, end, user, system, rss, faults = line.split()
    rows.setdefault((int(i), label), []).append(
        (float(end) - float(start), float(user) + float(system), int(rss), int(faults)))
mb = int(sys.argv[2]) / 1e6
print(f"{mb:.1f} MB")
# Each round's first command over this one, round by round: the pair ran seconds apart, so a
# slow phase of the machine falls on both and the ratio keeps what the commands differ by.
first = rows[min(rows)]
print("| command | wall s (median) | MB/s (median) | MB/s (best run) | CPU s (median) | peak RSS MB | minor faults (median) | runs | first / this, median of rounds (quartiles) |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
for (_, label), v in sorted(rows.items()):
    wall = st.median(x[0] for x in v)
    cpu = st.median(x[1] for x in v)
    best = min(x[0] for x in v)
    rss = max(x[2] for x in v) / 1024
    faults = st.median(x[3] for x in v)
    ratios = [f[0] / x[0] for f, x in zip(first, v)]
    q = st.quantiles(ratios, n=4) if len(ratios) > 1 else ratios * 3
    print(f"| {label} | {wall:.3f} | {mb / wall:.0f} | {mb / best:.0f} | {cpu:.2f} | {rss:.1f} | {faults:.0f} | {len(v)} "
          f"| {st.median(ratios):.2f}× ({q[0]:.2f}–{q[2]:.2f}) |")
PY
