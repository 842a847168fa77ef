//! `--probe`: the only active step of `check`. One small DNS query (`. NS`, recursion desired) to each
//! nameserver of the node's and the containers' resolv.conf, from the network namespace that uses it,
//! with a short timeout. The query and answer checks are pure; [`probe_one`] is the socket adapter.

use netsleuth_core::wire::dns::{rtype, DnsHeader, DnsRepr};
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeOptions {
    /// How long to wait for each answer.
    pub timeout: Duration,
    /// Queries per nameserver before calling it dead.
    pub attempts: u32,
}

impl Default for ProbeOptions {
    fn default() -> Self {
        ProbeOptions {
            timeout: Duration::from_millis(1500),
            attempts: 2,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeResult {
    /// The root (node or container) whose resolv.conf names this server.
    pub root: String,
    /// The namespace the query was sent from.
    pub netns: String,
    pub nameserver: String,
    pub answered: bool,
    /// DNS RCODE of the answer (0 NOERROR, 2 SERVFAIL, 3 NXDOMAIN, 5 REFUSED).
    pub rcode: Option<u8>,
    pub rtt_ms: Option<u64>,
    pub attempts: u32,
    /// Why no answer: `timeout`, `connection refused` (ICMP port unreachable) …
    pub error: Option<String>,
}

/// A standard query for `. NS` with the given id.
pub fn build_query(id: u16) -> Vec<u8> {
    DnsRepr::query(id, "", rtype::NS).emit()
}

/// The RCODE if `resp` is a response to query `id`; `None` if it is not (wrong id, not a response, short).
pub fn response_rcode(resp: &[u8], id: u16) -> Option<u8> {
    let h = DnsHeader::parse(resp)?;
    (h.id == id && h.qr).then_some(h.rcode)
}

/// Queries one nameserver from the calling thread's network namespace.
pub fn probe_one(
    server: IpAddr,
    opts: &ProbeOptions,
) -> (bool, Option<u8>, Option<u64>, u32, Option<String>) {
    let bind: SocketAddr = if server.is_ipv4() {
        "0.0.0.0:0".parse().unwrap()
    } else {
        "[::]:0".parse().unwrap()
    };
    let mut last_err = None;
    for attempt in 1..=opts.attempts.max(1) {
        let sock = match UdpSocket::bind(bind) {
            Ok(s) => s,
            Err(e) => {
                return (
                    false,
                    None,
                    None,
                    attempt,
                    Some(format!("cannot open a UDP socket: {e}")),
                )
            }
        };
        if let Err(e) = sock.connect(SocketAddr::new(server, 53)) {
            last_err = Some(format!("cannot reach {server}: {e}"));
            continue;
        }
        let _ = sock.set_read_timeout(Some(opts.timeout));
        // An id that differs per attempt and per run, without a random-number crate.
        let id = (Instant::now().elapsed().subsec_nanos() as u16)
            ^ (std::process::id() as u16)
            ^ (attempt as u16 * 7919);
        let start = Instant::now();
        if let Err(e) = sock.send(&build_query(id)) {
            last_err = Some(e.to_string());
            continue;
        }
        let mut buf = [0u8; 1500];
        loop {
            match sock.recv(&mut buf) {
                Ok(n) => {
                    if let Some(rcode) = response_rcode(&buf[..n], id) {
                        return (
                            true,
                            Some(rcode),
                            Some(start.elapsed().as_millis() as u64),
                            attempt,
                            None,
                        );
                    }
                    if start.elapsed() >= opts.timeout {
                        last_err = Some("timeout".into());
                        break;
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    last_err = Some("timeout".into());
                    break;
                }
                Err(e) => {
                    last_err = Some(e.to_string());
                    break;
                }
            }
        }
    }
    (false, None, None, opts.attempts.max(1), last_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_and_response_ids() {
        let q = build_query(0xabcd);
        assert_eq!(q.len(), 17);
        let mut r = q.clone();
        r[2] |= 0x80;
        r[3] = 0x83;
        assert_eq!(response_rcode(&r, 0xabcd), Some(3));
        assert_eq!(response_rcode(&r, 0xabce), None);
        assert_eq!(response_rcode(&q, 0xabcd), None);
    }
}
