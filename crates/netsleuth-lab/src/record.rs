//! Background recorders run inside lab namespaces: `tcpdump` captures, `conntrack -E` events and
//! `ip monitor` (address/route/link changes). Each is started before the traffic and stopped after it
//! with SIGINT, then waited for, so that the file on disk is complete.

use crate::cmd;
use crate::error::{LabError, Result};
use crate::netns::Netns;
use crate::registry;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Snap length of lab captures (`tcpdump -s 262`): headers, and DNS messages whole; keeps fixtures
/// small.
pub const SNAPLEN: u32 = 262;
/// At most this many packets per capture file.
pub const MAX_PACKETS: u32 = 3000;

/// A running background process in a namespace, registered for cleanup.
pub struct Recorder {
    pub label: String,
    pub path: PathBuf,
    child: Option<Child>,
    stderr: Arc<Mutex<String>>,
}

impl Recorder {
    fn spawn(
        ns: &Netns,
        label: &str,
        tool: &str,
        args: &[&str],
        stdout_to: Option<&Path>,
        path: &Path,
    ) -> Result<Recorder> {
        let ip = cmd::which("ip").ok_or(LabError::MissingTool {
            tool: "ip".into(),
            package: "iproute2",
        })?;
        let prog = cmd::which(tool).ok_or_else(|| LabError::MissingTool {
            tool: tool.into(),
            package: cmd::package_of(tool),
        })?;
        let mut c = Command::new(ip);
        c.args(["netns", "exec", ns.name()])
            .arg(&prog)
            .args(args)
            .stdin(Stdio::null())
            .stderr(Stdio::piped());
        match stdout_to {
            Some(p) => {
                let f = File::create(p).map_err(|e| LabError::file("creating", p, e))?;
                c.stdout(Stdio::from(f));
            }
            None => {
                c.stdout(Stdio::null());
            }
        }
        // If the lab process dies without cleanup, the recorder must not outlive it.
        unsafe {
            c.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let shown = format!("{tool} {}", args.join(" "));
        let mut child = c.spawn().map_err(|source| LabError::Spawn {
            command: shown,
            source,
        })?;
        registry::add_child(child.id() as i32);
        let stderr = Arc::new(Mutex::new(String::new()));
        let pipe = child.stderr.take().expect("stderr piped");
        let sink = Arc::clone(&stderr);
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(|l| l.ok()) {
                let mut s = sink.lock().unwrap_or_else(|e| e.into_inner());
                s.push_str(&line);
                s.push('\n');
            }
        });
        Ok(Recorder {
            label: label.to_string(),
            path: path.to_path_buf(),
            child: Some(child),
            stderr,
        })
    }

    fn stderr_text(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn wait_for_stderr(&mut self, needle: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.stderr_text().contains(needle) {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(LabError::Command {
                        command: self.label.clone(),
                        netns: None,
                        detail: format!(
                            "exited ({status}) before it was ready: {}",
                            self.stderr_text().trim()
                        ),
                    });
                }
            }
            if Instant::now() > deadline {
                return Err(LabError::Command {
                    command: self.label.clone(),
                    netns: None,
                    detail: format!("not ready after {timeout:?}: {}", self.stderr_text().trim()),
                });
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGINT, then wait (up to 3 s, then SIGKILL). Returns what the tool printed on stderr.
    pub fn stop(&mut self) -> String {
        if let Some(mut child) = self.child.take() {
            let pid = child.id() as i32;
            unsafe { libc::kill(pid, libc::SIGINT) };
            let deadline = Instant::now() + Duration::from_secs(3);
            loop {
                match child.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() > deadline => {
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
            registry::forget_child(pid);
            // Let the stderr reader drain the last lines ("N packets captured").
            std::thread::sleep(Duration::from_millis(20));
        }
        self.stderr_text()
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `tcpdump -i IFACE -w PATH` in `ns`, returned once tcpdump says it is listening.
pub fn tcpdump(ns: &Netns, iface: &str, path: &Path, filter: Option<&str>) -> Result<Recorder> {
    let snap = SNAPLEN.to_string();
    let count = MAX_PACKETS.to_string();
    let file = path.to_string_lossy().into_owned();
    // -Z root: Debian's tcpdump otherwise drops to user `tcpdump`, which cannot write into the run
    // directory. --immediate-mode: without it TPACKET_V3 hands packets over per filled block or per
    // second, and whatever is still in the ring at SIGINT is lost. -U: write each packet at once.
    let mut args = vec![
        "-i",
        iface,
        "-n",
        "--immediate-mode",
        "-U",
        "-Z",
        "root",
        "-s",
        &snap,
        "-c",
        &count,
        "-w",
        &file,
    ];
    if let Some(f) = filter {
        args.push(f);
    }
    let mut r = Recorder::spawn(
        ns,
        &format!("tcpdump -i {iface} in {}", ns.role()),
        "tcpdump",
        &args,
        None,
        path,
    )?;
    r.wait_for_stderr("listening on", Duration::from_secs(10))?;
    Ok(r)
}

/// `conntrack -E -o timestamp` in `ns`, writing events to `path`.
pub fn conntrack_events(ns: &Netns, path: &Path) -> Result<Recorder> {
    let r = Recorder::spawn(
        ns,
        "conntrack -E",
        "conntrack",
        &["-E", "-o", "timestamp,id"],
        Some(path),
        path,
    )?;
    // conntrack prints nothing when it is ready; give it time to bind its netlink socket.
    std::thread::sleep(Duration::from_millis(150));
    Ok(r)
}

/// `ip -ts monitor address route link` in `ns` (RTM_NEWADDR/DELADDR with timestamps).
pub fn ip_monitor(ns: &Netns, path: &Path) -> Result<Recorder> {
    let r = Recorder::spawn(
        ns,
        "ip monitor",
        "ip",
        &["-ts", "monitor", "address", "route", "link"],
        Some(path),
        path,
    )?;
    std::thread::sleep(Duration::from_millis(50));
    Ok(r)
}

/// Packets tcpdump reported on exit ("N packets captured").
pub fn packets_captured(stderr: &str) -> Option<u64> {
    stderr
        .lines()
        .find(|l| l.contains("packets captured"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// Waits until `f` returns true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    f()
}
