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
    assert_eq!(v["version"], 3);
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
    // Differences found: exit 1 (the README's exit codes).
    assert_eq!(out.status.code(), Some(1));
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
        json(&out.stdout)["catalogue"].as_array().unwrap().len(),
        netsleuth_core::detect::CATALOGUE.len()
    );
}

/// A reproducer of `shared/hostile` (beside the checkout: `../shared/hostile`). Absent: `None` with a
/// note, or a failure when `CI=true` (CI must not pass by skipping).
fn hostile(name: &str) -> Option<PathBuf> {
    let p = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/hostile"
    ))
    .join(name);
    if p.is_file() {
        return Some(p);
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{} is missing and CI=true: the hostile-input reproducers must be checked out beside the repository (../shared/hostile)",
        p.display()
    );
    eprintln!(
        "SKIP: {} absent (../shared/hostile beside the checkout)",
        p.display()
    );
    None
}

/// Human output must carry input text escaped: the literal `\x1b`, never the byte, and no control
/// character but the renderer's own newlines and tabs.
fn assert_terminal_safe(what: &str, out: &[u8]) {
    assert!(
        !out.contains(&0x1b),
        "{what}: raw ESC in {:?}",
        String::from_utf8_lossy(out)
    );
    let text = String::from_utf8_lossy(out);
    let bad: Vec<char> = text
        .chars()
        .filter(|c| (c.is_control() && *c != '\n' && *c != '\t') || *c == '\u{9b}')
        .collect();
    assert!(
        bad.is_empty(),
        "{what}: control characters {bad:?} in {text}"
    );
}

#[test]
fn control_characters_from_bundles_are_escaped_in_check_and_diff() {
    let (Some(resolv), Some(seq)) = (
        hostile("escape-container-resolv.tar.gz"),
        hostile("escape-seq.tar.gz"),
    ) else {
        return;
    };
    for b in [&resolv, &seq] {
        let out = bin().args(["check", "--bundle"]).arg(b).output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_terminal_safe("check", &out.stdout);
        assert_terminal_safe("check stderr", &out.stderr);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("\\x1b]0;PWNED-TITLE\\x07\\x1b[2J"), "{text}");
    }
    // The pod's /etc/hosts entry reaches a finding's evidence, not only the input problems.
    let out = bin()
        .args(["check", "--bundle"])
        .arg(&resolv)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    // The item may wrap (80 columns): the hostile name is on its line or the one after.
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines
            .windows(2)
            .any(|w| w[0].contains("etc/hosts: pinned names")
                && (w[0].contains("\\x1b]0;PWNED") || w[1].contains("\\x1b]0;PWNED"))),
        "{text}"
    );

    let out = bin().arg("diff").arg(&resolv).arg(&seq).output().unwrap();
    // Two different nodes: differences found, exit 1 (2 would be an error).
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_terminal_safe("diff", &out.stdout);

    // diff lists a sysctl both nodes have with different values: the hostile key set to another value.
    let dir = std::env::temp_dir().join(format!("netsleuth-cli-diff-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let changed = dir.join("escape-seq-changed.tar.gz");
    rewrite_bundle(&seq, &changed, |path, bytes| {
        if path != "netns/node/sysctl.txt" {
            return Some(bytes);
        }
        let text = String::from_utf8(bytes).unwrap();
        let hostile_line = text
            .lines()
            .find(|l| l.contains('\u{1b}') && l.ends_with(" = 1"))
            .expect("the reproducer's hostile sysctl")
            .to_string();
        Some(
            text.replace(&hostile_line, &hostile_line.replace(" = 1", " = 2"))
                .into_bytes(),
        )
    });
    let out = bin().arg("diff").arg(&seq).arg(&changed).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_terminal_safe("diff", &out.stdout);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines()
            .any(|l| l.starts_with("sysctl") && l.contains("net.ipv4.\\x1b]0;PWNED-TITLE\\x07")),
        "{text}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// Copies a bundle with each member's bytes passed through `edit` (`None`: leave the member out).
fn rewrite_bundle(from: &Path, to: &Path, edit: impl Fn(&str, Vec<u8>) -> Option<Vec<u8>>) {
    let input = flate2::read::GzDecoder::new(std::fs::File::open(from).unwrap());
    let mut ar = tar::Archive::new(input);
    let output = flate2::write::GzEncoder::new(
        std::fs::File::create(to).unwrap(),
        flate2::Compression::fast(),
    );
    let mut out = tar::Builder::new(output);
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let path = e.path().unwrap().to_string_lossy().into_owned();
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut bytes).unwrap();
        let Some(bytes) = edit(&path, bytes) else {
            continue;
        };
        let mut h = tar::Header::new_gnu();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        out.append_data(&mut h, &path, bytes.as_slice()).unwrap();
    }
    out.into_inner().unwrap().finish().unwrap();
}

#[test]
fn control_characters_in_file_names_are_escaped() {
    let dir = std::env::temp_dir().join(format!("netsleuth-cli-esc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // A capture whose name sets the terminal title, with findings whose evidence names the file.
    let capture = dir.join("\u{1b}]0;PWNED\u{7}\u{1b}[2J.pcap");
    std::fs::copy(fixture("lab/bridge-nf-bypass/client.pcap"), &capture).unwrap();
    let out = bin().arg("analyze").arg(&capture).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_terminal_safe("analyze", &out.stdout);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("\\x1b]0;PWNED\\x07\\x1b[2J.pcap"), "{text}");
    // An input that cannot be read: the error on stderr quotes the name escaped too.
    let missing = dir.join("gone\u{1b}[31m.pcap");
    let out = bin().arg("analyze").arg(&missing).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_terminal_safe("analyze stderr", &out.stderr);
    assert!(String::from_utf8_lossy(&out.stderr).contains("gone\\x1b[31m.pcap"));
    // Same through a bundle path (check --bundle's error, diff's header).
    let bundle = dir.join("node\u{1b}[2J.tar.gz");
    std::fs::copy(fixture("node/clean.tar.gz"), &bundle).unwrap();
    let out = bin()
        .args(["check", "--bundle"])
        .arg(&bundle)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_terminal_safe("check", &out.stdout);
    let out = bin()
        .arg("diff")
        .arg(&bundle)
        .arg(&bundle)
        .output()
        .unwrap();
    assert_terminal_safe("diff", &out.stdout);
    assert!(String::from_utf8_lossy(&out.stdout).contains("node\\x1b[2J.tar.gz"));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_bundle_holding_none_of_its_artifacts_exits_2_saying_what_is_missing() {
    let Some(b) = hostile("manifest-only.tar.gz") else {
        return;
    };
    for args in [vec!["check", "--bundle"], vec!["analyze", "--node"]] {
        let mut cmd = bin();
        cmd.args(&args).arg(&b);
        if args[0] == "analyze" {
            cmd.arg(fixture("lab/healthy/node.pcap"));
        }
        let out = cmd.output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(
            out.stdout.is_empty(),
            "{args:?}: no report, no \"No incident found\""
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("none of the 24 artifacts") && err.contains("node/kernel-release"),
            "{err}"
        );
    }
}

#[test]
fn bundle_budget_gives_exit_2_naming_the_member_and_can_be_raised() {
    let Some(b) = hostile("bomb-iptables-20MiB.tar.gz") else {
        return;
    };
    // Within the default budget: checked, with what the bundle lacks listed.
    let out = bin()
        .args(["check", "--format", "json", "--bundle"])
        .arg(&b)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = json(&out.stdout);
    let diags = v["diagnostics"].as_array().unwrap();
    assert!(diags
        .iter()
        .any(|d| d["code"] == "missing-from-bundle" && d["source"] == "node/kernel-release"));

    let out = bin()
        .env("NETSLEUTH_BUNDLE_BUDGET_MIB", "16")
        .args(["check", "--bundle"])
        .arg(&b)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("netns/node/iptables-save.txt") && err.contains("16.0 MiB"),
        "{err}"
    );
    let out = bin()
        .env("NETSLEUTH_BUNDLE_MEMBER_MIB", "8")
        .arg("diff")
        .arg(&b)
        .arg(&b)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("20.0 MiB") && err.contains("8.0 MiB"), "{err}");

    let out = bin()
        .env("NETSLEUTH_BUNDLE_BUDGET_MIB", "lots")
        .args(["check", "--bundle"])
        .arg(&b)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("NETSLEUTH_BUNDLE_BUDGET_MIB=lots"));
}

/// Runs `analyze --format json -` with `bytes` on stdin, the first byte alone and the rest after a
/// pause: what a slow pipe hands over.
fn analyze_stdin_one_byte_first(bytes: &[u8]) -> std::process::Output {
    let mut child = bin()
        .args(["analyze", "--format", "json", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&bytes[..1]).unwrap();
    stdin.flush().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    // The child may have given up already (the bug): a broken pipe is its answer, not ours.
    let _ = stdin.write_all(&bytes[1..]);
    drop(stdin);
    child.wait_with_output().unwrap()
}

/// The report without what names the input (`-` against the file's name).
fn without_inputs(mut v: serde_json::Value) -> serde_json::Value {
    v["inputs"] = serde_json::Value::Null;
    for key in ["findings", "symptoms"] {
        for f in v[key].as_array_mut().into_iter().flatten() {
            for e in f["evidence"].as_array_mut().unwrap() {
                if e.get("file").is_some() {
                    e["file"] = serde_json::Value::Null;
                }
            }
        }
    }
    for d in v["diagnostics"].as_array_mut().unwrap() {
        d["source"] = serde_json::Value::Null;
    }
    v
}

#[test]
fn gzip_on_stdin_is_recognised_when_the_first_read_is_one_byte() {
    let plain = std::fs::read(fixture("lab/conntrack-snat-remap/node.pcap")).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&plain).unwrap();
    let mut cases = vec![(
        "generated".to_string(),
        gz.finish().unwrap(),
        fixture("lab/conntrack-snat-remap/node.pcap"),
    )];
    if let Some(f) = hostile("stdin-gzip-first-read-1-byte.pcap.gz") {
        cases.push((f.display().to_string(), std::fs::read(&f).unwrap(), f));
    }
    for (name, bytes, file) in cases {
        let from_file = bin()
            .args(["analyze", "--format", "json"])
            .arg(&file)
            .output()
            .unwrap();
        let from_pipe = analyze_stdin_one_byte_first(&bytes);
        assert_eq!(
            from_pipe.status.code(),
            from_file.status.code(),
            "{name}: {}",
            String::from_utf8_lossy(&from_pipe.stderr)
        );
        assert_eq!(
            without_inputs(json(&from_pipe.stdout)),
            without_inputs(json(&from_file.stdout)),
            "{name}"
        );
    }
}

#[test]
fn what_a_bundle_lacks_is_noted_by_diff_and_analyze() {
    // A collected bundle whose sysctls were cut out: diff's "A: -" for every sysctl comes from that.
    let dir = std::env::temp_dir().join(format!("netsleuth-cli-cut-bundle-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cut = dir.join("cut.tar.gz");
    let clean = fixture("node/clean.tar.gz");
    rewrite_bundle(&clean, &cut, |path, bytes| {
        (path != "netns/node/sysctl.txt").then_some(bytes)
    });
    let out = bin().arg("diff").arg(&cut).arg(&clean).output().unwrap();
    // The relevant sysctls A lacks are differences: exit 1.
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines()
            .any(|l| l.starts_with("note: A: netns/node/sysctl.txt: listed in manifest.json")),
        "{text}"
    );
    let out = bin()
        .args(["diff", "--format", "json"])
        .arg(&clean)
        .arg(&cut)
        .output()
        .unwrap();
    let v = json(&out.stdout);
    assert_eq!(v["notes"].as_array().unwrap().len(), 1, "{v}");

    let out = bin()
        .args(["check", "--format", "json", "--bundle"])
        .arg(&cut)
        .output()
        .unwrap();
    let v = json(&out.stdout);
    assert_eq!(v["diagnostics"][0]["code"], "missing-from-bundle", "{v}");
    assert_eq!(v["diagnostics"][0]["source"], "netns/node/sysctl.txt");

    let out = bin()
        .args(["analyze", "--format", "json", "--node"])
        .arg(&cut)
        .arg(fixture("lab/healthy/node.pcap"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let v = json(&out.stdout);
    assert!(
        v["notes"].as_array().unwrap().iter().any(|n| n
            .as_str()
            .unwrap()
            .contains("netns/node/sysctl.txt: listed in manifest.json")),
        "{v}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// A little-endian microsecond pcap file of `linktype` and `snaplen`: each record its seconds,
/// microseconds and frame, captured whole (its original length is its length).
fn pcap_file<F: AsRef<[u8]>>(
    linktype: u32,
    snaplen: u32,
    records: impl IntoIterator<Item = (u32, u32, F)>,
) -> Vec<u8> {
    let mut pcap = 0xa1b2_c3d4u32.to_le_bytes().to_vec();
    pcap.extend_from_slice(&2u16.to_le_bytes());
    pcap.extend_from_slice(&4u16.to_le_bytes());
    for v in [0u32, 0, snaplen, linktype] {
        pcap.extend_from_slice(&v.to_le_bytes());
    }
    for (sec, usec, frame) in records {
        let frame = frame.as_ref();
        let len = frame.len() as u32;
        for v in [sec, usec, len, len] {
            pcap.extend_from_slice(&v.to_le_bytes());
        }
        pcap.extend_from_slice(frame);
    }
    pcap
}

#[test]
fn a_capture_nothing_of_which_could_be_decoded_exits_2_saying_so() {
    // pcap, link type 105 (IEEE 802.11): netsleuth does not decode it, so no all-clear.
    let pcap = pcap_file(
        105,
        65_535,
        (0..3u32).map(|k| (1_700_000_000 + k, 0, [0u8; 24])),
    );
    let dir = std::env::temp_dir().join(format!("netsleuth-cli-wifi-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("wifi.pcap");
    std::fs::write(&f, &pcap).unwrap();
    let out = bin().arg("analyze").arg(&f).output().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("could be examined") && err.contains("unsupported-linktype"),
        "{err}"
    );
}

#[test]
fn symptoms_and_blind_spots_are_in_both_outputs() {
    // x09 of ../shared/field is not shipped; the dnat-rebalance fixture has resets explained by the
    // finding.
    let out = bin()
        .args(["analyze"])
        .arg(fixture("lab/conntrack-dnat-rebalance/node.pcap"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Symptoms (what the input shows"), "{text}");
    assert!(
        text.contains("explained by conntrack-dnat-rebalance"),
        "{text}"
    );
    let out = bin()
        .args(["analyze", "--format", "json"])
        .arg(fixture("lab/conntrack-dnat-rebalance/node.pcap"))
        .output()
        .unwrap();
    let v = json(&out.stdout);
    assert_eq!(v["symptoms"][0]["kind"], "connection-resets");
    assert!(v["blind_spots"].is_array());
}

#[test]
fn a_live_check_without_privileges_exits_2_saying_what_it_could_not_read() {
    // setpriv drops to nobody with no capabilities (util-linux; present on Debian).
    let Ok(status) = Command::new("setpriv").arg("--version").output() else {
        panic!("setpriv (util-linux) is needed for this test");
    };
    assert!(status.status.success());
    // As root, run the binary as nobody; as a normal user it already lacks the capability.
    let exe = env!("CARGO_BIN_EXE_netsleuth");
    let mut cmd = if is_root() {
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ]);
        c.arg(exe);
        c
    } else {
        Command::new(exe)
    };
    let out = cmd.args(["check", "--interval", "0"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(2),
        "stdout: {}\nstderr: {err}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        err.contains("CAP_NET_ADMIN") && err.contains("no incident could be ruled out"),
        "{err}"
    );
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"))
}

#[test]
fn diff_exit_codes_say_whether_the_nodes_differ() {
    let same = bin()
        .arg("diff")
        .arg(fixture("node/clean.tar.gz"))
        .arg(fixture("node/clean.tar.gz"))
        .output()
        .unwrap();
    assert_eq!(same.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&same.stdout).contains("no differences that matter"));
    for format in ["human", "json"] {
        let differ = bin()
            .args(["diff", "--format", format])
            .arg(fixture("node/bridge-nf-off.tar.gz"))
            .arg(fixture("node/bridge-nf-on.tar.gz"))
            .output()
            .unwrap();
        assert_eq!(differ.status.code(), Some(1), "{format}");
    }
    let error = bin()
        .arg("diff")
        .arg(fixture("node/clean.tar.gz"))
        .arg("/nonexistent/b.tar.gz")
        .output()
        .unwrap();
    assert_eq!(error.status.code(), Some(2));
}

#[test]
fn node_facts_that_are_not_node_facts_are_an_error_saying_what_was_expected() {
    let dir = std::env::temp_dir().join(format!("netsleuth-cli-facts-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pcap = fixture("lab/healthy/node.pcap");
    for (name, text) in [
        ("foo.json", r#"{"foo":1}"#),
        ("source-only.json", r#"{"source":"x"}"#),
        ("array.json", "[]"),
        ("cut.json", r#"{"sysctls": {"#),
    ] {
        let file = dir.join(name);
        std::fs::write(&file, text).unwrap();
        let out = bin()
            .args(["analyze", "--node"])
            .arg(&file)
            .arg(&pcap)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{name}");
        assert!(out.stdout.is_empty(), "{name}: no report");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("is not a node facts file"), "{name}: {err}");
        assert!(err.contains("hint: give a bundle"), "{name}: {err}");
        if name != "cut.json" {
            assert!(
                err.contains("expected a JSON object with some of:") && err.contains("sysctls"),
                "{name}: {err}"
            );
        }
    }
    // Inline JSON where a file is expected.
    let out = bin()
        .args(["analyze", "--node", r#"{"foo":1}"#])
        .arg(&pcap)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("give a file, not inline JSON"));
    // Fields it does not know are named, the rest is used.
    let file = dir.join("extra.json");
    std::fs::write(&file, r#"{"kernel_release": "6.1.0", "foo": 1}"#).unwrap();
    let out = bin()
        .args(["analyze", "--format", "json", "--node"])
        .arg(&file)
        .arg(&pcap)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let v = json(&out.stdout);
    assert!(
        v["notes"].as_array().unwrap().iter().any(|n| n
            .as_str()
            .unwrap()
            .contains("fields not understood, ignored: foo")),
        "{v}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_bundle_is_not_told_to_add_probe() {
    for b in ["node/clean.tar.gz", "node/dead-nameserver.tar.gz"] {
        let out = bin()
            .args(["check", "--bundle"])
            .arg(fixture(b))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(!text.contains("add --probe"), "{b}: {text}");
        // What it does say about probes can be done: `collect --probe` is a real flag.
        if text.contains("--probe") {
            assert!(text.contains("`netsleuth collect --probe`"), "{b}: {text}");
        }
    }
    let help = bin().args(["collect", "--help"]).output().unwrap();
    assert!(String::from_utf8_lossy(&help.stdout).contains("--probe"));
    // And `check --bundle --probe` is refused with the way to do it.
    let out = bin()
        .args(["check", "--probe", "--bundle"])
        .arg(fixture("node/clean.tar.gz"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("netsleuth collect --probe"));
}

/// Every `netsleuth WORD` that an output mentions names a command that exists.
#[test]
fn outputs_mention_only_commands_that_exist() {
    let mut texts = Vec::new();
    let node = fixture("node");
    let mut bundles: Vec<PathBuf> = std::fs::read_dir(&node)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    bundles.sort();
    for b in &bundles {
        for format in ["human", "json"] {
            let out = bin()
                .args(["check", "--format", format, "--bundle"])
                .arg(b)
                .output()
                .unwrap();
            texts.push((b.display().to_string(), out.stdout, out.stderr));
        }
    }
    for dir in std::fs::read_dir(fixture("lab")).unwrap() {
        let dir = dir.unwrap().path();
        if !dir.is_dir() {
            continue;
        }
        let mut cmd = bin();
        cmd.arg("analyze");
        if dir.join("facts.json").is_file() {
            cmd.arg("--node").arg(dir.join("facts.json"));
        }
        for f in std::fs::read_dir(&dir).unwrap() {
            let f = f.unwrap().path();
            if f.extension().is_some_and(|e| e == "pcap") {
                cmd.arg(f);
            }
        }
        let out = cmd.output().unwrap();
        texts.push((dir.display().to_string(), out.stdout, out.stderr));
    }
    for args in [vec!["--help"], vec!["catalogue"], vec!["lab", "list"]] {
        let out = bin().args(&args).output().unwrap();
        texts.push((args.join(" "), out.stdout, out.stderr));
    }
    let help = String::from_utf8(bin().arg("--help").output().unwrap().stdout).unwrap();
    let mut mentioned = std::collections::BTreeSet::new();
    for (what, out, err) in &texts {
        for text in [out, err] {
            let text = String::from_utf8_lossy(text);
            for (i, _) in text.match_indices("netsleuth ") {
                let word: String = text[i + "netsleuth ".len()..]
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase())
                    .collect();
                if !word.is_empty() {
                    mentioned.insert((word, what.clone()));
                }
            }
        }
    }
    assert!(
        !mentioned.is_empty(),
        "the scan found the commands mentioned"
    );
    for (word, what) in &mentioned {
        assert!(
            help.lines()
                .any(|l| l.trim_start().starts_with(&format!("{word} "))),
            "{what}: mentions `netsleuth {word}`, which is not a command"
        );
    }
}

#[test]
fn errors_print_what_failed_then_each_cause_then_the_hint() {
    let dir = std::env::temp_dir().join(format!("netsleuth-cli-chain-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.tar.gz");
    std::fs::write(&bad, "not a bundle\n").unwrap();
    let out = bin()
        .args(["check", "--bundle"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 3, "{err}");
    assert!(
        lines[0].starts_with("netsleuth: error: bundle ")
            && lines[0].ends_with("bad.tar.gz is not a readable tar.gz"),
        "{err}"
    );
    assert!(lines[1].starts_with("  caused by: "), "{err}");
    assert_eq!(lines[2], "  hint: was it written by `netsleuth collect`?");
    // A collection error keeps its layers too.
    let out = bin()
        .args(["check", "--interval", "0", "--netns"])
        .arg(dir.join("no-such-netns"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = err.lines().collect();
    assert!(
        lines.len() == 3
            && lines[0].starts_with("netsleuth: error: cannot open the target network namespace ")
            && lines[1].starts_with("  caused by: ")
            && lines[2] == "  hint: run as root; check the path",
        "{err}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// A file mapped into memory (the lab's captures are cut to 262 bytes, so `analyze` maps them) and
/// the same file read through a buffer, or piped in, give the same report and exit code, alone and
/// with the scenario's other captures.
#[test]
fn a_mapped_capture_reports_what_a_read_one_does() {
    let dir = fixture("lab/conntrack-dnat-rebalance");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "pcap"))
        .collect();
    files.sort();
    assert!(files.len() >= 2, "captures under {}", dir.display());
    let run = |extra: &[&str], files: &[PathBuf]| {
        let out = bin()
            .args(["analyze", "--format", "json", "--threads", "1"])
            .args(extra)
            .args(files)
            .output()
            .unwrap();
        (out.status.code(), out.stdout)
    };
    for set in [&files[..1], &files[..]] {
        let mapped = run(&[], set);
        assert_eq!(mapped.0, Some(1), "{set:?}");
        assert_eq!(mapped, run(&["--no-mmap"], set), "{set:?}");
    }
    // Piped in, the input is named `-`: compare everything but the names.
    let mut child = bin()
        .args(["analyze", "--format", "json", "--threads", "1", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&std::fs::read(&files[0]).unwrap())
        .unwrap();
    let piped = child.wait_with_output().unwrap();
    let (mut a, mut b) = (json(&piped.stdout), json(&run(&[], &files[..1]).1));
    for doc in [&mut a, &mut b] {
        doc["inputs"] = serde_json::Value::Null;
        strip_sources(doc);
    }
    assert_eq!(a, b);
}

/// `analyze --timings` prints where the time went on stderr, after the report, which it leaves as
/// it is: with two threads each half's work and waiting, with one no halves.
#[test]
fn timings_go_to_stderr_and_leave_the_report_alone() {
    let capture = fixture("lab/conntrack-dnat-rebalance/node.pcap");
    let run = |extra: &[&str]| {
        bin()
            .args(["analyze", "--format", "json"])
            .args(extra)
            .arg(&capture)
            .output()
            .unwrap()
    };
    let plain = run(&["--threads", "1"]);
    for threads in ["1", "2"] {
        let timed = run(&["--threads", threads, "--timings"]);
        assert_eq!(timed.status.code(), plain.status.code());
        assert_eq!(timed.stdout, plain.stdout, "threads {threads}");
        let err = String::from_utf8(timed.stderr).unwrap();
        let thread_s = if threads == "1" { "thread" } else { "threads" };
        assert!(
            err.starts_with(&format!("timings, {threads} {thread_s} (")),
            "{err}"
        );
        for phase in [
            "opening the inputs",
            "the packets",
            "finishing",
            "the report",
        ] {
            assert!(err.contains(&format!("\n  {phase} ")), "no {phase}: {err}");
        }
        let halves = err.contains("reading thread ") && err.contains("back ");
        assert_eq!(halves, threads == "2", "{err}");
    }
    assert!(
        plain.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&plain.stderr)
    );
}

/// Input names (frame references and diagnostics name their capture) set to null.
fn strip_sources(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m.iter_mut() {
                if k == "source" || k == "file" || k == "input" || k == "capture" {
                    *x = serde_json::Value::Null;
                } else {
                    strip_sources(x);
                }
            }
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(strip_sources),
        _ => {}
    }
}

/// Many capture files at once are mapped only within a budget, the rest read through buffers
/// that share one: 100 files of ~3 MB of small records stay within 100 MB on one and on two
/// threads (64 and 65 MB; all mapped, merged, they peaked at 313 and 325 MB, every file's pages
/// resident at once). The peak is the child's own (`wait4`), whatever other tests run meanwhile.
#[test]
fn many_capture_files_at_once_share_one_read_budget() {
    let dir = std::env::temp_dir().join(format!("netsleuth-many-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("small.pcap");
    // 22,000 Ethernet records of 128 bytes (~3.2 MB), each a frame that begins an IPv4 header.
    let f = pcap_file(
        1,
        262_144,
        (0..22_000u32).map(|i| {
            let mut frame = [0u8; 128];
            frame[12] = 0x08;
            frame[14] = 0x45;
            frame[18..20].copy_from_slice(&(i as u16).to_be_bytes());
            (1_700_000_000 + i / 1000, (i % 1000) * 1000, frame)
        }),
    );
    std::fs::write(&path, &f).unwrap();
    for threads in ["1", "2"] {
        let child = bin()
            .args(["analyze", "--format", "json", "--threads", threads])
            .args(std::iter::repeat_n(&path, 100))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let id = child.id() as libc::pid_t;
        let mut status = 0;
        // SAFETY: an all-zero rusage is a valid value to be overwritten.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: waits for our own child, whose pid we hold, once (the `Child` is not waited
        // on again: it is forgotten below).
        let waited = unsafe { libc::wait4(id, &mut status, 0, &mut usage) };
        std::mem::forget(child);
        assert_eq!(waited, id, "wait4");
        assert!(
            libc::WIFEXITED(status),
            "threads {threads}: status {status}"
        );
        let peak_mb = usage.ru_maxrss / 1024;
        assert!(peak_mb < 100, "threads {threads}: peak {peak_mb} MB");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
