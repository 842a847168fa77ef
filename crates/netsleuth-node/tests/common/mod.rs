//! Test "nodes": network namespaces and root directories this test process creates, and removes on
//! success, failure and panic (Drop guards). Names carry the pid and a counter.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

static COUNTER: AtomicU32 = AtomicU32::new(0);

pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}{}x{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

/// Whether namespaces can be made here (root with CAP_SYS_ADMIN and iproute2).
pub fn can_make_namespaces() -> bool {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIP: needs root to create network namespaces");
        return false;
    }
    let name = unique("nsnprobe");
    let ok = Command::new("ip")
        .args(["netns", "add", &name])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    let _ = Command::new("ip").args(["netns", "del", &name]).status();
    if !ok {
        eprintln!("SKIP: `ip netns add` failed (no iproute2 or no CAP_SYS_ADMIN)");
    }
    ok
}

pub fn sh(cmd: &str) {
    let out = Command::new("sh").args(["-c", cmd]).output().expect("sh");
    assert!(
        out.status.success(),
        "command failed: {cmd}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn sh_out(cmd: &str) -> String {
    let out = Command::new("sh").args(["-c", cmd]).output().expect("sh");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new() -> Netns {
        let name = unique("nsn");
        sh(&format!("ip netns add {name}"));
        let ns = Netns { name };
        ns.run("ip link set lo up");
        ns
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/run/netns/{}", self.name))
    }

    /// Runs a shell command inside the namespace; panics if it fails.
    pub fn run(&self, cmd: &str) {
        sh(&format!(
            "ip netns exec {} sh -c '{}'",
            self.name,
            cmd.replace('\'', "'\\''")
        ));
    }

    pub fn out(&self, cmd: &str) -> String {
        sh_out(&format!(
            "ip netns exec {} sh -c '{}'",
            self.name,
            cmd.replace('\'', "'\\''")
        ))
    }

    /// Starts a long-running command inside the namespace (killed by the guard).
    pub fn spawn(&self, argv: &[&str]) -> ChildGuard {
        let child = Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(argv)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn in netns");
        ChildGuard(child)
    }

    /// Runs `f` on a thread inside the namespace (sockets made there stay there).
    pub fn within<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        netsleuth_node::collect::run::in_netns(Some(&self.path()), f).expect("enter netns")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

pub struct ChildGuard(pub Child);

impl ChildGuard {
    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> TempDir {
        let p = std::env::temp_dir().join(unique(prefix));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    pub fn write(&self, rel: &str, text: &str) {
        let p = self.0.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Where fixtures live, and whether this run should rewrite them.
pub fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/node")
}

pub fn update_fixtures() -> bool {
    std::env::var_os("NETSLEUTH_UPDATE_FIXTURES").is_some()
}

pub fn ids(report: &netsleuth_node::CheckReport) -> Vec<(String, String)> {
    report
        .findings
        .iter()
        .map(|f| (f.id.to_string(), format!("{:?}", f.kind)))
        .collect()
}

pub fn show(report: &netsleuth_node::CheckReport) -> String {
    let findings: Vec<netsleuth_core::report::json::Finding> =
        report.findings.iter().map(Into::into).collect();
    serde_json::to_string_pretty(&findings).unwrap()
}

/// A reproducer of `shared/hostile` (beside the checkout: `../shared/hostile`). Absent: `None` with a
/// note, or a failure when `CI=true` (CI must not pass by skipping).
pub fn hostile(name: &str) -> Option<PathBuf> {
    let p = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/hostile"
    ))
    .join(name);
    if p.is_file() {
        return Some(p);
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{} is missing and CI=true: the hostile-input reproducers must be checked out beside the repository (../shared/hostile)",
        p.display()
    );
    eprintln!(
        "SKIP: {} absent (../shared/hostile beside the checkout)",
        p.display()
    );
    None
}

/// The node artifacts of the shared corpus (`$NETSLEUTH_NODE_CORPUS`, or `../shared/corpus/node` next
/// to the checkout). Absent: `None`, or a failure when CI is set (a skipped test would pass by not
/// running).
pub fn node_corpus_dir() -> Option<PathBuf> {
    let found = std::env::var_os("NETSLEUTH_NODE_CORPUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpus/node")
        });
    let found = found.is_dir().then_some(found);
    assert!(
        found.is_some() || std::env::var("CI").is_err(),
        "../shared/corpus/node is missing next to the checkout and CI is set: the test must run"
    );
    found
}
