//! Thin adapter: opens capture inputs (files, stdin), undoing gzip transparently.

use flate2::read::MultiGzDecoder;
use netsleuth_core::Input;
use std::fs::File;
use std::io::{self, BufReader, Cursor, Read};
use std::path::Path;

/// The gzip magic number (RFC 1952): the first two bytes of every gzip member.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Open a capture file or `-` (stdin). Gzip input (`tcpdump -w - | gzip`, `.pcap.gz`) is decompressed.
/// `progress` advances by the bytes read from the file (before decompression, so it ends at the
/// file's size).
pub fn open_capture_with(
    path: &Path,
    progress: Option<indicatif::ProgressBar>,
) -> io::Result<Input> {
    let name = path.display().to_string();
    let mut raw: Box<dyn Read + Send> =
        if name == "-" {
            Box::new(io::stdin())
        } else {
            Box::new(File::open(path).map_err(|e| {
                io::Error::new(e.kind(), format!("cannot open capture {name}: {e}"))
            })?)
        };
    if let Some(bar) = progress {
        raw = Box::new(bar.wrap_read(raw));
    }
    Ok(Input {
        name,
        reader: undo_gzip(raw)?,
    })
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
