//! `netsleuth watch`: the live node, read-only. Findings are printed as they happen (human lines, or
//! JSON Lines: one `finding` or `notice` object per line, the finding in the same versioned shape as
//! `analyze`'s), and SIGINT/SIGTERM (or `--for`) end it with a summary: the findings at their best
//! confidence, what was watched, what was lost. Exit codes as `analyze`: 0 no incident, 1 incident(s)
//! named, 2 error.

use super::{write_stdout, CliError};
use crate::cli::{Format, WatchArgs};
use netsleuth_core::report::escape::for_terminal;
use netsleuth_core::report::json::{self, SCHEMA, SCHEMA_VERSION};
use netsleuth_core::FindingKind;
use netsleuth_node::live::correlate::clock;
use netsleuth_node::live::{self, NsTarget, Output, WatchOptions};
use serde_json::json;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

static STOP: AtomicBool = AtomicBool::new(false);
static SIGNAL: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    // Async-signal-safe: two stores; the loop sees them within its poll interval (≤ 200 ms).
    SIGNAL.store(sig, Ordering::SeqCst);
    STOP.store(true, Ordering::SeqCst);
}

fn install_signals() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

fn target(arg: &str) -> NsTarget {
    let path = if arg.contains('/') {
        PathBuf::from(arg)
    } else {
        PathBuf::from("/run/netns").join(arg)
    };
    NsTarget {
        label: arg.to_string(),
        path: Some(path),
    }
}

pub fn run(a: WatchArgs) -> Result<i32, CliError> {
    if a.format == Format::Html {
        return Err(CliError::Usage(
            "watch writes findings line by line as they happen: use --format human or json (HTML is for finished reports: analyze, check, diff, lab run)".into(),
        ));
    }
    if unsafe { libc::geteuid() } != 0 {
        return Err(CliError::NeedsPrivilege);
    }
    let mut targets: Vec<NsTarget> = Vec::new();
    if a.netns.is_empty() || a.all_netns {
        targets.push(NsTarget {
            label: "node".into(),
            path: None,
        });
    }
    for n in &a.netns {
        let t = target(n);
        if let Some(p) = &t.path {
            if !p.exists() {
                return Err(CliError::Usage(format!(
                    "--netns {n}: {} does not exist (hint: `ip netns list` names them; or give /proc/PID/ns/net)",
                    p.display()
                )));
            }
        }
        targets.push(t);
    }
    let opts = WatchOptions {
        targets,
        processes: a.netns.is_empty() || a.all_netns,
        duration: a.duration,
        rcvbuf: (a.rcvbuf_kib.max(1) as i32).saturating_mul(1024),
        drop_reasons: !a.no_drop_reasons,
        // Bound before anything is watched: a taken address is an error at once, not later.
        observer: match a.metrics {
            Some(addr) => Some(super::metrics::serve(addr)? as std::sync::Arc<dyn live::Observe>),
            None => None,
        },
        tap: live::TapOptions {
            enabled: !a.no_tap,
            record: a.record.clone(),
            record_cap_bytes: a.record_cap_mib.saturating_mul(1 << 20),
        },
        ..Default::default()
    };
    install_signals();
    let format = a.format;
    let mut write_err: Option<CliError> = None;
    let summary = live::watch(&opts, &STOP, |o| {
        if write_err.is_some() {
            return;
        }
        let line = match format {
            Format::Json => json_line(o),
            Format::Human | Format::Html => human_line(o),
        };
        match write_stdout(&line) {
            // A closed pipe ends the watch: nobody reads it any more.
            Ok(()) if super::stdout_closed() => STOP.store(true, Ordering::SeqCst),
            Ok(()) => {}
            Err(e) => {
                STOP.store(true, Ordering::SeqCst);
                write_err = Some(e);
            }
        }
    });
    // The drop monitor's instance is gone (the loop's `finish`); say so on a signal for the record.
    if let Some(e) = write_err {
        return Err(e);
    }
    let incidents = summary
        .findings
        .iter()
        .filter(|f| f.kind == FindingKind::Incident)
        .count();
    let code = i32::from(incidents > 0);
    let text = match format {
        Format::Human | Format::Html => human_summary(&summary, SIGNAL.load(Ordering::SeqCst)),
        Format::Json => {
            let findings: Vec<json::Finding> =
                summary.findings.iter().map(json::Finding::from).collect();
            let v = json!({
                "schema": SCHEMA, "version": SCHEMA_VERSION, "type": "summary",
                "command": "watch",
                "inputs": summary.namespaces,
                "summary": {
                    "incidents": incidents,
                    "latent_risks": summary.findings.len() - incidents,
                    "exit_code": code,
                },
                "findings": findings,
                "stats": {
                    "seconds": summary.seconds, "events": summary.events,
                    "conntrack_events": summary.conntrack_events,
                    "losses": summary.losses, "resyncs": summary.resyncs,
                },
                "notes": summary.notices,
            });
            format!("{v}\n")
        }
    };
    write_stdout(&text)?;
    Ok(code)
}

fn human_line(o: &Output) -> String {
    match o {
        Output::Finding { ts_ns, finding: f } => {
            let kind = match f.kind {
                FindingKind::Incident => "",
                FindingKind::LatentRisk => " (risk)",
            };
            let mut s = format!(
                "{} [{}] {}{kind}: {}\n",
                clock(*ts_ns),
                f.confidence.as_str(),
                f.id,
                for_terminal(&f.summary)
            );
            for e in &f.evidence {
                s.push_str(&format!("    {}\n", for_terminal(&evidence_text(e))));
            }
            s
        }
        Output::Notice { ts_ns, text } => {
            format!("{} note: {}\n", clock(*ts_ns), for_terminal(text))
        }
    }
}

fn evidence_text(e: &netsleuth_core::finding::Evidence) -> String {
    use netsleuth_core::finding::Evidence;
    match e {
        Evidence::Fact { source, text } => format!("{source}: {text}"),
        Evidence::Counter {
            source,
            name,
            before,
            after,
        } => format!(
            "{source}: {name} {} → {after}",
            before.map_or("?".into(), |b| b.to_string())
        ),
        Evidence::Config { source, line, text } => format!(
            "{source}{}: {text}",
            line.map(|l| format!(":{l}")).unwrap_or_default()
        ),
        Evidence::Packets { file, note, .. } => format!("{file}: {note}"),
    }
}

fn json_line(o: &Output) -> String {
    let v = match o {
        Output::Finding { ts_ns, finding } => json!({
            "schema": SCHEMA, "version": SCHEMA_VERSION, "type": "finding",
            "ts_ns": ts_ns, "finding": json::Finding::from(finding),
        }),
        Output::Notice { ts_ns, text } => json!({
            "schema": SCHEMA, "version": SCHEMA_VERSION, "type": "notice",
            "ts_ns": ts_ns, "text": text,
        }),
    };
    format!("{v}\n")
}

fn human_summary(s: &live::WatchSummary, signal: i32) -> String {
    let mut out = format!(
        "\nwatch ended{} after {:.1} s: {} namespace(s), {} event(s) ({} conntrack), {} loss(es), {} resync(s)\n",
        match signal {
            0 => String::new(),
            libc::SIGINT => " (SIGINT)".into(),
            libc::SIGTERM => " (SIGTERM)".into(),
            n => format!(" (signal {n})"),
        },
        s.seconds,
        s.namespaces.len(),
        s.events,
        s.conntrack_events,
        s.losses,
        s.resyncs
    );
    if s.findings.is_empty() {
        out.push_str("No incident seen while watching.\n");
    }
    for f in &s.findings {
        out.push_str(&format!(
            "  [{}] {}{}: {}\n",
            f.confidence.as_str(),
            f.id,
            if f.kind == FindingKind::LatentRisk {
                " (risk)"
            } else {
                ""
            },
            for_terminal(&f.summary)
        ));
    }
    out
}

/// The lines `lab run --watch` adds to a run's text: what watch named, and when within the run.
pub fn render_lab_record(w: &netsleuth_lab::watch::WatchRecord) -> String {
    let mut s = format!(
        "\nnetsleuth watch during the run: {} event(s) ({} conntrack), {} loss(es)\n",
        w.events, w.conntrack_events, w.losses
    );
    if w.findings.is_empty() {
        s.push_str("  named nothing\n");
    }
    for f in &w.findings {
        let during = f.ts_ns <= w.stopped_ns;
        let confidence = match f.finding.confidence {
            json::Confidence::Possible => "possible",
            json::Confidence::Likely => "likely",
            json::Confidence::Confirmed => "confirmed",
        };
        let risk = match f.finding.kind {
            json::FindingKind::LatentRisk => " (risk)",
            json::FindingKind::Incident => "",
        };
        s.push_str(&format!(
            "  {} (+{:.1} s{}) [{confidence}] {}{risk}: {}\n",
            clock(f.ts_ns),
            (f.ts_ns - w.ready_ns) as f64 / 1e9,
            if during {
                ", during the run"
            } else {
                ", after the run"
            },
            f.finding.id,
            for_terminal(&f.finding.summary)
        ));
    }
    s
}
