//! `idle-timeout-reset` in a node's state: established sockets to peers that are not Service
//! addresses, without keepalive (or with keepalive longer than the shortest common middlebox idle
//! timeout), already idle longer than that timeout: a latent risk (whether a middlebox with such a
//! timeout is on their path is not in the node's state).

use super::evidence::{config, reachable_services, sysctl_evidence};
use super::Ctx;
use crate::facts::NetnsFacts;
use netsleuth_core::detect::idle_timeout_reset::INCIDENT;
use netsleuth_core::{Confidence, Finding, FindingKind};

/// The shortest idle timeout of the common cloud middleboxes (Azure Load Balancer's default, 4 min).
const SHORTEST_TIMEOUT_MS: u64 = 240_000;
const MAX_LISTED: usize = 8;

pub(super) fn check(ctx: &Ctx, ns: &NetnsFacts, out: &mut Vec<Finding>) {
    let Some(sockets) = &ns.sockets else { return };
    let svcs = reachable_services(ctx, ns);
    let mut idle: Vec<_> = sockets
        .iter()
        .filter(|s| s.state == "ESTAB" || s.state == "ESTABLISHED")
        .filter(|s| {
            let peer = s.peer_ip();
            !peer.starts_with("127.") && peer != "::1" && !svcs.iter().any(|v| v.vip == peer)
        })
        .filter(|s| {
            let long_keepalive =
                matches!(&s.timer, Some((n, ms)) if n == "keepalive" && *ms > SHORTEST_TIMEOUT_MS);
            !s.has_keepalive() || long_keepalive
        })
        .filter(|s| s.idle_ms().is_some_and(|ms| ms > SHORTEST_TIMEOUT_MS))
        .collect();
    if idle.is_empty() {
        return;
    }
    idle.sort_by_key(|s| std::cmp::Reverse(s.idle_ms().unwrap_or(0)));
    let mut f = Finding::new(
        &INCIDENT,
        FindingKind::LatentRisk,
        Confidence::Possible,
        format!(
            "{} established socket(s) in {} idle longer than 240 s without keepalive (longest {:.0} s): past the idle timeout of common load balancers and NAT gateways (Azure LB 240 s, AWS NLB/NAT gateway 350 s): one on their path has forgotten them",
            idle.len(),
            ns.id,
            idle[0].idle_ms().unwrap_or(0) as f64 / 1000.0
        ),
    );
    for s in idle.iter().take(MAX_LISTED) {
        f = f.with_evidence(config(
            format!("{}/ss.txt", ns.prefix()),
            Some(s.line),
            format!(
                "{} {} -> {} idle {:.0} s {}{}",
                s.state,
                s.local,
                s.peer,
                s.idle_ms().unwrap_or(0) as f64 / 1000.0,
                if s.has_keepalive() {
                    "keepalive longer than 240 s"
                } else {
                    "no keepalive"
                },
                s.process
                    .as_deref()
                    .map(|p| format!(" {p}"))
                    .unwrap_or_default()
            ),
        ));
    }
    if let Some(e) = sysctl_evidence(ns, "net.ipv4.tcp_keepalive_time") {
        f = f.with_evidence(e);
    }
    f = f.because("whether a middlebox with an idle timeout sits on these sockets' path is not in the node's state: a capture of their next send decides (a RST whose TTL is not the server's)");
    out.push(f);
}
