//! Bundles: a tar.gz holding `manifest.json` and the raw artifacts as plain files, so a person can read
//! them with `tar xzf` and netsleuth can re-check them anywhere.

use crate::facts::{paths, Artifacts, Manifest, NodeFacts, BUNDLE_SCHEMA};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// Largest member a bundle may hold (a conntrack summary or a big iptables-save are a few MiB).
const MAX_MEMBER: u64 = 512 << 20;

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("cannot open bundle {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write bundle {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("bundle {path} is not a readable tar.gz: {source} (hint: was it written by `netsleuth collect`?)")]
    Archive {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("bundle {path} has no manifest.json (hint: was it written by `netsleuth collect`?)")]
    NoManifest { path: PathBuf },
    #[error("bundle {path}: manifest.json is not valid: {source}")]
    BadManifest {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("bundle {path} has schema {found:?}; this netsleuth reads {expected:?} (hint: use a matching netsleuth version)")]
    Schema {
        path: PathBuf,
        found: String,
        expected: &'static str,
    },
    #[error("bundle {path}: member {member} is larger than {max} bytes")]
    TooLarge {
        path: PathBuf,
        member: String,
        max: u64,
    },
}

/// Writes facts (as collected: their raw artifacts and manifest) to `path` as tar.gz.
pub fn write_bundle(facts: &NodeFacts, path: &Path) -> Result<(), BundleError> {
    let werr = |source| BundleError::Write {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::create(path).map_err(werr)?;
    write_bundle_to(facts, file).map_err(werr)
}

/// Writes a bundle to any writer (a file, stdout, a buffer).
pub fn write_bundle_to<W: Write>(facts: &NodeFacts, w: W) -> std::io::Result<()> {
    let gz = flate2::write::GzEncoder::new(w, flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    let mtime = (facts.manifest.collected_at_unix_ms / 1000).max(0) as u64;
    let manifest = serde_json::to_vec_pretty(&facts.manifest).map_err(std::io::Error::other)?;
    append(&mut tar, paths::MANIFEST, &manifest, mtime)?;
    for (p, bytes) in facts.artifacts() {
        append(&mut tar, p, bytes, mtime)?;
    }
    tar.into_inner()?.finish()?.flush()
}

fn append<W: Write>(
    tar: &mut tar::Builder<W>,
    path: &str,
    bytes: &[u8],
    mtime: u64,
) -> std::io::Result<()> {
    let mut h = tar::Header::new_gnu();
    h.set_size(bytes.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(mtime);
    h.set_entry_type(tar::EntryType::Regular);
    tar.append_data(&mut h, path, bytes)
}

/// Reads a bundle and parses its artifacts.
pub fn read_bundle(path: &Path) -> Result<NodeFacts, BundleError> {
    let file = std::fs::File::open(path).map_err(|source| BundleError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    let mut facts = read_bundle_from(file, path)?;
    facts.manifest.target = format!("{} (bundle {})", facts.manifest.target, path.display());
    Ok(facts)
}

/// Reads a bundle from any reader; `name` is used in errors.
pub fn read_bundle_from<R: Read>(r: R, name: &Path) -> Result<NodeFacts, BundleError> {
    let aerr = |source| BundleError::Archive {
        path: name.to_path_buf(),
        source,
    };
    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(r));
    let mut artifacts = Artifacts::new();
    let mut manifest_bytes = None;
    for entry in ar.entries().map_err(aerr)? {
        let mut e = entry.map_err(aerr)?;
        if !e.header().entry_type().is_file() {
            continue;
        }
        let member = e
            .path()
            .map_err(aerr)?
            .to_string_lossy()
            .trim_start_matches("./")
            .to_string();
        if e.size() > MAX_MEMBER {
            return Err(BundleError::TooLarge {
                path: name.to_path_buf(),
                member,
                max: MAX_MEMBER,
            });
        }
        let mut bytes = Vec::with_capacity(e.size() as usize);
        e.read_to_end(&mut bytes).map_err(aerr)?;
        if member == paths::MANIFEST {
            manifest_bytes = Some(bytes);
        } else {
            artifacts.insert(member, bytes);
        }
    }
    // Read to the end of the gzip stream: its trailer (CRC, length) is what tells a cut file from a whole one.
    std::io::copy(&mut ar.into_inner(), &mut std::io::sink()).map_err(aerr)?;
    let mb = manifest_bytes.ok_or_else(|| BundleError::NoManifest {
        path: name.to_path_buf(),
    })?;
    let manifest: Manifest =
        serde_json::from_slice(&mb).map_err(|source| BundleError::BadManifest {
            path: name.to_path_buf(),
            source,
        })?;
    if manifest.schema != BUNDLE_SCHEMA {
        return Err(BundleError::Schema {
            path: name.to_path_buf(),
            found: manifest.schema,
            expected: BUNDLE_SCHEMA,
        });
    }
    Ok(NodeFacts::from_artifacts(manifest, artifacts))
}
