//! `watch --metrics ADDR`: what the watch loop sees, as Prometheus metrics (OpenMetrics text, which
//! Prometheus reads) on `GET /metrics`. [`WatchMetrics`] is the loop's observer (`live::Observe`): it
//! turns events, outputs and the loop's once-a-second tick into counters and gauges of its own
//! registry (no global one); [`super::http`] serves the registry.
//!
//! Labels stay bounded: `namespace` is a watched namespace's label (its series are removed when it is
//! gone, so pods that come and go do not pile up), `source` one of the loop's few sources, `reason` a
//! kernel drop reason (an enum of the kernel), `id`/`confidence` a catalogue id and one of three
//! confidences.

use super::CliError;
use netsleuth_node::live::event::{CtStats, NsId};
use netsleuth_node::live::{Event, Observe, Output, Stamped, Tick};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::collections::{BTreeSet, HashMap};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

type Labels = Vec<(&'static str, String)>;

/// The `namespace` label of kernel-wide sources (drop reasons).
const KERNEL_WIDE: &str = "kernel";

/// The per-CPU conntrack statistics, each a counter per namespace: (metric name, help, field).
/// One statistic: its metric name, its help, and how to read it.
type CtStat = (&'static str, &'static str, fn(&CtStats) -> u64);

const CT_STATS: [CtStat; 10] = [
    ("found", "lookups that found an entry", |s| s.found),
    ("insert", "entries inserted into the table", |s| s.insert),
    ("insert_failed", "entries that lost an insertion race or clash (a dropped packet unless clash resolution saved it)", |s| s.insert_failed),
    ("drop", "packets dropped because the table was full or an entry could not be made", |s| s.drop),
    ("early_drop", "entries evicted early to make room in a full table", |s| s.early_drop),
    ("invalid", "packets conntrack could not track (ct state invalid)", |s| s.invalid),
    ("error", "packets whose protocol helper or parsing failed (ICMP errors that fit no entry)", |s| s.error),
    ("search_restart", "hash-chain lookups restarted because the table changed under them", |s| s.search_restart),
    ("clash_resolve", "insertion clashes resolved without a drop", |s| s.clash_resolve),
    ("chain_toolong", "insertions refused because a hash chain was too long", |s| s.chain_toolong),
];

#[derive(Debug)]
pub struct WatchMetrics {
    findings: Family<Labels, Counter>,
    events: Family<Labels, Counter>,
    overruns: Family<Labels, Counter>,
    events_lost: Family<Labels, Counter>,
    resyncs: Family<Labels, Counter>,
    source_up: Family<Labels, Gauge>,
    kernel_drops: Family<Labels, Counter>,
    tap_packets: Family<Labels, Counter>,
    tap_dropped: Family<Labels, Counter>,
    conntrack: Vec<Family<Labels, Counter>>,
    namespaces: Gauge,
    at_risk: Gauge,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Each namespace's label and the sources its series carry (to remove them when it is gone).
    ns: HashMap<NsId, (String, BTreeSet<String>)>,
    /// Counters the hot path increments, looked up once: (namespace, source kind) and drop reason.
    event_counters: HashMap<(Option<NsId>, &'static str), Counter>,
    drop_counters: HashMap<String, Counter>,
}

fn ns_label(ns: &HashMap<NsId, (String, BTreeSet<String>)>, id: Option<NsId>) -> String {
    match id {
        None => KERNEL_WIDE.to_string(),
        Some(id) => ns
            .get(&id)
            .map_or_else(|| format!("#{id}"), |(l, _)| l.clone()),
    }
}

/// A counter's value set to what the kernel reports (its own running total).
fn set_counter(c: &Counter, v: u64) {
    let a: &AtomicU64 = c.inner();
    a.store(v, Ordering::Relaxed);
}

impl WatchMetrics {
    /// The metrics, registered in `registry` under the `netsleuth_` prefix.
    pub fn register(registry: &mut Registry) -> WatchMetrics {
        let m = WatchMetrics {
            findings: Family::default(),
            events: Family::default(),
            overruns: Family::default(),
            events_lost: Family::default(),
            resyncs: Family::default(),
            source_up: Family::default(),
            kernel_drops: Family::default(),
            tap_packets: Family::default(),
            tap_dropped: Family::default(),
            conntrack: CT_STATS.iter().map(|_| Family::default()).collect(),
            namespaces: Gauge::default(),
            at_risk: Gauge::default(),
            state: Mutex::new(State::default()),
        };
        let r = registry.sub_registry_with_prefix("netsleuth");
        r.register(
            "watch_findings",
            "Findings watch reported (a finding is reported again when its confidence rises), by catalogue id and confidence",
            m.findings.clone(),
        );
        r.register(
            "watch_events",
            "Events received, by namespace and source (conntrack events, rtnetlink, drop reasons)",
            m.events.clone(),
        );
        r.register(
            "watch_overruns",
            "Times a source's kernel buffer overflowed (netlink ENOBUFS: at least one event lost each time; a resync follows)",
            m.overruns.clone(),
        );
        r.register(
            "watch_events_lost",
            "Events a source knows it lost (the drop-reason trace ring's overwritten events)",
            m.events_lost.clone(),
        );
        r.register(
            "watch_resyncs",
            "State re-read after a loss (conntrack table dump, links and addresses dump)",
            m.resyncs.clone(),
        );
        r.register(
            "watch_source_up",
            "1 if the source is open and read, 0 if it could not be opened (watch printed why)",
            m.source_up.clone(),
        );
        r.register(
            "watch_namespaces",
            "Network namespaces watched now",
            m.namespaces.clone(),
        );
        r.register(
            "watch_connections_at_risk",
            "Connections ranked at risk now (NATed, idle without keepalive past the conntrack timeout)",
            m.at_risk.clone(),
        );
        r.register(
            "kernel_drops",
            "Packets the kernel freed with a drop reason (skb:kfree_skb, kernel-wide), by reason",
            m.kernel_drops.clone(),
        );
        r.register(
            "watch_tap_packets",
            "Packets the packet tap's kernel filter passed, by namespace (those the ring dropped included)",
            m.tap_packets.clone(),
        );
        r.register(
            "watch_tap_packets_dropped",
            "Packets the filter passed that the tap's ring had no room for, by namespace: gaps in what the tap analyses",
            m.tap_dropped.clone(),
        );
        for ((name, help, _), family) in CT_STATS.iter().zip(&m.conntrack) {
            r.register(
                format!("conntrack_{name}"),
                format!("Conntrack per-CPU statistics summed over CPUs, by namespace: {help}"),
                family.clone(),
            );
        }
        m
    }

    fn labels(ns: &str, source: &str) -> Labels {
        vec![
            ("namespace", ns.to_string()),
            ("source", source.to_string()),
        ]
    }

    fn count_event(&self, st: &mut State, ns: Option<NsId>, source: &'static str) {
        if let Some(c) = st.event_counters.get(&(ns, source)) {
            c.inc();
            return;
        }
        let label = ns_label(&st.ns, ns);
        let c = self
            .events
            .get_or_create_owned(&Self::labels(&label, source));
        c.inc();
        if let Some(id) = ns {
            if let Some((_, sources)) = st.ns.get_mut(&id) {
                sources.insert(source.to_string());
            }
        }
        st.event_counters.insert((ns, source), c);
    }

    /// Removes every series of a namespace that is gone.
    fn forget(&self, st: &mut State, id: NsId) {
        let Some((label, sources)) = st.ns.remove(&id) else {
            return;
        };
        st.event_counters.retain(|(ns, _), _| *ns != Some(id));
        for source in &sources {
            let l = Self::labels(&label, source);
            for f in [&self.events, &self.overruns, &self.resyncs] {
                f.remove(&l);
            }
            self.source_up.remove(&l);
        }
        let l: Labels = vec![("namespace", label)];
        for f in self
            .conntrack
            .iter()
            .chain([&self.tap_packets, &self.tap_dropped])
        {
            f.remove(&l);
        }
    }
}

impl Observe for WatchMetrics {
    fn event(&self, ev: &Stamped) {
        let Ok(mut st) = self.state.lock() else {
            return;
        };
        let st = &mut *st;
        match &ev.event {
            Event::Conntrack { .. } => self.count_event(st, ev.ns, "conntrack events"),
            Event::Address { .. } | Event::Link { .. } | Event::Route { .. } => {
                self.count_event(st, ev.ns, "rtnetlink")
            }
            Event::Drop { reason, .. } => {
                self.count_event(st, None, "drop reasons");
                match st.drop_counters.get(reason) {
                    Some(c) => {
                        c.inc();
                    }
                    None => {
                        let c = self
                            .kernel_drops
                            .get_or_create_owned(&vec![("reason", reason.clone())]);
                        c.inc();
                        st.drop_counters.insert(reason.clone(), c);
                    }
                }
            }
            Event::Namespace { label } => {
                if let Some(id) = ev.ns {
                    st.ns.insert(id, (label.clone(), BTreeSet::new()));
                }
            }
            Event::NamespaceGone => {
                if let Some(id) = ev.ns {
                    self.forget(st, id);
                }
            }
            Event::Counters {
                conntrack: Some(stats),
                ..
            } => {
                let l: Labels = vec![("namespace", ns_label(&st.ns, ev.ns))];
                for ((_, _, field), family) in CT_STATS.iter().zip(&self.conntrack) {
                    set_counter(&family.get_or_create(&l), field(stats));
                }
            }
            Event::Loss { source, count } => {
                let label = ns_label(&st.ns, ev.ns);
                set_counter(
                    &self.overruns.get_or_create(&Self::labels(&label, source)),
                    *count,
                );
                if let Some((_, s)) = ev.ns.and_then(|id| st.ns.get_mut(&id)) {
                    s.insert(source.clone());
                }
            }
            Event::Resynced { source, .. } => {
                let label = ns_label(&st.ns, ev.ns);
                self.resyncs
                    .get_or_create(&Self::labels(&label, source))
                    .inc();
                if let Some((_, s)) = ev.ns.and_then(|id| st.ns.get_mut(&id)) {
                    s.insert(source.clone());
                }
            }
            _ => {}
        }
    }

    fn output(&self, out: &Output) {
        if let Output::Finding { finding, .. } = out {
            self.findings
                .get_or_create(&vec![
                    ("id", finding.id.to_string()),
                    ("confidence", finding.confidence.as_str().to_string()),
                ])
                .inc();
        }
    }

    fn tick(&self, t: &Tick) {
        let Ok(mut st) = self.state.lock() else {
            return;
        };
        self.namespaces.set(t.namespaces as i64);
        self.at_risk.set(t.connections_at_risk as i64);
        for (ns, source, up) in &t.sources {
            let label = ns_label(&st.ns, *ns);
            self.source_up
                .get_or_create(&Self::labels(&label, source))
                .set(i64::from(*up));
            if let Some((_, s)) = ns.and_then(|id| st.ns.get_mut(&id)) {
                s.insert(source.to_string());
            }
        }
        for &(id, passed, dropped) in &t.tap_packets {
            let l: Labels = vec![("namespace", ns_label(&st.ns, Some(id)))];
            set_counter(&self.tap_packets.get_or_create(&l), passed);
            set_counter(&self.tap_dropped.get_or_create(&l), dropped);
        }
        if let Some(n) = t.drop_ring_overrun {
            set_counter(
                &self
                    .events_lost
                    .get_or_create(&Self::labels(KERNEL_WIDE, "drop reasons")),
                n,
            );
        }
    }
}

/// Binds `addr` and serves the metrics of a new registry there (on threads of their own); returns
/// the observer to hand the watch loop. Says on stderr where the metrics are (the port `0` picks).
pub fn serve(addr: SocketAddr) -> Result<Arc<WatchMetrics>, CliError> {
    let listener = TcpListener::bind(addr).map_err(CliError::io(format!(
        "cannot serve metrics on {addr} (hint: another process may listen there — `ss -ltnp` names it — or the address is not this host's; give another with --metrics ADDR:PORT, e.g. 127.0.0.1:9464, or leave --metrics out)"
    )))?;
    let bound = listener.local_addr().unwrap_or(addr);
    let mut registry = Registry::default();
    let metrics = Arc::new(WatchMetrics::register(&mut registry));
    let registry = Arc::new(registry);
    super::http::serve(
        listener,
        Arc::new(move || {
            let mut text = String::new();
            // Writing to a String cannot fail; an encoder error leaves what was written.
            let _ = prometheus_client::encoding::text::encode(&mut text, &registry);
            text
        }),
    )
    .map_err(CliError::io("cannot start the metrics server's thread"))?;
    eprintln!("netsleuth watch: metrics on http://{bound}/metrics");
    Ok(metrics)
}

#[cfg(test)]
mod tests {
    use super::*;
    use netsleuth_node::collect::nl_conntrack::Entry;
    use netsleuth_node::live::event::CtKind;

    fn stamped(ns: Option<NsId>, event: Event) -> Stamped {
        Stamped {
            ts_ns: 0,
            ns,
            event,
        }
    }

    fn text(r: &Registry) -> String {
        let mut s = String::new();
        prometheus_client::encoding::text::encode(&mut s, r).unwrap();
        s
    }

    #[test]
    fn events_stats_losses_and_sources_become_series_and_a_gone_namespace_takes_its_series_away() {
        let mut r = Registry::default();
        let m = WatchMetrics::register(&mut r);
        m.event(&stamped(
            Some(0),
            Event::Namespace {
                label: "pod-a".into(),
            },
        ));
        for _ in 0..3 {
            m.event(&stamped(
                Some(0),
                Event::Conntrack {
                    kind: CtKind::New,
                    entry: Entry::default(),
                    by_userspace: false,
                },
            ));
        }
        m.event(&stamped(
            Some(0),
            Event::Counters {
                snmp: Default::default(),
                conntrack: Some(CtStats {
                    insert_failed: 7,
                    found: 11,
                    ..Default::default()
                }),
            },
        ));
        m.event(&stamped(
            Some(0),
            Event::Loss {
                source: "conntrack events".into(),
                count: 2,
            },
        ));
        m.event(&stamped(
            None,
            Event::Drop {
                reason: "NOT_SPECIFIED".into(),
                location: "x".into(),
            },
        ));
        m.tick(&Tick {
            sources: vec![
                (Some(0), "conntrack events", true),
                (Some(0), "sock_diag", false),
            ],
            namespaces: 1,
            connections_at_risk: 4,
            drop_ring_overrun: Some(5),
            tap_packets: vec![(0, 120, 3)],
        });
        let t = text(&r);
        for line in [
            r#"netsleuth_watch_events_total{namespace="pod-a",source="conntrack events"} 3"#,
            r#"netsleuth_conntrack_insert_failed_total{namespace="pod-a"} 7"#,
            r#"netsleuth_conntrack_found_total{namespace="pod-a"} 11"#,
            r#"netsleuth_watch_overruns_total{namespace="pod-a",source="conntrack events"} 2"#,
            r#"netsleuth_kernel_drops_total{reason="NOT_SPECIFIED"} 1"#,
            r#"netsleuth_watch_source_up{namespace="pod-a",source="sock_diag"} 0"#,
            r#"netsleuth_watch_source_up{namespace="pod-a",source="conntrack events"} 1"#,
            r#"netsleuth_watch_events_lost_total{namespace="kernel",source="drop reasons"} 5"#,
            "netsleuth_watch_connections_at_risk 4",
            "netsleuth_watch_namespaces 1",
            r#"netsleuth_watch_tap_packets_total{namespace="pod-a"} 120"#,
            r#"netsleuth_watch_tap_packets_dropped_total{namespace="pod-a"} 3"#,
            "# TYPE netsleuth_watch_events counter",
        ] {
            assert!(t.lines().any(|l| l == line), "{line} missing in:\n{t}");
        }
        m.event(&stamped(Some(0), Event::NamespaceGone));
        let t = text(&r);
        assert!(!t.contains("pod-a"), "{t}");
        assert!(t.contains(r#"reason="NOT_SPECIFIED""#));
    }
}
