#!/usr/bin/env python3
"""Builds the seed corpora of the fuzz targets (called by seed.sh; see README.md).

    seedgen.py SHARED_CORPUS REPO_ROOT OUT_DIR

Writes OUT_DIR/<target>/<sha1 prefix> files. Deterministic: the same inputs give the same seeds.
Nothing here is committed but the script: the corpus lives outside the repository.
"""
import gzip
import hashlib
import os
import struct
import sys
import tarfile
import io

MAX_SEED = 64 << 10
CAPTURE_SEEDS = 300
FRAMES_PER_FILE = 8
FRAME_SEEDS = 2000
DNS_SEEDS = 800

# packet_decoder: the order of LINKTYPES in fuzz_targets/packet_decoder.rs.
LINKTYPES = [0, 1, 12, 14, 101, 108, 113, 228, 229, 239, 276, 147]

# node_parsers: the order of PARSERS in fuzz_targets/node_parsers.rs.
PARSERS = [
    "sysctl", "counters", "stat-table", "netstat-s", "conntrack-table", "conntrack-table-tiny",
    "conntrack-stats", "iptables-save", "nft-json", "nft-text", "ip-addr-json", "ip-addr-text",
    "ip-route-json", "ip-route-text", "ip-rule-json", "ipvs", "ss", "proc-tcp", "resolv.conf",
    "nsswitch", "hosts", "corefile", "elf", "libc-banner", "package-db", "netlink", "nft-netlink",
    "ctnetlink", "nft-tables-netlink", "dns-probe-response",
]


def put(out, target, data):
    d = os.path.join(out, target)
    os.makedirs(d, exist_ok=True)
    name = hashlib.sha1(data).hexdigest()[:16]
    p = os.path.join(d, name)
    if not os.path.exists(p):
        with open(p, "wb") as f:
            f.write(data)
        return True
    return False


# ------------------------------------------------------------------ captures

def records(buf):
    """(linktype, frame) of every record of a pcap or pcapng file, as far as it reads."""
    if len(buf) < 24:
        return
    m = buf[:4]
    pcap_magics = {
        b"\xd4\xc3\xb2\xa1": ("<", 16), b"\x4d\x3c\xb2\xa1": ("<", 16), b"\x34\xcd\xb2\xa1": ("<", 24),
        b"\xa1\xb2\xc3\xd4": (">", 16), b"\xa1\xb2\x3c\x4d": (">", 16), b"\xa1\xb2\xcd\x34": (">", 24),
    }
    if m in pcap_magics:
        e, hl = pcap_magics[m]
        lt = struct.unpack(e + "I", buf[20:24])[0] & 0x03FFFFFF
        off = 24
        while off + hl <= len(buf):
            caplen = struct.unpack(e + "I", buf[off + 8:off + 12])[0]
            if caplen > 262144:
                return
            data = buf[off + hl:off + hl + caplen]
            yield lt, data
            off += hl + caplen
        return
    if m != b"\x0a\x0d\x0d\x0a":
        return
    e = "<"
    ifaces = []
    off = 0
    while off + 12 <= len(buf):
        bt = buf[off:off + 4]
        if bt == b"\x0a\x0d\x0d\x0a":
            e = "<" if buf[off + 8:off + 12] == b"\x4d\x3c\x2b\x1a" else ">"
            ifaces = []
        ty, bl = struct.unpack(e + "II", buf[off:off + 8])
        if bl < 12 or bl % 4 or off + bl > len(buf):
            return
        body = buf[off + 8:off + bl - 4]
        if ty == 1 and len(body) >= 2:
            ifaces.append(struct.unpack(e + "H", body[:2])[0])
        elif ty == 6 and len(body) >= 20:
            iface, _, _, caplen = struct.unpack(e + "IIII", body[:16])
            if iface < len(ifaces):
                yield ifaces[iface], body[20:20 + caplen]
        elif ty == 3 and len(body) >= 4 and ifaces:
            yield ifaces[0], body[4:]
        elif ty == 2 and len(body) >= 20:
            iface = struct.unpack(e + "H", body[:2])[0]
            caplen = struct.unpack(e + "I", body[12:16])[0]
            if iface < len(ifaces):
                yield ifaces[iface], body[20:20 + caplen]
        off += bl


def ip_of_frame(lt, f):
    """The IP packet inside a frame (bytes), or None."""
    def ether(at):
        if len(f) < at + 14:
            return None
        et = struct.unpack(">H", f[at + 12:at + 14])[0]
        at += 14
        while et in (0x8100, 0x88A8, 0x9100) and len(f) >= at + 4:
            et = struct.unpack(">H", f[at + 2:at + 4])[0]
            at += 4
        return f[at:] if et in (0x0800, 0x86DD) else None
    if lt == 1:
        return ether(0)
    if lt == 113 and len(f) >= 16:
        return f[16:] if struct.unpack(">H", f[14:16])[0] in (0x0800, 0x86DD) else None
    if lt == 276 and len(f) >= 20:
        return f[20:] if struct.unpack(">H", f[0:2])[0] in (0x0800, 0x86DD) else None
    if lt in (0, 108):
        return f[4:]
    if lt in (101, 12, 14, 228, 229):
        return f
    return None


def transport(ip):
    """(proto, sport, dport, payload) of an unfragmented IPv4/IPv6 packet, or None."""
    if not ip:
        return None
    v = ip[0] >> 4
    if v == 4 and len(ip) >= 20:
        ihl = (ip[0] & 15) * 4
        frag = struct.unpack(">H", ip[6:8])[0] & 0x1FFF
        if frag:
            return None
        total = struct.unpack(">H", ip[2:4])[0]
        proto, rest = ip[9], ip[ihl:max(ihl, min(len(ip), total or len(ip)))]
    elif v == 6 and len(ip) >= 40:
        proto, rest = ip[6], ip[40:]
    else:
        return None
    if proto == 17 and len(rest) >= 8:
        sp, dp = struct.unpack(">HH", rest[:4])
        return 17, sp, dp, rest[8:]
    if proto == 6 and len(rest) >= 20:
        sp, dp = struct.unpack(">HH", rest[:4])
        doff = (rest[12] >> 4) * 4
        return 6, sp, dp, rest[doff:]
    return None


def dns_messages(lt, frame):
    t = transport(ip_of_frame(lt, frame))
    if not t:
        return []
    proto, sp, dp, p = t
    if 53 not in (sp, dp) and 5353 not in (sp, dp):
        return []
    if proto == 17:
        return [p] if len(p) >= 12 else []
    out = []
    while len(p) >= 14:
        n = struct.unpack(">H", p[:2])[0]
        if n < 12 or n + 2 > len(p):
            break
        out.append(p[2:2 + n])
        p = p[2 + n:]
    return out


def tcp_stream_seed(query, response, split):
    """dns_decoder reassembler mode: a SYN each way, the query and the response length-prefixed, cut
    into `split` segments each, then FINs. Format: see fuzz_targets/dns_decoder.rs."""
    def seg(ctl, payload=b"", delta=0):
        return bytes([ctl]) + struct.pack("<hH", delta, len(payload)) + payload
    out = bytearray([0x01])
    out += seg(0x02)  # client SYN
    out += seg(0x03)  # server SYN
    for dir_bit, msg in ((0, query), (1, response)):
        s = struct.pack(">H", len(msg)) + msg
        step = max(1, -(-len(s) // split))
        for i in range(0, len(s), step):
            out += seg(dir_bit, s[i:i + step])
    out += seg(0x04)
    out += seg(0x05)
    return bytes(out)


def captures(corpus, root, out):
    rows = []
    with open(os.path.join(corpus, "INDEX.tsv")) as f:
        header = f.readline().rstrip("\n").split("\t")
        col = {h: i for i, h in enumerate(header)}
        for line in f:
            r = line.rstrip("\n").split("\t")
            if len(r) < len(header):
                continue
            rows.append(r)
    groups = {}
    for r in rows:
        key = tuple(r[col[k]] for k in (
            "format", "linktypes", "header_kind", "has_dns", "has_tcp", "has_ipv6", "has_vlan",
            "has_vxlan", "has_sll"))
        groups.setdefault(key, []).append(r)
    for g in groups.values():
        g.sort(key=lambda r: (int(r[col["bytes"]]), r[col["path"]]))
    picked, files = 0, []
    keys = sorted(groups)
    while picked < CAPTURE_SEEDS and any(groups.values()):
        for k in keys:
            if not groups[k] or picked >= CAPTURE_SEEDS:
                continue
            r = groups[k].pop(0)
            p = os.path.join(corpus, r[col["path"]])
            try:
                data = open(p, "rb").read()
                if data[:2] == b"\x1f\x8b":
                    if len(data) > MAX_SEED:
                        continue
                    data = gzip.decompress(data)
            except (OSError, EOFError, gzip.BadGzipFile):
                continue
            if len(data) > MAX_SEED:
                continue
            if put(out, "capture_reader", data):
                picked += 1
                files.append(data)
    # The lab fixtures: small captures of each incident as netsleuth's own tests see them.
    labdir = os.path.join(root, "fixtures", "lab")
    for d in sorted(os.listdir(labdir)) if os.path.isdir(labdir) else []:
        for n in ("client.pcap", "node.pcap"):
            p = os.path.join(labdir, d, n)
            if os.path.isfile(p) and os.path.getsize(p) <= MAX_SEED:
                data = open(p, "rb").read()
                put(out, "capture_reader", data)
                files.append(data)
    frames, dns, seen = 0, 0, set()
    for data in files:
        n = 0
        for lt, fr in records(data):
            key = (lt, fr[:64])
            if lt in LINKTYPES and key not in seen and n < FRAMES_PER_FILE and frames < FRAME_SEEDS:
                seen.add(key)
                n += 1
                frames += 1
                put(out, "packet_decoder", struct.pack("<I", LINKTYPES.index(lt)) + fr)
            for m in dns_messages(lt, fr):
                if dns < DNS_SEEDS and put(out, "dns_decoder", bytes([0x18]) + m):
                    dns += 1
    # DNS over TCP: pairs of consecutive DNS messages as one connection, whole and cut.
    msgs = sorted(os.listdir(os.path.join(out, "dns_decoder"))) if dns else []
    for i in range(0, min(len(msgs), 120) - 1, 2):
        q = open(os.path.join(out, "dns_decoder", msgs[i]), "rb").read()[1:]
        a = open(os.path.join(out, "dns_decoder", msgs[i + 1]), "rb").read()[1:]
        put(out, "dns_decoder", tcp_stream_seed(q, a, 1 + i % 3))
    # Synthetic frames for link types the corpus lacks (NFLOG, raw IP variants).
    udp = bytes.fromhex("45000029000040004011" "0000" "0a000001" "0a000035") + \
        struct.pack(">HHHH", 40000, 53, 21, 0) + bytes.fromhex("1234010000010000000000000000010001")[:13]
    tlv = lambda t, v: struct.pack("<HH", 4 + len(v), t) + v + b"\0" * (-len(v) % 4)
    nflog = bytes([2, 0, 0, 0]) + tlv(1, b"\x08\x00\x03\x00") + tlv(9, udp)
    put(out, "packet_decoder", struct.pack("<I", LINKTYPES.index(239)) + nflog)
    for lt in (12, 14, 228, 229, 101):
        put(out, "packet_decoder", struct.pack("<I", LINKTYPES.index(lt)) + udp)
    return picked, frames, dns


# ------------------------------------------------------------------ bundles

def bundles(root, hostile, out):
    n = 0
    srcs = []
    fx = os.path.join(root, "fixtures", "node")
    if os.path.isdir(fx):
        srcs += [os.path.join(fx, f) for f in sorted(os.listdir(fx)) if f.endswith(".tar.gz")]
    for f in ("escape-container-resolv.tar.gz", "escape-seq.tar.gz", "manifest-only.tar.gz"):
        p = os.path.join(hostile, f)
        if os.path.isfile(p):
            srcs.append(p)
    for p in srcs:
        gz = open(p, "rb").read()
        # As is (the gzip path of the target) and as the bare tar (the target gzips it): the fuzzer
        # then mutates tar headers and members, not deflate streams.
        put(out, "bundle_reader", gz)
        raw = gzip.decompress(gz)
        put(out, "bundle_reader", raw)
        n += 2
        # A smaller variant: the manifest and only the artifacts that parse (no binaries).
        try:
            t = tarfile.open(fileobj=io.BytesIO(raw))
            buf = io.BytesIO()
            w = tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT)
            for m in t.getmembers():
                if m.isfile() and m.size <= 8192:
                    w.addfile(m, t.extractfile(m))
            w.close()
            put(out, "bundle_reader", buf.getvalue())
            n += 1
        except tarfile.TarError:
            pass
    return n


# ------------------------------------------------------------------ node artifacts

def designated(rel, text):
    """The parser a corpus file is for: the mapping of crates/netsleuth-node/tests/corpus.rs."""
    name = rel.lower()
    if name.endswith(".json") and name.startswith("nft/"):
        return "nft-json"
    if name.startswith("nft/"):
        return "nft-text"
    if name.startswith("iptables/") and "ipset" in name:
        return "ipvs"
    if name.startswith("iptables/"):
        return "iptables-save"
    if name.startswith("conntrack/") and "cpu=" in text and "src=" not in text:
        return "conntrack-stats"
    if name.startswith("conntrack/") and text.startswith("entries"):
        return "stat-table"
    if name.startswith("conntrack/"):
        return "conntrack-table"
    if name.startswith("resolver/") and "nsswitch" in name:
        return "nsswitch"
    if name.startswith("resolver/") and "corefile" in name:
        return "corefile"
    if name.startswith("resolver/") and "hosts" in name:
        return "hosts"
    if name.startswith("resolver/"):
        return "resolv.conf"
    if name.startswith("ip/") and name.endswith(".json"):
        return "ip-route-json" if "route" in name else ("ip-rule-json" if "rule" in name else "ip-addr-json")
    if name.startswith("ip/") and ("ipvs" in name or "ip_vs" in name or "ipv.txt" in name):
        return "ipvs"
    if name.startswith("ip/") and ("addr" in name or "link" in name or "br_add" in name):
        return "ip-addr-text"
    if name.startswith("ip/"):
        return "ip-route-text"
    if "sysctl" in name:
        return "sysctl"
    if "netstat_s" in name or "netstat_-s" in name:
        return "netstat-s"
    if "ss_" in name or "ss-" in name:
        return "ss"
    if name.endswith(("net_tcp", "net_tcp6", ".tcp", ".tcp6")):
        return "proc-tcp"
    if "stat_" in name or "softnet" in name or "conntrack" in name:
        return "stat-table"
    return "counters"


def nlmsg(ty, body, flags=2):
    return struct.pack("=IHHII", 16 + len(body), ty, flags, 1, 0) + body + b"\0" * (-len(body) % 4)


def nla(ty, v):
    return struct.pack("=HH", 4 + len(v), ty) + v + b"\0" * (-len(v) % 4)


def be32(v):
    return struct.pack(">I", v & 0xFFFFFFFF)


def expr(name, *data):
    return nla(1, nla(1, name.encode() + b"\0") + nla(2, b"".join(data)))


def go_elf(version, inline):
    """Minimal ELF64 LE with one writable PT_LOAD holding Go build info: pre-1.18 pointer format, or
    the 1.18+ inline format (flags bit 1, varint-prefixed version and module info)."""
    base, seg_off = 0x400000, 0x1000
    seg = bytearray(0x200)
    seg[:14] = b"\xff Go buildinf:"
    seg[14] = 8
    if inline:
        seg[15] = 2
        mod = b"path\texample.com/x\nbuild\tCGO_ENABLED=0\nbuild\t-tags=netgo\n"
        mod = b"0" * 16 + mod + b"1" * 16
        payload = bytes([len(version)]) + version.encode() + bytes([len(mod) & 0x7F | 0x80, len(mod) >> 7]) + mod
        seg[32:32 + len(payload)] = payload
    else:
        seg[16:24] = struct.pack("<Q", base + 0x40)
        seg[0x40:0x48] = struct.pack("<Q", base + 0x80)
        seg[0x48:0x50] = struct.pack("<Q", len(version))
        seg[0x80:0x80 + len(version)] = version.encode()
    f = bytearray(seg_off)
    f[:4] = b"\x7fELF"
    f[4], f[5] = 2, 1
    f[32:40] = struct.pack("<Q", 64)
    f[54:56] = struct.pack("<H", 56)
    f[56:58] = struct.pack("<H", 2)
    f[64:68] = struct.pack("<I", 1)
    f[68:72] = struct.pack("<I", 6)
    f[72:80] = struct.pack("<Q", seg_off)
    f[80:88] = struct.pack("<Q", base)
    f[96:104] = struct.pack("<Q", len(seg))
    # PT_INTERP
    interp = b"/lib/ld-musl-x86_64.so.1\0"
    f[120:124] = struct.pack("<I", 3)
    f[128:136] = struct.pack("<Q", 0x200)
    f[152:160] = struct.pack("<Q", len(interp))
    f[0x200:0x200 + len(interp)] = interp
    return bytes(f + seg)


def node(corpus, root, out):
    n = 0
    base = os.path.join(corpus, "node")
    for d, _, fs in sorted(os.walk(base)):
        for fn in sorted(fs):
            p = os.path.join(d, fn)
            rel = os.path.relpath(p, base)
            data = open(p, "rb").read()
            if len(data) > MAX_SEED or fn.endswith(".md"):
                continue
            text = data.decode("utf-8", "replace")
            sel = PARSERS.index(designated(rel, text))
            n += put(out, "node_parsers", bytes([sel]) + data)
    tdata = os.path.join(root, "crates", "netsleuth-node", "tests", "data")
    for fn in sorted(os.listdir(tdata)) if os.path.isdir(tdata) else []:
        data = open(os.path.join(tdata, fn), "rb").read()[:MAX_SEED]
        n += put(out, "node_parsers", bytes([PARSERS.index("iptables-save")]) + data)
    sel = PARSERS.index
    synth = [
        (sel("elf"), go_elf("go1.15.6", False)),
        (sel("elf"), go_elf("go1.21.5", True)),
        (sel("libc-banner"), b"\0musl libc (x86_64)\0Version 1.2.3\0"),
        (sel("libc-banner"), b"GNU C Library (Debian GLIBC 2.36-9) stable release version 2.36.\n"),
        (sel("package-db"), b"P:musl\nV:1.2.4-r2\n\nP:busybox\nV:1.36.1-r5\n\n"),
        (sel("package-db"), b"Package: libc6\nStatus: install ok installed\nVersion: 2.36-9+deb12u4\n\n"
                            b"Package: base-files\nVersion: 12.4\n\ngo1.15.6\n5.10.0-21-amd64\n4.19.85\n"),
        (sel("dns-probe-response"), bytes.fromhex("1234818300010000000000000000020001")),
    ]
    for path in ("/bin/true", "/usr/bin/true"):
        if os.path.isfile(path) and os.path.getsize(path) <= MAX_SEED:
            synth.append((sel("elf"), open(path, "rb").read()))
            break
    # Netlink: an nf_tables chain and the kube-proxy rule of nft_netlink.rs's tests, a table, a ctnetlink
    # entry, NLMSG_DONE and NLMSG_ERROR.
    chain = nlmsg((10 << 8) | 3, bytes([2, 0, 0, 0]) + nla(1, b"nat\0") + nla(3, b"PREROUTING\0") +
                  nla(4, nla(1, be32(0)) + nla(2, be32(0xFFFFFF9C))) + nla(5, be32(1)) +
                  nla(8, nla(1, struct.pack(">Q", 1000)) + nla(2, struct.pack(">Q", 10))))
    comment = b"ns/svc:http cluster IP".ljust(256, b"\0")
    exprs = b"".join([
        expr("meta", nla(2, be32(16)), nla(1, be32(1))),
        expr("cmp", nla(1, be32(1)), nla(2, be32(0)), nla(3, nla(1, b"\x06"))),
        expr("payload", nla(1, be32(1)), nla(2, be32(1)), nla(3, be32(16)), nla(4, be32(4))),
        expr("cmp", nla(1, be32(1)), nla(2, be32(0)), nla(3, nla(1, bytes([10, 96, 0, 1])))),
        expr("match", nla(1, b"comment\0"), nla(2, be32(0)), nla(3, comment)),
        expr("payload", nla(1, be32(1)), nla(2, be32(2)), nla(3, be32(2)), nla(4, be32(2))),
        expr("cmp", nla(1, be32(1)), nla(2, be32(0)), nla(3, nla(1, struct.pack(">H", 80)))),
        expr("counter"),
        expr("immediate", nla(1, be32(0)), nla(2, nla(2, nla(1, be32(-3)) + nla(2, b"KUBE-SVC-X\0")))),
    ])
    rule = nlmsg((10 << 8) | 6, bytes([2, 0, 0, 0]) + nla(1, b"nat\0") + nla(2, b"KUBE-SERVICES\0") +
                 nla(3, struct.pack(">Q", 7)) + nla(4, exprs))
    masq = nlmsg((10 << 8) | 6, bytes([2, 0, 0, 0]) + nla(1, b"nat\0") + nla(2, b"POSTROUTING\0") +
                 nla(3, struct.pack(">Q", 9)) + nla(4, expr("counter") + expr(
                     "target", nla(1, b"MASQUERADE\0"), nla(2, be32(0)), nla(3, b"\0" * 24))))
    done = nlmsg(3, b"\0\0\0\0")
    err = nlmsg(2, struct.pack("=i", -1) + b"\0" * 16)
    table = nlmsg((10 << 8) | 0, bytes([2, 0, 0, 0]) + nla(1, b"filter\0") + nla(2, be32(0)))
    tup = lambda s, d, sp, dp: nla(1, nla(1, bytes(s)) + nla(2, bytes(d))) + \
        nla(2, nla(1, b"\x06") + nla(2, struct.pack(">H", sp)) + nla(3, struct.pack(">H", dp)))
    ct = nlmsg((1 << 8) | 0, bytes([2, 0, 0, 0]) +
               nla(0x8001, tup([10, 0, 0, 1], [10, 96, 0, 1], 40000, 80)) +
               nla(0x8002, tup([10, 244, 1, 5], [10, 0, 0, 1], 8080, 40000)) +
               nla(3, be32(0x0E)) + nla(7, be32(86399)) + nla(0x8004, nla(0x8001, nla(1, b"\x03"))))
    synth += [
        (sel("nft-netlink"), chain + rule + masq + done),
        (sel("nft-netlink"), rule + err),
        (sel("netlink"), chain + rule + ct + done),
        (sel("ctnetlink"), ct + ct + done),
        (sel("nft-tables-netlink"), table + table + done),
    ]
    for s, data in synth:
        n += put(out, "node_parsers", bytes([s]) + data)
    return n


def main():
    corpus, root, out = sys.argv[1:4]
    hostile = os.path.join(os.path.dirname(corpus.rstrip("/")), "hostile")
    caps, frames, dns = captures(corpus, root, out)
    b = bundles(root, hostile, out)
    nd = node(corpus, root, out)
    for t in ("capture_reader", "packet_decoder", "dns_decoder", "bundle_reader", "node_parsers"):
        d = os.path.join(out, t)
        files = os.listdir(d) if os.path.isdir(d) else []
        size = sum(os.path.getsize(os.path.join(d, f)) for f in files)
        print(f"{t:16} {len(files):5} seeds {size / 1024:8.0f} KiB")


if __name__ == "__main__":
    main()
