//! Netlink, the one vocabulary every netlink reader (conntrack, nf_tables) speaks: the header layouts
//! and flag constants (`linux/netlink.h`, `linux/netfilter/nfnetlink.h`), the request builder, the
//! messages of one received buffer and the attributes of a message body. Pure; never panics on short
//! or damaged input.
//!
//! Netlink headers and attribute headers are in host byte order; nf_tables and ctnetlink attribute
//! values are in network order unless they say otherwise.

use netsleuth_core::wire::field;

/// `struct nlmsghdr`.
pub mod header {
    use netsleuth_core::wire::field::{Field, Rest};
    /// Length of the message, this header included (not the padding after it).
    pub const LENGTH: Field = 0..4;
    pub const TYPE: Field = 4..6;
    /// `flags::*`.
    pub const FLAGS: Field = 6..8;
    pub const SEQ: Field = 8..12;
    /// Sending port id; 0 for the kernel.
    pub const PID: Field = 12..16;
    pub const BODY: Rest = 16..;
    pub const LEN: usize = BODY.start;
}

/// `struct nfgenmsg`: the start of every nfnetlink message body.
pub mod nfgenmsg {
    use netsleuth_core::wire::field::{Field, Rest};
    /// NFPROTO_* (0 = every family in a dump request).
    pub const FAMILY: usize = 0;
    pub const VERSION: usize = 1;
    /// Resource id, network byte order (nf_tables: the ruleset generation in replies).
    pub const RES_ID: Field = 2..4;
    pub const ATTRIBUTES: Rest = 4..;
    pub const LEN: usize = ATTRIBUTES.start;
    pub const NFNETLINK_V0: u8 = 0;
}

/// `struct nlattr`.
pub mod attr {
    use netsleuth_core::wire::field::{Field, Rest};
    /// Length of the attribute, this header included (not the padding after it).
    pub const LENGTH: Field = 0..2;
    pub const TYPE: Field = 2..4;
    pub const VALUE: Rest = 4..;
    pub const LEN: usize = VALUE.start;
    pub const F_NESTED: u16 = 0x8000;
    pub const F_NET_BYTEORDER: u16 = 0x4000;
    /// The type without the two flags above.
    pub const TYPE_MASK: u16 = !(F_NESTED | F_NET_BYTEORDER);
}

/// `nlmsghdr.nlmsg_flags` (`NLM_F_*`).
pub mod flags {
    /// A request (every message to the kernel carries it).
    pub const REQUEST: u16 = 0x1;
    /// Part of a multipart reply, ended by NLMSG_DONE.
    pub const MULTI: u16 = 0x2;
    /// Ask for an acknowledgement.
    pub const ACK: u16 = 0x4;
    pub const ECHO: u16 = 0x8;
    /// The dump was interrupted (the table changed while it was read).
    pub const DUMP_INTR: u16 = 0x10;
    /// GET requests: return the whole table.
    pub const ROOT: u16 = 0x100;
    /// GET requests: return every entry that matches.
    pub const MATCH: u16 = 0x200;
    pub const DUMP: u16 = ROOT | MATCH;
}

/// Message types every netlink family shares.
pub const NLMSG_NOOP: u16 = 1;
pub const NLMSG_ERROR: u16 = 2;
pub const NLMSG_DONE: u16 = 3;

/// Messages and attributes are padded to 4 bytes.
pub const ALIGNTO: usize = 4;

#[inline]
pub const fn align(len: usize) -> usize {
    (len + ALIGNTO - 1) & !(ALIGNTO - 1)
}

/// nfnetlink subsystems (`NFNL_SUBSYS_*`): a message type is the subsystem in the high byte and the
/// subsystem's message in the low byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subsystem {
    Ctnetlink = 1,
    Nftables = 10,
}

impl Subsystem {
    /// The `nlmsg_type` of message `msg` of this subsystem.
    pub const fn message(self, msg: u16) -> u16 {
        ((self as u16) << 8) | msg
    }
}

/// A netfilter netlink request: `nlmsghdr`, `nfgenmsg` and attributes, every encoder's one builder.
///
/// ```ignore
/// let req = Request::dump(Subsystem::Ctnetlink, IPCTNL_MSG_CT_GET, 1, AF_UNSPEC).finish();
/// ```
#[derive(Debug, Clone)]
pub struct Request {
    buf: Vec<u8>,
}

impl Request {
    /// A request with the given flags (`flags::REQUEST` is always set) for `family` (NFPROTO_*).
    pub fn new(subsystem: Subsystem, msg: u16, nlm_flags: u16, seq: u32, family: u8) -> Request {
        let mut buf = Vec::with_capacity(64);
        buf.extend_from_slice(&0u32.to_ne_bytes()); // length, set by `finish`
        buf.extend_from_slice(&subsystem.message(msg).to_ne_bytes());
        buf.extend_from_slice(&(nlm_flags | flags::REQUEST).to_ne_bytes());
        buf.extend_from_slice(&seq.to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes()); // pid: the kernel fills in ours
        buf.extend_from_slice(&[family, nfgenmsg::NFNETLINK_V0, 0, 0]);
        Request { buf }
    }

    /// A dump request (`NLM_F_REQUEST | NLM_F_DUMP`): every object of the kind `msg` asks for.
    pub fn dump(subsystem: Subsystem, msg: u16, seq: u32, family: u8) -> Request {
        Request::new(subsystem, msg, flags::DUMP, seq, family)
    }

    /// A plain request for one object (`NLM_F_REQUEST`).
    pub fn get(subsystem: Subsystem, msg: u16, seq: u32, family: u8) -> Request {
        Request::new(subsystem, msg, 0, seq, family)
    }

    /// Appends an attribute (padded to 4 bytes).
    pub fn attr(mut self, ty: u16, value: &[u8]) -> Request {
        put_attr(&mut self.buf, ty, value);
        self
    }

    /// Appends a string attribute, NUL-terminated as the kernel expects (NLA_NUL_STRING/NLA_STRING).
    pub fn attr_str(mut self, ty: u16, s: &str) -> Request {
        let len = attr::LEN + s.len() + 1;
        self.buf.extend_from_slice(&(len as u16).to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(s.as_bytes());
        self.buf.push(0);
        self.buf.resize(align(self.buf.len()), 0);
        self
    }

    /// The bytes to send, with the message length filled in.
    pub fn finish(mut self) -> Vec<u8> {
        let len = self.buf.len() as u32;
        self.buf[header::LENGTH].copy_from_slice(&len.to_ne_bytes());
        self.buf
    }
}

/// Appends one attribute (header, value, padding) to `out`.
pub fn put_attr(out: &mut Vec<u8>, ty: u16, value: &[u8]) {
    out.extend_from_slice(&((attr::LEN + value.len()) as u16).to_ne_bytes());
    out.extend_from_slice(&ty.to_ne_bytes());
    out.extend_from_slice(value);
    out.resize(align(out.len()), 0);
}

/// One netlink message: its type, flags, sequence number and body (after the 16-byte header).
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    pub ty: u16,
    pub flags: u16,
    pub seq: u32,
    /// The port id of the socket whose request caused the message (0: the kernel on its own, e.g. a
    /// conntrack entry that timed out; non-zero: a userspace request, e.g. `conntrack -D`).
    pub pid: u32,
    pub body: &'a [u8],
}

/// The body of an nfnetlink message: its `nfgenmsg` family and its attributes.
#[derive(Debug, Clone, Copy)]
pub struct NfMessage<'a> {
    pub family: u8,
    pub attrs: &'a [u8],
}

impl<'a> Message<'a> {
    /// For an NLMSG_ERROR message: the kernel's errno (positive), 0 for an acknowledgement.
    pub fn errno(&self) -> Option<i32> {
        (self.ty == NLMSG_ERROR).then(|| {
            // struct nlmsgerr starts with `int error` (negative errno); -1 if it is cut off.
            let code = field::ne32(self.body, 0..4).map_or(-1, |c| c as i32);
            -code
        })
    }

    /// The body as an nfnetlink message; `None` if it is shorter than its `nfgenmsg`.
    pub fn nfnetlink(&self) -> Option<NfMessage<'a>> {
        let family = field::u8(self.body, nfgenmsg::FAMILY).ok()?;
        let attrs = self.body.get(nfgenmsg::ATTRIBUTES)?;
        Some(NfMessage { family, attrs })
    }
}

/// How a dump ended, as its messages say: NLMSG_DONE, or NLMSG_ERROR with the kernel's errno.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DumpEnd {
    pub done: bool,
    /// errno (positive) when the kernel refused or broke off the dump.
    pub error: Option<i32>,
}

impl DumpEnd {
    /// Takes in `m` if it is a control message (and then returns true).
    pub fn see(&mut self, m: &Message<'_>) -> bool {
        match m.ty {
            NLMSG_DONE => self.done = true,
            NLMSG_ERROR => {
                if let Some(e) = m.errno().filter(|e| *e != 0) {
                    self.error = Some(e);
                }
                self.done = true;
            }
            _ => return false,
        }
        true
    }
}

/// The messages of a buffer, in order. Iteration stops at a message whose length does not fit;
/// `damaged` then says so.
pub struct Messages<'a> {
    buf: &'a [u8],
    off: usize,
    pub damaged: bool,
}

pub fn messages(buf: &[u8]) -> Messages<'_> {
    Messages {
        buf,
        off: 0,
        damaged: false,
    }
}

impl<'a> Iterator for Messages<'a> {
    type Item = Message<'a>;

    fn next(&mut self) -> Option<Message<'a>> {
        let b = self.buf.get(self.off..)?;
        let h = field::bytes::<{ header::LEN }>(b, 0).ok()?;
        let len = field::get::<4>(h, header::LENGTH);
        let len = u32::from_ne_bytes(len) as usize;
        if len < header::LEN || len > b.len() {
            self.damaged = true;
            self.off = self.buf.len();
            return None;
        }
        let m = Message {
            ty: u16::from_ne_bytes(field::get(h, header::TYPE)),
            flags: u16::from_ne_bytes(field::get(h, header::FLAGS)),
            seq: u32::from_ne_bytes(field::get(h, header::SEQ)),
            pid: u32::from_ne_bytes(field::get(h, header::PID)),
            body: &b[header::LEN..len],
        };
        self.off += align(len);
        Some(m)
    }
}

/// Attributes of a message body or nested attribute: (type without the nested/byte-order flags,
/// value). Stops at the first attribute whose length does not fit.
pub fn attrs(mut b: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        let h = field::bytes::<{ attr::LEN }>(b, 0).ok()?;
        let len = u16::from_ne_bytes(field::get(h, attr::LENGTH)) as usize;
        let ty = u16::from_ne_bytes(field::get(h, attr::TYPE)) & attr::TYPE_MASK;
        if len < attr::LEN || len > b.len() {
            return None;
        }
        let v = &b[attr::LEN..len];
        b = &b[align(len).min(b.len())..];
        Some((ty, v))
    })
}

/// Attribute values read as numbers (their first bytes; `None` when the value is shorter). nf_tables
/// and ctnetlink put numbers in network order, except where a value says it is host order (marks).
pub mod value {
    use netsleuth_core::wire::field;

    pub fn be16(v: &[u8]) -> Option<u16> {
        field::be16(v, 0..2).ok()
    }
    pub fn be32(v: &[u8]) -> Option<u32> {
        field::be32(v, 0..4).ok()
    }
    pub fn be64(v: &[u8]) -> Option<u64> {
        field::be64(v, 0..8).ok()
    }
    pub fn ne32(v: &[u8]) -> Option<u32> {
        field::ne32(v, 0..4).ok()
    }
    /// A string value without its NUL terminator (and anything after it).
    pub fn cstr(v: &[u8]) -> &[u8] {
        v.split(|c| *c == 0).next().unwrap_or(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cut_buffers_are_damaged_not_read() {
        let mut m = 20u32.to_ne_bytes().to_vec();
        m.extend_from_slice(&NLMSG_DONE.to_ne_bytes());
        m.extend_from_slice(&[0; 14]);
        assert_eq!(messages(&m).count(), 1);
        for cut in 16..m.len() {
            let mut it = messages(&m[..cut]);
            assert!(it.next().is_none());
            assert!(it.damaged);
        }
    }

    #[test]
    fn requests_carry_their_length_flags_and_padded_attributes() {
        let r = Request::dump(Subsystem::Nftables, 7, 9, 2)
            .attr_str(1, "nat")
            .attr(3, &[1, 2, 3, 4, 5])
            .finish();
        let m: Vec<_> = messages(&r).collect();
        assert_eq!(m.len(), 1);
        assert_eq!(r.len(), 16 + 4 + 8 + 12);
        assert_eq!(
            (m[0].ty, m[0].flags, m[0].seq),
            ((10 << 8) | 7, flags::REQUEST | flags::DUMP, 9)
        );
        let nf = m[0].nfnetlink().unwrap();
        assert_eq!(nf.family, 2);
        let a: Vec<_> = attrs(nf.attrs).collect();
        assert_eq!(a, [(1, &b"nat\0"[..]), (3, &[1u8, 2, 3, 4, 5][..])]);
        assert_eq!(value::cstr(a[0].1), b"nat");
        // A get request is a request without the dump flags.
        let g = Request::get(Subsystem::Nftables, 16, 1, 0).finish();
        let g = messages(&g).next().unwrap();
        assert_eq!(g.flags, flags::REQUEST);
    }

    #[test]
    fn nested_and_byte_order_flags_are_not_part_of_the_type() {
        let mut b = Vec::new();
        put_attr(&mut b, 2 | attr::F_NESTED, &[0; 4]);
        put_attr(&mut b, 3 | attr::F_NET_BYTEORDER, &[]);
        let a: Vec<_> = attrs(&b).map(|(t, v)| (t, v.len())).collect();
        assert_eq!(a, [(2, 4), (3, 0)]);
        // An attribute that claims more than there is ends the walk; so does a cut header.
        let mut bad = b.clone();
        bad[0] = 200;
        assert_eq!(attrs(&bad).count(), 0);
        assert_eq!(attrs(&b[..3]).count(), 0);
        assert_eq!(attrs(&b[..10]).count(), 1);
    }

    #[test]
    fn short_values_and_bodies_are_none_not_panics() {
        assert_eq!(value::be32(&[1, 2, 3]), None);
        assert_eq!(value::be16(&[1, 2, 3]), Some(0x0102));
        assert_eq!(value::be64(&[0; 7]), None);
        assert_eq!(value::ne32(&[]), None);
        let m = Message {
            ty: NLMSG_ERROR,
            flags: 0,
            seq: 0,
            pid: 0,
            body: &[1, 2],
        };
        assert_eq!(m.errno(), Some(1));
        assert!(m.nfnetlink().is_none());
        let m = Message {
            body: &[2, 0, 0, 0],
            ..m
        };
        assert!(m
            .nfnetlink()
            .is_some_and(|n| n.family == 2 && n.attrs.is_empty()));
    }
}
