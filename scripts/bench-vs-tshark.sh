#!/usr/bin/env bash
# Throughput and peak memory of `netsleuth analyze` against tshark's expert analysis and a plain
# tcpdump read, on the same capture, one core each (see BENCHMARKS.md).
#
#   scripts/bench-vs-tshark.sh FILE.pcap
#
# Environment:
#   RUNS=5                 runs per row (tshark runs once: it is slow); the median wall and CPU times
#                          are reported, the best run's throughput (on a shared machine the least
#                          disturbed one), and the largest peak RSS of the runs
#   TSHARK_MAX_PACKETS=N   run tshark on the first N packets only (a prefix made with `editcap -r`),
#                          and netsleuth on the same prefix as well, so the two rows compare like with
#                          like; the full-file rows are still printed
#   SKIP_TSHARK=1          leave tshark out (a quick run)
#   BENCH_CPU=1            the core everything is pinned to with `taskset -c`
#   BENCH_CPUS_2=0,1       the two cores of the `--threads 2` row
#
# Each tool runs under `/usr/bin/time -v`, pinned to one core, after the file has been read once so
# that it comes from the page cache. MB means 10^6 bytes. In the pipe rows the first `cat` is not
# pinned (it feeds the pipe from the other core): wall time is the pipeline's, CPU time is both
# processes' together, peak RSS the larger of the two.
#
# Needs: cargo, tshark, tcpdump, capinfos/editcap (wireshark tools), taskset, /usr/bin/time
# (apt-get install tshark tcpdump util-linux time).
set -euo pipefail

if [ $# -ne 1 ]; then
    echo "usage: $0 FILE.pcap" >&2
    exit 2
fi
file="$1"
runs="${RUNS:-5}"
pin_cpu="${BENCH_CPU:-1}"
two_cpus="${BENCH_CPUS_2:-0,1}"
root="$(cd "$(dirname "$0")/.." && pwd)"

for tool in tshark tcpdump capinfos editcap taskset /usr/bin/time; do
    if ! command -v "$tool" >/dev/null; then
        echo "bench-vs-tshark: $tool not found (apt-get install tshark tcpdump util-linux time)" >&2
        exit 2
    fi
done
if [ ! -r "$file" ]; then
    echo "bench-vs-tshark: cannot read $file" >&2
    exit 2
fi

echo "building netsleuth (release)..." >&2
(cd "$root" && cargo build --release -q -p netsleuth)
netsleuth="$root/target/release/netsleuth"

work="$(mktemp -d /tmp/netsleuth-bench.XXXXXX)"
trap 'rm -rf "$work"' EXIT

# One measured run: prints "wall_seconds cpu_seconds max_rss_kb exit_code". Wall time is taken
# around /usr/bin/time with the shell's nanosecond clock (time -v rounds to 10 ms, too coarse for a
# sub-second run; its own start-up, ~1 ms, is included). CPU time is user + system of the measured
# command and its children: on a shared machine it is the steadier figure, wall time the one a user
# waits for.
measure() {
    local log="$work/time.log"
    local rc=0 t0 t1
    t0=$(date +%s%N)
    /usr/bin/time -v -o "$log" "$@" || rc=$?
    t1=$(date +%s%N)
    local rss cpu
    rss=$(awk -F': ' '/Maximum resident set size/ { print $2 }' "$log")
    cpu=$(awk -F': ' '/User time|System time/ { s += $2 } END { printf "%.2f", s }' "$log")
    echo "$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.4f", (b - a) / 1e9 }') $cpu $rss $rc"
}

# Median wall time and largest RSS over $runs runs of a command; fails on an unexpected exit code.
# Args: OK_CODES LABEL BYTES CMD...
median() {
    printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'
}

rows=()
bench() {
    local ok="$1" label="$2" bytes="$3"
    shift 3
    local n="$runs"
    # tshark is slow: one run.
    [ "$label" = "${label#tshark}" ] || n=1
    local walls=() cpus=() rss_max=0 wall cpu rss rc
    for _ in $(seq "$n"); do
        read -r wall cpu rss rc < <(measure "$@")
        case " $ok " in
            *" $rc "*) ;;
            *)
                echo "bench-vs-tshark: '$label' exited with $rc" >&2
                exit 1
                ;;
        esac
        walls+=("$wall")
        cpus+=("$cpu")
        [ "$rss" -gt "$rss_max" ] && rss_max="$rss"
    done
    local row best
    wall=$(median "${walls[@]}")
    best=$(printf '%s\n' "${walls[@]}" | sort -g | head -1)
    cpu=$(median "${cpus[@]}")
    row=$(awk -v l="$label" -v b="$bytes" -v w="$wall" -v m="$best" -v c="$cpu" -v r="$rss_max" -v n="$n" 'BEGIN {
        gsub(/\|/, "\\|", l)
        printf "| %s | %.1f | %.3f | %.0f | %.0f | %.2f | %.0f | %.1f | %d |", l, b / 1e6, w, (w > 0 ? b / 1e6 / w : 0),
            (m > 0 ? b / 1e6 / m : 0), c, (c > 0 ? b / 1e6 / c : 0), r / 1024, n }')
    rows+=("$row")
    echo "$row" >&2
}

describe() {
    local f="$1"
    local bytes packets
    bytes=$(stat -c %s "$f")
    packets=$(capinfos -M -c -T "$f" | awk -F'\t' 'NR == 2 { print $2 }')
    awk -v f="$f" -v b="$bytes" -v p="$packets" 'BEGIN {
        printf "%s: %.1f MB, %d packets, mean %.0f bytes per record (file bytes / packets)\n", f, b / 1e6, p, b / p }'
}

warm() {
    cat "$1" >/dev/null
}

run_set() {
    local f="$1" with_tshark="$2" bytes
    bytes=$(stat -c %s "$f")
    warm "$f"
    # netsleuth exits 1 when it finds an incident: still a complete run.
    bench "0 1" "netsleuth analyze --threads 1 --format json FILE" "$bytes" \
        sh -c 'exec taskset -c "$1" "$2" analyze --threads 1 --format json "$3" >"$4"' sh \
        "$pin_cpu" "$netsleuth" "$f" "$work/report.json"
    # The file read through a buffer instead of mapped (what a pipe or a gzip file costs before
    # decompression).
    bench "0 1" "netsleuth analyze --threads 1 --no-mmap --format json FILE" "$bytes" \
        sh -c 'exec taskset -c "$1" "$2" analyze --threads 1 --no-mmap --format json "$3" >"$4"' sh \
        "$pin_cpu" "$netsleuth" "$f" "$work/report-read.json"
    cmp -s "$work/report.json" "$work/report-read.json" || {
        echo "bench-vs-tshark: the report of the file read through a buffer differs from the mapped one's" >&2
        exit 1
    }
    # Both cores: decoding on one, the flow engine and detectors on the other. The report must be the
    # one-thread report byte for byte.
    bench "0 1" "netsleuth analyze --threads 2 --format json FILE (2 cores)" "$bytes" \
        sh -c 'exec taskset -c "$1" "$2" analyze --threads 2 --format json "$3" >"$4"' sh \
        "$two_cpus" "$netsleuth" "$f" "$work/report-2.json"
    cmp -s "$work/report.json" "$work/report-2.json" || {
        echo "bench-vs-tshark: the two-thread report differs from the one-thread report" >&2
        exit 1
    }
    bench "0 1" "cat FILE | netsleuth analyze --threads 1 --format json -" "$bytes" \
        sh -c 'cat "$1" | taskset -c "$2" "$3" analyze --threads 1 --format json - >"$4"' sh \
        "$f" "$pin_cpu" "$netsleuth" "$work/report-stdin.json"
    # The pipe's own ceiling on this machine, for reading the stdin row.
    bench "0" "cat FILE | cat > /dev/null" "$bytes" \
        sh -c 'cat "$1" | taskset -c "$2" cat >/dev/null' sh "$f" "$pin_cpu"
    bench "0" "tcpdump -nr FILE > /dev/null" "$bytes" \
        sh -c 'taskset -c "$1" tcpdump -nr "$2" >/dev/null 2>&1' sh "$pin_cpu" "$f"
    if [ "$with_tshark" = yes ] && [ -z "${SKIP_TSHARK:-}" ]; then
        bench "0" "tshark -q -z expert -r FILE" "$bytes" \
            sh -c 'taskset -c "$1" tshark -q -z expert -r "$2" >"$3" 2>&1' sh "$pin_cpu" "$f" "$work/tshark.txt"
    fi
}

# Commands run through `sh -c` (for redirections and the pipe). Linux reports to /usr/bin/time the
# largest peak RSS of the shell and its waited-for children, i.e. the tool's own (cat's is ~2 MB).
print_table() {
    echo "| command | MB | wall s | MB/s | MB/s best run | CPU s | MB/s of CPU | peak RSS MB | runs |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    printf '%s\n' "${rows[@]}"
}

echo "## $(describe "$file")"
if [ -n "${TSHARK_MAX_PACKETS:-}" ]; then
    run_set "$file" no
    print_table
    prefix="$work/prefix.pcap"
    editcap -r "$file" "$prefix" "1-$TSHARK_MAX_PACKETS"
    rows=()
    echo
    echo "## prefix: $(describe "$prefix")"
    run_set "$prefix" yes
    print_table
else
    run_set "$file" yes
    print_table
fi

echo
echo "netsleuth stats (full file):"
"$netsleuth" analyze --threads 1 --format json "$file" | python3 -c '
import json, sys
s = json.load(sys.stdin)["stats"]
keys = ["records", "bytes", "tcp_packets", "tcp_copies", "tcp_connections", "tcp_connections_multi_leg",
        "tcp_peak_live_connections", "tcp_data_retransmissions", "tcp_resets"]
print("  " + ", ".join(f"{k}={s[k]}" for k in keys))
span = (s["last_ts_ns"] - s["first_ts_ns"]) / 1e9
mean = s["bytes"] / max(1, s["records"])
print(f"  capture span {span:.1f} s; mean captured bytes per packet {mean:.0f}")
' || true
