#!/usr/bin/env python3
"""Writes a capture of short TCP connections, for measuring where `analyze --threads 2` runs the
detectors (BENCHMARKS.md, "Per-packet cost, tenth pass"): the rate at which connections end decides
it, and this sets that rate.

    scripts/make-short-connections.py CONNECTIONS PACKETS CONCURRENT OUT.pcap

CONNECTIONS connections of PACKETS packets each (SYN, SYN-ACK, ACK, requests and replies, FIN, FIN,
ACK; 3 packets is a handshake that never closes), CONCURRENT of them at a time, their packets
interleaved round robin, 20 µs apart. Each packet is written twice, before and after a DNAT of a
Service address to a pod (as `tcpdump -i any` on a node shows it). Ethernet, cut to 128 bytes. The
BENCHMARKS rows used 1,000,000 / (2 × PACKETS) connections, 200 at a time. Nothing is sent: the
packets are built in Python and written to OUT.
"""
import random
import struct
import sys


def checksum(b):
    if len(b) % 2:
        b += b'\0'
    s = sum(struct.unpack('!%dH' % (len(b) // 2), b))
    s = (s >> 16) + (s & 0xffff)
    s += s >> 16
    return (~s) & 0xffff


def ipv4(src, dst, payload_len, ident):
    h = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 20 + payload_len, ident, 0x4000, 64, 6, 0, src, dst)
    return h[:10] + struct.pack('!H', checksum(h)) + h[12:]


def frame(src, dst, sport, dport, seq, ack, flags, data_len, ident):
    tcp = struct.pack('!HHIIBBHHH', sport, dport, seq, ack, 5 << 4, flags, 65535, 0, 0)
    return (b'\x02' * 6 + b'\x04' * 6 + b'\x08\x00' + ipv4(src, dst, 20 + data_len, ident) + tcp
            + b'x' * data_len)


def connection(i, packets):
    """The frames of connection `i`, each before and after the DNAT."""
    client = bytes([10, 1 + (i >> 16) % 200, (i >> 8) & 255, i & 255])
    service, pod = bytes([10, 96, 0, 10]), bytes([10, 244, 1, 5])
    sport = 1024 + (i * 7) % 60000
    cseq, sseq = random.getrandbits(32), random.getrandbits(32)
    script = [('c', 0x02, 0), ('s', 0x12, 0), ('c', 0x10, 0)]
    for j in range(max(0, packets - 6)):
        script.append(('c', 0x18, 100) if j % 2 == 0 else ('s', 0x18, 300))
    if packets >= 6:
        script += [('c', 0x11, 0), ('s', 0x11, 0), ('c', 0x10, 0)]
    ident = random.getrandbits(16)
    for side, flags, data_len in script[:max(packets, 3)]:
        consumed = data_len + (1 if flags & 0x03 else 0)
        if side == 'c':
            ack = 0 if flags == 0x02 else sseq
            yield frame(client, service, sport, 80, cseq, ack, flags, data_len, ident)
            yield frame(client, pod, sport, 8080, cseq, ack, flags, data_len, ident)
            cseq = (cseq + consumed) & 0xffffffff
        else:
            yield frame(pod, client, 8080, sport, sseq, cseq, flags, data_len, ident)
            yield frame(service, client, 80, sport, sseq, cseq, flags, data_len, ident)
            sseq = (sseq + consumed) & 0xffffffff
        ident = (ident + 1) & 0xffff


def main():
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    connections, packets, concurrent = (int(a) for a in sys.argv[1:4])
    random.seed(1)
    ts_us = 1_700_000_000_000_000
    with open(sys.argv[4], 'wb') as out:
        out.write(struct.pack('<IHHiIII', 0xa1b2c3d4, 2, 4, 0, 0, 128, 1))
        live, started = [], 0
        while live or started < connections:
            while len(live) < concurrent and started < connections:
                live.append(connection(started, packets))
                started += 1
            for c in list(live):
                try:
                    # The copy before the DNAT and the one after, together.
                    for data in (next(c), next(c)):
                        ts_us += 20
                        cut = data[:128]
                        out.write(struct.pack('<IIII', ts_us // 1_000_000, ts_us % 1_000_000,
                                              len(cut), len(data)) + cut)
                except StopIteration:
                    live.remove(c)


if __name__ == '__main__':
    main()
