//! The drop monitor's private tracefs mount point (`netsleuth-tracefs-<pid>-<n>` in the temp dir,
//! made when the host has no tracefs mounted) is removed on every exit path: `finish`, `Drop` without
//! `finish`, `lab cleanup`'s sweep (`remove_instances`), and SIGINT during a run. Needs root (skips
//! with a message otherwise); where the host has tracefs mounted there is no private mount point and
//! the assertions hold trivially (the test says so).

use netsleuth_lab::dropmon::{remove_instances, DropMonitor, Owner, MOUNT_DIR_PREFIX};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Set in the child process of the SIGINT test: it runs a monitor until the signal.
const CHILD_ENV: &str = "NETSLEUTH_DROPMON_TEST_CHILD";

fn is_root() -> bool {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIP: the drop monitor needs root (tracefs, mount namespaces)");
        return false;
    }
    true
}

fn host_has_tracefs() -> bool {
    ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"]
        .iter()
        .any(|p| std::path::Path::new(p).join("instances").is_dir())
}

/// The private tracefs mount points of process `pid` in the temp dir.
fn mount_dirs_of(pid: u32) -> Vec<String> {
    let mine = format!("{MOUNT_DIR_PREFIX}{pid}");
    std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n == &mine || n.starts_with(&format!("{mine}-")))
        .collect()
}

fn assert_none_left(pid: u32, after: &str) {
    let left = mount_dirs_of(pid);
    assert!(
        left.is_empty(),
        "after {after}: {left:?} left in the temp dir"
    );
}

#[test]
fn private_tracefs_mount_points_are_removed_after_finish_drop_and_cleanup() {
    if std::env::var_os(CHILD_ENV).is_some() || !is_root() {
        return;
    }
    if host_has_tracefs() {
        eprintln!("note: tracefs is mounted on this host: no private mount point to remove");
    }
    let me = std::process::id();
    match DropMonitor::start(Owner::Lab) {
        Ok(monitor) => {
            let reasons = monitor.finish();
            assert!(reasons.available, "{}", reasons.note);
        }
        // Drop reasons unavailable (an old kernel): the failed start must leave nothing either.
        Err(why) => eprintln!("note: drop monitor unavailable here: {why}"),
    }
    assert_none_left(me, "start and finish");

    if let Ok(monitor) = DropMonitor::start(Owner::Lab) {
        drop(monitor);
    }
    assert_none_left(me, "start and drop without finish");

    // `lab cleanup` and the start of every run: the sweep mounts tracefs privately to list instances.
    remove_instances(None);
    assert_none_left(me, "remove_instances(None)");
    remove_instances(Some(&format!("netsleuth-lab-{me}")));
    assert_none_left(me, "remove_instances(Some(..))");
}

/// Kills the child if the test fails before it is reaped.
struct Reap(Child);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The child side of the SIGINT test: the lab's signal handling, a running monitor, then wait.
fn run_monitor_until_signalled() {
    netsleuth_lab::registry::install_signal_cleanup();
    let monitor = DropMonitor::start(Owner::Lab);
    println!(
        "READY {}",
        match &monitor {
            Ok(_) => "monitoring".to_string(),
            Err(why) => format!("unavailable: {why}"),
        }
    );
    std::thread::sleep(Duration::from_secs(60));
    drop(monitor);
}

#[test]
fn private_tracefs_mount_point_is_removed_when_sigint_stops_a_run() {
    if std::env::var_os(CHILD_ENV).is_some() {
        run_monitor_until_signalled();
        return;
    }
    if !is_root() {
        return;
    }
    let child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "private_tracefs_mount_point_is_removed_when_sigint_stops_a_run",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, "1")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = Reap(child);
    let pid = child.0.id();
    let mut lines = BufReader::new(child.0.stdout.take().unwrap()).lines();
    // The harness prints the test's name on the same line before the test's own output.
    let ready = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|l| l.find("READY ").map(|at| l[at..].to_string()))
        .expect("the child reports its monitor");
    if ready != "READY monitoring" {
        eprintln!("note: {ready}");
    } else if !host_has_tracefs() {
        assert_eq!(
            mount_dirs_of(pid).len(),
            1,
            "the running monitor's mount point"
        );
    }
    unsafe { libc::kill(pid as i32, libc::SIGINT) };
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.0.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "the child did not die of SIGINT");
        std::thread::sleep(Duration::from_millis(20));
    };
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGINT), "{status:?}");
    assert_none_left(pid, "SIGINT");
}
