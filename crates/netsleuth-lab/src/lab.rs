//! One run of one scenario: the run directory, the topology, the recorders, and the order of teardown
//! (recorders stop before the namespaces they run in are removed).

use crate::counters::{self, Snapshot};
use crate::dropmon::{DropMonitor, DropReasons};
use crate::error::{LabError, Result};
use crate::kube::{Rules, Service};
use crate::record::{self, Recorder};
use crate::report::{Artifact, ArtifactKind, Measurement, NodeFacts, RunReport};
use crate::topology::Topology;
use crate::{registry, RunOptions, ScenarioInfo};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// What the application saw, as a scenario reports it.
#[derive(Debug, Default)]
pub struct Outcome {
    /// The symptom, if the application saw it (one line, with numbers).
    pub symptom: Option<String>,
    /// What happened when there was no symptom (one line, with numbers).
    pub fine: String,
    pub events: Vec<String>,
    pub measurements: Vec<Measurement>,
}

impl Outcome {
    pub fn event(&mut self, e: impl Into<String>) {
        self.events.push(e.into());
    }

    pub fn measure(&mut self, name: impl Into<String>, value: f64, unit: &'static str) {
        self.measurements.push(Measurement::new(name, value, unit));
    }
}

/// Where the recorders run.
pub struct ObservePlan<'a> {
    /// Role of the namespace whose `tcpdump -i any` is the node view, and whose conntrack is watched.
    pub node_role: &'a str,
    /// Role of the pod whose `tcpdump -i eth0` is the client's own view.
    pub client_role: Option<&'a str>,
    /// Interface of the client capture: `eth0` in a pod; `cni0` in the node namespace sees every
    /// pod on the bridge before NAT (used when several pods play the client).
    pub client_iface: &'a str,
    /// Optional capture filter for both captures (keeps fixtures small in busy scenarios).
    pub filter: Option<&'a str>,
}

struct Observation {
    node_role: String,
    captures: Vec<(ArtifactKind, Recorder, String)>,
    ct_events: Option<Recorder>,
    ip_monitor: Option<Recorder>,
    before: Snapshot,
    dropmon: std::result::Result<DropMonitor, String>,
}

pub struct Lab {
    pub info: &'static ScenarioInfo,
    pub mitigated: bool,
    pub out: PathBuf,
    // Field order is drop order: recorders (in `obs`) before the namespaces (in `topo`).
    obs: Option<Observation>,
    topo: Option<Topology>,
    notes: Vec<String>,
    artifacts: Vec<Artifact>,
    services: Vec<Service>,
    nameservers: Vec<std::net::IpAddr>,
    hosts: Vec<(std::net::IpAddr, String)>,
    emulated_sysctls: BTreeMap<String, String>,
}

static RUN_COUNTER: AtomicU64 = AtomicU64::new(0);

impl Lab {
    pub fn topo(&self) -> &Topology {
        self.topo
            .as_ref()
            .expect("scenario built its topology first")
    }

    pub fn set_topology(&mut self, t: Topology) {
        self.topo = Some(t);
    }

    pub fn note(&mut self, n: impl Into<String>) {
        self.notes.push(n.into());
    }

    pub fn emulated_sysctl(&mut self, key: &str, value: &str) {
        self.emulated_sysctls.insert(key.into(), value.into());
    }

    /// Writes `contents` to `rel` under the run directory and lists it as an artifact.
    pub fn write_file(
        &mut self,
        rel: &str,
        contents: &str,
        kind: ArtifactKind,
        description: &str,
    ) -> Result<PathBuf> {
        let path = self.out.join(rel);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| LabError::file("creating directory", dir, e))?;
        }
        std::fs::write(&path, contents).map_err(|e| LabError::file("writing", &path, e))?;
        self.artifacts.push(Artifact {
            kind,
            path: path.clone(),
            description: description.into(),
        });
        Ok(path)
    }

    /// The resolv.conf of the node (for node facts).
    pub fn set_node_nameservers(&mut self, ns: &[std::net::Ipv4Addr]) {
        self.nameservers = ns.iter().map(|i| std::net::IpAddr::V4(*i)).collect();
    }

    /// The client container's /etc/hosts entries (for node facts: what the pod's hosts file answers).
    pub fn set_client_hosts(&mut self, entries: &[(std::net::Ipv4Addr, &str)]) {
        self.hosts = entries
            .iter()
            .map(|(i, n)| (std::net::IpAddr::V4(*i), n.to_string()))
            .collect();
    }

    /// Loads kube-proxy-style rules into the node namespace and keeps their text in the run directory.
    pub fn apply_rules(&mut self, rules: &Rules) -> Result<()> {
        let text = rules.apply(&self.topo().node)?;
        self.services.extend(rules.services.iter().cloned());
        self.write_file(
            "node/iptables-restore.txt",
            &text,
            ArtifactKind::NodeState,
            "the rules the lab loaded (kube-proxy style)",
        )?;
        Ok(())
    }

    /// Starts the recorders and takes the "before" counters. Call after the topology is built and
    /// before any traffic.
    pub fn observe(&mut self, plan: ObservePlan<'_>) -> Result<()> {
        let topo = self.topo.as_ref().expect("topology first");
        let node = topo.by_role(plan.node_role).expect("node role exists");
        let mut captures = Vec::new();
        let filter_note = plan
            .filter
            .map(|f| format!(", filter `{f}`"))
            .unwrap_or_default();
        let node_pcap = self.out.join("node.pcap");
        captures.push((
            ArtifactKind::NodeCapture,
            record::tcpdump(node, "any", &node_pcap, plan.filter)?,
            format!(
                "tcpdump -i any in the {} namespace (pcap, LINUX_SLL2){}",
                plan.node_role, filter_note
            ),
        ));
        if let Some(client) = plan.client_role {
            let ns = topo.by_role(client).expect("client role exists");
            let path = self.out.join("client.pcap");
            captures.push((
                ArtifactKind::ClientCapture,
                record::tcpdump(ns, plan.client_iface, &path, plan.filter)?,
                format!(
                    "tcpdump -i {} in the {client} namespace (pcap, Ethernet){}: the client side's own view",
                    plan.client_iface, filter_note
                ),
            ));
        }
        let ct_events = Some(record::conntrack_events(
            node,
            &self.out.join("conntrack-events.txt"),
        )?);
        let ip_monitor = Some(record::ip_monitor(
            node,
            &self.out.join("netlink-events.txt"),
        )?);
        let all = topo.all();
        let before = Snapshot::take(&all, &[node]);
        let dropmon = DropMonitor::start();
        self.obs = Some(Observation {
            node_role: plan.node_role.to_string(),
            captures,
            ct_events,
            ip_monitor,
            before,
            dropmon,
        });
        Ok(())
    }

    /// Stops the recorders, takes the "after" counters, writes them. Returns deltas and drop reasons.
    fn finish_observation(
        &mut self,
    ) -> Result<(
        Vec<counters::CounterDelta>,
        Vec<String>,
        DropReasons,
        String,
    )> {
        let Some(mut obs) = self.obs.take() else {
            return Ok((
                vec![],
                vec!["the scenario did not start its recorders".into()],
                DropReasons::default(),
                "node".into(),
            ));
        };
        // Let the last packets (FINs, retransmissions in flight) reach the captures.
        std::thread::sleep(Duration::from_millis(300));
        let drops = match obs.dropmon {
            Ok(m) => m.finish(),
            Err(why) => DropReasons {
                available: false,
                note: why,
                ..Default::default()
            },
        };
        let topo = self.topo.as_ref().expect("topology");
        let node = topo.by_role(&obs.node_role).expect("node role");
        let after = Snapshot::take(&topo.all(), &[node]);
        for (kind, rec, desc) in obs.captures.iter_mut() {
            let stderr = rec.stop();
            let packets = record::packets_captured(&stderr)
                .map(|n| format!(", {n} packets"))
                .unwrap_or_default();
            self.artifacts.push(Artifact {
                kind: *kind,
                path: rec.path.clone(),
                description: format!("{desc}{packets}"),
            });
        }
        if let Some(mut r) = obs.ct_events.take() {
            r.stop();
            self.artifacts.push(Artifact {
                kind: ArtifactKind::ConntrackEvents,
                path: r.path.clone(),
                description: format!(
                    "conntrack -E -o timestamp,id in the {} namespace",
                    obs.node_role
                ),
            });
        }
        if let Some(mut r) = obs.ip_monitor.take() {
            r.stop();
            self.artifacts.push(Artifact {
                kind: ArtifactKind::NetlinkEvents,
                path: r.path.clone(),
                description: format!(
                    "ip -ts monitor address route link in the {} namespace",
                    obs.node_role
                ),
            });
        }
        let deltas = counters::deltas(&obs.before, &after);
        let mut unavailable = after.unavailable.clone();
        unavailable.dedup();
        for (label, snap) in [("before", &obs.before), ("after", &after)] {
            for (source, text) in &snap.raw {
                let rel = format!(
                    "counters/{label}/{}",
                    source.replace(": ", "_").replace(['/', ' '], "_")
                );
                let path = self.out.join(rel);
                if let Some(d) = path.parent() {
                    let _ = std::fs::create_dir_all(d);
                }
                let _ = std::fs::write(path, text);
            }
        }
        let summary = serde_json::json!({
            "before": obs.before.values,
            "after": after.values,
            "deltas": deltas,
            "unavailable": unavailable,
            "drop_reasons": drops,
        });
        self.write_file(
            "counters.json",
            &serde_json::to_string_pretty(&summary).unwrap_or_default(),
            ArtifactKind::Counters,
            "counters before/after/deltas (conntrack -S, /proc/net/netstat+snmp per namespace, rt_cache), drop reasons; raw texts in counters/",
        )?;
        Ok((deltas, unavailable, drops, obs.node_role.clone()))
    }

    /// Node facts measured in the node namespace (and written to node/).
    fn node_facts(&mut self, node_role: &str) -> NodeFacts {
        let mut f = NodeFacts {
            kernel_release: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .ok()
                .map(|s| s.trim().to_string()),
            emulated_sysctls: self.emulated_sysctls.clone(),
            services: self.services.clone(),
            service_names: self
                .services
                .iter()
                .map(|s| format!("{} {}:{}/{}", s.name, s.vip, s.port, s.protocol))
                .collect(),
            nameservers: self.nameservers.clone(),
            hosts: self.hosts.clone(),
            ..Default::default()
        };
        let Some(topo) = self.topo.as_ref() else {
            return f;
        };
        let Some(node) = topo.by_role(node_role) else {
            return f;
        };
        for key in node_sysctls() {
            if let Some(v) = node.sysctl_get(&key) {
                f.sysctls.insert(key, v);
            }
        }
        for (k, v) in &self.emulated_sysctls {
            f.sysctls.insert(k.clone(), v.clone());
        }
        let save = node.exec("iptables-save", &[]).unwrap_or_default();
        f.masquerade_without_random_fully = save
            .lines()
            .filter(|l| {
                (l.contains("-j MASQUERADE") || l.contains("-j SNAT"))
                    && !l.contains("--random-fully")
            })
            .map(str::to_string)
            .collect();
        let addrs = node.ip(&["-j", "addr", "show"]).unwrap_or_default();
        let routes_local = node
            .ip(&["route", "show", "table", "local"])
            .unwrap_or_default();
        if let Ok(serde_json::Value::Array(links)) =
            serde_json::from_str::<serde_json::Value>(&addrs)
        {
            for link in links {
                let ifname = link["ifname"].as_str().unwrap_or("").to_string();
                for a in link["addr_info"].as_array().into_iter().flatten() {
                    let Some(ip) = a["local"]
                        .as_str()
                        .and_then(|s| s.parse::<std::net::IpAddr>().ok())
                    else {
                        continue;
                    };
                    if ip.is_loopback() {
                        continue;
                    }
                    if ifname == "kube-ipvs0" {
                        // Only an address that is in table local makes the kernel treat it as ours.
                        if routes_local
                            .lines()
                            .any(|l| l.split_whitespace().nth(1) == Some(&ip.to_string()))
                        {
                            f.ipvs_bound_addrs.push(ip);
                        }
                    } else {
                        f.local_addrs.push(ip);
                    }
                }
            }
        }
        let routes_all = node
            .ip(&["route", "show", "table", "all"])
            .unwrap_or_default();
        let dir = self.out.join("node");
        let _ = std::fs::create_dir_all(&dir);
        let _ = std::fs::write(dir.join("iptables-save.txt"), &save);
        let _ = std::fs::write(dir.join("ip-addr.json"), &addrs);
        let _ = std::fs::write(dir.join("ip-route-all.txt"), &routes_all);
        let sysctl_text: String = f
            .sysctls
            .iter()
            .map(|(k, v)| format!("{k} = {v}\n"))
            .collect();
        let _ = std::fs::write(dir.join("sysctl.txt"), sysctl_text);
        let _ = std::fs::write(
            dir.join("facts.json"),
            serde_json::to_string_pretty(&f).unwrap_or_default(),
        );
        self.artifacts.push(Artifact {
            kind: ArtifactKind::NodeState,
            path: dir,
            description: "iptables-save, ip addr (JSON), routes of all tables, sysctls, facts.json"
                .into(),
        });
        f
    }
}

/// The sysctls facts.json records: every catalogue incident's (`Incident::sysctls`), the copies of the
/// per-interface ones for the lab node's uplink eth0 (the kernel reads both `all` and the device's),
/// and forwarding, which the lab's topology turns on.
fn node_sysctls() -> Vec<String> {
    let mut keys: Vec<String> = netsleuth_core::detect::CATALOGUE
        .iter()
        .flat_map(|i| i.sysctls)
        .map(|k| k.to_string())
        .collect();
    let uplink: Vec<String> = keys
        .iter()
        .filter_map(|k| k.strip_prefix("net.ipv4.conf.all."))
        .map(|rest| format!("net.ipv4.conf.eth0.{rest}"))
        .collect();
    keys.extend(uplink);
    keys.push("net.ipv4.ip_forward".into());
    keys
}

/// Runs `info`'s scenario end to end.
pub fn run(info: &'static ScenarioInfo, opts: &RunOptions) -> Result<RunReport> {
    let started = Instant::now();
    let n = RUN_COUNTER.fetch_add(1, Ordering::Relaxed);
    let out = match &opts.out_dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!(
            "netsleuth-lab-{}{}-{}-{n}",
            info.name,
            if opts.mitigated { "-mitigated" } else { "" },
            std::process::id()
        )),
    };
    std::fs::create_dir_all(&out)
        .map_err(|e| LabError::file("creating the run directory", &out, e))?;
    let mut lab = Lab {
        info,
        mitigated: opts.mitigated,
        out: out.clone(),
        obs: None,
        topo: None,
        notes: Vec::new(),
        artifacts: Vec::new(),
        services: Vec::new(),
        nameservers: Vec::new(),
        hosts: Vec::new(),
        emulated_sysctls: BTreeMap::new(),
    };
    if let crate::Reproduction::Emulated { why, how } = info.reproduction {
        lab.note(format!("EMULATED on this kernel: {why} The lab {how}"));
    }
    if opts.mitigated {
        lab.note(format!("mitigated: {}", info.mitigation));
    }
    let outcome = crate::scenarios::drive(&mut lab);
    if let Some(sig) = registry::interrupted() {
        return Err(LabError::Interrupted(sig));
    }
    let outcome = outcome?;
    let (counter_deltas, counters_unavailable, drop_reasons, node_role) =
        lab.finish_observation()?;
    let node_facts = lab.node_facts(&node_role);
    let namespaces: Vec<String> = lab
        .topo
        .as_ref()
        .map(|t| t.all().iter().map(|n| n.name().to_string()).collect())
        .unwrap_or_default();
    if opts.keep {
        if let Some(t) = lab.topo.as_mut() {
            t.keep_all();
        }
    }
    // Namespaces go now (Drop), before the analysis, which needs only the files.
    lab.topo = None;
    let captures: Vec<PathBuf> = lab
        .artifacts
        .iter()
        .filter(|a| {
            matches!(
                a.kind,
                ArtifactKind::NodeCapture | ArtifactKind::ClientCapture
            )
        })
        .map(|a| a.path.clone())
        .collect();
    let analysis = if opts.skip_analysis {
        None
    } else {
        Some(crate::analysis::analyze_captures(&captures, &node_facts))
    };
    let symptom_seen = outcome.symptom.is_some();
    let outcome_line = outcome
        .symptom
        .clone()
        .unwrap_or_else(|| outcome.fine.clone());
    let report = RunReport {
        scenario: info.name,
        incident: info.incident.map(|i| i.id),
        mitigated: opts.mitigated,
        reproduction: info.reproduction,
        symptom_seen,
        outcome: outcome_line,
        events: outcome.events,
        measurements: outcome.measurements,
        out_dir: out,
        artifacts: std::mem::take(&mut lab.artifacts),
        counter_deltas,
        counters_unavailable,
        drop_reasons,
        node_facts,
        notes: std::mem::take(&mut lab.notes),
        namespaces,
        namespaces_kept: opts.keep,
        wall_time: started.elapsed(),
        analysis,
    };
    // The run's own record beside its files (the analysis is not in it: it is recomputed from the
    // captures by whoever reads them, with whatever detectors they have).
    let path = report.out_dir.join("run.json");
    let text = serde_json::to_string_pretty(&report).unwrap_or_default();
    std::fs::write(&path, text).map_err(|e| LabError::file("writing", &path, e))?;
    Ok(report)
}
