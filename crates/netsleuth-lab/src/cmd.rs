//! Running the system tools the lab drives (`ip`, `iptables-restore`, `nft`, `conntrack`, `sysctl`).
//!
//! Invariant: every command that changes network state runs inside a lab namespace: either through
//! `ip -n NAME` (which enters the namespace before acting) or `ip netns exec NAME`. There is no helper
//! here that runs a state-changing tool in the caller's namespace.

use crate::error::{LabError, Result};
use std::io::Write;
use std::process::{Command, Stdio};

/// The tools the lab needs, and the Debian/Ubuntu package that ships each.
pub const REQUIRED_TOOLS: &[(&str, &str)] = &[
    ("ip", "iproute2"),
    ("iptables", "iptables"),
    ("iptables-restore", "iptables"),
    ("iptables-save", "iptables"),
    ("nft", "nftables"),
    ("conntrack", "conntrack"),
    ("tcpdump", "tcpdump"),
    ("sysctl", "procps"),
];

pub fn package_of(tool: &str) -> &'static str {
    REQUIRED_TOOLS
        .iter()
        .find(|(t, _)| *t == tool)
        .map(|(_, p)| *p)
        .unwrap_or("the package that provides it")
}

/// Finds `tool` in PATH (plus the sbin directories, which a non-login root shell may lack).
pub fn which(tool: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let extra = ["/usr/sbin", "/sbin", "/usr/bin", "/bin"];
    std::env::split_paths(&path)
        .chain(extra.iter().map(std::path::PathBuf::from))
        .map(|dir| dir.join(tool))
        .find(|p| p.is_file())
}

fn program(tool: &str) -> Result<std::path::PathBuf> {
    which(tool).ok_or_else(|| LabError::MissingTool {
        tool: tool.to_string(),
        package: package_of(tool),
    })
}

/// Runs `tool args…` inside namespace `netns` (via `ip netns exec`) and returns its stdout.
pub fn in_netns(netns: &str, tool: &str, args: &[&str], stdin: Option<&str>) -> Result<String> {
    let ip = program("ip")?;
    let prog = program(tool)?;
    let mut full: Vec<String> = vec!["netns".into(), "exec".into(), netns.into()];
    full.push(prog.to_string_lossy().into_owned());
    full.extend(args.iter().map(|s| s.to_string()));
    run_program(
        &ip,
        &full,
        Some(netns),
        stdin,
        &format!("{tool} {}", args.join(" ")),
    )
}

/// Runs `ip -n NETNS args…`.
pub fn ip(netns: &str, args: &[&str]) -> Result<String> {
    let ip = program("ip")?;
    let mut full: Vec<String> = vec!["-n".into(), netns.into()];
    full.extend(args.iter().map(|s| s.to_string()));
    run_program(
        &ip,
        &full,
        Some(netns),
        None,
        &format!("ip {}", args.join(" ")),
    )
}

/// Runs a read-only or namespace-management command in the caller's namespace (`ip netns add|del`,
/// `tcpdump --version`). Callers must not pass anything that changes interfaces, routes or rules.
pub fn host_readonly(tool: &str, args: &[&str]) -> Result<String> {
    let prog = program(tool)?;
    let full: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    run_program(
        &prog,
        &full,
        None,
        None,
        &format!("{tool} {}", args.join(" ")),
    )
}

fn run_program(
    prog: &std::path::Path,
    args: &[String],
    netns: Option<&str>,
    stdin: Option<&str>,
    shown: &str,
) -> Result<String> {
    let mut cmd = Command::new(prog);
    cmd.args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|source| LabError::Spawn {
        command: shown.to_string(),
        source,
    })?;
    if let Some(text) = stdin {
        let mut pipe = child.stdin.take().expect("stdin was piped");
        // A tool that exits early closes the pipe; its exit status tells the story, not the EPIPE.
        let _ = pipe.write_all(text.as_bytes());
    }
    let out = child.wait_with_output().map_err(|source| LabError::Spawn {
        command: shown.to_string(),
        source,
    })?;
    if !out.status.success() {
        let mut detail = String::from_utf8_lossy(&out.stderr).trim().to_string();
        if detail.is_empty() {
            detail = format!("exit status {}", out.status);
        }
        return Err(LabError::Command {
            command: shown.to_string(),
            netns: netns.map(str::to_string),
            detail,
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
