//! The recorders of one run: the captures of the scene's vantage points, conntrack and netlink events
//! of the recorded node, counters before and after, kernel drop reasons. [`Observation::start`] runs
//! once the scene's network and servers are up and before any traffic (`Net::observe`);
//! [`Observation::stop`] runs after the traffic (`lab::run`), before the namespaces go.

use crate::counters::Snapshot;
use crate::dropmon::{DropMonitor, DropReasons};
use crate::error::Result;
use crate::record::{self, Recorder};
use crate::report::{Artifact, ArtifactKind};
use crate::topology::Topology;
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
    /// Capture filter for every capture (keeps fixtures small in busy scenarios).
    pub filter: Option<&'static str>,
}

impl Default for Views {
    fn default() -> Views {
        Views {
            node: "node".into(),
            client: ("client".into(), "eth0".into()),
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
}

/// What the recorders left: their files (as artifacts), the counters on both sides of the traffic and
/// the kernel's drop reasons.
pub(crate) struct Recording {
    pub artifacts: Vec<Artifact>,
    pub before: Snapshot,
    pub after: Snapshot,
    pub drops: DropReasons,
}

impl Observation {
    /// Starts the captures, the event recorders and the drop monitor, and takes the "before" counters.
    pub fn start(topo: &Topology, views: &Views, out: &Path) -> Result<Observation> {
        let node = topo.ns(&views.node)?;
        let filter_note = views
            .filter
            .map(|f| format!(", filter `{f}`"))
            .unwrap_or_default();
        let mut captures = Vec::new();
        captures.push((
            ArtifactKind::NodeCapture,
            record::tcpdump(node, "any", &out.join("node.pcap"), views.filter)?,
            format!(
                "tcpdump -i any in the {} namespace (pcap, LINUX_SLL2){filter_note}",
                views.node
            ),
        ));
        let (client, iface) = &views.client;
        captures.push((
            ArtifactKind::ClientCapture,
            record::tcpdump(
                topo.ns(client)?,
                iface,
                &out.join("client.pcap"),
                views.filter,
            )?,
            format!(
                "tcpdump -i {iface} in the {client} namespace (pcap, Ethernet){filter_note}: the client side's own view"
            ),
        ));
        let ct_events = record::conntrack_events(node, &out.join("conntrack-events.txt"))?;
        let ip_monitor = record::ip_monitor(node, &out.join("netlink-events.txt"))?;
        let before = Snapshot::take(&topo.all(), &[node]);
        Ok(Observation {
            node_role: views.node.clone(),
            captures,
            ct_events,
            ip_monitor,
            before,
            dropmon: DropMonitor::start(),
        })
    }

    /// Stops every recorder (after a moment for the last packets) and takes the "after" counters.
    pub fn stop(mut self, topo: &Topology) -> Recording {
        // Let the last packets (FINs, retransmissions in flight) reach the captures.
        std::thread::sleep(Duration::from_millis(300));
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
        }
    }
}
