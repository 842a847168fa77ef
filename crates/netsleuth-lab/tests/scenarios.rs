//! Every lab scenario on the running kernel: the incident reproduces (the application sees its
//! symptom), the analysis names the right id with at least the expected confidence, and the mitigated
//! run shows neither symptom nor incident finding. Healthy traffic gives no incident finding.
//!
//! Needs root and the lab's tools; without them each test prints why and passes without running
//! (CI runs as root with the tools installed). Scenarios run one at a time (a global lock): they are
//! timing-sensitive and the machine has two cores.
//!
//! `LAB_RUNS=N cargo test -p netsleuth-lab --test scenarios -- --ignored reproduction_rate` runs every
//! scenario N times and prints the reproduction rate and wall times.

use netsleuth_core::{Confidence, FindingKind};
use netsleuth_lab::{run, LabError, RunOptions, RunReport};
use std::ops::Deref;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

static SERIAL: Mutex<()> = Mutex::new(());

/// Expected finding per scenario: (scenario, id, minimum confidence).
const EXPECTED: &[(&str, &str, Confidence)] = &[
    (
        "conntrack-snat-remap",
        "conntrack-snat-remap",
        Confidence::Confirmed,
    ),
    (
        "conntrack-dnat-rebalance",
        "conntrack-dnat-rebalance",
        Confidence::Confirmed,
    ),
    (
        "bridge-nf-bypass",
        "bridge-nf-bypass",
        Confidence::Confirmed,
    ),
    ("tw-recycle-paws", "tw-recycle-paws", Confidence::Likely),
    ("snat-port-clash", "snat-port-clash", Confidence::Likely),
    (
        "dns-conntrack-race",
        "dns-conntrack-race",
        Confidence::Likely,
    ),
    (
        "go-resolver-dns-first",
        "go-resolver-dns-first",
        Confidence::Likely,
    ),
    (
        "dns-upstream-unreachable",
        "dns-upstream-unreachable",
        Confidence::Likely,
    ),
    ("dns-id-collision", "dns-id-collision", Confidence::Likely),
    (
        "listen-queue-overflow",
        "listen-queue-overflow",
        Confidence::Likely,
    ),
    ("local-source-drop", "local-source-drop", Confidence::Likely),
    (
        "conntrack-table-full",
        "conntrack-table-full",
        Confidence::Likely,
    ),
    (
        "conntrack-invalid-reset",
        "conntrack-invalid-reset",
        Confidence::Likely,
    ),
    (
        "stale-udp-conntrack",
        "stale-udp-conntrack",
        Confidence::Likely,
    ),
    (
        "idle-timeout-reset",
        "idle-timeout-reset",
        Confidence::Likely,
    ),
    (
        "dns-ndots-amplification",
        "dns-ndots-amplification",
        Confidence::Likely,
    ),
    ("hairpin-off", "hairpin-off", Confidence::Likely),
    ("rp-filter-drop", "rp-filter-drop", Confidence::Likely),
    (
        "neighbour-table-overflow",
        "neighbour-table-overflow",
        Confidence::Likely,
    ),
    (
        "dns-truncation-fallback",
        "dns-truncation-fallback",
        Confidence::Likely,
    ),
    (
        "overlay-mtu-blackhole",
        "overlay-mtu-blackhole",
        Confidence::Likely,
    ),
    (
        "timewait-paws-reject",
        "timewait-paws-reject",
        Confidence::Confirmed,
    ),
    (
        "ephemeral-port-exhaustion",
        "ephemeral-port-exhaustion",
        Confidence::Confirmed,
    ),
    // The lab's kernel (≥ 5.9) has the IPVS fix: its node facts keep the emulated drop at likely.
    ("ipvs-conn-reuse", "ipvs-conn-reuse", Confidence::Likely),
    (
        "vxlan-checksum-offload",
        "vxlan-checksum-offload",
        Confidence::Likely,
    ),
];

/// Why the lab cannot run here, if it cannot.
fn unavailable() -> Option<String> {
    netsleuth_lab::preflight().err().map(|e| e.to_string())
}

/// A run's output folder in the temp dir: removed when the test is done with it, kept (and named) when
/// the test failed, for inspection.
struct OutDir(PathBuf);

impl Drop for OutDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("lab output kept for inspection: {}", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A finished run and its output folder (removed with it).
struct Run {
    report: RunReport,
    _out: OutDir,
}

impl Deref for Run {
    type Target = RunReport;
    fn deref(&self) -> &RunReport {
        &self.report
    }
}

/// Runs a scenario; `None` (with the reason printed) when this kernel lacks a feature it needs, e.g.
/// br_netfilter for bridge-nf-bypass where `modprobe br_netfilter` could not load it.
fn run_scenario(name: &str, mitigated: bool) -> Option<Run> {
    // A directory of its own for each run: a retried scenario's earlier run is dropped (and its
    // directory removed) only once the next one has written its artifacts.
    static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "netsleuth-lab-test-{name}{}-{}-{}",
        if mitigated { "-mitigated" } else { "" },
        std::process::id(),
        RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    let out = OutDir(dir.clone());
    let opts = RunOptions {
        mitigated,
        out_dir: Some(dir),
        ..Default::default()
    };
    let report = match run(name, &opts) {
        Ok(r) => r,
        Err(e @ LabError::MissingKernelFeature { .. }) => {
            eprintln!("SKIP: lab scenario {name} cannot run on this kernel: {e}");
            return None;
        }
        Err(e) => panic!("lab run {name} (mitigated={mitigated}) failed: {e}"),
    };
    eprintln!("{}", report.render_text());
    if let Some(a) = &report.analysis {
        for f in &a.findings {
            eprintln!(
                "  finding: {} {:?} {:?}: {}",
                f.id, f.kind, f.confidence, f.summary
            );
        }
    }
    assert!(
        report.wall_time < Duration::from_secs(30),
        "{name} took {:?} (budget 30 s)",
        report.wall_time
    );
    for ns in &report.namespaces {
        assert!(
            !std::path::Path::new("/run/netns").join(ns).exists(),
            "namespace {ns} left behind"
        );
    }
    Some(Run { report, _out: out })
}

fn incident_findings(r: &RunReport) -> Vec<(String, Confidence)> {
    r.analysis
        .as_ref()
        .map(|a| {
            a.findings
                .iter()
                .filter(|f| f.kind == FindingKind::Incident)
                .map(|f| (f.id.to_string(), f.confidence))
                .collect()
        })
        .unwrap_or_default()
}

/// Runs of an incident scenario before its failure to reproduce fails the test.
const INCIDENT_RUNS: usize = 3;

/// The symptom part: the application saw it, and the mitigated run did not.
fn check_symptoms(name: &str) -> Option<(Run, Run)> {
    if let Some(why) = unavailable() {
        eprintln!("skipping lab scenario {name}: {why}");
        return None;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // A reproduction on the running kernel depends on timing (a conntrack entry expiring within
    // the fill, a TIME_WAIT socket reaped early when the machine is slow): up to three runs, as
    // `write_fixture_runs` allows, each failed one printed. The mitigated run below gets one.
    let mut incident = run_scenario(name, false)?;
    for attempt in 2..=INCIDENT_RUNS {
        if incident.symptom_seen {
            break;
        }
        eprintln!(
            "{name}: run {} did not reproduce ({}); run {attempt} of {INCIDENT_RUNS}",
            attempt - 1,
            incident.outcome
        );
        incident = run_scenario(name, false)?;
    }
    assert!(
        incident.symptom_seen,
        "{name}: the incident did not reproduce in {INCIDENT_RUNS} runs: {}",
        incident.outcome
    );
    for kind in [
        netsleuth_lab::ArtifactKind::NodeCapture,
        netsleuth_lab::ArtifactKind::ClientCapture,
    ] {
        let a = incident
            .artifact(kind)
            .unwrap_or_else(|| panic!("{name}: no {kind:?}"));
        let len = std::fs::metadata(&a.path).map(|m| m.len()).unwrap_or(0);
        assert!(len > 24, "{name}: {kind:?} {} is empty", a.path.display());
    }
    let mitigated = run_scenario(name, true)?;
    assert!(
        !mitigated.symptom_seen,
        "{name} --mitigated still shows the symptom: {}",
        mitigated.outcome
    );
    Some((incident, mitigated))
}

/// The analysis part: the run's verdict, and the right id at the expected confidence; nothing when
/// mitigated.
fn check_analysis(name: &str, incident: &RunReport, mitigated: &RunReport) {
    for r in [incident, mitigated] {
        let v = r.verdict();
        assert!(v.proven, "{name}: not proven: {}", v.why);
    }
    let (_, id, min) = EXPECTED
        .iter()
        .find(|e| e.0 == name)
        .expect("expectation listed");
    let found = incident_findings(incident);
    assert!(
        found.iter().any(|(fid, c)| fid == id && c >= min),
        "{name}: analysis should name {id} with confidence ≥ {min:?}; it found {found:?}"
    );
    let after = incident_findings(mitigated);
    assert!(
        after.is_empty(),
        "{name} --mitigated: analysis still reports incidents {after:?}"
    );
}

macro_rules! scenario_tests {
    ($($test:ident => $name:literal),* $(,)?) => {$(
        #[test]
        fn $test() {
            let Some((incident, mitigated)) = check_symptoms($name) else { return };
            check_analysis($name, &incident, &mitigated);
        }
    )*};
}

scenario_tests! {
    conntrack_snat_remap => "conntrack-snat-remap",
    conntrack_dnat_rebalance => "conntrack-dnat-rebalance",
    bridge_nf_bypass => "bridge-nf-bypass",
    tw_recycle_paws => "tw-recycle-paws",
    snat_port_clash => "snat-port-clash",
    dns_conntrack_race => "dns-conntrack-race",
    go_resolver_dns_first => "go-resolver-dns-first",
    dns_upstream_unreachable => "dns-upstream-unreachable",
    dns_id_collision => "dns-id-collision",
    listen_queue_overflow => "listen-queue-overflow",
    local_source_drop => "local-source-drop",
    conntrack_table_full => "conntrack-table-full",
    conntrack_invalid_reset => "conntrack-invalid-reset",
    stale_udp_conntrack => "stale-udp-conntrack",
    idle_timeout_reset => "idle-timeout-reset",
    dns_ndots_amplification => "dns-ndots-amplification",
    hairpin_off => "hairpin-off",
    rp_filter_drop => "rp-filter-drop",
    neighbour_table_overflow => "neighbour-table-overflow",
    dns_truncation_fallback => "dns-truncation-fallback",
    overlay_mtu_blackhole => "overlay-mtu-blackhole",
    timewait_paws_reject => "timewait-paws-reject",
    ephemeral_port_exhaustion => "ephemeral-port-exhaustion",
    ipvs_conn_reuse => "ipvs-conn-reuse",
    vxlan_checksum_offload => "vxlan-checksum-offload",
}

#[test]
fn healthy_traffic_gives_no_incident() {
    if let Some(why) = unavailable() {
        eprintln!("skipping lab scenario healthy: {why}");
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(r) = run_scenario("healthy", false) else {
        return;
    };
    assert!(
        !r.symptom_seen,
        "healthy scenario misbehaved: {}",
        r.outcome
    );
    let found = incident_findings(&r);
    assert!(
        found.is_empty(),
        "healthy traffic produced incident findings {found:?}"
    );
    let v = r.verdict();
    assert!(v.proven, "healthy: not proven: {}", v.why);
}

#[test]
fn every_scenario_is_listed_with_its_reproduction() {
    let names: Vec<_> = netsleuth_lab::scenarios().iter().map(|s| s.name).collect();
    for (name, id, _) in EXPECTED {
        assert!(names.contains(name), "{name} missing from scenarios()");
        assert_eq!(
            netsleuth_lab::scenario(name)
                .unwrap()
                .incident
                .map(|i| i.id),
            Some(*id)
        );
    }
    assert!(names.contains(&"healthy"));
    assert_eq!(names.len(), EXPECTED.len() + 1);
    assert!(netsleuth_lab::run("no-such-scenario", &RunOptions::default()).is_err());
}

/// Reproduction rate and wall time per scenario over `LAB_RUNS` runs (default 10).
#[test]
#[ignore = "slow: runs every scenario many times"]
fn reproduction_rate() {
    if let Some(why) = unavailable() {
        eprintln!("skipping: {why}");
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let runs: usize = std::env::var("LAB_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let only = std::env::var("LAB_ONLY").ok();
    let mut table = Vec::new();
    for s in netsleuth_lab::scenarios() {
        if only
            .as_deref()
            .is_some_and(|o| !o.split(',').any(|x| x == s.name))
        {
            continue;
        }
        for mitigated in [false, true] {
            if s.incident.is_none() && mitigated {
                continue;
            }
            let (mut good, mut times, mut errors) = (0, Vec::new(), Vec::new());
            for _ in 0..runs {
                let dir =
                    std::env::temp_dir().join(format!("netsleuth-lab-rate-{}", std::process::id()));
                let _ = std::fs::remove_dir_all(&dir);
                let opts = RunOptions {
                    mitigated,
                    out_dir: Some(dir.clone()),
                    skip_analysis: true,
                    ..Default::default()
                };
                match run(s.name, &opts) {
                    Ok(r) => {
                        let verdict = r.verdict();
                        good += usize::from(verdict.proven);
                        times.push(r.wall_time.as_secs_f64());
                        if !verdict.proven {
                            errors.push(format!("{}: {}", verdict.why, r.outcome));
                        }
                    }
                    Err(e) => errors.push(e.to_string()),
                }
                let _ = std::fs::remove_dir_all(&dir);
            }
            let max = times.iter().cloned().fold(0.0, f64::max);
            let mean = times.iter().sum::<f64>() / times.len().max(1) as f64;
            let line = format!(
                "{:<26} {:<10} as expected {good}/{runs}  wall mean {mean:.1} s max {max:.1} s",
                s.name,
                if mitigated { "mitigated" } else { "incident" }
            );
            eprintln!("{line}");
            for e in &errors {
                eprintln!("    {e}");
            }
            table.push((line, good, runs));
        }
    }
    eprintln!(
        "\n{}",
        table
            .iter()
            .map(|t| t.0.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        table.iter().all(|(_, good, runs)| good * 10 >= runs * 9),
        "a scenario is below 9/10"
    );
}

/// `LAB_DEBUG=SCENARIO [LAB_MITIGATED=1] cargo test -p netsleuth-lab --test scenarios -- --ignored debug_one
/// --nocapture`: one run, namespaces kept for `ip netns exec` (remove them with `ip netns del` or the
/// next run's stale cleanup).
#[test]
#[ignore = "manual debugging aid"]
fn debug_one() {
    let Ok(name) = std::env::var("LAB_DEBUG") else {
        return;
    };
    let mitigated = std::env::var("LAB_MITIGATED").is_ok();
    let dir = std::env::temp_dir().join(format!("netsleuth-lab-debug-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    let opts = RunOptions {
        mitigated,
        out_dir: Some(dir),
        keep: true,
        ..Default::default()
    };
    let r = run(&name, &opts).expect("run");
    eprintln!("{}", r.render_text());
}

/// Used by `scripts/regen-lab-fixtures.sh`: runs every scenario (incident and mitigated; healthy once)
/// into `$LAB_FIXTURES_OUT/runs/<scenario>[-mitigated]`, retrying a run that did not behave as
/// expected (up to three times) so that fixtures always show what their name says.
#[test]
#[ignore = "run by scripts/regen-lab-fixtures.sh"]
fn write_fixture_runs() {
    let Ok(out) = std::env::var("LAB_FIXTURES_OUT") else {
        return;
    };
    if let Some(why) = unavailable() {
        panic!("cannot regenerate lab fixtures: {why}");
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let only = std::env::var("LAB_ONLY")
        .ok()
        .filter(|s| !s.trim().is_empty());
    for s in netsleuth_lab::scenarios() {
        if only
            .as_deref()
            .is_some_and(|o| !o.split_whitespace().any(|x| x == s.name))
        {
            continue;
        }
        for mitigated in [false, true] {
            if s.incident.is_none() && mitigated {
                continue;
            }
            let name = format!("{}{}", s.name, if mitigated { "-mitigated" } else { "" });
            let dir = std::path::Path::new(&out).join("runs").join(&name);
            let mut ok = false;
            for _ in 0..3 {
                let _ = std::fs::remove_dir_all(&dir);
                let opts = RunOptions {
                    mitigated,
                    out_dir: Some(dir.clone()),
                    skip_analysis: true,
                    ..Default::default()
                };
                let r = run(s.name, &opts).unwrap_or_else(|e| panic!("{name}: {e}"));
                eprintln!("{name}: {}", r.outcome);
                if r.verdict().proven {
                    ok = true;
                    break;
                }
            }
            assert!(ok, "{name} did not behave as expected in three runs");
        }
    }
}
