//! Capture framing: pcap and pcapng records out of any `Read`, without copying packets.
//!
//! `CaptureReader` reads into one large reusable buffer and hands out `Record`s whose `data` borrows it,
//! so a record costs no allocation and no system call; the buffer grows only for a record larger than
//! itself. It works on files, stdin and pipes alike (no seeking).
//!
//! Damage is data: a record whose lengths are impossible, a pcapng block whose framing is broken, a file
//! cut in the middle of a record become `Diagnostic`s (aggregated per code, with the offset and frame of
//! the first occurrence), and reading resynchronises on the next plausible record where it can.
//!
//! Frame numbers follow Wireshark: 1-based, counting every packet record (pcap records; pcapng EPB, SPB
//! and OPB blocks) across all pcapng sections.
//!
//! Diagnostic codes (stable):
//! - `truncated-file`: the input ends inside a record; reading stops (`truncated_file()`).
//! - `bad-record-length`: a pcap record header with an impossible captured length (resynchronised), or
//!   a pcapng packet block whose captured length exceeds the block (skipped).
//! - `bad-block`: pcapng framing broken (length not a multiple of 4, leading and trailing lengths
//!   differ, no byte-order magic, a block too short for its type); resynchronised on the next block.
//! - `unknown-interface`: a packet block names an interface its section did not describe (skipped).
//! - `oversized-record`: more captured bytes than the snap length; kept, as Wireshark keeps them.
//! - `unreadable-tail`: no valid record found after damage; the rest of the input is ignored.
//! - `read-error`: the `Read` failed (e.g. a corrupt gzip stream); reading stops.
//! - `timestamp-out-of-range`: a pcapng timestamp beyond ±`MAX_TS_NS` (an absurd `if_tsresol` or
//!   `if_tsoffset`); clamped to the limit.
//!
//! Invariant: no panic on any input; no allocation per record; memory bounded by the largest record
//! (records above `MAX_RECORD_LEN` are refused).

use crate::finding::Diagnostic;
use std::fmt;
use std::io::{self, Read};

/// Working size of the read buffer: large enough that `read()` calls are rare, small enough to stay in
/// the L2/L3 cache neighbourhood.
const INITIAL_BUFFER: usize = 4 << 20;
/// The buffer starts this small and grows to `INITIAL_BUFFER` only if the input is that large, so that
/// opening many small captures stays cheap.
const FIRST_BUFFER: usize = 64 << 10;
/// No capture tool writes a record this large; a length above it is a damaged header.
pub const MAX_RECORD_LEN: usize = 256 << 20;
/// Wireshark's largest snap length for ordinary link types: a pcap record longer than this and longer
/// than the file's snap length is almost certainly a damaged header.
const PLAUSIBLE_CAPLEN: u32 = 262_144;

const PCAP_HEADER_LEN: usize = 24;
/// Record timestamps stay within ±(2^62 − 1) ns of the epoch (years 1823 to 2116, beyond the 2106 that a
/// classic pcap's 32-bit seconds reach): the difference of any two timestamps then fits in an `i64`, so
/// the flow engine and the detectors can subtract them and add windows without overflow. Only pcapng
/// can say more (an absurd `if_tsresol` or `if_tsoffset`); such timestamps are clamped and reported.
pub const MAX_TS_NS: i64 = (1 << 62) - 1;
const PCAPNG_SHB: u32 = 0x0A0D_0D0A;
const PCAPNG_IDB: u32 = 0x0000_0001;
const PCAPNG_OPB: u32 = 0x0000_0002;
const PCAPNG_SPB: u32 = 0x0000_0003;
const PCAPNG_EPB: u32 = 0x0000_0006;
/// Block types a resynchronising scan accepts as the start of a block.
const PCAPNG_KNOWN_BLOCKS: [u32; 11] = [
    PCAPNG_SHB,
    PCAPNG_IDB,
    PCAPNG_OPB,
    PCAPNG_SPB,
    0x0000_0004, // NRB
    0x0000_0005, // ISB
    PCAPNG_EPB,
    0x0000_0009, // systemd journal export
    0x0000_000A, // DSB
    0x0000_0BAD, // custom
    0x4000_0BAD, // custom, do not copy
];

/// One packet record of a capture. `data` borrows the reader's buffer until the next `next_record`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// 1-based frame number within the file (Wireshark numbering, across pcapng sections).
    pub frame: u64,
    /// Byte offset of the record's header (pcap record header or pcapng block) in the file.
    pub offset: u64,
    /// Capture timestamp, nanoseconds since the Unix epoch (pcapng `if_tsresol`/`if_tsoffset` applied;
    /// 0 for a pcapng Simple Packet Block, which has none).
    pub ts_ns: i64,
    /// LINKTYPE_* of the record's interface (pcap: the header's, without the FCS bits).
    pub linktype: u32,
    /// Interface index: 0 for pcap; for pcapng the interface's position among all IDBs of the file
    /// (sections after the first continue the numbering, so the index is unique in the file).
    pub interface: u32,
    /// Length of the packet on the wire.
    pub orig_len: u32,
    /// The captured bytes.
    pub data: &'a [u8],
}

/// The file format found by `CaptureReader::new`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaptureFormat {
    /// Classic libpcap (also the Kuznetzov "modified pcap" variant, read as microsecond pcap).
    Pcap {
        nanos: bool,
        big_endian: bool,
    },
    PcapNg,
}

impl fmt::Display for CaptureFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CaptureFormat::Pcap { nanos, big_endian } => write!(
                f,
                "pcap ({}, {})",
                if *nanos { "nanosecond" } else { "microsecond" },
                if *big_endian {
                    "big-endian"
                } else {
                    "little-endian"
                }
            ),
            CaptureFormat::PcapNg => f.write_str("pcapng"),
        }
    }
}

/// Why a capture could not be opened. Says what the input looks like instead.
#[derive(Debug)]
pub enum OpenError {
    /// The input has no bytes at all.
    Empty,
    /// Too short to hold a capture file header.
    TooShort { len: usize },
    /// A compressed file (`kind` names the compression): decompress it first.
    Compressed { kind: &'static str },
    /// A capture format other than pcap/pcapng (`name`, e.g. "Microsoft Network Monitor").
    OtherCaptureFormat { name: &'static str },
    /// Not a capture at all; `head` holds the first bytes (up to 8, `len` of them valid).
    NotCapture { head: [u8; 8], len: usize },
    /// A pcap/pcapng header that is itself damaged.
    BadHeader { what: &'static str },
    /// Reading the input failed.
    Io(io::Error),
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpenError::Empty => f.write_str("empty input: no capture header"),
            OpenError::TooShort { len } => write!(
                f,
                "input too short for a capture file header ({len} bytes; pcap needs 24, pcapng 28)"
            ),
            OpenError::Compressed { kind } => write!(
                f,
                "{kind}-compressed: not handled here (decompress it first, e.g. with `{}`)",
                match *kind {
                    "gzip" => "gunzip",
                    "zstd" => "unzstd",
                    "xz" => "unxz",
                    "bzip2" => "bunzip2",
                    "lz4" => "unlz4",
                    _ => "the matching tool",
                }
            ),
            OpenError::OtherCaptureFormat { name } => write!(
                f,
                "a {name} capture: only pcap and pcapng are read (convert it, e.g. `editcap -F pcapng IN OUT`)"
            ),
            OpenError::NotCapture { head, len } => {
                f.write_str("not a capture: starts with")?;
                for b in &head[..(*len).min(8)] {
                    write!(f, " {b:02x}")?;
                }
                if head[..(*len).min(8)].iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
                    write!(f, " (text \"{}\")", String::from_utf8_lossy(&head[..(*len).min(8)]))?;
                }
                Ok(())
            }
            OpenError::BadHeader { what } => write!(f, "damaged capture header: {what}"),
            OpenError::Io(e) => write!(f, "reading the capture failed: {e}"),
        }
    }
}

impl std::error::Error for OpenError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            OpenError::Io(e) => Some(e),
            _ => None,
        }
    }
}

/// pcapng timestamp unit of an interface, turned into a cheap conversion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TsUnit {
    /// Units are 10^-n s with n <= 9: multiply by this many ns.
    MulNs(u64),
    /// Units are 10^-n s with n > 9: divide by this many units per ns.
    DivNs(u64),
    /// Units are 2^-n s.
    Pow2(u8),
}

impl TsUnit {
    fn from_tsresol(v: u8) -> Option<TsUnit> {
        let n = v & 0x7f;
        if v & 0x80 != 0 {
            (n < 64).then_some(TsUnit::Pow2(n))
        } else if n <= 9 {
            Some(TsUnit::MulNs(10u64.pow(9 - n as u32)))
        } else if n <= 19 {
            Some(TsUnit::DivNs(10u64.pow(n as u32 - 9)))
        } else {
            None
        }
    }

    #[inline(always)]
    fn to_ns(self, units: u64) -> i64 {
        // Micro- and nanosecond units (nearly every file): no 128-bit arithmetic.
        if let TsUnit::MulNs(m) = self {
            if let Some(ns) = units.checked_mul(m).filter(|&v| v <= i64::MAX as u64) {
                return ns as i64;
            }
        }
        let ns: i128 = match self {
            TsUnit::MulNs(m) => match units.checked_mul(m) {
                Some(v) => v as i128,
                None => units as i128 * m as i128,
            },
            TsUnit::DivNs(d) => (units / d) as i128,
            TsUnit::Pow2(n) => {
                let secs = (units >> n) as i128;
                let frac = (units & ((1u64 << n) - 1)) as i128;
                secs * 1_000_000_000 + ((frac * 1_000_000_000) >> n)
            }
        };
        ns.clamp(i64::MIN as i128, i64::MAX as i128) as i64
    }
}

#[derive(Debug, Clone)]
struct Interface {
    linktype: u32,
    snaplen: u32,
    name: Option<String>,
    unit: TsUnit,
    offset_ns: i64,
}

#[derive(Debug, Clone, Copy)]
struct PcapState {
    big_endian: bool,
    nanos: bool,
    /// 16 for pcap; 24 for the Kuznetzov variant (ifindex, protocol, pkttype after the usual four).
    record_header_len: usize,
    snaplen: u32,
    linktype: u32,
    /// Seconds of the last good record, to judge candidate headers while resynchronising.
    last_ts_sec: Option<u32>,
    /// 1000 for microsecond files, 1 for nanosecond files.
    frac_to_ns: i64,
    /// Captured lengths up to this need no check (the snap length, or the plausible maximum if none).
    fast_caplen_max: u32,
}

#[derive(Debug, Clone, Copy)]
struct PcapNgState {
    big_endian: bool,
    /// Index in `interfaces` of the current section's first interface.
    section_base: usize,
}

#[derive(Debug, Clone, Copy)]
enum Format {
    Pcap(PcapState),
    PcapNg(PcapNgState),
}

#[derive(Debug, Clone)]
struct DiagCount {
    code: &'static str,
    count: u64,
    offset: Option<u64>,
    frame: Option<u64>,
    message: String,
}

/// Outcome of one framing step; the record's bytes are `buf[data_start..data_start+len]`.
enum Step {
    Record(RecordMeta),
    Skip,
    End,
}

#[derive(Debug, Clone, Copy)]
struct RecordMeta {
    offset: u64,
    ts_ns: i64,
    linktype: u32,
    interface: u32,
    orig_len: u32,
    data_start: usize,
    data_len: usize,
}

/// A whole input in memory for the rest of the process (a mapped capture file): framed in place,
/// without the copy into a read buffer that a stream costs (at small snap lengths, the kernel's copy
/// was 6–8 % of the analysis).
pub struct InMemory {
    pub bytes: MemoryBytes,
    /// Called now and then (every `RELEASE_STEP` bytes) with an offset below which the reader will not
    /// look again, so that the owner can drop the pages already read (a mapping's resident size would
    /// otherwise grow to the file's size) or advance a progress bar.
    pub consumed: Option<Box<dyn FnMut(u64) + Send>>,
    /// Work for this input that another thread may do while it waits for the reader (the CLI:
    /// mapping the file's next pages before the reader faults them in itself). See [`IdleWork`].
    pub idle: Option<IdleWork>,
}

/// A little of an input's own work that a thread waiting on the reader does instead of spinning
/// (the back of a two-thread analysis, on an empty queue): one short step (tens of microseconds at
/// most) a call, returning whether there was any. It may be called from any thread, and must not
/// change what the reader reads.
pub type IdleWork = std::sync::Arc<dyn Fn() -> bool + Send + Sync>;

/// The bytes of an input in memory.
pub enum MemoryBytes {
    /// Kept for the rest of the process (a mapping that is never unmapped).
    Static(&'static [u8]),
    /// Owned by the reader, freed with it.
    Owned(Vec<u8>),
}

/// How far an in-memory input's reader gets between calls to its `consumed`: a mapped file's pages
/// stay resident for up to this much before they are dropped, and the CLI's thread that maps pages
/// ahead of the reader learns where it is this often (1 MiB: the peak RSS within ~1 MB of a
/// streamed read's, a thousand `madvise` calls per GB).
const RELEASE_STEP: u64 = 1 << 20;

/// The bytes a reader frames: its own read buffer, or a whole input in memory.
enum Buffer {
    /// A read buffer (refilled from the reader) or an input owned as a whole (never refilled).
    Heap(Vec<u8>),
    Memory(&'static [u8]),
}

impl std::ops::Deref for Buffer {
    type Target = [u8];
    #[inline(always)]
    fn deref(&self) -> &[u8] {
        match self {
            Buffer::Heap(v) => v,
            Buffer::Memory(b) => b,
        }
    }
}

/// Reads pcap/pcapng records from any `Read` (file, stdin, pipe, in-memory buffer), or from a whole
/// input in memory (`in_memory`).
pub struct CaptureReader<R: Read> {
    reader: R,
    source: String,
    buf: Buffer,
    /// An in-memory input's `consumed`, and the offset last passed to it.
    release: Option<Box<dyn FnMut(u64) + Send>>,
    released: u64,
    /// The buffer's working size once the input proved larger than the first buffer.
    working: usize,
    /// `buf[start..end]` holds bytes read but not yet consumed.
    start: usize,
    end: usize,
    /// File offset of `buf[0]`.
    buf_file_pos: u64,
    eof: bool,
    done: bool,
    truncated: bool,
    format: Format,
    interfaces: Vec<Interface>,
    frame: u64,
    diags: Vec<DiagCount>,
    /// A record framed by `peek_ts` and not yet returned.
    peeked: Option<RecordMeta>,
}

#[inline]
fn u16_at(b: &[u8], at: usize, be: bool) -> u16 {
    match b.get(at..at + 2) {
        Some(s) => {
            let a = [s[0], s[1]];
            if be {
                u16::from_be_bytes(a)
            } else {
                u16::from_le_bytes(a)
            }
        }
        None => 0,
    }
}

/// A field of a record header already known to be whole (a fixed-size array: no bounds check), in
/// the file's byte order without a branch.
#[inline(always)]
fn u32_in<const N: usize>(h: &[u8; N], at: usize, be: bool) -> u32 {
    let v = u32::from_le_bytes([h[at], h[at + 1], h[at + 2], h[at + 3]]);
    if be {
        v.swap_bytes()
    } else {
        v
    }
}

#[inline]
fn u32_at(b: &[u8], at: usize, be: bool) -> u32 {
    match b.get(at..at + 4) {
        Some(s) => {
            let a = [s[0], s[1], s[2], s[3]];
            if be {
                u32::from_be_bytes(a)
            } else {
                u32::from_le_bytes(a)
            }
        }
        None => 0,
    }
}

#[inline]
fn u64_at(b: &[u8], at: usize, be: bool) -> u64 {
    match b.get(at..at + 8) {
        Some(s) => {
            let mut a = [0u8; 8];
            a.copy_from_slice(s);
            if be {
                u64::from_be_bytes(a)
            } else {
                u64::from_le_bytes(a)
            }
        }
        None => 0,
    }
}

/// Recognise what a file that is not pcap/pcapng is, from its first bytes.
fn classify_foreign(head: &[u8]) -> OpenError {
    let starts = |p: &[u8]| head.starts_with(p);
    if starts(&[0x1f, 0x8b]) {
        OpenError::Compressed { kind: "gzip" }
    } else if starts(&[0x28, 0xb5, 0x2f, 0xfd]) {
        OpenError::Compressed { kind: "zstd" }
    } else if starts(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        OpenError::Compressed { kind: "xz" }
    } else if starts(b"BZh") {
        OpenError::Compressed { kind: "bzip2" }
    } else if starts(&[0x04, 0x22, 0x4d, 0x18]) {
        OpenError::Compressed { kind: "lz4" }
    } else if starts(b"GMBU") || starts(b"RTSS") {
        OpenError::OtherCaptureFormat {
            name: "Microsoft Network Monitor",
        }
    } else if starts(b"snoop\0") {
        OpenError::OtherCaptureFormat {
            name: "Solaris snoop",
        }
    } else if starts(b"TRSNIFF data") || starts(b"XCP\0") {
        OpenError::OtherCaptureFormat { name: "Sniffer" }
    } else if starts(b"btsnoop\0") {
        OpenError::OtherCaptureFormat { name: "btsnoop" }
    } else {
        let mut h = [0u8; 8];
        let n = head.len().min(8);
        h[..n].copy_from_slice(&head[..n]);
        OpenError::NotCapture { head: h, len: n }
    }
}

impl<R: Read> CaptureReader<R> {
    /// Open a capture: read and check the file header. `source` names the input in diagnostics.
    pub fn new(reader: R, source: impl Into<String>) -> Result<Self, OpenError> {
        let mut r = Self::unopened(reader, source.into(), Buffer::Heap(vec![0u8; FIRST_BUFFER]));
        r.fill_or_io(PCAP_HEADER_LEN)?;
        r.open()
    }

    /// Open a capture held in memory as a whole. `reader` is never read (it gives the reader its type,
    /// the same as the streamed inputs analysed beside it).
    pub fn in_memory(
        input: InMemory,
        reader: R,
        source: impl Into<String>,
    ) -> Result<Self, OpenError> {
        let buf = match input.bytes {
            MemoryBytes::Static(b) => Buffer::Memory(b),
            MemoryBytes::Owned(v) => Buffer::Heap(v),
        };
        let mut r = Self::unopened(reader, source.into(), buf);
        // All of it is buffered, and there is nothing more to read.
        r.end = r.buf.len();
        r.eof = true;
        r.release = input.consumed;
        r.open()
    }

    /// A reader over `buf` with nothing buffered or read yet.
    fn unopened(reader: R, source: String, buf: Buffer) -> Self {
        CaptureReader {
            reader,
            source,
            buf,
            release: None,
            released: 0,
            working: INITIAL_BUFFER,
            start: 0,
            end: 0,
            buf_file_pos: 0,
            eof: false,
            done: false,
            truncated: false,
            format: Format::PcapNg(PcapNgState {
                big_endian: false,
                section_base: 0,
            }),
            interfaces: Vec::new(),
            frame: 0,
            diags: Vec::new(),
            peeked: None,
        }
    }

    /// Read and check the file header, buffered from `start`.
    fn open(mut self) -> Result<Self, OpenError> {
        let r = &mut self;
        let avail = r.end - r.start;
        if avail == 0 {
            return Err(OpenError::Empty);
        }
        let head = &r.buf[r.start..r.end];
        let magic_le = u32_at(head, 0, false);
        let pcap = match magic_le {
            0xa1b2_c3d4 => Some((false, false, 16)),
            0xd4c3_b2a1 => Some((false, true, 16)),
            0xa1b2_3c4d => Some((true, false, 16)),
            0x4d3c_b2a1 => Some((true, true, 16)),
            0xa1b2_cd34 => Some((false, false, 24)),
            0x34cd_b2a1 => Some((false, true, 24)),
            _ => None,
        };
        if let Some((nanos, big_endian, record_header_len)) = pcap {
            if avail < PCAP_HEADER_LEN {
                return Err(OpenError::TooShort { len: avail });
            }
            let snaplen = u32_at(head, 16, big_endian);
            // Upper bits of the link type field carry FCS information (libpcap LT_FCS_*).
            let linktype = u32_at(head, 20, big_endian) & 0x03FF_FFFF;
            r.format = Format::Pcap(PcapState {
                big_endian,
                nanos,
                record_header_len,
                snaplen,
                linktype,
                last_ts_sec: None,
                frac_to_ns: if nanos { 1 } else { 1000 },
                fast_caplen_max: if snaplen == 0 {
                    PLAUSIBLE_CAPLEN
                } else {
                    snaplen.min(PLAUSIBLE_CAPLEN)
                },
            });
            r.start += PCAP_HEADER_LEN;
            return Ok(self);
        }
        if magic_le == PCAPNG_SHB {
            if avail < 12 {
                return Err(OpenError::TooShort { len: avail });
            }
            let big_endian = match u32_at(head, 8, false) {
                0x1A2B_3C4D => false,
                0x4D3C_2B1A => true,
                _ => {
                    return Err(OpenError::BadHeader {
                        what: "pcapng section header without a valid byte-order magic",
                    })
                }
            };
            r.format = Format::PcapNg(PcapNgState {
                big_endian,
                section_base: 0,
            });
            // The SHB itself is read by the block loop.
            return Ok(self);
        }
        if avail < 4 {
            return Err(match classify_foreign(head) {
                OpenError::NotCapture { .. } => OpenError::TooShort { len: avail },
                other => other,
            });
        }
        Err(classify_foreign(head))
    }

    /// The format found in the header.
    pub fn format(&self) -> CaptureFormat {
        match self.format {
            Format::Pcap(p) => CaptureFormat::Pcap {
                nanos: p.nanos,
                big_endian: p.big_endian,
            },
            Format::PcapNg(_) => CaptureFormat::PcapNg,
        }
    }

    /// Whether the input ended in the middle of a record.
    pub fn truncated_file(&self) -> bool {
        self.truncated
    }

    /// Bytes of the input consumed so far (the offset of the next record).
    pub fn bytes_consumed(&self) -> u64 {
        self.buf_file_pos + self.start as u64
    }

    /// The pcapng `if_name` of an interface (as numbered in `Record::interface`).
    pub fn interface_name(&self, interface: u32) -> Option<&str> {
        self.interfaces.get(interface as usize)?.name.as_deref()
    }

    /// The link type of an interface (as numbered in `Record::interface`); pcap has one, number 0.
    pub fn interface_linktype(&self, interface: u32) -> Option<u32> {
        match self.format {
            Format::Pcap(p) => (interface == 0).then_some(p.linktype),
            Format::PcapNg(_) => self.interfaces.get(interface as usize).map(|i| i.linktype),
        }
    }

    /// Cap the working size of the read buffer (between 64 KiB and 4 MiB): with many inputs open at
    /// once, their buffers share a budget instead of taking 4 MiB each. Records larger than the
    /// working size still grow the buffer while they are read.
    pub fn set_working_buffer(&mut self, bytes: usize) {
        self.working = bytes.clamp(FIRST_BUFFER, INITIAL_BUFFER);
    }

    /// Current capacity of the read buffer, to check that memory stays bounded.
    pub fn buffer_capacity(&self) -> usize {
        match &self.buf {
            Buffer::Heap(v) => v.capacity(),
            Buffer::Memory(_) => 0,
        }
    }

    /// Problems found so far, one entry per code with its count and first location.
    pub fn diagnostics(&self) -> Vec<Diagnostic> {
        self.diags
            .iter()
            .map(|d| Diagnostic {
                source: self.source.clone(),
                code: d.code,
                offset: d.offset,
                frame: d.frame,
                line: None,
                count: d.count,
                message: d.message.clone(),
            })
            .collect()
    }

    /// The next packet record, or `None` at the end of the input (or after damage it cannot skip).
    #[inline(always)]
    pub fn next_record(&mut self) -> Option<Record<'_>> {
        let meta = match self.peeked.take() {
            Some(meta) => meta,
            None => self.fetch()?,
        };
        if self.release.is_some() && meta.offset >= self.released + RELEASE_STEP {
            self.release_before(meta.offset);
        }
        self.frame += 1;
        let data = self
            .buf
            .get(meta.data_start..meta.data_start + meta.data_len)?;
        Some(Record {
            frame: self.frame,
            offset: meta.offset,
            ts_ns: meta.ts_ns,
            linktype: meta.linktype,
            interface: meta.interface,
            orig_len: meta.orig_len,
            data,
        })
    }

    /// Tell an in-memory input's owner that nothing before `offset` is read again: the records
    /// returned before this one are no longer borrowed (`next_record` takes `&mut self`).
    #[cold]
    fn release_before(&mut self, offset: u64) {
        if let Some(release) = self.release.as_mut() {
            release(offset);
        }
        self.released = offset;
    }

    /// The capture timestamp of the next record, without consuming it: for merging several captures
    /// by time without copying records (`next_record` then returns that record).
    pub fn peek_ts(&mut self) -> Option<i64> {
        if self.peeked.is_none() {
            self.peeked = self.fetch();
        }
        self.peeked.as_ref().map(|m| m.ts_ns)
    }

    /// Frame the next record. Its bytes stay in the buffer until the next call (the buffer is only
    /// refilled, and so moved, by a later step).
    #[inline(always)]
    fn fetch(&mut self) -> Option<RecordMeta> {
        if self.done {
            return None;
        }
        match self.fast_step() {
            Some(meta) => Some(meta),
            None => self.slow_step(),
        }
    }

    /// The common case, kept small enough to inline: a pcap record or a pcapng Enhanced Packet Block
    /// that is entirely buffered and needs no scrutiny. Anything else goes to `slow_step`.
    #[inline(always)]
    fn fast_step(&mut self) -> Option<RecordMeta> {
        // The byte order as a constant: each header field is then one load (and a `bswap` for a
        // big-endian file), not a load and a select.
        let be = match &self.format {
            Format::Pcap(st) => st.big_endian,
            Format::PcapNg(st) => st.big_endian,
        };
        if be {
            self.fast_step_in::<true>()
        } else {
            self.fast_step_in::<false>()
        }
    }

    #[inline(always)]
    fn fast_step_in<const BE: bool>(&mut self) -> Option<RecordMeta> {
        let avail = self.end - self.start;
        let offset = self.buf_file_pos + self.start as u64;
        match &mut self.format {
            Format::Pcap(st) => {
                if st.record_header_len != 16 || avail < 16 {
                    return None;
                }
                let h = self.buf[self.start..].first_chunk::<16>()?;
                let be = BE;
                let caplen = u32_in(h, 8, be);
                if caplen > st.fast_caplen_max || avail < 16 + caplen as usize {
                    return None;
                }
                let ts_sec = u32_in(h, 0, be);
                st.last_ts_sec = Some(ts_sec);
                let meta = RecordMeta {
                    offset,
                    ts_ns: ts_sec as i64 * 1_000_000_000 + u32_in(h, 4, be) as i64 * st.frac_to_ns,
                    linktype: st.linktype,
                    interface: 0,
                    orig_len: u32_in(h, 12, be),
                    data_start: self.start + 16,
                    data_len: caplen as usize,
                };
                self.start += 16 + caplen as usize;
                Some(meta)
            }
            Format::PcapNg(st) => {
                if avail < 32 {
                    return None;
                }
                let b = &self.buf[self.start..self.end];
                let h = b.first_chunk::<28>()?;
                let be = BE;
                let block_len = u32_in(h, 4, be) as usize;
                if u32_in(h, 0, be) != PCAPNG_EPB
                    || block_len < 32
                    || block_len & 3 != 0
                    || block_len > avail
                    || u32_at(b, block_len - 4, be) as usize != block_len
                {
                    return None;
                }
                let idx = st.section_base.checked_add(u32_in(h, 8, be) as usize)?;
                let iface = self.interfaces.get(idx)?;
                let caplen = u32_in(h, 20, be) as usize;
                if iface.linktype == u32::MAX
                    || caplen > block_len - 32
                    || (iface.snaplen != 0 && caplen > iface.snaplen as usize)
                {
                    return None;
                }
                let ts_units = ((u32_in(h, 12, be) as u64) << 32) | u32_in(h, 16, be) as u64;
                let ts_ns = iface.unit.to_ns(ts_units).saturating_add(iface.offset_ns);
                if !(-MAX_TS_NS..=MAX_TS_NS).contains(&ts_ns) {
                    return None; // clamped and reported by the slow path
                }
                let meta = RecordMeta {
                    offset,
                    ts_ns,
                    linktype: iface.linktype,
                    interface: idx as u32,
                    orig_len: u32_in(h, 24, be),
                    data_start: self.start + 28,
                    data_len: caplen,
                };
                self.start += block_len;
                Some(meta)
            }
        }
    }

    /// Everything `fast_step` does not take: refills, other blocks, damage.
    #[inline(never)]
    fn slow_step(&mut self) -> Option<RecordMeta> {
        loop {
            if self.done {
                return None;
            }
            let step = match self.format {
                Format::Pcap(_) => self.step_pcap(),
                Format::PcapNg(_) => self.step_pcapng(),
            };
            match step {
                Step::Record(m) => return Some(m),
                Step::Skip => continue,
                Step::End => {
                    self.done = true;
                    return None;
                }
            }
        }
    }

    fn diag(
        &mut self,
        code: &'static str,
        offset: u64,
        frame: Option<u64>,
        message: impl FnOnce() -> String,
    ) {
        if let Some(d) = self.diags.iter_mut().find(|d| d.code == code) {
            d.count += 1;
            return;
        }
        self.diags.push(DiagCount {
            code,
            count: 1,
            offset: Some(offset),
            frame,
            message: message(),
        });
    }

    /// Ensure `need` unconsumed bytes are buffered; false if the input ends first.
    #[inline]
    fn fill(&mut self, need: usize) -> bool {
        if self.end - self.start >= need {
            return true;
        }
        self.fill_slow(need)
    }

    #[cold]
    fn fill_slow(&mut self, need: usize) -> bool {
        if let Err(e) = self.fill_or_io(need) {
            let at = self.buf_file_pos + self.end as u64;
            self.diag("read-error", at, None, || {
                format!("reading the input failed at byte {at}: {e}; the rest of the input is not analysed")
            });
            self.eof = true;
        }
        self.end - self.start >= need
    }

    fn fill_or_io(&mut self, need: usize) -> Result<(), OpenError> {
        if self.eof || self.end - self.start >= need {
            return Ok(());
        }
        // An input in memory is at its end from the start (`eof`): only a read buffer fills.
        let Buffer::Heap(buf) = &mut self.buf else {
            return Ok(());
        };
        if self.start > 0 {
            buf.copy_within(self.start..self.end, 0);
            self.buf_file_pos += self.start as u64;
            self.end -= self.start;
            self.start = 0;
        }
        if buf.len() > self.working && need <= self.working && self.end <= self.working {
            // Give back the memory of a past oversized record.
            buf.truncate(self.working);
            buf.shrink_to_fit();
        } else if buf.len() < self.working
            && self.buf_file_pos + self.end as u64 >= buf.len() as u64
        {
            // The input has filled the first buffer: it is larger, and is read in the working
            // size from here on. Not earlier, when `new` reads the header: the caller sets the
            // working size after `new` (`set_working_buffer`), and a 4 MiB buffer made there only
            // to sample a file's first records cost ~2 ms of page faults and zeroing.
            buf.resize(self.working, 0);
        }
        while self.end < need {
            if self.end == buf.len() {
                // A record larger than the buffer: grow by doubling as its bytes actually arrive, so a
                // damaged length field cannot make us allocate for data that is not there.
                let target = if buf.len() < self.working {
                    self.working
                } else {
                    buf.len() * 2
                };
                let grown = target.min(need.next_power_of_two());
                buf.resize(grown, 0);
            }
            match self.reader.read(&mut buf[self.end..]) {
                Ok(0) => {
                    self.eof = true;
                    break;
                }
                Ok(n) => self.end += n.min(buf.len() - self.end),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(OpenError::Io(e)),
            }
        }
        Ok(())
    }

    fn offset(&self) -> u64 {
        self.buf_file_pos + self.start as u64
    }

    /// The input ended inside a record that starts at the current position.
    fn cut_short(&mut self, needed: usize) -> Step {
        let at = self.offset();
        let have = self.end - self.start;
        if have > 0 {
            self.truncated = true;
            let frame = self.frame + 1;
            self.diag("truncated-file", at, Some(frame), || {
                format!(
                    "the file ends inside a record at byte {at}: {have} of its {needed} bytes are present \
                     (the capture was cut short, e.g. copied while tcpdump was still writing)"
                )
            });
        }
        Step::End
    }

    // ---- pcap ----

    fn step_pcap(&mut self) -> Step {
        let Format::Pcap(st) = self.format else {
            return Step::End;
        };
        let hl = st.record_header_len;
        if !self.fill(hl) {
            return self.cut_short(hl);
        }
        let h = &self.buf[self.start..self.start + hl];
        let be = st.big_endian;
        let ts_sec = u32_at(h, 0, be);
        let ts_frac = u32_at(h, 4, be);
        let caplen = u32_at(h, 8, be);
        let orig_len = u32_at(h, 12, be);
        let offset = self.offset();

        if caplen as usize > MAX_RECORD_LEN
            || (caplen > st.snaplen.max(PLAUSIBLE_CAPLEN)
                && !self.pcap_next_header_plausible(&st, caplen))
        {
            let frame = self.frame + 1;
            self.diag("bad-record-length", offset, Some(frame), || {
                format!(
                    "record header at byte {offset} claims {caplen} captured bytes (snap length {}): \
                     damaged header; scanning for the next valid record",
                    st.snaplen
                )
            });
            return self.pcap_resync(&st, offset);
        }
        if st.snaplen != 0 && caplen > st.snaplen {
            let frame = self.frame + 1;
            self.diag("oversized-record", offset, Some(frame), || {
                format!(
                    "record at byte {offset} holds {caplen} captured bytes, more than the file's snap \
                     length {}; kept (its framing is consistent)",
                    st.snaplen
                )
            });
        }
        let total = hl + caplen as usize;
        if !self.fill(total) {
            return self.cut_short(total);
        }
        let frac_ns = if st.nanos {
            ts_frac as i64
        } else {
            ts_frac as i64 * 1000
        };
        let ts_ns = ts_sec as i64 * 1_000_000_000 + frac_ns;
        if let Format::Pcap(s) = &mut self.format {
            s.last_ts_sec = Some(ts_sec);
        }
        let data_start = self.start + hl;
        self.start += total;
        Step::Record(RecordMeta {
            offset,
            ts_ns,
            linktype: st.linktype,
            interface: 0,
            orig_len,
            data_start,
            data_len: caplen as usize,
        })
    }

    /// Whether a record header sits right after a record of `caplen` bytes at the current position (or
    /// the input ends exactly there): evidence that a large `caplen` is real.
    fn pcap_next_header_plausible(&mut self, st: &PcapState, caplen: u32) -> bool {
        let hl = st.record_header_len;
        let next = hl + caplen as usize;
        if !self.fill(next) {
            return false;
        }
        if !self.fill(next + hl) {
            return self.end - self.start == next;
        }
        let h = &self.buf[self.start + next..self.start + next + hl];
        pcap_header_plausible(h, st).is_some()
    }

    /// After a damaged record header at `bad_offset`, find the next position where two consecutive
    /// plausible record headers (or one that ends the file exactly) start, byte by byte.
    fn pcap_resync(&mut self, st: &PcapState, bad_offset: u64) -> Step {
        let hl = st.record_header_len;
        self.start += 1;
        loop {
            if !self.fill(hl) {
                self.note_lost_tail(bad_offset);
                return Step::End;
            }
            let h = &self.buf[self.start..self.start + hl];
            if let Some(caplen) = pcap_header_plausible(h, st) {
                let next = hl + caplen as usize;
                if self.fill(next + hl) {
                    let h2 = &self.buf[self.start + next..self.start + next + hl];
                    if pcap_header_plausible(h2, st).is_some() {
                        return Step::Skip;
                    }
                } else if self.end - self.start == next {
                    return Step::Skip;
                }
            }
            self.start += 1;
        }
    }

    fn note_lost_tail(&mut self, bad_offset: u64) {
        let end = self.buf_file_pos + self.end as u64;
        let lost = end.saturating_sub(bad_offset);
        self.start = self.end;
        self.diag("unreadable-tail", bad_offset, None, || {
            format!(
                "no valid record found after the damage at byte {bad_offset}: the last {lost} bytes of \
                 the file were not analysed"
            )
        });
    }

    // ---- pcapng ----

    fn step_pcapng(&mut self) -> Step {
        let Format::PcapNg(mut st) = self.format else {
            return Step::End;
        };
        if !self.fill(12) {
            return self.cut_short(12);
        }
        let offset = self.offset();
        let head = &self.buf[self.start..self.start + 12];
        let raw_type = u32_at(head, 0, false);
        if raw_type == PCAPNG_SHB {
            // Each section declares its own byte order.
            match u32_at(head, 8, false) {
                0x1A2B_3C4D => st.big_endian = false,
                0x4D3C_2B1A => st.big_endian = true,
                _ => {
                    self.diag("bad-block", offset, None, || {
                        format!(
                            "section header block at byte {offset} has no valid byte-order magic; \
                             scanning for the next valid block"
                        )
                    });
                    return self.pcapng_resync(offset);
                }
            }
        }
        let be = st.big_endian;
        let block_type = u32_at(head, 0, be);
        let block_len = u32_at(head, 4, be) as usize;
        if block_len < 12 || block_len & 3 != 0 || block_len > MAX_RECORD_LEN {
            self.diag("bad-block", offset, None, || {
                format!(
                    "block at byte {offset} (type 0x{block_type:08x}) has an impossible length {block_len}; \
                     scanning for the next valid block"
                )
            });
            return self.pcapng_resync(offset);
        }
        if !self.fill(block_len) {
            return self.cut_short(block_len);
        }
        let block = &self.buf[self.start..self.start + block_len];
        let trailer = u32_at(block, block_len - 4, be) as usize;
        if trailer != block_len {
            self.diag("bad-block", offset, None, || {
                format!(
                    "block at byte {offset} (type 0x{block_type:08x}) says {block_len} bytes at its start \
                     and {trailer} at its end; scanning for the next valid block"
                )
            });
            return self.pcapng_resync(offset);
        }
        let body_start = self.start + 8;
        let body_len = block_len - 12;
        self.start += block_len;
        match block_type {
            PCAPNG_SHB => {
                st.section_base = self.interfaces.len();
                self.format = Format::PcapNg(st);
                Step::Skip
            }
            PCAPNG_IDB => {
                self.read_idb(body_start, body_len, be, offset);
                Step::Skip
            }
            PCAPNG_EPB | PCAPNG_OPB => {
                self.read_packet_block(block_type, body_start, body_len, &st, offset)
            }
            PCAPNG_SPB => self.read_spb(body_start, body_len, &st, offset),
            // NRB, ISB, DSB, journal, custom and unknown blocks carry no packets we analyse.
            _ => Step::Skip,
        }
    }

    fn read_idb(&mut self, body_start: usize, body_len: usize, be: bool, offset: u64) {
        let body = &self.buf[body_start..body_start + body_len];
        if body.len() < 8 {
            self.diag("bad-block", offset, None, || {
                format!(
                    "interface description block at byte {offset} is too short ({body_len} bytes)"
                )
            });
            // Keep interface numbering aligned with the file's.
            self.interfaces.push(Interface {
                linktype: u32::MAX,
                snaplen: 0,
                name: None,
                unit: TsUnit::MulNs(1000),
                offset_ns: 0,
            });
            return;
        }
        let linktype = u16_at(body, 0, be) as u32;
        let snaplen = u32_at(body, 4, be);
        let mut iface = Interface {
            linktype,
            snaplen,
            name: None,
            unit: TsUnit::MulNs(1000),
            offset_ns: 0,
        };
        let mut bad_tsresol = None;
        for (code, value) in Options::new(&body[8..], be) {
            match code {
                2 => {
                    let v = value.split(|b| *b == 0).next().unwrap_or(&[]);
                    iface.name = Some(String::from_utf8_lossy(v).into_owned());
                }
                9 => {
                    if let Some(&r) = value.first() {
                        match TsUnit::from_tsresol(r) {
                            Some(u) => iface.unit = u,
                            None => bad_tsresol = Some(r),
                        }
                    }
                }
                14 if value.len() >= 8 => {
                    let secs = u64_at(value, 0, be) as i64;
                    iface.offset_ns = secs.saturating_mul(1_000_000_000);
                }
                _ => {}
            }
        }
        if let Some(r) = bad_tsresol {
            self.diag("bad-block", offset, None, || {
                format!(
                    "interface description block at byte {offset} has an unusable if_tsresol 0x{r:02x}; \
                     assuming microseconds"
                )
            });
        }
        self.interfaces.push(iface);
    }

    /// Global interface index for a section-local id, or a diagnostic.
    fn interface_for(&mut self, local: u32, st: &PcapNgState, offset: u64) -> Option<usize> {
        let idx = st.section_base.checked_add(local as usize)?;
        if idx < self.interfaces.len() && self.interfaces[idx].linktype != u32::MAX {
            return Some(idx);
        }
        let frame = self.frame + 1;
        let known = self.interfaces.len() - st.section_base;
        self.diag("unknown-interface", offset, Some(frame), || {
            format!(
                "packet block at byte {offset} refers to interface {local}, but its section describes only \
                 {known} interface(s); packet skipped"
            )
        });
        None
    }

    fn read_packet_block(
        &mut self,
        block_type: u32,
        body_start: usize,
        body_len: usize,
        st: &PcapNgState,
        offset: u64,
    ) -> Step {
        let be = st.big_endian;
        if body_len < 20 {
            self.diag("bad-block", offset, Some(self.frame + 1), || {
                format!("packet block at byte {offset} is too short ({body_len} bytes of body)")
            });
            return Step::Skip;
        }
        let body = &self.buf[body_start..body_start + body_len];
        let local_iface = if block_type == PCAPNG_OPB {
            u16_at(body, 0, be) as u32
        } else {
            u32_at(body, 0, be)
        };
        let ts_units = ((u32_at(body, 4, be) as u64) << 32) | u32_at(body, 8, be) as u64;
        let caplen = u32_at(body, 12, be) as usize;
        let orig_len = u32_at(body, 16, be);
        if caplen > body_len - 20 {
            let frame = self.frame + 1;
            self.diag("bad-record-length", offset, Some(frame), || {
                format!(
                    "packet block at byte {offset} claims {caplen} captured bytes but holds only {}; \
                     packet skipped",
                    body_len - 20
                )
            });
            return Step::Skip;
        }
        let Some(idx) = self.interface_for(local_iface, st, offset) else {
            return Step::Skip;
        };
        let iface = &self.interfaces[idx];
        let raw_ts_ns = iface.unit.to_ns(ts_units).saturating_add(iface.offset_ns);
        let linktype = iface.linktype;
        let snaplen = iface.snaplen;
        let ts_ns = raw_ts_ns.clamp(-MAX_TS_NS, MAX_TS_NS);
        if ts_ns != raw_ts_ns {
            let frame = self.frame + 1;
            self.diag("timestamp-out-of-range", offset, Some(frame), || {
                format!(
                    "packet block at byte {offset} has a timestamp {raw_ts_ns} ns from the epoch (interface \
                     {idx}'s if_tsresol/if_tsoffset), beyond ±2^62 ns; clamped"
                )
            });
        }
        if snaplen != 0 && caplen > snaplen as usize {
            let frame = self.frame + 1;
            self.diag("oversized-record", offset, Some(frame), || {
                format!(
                    "packet block at byte {offset} holds {caplen} captured bytes, more than its interface's \
                     snap length {snaplen}; kept"
                )
            });
        }
        Step::Record(RecordMeta {
            offset,
            ts_ns,
            linktype,
            interface: idx as u32,
            orig_len,
            data_start: body_start + 20,
            data_len: caplen,
        })
    }

    fn read_spb(
        &mut self,
        body_start: usize,
        body_len: usize,
        st: &PcapNgState,
        offset: u64,
    ) -> Step {
        if body_len < 4 {
            self.diag("bad-block", offset, Some(self.frame + 1), || {
                format!("simple packet block at byte {offset} is too short")
            });
            return Step::Skip;
        }
        let orig_len = u32_at(&self.buf[body_start..body_start + 4], 0, st.big_endian);
        let Some(idx) = self.interface_for(0, st, offset) else {
            return Step::Skip;
        };
        let iface = &self.interfaces[idx];
        // An SPB stores min(original length, snap length) bytes, padded to 4.
        let mut caplen = (orig_len as usize).min(body_len - 4);
        if iface.snaplen != 0 {
            caplen = caplen.min(iface.snaplen as usize);
        }
        Step::Record(RecordMeta {
            offset,
            ts_ns: 0,
            linktype: iface.linktype,
            interface: idx as u32,
            orig_len,
            data_start: body_start + 4,
            data_len: caplen,
        })
    }

    /// After damage at `bad_offset`, scan 4-byte-aligned positions for a block whose type is known and
    /// whose leading and trailing lengths agree.
    fn pcapng_resync(&mut self, bad_offset: u64) -> Step {
        let Format::PcapNg(st) = self.format else {
            return Step::End;
        };
        self.start += 4;
        loop {
            if !self.fill(12) {
                self.note_lost_tail(bad_offset);
                return Step::End;
            }
            let head = &self.buf[self.start..self.start + 12];
            let raw_type = u32_at(head, 0, false);
            let be = if raw_type == PCAPNG_SHB {
                match u32_at(head, 8, false) {
                    0x1A2B_3C4D => Some(false),
                    0x4D3C_2B1A => Some(true),
                    _ => None,
                }
            } else {
                Some(st.big_endian)
            };
            if let Some(be) = be {
                let t = u32_at(head, 0, be);
                let len = u32_at(head, 4, be) as usize;
                if PCAPNG_KNOWN_BLOCKS.contains(&t)
                    && len >= 12
                    && len & 3 == 0
                    && len <= MAX_RECORD_LEN
                    && self.fill(len)
                    && u32_at(&self.buf[self.start..self.start + len], len - 4, be) as usize == len
                {
                    return Step::Skip;
                }
            }
            self.start += 4;
        }
    }
}

/// If `h` looks like a pcap record header that follows a good record, its captured length.
fn pcap_header_plausible(h: &[u8], st: &PcapState) -> Option<u32> {
    let be = st.big_endian;
    let ts_sec = u32_at(h, 0, be);
    let ts_frac = u32_at(h, 4, be);
    let caplen = u32_at(h, 8, be);
    let orig_len = u32_at(h, 12, be);
    let frac_limit = if st.nanos { 1_000_000_000 } else { 1_000_000 };
    let max_caplen = st.snaplen.clamp(PLAUSIBLE_CAPLEN, MAX_RECORD_LEN as u32);
    let ts_ok = match st.last_ts_sec {
        Some(last) => ts_sec.abs_diff(last) <= 7 * 86_400,
        None => true,
    };
    (ts_ok
        && ts_frac < frac_limit
        && caplen <= max_caplen
        && orig_len >= caplen
        && orig_len <= 16 << 20)
        .then_some(caplen)
}

/// Iterator over pcapng options: (code, value) until opt_endofopt or the end of the bytes.
struct Options<'a> {
    bytes: &'a [u8],
    be: bool,
}

impl<'a> Options<'a> {
    fn new(bytes: &'a [u8], be: bool) -> Self {
        Options { bytes, be }
    }
}

impl<'a> Iterator for Options<'a> {
    type Item = (u16, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        if self.bytes.len() < 4 {
            return None;
        }
        let code = u16_at(self.bytes, 0, self.be);
        let len = u16_at(self.bytes, 2, self.be) as usize;
        if code == 0 {
            return None;
        }
        let value = self.bytes.get(4..4 + len)?;
        let padded = 4 + len.div_ceil(4) * 4;
        self.bytes = self.bytes.get(padded..).unwrap_or(&[]);
        Some((code, value))
    }
}

/// The test packet builder and capture writers (`tests/support`), shared by the crate's unit tests.
#[cfg(test)]
#[path = "../../tests/support/mod.rs"]
pub(crate) mod test_support;

#[cfg(test)]
mod tests;
