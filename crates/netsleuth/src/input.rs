//! Thin adapter: opens capture inputs (files, stdin), undoing gzip transparently.

use flate2::read::MultiGzDecoder;
use netsleuth_core::Input;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;

/// Open a capture file or `-` (stdin). Gzip input (`tcpdump -w - | gzip`, `.pcap.gz`) is decompressed.
pub fn open_capture(path: &Path) -> io::Result<Input> {
    let name = path.display().to_string();
    let raw: Box<dyn Read + Send> =
        if name == "-" {
            Box::new(io::stdin())
        } else {
            Box::new(File::open(path).map_err(|e| {
                io::Error::new(e.kind(), format!("cannot open capture {name}: {e}"))
            })?)
        };
    let mut buf = BufReader::with_capacity(1 << 16, raw);
    let head = buf.fill_buf()?;
    let reader: Box<dyn Read + Send> = if head.starts_with(&[0x1f, 0x8b]) {
        Box::new(MultiGzDecoder::new(buf))
    } else {
        Box::new(buf)
    };
    Ok(Input { name, reader })
}
