//! Node detectors: pure functions from [`NodeFacts`] to findings.
//!
//! Two kinds, as the finding model says: an **incident** needs evidence that it is happening now (a
//! counter that rose between the two samples, a socket already idle past its NAT entry's life, a
//! nameserver that did not answer the probe); a **latent risk** is a configuration known to cause the
//! incident under some load. For a latent risk, the confidence says how many of the risk's conditions
//! were read from the node (`confirmed`: all; `likely`: the configuration, with the load unknown;
//! `possible`: some condition could not be read, e.g. an unreadable version).
//!
//! Invariant: a namespace with no rules, sockets, bridges or resolver files yields no finding.

mod bridge_nf_bypass;
mod conntrack_dnat_rebalance;
mod conntrack_invalid_reset;
mod conntrack_snat_remap;
mod conntrack_table_full;
mod dns_conntrack_race;
mod dns_id_collision;
mod dns_ndots_amplification;
mod dns_truncation_fallback;
mod dns_upstream_unreachable;
mod ephemeral_port_exhaustion;
mod evidence;
mod go_resolver_dns_first;
mod hairpin_off;
mod idle_timeout_reset;
mod ipvs_conn_reuse;
mod listen_queue_overflow;
mod local_source_drop;
mod neighbour_table_overflow;
mod overlay_mtu_blackhole;
mod rp_filter_drop;
mod snat_port_clash;
mod stale_udp_conntrack;
mod timewait_paws_reject;
mod tw_recycle_paws;
mod vxlan_checksum_offload;

use crate::facts::{NetnsFacts, NodeFacts, RootFacts};
use netsleuth_core::detect as core;
use netsleuth_core::{Finding, Incident};

#[derive(Debug, Clone)]
pub struct CheckOptions {
    /// Conntrack timeout assumed when the sysctl was not collected (kernel default 432000 s).
    pub default_tcp_timeout_established_s: u64,
    /// Established sockets idle less than this are not listed individually in dnat-rebalance evidence.
    pub min_listed_idle_ms: u64,
    /// Most evidence items per finding (the summary keeps the totals).
    pub max_evidence: usize,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            default_tcp_timeout_established_s: 432_000,
            min_listed_idle_ms: 0,
            max_evidence: 12,
        }
    }
}

pub(crate) struct Ctx<'a> {
    pub facts: &'a NodeFacts,
    pub opts: &'a CheckOptions,
}

impl Ctx<'_> {
    pub fn kernel(&self) -> Option<&str> {
        self.facts.kernel.as_deref()
    }

    pub fn node(&self) -> Option<&NetnsFacts> {
        self.facts.node_netns()
    }
}

/// What a node detector reads, and so how often it runs.
#[derive(Clone, Copy)]
enum Scope {
    /// Once per network namespace (its rules, links, sockets, counters).
    Netns(fn(&Ctx, &NetnsFacts, &mut Vec<Finding>)),
    /// Once per root filesystem: the node's and each container's (resolver files, libc, Go programs).
    Root(fn(&Ctx, &RootFacts, &mut Vec<Finding>)),
    /// Once per node, over all of its facts.
    Node(fn(&Ctx, &mut Vec<Finding>)),
    /// The incident leaves nothing in a node's state to read: a capture or the live kernel is its only
    /// evidence. Says why.
    #[allow(dead_code)] // every incident of today's catalogue has node evidence
    NoNodeEvidence(&'static str),
}

/// A registry entry: an incident and what the node's state can say about it.
pub struct NodeDetector {
    pub incident: &'static Incident,
    scope: Scope,
}

impl NodeDetector {
    /// Why a node's state cannot show the incident, for an incident whose entry says so.
    pub fn no_node_evidence(&self) -> Option<&'static str> {
        match self.scope {
            Scope::NoNodeEvidence(why) => Some(why),
            _ => None,
        }
    }
}

/// Every node detector, one per catalogue incident, in catalogue order.
pub static DETECTORS: &[NodeDetector] = &[
    NodeDetector {
        incident: &core::conntrack_snat_remap::INCIDENT,
        scope: Scope::Netns(conntrack_snat_remap::check),
    },
    NodeDetector {
        incident: &core::conntrack_dnat_rebalance::INCIDENT,
        scope: Scope::Netns(conntrack_dnat_rebalance::check),
    },
    NodeDetector {
        incident: &core::bridge_nf_bypass::INCIDENT,
        scope: Scope::Netns(bridge_nf_bypass::check),
    },
    NodeDetector {
        incident: &core::tw_recycle_paws::INCIDENT,
        scope: Scope::Netns(tw_recycle_paws::check),
    },
    NodeDetector {
        incident: &core::snat_port_clash::INCIDENT,
        scope: Scope::Netns(snat_port_clash::check),
    },
    NodeDetector {
        incident: &core::dns_conntrack_race::INCIDENT,
        scope: Scope::Root(dns_conntrack_race::check),
    },
    NodeDetector {
        incident: &core::go_resolver_dns_first::INCIDENT,
        scope: Scope::Root(go_resolver_dns_first::check),
    },
    NodeDetector {
        incident: &core::dns_upstream_unreachable::INCIDENT,
        scope: Scope::Node(dns_upstream_unreachable::check),
    },
    NodeDetector {
        incident: &core::dns_id_collision::INCIDENT,
        scope: Scope::Root(dns_id_collision::check),
    },
    NodeDetector {
        incident: &core::listen_queue_overflow::INCIDENT,
        scope: Scope::Netns(listen_queue_overflow::check),
    },
    NodeDetector {
        incident: &core::local_source_drop::INCIDENT,
        scope: Scope::Netns(local_source_drop::check),
    },
    NodeDetector {
        incident: &core::conntrack_table_full::INCIDENT,
        scope: Scope::Netns(conntrack_table_full::check),
    },
    NodeDetector {
        incident: &core::conntrack_invalid_reset::INCIDENT,
        scope: Scope::Netns(conntrack_invalid_reset::check),
    },
    NodeDetector {
        incident: &core::stale_udp_conntrack::INCIDENT,
        scope: Scope::Netns(stale_udp_conntrack::check),
    },
    NodeDetector {
        incident: &core::idle_timeout_reset::INCIDENT,
        scope: Scope::Netns(idle_timeout_reset::check),
    },
    NodeDetector {
        incident: &core::dns_ndots_amplification::INCIDENT,
        scope: Scope::Root(dns_ndots_amplification::check),
    },
    NodeDetector {
        incident: &core::hairpin_off::INCIDENT,
        scope: Scope::Netns(hairpin_off::check),
    },
    NodeDetector {
        incident: &core::rp_filter_drop::INCIDENT,
        scope: Scope::Netns(rp_filter_drop::check),
    },
    NodeDetector {
        incident: &core::dns_truncation_fallback::INCIDENT,
        scope: Scope::Netns(dns_truncation_fallback::check),
    },
    NodeDetector {
        incident: &core::overlay_mtu_blackhole::INCIDENT,
        scope: Scope::Node(overlay_mtu_blackhole::check),
    },
    NodeDetector {
        incident: &core::timewait_paws_reject::INCIDENT,
        scope: Scope::Netns(timewait_paws_reject::check),
    },
    NodeDetector {
        incident: &core::ephemeral_port_exhaustion::INCIDENT,
        scope: Scope::Netns(ephemeral_port_exhaustion::check),
    },
    NodeDetector {
        incident: &core::ipvs_conn_reuse::INCIDENT,
        scope: Scope::Netns(ipvs_conn_reuse::check),
    },
    NodeDetector {
        incident: &core::vxlan_checksum_offload::INCIDENT,
        scope: Scope::Netns(vxlan_checksum_offload::check),
    },
    NodeDetector {
        incident: &core::neighbour_table_overflow::INCIDENT,
        scope: Scope::Node(neighbour_table_overflow::check),
    },
];

/// What the node facts say of the host's neighbour tables (for the capture analysis).
pub(crate) fn neighbour_table(facts: &NodeFacts) -> Option<netsleuth_core::node::NeighbourTable> {
    neighbour_table_overflow::summary(facts)
}

/// Runs every detector. The order findings are made in does not matter: they are sorted at the end.
pub fn detect(facts: &NodeFacts, opts: &CheckOptions) -> Vec<Finding> {
    let ctx = Ctx { facts, opts };
    let mut out = Vec::new();
    for d in DETECTORS {
        match d.scope {
            Scope::Netns(check) => {
                for ns in &facts.namespaces {
                    check(&ctx, ns, &mut out);
                }
            }
            Scope::Root(check) => {
                for root in &facts.roots {
                    check(&ctx, root, &mut out);
                }
            }
            Scope::Node(check) => check(&ctx, &mut out),
            Scope::NoNodeEvidence(_) => {}
        }
    }
    for f in &mut out {
        f.evidence.truncate(opts.max_evidence.max(1));
    }
    netsleuth_core::finding::sort_findings(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_incident_has_one_node_entry() {
        for i in netsleuth_core::detect::CATALOGUE {
            let n = DETECTORS.iter().filter(|d| d.incident == *i).count();
            assert_eq!(n, 1, "{}: {n} node entries", i.id);
        }
        assert_eq!(DETECTORS.len(), netsleuth_core::detect::CATALOGUE.len());
    }
}
