//! The words of each incident (title, mechanism, remedy) come from the core's catalogue
//! (`netsleuth_core::detect::<module>::INCIDENT`), so that the capture detectors and the node detectors
//! explain an incident the same way.

use netsleuth_core::Incident;

/// The catalogue entry for `id`.
///
/// Panics on an id that is not in the catalogue: every caller passes a literal id from incidents.md,
/// and the unit test below checks all of them.
pub fn incident(id: &str) -> &'static Incident {
    netsleuth_core::detect::incident(id).unwrap_or_else(|| panic!("no catalogue entry {id}"))
}

/// The ids this crate's detectors report.
pub const NODE_IDS: &[&str] = &[
    "conntrack-snat-remap",
    "conntrack-dnat-rebalance",
    "bridge-nf-bypass",
    "tw-recycle-paws",
    "snat-port-clash",
    "dns-conntrack-race",
    "go-resolver-dns-first",
    "dns-upstream-unreachable",
    "dns-id-collision",
    "listen-queue-overflow",
    "local-source-drop",
];

#[cfg(test)]
mod tests {
    #[test]
    fn every_node_id_is_in_the_catalogue() {
        for id in super::NODE_IDS {
            assert_eq!(super::incident(id).id, *id);
        }
    }
}
