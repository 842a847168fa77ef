#!/usr/bin/env bash
# Regenerates fixtures/lab/: runs every lab scenario (the incident, and its --mitigated run; healthy
# once) on this machine's kernel and keeps the captures of each run from every vantage its topology
# has, the node bundle and node facts that go with them, the conntrack events, and writes
# fixtures/lab/README.md.
#
# Needs root, jq and the lab's tools (apt-get install iproute2 iptables nftables conntrack tcpdump
# procps jq).
# Everything happens inside network namespaces the lab creates and removes; the host is not touched.
#
#   sudo scripts/regen-lab-fixtures.sh            # all scenarios
#   sudo scripts/regen-lab-fixtures.sh healthy    # only the named ones
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
dest="$root/fixtures/lab"
work="$(mktemp -d /tmp/netsleuth-lab-fixtures.XXXXXX)"
trap 'rm -rf "$work"' EXIT

if [ "$(id -u)" -ne 0 ]; then
    echo "regen-lab-fixtures: needs root (the lab creates network namespaces)" >&2
    exit 2
fi

cd "$root"
# The lab's own test binary drives the runs (no CLI dependency): LAB_FIXTURES_OUT makes the ignored
# `write_fixture_runs` test run each scenario with --out under that directory.
LAB_FIXTURES_OUT="$work" LAB_ONLY="${*:-}" \
    cargo test -q -p netsleuth-lab --test scenarios -- --ignored --exact write_fixture_runs --nocapture >&2

mkdir -p "$dest"
max_bytes=204800
kernel="$(uname -r)"
{
    echo "# Lab fixtures"
    echo
    echo "Captures produced by \`netsleuth lab\` scenarios (crates/netsleuth-lab) on Linux $kernel,"
    echo "regenerated with \`sudo scripts/regen-lab-fixtures.sh\` (do not edit by hand)."
    echo "Each directory is one run: \`<scenario>/\` shows the incident, \`<scenario>-mitigated/\` the same"
    echo "traffic with the documented fix. Emulated scenarios reproduce an old kernel's or library's wire"
    echo "behaviour on a new kernel; \`run.json\` says so in \`reproduction\`."
    echo
    echo "Files per run:"
    echo
    echo "Captures are pcap at snaplen 262 (\`tcpdump -s 262\`), one file per vantage point the scenario's"
    echo "topology has (\`run.json\` lists the exact capture commands); snat-port-clash and tw-recycle-paws"
    echo "capture TCP only, snat-port-clash handshakes (SYN, SYN-ACK) and RSTs only."
    echo
    echo "- \`node.pcap\`: \`tcpdump -i any\` in the incident node's namespace (LINUX_SLL2): each packet on every"
    echo "  interface, before and after NAT (a forwarded packet appears on its way in and out)."
    echo "- \`client.pcap\`: the client side's own view (Ethernet): \`tcpdump -i eth0\` in the client pod; for"
    echo "  tw-recycle-paws \`-i any\` in the client node (LINUX_SLL2: both client pods before SNAT, and after it); for local-source-drop"
    echo "  \`-i eth0\` of the load balancer."
    echo "- \`server.pcap\`: the server's own view (Ethernet): \`tcpdump -i eth0\` in the server pod (the DNS pod for"
    echo "  the DNS scenarios), or in the remote node when the server is the remote node itself."
    echo "- \`veth.pcap\`: the node's interface toward the server (Ethernet): the server pod's veth on the node, or"
    echo "  the node's \`eth0\` when the server is behind the remote node."
    echo "- \`routing.pcap\`: where the scenario has one, a node that only routes (the remote node with the backend"
    echo "  or DNS pods behind it, no NAT): \`tcpdump -i any\` there (LINUX_SLL2), each packet seen twice."
    echo "- \`node.tar.gz\`: \`netsleuth collect\` of the incident node's namespace and its pods (a real bundle:"
    echo "  \`netsleuth check --bundle\`, \`analyze --node\`)."
    echo "- \`facts.json\`: the node facts the run's analysis read: the bundle's (\`NodeFacts\` → \`NodeContext\`), plus"
    echo "  the sysctls an emulated scenario plays (\`emulated_sysctls\` in \`run.json\`); \`analyze --node facts.json\`."
    echo "- \`conntrack-events.txt\`: \`conntrack -E -o timestamp,id\` in the node namespace during the run."
    echo "- \`run.json\`: the run's outcome as the application saw it, counter deltas, drop reasons, notes."
    echo
    echo "| run | incident | reproduction | kernel | outcome |"
    echo "|---|---|---|---|---|"
} > "$work/README.md"

for run_dir in "$work"/runs/*/; do
    name="$(basename "$run_dir")"
    out="$dest/$name"
    rm -rf "$out"
    mkdir -p "$out"
    for f in node.pcap client.pcap server.pcap veth.pcap routing.pcap node.tar.gz facts.json \
        conntrack-events.txt run.json; do
        if [ -f "$run_dir/$f" ]; then cp "$run_dir/$f" "$out/$f"; fi
    done
    # Bulk filler state (conntrack-table-full fills a table with entries between RFC 2544 benchmark
    # addresses, 198.18.0.0/15): its events are counted, not kept, so the file stays small.
    if [ -f "$out/conntrack-events.txt" ]; then
        awk '/ src=198\.1[89]\./ { n++; next } { print } END { if (n) printf "# %d events of filler entries (198.18.0.0/15) left out by regen-lab-fixtures.sh\n", n }' \
            "$out/conntrack-events.txt" > "$out/conntrack-events.txt.tmp"
        mv "$out/conntrack-events.txt.tmp" "$out/conntrack-events.txt"
    fi
    for f in "$out"/*.pcap; do
        size=$(stat -c %s "$f")
        if [ "$size" -gt "$max_bytes" ]; then
            echo "regen-lab-fixtures: $f is $size bytes (> $max_bytes); lower the scenario's traffic" >&2
            exit 1
        fi
    done
done
# The table covers every run in fixtures/lab, also those this invocation did not regenerate.
for out in "$dest"/*/; do
    name="$(basename "$out")"
    [ -f "$out/run.json" ] || continue
    kernel="$(jq -r '.kernel_release // "?"' "$out/facts.json" 2>/dev/null || echo "?")"
    jq -r --arg name "$name" --arg kernel "$kernel" \
        '"| `\($name)` | \(.incident // "healthy") | \(.reproduction.kind) | \($kernel) | \(.outcome | gsub("\\|"; "/")) |"' \
        "$out/run.json" >> "$work/README.md"
done
cp "$work/README.md" "$dest/README.md"
echo "regen-lab-fixtures: wrote $(ls -d "$dest"/*/ | wc -l) runs into $dest" >&2
