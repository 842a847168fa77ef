//! Bundles: a tar.gz holding `manifest.json` and the raw artifacts as plain files, so a person can read
//! them with `tar xzf` and netsleuth can re-check them anywhere.

use crate::facts::{paths, ArtifactStatus, Artifacts, Manifest, NodeFacts, BUNDLE_SCHEMA};
use netsleuth_core::Diagnostic;
use std::cell::Cell;
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::rc::Rc;

/// Default cap on the decompressed bytes of one bundle: the whole tar stream (members, headers,
/// members skipped unread, whatever follows the archive's end). A bundle from `netsleuth collect` on a
/// node with 110 k kube-proxy rules holds well under 100 MiB; a gzip bomb of a few MB would otherwise
/// expand to gigabytes and take the memory with it.
pub const MAX_TOTAL_DECOMPRESSED: u64 = 256 << 20;

/// Default cap on one member held in memory. The largest real artifact is a big node's
/// `iptables-save.txt` (≈ 30–40 MB for 110 k rules); twice that leaves room for bigger clusters.
pub const MAX_MEMBER: u64 = 64 << 20;

/// How many bytes reading one bundle may decompress and hold; see [`MAX_TOTAL_DECOMPRESSED`] and
/// [`MAX_MEMBER`] for the defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadLimits {
    /// Decompressed bytes of the whole tar stream.
    pub total: u64,
    /// Bytes of one member (what is held in memory per artifact).
    pub member: u64,
}

impl Default for ReadLimits {
    fn default() -> Self {
        ReadLimits {
            total: MAX_TOTAL_DECOMPRESSED,
            member: MAX_MEMBER,
        }
    }
}

/// Members named in a "skipped" or "missing" message before it says "and N more".
const NAMED_IN_MESSAGES: usize = 8;

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
    #[error(
        "bundle {path}: member {member} holds {}, more than the {} one member may hold; nothing was read \
         (hint: a node with 110 k kube-proxy rules writes ≈ 30–40 MB of iptables-save; if you trust this \
         bundle, raise the cap with NETSLEUTH_BUNDLE_MEMBER_MIB)",
        size_text(.size), size_text(.max)
    )]
    TooLarge {
        path: PathBuf,
        member: String,
        /// What the member's tar header says it holds.
        size: u64,
        max: u64,
    },
    #[error(
        "bundle {path}: {} takes the decompressed size past the budget of {} for one bundle ({} with it); \
         stopped reading (hint: a bundle from `netsleuth collect` stays far below the budget, so this one \
         is damaged or built to exhaust memory; if you trust it, raise the budget with \
         NETSLEUTH_BUNDLE_BUDGET_MIB)",
        member.as_deref().map(|m| format!("member {m}")).unwrap_or_else(|| "data after the last member".into()),
        size_text(.budget), size_text(.reached)
    )]
    OverBudget {
        path: PathBuf,
        /// The member being read or skipped; `None` past the archive's end.
        member: Option<String>,
        /// Decompressed bytes read so far, with the member's whole size where its header gave it.
        reached: u64,
        budget: u64,
    },
    #[error(
        "bundle {path} holds none of the {claimed} artifacts its manifest.json lists as collected (missing: {}); \
         nothing to check (hint: the file was cut or emptied after `netsleuth collect`: copy the whole \
         bundle again, or collect a new one)",
        name_some(.missing, *.claimed)
    )]
    NothingCollected {
        path: PathBuf,
        claimed: usize,
        /// The first few missing artifacts.
        missing: Vec<String>,
    },
}

/// `20.0 MiB (20971520 bytes)`.
fn size_text(bytes: &u64) -> String {
    format!(
        "{:.1} MiB ({bytes} bytes)",
        *bytes as f64 / (1u64 << 20) as f64
    )
}

/// `a, b, c` or `a, b, … and 16 more`, of `total` names of which `names` are the first.
fn name_some(names: &[String], total: usize) -> String {
    let shown: Vec<&str> = names
        .iter()
        .take(NAMED_IN_MESSAGES)
        .map(String::as_str)
        .collect();
    let rest = total.saturating_sub(shown.len());
    if rest == 0 {
        shown.join(", ")
    } else {
        format!("{} and {rest} more", shown.join(", "))
    }
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

/// Reads a bundle and parses its artifacts, within the default [`ReadLimits`].
pub fn read_bundle(path: &Path) -> Result<NodeFacts, BundleError> {
    read_bundle_with(path, &ReadLimits::default())
}

/// Reads a bundle within `limits`.
pub fn read_bundle_with(path: &Path, limits: &ReadLimits) -> Result<NodeFacts, BundleError> {
    let file = std::fs::File::open(path).map_err(|source| BundleError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    let mut facts = read_bundle_from_with(file, path, limits)?;
    facts.manifest.target = format!("{} (bundle {})", facts.manifest.target, path.display());
    Ok(facts)
}

/// Reads a bundle from any reader within the default [`ReadLimits`]; `name` is used in errors.
pub fn read_bundle_from<R: Read>(r: R, name: &Path) -> Result<NodeFacts, BundleError> {
    read_bundle_from_with(r, name, &ReadLimits::default())
}

/// Counts the decompressed bytes the tar reader takes and fails once they pass the budget. It sits
/// under the tar reader, so it also bounds what that reader consumes on its own: headers, the data of
/// members it skips, GNU long names and PAX records (which it holds in memory), and whatever follows
/// the archive's end.
struct Budgeted<R> {
    inner: R,
    spent: Rc<Cell<u64>>,
    budget: u64,
}

impl<R: Read> Read for Budgeted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let spent = self.spent.get();
        if spent > self.budget {
            return Err(std::io::Error::other(
                "the bundle's decompressed-size budget is spent",
            ));
        }
        // Never more than one byte past the budget: that byte is what tells "at" from "past".
        let room = usize::try_from((self.budget - spent).saturating_add(1)).unwrap_or(usize::MAX);
        let want = buf.len().min(room);
        let n = self.inner.read(&mut buf[..want])?;
        let spent = spent.saturating_add(n as u64);
        self.spent.set(spent);
        if spent > self.budget {
            return Err(std::io::Error::other(
                "the bundle's decompressed-size budget is spent",
            ));
        }
        Ok(n)
    }
}

/// Reads a bundle from any reader within `limits`; `name` is used in errors and notices.
///
/// The tar stream is read member by member: members of the bundle layout ([`paths::is_layout_member`])
/// are held (each at most `limits.member` bytes, refused by its header before any is read), anything
/// else is skipped unread and named in an `unknown-member` diagnostic. Artifacts the manifest lists as
/// collected but the archive lacks are `missing-from-bundle` diagnostics, or
/// [`BundleError::NothingCollected`] when none of them is there.
pub fn read_bundle_from_with<R: Read>(
    r: R,
    name: &Path,
    limits: &ReadLimits,
) -> Result<NodeFacts, BundleError> {
    let spent = Rc::new(Cell::new(0u64));
    let budgeted = Budgeted {
        inner: flate2::read::GzDecoder::new(r),
        spent: Rc::clone(&spent),
        budget: limits.total,
    };
    // The member being read or skipped: an error from the tar reader is blamed on it.
    let mut current: Option<String> = None;
    let over_budget = |member: Option<String>, reached: u64| BundleError::OverBudget {
        path: name.to_path_buf(),
        member,
        reached,
        budget: limits.total,
    };
    // A read error past the budget is the budget's doing, whatever the tar reader made of it.
    let fail = |source: std::io::Error, member: &Option<String>| {
        if spent.get() > limits.total {
            over_budget(member.clone(), spent.get())
        } else {
            BundleError::Archive {
                path: name.to_path_buf(),
                source,
            }
        }
    };
    let mut ar = tar::Archive::new(budgeted);
    let mut artifacts = Artifacts::new();
    let mut manifest_bytes = None;
    let mut unknown: Vec<String> = Vec::new();
    let mut unknown_count = 0usize;
    for entry in ar.entries().map_err(|e| fail(e, &current))? {
        let mut e = entry.map_err(|e| fail(e, &current))?;
        let member = e
            .path()
            .map_err(|e| fail(e, &current))?
            .to_string_lossy()
            .trim_start_matches("./")
            .to_string();
        current = Some(member.clone());
        let kind = e.header().entry_type();
        if kind.is_dir() {
            continue;
        }
        let size = e.size();
        let layout = kind.is_file() && paths::is_layout_member(&member);
        // Both refusals go by the header, before anything of the member is decompressed.
        if layout && size > limits.member {
            return Err(BundleError::TooLarge {
                path: name.to_path_buf(),
                member,
                size,
                max: limits.member,
            });
        }
        if spent.get().saturating_add(size) > limits.total {
            return Err(over_budget(current, spent.get().saturating_add(size)));
        }
        if !layout {
            // Not read here: the tar reader skips its data on the next step (counted in the budget).
            unknown_count += 1;
            if unknown.len() < NAMED_IN_MESSAGES {
                unknown.push(member);
            }
            continue;
        }
        // The header's size, up to the default cap: limits raised by the user grow the buffer as the
        // data arrives instead of trusting a header with an allocation.
        let mut bytes = Vec::with_capacity(size.min(MAX_MEMBER) as usize);
        // `take` as well as the header check: the tar reader's idea of the size is the header's.
        (&mut e)
            .take(limits.member.saturating_add(1))
            .read_to_end(&mut bytes)
            .map_err(|e| fail(e, &current))?;
        if bytes.len() as u64 > limits.member {
            return Err(BundleError::TooLarge {
                path: name.to_path_buf(),
                member,
                size: bytes.len() as u64,
                max: limits.member,
            });
        }
        if member == paths::MANIFEST {
            manifest_bytes = Some(bytes);
        } else {
            artifacts.insert(member, bytes);
        }
    }
    // Read to the end of the gzip stream: its trailer (CRC, length) is what tells a cut file from a whole one.
    std::io::copy(&mut ar.into_inner(), &mut std::io::sink()).map_err(|e| fail(e, &None))?;
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
    let mut notices = missing_artifacts(&manifest, &artifacts, name)?;
    if unknown_count > 0 {
        notices.push(Diagnostic {
            source: name.display().to_string(),
            code: "unknown-member",
            offset: None,
            frame: None,
            line: None,
            count: unknown_count as u64,
            message: format!(
                "{unknown_count} member(s) outside the bundle layout were skipped unread: {} \
                 (a newer netsleuth's artifacts, or files added by hand)",
                name_some(&unknown, unknown_count)
            ),
        });
    }
    let mut facts = NodeFacts::from_artifacts(manifest, artifacts);
    // What the bundle lacks comes before what its artifacts hold.
    facts.diagnostics.splice(0..0, notices);
    Ok(facts)
}

/// A `missing-from-bundle` diagnostic for each artifact the manifest lists as collected that the
/// archive lacks; an error when it lacks all of them (nothing would be checked, and "no incident"
/// would be a false all-clear).
fn missing_artifacts(
    manifest: &Manifest,
    artifacts: &Artifacts,
    name: &Path,
) -> Result<Vec<Diagnostic>, BundleError> {
    // In the manifest's order (the collector's: node, then each namespace and root), once per path;
    // the manifest's last word on a path counts (`Manifest::artifact`).
    let mut seen = BTreeSet::new();
    let claimed: Vec<&str> = manifest
        .artifacts
        .iter()
        .map(|a| a.path.as_str())
        .filter(|p| seen.insert(*p))
        .filter(|p| {
            manifest
                .artifact(p)
                .is_some_and(|a| a.status == ArtifactStatus::Ok)
        })
        .collect();
    let missing: Vec<&str> = claimed
        .iter()
        .copied()
        .filter(|p| !artifacts.contains_key(*p))
        .collect();
    if !claimed.is_empty() && missing.len() == claimed.len() {
        return Err(BundleError::NothingCollected {
            path: name.to_path_buf(),
            claimed: claimed.len(),
            missing: missing
                .iter()
                .take(NAMED_IN_MESSAGES)
                .map(|p| p.to_string())
                .collect(),
        });
    }
    Ok(missing
        .iter()
        .map(|p| {
            let source = manifest
                .artifact(p)
                .map(|a| a.source.as_str())
                .unwrap_or("?");
            Diagnostic {
                source: p.to_string(),
                code: "missing-from-bundle",
                offset: None,
                frame: None,
                line: None,
                count: 1,
                message: format!(
                    "listed in manifest.json as collected ({source}) but not in the bundle (cut or \
                     edited after `netsleuth collect`): what depends on it is not checked"
                ),
            }
        })
        .collect())
}
