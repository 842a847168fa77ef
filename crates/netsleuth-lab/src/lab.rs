//! One run of one scenario: the run directory, the scene (see [`crate::scene`]), and the order of
//! teardown (recorders stop before the namespaces they run in are removed).

use crate::counters;
use crate::dropmon::DropReasons;
use crate::error::{LabError, Result};
use crate::kube::Rules;
use crate::netns::Netns;
use crate::observe::Recording;
use crate::report::{Artifact, ArtifactKind, Measurement, RunReport};
use crate::scene::Recorded;
use crate::{registry, RunOptions, ScenarioInfo};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// What the application saw, as a scenario reports it.
#[derive(Debug, Default)]
pub struct Outcome {
    /// The symptom, if the application saw it (one line, with numbers).
    pub symptom: Option<String>,
    /// What happened when there was no symptom (one line, with numbers).
    pub fine: String,
    pub events: Vec<String>,
    pub measurements: Vec<Measurement>,
}

impl Outcome {
    pub fn event(&mut self, e: impl Into<String>) {
        self.events.push(e.into());
    }

    pub fn measure(&mut self, name: impl Into<String>, value: f64, unit: &'static str) {
        self.measurements.push(Measurement::new(name, value, unit));
    }
}

pub struct Lab {
    pub info: &'static ScenarioInfo,
    pub mitigated: bool,
    pub out: PathBuf,
    /// Run `netsleuth watch` on the run's namespaces while it happens (`lab run --watch`).
    pub watch: bool,
    notes: Vec<String>,
    artifacts: Vec<Artifact>,
    emulated_sysctls: BTreeMap<String, String>,
}

static RUN_COUNTER: AtomicU64 = AtomicU64::new(0);

impl Lab {
    pub fn note(&mut self, n: impl Into<String>) {
        self.notes.push(n.into());
    }

    /// A sysctl this kernel lacks that the scenario plays (tcp_tw_recycle): the node facts the
    /// analysis reads carry it, as the old kernel's node would show it.
    pub fn emulated_sysctl(&mut self, key: &str, value: &str) {
        self.emulated_sysctls.insert(key.into(), value.into());
    }

    /// Writes `contents` to `rel` under the run directory and lists it as an artifact.
    pub fn write_file(
        &mut self,
        rel: &str,
        contents: &str,
        kind: ArtifactKind,
        description: &str,
    ) -> Result<PathBuf> {
        let path = self.out.join(rel);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| LabError::file("creating directory", dir, e))?;
        }
        std::fs::write(&path, contents).map_err(|e| LabError::file("writing", &path, e))?;
        self.artifacts.push(Artifact {
            kind,
            path: path.clone(),
            description: description.into(),
        });
        Ok(path)
    }

    /// Loads kube-proxy-style rules into the node namespace and keeps their text in the run directory.
    pub(crate) fn apply_rules(&mut self, node: &Netns, rules: &Rules) -> Result<()> {
        let text = rules.apply(node)?;
        self.write_file(
            "node/iptables-restore.txt",
            &text,
            ArtifactKind::NodeState,
            "the rules the lab loaded (kube-proxy style)",
        )?;
        Ok(())
    }

    /// Keeps the recorders' files and writes the counters: returns the deltas, the counters that
    /// could not be read, and the drop reasons.
    fn keep_recording(
        &mut self,
        rec: Recording,
    ) -> Result<(Vec<counters::CounterDelta>, Vec<String>, DropReasons)> {
        let Recording {
            artifacts,
            before,
            after,
            drops,
            watch: _,
        } = rec;
        self.artifacts.extend(artifacts);
        let deltas = counters::deltas(&before, &after);
        let mut unavailable = after.unavailable.clone();
        unavailable.dedup();
        for (label, snap) in [("before", &before), ("after", &after)] {
            for (source, text) in &snap.raw {
                let rel = format!(
                    "counters/{label}/{}",
                    source.replace(": ", "_").replace(['/', ' '], "_")
                );
                let path = self.out.join(rel);
                if let Some(d) = path.parent() {
                    let _ = std::fs::create_dir_all(d);
                }
                let _ = std::fs::write(path, text);
            }
        }
        let summary = serde_json::json!({
            "before": before.values,
            "after": after.values,
            "deltas": deltas,
            "unavailable": unavailable,
            "drop_reasons": drops,
        });
        self.write_file(
            "counters.json",
            &serde_json::to_string_pretty(&summary).unwrap_or_default(),
            ArtifactKind::Counters,
            "counters before/after/deltas (conntrack -S, /proc/net/netstat+snmp per namespace, rt_cache), drop reasons; raw texts in counters/",
        )?;
        Ok((deltas, unavailable, drops))
    }
}

/// Runs `info`'s scenario end to end.
pub fn run(info: &'static ScenarioInfo, opts: &RunOptions) -> Result<RunReport> {
    let started = Instant::now();
    let n = RUN_COUNTER.fetch_add(1, Ordering::Relaxed);
    let out = match &opts.out_dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!(
            "netsleuth-lab-{}{}-{}-{n}",
            info.name,
            if opts.mitigated { "-mitigated" } else { "" },
            std::process::id()
        )),
    };
    std::fs::create_dir_all(&out)
        .map_err(|e| LabError::file("creating the run directory", &out, e))?;
    let mut lab = Lab {
        info,
        mitigated: opts.mitigated,
        out: out.clone(),
        watch: opts.watch,
        notes: Vec::new(),
        artifacts: Vec::new(),
        emulated_sysctls: BTreeMap::new(),
    };
    if let crate::Reproduction::Emulated { why, how } = info.reproduction {
        lab.note(format!("EMULATED on this kernel: {why} The lab {how}"));
    }
    if opts.mitigated {
        lab.note(format!("mitigated: {}", info.mitigation));
    }
    let recorded = crate::scenarios::drive(&mut lab);
    if let Some(sig) = registry::interrupted() {
        return Err(LabError::Interrupted(sig));
    }
    let Recorded {
        outcome,
        obs,
        mut topo,
    } = recorded?;
    let node_role = obs.node_role.clone();
    let recording = obs.stop(&topo);
    let watch = recording.watch.clone();
    let (counter_deltas, counters_unavailable, drop_reasons) = lab.keep_recording(recording)?;
    let facts = crate::facts::collect(&topo, &node_role, &lab.out, &lab.emulated_sysctls)?;
    lab.artifacts.extend(facts.artifacts);
    for (k, v) in &lab.emulated_sysctls {
        // Host-wide sysctls exist on this kernel, in the initial namespace only: the lab plays them.
        lab.notes.push(if k.starts_with("net.ipv4.neigh.default.") || k.starts_with("net.ipv6.neigh.default.") {
            format!("node facts: {k} = {v} is emulated (host-wide, in the initial namespace only: the lab does not change the host's); the analysis reads it as the node showed it")
        } else {
            format!("node facts: {k} = {v} is emulated (this kernel has no such sysctl); the analysis reads it as the old kernel's node showed it")
        });
    }
    let namespaces: Vec<String> = topo.all().iter().map(|n| n.name().to_string()).collect();
    if opts.keep {
        topo.keep_all();
    }
    // Namespaces go now, before the analysis, which needs only the files.
    drop(topo);
    // The run is judged on the node's and the client's views analysed together (two points of one
    // incident); the other vantages are recorded for those who capture elsewhere (fixtures/lab).
    let captures: Vec<PathBuf> = lab
        .artifacts
        .iter()
        .filter(|a| {
            matches!(
                a.kind,
                ArtifactKind::NodeCapture | ArtifactKind::ClientCapture
            )
        })
        .map(|a| a.path.clone())
        .collect();
    let analysis = if opts.skip_analysis {
        None
    } else {
        Some(crate::analysis::analyze_captures(&captures, &facts.context))
    };
    let symptom_seen = outcome.symptom.is_some();
    let outcome_line = outcome
        .symptom
        .clone()
        .unwrap_or_else(|| outcome.fine.clone());
    let report = RunReport {
        scenario: info.name,
        incident: info.incident.map(|i| i.id),
        mitigated: opts.mitigated,
        reproduction: info.reproduction,
        symptom_seen,
        outcome: outcome_line,
        events: outcome.events,
        measurements: outcome.measurements,
        out_dir: out,
        artifacts: std::mem::take(&mut lab.artifacts),
        counter_deltas,
        counters_unavailable,
        drop_reasons,
        node_context: facts.context,
        emulated_sysctls: std::mem::take(&mut lab.emulated_sysctls),
        notes: std::mem::take(&mut lab.notes),
        namespaces,
        namespaces_kept: opts.keep,
        wall_time: started.elapsed(),
        watch,
        analysis,
    };
    // The run's own record beside its files (the analysis is not in it: it is recomputed from the
    // captures by whoever reads them, with whatever detectors they have).
    let path = report.out_dir.join("run.json");
    let text = serde_json::to_string_pretty(&report).unwrap_or_default();
    std::fs::write(&path, text).map_err(|e| LabError::file("writing", &path, e))?;
    Ok(report)
}
