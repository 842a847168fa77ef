//! The HTML report as a browser sees it: for lab fixtures of four kinds of incident (conntrack ones
//! with two NAT legs, DNS races and ID collisions, a listen overflow, a node check), `--format html -o FILE` is opened
//! in headless Chromium, which takes a screenshot and dumps the DOM it built. The test asserts that
//! the page ran without a console message or script error, fetched nothing, draws one diagram per
//! evidence connection or lookup with one lane per NAT leg, highlights exactly the frames the JSON
//! report marks decisive, and charts each counter.
//!
//! Chromium is Debian's `chromium` package (`.ci/run` installs it). Without it the test says so and
//! passes, except under `CI=true`, where it fails: CI must not pass by skipping.

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_netsleuth"))
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Diagrams a finding draws at most (`report::html::MAX_DIAGRAMS`).
const MAX_DIAGRAMS: usize = netsleuth_core::report::html::MAX_DIAGRAMS;

fn chromium() -> Option<&'static str> {
    ["chromium", "chromium-browser"].into_iter().find(|c| {
        Command::new(c)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

struct Case {
    name: &'static str,
    args: Vec<String>,
}

fn fixture(p: &str) -> String {
    root().join("fixtures/lab").join(p).display().to_string()
}

fn cases() -> Vec<Case> {
    let analyze = |name: &'static str, dir: &str| Case {
        name,
        args: vec![
            "analyze".into(),
            fixture(&format!("{dir}/node.pcap")),
            "--node".into(),
            fixture(&format!("{dir}/node.tar.gz")),
        ],
    };
    vec![
        analyze("conntrack-dnat-rebalance", "conntrack-dnat-rebalance"),
        analyze("conntrack-snat-remap", "conntrack-snat-remap"),
        analyze("dns-conntrack-race", "dns-conntrack-race"),
        analyze("listen-queue-overflow", "listen-queue-overflow"),
        analyze("dns-id-collision", "dns-id-collision"),
        Case {
            name: "diff",
            args: vec![
                "diff".into(),
                fixture("snat-port-clash/node.tar.gz"),
                fixture("snat-port-clash-mitigated/node.tar.gz"),
            ],
        },
        Case {
            name: "check",
            args: vec![
                "check".into(),
                "--bundle".into(),
                fixture("snat-port-clash/node.tar.gz"),
            ],
        },
    ]
}

/// The start tags of `tag` elements with `class` in `dom` (Chromium serialises attributes as written).
fn start_tags<'a>(dom: &'a str, tag: &str, class: &str) -> Vec<&'a str> {
    let open = format!("<{tag} class=\"{class}\"");
    dom.match_indices(&open)
        .map(|(i, _)| &dom[i..i + dom[i..].find('>').expect("tag closes")])
        .collect()
}

/// Each `<svg class="…">…</svg>` element of `class` in `dom`, whole.
fn svgs<'a>(dom: &'a str, class: &str) -> Vec<&'a str> {
    let open = format!("<svg class=\"{class}\"");
    dom.match_indices(&open)
        .map(|(i, _)| &dom[i..i + dom[i..].find("</svg>").expect("svg closes")])
        .collect()
}

fn attr(tag: &str, name: &str) -> Option<String> {
    let key = format!(" {name}=\"");
    let at = tag.find(&key)? + key.len();
    Some(tag[at..at + tag[at..].find('"')?].to_string())
}

/// The connections and lookups of one piece of packet evidence, as the JSON report groups them: by the
/// detector's `flow`, else by the unordered tuple; each with its tuples (legs) and whether it is DNS.
fn flows(evidence: &Value) -> Vec<(String, BTreeSet<String>, bool)> {
    let mut out: BTreeMap<String, (BTreeSet<String>, bool)> = BTreeMap::new();
    for fr in evidence["frames"].as_array().unwrap() {
        let a = format!("{}:{}", fr["src"].as_str().unwrap(), fr["src_port"]);
        let b = format!("{}:{}", fr["dst"].as_str().unwrap(), fr["dst_port"]);
        let tuple = if a <= b {
            format!("{a} {b}")
        } else {
            format!("{b} {a}")
        };
        let key = match fr["flow"].as_u64() {
            Some(f) => format!("flow {f}"),
            None => tuple.clone(),
        };
        let e = out.entry(key).or_insert((BTreeSet::new(), true));
        e.0.insert(tuple);
        e.1 &= fr["tcp"].is_null();
    }
    out.into_iter().map(|(k, (t, dns))| (k, t, dns)).collect()
}

#[test]
fn html_reports_render_in_headless_chromium() {
    let Some(chromium) = chromium() else {
        let msg = "chromium is not installed (Debian: apt-get install chromium; .ci/run installs it): the HTML report was not opened in a browser";
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{msg}");
        eprintln!("skipped: {msg}");
        return;
    };
    let out_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("html-report");
    std::fs::create_dir_all(&out_dir).unwrap();
    for case in cases() {
        let html_path = out_dir.join(format!("{}.html", case.name));
        let png_path = out_dir.join(format!("{}.png", case.name));
        let _ = std::fs::remove_file(&png_path);
        let json_out = bin()
            .args(&case.args)
            .args(["--format", "json"])
            .output()
            .unwrap();
        let doc: Value = serde_json::from_slice(&json_out.stdout).unwrap_or_else(|e| {
            panic!(
                "{}: not JSON ({e}): {}",
                case.name,
                String::from_utf8_lossy(&json_out.stderr)
            )
        });
        let html_out = bin()
            .args(&case.args)
            .args(["--format", "html", "-o"])
            .arg(&html_path)
            .output()
            .unwrap();
        assert_eq!(
            html_out.status.code(),
            json_out.status.code(),
            "{}: the HTML run exits as the JSON run does: {}",
            case.name,
            String::from_utf8_lossy(&html_out.stderr)
        );
        assert!(
            html_out.stdout.is_empty(),
            "{}: -o writes the file, not stdout",
            case.name
        );
        let html = std::fs::read_to_string(&html_path).unwrap();
        for fetch in ["http://", "https://", " src=", "url(http", "@import"] {
            assert!(
                !html.contains(fetch),
                "{}: the page must fetch nothing, but holds {fetch:?}",
                case.name
            );
        }

        let browser = Command::new(chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
                "--no-first-run",
                "--enable-logging=stderr",
                "--v=0",
                "--window-size=1400,1800",
            ])
            .arg(format!("--screenshot={}", png_path.display()))
            .arg("--dump-dom")
            .arg(format!("file://{}", html_path.display()))
            .output()
            .unwrap();
        let dom = String::from_utf8_lossy(&browser.stdout).into_owned();
        let log = String::from_utf8_lossy(&browser.stderr);
        assert!(
            browser.status.success(),
            "{}: chromium failed: {log}",
            case.name
        );
        // Every console message (console.log/error, an uncaught exception, a blocked load) is logged
        // as `CONSOLE`; the page itself writes none.
        let console: Vec<&str> = log.lines().filter(|l| l.contains(":CONSOLE")).collect();
        assert!(
            console.is_empty(),
            "{}: console messages: {console:#?}",
            case.name
        );
        let html_tag = &dom[dom.find("<html").expect("a DOM")..];
        let html_tag = &html_tag[..html_tag.find('>').unwrap_or(html_tag.len())];
        assert_eq!(
            attr(html_tag, "data-ready").as_deref(),
            Some("1"),
            "{}: the page's script did not run to its end",
            case.name
        );
        assert_eq!(
            attr(html_tag, "data-js-errors"),
            None,
            "{}: script errors",
            case.name
        );
        let png = std::fs::read(&png_path).unwrap_or_default();
        assert!(
            png.starts_with(b"\x89PNG") && png.len() > 10_000,
            "{}: no screenshot at {}",
            case.name,
            png_path.display()
        );

        // One diagram per evidence connection or lookup (up to the cap), a lane per NAT leg.
        let ladders = svgs(&dom, "ladder");
        let timelines = svgs(&dom, "dns-timeline");
        let mut want_ladders = 0;
        let mut want_timelines = 0;
        let mut want_decisive = BTreeSet::new();
        let mut counters = 0;
        // Lanes wanted per connection (by the detector's flow id where it gave one), and for all.
        let mut want_lanes_of: BTreeMap<String, usize> = BTreeMap::new();
        let mut want_lanes: Vec<usize> = Vec::new();
        for f in doc["findings"].as_array().unwrap() {
            let mut drawn = 0;
            for e in f["evidence"].as_array().unwrap() {
                if e["type"] == "counter" {
                    counters += 1;
                    continue;
                }
                if e["type"] != "packets" {
                    continue;
                }
                for fr in e["frames"].as_array().unwrap() {
                    if fr["decisive"] == true {
                        want_decisive.insert(fr["frame"].as_u64().unwrap());
                    }
                }
                for (key, tuples, dns) in flows(e) {
                    drawn += 1;
                    if drawn > MAX_DIAGRAMS {
                        continue;
                    }
                    if dns {
                        want_timelines += 1;
                        continue;
                    }
                    want_ladders += 1;
                    want_lanes.push(tuples.len());
                    if key.starts_with("flow ") {
                        want_lanes_of.insert(key, tuples.len());
                    }
                }
            }
            if drawn > MAX_DIAGRAMS {
                assert!(
                    dom.contains(&format!("and {} more like it", drawn - MAX_DIAGRAMS)),
                    "{}: the diagrams past the cap are counted",
                    case.name
                );
            }
        }
        let mut drawn_lanes: Vec<usize> = Vec::new();
        for svg in &ladders {
            let lanes = start_tags(svg, "g", "lane");
            let tuples: BTreeSet<String> = lanes
                .iter()
                .map(|l| attr(l, "data-tuple").unwrap())
                .collect();
            assert_eq!(tuples.len(), lanes.len(), "{}: a lane per tuple", case.name);
            let flow = attr(svg, "data-flow").unwrap();
            if let Some(want) = want_lanes_of.get(&flow) {
                assert_eq!(
                    lanes.len(),
                    *want,
                    "{}: {flow} travelled under {want} tuple(s): one lane each",
                    case.name
                );
            }
            drawn_lanes.push(lanes.len());
        }
        want_lanes.sort_unstable();
        drawn_lanes.sort_unstable();
        assert_eq!(drawn_lanes, want_lanes, "{}: lanes per ladder", case.name);
        assert_eq!(ladders.len(), want_ladders, "{}: ladders", case.name);
        assert_eq!(timelines.len(), want_timelines, "{}: timelines", case.name);
        let highlighted: BTreeSet<u64> = start_tags(&dom, "g", "pkt decisive")
            .iter()
            .filter(|t| attr(t, "data-decisive").as_deref() == Some("true"))
            .map(|t| attr(t, "data-frame").unwrap().parse().unwrap())
            .collect();
        assert_eq!(
            highlighted, want_decisive,
            "{}: the decisive frames of the JSON report are the highlighted ones",
            case.name
        );
        assert_eq!(
            svgs(&dom, "counter-chart").len(),
            counters,
            "{}: a chart per counter",
            case.name
        );

        // What each kind must show.
        match case.name {
            "conntrack-dnat-rebalance" | "conntrack-snat-remap" => {
                assert!(
                    ladders
                        .iter()
                        .any(|l| start_tags(l, "g", "lane").len() == 2),
                    "{}: a connection seen under two NAT legs draws two lanes",
                    case.name
                );
                assert!(!want_decisive.is_empty(), "{}", case.name);
                assert!(dom.contains("class=\"idle\""), "{}: idle gap", case.name);
            }
            "dns-conntrack-race" => {
                assert!(want_timelines > 0 && !want_decisive.is_empty());
                assert!(
                    timelines.iter().all(|t| t.contains("class=\"timeout\"")),
                    "each lookup shows the resolver's timeout before its retry"
                );
            }
            "dns-id-collision" => {
                assert!(
                    timelines
                        .iter()
                        .all(|t| t.contains("answer taken (first for its ID)")),
                    "each lookup shows the answer the client took"
                );
            }
            "listen-queue-overflow" => {
                assert!(want_ladders >= 3 && !want_decisive.is_empty());
            }
            "check" => assert!(counters > 0, "the node check charts its counter"),
            "diff" => assert!(
                dom.contains("<table class=\"diff\">"),
                "diff lists its differences"
            ),
            _ => {}
        }
        assert!(
            dom.contains("tshark -r ") || ["check", "diff"].contains(&case.name),
            "{}: a tshark filter",
            case.name
        );
    }
}
