//! The recorders of one run: a capture from every vantage point the scene's topology has (see
//! [`vantages`]), conntrack and netlink events of the recorded node, counters before and after,
//! kernel drop reasons. [`Observation::start`] runs
//! once the scene's network and servers are up and before any traffic (`Net::observe`);
//! [`Observation::stop`] runs after the traffic (`lab::run`), before the namespaces go.

use crate::counters::Snapshot;
use crate::dropmon::{DropMonitor, DropReasons, Owner};
use crate::error::Result;
use crate::netns::Netns;
use crate::record::{self, Recorder};
use crate::report::{Artifact, ArtifactKind};
use crate::topology::{Machine, Topology};
use std::path::Path;
use std::time::Duration;

/// Where a scene is recorded from (see `Scene::record_node`, `client_view`, `capture_filter`).
#[derive(Debug, Clone)]
pub(crate) struct Views {
    /// Role of the namespace whose `tcpdump -i any` is the node view, and whose conntrack is watched.
    pub node: String,
    /// Role and interface of the client side's own view: `eth0` in a pod; `cni0` in the node namespace
    /// sees every pod on the bridge before NAT (when several pods play the client).
    pub client: (String, String),
    /// Role of the server whose own view (`eth0`) is recorded: a pod, or `remote`.
    pub server: Option<String>,
    /// Capture filter for every capture (keeps fixtures small in busy scenarios).
    pub filter: Option<&'static str>,
}

impl Default for Views {
    fn default() -> Views {
        Views {
            node: "node".into(),
            client: ("client".into(), "eth0".into()),
            server: None,
            filter: None,
        }
    }
}

pub(crate) struct Observation {
    pub node_role: String,
    captures: Vec<(ArtifactKind, Recorder, String)>,
    ct_events: Recorder,
    ip_monitor: Recorder,
    before: Snapshot,
    dropmon: std::result::Result<DropMonitor, String>,
    watcher: Option<crate::watch::LabWatcher>,
}

/// What the recorders left: their files (as artifacts), the counters on both sides of the traffic and
/// the kernel's drop reasons.
pub(crate) struct Recording {
    pub artifacts: Vec<Artifact>,
    pub before: Snapshot,
    pub after: Snapshot,
    pub drops: DropReasons,
    /// What `netsleuth watch` said during the run (`--watch`).
    pub watch: Option<crate::watch::WatchRecord>,
}

/// One capture point: a namespace, an interface, the file it goes to.
struct Vantage<'t> {
    kind: ArtifactKind,
    ns: &'t Netns,
    role: String,
    iface: String,
    file: &'static str,
    what: String,
}

/// Every vantage point the topology has, as people capture incidents: the recorded node with
/// `-i any` (each forwarded packet on its way in and out, before and after NAT), the client side's
/// own interface, the server's own `eth0`, the node's interface toward the server (a pod's veth on
/// the node, else the node's `eth0`), and a node that only routes (the remote node with pods behind
/// it, which has no NAT rules) where there is one.
fn vantages<'t>(topo: &'t Topology, views: &Views) -> Result<Vec<Vantage<'t>>> {
    let mut v = vec![Vantage {
        kind: ArtifactKind::NodeCapture,
        ns: topo.ns(&views.node)?,
        role: views.node.clone(),
        iface: "any".into(),
        file: "node.pcap",
        what: "the node's view: each packet on every interface, before and after NAT".into(),
    }];
    let (client, iface) = &views.client;
    v.push(Vantage {
        kind: ArtifactKind::ClientCapture,
        ns: topo.ns(client)?,
        role: client.clone(),
        iface: iface.clone(),
        file: "client.pcap",
        what: "the client side's own view".into(),
    });
    if let Some(server) = &views.server {
        v.push(Vantage {
            kind: ArtifactKind::ServerCapture,
            ns: topo.ns(server)?,
            role: server.clone(),
            iface: "eth0".into(),
            file: "server.pcap",
            what: "the server's own view".into(),
        });
        let toward = match topo.pod(server) {
            Some(p) if p.on == Machine::Node => p.host_veth.clone(),
            _ => "eth0".into(),
        };
        v.push(Vantage {
            kind: ArtifactKind::VethCapture,
            ns: &topo.node,
            role: "node".into(),
            iface: toward,
            file: "veth.pcap",
            what: format!("the node's interface toward the server ({server})"),
        });
    }
    if topo.remote_has_pods() && views.node != "remote" {
        v.push(Vantage {
            kind: ArtifactKind::RoutingCapture,
            ns: topo.ns("remote")?,
            role: "remote".into(),
            iface: "any".into(),
            file: "routing.pcap",
            what: "a node that only routes (pods behind it, no NAT): each packet on its way in and out"
                .into(),
        });
    }
    Ok(v)
}

impl Observation {
    /// Starts the captures, the event recorders and the drop monitor, and takes the "before" counters.
    pub fn start(topo: &Topology, views: &Views, out: &Path, watch: bool) -> Result<Observation> {
        let node = topo.ns(&views.node)?;
        let filter_note = views
            .filter
            .map(|f| format!(", filter `{f}`"))
            .unwrap_or_default();
        let mut captures = Vec::new();
        for v in vantages(topo, views)? {
            let link = if v.iface == "any" {
                "LINUX_SLL2"
            } else {
                "Ethernet"
            };
            captures.push((
                v.kind,
                record::tcpdump(v.ns, &v.iface, &out.join(v.file), views.filter)?,
                format!(
                    "tcpdump -i {} -s {} in the {} namespace (pcap, {link}){filter_note}: {}",
                    v.iface,
                    record::SNAPLEN,
                    v.role,
                    v.what
                ),
            ));
        }
        let ct_events = record::conntrack_events(node, &out.join("conntrack-events.txt"))?;
        let ip_monitor = record::ip_monitor(node, &out.join("netlink-events.txt"))?;
        let before = Snapshot::take(&topo.all(), &[node]);
        Ok(Observation {
            node_role: views.node.clone(),
            captures,
            ct_events,
            ip_monitor,
            before,
            dropmon: DropMonitor::start(Owner::Lab),
            // Last, so that it is ready when the traffic starts and sees the scene as built.
            watcher: watch.then(|| crate::watch::LabWatcher::start(topo, &views.node, out)),
        })
    }

    /// Stops every recorder (after a moment for the last packets) and takes the "after" counters.
    pub fn stop(mut self, topo: &Topology) -> Recording {
        // Let the last packets (FINs, retransmissions in flight) reach the captures.
        std::thread::sleep(Duration::from_millis(300));
        let watch = self.watcher.take().map(|w| w.stop());
        let drops = match self.dropmon {
            Ok(m) => m.finish(),
            Err(why) => DropReasons {
                available: false,
                note: why,
                ..Default::default()
            },
        };
        let node: Vec<_> = topo.by_role(&self.node_role).into_iter().collect();
        let after = Snapshot::take(&topo.all(), &node);
        let mut artifacts = Vec::new();
        for (kind, rec, desc) in self.captures.iter_mut() {
            let packets = record::packets_captured(&rec.stop())
                .map(|n| format!(", {n} packets"))
                .unwrap_or_default();
            artifacts.push(Artifact {
                kind: *kind,
                path: rec.path.clone(),
                description: format!("{desc}{packets}"),
            });
        }
        self.ct_events.stop();
        artifacts.push(Artifact {
            kind: ArtifactKind::ConntrackEvents,
            path: self.ct_events.path.clone(),
            description: format!(
                "conntrack -E -o timestamp,id in the {} namespace",
                self.node_role
            ),
        });
        self.ip_monitor.stop();
        artifacts.push(Artifact {
            kind: ArtifactKind::NetlinkEvents,
            path: self.ip_monitor.path.clone(),
            description: format!(
                "ip -ts monitor address route link in the {} namespace",
                self.node_role
            ),
        });
        Recording {
            artifacts,
            before: self.before,
            after,
            drops,
            watch,
        }
    }
}
