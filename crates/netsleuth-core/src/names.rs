//! Kubernetes names for addresses: SREs think in pods and Services, not in 10.244.1.10.
//!
//! A [`Names`] table is built from parsed Kubernetes objects — the `List` that `kubectl get
//! pods,services,endpointslices,nodes -A -o json` prints, a kubelet's `PodList`, or the pod sandboxes
//! `crictl inspectp -o json` prints — and applied when a report is rendered: the human text names every
//! address it prints (`pod default/client-7d9f (10.244.1.10:50814)`, `service default/web:80
//! (10.96.0.20)`, `node worker-2 (192.168.50.20)`), and the JSON keeps the raw address and adds the name.
//! Sans-IO: bytes in, a table out; the findings themselves never change.

use serde_json::Value;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

/// What kind of object an address belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Pod,
    Service,
    Node,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Pod => "pod",
            Kind::Service => "service",
            Kind::Node => "node",
        }
    }
}

/// The object an address belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Named {
    pub kind: Kind,
    /// Absent for nodes (cluster-scoped).
    pub namespace: Option<String>,
    pub name: String,
    /// Services only: the Service's ports on this address.
    pub ports: Vec<ServicePort>,
}

/// A port of a Service (`dns` 53/UDP and `dns-tcp` 53/TCP are two).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    pub port: u16,
    /// `TCP` (the default), `UDP`, `SCTP`.
    pub protocol: String,
    /// The port's name in the Service; may be empty.
    pub name: String,
}

impl Named {
    /// `pod default/client-7d9f`, `service default/web`, `node worker-2`.
    /// Whether `port` is one of the Service's ports.
    pub fn has_port(&self, port: u16) -> bool {
        self.ports.iter().any(|p| p.port == port)
    }

    pub fn label(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{} {}/{}", self.kind.as_str(), ns, self.name),
            None => format!("{} {}", self.kind.as_str(), self.name),
        }
    }
}

/// Addresses and the Kubernetes objects they belong to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Names {
    by_addr: BTreeMap<IpAddr, Named>,
}

/// Why a file of Kubernetes objects could not be read.
#[derive(Debug)]
pub enum NamesError {
    /// Not JSON at all.
    Json(serde_json::Error),
    /// JSON, but no object netsleuth reads (a `List`/`PodList` with pods, Services, EndpointSlices or
    /// nodes, or crictl's pod sandboxes).
    NoObjects,
}

impl std::fmt::Display for NamesError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NamesError::Json(e) => write!(f, "not JSON: {e}"),
            NamesError::NoObjects => f.write_str(
                "it holds no pods, Services, EndpointSlices or nodes (expected the output of `kubectl get pods,services,endpointslices,nodes -A -o json`)",
            ),
        }
    }
}

impl std::error::Error for NamesError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            NamesError::Json(e) => Some(e),
            NamesError::NoObjects => None,
        }
    }
}

impl Names {
    pub fn is_empty(&self) -> bool {
        self.by_addr.is_empty()
    }

    pub fn len(&self) -> usize {
        self.by_addr.len()
    }

    /// Every address with its object, in address order.
    pub fn iter(&self) -> impl Iterator<Item = (&IpAddr, &Named)> {
        self.by_addr.iter()
    }

    pub fn get(&self, addr: &IpAddr) -> Option<&Named> {
        self.by_addr.get(addr)
    }

    /// Reads Kubernetes objects: a `List` or `PodList` (kubectl, the kubelet), a single object, or
    /// the pod sandboxes of `crictl inspectp -o json` (one JSON value after another). Objects of
    /// other kinds are ignored; an object without the fields named here is skipped.
    pub fn from_json(bytes: &[u8]) -> Result<Names, NamesError> {
        let mut names = Names::default();
        let mut read_any = false;
        for value in serde_json::Deserializer::from_slice(bytes).into_iter::<Value>() {
            let value = value.map_err(NamesError::Json)?;
            read_any |= names.add_value(&value);
        }
        if !read_any {
            return Err(NamesError::NoObjects);
        }
        Ok(names)
    }

    /// Adds the names of `other` that this table lacks (this table wins: it was given first).
    pub fn merge(&mut self, other: Names) {
        for (addr, named) in other.by_addr {
            self.by_addr.entry(addr).or_insert(named);
        }
    }

    /// Whether `v` held an object of a kind read here.
    fn add_value(&mut self, v: &Value) -> bool {
        if let Some(items) = v.get("items").and_then(Value::as_array) {
            // Pods and Services first: an EndpointSlice's targetRef only fills what they left.
            let mut any = false;
            for pass in 0..2 {
                for item in items {
                    let kind = item.get("kind").and_then(Value::as_str).unwrap_or_else(|| {
                        // A kubelet's PodList leaves `kind` out of its items.
                        if v.get("kind").and_then(Value::as_str) == Some("PodList") {
                            "Pod"
                        } else {
                            ""
                        }
                    });
                    if (kind == "EndpointSlice") == (pass == 1) {
                        any |= self.add_object(kind, item);
                    }
                }
            }
            return any;
        }
        if let Some(kind) = v.get("kind").and_then(Value::as_str) {
            return self.add_object(kind, v);
        }
        // crictl inspectp: {"status": {"metadata": {...}, "network": {"ip": ...}}}
        if let Some(status) = v.get("status").filter(|s| s.get("network").is_some()) {
            return self.add_sandbox(status);
        }
        false
    }

    fn add_object(&mut self, kind: &str, o: &Value) -> bool {
        let meta = |k: &str| {
            o.get("metadata")
                .and_then(|m| m.get(k))
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        let (Some(name), namespace) = (meta("name"), meta("namespace")) else {
            return false;
        };
        match kind {
            "Pod" => {
                // A host-network pod has its node's address: that address is the node's.
                if o.pointer("/spec/hostNetwork").and_then(Value::as_bool) == Some(true) {
                    return true;
                }
                let status = o.get("status");
                let mut ips: Vec<&str> = strs(status.and_then(|s| s.get("podIPs")), "ip");
                ips.extend(status.and_then(|s| s.get("podIP")).and_then(Value::as_str));
                for ip in ips {
                    self.insert(ip, Kind::Pod, namespace.clone(), &name, None);
                }
                true
            }
            "Service" => {
                let spec = o.get("spec");
                let ports: Vec<ServicePort> = spec
                    .and_then(|s| s.get("ports"))
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|p| {
                        let text = |k: &str| p.get(k).and_then(Value::as_str);
                        Some(ServicePort {
                            port: u16::try_from(p.get("port")?.as_u64()?).ok()?,
                            protocol: text("protocol").unwrap_or("TCP").to_string(),
                            name: text("name").unwrap_or("").to_string(),
                        })
                    })
                    .collect();
                let mut ips: Vec<&str> = Vec::new();
                ips.extend(
                    spec.and_then(|s| s.get("clusterIP"))
                        .and_then(Value::as_str),
                );
                ips.extend(
                    spec.and_then(|s| s.get("clusterIPs"))
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_str),
                );
                ips.extend(
                    spec.and_then(|s| s.get("externalIPs"))
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_str),
                );
                ips.extend(strs(o.pointer("/status/loadBalancer/ingress"), "ip"));
                for ip in ips {
                    self.insert(ip, Kind::Service, namespace.clone(), &name, Some(&ports));
                }
                true
            }
            "EndpointSlice" => {
                for ep in o
                    .get("endpoints")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let target = ep.get("targetRef");
                    let tkind = target.and_then(|t| t.get("kind")).and_then(Value::as_str);
                    let tname = target.and_then(|t| t.get("name")).and_then(Value::as_str);
                    let (Some("Pod"), Some(tname)) = (tkind, tname) else {
                        continue;
                    };
                    let tns = target
                        .and_then(|t| t.get("namespace"))
                        .and_then(Value::as_str)
                        .map(str::to_string)
                        .or_else(|| namespace.clone());
                    for ip in ep
                        .get("addresses")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_str)
                    {
                        if let Ok(addr) = ip.parse::<IpAddr>() {
                            // Only fills in: a Pod object of the same address says more.
                            self.by_addr.entry(addr).or_insert_with(|| Named {
                                kind: Kind::Pod,
                                namespace: tns.clone(),
                                name: tname.to_string(),
                                ports: Vec::new(),
                            });
                        }
                    }
                }
                true
            }
            "Node" => {
                for ip in strs(o.pointer("/status/addresses"), "address") {
                    self.insert(ip, Kind::Node, None, &name, None);
                }
                true
            }
            _ => false,
        }
    }

    /// One pod sandbox of `crictl inspectp -o json`.
    fn add_sandbox(&mut self, status: &Value) -> bool {
        let text = |p: &str| status.pointer(p).and_then(Value::as_str);
        let (Some(name), Some(ns)) = (text("/metadata/name"), text("/metadata/namespace")) else {
            return false;
        };
        // A sandbox in the node's network namespace has the node's address.
        if text("/linux/namespaces/options/network") == Some("NODE") {
            return true;
        }
        let mut ips: Vec<&str> = text("/network/ip").into_iter().collect();
        ips.extend(strs(status.pointer("/network/additionalIps"), "ip"));
        for ip in ips {
            self.insert(ip, Kind::Pod, Some(ns.to_string()), name, None);
        }
        true
    }

    fn insert(
        &mut self,
        ip: &str,
        kind: Kind,
        namespace: Option<String>,
        name: &str,
        ports: Option<&Vec<ServicePort>>,
    ) {
        // `None` and headless Services' clusterIP are not addresses.
        let Ok(addr) = ip.parse::<IpAddr>() else {
            return;
        };
        if addr.is_unspecified() {
            return;
        }
        self.by_addr.insert(
            addr,
            Named {
                kind,
                namespace,
                name: name.to_string(),
                ports: ports.cloned().unwrap_or_default(),
            },
        );
    }

    /// The name of `addr` seen with `port`: `service default/web:80` when the port is one of the
    /// Service's, else the object's label. `None` when the address is not in the table.
    pub fn name(&self, addr: &IpAddr, port: Option<u16>) -> Option<String> {
        let n = self.by_addr.get(addr)?;
        Some(match (n.kind, port) {
            (Kind::Service, Some(p)) if n.has_port(p) => format!("{}:{p}", n.label()),
            _ => n.label(),
        })
    }

    /// `addr[:port]` with its name in front: `pod default/client-7d9f (10.244.1.10:50814)`,
    /// `service default/web:80 (10.96.0.20)` (the port is in the name), `node worker-2 (192.168.50.20)`.
    /// The bare socket address when the address is not in the table.
    pub fn socket(&self, addr: &IpAddr, port: Option<u16>) -> String {
        let raw = match (addr, port) {
            (IpAddr::V6(a), Some(p)) => format!("[{a}]:{p}"),
            (a, Some(p)) => format!("{a}:{p}"),
            (a, None) => a.to_string(),
        };
        let Some(n) = self.by_addr.get(addr) else {
            return raw;
        };
        match (n.kind, port) {
            (Kind::Service, Some(p)) if n.has_port(p) => {
                format!("{}:{p} ({addr})", n.label())
            }
            _ => format!("{} ({raw})", n.label()),
        }
    }

    /// `text` with every address of the table named where it occurs (see [`Names::socket`]). Text
    /// with no known address is borrowed.
    pub fn annotate<'a>(&self, text: &'a str) -> Cow<'a, str> {
        if self.is_empty() {
            return Cow::Borrowed(text);
        }
        let mut out = String::new();
        let mut copied = 0;
        for m in find_addresses(text) {
            if !self.by_addr.contains_key(&m.addr) {
                continue;
            }
            out.push_str(&text[copied..m.start]);
            out.push_str(&self.socket(&m.addr, m.port));
            copied = m.end;
        }
        if copied == 0 {
            return Cow::Borrowed(text);
        }
        out.push_str(&text[copied..]);
        Cow::Owned(out)
    }

    /// The addresses of the table that occur in `text`.
    pub fn mentioned_in(&self, text: &str) -> Vec<IpAddr> {
        let mut v: Vec<IpAddr> = find_addresses(text)
            .into_iter()
            .map(|m| m.addr)
            .filter(|a| self.by_addr.contains_key(a))
            .collect();
        v.sort();
        v.dedup();
        v
    }
}

/// The `ip` field of each object of an array (`podIPs`, `ingress`, `addresses`).
fn strs<'a>(v: Option<&'a Value>, field: &str) -> Vec<&'a str> {
    v.and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|o| o.get(field).and_then(Value::as_str))
        .collect()
}

/// An address found in text: its byte range (port included) and its parts.
#[derive(Debug, PartialEq, Eq)]
struct Found {
    start: usize,
    end: usize,
    addr: IpAddr,
    port: Option<u16>,
}

/// Addresses in free text: `10.0.0.1`, `10.0.0.1:80`, `[fd00::1]:53`, `fd00::1`. A run of address
/// characters that does not parse (a time of day, a hex number) is not one.
fn find_addresses(text: &str) -> Vec<Found> {
    let b = text.as_bytes();
    let is_addr_char = |c: u8| c.is_ascii_hexdigit() || c == b'.' || c == b':';
    let mut found = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let bracket = b[i] == b'[';
        let starts = (bracket || is_addr_char(b[i]))
            && (i == 0
                || !(b[i - 1].is_ascii_alphanumeric()
                    || matches!(b[i - 1], b'.' | b':' | b'_' | b'-' | b'/')));
        if !starts {
            i += 1;
            continue;
        }
        let s = if bracket { i + 1 } else { i };
        let mut e = s;
        while e < b.len() && is_addr_char(b[e]) {
            e += 1;
        }
        let mut run = &text[s..e];
        if bracket {
            // `[v6]:port`
            if e < b.len() && b[e] == b']' {
                if let Ok(a) = run.parse::<std::net::Ipv6Addr>() {
                    let (port, end) = port_after(text, e + 1);
                    found.push(Found {
                        start: i,
                        end,
                        addr: IpAddr::V6(a),
                        port,
                    });
                    i = end;
                    continue;
                }
            }
            i += 1;
            continue;
        }
        // A run glued to a letter after it is a word, not an address (`10.0.0.1x`).
        if e < b.len() && (b[e].is_ascii_alphanumeric() || b[e] == b'_') {
            i = e.max(i + 1);
            continue;
        }
        // Sentence punctuation after an address is not part of it.
        while run.ends_with(['.', ':']) {
            run = &run[..run.len() - 1];
        }
        let end = s + run.len();
        if let Some(f) = parse_v4_socket(run, s) {
            found.push(f);
        } else if run.contains(':') && !run.contains('.') {
            if let Ok(a) = run.parse::<std::net::Ipv6Addr>() {
                found.push(Found {
                    start: s,
                    end,
                    addr: IpAddr::V6(a),
                    port: None,
                });
            }
        }
        i = e.max(i + 1);
    }
    found
}

/// `a.b.c.d` or `a.b.c.d:port` (the whole of `run`), found at byte `at`.
fn parse_v4_socket(run: &str, at: usize) -> Option<Found> {
    let (host, port) = match run.split_once(':') {
        Some((h, p)) => (h, Some(p.parse::<u16>().ok()?)),
        None => (run, None),
    };
    let a: Ipv4Addr = host.parse().ok()?;
    Some(Found {
        start: at,
        end: at + run.len(),
        addr: IpAddr::V4(a),
        port,
    })
}

/// A `:port` at byte `at` of `text`: the port and where it ends (`at` when there is none).
fn port_after(text: &str, at: usize) -> (Option<u16>, usize) {
    let rest = &text[at..];
    if let Some(digits) = rest.strip_prefix(':') {
        let n = digits.bytes().take_while(u8::is_ascii_digit).count();
        if let Ok(p) = digits[..n].parse::<u16>() {
            return (Some(p), at + 1 + n);
        }
    }
    (None, at)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIST: &str = r#"{"apiVersion":"v1","kind":"List","items":[
      {"kind":"Pod","metadata":{"name":"client-7d9f","namespace":"default"},
       "status":{"podIP":"10.244.1.10","podIPs":[{"ip":"10.244.1.10"},{"ip":"fd00:10:244:1::a"}]}},
      {"kind":"Pod","metadata":{"name":"kube-proxy-x","namespace":"kube-system"},
       "spec":{"hostNetwork":true},"status":{"podIP":"192.168.50.10"}},
      {"kind":"Service","metadata":{"name":"web","namespace":"default"},
       "spec":{"clusterIP":"10.96.0.20","clusterIPs":["10.96.0.20"],"ports":[{"name":"http","port":80,"targetPort":8080}]}},
      {"kind":"Service","metadata":{"name":"headless","namespace":"default"},"spec":{"clusterIP":"None"}},
      {"kind":"EndpointSlice","metadata":{"name":"web-abc","namespace":"default"},
       "endpoints":[{"addresses":["10.244.2.12"],"targetRef":{"kind":"Pod","name":"web-5c8d-b","namespace":"default"}},
                    {"addresses":["10.244.1.10"],"targetRef":{"kind":"Pod","name":"stale-name"}}]},
      {"kind":"Node","metadata":{"name":"worker-1"},
       "status":{"addresses":[{"type":"InternalIP","address":"192.168.50.10"},{"type":"Hostname","address":"worker-1"}]}}
    ]}"#;

    #[test]
    fn a_kubectl_list_names_pods_services_endpoints_and_nodes() {
        let n = Names::from_json(LIST.as_bytes()).unwrap();
        let a = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            n.name(&a("10.244.1.10"), Some(50814)).unwrap(),
            "pod default/client-7d9f"
        );
        assert_eq!(
            n.name(&a("fd00:10:244:1::a"), None).unwrap(),
            "pod default/client-7d9f"
        );
        assert_eq!(
            n.name(&a("10.96.0.20"), Some(80)).unwrap(),
            "service default/web:80"
        );
        assert_eq!(
            n.name(&a("10.96.0.20"), Some(81)).unwrap(),
            "service default/web"
        );
        assert_eq!(
            n.name(&a("10.244.2.12"), None).unwrap(),
            "pod default/web-5c8d-b"
        );
        // The host-network pod does not take the node's address.
        assert_eq!(n.name(&a("192.168.50.10"), None).unwrap(), "node worker-1");
        assert_eq!(n.len(), 5);
        let web = n.get(&a("10.96.0.20")).unwrap();
        assert_eq!(web.ports[0].protocol, "TCP", "the default protocol");
        // One port number, two protocols: both kept.
        let dns = r#"{"kind":"Service","metadata":{"name":"kube-dns","namespace":"kube-system"},"spec":{"clusterIP":"10.96.0.10","ports":[{"name":"dns","port":53,"protocol":"UDP"},{"name":"dns-tcp","port":53,"protocol":"TCP"}]}}"#;
        let n = Names::from_json(dns.as_bytes()).unwrap();
        let ports = &n.get(&a("10.96.0.10")).unwrap().ports;
        assert_eq!(ports.len(), 2);
        assert_eq!(
            n.name(&a("10.96.0.10"), Some(53)).unwrap(),
            "service kube-system/kube-dns:53"
        );
    }

    #[test]
    fn text_gets_names_where_addresses_are() {
        let n = Names::from_json(LIST.as_bytes()).unwrap();
        assert_eq!(
            n.annotate("connection 10.244.1.10:50814 → 10.96.0.20:80 reset by 10.244.2.12:8080."),
            "connection pod default/client-7d9f (10.244.1.10:50814) → service default/web:80 (10.96.0.20) reset by pod default/web-5c8d-b (10.244.2.12:8080)."
        );
        assert_eq!(
            n.annotate("from [fd00:10:244:1::a]:53 and 192.168.50.10, at 21:02:32.360527"),
            "from pod default/client-7d9f ([fd00:10:244:1::a]:53) and node worker-1 (192.168.50.10), at 21:02:32.360527"
        );
        // Unknown addresses, words that look like addresses, version numbers: untouched.
        for s in [
            "10.1.2.3:80",
            "v10.244.1.10",
            "10.244.1.10x",
            "seq=410160944",
            "dead:beef",
            "1.2.3",
        ] {
            assert_eq!(n.annotate(s), s);
        }
    }

    #[test]
    fn crictl_sandboxes_and_kubelet_pod_lists_read() {
        let crictl = r#"{"status":{"metadata":{"name":"dns-1","namespace":"kube-system"},"network":{"additionalIps":[],"ip":"10.244.1.5"},"linux":{"namespaces":{"options":{"network":"POD"}}}}}
{"status":{"metadata":{"name":"hostnet","namespace":"kube-system"},"network":{"ip":"192.168.50.10"},"linux":{"namespaces":{"options":{"network":"NODE"}}}}}"#;
        let n = Names::from_json(crictl.as_bytes()).unwrap();
        assert_eq!(n.len(), 1);
        assert_eq!(
            n.name(&"10.244.1.5".parse().unwrap(), None).unwrap(),
            "pod kube-system/dns-1"
        );
        let kubelet = r#"{"kind":"PodList","apiVersion":"v1","items":[{"metadata":{"name":"a","namespace":"n"},"status":{"podIP":"10.244.1.7"}}]}"#;
        let n = Names::from_json(kubelet.as_bytes()).unwrap();
        assert_eq!(
            n.name(&"10.244.1.7".parse().unwrap(), None).unwrap(),
            "pod n/a"
        );
        assert!(matches!(
            Names::from_json(b"{\"kind\":\"ConfigMap\"}"),
            Err(NamesError::NoObjects)
        ));
        assert!(matches!(
            Names::from_json(b"not json"),
            Err(NamesError::Json(_))
        ));
    }
}
