//! Kernel drop reasons from the `skb:kfree_skb` tracepoint in a private tracefs instance (no eBPF
//! needed): the one implementation `netsleuth lab` (counts over a run) and `netsleuth watch` (a stream of
//! events) share. The reason enum differs between kernels, so names are decoded from the event's
//! `format` file at run time.
//!
//! Best effort: the tracepoint is kernel-wide (it carries no namespace), so a busy host adds its own
//! drops; the report says so. If tracefs is not mounted, it is mounted inside a private mount namespace
//! of the monitor's own thread only, so the host's mount table does not change; its mount point, a
//! directory in the temp dir, is removed on every exit path (see `PrivateTracefs`). The instance is
//! removed by `finish`, by `Drop`, and on a signal by [`cleanup_registered`] (the caller's signal path
//! calls it); a SIGKILLed process's instance is removed by the next [`remove_instances`]`(None)`.
//!
//! Read-only towards the host: the instance is netsleuth's own (its buffer size, clock and event are
//! set there, never in the top-level tracefs).

use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Mutex;
use std::thread::JoinHandle;

#[derive(Debug, Clone, Default, Serialize)]
pub struct DropReasons {
    /// Whether the tracepoint could be used; if not, `note` says why.
    pub available: bool,
    pub note: String,
    /// Count per reason name (as the running kernel names it).
    pub by_reason: BTreeMap<String, u64>,
    /// Count per (reason, function where the skb was freed), e.g. `NETFILTER_DROP @ nf_hook_slow`.
    pub by_location: BTreeMap<String, u64>,
    /// Events the ring buffer overwrote (counts are then lower bounds).
    pub overrun: u64,
}

/// One freed packet with its reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DropEvent {
    /// The tracepoint's clock (CLOCK_MONOTONIC in our instance), nanoseconds.
    pub mono_ns: i64,
    /// The reason as this kernel names it (`NETFILTER_DROP`, `IP_LOCAL_SOURCE`).
    pub reason: String,
    /// The function that freed the packet (`nf_hook_slow`).
    pub location: String,
    /// The packet's EtherType (2048 = IPv4), when the line carries it.
    pub protocol: Option<u16>,
}

/// Whose instance: the instance is `netsleuth-<tag>-<pid>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    Lab,
    Watch,
}

impl Owner {
    fn tag(self) -> &'static str {
        match self {
            Owner::Lab => "lab",
            Owner::Watch => "watch",
        }
    }
}

/// Instances and private mount points that exist now, for the signal path.
static REGISTERED: Mutex<(BTreeSet<String>, BTreeSet<PathBuf>)> =
    Mutex::new((BTreeSet::new(), BTreeSet::new()));

fn registered() -> std::sync::MutexGuard<'static, (BTreeSet<String>, BTreeSet<PathBuf>)> {
    REGISTERED.lock().unwrap_or_else(|e| e.into_inner())
}

/// Removes every instance and private mount point of this process that is still registered: the
/// signal path of the lab and of `watch` calls this before the process dies. Safe to call twice.
pub fn cleanup_registered() {
    let (instances, dirs) = {
        let mut r = registered();
        (std::mem::take(&mut r.0), std::mem::take(&mut r.1))
    };
    for i in &instances {
        remove_instances(Some(i));
    }
    // Still mounted in the namespace of a monitor thread that will not get to unmount it (the process
    // is about to die of the signal). Here, in the process's own namespace, it is a plain empty
    // directory; the kernel (≥ 3.18) detaches the other namespace's mount on rmdir.
    for d in &dirs {
        let _ = std::fs::remove_dir(d);
    }
}

/// What the monitor thread hands over once its instance is set up.
struct Opened {
    pipe: File,
    stats: Vec<File>,
    names: BTreeMap<u64, String>,
}

pub struct DropMonitor {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    instance: String,
    pipe: Option<File>,
    stats: Vec<File>,
    names: BTreeMap<u64, String>,
    partial: Vec<u8>,
    totals: DropReasons,
}

impl DropMonitor {
    /// Starts monitoring; returns `Err(reason)` when drop reasons are unavailable here.
    pub fn start(owner: Owner) -> Result<DropMonitor, String> {
        let instance = format!("{INSTANCE_PREFIX}{}-{}", owner.tag(), std::process::id());
        let (ready_tx, ready_rx) = mpsc::channel::<Result<Opened, String>>();
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        // Registered before it exists: a signal between the two must still find it.
        registered().0.insert(instance.clone());
        let name = instance.clone();
        let thread = std::thread::Builder::new()
            .name("netsleuth-dropmon".into())
            .spawn(move || monitor_thread(&name, ready_tx, stop_rx))
            .map_err(|e| {
                registered().0.remove(&instance);
                format!("spawning the monitor thread: {e}")
            })?;
        match ready_rx.recv() {
            Ok(Ok(o)) => Ok(DropMonitor {
                stop: Some(stop_tx),
                thread: Some(thread),
                instance,
                pipe: Some(o.pipe),
                stats: o.stats,
                names: o.names,
                partial: Vec::new(),
                totals: DropReasons {
                    available: true,
                    note: "skb:kfree_skb via a private tracefs instance; kernel-wide (the tracepoint has no namespace), \
                           so host traffic is counted too"
                        .into(),
                    ..Default::default()
                },
            }),
            Ok(Err(why)) => {
                let _ = thread.join();
                registered().0.remove(&instance);
                Err(why)
            }
            Err(_) => {
                let _ = thread.join();
                registered().0.remove(&instance);
                Err("drop monitor thread ended early".into())
            }
        }
    }

    /// The instance's name in tracefs (`netsleuth-watch-<pid>`).
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// The trace pipe, for `poll` (readable when events are waiting).
    pub fn fd(&self) -> Option<RawFd> {
        self.pipe.as_ref().map(|p| p.as_raw_fd())
    }

    /// Reads every event waiting in the instance (never blocks), counts it, hands it to `on_event`.
    pub fn drain(&mut self, mut on_event: impl FnMut(&DropEvent)) {
        let Some(pipe) = self.pipe.as_mut() else {
            return;
        };
        let mut buf = [0u8; 64 << 10];
        loop {
            match pipe.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    self.partial.extend_from_slice(&buf[..n]);
                    while let Some(nl) = self.partial.iter().position(|b| *b == b'\n') {
                        let line: Vec<u8> = self.partial.drain(..=nl).collect();
                        let line = String::from_utf8_lossy(&line);
                        if let Some(ev) = parse_trace_event(line.trim_end(), &self.names) {
                            *self.totals.by_reason.entry(ev.reason.clone()).or_insert(0) += 1;
                            *self
                                .totals
                                .by_location
                                .entry(format!("{} @ {}", ev.reason, ev.location))
                                .or_insert(0) += 1;
                            on_event(&ev);
                        }
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break, // EAGAIN: nothing more now
            }
        }
    }

    /// Events the ring buffer overwrote so far (per-CPU `overrun`, summed).
    pub fn overrun(&self) -> u64 {
        let mut total = 0;
        let mut buf = [0u8; 4096];
        for f in &self.stats {
            if let Ok(n) = f.read_at(&mut buf, 0) {
                let text = String::from_utf8_lossy(&buf[..n]);
                total += text
                    .lines()
                    .filter_map(|l| l.strip_prefix("overrun:"))
                    .filter_map(|v| v.trim().parse::<u64>().ok())
                    .sum::<u64>();
            }
        }
        total
    }

    /// The counts so far (what `finish` returns, without stopping).
    pub fn totals(&self) -> DropReasons {
        DropReasons {
            overrun: self.overrun(),
            ..self.totals.clone()
        }
    }

    /// Reads what is left, removes the instance and returns the counts of the whole run.
    pub fn finish(mut self) -> DropReasons {
        self.drain(|_| {});
        let out = self.totals();
        self.stop_and_join();
        out
    }

    fn stop_and_join(&mut self) {
        // The instance cannot be removed while its files are open (EBUSY): close them first.
        self.pipe = None;
        self.stats.clear();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        // The thread removes the instance and unmounts/removes its private tracefs mount point itself
        // (`PrivateTracefs`), also when it panics: only it can unmount inside its own mount namespace.
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        registered().0.remove(&self.instance);
    }
}

impl Drop for DropMonitor {
    fn drop(&mut self) {
        // An error path that never called finish: the instance must still go.
        self.stop_and_join();
    }
}

fn monitor_thread(
    name: &str,
    ready: mpsc::Sender<Result<Opened, String>>,
    stop: mpsc::Receiver<()>,
) {
    // Held to the end of this function: dropping it unmounts a private tracefs and removes its mount
    // point, on every way out (early returns, the end, a panic's unwinding).
    let tracefs = match Tracefs::find_or_mount() {
        Ok(t) => t,
        Err(why) => {
            let _ = ready.send(Err(why));
            return;
        }
    };
    let root = tracefs.root();
    let instance = root.join("instances").join(name);
    let setup = || -> Result<Opened, String> {
        let event_dir = root.join("events/skb/kfree_skb");
        let format = std::fs::read_to_string(event_dir.join("format")).map_err(|e| {
            format!("tracepoint skb:kfree_skb not available ({e}); needs CONFIG_TRACEPOINTS")
        })?;
        let names = parse_reason_names(&format);
        if !format.contains("reason") {
            return Err(format!(
                "this kernel's skb:kfree_skb has no `reason` field (drop reasons need ≥ {})",
                netsleuth_core::versions::DROP_REASONS
                    .mainline()
                    .unwrap_or("?")
            ));
        }
        // A leftover instance of an earlier run in this pid would hold old events.
        let _ = std::fs::remove_dir(&instance);
        std::fs::create_dir(&instance)
            .map_err(|e| format!("creating tracefs instance {}: {e}", instance.display()))?;
        let _ = std::fs::write(instance.join("buffer_size_kb"), "2048");
        // Our instance's own clock: monotonic, so a watcher can place events on the wall clock.
        let _ = std::fs::write(instance.join("trace_clock"), "mono");
        std::fs::write(instance.join("events/skb/kfree_skb/enable"), "1")
            .map_err(|e| format!("enabling skb:kfree_skb in {}: {e}", instance.display()))?;
        let _ = std::fs::write(instance.join("tracing_on"), "1");
        let pipe = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(instance.join("trace_pipe"))
            .map_err(|e| format!("opening {}/trace_pipe: {e}", instance.display()))?;
        let stats = std::fs::read_dir(instance.join("per_cpu"))
            .map(|d| {
                d.flatten()
                    .filter_map(|c| File::open(c.path().join("stats")).ok())
                    .collect()
            })
            .unwrap_or_default();
        Ok(Opened { pipe, stats, names })
    };
    match setup() {
        Ok(o) => {
            let _ = ready.send(Ok(o));
        }
        Err(why) => {
            let _ = std::fs::remove_dir(&instance);
            let _ = ready.send(Err(why));
            return;
        }
    }
    // Until the owner stops (or is dropped: the sender goes away).
    let _ = stop.recv();
    let _ = std::fs::write(instance.join("events/skb/kfree_skb/enable"), "0");
    // The owner closed its files before stopping us; a reader still draining may hold the pipe a
    // moment longer.
    for _ in 0..50 {
        if std::fs::remove_dir(&instance).is_ok() || !instance.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// The tracefs this thread uses: the host's, or one it mounted in its private mount namespace.
enum Tracefs {
    Host(PathBuf),
    Private(PrivateTracefs),
}

/// A tracefs mounted on `netsleuth-tracefs-<pid>-<n>` in the temp dir, inside the private mount
/// namespace of the thread that mounted it. The directory itself exists on the host (the temp dir is
/// shared), so it must be removed on every exit path: dropping this (on the mounting thread) unmounts
/// and then removes it, and the signal path removes what is still registered ([`cleanup_registered`]).
struct PrivateTracefs {
    dir: PathBuf,
}

impl Drop for PrivateTracefs {
    fn drop(&mut self) {
        // In this thread's namespace the directory is a mount point: rmdir would fail with EBUSY.
        if let Ok(target) = std::ffi::CString::new(self.dir.as_os_str().as_encoded_bytes()) {
            unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
        }
        let _ = std::fs::remove_dir(&self.dir);
        registered().1.remove(&self.dir);
    }
}

impl Tracefs {
    fn root(&self) -> &Path {
        match self {
            Tracefs::Host(p) => p,
            Tracefs::Private(m) => &m.dir,
        }
    }

    /// Finds a mounted tracefs, or mounts one in this thread's private mount namespace.
    fn find_or_mount() -> Result<Tracefs, String> {
        for p in ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"] {
            if Path::new(p).join("instances").is_dir() {
                return Ok(Tracefs::Host(PathBuf::from(p)));
            }
        }
        // Not mounted: unshare the mount namespace of this thread only (CLONE_NEWNS implies CLONE_FS,
        // which a thread may unshare), make it private so nothing propagates back, and mount there.
        unsafe {
            if libc::unshare(libc::CLONE_NEWNS) != 0 {
                return Err(format!(
                    "tracefs is not mounted and unshare(CLONE_NEWNS) failed: {}",
                    std::io::Error::last_os_error()
                ));
            }
            let root = c"/";
            if libc::mount(
                std::ptr::null(),
                root.as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ) != 0
            {
                return Err(format!(
                    "making the private mount namespace private failed: {}",
                    std::io::Error::last_os_error()
                ));
            }
        }
        let dir = new_private_mount_dir();
        // Registered before it exists: a signal between the two must still find it.
        registered().1.insert(dir.clone());
        if let Err(e) = std::fs::create_dir_all(&dir) {
            registered().1.remove(&dir);
            return Err(format!("creating {}: {e}", dir.display()));
        }
        // From here on, dropping the guard removes the directory (and unmounts it once mounted).
        let guard = PrivateTracefs { dir };
        let target = std::ffi::CString::new(guard.dir.as_os_str().as_encoded_bytes())
            .map_err(|e| e.to_string())?;
        let r = unsafe {
            libc::mount(
                c"nodev".as_ptr(),
                target.as_ptr(),
                c"tracefs".as_ptr(),
                0,
                std::ptr::null(),
            )
        };
        if r != 0 {
            return Err(format!(
                "tracefs is not mounted and mounting it privately failed: {} (hint: the kernel needs CONFIG_TRACING)",
                std::io::Error::last_os_error()
            ));
        }
        Ok(Tracefs::Private(guard))
    }
}

/// Prefix of every instance netsleuth makes: `netsleuth-<lab|watch>-<pid>`.
const INSTANCE_PREFIX: &str = "netsleuth-";

/// Removes netsleuth's tracefs instances: `name`, or with `None` every instance (and private mount
/// point) left by a netsleuth process that no longer runs. Runs on its own thread, which may mount tracefs
/// privately, so the caller's mount namespace is untouched. Returns the instances removed.
pub fn remove_instances(name: Option<&str>) -> Vec<String> {
    let all_stale = name.is_none();
    let name = name.map(str::to_string);
    let t = std::thread::spawn(move || {
        let mut removed = Vec::new();
        // Dropped at the end of this thread's work: a private mount is unmounted and its directory
        // removed before the thread ends.
        let Ok(tracefs) = Tracefs::find_or_mount() else {
            return removed;
        };
        let Ok(dir) = std::fs::read_dir(tracefs.root().join("instances")) else {
            return removed;
        };
        for e in dir.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            // `netsleuth-<owner>-<pid>`.
            let Some(pid) = n
                .strip_prefix(INSTANCE_PREFIX)
                .and_then(|p| p.rsplit('-').next())
                .and_then(|p| p.parse::<i32>().ok())
            else {
                continue;
            };
            let wanted = match &name {
                Some(x) => *x == n,
                None => pid != std::process::id() as i32 && unsafe { libc::kill(pid, 0) } != 0,
            };
            if wanted {
                let _ = std::fs::write(e.path().join("events/skb/kfree_skb/enable"), "0");
                if std::fs::remove_dir(e.path()).is_ok() {
                    removed.push(n);
                }
            }
        }
        removed
    });
    let removed = t.join().unwrap_or_default();
    if all_stale {
        if let Ok(dir) = std::fs::read_dir(std::env::temp_dir()) {
            for e in dir.flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                // `<pid>-<n>`, or `<pid>` as earlier versions named it.
                let Some(pid) = n
                    .strip_prefix(MOUNT_DIR_PREFIX)
                    .and_then(|rest| rest.split('-').next())
                    .and_then(|p| p.parse::<i32>().ok())
                else {
                    continue;
                };
                if pid != std::process::id() as i32 && unsafe { libc::kill(pid, 0) } != 0 {
                    let _ = std::fs::remove_dir(e.path());
                }
            }
        }
    }
    removed
}

/// Prefix of the private tracefs mount points in the temp dir: `netsleuth-tracefs-<pid>-<n>`.
pub const MOUNT_DIR_PREFIX: &str = "netsleuth-tracefs-";

/// A mount point of its own for each private mount: the monitor and a cleanup running beside it
/// (the signal path, another run's stale sweep) never share, so neither removes the other's.
fn new_private_mount_dir() -> PathBuf {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    std::env::temp_dir().join(format!("{MOUNT_DIR_PREFIX}{}-{n}", std::process::id()))
}

/// The `{ value, "NAME" }` pairs of `__print_symbolic(REC->reason, …)` in an event's format file.
pub fn parse_reason_names(format: &str) -> BTreeMap<u64, String> {
    let mut m = BTreeMap::new();
    let Some(start) = format.find("__print_symbolic(REC->reason") else {
        return m;
    };
    let mut rest = &format[start..];
    while let Some(open) = rest.find('{') {
        rest = &rest[open + 1..];
        let Some(close) = rest.find('}') else { break };
        let item = &rest[..close];
        rest = &rest[close + 1..];
        let Some((num, name)) = item.split_once(',') else {
            continue;
        };
        let num = num.trim();
        let value = if let Some(h) = num.strip_prefix("0x") {
            u64::from_str_radix(h, 16).ok()
        } else {
            num.parse().ok()
        };
        if let Some(v) = value {
            m.insert(v, name.trim().trim_matches('"').to_string());
        }
    }
    m
}

/// `(reason, function)` of one `trace` line of skb:kfree_skb.
pub fn parse_trace_line(line: &str, names: &BTreeMap<u64, String>) -> Option<(String, String)> {
    let body = &line[line.find("kfree_skb:")?..];
    let location = body
        .split_whitespace()
        .find_map(|t| t.strip_prefix("location="))
        .map(|l| l.split('+').next().unwrap_or(l).to_string())
        .unwrap_or_else(|| "?".into());
    let reason_text = body
        .split("reason: ")
        .nth(1)?
        .split_whitespace()
        .next()?
        .to_string();
    // Kernels render the name through the format's table; a number means an entry the table lacks.
    let reason = match reason_text.parse::<u64>() {
        Ok(n) => names
            .get(&n)
            .cloned()
            .unwrap_or_else(|| format!("reason#{n}")),
        Err(_) => reason_text,
    };
    Some((reason, location))
}

/// One `trace_pipe` line as an event: its timestamp (seconds with a fraction, before the colon of
/// `kfree_skb:`), reason, location and protocol.
pub fn parse_trace_event(line: &str, names: &BTreeMap<u64, String>) -> Option<DropEvent> {
    let (reason, location) = parse_trace_line(line, names)?;
    let head = &line[..line.find("kfree_skb:")?];
    let ts = head.trim_end().trim_end_matches(':').rsplit(' ').next()?;
    let (sec, frac) = ts.split_once('.').unwrap_or((ts, "0"));
    let sec: i64 = sec.parse().ok()?;
    let frac_digits = frac.len().min(9);
    let frac_ns: i64 =
        frac[..frac_digits].parse::<i64>().ok()? * 10i64.pow((9 - frac_digits) as u32);
    let protocol = line
        .split_whitespace()
        .find_map(|t| t.strip_prefix("protocol="))
        .and_then(|p| p.parse().ok());
    Some(DropEvent {
        mono_ns: sec.saturating_mul(1_000_000_000).saturating_add(frac_ns),
        reason,
        location,
        protocol,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_table_and_trace_lines_decode() {
        let fmt = r#"print fmt: "skbaddr=%p reason: %s", REC->skbaddr, __print_symbolic(REC->reason, { 2, "NOT_SPECIFIED" }, { 3, "NO_SOCKET" }, { 0x10, "NETFILTER_DROP" })"#;
        let names = parse_reason_names(fmt);
        assert_eq!(names[&3], "NO_SOCKET");
        assert_eq!(names[&16], "NETFILTER_DROP");
        let line = "  <idle>-0  [001] ..s2.  12.5: kfree_skb: skbaddr=0000 rx_sk=0000 protocol=2048 location=nf_hook_slow+0x9f/0xf0 reason: NETFILTER_DROP";
        assert_eq!(
            parse_trace_line(line, &names),
            Some(("NETFILTER_DROP".into(), "nf_hook_slow".into()))
        );
        let numeric =
            "x-1 [000] 1.0: kfree_skb: skbaddr=0 protocol=2048 location=ip_rcv+0x1 reason: 3";
        assert_eq!(parse_trace_line(numeric, &names).unwrap().0, "NO_SOCKET");
        let ev = parse_trace_event(line, &names).unwrap();
        assert_eq!(ev.mono_ns, 12_500_000_000);
        assert_eq!(ev.protocol, Some(2048));
        assert_eq!(ev.reason, "NETFILTER_DROP");
        // Damaged lines are no events, never panics.
        for cut in 0..line.len() {
            if line.is_char_boundary(cut) {
                let _ = parse_trace_event(&line[..cut], &names);
            }
        }
    }
}
