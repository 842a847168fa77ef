//! `conntrack-snat-remap` in a node's state: MASQUERADE on a device that carries more than one IPv4
//! address, on a kernel that flushes all of the device's NAT entries when one of them is deleted (a
//! latent risk).

use super::evidence::{config, fact};
use super::Ctx;
use crate::facts::NetnsFacts;
use netsleuth_core::detect::conntrack_snat_remap::INCIDENT;
use netsleuth_core::versions;
use netsleuth_core::{Confidence, Finding, FindingKind};

pub(super) fn check(ctx: &Ctx, ns: &NetnsFacts, out: &mut Vec<Finding>) {
    let Some(links) = &ns.links else { return };
    let kernel = ctx.kernel().unwrap_or("unknown");
    let fixed = versions::MASQUERADE_FLUSH_PER_ADDRESS.has(kernel);
    if fixed == Some(true) {
        return; // after the fix only the deleted address's entries go, which is what should happen
    }
    for rule in ns.source_nat_rules().iter().filter(|r| r.masquerade) {
        // Devices the rule can masquerade on: the named one, or any non-loopback device.
        let devices: Vec<_> = links
            .iter()
            .filter(|l| l.name != "lo")
            .filter(|l| match rule.out_iface.as_deref() {
                Some(o) if o.starts_with('!') => l.name != o[1..],
                Some(o) if o.ends_with('+') => l.name.starts_with(&o[..o.len() - 1]),
                Some(o) => l.name == o,
                None => true,
            })
            .filter(|l| {
                l.addrs
                    .iter()
                    .filter(|a| a.family == "inet" && a.scope != "host")
                    .count()
                    >= 2
            })
            .collect();
        for dev in devices {
            let addrs: Vec<String> = dev
                .addrs
                .iter()
                .filter(|a| a.family == "inet")
                .map(|a| {
                    format!(
                        "{}/{}{}",
                        a.local,
                        a.prefixlen,
                        if a.secondary { " secondary" } else { "" }
                    )
                })
                .collect();
            let confidence = if fixed == Some(false) {
                Confidence::Likely
            } else {
                Confidence::Possible
            };
            let mut f = Finding::new(
&INCIDENT,
                FindingKind::LatentRisk,
                confidence,
                format!(
                    "MASQUERADE on {} which carries {} IPv4 addresses; deleting one (a moving VIP) flushes all its NAT entries on kernel {kernel}",
                    dev.name,
                    addrs.len()
                ),
            )
            .with_evidence(config(&rule.source, Some(rule.line), &rule.text))
            .with_evidence(fact(format!("{}/ip-addr.json", ns.prefix()), format!("{}: {}", dev.name, addrs.join(", "))))
            .with_evidence(fact("node/kernel-release", versions::MASQUERADE_FLUSH_PER_ADDRESS.status(kernel)));
            f = f.because(match fixed {
                Some(false) => "the kernel predates the per-address flush fix and the device has more than one address",
                _ => "the kernel version could not be read, so whether it has the fix is unknown",
            });
            f = f.because("no address deletion was observed (that needs live RTM_DELADDR/conntrack events or a capture)");
            out.push(f);
        }
    }
}
