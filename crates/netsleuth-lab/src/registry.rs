//! Everything the lab creates outside its own memory (namespaces, child processes) is registered here,
//! so that it can be removed on every exit path: normal return and errors (the owners' `Drop`),
//! panics (unwinding runs the same `Drop`s), SIGINT/SIGTERM/SIGHUP (a watcher thread woken by the
//! signal handler), and SIGKILL of an earlier run (stale names carry the dead run's pid, removed by
//! [`remove_stale`] at the start of the next run).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::{Mutex, Once};

/// Prefix of every namespace the lab creates: `nsl-<pid>-<counter>-<role>`.
pub const NS_PREFIX: &str = "nsl-";

#[derive(Default)]
struct Registry {
    namespaces: BTreeSet<String>,
    children: BTreeSet<i32>,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    namespaces: BTreeSet::new(),
    children: BTreeSet::new(),
});
static COUNTER: AtomicU64 = AtomicU64::new(0);
static SIGNAL_PIPE_WRITE: AtomicI32 = AtomicI32::new(-1);
/// The signal that interrupted the lab, 0 if none.
static INTERRUPTED: AtomicI32 = AtomicI32::new(0);

fn registry() -> std::sync::MutexGuard<'static, Registry> {
    // A panic while holding the lock must not stop cleanup: the data is a plain set of names.
    REGISTRY.lock().unwrap_or_else(|e| e.into_inner())
}

/// A fresh namespace name for `role`, unique across concurrent runs (pid) and within one (counter).
pub fn new_ns_name(role: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{NS_PREFIX}{}-{n}-{role}", std::process::id())
}

pub fn add_ns(name: &str) {
    registry().namespaces.insert(name.to_string());
}

pub fn forget_ns(name: &str) {
    registry().namespaces.remove(name);
}

pub fn add_child(pid: i32) {
    registry().children.insert(pid);
}

pub fn forget_child(pid: i32) {
    registry().children.remove(&pid);
}

pub fn interrupted() -> Option<i32> {
    match INTERRUPTED.load(Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    }
}

/// Kills registered children, deletes registered namespaces and tracefs instances, removes private
/// tracefs mount points. Safe to call more than once.
pub fn cleanup_all() {
    let (children, namespaces) = {
        let mut r = registry();
        (
            std::mem::take(&mut r.children),
            std::mem::take(&mut r.namespaces),
        )
    };
    // The drop monitor's instance and private mount point (it keeps its own registry).
    crate::dropmon::cleanup_registered();
    for pid in &children {
        // SIGINT first so that tcpdump flushes what it has; SIGKILL whoever is still there.
        unsafe { libc::kill(*pid, libc::SIGINT) };
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(800);
    for pid in &children {
        loop {
            let mut status = 0;
            let r = unsafe { libc::waitpid(*pid, &mut status, libc::WNOHANG) };
            if r != 0 || std::time::Instant::now() > deadline {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        unsafe { libc::kill(*pid, libc::SIGKILL) };
    }
    for ns in &namespaces {
        delete_ns(ns);
    }
}

/// `ip netns del NAME`, ignoring "not there" (it is the state we want).
pub fn delete_ns(name: &str) {
    debug_assert!(name.starts_with(NS_PREFIX));
    if !name.starts_with(NS_PREFIX) {
        return;
    }
    let _ = crate::cmd::host_readonly("ip", &["netns", "del", name]);
}

/// Removes namespaces (and tracefs instances) left by lab runs whose process no longer exists (a
/// SIGKILLed run, a crash). With `all`, removes every lab namespace except those of runs in this
/// process.
pub fn remove_stale(all: bool) -> Vec<String> {
    let mut removed = crate::dropmon::remove_instances(None);
    let Ok(dir) = std::fs::read_dir("/run/netns") else {
        return removed;
    };
    let me = std::process::id();
    for entry in dir.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(NS_PREFIX) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let alive = unsafe { libc::kill(pid as i32, 0) } == 0
            || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
        if all || !alive {
            delete_ns(&name);
            removed.push(name);
        }
    }
    removed
}

/// Installs SIGINT/SIGTERM/SIGHUP handlers (once per process). The handler only writes the signal
/// number to a pipe (async-signal-safe); a watcher thread reads it, removes everything registered, then
/// restores the default disposition and re-raises, so the process still dies of the signal as the
/// shell expects.
pub fn install_signal_cleanup() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let mut fds = [0i32; 2];
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return;
        }
        SIGNAL_PIPE_WRITE.store(fds[1], Ordering::SeqCst);
        let read_fd = fds[0];
        std::thread::Builder::new()
            .name("lab-signal-cleanup".into())
            .spawn(move || loop {
                let mut b = [0u8; 1];
                let n = unsafe { libc::read(read_fd, b.as_mut_ptr().cast(), 1) };
                if n == 1 {
                    let sig = b[0] as i32;
                    INTERRUPTED.store(sig, Ordering::SeqCst);
                    eprintln!("netsleuth lab: signal {sig}: removing the lab's namespaces");
                    cleanup_all();
                    unsafe {
                        libc::signal(sig, libc::SIG_DFL);
                        libc::raise(sig);
                    }
                } else if n < 0
                    && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted
                {
                    continue;
                } else {
                    return;
                }
            })
            .ok();
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            unsafe {
                let mut sa: libc::sigaction = std::mem::zeroed();
                sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
                sa.sa_flags = libc::SA_RESTART;
                libc::sigemptyset(&mut sa.sa_mask);
                libc::sigaction(sig, &sa, std::ptr::null_mut());
            }
        }
    });
}

extern "C" fn on_signal(sig: libc::c_int) {
    let fd = SIGNAL_PIPE_WRITE.load(Ordering::SeqCst);
    if fd >= 0 {
        let b = sig as u8;
        unsafe { libc::write(fd, (&b as *const u8).cast(), 1) };
    }
}
