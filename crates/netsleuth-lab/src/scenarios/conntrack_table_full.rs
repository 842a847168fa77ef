//! [issue 15] The node's conntrack table is full of assured entries: new connections from a pod — to
//! two backends and a ClusterIP — are dropped at conntrack while the pod's existing connection to one
//! of those backends keeps working.
//!
//! On this kernel `nf_conntrack_max` is the host's value, read-only in a child namespace, but
//! `nf_conntrack_count` is per namespace (`versions::CONNTRACK_MAX_INIT_NETNS_ONLY`): the lab fills the
//! node namespace's own table up to the host's max with assured UDP entries between documentation
//! addresses (198.18.0.0/15, RFC 2544), inserted over ctnetlink as `conntrack -I --status
//! ASSURED,SEEN_REPLY` would, in batches. Assured entries are what early_drop cannot evict, so the
//! kernel refuses new flows exactly as on a node whose table filled with established connections.
//! The entries go with the namespace.

use crate::error::{LabError, Result};
use crate::kube::Service;
use crate::lab::{Lab, Outcome};
use crate::scene::{Recorded, Scene};
use crate::traffic::{self, addr, Behaviour, ConnectOpts};
use netsleuth_node::parse::netlink::{attr, messages, put_attr, Request, Subsystem};
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

const NAME: &str = netsleuth_core::detect::conntrack_table_full::INCIDENT.id;
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 10);
const BACKEND_A: Ipv4Addr = Ipv4Addr::new(10, 244, 2, 11);
const BACKEND_B: Ipv4Addr = Ipv4Addr::new(10, 244, 2, 12);
const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 20);
/// Refuse to fill a table larger than this (memory: ~320 bytes per entry in the kernel).
const MAX_FILL: u64 = 1_100_000;
/// The mitigated run fills this share of the table (percent): the same entries on a table sized
/// 1.4× larger, below the 75 % a node check calls a risk.
const MITIGATED_FILL_PCT: u64 = 70;
const CONNECT_TIMEOUT: Duration = Duration::from_millis(2500);

pub fn run(lab: &mut Lab) -> Result<Recorded> {
    let live = lab
        .build(
            Scene::new()
                .pod("client", CLIENT)
                .remote_pod("backend-a", BACKEND_A)
                .remote_pod("backend-b", BACKEND_B)
                .service(Service::new(
                    "default/web:http",
                    VIP,
                    80,
                    "tcp",
                    &[(BACKEND_A, 8080)],
                ))
                .serve("backend-a", 8080, Behaviour::Echo)
                .serve("backend-b", 8080, Behaviour::Echo),
        )?
        .observe()?;
    let node = live.node();
    let max: u64 = node
        .sysctl_get("net.netfilter.nf_conntrack_max")
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| LabError::MissingKernelFeature {
            what: "net.netfilter.nf_conntrack_max in the lab's node namespace".into(),
            hint:
                "load it on the host with `modprobe nf_conntrack` (the lab does not load modules)"
                    .into(),
        })?;
    if max > MAX_FILL {
        return Err(LabError::MissingKernelFeature {
            what: format!("a conntrack table the lab can fill: the host's nf_conntrack_max is {max} (the lab fills at most {MAX_FILL} entries)"),
            hint: "run the scenario on a host with nf_conntrack_max ≤ 1100000 (the lab never changes the host's value)".into(),
        });
    }
    let mitigated = live.mitigated;

    // The client's long-lived connection, made before the table fills.
    let (tx_go, rx_go) = std::sync::mpsc::channel::<()>();
    let client = live.spawn("client", move || {
        let mut c0 = traffic::connect(
            addr(BACKEND_A, 8080),
            Duration::from_secs(3),
            ConnectOpts::default(),
        )
        .map_err(|e| {
            LabError::traffic(NAME, format!("first connection to {BACKEND_A}:8080: {e}"))
        })?;
        traffic::request(&mut c0, "before\n", Duration::from_secs(2))
            .map_err(|e| LabError::traffic(NAME, format!("request before the fill: {e}")))?;
        // Wait for the table to fill.
        rx_go
            .recv_timeout(Duration::from_secs(20))
            .map_err(|_| LabError::traffic(NAME, "the table was not filled in 20 s"))?;
        let t0 = Instant::now();
        let attempts: Vec<_> = [addr(BACKEND_A, 8080), addr(BACKEND_B, 8080), addr(VIP, 80)]
            .into_iter()
            .map(|dst| {
                std::thread::spawn(move || {
                    let r = traffic::connect(dst, CONNECT_TIMEOUT, ConnectOpts::default())
                        .and_then(|mut s| {
                            traffic::request(&mut s, "new\n", Duration::from_secs(2))
                        });
                    (dst, r.map(|_| ()))
                })
            })
            .collect();
        // The old connection keeps talking while the new ones try.
        let mut old_ok = 0;
        let mut old_failed = Vec::new();
        while t0.elapsed() < CONNECT_TIMEOUT + Duration::from_millis(500) {
            match traffic::request(&mut c0, "still here\n", Duration::from_secs(1)) {
                Ok(_) => old_ok += 1,
                Err(e) => old_failed.push(traffic::errno_name(&e)),
            }
            std::thread::sleep(Duration::from_millis(400));
        }
        let results: Vec<_> = attempts
            .into_iter()
            .map(|h| h.join().expect("connect thread"))
            .collect();
        Ok((results, old_ok, old_failed))
    })?;

    // Fill the node's table (this thread enters the node namespace).
    let fill = live.run("node", move || {
        let node_count = read_count()?;
        let target = if mitigated {
            max * MITIGATED_FILL_PCT / 100
        } else {
            max
        };
        let t = Instant::now();
        let inserted = fill_table(target.saturating_sub(node_count))?;
        Ok((node_count, inserted, read_count()?, t.elapsed()))
    });
    let _ = tx_go.send(());
    let (before, inserted, after, took) = fill?;
    let (results, old_ok, old_failed) = client.join()?;

    let mut out = Outcome::default();
    out.event(format!(
        "node namespace: nf_conntrack_count {before} → {after} of nf_conntrack_max {max} after inserting {inserted} assured entries in {:.1} s",
        took.as_secs_f64()
    ));
    let mut failed = 0;
    for (dst, r) in &results {
        match r {
            Ok(()) => out.event(format!("new connection {CLIENT} → {dst}: answered")),
            Err(e) => {
                failed += 1;
                out.event(format!(
                    "new connection {CLIENT} → {dst}: {}",
                    traffic::errno_name(e)
                ))
            }
        }
    }
    out.event(format!(
        "existing connection {CLIENT} → {BACKEND_A}:8080 during the attempts: {old_ok} requests answered{}",
        if old_failed.is_empty() { String::new() } else { format!(", failures: {}", old_failed.join(", ")) }
    ));
    out.measure("nf_conntrack_max", max as f64, "");
    out.measure("nf_conntrack_count after the fill", after as f64, "");
    out.measure("new connections that failed", failed as f64, "");
    out.measure(
        "requests answered on the existing connection",
        old_ok as f64,
        "",
    );
    if failed == results.len() && old_ok > 0 && old_failed.is_empty() {
        out.symptom = Some(format!(
            "with the node's conntrack table full ({after} of {max}), all {failed} new connections (to {BACKEND_A}, {BACKEND_B} and {VIP}) timed out while the existing connection to {BACKEND_A} answered {old_ok} requests"
        ));
    } else {
        out.fine = format!(
            "{} of {} new connections answered with the table at {after} of {max}; the existing connection answered {old_ok} requests",
            results.len() - failed,
            results.len()
        );
    }
    Ok(live.finish(out))
}

fn read_count() -> Result<u64> {
    let path = "/proc/sys/net/netfilter/nf_conntrack_count";
    std::fs::read_to_string(path)
        .map_err(|e| LabError::io(format!("reading {path}"), e))?
        .trim()
        .parse()
        .map_err(|_| LabError::traffic(NAME, "nf_conntrack_count is not a number"))
}

// ctnetlink (linux/netfilter/nfnetlink_conntrack.h).
const IPCTNL_MSG_CT_NEW: u16 = 0;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_REPLY: u16 = 2;
const CTA_STATUS: u16 = 3;
const CTA_TIMEOUT: u16 = 7;
const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_SRC_PORT: u16 = 2;
const CTA_PROTO_DST_PORT: u16 = 3;
const IPS_SEEN_REPLY: u32 = 1 << 1;
const IPS_ASSURED: u32 = 1 << 2;
/// A created entry is confirmed (inserted) at once; a status that says otherwise is refused (EBUSY).
const IPS_CONFIRMED: u32 = 1 << 3;
const AF_INET: u8 = 2;
const ENTRY_TIMEOUT_S: u32 = 300;
const BATCH: usize = 256;

fn tuple(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> Vec<u8> {
    let mut ip = Vec::new();
    put_attr(&mut ip, CTA_IP_V4_SRC, &src.octets());
    put_attr(&mut ip, CTA_IP_V4_DST, &dst.octets());
    let mut proto = Vec::new();
    put_attr(&mut proto, CTA_PROTO_NUM, &[17]);
    put_attr(&mut proto, CTA_PROTO_SRC_PORT, &sport.to_be_bytes());
    put_attr(&mut proto, CTA_PROTO_DST_PORT, &dport.to_be_bytes());
    let mut t = Vec::new();
    put_attr(&mut t, CTA_TUPLE_IP | attr::F_NESTED, &ip);
    put_attr(&mut t, CTA_TUPLE_PROTO | attr::F_NESTED, &proto);
    t
}

/// Inserts `n` assured UDP entries into the calling thread's namespace's conntrack table, in
/// batches on one NETLINK_NETFILTER socket; returns how many were sent (refusals at the limit are
/// not read back: the caller reads nf_conntrack_count).
fn fill_table(n: u64) -> Result<u64> {
    // SAFETY: a plain socket call; the fd is owned from here on.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            libc::NETLINK_NETFILTER,
        )
    };
    if fd < 0 {
        return Err(LabError::io(
            "opening a NETLINK_NETFILTER socket",
            std::io::Error::last_os_error(),
        ));
    }
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let server = Ipv4Addr::new(198, 19, 0, 1);
    let mut buf = Vec::with_capacity(BATCH * 128);
    let mut sent = 0u64;
    let mut drain = [0u8; 65536];
    let mut first_error: Option<i32> = None;
    while sent < n {
        buf.clear();
        let batch = (n - sent).min(BATCH as u64);
        for k in 0..batch {
            let i = sent + k;
            let client =
                Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 0, 0)) + (i / 50_000) as u32);
            let sport = 10_000 + (i % 50_000) as u16;
            let req = Request::new(
                Subsystem::Ctnetlink,
                IPCTNL_MSG_CT_NEW,
                NLM_F_CREATE | NLM_F_EXCL,
                i as u32,
                AF_INET,
            )
            .attr(
                CTA_TUPLE_ORIG | attr::F_NESTED,
                &tuple(client, sport, server, 9),
            )
            .attr(
                CTA_TUPLE_REPLY | attr::F_NESTED,
                &tuple(server, 9, client, sport),
            )
            .attr(
                CTA_STATUS,
                &(IPS_ASSURED | IPS_SEEN_REPLY | IPS_CONFIRMED).to_be_bytes(),
            )
            .attr(CTA_TIMEOUT, &ENTRY_TIMEOUT_S.to_be_bytes())
            .finish();
            buf.extend_from_slice(&req);
        }
        // SAFETY: the buffer is passed with its length.
        let r = unsafe {
            libc::send(
                fd.as_raw_fd(),
                buf.as_ptr() as *const libc::c_void,
                buf.len(),
                0,
            )
        };
        if r < 0 {
            return Err(LabError::io(
                "sending conntrack entries over ctnetlink",
                std::io::Error::last_os_error(),
            ));
        }
        sent += batch;
        // Error replies (EEXIST, ENOMEM at the limit) are not needed: read them away so that the
        // socket's buffer never fills.
        loop {
            // SAFETY: the buffer is passed with its length.
            let r = unsafe {
                libc::recv(
                    fd.as_raw_fd(),
                    drain.as_mut_ptr() as *mut libc::c_void,
                    drain.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if r <= 0 {
                break;
            }
            if first_error.is_none() {
                first_error =
                    messages(&drain[..r as usize]).find_map(|m| m.errno().filter(|e| *e != 0));
            }
        }
    }
    if let Some(e) = first_error {
        if read_count()? < n / 2 {
            return Err(LabError::io(
                "inserting conntrack entries over ctnetlink",
                std::io::Error::from_raw_os_error(e.abs()),
            ));
        }
    }
    Ok(sent)
}
