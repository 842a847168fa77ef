//! Writing DNS messages: [`DnsRepr`] is the owned counterpart of [`DnsMessage`] (smoltcp's `Repr`),
//! so that whoever writes DNS — the lab's servers and resolvers, the node's nameserver probe, the
//! tests' packet builders — speaks the decoder's own vocabulary, and what is written reads back
//! as written.

use super::{read_name, rtype, DnsHeader, DnsMessage, Question, HEADER_LEN};
use std::net::IpAddr;

/// Bits of the header's flags word (the 16 bits after the ID).
pub mod header_flags {
    /// A response.
    pub const QR: u16 = 0x8000;
    /// Authoritative answer.
    pub const AA: u16 = 0x0400;
    /// Truncated.
    pub const TC: u16 = 0x0200;
    /// Recursion desired.
    pub const RD: u16 = 0x0100;
    /// Recursion available.
    pub const RA: u16 = 0x0080;
    /// The 4-bit RCODE.
    pub const RCODE: u16 = 0x000F;
}

/// Class IN.
pub const CLASS_IN: u16 = 1;

/// One resource record to write (answer section).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Owner name in presentation form; the question's own name is written as a pointer to it.
    pub name: String,
    pub rtype: u16,
    pub class: u16,
    pub ttl: u32,
    pub rdata: Vec<u8>,
}

impl Record {
    /// A class IN record.
    pub fn new(name: &str, rtype: u16, ttl: u32, rdata: &[u8]) -> Record {
        Record {
            name: name.to_string(),
            rtype,
            class: CLASS_IN,
            ttl,
            rdata: rdata.to_vec(),
        }
    }

    /// An A record for an IPv4 address, an AAAA record for an IPv6 one.
    pub fn addr(name: &str, addr: IpAddr, ttl: u32) -> Record {
        match addr {
            IpAddr::V4(a) => Record::new(name, rtype::A, ttl, &a.octets()),
            IpAddr::V6(a) => Record::new(name, rtype::AAAA, ttl, &a.octets()),
        }
    }

    /// A CNAME record pointing at `target`.
    pub fn cname(name: &str, target: &str, ttl: u32) -> Record {
        let mut rdata = Vec::new();
        write_name(target, &mut rdata);
        Record::new(name, rtype::CNAME, ttl, &rdata)
    }
}

/// An owned DNS message: the ID, the flags word, at most one question and the answer section.
/// The section counts are not kept: [`DnsRepr::emit`] writes them from the sections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsRepr {
    pub id: u16,
    /// QR, opcode, AA, TC, RD, RA, Z and RCODE as on the wire (see [`flags`]).
    pub flags: u16,
    pub question: Option<Question>,
    pub answers: Vec<Record>,
}

impl DnsHeader {
    /// The flags word of this header (the Z bits, which the header does not keep, are 0).
    pub fn flags(&self) -> u16 {
        let bit = |b: bool, f: u16| if b { f } else { 0 };
        bit(self.qr, header_flags::QR)
            | (u16::from(self.opcode & 0x0F) << 11)
            | bit(self.aa, header_flags::AA)
            | bit(self.tc, header_flags::TC)
            | bit(self.rd, header_flags::RD)
            | bit(self.ra, header_flags::RA)
            | u16::from(self.rcode & 0x0F)
    }
}

impl DnsRepr {
    /// A recursive query (RD) for `name`/`qtype`, class IN.
    pub fn query(id: u16, name: &str, qtype: u16) -> DnsRepr {
        DnsRepr {
            id,
            flags: header_flags::RD,
            question: Some(Question {
                name: name.trim_end_matches('.').to_string(),
                qtype,
                qclass: CLASS_IN,
            }),
            answers: Vec::new(),
        }
    }

    /// The owned form of a parsed message: its ID, flags word (Z bits included), first question and
    /// the answers up to the first damaged one.
    pub fn from_message(m: &DnsMessage<'_>) -> DnsRepr {
        let msg = m.bytes();
        let answers = m
            .answers()
            .map_while(Result::ok)
            .map(|a| {
                let mut name = String::new();
                // The record was read, so its owner name was walked already.
                let _ = read_name(msg, a.name_at, &mut name);
                Record {
                    name,
                    rtype: a.rtype,
                    class: a.class,
                    ttl: a.ttl,
                    rdata: a.rdata.to_vec(),
                }
            })
            .collect();
        DnsRepr {
            id: m.header.id,
            flags: msg
                .get(2..4)
                .map_or(m.header.flags(), |f| u16::from_be_bytes([f[0], f[1]])),
            question: m.question.clone(),
            answers,
        }
    }

    /// The response to this query with `rcode`: the same ID, question and RD bit; QR and RA set; no
    /// answers yet.
    pub fn response(&self, rcode: u8) -> DnsRepr {
        DnsRepr {
            id: self.id,
            flags: header_flags::QR
                | (self.flags & (header_flags::RD | 0x7800))
                | header_flags::RA
                | (u16::from(rcode) & header_flags::RCODE),
            question: self.question.clone(),
            answers: Vec::new(),
        }
    }

    /// Adds a record to the answer section.
    pub fn answer(mut self, r: Record) -> DnsRepr {
        self.answers.push(r);
        self
    }

    pub fn is_response(&self) -> bool {
        self.flags & header_flags::QR != 0
    }

    pub fn rcode(&self) -> u8 {
        (self.flags & header_flags::RCODE) as u8
    }

    /// The addresses of the A and AAAA answers, in order.
    pub fn addrs(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.answers
            .iter()
            .filter_map(|r| match (r.rtype, r.rdata.len()) {
                (rtype::A, 4) => <[u8; 4]>::try_from(r.rdata.as_slice())
                    .ok()
                    .map(IpAddr::from),
                (rtype::AAAA, 16) => <[u8; 16]>::try_from(r.rdata.as_slice())
                    .ok()
                    .map(IpAddr::from),
                _ => None,
            })
    }

    /// The message in wire form. Answer owners equal to the question name are written as a pointer
    /// to it (offset 12, as servers compress them).
    pub fn emit(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + 64 + 32 * self.answers.len());
        self.emit_into(&mut out);
        out
    }

    /// Appends the message in wire form to `out`.
    pub fn emit_into(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&self.id.to_be_bytes());
        out.extend_from_slice(&self.flags.to_be_bytes());
        let qdcount = u16::from(self.question.is_some());
        let ancount = u16::try_from(self.answers.len()).unwrap_or(u16::MAX);
        for count in [qdcount, ancount, 0, 0] {
            out.extend_from_slice(&count.to_be_bytes());
        }
        let qname = self.question.as_ref().map(|q| q.name.as_str());
        if let Some(q) = &self.question {
            write_name(&q.name, out);
            out.extend_from_slice(&q.qtype.to_be_bytes());
            out.extend_from_slice(&q.qclass.to_be_bytes());
        }
        for r in self.answers.iter().take(usize::from(ancount)) {
            if qname.is_some_and(|q| q.eq_ignore_ascii_case(r.name.trim_end_matches('.'))) {
                let ptr = 0xC000 | (HEADER_LEN as u16);
                out.extend_from_slice(&ptr.to_be_bytes());
            } else {
                write_name(&r.name, out);
            }
            out.extend_from_slice(&r.rtype.to_be_bytes());
            out.extend_from_slice(&r.class.to_be_bytes());
            out.extend_from_slice(&r.ttl.to_be_bytes());
            let len = r.rdata.len().min(usize::from(u16::MAX));
            out.extend_from_slice(&(len as u16).to_be_bytes());
            out.extend_from_slice(&r.rdata[..len]);
        }
        debug_assert!(out.len() - start >= HEADER_LEN);
    }
}

/// Appends `name` (presentation form as [`read_name`] writes it: `\.` and `\\` for a literal dot or
/// backslash in a label, `\DDD` for other bytes; a trailing dot or none) in wire form. Labels longer
/// than 63 bytes are cut to 63, and labels stop before the name would pass 255 bytes.
pub fn write_name(name: &str, out: &mut Vec<u8>) {
    let bytes = name.as_bytes();
    let mut labels: Vec<Vec<u8>> = vec![Vec::new()];
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'\\' => {
                let digits = bytes
                    .get(i + 1..i + 4)
                    .filter(|d| d.iter().all(u8::is_ascii_digit));
                match digits {
                    Some(d) => {
                        let v = d.iter().fold(0u32, |v, c| v * 10 + u32::from(c - b'0'));
                        push_byte(&mut labels, u8::try_from(v).unwrap_or(u8::MAX));
                        i += 4;
                    }
                    None => {
                        if let Some(&c) = bytes.get(i + 1) {
                            push_byte(&mut labels, c);
                        }
                        i += 2;
                    }
                }
            }
            b'.' => {
                labels.push(Vec::new());
                i += 1;
            }
            _ => {
                push_byte(&mut labels, b);
                i += 1;
            }
        }
    }
    let mut wire_len = 1;
    for label in labels.iter().filter(|l| !l.is_empty()) {
        let label = &label[..label.len().min(63)];
        if wire_len + 1 + label.len() > 255 {
            break;
        }
        wire_len += 1 + label.len();
        out.push(label.len() as u8);
        out.extend_from_slice(label);
    }
    out.push(0);
}

fn push_byte(labels: &mut [Vec<u8>], b: u8) {
    if let Some(l) = labels.last_mut() {
        l.push(b);
    }
}

#[cfg(test)]
mod tests {
    use super::super::{parse, rcode};
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn query_and_response_read_back_as_written() {
        let q = DnsRepr::query(0x1234, "web.default.svc.cluster.local.", rtype::A);
        let bytes = q.emit();
        let m = parse(&bytes).unwrap();
        assert_eq!(m.header.id, 0x1234);
        assert!(m.header.rd && !m.header.qr);
        assert_eq!(m.header.flags(), header_flags::RD);
        let question = m.question.clone().unwrap();
        assert_eq!(question.name, "web.default.svc.cluster.local");
        assert_eq!((question.qtype, question.qclass), (rtype::A, CLASS_IN));
        assert_eq!(DnsRepr::from_message(&m), q);

        let addr = IpAddr::V4(Ipv4Addr::new(10, 96, 0, 20));
        let r = DnsRepr::from_message(&m)
            .response(rcode::NOERROR)
            .answer(Record::addr(&question.name, addr, 30))
            .answer(Record::cname(
                "alias.example",
                "web.default.svc.cluster.local",
                30,
            ));
        let bytes = r.emit();
        // The first owner is the question's name: a pointer to offset 12.
        let first_answer = 12 + question.name.len() + 2 + 4;
        assert_eq!(&bytes[first_answer..first_answer + 2], &[0xC0, 12]);
        let m = parse(&bytes).unwrap();
        assert!(m.header.qr && m.header.rd && m.header.ra);
        assert_eq!(m.answer_counts().a, 1);
        assert_eq!(m.answer_counts().cname, 1);
        let back = DnsRepr::from_message(&m);
        assert_eq!(back, r);
        assert_eq!(back.addrs().collect::<Vec<_>>(), [addr]);
        assert_eq!(back.rcode(), rcode::NOERROR);
        assert!(back.is_response());
    }

    #[test]
    fn escaped_names_round_trip() {
        for name in ["a\\.b.example", "x\\001y.example", "", "back\\\\slash"] {
            let mut wire = Vec::new();
            write_name(name, &mut wire);
            let mut back = String::new();
            read_name(&wire, 0, &mut back).unwrap();
            assert_eq!(back, name);
        }
    }

    #[test]
    fn overlong_labels_and_names_are_cut_not_written_broken() {
        let mut wire = Vec::new();
        write_name(&"a".repeat(70), &mut wire);
        assert_eq!(wire[0], 63);
        let long = vec!["b".repeat(60); 6].join(".");
        let mut wire = Vec::new();
        write_name(&long, &mut wire);
        assert!(wire.len() <= 255);
        let mut back = String::new();
        read_name(&wire, 0, &mut back).unwrap();
    }

    #[test]
    fn header_flags_word_matches_the_wire() {
        let mut r = DnsRepr::query(7, "a", rtype::AAAA).response(rcode::NXDOMAIN);
        r.flags |= header_flags::AA | header_flags::TC;
        let bytes = r.emit();
        let h = DnsHeader::parse(&bytes).unwrap();
        assert_eq!(h.flags(), u16::from_be_bytes([bytes[2], bytes[3]]));
        assert!(h.aa && h.tc && h.qr);
        assert_eq!(h.rcode, rcode::NXDOMAIN);
    }
}
