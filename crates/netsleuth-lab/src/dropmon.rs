//! Kernel drop reasons during a run, from the `skb:kfree_skb` tracepoint in a private tracefs instance
//! (no eBPF needed). The reason enum differs between kernels, so names are decoded from the event's
//! `format` file at run time.
//!
//! Best effort: the tracepoint is kernel-wide (it carries no namespace), so a busy host adds its own
//! drops to the counts; the report says so. If tracefs is not mounted, it is mounted inside a private
//! mount namespace of the monitoring thread only, so the host's mount table does not change; its mount
//! point, a directory in the temp dir, is removed on every exit path (see `PrivateTracefs`).

use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
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

pub struct DropMonitor {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<DropReasons>>,
}

impl DropMonitor {
    /// Starts monitoring; returns `Err(reason)` when drop reasons are unavailable here.
    pub fn start() -> Result<DropMonitor, String> {
        let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("lab-dropmon".into())
            .spawn(move || monitor_thread(ready_tx, stop_rx))
            .map_err(|e| format!("spawning the monitor thread: {e}"))?;
        match ready_rx.recv() {
            Ok(Ok(())) => {
                crate::registry::add_trace_instance(&instance_name());
                Ok(DropMonitor {
                    stop: Some(stop_tx),
                    thread: Some(thread),
                })
            }
            Ok(Err(why)) => {
                let _ = thread.join();
                Err(why)
            }
            Err(_) => Err("drop monitor thread ended early".into()),
        }
    }

    pub fn finish(mut self) -> DropReasons {
        self.stop_and_join().unwrap_or_else(|| DropReasons {
            available: false,
            note: "drop monitor thread panicked".into(),
            ..Default::default()
        })
    }

    fn stop_and_join(&mut self) -> Option<DropReasons> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        // The thread unmounts and removes its private tracefs mount point itself (`PrivateTracefs`),
        // also when it panics: only it can unmount inside its own mount namespace.
        let out = self.thread.take().and_then(|t| t.join().ok());
        crate::registry::forget_trace_instance(&instance_name());
        out
    }
}

impl Drop for DropMonitor {
    fn drop(&mut self) {
        // An error path that never called finish: the instance must still go.
        self.stop_and_join();
    }
}

fn monitor_thread(
    ready: mpsc::Sender<Result<(), String>>,
    stop: mpsc::Receiver<()>,
) -> DropReasons {
    // Held to the end of this function: dropping it unmounts a private tracefs and removes its mount
    // point, on every way out (early returns, the end, a panic's unwinding).
    let tracefs = match Tracefs::find_or_mount() {
        Ok(t) => t,
        Err(why) => {
            let _ = ready.send(Err(why.clone()));
            return DropReasons {
                available: false,
                note: why,
                ..Default::default()
            };
        }
    };
    let root = tracefs.root();
    let instance = root
        .join("instances")
        .join(format!("netsleuth-lab-{}", std::process::id()));
    let setup = || -> Result<BTreeMap<u64, String>, String> {
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
        std::fs::write(instance.join("events/skb/kfree_skb/enable"), "1")
            .map_err(|e| format!("enabling skb:kfree_skb in {}: {e}", instance.display()))?;
        let _ = std::fs::write(instance.join("tracing_on"), "1");
        Ok(names)
    };
    let names = match setup() {
        Ok(n) => n,
        Err(why) => {
            let _ = std::fs::remove_dir(&instance);
            let _ = ready.send(Err(why.clone()));
            return DropReasons {
                available: false,
                note: why,
                ..Default::default()
            };
        }
    };
    let _ = ready.send(Ok(()));
    let _ = stop.recv();
    let _ = std::fs::write(instance.join("events/skb/kfree_skb/enable"), "0");
    let trace = std::fs::read_to_string(instance.join("trace")).unwrap_or_default();
    let overrun = read_overrun(&instance);
    let _ = std::fs::remove_dir(&instance);
    let mut out = DropReasons {
        available: true,
        note: "skb:kfree_skb via a private tracefs instance; kernel-wide (the tracepoint has no namespace), \
               so host traffic during the run is counted too"
            .into(),
        overrun,
        ..Default::default()
    };
    for line in trace.lines().filter(|l| !l.starts_with('#')) {
        if let Some((reason, location)) = parse_trace_line(line, &names) {
            *out.by_reason.entry(reason.clone()).or_insert(0) += 1;
            *out.by_location
                .entry(format!("{reason} @ {location}"))
                .or_insert(0) += 1;
        }
    }
    out
}

/// The tracefs this thread uses: the host's, or one it mounted in its private mount namespace.
enum Tracefs {
    Host(PathBuf),
    Private(PrivateTracefs),
}

/// A tracefs mounted on `netsleuth-lab-tracefs-<pid>-<n>` in the temp dir, inside the private mount
/// namespace of the thread that mounted it. The directory itself exists on the host (the temp dir is
/// shared), so it must be removed on every exit path: dropping this (on the mounting thread) unmounts
/// and then removes it, and the signal path removes what is still registered (`registry::cleanup_all`).
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
        crate::registry::forget_tracefs_dir(&self.dir);
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
        crate::registry::add_tracefs_dir(&dir);
        if let Err(e) = std::fs::create_dir_all(&dir) {
            crate::registry::forget_tracefs_dir(&dir);
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

/// The tracefs instance of this process (one run at a time per process uses it).
fn instance_name() -> String {
    format!("{INSTANCE_PREFIX}{}", std::process::id())
}

const INSTANCE_PREFIX: &str = "netsleuth-lab-";

/// Removes tracefs instances of the lab: `name`, or with `None` every instance (and private mount
/// point) left by a lab process that no longer runs. Runs on its own thread, which may mount tracefs
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
            let Some(pid) = n
                .strip_prefix(INSTANCE_PREFIX)
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

/// Prefix of the private tracefs mount points in the temp dir: `netsleuth-lab-tracefs-<pid>-<n>`.
pub const MOUNT_DIR_PREFIX: &str = "netsleuth-lab-tracefs-";

/// A mount point of its own for each private mount: the monitor and a cleanup running beside it
/// (the signal path, another run's stale sweep) never share, so neither removes the other's.
fn new_private_mount_dir() -> PathBuf {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    std::env::temp_dir().join(format!("{MOUNT_DIR_PREFIX}{}-{n}", std::process::id()))
}

fn read_overrun(instance: &Path) -> u64 {
    let Ok(dir) = std::fs::read_dir(instance.join("per_cpu")) else {
        return 0;
    };
    let mut total = 0;
    for cpu in dir.flatten() {
        if let Ok(text) = std::fs::read_to_string(cpu.path().join("stats")) {
            for line in text.lines() {
                if let Some(v) = line.strip_prefix("overrun:") {
                    total += v.trim().parse::<u64>().unwrap_or(0);
                }
            }
        }
    }
    total
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
    }
}
