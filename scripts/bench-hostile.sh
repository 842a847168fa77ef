#!/usr/bin/env bash
# Peak RSS and time of `netsleuth analyze` on the hostile generators of ../shared/hostile (release
# build, one core). Time should grow linearly with packets and peak RSS stay under the memory budget.
# Usage: scripts/bench-hostile.sh [OUTDIR]   (needs python3; writes generated captures to OUTDIR)
set -euo pipefail
cd "$(dirname "$0")/.."
H=../shared/hostile
OUT=${1:-${TMPDIR:-/tmp}/netsleuth-bench-hostile}
mkdir -p "$OUT"
cargo build --release -q -p netsleuth
B=target/release/netsleuth
gen() { [ -f "$OUT/$1.pcap" ] || python3 "$H/gen_scale.py" "${@:2}" "$OUT/$1.pcap" >/dev/null; }
measure() { # name file [args]
  local name=$1 f=$2; shift 2
  local pk; pk=$(stat -c %s "$f")
  /usr/bin/time -f "%e %M" -o "$OUT/time" taskset -c 0 $B analyze "$@" --format json "$f" >"$OUT/out.json" 2>/dev/null || true
  read -r secs kb < <(tail -1 "$OUT/time")
  python3 - "$name" "$secs" "$kb" "$OUT/out.json" <<'PY'
import json, sys
name, secs, kb, path = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
d = json.load(open(path)); s = d["stats"]
ids = ",".join(f["id"] for f in d["findings"] if f["kind"] == "incident") or "-"
print(f"| {name} | {s['records']:,} | {secs:.2f} | {kb/1024:.0f} | {s['tcp_peak_live_connections']:,} | {s['dns_peak_live_queries']:,} | {s['tcp_evicted']+s['dns_evicted']:,} | {ids} |")
PY
}
echo "| input | records | s | peak RSS MiB | peak live conns | peak live queries | evicted | incidents |"
echo "|---|---|---|---|---|---|---|---|"
for n in 250000 500000 1000000 2000000; do gen flood$n syn_flood $n 0 0; measure "syn_flood $n" "$OUT/flood$n.pcap"; done
for n in 500000 1000000; do gen dns$n dns_unanswered $n 0 0; measure "dns_unanswered $n" "$OUT/dns$n.pcap"; done
gen frags frags 1000000; measure "frags 1000000" "$OUT/frags.pcap"
for n in 12500 50000 100000; do gen mid$n midstream $n; measure "midstream $n" "$OUT/mid$n.pcap"; done
gen sweep sweep_quadratic 40000 20000; measure "sweep_quadratic 40000 20000" "$OUT/sweep.pcap"
gen keep keepalive_day 20000 24 600; measure "keepalive_day 20000 24 h" "$OUT/keep.pcap"
measure "syn_flood 1000000, --memory-budget 64" "$OUT/flood1000000.pcap" --memory-budget 64
measure "syn_flood 1000000, --memory-budget 400" "$OUT/flood1000000.pcap" --memory-budget 400
# 1,000 inputs: the same small capture a thousand times.
small=fixtures/lab/conntrack-dnat-rebalance/node.pcap
files=(); for i in $(seq 1000); do files+=("$small"); done
/usr/bin/time -f "%e %M" -o "$OUT/time" taskset -c 0 $B analyze "${files[@]}" >/dev/null 2>&1 || true
read -r secs kb < <(tail -1 "$OUT/time"); echo "| 1,000 inputs ($small) | - | $secs | $((kb/1024)) | | | | |"
