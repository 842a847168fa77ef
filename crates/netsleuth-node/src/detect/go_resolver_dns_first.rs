//! `go-resolver-dns-first` in a node's state: Go programs whose resolver still asks DNS first, in a
//! root without /etc/nsswitch.conf.

use super::evidence::fact;
use super::Ctx;
use crate::facts::{Presence, RootFacts};
use crate::parse::resolver::custom_host_names;
use netsleuth_core::detect::go_resolver_dns_first::INCIDENT;
use netsleuth_core::versions;
use netsleuth_core::{Confidence, Finding, FindingKind};

pub(super) fn check(_ctx: &Ctx, root: &RootFacts, out: &mut Vec<Finding>) {
    if !matches!(root.nsswitch, Presence::Absent) {
        return;
    }
    for b in &root.go_binaries {
        if versions::GO_FILES_FIRST_WITHOUT_NSSWITCH.has(&b.info.go_version) != Some(false) {
            continue;
        }
        let custom = match &root.hosts {
            Presence::Present(h) => custom_host_names(h),
            _ => Vec::new(),
        };
        let cgo = b.info.cgo_enabled;
        let confidence = if !custom.is_empty() && cgo != Some(true) {
            Confidence::Likely
        } else {
            Confidence::Possible
        };
        let mut f = Finding::new(
&INCIDENT,
            FindingKind::LatentRisk,
            confidence,
            format!("{}: {} built with {} and no /etc/nsswitch.conf: names in /etc/hosts are asked of DNS first", root.describe(), b.path, b.info.go_version),
        )
        .with_evidence(fact(format!("{}/go-binaries.json", root.prefix()), format!("{} (pid {}): {}", b.path, b.pid.unwrap_or(0), b.info.go_version)))
        .with_evidence(fact(format!("{}/etc/nsswitch.conf", root.prefix()), "absent"))
        .with_evidence(fact("versions", versions::GO_FILES_FIRST_WITHOUT_NSSWITCH.status(&b.info.go_version)));
        if !custom.is_empty() {
            f = f.with_evidence(fact(
                format!("{}/etc/hosts", root.prefix()),
                format!("pinned names: {}", custom.join(", ")),
            ));
        } else {
            f = f.because(
                "/etc/hosts pins no names beyond localhost, so the wrong order may not matter yet",
            );
        }
        match cgo {
            Some(true) => f = f.because("built with cgo: the libc resolver may be used instead of the pure-Go one"),
            Some(false) => {}
            None => f = f.because("this Go version does not record CGO_ENABLED; the pure-Go resolver is the default on Linux"),
        }
        out.push(f);
    }
}
