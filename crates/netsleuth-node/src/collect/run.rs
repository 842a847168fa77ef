//! Running the read-only tools (`iptables-save`, `nft -j list ruleset`, `ip -j …`, `ss`, `conntrack`)
//! with a deadline, and entering a network namespace for the duration of a closure.

use std::io::{BufRead, BufReader, Read};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Why a command produced no usable output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunError {
    NotFound(String),
    Failed { status: String, stderr: String },
    Timeout(Duration),
    Io(String),
}

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RunError::NotFound(cmd) => write!(
                f,
                "{cmd}: command not found (hint: install it: Debian packages iproute2, iptables, nftables, conntrack)"
            ),
            RunError::Failed { status, stderr } => {
                write!(f, "exited with {status}: {}", stderr.trim())
            }
            RunError::Timeout(d) => write!(f, "killed after {:.1} s", d.as_secs_f64()),
            RunError::Io(e) => write!(f, "{e}"),
        }
    }
}

/// Runs `argv`, handing each stdout line to `on_line`; kills the command at `timeout`.
pub fn run_lines(
    argv: &[&str],
    timeout: Duration,
    mut on_line: impl FnMut(&str),
) -> Result<(), RunError> {
    let mut child = match Command::new(argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("LC_ALL", "C")
        .spawn()
    {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(RunError::NotFound(argv[0].to_string()))
        }
        Err(e) => return Err(RunError::Io(format!("cannot start {}: {e}", argv[0]))),
    };
    let pid = child.id() as libc::pid_t;
    let (done_tx, done_rx) = mpsc::channel::<()>();
    // The watchdog kills only the child we started, by its pid, if it outlives the deadline.
    let watchdog = std::thread::spawn(move || {
        if done_rx.recv_timeout(timeout).is_err() {
            unsafe { libc::kill(pid, libc::SIGKILL) };
            return true;
        }
        false
    });
    let mut stderr = child.stderr.take().expect("piped stderr");
    let stderr_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.by_ref().take(64 << 10).read_to_string(&mut s);
        s
    });
    let mut out = BufReader::with_capacity(1 << 20, child.stdout.take().expect("piped stdout"));
    let mut line = Vec::with_capacity(512);
    loop {
        line.clear();
        match out.read_until(b'\n', &mut line) {
            Ok(0) => break,
            Ok(_) => {
                let l = String::from_utf8_lossy(&line);
                on_line(l.trim_end_matches(['\n', '\r']));
            }
            Err(e) => {
                let _ = child.kill();
                let _ = done_tx.send(());
                return Err(RunError::Io(e.to_string()));
            }
        }
    }
    let status = child.wait().map_err(|e| RunError::Io(e.to_string()))?;
    let _ = done_tx.send(());
    let killed = watchdog.join().unwrap_or(false);
    let stderr = stderr_reader.join().unwrap_or_default();
    if killed {
        return Err(RunError::Timeout(timeout));
    }
    if !status.success() {
        return Err(RunError::Failed {
            status: status.to_string(),
            stderr,
        });
    }
    Ok(())
}

/// Runs `argv` and returns its whole stdout.
pub fn run_text(argv: &[&str], timeout: Duration) -> Result<String, RunError> {
    let mut s = String::new();
    run_lines(argv, timeout, |l| {
        s.push_str(l);
        s.push('\n');
    })?;
    Ok(s)
}

/// Runs `f` on a thread that has entered the network namespace at `netns` (or stays in the caller's
/// namespace for `None`). Threads may change network namespace alone; the thread ends with `f`, so the
/// rest of the process never sees the switch. Commands `f` starts inherit the namespace.
pub fn in_netns<T: Send>(netns: Option<&Path>, f: impl FnOnce() -> T + Send) -> Result<T, String> {
    std::thread::scope(|s| {
        let h = s.spawn(|| -> Result<T, String> {
            if let Some(p) = netns {
                let file = std::fs::File::open(p)
                    .map_err(|e| format!("cannot open network namespace {}: {e}", p.display()))?;
                // SAFETY: setns on a valid fd; affects only this thread.
                let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                if rc != 0 {
                    return Err(format!(
                        "cannot enter network namespace {}: {} (hint: needs root / CAP_SYS_ADMIN)",
                        p.display(),
                        std::io::Error::last_os_error()
                    ));
                }
            }
            Ok(f())
        });
        h.join()
            .map_err(|_| "collection thread panicked".to_string())?
    })
}
