#!/usr/bin/env bash
# Makes a large, real-kernel TCP capture for benchmarking `netsleuth analyze` (see BENCHMARKS.md).
#
#   sudo scripts/make-bench-capture.sh OUT.pcap [SIZE_MB]      # default 1000 MB
#
# Topology (three network namespaces made here and removed on exit, failure or Ctrl-C; the host's
# interfaces, routes, sysctls and firewall are never touched):
#
#   client 198.18.1.2 --veth-- 198.18.1.1 node 198.18.2.1 --veth-- 198.18.2.2 server
#
# The node namespace plays a Kubernetes node: it DNATs a service address (198.19.0.10) to the server
# and masquerades the client, like kube-proxy. `tcpdump -i any -s 0` runs in the node namespace, so
# every packet is seen twice, before and after NAT — the capture netsleuth is meant for, and the one
# that exercises its flow engine across NAT legs. Addresses are from 198.18.0.0/15, the range reserved
# for benchmarks (RFC 2544). The veths have MTU 1500 and no TSO/GSO/GRO, so packets are wire-sized
# (at most 1514 bytes) instead of the 64 KB super-packets offloads would show to tcpdump.
#
# Traffic (a Python generator, written to a temporary directory): bulk uploads and downloads of tens
# of MB (rate-limited so the short connections are not drowned out), thousands of short
# request/response connections (1–4 requests each, replies 100 B–64 KB, either side closing first),
# and a few keep-alive connections with many small requests. The capture stops once OUT reaches
# SIZE_MB; the generators stop first so most connections end with their FINs in the capture.
#
# Needs root, python3, tcpdump, iproute2, nftables, ethtool.
set -euo pipefail

usage() {
    echo "usage: $0 OUT.pcap [SIZE_MB]" >&2
    exit 2
}
[ $# -ge 1 ] && [ $# -le 2 ] || usage
out="$1"
size_mb="${2:-1000}"
case "$size_mb" in '' | *[!0-9]*) usage ;; esac
# Safety stop: a slow machine still ends the run (the capture is then smaller than asked; we say so).
max_seconds="${BENCH_CAPTURE_MAX_SECONDS:-900}"

if [ "$(id -u)" -ne 0 ]; then
    echo "make-bench-capture: needs root (it creates network namespaces)" >&2
    exit 2
fi
# ethtool is required: without it the veths keep TSO/GRO and tcpdump records 64 KB super-packets.
for tool in ip tcpdump python3 nft ethtool; do
    if ! command -v "$tool" >/dev/null; then
        echo "make-bench-capture: $tool not found (apt-get install iproute2 tcpdump python3 nftables ethtool)" >&2
        exit 2
    fi
done

out_dir="$(dirname "$out")"
free_mb=$(df -Pm "$out_dir" | awk 'NR == 2 { print $4 }')
if [ "$free_mb" -lt $((size_mb * 2 + 1024)) ]; then
    echo "make-bench-capture: $out_dir has $free_mb MB free; need twice ${size_mb} MB + 1 GB headroom" >&2
    exit 2
fi

# Unique names: pid + a clock-derived suffix (a reused pid), short enough for interface-name limits.
tag="nsb$$x$((10#$(date +%N) % 1000))"
ns_client="$tag-c"
ns_node="$tag-n"
ns_server="$tag-s"
work="$(mktemp -d /tmp/netsleuth-bench-capture.XXXXXX)"
pids=()
created_ns=()

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    # Whatever still runs inside our namespaces is ours (we created them): stop it before removing them.
    for ns in "${created_ns[@]}"; do
        for pid in $(ip netns pids "$ns" 2>/dev/null); do
            kill "$pid" 2>/dev/null || true
        done
    done
    for pid in "${pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    for ns in "${created_ns[@]}"; do
        ip netns del "$ns" 2>/dev/null || true
    done
    rm -rf "$work"
    exit "$rc"
}
trap cleanup EXIT
trap 'echo "make-bench-capture: interrupted, cleaning up" >&2; exit 130' INT TERM

in_ns() {
    local ns="$1"
    shift
    ip netns exec "$ns" "$@"
}

for ns in "$ns_client" "$ns_node" "$ns_server"; do
    ip netns add "$ns"
    created_ns+=("$ns")
    in_ns "$ns" ip link set lo up
done
# veth ends are created directly inside the namespaces: no interface ever exists on the host.
ip link add c0 netns "$ns_client" type veth peer name n0 netns "$ns_node"
ip link add n1 netns "$ns_node" type veth peer name s0 netns "$ns_server"

offloads_off() {
    local ns="$1" dev="$2"
    in_ns "$ns" ethtool -K "$dev" tso off gso off gro off >/dev/null
}
setup_link() {
    local ns="$1" dev="$2" addr="$3"
    in_ns "$ns" ip link set "$dev" mtu 1500 up
    in_ns "$ns" ip addr add "$addr" dev "$dev"
    offloads_off "$ns" "$dev"
}
setup_link "$ns_client" c0 198.18.1.2/24
setup_link "$ns_node" n0 198.18.1.1/24
setup_link "$ns_node" n1 198.18.2.1/24
setup_link "$ns_server" s0 198.18.2.2/24
in_ns "$ns_client" ip route add default via 198.18.1.1
in_ns "$ns_server" ip route add default via 198.18.2.1

# Namespaced sysctls only (each namespace has its own copy).
in_ns "$ns_node" sysctl -qw net.ipv4.ip_forward=1
# The client opens tens of thousands of connections: a wide port range and TIME_WAIT reuse keep it
# from running out of ports.
in_ns "$ns_client" sysctl -qw net.ipv4.ip_local_port_range="1024 65000"
in_ns "$ns_client" sysctl -qw net.ipv4.tcp_tw_reuse=1
in_ns "$ns_server" sysctl -qw net.core.somaxconn=4096

in_ns "$ns_node" nft -f - <<'EOF'
table ip bench_nat {
    chain prerouting {
        type nat hook prerouting priority dstnat; policy accept;
        ip daddr 198.19.0.10 tcp dport { 80, 5001, 5002 } dnat to 198.18.2.2
    }
    chain postrouting {
        type nat hook postrouting priority srcnat; policy accept;
        oifname "n1" masquerade
    }
}
EOF

cat >"$work/traffic.py" <<'PYEOF'
"""Bench traffic: `server` listens on 80 (request/response), 5001 (upload sink), 5002 (download
source); `client ADDR SECONDS` drives bulk, short and keep-alive connections until SECONDS pass or
SIGTERM. Every loop is bounded in time; only addresses inside the bench namespaces are used."""
import os, random, signal, socket, socketserver, struct, sys, threading, time

CHUNK = b"x" * 65536

def recv_exact(s, n):
    buf = bytearray()
    while len(buf) < n:
        b = s.recv(min(n - len(buf), 262144))
        if not b:
            raise ConnectionError("peer closed")
        buf += b
    return bytes(buf)

def send_n(s, n, rate=None):
    start = time.monotonic()
    sent = 0
    while sent < n:
        k = min(n - sent, len(CHUNK))
        s.sendall(CHUNK[:k])
        sent += k
        if rate:
            ahead = sent / rate - (time.monotonic() - start)
            if ahead > 0:
                time.sleep(ahead)

class ReqResp(socketserver.BaseRequestHandler):
    # Request: reply size (4 bytes), close flag (1: the server closes after replying), body length
    # (2 bytes), body (ignored).
    def handle(self):
        s = self.request
        try:
            while True:
                size, close, body_len = struct.unpack("!IBH", recv_exact(s, 7))
                recv_exact(s, body_len)
                send_n(s, size)
                if close:
                    return
        except (OSError, ConnectionError):
            return

class Sink(socketserver.BaseRequestHandler):
    def handle(self):
        try:
            while self.request.recv(262144):
                pass
        except OSError:
            pass

class Source(socketserver.BaseRequestHandler):
    def handle(self):
        try:
            size, rate = struct.unpack("!QQ", recv_exact(self.request, 16))
            send_n(self.request, size, rate or None)
        except OSError:
            pass

class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 4096

def server():
    servers = [Server(("0.0.0.0", p), h) for p, h in ((80, ReqResp), (5001, Sink), (5002, Source))]
    for srv in servers:
        threading.Thread(target=srv.serve_forever, daemon=True).start()
    signal.sigwait({signal.SIGTERM, signal.SIGINT})

STOP = threading.Event()
COUNT = {"short": 0, "bulk": 0, "keepalive_requests": 0, "errors": 0}
BULK_RATE = 3 * 1024 * 1024  # bytes/s per bulk stream

def req(s, size, close):
    body = b"q" * random.randint(40, 600)
    s.sendall(struct.pack("!IBH", size, close, len(body)) + body)
    recv_exact(s, size)

def short_worker(addr):
    while not STOP.is_set():
        try:
            with socket.create_connection((addr, 80), timeout=10) as s:
                n = random.randint(1, 4)
                server_closes = random.random() < 0.5
                for i in range(n):
                    size = int(10 ** random.uniform(2, 4.5))  # 100 B .. 32 KB, log-uniform
                    req(s, size, 1 if (server_closes and i == n - 1) else 0)
                if server_closes:
                    s.recv(1)  # wait for the server's FIN
            COUNT["short"] += 1
        except OSError:
            COUNT["errors"] += 1
            time.sleep(0.01)

def keepalive_worker(addr):
    while not STOP.is_set():
        try:
            with socket.create_connection((addr, 80), timeout=10) as s:
                for _ in range(random.randint(200, 2000)):
                    if STOP.is_set():
                        break
                    req(s, random.randint(50, 3000), 0)
                    COUNT["keepalive_requests"] += 1
        except OSError:
            COUNT["errors"] += 1
            time.sleep(0.01)

def bulk_worker(addr, upload):
    while not STOP.is_set():
        size = random.randint(20, 120) * 1024 * 1024
        try:
            with socket.create_connection((addr, 5001 if upload else 5002), timeout=10) as s:
                if upload:
                    start = time.monotonic()
                    sent = 0
                    while sent < size and not STOP.is_set():
                        send_n(s, 1 << 20, BULK_RATE)
                        sent += 1 << 20
                        ahead = sent / BULK_RATE - (time.monotonic() - start)
                        if ahead > 0:
                            time.sleep(ahead)
                else:
                    s.sendall(struct.pack("!QQ", size, BULK_RATE))
                    while not STOP.is_set() and s.recv(262144):
                        pass
            COUNT["bulk"] += 1
        except OSError:
            COUNT["errors"] += 1
            time.sleep(0.01)

def client(addr, seconds):
    signal.signal(signal.SIGTERM, lambda *_: STOP.set())
    signal.signal(signal.SIGINT, lambda *_: STOP.set())
    threads = [threading.Thread(target=short_worker, args=(addr,)) for _ in range(24)]
    threads += [threading.Thread(target=keepalive_worker, args=(addr,)) for _ in range(4)]
    threads += [threading.Thread(target=bulk_worker, args=(addr, up)) for up in (True, True, False, False)]
    for t in threads:
        t.daemon = True
        t.start()
    STOP.wait(seconds)
    STOP.set()
    deadline = time.monotonic() + 5
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    print(" ".join(f"{k}={v}" for k, v in COUNT.items()), flush=True)

if __name__ == "__main__":
    if sys.argv[1] == "server":
        server()
    else:
        client(sys.argv[2], float(sys.argv[3]))
PYEOF

rm -f "$out"
# Background jobs are started as `ip netns exec` directly (not through a shell function) so that `$!`
# is the process itself (`ip` execs the command), and signals reach it.
ip netns exec "$ns_server" python3 "$work/traffic.py" server &
pids+=($!)
# A large kernel buffer so that tcpdump keeps up with bursts on a 2-core machine; -Z root so that it
# can write wherever OUT is.
ip netns exec "$ns_node" tcpdump -i any -s 0 -B 131072 -Z root -w "$out" 2>"$work/tcpdump.err" &
tcpdump_pid=$!
pids+=("$tcpdump_pid")

# Wait until the server listens and tcpdump captures (it says "listening on" then; the file itself
# stays empty until tcpdump's first buffer flush).
ready=no
for _ in $(seq 100); do
    if grep -q 'listening on' "$work/tcpdump.err" 2>/dev/null &&
        in_ns "$ns_server" ss -ltn | grep -q ':5002 '; then
        ready=yes
        break
    fi
    sleep 0.1
done
if [ "$ready" != yes ]; then
    echo "make-bench-capture: tcpdump or the traffic server did not start:" >&2
    cat "$work/tcpdump.err" >&2
    exit 1
fi

start=$(date +%s)
ip netns exec "$ns_client" python3 "$work/traffic.py" client 198.19.0.10 "$max_seconds" >"$work/client.out" &
client_pid=$!
pids+=("$client_pid")

limit=$((size_mb * 1024 * 1024))
# SIGTERM, then SIGKILL if it has not exited within 10 s.
stop_pid() {
    local pid="$1"
    kill -TERM "$pid" 2>/dev/null || return 0
    for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}
# The client writes its counts on stop; leave room for the last packets in flight and tcpdump's buffer.
while kill -0 "$client_pid" 2>/dev/null && kill -0 "$tcpdump_pid" 2>/dev/null; do
    size=$(stat -c %s "$out" 2>/dev/null || echo 0)
    if [ "$size" -ge "$limit" ]; then
        break
    fi
    sleep 0.2
done
stop_pid "$client_pid"
sleep 1
stop_pid "$tcpdump_pid"
elapsed=$(($(date +%s) - start))

final=$(stat -c %s "$out")
echo "make-bench-capture: wrote $out: $((final / 1048576)) MB in ${elapsed}s of traffic"
echo "make-bench-capture: client: $(cat "$work/client.out" 2>/dev/null)"
grep -E 'packets (captured|received|dropped)' "$work/tcpdump.err" | sed 's/^/make-bench-capture: tcpdump: /' || true
if [ "$final" -lt "$limit" ]; then
    echo "make-bench-capture: note: smaller than the ${size_mb} MB asked (time limit ${max_seconds}s)" >&2
fi
