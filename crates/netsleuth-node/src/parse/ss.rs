//! `ss` output (iproute2): one line per socket, `-i` details on an indented continuation line.
//!
//! What the detectors need: a listener's accept queue (`Recv-Q`) against its backlog (`Send-Q`), and for
//! established sockets the keepalive timer (`-o`: `timer:(keepalive,119min,0)`) and idle times (`-i`:
//! `lastsnd:`/`lastrcv:` in ms), with the owning process (`-p`).

use super::{numbered_lines, IssueLog, Parsed};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Socket {
    pub line: u32,
    /// `tcp`, `udp` … when `ss` printed a Netid column.
    pub netid: Option<String>,
    /// `LISTEN`, `ESTAB`, `TIME-WAIT` …
    pub state: String,
    pub recv_q: u64,
    pub send_q: u64,
    pub local: String,
    pub peer: String,
    /// `users:((…))` as printed.
    pub process: Option<String>,
    /// Timer name (`keepalive`, `on`, `off`, `timewait`, `persist`) and its expiry in ms.
    pub timer: Option<(String, u64)>,
    pub lastsnd_ms: Option<u64>,
    pub lastrcv_ms: Option<u64>,
    pub lastack_ms: Option<u64>,
}

impl Socket {
    pub fn has_keepalive(&self) -> bool {
        matches!(&self.timer, Some((name, _)) if name == "keepalive")
    }

    /// Milliseconds since data last moved in either direction (`-i` needed).
    pub fn idle_ms(&self) -> Option<u64> {
        match (self.lastsnd_ms, self.lastrcv_ms) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Host part of `Local Address:Port` (brackets and `%iface` removed).
    pub fn local_ip(&self) -> &str {
        split_endpoint(&self.local).0
    }

    pub fn peer_ip(&self) -> &str {
        split_endpoint(&self.peer).0
    }

    pub fn peer_port(&self) -> Option<u16> {
        split_endpoint(&self.peer).1
    }

    pub fn local_port(&self) -> Option<u16> {
        split_endpoint(&self.local).1
    }
}

/// `10.0.0.1:80`, `[::1]:80`, `127.0.0.53%lo:53`, `*:*` → (host, port).
pub fn split_endpoint(ep: &str) -> (&str, Option<u16>) {
    let Some(i) = ep.rfind(':') else {
        return (ep, None);
    };
    let (host, port) = (&ep[..i], &ep[i + 1..]);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let host = host.split('%').next().unwrap_or(host);
    let host = host
        .strip_prefix("::ffff:")
        .filter(|h| h.contains('.'))
        .unwrap_or(host);
    (host, port.parse().ok())
}

const STATES: &[&str] = &[
    "ESTAB",
    "LISTEN",
    "TIME-WAIT",
    "SYN-SENT",
    "SYN-RECV",
    "FIN-WAIT-1",
    "FIN-WAIT-2",
    "CLOSE-WAIT",
    "LAST-ACK",
    "CLOSING",
    "UNCONN",
    "CLOSED",
    "CLOSE",
    "ESTABLISHED",
    "SYN_SENT",
    "TIME_WAIT",
];

/// `ss` durations: `119min`, `1min2sec`, `12sec`, `2.345sec`, `300ms`.
pub fn parse_ss_duration(s: &str) -> Option<u64> {
    let mut total = 0f64;
    let mut rest = s;
    let mut any = false;
    while !rest.is_empty() {
        let num_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let n: f64 = rest[..num_end].parse().ok()?;
        rest = &rest[num_end..];
        let (mult, len) = if rest.starts_with("min") {
            (60_000.0, 3)
        } else if rest.starts_with("sec") {
            (1000.0, 3)
        } else if rest.starts_with("ms") {
            (1.0, 2)
        } else {
            return None;
        };
        total += n * mult;
        rest = &rest[len..];
        any = true;
    }
    any.then_some(total as u64)
}

pub fn parse_ss(text: &str) -> Parsed<Vec<Socket>> {
    let mut out: Vec<Socket> = Vec::new();
    let mut issues = IssueLog::default();
    for (n, line) in numbered_lines(text) {
        if line.trim().is_empty() {
            continue;
        }
        let t = line.trim();
        if line.starts_with(char::is_whitespace) {
            // -i details of the socket above.
            let Some(s) = out.last_mut() else {
                issues.push(n, "detail-without-socket", t);
                continue;
            };
            for w in t.split_whitespace() {
                if let Some((k, v)) = w.split_once(':') {
                    let v = v.parse::<u64>().ok();
                    match k {
                        "lastsnd" => s.lastsnd_ms = v,
                        "lastrcv" => s.lastrcv_ms = v,
                        "lastack" => s.lastack_ms = v,
                        _ => {}
                    }
                }
            }
            continue;
        }
        if t.starts_with("Netid") || t.starts_with("State") || t.starts_with("Recv-Q") {
            continue;
        }
        let words: Vec<&str> = t.split_whitespace().collect();
        let (netid, rest) =
            if words.len() > 1 && STATES.contains(&words[1]) && !STATES.contains(&words[0]) {
                (Some(words[0].to_string()), &words[1..])
            } else {
                (None, &words[..])
            };
        if rest.len() < 5 || !STATES.contains(&rest[0]) {
            issues.push(n, "unknown-line", t);
            continue;
        }
        let (Ok(recv_q), Ok(send_q)) = (rest[1].parse(), rest[2].parse()) else {
            issues.push(n, "bad-number", t);
            continue;
        };
        let mut s = Socket {
            line: n as u32,
            netid,
            state: rest[0].to_string(),
            recv_q,
            send_q,
            local: rest[3].to_string(),
            peer: rest[4].to_string(),
            ..Default::default()
        };
        for w in &rest[5..] {
            if w.starts_with("users:") {
                s.process = Some(w.to_string());
            } else if let Some(body) = w.strip_prefix("timer:(").and_then(|b| b.strip_suffix(')')) {
                let mut p = body.split(',');
                let name = p.next().unwrap_or("").to_string();
                let exp = p.next().and_then(parse_ss_duration).unwrap_or(0);
                s.timer = Some((name, exp));
            } else if let Some((k, v)) = w.split_once(':') {
                // Without -i on a separate line (ss ≤ 4.x printed details inline with -e).
                let v = v.parse::<u64>().ok();
                match k {
                    "lastsnd" => s.lastsnd_ms = v,
                    "lastrcv" => s.lastrcv_ms = v,
                    "lastack" => s.lastack_ms = v,
                    _ => {}
                }
            }
        }
        out.push(s);
    }
    Parsed { value: out, issues }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listener_queue_timers_and_idle() {
        let text = "LISTEN 1      1      127.0.0.1:8080    0.0.0.0:*     users:((\"python3\",pid=5215,fd=3)) ino:7064 sk:1 <->\n\t bbr cwnd:10\nESTAB  0      0      127.0.0.1:38670 127.0.0.1:8080  users:((\"python3\",pid=5215,fd=6)) timer:(keepalive,119min,0) ino:7067\n\t ts sack lastsnd:1212 lastrcv:1300 lastack:1212\ntcp   ESTAB 0 0 [::ffff:10.0.0.1]:22 10.0.0.2:5000\ngarbage\n";
        let p = parse_ss(text);
        assert_eq!(p.value.len(), 3);
        assert_eq!((p.value[0].recv_q, p.value[0].send_q), (1, 1));
        assert!(p.value[1].has_keepalive());
        assert_eq!(p.value[1].timer.as_ref().unwrap().1, 119 * 60_000);
        assert_eq!(p.value[1].idle_ms(), Some(1212));
        assert_eq!(p.value[2].netid.as_deref(), Some("tcp"));
        assert_eq!(p.value[2].local_ip(), "10.0.0.1");
        assert_eq!(p.issues.count("unknown-line"), 1);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_ss_duration("1min2sec"), Some(62_000));
        assert_eq!(parse_ss_duration("2.345sec"), Some(2345));
        assert_eq!(parse_ss_duration("300ms"), Some(300));
        assert_eq!(parse_ss_duration("x"), None);
    }
}
