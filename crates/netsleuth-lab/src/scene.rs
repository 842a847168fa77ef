//! The scene builder: a scenario declares its network (pods, the remote node, Services, extra NAT
//! rules, sysctls, nft rules, files), its servers and where it is recorded from; the builder brings
//! the declaration up in the one order that works, and the types leave no other order to write:
//!
//! ```text
//! Scene ──Lab::build──► Net ──────────────observe──► Live ─────────finish(Outcome)──► Recorded
//! declared              topology, rules,             servers up,                      lab::run stops the
//!                       sysctls, nft, files;         recorders running:               recorders, reads
//!                       the scenario's own setup     the scenario's traffic           counters and facts
//! ```
//!
//! Recorders can only start once the network exists (`observe` is a [`Net`] method), traffic only
//! runs while they record ([`Live::run`], [`Live::spawn`]), and a scenario can only return a
//! [`Recorded`], which only [`Live::finish`] makes: no run reaches the analysis unrecorded. A scenario
//! is left with its own setup, its traffic and its judgement.
//!
//! Roles name the namespaces: `node` (the node with its bridge `cni0`), `remote` (the other node, when
//! declared) and each pod's role.

use crate::dns::{self, ServerHandle, Zone};
use crate::error::{LabError, Result};
use crate::kube::{Rules, Service};
use crate::lab::{Lab, Outcome};
use crate::netns::Netns;
use crate::observe::{Observation, Views};
use crate::report::ArtifactKind;
use crate::topology::{Machine, Topology};
use crate::traffic::{self, addr, Behaviour, TcpServer};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::ops::{Deref, DerefMut};
use std::thread::JoinHandle;
use std::time::Duration;

/// A scenario's declaration: what exists, what serves, where it is recorded from.
#[derive(Default)]
pub struct Scene {
    /// `Some(with_pods)` when the remote node exists.
    remote: Option<bool>,
    pods: Vec<(String, Ipv4Addr, Machine)>,
    rules: Rules,
    sysctls: Vec<(String, String, String)>,
    nft: Vec<(String, String, String)>,
    files: Vec<SceneFile>,
    servers: Vec<ServerSpec>,
    views: Views,
}

struct SceneFile {
    role: String,
    rel: String,
    text: String,
    description: String,
}

enum ServerSpec {
    Tcp {
        role: String,
        port: u16,
        backlog: i32,
        behaviour: Behaviour,
    },
    Dns {
        role: String,
        bind: SocketAddrV4,
        zone: Zone,
    },
    Forwarder {
        role: String,
        upstreams: Vec<Ipv4Addr>,
        timeout: Duration,
    },
}

impl ServerSpec {
    fn role(&self) -> &str {
        match self {
            ServerSpec::Tcp { role, .. }
            | ServerSpec::Dns { role, .. }
            | ServerSpec::Forwarder { role, .. } => role,
        }
    }
}

impl Scene {
    /// The node namespace with its bridge, recorded from every vantage its topology will have: the
    /// node (`-i any`), the `client` pod's `eth0`, the server's `eth0` and the node's interface toward
    /// it, and a routing-only remote node when it has pods.
    pub fn new() -> Scene {
        Scene::default()
    }

    /// Adds the remote node (a plain machine: a server, a load balancer, an upstream network).
    pub fn remote(mut self) -> Scene {
        self.remote.get_or_insert(false);
        self
    }

    /// A pod on the node's bridge.
    pub fn pod(mut self, role: &str, ip: Ipv4Addr) -> Scene {
        self.pods.push((role.into(), ip, Machine::Node));
        self
    }

    /// A pod on the remote node's bridge (the remote node then has pods, routed as flannel host-gw).
    pub fn remote_pod(mut self, role: &str, ip: Ipv4Addr) -> Scene {
        self.remote = Some(true);
        self.pods.push((role.into(), ip, Machine::Remote));
        self
    }

    /// A Service programmed by kube-proxy-style rules in the node.
    pub fn service(mut self, s: Service) -> Scene {
        self.rules.services.push(s);
        self
    }

    /// An extra nat POSTROUTING rule in the node (`iptables-save` syntax without `-A POSTROUTING`).
    pub fn postrouting(mut self, rule: impl Into<String>) -> Scene {
        self.rules.extra_postrouting.push(rule.into());
        self
    }

    /// A sysctl set in `role`'s namespace once the rules are loaded.
    pub fn sysctl(mut self, role: &str, key: &str, value: &str) -> Scene {
        self.sysctls.push((role.into(), key.into(), value.into()));
        self
    }

    /// An nft ruleset loaded in `role`'s namespace, kept as `<role>/<file>` in the run directory.
    pub fn nft(mut self, role: &str, file: &str, ruleset: String) -> Scene {
        self.nft.push((role.into(), file.into(), ruleset));
        self
    }

    /// A file of `role`'s filesystem (`etc/resolv.conf`), written as `<role>/<rel>` in the run directory.
    pub fn file(mut self, role: &str, rel: &str, text: &str, description: &str) -> Scene {
        self.files.push(SceneFile {
            role: role.into(),
            rel: rel.into(),
            text: text.into(),
            description: description.into(),
        });
        self
    }

    /// A TCP server on `0.0.0.0:port` in `role`'s namespace (backlog 128); it names itself `role` in
    /// its echoes.
    pub fn serve(self, role: &str, port: u16, behaviour: Behaviour) -> Scene {
        self.listen(role, port, 128, behaviour)
    }

    /// A TCP server with the given listen backlog.
    pub fn listen(mut self, role: &str, port: u16, backlog: i32, behaviour: Behaviour) -> Scene {
        self.servers.push(ServerSpec::Tcp {
            role: role.into(),
            port,
            backlog,
            behaviour,
        });
        self
    }

    /// An authoritative DNS server on `0.0.0.0:53` in `role`'s namespace.
    pub fn dns(self, role: &str, zone: Zone) -> Scene {
        self.dns_at(role, addr(Ipv4Addr::UNSPECIFIED, 53), zone)
    }

    /// An authoritative DNS server bound to `bind` (an address the scenario's setup adds).
    pub fn dns_at(mut self, role: &str, bind: SocketAddrV4, zone: Zone) -> Scene {
        self.servers.push(ServerSpec::Dns {
            role: role.into(),
            bind,
            zone,
        });
        self
    }

    /// A CoreDNS-like forwarder on `0.0.0.0:53` in `role`'s namespace; its log is [`Live::server_log`].
    pub fn dns_forwarder(
        mut self,
        role: &str,
        upstreams: Vec<Ipv4Addr>,
        timeout: Duration,
    ) -> Scene {
        self.servers.push(ServerSpec::Forwarder {
            role: role.into(),
            upstreams,
            timeout,
        });
        self
    }

    /// The namespace recorded as "the node" (`-i any`, conntrack events): `node` unless changed.
    pub fn record_node(mut self, role: &str) -> Scene {
        self.views.node = role.into();
        self
    }

    /// The client side's own view: `iface` in `role`'s namespace (default `eth0` of `client`).
    pub fn client_view(mut self, role: &str, iface: &str) -> Scene {
        self.views.client = (role.into(), iface.into());
        self
    }

    /// The server whose own view is recorded (`server.pcap`, and the node's interface toward it,
    /// `veth.pcap`); default: the first server declared.
    pub fn server_view(mut self, role: &str) -> Scene {
        self.views.server = Some(role.into());
        self
    }

    /// A capture filter for every capture of the run.
    pub fn capture_filter(mut self, filter: &'static str) -> Scene {
        self.views.filter = Some(filter);
        self
    }
}

/// Sets a declared sysctl; one the namespace lacks is a missing kernel feature, said with its module.
fn set_sysctl(ns: &Netns, role: &str, key: &str, value: &str) -> Result<()> {
    if ns.sysctl_get(key).is_none() {
        let hint = if key.starts_with("net.bridge.") {
            "load it on the host with `modprobe br_netfilter` (the lab does not load modules)"
        } else if key.starts_with("net.netfilter.") {
            "load it on the host with `modprobe nf_conntrack` (the lab does not load modules)"
        } else {
            "this kernel does not have it"
        };
        let module = if key.starts_with("net.bridge.") {
            " (br_netfilter is not loaded)"
        } else {
            ""
        };
        return Err(LabError::MissingKernelFeature {
            what: format!("{key} is missing in the lab's {role} namespace{module}"),
            hint: hint.into(),
        });
    }
    ns.sysctl(key, value)
}

impl Lab {
    /// Builds the scene's network: namespaces and links, then the rules, sysctls, nft rulesets and
    /// files it declares. Its servers and recorders start with [`Net::observe`].
    pub fn build(&mut self, scene: Scene) -> Result<Net<'_>> {
        let mut topo = Topology::new()?;
        if let Some(with_pods) = scene.remote {
            topo.add_remote(with_pods)?;
        }
        for (role, ip, on) in &scene.pods {
            topo.add_pod(role, *ip, *on)?;
        }
        if !scene.rules.services.is_empty() || !scene.rules.extra_postrouting.is_empty() {
            self.apply_rules(&topo.node, &scene.rules)?;
        }
        for (role, key, value) in &scene.sysctls {
            set_sysctl(topo.ns(role)?, role, key, value)?;
        }
        for (role, file, ruleset) in &scene.nft {
            topo.ns(role)?.exec_stdin("nft", &["-f", "-"], ruleset)?;
            self.write_file(
                &format!("{role}/{file}"),
                ruleset,
                ArtifactKind::NodeState,
                &format!("the nft rules the scenario loaded in the {role} namespace"),
            )?;
        }
        for f in &scene.files {
            topo.ns(&f.role)?;
            let kind = if matches!(f.role.as_str(), "node" | "remote") {
                ArtifactKind::NodeState
            } else {
                ArtifactKind::ContainerFile
            };
            self.write_file(
                &format!("{}/{}", f.role, f.rel),
                &f.text,
                kind,
                &f.description,
            )?;
        }
        Ok(Net {
            lab: self,
            topo,
            servers: scene.servers,
            views: scene.views,
        })
    }
}

/// The scene's network, rules loaded, nothing recorded yet: where a scenario does its own setup.
pub struct Net<'l> {
    lab: &'l mut Lab,
    topo: Topology,
    servers: Vec<ServerSpec>,
    views: Views,
}

impl Net<'_> {
    /// The namespace of `role`.
    pub fn ns(&self, role: &str) -> Result<&Netns> {
        self.topo.ns(role)
    }

    /// The node namespace.
    pub fn node(&self) -> &Netns {
        &self.topo.node
    }

    /// The name of `role`'s veth end on its machine's bridge (a `cni0` port), if `role` is a pod.
    pub fn host_veth(&self, role: &str) -> Option<&str> {
        self.topo.pod(role).map(|p| p.host_veth.as_str())
    }
}

impl<'l> Net<'l> {
    /// Starts the declared servers, then the recorders (captures, events, "before" counters): from here
    /// on traffic may flow.
    pub fn observe(self) -> Result<Live<'l>> {
        let Net {
            lab,
            topo,
            servers,
            mut views,
        } = self;
        if views.server.is_none() {
            views.server = servers.first().map(|s| s.role().to_string());
        }
        let mut running = Vec::new();
        for spec in servers {
            running.push(start_server(&topo, spec)?);
        }
        let obs = Observation::start(&topo, &views, &lab.out, lab.watch)?;
        Ok(Live {
            servers: running,
            obs,
            topo,
            lab,
        })
    }
}

enum Running {
    Tcp(#[allow(dead_code)] TcpServer),
    Dns(String, ServerHandle),
}

fn start_server(topo: &Topology, spec: ServerSpec) -> Result<Running> {
    Ok(match spec {
        ServerSpec::Tcp {
            role,
            port,
            backlog,
            behaviour,
        } => Running::Tcp(traffic::serve(
            topo.ns(&role)?,
            &role,
            addr(Ipv4Addr::UNSPECIFIED, port),
            backlog,
            behaviour,
        )?),
        ServerSpec::Dns { role, bind, zone } => {
            let h = dns::serve(topo.ns(&role)?, bind, zone)?;
            Running::Dns(role, h)
        }
        ServerSpec::Forwarder {
            role,
            upstreams,
            timeout,
        } => {
            let h = dns::forward(
                topo.ns(&role)?,
                addr(Ipv4Addr::UNSPECIFIED, 53),
                upstreams,
                timeout,
            )?;
            Running::Dns(role, h)
        }
    })
}

/// The scene with its servers up and its recorders running: where the scenario's traffic runs.
pub struct Live<'l> {
    // Field order is drop order: servers, then recorders, then the namespaces they run in.
    servers: Vec<Running>,
    obs: Observation,
    topo: Topology,
    lab: &'l mut Lab,
}

/// Traffic running on its own thread inside a namespace ([`Live::spawn`]).
pub struct Traffic<T> {
    scenario: &'static str,
    handle: JoinHandle<Result<T>>,
}

impl<T> Traffic<T> {
    /// Waits for the traffic; a panic in it is a traffic error of the scenario.
    pub fn join(self) -> Result<T> {
        self.handle.join().unwrap_or_else(|_| {
            Err(LabError::traffic(
                self.scenario,
                "a traffic thread panicked",
            ))
        })
    }
}

impl Live<'_> {
    /// The namespace of `role`.
    pub fn ns(&self, role: &str) -> Result<&Netns> {
        self.topo.ns(role)
    }

    /// The node namespace.
    pub fn node(&self) -> &Netns {
        &self.topo.node
    }

    /// Runs `f` on a thread inside `role`'s namespace and waits for it.
    pub fn run<T: Send + 'static>(
        &self,
        role: &str,
        f: impl FnOnce() -> Result<T> + Send + 'static,
    ) -> Result<T> {
        self.spawn(role, f)?.join()
    }

    /// Starts `f` on a thread inside `role`'s namespace.
    pub fn spawn<T: Send + 'static>(
        &self,
        role: &str,
        f: impl FnOnce() -> Result<T> + Send + 'static,
    ) -> Result<Traffic<T>> {
        Ok(Traffic {
            scenario: self.lab.info.name,
            handle: self.ns(role)?.spawn("traffic", f)?,
        })
    }

    /// What the DNS server or forwarder of `role` logged so far.
    pub fn server_log(&self, role: &str) -> Vec<String> {
        self.servers
            .iter()
            .find_map(|s| match s {
                Running::Dns(r, h) if r == role => Some(h.log_lines()),
                _ => None,
            })
            .unwrap_or_default()
    }

    /// Ends the traffic with what the application saw: the servers stop; the recorders keep running
    /// until `lab::run` stops them.
    pub fn finish(self, outcome: Outcome) -> Recorded {
        let Live {
            servers, obs, topo, ..
        } = self;
        drop(servers);
        Recorded { outcome, obs, topo }
    }
}

/// A recorded run: what a scenario returns, and only [`Live::finish`] makes.
pub struct Recorded {
    pub(crate) outcome: Outcome,
    // Recorders before the namespaces they run in.
    pub(crate) obs: Observation,
    pub(crate) topo: Topology,
}

impl Deref for Net<'_> {
    type Target = Lab;
    fn deref(&self) -> &Lab {
        self.lab
    }
}

impl DerefMut for Net<'_> {
    fn deref_mut(&mut self) -> &mut Lab {
        self.lab
    }
}

impl Deref for Live<'_> {
    type Target = Lab;
    fn deref(&self) -> &Lab {
        self.lab
    }
}

impl DerefMut for Live<'_> {
    fn deref_mut(&mut self) -> &mut Lab {
        self.lab
    }
}
