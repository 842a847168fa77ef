#!/bin/bash
# watch on one namespace holding N NATed, idle TCP connections (nft DNAT on its loopback, a socat
# backend, the kernel's default established timeout) for 30 s; prints watch's CPU. Root; the namespace is
# made here and removed on exit.   sudo scripts/watch-nat-bench.sh target/release/netsleuth [N]
# TIMEOUT=S sets the namespace's established timeout (the connections then send a byte every S/2 s so
# their entries stay; watch reads sockets every second when S <= 8); FOR=DURATION how long watch runs.
set -e
BIN=$1; N=${2:-50}
ns=nsnat-$$
cleanup() { ip netns pids $ns | xargs -r kill 2>/dev/null || true; sleep 0.2; ip netns del $ns 2>/dev/null || true; }
trap cleanup EXIT
ip netns add $ns
ip -n $ns link set lo up
if [ -n "$TIMEOUT" ]; then
  ip netns exec $ns sysctl -qw net.netfilter.nf_conntrack_tcp_timeout_established=$TIMEOUT
fi

ip -n $ns addr add 10.0.0.2/32 dev lo
ip netns exec $ns nft -f - <<'NFT'
table ip nat {
  chain out {
    type nat hook output priority -100;
    ip daddr 10.96.0.1 tcp dport 80 dnat to 10.0.0.2:8080
  }
}
NFT
ip -n $ns route add local 10.96.0.1/32 dev lo
ip netns exec $ns socat TCP-LISTEN:8080,bind=10.0.0.2,fork,reuseaddr SYSTEM:'sleep 600' &
sleep 0.5
ip netns exec $ns python3 -c "
import socket,time,sys
ss=[socket.create_connection(('10.96.0.1',80)) for _ in range($N)]
t=${TIMEOUT:-0}
end=time.time()+300
while time.time()<end:
    if t:
        time.sleep(t/2)
        for s in ss: s.send(b'.')
    else:
        time.sleep(1)
" natclient-$$ &
sleep 3
ip netns exec $ns conntrack -L 2>/dev/null | grep -c 10.96.0.1 || true
/usr/bin/time -f "CPU user %U s sys %S s wall %e s maxrss %M KB" $BIN watch --netns $ns --no-tap --no-drop-reasons --for ${FOR:-30s} --format json > /dev/null || true
