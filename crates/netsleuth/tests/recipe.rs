//! ARCHITECTURE.md's "add an incident" recipe, checked for every incident of the catalogue: a core
//! module with a capture detector, a node detector (or an explicit "no node evidence" entry), a lab
//! scenario, and the lab fixtures of its incident and mitigated runs.

use netsleuth_core::detect::{CATALOGUE, DETECTORS};
use std::path::Path;

#[test]
fn every_incident_has_each_step_of_the_recipe() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/lab");
    let mut missing = Vec::new();
    for incident in CATALOGUE {
        let id = incident.id;
        if !DETECTORS.iter().any(|d| d.incident == *incident) {
            missing.push(format!(
                "{id}: no capture detector in netsleuth_core::detect::DETECTORS"
            ));
        }
        // An entry either reads node state or says why the incident leaves none.
        match netsleuth_node::detect::DETECTORS
            .iter()
            .find(|d| d.incident == *incident)
        {
            Some(d) if d.no_node_evidence().is_some_and(str::is_empty) => {
                missing.push(format!("{id}: NoNodeEvidence must say why"))
            }
            Some(_) => {}
            None => missing.push(format!(
                "{id}: no entry in netsleuth_node::detect::DETECTORS (a detector or NoNodeEvidence)"
            )),
        }
        match netsleuth_lab::scenarios()
            .iter()
            .find(|s| s.incident == Some(*incident))
        {
            Some(s) if s.name == id => {}
            Some(s) => missing.push(format!("{id}: its lab scenario is named {}", s.name)),
            None => missing.push(format!("{id}: no lab scenario in scenarios::INFOS")),
        }
        for run in [id.to_string(), format!("{id}-mitigated")] {
            let dir = fixtures.join(&run);
            let run_json = std::fs::read_to_string(dir.join("run.json")).unwrap_or_default();
            let recorded: Option<String> = serde_json::from_str::<serde_json::Value>(&run_json)
                .ok()
                .and_then(|v| v["incident"].as_str().map(str::to_string));
            if recorded.as_deref() != Some(id) {
                missing.push(format!(
                    "{id}: fixtures/lab/{run}/run.json missing or not a run of {id} (sudo scripts/regen-lab-fixtures.sh {id})"
                ));
            }
            let has_capture = std::fs::read_dir(&dir)
                .map(|d| {
                    d.flatten()
                        .any(|e| e.path().extension().is_some_and(|x| x == "pcap"))
                })
                .unwrap_or(false);
            if !has_capture {
                missing.push(format!("{id}: fixtures/lab/{run}/ has no capture"));
            }
        }
    }
    assert!(missing.is_empty(), "{}", missing.join("\n"));
}

#[test]
fn each_sysctl_decides_one_incident_and_diff_names_it() {
    let mut seen = std::collections::BTreeMap::new();
    for incident in CATALOGUE {
        for key in incident.sysctls {
            if let Some(other) = seen.insert(*key, incident.id) {
                panic!("{key} is listed by both {other} and {}", incident.id);
            }
            assert_eq!(
                netsleuth_node::diff::relevant_sysctl(key).map(|i| i.id),
                Some(incident.id)
            );
        }
    }
}
