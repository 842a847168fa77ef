//! DNS for the lab: the wire format (enough for A/AAAA questions and answers), a small authoritative
//! server and a CoreDNS-like forwarder that run as threads in a pod namespace, and client resolvers
//! that behave on the wire like the libraries in the incidents: glibc's parallel A+AAAA from one
//! socket (and `single-request-reopen`), musl 1.2.3's same-ID queries and ID-only answer matching,
//! and Go < 1.16's pure-Go resolver order without /etc/nsswitch.conf.

use crate::error::{LabError, Result};
use crate::netns::{Daemon, Netns};
use netsleuth_core::wire::dns::{self, DnsRepr, Record};
use netsleuth_node::parse::resolver::{parse_hosts, parse_nsswitch};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use netsleuth_core::wire::dns::{rcode, rtype};

pub fn qtype_name(t: u16) -> &'static str {
    match t {
        rtype::A => "A",
        rtype::AAAA => "AAAA",
        _ => "?",
    }
}

// ---------------------------------------------------------------------------------------------------
// Wire format: the core's decoder and its owned counterpart (`DnsRepr`) write and read every message.

fn build_query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    DnsRepr::query(id, name, qtype).emit()
}

/// What a resolver takes from a response.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Reply {
    id: u16,
    rcode: u8,
    qtype: u16,
    a: Vec<Ipv4Addr>,
    aaaa: Vec<Ipv6Addr>,
}

/// A response read with the core's decoder; `None` for a query or a message shorter than a header.
fn reply(bytes: &[u8]) -> Option<Reply> {
    let m = dns::parse(bytes).ok()?;
    let r = DnsRepr::from_message(&m);
    if !r.is_response() {
        return None;
    }
    let (mut a, mut aaaa) = (Vec::new(), Vec::new());
    for ip in r.addrs() {
        match ip {
            IpAddr::V4(v4) => a.push(v4),
            IpAddr::V6(v6) => aaaa.push(v6),
        }
    }
    Some(Reply {
        id: r.id,
        rcode: r.rcode(),
        qtype: r.question.as_ref().map_or(0, |q| q.qtype),
        a,
        aaaa,
    })
}

// ---------------------------------------------------------------------------------------------------
// Servers

#[derive(Debug, Clone, Default)]
pub struct Records {
    pub a: Vec<Ipv4Addr>,
    pub aaaa: Vec<Ipv6Addr>,
}

/// Names a server answers; anything else is NXDOMAIN. A name with no records of the asked type gets
/// NOERROR with no answers (NODATA).
#[derive(Debug, Clone, Default)]
pub struct Zone {
    pub names: HashMap<String, Records>,
    /// Extra delay before answering a type (models an answer fetched upstream while the other came
    /// from cache: the AAAA NODATA answer leaves before the A answer).
    pub delay: HashMap<u16, Duration>,
    /// Extra delay before answering a name under a suffix (models a search domain whose answers come
    /// from a slow upstream: the node's own domain, forwarded by CoreDNS).
    pub slow_suffixes: Vec<(String, Duration)>,
}

impl Zone {
    pub fn with(mut self, name: &str, a: &[Ipv4Addr], aaaa: &[Ipv6Addr]) -> Zone {
        self.names.insert(
            name.trim_end_matches('.').to_ascii_lowercase(),
            Records {
                a: a.to_vec(),
                aaaa: aaaa.to_vec(),
            },
        );
        self
    }

    /// Answers for names under `suffix` leave `delay` late.
    pub fn with_slow_suffix(mut self, suffix: &str, delay: Duration) -> Zone {
        self.slow_suffixes
            .push((suffix.trim_matches('.').to_ascii_lowercase(), delay));
        self
    }

    /// The answer as a UDP server sends it: one larger than 512 bytes (no EDNS) goes out truncated,
    /// TC set and its answer section empty, as BIND and CoreDNS do.
    fn answer_udp(&self, query: &[u8]) -> Option<(Vec<u8>, Duration)> {
        let (full, delay) = self.answer(query)?;
        if full.len() <= UDP_ANSWER_LIMIT {
            return Some((full, delay));
        }
        let m = dns::parse(&full).ok()?;
        let mut r = DnsRepr::from_message(&m);
        r.answers.clear();
        r.flags |= dns::header_flags::TC;
        Some((r.emit(), delay))
    }

    fn answer(&self, query: &[u8]) -> Option<(Vec<u8>, Duration)> {
        let m = dns::parse(query).ok()?;
        let q = m.question.as_ref()?;
        if m.header.qr {
            return None;
        }
        let lower = q.name.trim_end_matches('.').to_ascii_lowercase();
        let suffix_delay = self
            .slow_suffixes
            .iter()
            .find(|(s, _)| lower.ends_with(&format!(".{s}")))
            .map(|(_, d)| *d)
            .unwrap_or_default();
        let delay = self.delay.get(&q.qtype).copied().unwrap_or_default() + suffix_delay;
        let asked = DnsRepr::from_message(&m);
        let addrs: Vec<IpAddr> = match self.names.get(&q.name.to_ascii_lowercase()) {
            None => return Some((asked.response(rcode::NXDOMAIN).emit(), delay)),
            Some(r) => match q.qtype {
                rtype::A => r.a.iter().map(|&a| IpAddr::V4(a)).collect(),
                rtype::AAAA => r.aaaa.iter().map(|&a| IpAddr::V6(a)).collect(),
                _ => Vec::new(),
            },
        };
        let resp = addrs
            .into_iter()
            .fold(asked.response(rcode::NOERROR), |r, ip| {
                r.answer(Record::addr(&q.name, ip, 30))
            });
        Some((resp.emit(), delay))
    }
}

/// The largest UDP answer without EDNS (RFC 1035 §4.2.1).
pub const UDP_ANSWER_LIMIT: usize = 512;

/// A DNS server or forwarder thread; stops (and joins) when dropped.
pub struct ServerHandle {
    _daemon: Daemon,
    pub queries: Arc<AtomicU64>,
    pub log: Arc<Mutex<Vec<String>>>,
}

impl ServerHandle {
    pub fn log_lines(&self) -> Vec<String> {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// An authoritative UDP server on `bind` inside `ns`, answering from `zone`.
pub fn serve(ns: &Netns, bind: SocketAddrV4, zone: Zone) -> Result<ServerHandle> {
    let queries = Arc::new(AtomicU64::new(0));
    let q = Arc::clone(&queries);
    let daemon = Daemon::start(ns, "dns-server", move |ctl| {
        let sock = UdpSocket::bind(bind)
            .map_err(|e| LabError::io(format!("binding DNS server to {bind}"), e))?;
        sock.set_read_timeout(Some(Duration::from_millis(5))).ok();
        ctl.ready();
        let mut pending: Vec<(Instant, Vec<u8>, SocketAddr)> = Vec::new();
        let mut buf = [0u8; 1500];
        while !ctl.stopping() {
            if let Ok((n, from)) = sock.recv_from(&mut buf) {
                q.fetch_add(1, Ordering::SeqCst);
                if let Some((resp, delay)) = zone.answer_udp(&buf[..n]) {
                    pending.push((Instant::now() + delay, resp, from));
                }
            }
            let now = Instant::now();
            pending.retain(|(due, resp, to)| {
                if *due <= now {
                    let _ = sock.send_to(resp, to);
                    false
                } else {
                    true
                }
            });
        }
        Ok(())
    })?;
    Ok(ServerHandle {
        _daemon: daemon,
        queries,
        log: Arc::new(Mutex::new(Vec::new())),
    })
}

/// An authoritative server for DNS over TCP on `bind` inside `ns` (RFC 1035 §4.2.2: each message
/// behind its 2-byte length), answering from `zone` in full.
pub fn serve_tcp(ns: &Netns, bind: SocketAddrV4, zone: Zone) -> Result<ServerHandle> {
    let queries = Arc::new(AtomicU64::new(0));
    let q = Arc::clone(&queries);
    let daemon = Daemon::start(ns, "dns-tcp-server", move |ctl| {
        let l = std::net::TcpListener::bind(bind)
            .map_err(|e| LabError::io(format!("binding the DNS TCP server to {bind}"), e))?;
        l.set_nonblocking(true).ok();
        ctl.ready();
        while !ctl.stopping() {
            let Ok((mut s, _)) = l.accept() else {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            };
            s.set_nonblocking(false).ok();
            s.set_read_timeout(Some(Duration::from_secs(2))).ok();
            if let Some(query) = read_tcp_message(&mut s) {
                q.fetch_add(1, Ordering::SeqCst);
                if let Some((resp, _)) = zone.answer(&query) {
                    let _ = write_tcp_message(&mut s, &resp);
                }
            }
        }
        Ok(())
    })?;
    Ok(ServerHandle {
        _daemon: daemon,
        queries,
        log: Arc::new(Mutex::new(Vec::new())),
    })
}

fn read_tcp_message(s: &mut std::net::TcpStream) -> Option<Vec<u8>> {
    use std::io::Read;
    let mut len = [0u8; 2];
    s.read_exact(&mut len).ok()?;
    let mut msg = vec![0u8; u16::from_be_bytes(len) as usize];
    s.read_exact(&mut msg).ok()?;
    Some(msg)
}

fn write_tcp_message(s: &mut std::net::TcpStream, msg: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut framed = (msg.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(msg);
    s.write_all(&framed)
}

/// A stub resolver asking `name`/A over UDP and, when the answer comes back truncated (TC=1),
/// again over TCP, as glibc does (and musl ≥ 1.2.4). glibc's TCP connect has no timeout of its own
/// (the kernel's SYN retries, ~2 min); the lab gives up after `tcp_timeout`.
pub fn tc_fallback_lookup(
    server: SocketAddrV4,
    name: &str,
    timeout: Duration,
    tcp_timeout: Duration,
) -> Lookup {
    let start = Instant::now();
    let mut l = Lookup {
        name: name.into(),
        ..Default::default()
    };
    let Ok(sock) = udp_connected(server) else {
        l.error = Some("socket failed".into());
        return l;
    };
    let id = fresh_id();
    let _ = sock.send(&build_query(id, name, rtype::A));
    l.queries_sent += 1;
    let mut buf = [0u8; 1500];
    sock.set_read_timeout(Some(timeout)).ok();
    let (n, truncated) = match sock.recv(&mut buf) {
        Ok(n) => (
            n,
            dns::parse(&buf[..n]).map(|m| m.header.tc).unwrap_or(false),
        ),
        Err(_) => {
            l.error = Some(format!("timed out after {:.1} s", timeout.as_secs_f64()));
            l.elapsed = start.elapsed();
            return l;
        }
    };
    if !truncated {
        if let Some(m) = reply(&buf[..n]) {
            l.a = m.a;
        }
        l.elapsed = start.elapsed();
        return l;
    }
    l.detail.push(format!(
        "{:>7.1} ms  UDP answer truncated (TC=1): re-asking over TCP",
        start.elapsed().as_secs_f64() * 1e3
    ));
    let tcp = std::net::TcpStream::connect_timeout(&SocketAddr::V4(server), tcp_timeout);
    let mut s = match tcp {
        Ok(s) => s,
        Err(e) => {
            l.error = Some(format!(
                "truncated answer, and TCP to {server} failed: {}",
                crate::traffic::errno_name(&e)
            ));
            l.elapsed = start.elapsed();
            return l;
        }
    };
    s.set_read_timeout(Some(timeout)).ok();
    let id = fresh_id();
    l.queries_sent += 1;
    if write_tcp_message(&mut s, &build_query(id, name, rtype::A)).is_err() {
        l.error = Some("truncated answer, and the TCP query could not be sent".into());
    } else {
        match read_tcp_message(&mut s).and_then(|m| reply(&m)) {
            Some(m) => l.a = m.a,
            None => l.error = Some("truncated answer, and no answer over TCP".into()),
        }
    }
    l.elapsed = start.elapsed();
    l
}

/// A CoreDNS-like forwarder (`forward . /etc/resolv.conf` with `policy round_robin`): each query goes
/// to the next upstream; if no answer comes within `upstream_timeout`, it logs CoreDNS's error line and
/// tries the next upstream.
pub fn forward(
    ns: &Netns,
    bind: SocketAddrV4,
    upstreams: Vec<Ipv4Addr>,
    upstream_timeout: Duration,
) -> Result<ServerHandle> {
    let queries = Arc::new(AtomicU64::new(0));
    let log = Arc::new(Mutex::new(Vec::new()));
    let (q, lg) = (Arc::clone(&queries), Arc::clone(&log));
    let daemon = Daemon::start(ns, "dns-forwarder", move |ctl| {
        let sock = Arc::new(
            UdpSocket::bind(bind)
                .map_err(|e| LabError::io(format!("binding forwarder to {bind}"), e))?,
        );
        sock.set_read_timeout(Some(Duration::from_millis(20))).ok();
        ctl.ready();
        let mut next = 0usize;
        let mut workers = Vec::new();
        let mut buf = [0u8; 1500];
        while !ctl.stopping() {
            let Ok((n, client)) = sock.recv_from(&mut buf) else {
                continue;
            };
            q.fetch_add(1, Ordering::SeqCst);
            let query = buf[..n].to_vec();
            let order: Vec<Ipv4Addr> = (0..upstreams.len())
                .map(|i| upstreams[(next + i) % upstreams.len()])
                .collect();
            next = next.wrapping_add(1);
            let (sock, lg) = (Arc::clone(&sock), Arc::clone(&lg));
            // The worker inherits this thread's namespace: threads are created in the caller's netns.
            workers.push(std::thread::spawn(move || {
                forward_one(&sock, client, &query, &order, upstream_timeout, &lg)
            }));
        }
        for w in workers {
            let _ = w.join();
        }
        Ok(())
    })?;
    Ok(ServerHandle {
        _daemon: daemon,
        queries,
        log,
    })
}

/// Asks each upstream in `order` until one answers within `timeout`, and relays the answer.
fn forward_one(
    sock: &UdpSocket,
    client: SocketAddr,
    query: &[u8],
    order: &[Ipv4Addr],
    timeout: Duration,
    log: &Mutex<Vec<String>>,
) {
    let name = dns::parse(query)
        .ok()
        .and_then(|m| m.question)
        .map(|q| format!("{} {}", q.name, qtype_name(q.qtype)))
        .unwrap_or_default();
    for up in order {
        let Ok(u) = UdpSocket::bind("0.0.0.0:0") else {
            return;
        };
        let _ = u.set_read_timeout(Some(timeout));
        let _ = u.send_to(query, (*up, 53));
        let mut rb = [0u8; 1500];
        match u.recv_from(&mut rb) {
            Ok((rn, _)) => {
                let _ = sock.send_to(&rb[..rn], client);
                return;
            }
            Err(_) => {
                let local = u.local_addr().map(|a| a.to_string()).unwrap_or_default();
                log.lock().unwrap_or_else(|e| e.into_inner()).push(format!(
                    "[ERROR] plugin/errors: 2 {name}: unreachable backend: read udp {local}->{up}:53: i/o timeout"
                ));
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// Client resolvers

/// What one lookup did, as the application saw it.
#[derive(Debug, Clone, Default)]
pub struct Lookup {
    pub name: String,
    pub elapsed: Duration,
    pub a: Vec<Ipv4Addr>,
    pub aaaa: Vec<Ipv6Addr>,
    /// Queries sent, retransmissions included.
    pub queries_sent: u32,
    /// A query was re-sent after the resolver's timeout.
    pub retransmitted: bool,
    /// `None` on success, else the error the application got.
    pub error: Option<String>,
    /// The answer came from /etc/hosts.
    pub from_hosts: bool,
    pub detail: Vec<String>,
}

impl Lookup {
    /// One line for the run's events: `getaddrinfo(NAME) → [addresses] in T s, N queries sent`, with
    /// the re-send and the error the application got.
    pub fn line(&self) -> String {
        format!(
            "getaddrinfo({}) → {:?} in {:.3} s, {} queries sent{}{}",
            self.name,
            self.a,
            self.elapsed.as_secs_f64(),
            self.queries_sent,
            if self.retransmitted {
                ", re-sent after the timeout"
            } else {
                ""
            },
            self.error
                .as_deref()
                .map(|e| format!(", error: {e}"))
                .unwrap_or_default()
        )
    }
}

fn fresh_id() -> u16 {
    let mut b = [0u8; 2];
    unsafe { libc::getrandom(b.as_mut_ptr().cast(), 2, 0) };
    u16::from_ne_bytes(b)
}

/// glibc's stub resolver for `getaddrinfo(AF_UNSPEC)`: A and AAAA sent back to back from one UDP
/// socket (distinct IDs), both answers awaited for `timeout`; whatever is missing is re-sent, up to
/// `attempts` rounds (`options timeout:5 attempts:2`). With `single_request_reopen`, the queries go
/// one after the other, each from a new socket (glibc ≥ 2.9 with that option).
pub fn glibc_lookup(
    server: SocketAddrV4,
    name: &str,
    timeout: Duration,
    attempts: u32,
    single_request_reopen: bool,
) -> Lookup {
    let start = Instant::now();
    let mut l = Lookup {
        name: name.into(),
        ..Default::default()
    };
    let qtypes = [rtype::A, rtype::AAAA];
    let mut answered = [false, false];
    let mut sock: Option<UdpSocket> = None;
    for attempt in 0..attempts {
        if single_request_reopen {
            for (i, &qt) in qtypes.iter().enumerate() {
                if answered[i] {
                    continue;
                }
                let Ok(s) = udp_connected(server) else {
                    l.error = Some("socket failed".into());
                    return l;
                };
                let id = fresh_id();
                let _ = s.send(&build_query(id, name, qt));
                l.queries_sent += 1;
                if attempt > 0 {
                    l.retransmitted = true;
                }
                if let Some(m) = recv_matching(&s, |m| m.id == id, start, Instant::now() + timeout)
                {
                    answered[i] = true;
                    absorb(&mut l, &m, start);
                }
            }
        } else {
            if sock.is_none() {
                sock = udp_connected(server).ok();
            }
            let Some(s) = sock.as_ref() else {
                l.error = Some("socket failed".into());
                return l;
            };
            let mut ids = [0u16; 2];
            for (i, &qt) in qtypes.iter().enumerate() {
                if !answered[i] {
                    ids[i] = fresh_id();
                    let _ = s.send(&build_query(ids[i], name, qt));
                    l.queries_sent += 1;
                    if attempt > 0 {
                        l.retransmitted = true;
                    }
                }
            }
            let deadline = Instant::now() + timeout;
            while answered.iter().any(|a| !a) {
                let want = |m: &Reply| {
                    (0..2).any(|i| !answered[i] && m.id == ids[i] && m.qtype == qtypes[i])
                };
                let Some(m) = recv_matching(s, want, start, deadline) else {
                    break;
                };
                let i = if m.qtype == rtype::A { 0 } else { 1 };
                answered[i] = true;
                absorb(&mut l, &m, start);
            }
        }
        if answered.iter().all(|a| *a) {
            break;
        }
    }
    l.elapsed = start.elapsed();
    if !answered.iter().all(|a| *a) {
        l.error = Some(format!("timed out after {:.1} s", l.elapsed.as_secs_f64()));
    } else if l.a.is_empty() && l.aaaa.is_empty() && l.error.is_none() {
        l.error = Some("no address (NXDOMAIN or NODATA)".into());
    }
    l
}

fn absorb(l: &mut Lookup, m: &Reply, start: Instant) {
    l.detail.push(format!(
        "{:>7.1} ms  answer id={:#06x} {} rcode={} a={:?} aaaa={:?}",
        start.elapsed().as_secs_f64() * 1e3,
        m.id,
        qtype_name(m.qtype),
        m.rcode,
        m.a,
        m.aaaa
    ));
    if m.rcode == rcode::NXDOMAIN {
        l.error = Some("NXDOMAIN".into());
    }
    l.a.extend(&m.a);
    l.aaaa.extend(&m.aaaa);
}

fn udp_connected(server: SocketAddrV4) -> std::io::Result<UdpSocket> {
    let s = UdpSocket::bind("0.0.0.0:0")?;
    s.connect(server)?;
    Ok(s)
}

/// Receives until a message satisfies `want` or `deadline` passes.
fn recv_matching(
    s: &UdpSocket,
    want: impl Fn(&Reply) -> bool,
    _start: Instant,
    deadline: Instant,
) -> Option<Reply> {
    let mut buf = [0u8; 1500];
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        if left.is_zero() {
            return None;
        }
        s.set_read_timeout(Some(left)).ok()?;
        match s.recv(&mut buf) {
            Ok(n) => {
                if let Some(m) = reply(&buf[..n]) {
                    if want(&m) {
                        return Some(m);
                    }
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return None
            }
            Err(_) => return None,
        }
    }
}

/// glibc's `getaddrinfo` with a search list: each candidate of [`search_candidates`] in turn
/// ([`glibc_lookup`] for each, A and AAAA from one socket), until one is answered with an address;
/// NXDOMAIN moves on to the next. The queries and time of every candidate are summed.
pub fn glibc_search_lookup(
    server: SocketAddrV4,
    name: &str,
    search: &[&str],
    ndots: usize,
    timeout: Duration,
) -> Lookup {
    let start = Instant::now();
    let mut total = Lookup {
        name: name.into(),
        ..Default::default()
    };
    for candidate in search_candidates(name, search, ndots) {
        let l = glibc_lookup(server, &candidate, timeout, 2, false);
        total.queries_sent += l.queries_sent;
        total.retransmitted |= l.retransmitted;
        total.detail.push(format!(
            "{candidate}: {} queries, {:.1} ms, {}",
            l.queries_sent,
            l.elapsed.as_secs_f64() * 1e3,
            l.error.as_deref().unwrap_or("answered")
        ));
        if !l.a.is_empty() || !l.aaaa.is_empty() {
            total.a = l.a;
            total.aaaa = l.aaaa;
            total.error = None;
            break;
        }
        total.error = l.error;
    }
    total.elapsed = start.elapsed();
    total
}

/// How musl builds the query ID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MuslIds {
    /// musl ≤ 1.2.3 (`__res_mkquery`): `id = (ts.tv_nsec + ts.tv_nsec/65536) & 0xffff` from
    /// CLOCK_REALTIME. On hosts whose clock reads coarsely, both queries of a lookup get the same ID;
    /// the lab reads CLOCK_REALTIME_COARSE to be such a host.
    Clock123CoarseClock,
    /// musl ≥ 1.2.4 (6c858d6f): the two queries of a lookup never share an ID.
    Distinct124,
}

/// musl's `name_from_dns` for AF_UNSPEC: A and AAAA from one socket, each sent to every nameserver of
/// resolv.conf at once (`__res_msend_rc`); an answer from any of them is matched to a query by its
/// 2-byte ID only, filling the first free slot whose query has that ID (later answers for a filled
/// slot are ignored); each slot is then parsed for its own record type.
pub fn musl_lookup(
    servers: &[SocketAddrV4],
    name: &str,
    ids: MuslIds,
    timeout: Duration,
) -> Lookup {
    let start = Instant::now();
    let mut l = Lookup {
        name: name.into(),
        ..Default::default()
    };
    let qtypes = [rtype::A, rtype::AAAA];
    let mut qids = [0u16; 2];
    for (i, q) in qids.iter_mut().enumerate() {
        *q = match ids {
            MuslIds::Clock123CoarseClock => {
                let mut ts = libc::timespec {
                    tv_sec: 0,
                    tv_nsec: 0,
                };
                unsafe { libc::clock_gettime(libc::CLOCK_REALTIME_COARSE, &mut ts) };
                let ns = ts.tv_nsec as u64;
                ((ns + ns / 65536) & 0xffff) as u16
            }
            MuslIds::Distinct124 => fresh_id().wrapping_add(i as u16),
        };
    }
    if ids == MuslIds::Distinct124 && qids[0] == qids[1] {
        qids[1] = qids[1].wrapping_add(1);
    }
    let Ok(s) = UdpSocket::bind("0.0.0.0:0") else {
        l.error = Some("socket failed".into());
        return l;
    };
    let queries: Vec<Vec<u8>> = (0..2)
        .map(|i| build_query(qids[i], name, qtypes[i]))
        .collect();
    for q in &queries {
        for server in servers {
            let _ = s.send_to(q, server);
            l.queries_sent += 1;
        }
    }
    l.detail.push(format!(
        "sent A id={:#06x} and AAAA id={:#06x} from one socket to {} nameserver(s)",
        qids[0],
        qids[1],
        servers.len()
    ));
    let mut slots: [Option<Reply>; 2] = [None, None];
    let mut next = 0usize;
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 1500];
    while next < 2 {
        let Some(left) = deadline.checked_duration_since(Instant::now()) else {
            break;
        };
        s.set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .ok();
        let Ok((n, from)) = s.recv_from(&mut buf) else {
            break;
        };
        // musl takes answers only from the nameservers it asked.
        if !servers
            .iter()
            .any(|sv| std::net::SocketAddr::V4(*sv) == from)
        {
            continue;
        }
        let Some(m) = reply(&buf[..n]) else { continue };
        // musl: `for (j=next; j<nqueries && memcmp(answer, query[j], 2); j++);` — the ID alone.
        let Some(j) = (next..2).find(|&j| qids[j] == m.id) else {
            continue;
        };
        l.detail.push(format!(
            "{:>7.1} ms  answer id={:#06x} for {} from {from} went to the {} slot",
            start.elapsed().as_secs_f64() * 1e3,
            m.id,
            qtype_name(m.qtype),
            qtype_name(qtypes[j])
        ));
        slots[j] = Some(m);
        if j == next {
            next += 1;
            while next < 2 && slots[next].is_some() {
                next += 1;
            }
        }
    }
    l.elapsed = start.elapsed();
    if slots.iter().any(|s| s.is_none()) {
        l.error = Some(format!("timed out after {:.1} s", l.elapsed.as_secs_f64()));
        return l;
    }
    // name_from_dns: each slot is parsed for the record type its query asked (`rr != ctx->rrtype`).
    for (j, slot) in slots.iter().enumerate() {
        let m = slot.as_ref().expect("checked above");
        if m.rcode == rcode::NXDOMAIN {
            l.error = Some("Name does not resolve (NXDOMAIN)".into());
            return l;
        }
        match qtypes[j] {
            rtype::A => l.a.extend(&m.a),
            _ => l.aaaa.extend(&m.aaaa),
        }
    }
    if l.a.is_empty() && l.aaaa.is_empty() {
        l.error = Some("Name does not resolve".into());
    }
    l
}

/// Lookup order of Go's pure resolver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GoOrder {
    FilesDns,
    DnsFiles,
}

/// Go's `hostLookupOrder` on Linux for a name with no special cases: with /etc/nsswitch.conf, its
/// `hosts:` line decides; without it, Go < 1.16 uses DNS first (`hostLookupDNSFiles`), Go ≥ 1.16
/// files first (golang/go#35305).
pub fn go_lookup_order(nsswitch: Option<&str>, go_before_1_16: bool) -> GoOrder {
    match nsswitch.and_then(|t| parse_nsswitch(t).value.hosts) {
        Some(srcs) => {
            let files = srcs.iter().position(|s| s == "files");
            let dns = srcs.iter().position(|s| s == "dns");
            match (files, dns) {
                (Some(f), Some(d)) if d < f => GoOrder::DnsFiles,
                _ => GoOrder::FilesDns,
            }
        }
        None if go_before_1_16 => GoOrder::DnsFiles,
        None => GoOrder::FilesDns,
    }
}

/// The IPv4 addresses hosts-file text gives `name` (read with the node crate's hosts parser).
pub fn hosts_lookup(hosts: &str, name: &str) -> Vec<Ipv4Addr> {
    let name = name.trim_end_matches('.');
    parse_hosts(hosts)
        .value
        .iter()
        .filter(|e| e.names.iter().any(|n| n.eq_ignore_ascii_case(name)))
        .filter_map(|e| e.addr.parse().ok())
        .collect()
}

/// The candidate names of a lookup under resolv.conf's `search` and `ndots` (as Go and glibc try
/// them): with fewer dots than ndots, each search suffix first, then the name itself.
pub fn search_candidates(name: &str, search: &[&str], ndots: usize) -> Vec<String> {
    let dots = name.trim_end_matches('.').matches('.').count();
    let mut v = Vec::new();
    if name.ends_with('.') {
        return vec![name.trim_end_matches('.').to_string()];
    }
    if dots >= ndots {
        v.push(name.to_string());
    }
    for s in search {
        v.push(format!("{name}.{s}"));
    }
    if dots < ndots {
        v.push(name.to_string());
    }
    v
}

/// Go's pure resolver (`goLookupIPCNAMEOrder`): in DNS-first order, every search candidate is asked
/// (A and AAAA in parallel, each from its own socket, as Go's `dnsPacketRoundTrip` dials per query);
/// only when DNS finds nothing does it read /etc/hosts.
pub fn go_lookup(
    server: SocketAddrV4,
    name: &str,
    search: &[&str],
    ndots: usize,
    hosts: &str,
    order: GoOrder,
) -> Lookup {
    let start = Instant::now();
    let mut l = Lookup {
        name: name.into(),
        ..Default::default()
    };
    if order == GoOrder::FilesDns {
        let ips = hosts_lookup(hosts, name);
        if !ips.is_empty() {
            l.a = ips;
            l.from_hosts = true;
            l.elapsed = start.elapsed();
            return l;
        }
    }
    for cand in search_candidates(name, search, ndots) {
        let mut socks = Vec::new();
        for qt in [rtype::A, rtype::AAAA] {
            if let Ok(s) = udp_connected(server) {
                let id = fresh_id();
                let _ = s.send(&build_query(id, &cand, qt));
                l.queries_sent += 1;
                socks.push((s, id));
            }
        }
        let mut found = false;
        for (s, id) in &socks {
            if let Some(m) = recv_matching(
                s,
                |m| m.id == *id,
                start,
                Instant::now() + Duration::from_secs(5),
            ) {
                l.detail.push(format!(
                    "DNS {} {} → rcode {}",
                    cand,
                    qtype_name(m.qtype),
                    m.rcode
                ));
                if m.rcode == rcode::NOERROR && (!m.a.is_empty() || !m.aaaa.is_empty()) {
                    l.a.extend(&m.a);
                    l.aaaa.extend(&m.aaaa);
                    found = true;
                }
            }
        }
        if found {
            l.elapsed = start.elapsed();
            return l;
        }
    }
    if order == GoOrder::DnsFiles {
        let ips = hosts_lookup(hosts, name);
        if !ips.is_empty() {
            l.a = ips;
            l.from_hosts = true;
        }
    }
    l.elapsed = start.elapsed();
    if l.a.is_empty() && l.aaaa.is_empty() {
        l.error = Some("no such host".into());
    }
    l
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zone_gives_answers_nxdomain_and_nodata() {
        let z = Zone::default().with("a.example", &[Ipv4Addr::new(1, 2, 3, 4)], &[]);
        let (r, _) = z.answer(&build_query(1, "b.example", rtype::A)).unwrap();
        assert_eq!(reply(&r).unwrap().rcode, rcode::NXDOMAIN);
        let (r, _) = z.answer(&build_query(2, "a.example", rtype::AAAA)).unwrap();
        let m = reply(&r).unwrap();
        assert_eq!((m.id, m.rcode, m.aaaa.len()), (2, rcode::NOERROR, 0));
        let (r, _) = z.answer(&build_query(3, "A.example.", rtype::A)).unwrap();
        let m = reply(&r).unwrap();
        assert_eq!(
            (m.qtype, m.a.as_slice()),
            (rtype::A, &[Ipv4Addr::new(1, 2, 3, 4)][..])
        );
        assert!(z.answer(&r).is_none(), "a response is not answered");
    }

    #[test]
    fn go_order_follows_nsswitch_and_version() {
        assert_eq!(go_lookup_order(None, true), GoOrder::DnsFiles);
        assert_eq!(go_lookup_order(None, false), GoOrder::FilesDns);
        assert_eq!(
            go_lookup_order(Some("hosts: files dns\n"), true),
            GoOrder::FilesDns
        );
        assert_eq!(
            go_lookup_order(Some("hosts: dns files\n"), false),
            GoOrder::DnsFiles
        );
    }

    #[test]
    fn search_list_is_tried_first_below_ndots() {
        let c = search_candidates(
            "api.b.internal",
            &["default.svc.cluster.local", "cluster.local"],
            5,
        );
        assert_eq!(
            c,
            [
                "api.b.internal.default.svc.cluster.local",
                "api.b.internal.cluster.local",
                "api.b.internal"
            ]
        );
        assert_eq!(
            hosts_lookup("10.0.0.5 api.b.internal api\n", "api.b.internal"),
            [Ipv4Addr::new(10, 0, 0, 5)]
        );
    }
}
