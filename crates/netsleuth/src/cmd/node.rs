//! `check`, `collect`, `diff` and `analyze --node`: thin adapters over the node crate. All of them
//! only read the node; `--probe` (opt-in) is the one step that sends packets (DNS queries).

use super::{
    emit, emit_document_named, load_names, write_stdout_bytes, CliError, NodeFactsError, Sink, Term,
};
use crate::cli::{CheckArgs, CollectArgs, DiffArgs, Format};
use netsleuth_core::names::Names;
use netsleuth_core::node::NodeContext;
use netsleuth_core::report::escape::for_terminal;
use netsleuth_core::report::json::{self, Document};
use netsleuth_core::report::Report;
use netsleuth_node::bundle::ReadLimits;
use netsleuth_node::{CheckOptions, CollectOptions, NodeFacts, ProbeOptions, Target};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Node facts for `analyze --node`: a bundle from `netsleuth collect`, or a `facts.json` (the shape
/// `netsleuth lab` writes beside its captures); with notes on what the bundle itself lacks, and the
/// Kubernetes names the bundle recorded.
pub fn node_context(path: &Path) -> Result<(NodeContext, Vec<String>, Names), CliError> {
    if !path.exists() && path.to_string_lossy().trim_start().starts_with(['{', '[']) {
        return Err(CliError::Usage(format!(
            "--node {}: give a file, not inline JSON (hint: a bundle from `netsleuth collect`, or a facts.json such as a lab run writes)",
            path.display()
        )));
    }
    if path.extension().is_some_and(|e| e == "json") {
        let text = std::fs::read_to_string(path).map_err(CliError::io(format!(
            "reading node facts {}",
            path.display()
        )))?;
        let (mut ctx, notes) = parse_node_facts(path, &text)?;
        if ctx.source.is_empty() {
            ctx.source = path.display().to_string();
        }
        return Ok((ctx, notes, Names::default()));
    }
    let facts = read_bundle(path)?;
    let notes = bundle_notes(&format!("--node {}", path.display()), &facts);
    let names = bundle_names(&facts);
    Ok((netsleuth_node::to_node_context(&facts), notes, names))
}

/// The names of the pods the bundle's node knew (`collect` records its container runtime's pods); an
/// empty table when it recorded none or they do not read.
pub fn bundle_names(facts: &NodeFacts) -> Names {
    facts
        .artifacts()
        .get(netsleuth_node::facts::paths::K8S_PODS)
        .and_then(|bytes| Names::from_json(bytes).ok())
        .unwrap_or_default()
}

/// A facts.json: an object with at least one field of [`NodeContext`]. Missing fields default and
/// unknown ones are ignored (older and newer files still read), but a file with none of the fields
/// would silently mean "no node facts": that is an error. Unknown fields are named in a note.
fn parse_node_facts(path: &Path, text: &str) -> Result<(NodeContext, Vec<String>), CliError> {
    let bad = |source: NodeFactsError| CliError::NodeFacts {
        path: path.to_path_buf(),
        source,
    };
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| bad(NodeFactsError::Json(e)))?;
    // The field names of the current NodeContext, read off its own serialisation.
    let known: Vec<String> = match serde_json::to_value(NodeContext::default()) {
        Ok(serde_json::Value::Object(m)) => m.into_iter().map(|(k, _)| k).collect(),
        _ => Vec::new(),
    };
    let keys: Vec<&String> = value
        .as_object()
        .map(|m| m.keys().collect())
        .unwrap_or_default();
    // `source` only names where facts came from: alone, it is no fact.
    let facts: Vec<String> = known.iter().filter(|k| *k != "source").cloned().collect();
    if !keys.iter().any(|k| facts.contains(k)) {
        return Err(bad(NodeFactsError::NoKnownField { expected: facts }));
    }
    let ctx: NodeContext =
        serde_json::from_value(value.clone()).map_err(|e| bad(NodeFactsError::Json(e)))?;
    let unknown: Vec<&str> = keys
        .iter()
        .filter(|k| !known.contains(k))
        .map(|k| k.as_str())
        .collect();
    let mut notes = Vec::new();
    if !unknown.is_empty() {
        notes.push(format!(
            "--node {}: fields not understood, ignored: {}",
            path.display(),
            unknown.join(", ")
        ));
    }
    Ok((ctx, notes))
}

/// What reading a bundle found about the bundle itself (artifacts its manifest claims but it lacks,
/// members outside its layout), as notes for the commands that do not list input problems (`diff`,
/// `analyze --node`): a difference or a missed confirmation may come from a cut bundle.
fn bundle_notes(label: &str, facts: &NodeFacts) -> Vec<String> {
    facts
        .diagnostics
        .iter()
        .filter(|d| matches!(d.code, "missing-from-bundle" | "unknown-member"))
        .map(|d| format!("{label}: {}: {}", d.source, d.message))
        .collect()
}

fn read_bundle(path: &Path) -> Result<NodeFacts, CliError> {
    Ok(netsleuth_node::bundle::read_bundle_with(
        path,
        &bundle_limits()?,
    )?)
}

/// The bundle reader's limits: the defaults, or `NETSLEUTH_BUNDLE_BUDGET_MIB` (the decompressed total)
/// and `NETSLEUTH_BUNDLE_MEMBER_MIB` (one member) for a bundle the user trusts that is bigger.
fn bundle_limits() -> Result<ReadLimits, CliError> {
    let mut limits = ReadLimits::default();
    if let Some(total) = mib_from_env("NETSLEUTH_BUNDLE_BUDGET_MIB")? {
        limits.total = total;
    }
    if let Some(member) = mib_from_env("NETSLEUTH_BUNDLE_MEMBER_MIB")? {
        limits.member = member;
    }
    Ok(limits)
}

/// Bytes from an environment variable holding MiB; `None` when unset.
fn mib_from_env(var: &str) -> Result<Option<u64>, CliError> {
    // 1 TiB: beyond any bundle, and far from overflowing a byte count.
    const MAX_MIB: u64 = 1 << 20;
    let Some(value) = std::env::var_os(var) else {
        return Ok(None);
    };
    let text = value.to_string_lossy();
    match text.trim().parse::<u64>() {
        Ok(mib) if (1..=MAX_MIB).contains(&mib) => Ok(Some(mib << 20)),
        _ => Err(CliError::Usage(format!(
            "{var}={text}: give a whole number of MiB from 1 to {MAX_MIB} (e.g. {var}=1024), or unset it for the default"
        ))),
    }
}

fn interval(secs: f64) -> Result<Duration, CliError> {
    if !(0.0..=600.0).contains(&secs) {
        return Err(CliError::Usage(format!(
            "--interval {secs}: give 0 to 600 seconds"
        )));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn collect_options(
    netns: Option<&PathBuf>,
    secs: f64,
    probe: bool,
) -> Result<CollectOptions, CliError> {
    let mut o = CollectOptions {
        interval: interval(secs)?,
        ..Default::default()
    };
    if let Some(ns) = netns {
        o.target = Target::Netns(ns.clone());
    }
    if secs == 0.0 {
        o.samples = 1;
    }
    if probe {
        o.probe = Some(ProbeOptions::default());
    }
    Ok(o)
}

fn collect_live(opts: &CollectOptions) -> Result<NodeFacts, CliError> {
    if !has_net_admin() {
        // Without CAP_NET_ADMIN the conntrack table and statistics, the rules and the other
        // namespaces cannot be read: an all-clear from what is left would be a lie.
        return Err(CliError::NeedsPrivilege);
    }
    Ok(netsleuth_node::collect_live(opts)?)
}

/// Whether this process holds CAP_NET_ADMIN (bit 12 of the effective set in /proc/self/status).
fn has_net_admin() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        })
        .is_some_and(|caps| caps & (1 << 12) != 0)
}

pub fn check(a: CheckArgs, term: &Term) -> Result<i32, CliError> {
    let mut names = load_names(&a.format)?;
    let (facts, input) = match &a.bundle {
        Some(b) => {
            if a.probe {
                return Err(CliError::Usage(
                    "--probe queries nameservers from inside the node's namespaces, so it needs the live node, not a bundle (hint: `netsleuth collect --probe` on the node, or `netsleuth check --probe` there)".into(),
                ));
            }
            (read_bundle(b)?, b.display().to_string())
        }
        None => {
            let opts = collect_options(a.netns.as_ref(), a.interval, a.probe)?;
            let what = a
                .netns
                .as_ref()
                .map(|n| format!("live netns {}", n.display()))
                .unwrap_or_else(|| "live node".into());
            (collect_live(&opts)?, what)
        }
    };
    names.merge(bundle_names(&facts));
    let mut r = netsleuth_node::check(&facts, &CheckOptions::default());
    let mut notes = Vec::new();
    // Connections at risk need the live kernel (sockets and conntrack now): not in a bundle.
    if a.bundle.is_none() {
        let (targets, processes) = match &a.netns {
            Some(p) => (
                vec![netsleuth_node::live::NsTarget {
                    label: p.display().to_string(),
                    path: Some(p.clone()),
                }],
                false,
            ),
            None => (netsleuth_node::live::WatchOptions::default().targets, true),
        };
        let (finding, list, more) = netsleuth_node::live::runtime::connections_at_risk(
            &targets,
            processes,
            Path::new("/proc"),
        );
        notes.extend(more);
        notes.push(format!(
            "connections at risk (idle Service connections whose conntrack entry expires before their next keepalive): {}",
            list.len()
        ));
        r.findings.extend(finding);
    } else {
        notes.push("connections at risk need the live node (sockets and conntrack now): run `netsleuth check` or `netsleuth watch` there".to_string());
    }
    // --probe needs the live node: a bundle is told how its node can be probed instead.
    match (&a.bundle, a.probe) {
        (None, false) => notes.push(
            "passive check: add --probe to query each nameserver and find dead ones".to_string(),
        ),
        (Some(_), _) if facts.probes.is_empty() => notes.push(
            "the bundle holds no nameserver answers: `netsleuth collect --probe` on the node records them, to find dead nameservers".to_string(),
        ),
        _ => {}
    }
    let report = Report {
        command: "check",
        inputs: vec![input],
        findings: netsleuth_core::detect::one_per_incident(r.findings),
        diagnostics: r.diagnostics,
        stats: serde_json::to_value(&r.summary).expect("summary serialises"),
        notes,
        symptoms: Vec::new(),
        blind_spots: Vec::new(),
    };
    emit(&report, (&a.format).into(), &names, term)
}

pub fn collect(a: CollectArgs, term: &Term) -> Result<i32, CliError> {
    let to_stdout = a.output.as_os_str() == "-";
    if to_stdout && std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        return Err(CliError::Usage(
            "-o - writes a tar.gz to stdout, which is a terminal here (hint: redirect it, e.g. `netsleuth collect -o - > node.tar.gz`, or pipe it: `| ssh host 'cat > node.tar.gz'`)".into(),
        ));
    }
    let opts = collect_options(a.netns.as_ref(), a.interval, a.probe)?;
    let facts = collect_live(&opts)?;
    if to_stdout {
        let mut buf = Vec::new();
        netsleuth_node::bundle::write_bundle_to(&facts, &mut buf)
            .map_err(CliError::io("writing the bundle"))?;
        write_stdout_bytes(&buf)?;
    } else {
        netsleuth_node::write_bundle(&facts, &a.output)?;
    }
    let failed = facts
        .manifest
        .artifacts
        .iter()
        .filter(|x| x.error.is_some())
        .count();
    let target = if to_stdout {
        "the bundle to stdout".to_string()
    } else {
        for_terminal(&a.output.display().to_string()).into_owned()
    };
    term.say(&format!(
        "netsleuth: wrote {target} ({} artifacts, {} could not be collected: see manifest.json)",
        facts.manifest.artifacts.len(),
        failed
    ));
    Ok(0)
}

/// Exit code 1 when the diff lists a difference (what it lists is what matters: volatile keys and
/// per-device sysctls are left out), 0 when none.
pub fn diff(a: DiffArgs, term: &Term) -> Result<i32, CliError> {
    let mut names = load_names(&a.format)?;
    let fa = read_bundle(&a.a)?;
    let fb = read_bundle(&a.b)?;
    names.merge(bundle_names(&fa));
    names.merge(bundle_names(&fb));
    let d = netsleuth_node::diff(&fa, &fb);
    let mut notes = bundle_notes("A", &fa);
    notes.extend(bundle_notes("B", &fb));
    let doc = Document::diff(
        vec![a.a.display().to_string(), a.b.display().to_string()],
        json::Diff {
            a: d.a.clone(),
            b: d.b.clone(),
            items: d.items.iter().map(diff_item).collect(),
        },
        notes,
    );
    if a.format.format != Format::Human {
        return emit_document_named(&doc.with_names(&names), (&a.format).into(), &names);
    }
    // A file (`-o`) never gets colour.
    let term = &Term {
        color: term.color && a.format.output.is_none(),
        ..*term
    };
    // Keys and values are the bundles' own text (sysctl names, rules, resolv.conf lines): each item
    // is a line `area key [incident]` and its two values below it, so it fits 80 columns.
    let s = term.with_style(Some(&names), |st| {
        let mut s = String::new();
        st.wrap(&mut s, "A = ", "    ", &st.text(&d.a));
        st.wrap(&mut s, "B = ", "    ", &st.text(&d.b));
        if d.items.is_empty() {
            s.push_str("no differences that matter\n");
        }
        let mut items = d.items.clone();
        items.sort_by_key(|i| i.rank);
        for i in &items {
            let tag = i
                .incident
                .as_deref()
                .map(|x| format!(" [{}]", st.paint("1;31", &for_terminal(x))))
                .unwrap_or_default();
            let head = format!("{} {}{tag}", st.bold(&st.text(&i.area)), st.text(&i.key));
            st.wrap(&mut s, "", "    ", &head);
            st.wrap(
                &mut s,
                "  A: ",
                "     ",
                &st.text(i.a.as_deref().unwrap_or("-")),
            );
            st.wrap(
                &mut s,
                "  B: ",
                "     ",
                &st.text(i.b.as_deref().unwrap_or("-")),
            );
        }
        for n in &doc.notes {
            st.wrap(&mut s, "note: ", "  ", &st.text(n));
        }
        s
    });
    Sink::new((&a.format).into()).write(&s)?;
    Ok(doc.summary.exit_code)
}

fn diff_item(i: &netsleuth_node::DiffItem) -> json::DiffItem {
    json::DiffItem {
        rank: i.rank,
        area: i.area.clone(),
        key: i.key.clone(),
        a: i.a.clone(),
        b: i.b.clone(),
        incident: i.incident.clone(),
    }
}
