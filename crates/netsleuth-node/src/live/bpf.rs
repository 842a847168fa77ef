//! The packet tap's classic BPF filter, hand-assembled: the tap keeps only what the capture detectors
//! read, so a busy node's bulk data never reaches user space.
//!
//! The tap is a `SOCK_DGRAM` packet socket (cooked, as `tcpdump -i any`): the filter sees the packet
//! from its network header, and the link protocol through the `SKF_AD_PROTOCOL` ancillary load. It
//! passes, for IPv4 and IPv6:
//! - TCP segments with SYN, FIN or RST (handshakes, closes, resets: every connection's identity and
//!   end), and every TCP segment to or from port 53 (DNS over TCP is reassembled by the core);
//! - UDP to or from port 53 (DNS, both directions), and IPv4 fragments after the first (a large DNS
//!   response's tail carries no ports);
//! - ICMP errors (destination unreachable, time exceeded, parameter problem; ICMPv6 types 1–127);
//! - ARP, and IPv6 neighbour solicitations and advertisements (ICMPv6 135/136): a neighbour storm is
//!   the capture side of neighbour-table-overflow, and on a healthy node they are a trickle.
//!
//! What it returns is the snap length: [`SNAP_CONTROL`] bytes for TCP control segments and ICMP
//! errors (every header, with options and the quoted header of an ICMP error), [`SNAP_DNS`] for DNS
//! (the whole message of an EDNS response at the usual 1232-byte limit).
//!
//! Not passed, by design: TCP data and pure ACKs (the bulk of any node's traffic), IPv6 packets whose
//! first next-header is an extension header, and tunnel underlays (VXLAN/Geneve outer packets: the
//! inner packets are seen on the tunnel's own device; verifying an outer UDP checksum, the capture side
//! of vxlan-checksum-offload, would need every tunnelled packet whole).

/// One cBPF instruction (`struct sock_filter`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

// Instruction classes and modes (linux/bpf_common.h).
pub(crate) const LD: u16 = 0x00;
pub(crate) const LDX: u16 = 0x01;
pub(crate) const JMP: u16 = 0x05;
pub(crate) const RET: u16 = 0x06;
pub(crate) const W: u16 = 0x00;
pub(crate) const H: u16 = 0x08;
pub(crate) const B: u16 = 0x10;
pub(crate) const ABS: u16 = 0x20;
pub(crate) const IND: u16 = 0x40;
pub(crate) const MSH: u16 = 0xa0;
pub(crate) const JEQ: u16 = 0x10;
pub(crate) const JGE: u16 = 0x30;
pub(crate) const JSET: u16 = 0x40;
pub(crate) const K: u16 = 0x00;

/// `SKF_AD_OFF + SKF_AD_PROTOCOL`: loads `ntohs(skb->protocol)`.
pub(crate) const AD_PROTOCOL: u32 = (-0x1000i32) as u32;

pub const ETH_P_IP: u32 = 0x0800;
pub const ETH_P_IPV6: u32 = 0x86dd;
pub const ETH_P_ARP: u32 = 0x0806;

/// Bytes kept of a TCP control segment or an ICMP error: an IPv6 header (40), TCP with the longest
/// options (60), and for an ICMP error its header and the quoted IP and TCP headers, with room to spare.
pub const SNAP_CONTROL: u32 = 256;
/// Bytes kept of a DNS packet: headers plus a 1232-byte EDNS message (the DNS flag day's size).
pub const SNAP_DNS: u32 = 1400;

/// A forward jump target, resolved when the program is finished.
#[derive(Clone, Copy)]
pub(crate) enum Target {
    Next,
    Label(&'static str),
}

pub(crate) struct Pending {
    pub(crate) code: u16,
    pub(crate) k: u32,
    pub(crate) jt: Target,
    pub(crate) jf: Target,
}

/// A tiny assembler: instructions with named forward labels; `finish` resolves the jumps (cBPF jumps
/// only forward, at most 255 instructions).
pub(crate) struct Asm {
    pub(crate) insns: Vec<Pending>,
    /// Each label and the instruction it names (several labels may name one).
    pub(crate) labels: Vec<(&'static str, usize)>,
}

impl Asm {
    fn new() -> Self {
        Asm {
            insns: Vec::new(),
            labels: Vec::new(),
        }
    }
    fn label(&mut self, name: &'static str) {
        self.labels.push((name, self.insns.len()));
    }
    fn op(&mut self, code: u16, k: u32) {
        self.insns.push(Pending {
            code,
            k,
            jt: Target::Next,
            jf: Target::Next,
        });
    }
    fn jump(&mut self, code: u16, k: u32, jt: Target, jf: Target) {
        self.insns.push(Pending { code, k, jt, jf });
    }
    fn finish(self) -> Result<Vec<Insn>, String> {
        let mut out = Vec::with_capacity(self.insns.len());
        for (i, p) in self.insns.iter().enumerate() {
            let resolve = |t: Target| -> Result<u8, String> {
                let to = match t {
                    Target::Next => i + 1,
                    Target::Label(l) => self
                        .labels
                        .iter()
                        .find(|(n, _)| *n == l)
                        .map(|(_, at)| *at)
                        .ok_or_else(|| format!("label {l} is not defined"))?,
                };
                if to <= i {
                    return Err(format!("jump from {i} to {to} is not forward"));
                }
                u8::try_from(to - i - 1).map_err(|_| format!("jump from {i} to {to} is too far"))
            };
            out.push(Insn {
                code: p.code,
                jt: resolve(p.jt)?,
                jf: resolve(p.jf)?,
                k: p.k,
            });
        }
        Ok(out)
    }
}

use Target::{Label as L, Next};

/// The labels of the exit taken by IPv4 and IPv6 TCP segments that are neither control segments nor
/// DNS (one classic instruction, `RET 0`; two blocks in the eBPF filter).
pub(crate) const TCP_DATA_V4: &str = "tcp_data_v4";
pub(crate) const TCP_DATA_V6: &str = "tcp_data_v6";

/// The tap's filter as symbolic assembly: [`tap_filter`] resolves it to classic BPF, and
/// `live::ebpf` translates it to eBPF with the idle check at the TCP data exit.
pub(crate) fn tap_asm() -> Asm {
    let mut a = Asm::new();
    a.op(LD | W | ABS, AD_PROTOCOL);
    a.jump(JMP | JEQ | K, ETH_P_IP, L("v4"), Next);
    a.jump(JMP | JEQ | K, ETH_P_IPV6, L("v6"), Next);
    a.jump(JMP | JEQ | K, ETH_P_ARP, L("control"), L("drop"));

    // IPv4: the protocol, then X = the header length.
    a.label("v4");
    a.op(LD | B | ABS, 9);
    a.jump(JMP | JEQ | K, 6, L("v4tcp"), Next);
    a.jump(JMP | JEQ | K, 17, L("v4udp"), Next);
    a.jump(JMP | JEQ | K, 1, L("v4icmp"), L("drop"));

    a.label("v4tcp");
    a.op(LD | H | ABS, 6);
    a.jump(JMP | JSET | K, 0x1fff, L("drop"), Next); // a later fragment has no TCP header
    a.op(LDX | B | MSH, 0);
    a.op(LD | B | IND, 13);
    a.jump(JMP | JSET | K, 0x07, L("control"), Next); // FIN | SYN | RST
    a.op(LD | H | IND, 0);
    a.jump(JMP | JEQ | K, 53, L("dns"), Next);
    a.op(LD | H | IND, 2);
    a.jump(JMP | JEQ | K, 53, L("dns"), L(TCP_DATA_V4));

    a.label("v4udp");
    a.op(LD | H | ABS, 6);
    a.jump(JMP | JSET | K, 0x1fff, L("dns"), Next); // a DNS response's tail: no ports to test
    a.op(LDX | B | MSH, 0);
    a.op(LD | H | IND, 0);
    a.jump(JMP | JEQ | K, 53, L("dns"), Next);
    a.op(LD | H | IND, 2);
    a.jump(JMP | JEQ | K, 53, L("dns"), L("drop"));

    a.label("v4icmp");
    a.op(LDX | B | MSH, 0);
    a.op(LD | B | IND, 0);
    a.jump(JMP | JEQ | K, 3, L("control"), Next); // destination unreachable
    a.jump(JMP | JEQ | K, 11, L("control"), Next); // time exceeded
    a.jump(JMP | JEQ | K, 12, L("control"), L("drop")); // parameter problem

    // IPv6: the first next-header only (extension headers are not walked).
    a.label("v6");
    a.op(LD | B | ABS, 6);
    a.jump(JMP | JEQ | K, 6, L("v6tcp"), Next);
    a.jump(JMP | JEQ | K, 17, L("v6udp"), Next);
    a.jump(JMP | JEQ | K, 58, L("v6icmp"), L("drop"));

    a.label("v6tcp");
    a.op(LD | B | ABS, 40 + 13);
    a.jump(JMP | JSET | K, 0x07, L("control"), Next);
    a.op(LD | H | ABS, 40);
    a.jump(JMP | JEQ | K, 53, L("dns"), Next);
    a.op(LD | H | ABS, 42);
    a.jump(JMP | JEQ | K, 53, L("dns"), L(TCP_DATA_V6));

    a.label("v6udp");
    a.op(LD | H | ABS, 40);
    a.jump(JMP | JEQ | K, 53, L("dns"), Next);
    a.op(LD | H | ABS, 42);
    a.jump(JMP | JEQ | K, 53, L("dns"), L("drop"));

    a.label("v6icmp");
    a.op(LD | B | ABS, 40);
    a.jump(JMP | JGE | K, 128, Next, L("control")); // 1–127 are errors
    a.jump(JMP | JEQ | K, 135, L("control"), Next); // neighbour solicitation
    a.jump(JMP | JEQ | K, 136, L("control"), L("drop")); // neighbour advertisement

    a.label("control");
    a.op(RET | K, SNAP_CONTROL);
    a.label("dns");
    a.op(RET | K, SNAP_DNS);
    a.label("drop");
    a.op(RET | K, 0);
    // TCP segments without SYN/FIN/RST, not DNS: dropped here; the eBPF filter (`live::ebpf`) puts
    // its idle check in place of this exit (X holds the IPv4 header's length at `TCP_DATA_V4`).
    a.label(TCP_DATA_V4);
    a.label(TCP_DATA_V6);
    a.op(RET | K, 0);
    a
}

/// The tap's filter program (see the module's comment for what it passes).
pub fn tap_filter() -> Vec<Insn> {
    tap_asm()
        .finish()
        .expect("the tap filter's labels are all defined and its jumps forward and short")
}

/// The index in [`tap_filter`] of the exit taken by TCP segments without SYN, FIN or RST and not to
/// or from port 53: the exit the eBPF filter replaces with its idle check.
pub fn tcp_data_exit() -> usize {
    tap_asm()
        .labels
        .iter()
        .find(|(n, _)| *n == TCP_DATA_V4)
        .map(|(_, at)| *at)
        .expect("the tap filter defines its TCP data exit")
}

/// Runs a cBPF program on a cooked packet (network header first, `protocol` the link's ethertype),
/// as the kernel would: the snap length it returns (0 = dropped). A load beyond the packet ends the
/// program with 0, as in the kernel. Only the instructions `tap_filter` uses are implemented; any
/// other ends the program with 0 (tests then fail visibly).
pub fn run(prog: &[Insn], protocol: u16, pkt: &[u8]) -> u32 {
    run_to_exit(prog, protocol, pkt).0
}

/// [`run`], also giving the index of the `RET` the program ended at (`usize::MAX` when it ended
/// otherwise: a load beyond the packet or an unknown instruction).
pub fn run_to_exit(prog: &[Insn], protocol: u16, pkt: &[u8]) -> (u32, usize) {
    let (mut acc, mut x, mut pc) = (0u32, 0u32, 0usize);
    let load = |off: u32, size: u16| -> Option<u32> {
        let off = usize::try_from(off).ok()?;
        let n = match size {
            W => 4,
            H => 2,
            _ => 1,
        };
        let b = pkt.get(off..off.checked_add(n)?)?;
        Some(b.iter().fold(0u32, |v, &byte| (v << 8) | u32::from(byte)))
    };
    while let Some(i) = prog.get(pc) {
        pc += 1;
        let class = i.code & 0x07;
        let size = i.code & 0x18;
        let mode = i.code & 0xe0;
        match (class, mode) {
            (LD, ABS) if i.k == AD_PROTOCOL => acc = u32::from(protocol),
            (LD, ABS) => match load(i.k, size) {
                Some(v) => acc = v,
                None => return (0, usize::MAX),
            },
            (LD, IND) => match load(x.wrapping_add(i.k), size) {
                Some(v) => acc = v,
                None => return (0, usize::MAX),
            },
            (LDX, MSH) => match load(i.k, B) {
                Some(v) => x = (v & 0x0f) * 4,
                None => return (0, usize::MAX),
            },
            (RET, _) => return (i.k, pc - 1),
            (JMP, _) => {
                let taken = match i.code & 0xf0 {
                    JEQ => acc == i.k,
                    JGE => acc >= i.k,
                    JSET => acc & i.k != 0,
                    _ => return (0, usize::MAX),
                };
                pc += usize::from(if taken { i.jt } else { i.jf });
            }
            _ => return (0, usize::MAX),
        }
    }
    (0, usize::MAX)
}

/// Packets for the filters' tests (network header first), shared by the classic and eBPF tests.
#[cfg(test)]
pub(crate) mod test_packets {
    pub(crate) fn v4(proto: u8, frag: u16, l4: &[u8]) -> Vec<u8> {
        let mut p = vec![0x45, 0, 0, 0, 0, 0];
        p.extend_from_slice(&frag.to_be_bytes());
        p.extend_from_slice(&[64, proto, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2]);
        p.extend_from_slice(l4);
        p
    }
    pub(crate) fn v4_opts(proto: u8, l4: &[u8]) -> Vec<u8> {
        // IHL 6: one 4-byte option (NOPs) before the transport header.
        let mut p = vec![0x46, 0, 0, 0, 0, 0, 0x40, 0, 64, proto, 0, 0];
        p.extend_from_slice(&[10, 0, 0, 1, 10, 0, 0, 2, 1, 1, 1, 1]);
        p.extend_from_slice(l4);
        p
    }
    pub(crate) fn v6(next: u8, l4: &[u8]) -> Vec<u8> {
        let mut p = vec![0x60, 0, 0, 0, 0, 0, next, 64];
        p.extend_from_slice(&[0u8; 32]);
        p.extend_from_slice(l4);
        p
    }
    pub(crate) fn tcp(sport: u16, dport: u16, flags: u8) -> Vec<u8> {
        let mut t = Vec::new();
        t.extend_from_slice(&sport.to_be_bytes());
        t.extend_from_slice(&dport.to_be_bytes());
        t.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
        t
    }
    pub(crate) fn udp(sport: u16, dport: u16) -> Vec<u8> {
        let mut u = Vec::new();
        u.extend_from_slice(&sport.to_be_bytes());
        u.extend_from_slice(&dport.to_be_bytes());
        u.extend_from_slice(&[0, 20, 0, 0]);
        u.extend_from_slice(&[0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
        u
    }
}

#[cfg(test)]
mod tests {
    use super::test_packets::{tcp, udp, v4, v4_opts, v6};
    use super::*;

    const SYN: u8 = 0x02;
    const FIN_ACK: u8 = 0x11;
    const RST: u8 = 0x04;
    const ACK: u8 = 0x10;
    const PSH_ACK: u8 = 0x18;

    #[test]
    fn passes_tcp_control_segments_of_both_families() {
        let f = tap_filter();
        for flags in [SYN, SYN | ACK, FIN_ACK, RST, RST | ACK] {
            let t = tcp(40000, 80, flags);
            assert_eq!(
                run(&f, 0x0800, &v4(6, 0x4000, &t)),
                SNAP_CONTROL,
                "{flags:#x}"
            );
            assert_eq!(run(&f, 0x0800, &v4_opts(6, &t)), SNAP_CONTROL);
            assert_eq!(run(&f, 0x86dd, &v6(6, &t)), SNAP_CONTROL);
        }
    }

    #[test]
    fn drops_tcp_data_and_pure_acks_except_dns() {
        let f = tap_filter();
        for flags in [ACK, PSH_ACK] {
            let t = tcp(40000, 443, flags);
            assert_eq!(run(&f, 0x0800, &v4(6, 0, &t)), 0);
            assert_eq!(run(&f, 0x0800, &v4_opts(6, &t)), 0);
            assert_eq!(run(&f, 0x86dd, &v6(6, &t)), 0);
            // DNS over TCP: every segment, either direction.
            assert_eq!(run(&f, 0x0800, &v4(6, 0, &tcp(40000, 53, flags))), SNAP_DNS);
            assert_eq!(run(&f, 0x86dd, &v6(6, &tcp(53, 40000, flags))), SNAP_DNS);
        }
    }

    #[test]
    fn passes_dns_over_udp_both_ways_and_later_fragments() {
        let f = tap_filter();
        assert_eq!(run(&f, 0x0800, &v4(17, 0, &udp(40000, 53))), SNAP_DNS);
        assert_eq!(run(&f, 0x0800, &v4(17, 0, &udp(53, 40000))), SNAP_DNS);
        assert_eq!(run(&f, 0x0800, &v4_opts(17, &udp(53, 40000))), SNAP_DNS);
        assert_eq!(run(&f, 0x86dd, &v6(17, &udp(40000, 53))), SNAP_DNS);
        assert_eq!(run(&f, 0x86dd, &v6(17, &udp(53, 40000))), SNAP_DNS);
        assert_eq!(run(&f, 0x0800, &v4(17, 0, &udp(40000, 4789))), 0);
        assert_eq!(run(&f, 0x86dd, &v6(17, &udp(5353, 5353))), 0);
        // A later fragment (offset 185 × 8) of a UDP datagram: passed, its ports are in the first.
        assert_eq!(run(&f, 0x0800, &v4(17, 185, &[0u8; 8])), SNAP_DNS);
        // A later TCP fragment is not.
        assert_eq!(run(&f, 0x0800, &v4(6, 185, &[0u8; 20])), 0);
    }

    #[test]
    fn passes_icmp_errors_and_neighbour_discovery_only() {
        let f = tap_filter();
        for (ty, pass) in [(3u8, true), (11, true), (12, true), (0, false), (8, false)] {
            let want = if pass { SNAP_CONTROL } else { 0 };
            assert_eq!(
                run(&f, 0x0800, &v4(1, 0, &[ty, 0, 0, 0])),
                want,
                "icmp {ty}"
            );
        }
        for (ty, pass) in [
            (1u8, true),
            (2, true),
            (3, true),
            (4, true),
            (128, false),
            (129, false),
            (135, true), // neighbour solicitation
            (136, true), // neighbour advertisement
            (137, false),
        ] {
            let want = if pass { SNAP_CONTROL } else { 0 };
            assert_eq!(
                run(&f, 0x86dd, &v6(58, &[ty, 0, 0, 0])),
                want,
                "icmpv6 {ty}"
            );
        }
    }

    #[test]
    fn drops_other_protocols_and_short_packets() {
        let f = tap_filter();
        assert_eq!(run(&f, 0x0806, &[0u8; 28]), SNAP_CONTROL); // ARP: neighbour storms
        assert_eq!(run(&f, 0x8035, &[0u8; 28]), 0); // RARP
        assert_eq!(run(&f, 0x0800, &v4(47, 0, &[0u8; 8])), 0); // GRE
        assert_eq!(run(&f, 0x86dd, &v6(0, &tcp(1, 2, SYN))), 0); // hop-by-hop first
                                                                 // Truncated: the flags byte is beyond the packet, so the kernel (and `run`) stop with 0.
        assert_eq!(run(&f, 0x0800, &v4(6, 0, &[0u8; 10])), 0);
        assert_eq!(run(&f, 0x0800, &[0x45]), 0);
        assert_eq!(run(&f, 0x86dd, &[]), 0);
    }

    #[test]
    fn assembler_rejects_backward_and_missing_labels() {
        let mut a = Asm::new();
        a.label("top");
        a.jump(JMP | JEQ | K, 1, L("top"), Next);
        assert!(a.finish().unwrap_err().contains("not forward"));
        let mut a = Asm::new();
        a.jump(JMP | JEQ | K, 1, L("nowhere"), Next);
        assert!(a.finish().unwrap_err().contains("not defined"));
        assert!(tap_filter().len() < 64);
    }
}
