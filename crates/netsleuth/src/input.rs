//! Thin adapter: opens capture inputs (files, stdin), undoing gzip transparently.

use flate2::read::MultiGzDecoder;
use netsleuth_core::capture::CaptureReader;
use netsleuth_core::{InMemory, Input, MemoryBytes};
use std::fs::File;
use std::io::{self, BufReader, Cursor, Read};
use std::path::Path;

/// The gzip magic number (RFC 1952): the first two bytes of every gzip member.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Open a capture file or `-` (stdin). Gzip input (`tcpdump -w - | gzip`, `.pcap.gz`) is decompressed.
/// A plain regular file of small records (cut by a snap length) is mapped into memory and framed in
/// place (no copy through a read buffer) unless `no_mmap`. `progress` advances by the bytes read from the file (before decompression, so
/// it ends at the file's size).
pub fn open_capture_with(
    path: &Path,
    progress: Option<indicatif::ProgressBar>,
    no_mmap: bool,
) -> io::Result<Input> {
    let name = path.display().to_string();
    let mut raw: Box<dyn Read + Send> = if name == "-" {
        Box::new(io::stdin())
    } else {
        let file = File::open(path)
            .map_err(|e| io::Error::new(e.kind(), format!("cannot open capture {name}: {e}")))?;
        if !no_mmap {
            if let Some(bytes) = map_capture(&file) {
                return Ok(Input::memory(name, mapped_input(bytes, progress)));
            }
        }
        Box::new(file)
    };
    if let Some(bar) = progress {
        raw = Box::new(bar.wrap_read(raw));
    }
    Ok(Input::stream(name, undo_gzip(raw)?))
}

/// A plain (not gzip) regular file of small records (cut by a snap length), mapped read-only for the
/// rest of the process; `None` when it cannot or should not be (not a regular file, empty,
/// compressed, full-size records, the mapping refused), and the file is then read as a stream. The mapping is never unmapped: `analyze` reads each file once and
/// exits, and the pages it has read are dropped as it goes (`mapped_input`).
///
/// A file truncated by another process while mapped would raise SIGBUS on the lost pages; a capture
/// still being written only grows, and `--no-mmap` reads the file as a stream instead.
fn map_capture(file: &File) -> Option<&'static [u8]> {
    use std::os::fd::AsRawFd;
    let meta = file.metadata().ok()?;
    let len = usize::try_from(meta.len()).ok()?;
    if !meta.is_file() || len < GZIP_MAGIC.len() {
        return None;
    }
    // Decided on the first 64 KiB read into a buffer: touching the mapping to decide would make its
    // pages resident in a file then read instead. Kept under glibc's mmap threshold (128 KiB): freeing
    // a larger block raises the threshold for the rest of the run, and the analysis then peaked 7 MB
    // higher.
    let mut head = vec![0u8; len.min(SAMPLE_BYTES)];
    let mut got = 0;
    while got < head.len() {
        match std::os::unix::fs::FileExt::read_at(file, &mut head[got..], got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return None,
        }
    }
    if head[..got].starts_with(&GZIP_MAGIC) || !small_records(&head[..got]) {
        return None;
    }
    drop(head);
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
    // SAFETY: the mapping is `len` readable bytes and is never unmapped, so the slice is valid for
    // the rest of the process; the file's bytes are not written through it.
    let bytes: &'static [u8] = unsafe { std::slice::from_raw_parts(addr as *const u8, len) };
    Some(bytes)
}

/// Captures whose first records hold at most this many bytes on average are mapped; larger ones
/// are read through a buffer.
const MAP_MEAN_RECORD_MAX: u64 = 512;
/// The bytes at the start of a capture that decide whether it is mapped (~450 records at snap length
/// 128, ~40 at full size).
const SAMPLE_BYTES: usize = 64 << 10;

/// Whether the capture's first records (those whole in `head`) are small on average,
/// framed by the core's reader. Mapping saves the copy of every byte but costs a page fault per 16
/// pages and dropping the pages again: measured on the same 1.37 M packets, it is 5–10 % faster than
/// reading when they are cut to 128 bytes and 5–16 % slower at full size (BENCHMARKS.md, "Per-packet
/// cost"), so only captures of small records, where the cost is per packet, are mapped. The records
/// are looked at, not the declared snap length: `editcap -s` cuts the records and leaves the
/// interface's snap length as it was.
fn small_records(head: &[u8]) -> bool {
    let Ok(mut reader) = CaptureReader::new(head, "sample") else {
        return false;
    };
    // Its first buffer (64 KiB) holds the whole sample: no working buffer of 4 MiB (see above).
    reader.set_working_buffer(SAMPLE_BYTES);
    let (mut records, mut captured) = (0u64, 0u64);
    while let Some(rec) = reader.next_record() {
        records += 1;
        captured += rec.data.len() as u64;
    }
    records > 0 && captured / records <= MAP_MEAN_RECORD_MAX
}

/// The mapped file as the core's in-memory input. As the reader moves on, the pages behind it are
/// dropped from this process (they stay in the page cache), so the resident size stays that of the
/// read buffer a stream would use instead of growing to the file's size; the progress bar advances.
fn mapped_input(bytes: &'static [u8], progress: Option<indicatif::ProgressBar>) -> InMemory {
    // SAFETY: sysconf has no preconditions.
    let page = (unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).max(4096) as usize;
    let base = bytes.as_ptr() as usize;
    let mut dropped = 0usize;
    let mut shown = 0u64;
    InMemory {
        bytes: MemoryBytes::Static(bytes),
        consumed: Some(Box::new(move |offset: u64| {
            let upto = (offset as usize).min(bytes.len()) / page * page;
            if upto > dropped {
                // SAFETY: a page-aligned range inside the mapping that the reader has passed and
                // will not read again (`InMemory::consumed`); MADV_DONTNEED on a private read-only
                // file mapping only unmaps those pages here; a later access would read them again.
                unsafe {
                    libc::madvise(
                        (base + dropped) as *mut libc::c_void,
                        upto - dropped,
                        libc::MADV_DONTNEED,
                    )
                };
                dropped = upto;
            }
            if let Some(bar) = &progress {
                bar.inc(offset.saturating_sub(shown));
                shown = offset;
            }
        })),
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
        assert!(small_records(&pcap(100, 128)));
        assert!(small_records(&pcap(10_000, 96)));
        assert!(!small_records(&pcap(100, 1514)));
        assert!(!small_records(&pcap(0, 0)));
        assert!(!small_records(
            b"not a capture at all, and long enough to be looked at"
        ));
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
