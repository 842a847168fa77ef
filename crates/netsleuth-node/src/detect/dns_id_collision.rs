//! `dns-id-collision` in a node's state: musl without distinct query IDs in a root that resolves names.

use super::evidence::fact;
use super::Ctx;
use crate::facts::RootFacts;
use netsleuth_core::detect::dns_id_collision::INCIDENT;
use netsleuth_core::versions;
use netsleuth_core::{Confidence, Finding, FindingKind};

pub(super) fn check(_ctx: &Ctx, root: &RootFacts, out: &mut Vec<Finding>) {
    let Some(l) = &root.libc else { return };
    if l.kind != "musl" {
        return;
    }
    let Some(rc) = root.resolv.present() else {
        return;
    };
    if rc.nameservers.is_empty() {
        return;
    }
    let fix = &versions::MUSL_DNS_ID_UNIQUE;
    let (confidence, old) = match l.version.as_deref() {
        Some(v) => match fix.has(v) {
            Some(false) => (Confidence::Likely, true),
            Some(true) => return,
            None => (Confidence::Possible, true),
        },
        None => (Confidence::Possible, true),
    };
    if !old {
        return;
    }
    let mut f = Finding::new(
        &INCIDENT,
        FindingKind::LatentRisk,
        confidence,
        format!(
            "{}: musl {} (< {}) can give parallel A and AAAA queries the same DNS ID",
            root.describe(),
            l.version.as_deref().unwrap_or("of unknown version"),
            fix.mainline().unwrap_or("?")
        ),
    )
    .with_evidence(fact(
        format!("{}/libc.json", root.prefix()),
        format!(
            "musl {} ({})",
            l.version.as_deref().unwrap_or("?"),
            l.evidence
        ),
    ))
    .with_evidence(fact(
        "versions",
        fix.status(l.version.as_deref().unwrap_or("?")),
    ));
    f = f.because("whether IDs collide depends on the hardware's clock; a capture showing A and AAAA with one ID confirms it");
    if l.version.is_none() {
        f = f.because("the musl version could not be read from the image");
    }
    out.push(f);
}
