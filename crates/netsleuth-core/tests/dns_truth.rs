//! DNS decoding against tshark: every DNS message tshark 4.0 found in the corpus (`dns-truth.tsv`) must
//! be found by `wire::dns` (UDP on port 53, TCP on port 53 through `flow::dns_tcp`) with the same
//! frame, addresses, ports, id, flags, question and answer count; and we must find nothing tshark did
//! not. Differences are allowed only where `ALLOWLIST` explains them.

use netsleuth_core::capture::CaptureReader;
use netsleuth_core::flow::dns_tcp::DnsTcpReassembler;
use netsleuth_core::flow::Endpoint;
use netsleuth_core::wire::{decode, dns, icmp_quote, Transport};
use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

/// (file, frame or 0 for every frame of the file, why our answer differs from tshark's).
const ALLOWLIST: &[(&str, u64, &str)] = &[
    // Not a pcap/pcapng file: we do not read it at all.
    ("wireshark-wiki/SampleCaptures/Manolito2.cap", 0, "Microsoft Network Monitor file, not pcap/pcapng"),
    ("wireshark-wiki/SampleCaptures/MicrosoftNTP(2).cap", 0, "Microsoft Network Monitor file, not pcap/pcapng"),
    ("wireshark-wiki/SampleCaptures/FTPv6-1.cap", 0, "Microsoft Network Monitor file, not pcap/pcapng"),
    // Link types we do not decode.
    ("wireshark-wiki/SampleCaptures/netlink.pcap", 0, "NFLOG messages inside Linux netlink over SLL (ARPHRD_NETLINK); we decode NFLOG only as LINKTYPE_NFLOG"),
    ("wireshark-wiki/SampleCaptures/netlink-nflog.pcap", 0, "LINKTYPE_NETLINK (253) carrying NFLOG messages; not decoded"),
    ("wireshark-wiki/SampleCaptures/netlink-conntrack.pcap", 0, "LINKTYPE_NETLINK (253) carrying NFLOG/conntrack messages; not decoded"),
    ("tcpdump/arcnet-rfc1201-arp-icmp-http.pcap", 0, "ARCNET link type (129), not decoded"),
    ("tcpdump/arcnet-rfc1051-arp-icmp-http.pcap", 0, "ARCNET link type (129), not decoded"),
    ("tcpdump/LINKTYPE_PKTAP.pcap", 0, "Apple PKTAP link type (258), not decoded"),
    ("tcpdump/LINKTYPE_USER2_PKTAP.pcap", 0, "Apple PKTAP written as LINKTYPE_USER2 (149), not decoded"),
    ("wireshark-wiki/SampleCaptures/Http.cap", 0, "PPI link type (192) with 802.11 frames, not decoded"),
    // Encapsulations we do not open.
    ("other-pcapplusplus/Packet++Test/PacketExamples/gtp.pcap", 0, "DNS inside a GTP-U tunnel (UDP 2152); we open VXLAN, Geneve, GRE and IP-in-IP only"),
    ("other-pcapplusplus/Packet++Test/PacketExamples/GrePackets.pcap", 6, "GRE inside GRE: we open one level of tunnel, tshark opens both"),
    ("other-dnscap/frags.pcap", 0, "DNS over fragmented IPv4: tshark reassembles the fragments and reports the message at the last fragment; we decode each fragment alone (the first one's DNS header without its question)"),
    // DNS on other ports: tshark's heuristics or port preferences, not a DNS port.
    ("wireshark-wiki/SampleCaptures/dns_port.pcap", 0, "DNS on UDP 65333/65282, found by tshark's heuristic dissector"),
    ("tcpdump/dns_udp_8053.pcap", 0, "DNS on UDP 8053, found by tshark's heuristic dissector"),
    ("wireshark-wiki/SampleCaptures/Sanaullah.pcap", 998, "UDP 11113 -> 33847 taken for DNS by tshark's heuristic dissector"),
    ("tcpdump/someip1.pcap", 0, "SOME/IP on UDP 30490/31490 that tshark's heuristic DNS dissector misreads as DNS"),
    ("other-pcapplusplus/Packet++Test/PacketExamples/SomeIpSd.pcapng", 0, "SOME/IP-SD on UDP 30490 that tshark's heuristic DNS dissector misreads as DNS"),
    // Damaged messages where tshark and we render the damage differently.
    ("tcpdump/dns_fwdptr.pcap", 0, "question name with a forward compression pointer chain over 255 bytes: tshark prints <Name too long> and reads on, we report no question"),
    ("tcpdump/dns-badlabel.pcap", 0, "question name with an invalid label: tshark prints <Name too long> and qtype 0, we report no question"),
    ("tcpdump/rtp-seg-fault-1.pcapng", 0, "UDP length field larger than the IP packet: tshark trusts the UDP length and reads into the trailer, we bound the payload by the IP length (9 bytes, no DNS header)"),
    ("other-dnscap/sll2.pcap", 0, "a label containing a '.': tshark prints it bare (\",.\"), we escape it (\",\\.\") as RFC 1035 presentation format does"),
];

/// Under CI the shared material must be there: a test that skips would pass by not running.
fn required_under_ci(found: Option<PathBuf>, what: &str) -> Option<PathBuf> {
    assert!(
        found.is_some() || std::env::var("CI").is_err(),
        "{what} is missing next to the checkout (../shared) and CI is set: the test must run"
    );
    found
}

fn corpus_dir() -> Option<PathBuf> {
    required_under_ci(find_corpus_dir(), "../shared/corpus")
}

fn find_corpus_dir() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("NETSLEUTH_CORPUS") {
        return Some(PathBuf::from(p));
    }
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    [manifest.join("../../../shared/corpus")]
        .into_iter()
        .find(|p| p.join("dns-truth.tsv").is_file())
}

/// One DNS message as tshark prints it (the comparable columns of dns-truth.tsv).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Row {
    src: String,
    src_port: String,
    dst: String,
    dst_port: String,
    transport: String,
    id: String,
    is_response: String,
    opcode: String,
    rcode: String,
    qname: String,
    qtype: String,
    ancount: String,
    msgs_in_frame: String,
}

type Key = (u64, u32); // (frame, msg_index)

fn read_truth(dir: &Path) -> BTreeMap<String, BTreeMap<Key, Row>> {
    let text = std::fs::read_to_string(dir.join("dns-truth.tsv")).expect("dns-truth.tsv readable");
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split('\t').collect();
    let col = |n: &str| {
        header
            .iter()
            .position(|h| *h == n)
            .unwrap_or_else(|| panic!("no column {n}"))
    };
    let c: Vec<usize> = [
        "file",
        "frame",
        "src_ip",
        "src_port",
        "dst_ip",
        "dst_port",
        "transport",
        "dns_id",
        "is_response",
        "opcode",
        "rcode",
        "qname",
        "qtype",
        "ancount",
        "msgs_in_frame",
        "msg_index",
    ]
    .iter()
    .map(|n| col(n))
    .collect();
    let mut out: BTreeMap<String, BTreeMap<Key, Row>> = BTreeMap::new();
    for l in lines.filter(|l| !l.is_empty()) {
        let f: Vec<&str> = l.split('\t').collect();
        let g = |i: usize| f.get(c[i]).copied().unwrap_or("").to_string();
        let key = (g(1).parse().unwrap(), g(15).parse().unwrap());
        let row = Row {
            src: g(2),
            src_port: g(3),
            dst: g(4),
            dst_port: g(5),
            transport: g(6),
            id: g(7),
            is_response: g(8),
            opcode: g(9),
            rcode: g(10),
            qname: g(11),
            qtype: g(12),
            ancount: g(13),
            msgs_in_frame: g(14),
        };
        out.entry(g(0)).or_default().insert(key, row);
    }
    out
}

/// Render a parsed message the way tshark's fields come out.
#[allow(clippy::too_many_arguments)]
fn row_of(
    m: &dns::DnsMessage<'_>,
    src: Endpoint,
    dst: Endpoint,
    transport: &str,
    msgs_in_frame: usize,
) -> Row {
    let h = m.header;
    let (qname, qtype) = match &m.question {
        Some(q) => (
            if q.name.is_empty() {
                "<Root>".to_string()
            } else {
                q.name.clone()
            },
            q.qtype.to_string(),
        ),
        None => (String::new(), String::new()),
    };
    Row {
        src: src.ip.to_string(),
        src_port: src.port.to_string(),
        dst: dst.ip.to_string(),
        dst_port: dst.port.to_string(),
        transport: transport.to_string(),
        id: format!("0x{:04x}", h.id),
        is_response: (h.qr as u8).to_string(),
        opcode: h.opcode.to_string(),
        // tshark shows the rcode of responses only.
        rcode: if h.qr {
            h.rcode.to_string()
        } else {
            String::new()
        },
        qname,
        qtype,
        // For UPDATE (opcode 5) tshark names the sections zone/prerequisite/update and leaves the answer
        // count field empty.
        ancount: if h.opcode == 5 {
            String::new()
        } else {
            h.ancount.to_string()
        },
        msgs_in_frame: msgs_in_frame.to_string(),
    }
}

fn our_rows<R: Read>(reader: R, name: &str) -> BTreeMap<Key, Row> {
    let mut out = BTreeMap::new();
    let Ok(mut r) = CaptureReader::new(reader, name) else {
        return out;
    };
    let mut tcp = DnsTcpReassembler::new();
    while let Some(rec) = r.next_record() {
        let Ok(mut p) = decode(rec.linktype, rec.data) else {
            continue;
        };
        let mut udp_kind = "udp";
        if let Transport::Icmp { .. } = p.transport {
            // tshark decodes the DNS message quoted in an ICMP error too.
            let Some(quoted) = icmp_quote(rec.linktype, rec.data) else {
                continue;
            };
            p = quoted;
            udp_kind = "udp(icmp-quoted)";
        }
        let (src, dst, transport, messages): (_, _, _, Vec<Vec<u8>>) = match p.transport {
            Transport::Udp(u) if u.src_port == 53 || u.dst_port == 53 => (
                Endpoint {
                    ip: p.ip.src,
                    port: u.src_port,
                },
                Endpoint {
                    ip: p.ip.dst,
                    port: u.dst_port,
                },
                udp_kind,
                vec![u.payload.to_vec()],
            ),
            Transport::Tcp(s) if (s.src_port == 53 || s.dst_port == 53) && udp_kind == "udp" => {
                let (src, dst) = (
                    Endpoint {
                        ip: p.ip.src,
                        port: s.src_port,
                    },
                    Endpoint {
                        ip: p.ip.dst,
                        port: s.dst_port,
                    },
                );
                let msgs = tcp
                    .push(src, dst, &s, rec.frame)
                    .into_iter()
                    .map(|m| m.bytes)
                    .collect();
                (src, dst, "tcp", msgs)
            }
            _ => continue,
        };
        let parsed: Vec<_> = messages.iter().filter_map(|m| dns::parse(m).ok()).collect();
        for (i, m) in parsed.iter().enumerate() {
            out.insert(
                (rec.frame, i as u32 + 1),
                row_of(m, src, dst, transport, parsed.len()),
            );
        }
    }
    out
}

#[test]
fn dns_messages_match_tshark() {
    let Some(dir) = corpus_dir() else {
        eprintln!("note: no capture corpus found (set NETSLEUTH_CORPUS); DNS truth test skipped");
        return;
    };
    let truth = read_truth(&dir);
    assert!(!truth.is_empty());
    let allowed = |file: &str, frame: u64| {
        ALLOWLIST
            .iter()
            .position(|(f, fr, _)| *f == file && (*fr == 0 || *fr == frame))
    };
    let mut used = BTreeSet::new();
    let (mut total, mut matched, mut allowed_count) = (0usize, 0usize, 0usize);
    let mut problems = Vec::new();
    for (file, want) in &truth {
        let path = dir.join(file);
        let f = BufReader::new(File::open(&path).unwrap_or_else(|e| panic!("{file}: {e}")));
        let got = if file.ends_with(".gz") {
            our_rows(flate2::read::GzDecoder::new(f), file)
        } else {
            our_rows(f, file)
        };
        let keys: BTreeSet<&Key> = want.keys().chain(got.keys()).collect();
        for key in keys {
            let (w, g) = (want.get(key), got.get(key));
            if w.is_some() {
                total += 1;
            }
            if w.is_some() && w == g {
                matched += 1;
                continue;
            }
            let what = match (w, g) {
                (Some(w), None) => format!("missed: tshark {w:?}"),
                (None, Some(g)) => format!("extra: ours {g:?}"),
                (Some(w), Some(g)) => format!("differs:\n    tshark {w:?}\n    ours   {g:?}"),
                (None, None) => unreachable!(),
            };
            match allowed(file, key.0) {
                Some(i) => {
                    used.insert(i);
                    allowed_count += 1;
                }
                None => problems.push(format!("{file} frame {} msg {}: {what}", key.0, key.1)),
            }
        }
    }
    eprintln!(
        "dns truth: {matched}/{total} tshark messages matched exactly ({:.2} %), {allowed_count} differences \
         allowlisted, {} not",
        100.0 * matched as f64 / total as f64,
        problems.len()
    );
    let unused: Vec<_> = ALLOWLIST
        .iter()
        .enumerate()
        .filter(|(i, _)| !used.contains(i))
        .map(|(_, a)| a)
        .collect();
    assert!(
        unused.is_empty(),
        "allowlist entries that no longer match anything: {unused:?}"
    );
    assert!(
        ALLOWLIST.iter().all(|(_, _, why)| why.len() > 20),
        "every allowlist entry needs its reason"
    );
    assert!(
        problems.is_empty(),
        "{} DNS differences from tshark:\n{}",
        problems.len(),
        problems.join("\n")
    );
}
