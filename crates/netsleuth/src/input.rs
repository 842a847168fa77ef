//! Thin adapter: opens capture inputs (files, stdin), undoing gzip transparently.

use flate2::read::MultiGzDecoder;
use netsleuth_core::capture::CaptureReader;
use netsleuth_core::{IdleWork, InMemory, Input, MemoryBytes};
use std::fs::File;
use std::io::{self, BufReader, Cursor, Read};
use std::path::Path;

/// The gzip magic number (RFC 1952): the first two bytes of every gzip member.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// How a capture file is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileRead {
    /// Through a buffer, whatever its records (`--no-mmap`).
    Buffered,
    /// Mapped when its records are small; the reading thread maps the pages as it reads them and
    /// drops them behind it.
    Mapped,
    /// Mapped, with a thread of idle priority mapping pages ahead of the reader and dropping those
    /// behind it (`PagesAhead`), and full-size records' pages read into the cache there too: for
    /// an analysis of two threads, whose cores wait for each other now and then.
    MappedAhead,
}

/// Open a capture file or `-` (stdin). Gzip input (`tcpdump -w - | gzip`, `.pcap.gz`) is decompressed.
/// A plain regular file of small records (cut by a snap length) is mapped into memory and framed in
/// place (no copy through a read buffer) unless `read` is `Buffered`; with `MappedAhead`, a file
/// of full-size records too. `progress` advances by the bytes read from the file (before
/// decompression, so it ends at the file's size).
pub fn open_capture_with(
    path: &Path,
    progress: Option<indicatif::ProgressBar>,
    read: FileRead,
) -> io::Result<Input> {
    let name = path.display().to_string();
    let mut raw: Box<dyn Read + Send> = if name == "-" {
        Box::new(io::stdin())
    } else {
        let file = File::open(path)
            .map_err(|e| io::Error::new(e.kind(), format!("cannot open capture {name}: {e}")))?;
        if read != FileRead::Buffered {
            let two_threads = read == FileRead::MappedAhead;
            if let Some((bytes, records)) = map_capture(&file, two_threads) {
                let ahead = two_threads
                    .then(|| PagesAhead::start(bytes, records))
                    .flatten();
                // Without a thread to read its lines ahead, a full-size capture is read through a
                // buffer (faster alone; the mapping, with nothing of it resident, stays unused).
                if records == Records::Small || ahead.is_some() {
                    return Ok(Input::memory(name, mapped_input(bytes, progress, ahead)));
                }
            }
        }
        Box::new(file)
    };
    if let Some(bar) = progress {
        raw = Box::new(bar.wrap_read(raw));
    }
    Ok(Input::stream(name, undo_gzip(raw)?))
}

/// What a mapped capture's first records are like, which decides how its pages are made ready
/// (`PagesAhead`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Records {
    /// Cut by a snap length: the reader reads nearly every byte.
    Small,
    /// Full size: the reader reads the headers, a line or two of every ~12.
    FullSize,
}

/// A plain (not gzip) regular file, mapped read-only for the rest of the process, with what its
/// records are like; `None` when it cannot or should not be (not a regular file, empty,
/// compressed, full-size records unless `full_size_too`, the mapping refused), and the file is
/// then read as a stream. A full-size capture is mapped only where a second thread reads its
/// pages into the cache ahead of the reader (`PagesAhead`): mapped alone, the reader waits on
/// memory for every record's header, and reading it through a buffer was 5–16 % faster. The
/// mapping is never unmapped: `analyze` reads each file once and exits, and the pages it has read
/// are dropped as it goes (`mapped_input`).
///
/// A file truncated by another process while mapped would raise SIGBUS on the lost pages; a capture
/// still being written only grows, and `--no-mmap` reads the file as a stream instead.
fn map_capture(file: &File, full_size_too: bool) -> Option<(&'static [u8], Records)> {
    use std::os::fd::AsRawFd;
    let meta = file.metadata().ok()?;
    let len = usize::try_from(meta.len()).ok()?;
    if !meta.is_file() || len < GZIP_MAGIC.len() {
        return None;
    }
    // Decided on the first MiB read through a buffer of 64 KiB: touching the mapping to decide
    // would make its pages resident in a file then read instead. The buffer is kept under glibc's
    // mmap threshold (128 KiB): freeing a larger block raises the threshold for the rest of the
    // run, and the analysis then peaked 7 MB higher.
    let mut magic = [0u8; GZIP_MAGIC.len()];
    if std::os::unix::fs::FileExt::read_exact_at(file, &mut magic, 0).is_err()
        || magic == GZIP_MAGIC
    {
        return None;
    }
    let sample = FileRange {
        file,
        offset: 0,
        end: len.min(SAMPLE_BYTES) as u64,
    };
    let records = if small_records(sample) {
        Records::Small
    } else if full_size_too {
        Records::FullSize
    } else {
        return None;
    };
    // SAFETY: a read-only private mapping of `len` bytes of an open regular file; the kernel picks the
    // address. It is checked against MAP_FAILED before use.
    let addr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_PRIVATE,
            file.as_raw_fd(),
            0,
        )
    };
    if addr == libc::MAP_FAILED {
        return None;
    }
    advise_huge_pages(addr, len);
    // SAFETY: the mapping is `len` readable bytes and is never unmapped, so the slice is valid for
    // the rest of the process; the file's bytes are not written through it.
    let bytes: &'static [u8] = unsafe { std::slice::from_raw_parts(addr as *const u8, len) };
    Some((bytes, records))
}

/// Ask for the mapping to be backed by huge pages where the file's page cache can be. What a page
/// fault costs here depends on the folios that hold the file in the page cache, not on this
/// process: on the 196.7 MB benchmark capture as `editcap` wrote it (small folios), mapping it all
/// and dropping it behind took 2,940 faults and 24 ms (a fifth of a one-thread analysis); the same
/// bytes held in 2 MiB folios, 193 faults and 1.3 ms, each fault mapping a whole folio at once.
/// A file not in the page cache is read ahead into 2 MiB folios when its mapping is advised
/// (sync readahead of a `VM_HUGEPAGE` range), and into small ones otherwise: read cold through
/// this mapping it took 192 faults and 60–150 ms, against 577 faults and 72–287 ms unadvised, and
/// every later run maps it the quick way (BENCHMARKS.md, "Per-packet cost, fifteenth pass"). A
/// file already cached in small folios stays as it is (the advice neither helps nor costs). A
/// kernel without file huge pages refuses or ignores the advice, and nothing changes.
fn advise_huge_pages(addr: *mut libc::c_void, len: usize) {
    // SAFETY: `addr..addr + len` is the mapping just made; MADV_HUGEPAGE changes how its pages may
    // be backed, never what they hold.
    unsafe { libc::madvise(addr, len, libc::MADV_HUGEPAGE) };
}

/// Captures whose first records hold at most this many bytes on average are mapped; larger ones
/// are read through a buffer.
const MAP_MEAN_RECORD_MAX: u64 = 512;
/// The bytes at the start of a capture that decide whether it is mapped (~7,000 records at snap
/// length 128, ~700 at full size). 64 KiB were too few: the benchmark's full-size capture starts
/// with 135 records of 460 bytes on average (handshakes, small requests) against 756 over the file;
/// it was mapped and ran 19 % slower than read (0.250 vs 0.210 s, BENCHMARKS.md, "Per-packet
/// cost, eleventh pass"). Reading a MiB costs ~0.1 ms.
const SAMPLE_BYTES: usize = 1 << 20;

/// A file's bytes from `offset` up to `end`, read with `pread` (the file's own offset stays at the
/// start, where the stream that reads it instead of a mapping begins).
struct FileRange<'a> {
    file: &'a File,
    offset: u64,
    end: u64,
}

impl Read for FileRange<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = (self.end.saturating_sub(self.offset)).min(buf.len() as u64) as usize;
        if want == 0 {
            return Ok(0);
        }
        let n = std::os::unix::fs::FileExt::read_at(self.file, &mut buf[..want], self.offset)?;
        self.offset += n as u64;
        Ok(n)
    }
}

/// Whether the capture's first records (those whole in `head`) are small on average,
/// framed by the core's reader. Mapping saves the copy of every byte but costs a page fault per 16
/// pages and dropping the pages again: measured on the same 1.37 M packets, it is 5–10 % faster than
/// reading when they are cut to 128 bytes and 5–16 % slower at full size (BENCHMARKS.md, "Per-packet
/// cost"), so only captures of small records, where the cost is per packet, are mapped. The records
/// are looked at, not the declared snap length: `editcap -s` cuts the records and leaves the
/// interface's snap length as it was.
fn small_records(head: impl Read) -> bool {
    let Ok(mut reader) = CaptureReader::new(head, "sample") else {
        return false;
    };
    // The sample streams through the reader's first buffer (64 KiB): no working buffer of 4 MiB
    // (see above).
    reader.set_working_buffer(0);
    let (mut records, mut captured) = (0u64, 0u64);
    while let Some(rec) = reader.next_record() {
        records += 1;
        captured += rec.data.len() as u64;
    }
    records > 0 && captured / records <= MAP_MEAN_RECORD_MAX
}

/// The mapped file as the core's in-memory input. As the reader moves on, the pages behind it are
/// dropped from this process (they stay in the page cache), so the resident size stays that of the
/// read buffer a stream would use instead of growing to the file's size; `ahead` is told how far
/// it got (and drops them itself when it has time); the progress bar advances.
fn mapped_input(
    bytes: &'static [u8],
    progress: Option<indicatif::ProgressBar>,
    ahead: Option<PagesAhead>,
) -> InMemory {
    // SAFETY: sysconf has no preconditions.
    let page = (unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).max(4096) as usize;
    let own = Behind::default();
    let mut shown = 0u64;
    let idle = ahead.as_ref().map(|ahead| ahead.idle_work(bytes));
    InMemory {
        bytes: MemoryBytes::Static(bytes),
        idle,
        consumed: Some(Box::new(move |offset: u64| {
            let upto = (offset as usize).min(bytes.len()) / page * page;
            match &ahead {
                Some(ahead) => {
                    ahead.reached(upto);
                    // The other thread drops them in time nobody else wants; if it has not had
                    // any for a step, the reader drops them itself.
                    let behind = &ahead.state.behind;
                    if upto > behind.dropped() + DROP_LAG {
                        behind.drop_upto(bytes, upto);
                    }
                }
                None => {
                    own.drop_upto(bytes, upto);
                }
            }
            if let Some(bar) = &progress {
                bar.inc(offset.saturating_sub(shown));
                shown = offset;
            }
        })),
    }
}

/// How far behind the reader the pages may stay mapped while `PagesAhead` has no time to drop them:
/// one of the reader's steps (`RELEASE_STEP`, 1 MiB).
const DROP_LAG: usize = 1 << 20;

/// The pages of a mapping that the reader has passed, dropped from this process by whichever thread
/// gets there first.
#[derive(Default)]
struct Behind {
    /// Everything below is dropped (page-aligned).
    dropped: std::sync::atomic::AtomicUsize,
}

impl Behind {
    fn dropped(&self) -> usize {
        self.dropped.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Drop the pages of `bytes` below `upto` (page-aligned), which the reader will not read again
    /// (`InMemory::consumed`); whether there were any. Two threads at once each drop their own part.
    fn drop_upto(&self, bytes: &'static [u8], upto: usize) -> bool {
        let from = self
            .dropped
            .fetch_max(upto, std::sync::atomic::Ordering::AcqRel);
        unmap(bytes, from, upto)
    }

    /// After a step mapped from `from`: drop again what it mapped below where the pages were
    /// dropped up to. A thread held up between choosing its step and reading it (the pages thread
    /// runs at idle priority, and is the first to be preempted) may read pages the reader has
    /// passed and dropped meanwhile, which maps them again, with the rest of their folio (up to
    /// 2 MiB), and nothing would drop them: on a full-size capture whose lines were read ahead
    /// (`AheadState::warm_up`), the peak grew by up to 60 MB in a run.
    fn drop_again(&self, bytes: &'static [u8], from: usize) {
        let dropped = self.dropped();
        if dropped > from {
            unmap(bytes, from.saturating_sub(FOLIO_MAX), dropped);
        }
    }
}

/// The largest folio a fault maps at once (a PMD of 2 MiB).
const FOLIO_MAX: usize = 2 << 20;

/// Unmap the pages of `bytes[from..upto]` (page-aligned); whether there were any.
fn unmap(bytes: &'static [u8], from: usize, upto: usize) -> bool {
    let Some(range) = bytes.get(from..upto).filter(|r| !r.is_empty()) else {
        return false;
    };
    // SAFETY: a page-aligned range inside the mapping that the reader has passed and will
    // not read again; MADV_DONTNEED on a private read-only file mapping only unmaps those
    // pages here (they stay in the page cache); a later access would read them again.
    unsafe {
        libc::madvise(
            range.as_ptr() as *mut libc::c_void,
            range.len(),
            libc::MADV_DONTNEED,
        )
    };
    true
}

/// How far past the reader `PagesAhead` maps a capture of small records: four of the reader's steps
/// (`RELEASE_STEP`, 1 MiB), so that the reader, told to go on one step, finds the next mapped, and
/// a waiting back (`PagesAhead::idle_work`) has work for its longer waits. Against two steps:
/// two threads 0.096 → 0.094, 0.089 → 0.084, 0.102 → 0.098, 0.092 → 0.086 s (31 interleaved
/// rounds each), the peak as before this work (+2 MB); eight steps were no faster, +6 MB.
const MAP_AHEAD: usize = 4 << 20;

/// How far past the reader `PagesAhead` reads a full-size capture's lines (`AheadState::warm_up`):
/// two of the reader's steps. As fast as four (31 interleaved rounds: 0.176 against 0.174 s) with
/// 2.3 MB less at the peak.
const WARM_AHEAD: usize = 2 << 20;

/// A thread that maps a mapped capture's pages ahead of the reader, in time no other thread
/// wants. At small snap lengths, faulting the file's pages in is a tenth of the reading thread's
/// time, and with two analysis threads that thread is one of the two limits while the other waits
/// for it now and then: mapping ahead there made two threads 10 % faster on the snaplen-128 node
/// capture (BENCHMARKS.md, "Per-packet cost, sixth pass"). The thread runs under `SCHED_IDLE`, so
/// it takes no time another thread wants: where there is none, the reader faults its pages in
/// itself, as without it. It maps pages by reading them (a byte read maps the pages around it), and
/// drops those behind the reader (the reader drops them itself when this thread is a step late).
/// Mapping by `MADV_POPULATE_READ` instead was slower than faulting, and a thread of normal
/// priority slowed the analysis threads it ran beside. A full-size capture's pages are not only
/// mapped but read a line at a time (`AheadState::warm_up`): its reader reads only the headers,
/// and would otherwise wait on memory for each. The same work is offered, a step at a time,
/// to the analysis's own waiting thread (`idle_work`), which takes it without a sleep and a
/// wake-up in between.
struct PagesAhead {
    state: std::sync::Arc<AheadState>,
    thread: std::thread::JoinHandle<()>,
}

struct AheadState {
    /// Where the reader is (page-aligned): nothing below is read again.
    reached: std::sync::atomic::AtomicUsize,
    /// Where mapping goes on: each step from here is claimed by the thread that maps it.
    mapped: std::sync::atomic::AtomicUsize,
    behind: Behind,
    stop: std::sync::atomic::AtomicBool,
    /// Each step's every line is read, not only its first byte (`Records::FullSize`).
    warm: bool,
}

impl AheadState {
    /// Map the next step past the reader, if it lies within `MAP_AHEAD` of it (`WARM_AHEAD`, its
    /// lines read too, for full-size records); whether there was one. Any thread may call it:
    /// each step is claimed once.
    fn map_step(&self, bytes: &'static [u8]) -> bool {
        use std::sync::atomic::Ordering::{AcqRel, Acquire};
        if self.stop.load(Acquire) {
            return false;
        }
        let reached = self.reached.load(Acquire);
        let ahead = if self.warm { WARM_AHEAD } else { MAP_AHEAD };
        let until = (reached + ahead).min(bytes.len());
        let mut at = self.mapped.load(Acquire);
        loop {
            // Never below the reader: those pages are dropped, or about to be.
            let from = at.max(reached);
            if from >= until {
                return false;
            }
            match self
                .mapped
                .compare_exchange_weak(at, from + MAP_STEP, AcqRel, Acquire)
            {
                Ok(_) => {
                    let step = &bytes[from..(from + MAP_STEP).min(until)];
                    if self.warm {
                        self.warm_up(from, step);
                    } else {
                        std::hint::black_box(step[0]);
                    }
                    self.behind.drop_again(bytes, from);
                    return true;
                }
                Err(now) => at = now,
            }
        }
    }

    /// Read every line of `step` into the cache (mapping its pages), a page at a time while the
    /// reader has not passed it. The reader of a full-size capture reads a record's header and its
    /// packet's first lines and skips the rest, a jump the hardware does not prefetch across, so
    /// without this each header is a wait on memory (mapped without it, a full-size capture was
    /// read 5–16 % slower than through a buffer, whose copy streams the file through the cache).
    /// Read here, by a core that would otherwise wait, the lines are in the cache the two cores
    /// share by the time the reader gets there.
    fn warm_up(&self, from: usize, step: &[u8]) {
        const LINE: usize = 64;
        const PAGE: usize = 4096;
        for (i, page) in step.chunks(PAGE).enumerate() {
            // A page behind the reader is dropped, or about to be: read, it would be mapped again
            // and stay so.
            if from + (i + 1) * PAGE <= self.reached.load(std::sync::atomic::Ordering::Acquire) {
                return;
            }
            let mut sum = 0u8;
            for line in page.chunks(LINE) {
                sum ^= line[0];
            }
            std::hint::black_box(sum);
        }
    }

    /// Drop the pages the reader has passed; whether there were any (none once stopped).
    fn drop_behind(&self, bytes: &'static [u8]) -> bool {
        if self.stop.load(std::sync::atomic::Ordering::Acquire) {
            return false;
        }
        let reached = self.reached.load(std::sync::atomic::Ordering::Acquire);
        self.behind.drop_upto(bytes, reached)
    }
}

/// What one `map_step` maps: fault-around maps 16 pages a fault, so a byte read every 64 KiB maps
/// them all.
const MAP_STEP: usize = 64 << 10;

impl PagesAhead {
    /// `None` where no thread can be started: the reader maps its own pages. The thread is not
    /// waited for: it sets its own priority as it begins, and where it cannot have idle priority
    /// it ends, leaving the pages to the analysis's waiting thread (`idle_work`) and the reader,
    /// as without it. Waiting for it to start (on a core that may be asleep) held the reader
    /// 0.3–0.5 ms before its first packet.
    fn start(bytes: &'static [u8], records: Records) -> Option<PagesAhead> {
        let state = std::sync::Arc::new(AheadState {
            reached: 0.into(),
            mapped: 0.into(),
            behind: Behind::default(),
            stop: false.into(),
            warm: records == Records::FullSize,
        });
        let shared = state.clone();
        let thread = std::thread::Builder::new()
            .name("netsleuth-pages".into())
            .spawn(move || {
                let param = libc::sched_param { sched_priority: 0 };
                // SAFETY: sets this thread's (0) policy from a valid parameter; SCHED_IDLE only
                // lowers its priority, which needs no privilege.
                let idle = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) } == 0;
                if idle {
                    map_ahead(bytes, &shared);
                }
            })
            .ok()?;
        Some(PagesAhead { state, thread })
    }

    /// The same work as a step at a time, for a thread that would otherwise wait on the reader
    /// (the back of a two-thread analysis, on an empty queue; `InMemory::idle`): mapping the
    /// next pages, else dropping those behind. The back waits for the reading thread now and then
    /// all through a run, for a few to a hundred microseconds at a time, which is less than it
    /// takes to sleep, let this thread run and wake again; taken there, the page faults the
    /// reading thread would have taken cost it nothing.
    fn idle_work(&self, bytes: &'static [u8]) -> IdleWork {
        let state = self.state.clone();
        std::sync::Arc::new(move || state.map_step(bytes) || state.drop_behind(bytes))
    }

    /// The reader will not look below `upto` again.
    fn reached(&self, upto: usize) {
        self.state
            .reached
            .fetch_max(upto, std::sync::atomic::Ordering::Release);
        self.thread.thread().unpark();
    }
}

/// The thread's loop: map `MAP_AHEAD` (`WARM_AHEAD`) bytes past the reader and drop those behind
/// it, then sleep until it moves on.
fn map_ahead(bytes: &'static [u8], state: &AheadState) {
    use std::sync::atomic::Ordering::Acquire;
    loop {
        while state.map_step(bytes) {}
        state.drop_behind(bytes);
        if state.stop.load(Acquire) || state.reached.load(Acquire) >= bytes.len() {
            return;
        }
        std::thread::park();
    }
}

impl Drop for PagesAhead {
    /// Tells the thread to stop, without waiting for it: at idle priority on a busy machine it may
    /// not run for a while, and what it reads (the mapping) is never unmapped.
    fn drop(&mut self) {
        self.state
            .stop
            .store(true, std::sync::atomic::Ordering::Release);
        self.thread.thread().unpark();
    }
}

/// `raw` as it is, or decompressed when it starts with the gzip magic. The decision waits for both
/// magic bytes: a pipe may hand over one byte per read (`pv -L`, a slow producer), and one byte
/// decides nothing.
fn undo_gzip(mut raw: Box<dyn Read + Send>) -> io::Result<Box<dyn Read + Send>> {
    let mut head = [0u8; GZIP_MAGIC.len()];
    let got = read_up_to(&mut raw, &mut head)?;
    // The bytes read to decide are handed back in front of the rest.
    let whole = Cursor::new(head[..got].to_vec()).chain(raw);
    let buf = BufReader::with_capacity(1 << 16, whole);
    Ok(if head[..got] == GZIP_MAGIC {
        Box::new(MultiGzDecoder::new(buf))
    } else {
        Box::new(buf)
    })
}

/// Fills `buf` from `r`, fewer bytes only at end of input. Returns how many were read.
fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A pipe at its slowest: one byte per read, and an interrupted read now and then.
    struct OneByteAtATime {
        data: Vec<u8>,
        at: usize,
        calls: usize,
    }

    impl Read for OneByteAtATime {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.calls += 1;
            if self.calls == 3 {
                self.calls = 0;
                return Err(io::ErrorKind::Interrupted.into());
            }
            if self.at == self.data.len() || buf.is_empty() {
                return Ok(0);
            }
            buf[0] = self.data[self.at];
            self.at += 1;
            Ok(1)
        }
    }

    fn slow(data: &[u8]) -> Box<dyn Read + Send> {
        Box::new(OneByteAtATime {
            data: data.to_vec(),
            at: 0,
            calls: 0,
        })
    }

    fn read_all(mut r: Box<dyn Read + Send>) -> Vec<u8> {
        let mut out = Vec::new();
        // `read_to_end` retries Interrupted itself.
        r.read_to_end(&mut out).unwrap();
        out
    }

    #[test]
    fn gzip_is_recognised_one_byte_per_read() {
        let plain: Vec<u8> = (0..50_000u32).flat_map(|i| i.to_le_bytes()).collect();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&plain).unwrap();
        let gz = gz.finish().unwrap();
        assert_eq!(read_all(undo_gzip(slow(&gz)).unwrap()), plain);
        assert_eq!(read_all(undo_gzip(slow(&plain)).unwrap()), plain);
    }

    /// A pcap file of `n` records of `caplen` bytes each.
    fn pcap(n: usize, caplen: u32) -> Vec<u8> {
        let mut f = 0xa1b2_c3d4u32.to_le_bytes().to_vec();
        f.extend_from_slice(&[2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        f.extend_from_slice(&262_144u32.to_le_bytes());
        f.extend_from_slice(&1u32.to_le_bytes());
        for i in 0..n as u32 {
            for v in [i, 0, caplen, 1500] {
                f.extend_from_slice(&v.to_le_bytes());
            }
            f.extend(std::iter::repeat_n(0u8, caplen as usize));
        }
        f
    }

    #[test]
    fn only_captures_of_small_records_are_mapped() {
        // Whatever the header's snap length says (editcap -s leaves it as it was).
        assert!(small_records(&pcap(100, 128)[..]));
        assert!(small_records(&pcap(10_000, 96)[..]));
        assert!(!small_records(&pcap(100, 1514)[..]));
        assert!(!small_records(&pcap(0, 0)[..]));
        assert!(!small_records(
            &b"not a capture at all, and long enough to be looked at"[..]
        ));
    }

    /// The value of `field` (`Rss:`, `VmFlags:`) of the mapping holding `addr`
    /// (`/proc/self/smaps`).
    fn smaps_field(addr: usize, field: &str) -> String {
        let smaps = std::fs::read_to_string("/proc/self/smaps").expect("/proc/self/smaps");
        let mut inside = false;
        for line in smaps.lines() {
            let head = line.split_whitespace().next().unwrap_or("");
            if let Some((start, end)) = head.split_once('-') {
                if let (Ok(start), Ok(end)) = (
                    usize::from_str_radix(start, 16),
                    usize::from_str_radix(end, 16),
                ) {
                    inside = (start..end).contains(&addr);
                    continue;
                }
            }
            if let (true, Some(value)) = (inside, line.strip_prefix(field)) {
                return value.trim().to_string();
            }
        }
        panic!("no mapping holds {addr:#x}, or it has no {field}");
    }

    /// The resident bytes of the mapping holding `addr`.
    fn resident(addr: usize) -> usize {
        let kb = smaps_field(addr, "Rss:");
        kb.trim_end_matches("kB")
            .trim()
            .parse::<usize>()
            .expect("Rss in kB")
            << 10
    }

    /// The capture's mapping asks for huge pages (`hg` among the mapping's flags): a file read
    /// cold through it is read ahead into 2 MiB folios, which later faults map whole.
    #[test]
    fn the_mapping_is_advised_for_huge_pages() {
        if !Path::new("/sys/kernel/mm/transparent_hugepage/enabled").exists() {
            // A kernel without transparent huge pages refuses the advice, and that is all.
            return;
        }
        let bytes = mapped_capture("advised");
        let flags = smaps_field(bytes.as_ptr() as usize, "VmFlags:");
        assert!(
            flags.split_whitespace().any(|f| f == "hg"),
            "mapping flags: {flags}"
        );
    }

    /// A ~17 MB capture of 128-byte records, mapped as `analyze` maps it (the file is removed,
    /// the mapping stays).
    fn mapped_capture(name: &str) -> &'static [u8] {
        mapped(name, &pcap(120_000, 128), Records::Small)
    }

    /// `capture` written to a file named after `name` and mapped as `analyze` maps it for two
    /// threads (the file is removed, the mapping stays); its records are `records`.
    fn mapped(name: &str, capture: &[u8], records: Records) -> &'static [u8] {
        let path =
            std::env::temp_dir().join(format!("netsleuth-{name}-{}.pcap", std::process::id()));
        std::fs::write(&path, capture).expect("temporary capture written");
        let file = File::open(&path).expect("temporary capture opens");
        let (bytes, found) = map_capture(&file, true).expect("the capture is mapped");
        assert_eq!(found, records);
        let _ = std::fs::remove_file(&path);
        bytes
    }

    /// A capture of full-size records that begins with small ones (handshakes, requests) is read,
    /// not mapped: the decision is on the first MiB, not on its first records alone; and the stream
    /// that reads it then starts at its first byte.
    #[test]
    fn a_full_size_capture_beginning_with_small_records_is_read_whole() {
        let mut bytes = pcap(200, 100);
        let big = pcap(2_000, 1514);
        bytes.extend_from_slice(&big[24..]); // records only, after the file header
        let path =
            std::env::temp_dir().join(format!("netsleuth-small-first-{}.pcap", std::process::id()));
        std::fs::write(&path, &bytes).expect("temporary capture written");
        let file = File::open(&path).expect("temporary capture opens");
        assert!(map_capture(&file, false).is_none(), "mapped");
        let input = open_capture_with(&path, None, FileRead::Mapped).expect("opens");
        let _ = std::fs::remove_file(&path);
        let netsleuth_core::Source::Stream(reader) = input.source else {
            panic!("a capture of full-size records is read as a stream");
        };
        assert_eq!(read_all(reader), bytes);
    }

    /// For two threads a full-size capture is mapped too, its lines read ahead of the reader
    /// (`Records::FullSize`), and the analysis reports what one thread reading it as a stream does.
    #[test]
    fn a_full_size_capture_is_mapped_for_two_threads_and_reports_what_a_stream_does() {
        let bytes = full_size_capture();
        let path =
            std::env::temp_dir().join(format!("netsleuth-full-two-{}.pcap", std::process::id()));
        std::fs::write(&path, &bytes).expect("temporary capture written");
        let file = File::open(&path).expect("temporary capture opens");
        let (_, records) = map_capture(&file, true).expect("mapped for two threads");
        assert_eq!(records, Records::FullSize);
        let mapped = open_capture_with(&path, None, FileRead::MappedAhead).expect("opens");
        let _ = std::fs::remove_file(&path);
        assert!(
            matches!(mapped.source, netsleuth_core::Source::Memory(_)),
            "a full-size capture analysed on two threads is mapped"
        );
        let report = |input, threads| {
            let a = netsleuth_core::analysis::analyze_threads(
                vec![input],
                &Default::default(),
                &Default::default(),
                threads,
            );
            let stats = serde_json::to_string(&a.stats).expect("stats serialise");
            (stats, a.findings.len(), a.diagnostics.len())
        };
        let two = report(mapped, 2);
        let one = report(
            netsleuth_core::Input::stream("full.pcap", Cursor::new(bytes)),
            1,
        );
        assert_eq!(two, one);
        assert!(two.0.contains("\"records\":6000"), "{}", two.0);
    }

    /// 6,000 Ethernet records of 1,514 bytes (~9 MB): past `MAP_AHEAD` and the reader's steps.
    fn full_size_capture() -> Vec<u8> {
        let mut bytes = pcap(6_000, 1514);
        // Each record an Ethernet frame that begins an IPv4 header (the rest zeros, as damaged
        // to the decoder on one thread as on two), identified by the record's number.
        for (i, rec) in bytes[24..].chunks_mut(16 + 1514).enumerate() {
            let frame = &mut rec[16..];
            frame[12] = 0x08;
            frame[14] = 0x45;
            frame[18..20].copy_from_slice(&(i as u16).to_be_bytes());
        }
        bytes
    }

    #[test]
    fn pages_ahead_maps_the_next_pages_past_the_reader_at_idle_priority() {
        let bytes = mapped_capture("ahead");
        let base = bytes.as_ptr() as usize;
        assert_eq!(resident(base), 0, "nothing mapped before the reader starts");
        let ahead = PagesAhead::start(bytes, Records::Small).expect("a thread started");
        // Not waited for by `start`: the thread sets its own policy as it begins. Asked of the
        // kernel (glibc's `pthread_getschedparam` keeps the first answer it got) for every thread
        // of that name here (other tests start theirs).
        let policies = || -> Vec<i32> {
            let tasks = std::fs::read_dir("/proc/self/task").expect("/proc/self/task");
            tasks
                .filter_map(|t| t.ok()?.file_name().to_str()?.parse::<i32>().ok())
                .filter(|tid| {
                    std::fs::read_to_string(format!("/proc/self/task/{tid}/comm"))
                        .is_ok_and(|c| c.trim_end() == "netsleuth-pages")
                })
                // SAFETY: reads a task's policy; a task that has ended meanwhile gives -1.
                .map(|tid| unsafe { libc::sched_getscheduler(tid) })
                .filter(|&p| p >= 0)
                .collect()
        };
        let all_idle = |p: &[i32]| !p.is_empty() && p.iter().all(|&p| p == libc::SCHED_IDLE);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while !all_idle(&policies()) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let got = policies();
        assert!(all_idle(&got), "policies of the pages threads: {got:?}");
        let settled = |at_least: usize| {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
            while resident(base) < at_least && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            resident(base)
        };
        // The reader at the start: the first MAP_AHEAD bytes.
        let mapped = settled(MAP_AHEAD);
        assert!(
            (MAP_AHEAD..=MAP_AHEAD + (64 << 10)).contains(&mapped),
            "{mapped} bytes mapped"
        );
        // The reader at 8 MiB, its pages behind dropped as `mapped_input` drops them: the next
        // MAP_AHEAD bytes, and nothing below 8 MiB again.
        let reached = 8 << 20;
        // SAFETY: the first 8 MiB of the mapping, which nothing reads again.
        unsafe {
            libc::madvise(
                bytes.as_ptr() as *mut libc::c_void,
                reached,
                libc::MADV_DONTNEED,
            )
        };
        assert_eq!(resident(base), 0);
        ahead.reached(reached);
        let mapped = settled(MAP_AHEAD);
        assert!(
            (MAP_AHEAD..=MAP_AHEAD + (64 << 10)).contains(&mapped),
            "{mapped} bytes mapped"
        );
        drop(ahead);
    }

    /// A pages-ahead whose thread has already ended: nothing maps ahead or drops behind but the
    /// reader and whoever does its idle work.
    fn pages_ahead_without_its_thread(records: Records) -> PagesAhead {
        let thread = std::thread::spawn(|| {});
        while !thread.is_finished() {
            std::thread::yield_now();
        }
        PagesAhead {
            state: std::sync::Arc::new(AheadState {
                reached: 0.into(),
                mapped: 0.into(),
                behind: Behind::default(),
                stop: false.into(),
                warm: records == Records::FullSize,
            }),
            thread,
        }
    }

    /// The idle work a waiting thread does (`InMemory::idle`): a step at a time, the next
    /// `MAP_AHEAD` bytes past the reader and no more, then the pages behind the reader, then
    /// nothing until the reader moves on; and nothing once the input is done with.
    #[test]
    fn idle_work_maps_the_pages_ahead_of_the_reader_a_step_at_a_time_then_drops_those_behind() {
        let bytes = mapped_capture("idle");
        let base = bytes.as_ptr() as usize;
        let ahead = pages_ahead_without_its_thread(Records::Small);
        let work = ahead.idle_work(bytes);
        let steps = |work: &IdleWork| (0..10_000).take_while(|_| work()).count();
        assert_eq!(steps(&work), MAP_AHEAD / MAP_STEP);
        let mapped = resident(base);
        assert!(
            (MAP_AHEAD..=MAP_AHEAD + (64 << 10)).contains(&mapped),
            "{mapped} bytes mapped"
        );
        assert!(!work(), "nothing more until the reader moves on");
        // The reader at 8 MiB (having faulted its way there): the next MAP_AHEAD bytes are
        // mapped, one step a call, then what lies behind it is dropped in one.
        for page in (0..8 << 20).step_by(4096) {
            std::hint::black_box(bytes[page]);
        }
        ahead.reached(8 << 20);
        assert_eq!(steps(&work), MAP_AHEAD / MAP_STEP + 1);
        let mapped = resident(base);
        assert!(
            (MAP_AHEAD..=MAP_AHEAD + (64 << 10)).contains(&mapped),
            "{mapped} bytes mapped: the pages behind the reader were not dropped"
        );
        // The input done with (its reader dropped): no more work.
        ahead.reached(12 << 20);
        drop(ahead);
        assert!(!work(), "work after the input was done with");
    }

    /// A full-size capture's idle work maps the pages `WARM_AHEAD` past the reader, reading each
    /// line, and never reads a page the reader has passed (it would be mapped again behind it).
    #[test]
    fn idle_work_reads_a_full_size_capture_ahead_of_the_reader_and_never_behind_it() {
        let bytes = mapped_full_size("warm");
        let base = bytes.as_ptr() as usize;
        let ahead = pages_ahead_without_its_thread(Records::FullSize);
        let work = ahead.idle_work(bytes);
        let steps = (0..10_000).take_while(|_| work()).count();
        assert_eq!(steps, WARM_AHEAD / MAP_STEP);
        let mapped = resident(base);
        assert!(
            (WARM_AHEAD..=WARM_AHEAD + (64 << 10)).contains(&mapped),
            "{mapped} bytes mapped"
        );
        // The reader past 6 MiB, everything behind it dropped; a step from before (a thread held
        // up since it chose it) reads nothing.
        let reached = 6 << 20;
        ahead.state.behind.drop_upto(bytes, reached);
        ahead.reached(reached);
        assert_eq!(resident(base), 0);
        ahead
            .state
            .warm_up(2 << 20, &bytes[2 << 20..(2 << 20) + MAP_STEP]);
        assert_eq!(resident(base), 0, "a step behind the reader was read");
        drop(ahead);
    }

    /// A step that mapped pages the reader had passed and dropped (its thread held up between
    /// choosing the step and reading it) has them dropped again, with the rest of their folio.
    #[test]
    fn pages_mapped_again_behind_the_reader_are_dropped_again() {
        let bytes = mapped_capture("again");
        let base = bytes.as_ptr() as usize;
        let behind = Behind::default();
        let reached = 8 << 20;
        behind.drop_upto(bytes, reached);
        // A late step at 5 MiB reads its pages after they were dropped.
        let from = 5 << 20;
        for page in (from..from + MAP_STEP).step_by(4096) {
            std::hint::black_box(bytes[page]);
        }
        assert!(resident(base) >= MAP_STEP);
        behind.drop_again(bytes, from);
        assert_eq!(resident(base), 0, "pages behind the reader stay mapped");
        // A step ahead of where the pages were dropped keeps what it mapped.
        for page in (reached..reached + MAP_STEP).step_by(4096) {
            std::hint::black_box(bytes[page]);
        }
        behind.drop_again(bytes, reached);
        assert!(resident(base) >= MAP_STEP, "a step ahead was dropped");
    }

    /// `full_size_capture` mapped as `analyze` maps it for two threads.
    fn mapped_full_size(name: &str) -> &'static [u8] {
        mapped(name, &full_size_capture(), Records::FullSize)
    }

    /// The pages-ahead thread never gets time (a busy machine, idle priority): the reader drops
    /// the pages behind it itself, a step late, and the resident size stays bounded.
    #[test]
    fn the_reader_drops_the_pages_behind_it_when_the_pages_ahead_thread_gets_no_time() {
        let bytes = mapped_capture("behind");
        let base = bytes.as_ptr() as usize;
        let ahead = pages_ahead_without_its_thread(Records::Small);
        let mut input = mapped_input(bytes, None, Some(ahead));
        let consumed = input
            .consumed
            .as_mut()
            .expect("a mapped input reports progress");
        let step = 1 << 20;
        for at in (0..16 * step).step_by(step) {
            // The reader reads the next step, then says it is past it.
            for page in (at..at + step).step_by(4096) {
                std::hint::black_box(bytes[page]);
            }
            consumed((at + step) as u64);
            let mapped = resident(base);
            assert!(
                mapped <= DROP_LAG + step + (64 << 10),
                "{mapped} bytes mapped at {at}: the pages behind the reader were not dropped"
            );
        }
    }

    #[test]
    fn short_inputs_pass_through() {
        for data in [
            &[][..],
            &[0x1f][..],
            &[0x1f, 0x00][..],
            &[0xd4, 0xc3, 0xb2][..],
        ] {
            assert_eq!(read_all(undo_gzip(slow(data)).unwrap()), data);
        }
    }
}
