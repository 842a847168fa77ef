#!/usr/bin/env bash
# Regenerates fixtures/lab/: runs every lab scenario (the incident, and its --mitigated run; healthy
# once) on this machine's kernel and keeps the node-view and client-view captures of each run, plus
# the node facts and conntrack events that go with them, and writes fixtures/lab/README.md.
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
    echo "- \`node.pcap\`: \`tcpdump -i any\` in the incident node's namespace (pcap, LINUX_SLL2, snaplen 256): each"
    echo "  packet on every interface, before and after NAT (a forwarded packet appears on its way in and out)."
    echo "- \`client.pcap\`: the client side's own view (pcap, Ethernet, snaplen 256): \`tcpdump -i eth0\` in the client"
    echo "  pod; for tw-recycle-paws \`-i cni0\` in the client node (both client pods, before SNAT); for"
    echo "  local-source-drop \`-i eth0\` of the load balancer. snat-port-clash and tw-recycle-paws capture TCP"
    echo "  only, snat-port-clash SYNs and RSTs only (\`run.json\` lists the exact capture commands)."
    echo "- \`conntrack-events.txt\`: \`conntrack -E -o timestamp,id\` in the node namespace during the run."
    echo "- \`facts.json\`: node facts measured in the node namespace (sysctls, services, addresses, resolv.conf"
    echo "  nameservers, the client's hosts entries); \`emulated_sysctls\` lists values the scenario emulates."
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
    for f in node.pcap client.pcap conntrack-events.txt; do
        [ -f "$run_dir/$f" ] && cp "$run_dir/$f" "$out/$f"
    done
    [ -f "$run_dir/node/facts.json" ] && cp "$run_dir/node/facts.json" "$out/facts.json"
    [ -f "$run_dir/run.json" ] && cp "$run_dir/run.json" "$out/run.json"
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
    jq -r --arg name "$name" \
        '"| `\($name)` | \(.incident // "healthy") | \(.reproduction.kind) | \(.node_facts.kernel_release // "?") | \(.outcome | gsub("\\|"; "/")) |"' \
        "$out/run.json" >> "$work/README.md"
done
cp "$work/README.md" "$dest/README.md"
echo "regen-lab-fixtures: wrote $(ls -d "$dest"/*/ | wc -l) runs into $dest" >&2
