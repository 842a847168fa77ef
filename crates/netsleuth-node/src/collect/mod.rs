//! The live collector: a thin adapter that reads `/proc`, runs the read-only tools in each network
//! namespace, and hands the bytes to [`NodeFacts::from_artifacts`].
//!
//! Invariant: read-only. Nothing here writes a sysctl, a rule, an address or a conntrack entry; the only
//! packets sent are the opt-in `--probe` DNS queries. Namespaces are entered per thread (`setns`), so the
//! process itself never leaves its own.

pub mod nl_conntrack;
mod nl_socket;
pub mod nl_tables;
pub mod root;
pub mod run;

use crate::binary::go_build_info;
use crate::facts::{
    paths, ArtifactEntry, ArtifactStatus, Artifacts, GoBinary, Manifest, NamespaceEntry, NodeFacts,
    RootEntry, SampleEntry, BUNDLE_SCHEMA,
};
use crate::parse::conntrack::{ConntrackSummarizer, SummaryLimits};
use crate::probe::{probe_one, ProbeOptions, ProbeResult};
use root::{detect_libc, link_in_root, read_in_root, FileRead};
use run::{in_netns, run_lines, run_text, RunError};
use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

/// Which network namespace is audited as "the node".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The namespace netsleuth runs in (the host's, normally).
    Host,
    /// A namespace file (`/run/netns/NAME`, `/proc/PID/ns/net`): audited as if it were a node.
    Netns(PathBuf),
}

/// Which processes are looked at to find containers (their namespaces and roots).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProcessScope {
    All,
    Pids(Vec<u32>),
    None,
}

/// A container the caller names (a lab's pod, a test's fixture) rather than one found through its
/// processes: collected as a found one is, its namespace beside the node's, its root's files with the
/// node's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    /// Its name (`client`); its root is `root-<name>` in the bundle (a `/` becomes `_`).
    pub name: String,
    /// Its network namespace file (`/run/netns/NAME`), when it has its own.
    pub netns: Option<PathBuf>,
    /// Its filesystem root (where its `etc/resolv.conf`, `etc/hosts` are), when known.
    pub root: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct CollectOptions {
    pub target: Target,
    /// The node's filesystem root (resolver files): `/` normally, a directory in tests.
    pub root: PathBuf,
    /// Where procfs is mounted.
    pub proc_root: PathBuf,
    pub processes: ProcessScope,
    /// Containers named by the caller, collected besides those found through `processes`.
    pub containers: Vec<Container>,
    /// Counter samples per namespace (2 gives deltas; 1 for a quick snapshot).
    pub samples: u32,
    /// Time between the first and the last sample.
    pub interval: Duration,
    pub conntrack_limits: SummaryLimits,
    /// Lines of the conntrack table kept verbatim in the bundle (the rest is only summarised).
    pub conntrack_head_lines: usize,
    /// Deadline of each command.
    pub command_timeout: Duration,
    /// Query each nameserver (the only active step); `None` = passive.
    pub probe: Option<ProbeOptions>,
    /// Most distinct executables inspected for Go build info per root.
    pub max_binaries_per_root: usize,
}

impl Default for CollectOptions {
    fn default() -> Self {
        CollectOptions {
            target: Target::Host,
            root: PathBuf::from("/"),
            proc_root: PathBuf::from("/proc"),
            processes: ProcessScope::All,
            containers: Vec::new(),
            samples: 2,
            interval: Duration::from_secs(3),
            conntrack_limits: SummaryLimits::default(),
            conntrack_head_lines: 200,
            command_timeout: Duration::from_secs(120),
            probe: None,
            max_binaries_per_root: 64,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    #[error("cannot open the target network namespace {path}: {source} (hint: run as root; check the path)")]
    Target {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read the node root {path}: {source}")]
    Root {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open the network namespace {path} of container {name}: {source}")]
    Container {
        name: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot list processes in {path}: {source} (hint: is procfs mounted there?)")]
    Proc {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What a collection is building: artifacts and their manifest entries.
#[derive(Default)]
struct Sink {
    artifacts: Artifacts,
    entries: Vec<ArtifactEntry>,
}

impl Sink {
    fn ok(&mut self, path: String, source: &str, bytes: Vec<u8>) {
        self.entries.push(ArtifactEntry {
            path: path.clone(),
            status: ArtifactStatus::Ok,
            source: source.into(),
            error: None,
            duration_ms: None,
        });
        self.artifacts.insert(path, bytes);
    }

    fn absent(&mut self, path: String, source: &str) {
        self.entries.push(ArtifactEntry {
            path,
            status: ArtifactStatus::Absent,
            source: source.into(),
            error: None,
            duration_ms: None,
        });
    }

    fn failed(&mut self, path: String, source: &str, error: String) {
        self.entries.push(ArtifactEntry {
            path,
            status: ArtifactStatus::Failed,
            source: source.into(),
            error: Some(error),
            duration_ms: None,
        });
    }

    /// Records how long the last entry took.
    fn took(&mut self, since: Instant) {
        if let Some(e) = self.entries.last_mut() {
            e.duration_ms = Some(since.elapsed().as_millis() as u64);
        }
    }

    fn file(&mut self, path: String, file: &Path) {
        let src = file.display().to_string();
        match std::fs::read(file) {
            Ok(b) => self.ok(path, &src, b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => self.absent(path, &src),
            Err(e) => self.failed(path, &src, e.to_string()),
        }
    }

    fn command(&mut self, path: String, argv: &[&str], timeout: Duration) {
        let src = argv.join(" ");
        let t0 = Instant::now();
        match run_text(argv, timeout) {
            Ok(t) => self.ok(path, &src, t.into_bytes()),
            Err(e) => self.failed(path, &src, e.to_string()),
        }
        self.took(t0);
    }

    fn merge(&mut self, other: Sink) {
        self.artifacts.extend(other.artifacts);
        self.entries.extend(other.entries);
    }
}

/// The pods of the node's container runtime with their addresses, read-only: `crictl pods -q`, then
/// `crictl inspectp -o json` of those sandboxes. A node without crictl records the artifact absent.
fn collect_pods(sink: &mut Sink, crictl: &str) {
    const SOURCE: &str = "crictl pods -q; crictl inspectp -o json ID...";
    let timeout = Duration::from_secs(10);
    let t0 = Instant::now();
    match run_text(&[crictl, "pods", "-q"], timeout) {
        Err(RunError::NotFound(_)) => sink.absent(paths::K8S_PODS.into(), SOURCE),
        Err(e) => sink.failed(paths::K8S_PODS.into(), SOURCE, e.to_string()),
        Ok(ids) => {
            let ids: Vec<&str> = ids.split_whitespace().collect();
            if ids.is_empty() {
                sink.ok(paths::K8S_PODS.into(), SOURCE, Vec::new());
            } else {
                let mut argv = vec![crictl, "inspectp", "-o", "json"];
                argv.extend(ids);
                match run_text(&argv, timeout) {
                    Ok(t) => sink.ok(paths::K8S_PODS.into(), SOURCE, t.into_bytes()),
                    Err(e) => sink.failed(paths::K8S_PODS.into(), SOURCE, e.to_string()),
                }
            }
        }
    }
    sink.took(t0);
}

struct Proc {
    pid: u32,
    comm: String,
    netns: u64,
    root: (u64, u64),
}

fn list_processes(proc_root: &Path, scope: &ProcessScope) -> Result<Vec<Proc>, CollectError> {
    let pids: Vec<u32> = match scope {
        ProcessScope::None => return Ok(Vec::new()),
        ProcessScope::Pids(p) => p.clone(),
        ProcessScope::All => std::fs::read_dir(proc_root)
            .map_err(|source| CollectError::Proc {
                path: proc_root.into(),
                source,
            })?
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect(),
    };
    let mut out = Vec::new();
    for pid in pids {
        let base = proc_root.join(pid.to_string());
        // Processes come and go while we look: a vanished one is simply skipped.
        let (Ok(ns), Ok(root)) = (
            std::fs::metadata(base.join("ns/net")),
            std::fs::metadata(base.join("root")),
        ) else {
            continue;
        };
        // Kernel threads have no executable and no resolver: they are not containers.
        if std::fs::read_link(base.join("exe")).is_err() {
            continue;
        }
        let comm = std::fs::read_to_string(base.join("comm"))
            .unwrap_or_default()
            .trim()
            .to_string();
        out.push(Proc {
            pid,
            comm,
            netns: ns.ino(),
            root: (root.dev(), root.ino()),
        });
    }
    Ok(out)
}

struct NsPlan {
    entry: NamespaceEntry,
    /// `None` = the collector's own namespace.
    path: Option<PathBuf>,
}

struct RootPlan {
    entry: RootEntry,
    path: PathBuf,
}

/// Collects the live node's facts (with two counter samples `interval` apart by default).
pub fn collect_live(opts: &CollectOptions) -> Result<NodeFacts, CollectError> {
    let started = SystemTime::now();
    let (node_path, node_inode) = match &opts.target {
        Target::Host => (
            None,
            std::fs::metadata(opts.proc_root.join("self/ns/net"))
                .map(|m| m.ino())
                .ok(),
        ),
        Target::Netns(p) => {
            let m = std::fs::metadata(p).map_err(|source| CollectError::Target {
                path: p.clone(),
                source,
            })?;
            std::fs::File::open(p).map_err(|source| CollectError::Target {
                path: p.clone(),
                source,
            })?;
            (Some(p.clone()), Some(m.ino()))
        }
    };
    let root_meta = std::fs::metadata(&opts.root).map_err(|source| CollectError::Root {
        path: opts.root.clone(),
        source,
    })?;
    let node_root_id = (root_meta.dev(), root_meta.ino());
    let procs = list_processes(&opts.proc_root, &opts.processes)?;

    // Namespaces: the node's first, then one per distinct inode, entered through one of its processes.
    let mut namespaces = vec![NsPlan {
        entry: NamespaceEntry {
            id: "node".into(),
            inode: node_inode,
            is_node: true,
            pids: vec![],
            comms: vec![],
        },
        path: node_path.clone(),
    }];
    let mut roots = vec![RootPlan {
        entry: RootEntry {
            id: "node".into(),
            is_node: true,
            netns: Some("node".into()),
            pids: vec![],
            comms: vec![],
            path: opts.root.display().to_string(),
        },
        path: opts.root.clone(),
    }];
    let mut root_index: BTreeMap<(u64, u64), usize> = BTreeMap::new();
    root_index.insert(node_root_id, 0);
    let mut ns_index: BTreeMap<u64, usize> = BTreeMap::new();
    if let Some(i) = node_inode {
        ns_index.insert(i, 0);
    }
    for p in &procs {
        let ni = *ns_index.entry(p.netns).or_insert_with(|| {
            namespaces.push(NsPlan {
                entry: NamespaceEntry {
                    id: format!("netns-{}", p.netns),
                    inode: Some(p.netns),
                    is_node: false,
                    pids: vec![],
                    comms: vec![],
                },
                path: Some(opts.proc_root.join(p.pid.to_string()).join("ns/net")),
            });
            namespaces.len() - 1
        });
        let e = &mut namespaces[ni].entry;
        if e.pids.len() < 16 {
            e.pids.push(p.pid);
            if !e.comms.contains(&p.comm) {
                e.comms.push(p.comm.clone());
            }
        }
        let ns_id = namespaces[ni].entry.id.clone();
        let ri = *root_index.entry(p.root).or_insert_with(|| {
            let path = opts.proc_root.join(p.pid.to_string()).join("root");
            roots.push(RootPlan {
                entry: RootEntry {
                    id: format!("root-{}", p.pid),
                    is_node: false,
                    netns: Some(ns_id.clone()),
                    pids: vec![],
                    comms: vec![],
                    path: path.display().to_string(),
                },
                path,
            });
            roots.len() - 1
        });
        let e = &mut roots[ri].entry;
        if e.pids.len() < opts.max_binaries_per_root {
            e.pids.push(p.pid);
            if !e.comms.contains(&p.comm) {
                e.comms.push(p.comm.clone());
            }
        }
    }

    for c in &opts.containers {
        let ns_id = match &c.netns {
            None => None,
            Some(path) => {
                let ino = std::fs::metadata(path)
                    .map_err(|source| CollectError::Container {
                        name: c.name.clone(),
                        path: path.clone(),
                        source,
                    })?
                    .ino();
                let ni = *ns_index.entry(ino).or_insert_with(|| {
                    namespaces.push(NsPlan {
                        entry: NamespaceEntry {
                            id: format!("netns-{ino}"),
                            inode: Some(ino),
                            is_node: false,
                            pids: vec![],
                            comms: vec![],
                        },
                        path: Some(path.clone()),
                    });
                    namespaces.len() - 1
                });
                let e = &mut namespaces[ni].entry;
                if !e.comms.contains(&c.name) {
                    e.comms.push(c.name.clone());
                }
                Some(e.id.clone())
            }
        };
        if let Some(root) = &c.root {
            roots.push(RootPlan {
                entry: RootEntry {
                    id: format!("root-{}", c.name.replace('/', "_")),
                    is_node: false,
                    netns: ns_id.or_else(|| Some("node".into())),
                    pids: vec![],
                    comms: vec![c.name.clone()],
                    path: root.display().to_string(),
                },
                path: root.clone(),
            });
        }
    }

    let mut sink = Sink::default();
    let sys = |rel: &str| opts.proc_root.join("sys").join(rel);
    sink.file(paths::KERNEL.into(), &sys("kernel/osrelease"));
    sink.file(paths::HOSTNAME.into(), &sys("kernel/hostname"));
    sink.file(paths::MODULES.into(), &opts.proc_root.join("modules"));
    kernel_log_overflow(&mut sink, &opts.proc_root);
    if matches!(opts.target, Target::Host) {
        collect_pods(&mut sink, "crictl");
    }

    // Counters first, then the slow dumps, then the second sample: the dumps fill the interval.
    let t0 = Instant::now();
    let mut samples = Vec::new();
    let nsamples = opts.samples.max(1);
    for ns in &namespaces {
        let (s, at) = sample(opts, ns, 1, t0);
        sink.merge(s);
        samples.push(SampleEntry {
            index: 1,
            offset_ms: at,
            netns: ns.entry.id.clone(),
        });
    }
    // Namespaces are independent and their dumps are kernel time: read them side by side, merged in
    // plan order so the bundle does not depend on which finished first.
    for s in parallel_map(&namespaces, |ns| collect_static(opts, ns)) {
        sink.merge(s);
    }
    for idx in 2..=nsamples {
        let due = opts
            .interval
            .mul_f64((idx - 1) as f64 / (nsamples - 1) as f64);
        let elapsed = t0.elapsed();
        if due > elapsed {
            std::thread::sleep(due - elapsed);
        }
        for ns in &namespaces {
            let (s, at) = sample(opts, ns, idx, t0);
            sink.merge(s);
            samples.push(SampleEntry {
                index: idx,
                offset_ms: at,
                netns: ns.entry.id.clone(),
            });
        }
    }
    // Offsets are relative to each namespace's own first sample.
    for ns in &namespaces {
        let first = samples
            .iter()
            .find(|s| s.netns == ns.entry.id && s.index == 1)
            .map(|s| s.offset_ms)
            .unwrap_or(0);
        for s in samples.iter_mut().filter(|s| s.netns == ns.entry.id) {
            s.offset_ms = s.offset_ms.saturating_sub(first);
        }
    }

    for r in &roots {
        sink.merge(collect_root(opts, r));
    }

    let kernel = sink
        .artifacts
        .get(paths::KERNEL)
        .map(|b| String::from_utf8_lossy(b).trim().to_string());
    let hostname = sink
        .artifacts
        .get(paths::HOSTNAME)
        .map(|b| String::from_utf8_lossy(b).trim().to_string());
    let unix_ms = started
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let manifest = Manifest {
        schema: BUNDLE_SCHEMA.into(),
        tool: format!("netsleuth-node {}", env!("CARGO_PKG_VERSION")),
        collected_at: netsleuth_core::finding::format_ts(unix_ms * 1_000_000),
        collected_at_unix_ms: unix_ms,
        hostname,
        kernel,
        target: match &opts.target {
            Target::Host => "host".into(),
            Target::Netns(p) => format!("netns {}", p.display()),
        },
        namespaces: namespaces.iter().map(|n| n.entry.clone()).collect(),
        roots: roots.iter().map(|r| r.entry.clone()).collect(),
        samples,
        artifacts: sink.entries,
    };
    let mut facts = NodeFacts::from_artifacts(manifest, sink.artifacts);
    for (f, plan) in facts.namespaces.iter_mut().zip(namespaces.iter()) {
        f.live_path = plan
            .path
            .clone()
            .or_else(|| Some(opts.proc_root.join("self/ns/net")));
    }
    if let Some(p) = &opts.probe {
        let results = probe_nameservers(&facts, p);
        attach_probes(&mut facts, results);
    }
    Ok(facts)
}

/// `f` over `items` on up to as many threads as the machine has cores (at most 4), results in order.
fn parallel_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 4)
        .min(items.len().max(1));
    let next = std::sync::atomic::AtomicUsize::new(0);
    let slots: Vec<std::sync::Mutex<Option<R>>> =
        items.iter().map(|_| std::sync::Mutex::new(None)).collect();
    std::thread::scope(|sc| {
        for _ in 0..workers {
            sc.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(item) = items.get(i) else { break };
                let r = f(item);
                if let Ok(mut slot) = slots[i].lock() {
                    *slot = Some(r);
                }
            });
        }
    });
    slots
        .into_iter()
        .filter_map(|m| m.into_inner().ok().flatten())
        .collect()
}

/// Reads one counter sample of a namespace; returns its artifacts and when it was taken (ms since `t0`).
fn sample(opts: &CollectOptions, ns: &NsPlan, index: u32, t0: Instant) -> (Sink, u64) {
    let pre = format!("netns/{}/sample-{index}", ns.entry.id);
    let proc_net = opts.proc_root.join("thread-self/net");
    let res = in_netns(ns.path.as_deref(), || {
        let mut s = Sink::default();
        s.file(
            format!("{pre}/{}", paths::NETSTAT),
            &proc_net.join("netstat"),
        );
        s.file(format!("{pre}/{}", paths::SNMP), &proc_net.join("snmp"));
        s.file(
            format!("{pre}/{}", paths::RT_CACHE),
            &proc_net.join("stat/rt_cache"),
        );
        s.file(
            format!("{pre}/{}", paths::CT_STAT),
            &proc_net.join("stat/nf_conntrack"),
        );
        // The neighbour tables are the host's: only the initial namespace has these (absent elsewhere).
        s.file(
            format!("{pre}/{}", paths::ARP_CACHE),
            &proc_net.join("stat/arp_cache"),
        );
        s.file(
            format!("{pre}/{}", paths::NDISC_CACHE),
            &proc_net.join("stat/ndisc_cache"),
        );
        s.command(
            format!("{pre}/{}", paths::CT_S),
            &["conntrack", "-S"],
            opts.command_timeout,
        );
        s
    });
    let off = t0.elapsed().as_millis() as u64;
    match res {
        Ok(s) => (s, off),
        Err(e) => {
            let mut s = Sink::default();
            s.failed(format!("{pre}/{}", paths::NETSTAT), "setns", e);
            (s, off)
        }
    }
}

/// Kernel log records read at most (the ring holds a few thousand; this bounds a hostile one).
const KMSG_MAX_RECORDS: usize = 200_000;
/// Overflow lines kept verbatim (the rest are counted).
const KMSG_KEPT_LINES: usize = 8;

/// The kernel log's "neighbour table overflow" lines, read from `/dev/kmsg` (beside `proc_root`)
/// without blocking and without consuming anything. An unreadable log (no CAP_SYSLOG, dmesg_restrict,
/// a container) is recorded absent with the reason: a blind spot of the neighbour-table check, not a
/// failed collection.
fn kernel_log_overflow(sink: &mut Sink, proc_root: &Path) {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let kmsg = proc_root.parent().unwrap_or(Path::new("")).join("dev/kmsg");
    let src = kmsg.display().to_string();
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&kmsg);
    let mut f = match file {
        Ok(f) => f,
        Err(e) => {
            sink.entries.push(ArtifactEntry {
                path: paths::KERNEL_LOG_NEIGH.into(),
                status: ArtifactStatus::Absent,
                source: src,
                error: Some(format!("kernel log not readable: {e}")),
                duration_ms: None,
            });
            return;
        }
    };
    let mut count = 0u64;
    let mut kept: Vec<String> = Vec::new();
    let mut buf = vec![0u8; 8192];
    for _ in 0..KMSG_MAX_RECORDS {
        match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                // /dev/kmsg gives one record per read ("prio,seq,usec,flags;message", then
                // " KEY=value" continuation lines); a plain file gives many lines at once.
                let text = String::from_utf8_lossy(&buf[..n]);
                for line in text.lines().filter(|l| !l.starts_with(' ')) {
                    let msg = line.split_once(';').map(|x| x.1).unwrap_or(line).trim();
                    if crate::parse::neigh::is_overflow_line(msg) {
                        count += 1;
                        if kept.len() == KMSG_KEPT_LINES {
                            kept.remove(0);
                        }
                        kept.push(msg.to_string());
                    }
                }
            }
            // A record overwritten while reading: the next read goes on from the oldest left.
            Err(e) if e.raw_os_error() == Some(libc::EPIPE) => continue,
            // EAGAIN: the end of the log.
            Err(_) => break,
        }
    }
    let mut text = format!("count {count}\n");
    for l in kept {
        text.push_str(&l);
        text.push('\n');
    }
    sink.ok(paths::KERNEL_LOG_NEIGH.into(), &src, text.into_bytes());
}

/// Walks `/proc/sys/net` as this thread's namespace sees it, into `sysctl -a` form.
fn read_sysctls(proc_root: &Path) -> String {
    let base = proc_root.join("sys");
    let mut out = Vec::new();
    let mut stack = vec![base.join("net")];
    while let Some(dir) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                // Per-device neighbour tables are thousands of files that no detector reads.
                let rel = p
                    .strip_prefix(&base)
                    .unwrap_or(&p)
                    .to_string_lossy()
                    .into_owned();
                if (rel.starts_with("net/ipv4/neigh/") || rel.starts_with("net/ipv6/neigh/"))
                    && !rel.ends_with("/default")
                {
                    continue;
                }
                stack.push(p);
            } else if let Ok(v) = std::fs::read_to_string(&p) {
                let key = p
                    .strip_prefix(&base)
                    .unwrap_or(&p)
                    .to_string_lossy()
                    .replace('/', ".");
                out.push(format!(
                    "{key} = {}",
                    v.split_whitespace().collect::<Vec<_>>().join("\t")
                ));
            }
        }
    }
    out.sort();
    out.join("\n") + "\n"
}

fn collect_static(opts: &CollectOptions, ns: &NsPlan) -> Sink {
    let pre = format!("netns/{}", ns.entry.id);
    let t = opts.command_timeout;
    let proc_net = opts.proc_root.join("thread-self/net");
    // The conntrack dump and the rule dumps are the slow parts (kernel time, ~1 s each on a busy
    // node): the table is streamed on its own thread while the rest is read.
    let (ct, res) = std::thread::scope(|sc| {
        let ct = sc.spawn(|| {
            in_netns(ns.path.as_deref(), || {
                let mut s = Sink::default();
                let t0 = Instant::now();
                collect_conntrack(opts, &pre, &proc_net, &mut s);
                s.took(t0);
                s
            })
        });
        let res = in_netns(ns.path.as_deref(), || {
            collect_static_rest(opts, &pre, &proc_net, t)
        });
        (ct.join(), res)
    });
    let mut sink = match ct {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            let mut s = Sink::default();
            s.failed(format!("{pre}/{}", paths::CONNTRACK_SUMMARY), "setns", e);
            s
        }
        Err(_) => {
            let mut s = Sink::default();
            s.failed(
                format!("{pre}/{}", paths::CONNTRACK_SUMMARY),
                "ctnetlink dump",
                "conntrack thread panicked".into(),
            );
            s
        }
    };
    sink.merge(res.unwrap_or_else(|e| {
        let mut s = Sink::default();
        s.failed(format!("{pre}/{}", paths::SYSCTL), "setns", e);
        s
    }));
    sink
}

/// The iptables rules of `family` (2 or 10) in iptables-save form, into `path`: iptables-nft tables read
/// over netlink ([`nl_tables::xtables`]); a table holding a rule the reader cannot write back exactly is
/// taken from `SAVE-nft-save -t TABLE` instead. `Ok(false)` when nf_tables holds no iptables-nft table.
fn collect_xtables_nft(family: u8, save: &str, path: String, t: Duration, s: &mut Sink) -> bool {
    let t0 = Instant::now();
    let Ok(dump) = nl_tables::xtables(family) else {
        return false;
    };
    if dump.tables.is_empty() {
        return false;
    }
    let mut text = format!(
        "# Generated by netsleuth from nf_tables netlink ({save}-nft layout, {save}-save format)\n"
    );
    let mut notes = Vec::new();
    for (table, r) in &dump.tables {
        if r.unrendered.is_empty() {
            text.push_str(&r.text);
            continue;
        }
        let u = &r.unrendered[0];
        let why = format!(
            "{table}: {} rule(s) not read natively (first: {} handle {}: {})",
            r.unrendered.len(),
            u.chain,
            u.handle,
            u.reason
        );
        let nft_save = format!("{save}-nft-save");
        let plain_save = format!("{save}-save");
        let got = run_text(&[&nft_save, "-t", table], t)
            .or_else(|_| run_text(&[&plain_save, "-t", table], t));
        match got {
            Ok(out) => {
                for l in out.lines().filter(|l| !l.starts_with('#')) {
                    text.push_str(l);
                    text.push('\n');
                }
                notes.push(format!("{why}, so taken from {save}-save -t {table}"));
            }
            Err(e) => {
                text.push_str(&r.text);
                notes.push(format!(
                    "{why}; {save}-save -t {table} failed too ({e}): those rules are missing"
                ));
            }
        }
    }
    let mut source = format!("nf_tables netlink, per-chain dumps ({save}-nft tables)");
    if dump.unstable {
        source.push_str("; the ruleset changed during every read attempt: may mix two versions");
    }
    if dump.damaged > 0 {
        source.push_str(&format!("; {} damaged message(s) skipped", dump.damaged));
    }
    for n in notes {
        source.push_str("; ");
        source.push_str(&n);
    }
    s.ok(path, &source, text.into_bytes());
    s.took(t0);
    true
}

fn collect_static_rest(opts: &CollectOptions, pre: &str, proc_net: &Path, t: Duration) -> Sink {
    let mut s = Sink::default();
    let t0 = Instant::now();
    s.ok(
        format!("{pre}/{}", paths::SYSCTL),
        "/proc/sys/net",
        read_sysctls(&opts.proc_root).into_bytes(),
    );
    s.took(t0);
    // A node can hold rules in both backends (kube-proxy ships its own iptables and picks one).
    let legacy_tables = std::fs::read_to_string(proc_net.join("ip_tables_names"))
        .map(|t| !t.trim().is_empty())
        .unwrap_or(false);
    if collect_xtables_nft(
        2,
        "iptables",
        format!("{pre}/{}", paths::IPTABLES),
        t,
        &mut s,
    ) {
        if legacy_tables {
            match run_text(&["iptables-legacy-save"], t) {
                Ok(text) => s.ok(
                    format!("{pre}/{}", paths::IPTABLES_LEGACY),
                    "iptables-legacy-save",
                    text.into_bytes(),
                ),
                Err(_) => s.command(
                    format!("{pre}/{}", paths::IPTABLES_LEGACY),
                    &["iptables-save"],
                    t,
                ),
            }
        }
    } else {
        s.command(format!("{pre}/{}", paths::IPTABLES), &["iptables-save"], t);
        // When the system's iptables-save is the nf_tables one and x_tables holds tables too, dump those.
        let save_is_nft = legacy_tables
            && run_text(&["iptables-save", "--version"], t)
                .map(|v| v.contains("nf_tables"))
                .unwrap_or(false);
        if legacy_tables && save_is_nft {
            s.command(
                format!("{pre}/{}", paths::IPTABLES_LEGACY),
                &["iptables-legacy-save"],
                t,
            );
        }
    }
    if !collect_xtables_nft(
        10,
        "ip6tables",
        format!("{pre}/{}", paths::IP6TABLES),
        t,
        &mut s,
    ) {
        s.command(
            format!("{pre}/{}", paths::IP6TABLES),
            &["ip6tables-save"],
            t,
        );
    }
    let t0 = Instant::now();
    collect_nft(pre, t, &mut s);
    s.took(t0);
    if proc_net.join("ip_vs").exists() {
        match run_text(&["ipvsadm", "-Ln"], t) {
            Ok(text) => s.ok(
                format!("{pre}/{}", paths::IPVS),
                "ipvsadm -Ln",
                text.into_bytes(),
            ),
            Err(_) => s.file(format!("{pre}/{}", paths::IPVS), &proc_net.join("ip_vs")),
        }
    }
    s.command(
        format!("{pre}/{}", paths::ADDR),
        &["ip", "-j", "-d", "addr", "show"],
        t,
    );
    collect_overlay_offloads(pre, t, &mut s);
    match (
        run_text(&["ip", "-4", "-j", "route", "show", "table", "all"], t),
        run_text(&["ip", "-6", "-j", "route", "show", "table", "all"], t),
    ) {
        (Ok(a), Ok(b)) => s.ok(
            format!("{pre}/{}", paths::ROUTE),
            "ip -4/-6 -j route show table all",
            format!("{}\n{}", a.trim(), b.trim()).into_bytes(),
        ),
        (Err(e), _) | (_, Err(e)) => s.failed(
            format!("{pre}/{}", paths::ROUTE),
            "ip -j route show table all",
            e.to_string(),
        ),
    }
    match (
        run_text(&["ip", "-4", "-j", "rule"], t),
        run_text(&["ip", "-6", "-j", "rule"], t),
    ) {
        (Ok(a), Ok(b)) => s.ok(
            format!("{pre}/{}", paths::RULE),
            "ip -4/-6 -j rule",
            format!("{}\n{}", a.trim(), b.trim()).into_bytes(),
        ),
        (Err(e), _) | (_, Err(e)) => s.failed(
            format!("{pre}/{}", paths::RULE),
            "ip -j rule",
            e.to_string(),
        ),
    }
    s.file(format!("{pre}/{}", paths::PROC_ARP), &proc_net.join("arp"));
    s.command(
        format!("{pre}/{}", paths::IP_NEIGH),
        &["ip", "-j", "neigh", "show"],
        t,
    );
    s.command(format!("{pre}/{}", paths::SS), &["ss", "-tanoip"], t);
    // Without ss, the kernel's own socket tables (no backlog, no idle times, but queues and timers).
    if !s.artifacts.contains_key(&format!("{pre}/{}", paths::SS)) {
        s.file(format!("{pre}/{}", paths::PROC_TCP), &proc_net.join("tcp"));
        s.file(
            format!("{pre}/{}", paths::PROC_TCP6),
            &proc_net.join("tcp6"),
        );
    }
    s
}

/// `ethtool -k` of each overlay device (vxlan, geneve) the namespace's `ip -d addr` lists: whether the
/// device offloads its tx checksum (the VXLAN checksum bug needs it). Read-only (`-k` only shows);
/// a node without ethtool records the artifact absent, and nothing is recorded without an overlay.
fn collect_overlay_offloads(pre: &str, t: Duration, s: &mut Sink) {
    collect_overlay_offloads_with("ethtool", pre, t, s)
}

/// [`collect_overlay_offloads`] with the tool named (a test names one that is not installed).
fn collect_overlay_offloads_with(ethtool: &str, pre: &str, t: Duration, s: &mut Sink) {
    let path = format!("{pre}/{}", paths::ETHTOOL_FEATURES);
    let Some(addr) = s.artifacts.get(&format!("{pre}/{}", paths::ADDR)) else {
        return;
    };
    let links = crate::parse::ip::parse_addr_json(&String::from_utf8_lossy(addr)).value;
    let overlays: Vec<&str> = links
        .iter()
        .filter(|l| matches!(l.kind.as_deref(), Some("vxlan" | "geneve")))
        .map(|l| l.name.as_str())
        .collect();
    if overlays.is_empty() {
        return;
    }
    let t0 = Instant::now();
    let mut text = String::new();
    let mut failures = Vec::new();
    for dev in &overlays {
        match run_text(&[ethtool, "-k", dev], t) {
            Ok(out) => text.push_str(&out),
            Err(RunError::NotFound(_)) => {
                s.absent(path, "ethtool -k (not installed)");
                return;
            }
            Err(e) => failures.push(format!("{dev}: {e}")),
        }
    }
    let source = format!("ethtool -k {}", overlays.join(", "));
    if text.is_empty() {
        s.failed(path, &source, failures.join("; "));
    } else {
        s.ok(path, &source, text.into_bytes());
    }
    s.took(t0);
}

/// iptables-nft keeps its rules in nf_tables tables named like the iptables tables; read as iptables
/// rules (netlink reader or iptables-save) they keep all their options, while `nft -j` shows them as
/// opaque `xt` expressions and, for a kube-proxy node, as hundreds of megabytes of JSON. So each table
/// is listed on its own, and the tables already read as iptables rules are left out (the manifest
/// says which).
fn collect_nft(pre: &str, t: Duration, s: &mut Sink) {
    let path = format!("{pre}/{}", paths::NFT);
    let tables = match nl_tables::list_tables() {
        Ok(t) => t,
        // Without nf_tables netlink access, ask nft (slower: it loads its whole cache first).
        Err(_) => match run_text(&["nft", "-j", "list", "tables"], t) {
            Ok(text) => crate::parse::nft::parse_nft_json(&text).value.tables,
            Err(e) => {
                s.failed(path, "nft -j list tables", e.to_string());
                return;
            }
        },
    };
    let dumped_by_iptables = |family: &str, name: &str| -> bool {
        let file = match family {
            "ip" => paths::IPTABLES,
            "ip6" => paths::IP6TABLES,
            _ => return false,
        };
        let Some(save) = s.artifacts.get(&format!("{pre}/{file}")) else {
            return false;
        };
        let save = String::from_utf8_lossy(save);
        // iptables-nft refuses tables holding native nft rules ("incompatible"): those are dumped by nft.
        save.lines().any(|l| l.trim() == format!("*{name}")) && !save.contains("incompatible")
    };
    let mut docs = Vec::new();
    let mut skipped = Vec::new();
    let mut errors = Vec::new();
    for (family, name) in &tables {
        if matches!(
            name.as_str(),
            "filter" | "nat" | "mangle" | "raw" | "security"
        ) && dumped_by_iptables(family, name)
        {
            skipped.push(format!("{family} {name}"));
            continue;
        }
        match run_text(&["nft", "-j", "list", "table", family, name], t) {
            Ok(doc) => docs.push(doc.trim().to_string()),
            Err(e) => errors.push(format!("{family} {name}: {e}")),
        }
    }
    let mut source = "nft -j list table (each table)".to_string();
    if !skipped.is_empty() {
        source.push_str(&format!("; read as iptables rules: {}", skipped.join(", ")));
    }
    if errors.is_empty() {
        s.ok(path, &source, (docs.join("\n") + "\n").into_bytes());
    } else {
        s.failed(path, &source, errors.join("; "));
    }
}

/// Streams the conntrack table through the summariser: only the summary and the first lines are kept.
fn collect_conntrack(opts: &CollectOptions, pre: &str, proc_net: &Path, s: &mut Sink) {
    // ctnetlink first (fast, binary); then the conntrack tool; then the procfs table.
    let mut lines = Vec::new();
    let mut z = ConntrackSummarizer::new(opts.conntrack_limits);
    // The kernel keeps one hash table for all namespaces: a dump walks every entry of the node to find
    // this namespace's. Most pods' namespaces hold none (conntrack is hooked there only when rules
    // need it), so a zero count (per namespace) saves a walk of the whole table per pod.
    let count =
        std::fs::read_to_string(opts.proc_root.join("sys/net/netfilter/nf_conntrack_count"))
            .ok()
            .and_then(|c| c.trim().parse::<u64>().ok());
    if count == Some(0) {
        let source = "nf_conntrack_count = 0 (no dump needed)";
        s.ok(
            format!("{pre}/{}", paths::CONNTRACK_HEAD),
            source,
            Vec::new(),
        );
        s.ok(
            format!("{pre}/{}", paths::CONNTRACK_SUMMARY),
            source,
            serde_json::to_vec_pretty(&z.finish()).unwrap_or_default(),
        );
        return;
    }
    let (source, head) = match nl_conntrack::dump(&mut z, opts.conntrack_head_lines, &mut lines) {
        Ok(damaged) => {
            let mut src = "ctnetlink dump".to_string();
            if damaged > 0 {
                src.push_str(&format!(" ({damaged} damaged message(s) skipped)"));
            }
            (src, lines.join("\n") + "\n")
        }
        Err(nl_err) => {
            z = ConntrackSummarizer::new(opts.conntrack_limits);
            let mut head = String::new();
            let mut kept = 0usize;
            let mut feed = |l: &str| {
                if kept < opts.conntrack_head_lines {
                    head.push_str(l);
                    head.push('\n');
                    kept += 1;
                }
                z.feed_line(l);
            };
            let source = match run_lines(&["conntrack", "-L"], opts.command_timeout, &mut feed) {
                Ok(()) => format!("conntrack -L (ctnetlink dump failed: {nl_err})"),
                Err(e) => {
                    // The procfs table exists when CONFIG_NF_CONNTRACK_PROCFS is on.
                    let p = proc_net.join("nf_conntrack");
                    match std::fs::File::open(&p) {
                        Ok(f) => {
                            use std::io::BufRead;
                            for l in std::io::BufReader::new(f).lines().map_while(Result::ok) {
                                feed(&l);
                            }
                            p.display().to_string()
                        }
                        Err(_) => {
                            s.failed(
                                format!("{pre}/{}", paths::CONNTRACK_SUMMARY),
                                "ctnetlink dump, conntrack -L, /proc/net/nf_conntrack",
                                format!("ctnetlink: {nl_err}; conntrack -L: {e}; no procfs table (hint: is nf_conntrack loaded?)"),
                            );
                            return;
                        }
                    }
                }
            };
            (source, head)
        }
    };
    let summary = z.finish();
    s.ok(
        format!("{pre}/{}", paths::CONNTRACK_HEAD),
        &source,
        head.into_bytes(),
    );
    s.ok(
        format!("{pre}/{}", paths::CONNTRACK_SUMMARY),
        &format!("{source} (streamed summary)"),
        serde_json::to_vec_pretty(&summary).unwrap_or_default(),
    );
}

fn collect_root(opts: &CollectOptions, r: &RootPlan) -> Sink {
    let mut s = Sink::default();
    let pre = format!("root/{}", r.entry.id);
    for rel in paths::ROOT_FILES {
        let src = format!("{}/{rel}", r.path.display());
        match read_in_root(&r.path, rel, 1 << 20) {
            FileRead::Ok(b) => s.ok(format!("{pre}/{rel}"), &src, b),
            FileRead::Absent => s.absent(format!("{pre}/{rel}"), &src),
            FileRead::Failed(e) => s.failed(format!("{pre}/{rel}"), &src, e),
        }
    }
    if let Some(link) = link_in_root(&r.path, "etc/resolv.conf") {
        s.ok(
            format!("{pre}/{}", paths::RESOLV_LINK),
            "readlink etc/resolv.conf",
            link.into_bytes(),
        );
    }
    let programs: Vec<PathBuf> = r
        .entry
        .pids
        .iter()
        .take(8)
        .map(|pid| opts.proc_root.join(pid.to_string()).join("exe"))
        .collect();
    let libc = detect_libc(&r.path, &programs);
    s.ok(
        format!("{pre}/{}", paths::LIBC),
        "libc detection",
        serde_json::to_vec_pretty(&libc).unwrap_or_default(),
    );
    let mut seen = std::collections::BTreeSet::new();
    let mut go = Vec::new();
    for pid in r.entry.pids.iter().take(opts.max_binaries_per_root) {
        let exe = opts.proc_root.join(pid.to_string()).join("exe");
        let Ok(f) = std::fs::File::open(&exe) else {
            continue;
        };
        let Ok(m) = f.metadata() else { continue };
        if !seen.insert((m.dev(), m.ino())) {
            continue;
        }
        if let Some(info) = go_build_info(&f) {
            // The kernel names the executable from our root; show it as the container sees it.
            let host_view = std::fs::read_link(&exe)
                .map(|p| p.display().to_string())
                .unwrap_or_else(|_| exe.display().to_string());
            let path = match std::fs::read_link(&r.path) {
                Ok(root_target) if !r.entry.is_node && root_target != Path::new("/") => host_view
                    .strip_prefix(&*root_target.to_string_lossy())
                    .map(str::to_string)
                    .unwrap_or(host_view),
                _ => host_view,
            };
            go.push(GoBinary {
                path,
                pid: Some(*pid),
                info,
            });
        }
    }
    s.ok(
        format!("{pre}/{}", paths::GO_BINARIES),
        "/proc/PID/exe build info",
        serde_json::to_vec_pretty(&go).unwrap_or_default(),
    );
    s
}

/// Queries every nameserver of every root, from the root's namespace (live facts only: bundle facts have
/// no namespace to enter and give no results).
pub fn probe_nameservers(facts: &NodeFacts, opts: &ProbeOptions) -> Vec<ProbeResult> {
    let mut out = Vec::new();
    for root in &facts.roots {
        let Some(rc) = root.resolv.present() else {
            continue;
        };
        let ns_id = root.netns.clone().unwrap_or_else(|| "node".into());
        let Some(ns) = facts.netns(&ns_id) else {
            continue;
        };
        let Some(path) = ns.live_path.clone() else {
            continue;
        };
        let servers: Vec<String> = rc.nameservers.iter().map(|n| n.addr.clone()).collect();
        let res = in_netns(Some(&path), || {
            servers
                .iter()
                .map(|addr| {
                    let ip = addr.split('%').next().unwrap_or(addr).parse();
                    let (answered, rcode, rtt_ms, attempts, error) = match ip {
                        Ok(ip) => probe_one(ip, opts),
                        Err(_) => (
                            false,
                            None,
                            None,
                            0,
                            Some(format!("not an address: {addr}")),
                        ),
                    };
                    ProbeResult {
                        root: root.id.clone(),
                        netns: ns_id.clone(),
                        nameserver: addr.clone(),
                        answered,
                        rcode,
                        rtt_ms,
                        attempts,
                        error,
                    }
                })
                .collect::<Vec<_>>()
        });
        match res {
            Ok(v) => out.extend(v),
            Err(e) => out.extend(servers.iter().map(|addr| ProbeResult {
                root: root.id.clone(),
                netns: ns_id.clone(),
                nameserver: addr.clone(),
                answered: false,
                rcode: None,
                rtt_ms: None,
                attempts: 0,
                error: Some(format!("not probed: {e}")),
            })),
        }
    }
    out
}

/// Stores probe results in the facts (and as an artifact, so a bundle written afterwards keeps them).
pub fn attach_probes(facts: &mut NodeFacts, results: Vec<ProbeResult>) {
    let bytes = serde_json::to_vec_pretty(&results).unwrap_or_default();
    facts.artifacts.insert(paths::PROBES.into(), bytes);
    facts.manifest.artifacts.push(ArtifactEntry {
        path: paths::PROBES.into(),
        status: ArtifactStatus::Ok,
        source: "DNS probe (. NS) of each nameserver".into(),
        error: None,
        duration_ms: None,
    });
    facts.probes = results;
}

#[cfg(test)]
mod tests {
    #[test]
    fn without_ethtool_the_overlay_offloads_are_absent_not_failed() {
        let mut s = Sink::default();
        let addr = r#"[{"ifindex":5,"ifname":"flannel.1","flags":["UP"],"mtu":1450,"operstate":"UNKNOWN","linkinfo":{"info_kind":"vxlan"},"addr_info":[]}]"#;
        s.ok(
            "netns/node/ip-addr.json".into(),
            "ip",
            addr.as_bytes().to_vec(),
        );
        collect_overlay_offloads_with(
            "netsleuth-test-no-such-ethtool",
            "netns/node",
            Duration::from_secs(1),
            &mut s,
        );
        let e = s.entries.last().expect("an entry for ethtool-k.txt");
        assert_eq!(e.path, "netns/node/ethtool-k.txt");
        assert_eq!(e.status, ArtifactStatus::Absent);
        // No overlay device: nothing is recorded at all.
        let mut s = Sink::default();
        s.ok("netns/node/ip-addr.json".into(), "ip", b"[]".to_vec());
        collect_overlay_offloads_with("ethtool", "netns/node", Duration::from_secs(1), &mut s);
        assert_eq!(s.entries.len(), 1);
    }

    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// The kernel log's overflow lines are counted and the last kept; a log that cannot be read is
    /// recorded absent with the reason (a blind spot), never failed.
    #[test]
    fn kernel_log_overflow_lines_or_the_reason_they_are_unknown() {
        let dir = std::env::temp_dir().join(format!("netsleuth-kmsg-{}", std::process::id()));
        let proc_root = dir.join("proc");
        std::fs::create_dir_all(dir.join("dev")).unwrap();
        std::fs::create_dir_all(&proc_root).unwrap();
        let mut sink = Sink::default();
        kernel_log_overflow(&mut sink, &proc_root);
        assert_eq!(sink.entries[0].status, ArtifactStatus::Absent);
        assert!(sink.entries[0]
            .error
            .as_deref()
            .is_some_and(|e| e.contains("kernel log not readable")));
        assert!(!sink.artifacts.contains_key(paths::KERNEL_LOG_NEIGH));
        std::fs::write(
            dir.join("dev/kmsg"),
            "6,100,5000,-;eth0: link up\n SUBSYSTEM=net\n4,101,6000,-;neighbour: arp_cache: neighbor table overflow!\n4,102,7000,-;neighbour: arp_cache: neighbor table overflow!\n",
        )
        .unwrap();
        let mut sink = Sink::default();
        kernel_log_overflow(&mut sink, &proc_root);
        let text = String::from_utf8(sink.artifacts[paths::KERNEL_LOG_NEIGH].clone()).unwrap();
        assert_eq!(
            text,
            "count 2\nneighbour: arp_cache: neighbor table overflow!\nneighbour: arp_cache: neighbor table overflow!\n"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The pods come from the runtime's own listing, read-only; a node without crictl records the
    /// artifact absent, not failed.
    #[test]
    fn pods_are_recorded_from_crictl() {
        let dir = std::env::temp_dir().join(format!("netsleuth-crictl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fake = dir.join("crictl");
        std::fs::write(
            &fake,
            r#"#!/bin/sh
case "$1" in
  pods) echo abc ;;
  inspectp) echo '{"status":{"metadata":{"name":"p-'"$4"'","namespace":"ns"},"network":{"ip":"10.244.9.3"}}}' ;;
esac
"#,
        )
        .unwrap();
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut sink = Sink::default();
        collect_pods(&mut sink, fake.to_str().unwrap());
        let bytes = sink.artifacts.get(paths::K8S_PODS).expect("recorded");
        let names = netsleuth_core::names::Names::from_json(bytes).unwrap();
        assert_eq!(
            names.name(&"10.244.9.3".parse().unwrap(), None).as_deref(),
            Some("pod ns/p-abc"),
            "{}",
            String::from_utf8_lossy(bytes)
        );
        let mut sink = Sink::default();
        collect_pods(&mut sink, dir.join("no-such-crictl").to_str().unwrap());
        assert!(matches!(sink.entries[0].status, ArtifactStatus::Absent));
        std::fs::remove_dir_all(&dir).ok();
    }
}
