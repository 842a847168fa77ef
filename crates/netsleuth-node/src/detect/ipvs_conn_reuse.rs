//! `ipvs-conn-reuse` in a node's state: IPVS in use (virtual services, or kube-ipvs0) with
//! `conn_reuse_mode=1` and `vs/conntrack=1` on a kernel without the 5.9 fix (first SYNs of reused
//! ports dropped), or `conn_reuse_mode=0` with `expire_nodest_conn=0` (reused ports keep reaching
//! removed real servers). Both are latent risks: the drops leave no counter of their own (before 5.17
//! no drop reason either), so a capture shows whether they happen.

use super::evidence::{fact, sysctl_evidence};
use super::Ctx;
use crate::facts::NetnsFacts;
use netsleuth_core::detect::ipvs_conn_reuse::INCIDENT;
use netsleuth_core::versions;
use netsleuth_core::{Confidence, Finding, FindingKind};

pub(super) fn check(ctx: &Ctx, ns: &NetnsFacts, out: &mut Vec<Finding>) {
    let Some(reuse) = ns.sysctl_u64("net.ipv4.vs.conn_reuse_mode") else {
        return; // no IPVS module loaded in this namespace
    };
    let services = ns.ipvs.as_ref().map_or(0, Vec::len);
    let ipvs_device = ns
        .links
        .iter()
        .flatten()
        .any(|l| l.name == "kube-ipvs0" && !l.addrs.is_empty());
    if services == 0 && !ipvs_device {
        return; // the module is loaded, but nothing is load-balanced by it here
    }
    let conntrack = ns.sysctl_u64("net.ipv4.vs.conntrack");
    let nodest = ns.sysctl_u64("net.ipv4.vs.expire_nodest_conn");
    let kernel = ctx.kernel();
    let fixed = kernel.and_then(|k| versions::IPVS_CONN_REUSE_UNCONFIRMED_CT.has(k));
    let used = if services > 0 {
        format!("{services} IPVS virtual service(s)")
    } else {
        "ClusterIPs on kube-ipvs0".to_string()
    };
    let mut f = match (reuse, fixed) {
        (_, Some(true)) => return, // ≥ 5.9: mode 1 reschedules without a drop; kube-proxy keeps it
        (r, fixed) if r != 0 && conntrack != Some(0) => Finding::new(
            &INCIDENT,
            FindingKind::LatentRisk,
            if fixed == Some(false) && conntrack == Some(1) {
                Confidence::Likely
            } else {
                Confidence::Possible
            },
            format!(
                "{} in {}: net.ipv4.vs.conn_reuse_mode={r} with vs/conntrack on a kernel without the 5.9 fix: a SYN reusing a client port of a connection in IPVS's TIME_WAIT is dropped and the connect takes 1 s",
                used, ns.id
            ),
        )
        .because("happens when clients reuse source ports toward a virtual service within 2 minutes (busy clients, narrow port ranges, fixed source ports); how often is not in the node's state"),
        (0, _) if nodest != Some(1) => Finding::new(
            &INCIDENT,
            FindingKind::LatentRisk,
            if fixed == Some(false) && nodest == Some(0) {
                Confidence::Likely
            } else {
                Confidence::Possible
            },
            format!(
                "{} in {}: net.ipv4.vs.conn_reuse_mode=0 with expire_nodest_conn=0: a client port reused within IPVS's timeouts goes to the old real server without rescheduling, also after that server was removed (kubernetes#81775)",
                used, ns.id
            ),
        )
        .because("kube-proxy sets conn_reuse_mode=0 on kernels < 5.9 to avoid the 1 s drops; without expire_nodest_conn=1 connections of reused ports keep going to removed backends until the entry expires"),
        _ => return,
    };
    if fixed.is_none() {
        f = f.because(
            "the kernel version is unknown or unreadable: whether it has the 5.9 fix is not known",
        );
    }
    for key in [
        "net.ipv4.vs.conn_reuse_mode",
        "net.ipv4.vs.conntrack",
        "net.ipv4.vs.expire_nodest_conn",
    ] {
        if let Some(e) = sysctl_evidence(ns, key) {
            f = f.with_evidence(e);
        }
    }
    f = f.with_evidence(fact(
        "node/kernel-release",
        versions::IPVS_CONN_REUSE_UNCONFIRMED_CT.status(kernel.unwrap_or("unknown")),
    ));
    out.push(f);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::CheckOptions;
    use crate::facts::NodeFacts;
    use crate::parse::ipvs::VirtualService;

    fn ns(reuse: &str, conntrack: &str, nodest: &str) -> NetnsFacts {
        let mut n = NetnsFacts::default();
        n.id = "node".into();
        n.is_node = true;
        n.sysctls = Some(
            [
                ("net.ipv4.vs.conn_reuse_mode", reuse),
                ("net.ipv4.vs.conntrack", conntrack),
                ("net.ipv4.vs.expire_nodest_conn", nodest),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        );
        n.ipvs = Some(vec![VirtualService {
            protocol: "TCP".into(),
            address: "10.96.0.1:443".into(),
            scheduler: "rr".into(),
            real_servers: vec!["10.244.1.5:6443".into()],
        }]);
        n
    }

    fn run(kernel: &str, ns: &NetnsFacts) -> Vec<(FindingKind, Confidence, String)> {
        let facts = NodeFacts {
            kernel: Some(kernel.into()),
            ..Default::default()
        };
        let opts = CheckOptions::default();
        let ctx = Ctx {
            facts: &facts,
            opts: &opts,
        };
        let mut out = Vec::new();
        check(&ctx, ns, &mut out);
        out.into_iter()
            .map(|f| (f.kind, f.confidence, f.summary))
            .collect()
    }

    #[test]
    fn reuse_mode_one_before_5_9_is_the_one_second_drop() {
        let got = run("5.4.0-150-generic", &ns("1", "1", "0"));
        assert!(
            matches!(got.as_slice(), [(FindingKind::LatentRisk, Confidence::Likely, s)] if s.contains("1 s")),
            "{got:?}"
        );
        // Since 5.9 mode 1 is what kube-proxy leaves: no risk.
        assert!(run("5.10.0-21-amd64", &ns("1", "1", "0")).is_empty());
        assert!(run("6.1.0", &ns("0", "1", "0")).is_empty());
    }

    #[test]
    fn reuse_mode_zero_without_expire_nodest_reaches_removed_backends() {
        let got = run("4.19.0", &ns("0", "1", "0"));
        assert!(
            matches!(got.as_slice(), [(FindingKind::LatentRisk, Confidence::Likely, s)] if s.contains("81775")),
            "{got:?}"
        );
        assert!(run("4.19.0", &ns("0", "1", "1")).is_empty());
    }

    #[test]
    fn no_ipvs_in_use_is_no_risk() {
        let mut n = ns("1", "1", "0");
        n.ipvs = Some(Vec::new());
        assert!(run("4.19.0", &n).is_empty());
    }
}
