//! Network namespaces the lab owns, and running code inside them.
//!
//! Sockets are made by threads that `setns()` into a namespace: the network namespace is per thread,
//! so a socket created by such a thread lives in that namespace while the rest of the process stays in
//! the caller's. Such a thread never returns to the pool: it is spawned for the job and ends with it.

use crate::cmd;
use crate::error::{LabError, Result};
use crate::registry;
use netsleuth_node::collect::run::{in_netns, run_text};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Deadline of a read-only tool run in a lab namespace.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// A network namespace created by the lab (`/run/netns/nsl-…`). Deleted when dropped, unless kept.
pub struct Netns {
    name: String,
    role: String,
    file: Arc<File>,
    keep: bool,
}

impl Netns {
    /// Creates `nsl-<pid>-<n>-<role>` and brings its loopback up.
    pub fn create(role: &str) -> Result<Netns> {
        let name = registry::new_ns_name(role);
        // Register before creating: a signal between the two must still find it.
        registry::add_ns(&name);
        if let Err(e) = cmd::host_readonly("ip", &["netns", "add", &name]) {
            registry::forget_ns(&name);
            return Err(match e {
                LabError::Command { detail, .. } => LabError::MissingKernelFeature {
                    what: format!("cannot create network namespace {name}: {detail}"),
                    hint: "the kernel needs CONFIG_NET_NS and the lab needs root with CAP_SYS_ADMIN (not a restricted container)".into(),
                },
                e => e,
            });
        }
        let path = format!("/run/netns/{name}");
        let file = File::open(&path).map_err(|source| LabError::Netns {
            netns: name.clone(),
            what: "opening the namespace file".into(),
            source,
        })?;
        let ns = Netns {
            name,
            role: role.to_string(),
            file: Arc::new(file),
            keep: false,
        };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn role(&self) -> &str {
        &self.role
    }

    /// Leave the namespace in place when dropped (`--keep`).
    pub fn keep(&mut self) {
        self.keep = true;
        registry::forget_ns(&self.name);
    }

    /// `ip -n NAME args…`
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        cmd::ip(&self.name, args)
    }

    /// `ip netns exec NAME tool args…`
    pub fn exec(&self, tool: &str, args: &[&str]) -> Result<String> {
        cmd::in_netns(&self.name, tool, args, None)
    }

    /// `ip netns exec NAME tool args… < stdin`
    pub fn exec_stdin(&self, tool: &str, args: &[&str], stdin: &str) -> Result<String> {
        cmd::in_netns(&self.name, tool, args, Some(stdin))
    }

    /// Sets a sysctl inside this namespace (`sysctl -w` under `ip netns exec`).
    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        self.exec("sysctl", &["-q", "-w", &format!("{key}={value}")])
            .map(|_| ())
    }

    /// Reads a sysctl of this namespace; `None` if it does not exist here.
    pub fn sysctl_get(&self, key: &str) -> Option<String> {
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        self.run(|| {
            Ok(std::fs::read_to_string(&path)
                .ok()
                .map(|s| s.trim().to_string()))
        })
        .ok()
        .flatten()
    }

    /// Reads `/proc/net/<file>` as this namespace sees it. (`/proc/net` follows the thread group
    /// leader's namespace; `/proc/thread-self/net` follows the reading thread's.)
    pub fn proc_net(&self, file: &str) -> Result<String> {
        let path = format!("/proc/thread-self/net/{file}");
        self.run(|| {
            std::fs::read_to_string(&path).map_err(|source| LabError::Netns {
                netns: self.name.clone(),
                what: format!("reading {path}"),
                source,
            })
        })
    }

    /// The namespace file (`/run/netns/NAME`).
    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/run/netns/{}", self.name))
    }

    /// Runs `f` on a thread inside this namespace (the node crate's `in_netns`) and returns its
    /// result.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
        in_netns(Some(&self.path()), f).map_err(|detail| LabError::Enter {
            netns: self.name.clone(),
            detail,
        })?
    }

    /// Runs a read-only tool (`conntrack -S`, `nft list table …`) inside this namespace with the node
    /// crate's runner, and returns its output.
    pub fn read(&self, argv: &[&str]) -> Result<String> {
        self.run(|| {
            run_text(argv, READ_TIMEOUT).map_err(|e| LabError::Command {
                command: argv.join(" "),
                netns: Some(self.name.clone()),
                detail: e.to_string(),
            })
        })
    }

    /// Spawns a named thread that enters this namespace, then runs `f`.
    pub fn spawn<T: Send + 'static>(
        &self,
        thread_name: &str,
        f: impl FnOnce() -> Result<T> + Send + 'static,
    ) -> Result<JoinHandle<Result<T>>> {
        let file = Arc::clone(&self.file);
        let ns = self.name.clone();
        std::thread::Builder::new()
            .name(format!("{thread_name}@{}", self.role))
            .spawn(move || {
                enter(&file, &ns)?;
                f()
            })
            .map_err(|e| LabError::io("spawning a lab thread", e))
    }
}

/// A long-running thread inside a namespace (a server): it runs until dropped, which stops and joins
/// it.
pub struct Daemon {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<()>>>,
}

/// Handed to a [`Daemon`]'s body: whether to stop, and how to say it is ready.
pub struct DaemonCtl {
    stop: Arc<AtomicBool>,
    ready: std::sync::mpsc::Sender<()>,
}

impl DaemonCtl {
    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// The daemon listens: [`Daemon::start`] returns.
    pub fn ready(&self) {
        let _ = self.ready.send(());
    }
}

impl Daemon {
    /// Runs `body` on a thread in `ns` and returns once it said it is ready; an error it returns
    /// before that (a failed bind) is returned here.
    pub fn start(
        ns: &Netns,
        thread_name: &str,
        body: impl FnOnce(DaemonCtl) -> Result<()> + Send + 'static,
    ) -> Result<Daemon> {
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let ctl = DaemonCtl {
            stop: Arc::clone(&stop),
            ready: ready_tx,
        };
        let thread = ns.spawn(thread_name, move || body(ctl))?;
        match ready_rx.recv_timeout(Duration::from_secs(3)) {
            Ok(()) => Ok(Daemon {
                stop,
                thread: Some(thread),
            }),
            // Gone before it was ready: its own error says why.
            Err(_) if thread.is_finished() => Err(match thread.join() {
                Ok(Err(e)) => e,
                _ => LabError::traffic(
                    "server",
                    format!("{thread_name} stopped before it was ready"),
                ),
            }),
            Err(_) => {
                stop.store(true, Ordering::SeqCst);
                let _ = thread.join();
                Err(LabError::traffic(
                    "server",
                    format!("{thread_name} in {} was not ready after 3 s", ns.role()),
                ))
            }
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn enter(file: &File, ns: &str) -> Result<()> {
    // Only the network namespace: the thread keeps the process's mount namespace, so /run and the
    // output directory stay where they are.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(LabError::Netns {
            netns: ns.to_string(),
            what: "setns(CLONE_NEWNET)".into(),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

impl Drop for Netns {
    fn drop(&mut self) {
        if !self.keep {
            registry::delete_ns(&self.name);
            registry::forget_ns(&self.name);
        }
    }
}
