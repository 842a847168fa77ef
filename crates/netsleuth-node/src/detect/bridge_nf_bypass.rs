//! `bridge-nf-bypass` in a node's state: bridge-nf-call-iptables off (or br_netfilter absent) while a
//! bridge carries veth ports; DNAT entries to Service VIPs stuck [UNREPLIED] make it an incident.

use super::evidence::{config, fact, reachable_services};
use super::Ctx;
use crate::facts::NetnsFacts;
use netsleuth_core::detect::bridge_nf_bypass::INCIDENT;
use netsleuth_core::versions;
use netsleuth_core::{Confidence, Finding, FindingKind};

pub(super) fn check(ctx: &Ctx, ns: &NetnsFacts, out: &mut Vec<Finding>) {
    let Some(links) = &ns.links else { return };
    let Some(sysctls) = &ns.sysctls else { return };
    let name = "net.bridge.bridge-nf-call-iptables";
    let setting = sysctls.get(name).map(String::as_str);
    let module_loaded = ctx
        .facts
        .modules
        .as_ref()
        .map(|m| m.iter().any(|x| x == "br_netfilter"));
    let off = match setting {
        Some(v) => v.trim() == "0",
        // No net.bridge tree at all: br_netfilter is not loaded (or built in and absent).
        None => module_loaded != Some(true),
    };
    if !off {
        return;
    }
    for br in links.iter().filter(|l| l.kind.as_deref() == Some("bridge")) {
        if br.bridge_nf_call_iptables == Some(true) {
            continue; // the bridge's own option turns it on for this bridge
        }
        let ports: Vec<&str> = links
            .iter()
            .filter(|l| {
                l.master.as_deref() == Some(br.name.as_str()) && l.kind.as_deref() == Some("veth")
            })
            .map(|l| l.name.as_str())
            .collect();
        if ports.is_empty() {
            continue;
        }
        let svcs = reachable_services(ctx, ns);
        let unreplied_vips: Vec<String> = ns
            .conntrack
            .iter()
            .flat_map(|c| c.destinations.iter())
            .filter(|d| {
                d.unreplied > 0
                    && !d.dnat_backends.is_empty()
                    && svcs.iter().any(|s| s.vip == d.dst)
            })
            .map(|d| {
                format!(
                    "{}:{} {} unreplied of {}",
                    d.dst,
                    d.dport.unwrap_or(0),
                    d.unreplied,
                    d.entries
                )
            })
            .collect();
        let (kind, confidence) = if !unreplied_vips.is_empty() {
            (FindingKind::Incident, Confidence::Likely)
        } else if !svcs.is_empty() {
            (FindingKind::LatentRisk, Confidence::Likely)
        } else {
            (FindingKind::LatentRisk, Confidence::Possible)
        };
        let why = match setting {
            Some(_) => format!("{name} = 0"),
            None => "br_netfilter is not loaded (no net.bridge sysctls)".to_string(),
        };
        let mut f = Finding::new(
            &INCIDENT,
            kind,
            confidence,
            format!(
                "{why} in {} while bridge {} carries {} veth port(s)",
                ns.id,
                br.name,
                ports.len()
            ),
        )
        .with_evidence(match setting {
            Some(v) => config(
                format!("{}/sysctl.txt", ns.prefix()),
                None,
                format!("{name} = {v}"),
            ),
            None => fact(
                "node/modules",
                "br_netfilter not loaded; /proc/sys/net/bridge absent",
            ),
        })
        .with_evidence(fact(
            format!("{}/ip-addr.json", ns.prefix()),
            format!(
                "bridge {} ports: {}",
                br.name,
                ports.iter().take(8).cloned().collect::<Vec<_>>().join(", ")
            ),
        ));
        for u in &unreplied_vips {
            f = f.with_evidence(fact(
                format!("{}/conntrack-summary.json", ns.prefix()),
                format!("DNAT entries {u}"),
            ));
        }
        if !unreplied_vips.is_empty() {
            f = f.because("DNATed entries to Service VIPs stay [UNREPLIED]: replies bypass conntrack, as bridged replies do");
        } else if svcs.is_empty() {
            f = f.because("no Service DNAT rules were seen, so same-bridge ClusterIP traffic may not exist here");
        } else {
            f = f.because("Service DNAT rules exist; a pod reaching a backend on the same bridge will get un-NATed replies");
        }
        let per_netns = versions::BRIDGE_NF_PER_NETNS.has(ctx.kernel().unwrap_or(""));
        if per_netns == Some(false) && !ns.is_node {
            f = f.because(
                "on this kernel the bridge-nf sysctls are global (one value for every namespace)",
            );
        }
        out.push(f);
    }
}
