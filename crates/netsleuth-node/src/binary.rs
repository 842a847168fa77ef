//! What a container image's binaries say about its resolver: the libc (musl or glibc, with version) and
//! the Go version of Go programs (from their build info).
//!
//! Pure: every function reads from a [`ReadAt`] or a byte slice, and reads a bounded amount, so a huge or
//! hostile binary costs at most a few hundred kilobytes.

use serde::{Deserialize, Serialize};

/// Random access to a binary; implemented for byte slices, vectors and files.
pub trait ReadAt {
    /// Reads up to `buf.len()` bytes at `offset`; returns how many were read (0 at or past the end).
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> usize;
}

impl ReadAt for &[u8] {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> usize {
        let Ok(off) = usize::try_from(offset) else {
            return 0;
        };
        if off >= self.len() {
            return 0;
        }
        let n = buf.len().min(self.len() - off);
        buf[..n].copy_from_slice(&self[off..off + n]);
        n
    }
}

impl ReadAt for Vec<u8> {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> usize {
        self.as_slice().read_at(offset, buf)
    }
}

impl ReadAt for std::fs::File {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> usize {
        use std::os::unix::fs::FileExt;
        let mut done = 0;
        while done < buf.len() {
            match FileExt::read_at(self, &mut buf[done..], offset + done as u64) {
                Ok(0) | Err(_) => break,
                Ok(n) => done += n,
            }
        }
        done
    }
}

fn read_vec(r: &dyn ReadAt, off: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    let n = r.read_at(off, &mut v);
    v.truncate(n);
    v
}

/// Go build information of one binary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GoBuildInfo {
    /// As the toolchain wrote it: `go1.15.6`, `go1.21.0`, `devel go1.22-abc`.
    pub go_version: String,
    /// The main module path, when the module info names one.
    pub main_module: Option<String>,
    /// `CGO_ENABLED` from the build settings (Go ≥ 1.18 records it; older binaries do not).
    pub cgo_enabled: Option<bool>,
    /// Build tags (`netgo` forces the pure-Go resolver).
    pub tags: Option<String>,
}

const GO_MAGIC: &[u8] = b"\xff Go buildinf:";
/// How far into a data section we look for the build-info header (Go's own reader uses 64 KiB).
const GO_SEARCH: usize = 64 << 10;
const ELF_HEADERS_MAX: usize = 256 << 10;

struct Elf {
    is64: bool,
    le: bool,
    /// (vaddr, file offset, file size, flags) of PT_LOAD segments.
    loads: Vec<(u64, u64, u64, u32)>,
    /// (name, file offset, size) of sections.
    sections: Vec<(String, u64, u64)>,
    /// (file offset, size) of PT_INTERP: the dynamic loader's path.
    interp: Option<(u64, u64)>,
}

fn uint(b: &[u8], le: bool) -> u64 {
    let mut v = 0u64;
    if le {
        for (i, x) in b.iter().enumerate() {
            v |= (*x as u64) << (8 * i);
        }
    } else {
        for x in b {
            v = (v << 8) | *x as u64;
        }
    }
    v
}

fn parse_elf(r: &dyn ReadAt) -> Option<Elf> {
    let h = read_vec(r, 0, 64);
    if h.len() < 52 || &h[..4] != b"\x7fELF" {
        return None;
    }
    let is64 = h[4] == 2;
    let le = h[5] == 1;
    let f = |o: usize, n: usize| h.get(o..o + n).map(|b| uint(b, le));
    let (phoff, shoff, phentsize, phnum, shentsize, shnum, shstrndx) = if is64 {
        (
            f(32, 8)?,
            f(40, 8)?,
            f(54, 2)?,
            f(56, 2)?,
            f(58, 2)?,
            f(60, 2)?,
            f(62, 2)?,
        )
    } else {
        (
            f(28, 4)?,
            f(32, 4)?,
            f(42, 2)?,
            f(44, 2)?,
            f(46, 2)?,
            f(48, 2)?,
            f(50, 2)?,
        )
    };
    let mut elf = Elf {
        is64,
        le,
        loads: Vec::new(),
        sections: Vec::new(),
        interp: None,
    };
    let ph = read_vec(
        r,
        phoff,
        ((phentsize * phnum) as usize).min(ELF_HEADERS_MAX),
    );
    for i in 0..phnum as usize {
        // Entries shorter than the format needs are hostile or damaged: stop rather than index past them.
        let e = match ph.get(i * phentsize as usize..(i + 1) * phentsize as usize) {
            Some(e) if e.len() >= if is64 { 56 } else { 32 } => e,
            _ => break,
        };
        let g = |o: usize, n: usize| uint(&e[o..o + n], le);
        if g(0, 4) == 3 {
            // PT_INTERP
            elf.interp = Some(if is64 {
                (g(8, 8), g(32, 8))
            } else {
                (g(4, 4), g(16, 4))
            });
            continue;
        }
        if g(0, 4) != 1 {
            continue; // not PT_LOAD
        }
        if is64 {
            elf.loads
                .push((g(16, 8), g(8, 8), g(32, 8), g(4, 4) as u32));
        } else {
            elf.loads
                .push((g(8, 4), g(4, 4), g(16, 4), g(24, 4) as u32));
        }
    }
    let sh = read_vec(
        r,
        shoff,
        ((shentsize * shnum) as usize).min(ELF_HEADERS_MAX),
    );
    let sec = |i: usize| -> Option<(u64, u64, u64)> {
        let e = sh.get(i * shentsize as usize..(i + 1) * shentsize as usize)?;
        if e.len() < if is64 { 64 } else { 40 } {
            return None;
        }
        let g = |o: usize, n: usize| uint(&e[o..o + n], le);
        Some(if is64 {
            (g(0, 4), g(24, 8), g(32, 8))
        } else {
            (g(0, 4), g(16, 4), g(20, 4))
        })
    };
    if let Some((_, stroff, strsize)) = sec(shstrndx as usize) {
        let names = read_vec(r, stroff, (strsize as usize).min(ELF_HEADERS_MAX));
        for i in 0..shnum as usize {
            let Some((name_off, off, size)) = sec(i) else {
                break;
            };
            let name = names
                .get(name_off as usize..)
                .and_then(|s| s.split(|b| *b == 0).next())
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .unwrap_or_default();
            elf.sections.push((name, off, size));
        }
    }
    Some(elf)
}

impl Elf {
    fn vaddr_to_off(&self, va: u64) -> Option<u64> {
        self.loads
            .iter()
            .find(|(v, _, sz, _)| {
                va >= *v && v.checked_add(*sz).map(|end| va < end).unwrap_or(false)
            })
            .and_then(|(v, off, _, _)| off.checked_add(va - v))
    }

    fn read_ptr(&self, r: &dyn ReadAt, va: u64, ptr: usize) -> Option<u64> {
        let b = read_vec(r, self.vaddr_to_off(va)?, ptr);
        (b.len() == ptr).then(|| uint(&b, self.le))
    }

    /// A Go string header at `va`: (data pointer, length) → the bytes (bounded).
    fn read_go_string(&self, r: &dyn ReadAt, va: u64, ptr: usize) -> Option<String> {
        let data = self.read_ptr(r, va, ptr)?;
        let len = self.read_ptr(r, va.checked_add(ptr as u64)?, ptr)?;
        if len > 64 << 10 {
            return None;
        }
        let b = read_vec(r, self.vaddr_to_off(data)?, len as usize);
        Some(String::from_utf8_lossy(&b).into_owned())
    }
}

fn read_varint_string(b: &[u8]) -> Option<(String, usize)> {
    let mut len = 0usize;
    let mut shift = 0;
    let mut i = 0;
    loop {
        let x = *b.get(i)?;
        len |= ((x & 0x7f) as usize) << shift;
        i += 1;
        if x & 0x80 == 0 {
            break;
        }
        shift += 7;
        if shift > 28 {
            return None;
        }
    }
    let s = b.get(i..i + len)?;
    Some((String::from_utf8_lossy(s).into_owned(), i + len))
}

/// Reads the build info of a Go ELF binary; `None` if it is not one.
pub fn go_build_info(r: &dyn ReadAt) -> Option<GoBuildInfo> {
    let elf = parse_elf(r)?;
    // Where to look: the `.go.buildinfo` section, else the start of the first writable segment.
    let (start, size) = elf
        .sections
        .iter()
        .find(|(n, _, _)| n == ".go.buildinfo")
        .map(|(_, off, size)| (*off, *size))
        .or_else(|| {
            elf.loads
                .iter()
                .find(|(_, _, _, flags)| flags & 2 != 0)
                .map(|(_, off, sz, _)| (*off, *sz))
        })?;
    let data = read_vec(r, start, (size as usize).min(GO_SEARCH));
    let mut at = None;
    let mut i = 0;
    while i + 32 <= data.len() {
        if &data[i..i + GO_MAGIC.len()] == GO_MAGIC {
            at = Some(i);
            break;
        }
        i += 16; // the header is 16-byte aligned
    }
    let hdr = &data[at?..];
    let ptr = hdr[14] as usize;
    let flags = hdr[15];
    let (version, modinfo) = if flags & 0x2 != 0 {
        // Go ≥ 1.18: the strings follow the header inline, varint-length-prefixed.
        let more = read_vec(r, start + at? as u64 + 32, 64 << 10);
        let (v, used) = read_varint_string(&more)?;
        let m = read_varint_string(&more[used..])
            .map(|(m, _)| m)
            .unwrap_or_default();
        (v, m)
    } else {
        if ptr != 4 && ptr != 8 {
            return None;
        }
        let big_endian = flags & 0x1 != 0;
        if big_endian == elf.le && elf.is64 == (ptr == 8) {
            // Header and ELF disagree on byte order: not a header we understand.
            return None;
        }
        let p = |o: usize| {
            hdr.get(16 + o * ptr..16 + (o + 1) * ptr)
                .map(|b| uint(b, elf.le))
        };
        let v = elf.read_go_string(r, p(0)?, ptr)?;
        let m = p(1)
            .and_then(|va| elf.read_go_string(r, va, ptr))
            .unwrap_or_default();
        (v, m)
    };
    if !version.starts_with("go") && !version.starts_with("devel") {
        return None;
    }
    let mut info = GoBuildInfo {
        go_version: version,
        main_module: None,
        cgo_enabled: None,
        tags: None,
    };
    // Module info is framed by 16-byte sentinels; its lines are tab-separated.
    for line in modinfo.lines() {
        let mut f = line.split('\t');
        match (f.next(), f.next(), f.next()) {
            (Some("mod"), Some(path), _) => info.main_module = Some(path.to_string()),
            (Some("build"), Some(kv), None) => {
                if let Some(v) = kv.strip_prefix("CGO_ENABLED=") {
                    info.cgo_enabled = Some(v == "1");
                } else if let Some(v) = kv.strip_prefix("-tags=") {
                    info.tags = Some(v.to_string());
                }
            }
            _ => {}
        }
    }
    Some(info)
}

/// The dynamic loader an ELF binary asks for (`/lib/ld-musl-x86_64.so.1`, `/lib64/ld-linux-x86-64.so.2`);
/// `None` for static binaries and non-ELF files.
pub fn elf_interpreter(r: &dyn ReadAt) -> Option<String> {
    let elf = parse_elf(r)?;
    let (off, size) = elf.interp?;
    let b = read_vec(r, off, (size as usize).min(4096));
    let b = b.split(|x| *x == 0).next().unwrap_or(&b);
    Some(String::from_utf8_lossy(b).into_owned())
}

/// Which C library an image carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LibcInfo {
    /// `musl`, `glibc`, or `none` (static or distroless image without a libc we recognise).
    pub kind: String,
    pub version: Option<String>,
    /// Path (inside the root) the answer came from, and how (`apk db`, `binary string`, `dpkg status`).
    pub evidence: String,
}

/// The version string near musl's `musl libc (ARCH)` banner (the dynamic linker prints both when run
/// directly: "musl libc (x86_64)\nVersion 1.2.3").
pub fn musl_version_from_bytes(b: &[u8]) -> Option<String> {
    let marker = b"musl libc (";
    let pos = b.windows(marker.len()).position(|w| w == marker)?;
    let lo = pos.saturating_sub(32 << 10);
    let hi = (pos + (32 << 10)).min(b.len());
    let mut best: Option<(usize, String)> = None;
    for (start, s) in nul_strings(&b[lo..hi]) {
        if is_dotted_version(s) {
            let d = (lo + start).abs_diff(pos);
            if best.as_ref().map(|(bd, _)| d < *bd).unwrap_or(true) {
                best = Some((d, String::from_utf8_lossy(s).into_owned()));
            }
        }
    }
    best.map(|(_, v)| v)
}

fn nul_strings(b: &[u8]) -> impl Iterator<Item = (usize, &[u8])> {
    let mut off = 0;
    b.split(|x| *x == 0).map(move |s| {
        let start = off;
        off += s.len() + 1;
        (start, s)
    })
}

fn is_dotted_version(s: &[u8]) -> bool {
    let parts: Vec<&[u8]> = s.split(|b| *b == b'.').collect();
    (2..=4).contains(&parts.len())
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 3 && p.iter().all(u8::is_ascii_digit))
}

/// glibc's banner: "GNU C Library (Debian GLIBC 2.36-9) stable release version 2.36."
pub fn glibc_version_from_bytes(b: &[u8]) -> Option<String> {
    let marker = b"release version ";
    let pos = b.windows(marker.len()).position(|w| w == marker)? + marker.len();
    let v: String = b[pos..]
        .iter()
        .take(16)
        .take_while(|c| c.is_ascii_digit() || **c == b'.')
        .map(|c| *c as char)
        .collect();
    let v = v.trim_end_matches('.').to_string();
    (!v.is_empty()).then_some(v)
}

/// `V:` of package `P:name` in Alpine's `/lib/apk/db/installed`.
pub fn apk_package_version(db: &str, name: &str) -> Option<String> {
    let mut current = None;
    for line in db.lines() {
        if let Some(p) = line.strip_prefix("P:") {
            current = Some(p);
        } else if let Some(v) = line.strip_prefix("V:") {
            if current == Some(name) {
                return Some(v.to_string());
            }
        } else if line.is_empty() {
            current = None;
        }
    }
    None
}

/// `Version:` of `Package: name` in `/var/lib/dpkg/status`.
pub fn dpkg_package_version(status: &str, name: &str) -> Option<String> {
    for para in status.split("\n\n") {
        let mut pkg = None;
        let mut ver = None;
        for line in para.lines() {
            if let Some(p) = line.strip_prefix("Package: ") {
                pkg = Some(p.trim());
            } else if let Some(v) = line.strip_prefix("Version: ") {
                ver = Some(v.trim());
            }
        }
        if pkg == Some(name) {
            return ver.map(str::to_string);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal little-endian ELF64 with one writable PT_LOAD segment holding a pre-1.18 Go build-info
    /// header (pointers to string headers), as Go ≤ 1.17 linkers lay it out.
    pub(crate) fn fake_go_elf(version: &str) -> Vec<u8> {
        let base = 0x400000u64;
        let seg_off = 0x1000u64;
        let mut seg = vec![0u8; 0x200];
        seg[..14].copy_from_slice(GO_MAGIC);
        seg[14] = 8;
        seg[15] = 0;
        let vstr_hdr = 0x40u64;
        let vstr_data = 0x80u64;
        seg[16..24].copy_from_slice(&(base + vstr_hdr).to_le_bytes());
        seg[24..32].copy_from_slice(&0u64.to_le_bytes());
        seg[vstr_hdr as usize..vstr_hdr as usize + 8]
            .copy_from_slice(&(base + vstr_data).to_le_bytes());
        seg[vstr_hdr as usize + 8..vstr_hdr as usize + 16]
            .copy_from_slice(&(version.len() as u64).to_le_bytes());
        seg[vstr_data as usize..vstr_data as usize + version.len()]
            .copy_from_slice(version.as_bytes());
        let mut f = vec![0u8; seg_off as usize];
        f[..4].copy_from_slice(b"\x7fELF");
        f[4] = 2;
        f[5] = 1;
        f[32..40].copy_from_slice(&64u64.to_le_bytes()); // phoff
        f[54..56].copy_from_slice(&56u16.to_le_bytes());
        f[56..58].copy_from_slice(&1u16.to_le_bytes());
        let ph = 64;
        f[ph..ph + 4].copy_from_slice(&1u32.to_le_bytes());
        f[ph + 4..ph + 8].copy_from_slice(&6u32.to_le_bytes()); // RW
        f[ph + 8..ph + 16].copy_from_slice(&seg_off.to_le_bytes());
        f[ph + 16..ph + 24].copy_from_slice(&base.to_le_bytes());
        f[ph + 32..ph + 40].copy_from_slice(&(seg.len() as u64).to_le_bytes());
        f.extend_from_slice(&seg);
        f
    }

    #[test]
    fn go_pointer_format_and_inline_format() {
        let old = fake_go_elf("go1.15.6");
        assert_eq!(go_build_info(&old).unwrap().go_version, "go1.15.6");
        assert!(go_build_info(&b"not an elf".to_vec()).is_none());
    }

    #[test]
    fn interpreter_of_a_dynamic_binary() {
        // ELF64 header + one PT_INTERP program header pointing at the loader path.
        let path = b"/lib/ld-musl-x86_64.so.1\0";
        let mut f = vec![0u8; 0x100];
        f[..4].copy_from_slice(b"\x7fELF");
        f[4] = 2;
        f[5] = 1;
        f[32..40].copy_from_slice(&64u64.to_le_bytes());
        f[54..56].copy_from_slice(&56u16.to_le_bytes());
        f[56..58].copy_from_slice(&1u16.to_le_bytes());
        f[64..68].copy_from_slice(&3u32.to_le_bytes());
        f[72..80].copy_from_slice(&0x80u64.to_le_bytes());
        f[96..104].copy_from_slice(&(path.len() as u64).to_le_bytes());
        f[0x80..0x80 + path.len()].copy_from_slice(path);
        assert_eq!(
            elf_interpreter(&f).as_deref(),
            Some("/lib/ld-musl-x86_64.so.1")
        );
        assert_eq!(
            elf_interpreter(&fake_go_elf("go1.20")),
            None,
            "static: no loader"
        );
    }

    #[test]
    fn damaged_binaries_never_panic() {
        let good = fake_go_elf("go1.15.6");
        for i in 0..good.len().min(0x1200) {
            for v in [0x00u8, 0xff, 0x7f] {
                let mut b = good.clone();
                b[i] = v;
                let _ = go_build_info(&b);
                let _ = elf_interpreter(&b);
            }
        }
        for cut in (0..good.len()).step_by(7) {
            let _ = go_build_info(&good[..cut].to_vec());
        }
    }

    #[test]
    fn libc_banners_and_package_dbs() {
        let mut musl = vec![0u8; 100];
        musl.extend_from_slice(b"musl libc (x86_64)\0Version %s\n\0");
        musl.extend_from_slice(&[0u8; 50]);
        musl.extend_from_slice(b"\x001.2.3\0");
        assert_eq!(musl_version_from_bytes(&musl).as_deref(), Some("1.2.3"));
        assert_eq!(
            glibc_version_from_bytes(
                b"GNU C Library (Debian GLIBC 2.36-9) stable release version 2.36.\n"
            )
            .as_deref(),
            Some("2.36")
        );
        assert_eq!(
            apk_package_version("P:busybox\nV:1.36\n\nP:musl\nV:1.2.3-r4\n", "musl").as_deref(),
            Some("1.2.3-r4")
        );
        assert_eq!(
            dpkg_package_version("Package: libc6\nVersion: 2.36-9\n\n", "libc6").as_deref(),
            Some("2.36-9")
        );
    }
}
