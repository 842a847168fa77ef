#!/usr/bin/env bash
# Regenerates the README's pictures of the HTML report (docs/img/html-*.png): renders four lab
# fixtures with `--format html`, hides all but the first finding's title and first diagram (or its
# counter chart), and screenshots that in headless Chromium; pngquant keeps each file small.
# Needs: a built target/debug/netsleuth, chromium, pngquant (Debian packages).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=target/debug/netsleuth
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# Only the first finding's heading and first picture.
focus='<style>body>*:not(section.finding){display:none}section.finding~section.finding{display:none}
section.finding>*{display:none}section.finding>h3,section.finding>.diagram,section.finding>.counters{display:flex}section.finding>ul.evidence{display:block}
section.finding>.diagram~.diagram{display:none}body{padding:8px 12px}</style></head>'
shot() { # name, height, netsleuth args...
  local name=$1 height=$2; shift 2
  "$bin" "$@" --format html -o "$tmp/$name.html" || [ $? -eq 1 ]
  sed -i "s#</head>#${focus//$'\n'/}#" "$tmp/$name.html"
  chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size="1180,$height" \
    --screenshot="$tmp/$name.png" "file://$tmp/$name.html" >/dev/null 2>&1
  pngquant --force --quality=60-85 --output "docs/img/html-$name.png" "$tmp/$name.png"
}
lab=fixtures/lab
shot ladder 330 analyze $lab/conntrack-dnat-rebalance/node.pcap --node $lab/conntrack-dnat-rebalance/node.tar.gz
shot dns-timeline 300 analyze $lab/dns-conntrack-race/node.pcap --node $lab/dns-conntrack-race/node.tar.gz
shot listen-overflow 330 analyze $lab/listen-queue-overflow/node.pcap --node $lab/listen-queue-overflow/node.tar.gz
shot check-counters 300 check --bundle $lab/snat-port-clash/node.tar.gz
ls -l docs/img/html-*.png
