//! Netlink framing shared by every dump reader (conntrack, nf_tables): the messages of one received
//! buffer and the attributes of a message body. Pure; never panics on short or damaged input.

pub const NLMSG_ERROR: u16 = 2;
pub const NLMSG_DONE: u16 = 3;

/// One netlink message: its type, sequence number and body (after the 16-byte header).
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    pub ty: u16,
    pub seq: u32,
    pub body: &'a [u8],
}

impl Message<'_> {
    /// For an NLMSG_ERROR message: the kernel's errno (positive), 0 for an acknowledgement.
    pub fn errno(&self) -> Option<i32> {
        (self.ty == NLMSG_ERROR).then(|| {
            let code = self
                .body
                .get(..4)
                .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                .unwrap_or(-1);
            -code
        })
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
        if b.len() < 16 {
            return None;
        }
        let len = u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as usize;
        if len < 16 || len > b.len() {
            self.damaged = true;
            self.off = self.buf.len();
            return None;
        }
        let m = Message {
            ty: u16::from_ne_bytes([b[4], b[5]]),
            seq: u32::from_ne_bytes([b[8], b[9], b[10], b[11]]),
            body: &b[16..len],
        };
        self.off += (len + 3) & !3;
        Some(m)
    }
}

/// Attributes of a message body or nested attribute: (type without the nested/byte-order flags,
/// payload). Stops at the first attribute whose length does not fit.
pub fn attrs(mut b: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if b.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([b[0], b[1]]) as usize;
        let ty = u16::from_ne_bytes([b[2], b[3]]) & 0x3fff;
        if len < 4 || len > b.len() {
            return None;
        }
        let v = &b[4..len];
        b = &b[((len + 3) & !3).min(b.len())..];
        Some((ty, v))
    })
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
}
