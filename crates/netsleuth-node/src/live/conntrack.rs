//! ctnetlink: conntrack events (multicast groups NEW, UPDATE, DESTROY), the table dump that resyncs
//! after a loss, and the per-CPU statistics. The messages are the same as the collector's dump
//! (`collect::nl_conntrack::entry` decodes both), so this reuses that hand-written decoder; see
//! ARCHITECTURE.md for why it is not `netlink-packet-netfilter`.

use super::event::{CtKind, CtStats};
use super::sock::{self, Recv};
use crate::collect::nl_conntrack::{
    entry, Entry, IPCTNL_MSG_CT_DELETE, IPCTNL_MSG_CT_GET_STATS_CPU, IPCTNL_MSG_CT_NEW,
};
use crate::parse::netlink::{attrs, messages, value, DumpEnd, Request, Subsystem};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

/// NFNLGRP_CONNTRACK_NEW, _UPDATE, _DESTROY as a bind mask (group n is bit n-1).
pub const GROUPS: u32 = 0b111;
/// NLM_F_CREATE: an IPCTNL_MSG_CT_NEW event with it is a new entry, without it an update.
const NLM_F_CREATE: u16 = 0x400;
/// Per-CPU statistics attributes (`CTA_STATS_*`, linux/netfilter/nfnetlink_conntrack.h; the ones
/// not listed — searched, new, ignore, delete, delete_list — are no longer filled by the kernel).
const CTA_STATS_FOUND: u16 = 2;
const CTA_STATS_INVALID: u16 = 4;
const CTA_STATS_INSERT: u16 = 8;
const CTA_STATS_INSERT_FAILED: u16 = 9;
const CTA_STATS_DROP: u16 = 10;
const CTA_STATS_EARLY_DROP: u16 = 11;
const CTA_STATS_ERROR: u16 = 12;
const CTA_STATS_SEARCH_RESTART: u16 = 13;
const CTA_STATS_CLASH_RESOLVE: u16 = 14;
const CTA_STATS_CHAIN_TOOLONG: u16 = 15;

/// Decodes one buffer of ctnetlink event messages; returns how many messages were damaged.
/// `on_event` gets the kind, the entry and whether a userspace request caused it (a DESTROY by
/// `conntrack -D` or a flush, not by the kernel's timeout).
pub fn decode_events(buf: &[u8], mut on_event: impl FnMut(CtKind, Entry, bool)) -> u64 {
    let mut damaged = 0;
    let mut msgs = messages(buf);
    for m in &mut msgs {
        let kind = if m.ty == Subsystem::Ctnetlink.message(IPCTNL_MSG_CT_NEW) {
            if m.flags & NLM_F_CREATE != 0 {
                CtKind::New
            } else {
                CtKind::Update
            }
        } else if m.ty == Subsystem::Ctnetlink.message(IPCTNL_MSG_CT_DELETE) {
            CtKind::Destroy
        } else {
            continue;
        };
        match m.nfnetlink() {
            Some(body) => on_event(kind, entry(body.attrs), m.pid != 0),
            None => damaged += 1,
        }
    }
    damaged + u64::from(msgs.damaged)
}

/// Decodes one buffer of IPCTNL_MSG_CT_GET_STATS_CPU replies into `into` (summed over CPUs).
pub fn decode_stats(buf: &[u8], into: &mut CtStats) -> DumpEnd {
    let mut end = DumpEnd::default();
    for m in messages(buf) {
        if end.see(&m) {
            continue;
        }
        let Some(body) = m.nfnetlink() else { continue };
        for (k, v) in attrs(body.attrs) {
            let n = u64::from(value::be32(v).unwrap_or(0));
            match k {
                CTA_STATS_FOUND => into.found += n,
                CTA_STATS_INVALID => into.invalid += n,
                CTA_STATS_INSERT => into.insert += n,
                CTA_STATS_INSERT_FAILED => into.insert_failed += n,
                CTA_STATS_DROP => into.drop += n,
                CTA_STATS_EARLY_DROP => into.early_drop += n,
                CTA_STATS_ERROR => into.error += n,
                CTA_STATS_SEARCH_RESTART => into.search_restart += n,
                CTA_STATS_CLASH_RESOLVE => into.clash_resolve += n,
                CTA_STATS_CHAIN_TOOLONG => into.chain_toolong += n,
                _ => {}
            }
        }
    }
    end
}

/// The conntrack sources of one namespace: the event socket and a socket for dumps (table, stats).
pub struct CtSource {
    events: OwnedFd,
    dumps: OwnedFd,
    seq: u32,
    /// ENOBUFS seen on the event socket.
    pub losses: u64,
    /// Event messages that could not be decoded.
    pub damaged: u64,
}

/// Bytes of the read buffer each event message may use, and how many are read per call.
const EVENT_SLOT: usize = 8 << 10;
const EVENT_SLOTS: usize = 64;

impl CtSource {
    /// Opens both sockets in the calling thread's namespace. `rcvbuf`: the event socket's receive
    /// buffer (a busy node needs several MiB; the overrun test uses a tiny one).
    pub fn open(rcvbuf: i32) -> std::io::Result<CtSource> {
        Ok(CtSource {
            events: sock::open(libc::NETLINK_NETFILTER, GROUPS, Some(rcvbuf))?,
            dumps: sock::open(libc::NETLINK_NETFILTER, 0, Some(4 << 20))?,
            seq: 1,
            losses: 0,
            damaged: 0,
        })
    }

    pub fn fd(&self) -> RawFd {
        self.events.as_raw_fd()
    }

    /// Reads every waiting event; returns true when the kernel reported a loss (then resync).
    /// Events are read `EVENT_SLOTS` at a time (`recvmmsg`), each in its own `EVENT_SLOT` bytes of
    /// `buf` (a ctnetlink event is a few hundred bytes; a longer one is cut and counted as damaged).
    pub fn read(&mut self, buf: &mut [u8], on_event: &mut impl FnMut(CtKind, Entry, bool)) -> bool {
        let mut lost = false;
        let mut lens = [0usize; EVENT_SLOTS];
        loop {
            match sock::recv_batch(self.events.as_raw_fd(), buf, EVENT_SLOT, &mut lens) {
                Ok(Recv::Data(n)) if n > 0 => {
                    for (i, len) in lens.iter().take(n).enumerate() {
                        let at = i * EVENT_SLOT;
                        self.damaged += decode_events(&buf[at..at + len], &mut *on_event);
                    }
                }
                Ok(Recv::Overrun) => {
                    self.losses += 1;
                    lost = true;
                }
                _ => return lost,
            }
        }
    }

    /// The whole table now (the resync after a loss).
    pub fn dump_table(&mut self) -> std::io::Result<Vec<Entry>> {
        self.seq += 1;
        sock::send(
            &self.dumps,
            &crate::collect::nl_conntrack::request(self.seq),
        )?;
        let mut out = Vec::new();
        let mut err = None;
        sock::recv_dump(&self.dumps, 5000, |b| {
            let d = crate::collect::nl_conntrack::decode(b);
            out.extend(d.entries);
            err = d.error;
            d.done || d.error.is_some()
        })?;
        match err {
            Some(e) => Err(std::io::Error::from_raw_os_error(e)),
            None => Ok(out),
        }
    }

    /// The per-CPU statistics, summed.
    pub fn stats(&mut self) -> std::io::Result<CtStats> {
        self.seq += 1;
        let req = Request::dump(
            Subsystem::Ctnetlink,
            IPCTNL_MSG_CT_GET_STATS_CPU,
            self.seq,
            0,
        )
        .finish();
        sock::send(&self.dumps, &req)?;
        let mut s = CtStats::default();
        let mut err = None;
        sock::recv_dump(&self.dumps, 2000, |b| {
            let end = decode_stats(b, &mut s);
            err = end.error;
            end.done
        })?;
        match err {
            Some(e) => Err(std::io::Error::from_raw_os_error(e)),
            None => Ok(s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::netlink::put_attr;

    fn attr(ty: u16, v: &[u8]) -> Vec<u8> {
        let mut a = Vec::new();
        put_attr(&mut a, ty, v);
        a
    }

    fn msg(ty: u16, flags: u16, body: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&((16 + body.len()) as u32).to_ne_bytes());
        m.extend_from_slice(&ty.to_ne_bytes());
        m.extend_from_slice(&flags.to_ne_bytes());
        m.extend_from_slice(&[0; 8]);
        m.extend_from_slice(body);
        m
    }

    #[test]
    fn events_are_new_update_or_destroy_with_id_and_timestamps() {
        let mut body = vec![2, 0, 0, 0];
        body.extend(attr(12, &77u32.to_be_bytes()));
        let ts = [attr(1, &5u64.to_be_bytes()), attr(2, &9u64.to_be_bytes())].concat();
        body.extend(attr(20 | 0x8000, &ts));
        let mut buf = msg(0x100, NLM_F_CREATE, &body);
        buf.extend(msg(0x100, 0, &body));
        buf.extend(msg(0x102, 0, &body));
        let mut seen = Vec::new();
        let damaged = decode_events(&buf, |k, e, _| seen.push((k, e.id, e.start_ns, e.stop_ns)));
        assert_eq!(damaged, 0);
        assert_eq!(
            seen,
            [
                (CtKind::New, Some(77), Some(5), Some(9)),
                (CtKind::Update, Some(77), Some(5), Some(9)),
                (CtKind::Destroy, Some(77), Some(5), Some(9)),
            ]
        );
        for cut in 0..buf.len() {
            let _ = decode_events(&buf[..cut], |_, _, _| {});
        }
    }

    #[test]
    fn stats_are_summed_over_cpus() {
        let cpu = [attr(9, &3u32.to_be_bytes()), attr(10, &1u32.to_be_bytes())].concat();
        let mut body = vec![0, 0, 0, 0];
        body.extend(cpu);
        let mut buf = msg(0x104, 2, &body);
        buf.extend(msg(0x104, 2, &body));
        buf.extend(msg(3, 2, &[0; 4]));
        let mut s = CtStats::default();
        let end = decode_stats(&buf, &mut s);
        assert!(end.done);
        assert_eq!((s.insert_failed, s.drop), (6, 2));
    }
}
