//! The CLI contract: exit codes (0 no incident, 1 incident, 2 error), the versioned JSON shape, stdin,
//! and damaged input reported without losing the rest.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_netsleuth"))
}

fn fixture(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures")
        .join(p)
}

fn json(out: &[u8]) -> serde_json::Value {
    serde_json::from_slice(out)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(out)))
}

#[test]
fn incident_capture_exits_1_with_versioned_json() {
    let out = bin()
        .args(["analyze", "--format", "json"])
        .arg(fixture("lab/bridge-nf-bypass/client.pcap"))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = json(&out.stdout);
    assert_eq!(v["schema"], "netsleuth.report");
    assert_eq!(v["version"], 1);
    assert_eq!(v["command"], "analyze");
    let f = &v["findings"][0];
    assert_eq!(f["id"], "bridge-nf-bypass");
    assert_eq!(f["confidence"], "confirmed");
    for key in [
        "summary",
        "explanation",
        "remedy",
        "reasoning",
        "evidence",
        "kind",
    ] {
        assert!(!f[key].is_null(), "finding lacks {key}");
    }
    let frame = &f["evidence"][0]["frames"][0];
    for key in [
        "frame", "ts_ns", "time", "src", "src_port", "dst", "dst_port",
    ] {
        assert!(!frame[key].is_null(), "frame evidence lacks {key}");
    }
}

#[test]
fn healthy_capture_exits_0() {
    let out = bin()
        .arg("analyze")
        .arg(fixture("lab/healthy/node.pcap"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("No incident found"));
}

#[test]
fn stdin_and_gzip_are_read() {
    let bytes = std::fs::read(fixture("lab/conntrack-snat-remap/node.pcap")).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&bytes).unwrap();
    let gz = gz.finish().unwrap();
    for input in [bytes, gz] {
        let mut child = bin()
            .args(["analyze", "--format", "json", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&input).unwrap();
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(1));
        assert_eq!(
            json(&out.stdout)["findings"][0]["id"],
            "conntrack-snat-remap"
        );
    }
}

#[test]
fn unreadable_input_exits_2_with_a_clear_error() {
    let out = bin()
        .args(["analyze", "/nonexistent/capture.pcap"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/capture.pcap"), "{err}");

    let dir = std::env::temp_dir().join(format!("netsleuth-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let text = dir.join("notes.txt");
    std::fs::write(&text, "this is not a capture\n").unwrap();
    let out = bin().arg("analyze").arg(&text).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a capture"));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_file_cut_mid_record_still_gives_its_findings_with_a_note() {
    let bytes = std::fs::read(fixture("lab/conntrack-snat-remap/node.pcap")).unwrap();
    let dir = std::env::temp_dir().join(format!("netsleuth-cli-cut-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cut = dir.join("cut.pcap");
    // Cut inside the last record.
    std::fs::write(&cut, &bytes[..bytes.len() - 20]).unwrap();
    let out = bin()
        .args(["analyze", "--format", "json"])
        .arg(&cut)
        .output()
        .unwrap();
    let v = json(&out.stdout);
    let codes: Vec<&str> = v["diagnostics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["code"].as_str().unwrap())
        .collect();
    assert!(codes.contains(&"truncated-file"), "{codes:?}");
    assert_eq!(
        out.status.code(),
        Some(1),
        "the findings before the cut are still there"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn node_facts_from_a_bundle_raise_confidence() {
    // The lab's facts.json and a check bundle are both accepted by --node.
    let out = bin()
        .args(["analyze", "--format", "json", "--node"])
        .arg(fixture("lab/local-source-drop/facts.json"))
        .arg(fixture("lab/local-source-drop/node.pcap"))
        .output()
        .unwrap();
    let v = json(&out.stdout);
    assert_eq!(v["findings"][0]["id"], "local-source-drop");
    assert_eq!(v["findings"][0]["confidence"], "confirmed");
}

#[test]
fn a_check_bundle_confirms_the_musl_id_collision() {
    // The bundle's container runs musl 1.2.3: the same-ID A/AAAA pair in the capture is its bug.
    let out = bin()
        .args(["analyze", "--format", "json", "--node"])
        .arg(fixture("node/musl-container.tar.gz"))
        .arg(fixture("lab/dns-id-collision/client.pcap"))
        .output()
        .unwrap();
    let v = json(&out.stdout);
    assert_eq!(v["findings"][0]["id"], "dns-id-collision", "{v}");
    assert_eq!(v["findings"][0]["confidence"], "confirmed");
}

#[test]
fn check_bundle_and_diff() {
    let out = bin()
        .args(["check", "--format", "json", "--bundle"])
        .arg(fixture("node/masquerade.tar.gz"))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "a latent risk is not an incident"
    );
    let v = json(&out.stdout);
    assert_eq!(v["command"], "check");
    assert!(v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f["id"] == "snat-port-clash" && f["kind"] == "latent-risk"));

    let out = bin()
        .args(["check", "--bundle"])
        .arg(fixture("node/clean.tar.gz"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("No incident found"));

    let out = bin()
        .args(["check", "--bundle"])
        .arg(fixture("node/listen-overflow.tar.gz"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));

    let out = bin()
        .arg("diff")
        .arg(fixture("node/bridge-nf-off.tar.gz"))
        .arg(fixture("node/bridge-nf-on.tar.gz"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("net.bridge.bridge-nf-call-iptables"),
        "{text}"
    );
}

#[test]
fn catalogue_lists_every_incident() {
    let out = bin()
        .args(["catalogue", "--format", "json"])
        .output()
        .unwrap();
    assert_eq!(
        json(&out.stdout).as_array().unwrap().len(),
        netsleuth_core::detect::CATALOGUE.len()
    );
}
