//! The real captures of ../shared/field (other people's networks, see its README): most are traffic
//! that looks alarming to a naive detector and must stay quiet; a few show a mechanism in the wild, for
//! which the README names what is acceptable. Also: what each must report as symptoms or blind spots.

use netsleuth_core::node::NodeContext;
use netsleuth_core::{analyze, Analysis, Confidence, FindingKind, Input};
use std::path::{Path, PathBuf};

fn field_dir() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/field");
    if dir.is_dir() {
        return Some(dir);
    }
    assert!(
        std::env::var("CI").is_err(),
        "../shared/field is missing next to the workspace ({}): under CI this test must run",
        dir.display()
    );
    eprintln!("skipping: {} not found", dir.display());
    None
}

fn run(path: &Path) -> Analysis {
    analyze(
        vec![Input::stream(
            path.display().to_string(),
            Box::new(std::fs::File::open(path).unwrap()),
        )],
        &NodeContext::default(),
    )
}

/// What the field README accepts for each capture (at most `possible`); every other capture must give
/// no incident finding.
const ACCEPTABLE: &[(&str, &[&str])] = &[
    // The conntrack insertion race in a real trace (not DNS): a clash or race at `possible` is fine.
    ("x01-", &["snat-port-clash", "dns-conntrack-race"]),
    ("x02-", &["snat-port-clash", "dns-conntrack-race"]),
    ("x03-", &["snat-port-clash", "dns-conntrack-race"]),
    // x07 really shows timewait-paws-reject (a SYN rejected by the server's TIME_WAIT socket): that
    // finding is required and checked by `x07_is_a_timewait_paws_reject` below, at any confidence.
    ("x07-", &[]),
];

/// What a field capture really shows, at the confidence its evidence supports: allowed above
/// `possible` and required.
const REQUIRED: &[(&str, &str, Confidence)] = &[(
    "x07-nat-shared-port-timewait-paws.pcap",
    "timewait-paws-reject",
    Confidence::Confirmed,
)];

#[test]
fn field_captures_give_no_false_incident() {
    let Some(dir) = field_dir() else { return };
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "pcap" || e == "pcapng"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 14,
        "expected the 14 field captures in {}",
        dir.display()
    );
    let mut bad = Vec::new();
    for f in &files {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        let allowed: &[&str] = ACCEPTABLE
            .iter()
            .find(|(p, _)| name.starts_with(p))
            .map(|(_, ids)| *ids)
            .unwrap_or(&[]);
        let a = run(f);
        let required: Vec<&str> = REQUIRED
            .iter()
            .filter(|(file, _, _)| name == *file)
            .map(|(_, id, _)| *id)
            .collect();
        for finding in a
            .findings
            .iter()
            .filter(|x| x.kind == FindingKind::Incident && !required.contains(&x.id))
        {
            if !allowed.contains(&finding.id) || finding.confidence > Confidence::Possible {
                bad.push(format!(
                    "{name}: {} {:?}: {}",
                    finding.id, finding.confidence, finding.summary
                ));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "false incident findings:\n{}",
        bad.join("\n")
    );
}

#[test]
fn field_captures_report_their_symptoms_and_blind_spots() {
    let Some(dir) = field_dir() else { return };
    // x08: RST after FIN is a symptom with a healthy explanation, not a finding.
    let a = run(&dir.join("x08-rst-after-fin-healthy.pcap"));
    let resets = a
        .symptoms
        .iter()
        .find(|s| s.considered.iter().any(|c| c.id == "application"));
    assert!(
        resets.is_some_and(|s| s.summary.contains("after a FIN")),
        "{:#?}",
        a.symptoms
    );
    // x09: the last query is unanswered only because the capture ends: a blind spot, not a symptom.
    let a = run(&dir.join("x09-dns-last-query-at-capture-end.pcap"));
    assert!(
        a.blind_spots
            .iter()
            .any(|b| b.what.contains("before the capture ended")),
        "{:#?}",
        a.blind_spots
    );
    assert!(a.symptoms.is_empty(), "{:#?}", a.symptoms);
    // x11: a SYN retransmitted after 1 s then answered: a symptom with the causes considered.
    let a = run(&dir.join("x11-syn-retransmit-1s-then-ok.pcap"));
    assert!(
        a.symptoms
            .iter()
            .any(|s| s.summary.contains("retransmit their SYN") && !s.considered.is_empty()),
        "{:#?}",
        a.symptoms
    );
}

/// x04 is a real search-list walk (ndots:5: `example.com` asked under three search domains, six
/// NXDOMAINs, then answered, all within 4 ms). It is the one field capture that shows
/// dns-ndots-amplification, and only as a latent risk: the walk cost queries, not time.
#[test]
fn x04_search_list_walk_is_a_latent_ndots_risk_not_an_incident() {
    let Some(dir) = field_dir() else { return };
    let a = run(&dir.join("x04-k8s-pod-dns-ndots5-healthy.pcapng"));
    let got: Vec<_> = a
        .findings
        .iter()
        .map(|f| (f.id, f.kind, f.confidence))
        .collect();
    assert_eq!(
        got,
        vec![(
            "dns-ndots-amplification",
            FindingKind::LatentRisk,
            Confidence::Likely
        )],
        "{:#?}",
        a.findings
    );
    assert!(a.findings[0].summary.contains("8 queries where 2 would do"));
}

/// x07 (bonnefoa/flowstats reuse_port.pcap): two hosts share 10.1.192.218:27049; the SYN of frame 15
/// carries TSval 1352082400, behind the 1677679109 the server's TIME_WAIT socket holds from the
/// connection it closed first (frames 8–14); the server answers with a bare ACK of that connection
/// (frame 16), the client resets it (17) and retries 1.0 s later (18), answered (19). That is
/// timewait-paws-reject, confirmed; tw-recycle-paws (a silent drop) must not be named.
#[test]
fn x07_is_a_timewait_paws_reject() {
    let Some(dir) = field_dir() else { return };
    for (file, id, confidence) in REQUIRED {
        let a = run(&dir.join(file));
        let f = a
            .findings
            .iter()
            .find(|f| f.id == *id && f.kind == FindingKind::Incident)
            .unwrap_or_else(|| panic!("{file}: no {id} finding: {:#?}", a.findings));
        assert_eq!(f.confidence, *confidence, "{file}: {f:#?}");
        let frames: Vec<u64> = f
            .evidence
            .iter()
            .flat_map(|e| match e {
                netsleuth_core::Evidence::Packets { frames, .. } => {
                    frames.iter().map(|fr| fr.frame).collect::<Vec<_>>()
                }
                _ => Vec::new(),
            })
            .collect();
        for n in [15, 16, 17, 18] {
            assert!(
                frames.contains(&n),
                "{file}: frame {n} not in the evidence: {frames:?}"
            );
        }
        assert!(
            f.look_alikes
                .iter()
                .any(|l| l.id == "tw-recycle-paws" && l.ruled_out),
            "{f:#?}"
        );
        assert!(
            !a.findings.iter().any(|f| f.id == "tw-recycle-paws"),
            "{file}: tw-recycle-paws must not fire on a SYN answered by TIME_WAIT: {:#?}",
            a.findings
        );
    }
}
