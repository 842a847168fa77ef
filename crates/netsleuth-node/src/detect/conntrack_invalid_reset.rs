//! `conntrack-invalid-reset` in a node's state: Service DNAT with nf_conntrack_tcp_be_liberal=0 and no
//! rule dropping INVALID packets: an incident under way when `conntrack -S` invalid rose between the two
//! samples; otherwise a latent risk where kube-proxy's filter chain KUBE-FORWARD exists without the
//! INVALID drop (kube-proxy before 1.15, kubernetes #74840). Other DNAT (hand-made rules, Docker's)
//! without the drop carries the same risk but is not named: those nodes were not built for Services,
//! and naming every one would drown the finding. kube-proxy's nftables mode is not judged.

use super::evidence::{counter, fact, sysctl_evidence};
use super::Ctx;
use crate::facts::NetnsFacts;
use netsleuth_core::detect::conntrack_invalid_reset::INCIDENT;
use netsleuth_core::{Confidence, Finding, FindingKind};

pub(super) fn check(_ctx: &Ctx, ns: &NetnsFacts, out: &mut Vec<Finding>) {
    // Only where this namespace DNATs to Service backends (iptables or nft; IPVS does its own NAT).
    let dnat = ns.services().iter().any(|s| s.kind != "ipvs");
    if !dnat || (ns.iptables.is_none() && ns.nft.is_none()) {
        return;
    }
    let Some(be_liberal) = ns.sysctl_u64("net.netfilter.nf_conntrack_tcp_be_liberal") else {
        return;
    };
    if be_liberal != 0 || drops_invalid(ns) {
        return;
    }
    let invalid = ns
        .delta(|s| &s.conntrack, "invalid")
        .filter(|(a, b, _)| b > a);
    let src = format!("{}/conntrack-S.txt", ns.prefix());
    let old_kube_proxy = ns
        .iptables
        .as_ref()
        .is_some_and(|rs| rs.iter().any(|r| r.chain() == "KUBE-FORWARD"));
    if invalid.is_none() && !old_kube_proxy {
        return;
    }
    let (kind, summary) = match invalid {
        Some((a, b, ms)) => (
            FindingKind::Incident,
            format!(
                "{}: conntrack marked {} packet(s) INVALID in {:.1} s ({a} → {b}) and nothing drops them: Service replies among them leave without reverse NAT",
                ns.id,
                b - a,
                ms as f64 / 1000.0
            ),
        ),
        None => (
            FindingKind::LatentRisk,
            format!(
                "{}: kube-proxy's KUBE-FORWARD without `--ctstate INVALID -j DROP` (kube-proxy < 1.15) and nf_conntrack_tcp_be_liberal = 0: an out-of-window Service reply leaves un-NATed and the client's RST kills the connection",
                ns.id
            ),
        ),
    };
    let mut f = Finding::new(&INCIDENT, kind, Confidence::Likely, summary);
    if let Some(e) = sysctl_evidence(ns, "net.netfilter.nf_conntrack_tcp_be_liberal") {
        f = f.with_evidence(e);
    }
    let rules_source = if ns.iptables.is_some() {
        format!("{}/iptables-save.txt", ns.prefix())
    } else {
        format!("{}/nft.json", ns.prefix())
    };
    f = f.with_evidence(fact(
        rules_source,
        format!(
            "no `--ctstate INVALID -j DROP` (nft: `ct state invalid drop`) among the rules, while {} Service(s) are DNATed",
            ns.services().iter().filter(|s| s.kind != "ipvs").count()
        ),
    ));
    match invalid {
        Some((a, b, _)) => {
            f = f
                .with_evidence(counter(&src, "invalid", Some(a), b))
                .because("`invalid` rose while the node was read; which packets were INVALID (out-of-window TCP, bad checksums, ICMP errors for unknown flows) the counter does not say: a capture on the node (-i any) shows a client's RST to a backend's own address");
        }
        None => {
            if let Some(v) = ns.samples.last().and_then(|s| s.conntrack.get("invalid")) {
                f = f.with_evidence(counter(&src, "invalid", None, *v));
            }
            f = f.because("it takes an out-of-window segment (loss, reordering, a late retransmission) on a Service connection; no INVALID packet was counted while the node was read");
        }
    }
    out.push(f);
}

/// Whether some rule drops packets conntrack marked INVALID (iptables `-m conntrack --ctstate
/// INVALID -j DROP` or `-m state --state INVALID`, nft `ct state invalid drop`).
fn drops_invalid(ns: &NetnsFacts) -> bool {
    let ipt = |rs: &crate::parse::iptables::Ruleset| {
        rs.iter().any(|r| {
            matches!(r.target(), Some("DROP") | Some("REJECT"))
                && r.text().contains("INVALID")
                && r.option(&["--ctstate", "--state"])
                    .is_some_and(|a| !a.negated && a.value.split(',').any(|s| s == "INVALID"))
        })
    };
    if ns.iptables.as_ref().is_some_and(ipt) || ns.iptables_legacy.as_ref().is_some_and(ipt) {
        return true;
    }
    ns.nft.as_ref().is_some_and(|n| {
        n.rules.iter().any(|r| {
            let text = serde_json::to_string(&r.expr).unwrap_or_default();
            text.contains("\"invalid\"")
                && (text.contains("\"drop\"") || text.contains("\"reject\""))
        })
    })
}
