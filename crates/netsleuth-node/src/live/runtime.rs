//! The watch loop: opens every source of every watched namespace, polls them, stamps and pushes their
//! events into the [`Correlator`], samples counters and sockets each second, follows namespaces that
//! appear, and hands every output to the caller. Threads and `poll`, no async runtime.

use super::conntrack::CtSource;
use super::correlate::SocketPlan;
use super::correlate::{Correlator, Output, OwnerLookup};
use super::dropmon::{DropMonitor, Owner};
use super::event::{Event, NsId, Stamped};
use super::observe::{Observe, Tick};
use super::rtnl::RtSource;
use super::sockets::{Owners, SockSource};
use super::taps::{TapOptions, TapTotals, Taps};
use crate::collect::run::in_netns;
use crate::parse::netstat::{parse_counters, parse_stat_table, Counters};
use std::collections::BTreeSet;
use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A namespace to watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NsTarget {
    /// How findings name it (`node`, `/run/netns/pod-a`, `pid 812 (nginx)`).
    pub label: String,
    /// Its namespace file; `None` = the watcher's own namespace.
    pub path: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct WatchOptions {
    pub targets: Vec<NsTarget>,
    /// Also watch every namespace a process lives in, and those that appear later.
    pub processes: bool,
    /// Stop after this long (`None`: until `stop` is set).
    pub duration: Option<Duration>,
    /// Receive buffer of each event socket (bytes).
    pub rcvbuf: i32,
    pub proc_root: PathBuf,
    /// Use the drop-reason tracepoint (creates a private tracefs instance).
    pub drop_reasons: bool,
    /// Told once every source is open and the first dumps are read (before the first event is waited for).
    pub ready: Option<std::sync::mpsc::Sender<()>>,
    /// Sees every event and output, and a tick each second (the CLI's `--metrics`).
    pub observer: Option<std::sync::Arc<dyn Observe>>,
    /// The packet tap (on by default) and `--record`.
    pub tap: TapOptions,
}

impl Default for WatchOptions {
    fn default() -> Self {
        WatchOptions {
            targets: vec![NsTarget {
                label: "node".into(),
                path: None,
            }],
            processes: true,
            duration: None,
            rcvbuf: 8 << 20,
            proc_root: PathBuf::from("/proc"),
            drop_reasons: true,
            ready: None,
            observer: None,
            tap: TapOptions::default(),
        }
    }
}

/// What the watcher did, for the summary.
#[derive(Debug, Clone, Default)]
pub struct WatchSummary {
    pub namespaces: Vec<String>,
    pub events: u64,
    pub conntrack_events: u64,
    pub losses: u64,
    pub resyncs: u64,
    pub findings: Vec<netsleuth_core::finding::Finding>,
    pub notices: Vec<String>,
    pub seconds: f64,
    pub tap: TapTotals,
}

struct NsSources {
    id: NsId,
    /// The namespace's inode, and how it was found: a process in it (gone when no process is left),
    /// else its file (gone when the file is).
    inode: u64,
    path: Option<PathBuf>,
    from_process: bool,
    closed: bool,
    ct: Option<CtSource>,
    rt: Option<RtSource>,
    socks: Option<SockSource>,
    /// /proc/net/netstat, snmp, stat/rt_cache of the namespace (opened inside it).
    files: Vec<(String, File)>,
    /// Its nf_conntrack_tcp_timeout_established (opened inside it, read each second).
    ct_timeout: Option<File>,
    /// TcpExt.ListenOverflows at the last tick: when it rises the listeners are dumped that tick.
    listen_overflows: Option<u64>,
    /// The last tick dumped its sockets (a tick that does not clears what the correlator holds).
    sockets_dumped: bool,
}

/// How long events may wait in their socket before the loop reads them.
const BATCH: Duration = Duration::from_millis(50);
/// Conntrack events in one pass from which the next pass does not wait `BATCH` (≥ 20 k events/s):
/// at such rates the wait saves little CPU per event, and the socket buffer must not also absorb it.
const BUSY_PASS: u64 = 1_000;

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

/// CLOCK_REALTIME − CLOCK_MONOTONIC, to place the tracepoint's monotonic stamps on the wall clock.
fn mono_to_real_offset() -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    now_ns() - (ts.tv_sec * 1_000_000_000 + ts.tv_nsec)
}

/// Socket owners from `/proc/*/fd`: one walk of every process's fds is the costliest thing an idle
/// watch does when connections are at risk (half its CPU, BENCHMARKS.md "Watch"), so the walk is kept:
/// a known socket is answered from it for [`OWNERS_MAX_AGE`], and an unknown one walks again (at most
/// once a second) unless a walk made since it was first asked for missed it.
struct ProcOwners {
    proc_root: PathBuf,
    cache: Option<(Instant, Owners)>,
    /// Inodes the last walk did not find (a socket whose owner is not visible here).
    missing: std::collections::HashSet<u32>,
}

/// How long a walk of `/proc/*/fd` answers for sockets it found.
const OWNERS_MAX_AGE: Duration = Duration::from_secs(60);
/// The least time between two walks made for sockets the last one did not know.
const OWNERS_MIN_INTERVAL: Duration = Duration::from_secs(1);

impl OwnerLookup for ProcOwners {
    fn owner(&mut self, _ns: NsId, inode: u32) -> Option<String> {
        let age = self.cache.as_ref().map(|(t, _)| t.elapsed());
        let known = self
            .cache
            .as_ref()
            .and_then(|(_, o)| o.get(inode))
            .is_some();
        let walk = match age {
            None => true,
            Some(a) if a > OWNERS_MAX_AGE => true,
            Some(a) => !known && !self.missing.contains(&inode) && a > OWNERS_MIN_INTERVAL,
        };
        if walk {
            self.cache = Some((Instant::now(), Owners::scan(&self.proc_root)));
            self.missing.clear();
        }
        let found = self.cache.as_ref()?.1.get(inode).map(str::to_string);
        if found.is_none() && walk {
            // Not found by a walk made after it was asked for: not walked for again until the
            // walk ages out.
            self.missing.insert(inode);
        }
        found
    }
}

fn open_ns(id: NsId, path: Option<&Path>, rcvbuf: i32) -> (NsSources, Vec<Event>) {
    // rt_cache's counters are kernel-wide: read once, with the first namespace.
    let kernel_wide = id == 0;
    let r = in_netns(path, || {
        let mut unavailable = Vec::new();
        let ct = CtSource::open(rcvbuf)
            .map_err(|e| unavailable.push(Event::Unavailable {
                source: "conntrack events".into(),
                why: format!("{e} (hint: needs CAP_NET_ADMIN and the nf_conntrack module)"),
                costs: "address-flush, expiry and insert_failed chains (conntrack-snat-remap, conntrack-dnat-rebalance, snat-port-clash, dns-conntrack-race) are not followed here".into(),
            }))
            .ok();
        let rt = RtSource::open(rcvbuf)
            .map_err(|e| unavailable.push(Event::Unavailable {
                source: "rtnetlink".into(),
                why: e.to_string(),
                costs: "address deletions are not seen, so a MASQUERADE flush cannot be tied to its cause".into(),
            }))
            .ok();
        let socks = SockSource::open()
            .map_err(|e| {
                unavailable.push(Event::Unavailable {
                    source: "sock_diag".into(),
                    why: e.to_string(),
                    costs: "no connection is predicted to break and no listener is named".into(),
                })
            })
            .ok();
        let mut files = Vec::new();
        for (name, rel) in [
            ("netstat", "netstat"),
            ("snmp", "snmp"),
            ("rt_cache", "stat/rt_cache"),
        ] {
            if name == "rt_cache" && !kernel_wide {
                continue;
            }
            match File::open(Path::new("/proc/thread-self/net").join(rel)) {
                Ok(f) => files.push((name.to_string(), f)),
                Err(e) => unavailable.push(Event::Unavailable {
                    source: format!("/proc/net/{rel}"),
                    why: e.to_string(),
                    costs: match name {
                        "rt_cache" => "martian drops are seen only through the drop-reason tracepoint (kernel-wide)".into(),
                        _ => "ListenOverflows and other TCP counters are not sampled here".into(),
                    },
                }),
            }
        }
        let ct_timeout =
            File::open("/proc/sys/net/netfilter/nf_conntrack_tcp_timeout_established").ok();
        (ct, rt, socks, files, ct_timeout, unavailable)
    });
    match r {
        Ok((ct, rt, socks, files, ct_timeout, unavailable)) => (
            NsSources {
                id,
                inode: 0,
                path: None,
                from_process: false,
                closed: false,
                ct,
                rt,
                socks,
                files,
                ct_timeout,
                listen_overflows: None,
                sockets_dumped: false,
            },
            unavailable,
        ),
        Err(why) => (
            NsSources {
                id,
                inode: 0,
                path: None,
                from_process: false,
                closed: true,
                ct: None,
                rt: None,
                socks: None,
                files: Vec::new(),
                ct_timeout: None,
                listen_overflows: None,
                sockets_dumped: false,
            },
            vec![Event::Unavailable {
                source: "namespace".into(),
                why,
                costs: "nothing in it is watched".into(),
            }],
        ),
    }
}

fn read_counters(files: &[(String, File)]) -> Counters {
    let mut c = Counters::new();
    let mut buf = vec![0u8; 64 << 10];
    for (name, f) in files {
        let Ok(n) = f.read_at(&mut buf, 0) else {
            continue;
        };
        let text = String::from_utf8_lossy(&buf[..n]);
        if name == "rt_cache" {
            for (k, v) in parse_stat_table(&text).value {
                c.insert(format!("rt_cache.{k}"), v);
            }
        } else {
            c.extend(parse_counters(&text).value);
        }
    }
    c
}

/// The namespaces processes live in now (inode → (pid, comm)), except those in `known`.
fn process_namespaces(proc_root: &Path, known: &BTreeSet<u64>) -> Vec<(u64, u32, String)> {
    let mut out: Vec<(u64, u32, String)> = Vec::new();
    let Ok(dir) = std::fs::read_dir(proc_root) else {
        return out;
    };
    let mut seen = known.clone();
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(m) = std::fs::metadata(e.path().join("ns/net")) else {
            continue;
        };
        if seen.insert(m.ino()) {
            let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
            out.push((m.ino(), pid, comm.trim().to_string()));
        }
    }
    out
}

/// Processes whose network namespace cannot be looked at (`/proc/PID/ns/net` refused: a process of
/// another uid without CAP_SYS_PTRACE), and one of them (pid, comm).
fn unreadable_namespaces(proc_root: &Path) -> (usize, Option<(u32, String)>) {
    let mut count = 0;
    let mut first = None;
    let Ok(dir) = std::fs::read_dir(proc_root) else {
        return (0, None);
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let refused = std::fs::metadata(e.path().join("ns/net"))
            .is_err_and(|err| err.kind() == std::io::ErrorKind::PermissionDenied);
        if refused {
            count += 1;
            if first.is_none() {
                let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
                first = Some((pid, comm.trim().to_string()));
            }
        }
    }
    (count, first)
}

/// Watches until `stop` is set or the duration ends; every output goes to `on_output` as it happens.
pub fn watch(
    opts: &WatchOptions,
    stop: &AtomicBool,
    mut on_output: impl FnMut(&Output),
) -> WatchSummary {
    let started = Instant::now();
    let mut corr = Correlator::new();
    let mut owners = ProcOwners {
        proc_root: opts.proc_root.clone(),
        cache: None,
        missing: Default::default(),
    };
    let mut st = State {
        corr: &mut corr,
        owners: &mut owners,
        summary: WatchSummary::default(),
        on_output: &mut on_output,
        sources: Vec::new(),
        known: BTreeSet::new(),
        observer: opts.observer.clone(),
        taps: Taps::new(opts.tap.clone()),
    };
    for t in &opts.targets {
        st.add_ns(opts, t.label.clone(), t.path.clone(), false);
    }
    if opts.processes {
        // A namespace that cannot be looked at is skipped by the discovery: say so once, or a pod
        // whose processes run as another user would go unwatched without a word.
        if let (n @ 1.., Some((pid, comm))) = unreadable_namespaces(&opts.proc_root) {
            st.emit(Stamped {
                ts_ns: now_ns(),
                ns: None,
                event: Event::Unavailable {
                    source: format!("the network namespaces of {n} process(es) (e.g. pid {pid}, {comm})"),
                    why: "permission denied on /proc/PID/ns/net (hint: a process of another user, or one that is not dumpable, needs CAP_SYS_PTRACE; an LSM or another user namespace can refuse even then)".into(),
                    costs: "the pods those processes are in are not watched".into(),
                },
            });
        }
    }
    if !opts.drop_reasons {
        st.emit(Stamped {
            ts_ns: now_ns(),
            ns: None,
            event: Event::Unavailable {
                source: "drop reasons (skb:kfree_skb)".into(),
                why: "turned off (--no-drop-reasons)".into(),
                costs: "martian drops are seen only through the kernel-wide in_martian_src counter (possible, not likely); no drop is named by its reason".into(),
            },
        });
    }
    let mut dropmon = if opts.drop_reasons {
        match DropMonitor::start(Owner::Watch) {
            Ok(m) => Some(m),
            Err(why) => {
                st.emit(Stamped {
                    ts_ns: now_ns(),
                    ns: None,
                    event: Event::Unavailable {
                        source: "drop reasons (skb:kfree_skb)".into(),
                        why,
                        costs: "martian drops are seen only through the per-namespace in_martian_src counter; no drop is named by its reason".into(),
                    },
                });
                None
            }
        }
    } else {
        None
    };
    if let Some(r) = &opts.ready {
        let _ = r.send(());
    }
    let mono_off = mono_to_real_offset();
    let mut buf = vec![0u8; 1 << 20];
    let mut busy = false;
    let mut next_tick = Instant::now();
    let mut next_discovery = Instant::now();
    let mut last_socket_dump = Instant::now();
    loop {
        if stop.load(Ordering::SeqCst) || opts.duration.is_some_and(|d| started.elapsed() >= d) {
            break;
        }
        // Every 2 s: namespaces that went are let go, those that appeared are followed.
        if Instant::now() >= next_discovery {
            next_discovery = Instant::now() + Duration::from_secs(2);
            st.close_gone(opts);
            if opts.processes {
                for (ino, pid, comm) in process_namespaces(&opts.proc_root, &st.known) {
                    let path = opts.proc_root.join(format!("{pid}/ns/net"));
                    st.add_ns(
                        opts,
                        format!("netns of pid {pid} ({comm}), inode {ino}"),
                        Some(path),
                        true,
                    );
                }
            }
        }
        if Instant::now() >= next_tick {
            next_tick += Duration::from_secs(1);
            if next_tick < Instant::now() {
                next_tick = Instant::now() + Duration::from_secs(1);
            }
            let ts = now_ns();
            let mut evs = Vec::new();
            // The interval follows what is followed now (a short timeout shortens it at once). The
            // namespaces to dump are worked out only when a dump is due: that walks every followed
            // entry (up to MAX_TRACKED a namespace).
            let interval = Duration::from_secs(st.corr.socket_interval_s());
            let socket_plan = (last_socket_dump.elapsed() + Duration::from_millis(50) >= interval)
                .then(|| {
                    last_socket_dump = Instant::now();
                    st.corr.socket_plan()
                });
            for s in st.sources.iter_mut().filter(|s| !s.closed) {
                if let Some(f) = &s.ct_timeout {
                    let mut b = [0u8; 32];
                    if let Ok(n) = f.read_at(&mut b, 0) {
                        if let Ok(v) = String::from_utf8_lossy(&b[..n]).trim().parse() {
                            evs.push(Stamped {
                                ts_ns: ts,
                                ns: Some(s.id),
                                event: Event::ConntrackTimeout { established_s: v },
                            });
                        }
                    }
                }
                let snmp = read_counters(&s.files);
                let overflows = snmp.get("TcpExt.ListenOverflows").copied();
                let overflowed = overflows > s.listen_overflows && s.listen_overflows.is_some();
                s.listen_overflows = overflows;
                // Sockets only where the correlator can use them: the NATed connections' ends (the
                // connections at risk, the socket of a broken one) and a listener that overflowed.
                if let Some(sk) = s.socks.as_mut() {
                    // `None` between due ticks: what was read stands.
                    let plan = socket_plan.as_ref().map(|p| p.get(&s.id));
                    let wanted = plan.map(|p| p.is_some());
                    if wanted == Some(true) || overflowed {
                        // A listener that overflowed is named from a dump (listeners are not
                        // looked up); otherwise the plan's few sockets are looked up one by one.
                        let read = match plan.flatten() {
                            Some(SocketPlan::Lookup(tuples)) if !overflowed => sk.lookup(tuples),
                            _ => sk.tcp(),
                        };
                        if let Ok(sockets) = read {
                            s.sockets_dumped = true;
                            evs.push(Stamped {
                                ts_ns: ts,
                                ns: Some(s.id),
                                event: Event::Sockets { sockets },
                            });
                        }
                    } else if wanted == Some(false) && std::mem::take(&mut s.sockets_dumped) {
                        evs.push(Stamped {
                            ts_ns: ts,
                            ns: Some(s.id),
                            event: Event::Sockets {
                                sockets: Vec::new(),
                            },
                        });
                    }
                }
                let conntrack = match s.ct.as_mut().map(|c| c.stats()) {
                    Some(Ok(st)) => Some(st),
                    Some(Err(e)) => {
                        evs.push(Stamped {
                            ts_ns: ts,
                            ns: Some(s.id),
                            event: Event::Unavailable {
                                source: "conntrack statistics".into(),
                                why: e.to_string(),
                                costs: "insert_failed is not followed here".into(),
                            },
                        });
                        None
                    }
                    None => None,
                };
                evs.push(Stamped {
                    ts_ns: ts,
                    ns: Some(s.id),
                    event: Event::Counters { snmp, conntrack },
                });
            }
            for e in evs {
                st.emit(e);
            }
            for o in st.taps.tick(now_ns()) {
                st.output(o);
            }
            if let Some(o) = &st.observer {
                o.tick(&st.tick(dropmon.as_ref(), opts.drop_reasons));
            }
        }
        // Poll every event source until the next tick.
        let mut fds: Vec<libc::pollfd> = Vec::new();
        let mut who: Vec<(usize, u8)> = Vec::new();
        for (i, s) in st.sources.iter().enumerate() {
            if let Some(c) = &s.ct {
                fds.push(libc::pollfd {
                    fd: c.fd(),
                    events: libc::POLLIN,
                    revents: 0,
                });
                who.push((i, 0));
            }
            if let Some(r) = &s.rt {
                fds.push(libc::pollfd {
                    fd: r.fd(),
                    events: libc::POLLIN,
                    revents: 0,
                });
                who.push((i, 1));
            }
        }
        if let Some(fd) = dropmon.as_ref().and_then(|d| d.fd()) {
            fds.push(libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            });
            who.push((usize::MAX, 2));
        }
        for (fd, id) in st.taps.fds() {
            fds.push(libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            });
            who.push((id as usize, 3));
        }
        let wait = next_tick
            .saturating_duration_since(Instant::now())
            .as_millis()
            .min(200) as i32;
        let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, wait) };
        if r <= 0 {
            continue;
        }
        // Let events gather for a moment: one wakeup and a few large reads per batch instead of a
        // wakeup per event (the CPU at 10 k events/s falls ~5x; BENCHMARKS.md "Watch"). Events are
        // stamped when read, so a stamp is late by at most this much; the socket buffers hold far more.
        if !busy {
            std::thread::sleep(BATCH);
        }
        let conntrack_before = st.summary.conntrack_events;
        for (p, (i, kind)) in fds.iter().zip(who.iter().copied()) {
            if p.revents == 0 {
                continue;
            }
            let ts = now_ns();
            let mut evs: Vec<Stamped> = Vec::new();
            match kind {
                0 => {
                    let s = &mut st.sources[i];
                    let id = s.id;
                    let ct = s.ct.as_mut().expect("polled");
                    let mut n = 0u64;
                    let lost = ct.read(&mut buf, &mut |kind, entry, by_userspace| {
                        n += 1;
                        evs.push(Stamped {
                            ts_ns: ts,
                            ns: Some(id),
                            event: Event::Conntrack {
                                kind,
                                entry,
                                by_userspace,
                            },
                        });
                    });
                    st.summary.conntrack_events += n;
                    if lost {
                        st.summary.losses += 1;
                        evs.push(Stamped {
                            ts_ns: ts,
                            ns: Some(id),
                            event: Event::Loss {
                                source: "conntrack events".into(),
                                count: ct.losses,
                            },
                        });
                        match ct.dump_table() {
                            Ok(entries) => {
                                st.summary.resyncs += 1;
                                let what =
                                    format!("conntrack table dumped: {} entries", entries.len());
                                evs.push(Stamped {
                                    ts_ns: now_ns(),
                                    ns: Some(id),
                                    event: Event::ConntrackTable { entries },
                                });
                                evs.push(Stamped {
                                    ts_ns: now_ns(),
                                    ns: Some(id),
                                    event: Event::Resynced {
                                        source: "conntrack events".into(),
                                        what,
                                    },
                                });
                            }
                            Err(e) => evs.push(Stamped {
                                ts_ns: now_ns(),
                                ns: Some(id),
                                event: Event::Unavailable {
                                    source: "conntrack resync".into(),
                                    why: e.to_string(),
                                    costs: "state may be stale until the next loss-free dump"
                                        .into(),
                                },
                            }),
                        }
                    }
                }
                1 => {
                    let s = &mut st.sources[i];
                    let id = s.id;
                    let rt = s.rt.as_mut().expect("polled");
                    let mut out = Vec::new();
                    let lost = rt.read(&mut buf, &mut out);
                    evs.extend(out.into_iter().map(|e| Stamped {
                        ts_ns: ts,
                        ns: Some(id),
                        event: e,
                    }));
                    if lost {
                        st.summary.losses += 1;
                        evs.push(Stamped {
                            ts_ns: ts,
                            ns: Some(id),
                            event: Event::Loss {
                                source: "rtnetlink".into(),
                                count: rt.losses,
                            },
                        });
                        if let Ok(dump) = rt.dump() {
                            st.summary.resyncs += 1;
                            let what =
                                format!("links and addresses dumped: {} objects", dump.len());
                            evs.extend(dump.into_iter().map(|e| Stamped {
                                ts_ns: now_ns(),
                                ns: Some(id),
                                event: e,
                            }));
                            evs.push(Stamped {
                                ts_ns: now_ns(),
                                ns: Some(id),
                                event: Event::Resynced {
                                    source: "rtnetlink".into(),
                                    what,
                                },
                            });
                        }
                    }
                }
                3 => st.taps.read(i as NsId),
                _ => {
                    if let Some(d) = dropmon.as_mut() {
                        d.drain(|ev| {
                            evs.push(Stamped {
                                ts_ns: ev.mono_ns.saturating_add(mono_off),
                                ns: None,
                                event: Event::Drop {
                                    reason: ev.reason.clone(),
                                    location: ev.location.clone(),
                                },
                            })
                        });
                    }
                }
            }
            for e in evs {
                st.emit(e);
            }
        }
        busy = st.summary.conntrack_events - conntrack_before >= BUSY_PASS;
    }
    if let Some(d) = dropmon.take() {
        let totals = d.finish();
        if totals.overrun > 0 {
            let text = format!(
                "drop reasons: the trace ring overwrote {} event(s); counts are lower bounds",
                totals.overrun
            );
            st.summary.notices.push(text.clone());
            (st.on_output)(&Output::Notice {
                ts_ns: now_ns(),
                text,
            });
        }
    }
    let taps = std::mem::replace(
        &mut st.taps,
        Taps::new(TapOptions {
            enabled: false,
            ..TapOptions::default()
        }),
    );
    let (outs, tap_totals, tap_findings) = taps.finish(now_ns());
    for o in outs {
        st.output(o);
    }
    let mut summary = std::mem::take(&mut st.summary);
    drop(st);
    summary.events = corr.events;
    summary.findings = corr.summary();
    summary.tap = tap_totals;
    // The tap's findings beside the correlator's: one per incident, at its best confidence.
    for f in tap_findings {
        match summary.findings.iter_mut().find(|g| g.id == f.id) {
            Some(g) if g.confidence < f.confidence => *g = f,
            Some(_) => {}
            None => summary.findings.push(f),
        }
    }
    summary.seconds = started.elapsed().as_secs_f64();
    summary
}

struct State<'a> {
    corr: &'a mut Correlator,
    owners: &'a mut ProcOwners,
    summary: WatchSummary,
    on_output: &'a mut dyn FnMut(&Output),
    sources: Vec<NsSources>,
    known: BTreeSet<u64>,
    observer: Option<std::sync::Arc<dyn Observe>>,
    taps: Taps,
}

impl State<'_> {
    /// Closes the sources of namespaces that are gone: holding their sockets would keep them alive.
    fn close_gone(&mut self, opts: &WatchOptions) {
        let live: BTreeSet<u64> = process_namespaces(&opts.proc_root, &BTreeSet::new())
            .into_iter()
            .map(|(ino, _, _)| ino)
            .collect();
        let mut gone = Vec::new();
        for s in self
            .sources
            .iter_mut()
            .filter(|s| !s.closed && s.inode != 0)
        {
            let is_gone = if s.from_process {
                !live.contains(&s.inode)
            } else if let Some(p) = &s.path {
                std::fs::metadata(p).map(|m| m.ino()).ok() != Some(s.inode)
            } else {
                false
            };
            if is_gone {
                s.closed = true;
                s.ct = None;
                s.rt = None;
                s.socks = None;
                s.files.clear();
                s.ct_timeout = None;
                self.known.remove(&s.inode);
                self.taps.close(s.id);
                gone.push(s.id);
            }
        }
        for id in gone {
            self.emit(Stamped {
                ts_ns: now_ns(),
                ns: Some(id),
                event: Event::NamespaceGone,
            });
        }
    }

    /// An output that does not come from the correlator (the tap's).
    fn output(&mut self, o: Output) {
        if let Output::Notice { text, .. } = &o {
            self.summary.notices.push(text.clone());
        }
        if let Some(obs) = &self.observer {
            obs.output(&o);
        }
        (self.on_output)(&o);
    }

    fn emit(&mut self, ev: Stamped) {
        if let Some(obs) = &self.observer {
            obs.event(&ev);
        }
        for o in self.corr.push(ev, self.owners) {
            if let Output::Notice { text, .. } = &o {
                self.summary.notices.push(text.clone());
            }
            if let Some(obs) = &self.observer {
                obs.output(&o);
            }
            (self.on_output)(&o);
        }
    }

    /// What the observer's tick says: the sources of every namespace watched now, open or not.
    fn tick(&self, dropmon: Option<&DropMonitor>, drop_reasons: bool) -> Tick {
        let mut t = Tick {
            connections_at_risk: self.corr.at_risk_now.len(),
            drop_ring_overrun: dropmon.map(DropMonitor::overrun),
            ..Tick::default()
        };
        if drop_reasons {
            t.sources.push((None, "drop reasons", dropmon.is_some()));
        }
        for s in self.sources.iter().filter(|s| !s.closed) {
            t.namespaces += 1;
            let has_file = |name: &str| s.files.iter().any(|(n, _)| n == name);
            t.sources.extend([
                (Some(s.id), "conntrack events", s.ct.is_some()),
                (Some(s.id), "rtnetlink", s.rt.is_some()),
                (Some(s.id), "sock_diag", s.socks.is_some()),
                (Some(s.id), "/proc/net/netstat", has_file("netstat")),
                (Some(s.id), "/proc/net/snmp", has_file("snmp")),
            ]);
        }
        for (id, open, passed, dropped) in self.taps.packet_counts() {
            if self.sources.iter().any(|s| s.id == id && !s.closed) {
                t.sources.push((Some(id), "packet tap", open));
                if open {
                    t.tap_packets.push((id, passed, dropped));
                }
            }
        }
        t
    }

    fn add_ns(
        &mut self,
        opts: &WatchOptions,
        label: String,
        path: Option<PathBuf>,
        from_process: bool,
    ) {
        let meta_path = path
            .clone()
            .unwrap_or_else(|| opts.proc_root.join("thread-self/ns/net"));
        let inode = std::fs::metadata(&meta_path).map(|m| m.ino()).unwrap_or(0);
        if inode != 0 && !self.known.insert(inode) {
            return; // the same namespace under another name
        }
        let id = self.sources.len() as NsId;
        let (mut s, unavailable) = open_ns(id, path.as_deref(), opts.rcvbuf);
        (s.inode, s.path, s.from_process) = (inode, path.clone(), from_process);
        let ts = now_ns();
        self.summary.namespaces.push(label.clone());
        let label_for_tap = label.clone();
        self.emit(Stamped {
            ts_ns: ts,
            ns: Some(id),
            event: Event::Namespace { label },
        });
        for u in unavailable {
            self.emit(Stamped {
                ts_ns: ts,
                ns: Some(id),
                event: u,
            });
        }
        for o in self.taps.add(id, &label_for_tap, path.as_deref(), ts) {
            self.output(o);
        }
        if let Some(rt) = s.rt.as_mut() {
            for ev in rt.dump().unwrap_or_default() {
                self.emit(Stamped {
                    ts_ns: ts,
                    ns: Some(id),
                    event: ev,
                });
            }
        }
        if let Some(ct) = s.ct.as_mut() {
            if let Ok(entries) = ct.dump_table() {
                self.emit(Stamped {
                    ts_ns: ts,
                    ns: Some(id),
                    event: Event::ConntrackTable { entries },
                });
            }
        }
        self.sources.push(s);
    }
}

/// One look (no waiting): the connections at risk now in `targets` (and, with `processes`, every
/// namespace a process lives in), for `check`. Returns the latent-risk finding (if any connection is
/// at risk), the ranked list, and notes on what could not be read.
pub fn connections_at_risk(
    targets: &[NsTarget],
    processes: bool,
    proc_root: &Path,
) -> (
    Option<netsleuth_core::finding::Finding>,
    Vec<super::correlate::AtRisk>,
    Vec<String>,
) {
    let mut corr = Correlator::new();
    let mut owners = ProcOwners {
        proc_root: proc_root.to_path_buf(),
        cache: None,
        missing: Default::default(),
    };
    let mut notes = Vec::new();
    let mut all: Vec<(String, Option<PathBuf>)> = targets
        .iter()
        .map(|t| (t.label.clone(), t.path.clone()))
        .collect();
    let mut known: BTreeSet<u64> = BTreeSet::new();
    if processes {
        for t in targets {
            let p = t
                .path
                .clone()
                .unwrap_or_else(|| proc_root.join("thread-self/ns/net"));
            if let Ok(m) = std::fs::metadata(p) {
                known.insert(m.ino());
            }
        }
        for (ino, pid, comm) in process_namespaces(proc_root, &known) {
            all.push((
                format!("netns of pid {pid} ({comm}), inode {ino}"),
                Some(proc_root.join(format!("{pid}/ns/net"))),
            ));
        }
    }
    let ts = now_ns();
    for (i, (label, path)) in all.into_iter().enumerate() {
        let id = i as NsId;
        let (mut s, unavailable) = open_ns(id, path.as_deref(), 1 << 20);
        let mut evs = vec![Event::Namespace {
            label: label.clone(),
        }];
        for u in unavailable {
            if let Event::Unavailable { source, why, .. } = &u {
                notes.push(format!("connections at risk: {source} in {label}: {why}"));
            }
        }
        if let Some(f) = &s.ct_timeout {
            let mut b = [0u8; 32];
            if let Ok(n) = f.read_at(&mut b, 0) {
                if let Ok(v) = String::from_utf8_lossy(&b[..n]).trim().parse() {
                    evs.push(Event::ConntrackTimeout { established_s: v });
                }
            }
        }
        if let Some(ct) = s.ct.as_mut() {
            match ct.dump_table() {
                Ok(entries) => evs.push(Event::ConntrackTable { entries }),
                Err(e) => notes.push(format!(
                    "connections at risk: conntrack table of {label}: {e}"
                )),
            }
        }
        if let Some(sk) = s.socks.as_mut() {
            match sk.tcp() {
                Ok(sockets) => evs.push(Event::Sockets { sockets }),
                Err(e) => notes.push(format!("connections at risk: sockets of {label}: {e}")),
            }
        }
        for event in evs {
            corr.push(
                Stamped {
                    ts_ns: ts,
                    ns: Some(id),
                    event,
                },
                &mut owners,
            );
        }
    }
    let list = corr.connections_at_risk(&mut owners);
    (super::correlate::at_risk_finding(&list), list, notes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Owners come from the last walk: a known socket without walking again (even once its fd is
    /// gone), a new one by a walk at most once a second, and one that a walk made after it was asked
    /// for did not find is not walked for again until the walk ages out.
    #[test]
    fn socket_owners_are_walked_for_only_when_a_socket_is_new() {
        let root = std::env::temp_dir().join(format!("netsleuth-owners-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let process = |pid: u32, comm: &str, fd: u32, inode: u32| {
            let dir = root.join(pid.to_string());
            std::fs::create_dir_all(dir.join("fd")).unwrap();
            std::fs::write(dir.join("comm"), format!("{comm}\n")).unwrap();
            std::os::unix::fs::symlink(format!("socket:[{inode}]"), dir.join(format!("fd/{fd}")))
                .unwrap();
        };
        process(100, "a", 3, 500);
        let mut owners = ProcOwners {
            proc_root: root.clone(),
            cache: None,
            missing: Default::default(),
        };
        assert_eq!(owners.owner(0, 500).as_deref(), Some("a (pid 100)"));
        std::fs::remove_file(root.join("100/fd/3")).unwrap();
        assert_eq!(
            owners.owner(0, 500).as_deref(),
            Some("a (pid 100)"),
            "from the walk"
        );
        process(200, "b", 4, 600);
        assert_eq!(
            owners.owner(0, 600),
            None,
            "not walked again within a second"
        );
        std::thread::sleep(OWNERS_MIN_INTERVAL + Duration::from_millis(100));
        assert_eq!(
            owners.owner(0, 600).as_deref(),
            Some("b (pid 200)"),
            "walked for"
        );
        // Asked for, not found by the walk made for it: not walked for again.
        std::thread::sleep(OWNERS_MIN_INTERVAL + Duration::from_millis(100));
        assert_eq!(owners.owner(0, 700), None);
        process(300, "c", 5, 700);
        std::thread::sleep(OWNERS_MIN_INTERVAL + Duration::from_millis(100));
        assert_eq!(
            owners.owner(0, 700),
            None,
            "missed by a walk: not walked for again"
        );
        let _ = std::fs::remove_dir_all(&root);
    }
}
