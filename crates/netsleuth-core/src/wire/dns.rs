//! A DNS message view: the header, the first question and the answer records, read in place.
//!
//! `parse` fails only when the 12-byte header is missing; damage in the question is reported in
//! `DnsMessage::error` (the header is still useful: id, flags and rcode), damage in an answer ends the
//! answer iteration with an `Err` item. Names follow compression pointers with a jump limit, so a
//! pointer loop cannot hang the parser. The question name is the only allocation (one `String` per
//! message; DNS messages are rare next to TCP segments). [`DnsRepr`] writes messages back.

use super::field::{self as f, get};
use std::fmt;
use std::net::IpAddr;

mod emit;
pub use emit::{header_flags, write_name, DnsRepr, Record, CLASS_IN};

/// Record types the detectors talk about.
pub mod rtype {
    pub const A: u16 = 1;
    pub const NS: u16 = 2;
    pub const CNAME: u16 = 5;
    pub const SOA: u16 = 6;
    pub const PTR: u16 = 12;
    pub const MX: u16 = 15;
    pub const TXT: u16 = 16;
    pub const AAAA: u16 = 28;
    pub const SRV: u16 = 33;
    pub const OPT: u16 = 41;
    pub const ANY: u16 = 255;
}

/// Response codes (the 4-bit header field).
pub mod rcode {
    pub const NOERROR: u8 = 0;
    pub const FORMERR: u8 = 1;
    pub const SERVFAIL: u8 = 2;
    pub const NXDOMAIN: u8 = 3;
    pub const NOTIMP: u8 = 4;
    pub const REFUSED: u8 = 5;
}

/// The fixed header (RFC 1035 4.1.1).
pub mod field {
    use crate::wire::field::{Field, Rest};
    pub const ID: Field = 0..2;
    /// QR, opcode (4 bits), AA, TC, RD.
    pub const FLAGS_HI: usize = 2;
    /// RA, Z, AD, CD, RCODE (4 bits).
    pub const FLAGS_LO: usize = 3;
    pub const QDCOUNT: Field = 4..6;
    pub const ANCOUNT: Field = 6..8;
    pub const NSCOUNT: Field = 8..10;
    pub const ARCOUNT: Field = 10..12;
    pub const QUESTIONS: Rest = 12..;
}

/// Bits of `field::FLAGS_HI` and `field::FLAGS_LO`.
pub mod flags {
    pub const QR: u8 = 0x80;
    pub const OPCODE_SHIFT: u8 = 3;
    pub const OPCODE_MASK: u8 = 0x0F;
    pub const AA: u8 = 0x04;
    pub const TC: u8 = 0x02;
    pub const RD: u8 = 0x01;
    pub const RA: u8 = 0x80;
    pub const RCODE_MASK: u8 = 0x0F;
}

/// What follows a question's name.
pub mod question {
    use crate::wire::field::Field;
    pub const QTYPE: Field = 0..2;
    pub const QCLASS: Field = 2..4;
    pub const LEN: usize = QCLASS.end;
}

/// What follows a resource record's owner name; RDLENGTH bytes of data come next.
pub mod record {
    use crate::wire::field::{Field, Rest};
    pub const TYPE: Field = 0..2;
    pub const CLASS: Field = 2..4;
    pub const TTL: Field = 4..8;
    pub const RDLENGTH: Field = 8..10;
    pub const RDATA: Rest = 10..;
    pub const LEN: usize = RDATA.start;
}

/// The first byte of a label says what it is (RFC 1035 4.1.4).
mod label {
    pub const KIND_MASK: u8 = 0xC0;
    pub const PLAIN: u8 = 0x00;
    pub const POINTER: u8 = 0xC0;
    pub const POINTER_HI_MASK: u8 = 0x3F;
}

pub const HEADER_LEN: usize = field::QUESTIONS.start;
/// Longest name on the wire (RFC 1035 2.3.4).
const MAX_NAME_WIRE_LEN: usize = 255;
/// More compression jumps than a legal name can need (at most 127 labels): a loop.
const MAX_POINTER_JUMPS: usize = 128;

/// The fixed 12-byte header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DnsHeader {
    pub id: u16,
    /// Response (true) or query.
    pub qr: bool,
    pub opcode: u8,
    pub aa: bool,
    /// Truncated: the answer did not fit (UDP); the client should retry over TCP.
    pub tc: bool,
    pub rd: bool,
    pub ra: bool,
    /// The 4-bit header RCODE (EDNS extended bits not applied).
    pub rcode: u8,
    pub qdcount: u16,
    pub ancount: u16,
    pub nscount: u16,
    pub arcount: u16,
}

impl DnsHeader {
    /// Read the header; `None` when fewer than 12 bytes are given.
    #[inline]
    pub fn parse(msg: &[u8]) -> Option<DnsHeader> {
        let h = f::bytes::<HEADER_LEN>(msg, 0).ok()?;
        let be = |at| u16::from_be_bytes(get(h, at));
        let (hi, lo) = (h[field::FLAGS_HI], h[field::FLAGS_LO]);
        Some(DnsHeader {
            id: be(field::ID),
            qr: hi & flags::QR != 0,
            opcode: (hi >> flags::OPCODE_SHIFT) & flags::OPCODE_MASK,
            aa: hi & flags::AA != 0,
            tc: hi & flags::TC != 0,
            rd: hi & flags::RD != 0,
            ra: lo & flags::RA != 0,
            rcode: lo & flags::RCODE_MASK,
            qdcount: be(field::QDCOUNT),
            ancount: be(field::ANCOUNT),
            nscount: be(field::NSCOUNT),
            arcount: be(field::ARCOUNT),
        })
    }
}

/// What is wrong with a DNS message; `offset` is from the message start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DnsError {
    /// Fewer bytes than the 12-byte header.
    ShortHeader { len: usize },
    /// The message ends inside a name, question or record.
    Truncated { offset: usize },
    /// A label type other than a plain label or a compression pointer (0x40/0x80 prefixes).
    BadLabel { offset: usize },
    /// Compression pointers that loop, or point outside the message.
    BadPointer { offset: usize },
    /// A name longer than 255 bytes on the wire.
    NameTooLong { offset: usize },
}

impl fmt::Display for DnsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DnsError::ShortHeader { len } => write!(
                f,
                "DNS message of {len} bytes is shorter than its 12-byte header"
            ),
            DnsError::Truncated { offset } => {
                write!(f, "DNS message ends inside a field at byte {offset}")
            }
            DnsError::BadLabel { offset } => {
                write!(f, "DNS name has an unknown label type at byte {offset}")
            }
            DnsError::BadPointer { offset } => {
                write!(f, "DNS name compression pointer loops or points outside the message at byte {offset}")
            }
            DnsError::NameTooLong { offset } => {
                write!(f, "DNS name at byte {offset} is longer than 255 bytes")
            }
        }
    }
}

impl std::error::Error for DnsError {}

/// The first question of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Question {
    /// Presentation form without the trailing dot; the root is the empty string. Bytes outside printable
    /// ASCII and dots inside labels are escaped (`\DDD`, `\.`).
    pub name: String,
    pub qtype: u16,
    pub qclass: u16,
}

/// A parsed DNS message borrowing its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsMessage<'a> {
    pub header: DnsHeader,
    /// The first question, if `qdcount > 0` and it parsed.
    pub question: Option<Question>,
    /// The first problem met in the question section, if any (answers are then not reachable).
    pub error: Option<DnsError>,
    msg: &'a [u8],
    /// Where the answer section starts, if the question section parsed.
    answers_at: Option<usize>,
}

/// One resource record of the answer section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer<'a> {
    /// Offset of the owner name in the message (read it with `read_name`).
    pub name_at: usize,
    pub rtype: u16,
    pub class: u16,
    pub ttl: u32,
    pub rdata: &'a [u8],
}

impl Answer<'_> {
    /// The address of an A or AAAA record.
    pub fn addr(&self) -> Option<IpAddr> {
        match self.rtype {
            rtype::A => <[u8; 4]>::try_from(self.rdata).ok().map(IpAddr::from),
            rtype::AAAA => <[u8; 16]>::try_from(self.rdata).ok().map(IpAddr::from),
            _ => None,
        }
    }
}

/// Answer records by kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AnswerCounts {
    pub a: u16,
    pub aaaa: u16,
    pub cname: u16,
    pub other: u16,
    /// The answer section ended early or was damaged.
    pub damaged: bool,
}

/// Parse a DNS message (the UDP payload, or one message of a TCP stream without its length prefix).
pub fn parse(msg: &[u8]) -> Result<DnsMessage<'_>, DnsError> {
    let header = DnsHeader::parse(msg).ok_or(DnsError::ShortHeader { len: msg.len() })?;
    let mut m = DnsMessage {
        header,
        question: None,
        error: None,
        msg,
        answers_at: None,
    };
    let mut at = HEADER_LEN;
    for i in 0..header.qdcount {
        let mut name = String::new();
        let r = if i == 0 {
            read_name(msg, at, &mut name)
        } else {
            skip_name(msg, at)
        };
        let end = match r {
            Ok(end) => end,
            Err(e) => {
                m.error = Some(e);
                return Ok(m);
            }
        };
        let Ok(q) = f::bytes::<{ question::LEN }>(msg, end) else {
            m.error = Some(DnsError::Truncated { offset: msg.len() });
            return Ok(m);
        };
        if i == 0 {
            m.question = Some(Question {
                name,
                qtype: u16::from_be_bytes(get(q, question::QTYPE)),
                qclass: u16::from_be_bytes(get(q, question::QCLASS)),
            });
        }
        at = end + question::LEN;
    }
    m.answers_at = Some(at);
    Ok(m)
}

impl<'a> DnsMessage<'a> {
    /// The whole message.
    pub fn bytes(&self) -> &'a [u8] {
        self.msg
    }

    /// The records of the answer section, in order; an `Err` item ends the iteration.
    pub fn answers(&self) -> Answers<'a> {
        Answers {
            msg: self.msg,
            at: self.answers_at.unwrap_or(self.msg.len()),
            left: if self.answers_at.is_some() {
                self.header.ancount
            } else {
                0
            },
        }
    }

    /// Count the answer records by type.
    pub fn answer_counts(&self) -> AnswerCounts {
        let mut c = AnswerCounts {
            damaged: self.answers_at.is_none() && self.header.ancount > 0,
            ..Default::default()
        };
        for a in self.answers() {
            match a {
                Ok(a) => match a.rtype {
                    rtype::A => c.a = c.a.saturating_add(1),
                    rtype::AAAA => c.aaaa = c.aaaa.saturating_add(1),
                    rtype::CNAME => c.cname = c.cname.saturating_add(1),
                    _ => c.other = c.other.saturating_add(1),
                },
                Err(_) => c.damaged = true,
            }
        }
        c
    }

    /// A NOERROR response without any answer of the asked type (the name exists, the type does not).
    pub fn is_nodata(&self) -> bool {
        if !self.header.qr || self.header.rcode != rcode::NOERROR {
            return false;
        }
        let Some(q) = &self.question else {
            return false;
        };
        !self
            .answers()
            .any(|a| matches!(a, Ok(a) if a.rtype == q.qtype))
    }
}

/// Iterator over the answer section.
#[derive(Debug, Clone)]
pub struct Answers<'a> {
    msg: &'a [u8],
    at: usize,
    left: u16,
}

impl<'a> Iterator for Answers<'a> {
    type Item = Result<Answer<'a>, DnsError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let r = read_record(self.msg, self.at);
        match r {
            Ok((answer, end)) => {
                self.at = end;
                Some(Ok(answer))
            }
            Err(e) => {
                self.left = 0;
                Some(Err(e))
            }
        }
    }
}

fn read_record(msg: &[u8], at: usize) -> Result<(Answer<'_>, usize), DnsError> {
    let end = skip_name(msg, at)?;
    let r = f::bytes::<{ record::LEN }>(msg, end)
        .map_err(|_| DnsError::Truncated { offset: msg.len() })?;
    let rdlen = u16::from_be_bytes(get(r, record::RDLENGTH)) as usize;
    let rdata_at = end + record::RDATA.start;
    let rdata = msg
        .get(rdata_at..rdata_at + rdlen)
        .ok_or(DnsError::Truncated { offset: msg.len() })?;
    Ok((
        Answer {
            name_at: at,
            rtype: u16::from_be_bytes(get(r, record::TYPE)),
            class: u16::from_be_bytes(get(r, record::CLASS)),
            ttl: u32::from_be_bytes(get(r, record::TTL)),
            rdata,
        },
        rdata_at + rdlen,
    ))
}

/// Skip the name at `at` without decoding it; returns where the data after it starts.
fn skip_name(msg: &[u8], mut at: usize) -> Result<usize, DnsError> {
    let start = at;
    loop {
        let len = *msg
            .get(at)
            .ok_or(DnsError::Truncated { offset: msg.len() })?;
        match len & label::KIND_MASK {
            label::PLAIN if len == 0 => return Ok(at + 1),
            label::PLAIN => {
                at += 1 + len as usize;
                if at - start > MAX_NAME_WIRE_LEN {
                    return Err(DnsError::NameTooLong { offset: start });
                }
            }
            label::POINTER => {
                msg.get(at + 1)
                    .ok_or(DnsError::Truncated { offset: msg.len() })?;
                return Ok(at + 2);
            }
            _ => return Err(DnsError::BadLabel { offset: at }),
        }
    }
}

/// Decode the name at `at` into `out` (presentation form, no trailing dot, root = ""), following
/// compression pointers. Returns the offset just after the name where it is stored at `at`.
pub fn read_name(msg: &[u8], at: usize, out: &mut String) -> Result<usize, DnsError> {
    let mut p = at;
    let mut end_in_place = None;
    let mut jumps = 0;
    let mut wire_len = 0usize;
    loop {
        let len = *msg
            .get(p)
            .ok_or(DnsError::Truncated { offset: msg.len() })?;
        match len & label::KIND_MASK {
            label::PLAIN if len == 0 => return Ok(end_in_place.unwrap_or(p + 1)),
            label::PLAIN => {
                let label = msg
                    .get(p + 1..p + 1 + len as usize)
                    .ok_or(DnsError::Truncated { offset: msg.len() })?;
                wire_len += 1 + len as usize;
                if wire_len + 1 > MAX_NAME_WIRE_LEN {
                    return Err(DnsError::NameTooLong { offset: at });
                }
                if !out.is_empty() {
                    out.push('.');
                }
                push_label(out, label);
                p += 1 + len as usize;
            }
            label::POINTER => {
                let lo = *msg
                    .get(p + 1)
                    .ok_or(DnsError::Truncated { offset: msg.len() })?;
                let target = (((len & label::POINTER_HI_MASK) as usize) << 8) | lo as usize;
                if end_in_place.is_none() {
                    end_in_place = Some(p + 2);
                }
                jumps += 1;
                if jumps > MAX_POINTER_JUMPS || target >= msg.len() {
                    return Err(DnsError::BadPointer { offset: p });
                }
                p = target;
            }
            _ => return Err(DnsError::BadLabel { offset: p }),
        }
    }
}

fn push_label(out: &mut String, label: &[u8]) {
    for &b in label {
        match b {
            b'.' | b'\\' => {
                out.push('\\');
                out.push(b as char);
            }
            0x21..=0x7E => out.push(b as char),
            _ => {
                out.push('\\');
                out.push((b'0' + b / 100) as char);
                out.push((b'0' + (b / 10) % 10) as char);
                out.push((b'0' + b % 10) as char);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A response for example.com A with a CNAME (compressed owner) and two A records, plus a
    /// compressed pointer chain in the last owner name.
    fn response() -> Vec<u8> {
        let mut m = vec![0x12, 0x34, 0x81, 0x80, 0, 1, 0, 3, 0, 0, 0, 0];
        m.extend_from_slice(b"\x03www\x07example\x03com\x00\x00\x01\x00\x01");
        // CNAME www.example.com -> example.com (pointer to offset 16)
        m.extend_from_slice(&[0xC0, 12, 0, 5, 0, 1, 0, 0, 0, 60, 0, 2, 0xC0, 16]);
        m.extend_from_slice(&[0xC0, 16, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 93, 184, 216, 34]);
        m.extend_from_slice(&[0xC0, 16, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 10, 0, 0, 1]);
        m
    }

    #[test]
    fn parses_header_question_and_answers() {
        let r = response();
        let m = parse(&r).unwrap();
        assert_eq!(m.header.id, 0x1234);
        assert!(m.header.qr && m.header.rd && m.header.ra && !m.header.tc);
        assert_eq!(m.header.rcode, 0);
        let q = m.question.as_ref().unwrap();
        assert_eq!(
            (q.name.as_str(), q.qtype, q.qclass),
            ("www.example.com", 1, 1)
        );
        let addrs: Vec<_> = m.answers().filter_map(|a| a.unwrap().addr()).collect();
        assert_eq!(
            addrs,
            [
                "93.184.216.34".parse::<IpAddr>().unwrap(),
                "10.0.0.1".parse().unwrap()
            ]
        );
        assert_eq!(
            m.answer_counts(),
            AnswerCounts {
                a: 2,
                aaaa: 0,
                cname: 1,
                other: 0,
                damaged: false
            }
        );
        assert!(!m.is_nodata());
        let mut owner = String::new();
        let first = m.answers().next().unwrap().unwrap();
        read_name(&r, first.name_at, &mut owner).unwrap();
        assert_eq!(owner, "www.example.com");
    }

    #[test]
    fn nodata_is_noerror_without_the_asked_type() {
        let mut m = vec![0, 1, 0x81, 0x80, 0, 1, 0, 0, 0, 0, 0, 0];
        m.extend_from_slice(b"\x01a\x00\x00\x1c\x00\x01");
        assert!(parse(&m).unwrap().is_nodata());
        m[3] = 0x83; // NXDOMAIN is not NODATA
        assert!(!parse(&m).unwrap().is_nodata());
    }

    #[test]
    fn pointer_loop_is_an_error_not_a_hang() {
        let mut m = vec![0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        m.extend_from_slice(&[0xC0, 12, 0, 1, 0, 1]);
        let p = parse(&m).unwrap();
        assert_eq!(p.error, Some(DnsError::BadPointer { offset: 12 }));
        assert!(p.question.is_none());
        assert_eq!(p.answers().count(), 0);
    }

    #[test]
    fn root_and_escapes_render() {
        let mut s = String::new();
        read_name(&[0], 0, &mut s).unwrap();
        assert_eq!(s, "");
        read_name(b"\x03a.\x01\x00", 0, &mut s).unwrap();
        assert_eq!(s, "a\\.\\001");
    }

    #[test]
    fn short_and_damaged_messages_never_panic() {
        assert_eq!(
            parse(&[0; 11]).unwrap_err(),
            DnsError::ShortHeader { len: 11 }
        );
        let r = response();
        for n in 0..r.len() {
            if let Ok(m) = parse(&r[..n]) {
                let _ = m.answer_counts();
                let _ = m.is_nodata();
            }
        }
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..20_000 {
            let mut b = [0u8; 64];
            for v in b.iter_mut() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *v = x as u8;
            }
            // Make the counts small sometimes so that sections are actually walked.
            b[4] = 0;
            b[5] &= 3;
            b[6] = 0;
            b[7] &= 7;
            if let Ok(m) = parse(&b[..(x as usize % 64)]) {
                let _ = m.answer_counts();
            }
        }
    }

    #[test]
    fn long_names_are_refused() {
        let mut m = vec![0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        for _ in 0..5 {
            m.push(63);
            m.extend_from_slice(&[b'a'; 63]);
        }
        m.push(0);
        m.extend_from_slice(&[0, 1, 0, 1]);
        assert!(matches!(
            parse(&m).unwrap().error,
            Some(DnsError::NameTooLong { .. })
        ));
    }
}
