//! The live correlator: sans-IO. Events in (with their kernel or receive timestamps), findings and
//! notices out; it never reads a clock, a file or a socket, so a sequence of events always gives the
//! same findings (the tests build sequences by hand). Time is the events' time.
//!
//! Chains it follows, each step with its timestamp:
//! - an address deleted on a device → DESTROY of TCP entries source-NATed to that device's addresses
//!   (MASQUERADE's flush) → the connection's next segment creates an entry with a new SNAT port → the
//!   server resets it (the new entry goes to CLOSE): `conntrack-snat-remap`;
//! - a NATed, ASSURED, ESTABLISHED entry destroyed (by timeout or deletion) while its socket is still
//!   open → "this connection will be reset on its next packet" (a latent risk naming the process) →
//!   the next segment is DNATed to another backend → that backend resets it: `conntrack-dnat-rebalance`;
//! - conntrack `insert_failed` rising, classified by the entries created in the same seconds (TCP
//!   through SNAT: `snat-port-clash`; UDP to port 53: `dns-conntrack-race`);
//! - `ListenOverflows` rising, with the listener whose accept queue is full and its owner;
//! - martian drops of packets whose source is a local address (`in_martian_src` per namespace, drop
//!   reason IP_LOCAL_SOURCE kernel-wide): `local-source-drop`.

use super::event::{
    CtKind, CtStats, Event, NsId, Socket, SocketTuple, Stamped, TCP_ESTABLISHED, TCP_LISTEN,
};
use crate::collect::nl_conntrack::{Entry, Tuple};
use crate::parse::netstat::Counters;
use netsleuth_core::detect::{
    conntrack_dnat_rebalance, conntrack_snat_remap, dns_conntrack_race, listen_queue_overflow,
    local_source_drop, snat_port_clash,
};
use netsleuth_core::finding::{Confidence, Evidence, Finding, FindingKind, Incident};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::IpAddr;

const SEC: i64 = 1_000_000_000;
/// How long after an address deletion a DESTROY counts as its flush.
const FLUSH_WINDOW: i64 = 3 * SEC;
/// How long a destroyed entry's connection is followed for its next segment.
const FOLLOW_WINDOW: i64 = 600 * SEC;
/// How long a rise of insert_failed waits for the entries that say which traffic it was.
const CLASSIFY_WINDOW: i64 = 3 * SEC;
/// Connections at risk are reported once their entry would expire within this long if they stay
/// idle (the list and the metric hold them all).
const AT_RISK_HORIZON_S: u64 = 3600;
/// How far a reported loss may lie from an entry's last update or its destruction and still count as
/// between them: ENOBUFS is reported when it is read, before older queued events are delivered.
const LOSS_SLACK: i64 = 2 * SEC;
/// Entries followed per namespace (NATed TCP only); past it the oldest are forgotten and a notice says so.
pub const MAX_TRACKED: usize = 200_000;
const TCP: u8 = 6;
const UDP: u8 = 17;
const CT_ESTABLISHED: u8 = 3;
const CT_CLOSE: u8 = 8;
const IPS_ASSURED: u32 = 1 << 2;

/// What the correlator says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    Finding {
        ts_ns: i64,
        finding: Finding,
    },
    /// A source's state (unavailable, events lost, resynced, a namespace followed).
    Notice {
        ts_ns: i64,
        text: String,
    },
}

/// Names the process owning a socket inode (the runtime walks `/proc`; tests use a map).
pub trait OwnerLookup {
    fn owner(&mut self, ns: NsId, inode: u32) -> Option<String>;
}

impl OwnerLookup for HashMap<u32, String> {
    fn owner(&mut self, _ns: NsId, inode: u32) -> Option<String> {
        self.get(&inode).cloned()
    }
}

type Key = (u8, Option<IpAddr>, Option<u16>, Option<IpAddr>, Option<u16>);

fn key(e: &Entry) -> Key {
    (
        e.orig.proto,
        e.orig.src,
        e.orig.sport,
        e.orig.dst,
        e.orig.dport,
    )
}

fn snat(e: &Entry) -> bool {
    e.reply.dst.is_some() && e.reply.dst != e.orig.src
}

fn dnat(e: &Entry) -> bool {
    e.reply.src.is_some() && e.reply.src != e.orig.dst
}

fn ip(a: Option<IpAddr>) -> String {
    a.map_or("?".into(), |a| a.to_string())
}

fn port(p: Option<u16>) -> String {
    p.map_or("?".into(), |p| p.to_string())
}

/// `10.244.1.10:50814 → 10.96.0.20:80`
fn orig_text(e: &Entry) -> String {
    format!(
        "{}:{} → {}:{}",
        ip(e.orig.src),
        port(e.orig.sport),
        ip(e.orig.dst),
        port(e.orig.dport)
    )
}

/// `HH:MM:SS.mmm` UTC of a timestamp.
pub fn clock(ts_ns: i64) -> String {
    let ms = ts_ns.div_euclid(1_000_000);
    let day_ms = ms.rem_euclid(86_400_000);
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        day_ms / 3_600_000,
        day_ms / 60_000 % 60,
        day_ms / 1000 % 60,
        day_ms % 1000
    )
}

#[derive(Debug, Clone)]
struct Tracked {
    entry: Entry,
    last_ts: i64,
}

#[derive(Debug, Clone)]
struct AddrGone {
    ts: i64,
    ifname: String,
    addr: IpAddr,
    prefix_len: u8,
    /// The device's addresses that remained (what MASQUERADE on it translated to).
    device_addrs: Vec<IpAddr>,
}

/// A connection whose entry went while its socket (maybe) lived: followed to its next entry.
#[derive(Debug, Clone)]
struct Broken {
    ns: NsId,
    old: Entry,
    destroyed_ts: i64,
    /// Why the entry went: `expired (timeout)`, `deleted`, `flushed with the address`.
    how: String,
    /// The address deletion that flushed it (the SNAT chain), if any.
    addr_gone: Option<AddrGone>,
    /// The open socket and its owner, when seen.
    socket: Option<String>,
    new: Option<(i64, Entry)>,
    /// The confidence already reported (so each step is reported once).
    reported: Option<Confidence>,
}

/// A conntrack tuple as a socket's (source, source port, destination, destination port), when all
/// four are known.
fn socket_tuple(t: &Tuple) -> Option<SocketTuple> {
    Some((t.src?, t.sport?, t.dst?, t.dport?))
}

impl NsState {
    /// A new socket dump: the list and its index.
    fn set_sockets(&mut self, sockets: Vec<Socket>) {
        self.established.clear();
        for (i, sock) in sockets.iter().enumerate() {
            if sock.state == TCP_ESTABLISHED {
                self.established
                    .entry((sock.local, sock.local_port, sock.remote, sock.remote_port))
                    .or_insert(i);
            }
        }
        self.sockets = sockets;
    }
}

/// The most sockets of one namespace looked up one by one before a dump is cheaper: a lookup is a hash
/// lookup (~4 µs with its share of the request and reply, measured in a debug build by
/// `tests/live.rs`), a dump a walk of the whole established hash that every namespace shares (~5 ms
/// of CPU here, whatever the namespace holds).
pub const SOCKET_LOOKUP_MAX: usize = 256;

/// How to read one namespace's sockets now ([`Correlator::socket_plan`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SocketPlan {
    /// Dump every established and listening socket.
    Dump,
    /// Look up these sockets (local, local port, remote, remote port); the others are of no use now.
    Lookup(Vec<SocketTuple>),
}

#[derive(Default)]
struct NsState {
    label: String,
    links: BTreeMap<u32, String>,
    addrs: BTreeMap<u32, BTreeSet<IpAddr>>,
    tracked: HashMap<Key, Tracked>,
    order: VecDeque<Key>,
    sockets: Vec<Socket>,
    /// The first ESTABLISHED socket of `sockets` by (local, local port, remote, remote port): a
    /// destroyed entry's socket is looked up, not searched for among every socket.
    established: HashMap<SocketTuple, usize>,
    prev: Option<(i64, Counters, Option<CtStats>)>,
    recent_new: VecDeque<(i64, Entry)>,
    gone: VecDeque<AddrGone>,
    pending_insert_failed: Option<(i64, u64, u64, u64)>,
    cap_noticed: bool,
    timeout_established: Option<u64>,
    /// When this namespace's conntrack events were last reported lost (ENOBUFS): an entry's history
    /// across that moment may have gaps.
    ct_losses: VecDeque<i64>,
    /// Destroyed entries not followed because their history spans a loss (said once in a notice).
    unfollowed_after_loss: u64,
}

/// One connection whose conntrack entry will expire before its next packet if it stays idle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AtRisk {
    /// The client's tuple (to the Service address).
    pub conn: String,
    /// The backend it is DNATed to now.
    pub backend: String,
    pub idle_s: u64,
    /// Seconds left before the entry expires if nothing is sent.
    pub remaining_s: u64,
    /// The keepalive timer: `None` off; else when it fires next (s).
    pub keepalive_s: Option<u64>,
    pub socket_ns: String,
    pub owner: Option<String>,
}

/// The correlator. Feed it with [`Correlator::push`]; read [`Correlator::summary`] at the end.
#[derive(Default)]
pub struct Correlator {
    ns: Vec<NsState>,
    broken: Vec<Broken>,
    /// Best confidence reported per (incident, case key).
    reported: HashMap<(&'static str, String), Confidence>,
    /// Every finding reported, latest per (incident, case key): the summary.
    latest: BTreeMap<(&'static str, String), Finding>,
    noticed: BTreeSet<String>,
    local_source_drops: u64,
    local_source_location: String,
    /// Connections reported at risk (their tuples), so a new one is reported and an old one is not.
    at_risk_reported: BTreeSet<String>,
    /// The connections at risk now, most urgent first.
    pub at_risk_now: Vec<AtRisk>,
    /// in_martian_src (kernel-wide) since it first rose: (before, now).
    martian_counter: Option<(u64, u64)>,
    pub events: u64,
}

impl Correlator {
    pub fn new() -> Correlator {
        Correlator::default()
    }

    fn ns(&mut self, id: NsId) -> &mut NsState {
        let i = id as usize;
        if self.ns.len() <= i {
            self.ns.resize_with(i + 1, NsState::default);
        }
        &mut self.ns[i]
    }

    fn label(&self, id: NsId) -> String {
        self.ns
            .get(id as usize)
            .map(|n| n.label.clone())
            .filter(|l| !l.is_empty())
            .unwrap_or_else(|| format!("namespace #{id}"))
    }

    /// The findings so far: one per incident and kind (a report has one finding per incident), the
    /// most certain case first and the others listed under it (`cases`); incidents first.
    /// The namespaces whose sockets the correlator can use now: those holding NATed TCP entries (a
    /// host-network client's socket sits beside its entry) and those owning an address such an entry
    /// starts or ends at (a pod's client or server socket). A socket dump walks the kernel's whole
    /// established hash, which every namespace shares (5 ms a second for one idle namespace here,
    /// 85 % of an idle watch's CPU), so the others are not dumped.
    pub fn socket_namespaces(&self) -> BTreeSet<NsId> {
        let mut out = BTreeSet::new();
        let mut ends = std::collections::HashSet::new();
        for (i, s) in self.ns.iter().enumerate() {
            if s.tracked.is_empty() {
                continue;
            }
            out.insert(i as NsId);
            for t in s.tracked.values() {
                ends.extend(t.entry.orig.src);
                ends.extend(t.entry.reply.src);
            }
        }
        if !ends.is_empty() {
            for (i, s) in self.ns.iter().enumerate() {
                if s.addrs.values().flatten().any(|a| ends.contains(a)) {
                    out.insert(i as NsId);
                }
            }
        }
        out
    }

    /// How each namespace's sockets are best read now: the namespaces of [`Self::socket_namespaces`],
    /// each with the sockets the correlator could use there — both ends of every followed NATed entry
    /// (the client's socket under the original tuple, the server's under the reply tuple), asked in the
    /// namespace that followed the entry (a host-network end) and in each namespace owning the
    /// socket's local address. Up to [`SOCKET_LOOKUP_MAX`] of them are looked up one by one (a hash
    /// lookup each); more are dumped (one walk of the shared established hash, ~5 ms).
    pub fn socket_plan(&self) -> BTreeMap<NsId, SocketPlan> {
        let mut owners: HashMap<IpAddr, Vec<NsId>> = HashMap::new();
        for (i, s) in self.ns.iter().enumerate() {
            for a in s.addrs.values().flatten() {
                owners.entry(*a).or_default().push(i as NsId);
            }
        }
        let mut want: BTreeMap<NsId, BTreeSet<SocketTuple>> = BTreeMap::new();
        for (i, s) in self.ns.iter().enumerate() {
            for t in s.tracked.values() {
                for tuple in [socket_tuple(&t.entry.orig), socket_tuple(&t.entry.reply)]
                    .into_iter()
                    .flatten()
                {
                    let mut at = vec![i as NsId];
                    at.extend(owners.get(&tuple.0).into_iter().flatten());
                    for n in at {
                        let w = want.entry(n).or_default();
                        if w.len() <= SOCKET_LOOKUP_MAX {
                            w.insert(tuple);
                        }
                    }
                }
            }
        }
        // Every namespace `socket_namespaces` names gets a plan (an end's namespace may own an
        // address without holding a tuple whose local end it is).
        for n in self.socket_namespaces() {
            want.entry(n).or_default();
        }
        want.into_iter()
            .map(|(n, w)| {
                let plan = if w.len() > SOCKET_LOOKUP_MAX {
                    SocketPlan::Dump
                } else {
                    SocketPlan::Lookup(w.into_iter().collect())
                };
                (n, plan)
            })
            .collect()
    }

    /// How often (seconds) the sockets of [`Self::socket_namespaces`] need dumping: a quarter of the
    /// least time a followed connection has left before its entry expires (a new one has the whole
    /// established timeout), between 1 s and 10 s. The lab's 2 s timeout keeps a dump every second;
    /// kube-proxy's 86,400 s makes it one every 10 s, a tenth of the dumps' cost. A connection younger
    /// than the last dump is not found when its entry is deleted (not expired): the price of the rate.
    pub fn socket_interval_s(&self) -> u64 {
        let mut least = u64::MAX;
        for s in self.ns.iter().filter(|s| !s.tracked.is_empty()) {
            // Unknown timeout: no prediction is made there, but stay careful.
            least = least.min(s.timeout_established.unwrap_or(0));
        }
        for r in &self.at_risk_now {
            least = least.min(r.remaining_s);
        }
        (least / 4).clamp(1, 10)
    }

    pub fn summary(&self) -> Vec<Finding> {
        let mut all: Vec<&Finding> = self.latest.values().collect();
        all.sort_by(|a, b| a.kind.cmp(&b.kind).then(b.confidence.cmp(&a.confidence)));
        let mut out: Vec<Finding> = Vec::new();
        for f in all {
            match out.iter_mut().find(|o| o.id == f.id && o.kind == f.kind) {
                Some(o) => o
                    .cases
                    .push(format!("[{}] {}", f.confidence.as_str(), f.summary)),
                None => out.push(f.clone()),
            }
        }
        out
    }

    /// Reports `f` for `case` if it says more than what was reported for it before.
    fn report(&mut self, out: &mut Vec<Output>, ts: i64, case: String, f: Finding) {
        let k = (f.id, case);
        let better = match self.reported.get(&k) {
            Some(c) => f.confidence > *c,
            None => true,
        };
        // A latent risk is replaced by the incident it predicted.
        let (id, case) = k;
        let risk_key = (id, format!("risk:{case}"));
        if f.kind == FindingKind::Incident {
            self.latest.remove(&risk_key);
        }
        let same = self.reported.get(&(id, case.clone())) == Some(&f.confidence);
        if same {
            // Nothing new to say now; the summary keeps the fuller evidence.
            self.latest.insert((id, case), f);
        } else if better {
            self.reported.insert((id, case.clone()), f.confidence);
            self.latest.insert((id, case), f.clone());
            out.push(Output::Finding {
                ts_ns: ts,
                finding: f,
            });
        }
    }

    fn notice_once(&mut self, out: &mut Vec<Output>, ts: i64, key: String, text: String) {
        if self.noticed.insert(key) {
            out.push(Output::Notice { ts_ns: ts, text });
        }
    }

    pub fn push(&mut self, ev: Stamped, owners: &mut dyn OwnerLookup) -> Vec<Output> {
        self.events += 1;
        let mut out = Vec::new();
        let ts = ev.ts_ns;
        match (ev.ns, ev.event) {
            (Some(n), Event::Namespace { label }) => {
                self.ns(n).label = label.clone();
                out.push(Output::Notice {
                    ts_ns: ts,
                    text: format!("watching {label}"),
                });
            }
            (Some(n), Event::NamespaceGone) => {
                let label = self.label(n);
                let s = self.ns(n);
                s.set_sockets(Vec::new());
                s.tracked.clear();
                s.order.clear();
                s.prev = None;
                out.push(Output::Notice {
                    ts_ns: ts,
                    text: format!("stopped watching {label}: the namespace is gone"),
                });
            }
            (
                Some(n),
                Event::Link {
                    added,
                    ifindex,
                    ifname,
                },
            ) => {
                let s = self.ns(n);
                if added {
                    s.links.insert(ifindex, ifname);
                } else {
                    s.links.remove(&ifindex);
                    s.addrs.remove(&ifindex);
                }
            }
            (
                Some(n),
                Event::Address {
                    added,
                    ifindex,
                    ifname,
                    addr,
                    prefix_len,
                },
            ) => {
                let s = self.ns(n);
                let set = s.addrs.entry(ifindex).or_default();
                if added {
                    set.insert(addr);
                } else {
                    set.remove(&addr);
                    let device_addrs = set.iter().copied().collect();
                    let ifname = ifname
                        .or_else(|| s.links.get(&ifindex).cloned())
                        .unwrap_or_else(|| format!("if{ifindex}"));
                    s.gone.push_back(AddrGone {
                        ts,
                        ifname,
                        addr,
                        prefix_len,
                        device_addrs,
                    });
                    while s.gone.len() > 64 {
                        s.gone.pop_front();
                    }
                }
            }
            (Some(_), Event::Route { .. }) => {}
            (Some(n), Event::ConntrackTable { entries }) => {
                let s = self.ns(n);
                s.tracked.clear();
                s.order.clear();
                for e in entries {
                    track(s, ts, e);
                }
            }
            (
                Some(n),
                Event::Conntrack {
                    kind,
                    entry,
                    by_userspace,
                },
            ) => self.conntrack(&mut out, (ts, n), kind, (entry, by_userspace), owners),
            (Some(n), Event::ConntrackTimeout { established_s }) => {
                self.ns(n).timeout_established = Some(established_s)
            }
            (Some(n), Event::Sockets { sockets }) => {
                self.ns(n).set_sockets(sockets);
                self.at_risk(&mut out, ts, owners);
            }
            (Some(n), Event::Counters { snmp, conntrack }) => {
                self.counters(&mut out, ts, n, snmp, conntrack, owners)
            }
            (_, Event::Drop { reason, location }) => {
                if reason == "IP_LOCAL_SOURCE" {
                    self.local_source_drops += 1;
                    self.local_source_location = location;
                    self.local_source(&mut out, ts);
                }
            }
            (n, Event::Loss { source, count }) => {
                if let Some(n) = n.filter(|_| source == "conntrack events") {
                    let s = self.ns(n);
                    s.ct_losses.push_back(ts);
                    while s.ct_losses.len() > 64 {
                        s.ct_losses.pop_front();
                    }
                }
                out.push(Output::Notice {
                ts_ns: ts,
                text: format!(
                    "{source}{}: the kernel dropped events (ENOBUFS, {count} time(s) so far); resyncing its state with a dump",
                    n.map(|n| format!(" in {}", self.label(n))).unwrap_or_default()
                ),
                })
            }
            (n, Event::Resynced { source, what }) => out.push(Output::Notice {
                ts_ns: ts,
                text: format!(
                    "{source}{}: resynced ({what})",
                    n.map(|n| format!(" in {}", self.label(n)))
                        .unwrap_or_default()
                ),
            }),
            (n, Event::Unavailable { source, why, costs }) => {
                let where_ = n
                    .map(|n| format!(" in {}", self.label(n)))
                    .unwrap_or_default();
                self.notice_once(
                    &mut out,
                    ts,
                    format!("{source}{where_}"),
                    format!("{source}{where_} unavailable: {why}; {costs}"),
                )
            }
            (None, _) => {}
        }
        self.expire(ts);
        out
    }

    fn expire(&mut self, now: i64) {
        self.broken
            .retain(|b| now.saturating_sub(b.destroyed_ts) < FOLLOW_WINDOW);
        for s in &mut self.ns {
            while s
                .recent_new
                .front()
                .is_some_and(|(t, _)| now.saturating_sub(*t) > CLASSIFY_WINDOW * 2)
            {
                s.recent_new.pop_front();
            }
            while s
                .gone
                .front()
                .is_some_and(|g| now.saturating_sub(g.ts) > FOLLOW_WINDOW)
            {
                s.gone.pop_front();
            }
        }
    }

    fn conntrack(
        &mut self,
        out: &mut Vec<Output>,
        (ts, n): (i64, NsId),
        kind: CtKind,
        (e, by_userspace): (Entry, bool),
        owners: &mut dyn OwnerLookup,
    ) {
        match kind {
            CtKind::New | CtKind::Update => {
                if kind == CtKind::New {
                    let s = self.ns(n);
                    s.recent_new.push_back((ts, e));
                    if s.recent_new.len() > 4096 {
                        s.recent_new.pop_front();
                    }
                }
                if let Some(text) = track(self.ns(n), ts, e) {
                    self.notice_once(out, ts, format!("cap{n}"), text);
                }
                self.follow(out, ts, n, e);
                self.classify_insert_failed(out, ts, n);
            }
            CtKind::Destroy => {
                // The new translation of a broken connection destroyed in CLOSE: the reset.
                self.follow(out, ts, n, e);
                let prev = self.ns(n).tracked.remove(&key(&e));
                self.destroyed(out, (ts, n), (e, by_userspace), prev, owners);
            }
        }
    }

    /// A DESTROY: is it the flush of a deleted address, and was its connection still open?
    fn destroyed(
        &mut self,
        out: &mut Vec<Output>,
        (ts, n): (i64, NsId),
        (e, by_userspace): (Entry, bool),
        prev: Option<Tracked>,
        owners: &mut dyn OwnerLookup,
    ) {
        if e.orig.proto != TCP || !(snat(&e) || dnat(&e)) {
            return;
        }
        let state = e
            .tcp_state
            .or(prev.as_ref().and_then(|p| p.entry.tcp_state));
        let status = e.status | prev.as_ref().map_or(0, |p| p.entry.status);
        if state != Some(CT_ESTABLISHED) || status & IPS_ASSURED == 0 {
            return;
        }
        // The kernel's own destruction time when nf_conntrack_timestamp is on.
        let ts = e.stop_ns.map_or(ts, |t| t as i64);
        let s = &self.ns[n as usize];
        let addr_gone = if snat(&e) {
            s.gone
                .iter()
                .rev()
                .find(|g| {
                    ts.saturating_sub(g.ts) <= FLUSH_WINDOW
                        && e.reply
                            .dst
                            .is_some_and(|a| a == g.addr || g.device_addrs.contains(&a))
                })
                .cloned()
        } else {
            None
        };
        let how = if let Some(g) = &addr_gone {
            format!(
                "deleted {:.1} s after {}/{} left {} (MASQUERADE's flush of the device)",
                (ts - g.ts) as f64 / 1e9,
                g.addr,
                g.prefix_len,
                g.ifname
            )
        } else if by_userspace {
            "deleted by a userspace request (conntrack -D or a flush)".to_string()
        } else {
            match prev
                .as_ref()
                .and_then(|p| Some((p.last_ts, p.entry.timeout_s?)))
            {
                Some((last, t)) if ts >= last + i64::from(t) * SEC - SEC => {
                    format!("expired: idle since {} with {t} s left then", clock(last))
                }
                Some(_) => "destroyed by the kernel before its timeout".to_string(),
                None => "destroyed (its last update was not seen)".to_string(),
            }
        };
        // The kernel destroyed an entry it had as ESTABLISHED before its timeout, and the DESTROY does
        // not say its state: with events lost since its last update, its close (FIN or RST updates) is
        // likely among them, and a socket found on the tuple may be a newer connection reusing the port.
        // Such a chain does not stand: it is not followed (measured: 22 false likely findings in an hour
        // with 14 losses). An expiry, a userspace deletion or an address flush stands on its own.
        let before_timeout = addr_gone.is_none()
            && !by_userspace
            && e.tcp_state.is_none()
            && !how.starts_with("expired");
        let last_seen = prev.as_ref().map_or(i64::MIN, |p| p.last_ts);
        if before_timeout
            && s.ct_losses.iter().any(|&l| {
                l >= last_seen.saturating_sub(LOSS_SLACK) && l <= ts.saturating_add(LOSS_SLACK)
            })
        {
            let label = self.label(n);
            let s = self.ns(n);
            s.unfollowed_after_loss += 1;
            let count = s.unfollowed_after_loss;
            if count == 1 {
                self.notice_once(
                    out,
                    ts,
                    format!("unfollowed-after-loss{n}"),
                    format!(
                        "conntrack events in {label}: an ESTABLISHED NATed entry ({}) was destroyed before its timeout while events were being lost; its close may be among the lost events, so it is not followed as a broken connection (said once; later ones like it are not followed either)",
                        orig_text(&e)
                    ),
                );
            }
            return;
        }
        let socket = self.find_socket(&e).map(|(sn, sock)| {
            let owner = owners
                .owner(sn, sock.inode)
                .map(|o| format!(" owned by {o}"))
                .unwrap_or_default();
            format!(
                "socket {}:{} → {}:{} in {}{owner}, ESTABLISHED, idle {}",
                sock.local,
                sock.local_port,
                sock.remote,
                sock.remote_port,
                self.label(sn),
                sock.idle_ms
                    .map_or("unknown".into(), |ms| format!("{:.1} s", ms as f64 / 1e3)),
            )
        });
        let b = Broken {
            ns: n,
            old: e,
            destroyed_ts: ts,
            how,
            addr_gone,
            socket,
            new: None,
            reported: None,
        };
        // Only a connection whose socket is open (or whose entry went with an address) is followed.
        if b.socket.is_some() || b.addr_gone.is_some() {
            if b.socket.is_some() {
                let f = self.broken_finding(&b, FindingKind::LatentRisk, Confidence::Likely);
                self.report(out, ts, format!("risk:{}", orig_text(&b.old)), f);
            }
            self.broken.push(b);
            if self.broken.len() > 10_000 {
                self.broken.remove(0);
            }
        }
    }

    /// The open socket of an entry's connection, in any watched namespace: the client's (original
    /// direction) or the server's (reply direction).
    fn find_socket(&self, e: &Entry) -> Option<(NsId, &Socket)> {
        let (client, server) = (socket_tuple(&e.orig), socket_tuple(&e.reply));
        for (i, s) in self.ns.iter().enumerate() {
            // The first of the namespace's sockets that is either end.
            let at = [client, server]
                .into_iter()
                .flatten()
                .filter_map(|t| s.established.get(&t).copied())
                .min();
            if let Some(at) = at {
                return Some((i as NsId, &s.sockets[at]));
            }
        }
        None
    }

    /// A NEW/UPDATE of an entry whose connection lost its previous entry: the next step of a chain.
    fn follow(&mut self, out: &mut Vec<Output>, ts: i64, n: NsId, e: Entry) {
        let k = key(&e);
        let mut reports = Vec::new();
        for b in self
            .broken
            .iter_mut()
            .filter(|b| b.ns == n && key(&b.old) == k)
        {
            if b.new.is_none() {
                b.new = Some((ts, e));
            } else if let Some((t, ref mut cur)) = b.new {
                let _ = t;
                *cur = e;
            }
            let (_, new) = b.new.expect("set above");
            let remapped = new.reply.dst != b.old.reply.dst || new.reply.dport != b.old.reply.dport;
            let rebalanced =
                new.reply.src != b.old.reply.src || new.reply.sport != b.old.reply.sport;
            if !remapped && !rebalanced {
                continue; // the same translation again: the connection goes on
            }
            let reset = new.tcp_state == Some(CT_CLOSE);
            let conf = if reset {
                Confidence::Confirmed
            } else {
                Confidence::Likely
            };
            if b.reported.is_some_and(|r| r >= conf) {
                continue;
            }
            b.reported = Some(conf);
            reports.push((b.clone(), ts, reset));
        }
        for (b, ts, reset) in reports {
            let mut f = self.broken_finding(
                &b,
                FindingKind::Incident,
                if reset {
                    Confidence::Confirmed
                } else {
                    Confidence::Likely
                },
            );
            if !reset {
                f = f.because("the server's reset of the new translation is not seen yet (the new entry has not gone to CLOSE)");
            }
            self.report(out, ts, orig_text(&b.old), f);
        }
    }

    fn broken_finding(&self, b: &Broken, kind: FindingKind, conf: Confidence) -> Finding {
        let old = &b.old;
        let remap = b.addr_gone.is_some() || (snat(old) && !dnat(old));
        let incident: &Incident = if remap {
            &conntrack_snat_remap::INCIDENT
        } else {
            &conntrack_dnat_rebalance::INCIDENT
        };
        let src = format!("conntrack events ({})", self.label(b.ns));
        let summary = match (kind, &b.new) {
            (FindingKind::LatentRisk, _) => format!(
                "connection {} will be reset on its next packet: its conntrack entry was {} while its socket is still open",
                orig_text(old),
                b.how
            ),
            (_, Some((_, new))) if remap => format!(
                "connection {} lost its SNAT entry ({}) and its next segment left as {}:{} instead of {}:{}{}",
                orig_text(old),
                b.how,
                ip(new.reply.dst),
                port(new.reply.dport),
                ip(old.reply.dst),
                port(old.reply.dport),
                if new.tcp_state == Some(CT_CLOSE) { "; the server reset it" } else { "" }
            ),
            (_, Some((_, new))) => format!(
                "connection {} was re-balanced from backend {}:{} to backend {}:{} after its entry {}{}",
                orig_text(old),
                ip(old.reply.src),
                port(old.reply.sport),
                ip(new.reply.src),
                port(new.reply.sport),
                b.how,
                if new.tcp_state == Some(CT_CLOSE) { "; the new backend reset it" } else { "" }
            ),
            (_, None) => format!("connection {} lost its entry ({})", orig_text(old), b.how),
        };
        let mut f = Finding::new(incident, kind, conf, summary);
        if let Some(g) = &b.addr_gone {
            f = f.with_evidence(Evidence::Fact {
                source: format!("rtnetlink ({})", self.label(b.ns)),
                text: format!(
                    "{} RTM_DELADDR {}/{} on {}",
                    clock(g.ts),
                    g.addr,
                    g.prefix_len,
                    g.ifname
                ),
            });
        }
        f = f.with_evidence(Evidence::Fact {
            source: src.clone(),
            text: format!(
                "{} DESTROY {} [ASSURED] {}",
                clock(b.destroyed_ts),
                old.to_line(),
                b.how
            ),
        });
        if let Some(sock) = &b.socket {
            f = f.with_evidence(Evidence::Fact {
                source: "sock_diag".into(),
                text: format!("{} {sock}", clock(b.destroyed_ts)),
            });
        }
        if let Some((t, new)) = &b.new {
            f = f.with_evidence(Evidence::Fact {
                source: src.clone(),
                text: format!(
                    "{} {} {}",
                    clock(*t),
                    if new.tcp_state == Some(CT_CLOSE) {
                        "UPDATE (reset: CLOSE)"
                    } else {
                        "NEW (same connection, new translation)"
                    },
                    new.to_line()
                ),
            });
        }
        match kind {
            FindingKind::LatentRisk => {
                f = f.because("predicted: the entry is gone while the socket is open, so the next segment is translated anew; confirmed when that segment gets a new translation and a reset");
            }
            FindingKind::Incident if conf == Confidence::Confirmed => {
                f = f.because("every step is in the kernel's own events: the entry's destruction, the same connection under a new translation, the reset (CLOSE)");
            }
            _ => {}
        }
        if remap {
            f = f.rules_out(
                conntrack_dnat_rebalance::INCIDENT.id,
                "the destination side of the translation did not change; the source NAT did",
            );
        } else {
            f = f.rules_out(
                conntrack_snat_remap::INCIDENT.id,
                "no address left a device before the entry went; the backend (DNAT) changed",
            );
        }
        f = f.rules_out("application", "the entry was destroyed by the kernel (or a tool) while the socket stayed open: the application did not close it");
        f
    }

    /// Established sockets joined with their NATed conntrack entries (the client's socket, in any
    /// watched namespace, with the entry of the namespace that translates it): idle time against the
    /// entry's timeout, keepalive against what is left. Ranked, most urgent first.
    pub fn connections_at_risk(&self, owners: &mut dyn OwnerLookup) -> Vec<AtRisk> {
        let mut out = Vec::new();
        for (si, s) in self.ns.iter().enumerate() {
            for sock in s.sockets.iter().filter(|s| s.state == TCP_ESTABLISHED) {
                let k: Key = (
                    TCP,
                    Some(sock.local),
                    Some(sock.local_port),
                    Some(sock.remote),
                    Some(sock.remote_port),
                );
                for ct in &self.ns {
                    let Some(t) = ct.tracked.get(&k) else {
                        continue;
                    };
                    if !dnat(&t.entry) || t.entry.tcp_state.is_some_and(|st| st != CT_ESTABLISHED) {
                        continue;
                    }
                    let Some(timeout) = ct.timeout_established else {
                        continue;
                    };
                    let Some(idle_ms) = sock.idle_ms else {
                        continue;
                    };
                    let remaining_ms = (timeout * 1000).saturating_sub(u64::from(idle_ms));
                    // A keepalive probe before the expiry refreshes the entry: no risk.
                    if sock
                        .keepalive_ms
                        .is_some_and(|k| u64::from(k) < remaining_ms)
                    {
                        continue;
                    }
                    let idle_s = u64::from(idle_ms) / 1000;
                    let remaining_s = remaining_ms / 1000;
                    let keepalive_s = sock.keepalive_ms.map(|ms| u64::from(ms).div_ceil(1000));
                    out.push(AtRisk {
                        conn: orig_text(&t.entry),
                        backend: format!("{}:{}", ip(t.entry.reply.src), port(t.entry.reply.sport)),
                        idle_s,
                        remaining_s,
                        keepalive_s,
                        socket_ns: self.label(si as NsId),
                        owner: owners.owner(si as NsId, sock.inode),
                    });
                }
            }
        }
        out.sort_by_key(|r| (r.remaining_s, std::cmp::Reverse(r.idle_s)));
        out
    }

    fn at_risk(&mut self, out: &mut Vec<Output>, ts: i64, owners: &mut dyn OwnerLookup) {
        let now = self.connections_at_risk(owners);
        // Reported: the connections within the horizon of their expiry. Every new NATed connection
        // without keepalive is "at risk" with the whole timeout ahead (kube-proxy: a day), and
        // naming each as it appears would repeat the list every second on a busy node.
        let urgent: Vec<AtRisk> = now
            .iter()
            .filter(|r| r.remaining_s <= AT_RISK_HORIZON_S)
            .cloned()
            .collect();
        let new = urgent
            .iter()
            .any(|r| !self.at_risk_reported.contains(&r.conn));
        // Only the connections at risk now are remembered (one that leaves the list and comes back
        // is reported again): remembering every one ever at risk grew without bound on a busy node.
        self.at_risk_reported = urgent.iter().map(|r| r.conn.clone()).collect();
        self.at_risk_now = now;
        if !new {
            return;
        }
        if let Some(f) = at_risk_finding(&urgent) {
            self.latest.insert((f.id, "at-risk".into()), f.clone());
            out.push(Output::Finding {
                ts_ns: ts,
                finding: f,
            });
        }
    }

    fn counters(
        &mut self,
        out: &mut Vec<Output>,
        ts: i64,
        n: NsId,
        snmp: Counters,
        ct: Option<CtStats>,
        owners: &mut dyn OwnerLookup,
    ) {
        let prev = self.ns(n).prev.replace((ts, snmp.clone(), ct));
        let Some((pts, psnmp, pct)) = prev else {
            return;
        };
        let label = self.label(n);
        // A rise still waiting for the traffic that explains it: decided now if its time is up.
        self.classify_insert_failed(out, ts, n);
        // insert_failed: classified by the entries created around it.
        if let (Some(a), Some(b)) = (pct, ct) {
            if b.insert_failed > a.insert_failed {
                let s = self.ns(n);
                let (t0, before, _, _) =
                    s.pending_insert_failed
                        .unwrap_or((pts, a.insert_failed, 0, 0));
                s.pending_insert_failed =
                    Some((t0, before, b.insert_failed, b.drop.saturating_sub(a.drop)));
                self.classify_insert_failed(out, ts, n);
            }
        }
        // ListenOverflows: the listener and its owner.
        let d = |name: &str| {
            let a = psnmp.get(name).copied().unwrap_or(0);
            let b = snmp.get(name).copied().unwrap_or(0);
            (b > a).then_some((a, b))
        };
        if let Some((a, b)) = d("TcpExt.ListenOverflows") {
            let listener = self.ns[n as usize]
                .sockets
                .iter()
                .filter(|s| s.state == TCP_LISTEN && s.recv_queue > 0)
                .max_by_key(|s| (s.recv_queue >= s.send_queue, s.recv_queue))
                .cloned();
            let full = listener
                .as_ref()
                .is_some_and(|l| l.recv_queue >= l.send_queue);
            let conf = if full {
                Confidence::Confirmed
            } else {
                Confidence::Likely
            };
            let who = listener.as_ref().map(|l| {
                let owner = owners
                    .owner(n, l.inode)
                    .map(|o| format!(" owned by {o}"))
                    .unwrap_or_default();
                (
                    format!("{}:{}", l.local, l.local_port),
                    owner,
                    l.recv_queue,
                    l.send_queue,
                )
            });
            let summary = match &who {
                Some((addr, owner, q, backlog)) => format!(
                    "listener {addr} in {label}{owner} refused {} connection(s): its accept queue holds {q} of a backlog of {backlog}",
                    b - a
                ),
                None => format!("{} connection(s) refused by a full accept queue in {label} (the listener was not found in the last socket list)", b - a),
            };
            let mut f = Finding::new(
                &listen_queue_overflow::INCIDENT,
                FindingKind::Incident,
                conf,
                summary,
            )
            .with_evidence(Evidence::Counter {
                source: format!("/proc/net/netstat ({label}) {}–{}", clock(pts), clock(ts)),
                name: "TcpExt.ListenOverflows".into(),
                before: Some(a),
                after: b,
            });
            if let Some((a2, b2)) = d("TcpExt.ListenDrops") {
                f = f.with_evidence(Evidence::Counter {
                    source: format!("/proc/net/netstat ({label})"),
                    name: "TcpExt.ListenDrops".into(),
                    before: Some(a2),
                    after: b2,
                });
            }
            if let Some((addr, owner, q, backlog)) = &who {
                f = f.with_evidence(Evidence::Fact {
                    source: "sock_diag".into(),
                    text: format!("LISTEN {addr}{owner}: accept queue {q}, backlog {backlog}"),
                });
            }
            if !full {
                f = f.because("the counter rose, but the last socket list (≤ 1 s old) shows no listener with a full accept queue");
            } else {
                f = f.because("the kernel's own counter of SYNs refused for a full accept queue rose while this listener's queue was full");
            }
            f = f
                .rules_out("network-loss", "ListenOverflows counts SYNs the listening socket itself refused: the packets reached it")
                .rules_out(local_source_drop::INCIDENT.id, "martian drops happen before any socket is looked up and are not counted as listen overflows");
            let case = who.map(|w| w.0).unwrap_or_default();
            self.report(out, ts, format!("{label} {case}"), f);
        }
        // Martian sources: rt_cache's counters are kernel-wide (one per CPU, not per namespace), so
        // the runtime samples them in the first namespace only.
        let martian = |c: &Counters| c.get("rt_cache.in_martian_src").copied();
        if let (Some(a), Some(b)) = (martian(&psnmp), martian(&snmp)) {
            if b > a {
                self.martian_counter = Some((self.martian_counter.map_or(a, |m| m.0), b));
                self.local_source(out, ts);
            }
        }
    }

    /// Martian drops of local sources, from the kernel-wide counter and the drop reason together.
    /// Both are kernel-wide, so the finding also needs its precondition in a watched namespace: a
    /// LoadBalancer address bound on kube-ipvs0 (in table local). The drop reason IP_LOCAL_SOURCE is
    /// specific (likely); `in_martian_src` alone counts every martian source (possible).
    fn local_source(&mut self, out: &mut Vec<Output>, ts: i64) {
        // The addresses a load balancer's health checks would come from: those on a dummy kube-ipvs0.
        let mut lb = Vec::new();
        for (i, s) in self.ns.iter().enumerate() {
            for (idx, name) in &s.links {
                if name == "kube-ipvs0" {
                    for a in s.addrs.get(idx).into_iter().flatten() {
                        lb.push(format!("{a} on kube-ipvs0 in {}", self.label(i as NsId)));
                    }
                }
            }
        }
        let count = self
            .martian_counter
            .map_or(0, |(a, b)| b - a)
            .max(self.local_source_drops);
        if lb.is_empty() {
            let text = format!(
                "{count} martian drop(s) seen kernel-wide ({}), but no watched namespace binds a LoadBalancer address on kube-ipvs0: local-source-drop not named (the drops may be another namespace's or machine-wide)",
                if self.local_source_drops > 0 { "drop reason IP_LOCAL_SOURCE" } else { "rt_cache in_martian_src" }
            );
            self.notice_once(out, ts, "martian-unattributed".into(), text);
            return;
        }
        let conf = if self.local_source_drops > 0 {
            Confidence::Likely
        } else {
            Confidence::Possible
        };
        let mut f = Finding::new(
            &local_source_drop::INCIDENT,
            FindingKind::Incident,
            conf,
            format!("{count} packet(s) dropped as martians because their source is a local address (kernel-wide: neither source says which namespace)"),
        );
        if let Some((a, b)) = self.martian_counter {
            f = f.with_evidence(Evidence::Counter {
                source: "/proc/net/stat/rt_cache (kernel-wide)".into(),
                name: "in_martian_src".into(),
                before: Some(a),
                after: b,
            });
        }
        if self.local_source_drops > 0 {
            f = f.with_evidence(Evidence::Fact {
                source: "skb:kfree_skb".into(),
                text: format!(
                    "drop reason IP_LOCAL_SOURCE at {} ×{}",
                    self.local_source_location, self.local_source_drops
                ),
            });
        }
        for a in &lb {
            f = f.with_evidence(Evidence::Fact {
                source: "rtnetlink".into(),
                text: a.clone(),
            });
        }
        if self.local_source_drops == 0 {
            f = f.because("in_martian_src counts every martian source (rp_filter, zero and loopback sources too), and the drop-reason tracepoint did not name IP_LOCAL_SOURCE");
        }
        let f = f
            .because("the kernel dropped packets for a local source address while a LoadBalancer IP is bound on kube-ipvs0 in a watched namespace; both sources are kernel-wide and carry no address, so the namespace and the dropped packets' source are not in the events")
            .cannot_rule_out("spoofing", "a packet forged with the node's address is dropped the same way; the LB's health-check source decides");
        self.report(out, ts, "kernel-wide".into(), f);
    }

    fn classify_insert_failed(&mut self, out: &mut Vec<Output>, ts: i64, n: NsId) {
        let label = self.label(n);
        let s = self.ns(n);
        let Some((t0, before, after, drops)) = s.pending_insert_failed else {
            return;
        };
        let near: Vec<&Entry> = s
            .recent_new
            .iter()
            .filter(|(t, _)| (t - t0).abs() <= CLASSIFY_WINDOW)
            .map(|(_, e)| e)
            .collect();
        let dns: Vec<Entry> = near
            .iter()
            .filter(|e| e.orig.proto == UDP && e.orig.dport == Some(53))
            .map(|e| **e)
            .collect();
        let tcp_snat: Vec<Entry> = near
            .iter()
            .filter(|e| e.orig.proto == TCP && snat(e))
            .map(|e| **e)
            .collect();
        let waited = ts - t0 >= CLASSIFY_WINDOW;
        if dns.is_empty() && tcp_snat.is_empty() && !waited {
            return;
        }
        s.pending_insert_failed = None;
        let counter = Evidence::Counter {
            source: format!("conntrack statistics ({label}) since {}", clock(t0)),
            name: "insert_failed".into(),
            before: Some(before),
            after,
        };
        let (incident, examples, what): (&Incident, Vec<Entry>, &str) = if tcp_snat.len()
            >= dns.len()
            && !tcp_snat.is_empty()
        {
            (
                &snat_port_clash::INCIDENT,
                tcp_snat,
                "TCP connections through source NAT",
            )
        } else if !dns.is_empty() {
            (
                &dns_conntrack_race::INCIDENT,
                dns,
                "DNS queries (UDP port 53)",
            )
        } else {
            out.push(Output::Notice {
                ts_ns: ts,
                text: format!(
                    "conntrack insert_failed rose {before} → {after} in {label} ({drops} packet(s) dropped), but no entry created in the same seconds says which traffic lost the race: not named"
                ),
            });
            return;
        };
        let mut f = Finding::new(
            incident,
            FindingKind::Incident,
            Confidence::Likely,
            format!(
                "conntrack insertion failed {} time(s) in {label} while {what} were being created ({} new entries in the same seconds)",
                after - before,
                examples.len()
            ),
        )
        .with_evidence(counter);
        for e in examples.iter().take(5) {
            f = f.with_evidence(Evidence::Fact {
                source: format!("conntrack events ({label})"),
                text: format!("NEW {}", e.to_line()),
            });
        }
        f = f.because("insert_failed is the kernel's count of entries that lost the race to the table; the packets that lost are not in the events (their entries never existed), so the traffic is inferred from the entries created in the same seconds");
        if incident == &snat_port_clash::INCIDENT {
            f = f.cannot_rule_out(dns_conntrack_race::INCIDENT.id, "UDP DNS through DNAT raises the same counter; no DNS entry was created in these seconds");
        } else {
            f = f.cannot_rule_out(snat_port_clash::INCIDENT.id, "TCP connections through SNAT raise the same counter; no TCP SNAT entry was created in these seconds");
        }
        self.report(out, ts, format!("{label} insert_failed"), f);
    }
}

/// `2 h 10 min`, `45 s`.
pub fn span(s: u64) -> String {
    match s {
        0..=119 => format!("{s} s"),
        120..=7199 => format!("{} min", s / 60),
        _ => format!("{} h {} min", s / 3600, s / 60 % 60),
    }
}

/// The latent-risk finding of connections at risk (`None` when there are none).
pub fn at_risk_finding(list: &[AtRisk]) -> Option<Finding> {
    let first = list.first()?;
    let mut f = Finding::new(
        &conntrack_dnat_rebalance::INCIDENT,
        FindingKind::LatentRisk,
        Confidence::Likely,
        format!(
            "{} connection(s) through a Service will be reset if idle another {} (the first: {} to backend {}, idle {}, keepalive {})",
            list.len(),
            span(first.remaining_s),
            first.conn,
            first.backend,
            span(first.idle_s),
            first.keepalive_s.map_or("off".into(), |k| format!("in {}", span(k)))
        ),
    );
    for r in list.iter().take(20) {
        f = f.with_evidence(Evidence::Fact {
            source: format!("sock_diag ({}) + conntrack", r.socket_ns),
            text: format!(
                "{} → {}: idle {}, entry expires in {}, keepalive {}{}",
                r.conn,
                r.backend,
                span(r.idle_s),
                span(r.remaining_s),
                r.keepalive_s
                    .map_or("off".into(), |k| format!("in {}", span(k))),
                r.owner
                    .as_ref()
                    .map(|o| format!(", {o}"))
                    .unwrap_or_default()
            ),
        });
    }
    for r in list.iter().skip(1) {
        f.cases.push(format!(
            "{} → {}: expires in {} if idle",
            r.conn,
            r.backend,
            span(r.remaining_s)
        ));
    }
    Some(f.because("predicted: each socket's idle time against its namespace's nf_conntrack_tcp_timeout_established, with no keepalive probe due before the entry expires; nothing has broken yet"))
}

/// Follows `e` (NATed TCP entries only); returns a notice the first time the cap is reached.
fn track(s: &mut NsState, ts: i64, e: Entry) -> Option<String> {
    if e.orig.proto != TCP || !(snat(&e) || dnat(&e)) {
        return None;
    }
    let k = key(&e);
    let mut notice = None;
    if !s.tracked.contains_key(&k) {
        if s.tracked.len() >= MAX_TRACKED {
            while let Some(old) = s.order.pop_front() {
                if s.tracked.remove(&old).is_some() {
                    break;
                }
            }
            if !s.cap_noticed {
                s.cap_noticed = true;
                notice = Some(format!(
                    "{} NATed TCP connections followed in {}: the oldest are forgotten from here on (a connection forgotten is not predicted)",
                    MAX_TRACKED, s.label
                ));
            }
        }
        s.order.push_back(k);
        // Keys of destroyed entries stay in the queue until here: drop them when they dominate. The
        // bound follows the entries followed now, not the cap: at 250 NATed connections/s the queue
        // otherwise grew by 0.7 MiB a minute up to 2 × MAX_TRACKED keys (BENCHMARKS.md "Watch").
        // Amortised O(1): after a pass at least `tracked.len() + 1024` pushes come before the next.
        if s.order.len() > 2 * s.tracked.len() + 1024 {
            let tracked = &s.tracked;
            s.order.retain(|k| tracked.contains_key(k));
            if s.order.capacity() > 4 * s.order.len() + 4096 {
                s.order.shrink_to(2 * s.order.len() + 1024);
            }
        }
    }
    let merged = match s.tracked.get(&k) {
        // Events carry only what changed: keep what an earlier one said.
        Some(t) => Entry {
            tcp_state: e.tcp_state.or(t.entry.tcp_state),
            timeout_s: e.timeout_s.or(t.entry.timeout_s),
            status: if e.status != 0 {
                e.status
            } else {
                t.entry.status
            },
            reply: if e.reply.src.is_some() {
                e.reply
            } else {
                t.entry.reply
            },
            ..e
        },
        None => e,
    };
    s.tracked.insert(
        k,
        Tracked {
            entry: merged,
            last_ts: ts,
        },
    );
    notice
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::nl_conntrack::Tuple;

    const S: i64 = SEC;

    fn a(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    fn tup(src: &str, sport: u16, dst: &str, dport: u16) -> Tuple {
        Tuple {
            src: a(src),
            dst: a(dst),
            proto: TCP,
            sport: Some(sport),
            dport: Some(dport),
        }
    }

    /// A TCP entry: the client's tuple and the reply tuple (after NAT).
    fn entry(orig: Tuple, reply: Tuple, state: u8) -> Entry {
        Entry {
            orig,
            reply,
            status: IPS_ASSURED | 2,
            tcp_state: Some(state),
            timeout_s: Some(2),
            ..Default::default()
        }
    }

    fn ev(ts: i64, ns: NsId, event: Event) -> Stamped {
        Stamped {
            ts_ns: ts,
            ns: Some(ns),
            event,
        }
    }

    fn ct(kind: CtKind, e: Entry) -> Event {
        Event::Conntrack {
            kind,
            entry: e,
            by_userspace: false,
        }
    }

    /// A long run of NATed connections that come and go: the queue of followed keys stays near the
    /// entries alive, not near the cap (it grew by 0.7 MiB a minute at 250 connections/s before).
    #[test]
    fn the_follow_queue_stays_bounded_by_the_live_entries_when_connections_come_and_go() {
        let mut c = Correlator::new();
        let mut owners: HashMap<u32, String> = HashMap::new();
        let mut live = std::collections::VecDeque::new();
        for i in 0..300_000u32 {
            let e = Entry {
                orig: tup(
                    "10.244.1.11",
                    (i % 60_000) as u16 + 1024,
                    &format!("10.96.{}.1", i / 60_000),
                    80,
                ),
                reply: tup(
                    "10.244.2.7",
                    8080,
                    "10.244.1.11",
                    (i % 60_000) as u16 + 1024,
                ),
                ..Default::default()
            };
            c.push(ev(i as i64, 0, ct(CtKind::New, e)), &mut owners);
            live.push_back(e);
            // 500 alive at a time.
            if live.len() > 500 {
                let old = live.pop_front().unwrap();
                c.push(ev(i as i64, 0, ct(CtKind::Destroy, old)), &mut owners);
            }
        }
        let s = &c.ns[0];
        assert!(s.tracked.len() <= 501, "{}", s.tracked.len());
        assert!(s.order.len() <= 2 * 501 + 1024, "{}", s.order.len());
        assert!(
            s.order.capacity() <= 4 * (2 * 501 + 1024) + 4096,
            "{}",
            s.order.capacity()
        );
    }

    fn run(events: Vec<Stamped>) -> (Correlator, Vec<Output>) {
        let mut c = Correlator::new();
        let mut owners: HashMap<u32, String> =
            HashMap::from([(4242, "client (pid 7)".to_string())]);
        let mut out = Vec::new();
        for e in events {
            out.extend(c.push(e, &mut owners));
        }
        (c, out)
    }

    fn findings(out: &[Output]) -> Vec<(&'static str, FindingKind, Confidence)> {
        out.iter()
            .filter_map(|o| match o {
                Output::Finding { finding: f, .. } => Some((f.id, f.kind, f.confidence)),
                _ => None,
            })
            .collect()
    }

    fn socket(local: &str, lport: u16, remote: &str, rport: u16) -> Socket {
        Socket {
            state: TCP_ESTABLISHED,
            local: local.parse().unwrap(),
            local_port: lport,
            remote: remote.parse().unwrap(),
            remote_port: rport,
            recv_queue: 0,
            send_queue: 0,
            inode: 4242,
            idle_ms: Some(2500),
            keepalive_ms: None,
        }
    }

    #[test]
    fn masquerade_flush_then_new_port_then_reset_is_a_confirmed_snat_remap() {
        let t0 = 1_000 * S;
        let old = entry(
            tup("10.244.1.10", 40000, "172.18.0.2", 8899),
            tup("172.18.0.2", 8899, "172.18.0.1", 40000),
            CT_ESTABLISHED,
        );
        let mut new = entry(
            old.orig,
            tup("172.18.0.2", 8899, "172.18.0.1", 61000),
            CT_ESTABLISHED,
        );
        let events = vec![
            ev(
                t0,
                0,
                Event::Namespace {
                    label: "node".into(),
                },
            ),
            ev(
                t0,
                0,
                Event::Link {
                    added: true,
                    ifindex: 2,
                    ifname: "eth0".into(),
                },
            ),
            ev(
                t0,
                0,
                Event::Address {
                    added: true,
                    ifindex: 2,
                    ifname: None,
                    addr: "172.18.0.1".parse().unwrap(),
                    prefix_len: 24,
                },
            ),
            ev(
                t0,
                0,
                Event::Address {
                    added: true,
                    ifindex: 2,
                    ifname: None,
                    addr: "192.168.50.100".parse().unwrap(),
                    prefix_len: 32,
                },
            ),
            ev(t0, 0, ct(CtKind::New, old)),
            ev(
                t0 + S,
                0,
                Event::Address {
                    added: false,
                    ifindex: 2,
                    ifname: None,
                    addr: "192.168.50.100".parse().unwrap(),
                    prefix_len: 32,
                },
            ),
            ev(t0 + S + S / 10, 0, ct(CtKind::Destroy, old)),
            ev(t0 + S + S / 5, 0, ct(CtKind::New, new)),
        ];
        let (_, out) = run(events.clone());
        assert_eq!(
            findings(&out),
            [(
                conntrack_snat_remap::INCIDENT.id,
                FindingKind::Incident,
                Confidence::Likely
            )]
        );
        new.tcp_state = Some(CT_CLOSE);
        let mut more = events;
        // The server's RST on an unreplied entry: the kernel destroys it in CLOSE at once.
        more.push(ev(t0 + S + S / 4, 0, ct(CtKind::Destroy, new)));
        let (c, out) = run(more);
        assert_eq!(
            findings(&out),
            [
                (
                    conntrack_snat_remap::INCIDENT.id,
                    FindingKind::Incident,
                    Confidence::Likely
                ),
                (
                    conntrack_snat_remap::INCIDENT.id,
                    FindingKind::Incident,
                    Confidence::Confirmed
                ),
            ]
        );
        let f = &c.summary()[0];
        assert!(f.summary.contains("172.18.0.1:61000"), "{}", f.summary);
        // Every step carries its time: the deletion, the flush, the new translation.
        let texts: Vec<String> = f.evidence.iter().map(|e| format!("{e:?}")).collect();
        assert!(
            texts[0].contains("00:16:41.000 RTM_DELADDR 192.168.50.100/32 on eth0"),
            "{texts:?}"
        );
        assert!(texts[1].contains("00:16:41.100 DESTROY"), "{texts:?}");
    }

    #[test]
    fn the_same_deletion_without_a_flush_says_nothing() {
        let t0 = 1_000 * S;
        let old = entry(
            tup("10.244.1.10", 40000, "172.18.0.2", 8899),
            tup("172.18.0.2", 8899, "172.18.0.1", 40000),
            CT_ESTABLISHED,
        );
        let mut fin = old;
        fin.tcp_state = Some(7); // TIME_WAIT: the connection closed itself
        let (c, out) = run(vec![
            ev(
                t0,
                0,
                Event::Address {
                    added: true,
                    ifindex: 2,
                    ifname: Some("eth0".into()),
                    addr: "172.18.0.1".parse().unwrap(),
                    prefix_len: 24,
                },
            ),
            ev(t0, 0, ct(CtKind::New, old)),
            ev(
                t0 + S,
                0,
                Event::Address {
                    added: false,
                    ifindex: 2,
                    ifname: Some("eth0".into()),
                    addr: "192.168.50.100".parse().unwrap(),
                    prefix_len: 32,
                },
            ),
            ev(t0 + 5 * S, 0, ct(CtKind::Update, fin)),
            ev(t0 + 6 * S, 0, ct(CtKind::Destroy, fin)),
        ]);
        assert!(findings(&out).is_empty());
        assert!(c.summary().is_empty());
    }

    #[test]
    fn an_expired_dnat_entry_with_an_open_socket_is_predicted_then_confirmed_by_the_reset() {
        let t0 = 1_000 * S;
        let old = entry(
            tup("10.244.1.10", 50814, "10.96.0.20", 80),
            tup("10.244.2.11", 8080, "10.244.1.10", 50814),
            CT_ESTABLISHED,
        );
        let mut new = entry(
            old.orig,
            tup("10.244.2.12", 8080, "10.244.1.10", 50814),
            CT_ESTABLISHED,
        );
        let mut events = vec![
            ev(
                t0,
                0,
                Event::Namespace {
                    label: "node".into(),
                },
            ),
            ev(
                t0,
                1,
                Event::Namespace {
                    label: "pod client".into(),
                },
            ),
            ev(t0, 0, ct(CtKind::Update, old)),
            ev(
                t0 + S,
                1,
                Event::Sockets {
                    sockets: vec![socket("10.244.1.10", 50814, "10.96.0.20", 80)],
                },
            ),
            // 2 s timeout: GC destroys it a little later.
            ev(
                t0 + 2 * S + S / 2,
                0,
                ct(
                    CtKind::Destroy,
                    Entry {
                        tcp_state: None,
                        ..old
                    },
                ),
            ),
        ];
        let (c, out) = run(events.clone());
        assert_eq!(
            findings(&out),
            [(
                conntrack_dnat_rebalance::INCIDENT.id,
                FindingKind::LatentRisk,
                Confidence::Likely
            )]
        );
        let risk = &c.summary()[0];
        assert!(
            risk.summary.contains("will be reset on its next packet")
                && risk.summary.contains("expired"),
            "{}",
            risk.summary
        );
        assert!(format!("{:?}", risk.evidence).contains("client (pid 7)"));
        events.push(ev(t0 + 3 * S, 0, ct(CtKind::New, new)));
        new.tcp_state = Some(CT_CLOSE);
        events.push(ev(t0 + 3 * S + 1000, 0, ct(CtKind::Update, new)));
        let (c, out) = run(events);
        assert_eq!(
            findings(&out).last(),
            Some(&(
                conntrack_dnat_rebalance::INCIDENT.id,
                FindingKind::Incident,
                Confidence::Confirmed
            ))
        );
        // The incident replaces the prediction in the summary.
        assert_eq!(c.summary().len(), 1);
        assert!(c.summary()[0]
            .summary
            .contains("to backend 10.244.2.12:8080"));
    }

    #[test]
    fn an_expired_entry_without_a_socket_or_reused_by_the_same_backend_is_no_finding() {
        let t0 = 1_000 * S;
        let old = entry(
            tup("10.244.1.10", 50814, "10.96.0.20", 80),
            tup("10.244.2.11", 8080, "10.244.1.10", 50814),
            CT_ESTABLISHED,
        );
        let (_, out) = run(vec![
            ev(t0, 0, ct(CtKind::Update, old)),
            ev(t0 + 3 * S, 0, ct(CtKind::Destroy, old)),
            ev(t0 + 4 * S, 0, ct(CtKind::New, old)),
        ]);
        assert!(findings(&out).is_empty());
        // With the socket open the risk is named, but the same backend again is no incident.
        let (c, out) = run(vec![
            ev(t0, 0, ct(CtKind::Update, old)),
            ev(
                t0 + S,
                0,
                Event::Sockets {
                    sockets: vec![socket("10.244.1.10", 50814, "10.96.0.20", 80)],
                },
            ),
            ev(t0 + 3 * S, 0, ct(CtKind::Destroy, old)),
            ev(t0 + 4 * S, 0, ct(CtKind::New, old)),
        ]);
        assert!(findings(&out)
            .iter()
            .all(|f| f.1 == FindingKind::LatentRisk));
        assert!(c
            .summary()
            .iter()
            .all(|f| f.kind == FindingKind::LatentRisk));
    }

    /// The hour-long soak's false dnat-rebalance: an ESTABLISHED entry's FIN updates are lost in an
    /// ENOBUFS, it sits in TIME_WAIT unseen and its DESTROY (no state) comes two minutes later while a
    /// new socket reuses the tuple. Across a loss that chain is not followed; without one it is.
    #[test]
    fn an_entry_destroyed_before_its_timeout_across_an_event_loss_is_not_followed() {
        let t0 = 1_000 * S;
        let old = Entry {
            timeout_s: Some(432_000),
            ..entry(
                tup("10.244.1.10", 50814, "10.96.0.20", 80),
                tup("10.244.2.11", 8080, "10.244.1.10", 50814),
                CT_ESTABLISHED,
            )
        };
        let chain = |loss_at: Option<i64>| {
            let mut events: Vec<Stamped> = loss_at
                .map(|t| {
                    ev(
                        t,
                        0,
                        Event::Loss {
                            source: "conntrack events".into(),
                            count: 1,
                        },
                    )
                })
                .into_iter()
                .collect();
            events.extend([
                ev(t0, 0, ct(CtKind::Update, old)),
                ev(
                    t0 + 119 * S,
                    0,
                    Event::Sockets {
                        sockets: vec![socket("10.244.1.10", 50814, "10.96.0.20", 80)],
                    },
                ),
                ev(
                    t0 + 120 * S,
                    0,
                    ct(
                        CtKind::Destroy,
                        Entry {
                            tcp_state: None,
                            ..old
                        },
                    ),
                ),
            ]);
            events.sort_by_key(|e| e.ts_ns);
            run(events)
        };
        let risk = [(
            conntrack_dnat_rebalance::INCIDENT.id,
            FindingKind::LatentRisk,
            Confidence::Likely,
        )];
        assert_eq!(findings(&chain(None).1), risk);
        let (c, out) = chain(Some(t0 + S));
        assert!(findings(&out).is_empty(), "{:?}", findings(&out));
        assert!(c.summary().is_empty());
        assert!(out.iter().any(|o| matches!(o, Output::Notice { text, .. }
            if text.contains("while events were being lost"))));
        // A loss long before the entry's last update says nothing about it.
        assert_eq!(findings(&chain(Some(t0 - 60 * S)).1), risk);
    }

    /// Sockets are dumped only where a NATed connection can have one: the namespace of the entries
    /// and the pods owning their ends; none at all while no NATed TCP entry is followed.
    #[test]
    fn sockets_are_wanted_only_where_a_nated_connection_ends() {
        let addr = |ns: NsId, a: &str| {
            ev(
                0,
                ns,
                Event::Address {
                    added: true,
                    ifindex: 2,
                    ifname: Some("eth0".into()),
                    addr: a.parse().unwrap(),
                    prefix_len: 24,
                },
            )
        };
        let nated = entry(
            tup("10.244.1.10", 50814, "10.96.0.20", 80),
            tup("10.244.2.11", 8080, "10.244.1.10", 50814),
            CT_ESTABLISHED,
        );
        let plain = entry(
            tup("10.244.1.10", 50815, "10.244.2.11", 8080),
            tup("10.244.2.11", 8080, "10.244.1.10", 50815),
            CT_ESTABLISHED,
        );
        let setup = vec![
            addr(0, "192.168.0.5"),
            addr(1, "10.244.1.10"),
            addr(2, "10.244.1.99"),
            addr(3, "10.244.2.11"),
        ];
        let (c, _) = run(setup.clone());
        assert!(c.socket_namespaces().is_empty());
        let (c, _) = run(setup
            .iter()
            .cloned()
            .chain([ev(S, 0, ct(CtKind::New, plain))])
            .collect());
        assert!(c.socket_namespaces().is_empty(), "an entry without NAT");
        let (c, _) = run(setup
            .iter()
            .cloned()
            .chain([ev(S, 0, ct(CtKind::New, nated))])
            .collect());
        assert_eq!(c.socket_namespaces(), BTreeSet::from([0, 1, 3]));
        // Each end is looked up where it can be: the client's socket under the original tuple in the
        // client's namespace, the server's under the reply tuple in the server's; both in the
        // namespace that followed the entry (a host-network end would be there).
        let client: SocketTuple = (
            "10.244.1.10".parse().unwrap(),
            50814,
            "10.96.0.20".parse().unwrap(),
            80,
        );
        let server: SocketTuple = (
            "10.244.2.11".parse().unwrap(),
            8080,
            "10.244.1.10".parse().unwrap(),
            50814,
        );
        let mut both = vec![client, server];
        both.sort();
        assert_eq!(
            c.socket_plan(),
            BTreeMap::from([
                (0, SocketPlan::Lookup(both)),
                (1, SocketPlan::Lookup(vec![client])),
                (3, SocketPlan::Lookup(vec![server])),
            ])
        );
        // Past SOCKET_LOOKUP_MAX sockets a namespace is dumped.
        let many: Vec<Stamped> = (0..=SOCKET_LOOKUP_MAX as u16)
            .map(|i| {
                ev(
                    S,
                    0,
                    ct(
                        CtKind::New,
                        entry(
                            tup("10.244.1.10", 20000 + i, "10.96.0.20", 80),
                            tup("10.244.2.11", 8080, "10.244.1.10", 20000 + i),
                            CT_ESTABLISHED,
                        ),
                    ),
                )
            })
            .collect();
        let (c, _) = run(setup.iter().cloned().chain(many).collect());
        let plan = c.socket_plan();
        assert_eq!(plan.get(&0), Some(&SocketPlan::Dump));
        assert_eq!(plan.get(&1), Some(&SocketPlan::Dump));
        assert_eq!(plan.get(&3), Some(&SocketPlan::Dump));
        let (c, _) = run(setup
            .into_iter()
            .chain([
                ev(S, 0, ct(CtKind::New, nated)),
                ev(2 * S, 0, ct(CtKind::Destroy, nated)),
            ])
            .collect());
        assert!(c.socket_namespaces().is_empty(), "the entry went");
    }

    /// Dumps come at a quarter of the least time a followed connection has left, 1–10 s.
    #[test]
    fn sockets_are_dumped_as_often_as_the_shortest_timeout_needs() {
        let nated = entry(
            tup("10.244.1.10", 50814, "10.96.0.20", 80),
            tup("10.244.2.11", 8080, "10.244.1.10", 50814),
            CT_ESTABLISHED,
        );
        let interval = |timeout: Option<u64>| {
            let mut events = vec![ev(S, 0, ct(CtKind::New, nated))];
            if let Some(t) = timeout {
                events.insert(0, ev(0, 0, Event::ConntrackTimeout { established_s: t }));
            }
            run(events).0.socket_interval_s()
        };
        assert_eq!(
            run(Vec::new()).0.socket_interval_s(),
            10,
            "nothing followed"
        );
        assert_eq!(interval(Some(2)), 1, "the lab's 2 s timeout");
        assert_eq!(interval(Some(20)), 5);
        assert_eq!(interval(Some(86_400)), 10, "kube-proxy's day");
        assert_eq!(interval(None), 1, "timeout unknown: careful");
    }

    fn counters(pairs: &[(&str, u64)]) -> Counters {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    #[test]
    fn insert_failed_is_named_by_the_traffic_created_around_it() {
        let t0 = 1_000 * S;
        let st = |n| {
            Some(CtStats {
                insert_failed: n,
                ..Default::default()
            })
        };
        let syn = Entry {
            orig: tup("10.244.1.11", 5555, "172.18.0.2", 80),
            reply: tup("172.18.0.2", 80, "172.18.0.1", 1024),
            ..Default::default()
        };
        let (_, out) = run(vec![
            ev(
                t0,
                0,
                Event::Counters {
                    snmp: Counters::new(),
                    conntrack: st(0),
                },
            ),
            ev(
                t0 + S,
                0,
                Event::Counters {
                    snmp: Counters::new(),
                    conntrack: st(2),
                },
            ),
            ev(t0 + 2 * S, 0, ct(CtKind::New, syn)),
        ]);
        assert_eq!(
            findings(&out),
            [(
                snat_port_clash::INCIDENT.id,
                FindingKind::Incident,
                Confidence::Likely
            )]
        );
        let mut dns = syn;
        dns.orig = Tuple {
            proto: UDP,
            dport: Some(53),
            ..dns.orig
        };
        let (_, out) = run(vec![
            ev(
                t0,
                0,
                Event::Counters {
                    snmp: Counters::new(),
                    conntrack: st(0),
                },
            ),
            ev(t0 + S / 2, 0, ct(CtKind::New, dns)),
            ev(
                t0 + S,
                0,
                Event::Counters {
                    snmp: Counters::new(),
                    conntrack: st(1),
                },
            ),
        ]);
        assert_eq!(
            findings(&out),
            [(
                dns_conntrack_race::INCIDENT.id,
                FindingKind::Incident,
                Confidence::Likely
            )]
        );
        // Nothing to say which traffic: a notice, not a finding.
        let (_, out) = run(vec![
            ev(
                t0,
                0,
                Event::Counters {
                    snmp: Counters::new(),
                    conntrack: st(0),
                },
            ),
            ev(
                t0 + S,
                0,
                Event::Counters {
                    snmp: Counters::new(),
                    conntrack: st(1),
                },
            ),
            ev(
                t0 + 5 * S,
                0,
                Event::Counters {
                    snmp: Counters::new(),
                    conntrack: st(1),
                },
            ),
        ]);
        assert!(findings(&out).is_empty());
        assert!(out.iter().any(|o| matches!(o, Output::Notice { text, .. } if text.contains("insert_failed rose 0 → 1"))));
    }

    #[test]
    fn listen_overflows_name_the_full_listener_and_its_owner() {
        let t0 = 1_000 * S;
        let listener = Socket {
            state: TCP_LISTEN,
            local: "10.244.2.20".parse().unwrap(),
            local_port: 8080,
            remote: "0.0.0.0".parse().unwrap(),
            remote_port: 0,
            recv_queue: 3,
            send_queue: 2,
            inode: 4242,
            idle_ms: None,
            keepalive_ms: None,
        };
        let (_, out) = run(vec![
            ev(
                t0,
                0,
                Event::Counters {
                    snmp: counters(&[("TcpExt.ListenOverflows", 5)]),
                    conntrack: None,
                },
            ),
            ev(
                t0 + S,
                0,
                Event::Sockets {
                    sockets: vec![listener],
                },
            ),
            ev(
                t0 + S,
                0,
                Event::Counters {
                    snmp: counters(&[("TcpExt.ListenOverflows", 23)]),
                    conntrack: None,
                },
            ),
        ]);
        assert_eq!(
            findings(&out),
            [(
                listen_queue_overflow::INCIDENT.id,
                FindingKind::Incident,
                Confidence::Confirmed
            )]
        );
        let Output::Finding { finding, .. } = out
            .iter()
            .find(|o| matches!(o, Output::Finding { .. }))
            .unwrap()
        else {
            unreachable!()
        };
        assert!(
            finding.summary.contains("10.244.2.20:8080")
                && finding.summary.contains("client (pid 7)")
                && finding.summary.contains("refused 18"),
            "{}",
            finding.summary
        );
        // A quiet counter says nothing.
        let (_, out) = run(vec![
            ev(
                t0,
                0,
                Event::Counters {
                    snmp: counters(&[("TcpExt.ListenOverflows", 5)]),
                    conntrack: None,
                },
            ),
            ev(
                t0 + S,
                0,
                Event::Counters {
                    snmp: counters(&[("TcpExt.ListenOverflows", 5)]),
                    conntrack: None,
                },
            ),
        ]);
        assert!(findings(&out).is_empty());
    }

    #[test]
    fn martian_local_source_drops_are_named_and_unavailable_sources_said_once() {
        let t0 = 1_000 * S;
        let ipvs = vec![
            ev(
                t0,
                0,
                Event::Link {
                    added: true,
                    ifindex: 9,
                    ifname: "kube-ipvs0".into(),
                },
            ),
            ev(
                t0,
                0,
                Event::Address {
                    added: true,
                    ifindex: 9,
                    ifname: None,
                    addr: "172.18.0.200".parse().unwrap(),
                    prefix_len: 32,
                },
            ),
        ];
        let counted = vec![
            ev(
                t0,
                0,
                Event::Counters {
                    snmp: counters(&[("rt_cache.in_martian_src", 0)]),
                    conntrack: None,
                },
            ),
            ev(
                t0 + S,
                0,
                Event::Counters {
                    snmp: counters(&[("rt_cache.in_martian_src", 4)]),
                    conntrack: None,
                },
            ),
            ev(
                t0,
                0,
                Event::Unavailable {
                    source: "x".into(),
                    why: "y".into(),
                    costs: "z".into(),
                },
            ),
            ev(
                t0,
                0,
                Event::Unavailable {
                    source: "x".into(),
                    why: "y".into(),
                    costs: "z".into(),
                },
            ),
        ];
        // Without a LoadBalancer address bound in a watched namespace: kernel-wide drops are not ours.
        let (_, out) = run(counted.clone());
        assert!(findings(&out).is_empty());
        assert!(out
            .iter()
            .any(|o| matches!(o, Output::Notice { text, .. } if text.contains("not named"))));
        let (_, out) = run([ipvs.clone(), counted].concat());
        // The counter alone counts every martian: possible.
        assert_eq!(
            findings(&out),
            [(
                local_source_drop::INCIDENT.id,
                FindingKind::Incident,
                Confidence::Possible
            )]
        );
        // The drop reason adds to the same finding; it is not a second one.
        let (c, _) = run(vec![
            ipvs[0].clone(),
            ipvs[1].clone(),
            ev(
                t0,
                0,
                Event::Counters {
                    snmp: counters(&[("rt_cache.in_martian_src", 0)]),
                    conntrack: None,
                },
            ),
            ev(
                t0 + S,
                0,
                Event::Counters {
                    snmp: counters(&[("rt_cache.in_martian_src", 4)]),
                    conntrack: None,
                },
            ),
            Stamped {
                ts_ns: t0 + S,
                ns: None,
                event: Event::Drop {
                    reason: "IP_LOCAL_SOURCE".into(),
                    location: "ip_route_input_slow".into(),
                },
            },
        ]);
        assert_eq!(c.summary().len(), 1);
        assert_eq!(c.summary()[0].confidence, Confidence::Likely);
        assert_eq!(c.summary()[0].evidence.len(), 3);
        assert_eq!(
            out.iter()
                .filter(
                    |o| matches!(o, Output::Notice { text, .. } if text.contains("unavailable"))
                )
                .count(),
            1
        );
    }

    #[test]
    fn idle_service_connections_without_keepalive_are_at_risk_ranked_before_they_break() {
        let t0 = 1_000 * S;
        let e = |sport| {
            entry(
                tup("10.244.1.10", sport, "10.96.0.20", 80),
                tup("10.244.2.11", 8080, "10.244.1.10", sport),
                CT_ESTABLISHED,
            )
        };
        let mut kept_alive = socket("10.244.1.10", 3, "10.96.0.20", 80);
        kept_alive.keepalive_ms = Some(30_000);
        let mut fresh = socket("10.244.1.10", 2, "10.96.0.20", 80);
        fresh.idle_ms = Some(100);
        let (c, out) = run(vec![
            ev(
                t0,
                0,
                Event::ConntrackTimeout {
                    established_s: 3600,
                },
            ),
            ev(t0, 0, ct(CtKind::Update, e(1))),
            ev(t0, 0, ct(CtKind::Update, e(2))),
            ev(t0, 0, ct(CtKind::Update, e(3))),
            ev(
                t0,
                1,
                Event::Sockets {
                    sockets: vec![
                        Socket {
                            idle_ms: Some(3_000_000),
                            ..socket("10.244.1.10", 1, "10.96.0.20", 80)
                        },
                        fresh,
                        kept_alive,
                        // Not NATed: no entry, no risk.
                        socket("10.244.1.10", 9, "10.244.2.11", 8080),
                    ],
                },
            ),
        ]);
        assert_eq!(
            findings(&out),
            [(
                conntrack_dnat_rebalance::INCIDENT.id,
                FindingKind::LatentRisk,
                Confidence::Likely
            )]
        );
        let r = &c.at_risk_now;
        assert_eq!(r.len(), 2, "{r:?}");
        assert_eq!(
            (r[0].conn.as_str(), r[0].remaining_s),
            ("10.244.1.10:1 → 10.96.0.20:80", 600)
        );
        assert_eq!(r[1].remaining_s, 3599);
        let Output::Finding { finding, .. } = &out[0] else {
            unreachable!()
        };
        assert!(
            finding.summary.starts_with(
                "2 connection(s) through a Service will be reset if idle another 10 min"
            ),
            "{}",
            finding.summary
        );
        // The same list again says nothing new.
        assert_eq!(span(7800), "2 h 10 min");
    }

    /// With kube-proxy's one-day timeout a connection idle for seconds is ranked (the metric counts
    /// it) but not reported; one that would expire within the hour is.
    #[test]
    fn connections_at_risk_are_reported_within_the_hour_of_their_expiry() {
        let e = entry(
            tup("10.244.1.10", 1, "10.96.0.20", 80),
            tup("10.244.2.11", 8080, "10.244.1.10", 1),
            CT_ESTABLISHED,
        );
        let with_idle = |idle_ms: u32| {
            run(vec![
                ev(
                    0,
                    0,
                    Event::ConntrackTimeout {
                        established_s: 86_400,
                    },
                ),
                ev(S, 0, ct(CtKind::Update, e)),
                ev(
                    2 * S,
                    1,
                    Event::Sockets {
                        sockets: vec![Socket {
                            idle_ms: Some(idle_ms),
                            ..socket("10.244.1.10", 1, "10.96.0.20", 80)
                        }],
                    },
                ),
            ])
        };
        let (c, out) = with_idle(2_000);
        assert!(findings(&out).is_empty(), "{:?}", findings(&out));
        assert_eq!(c.at_risk_now.len(), 1);
        let (_, out) = with_idle(83_000_000);
        assert_eq!(
            findings(&out),
            [(
                conntrack_dnat_rebalance::INCIDENT.id,
                FindingKind::LatentRisk,
                Confidence::Likely
            )]
        );
    }
}
