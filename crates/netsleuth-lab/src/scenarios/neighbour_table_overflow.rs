//! A node whose neighbour table holds more entries than its `gc_thresh3`: new neighbours are refused
//! (ENOBUFS) and connections to pods the node has no entry for fail, while those it has keep working.
//!
//! Labelled emulation. The thresholds and the table are host-wide (they exist only in the initial
//! network namespace) and the lab never changes the host, nor pushes the host's table toward its own
//! limits. What is real: the node namespace's neighbour entries (a sweep of absent addresses on a /16
//! link, `swp0`, each an incomplete then failed entry, counted in its `/proc/net/arp`) and the ARP
//! storm the sweep sends (`swp0` resolves slowly, 6 requests 6 s apart: its entries stay incomplete
//! while the node's facts are read). What is emulated: `gc_thresh1/2/3` (scaled down, in the run's facts only),
//! and the refusal of a new neighbour once the entries pass the emulated `gc_thresh3`: an nft rule in
//! the node drops the SYNs routed toward the pod it has no entry for (where the kernel would fail to
//! create the entry and drop the packet); its counter is the emulated `table_fulls`.
//!
//! ```text
//!   client 10.244.2.10 (remote pod) ─ remote ═ node ─ cni0 ─ web-a 10.244.1.20 (known neighbour)
//!                                                         └ web-b 10.244.1.21 (new neighbour)
//!   node swp0 10.250.0.1/16 ══ swp0 remote (no address: every ARP request unanswered)
//! ```

use crate::error::{LabError, Result};
use crate::lab::{Lab, Outcome};
use crate::scene::{Recorded, Scene};
use crate::traffic::{self, addr, Behaviour, ConnectOpts};
use std::net::Ipv4Addr;
use std::time::Duration;

const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 244, 2, 10);
/// A pod the node already talks to: its entry exists before the table fills.
const KNOWN: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 20);
/// A pod the node has never resolved: after the table fills, its entry would be refused.
const NEW: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 21);
const PORT: u16 = 8080;
/// Absent addresses the node sends one datagram to: one neighbour entry each.
const SWEEP: u32 = 300;
/// The emulated thresholds (the kernel's defaults are 128/512/1024; scaled down so that a sweep the
/// host can afford passes them) and the raised ones of the mitigated run.
const EMULATED: [u64; 3] = [64, 128, 256];
const RAISED: [u64; 3] = [1024, 4096, 8192];
/// Head room left below the host's real gc_thresh2 (other labs and the host's own neighbours).
const HOST_MARGIN: u64 = 128;
const CONNECTS: usize = 3;
const CONNECT_TIMEOUT: Duration = Duration::from_millis(1500);

/// The host's real IPv4 table size and gc_thresh2, read-only: the sweep must stay far below it.
fn host_budget() -> Result<(u64, u64)> {
    let read =
        |p: &str| std::fs::read_to_string(p).map_err(|e| LabError::io(format!("reading {p}"), e));
    let thresh2: u64 = read("/proc/sys/net/ipv4/neigh/default/gc_thresh2")?
        .trim()
        .parse()
        .unwrap_or(0);
    let stat = read("/proc/net/stat/arp_cache")?;
    let entries = stat
        .lines()
        .nth(1)
        .and_then(|l| l.split_whitespace().next())
        .and_then(|v| u64::from_str_radix(v, 16).ok())
        .unwrap_or(u64::MAX);
    Ok((entries, thresh2))
}

pub fn run(lab: &mut Lab) -> Result<Recorded> {
    // A namespace just removed (the previous run's) frees its entries asynchronously: wait for them.
    let mut waited = 0;
    let (mut host_entries, mut host_thresh2) = host_budget()?;
    while host_entries.saturating_add(u64::from(SWEEP) + HOST_MARGIN) > host_thresh2 && waited < 60
    {
        std::thread::sleep(Duration::from_millis(500));
        waited += 1;
        (host_entries, host_thresh2) = host_budget()?;
    }
    if host_entries.saturating_add(u64::from(SWEEP) + HOST_MARGIN) > host_thresh2 {
        return Err(LabError::MissingKernelFeature {
            what: format!(
                "room in the host's neighbour table: it holds {host_entries} entries and its gc_thresh2 is {host_thresh2}; a sweep of {SWEEP} would bring it within {HOST_MARGIN} of it"
            ),
            hint: "run it where the host's table is small (the lab does not change the host's thresholds)".into(),
        });
    }
    let mitigated = lab.mitigated;
    let thresholds = if mitigated { RAISED } else { EMULATED };
    let mut net = lab.build(
        Scene::new()
            .remote_pod("client", CLIENT)
            .pod("web-a", KNOWN)
            .pod("web-b", NEW)
            .serve("web-a", PORT, Behaviour::RespondAndClose { bytes: 200 })
            .serve("web-b", PORT, Behaviour::RespondAndClose { bytes: 200 })
            .server_view("web-b"),
    )?;
    for (n, v) in thresholds.iter().enumerate() {
        net.emulated_sysctl(
            &format!("net.ipv4.neigh.default.gc_thresh{}", n + 1),
            &v.to_string(),
        );
    }
    let node = net.node();
    let remote = net.ns("remote")?;
    node.ip(&[
        "link",
        "add",
        "swp0",
        "type",
        "veth",
        "peer",
        "name",
        "swp0",
        "netns",
        remote.name(),
    ])?;
    node.ip(&["addr", "add", "10.250.0.1/16", "dev", "swp0"])?;
    node.ip(&["link", "set", "swp0", "up"])?;
    // A slow link to resolve on (6 requests 6 s apart instead of 3 at 1 s; the lab namespace's own
    // per-device settings): the sweep's entries stay incomplete ~36 s, so the node's facts, read
    // ~20 s later when the recorders have stopped, still count them (failed entries go at the next
    // periodic collection).
    node.sysctl("net.ipv4.neigh.swp0.retrans_time_ms", "6000")?;
    node.sysctl("net.ipv4.neigh.swp0.mcast_solicit", "6")?;
    remote.ip(&["link", "set", "swp0", "up"])?;
    let mut live = net.observe()?;
    live.note(format!(
        "emulated: gc_thresh1/2/3 = {}/{}/{} (the facts only; the host's stay {host_thresh2} and the rest); real: the node namespace's neighbour entries and its ARP requests",
        thresholds[0], thresholds[1], thresholds[2]
    ));

    let tries = |to: Ipv4Addr| {
        move || -> Result<Vec<(String, bool)>> {
            Ok((0..CONNECTS)
                .map(|i| {
                    let t0 = std::time::Instant::now();
                    let r =
                        traffic::connect(addr(to, PORT), CONNECT_TIMEOUT, ConnectOpts::default())
                            .and_then(|mut s| {
                                traffic::request(
                                    &mut s,
                                    &format!("GET /{i} HTTP/1.0\r\n\r\n"),
                                    Duration::from_secs(2),
                                )
                            });
                    let took = t0.elapsed();
                    match r {
                        Ok(_) if took < Duration::from_millis(900) => (
                            format!(
                                "{CLIENT} → {to}:{PORT} answered in {:.1} ms",
                                took.as_secs_f64() * 1e3
                            ),
                            true,
                        ),
                        Ok(_) => (
                            format!(
                                "{CLIENT} → {to}:{PORT} answered only after {:.2} s",
                                took.as_secs_f64()
                            ),
                            false,
                        ),
                        Err(e) => (
                            format!("{CLIENT} → {to}:{PORT} failed: {}", traffic::errno_name(&e)),
                            false,
                        ),
                    }
                })
                .collect())
        }
    };
    // The known pod first: its neighbour entry exists before the table fills.
    let before = live.run("client", tries(KNOWN))?;
    // The sweep: one datagram to each absent address, each a new (incomplete, then failed) entry.
    let sweep = || -> Result<u32> {
        let mut sent = 0u32;
        for i in 0..SWEEP {
            // A socket per address: a datagram waiting for its neighbour holds its socket's send
            // buffer until the resolution fails, and one socket's buffer would block the sweep.
            let sock = std::net::UdpSocket::bind("10.250.0.1:0")
                .map_err(|e| LabError::io("binding the sweep's socket", e))?;
            let n = 2 + i;
            let to = Ipv4Addr::new(10, 250, (n >> 8) as u8, (n & 0xff) as u8);
            if sock.send_to(b"x", (to, 9)).is_ok() {
                sent += 1;
            }
        }
        Ok(sent)
    };
    let sent = live.run("node", sweep)?;
    std::thread::sleep(Duration::from_millis(300));
    let arp = live.node().proc_net("arp")?;
    let table = netsleuth_node::parse::neigh::parse_proc_net_arp(&arp).value;
    let entries = table.entries();
    let full = entries >= thresholds[2];
    let emulation = (full).then(|| {
        format!(
            "table inet neighbour_emulation {{\n\tchain forward {{\n\t\ttype filter hook forward priority -10; policy accept;\n\t\tip daddr {NEW} tcp flags & (syn | ack) == syn counter drop comment \"emulated: the neighbour entry for {NEW} is refused (table past gc_thresh3 = {}, ENOBUFS)\"\n\t}}\n}}\n",
            thresholds[2]
        )
    });
    if let Some(rules) = &emulation {
        live.node().exec_stdin("nft", &["-f", "-"], rules)?;
    }
    let after_known = live.run("client", tries(KNOWN))?;
    let after_new = live.run("client", tries(NEW))?;
    let refused = if emulation.is_some() {
        let listing = live
            .node()
            .exec("nft", &["list", "table", "inet", "neighbour_emulation"])?;
        listing
            .split("packets ")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0)
    } else {
        0
    };

    let mut out = Outcome::default();
    out.event(format!(
        "sent to {sent} absent addresses on swp0 (10.250.0.0/16): the node namespace now has {entries} neighbour entries ({} incomplete or failed, {} complete)",
        table.incomplete, table.complete
    ));
    out.measure(
        "neighbour entries in the node namespace",
        entries as f64,
        "",
    );
    out.measure("emulated gc_thresh3", thresholds[2] as f64, "");
    out.measure(
        "emulated arp_cache table_fulls (SYNs to the refused neighbour)",
        refused as f64,
        "",
    );
    let mut failed = [0usize; 3];
    for (k, (label, v)) in [
        ("known pod before the sweep", &before),
        ("known pod after", &after_known),
        ("new pod after", &after_new),
    ]
    .into_iter()
    .enumerate()
    {
        for (e, ok) in v {
            out.event(format!("{label}: {e}"));
            failed[k] += usize::from(!ok);
        }
        out.measure(
            format!("failed or slow connects, {label}"),
            failed[k] as f64,
            "",
        );
    }
    if failed[2] > 0 && failed[0] + failed[1] == 0 && full {
        out.symptom = Some(format!(
            "{} of {CONNECTS} connects from {CLIENT} to the new pod {NEW} timed out while the known pod {KNOWN} was answered: {entries} neighbour entries passed the emulated gc_thresh3 = {}, so the entry for {NEW} was refused (emulated table_fulls {refused})",
            failed[2], thresholds[2]
        ));
    } else if failed.iter().all(|f| *f == 0) && !full {
        out.fine = format!(
            "all {} connects answered, to the new pod too: {entries} neighbour entries stay below gc_thresh3 = {}",
            3 * CONNECTS,
            thresholds[2]
        );
    } else {
        out.symptom = Some(format!(
            "unexpected: {entries} entries (gc_thresh3 {}), failed connects (known before, known after, new) = {failed:?}",
            thresholds[2]
        ));
    }
    Ok(live.finish(out))
}
