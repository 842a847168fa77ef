//! `/proc/net/tcp` and `/proc/net/tcp6`: the fallback socket source when `ss` is absent.
//!
//! For a LISTEN socket the kernel prints the accept-queue length as `rx_queue`, but not the backlog; the
//! timer field `tr` is 2 when a keepalive timer is pending.

use super::ss::Socket;
use super::{numbered_lines, IssueLog, Parsed};
use std::net::{Ipv4Addr, Ipv6Addr};

fn state_name(hex: &str) -> &'static str {
    match hex {
        "01" => "ESTAB",
        "02" => "SYN-SENT",
        "03" => "SYN-RECV",
        "04" => "FIN-WAIT-1",
        "05" => "FIN-WAIT-2",
        "06" => "TIME-WAIT",
        "07" => "UNCONN",
        "08" => "CLOSE-WAIT",
        "09" => "LAST-ACK",
        "0A" => "LISTEN",
        "0B" => "CLOSING",
        _ => "UNKNOWN",
    }
}

/// `0100007F:1F90` → `127.0.0.1:8080`; IPv6 addresses are four little-endian 32-bit words.
pub fn decode_endpoint(s: &str) -> Option<String> {
    let (a, p) = s.split_once(':')?;
    let port = u16::from_str_radix(p, 16).ok()?;
    // Hex digits only: the IPv6 case slices by byte offsets, which must not fall inside a character.
    if !a.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    match a.len() {
        8 => {
            let v = u32::from_str_radix(a, 16).ok()?;
            Some(format!("{}:{port}", Ipv4Addr::from(v.swap_bytes())))
        }
        32 => {
            let mut bytes = [0u8; 16];
            for w in 0..4 {
                let v = u32::from_str_radix(&a[w * 8..w * 8 + 8], 16).ok()?;
                bytes[w * 4..w * 4 + 4].copy_from_slice(&v.swap_bytes().to_be_bytes());
            }
            let ip = Ipv6Addr::from(bytes);
            Some(match ip.to_ipv4_mapped() {
                Some(v4) => format!("{v4}:{port}"),
                None => format!("[{ip}]:{port}"),
            })
        }
        _ => None,
    }
}

pub fn parse_proc_net_tcp(text: &str) -> Parsed<Vec<Socket>> {
    let mut out = Vec::new();
    let mut issues = IssueLog::default();
    for (n, line) in numbered_lines(text) {
        let t = line.trim();
        if t.is_empty() || t.starts_with("sl") {
            continue;
        }
        let f: Vec<&str> = t.split_whitespace().collect();
        if f.len() < 10 {
            issues.push(n, "short-line", t);
            continue;
        }
        let (Some(local), Some(peer)) = (decode_endpoint(f[1]), decode_endpoint(f[2])) else {
            issues.push(n, "bad-address", t);
            continue;
        };
        let (tx, rx) = f[4].split_once(':').unwrap_or(("0", "0"));
        let (tr, when) = f[5].split_once(':').unwrap_or(("00", "0"));
        let hz_ticks = u64::from_str_radix(when, 16).unwrap_or(0);
        // Jiffies at USER_HZ 100 → ms; a damaged field can hold any number.
        let ms = hz_ticks.saturating_mul(10);
        let timer = match tr {
            "02" => Some(("keepalive".to_string(), ms)),
            "01" => Some(("on".to_string(), ms)),
            "04" => Some(("persist".to_string(), ms)),
            _ => None,
        };
        out.push(Socket {
            line: n as u32,
            netid: Some("tcp".into()),
            state: state_name(f[3]).into(),
            recv_q: u64::from_str_radix(rx, 16).unwrap_or(0),
            send_q: u64::from_str_radix(tx, 16).unwrap_or(0),
            local,
            peer,
            process: None,
            timer,
            ..Default::default()
        });
    }
    Parsed { value: out, issues }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_v4_and_mapped_v6() {
        assert_eq!(decode_endpoint("0100007F:1F90").unwrap(), "127.0.0.1:8080");
        assert_eq!(
            decode_endpoint("0000000000000000FFFF00000100007F:0050").unwrap(),
            "127.0.0.1:80"
        );
        let p = parse_proc_net_tcp("  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 3500007F:0035 00000000:0000 0A 00000000:00000002 00:00000000 00000000   101        0 34000 1\n");
        assert_eq!(p.value[0].state, "LISTEN");
        assert_eq!(p.value[0].recv_q, 2);
    }

    /// Found by the node_parsers fuzz target (fuzz/crashers/node_parsers/): a non-ASCII character in a
    /// 32-byte address split the IPv6 words inside it; a huge timer overflowed the ms conversion.
    #[test]
    fn damaged_fields_are_refused_not_panics() {
        // 32 bytes, the 2-byte character across the first word's end.
        let a = format!("{}\u{e9}{}", "0".repeat(7), "0".repeat(23));
        assert_eq!(a.len(), 32);
        assert_eq!(decode_endpoint(&format!("{a}:0050")), None);
        assert_eq!(decode_endpoint("+100007F:0050"), None);
        let p = parse_proc_net_tcp(
            "   0: 3500007F:0035 00000000:0000 01 00000000:00000000 02:FFFFFFFFFFFFFFFF 00000000 0 0 1 1\n",
        );
        assert_eq!(p.value[0].timer, Some(("keepalive".to_string(), u64::MAX)));
    }
}
