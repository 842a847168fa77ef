//! Confidence by vantage: the README's table ("By vantage") says, for each incident and capture point,
//! the finding a capture from there supports on its own. This test reads that table and checks every
//! cell against the lab's recordings (`fixtures/lab/<id>/<vantage>.pcap`), so the table stays true:
//! overclaiming fails like missing. Mitigated runs and the healthy run must give no incident finding
//! from any vantage.

use netsleuth_core::node::NodeContext;
use netsleuth_core::{analyze, Analysis, FindingKind, Input};
use std::path::{Path, PathBuf};

/// The table's columns, in order, with the file each vantage was recorded to.
const VANTAGES: [(&str, &str); 5] = [
    ("client pod", "client.pcap"),
    ("server pod", "server.pcap"),
    ("node `-i any`", "node.pcap"),
    ("veth toward the server", "veth.pcap"),
    ("routing-only node", "routing.pcap"),
];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn analyse(path: &Path) -> Analysis {
    analyze(
        vec![Input::stream(
            path.display().to_string(),
            Box::new(std::fs::File::open(path).unwrap()),
        )],
        &NodeContext::default(),
    )
}

fn incidents(a: &Analysis) -> Vec<(&'static str, &'static str)> {
    a.findings
        .iter()
        .filter(|f| f.kind == FindingKind::Incident)
        .map(|f| (f.id, f.confidence.as_str()))
        .collect()
}

/// The rows of the README's vantage table: incident id and one cell per vantage.
fn table() -> Vec<(String, Vec<String>)> {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let start = readme
        .find("| incident | client pod | server pod |")
        .expect("README has the vantage table");
    let header: Vec<&str> = readme[start..]
        .lines()
        .next()
        .unwrap()
        .split('|')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    let names: Vec<&str> = VANTAGES.iter().map(|(n, _)| *n).collect();
    assert_eq!(&header[1..], &names[..], "the table's columns changed");
    readme[start..]
        .lines()
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .map(|l| {
            let cells: Vec<String> = l
                .split('|')
                .map(|c| c.trim().to_string())
                .filter(|c| !c.is_empty())
                .collect();
            (cells[0].clone(), cells[1..].to_vec())
        })
        .collect()
}

#[test]
fn every_cell_of_the_vantage_table_holds() {
    let rows = table();
    assert_eq!(
        rows.len(),
        netsleuth_core::detect::CATALOGUE.len(),
        "one row per incident"
    );
    let mut wrong = Vec::new();
    for (id, cells) in &rows {
        assert!(
            netsleuth_core::detect::incident(id).is_some(),
            "{id} is not in the catalogue"
        );
        let dir = root().join("fixtures/lab").join(id);
        for ((vantage, file), cell) in VANTAGES.iter().zip(cells) {
            let path = dir.join(file);
            let expected = cell.split_whitespace().next().unwrap_or("");
            if expected == "n/a" {
                if path.exists() {
                    wrong.push(format!(
                        "{id} / {vantage}: the table says n/a but {file} exists"
                    ));
                }
                continue;
            }
            assert!(
                path.exists(),
                "{id} / {vantage}: {} missing",
                path.display()
            );
            let got = incidents(&analyse(&path));
            let ok = match expected {
                "-" => got.iter().all(|(gid, _)| gid != id) && got.is_empty(),
                conf => got == vec![(id.as_str(), conf)],
            };
            if !ok {
                wrong.push(format!(
                    "{id} / {vantage}: table says {expected}, analysis gives {got:?}"
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "vantage table disagrees:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn mitigated_and_healthy_runs_are_quiet_from_every_vantage() {
    let lab = root().join("fixtures/lab");
    let mut loud = Vec::new();
    let mut seen = 0;
    for entry in std::fs::read_dir(&lab).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !(name.ends_with("-mitigated") || name == "healthy") {
            continue;
        }
        for (vantage, file) in VANTAGES {
            let path = entry.path().join(file);
            if !path.exists() {
                continue;
            }
            seen += 1;
            let got = incidents(&analyse(&path));
            if !got.is_empty() {
                loud.push(format!("{name} / {vantage}: {got:?}"));
            }
        }
    }
    assert!(
        seen >= 40,
        "expected the vantages of 12 runs, found {seen} captures"
    );
    assert!(
        loud.is_empty(),
        "incident findings on healthy runs:\n{}",
        loud.join("\n")
    );
}
