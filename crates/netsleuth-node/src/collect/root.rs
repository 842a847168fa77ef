//! Reading files of a root filesystem (the node's `/`, or a container's `/proc/PID/root`) without
//! letting its absolute symlinks escape into the node's own files.

use crate::binary::{
    apk_package_version, dpkg_package_version, elf_interpreter, glibc_version_from_bytes,
    musl_version_from_bytes, LibcInfo,
};
use std::io::Read;
use std::path::{Component, Path, PathBuf};

/// Most bytes read from any one file of a root (a libc is 1–2 MiB; a resolv.conf a few hundred bytes).
const MAX_FILE: u64 = 4 << 20;

/// Resolves `rel` inside `root`, following symlinks as the container would see them: an absolute target
/// restarts at `root`, `..` never climbs above it. Returns the path to open on the node.
pub fn resolve_in_root(root: &Path, rel: &str) -> Option<PathBuf> {
    let mut parts: Vec<String> = Vec::new();
    let mut pending: Vec<String> = rel
        .split('/')
        .filter(|s| !s.is_empty())
        .rev()
        .map(str::to_string)
        .collect();
    let mut hops = 0;
    while let Some(p) = pending.pop() {
        match p.as_str() {
            "." => continue,
            ".." => {
                parts.pop();
                continue;
            }
            _ => {}
        }
        let candidate: PathBuf = root.join(parts.iter().collect::<PathBuf>()).join(&p);
        match std::fs::symlink_metadata(&candidate) {
            Ok(m) if m.file_type().is_symlink() => {
                hops += 1;
                if hops > 40 {
                    return None;
                }
                let target = std::fs::read_link(&candidate).ok()?;
                if target.is_absolute() {
                    parts.clear();
                }
                let comps: Vec<String> = target
                    .components()
                    .filter_map(|c| match c {
                        Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
                        Component::ParentDir => Some("..".into()),
                        _ => None,
                    })
                    .collect();
                for c in comps.into_iter().rev() {
                    pending.push(c);
                }
            }
            _ => parts.push(p),
        }
    }
    Some(root.join(parts.iter().collect::<PathBuf>()))
}

pub enum FileRead {
    Ok(Vec<u8>),
    Absent,
    Failed(String),
}

pub fn read_in_root(root: &Path, rel: &str, max: u64) -> FileRead {
    let Some(p) = resolve_in_root(root, rel) else {
        return FileRead::Failed("symlink loop".into());
    };
    match std::fs::File::open(&p) {
        Ok(f) => {
            let mut v = Vec::new();
            match f.take(max.min(MAX_FILE)).read_to_end(&mut v) {
                Ok(_) => FileRead::Ok(v),
                Err(e) => FileRead::Failed(format!("cannot read {}: {e}", p.display())),
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => FileRead::Absent,
        Err(e) => FileRead::Failed(format!("cannot open {}: {e}", p.display())),
    }
}

/// Target of `rel` if it is a symlink (as written in the link).
pub fn link_in_root(root: &Path, rel: &str) -> Option<String> {
    let dir = resolve_in_root(root, Path::new(rel).parent()?.to_str()?)?;
    let name = Path::new(rel).file_name()?;
    std::fs::read_link(dir.join(name))
        .ok()
        .map(|t| t.to_string_lossy().into_owned())
}

const GLIBC_PATHS: &[&str] = &[
    "lib/x86_64-linux-gnu/libc.so.6",
    "usr/lib/x86_64-linux-gnu/libc.so.6",
    "lib/aarch64-linux-gnu/libc.so.6",
    "usr/lib/aarch64-linux-gnu/libc.so.6",
    "lib64/libc.so.6",
    "usr/lib64/libc.so.6",
    "lib/libc.so.6",
    "usr/lib/libc.so.6",
];

/// Which libc the root carries, and its version: package databases first (exact), then the binary.
/// Which libc the root carries, and its version: package databases first (exact), then the binary.
///
/// When both are present (a glibc distribution with musl installed beside it, or an Alpine image with
/// gcompat), the root's programs decide: the dynamic loader named in their ELF header (`programs` are
/// files on the node, e.g. `/proc/PID/exe`; the root's `/bin/sh` is tried after them).
pub fn detect_libc(root: &Path, programs: &[PathBuf]) -> LibcInfo {
    let musl = ["lib", "usr/lib"].iter().find_map(|dir| {
        let d = resolve_in_root(root, dir)?;
        let mut names: Vec<String> = std::fs::read_dir(d)
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
            .filter(|n| n.starts_with("ld-musl-") || n.starts_with("libc.musl-"))
            .collect();
        names.sort();
        names.first().map(|n| format!("{dir}/{n}"))
    });
    let glibc = GLIBC_PATHS
        .iter()
        .find(|p| {
            resolve_in_root(root, p)
                .map(|p| p.exists())
                .unwrap_or(false)
        })
        .copied();
    let mut note = String::new();
    let use_musl = match (&musl, glibc) {
        (Some(_), None) => true,
        (None, _) => false,
        (Some(_), Some(_)) => {
            let mut candidates: Vec<PathBuf> = programs.to_vec();
            candidates.extend(
                ["bin/sh", "bin/busybox"]
                    .iter()
                    .filter_map(|p| resolve_in_root(root, p)),
            );
            // A majority of the programs decides, not the first one: a glibc node can run a few
            // musl-linked programs (and an Alpine image a glibc one through gcompat).
            let interps: Vec<(String, String)> = candidates
                .iter()
                .filter_map(|p| {
                    let f = std::fs::File::open(p).ok()?;
                    elf_interpreter(&f).map(|i| (p.display().to_string(), i))
                })
                .collect();
            let musl_n = interps
                .iter()
                .filter(|(_, i)| i.contains("ld-musl"))
                .count();
            match interps.first() {
                Some((prog, i)) => {
                    note = format!(
                        "; both libcs present, {musl_n} of {} programs load musl (e.g. {prog} loads {i})",
                        interps.len()
                    );
                    musl_n * 2 > interps.len()
                }
                None => {
                    note =
                        "; both libcs present and no dynamic program to tell: glibc assumed".into();
                    false
                }
            }
        }
    };
    if let (true, Some(path)) = (use_musl, musl) {
        if let FileRead::Ok(db) = read_in_root(root, "lib/apk/db/installed", 64 << 20) {
            if let Some(v) = apk_package_version(&String::from_utf8_lossy(&db), "musl") {
                return LibcInfo {
                    kind: "musl".into(),
                    version: Some(v),
                    evidence: format!("/lib/apk/db/installed (package musl){note}"),
                };
            }
        }
        let version = match read_in_root(root, &path, MAX_FILE) {
            FileRead::Ok(b) => musl_version_from_bytes(&b),
            _ => None,
        };
        return LibcInfo {
            kind: "musl".into(),
            version,
            evidence: format!("/{path} (version string in the binary){note}"),
        };
    }
    if let Some(path) = glibc {
        if let FileRead::Ok(st) = read_in_root(root, "var/lib/dpkg/status", 64 << 20) {
            if let Some(v) = dpkg_package_version(&String::from_utf8_lossy(&st), "libc6") {
                return LibcInfo {
                    kind: "glibc".into(),
                    version: Some(v),
                    evidence: format!("/var/lib/dpkg/status (package libc6){note}"),
                };
            }
        }
        let version = match read_in_root(root, path, MAX_FILE) {
            FileRead::Ok(b) => glibc_version_from_bytes(&b),
            _ => None,
        };
        return LibcInfo {
            kind: "glibc".into(),
            version,
            evidence: format!("/{path} (version string in the binary){note}"),
        };
    }
    LibcInfo {
        kind: "none".into(),
        version: None,
        evidence: "no musl loader or libc.so.6 in the usual places".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF64 whose PT_INTERP names `loader`.
    fn dynamic_elf(loader: &str) -> Vec<u8> {
        let path = format!("{loader}\0");
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
        f[0x80..0x80 + path.len()].copy_from_slice(path.as_bytes());
        f
    }

    #[test]
    fn with_both_libcs_the_majority_of_programs_decides() {
        // Regression: a glibc node running one musl-linked program was reported as musl.
        let dir = std::env::temp_dir().join(format!("nsnode-libc-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("lib/x86_64-linux-gnu")).unwrap();
        std::fs::write(
            dir.join("lib/x86_64-linux-gnu/libc.so.6"),
            b"GNU C Library (Debian GLIBC 2.36-9) stable release version 2.36.",
        )
        .unwrap();
        std::fs::write(
            dir.join("lib/ld-musl-x86_64.so.1"),
            b"musl libc (x86_64)\nVersion 1.2.3\n",
        )
        .unwrap();
        let prog = |name: &str, loader: &str| {
            let p = dir.join(name);
            std::fs::write(&p, dynamic_elf(loader)).unwrap();
            p
        };
        let musl = prog("a-musl", "/lib/ld-musl-x86_64.so.1");
        let glibc1 = prog("b-glibc", "/lib64/ld-linux-x86-64.so.2");
        let glibc2 = prog("c-glibc", "/lib64/ld-linux-x86-64.so.2");
        let info = detect_libc(&dir, &[musl.clone(), glibc1, glibc2]);
        assert_eq!(info.kind, "glibc", "{info:?}");
        let info = detect_libc(&dir, &[musl]);
        assert_eq!(info.kind, "musl", "{info:?}");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn absolute_links_stay_inside_the_root() {
        let dir = std::env::temp_dir().join(format!("nsnode-root-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("etc")).unwrap();
        std::fs::create_dir_all(dir.join("run/systemd/resolve")).unwrap();
        std::fs::write(
            dir.join("run/systemd/resolve/stub-resolv.conf"),
            "nameserver 127.0.0.53\n",
        )
        .unwrap();
        std::os::unix::fs::symlink(
            "/run/systemd/resolve/stub-resolv.conf",
            dir.join("etc/resolv.conf"),
        )
        .unwrap();
        std::os::unix::fs::symlink("/../../../../etc/passwd", dir.join("etc/escape")).unwrap();
        match read_in_root(&dir, "etc/resolv.conf", 4096) {
            FileRead::Ok(b) => assert_eq!(b, b"nameserver 127.0.0.53\n"),
            _ => panic!("symlink not followed inside the root"),
        }
        assert!(matches!(
            read_in_root(&dir, "etc/escape", 4096),
            FileRead::Absent
        ));
        assert_eq!(
            link_in_root(&dir, "etc/resolv.conf").as_deref(),
            Some("/run/systemd/resolve/stub-resolv.conf")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
