//! The terminal conventions: colour on a terminal only (`--color`, `NO_COLOR`), nothing but the report
//! on a pipe, `--quiet`, timestamps with date and zone, `explain`, completions and the man page, a
//! broken pipe keeping the exit code, Kubernetes names in human and JSON output.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_netsleuth");

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn fixture(p: &str) -> String {
    workspace().join("fixtures").join(p).display().to_string()
}

const K8S: &str = "k8s/lab-cluster.json";
const DNAT: &str = "lab/conntrack-dnat-rebalance/node.pcap";

fn bin() -> Command {
    let mut c = Command::new(BIN);
    c.env_remove("NO_COLOR").env_remove("TERM");
    c
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs netsleuth with `args` on a pseudo-terminal (`script`), `env` set: what a user at a terminal
/// sees (stdout and stderr together). `None` when `script` is missing.
fn on_tty(args: &[&str], env: &[(&str, &str)]) -> Option<String> {
    Command::new("script").arg("--version").output().ok()?;
    let quoted: Vec<String> = std::iter::once(BIN.to_string())
        .chain(args.iter().map(|a| a.to_string()))
        .map(|a| format!("'{}'", a.replace('\'', "'\\''")))
        .collect();
    let mut c = Command::new("script");
    c.args(["-q", "-e", "-c", &quoted.join(" "), "/dev/null"])
        .env_remove("NO_COLOR")
        .env("TERM", "xterm")
        .stdin(Stdio::null());
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().unwrap();
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

const ESC: char = '\u{1b}';

#[test]
fn colour_on_a_terminal_only_and_never_against_no_color_or_never() {
    let dnat = fixture(DNAT);
    // A pipe: no colour, whatever the terminal would get.
    let out = bin().args(["analyze", &dnat]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(!text(&out).contains(ESC));
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // --color always colours a pipe too.
    let out = bin()
        .args(["analyze", "--color", "always", &dnat])
        .output()
        .unwrap();
    assert!(text(&out).contains("\u{1b}[1;31mconfirmed\u{1b}[0m"));
    // NO_COLOR does not outvote an explicit --color always.
    let out = bin()
        .env("NO_COLOR", "1")
        .args(["analyze", "--color", "always", &dnat])
        .output()
        .unwrap();
    assert!(text(&out).contains(ESC));

    let Some(tty) = on_tty(&["analyze", &dnat], &[]) else {
        return;
    };
    // A terminal: colour, and the same words.
    assert!(tty.contains("\u{1b}[1;31mconfirmed\u{1b}[0m"), "{tty}");
    assert!(tty.contains("conntrack-dnat-rebalance"));
    for (args, env) in [
        (vec!["analyze", dnat.as_str()], vec![("NO_COLOR", "1")]),
        (vec!["analyze", "--color", "never", dnat.as_str()], vec![]),
        (vec!["analyze", dnat.as_str()], vec![("TERM", "dumb")]),
    ] {
        let tty = on_tty(&args, &env).unwrap();
        assert!(tty.contains("conntrack-dnat-rebalance"), "{tty}");
        assert!(!tty.contains(ESC), "{args:?} {env:?}: {tty:?}");
    }
    // An empty NO_COLOR is unset (no-color.org).
    let tty = on_tty(&["analyze", &dnat], &[("NO_COLOR", "")]).unwrap();
    assert!(tty.contains(ESC));
}

#[test]
fn quiet_prints_only_the_causes() {
    let out = bin()
        .args(["analyze", "--quiet", &fixture(DNAT)])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let t = text(&out);
    assert!(t.contains("[confirmed] conntrack-dnat-rebalance:"), "{t}");
    assert!(!t.contains("Mechanism:") && !t.contains("Evidence:"), "{t}");
    assert!(t.lines().count() <= 8, "{t}");
    assert!(out.stderr.is_empty());
}

#[test]
fn timestamps_carry_date_and_zone() {
    let dnat = fixture(DNAT);
    let out = bin().args(["analyze", "--utc", &dnat]).output().unwrap();
    assert!(
        text(&out).contains("#88 2026-12-03 21:02:32.360527 UTC "),
        "{}",
        text(&out)
    );
    // The local zone, as TZ says (a POSIX TZ needs no zone database): 5 h 30 min east.
    let out = bin()
        .env("TZ", "XST-5:30")
        .args(["analyze", &dnat])
        .output()
        .unwrap();
    assert!(
        text(&out).contains("#88 2026-12-04 02:32:32.360527 XST "),
        "{}",
        text(&out)
    );
    // --utc wins over TZ.
    let out = bin()
        .env("TZ", "XST-5:30")
        .args(["analyze", "--utc", &dnat])
        .output()
        .unwrap();
    assert!(text(&out).contains("21:02:32.360527 UTC"));
}

#[test]
fn a_broken_pipe_keeps_the_exit_code_of_what_was_found() {
    for (file, code) in [(DNAT, 1), ("lab/healthy/node.pcap", 0)] {
        let mut child = bin()
            .args(["analyze", &fixture(file)])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The reader goes away before the report is written.
        drop(child.stdout.take());
        let mut err = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(code), "{file}: {err}");
        assert!(err.is_empty(), "{err}");
    }
}

#[test]
fn explain_prints_the_catalogue_entry() {
    let out = bin()
        .args(["explain", "dns-conntrack-race"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let t = text(&out);
    for needle in [
        "dns-conntrack-race —",
        "Mechanism",
        "Evidence, by source",
        "  - Capture:",
        "Fix",
        "Version facts",
    ] {
        assert!(t.contains(needle), "{needle}: {t}");
    }
    assert!(t.lines().all(|l| l.chars().count() <= 80));
    let out = bin().args(["explain", "no-such-thing"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown incident `no-such-thing`") && err.contains("conntrack-snat-remap")
    );
    let out = bin()
        .args(["explain", "dns-conntrack-race", "--format", "json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["catalogue"][0]["id"], "dns-conntrack-race");
}

#[test]
fn completions_and_man_page_come_from_the_flags() {
    for shell in ["bash", "zsh", "fish"] {
        let out = bin().args(["completions", shell]).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{shell}");
        let t = text(&out);
        assert!(t.contains("netsleuth") && t.contains("k8s"), "{shell}");
    }
    let out = bin().arg("man").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let t = text(&out);
    assert!(t.starts_with(".ie") || t.contains(".TH netsleuth"), "{t}");
    for needle in ["analyze", "explain", "\\-\\-k8s", "\\-\\-color"] {
        assert!(t.contains(needle), "{needle}");
    }
}

#[test]
fn version_says_the_build_and_its_features() {
    let out = bin().arg("--version").output().unwrap();
    let t = text(&out);
    assert!(
        t.starts_with(&format!("netsleuth {} (commit ", env!("CARGO_PKG_VERSION"))),
        "{t}"
    );
    assert!(t.contains(" build, ") && t.contains("features: "), "{t}");
}

#[test]
fn kubernetes_names_in_human_and_json_and_nothing_without_them() {
    let dnat = fixture(DNAT);
    let k8s = fixture(K8S);
    let out = bin()
        .args(["analyze", "--utc", "--k8s", &k8s, &dnat])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    // Joined: a name may wrap at 80 columns.
    let t = text(&out).split_whitespace().collect::<Vec<_>>().join(" ");
    for needle in [
        "connection pod default/client-7d9f (10.244.1.10:50814) → service default/web:80 (10.96.0.20)",
        "from backend pod default/web-5c8d-a (10.244.2.11:8080) to backend pod default/web-5c8d-b (10.244.2.12:8080)",
    ] {
        assert!(t.contains(needle), "{needle}\n{t}");
    }
    let json = |args: &[&str]| -> serde_json::Value {
        let out = bin().args(args).output().unwrap();
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let named = json(&["analyze", "--format", "json", "--k8s", &k8s, &dnat]);
    let plain = json(&["analyze", "--format", "json", &dnat]);
    assert_eq!(named["version"], 3);
    // Valid against the checked-in schema, names and all.
    let schema: serde_json::Value = serde_json::from_slice(
        &std::fs::read(workspace().join("docs/netsleuth.schema.json")).unwrap(),
    )
    .unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(&named)
        .map(|e| e.to_string())
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
    let check = json(&[
        "check",
        "--format",
        "json",
        "--k8s",
        &k8s,
        "--bundle",
        &fixture("lab/go-resolver-dns-first/node.tar.gz"),
    ]);
    assert!(validator.is_valid(&check));
    assert_eq!(check["names"][0]["label"], "service kube-system/kube-dns");
    assert_eq!(check["names"][0]["ports"].as_array().unwrap().len(), 2);
    let frame = &named["findings"][0]["evidence"][0]["frames"][0];
    assert_eq!(frame["src"], "10.244.1.10", "the raw address stays");
    assert_eq!(frame["src_name"], "pod default/client-7d9f");
    assert_eq!(frame["dst_name"], "service default/web:80");
    let names = named["names"].as_array().unwrap();
    let by_addr = |a: &str| names.iter().find(|n| n["address"] == a).unwrap().clone();
    assert_eq!(by_addr("10.96.0.20")["kind"], "service");
    assert_eq!(by_addr("10.96.0.20")["ports"][0]["port"], 80);
    assert_eq!(by_addr("10.244.2.12")["name"], "web-5c8d-b");
    // The summary text keeps its raw addresses.
    assert_eq!(
        named["findings"][0]["summary"],
        plain["findings"][0]["summary"]
    );
    // Without --k8s nothing is added: the same document once the names are taken out.
    assert!(plain.get("names").is_none());
    let mut stripped = named.clone();
    stripped.as_object_mut().unwrap().remove("names");
    let strip_frames = |v: &mut serde_json::Value| {
        fn walk(v: &mut serde_json::Value) {
            match v {
                serde_json::Value::Object(m) => {
                    m.remove("src_name");
                    m.remove("dst_name");
                    m.values_mut().for_each(walk);
                }
                serde_json::Value::Array(a) => a.iter_mut().for_each(walk),
                _ => {}
            }
        }
        walk(v)
    };
    strip_frames(&mut stripped);
    assert_eq!(stripped, plain);

    // Nodes: the SNAT remap crosses from worker-1 to worker-2.
    let out = bin()
        .args([
            "analyze",
            "--k8s",
            &k8s,
            &fixture("lab/conntrack-snat-remap/node.pcap"),
        ])
        .output()
        .unwrap();
    let t = text(&out).split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(t.contains("connection to node worker-2 (192.168.50.20:8899) moved from source node worker-1 (192.168.50.10:"), "{t}");

    // A file that is not Kubernetes objects is an error saying what was expected.
    let out = bin()
        .args(["analyze", "--k8s", &fixture("lab/healthy/run.json"), &dnat])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("is not a file of Kubernetes objects") && err.contains("kubectl get"),
        "{err}"
    );
}

#[test]
fn a_snaplen_capture_is_one_info_line_not_an_input_problem() {
    let dir = fixture("lab/healthy");
    let captures: Vec<String> = ["client", "node", "server"]
        .iter()
        .map(|c| format!("{dir}/{c}.pcap"))
        .collect();
    let out = bin().arg("analyze").args(&captures).output().unwrap();
    let t = text(&out);
    assert!(!t.contains("Input problems"), "{t}");
    let info: Vec<&str> = t.lines().filter(|l| l.starts_with("info: ")).collect();
    assert_eq!(info.len(), 1, "{t}");
    assert!(info[0].starts_with("info: captured with snaplen 262: headers complete"));
    let out = bin()
        .args(["analyze", "--format", "json"])
        .args(&captures)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let d = &v["diagnostics"][0];
    assert_eq!(
        (d["code"].as_str(), d["severity"].as_str()),
        (Some("snaplen-cut"), Some("info"))
    );
}

#[test]
fn collect_to_stdout_refuses_a_terminal() {
    let Some(tty) = on_tty(&["collect", "-o", "-"], &[]) else {
        return;
    };
    assert!(
        tty.contains("-o - writes a tar.gz to stdout, which is a terminal"),
        "{tty}"
    );
}

/// A copy of a bundle with one more member.
fn bundle_with(from: &Path, to: &Path, member: &str, bytes: &[u8]) {
    let mut input = tar::Archive::new(flate2::read::GzDecoder::new(
        std::fs::File::open(from).unwrap(),
    ));
    let out = flate2::write::GzEncoder::new(
        std::fs::File::create(to).unwrap(),
        flate2::Compression::fast(),
    );
    let mut b = tar::Builder::new(out);
    for e in input.entries().unwrap() {
        let mut e = e.unwrap();
        let path = e.path().unwrap().into_owned();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        let mut h = e.header().clone();
        b.append_data(&mut h, path, &data[..]).unwrap();
    }
    let mut h = tar::Header::new_gnu();
    h.set_size(bytes.len() as u64);
    h.set_mode(0o644);
    b.append_data(&mut h, member, bytes).unwrap();
    b.into_inner().unwrap().finish().unwrap();
}

#[test]
fn a_bundle_that_recorded_its_pods_names_them_on_another_machine() {
    let dir = std::env::temp_dir().join(format!("netsleuth-bundle-pods-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bundle = dir.join("node.tar.gz");
    // What `collect` records from the container runtime (`crictl inspectp -o json`).
    let pods = br#"{"status":{"metadata":{"name":"client-from-runtime","namespace":"shop"},"network":{"ip":"10.244.1.10"},"linux":{"namespaces":{"options":{"network":"POD"}}}}}"#;
    bundle_with(
        Path::new(&fixture("lab/conntrack-dnat-rebalance/node.tar.gz")),
        &bundle,
        "node/k8s-pods.json",
        pods,
    );
    let out = bin()
        .args(["analyze", "--node"])
        .arg(&bundle)
        .arg(fixture(DNAT))
        .output()
        .unwrap();
    let t = text(&out).split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        t.contains("connection pod shop/client-from-runtime (10.244.1.10:50814)"),
        "{t}"
    );
    // --k8s is asked first: its name wins over the bundle's.
    let out = bin()
        .args(["analyze", "--k8s", &fixture(K8S), "--node"])
        .arg(&bundle)
        .arg(fixture(DNAT))
        .output()
        .unwrap();
    let t = text(&out).split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        t.contains("connection pod default/client-7d9f (10.244.1.10:50814)"),
        "{t}"
    );
    let out = bin()
        .args(["check", "--format", "json", "--bundle"])
        .arg(&bundle)
        .output()
        .unwrap();
    assert!(matches!(out.status.code(), Some(0 | 1)));
    std::fs::remove_dir_all(&dir).ok();
}

/// A pcap (raw IP) of `size` bytes or more: one UDP flow of full-size datagrams, nothing to find.
fn big_capture(path: &Path, size: usize) {
    let mut out = Vec::with_capacity(size + 2048);
    out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(&65535u32.to_le_bytes());
    out.extend_from_slice(&101u32.to_le_bytes()); // LINKTYPE_RAW
    let payload = 1472usize;
    let mut i: u32 = 0;
    while out.len() < size {
        let len = 20 + 8 + payload;
        out.extend_from_slice(&(1_700_000_000u32 + i / 1000).to_le_bytes());
        out.extend_from_slice(&((i % 1000) * 1000).to_le_bytes());
        out.extend_from_slice(&(len as u32).to_le_bytes());
        out.extend_from_slice(&(len as u32).to_le_bytes());
        let mut ip = [0u8; 20];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        ip[4..6].copy_from_slice(&(i as u16).to_be_bytes());
        ip[8] = 64;
        ip[9] = 17;
        ip[12..16].copy_from_slice(&[10, 0, 0, 1]);
        ip[16..20].copy_from_slice(&[10, 0, 0, 2]);
        out.extend_from_slice(&ip);
        out.extend_from_slice(&9000u16.to_be_bytes());
        out.extend_from_slice(&9001u16.to_be_bytes());
        out.extend_from_slice(&((8 + payload) as u16).to_be_bytes());
        out.extend_from_slice(&[0, 0]);
        out.resize(out.len() + payload, 0x5a);
        i += 1;
    }
    std::fs::write(path, out).unwrap();
}

#[test]
fn a_long_input_gets_a_progress_bar_on_a_terminal_only() {
    let dir = std::env::temp_dir().join(format!("netsleuth-progress-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let big = dir.join("big.pcap");
    big_capture(&big, 33 << 20);
    let big = big.display().to_string();
    // A pipe: the report and nothing on stderr.
    let out = bin().args(["analyze", &big]).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text(&out).starts_with("No incident found"));
    if let Some(tty) = on_tty(&["analyze", &big], &[]) {
        assert!(tty.contains("reading captures"), "{tty:?}");
        // --quiet draws none.
        let tty = on_tty(&["analyze", "--quiet", &big], &[]).unwrap();
        assert!(!tty.contains("reading captures"), "{tty:?}");
    }
    // A short input draws none either.
    let tty = on_tty(&["analyze", &fixture(DNAT)], &[]);
    assert!(tty.is_none_or(|t| !t.contains("reading captures")));
    std::fs::remove_dir_all(&dir).ok();
}

/// The default build has no API reader: `--k8s-api` says how to get one instead of naming nothing.
#[cfg(not(feature = "k8s-api"))]
#[test]
fn k8s_api_without_the_feature_says_how_to_build_it() {
    let out = bin()
        .args(["analyze", "--k8s-api", &fixture(DNAT)])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--features k8s-api") && err.contains("--k8s FILE"),
        "{err}"
    );
    let out = bin().arg("--version").output().unwrap();
    assert!(text(&out).contains("features: none"));
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .map(|u| u.split_whitespace().next() == Some("0"))
        })
        .unwrap_or(false)
}

/// `collect -o -` writes the bundle to stdout (read-only on the node: this reads the host's state and
/// changes nothing); `check --bundle` reads it back. Needs root, like every live collection.
#[test]
fn collect_writes_a_bundle_to_stdout() {
    if !is_root() {
        eprintln!("skipped: a live collect needs root");
        return;
    }
    let out = bin()
        .args(["collect", "--interval", "0", "-o", "-"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(&out.stdout[..2], &[0x1f, 0x8b], "a gzip stream");
    assert!(String::from_utf8_lossy(&out.stderr).contains("wrote the bundle to stdout"));
    let dir = std::env::temp_dir().join(format!("netsleuth-collect-stdout-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bundle = dir.join("node.tar.gz");
    std::fs::write(&bundle, &out.stdout).unwrap();
    let check = bin()
        .args(["check", "--bundle"])
        .arg(&bundle)
        .output()
        .unwrap();
    std::fs::remove_dir_all(&dir).ok();
    assert!(
        matches!(check.status.code(), Some(0 | 1)),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    // --quiet: nothing on stderr.
    let out = bin()
        .args(["collect", "--quiet", "--interval", "0", "-o", "-"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
