//! The packet tap: one `AF_PACKET` socket per watched namespace, on every interface of it (as
//! `tcpdump -i any`: cooked, `ETH_P_ALL`, both directions), filtered in the kernel by the eBPF
//! program of [`super::ebpf`] (or, where it cannot be loaded, the classic [`bpf::tap_filter`]) and read
//! from a memory-mapped `TPACKET_V3` ring.
//!
//! The ring is [`BLOCKS`] blocks of [`BLOCK_SIZE`] bytes (4 MiB) in the node's namespace, of
//! [`POD_BLOCK_SIZE`] (1 MiB) in every other. A block is handed to
//! user space when full or [`BLOCK_TIMEOUT_MS`] after its first packet, so a quiet namespace's packets
//! wait at most that long. A passed packet takes its header (48 B), its `sockaddr_ll` (20 B, padded)
//! and at most [`bpf::SNAP_DNS`] bytes, about 330 B for a TCP control segment: one block holds ~3,000,
//! the ring ~12,000 — over a second of 10 k control packets/s between two reads. When the ring is full
//! the kernel drops the packet and counts it; [`Tap::stats`] reads those counts (`PACKET_STATISTICS`,
//! which resets them) and the watch loop reads them every second and reports every drop.
//!
//! Opened like the netlink sources: on a thread inside the namespace (a packet socket sees the
//! namespace it was created in), then read from the watch loop's `poll`.

use super::bpf;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

// linux/if_packet.h (stable ABI).
const PACKET_RX_RING: libc::c_int = 5;
const PACKET_STATISTICS: libc::c_int = 6;
const PACKET_VERSION: libc::c_int = 10;
const TPACKET_V3: libc::c_int = 2;
const TP_STATUS_KERNEL: u32 = 0;
const TP_STATUS_USER: u32 = 1;

/// Bytes of one ring block (a multiple of the page size) in the first watched namespace (the node's).
pub const BLOCK_SIZE: u32 = 1 << 20;
/// Bytes of one ring block in every other namespace (a pod's: its traffic also crosses the node's
/// interfaces, and a node may have a hundred): 4 × 256 KiB.
pub const POD_BLOCK_SIZE: u32 = 256 << 10;
/// Blocks in the ring.
pub const BLOCKS: u32 = 4;
/// A block is handed over this long after its first packet even if not full.
pub const BLOCK_TIMEOUT_MS: u32 = 100;
/// TPACKET_V3 frames are variable; the kernel still wants a nominal frame size for its checks.
const FRAME_SIZE: u32 = 2048;

#[repr(C)]
struct TpacketReq3 {
    block_size: u32,
    block_nr: u32,
    frame_size: u32,
    frame_nr: u32,
    retire_blk_tov: u32,
    sizeof_priv: u32,
    feature_req_word: u32,
}

#[repr(C)]
#[derive(Default)]
struct TpacketStatsV3 {
    packets: u32,
    drops: u32,
    freeze_q_cnt: u32,
}

/// One tapped packet, borrowed from the ring until the next packet is asked for.
#[derive(Debug, Clone, Copy)]
pub struct TappedPacket<'a> {
    /// Kernel receive timestamp, ns since the Unix epoch.
    pub ts_ns: i64,
    pub ifindex: u32,
    /// `PACKET_HOST`, `PACKET_OUTGOING`, … (`sockaddr_ll.sll_pkttype`).
    pub pkttype: u8,
    /// Link-layer protocol (ethertype), host order.
    pub protocol: u16,
    pub hatype: u16,
    /// Length on the wire (the network header onwards).
    pub orig_len: u32,
    /// The kept bytes, from the network header (cooked).
    pub data: &'a [u8],
}

/// Counts since the tap opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TapStats {
    /// Packets the filter passed (those the ring then dropped included).
    pub passed: u64,
    /// Passed packets the ring had no room for.
    pub dropped: u64,
    /// Packets read out of the ring.
    pub read: u64,
    /// Ring entries whose framing made no sense (skipped, counted; never expected).
    pub malformed: u64,
}

/// Why the tap could not be opened.
#[derive(Debug)]
pub struct TapError {
    pub step: &'static str,
    pub source: std::io::Error,
}

impl std::fmt::Display for TapError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "packet tap: {} failed: {}", self.step, self.source)?;
        if matches!(
            self.source.raw_os_error(),
            Some(libc::EPERM) | Some(libc::EACCES)
        ) {
            write!(f, " (hint: needs CAP_NET_RAW)")?;
        }
        Ok(())
    }
}

impl std::error::Error for TapError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

pub struct Tap {
    fd: OwnedFd,
    ring: *mut u8,
    ring_len: usize,
    block_size: u32,
    /// The next block to look at.
    block: u32,
    pub stats: TapStats,
}

// The ring is owned by this value alone (the kernel writes only blocks it owns).
unsafe impl Send for Tap {}

fn err(step: &'static str) -> TapError {
    TapError {
        step,
        source: std::io::Error::last_os_error(),
    }
}

fn setsockopt<T>(fd: RawFd, level: libc::c_int, opt: libc::c_int, v: &T) -> libc::c_int {
    // SAFETY: `v` is a live value of its own size.
    unsafe {
        libc::setsockopt(
            fd,
            level,
            opt,
            (v as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    }
}

impl Tap {
    /// Opens the tap in the calling thread's namespace with the classic filter. The socket is created
    /// bound to no protocol (so it receives nothing), given its filter and ring, and only then bound
    /// to every protocol: no unfiltered packet ever reaches the ring.
    pub fn open() -> Result<Tap, TapError> {
        Self::open_with(BLOCK_SIZE, None)
    }

    /// [`Tap::open`] with `block_size`-byte blocks ([`BLOCKS`] of them), filtered by `program` (the
    /// eBPF filter of [`super::ebpf`]) or, without one, by the classic [`bpf::tap_filter`].
    pub fn open_with(
        block_size: u32,
        program: Option<&super::ebpf::Program>,
    ) -> Result<Tap, TapError> {
        // SAFETY: plain socket calls on fds we own; every buffer is passed with its length.
        let fd = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_DGRAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                0,
            )
        };
        if fd < 0 {
            return Err(err("socket(AF_PACKET)"));
        }
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let raw = fd.as_raw_fd();
        match program {
            Some(p) => p.attach(raw).map_err(|source| TapError {
                step: "SO_ATTACH_BPF",
                source,
            })?,
            None => {
                let prog = bpf::tap_filter();
                let fprog = libc::sock_fprog {
                    len: prog.len() as u16,
                    filter: prog.as_ptr() as *mut libc::sock_filter,
                };
                if setsockopt(raw, libc::SOL_SOCKET, libc::SO_ATTACH_FILTER, &fprog) != 0 {
                    return Err(err("SO_ATTACH_FILTER"));
                }
            }
        }
        if setsockopt(raw, libc::SOL_PACKET, PACKET_VERSION, &TPACKET_V3) != 0 {
            return Err(err("PACKET_VERSION TPACKET_V3"));
        }
        let req = TpacketReq3 {
            block_size,
            block_nr: BLOCKS,
            frame_size: FRAME_SIZE,
            frame_nr: block_size / FRAME_SIZE * BLOCKS,
            retire_blk_tov: BLOCK_TIMEOUT_MS,
            sizeof_priv: 0,
            feature_req_word: 0,
        };
        if setsockopt(raw, libc::SOL_PACKET, PACKET_RX_RING, &req) != 0 {
            return Err(err("PACKET_RX_RING"));
        }
        let ring_len = (block_size * BLOCKS) as usize;
        let ring = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                ring_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_LOCKED,
                raw,
                0,
            )
        };
        let ring = if ring == libc::MAP_FAILED {
            // MAP_LOCKED fails under a low RLIMIT_MEMLOCK; the ring works unlocked too.
            let r = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    ring_len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED,
                    raw,
                    0,
                )
            };
            if r == libc::MAP_FAILED {
                return Err(err("mmap of the ring"));
            }
            r
        } else {
            ring
        };
        let tap = Tap {
            fd,
            ring: ring.cast(),
            ring_len,
            block_size,
            block: 0,
            stats: TapStats::default(),
        };
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
        sll.sll_ifindex = 0; // every interface
        let rc = unsafe {
            libc::bind(
                raw,
                (&sll as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(err("bind(ETH_P_ALL)"));
        }
        Ok(tap)
    }

    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Reads the kernel's counts (passed by the filter, dropped for want of ring space) since the
    /// last call, adds them to `stats`, and returns the new drops.
    pub fn poll_stats(&mut self) -> u64 {
        let mut st = TpacketStatsV3::default();
        let mut len = std::mem::size_of::<TpacketStatsV3>() as libc::socklen_t;
        let rc = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_PACKET,
                PACKET_STATISTICS,
                (&mut st as *mut TpacketStatsV3).cast(),
                &mut len,
            )
        };
        if rc != 0 {
            return 0;
        }
        // The kernel already adds its drops into `packets`.
        self.stats.passed += u64::from(st.packets);
        self.stats.dropped += u64::from(st.drops);
        u64::from(st.drops)
    }

    /// Hands every packet of every block the kernel has handed over to `each`, then gives the blocks
    /// back. Returns the packets read.
    pub fn drain(&mut self, mut each: impl FnMut(&TappedPacket<'_>)) -> u64 {
        let mut n = 0;
        for _ in 0..BLOCKS {
            let base = (self.block * self.block_size) as usize;
            // SAFETY: `base` is a block start inside the mapping; the status word is shared with the
            // kernel, so it is read volatile and followed by an acquire fence before the block's data.
            let status_ptr = unsafe { self.ring.add(base + 8) as *mut u32 };
            let status = unsafe { std::ptr::read_volatile(status_ptr) };
            if status & TP_STATUS_USER == 0 {
                break;
            }
            std::sync::atomic::fence(std::sync::atomic::Ordering::Acquire);
            // SAFETY: the block is ours until its status is set back to TP_STATUS_KERNEL.
            let block = unsafe {
                std::slice::from_raw_parts(self.ring.add(base), self.block_size as usize)
            };
            n += walk_block(block, &mut self.stats, &mut each);
            std::sync::atomic::fence(std::sync::atomic::Ordering::Release);
            unsafe { std::ptr::write_volatile(status_ptr, TP_STATUS_KERNEL) };
            self.block = (self.block + 1) % BLOCKS;
        }
        self.stats.read += n;
        n
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `open`, unmapped once.
        unsafe { libc::munmap(self.ring.cast(), self.ring_len) };
    }
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}
fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Offset of `sockaddr_ll` after a `tpacket3_hdr`: TPACKET_ALIGN(48).
const SLL_OFFSET: usize = 48;

/// Walks one block handed over by the kernel (`tpacket_block_desc` + `tpacket3_hdr` chain). Every
/// offset is checked against the block: a bad one ends the walk and is counted.
fn walk_block(block: &[u8], stats: &mut TapStats, each: &mut impl FnMut(&TappedPacket<'_>)) -> u64 {
    let (Some(num), Some(first)) = (u32_at(block, 12), u32_at(block, 16)) else {
        stats.malformed += 1;
        return 0;
    };
    let mut at = first as usize;
    let mut n = 0;
    for i in 0..num {
        let Some(p) = packet_at(block, at) else {
            stats.malformed += 1;
            break;
        };
        each(&p);
        n += 1;
        let next = u32_at(block, at).unwrap_or(0) as usize;
        if next == 0 {
            if i + 1 < num {
                stats.malformed += 1;
            }
            break;
        }
        at += next;
    }
    n
}

fn packet_at(block: &[u8], at: usize) -> Option<TappedPacket<'_>> {
    let h = block.get(at..)?;
    let sec = u32_at(h, 4)?;
    let nsec = u32_at(h, 8)?;
    let snaplen = u32_at(h, 12)? as usize;
    let len = u32_at(h, 16)?;
    let mac = u16_at(h, 24)? as usize;
    let sll = h.get(SLL_OFFSET..SLL_OFFSET + 12)?;
    let protocol = u16::from_be_bytes([sll[2], sll[3]]);
    let ifindex = i32::from_ne_bytes(sll[4..8].try_into().ok()?);
    let hatype = u16::from_ne_bytes([sll[8], sll[9]]);
    let data = h.get(mac..mac.checked_add(snaplen)?)?;
    Some(TappedPacket {
        ts_ns: i64::from(sec) * 1_000_000_000 + i64::from(nsec),
        ifindex: ifindex.max(0) as u32,
        pkttype: sll[10],
        protocol,
        hatype,
        orig_len: len,
        data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A block as the kernel lays it out: descriptor, then packets each with header, sockaddr_ll, data.
    fn block(packets: &[(&[u8], u16)]) -> Vec<u8> {
        let mut b = vec![0u8; 48];
        b[12..16].copy_from_slice(&(packets.len() as u32).to_ne_bytes());
        b[16..20].copy_from_slice(&48u32.to_ne_bytes());
        for (i, (data, proto)) in packets.iter().enumerate() {
            let start = b.len();
            let mac = 80u16;
            let total = (mac as usize + data.len()).div_ceil(16) * 16;
            let mut h = vec![0u8; total];
            let next = if i + 1 == packets.len() {
                0
            } else {
                total as u32
            };
            h[0..4].copy_from_slice(&next.to_ne_bytes());
            h[4..8].copy_from_slice(&1_700_000_000u32.to_ne_bytes());
            h[8..12].copy_from_slice(&(i as u32 * 1000).to_ne_bytes());
            h[12..16].copy_from_slice(&(data.len() as u32).to_ne_bytes());
            h[16..20].copy_from_slice(&(data.len() as u32 + 100).to_ne_bytes());
            h[24..26].copy_from_slice(&mac.to_ne_bytes());
            h[48..50].copy_from_slice(&17u16.to_ne_bytes());
            h[50..52].copy_from_slice(&proto.to_be_bytes());
            h[52..56].copy_from_slice(&7i32.to_ne_bytes());
            h[58] = 4; // PACKET_OUTGOING
            h[mac as usize..mac as usize + data.len()].copy_from_slice(data);
            b.extend_from_slice(&h);
            let _ = start;
        }
        b
    }

    #[test]
    fn walks_a_block_and_reads_each_packets_address() {
        let b = block(&[(&[0x45, 1, 2], 0x0800), (&[0x60, 9], 0x86dd)]);
        let mut st = TapStats::default();
        let mut got = Vec::new();
        let n = walk_block(&b, &mut st, &mut |p: &TappedPacket<'_>| {
            got.push((
                p.ts_ns,
                p.ifindex,
                p.pkttype,
                p.protocol,
                p.orig_len,
                p.data.to_vec(),
            ))
        });
        assert_eq!(n, 2);
        assert_eq!(st.malformed, 0);
        assert_eq!(
            got[0],
            (
                1_700_000_000_000_000_000,
                7,
                4,
                0x0800,
                103,
                vec![0x45, 1, 2]
            )
        );
        assert_eq!(got[1].3, 0x86dd);
        assert_eq!(got[1].0, 1_700_000_000_000_001_000);
    }

    #[test]
    fn a_damaged_block_is_counted_not_followed() {
        let mut b = block(&[(&[0x45; 40], 0x0800), (&[0x45; 40], 0x0800)]);
        // The first packet's snap length runs past the block.
        b[48 + 12..48 + 16].copy_from_slice(&u32::MAX.to_ne_bytes());
        let mut st = TapStats::default();
        assert_eq!(walk_block(&b, &mut st, &mut |_: &TappedPacket<'_>| {}), 0);
        assert_eq!(st.malformed, 1);
        // A count larger than the chain.
        let mut b = block(&[(&[0x45; 4], 0x0800)]);
        b[12..16].copy_from_slice(&5u32.to_ne_bytes());
        let mut st = TapStats::default();
        assert_eq!(walk_block(&b, &mut st, &mut |_: &TappedPacket<'_>| {}), 1);
        assert_eq!(st.malformed, 1);
        assert_eq!(
            walk_block(&[0u8; 8], &mut st, &mut |_: &TappedPacket<'_>| {}),
            0
        );
    }
}
