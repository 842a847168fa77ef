#!/usr/bin/env bash
# What the two-thread split costs, in instructions, free of the VM's noise: one thread's count is
# the same on every run; the halves' move by a few instructions a packet between runs (where the
# detectors run follows which half waits, and the waits spin).
# Runs `netsleuth analyze` once with one thread and once with two under valgrind's callgrind
# (`--separate-threads=yes`) and prints instructions a packet: one thread's; the reading thread's
# and the back's (the flow engine's) with two; their sum over one thread's (what the split adds);
# and one thread's over the larger half, the speed-up two threads would reach if both halves ran at
# the same instructions a cycle and never waited. The timings (`scripts/pipeline-timings.sh`) say
# how the halves' cycles compare; this says how their work does, so a change to the split shows
# the instructions it moved or saved the first time it is run (BENCHMARKS.md, "Per-packet cost,
# twenty-third pass").
#
#   scripts/split-instructions.sh FILE [NETSLEUTH]
#
# NETSLEUTH defaults to target/release/netsleuth. Needs: valgrind, python3. Takes ~50× the
# analysis's own time (the 183 MB snaplen-128 bench capture: ~15 s for both runs).
set -euo pipefail

if [ $# -lt 1 ]; then
    echo "usage: $0 FILE [NETSLEUTH]" >&2
    exit 2
fi
file="$1"
bin="${2:-target/release/netsleuth}"
command -v valgrind >/dev/null || {
    echo "$0: valgrind is needed (apt-get install valgrind)" >&2
    exit 2
}
work="$(mktemp -d /tmp/netsleuth-split.XXXXXX)"
trap 'rm -rf "$work"' EXIT

for threads in 1 2; do
    # Exit status 1 (an incident found) is a complete run; `--timings` gives the record count.
    valgrind --tool=callgrind --separate-threads=yes --callgrind-out-file="$work/t$threads" \
        "$bin" analyze --threads "$threads" --timings --format json "$file" \
        >/dev/null 2>"$work/stderr.$threads" || true
done
python3 - "$work" <<'PY'
import glob, re, sys

work = sys.argv[1]

def records(threads):
    text = open(f"{work}/stderr.{threads}").read()
    m = re.search(r"timings, \d threads? \(([\d,]+) records", text)
    if not m:
        sys.exit(f"no timings in the {threads}-thread run's stderr:\n{text[-2000:]}")
    return int(m.group(1).replace(",", ""))

def per_thread(threads):
    """Instructions of each thread of the run: the file's `summary:` line, by thread number."""
    out = {}
    for path in glob.glob(f"{work}/t{threads}*"):
        n = re.search(r"-(\d+)$", path)
        for line in open(path):
            if line.startswith("summary:"):
                out[int(n.group(1)) if n else 1] = int(line.split()[1])
                break
    return out

n = records(1)
if records(2) != n:
    sys.exit("the two runs read different record counts")
one = sum(per_thread(1).values())
two = per_thread(2)
reading = two.pop(1)
# The back is the busiest thread the reading thread started; the others are the page mapper's
# idle work and the end's share of the detectors.
back_thread = max(two, key=two.get)
back = two.pop(back_thread)
rest = sum(two.values())
per = lambda x: x / n
print(f"{n:,} records")
print(f"one thread            {per(one):7.1f} instructions a packet")
print(f"two threads: reading  {per(reading):7.1f}")
print(f"             back     {per(back):7.1f}")
print(f"             others   {per(rest):7.1f} (the end's detectors, the page mapper)")
total = reading + back + rest
print(f"split adds            {per(total - one):7.1f} ({(total / one - 1) * 100:.0f} % of one thread)")
print(f"one thread over the larger half: {one / max(reading, back):.2f}x")
PY
