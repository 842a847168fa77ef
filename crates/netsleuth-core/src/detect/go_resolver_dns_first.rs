//! `go-resolver-dns-first` [seed 003]: a pure-Go resolver older than Go 1.16, in an image without
//! /etc/nsswitch.conf, asks DNS before /etc/hosts.

use crate::finding::Incident;
use crate::versions;

pub static INCIDENT: Incident = Incident {
    id: "go-resolver-dns-first",
    title: "Go program asks DNS for names that /etc/hosts answers",
    explanation: "Go's pure resolver (CGO off or netgo) decides the lookup order from /etc/nsswitch.conf. \
Before Go 1.16, when the file is missing (Alpine and distroless images), it used 'dns, then files', so \
every lookup of a name pinned in /etc/hosts went to DNS first, and inherited every DNS delay (including \
5 s conntrack-race timeouts). golang/go#35305 changed the default to files first.",
    remedy: "Rebuild the program with Go 1.16 or later, or add /etc/nsswitch.conf with 'hosts: files dns' \
to the image (or mount it).",
    sysctls: &[],
    versions: &[&versions::GO_FILES_FIRST_WITHOUT_NSSWITCH],
    evidence: "Container: no `/etc/nsswitch.conf`, a Go binary (its build info gives the Go version; \
pure-Go resolver when CGO is off or `netgo`), Go < 1.16 (golang/go#35305, fix c80022204e8f); the name is in \
`/etc/hosts`. Capture: DNS queries for names that `/etc/hosts` answers.",
};

use super::{with_packets, Context};
use crate::finding::{Confidence, Evidence, Finding, FindingKind};
use crate::flow::dns::FinishedQuery;
use crate::flow::PktRef;

/// With the client's /etc/hosts known (node facts or `--hosts`), recognises DNS queries for names
/// that the hosts file answers.
#[derive(Default)]
pub struct Detector {
    queries: Vec<(PktRef, Box<str>, u16, bool)>,
}

const MAX_KEEP: usize = 100_000;

impl Detector {
    pub fn query(&mut self, f: &FinishedQuery) {
        let q = &f.query;
        if self.queries.len() < MAX_KEEP && !q.is_retry {
            self.queries
                .push((q.pkt, q.qname.clone(), q.qtype, q.response.is_some()));
        }
    }

    pub fn finish(self, ctx: &Context<'_>, out: &mut Vec<Finding>) {
        if ctx.node.hosts.is_empty() {
            return self.finish_without_hosts(ctx, out);
        }
        let pinned = |name: &str| {
            let name = name.trim_end_matches('.');
            ctx.node
                .hosts
                .iter()
                .find(|(_, h)| h.trim_end_matches('.').eq_ignore_ascii_case(name))
        };
        let hits: Vec<_> = self
            .queries
            .iter()
            .filter_map(|q| pinned(&q.1).map(|h| (q, h)))
            .collect();
        let Some(((_, name, _, _), (ip, _))) = hits.first() else {
            return;
        };
        // A container without nsswitch.conf running a Go program that still asks DNS first is the asker.
        let fix = &versions::GO_FILES_FIRST_WITHOUT_NSSWITCH;
        let fixed_in = fix.mainline().unwrap_or("?");
        let old_go: Vec<(&str, &str, &str)> = ctx
            .node
            .resolvers
            .iter()
            .filter(|r| !r.has_nsswitch_conf)
            .flat_map(|r| {
                r.go_programs
                    .iter()
                    .map(move |(p, v)| (r.name.as_str(), p.as_str(), v.as_str()))
            })
            .filter(|(_, _, v)| fix.has(v) == Some(false))
            .collect();
        let confidence = if old_go.is_empty() {
            Confidence::Likely
        } else {
            Confidence::Confirmed
        };
        let mut f = Finding::new(
            &INCIDENT,
            FindingKind::Incident,
            confidence,
            format!("{} DNS queries for {name}, which /etc/hosts pins to {ip}", hits.len()),
        )
        .because(format!("a resolver that reads /etc/hosts first would never ask DNS for this name; one that asks DNS first does: Go's pure resolver before {fixed_in} in an image without /etc/nsswitch.conf"))
        ;
        if old_go.is_empty() {
            f = f.because("the program's Go version and the image's nsswitch.conf are node facts (netsleuth check reads them), not in the capture");
        } else {
            for (name, path, v) in old_go.iter().take(3) {
                f = f.with_evidence(Evidence::Fact {
                    source: ctx.node.source.clone(),
                    text: format!("{name}: {path} built with {v}, and no /etc/nsswitch.conf"),
                });
            }
            f = f.because(format!("the node runs a Go program older than {fixed_in} in a container without /etc/nsswitch.conf: its pure-Go resolver asks DNS first"));
        }
        let pkts: Vec<(PktRef, String)> = hits
            .iter()
            .take(4)
            .map(|((p, n, _, _), _)| (*p, format!("query for {n}")))
            .collect();
        f = f
            .rules_out(super::dns_upstream_unreachable::INCIDENT.id, "the name should never have been asked at all: whatever DNS answers, the resolver's order is the fault")
            .cannot_rule_out("hosts-file-missing", "the name may be absent from this container's /etc/hosts (a custom image, hostAliases not set): then asking DNS is correct; the container's hosts file (in a node bundle) decides");
        out.push(with_packets(
            f,
            ctx,
            &pkts,
            "DNS queries for a name pinned in /etc/hosts",
        ));
    }
}

/// `localhost` and its search-list expansions (`localhost.default.svc.cluster.local`, …).
fn is_localhost(name: &str) -> bool {
    let name = name.trim_end_matches('.');
    name.eq_ignore_ascii_case("localhost")
        || name
            .get(..10)
            .is_some_and(|p| p.eq_ignore_ascii_case("localhost."))
}

impl Detector {
    /// Without the client's hosts file: queries for `localhost`, which every hosts file answers, are
    /// the signature from the capture alone.
    fn finish_without_hosts(self, ctx: &Context<'_>, out: &mut Vec<Finding>) {
        let hits: Vec<_> = self.queries.iter().filter(|q| is_localhost(&q.1)).collect();
        let Some(first) = hits.first() else {
            return;
        };
        let clients: std::collections::BTreeSet<_> = hits.iter().map(|q| q.0.src.ip).collect();
        let f = Finding::new(
            &INCIDENT,
            FindingKind::Incident,
            Confidence::Possible,
            format!(
                "{} DNS quer(ies) for localhost or its search-list expansions (first: {}) left {}",
                hits.len(),
                first.1,
                clients
                    .iter()
                    .map(|c| c.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
        .because("every /etc/hosts maps localhost, so a resolver that reads the hosts file first never asks DNS for it; one that asks DNS first does: Go's pure resolver before 1.16 in an image without /etc/nsswitch.conf")
        .because("what would confirm it is not in a capture: the program's Go version and whether its image has /etc/nsswitch.conf (give --node with a bundle from `netsleuth collect`), or the container's hosts file (--hosts)")
        .cannot_rule_out("direct-dns-client", "a tool that queries DNS directly (dig, nslookup, a DNS library used on purpose) also asks for localhost");
        let pkts: Vec<(PktRef, String)> = hits
            .iter()
            .take(4)
            .map(|q| {
                (
                    q.0,
                    format!("DNS query for {}, which the hosts file answers", q.1),
                )
            })
            .collect();
        out.push(with_packets(
            f,
            ctx,
            &pkts,
            "queries for a name every hosts file resolves",
        ));
    }
}

impl super::CaptureDetector for Detector {
    fn query(&mut self, q: &FinishedQuery) {
        Detector::query(self, q)
    }

    fn finish_stands_alone(&self) -> bool {
        true
    }

    fn finish(
        self: Box<Self>,
        ctx: &Context<'_>,
        _explained: &[u64],
        out: &mut Vec<Finding>,
    ) -> Vec<u64> {
        Detector::finish(*self, ctx, out);
        Vec::new()
    }
}
