//! `vxlan-checksum-offload` in a node's state: an overlay device (vxlan, geneve) whose tx checksum
//! offload is on, on a kernel without ea64d8d6c675. A latent risk: it bites when the node NATs its own
//! VXLAN packets (MASQUERADE --random-fully matching them). UDP InCsumErrors rising between the two
//! counter samples is what a receiving node shows when it happens; alone it is not this incident's
//! proof (any bad UDP checksum counts there), so it only adds evidence.

use super::evidence::{counter, fact};
use super::Ctx;
use crate::facts::NetnsFacts;
use netsleuth_core::detect::vxlan_checksum_offload::INCIDENT;
use netsleuth_core::versions::NAT_UDP_ZERO_CHECKSUM_KEPT;
use netsleuth_core::{Confidence, Finding, FindingKind};

/// The features through which a VXLAN device leaves checksums to offload.
const TX_CHECKSUM_FEATURES: &[&str] = &["tx-checksum-ip-generic", "tx-udp_tnl-csum-segmentation"];

pub(super) fn check(ctx: &Ctx, ns: &NetnsFacts, out: &mut Vec<Finding>) {
    let Some(devices) = &ns.offloads else { return };
    let kernel = ctx.kernel().unwrap_or("unknown");
    let has_fix = NAT_UDP_ZERO_CHECKSUM_KEPT.has(kernel);
    if has_fix == Some(true) {
        return; // this kernel keeps a zero outer checksum through NAT
    }
    let random_fully: Vec<_> = ns
        .source_nat_rules()
        .iter()
        .filter(|r| r.random_fully)
        .collect();
    let csum_errors = ns
        .delta(|s| &s.netstat, "Udp.InCsumErrors")
        .filter(|(a, b, _)| b > a);
    for dev in devices {
        let on: Vec<&str> = TX_CHECKSUM_FEATURES
            .iter()
            .copied()
            .filter(|f| dev.is_on(f) == Some(true))
            .collect();
        if on.is_empty() {
            continue;
        }
        let confidence = match (has_fix, random_fully.is_empty()) {
            (Some(false), false) => Confidence::Likely,
            _ => Confidence::Possible,
        };
        let mut f = Finding::new(
            &INCIDENT,
            FindingKind::LatentRisk,
            confidence,
            format!(
                "{} offloads its tx checksum ({}) on kernel {kernel}, which {}: NAT of its own VXLAN packets writes a wrong outer UDP checksum that the receiving nodes drop",
                dev.device,
                on.join(", "),
                match has_fix {
                    Some(false) => "lacks ea64d8d6c675",
                    _ => "could not be read against ea64d8d6c675",
                }
            ),
        )
        .with_evidence(fact(
            format!("{}/{}", ns.prefix(), crate::facts::paths::ETHTOOL_FEATURES),
            format!("{}: {}", dev.device, on.iter().map(|f| format!("{f}: on")).collect::<Vec<_>>().join(", ")),
        ))
        .with_evidence(fact("node/kernel-release", NAT_UDP_ZERO_CHECKSUM_KEPT.status(kernel)));
        for r in random_fully.iter().take(2) {
            f = f.with_evidence(super::evidence::config(
                r.source.to_string(),
                Some(r.line),
                r.text.clone(),
            ));
        }
        f = if random_fully.is_empty() {
            f.because("no MASQUERADE/SNAT --random-fully rule was read in this namespace: whether the VXLAN packets are NATed at all is not shown")
        } else {
            f.because("MASQUERADE/SNAT --random-fully rules are present; whether they match the VXLAN packets themselves (kube-proxy < 1.16.13/1.17.9/1.18.6 masquerades more than marked packets) decides")
        };
        if let Some((before, after, _)) = csum_errors {
            f = f
                .with_evidence(counter(format!("{}/sample", ns.prefix()), "Udp.InCsumErrors", Some(before), after))
                .because(format!("UDP InCsumErrors rose by {} during collection: this node received UDP with bad checksums (from another node's VXLAN, or any UDP); a capture of the underlay shows which", after - before));
        }
        f = f.because("a latent risk: the node's state shows the conditions, not packets that carried a wrong checksum (a capture of the receiving node's underlay does)");
        out.push(f);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::{Manifest, NodeFacts};
    use crate::parse::ethtool::parse_ethtool_features;

    fn facts(kernel: &str, ethtool: &str) -> NodeFacts {
        let manifest = Manifest {
            kernel: Some(kernel.to_string()),
            namespaces: vec![crate::facts::NamespaceEntry {
                id: "node".into(),
                inode: None,
                is_node: true,
                pids: Vec::new(),
                comms: Vec::new(),
            }],
            ..Default::default()
        };
        let mut artifacts = crate::facts::Artifacts::default();
        artifacts.insert(
            format!("netns/node/{}", crate::facts::paths::ETHTOOL_FEATURES),
            ethtool.as_bytes().to_vec(),
        );
        let f = NodeFacts::from_artifacts(manifest, artifacts);
        assert_eq!(
            f.node_netns().and_then(|n| n.offloads.clone()),
            Some(parse_ethtool_features(ethtool).value)
        );
        f
    }

    fn run(f: &NodeFacts) -> Vec<Finding> {
        let opts = super::super::CheckOptions::default();
        let ctx = Ctx {
            facts: f,
            opts: &opts,
        };
        let mut out = Vec::new();
        check(&ctx, f.node_netns().expect("node"), &mut out);
        out
    }

    const ON: &str = "Features for flannel.1:\ntx-checksumming: on\n\ttx-checksum-ip-generic: on\n";
    const OFF: &str =
        "Features for flannel.1:\ntx-checksumming: off\n\ttx-checksum-ip-generic: off\n";

    #[test]
    fn offload_on_an_old_kernel_is_a_latent_risk() {
        let out = run(&facts("5.4.0-26-generic", ON));
        assert_eq!(out.len(), 1, "{out:#?}");
        assert_eq!(out[0].kind, FindingKind::LatentRisk);
        // No --random-fully rule was read: the NAT condition is unknown.
        assert_eq!(out[0].confidence, Confidence::Possible);
        assert!(out[0].summary.contains("flannel.1"), "{}", out[0].summary);
    }

    #[test]
    fn a_fixed_kernel_or_offload_off_is_quiet() {
        assert!(run(&facts("5.4.41", ON)).is_empty());
        assert!(run(&facts("5.7.0", ON)).is_empty());
        assert!(run(&facts("6.18.44-fc-v1147", ON)).is_empty());
        assert!(run(&facts("4.19.0", OFF)).is_empty());
    }
}
