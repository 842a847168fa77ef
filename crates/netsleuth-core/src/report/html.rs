//! The HTML report (`--format html`): one self-contained file, rendered from the JSON document, so it
//! says exactly what `--format json` says. Causes first, as in the human report; then, per finding, the
//! pictures its evidence supports:
//!
//! - a **ladder** (sequence) diagram per connection: one column per endpoint as the capture saw it
//!   (client, Service address, the client after SNAT, backend), one arrow per packet with its frame
//!   number, time, flags, seq/ack and length; each NAT leg (each tuple the connection travelled
//!   under) a lane of its own, so the tuple change is visible; idle gaps compressed and labelled; the
//!   decisive packet highlighted;
//! - a **timeline** per DNS lookup: each query (A, AAAA) on its row, the nameserver asked, the answer,
//!   the query never answered and the resolver's timeout gap before its retry;
//! - a **chart** of each counter over its samples (`check`);
//! - a `tshark` filter that opens the same packets in Wireshark.
//!
//! The file fetches nothing: its styles, pictures and the little script (copy buttons) are inline,
//! and its Content-Security-Policy forbids any load. Every string from an input goes through
//! [`esc`]; the SVG carries data attributes (`data-frame`, `data-leg`, `data-decisive`) that tests read
//! back from a browser's DOM. A report of thousands of connections stays small: a finding draws at
//! most [`MAX_DIAGRAMS`] diagrams ("and N more like it") of at most [`MAX_ARROWS`] packets each.

use super::escape::for_html as esc;
use super::json::{Diff, Document, Evidence, Finding, FindingKind, FrameRef, LabRun, Symptom};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::net::IpAddr;

/// Diagrams drawn per finding; the rest are counted ("and N more like it").
pub const MAX_DIAGRAMS: usize = 8;
/// Packets drawn per diagram; the rest are counted.
pub const MAX_ARROWS: usize = 60;
/// A silence at least this long between two packets of a ladder is drawn as a labelled break (rows
/// are evenly spaced whatever the time between them; the break says where time was left out).
const IDLE_BREAK_NS: i64 = 200_000_000;

const STYLE: &str = r#"
:root{--fg:#1d232a;--muted:#5b6570;--line:#d5dbe1;--bg:#fff;--panel:#f6f8fa;--bad:#c62828;--warn:#b26a00;--ok:#2e7d32;--accent:#1565c0}
*{box-sizing:border-box}
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;color:var(--fg);background:var(--bg);margin:0 auto;max-width:1400px;padding:20px 28px 60px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid var(--line);padding-bottom:4px}
h3{font-size:16px;margin:18px 0 6px}h4{font-size:14px;margin:14px 0 4px;color:var(--muted);text-transform:uppercase;letter-spacing:.03em}
code,pre,.mono{font-family:"DejaVu Sans Mono",Menlo,Consolas,monospace;font-size:13px}
.muted{color:var(--muted)}.inputs{color:var(--muted);word-break:break-all}
.badge{display:inline-block;border-radius:10px;padding:1px 9px;font-size:12px;font-weight:600;color:#fff;vertical-align:1px}
.confirmed{background:var(--bad)}.likely{background:var(--warn)}.possible{background:#6d7a86}
.kind{display:inline-block;border:1px solid var(--line);border-radius:10px;padding:0 8px;font-size:12px;color:var(--muted)}
.causes{list-style:none;padding:0;margin:8px 0}.causes li{margin:6px 0;padding:8px 12px;background:var(--panel);border-left:4px solid var(--line);border-radius:4px}
.causes li.incident{border-left-color:var(--bad)}.causes li.latent-risk{border-left-color:var(--warn)}
.finding{border:1px solid var(--line);border-radius:8px;padding:4px 18px 14px;margin:18px 0}
.finding>h3{display:flex;gap:10px;align-items:center;flex-wrap:wrap}
.lookalikes li.not::marker{content:"✗ "}.lookalikes li.open::marker{content:"? "}
.diagram{overflow-x:auto;margin:10px 0 4px;border:1px solid var(--line);border-radius:6px;background:#fcfdfe}
.diagram svg{display:block}
.caption{font-size:13px;color:var(--muted);margin:2px 0 12px}
.more{font-style:italic;color:var(--muted)}
.tshark{display:flex;gap:8px;align-items:flex-start;margin:6px 0}
.tshark pre{margin:0;padding:6px 10px;background:var(--panel);border-radius:4px;white-space:pre-wrap;word-break:break-all;flex:1}
button.copy{font:12px system-ui,sans-serif;padding:4px 10px;border:1px solid var(--line);border-radius:4px;background:#fff;cursor:pointer}
table{border-collapse:collapse;font-size:13px;margin:6px 0}td,th{border-bottom:1px solid var(--line);padding:3px 8px;text-align:left;vertical-align:top}
th{background:var(--panel)}
.counters{display:flex;flex-wrap:wrap;gap:12px}
.run{border-top:3px solid var(--line);margin-top:26px}.run.proven h2{color:var(--ok)}.run.unproven h2{color:var(--bad)}
svg text{font-family:"DejaVu Sans Mono",Menlo,Consolas,monospace}
.pkt line{stroke-width:1.6}.pkt.decisive line{stroke-width:3.2;stroke:var(--bad)!important}
.pkt.decisive text.label{fill:var(--bad);font-weight:700}
"#;

/// Runs first (before any other script) so that an error anywhere in the page is recorded where a
/// headless browser's DOM dump shows it.
const ERROR_TRAP: &str = r#"(function(){var d=document.documentElement;function rec(m){d.setAttribute('data-js-errors',(d.getAttribute('data-js-errors')||'')+m+';')}window.addEventListener('error',function(e){rec(e.message||'error')});var ce=console.error;console.error=function(){rec(Array.prototype.join.call(arguments,' '));return ce.apply(console,arguments)}})();"#;

/// Copy buttons; marks the page as fully scripted (`data-ready`).
const SCRIPT: &str = r#"(function(){document.querySelectorAll('button.copy').forEach(function(b){b.addEventListener('click',function(){var t=document.getElementById(b.getAttribute('data-for')).textContent;function done(){b.textContent='copied'}if(navigator.clipboard&&window.isSecureContext){navigator.clipboard.writeText(t).then(done,function(){})}else{var r=document.createRange();r.selectNodeContents(document.getElementById(b.getAttribute('data-for')));var s=window.getSelection();s.removeAllRanges();s.addRange(r);try{document.execCommand('copy');done()}catch(e){}}})});document.documentElement.setAttribute('data-ready','1')})();"#;

/// The report of any command as one HTML page.
/// The page with every address in the findings' and symptoms' words named (`pod default/client
/// (10.244.1.10)`), as the human report names them; the ladders name their columns from the
/// document's frames either way. The JSON keeps the raw words: only the page is annotated.
pub fn render_named(doc: &Document, names: &crate::names::Names) -> String {
    if names.is_empty() {
        return render(doc);
    }
    let mut doc = doc.clone();
    let name = |t: &mut String| {
        if let std::borrow::Cow::Owned(named) = names.annotate(t) {
            *t = named;
        }
    };
    let name_findings = |findings: &mut Vec<super::json::Finding>,
                         symptoms: &mut Vec<super::json::Symptom>| {
        for f in findings {
            name(&mut f.summary);
            f.reasoning.iter_mut().for_each(name);
            f.cases.iter_mut().for_each(name);
            for l in &mut f.look_alikes {
                name(&mut l.why);
            }
        }
        for s in symptoms {
            name(&mut s.summary);
        }
    };
    name_findings(&mut doc.findings, &mut doc.symptoms);
    for run in doc.runs.iter_mut().flatten() {
        name_findings(&mut run.findings, &mut run.symptoms);
    }
    render(&doc)
}

pub fn render(doc: &Document) -> String {
    let mut p = Page::default();
    let title = format!("netsleuth {}: {}", doc.command, doc.inputs.join(", "));
    let _ = write!(
        p.out,
        "<!doctype html>\n<html lang=\"en\" data-command=\"{}\"><head><meta charset=\"utf-8\">\
<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:\">\
<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\"><title>{}</title><script>{ERROR_TRAP}</script><style>{STYLE}</style></head><body>\n",
        esc(&doc.command),
        esc(&title)
    );
    let _ = writeln!(
        p.out,
        "<h1>netsleuth {}</h1><div class=\"inputs\">{}</div><div class=\"muted\">{} {} · schema {} v{} · exit code {}</div>",
        esc(&doc.command),
        esc(&doc.inputs.join(", ")),
        esc(&doc.tool.name),
        esc(&doc.tool.version),
        esc(&doc.schema),
        doc.version,
        doc.summary.exit_code
    );
    if let Some(runs) = &doc.runs {
        p.lab(runs);
    } else if let Some(diff) = &doc.diff {
        p.diff(diff);
    } else {
        p.body(&doc.findings, &doc.symptoms, &doc.blind_spots, &doc.inputs);
    }
    p.diagnostics(&doc.diagnostics);
    p.notes(&doc.notes);
    if let Some(cat) = &doc.catalogue {
        p.out.push_str("<h2>Catalogue</h2>");
        for i in cat {
            let _ = write!(
                p.out,
                "<h3>{} <span class=\"muted\">{}</span></h3><p>{}</p><p><b>Evidence:</b> {}</p><p><b>Fix:</b> {}</p>",
                esc(&i.id),
                esc(&i.title),
                esc(&i.explanation),
                esc(&i.evidence),
                esc(&i.remedy)
            );
        }
    }
    let _ = write!(p.out, "<script>{SCRIPT}</script>\n</body></html>\n");
    p.out
}

#[derive(Default)]
struct Page {
    out: String,
    /// Ids for copy targets.
    next_id: usize,
}

impl Page {
    fn id(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        format!("{prefix}{}", self.next_id)
    }

    fn lab(&mut self, runs: &[LabRun]) {
        for r in runs {
            let _ = write!(
                self.out,
                "<section class=\"run {}\" data-scenario=\"{}\"><h2>{} {}{}</h2><p>{}</p>",
                if r.proven { "proven" } else { "unproven" },
                esc(&r.scenario),
                if r.proven { "✔" } else { "✘" },
                esc(&r.scenario),
                if r.mitigated { " (mitigated)" } else { "" },
                esc(&r.verdict)
            );
            self.body(&r.findings, &r.symptoms, &r.blind_spots, &r.inputs);
            self.diagnostics(&r.diagnostics);
            self.notes(&r.notes);
            self.out.push_str("</section>\n");
        }
    }

    fn diff(&mut self, d: &Diff) {
        let _ = write!(
            self.out,
            "<h2>Differences between {} and {}</h2>",
            esc(&d.a),
            esc(&d.b)
        );
        if d.items.is_empty() {
            self.out
                .push_str("<p>No difference that matters for the catalogue.</p>");
            return;
        }
        self.out.push_str("<table class=\"diff\"><tr><th>rank</th><th>area</th><th>key</th><th>A</th><th>B</th><th>decides</th></tr>");
        for i in &d.items {
            let rank = match i.rank {
                0 => "decides an incident",
                1 => "node identity",
                _ => "other",
            };
            let _ = write!(
                self.out,
                "<tr class=\"rank{}\"><td>{rank}</td><td>{}</td><td class=\"mono\">{}</td><td class=\"mono\">{}</td><td class=\"mono\">{}</td><td>{}</td></tr>",
                i.rank,
                esc(&i.area),
                esc(&i.key),
                esc(i.a.as_deref().unwrap_or("—")),
                esc(i.b.as_deref().unwrap_or("—")),
                esc(i.incident.as_deref().unwrap_or(""))
            );
        }
        self.out.push_str("</table>");
    }

    /// The findings block: causes first (incidents, symptoms, latent risks), then each finding.
    fn body(
        &mut self,
        findings: &[Finding],
        symptoms: &[Symptom],
        blind_spots: &[super::json::BlindSpot],
        inputs: &[String],
    ) {
        let incidents: Vec<&Finding> = findings
            .iter()
            .filter(|f| f.kind == FindingKind::Incident)
            .collect();
        let risks: Vec<&Finding> = findings
            .iter()
            .filter(|f| f.kind == FindingKind::LatentRisk)
            .collect();
        if incidents.is_empty() {
            let _ = write!(
                self.out,
                "<h2>No incident found</h2><p class=\"muted\">in {}</p>",
                esc(&inputs.join(", "))
            );
        } else {
            let _ = write!(self.out, "<h2>{} incident finding(s)</h2>", incidents.len());
            self.cause_list(&incidents, findings);
        }
        if !symptoms.is_empty() {
            let _ = write!(self.out, "<h4>{} symptom(s) seen</h4><ul>", symptoms.len());
            for s in symptoms {
                let by: Vec<&str> = s
                    .considered
                    .iter()
                    .filter(|c| c.verdict == "explains")
                    .map(|c| c.id.as_str())
                    .collect();
                let _ = write!(self.out, "<li>{}", esc(&s.summary));
                if !by.is_empty() {
                    let _ = write!(self.out, " — explained by <b>{}</b>", esc(&by.join(", ")));
                }
                self.out.push_str("</li>");
            }
            self.out.push_str("</ul>");
        }
        if !risks.is_empty() {
            let _ = write!(self.out, "<h4>{} latent risk(s)</h4>", risks.len());
            self.cause_list(&risks, findings);
        }
        for (i, f) in findings.iter().enumerate() {
            self.finding(i, f);
        }
        for s in symptoms {
            self.symptom(s);
        }
        if !blind_spots.is_empty() {
            self.out.push_str(
                "<h2>Not examined</h2><p class=\"muted\">No finding is claimed for these.</p><ul>",
            );
            for b in blind_spots {
                let _ = write!(self.out, "<li>{}", esc(&b.what));
                if !b.undecided.is_empty() {
                    let _ = write!(
                        self.out,
                        " <span class=\"muted\">(undecided: {})</span>",
                        esc(&b.undecided.join(", "))
                    );
                }
                self.out.push_str("</li>");
            }
            self.out.push_str("</ul>");
        }
    }

    fn cause_list(&mut self, list: &[&Finding], all: &[Finding]) {
        self.out.push_str("<ul class=\"causes\">");
        for f in list {
            let n = all
                .iter()
                .position(|g| std::ptr::eq(g, *f))
                .map_or(0, |i| i + 1);
            let _ = write!(
                self.out,
                "<li class=\"{}\"><span class=\"badge {}\">{}</span> <a href=\"#finding-{n}\"><b>{}</b></a>: {}",
                kind_class(f.kind),
                conf(f),
                conf(f),
                esc(&f.id),
                esc(&f.summary)
            );
            if !f.cases.is_empty() {
                let _ = write!(
                    self.out,
                    " <span class=\"muted\">and {} more case(s) of it</span>",
                    f.cases.len()
                );
            }
            self.out.push_str("</li>");
        }
        self.out.push_str("</ul>");
    }

    fn finding(&mut self, i: usize, f: &Finding) {
        let _ = write!(
            self.out,
            "<section class=\"finding {}\" id=\"finding-{}\" data-id=\"{}\" data-confidence=\"{}\"><h3>{}. {} <span class=\"badge {}\">{}</span> <span class=\"kind\">{}</span></h3><p><b>{}</b></p>",
            kind_class(f.kind),
            i + 1,
            esc(&f.id),
            conf(f),
            i + 1,
            esc(&f.id),
            conf(f),
            conf(f),
            kind_class(f.kind).replace('-', " "),
            esc(&f.summary)
        );
        if !f.cases.is_empty() {
            self.out.push_str("<ul>");
            for c in &f.cases {
                let _ = write!(self.out, "<li>also: {}</li>", esc(c));
            }
            self.out.push_str("</ul>");
        }
        if !f.reasoning.is_empty() {
            let _ = write!(self.out, "<h4>Why {}</h4><ul>", conf(f));
            for w in &f.reasoning {
                let _ = write!(self.out, "<li>{}</li>", esc(w));
            }
            self.out.push_str("</ul>");
        }
        if !f.look_alikes.is_empty() {
            self.out
                .push_str("<h4>Look-alikes</h4><ul class=\"lookalikes\">");
            for l in &f.look_alikes {
                let _ = write!(
                    self.out,
                    "<li class=\"{}\">{} <b>{}</b>: {}</li>",
                    if l.ruled_out { "not" } else { "open" },
                    if l.ruled_out {
                        "not"
                    } else {
                        "cannot rule out"
                    },
                    esc(&l.id),
                    esc(&l.why)
                );
            }
            self.out.push_str("</ul>");
        }
        if !f.evidence.is_empty() {
            self.out.push_str("<h4>Evidence</h4>");
            self.evidence(&f.evidence);
        }
        let _ = writeln!(
            self.out,
            "<h4>Mechanism</h4><p>{}</p><h4>Fix</h4><p>{}</p></section>",
            esc(&f.explanation),
            esc(&f.remedy)
        );
    }

    fn symptom(&mut self, s: &Symptom) {
        let _ = write!(
            self.out,
            "<section class=\"symptom\" data-kind=\"{}\"><h3>Symptom: {}</h3>",
            esc(&s.kind),
            esc(&s.summary)
        );
        self.evidence_tables(&s.evidence, true);
        if !s.considered.is_empty() {
            self.out.push_str("<h4>Causes considered</h4><ul>");
            for c in &s.considered {
                let _ = write!(
                    self.out,
                    "<li><b>{}</b> ({}): {}</li>",
                    esc(&c.id),
                    esc(&c.verdict),
                    esc(&c.why)
                );
            }
            self.out.push_str("</ul>");
        }
        if let Some(o) = &s.otherwise {
            let _ = write!(self.out, "<p>Otherwise: {}</p>", esc(o));
        }
        self.out.push_str("</section>\n");
    }

    /// A finding's evidence: diagrams of its packets, charts of its counters, its config lines and
    /// facts, and the tshark filter of its packets.
    fn evidence(&mut self, evidence: &[Evidence]) {
        let mut flows = flows_of(evidence);
        // The connections that hold a decisive packet first: they are what the finding is about.
        flows.sort_by_key(|f| !f.frames.iter().any(|fr| fr.decisive));
        let drawn = flows.len().min(MAX_DIAGRAMS);
        for fl in &flows[..drawn] {
            match fl.kind {
                FlowKind::Tcp => self.ladder(fl),
                FlowKind::Dns => self.dns_timeline(fl),
            }
        }
        if flows.len() > drawn {
            let _ = write!(
                self.out,
                "<p class=\"more\" data-more-flows=\"{}\">and {} more like it (listed in the JSON report)</p>",
                flows.len() - drawn,
                flows.len() - drawn
            );
        }
        self.tshark(evidence);
        let counters: Vec<&Evidence> = evidence
            .iter()
            .filter(|e| matches!(e, Evidence::Counter { .. }))
            .collect();
        if !counters.is_empty() {
            self.out.push_str("<div class=\"counters\">");
            for c in counters {
                self.counter_chart(c);
            }
            self.out.push_str("</div>");
        }
        self.evidence_tables(evidence, false);
    }

    /// Config lines, facts and counters as a list; packets as a frame table when `packets` (a
    /// symptom's, which has no diagram; a finding's are drawn).
    fn evidence_tables(&mut self, evidence: &[Evidence], packets: bool) {
        let mut list = String::new();
        for e in evidence {
            match e {
                Evidence::Packets { .. } if !packets => {}
                Evidence::Config { source, line, text } => {
                    let at = line.map(|l| format!(":{l}")).unwrap_or_default();
                    let _ = write!(
                        list,
                        "<li><span class=\"muted\">{}{at}</span> <code>{}</code></li>",
                        esc(source),
                        esc(text)
                    );
                }
                Evidence::Fact { source, text } => {
                    let _ = write!(
                        list,
                        "<li><span class=\"muted\">{}</span> {}</li>",
                        esc(source),
                        esc(text)
                    );
                }
                Evidence::Counter {
                    source,
                    name,
                    before,
                    after,
                } => {
                    let moved = match before {
                        Some(b) => format!("{b} → {after} (+{})", after.saturating_sub(*b)),
                        None => format!("= {after}"),
                    };
                    let _ = write!(
                        list,
                        "<li><span class=\"muted\">{}</span> <code>{}</code> {moved}</li>",
                        esc(source),
                        esc(name)
                    );
                }
                Evidence::Packets { file, frames, note } => {
                    let _ = write!(
                        list,
                        "<li><span class=\"muted\">{}</span> {}<table><tr><th>frame</th><th>time</th><th>packet</th><th>what</th></tr>",
                        esc(file),
                        esc(note)
                    );
                    for fr in frames.iter().take(MAX_ARROWS) {
                        let _ = write!(
                            list,
                            "<tr><td>#{}</td><td class=\"mono\">{}</td><td class=\"mono\">{} → {}</td><td>{}</td></tr>",
                            fr.frame,
                            esc(time_of_day(&fr.time)),
                            esc(&endpoint(fr.src, fr.src_port)),
                            esc(&endpoint(fr.dst, fr.dst_port)),
                            esc(&fr.what)
                        );
                    }
                    list.push_str("</table></li>");
                }
            }
        }
        if !list.is_empty() {
            let _ = write!(self.out, "<ul class=\"evidence\">{list}</ul>");
        }
    }

    /// `tshark -r FILE -Y 'frame.number in {…}'` per capture file of the evidence, with a copy button.
    fn tshark(&mut self, evidence: &[Evidence]) {
        let mut by_file: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
        for e in evidence {
            if let Evidence::Packets { file, frames, .. } = e {
                by_file
                    .entry(file.as_str())
                    .or_default()
                    .extend(frames.iter().map(|f| f.frame));
            }
        }
        for (file, mut frames) in by_file {
            frames.sort_unstable();
            frames.dedup();
            let list: Vec<String> = frames.iter().map(u64::to_string).collect();
            let cmd = format!(
                "tshark -r {} -Y 'frame.number in {{{}}}'",
                shell_quote(file),
                list.join(" ")
            );
            let id = self.id("tshark");
            let _ = write!(
                self.out,
                "<div class=\"tshark\"><pre id=\"{id}\" class=\"mono\">{}</pre><button class=\"copy\" type=\"button\" data-for=\"{id}\">copy</button></div>",
                esc(&cmd)
            );
        }
    }

    /// A small bar chart of a counter's samples (two for a `check` with an interval, one without).
    fn counter_chart(&mut self, e: &Evidence) {
        let Evidence::Counter {
            source,
            name,
            before,
            after,
        } = e
        else {
            return;
        };
        let samples: Vec<u64> = before.iter().copied().chain([*after]).collect();
        let max = samples.iter().copied().max().unwrap_or(0).max(1);
        let (w, h, base) = (60.0 + 70.0 * samples.len() as f64, 130.0, 100.0);
        let _ = write!(
            self.out,
            "<figure class=\"counter\" style=\"margin:0\"><svg class=\"counter-chart\" data-counter=\"{}\" data-samples=\"{}\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" role=\"img\"><title>{}: {}</title>",
            esc(name),
            samples.len(),
            esc(source),
            esc(name)
        );
        let _ = write!(
            self.out,
            "<line x1=\"30\" y1=\"{base}\" x2=\"{}\" y2=\"{base}\" stroke=\"#8a96a3\"/>",
            w - 10.0
        );
        let mut prev: Option<(f64, f64)> = None;
        for (i, v) in samples.iter().enumerate() {
            let bh = 80.0 * (*v as f64) / (max as f64);
            let x = 45.0 + 70.0 * i as f64;
            let y = base - bh;
            let _ = write!(
                self.out,
                "<rect class=\"sample\" data-value=\"{v}\" x=\"{x}\" y=\"{y:.1}\" width=\"36\" height=\"{bh:.1}\" fill=\"#1565c0\" opacity=\"0.8\"/><text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"middle\">{v}</text><text x=\"{:.1}\" y=\"{}\" font-size=\"10\" text-anchor=\"middle\" fill=\"#5b6570\">sample {}</text>",
                x + 18.0,
                y - 4.0,
                x + 18.0,
                base + 14.0,
                i + 1
            );
            if let Some((px, py)) = prev {
                let _ = write!(
                    self.out,
                    "<line x1=\"{px:.1}\" y1=\"{py:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"#c62828\" stroke-dasharray=\"3 2\"/>",
                    x + 18.0
                );
            }
            prev = Some((x + 18.0, y));
        }
        let delta = match before {
            Some(b) => format!("+{}", after.saturating_sub(*b)),
            None => "one sample".into(),
        };
        let _ = write!(
            self.out,
            "</svg><figcaption class=\"caption mono\">{} <b>{delta}</b><br>{}</figcaption></figure>",
            esc(name),
            esc(source)
        );
    }

    /// A ladder diagram of one connection.
    fn ladder(&mut self, fl: &Flow<'_>) {
        let frames: Vec<&FrameRef> = fl.frames.iter().take(MAX_ARROWS).copied().collect();
        // The connection's legs (each tuple it travelled under), in order of first appearance.
        let mut legs: Vec<LegKey> = Vec::new();
        for fr in &frames {
            let k = leg_of(fr);
            if !legs.contains(&k) {
                legs.push(k);
            }
        }
        // The client end of each leg: the SYN's sender, the SYN-ACK's receiver, else the higher port.
        let client_of = |k: &LegKey| -> Ep {
            for fr in frames.iter().filter(|f| leg_of(f) == *k) {
                if let Some(t) = &fr.tcp {
                    if t.flags.contains("SYN") {
                        return if t.flags.contains("ACK") {
                            (fr.dst, fr.dst_port)
                        } else {
                            (fr.src, fr.src_port)
                        };
                    }
                }
            }
            if k.0 .1 >= k.1 .1 {
                k.0
            } else {
                k.1
            }
        };
        let mut clients: Vec<Ep> = Vec::new();
        let mut servers: Vec<Ep> = Vec::new();
        let mut roles: Vec<(LegKey, Ep)> = Vec::new();
        for k in &legs {
            // A leg that shares an endpoint with an earlier one (NAT rewrote the other side) keeps
            // that endpoint's role; otherwise the handshake, else the port, decides.
            let c = if clients.contains(&k.0) || servers.contains(&k.1) {
                k.0
            } else if clients.contains(&k.1) || servers.contains(&k.0) {
                k.1
            } else {
                client_of(k)
            };
            roles.push((*k, c));
            let s = if c == k.0 { k.1 } else { k.0 };
            if !clients.contains(&c) && !servers.contains(&c) {
                clients.push(c);
            }
            if !servers.contains(&s) && !clients.contains(&s) {
                servers.push(s);
            }
        }
        let mut cols: Vec<(Ep, String)> = Vec::new();
        for (i, c) in clients.iter().enumerate() {
            let role = if i == 0 {
                "client"
            } else {
                "client after SNAT"
            };
            cols.push((*c, role.into()));
        }
        for (i, s) in servers.iter().enumerate() {
            let role = match (servers.len(), i) {
                (1, _) => "server",
                (_, 0) => "service address (before DNAT)",
                _ => "backend (after DNAT)",
            };
            cols.push((*s, role.into()));
        }
        // Kubernetes names (`--k8s`), where the document carries them: under the role, per column.
        for (ep, role) in cols.iter_mut() {
            let name = frames.iter().find_map(|f| {
                if (f.src, f.src_port) == *ep {
                    f.src_name.as_deref()
                } else if (f.dst, f.dst_port) == *ep {
                    f.dst_name.as_deref()
                } else {
                    None
                }
            });
            if let Some(name) = name {
                *role = format!("{role} · {name}");
            }
        }
        let col_x = |ep: Ep| -> f64 {
            let i = cols.iter().position(|(e, _)| *e == ep).unwrap_or(0);
            GUTTER + COL_W / 2.0 + COL_W * i as f64
        };
        // Rows: a packet each, and a break before a packet that ends a long silence.
        let mut rows: Vec<Row> = Vec::new();
        let mut y = TOP;
        let mut prev_ts: Option<i64> = None;
        for fr in &frames {
            if let Some(p) = prev_ts {
                let gap = fr.ts_ns.saturating_sub(p);
                if gap >= IDLE_BREAK_NS {
                    rows.push(Row::Idle { y, gap });
                    y += IDLE_H;
                }
            }
            rows.push(Row::Packet { y, fr });
            y += ROW_H;
            prev_ts = Some(fr.ts_ns);
        }
        // Below the rows, a legend line per leg: the tuple the lane stands for.
        let legend_y = y + 8.0;
        let height = legend_y + 16.0 * legs.len() as f64 + 4.0;
        let width = GUTTER + COL_W * cols.len() as f64 + 10.0;
        let decisive: Vec<u64> = frames
            .iter()
            .filter(|f| f.decisive)
            .map(|f| f.frame)
            .collect();
        let decisive_attr = decisive
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(" ");
        let mid = self.id("arrow");
        let did = self.id("diagram-");
        let _ = write!(
            self.out,
            "<div class=\"diagram\" id=\"{did}\"><svg class=\"ladder\" data-file=\"{}\" data-flow=\"{}\" data-lanes=\"{}\" data-packets=\"{}\" data-decisive-frames=\"{decisive_attr}\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" role=\"img\" aria-label=\"ladder diagram of one connection\">\
<defs><marker id=\"{mid}\" viewBox=\"0 0 10 10\" refX=\"10\" refY=\"5\" markerUnits=\"userSpaceOnUse\" markerWidth=\"11\" markerHeight=\"11\" orient=\"auto-start-reverse\"><path d=\"M0,0L10,5L0,10z\" fill=\"context-stroke\"/></marker></defs>",
            esc(fl.file),
            esc(&fl.key),
            legs.len(),
            frames.len()
        );
        // The decisive packet's row, under everything else.
        for r in &rows {
            if let Row::Packet { y, fr } = r {
                if fr.decisive {
                    let _ = write!(
                        self.out,
                        "<rect class=\"highlight\" x=\"2\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"#fdecea\"/>",
                        y - 17.0,
                        width - 4.0,
                        ROW_H - 4.0
                    );
                }
            }
        }
        // Lanes: one band per leg, between its two endpoints, over the rows of its packets.
        for (li, k) in legs.iter().enumerate() {
            let (xa, xb) = (col_x(k.0), col_x(k.1));
            let (x0, x1) = (xa.min(xb), xa.max(xb));
            let ys: Vec<f64> = rows
                .iter()
                .filter_map(|r| match r {
                    Row::Packet { y, fr } if leg_of(fr) == *k => Some(*y),
                    _ => None,
                })
                .collect();
            let (y0, y1) = (
                ys.iter().copied().fold(f64::MAX, f64::min) - 22.0,
                ys.iter().copied().fold(f64::MIN, f64::max) + 9.0,
            );
            let colour = LANE_COLOURS[li % LANE_COLOURS.len()];
            let c = roles[li].1;
            let s = if c == k.0 { k.1 } else { k.0 };
            let tuple = format!("{} ↔ {}", endpoint(c.0, c.1), endpoint(s.0, s.1));
            let _ = write!(
                self.out,
                "<g class=\"lane\" data-leg=\"{li}\" data-tuple=\"{}\"><rect x=\"{:.1}\" y=\"{y0:.1}\" width=\"{:.1}\" height=\"{:.1}\" rx=\"6\" fill=\"{colour}\" fill-opacity=\"0.10\" stroke=\"{colour}\" stroke-opacity=\"0.5\" stroke-dasharray=\"4 3\"/><text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\" font-weight=\"700\" fill=\"{colour}\">leg {}</text><text x=\"{GUTTER:.1}\" y=\"{:.1}\" font-size=\"11\" fill=\"{colour}\">leg {}: {}</text></g>",
                esc(&tuple),
                x0 - 8.0,
                x1 - x0 + 16.0,
                y1 - y0,
                x0 - 4.0,
                y0 + 10.0,
                li + 1,
                legend_y + 16.0 * li as f64,
                li + 1,
                esc(&tuple)
            );
        }
        // Columns: the endpoint, its role, its lifeline.
        for (ep, role) in &cols {
            let x = col_x(*ep);
            let _ = write!(
                self.out,
                "<g class=\"endpoint\" data-endpoint=\"{}\"><text x=\"{x:.1}\" y=\"18\" font-size=\"12\" font-weight=\"700\" text-anchor=\"middle\">{}</text><text x=\"{x:.1}\" y=\"32\" font-size=\"10\" text-anchor=\"middle\" fill=\"#5b6570\">{}</text><line x1=\"{x:.1}\" y1=\"40\" x2=\"{x:.1}\" y2=\"{:.1}\" stroke=\"#8a96a3\" stroke-width=\"1\"/></g>",
                esc(&endpoint(ep.0, ep.1)),
                esc(&endpoint(ep.0, ep.1)),
                esc(role),
                legend_y - 6.0
            );
        }
        let _ = write!(
            self.out,
            "<text x=\"6\" y=\"18\" font-size=\"11\" font-weight=\"700\">frame</text><text x=\"62\" y=\"18\" font-size=\"11\" font-weight=\"700\">time (UTC)</text>"
        );
        for r in &rows {
            match r {
                Row::Idle { y, gap } => {
                    let yy = y + 8.0;
                    let mut zig = format!("M{GUTTER:.1},{yy:.1}");
                    let mut x = GUTTER;
                    let mut up = true;
                    while x < width - 10.0 {
                        x += 8.0;
                        let _ = write!(zig, " L{x:.1},{:.1}", if up { yy - 4.0 } else { yy + 4.0 });
                        up = !up;
                    }
                    let label = format!("idle {}", human_duration(*gap));
                    let _ = write!(
                        self.out,
                        "<g class=\"idle\" data-gap-ns=\"{gap}\"><path d=\"{zig}\" fill=\"none\" stroke=\"#b0bac4\"/><rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"16\" fill=\"#fff\"/><text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"middle\" fill=\"#5b6570\" font-style=\"italic\">{label}</text></g>",
                        (GUTTER + width) / 2.0 - 60.0,
                        yy - 8.0,
                        120.0,
                        (GUTTER + width) / 2.0,
                        yy + 4.0
                    );
                }
                Row::Packet { y, fr } => {
                    let leg = legs.iter().position(|k| *k == leg_of(fr)).unwrap_or(0);
                    let colour = LANE_COLOURS[leg % LANE_COLOURS.len()];
                    let (xs, xd) = (col_x((fr.src, fr.src_port)), col_x((fr.dst, fr.dst_port)));
                    let label = packet_label(fr);
                    let lx = (xs + xd) / 2.0;
                    let class = if fr.decisive { "pkt decisive" } else { "pkt" };
                    let _ = write!(
                        self.out,
                        "<g class=\"{class}\" data-frame=\"{}\" data-leg=\"{leg}\" data-decisive=\"{}\" data-ts-ns=\"{}\"><title>#{} {}</title>\
<text x=\"6\" y=\"{:.1}\" font-size=\"11\">#{}</text><text x=\"62\" y=\"{:.1}\" font-size=\"11\">{}</text>\
<line x1=\"{xs:.1}\" y1=\"{y:.1}\" x2=\"{xd:.1}\" y2=\"{y:.1}\" stroke=\"{colour}\" marker-end=\"url(#{mid})\"/>\
<text class=\"label\" x=\"{lx:.1}\" y=\"{:.1}\" font-size=\"10.5\" text-anchor=\"middle\">{}</text></g>",
                        fr.frame,
                        fr.decisive,
                        fr.ts_ns,
                        fr.frame,
                        esc(&fr.what),
                        y + 4.0,
                        fr.frame,
                        y + 4.0,
                        esc(time_of_day(&fr.time)),
                        y - 4.0,
                        esc(&label)
                    );
                }
            }
        }
        self.out.push_str("</svg></div>");
        let more = fl.frames.len().saturating_sub(frames.len());
        let _ = write!(
            self.out,
            "<p class=\"caption\">{}: {}{}{}</p>",
            esc(fl.file),
            esc(fl.note),
            if decisive.is_empty() {
                String::new()
            } else {
                format!(
                    "; decisive: frame {} (highlighted)",
                    decisive
                        .iter()
                        .map(|f| format!("#{f}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            },
            if more > 0 {
                format!("; {more} more packet(s) not drawn")
            } else {
                String::new()
            }
        );
    }

    /// A timeline of one DNS lookup: a row per question (type and id), time to the right.
    fn dns_timeline(&mut self, fl: &Flow<'_>) {
        let frames: Vec<&FrameRef> = fl.frames.iter().take(MAX_ARROWS).copied().collect();
        let client_of = |fr: &FrameRef| -> Ep {
            if fr.dst_port == 53 {
                (fr.src, fr.src_port)
            } else {
                (fr.dst, fr.dst_port)
            }
        };
        // Rows: one per question (type + id when the detector says, else the client socket).
        let row_key = |fr: &FrameRef| -> String {
            match &fr.dns {
                Some(d) => format!("{} id=0x{:04x}", d.qtype, d.id),
                None => endpoint(client_of(fr).0, client_of(fr).1),
            }
        };
        let mut row_keys: Vec<String> = Vec::new();
        for fr in &frames {
            let k = row_key(fr);
            if !row_keys.contains(&k) {
                row_keys.push(k);
            }
        }
        let t0 = frames.iter().map(|f| f.ts_ns).min().unwrap_or(0);
        let t1 = frames.iter().map(|f| f.ts_ns).max().unwrap_or(0);
        let span = (t1 - t0).max(1) as f64;
        let (left, plot_w) = (260.0, 700.0);
        // Time runs to the right in proportion, except that events closer than MIN_DX apart (a query
        // and its answer within a millisecond, beside a 5 s timeout) are pushed apart: each label
        // says its time.
        const MIN_DX: f64 = 190.0;
        let mut xs: Vec<(u64, f64)> = Vec::new();
        let mut last_x = f64::MIN;
        for fr in &frames {
            let x = (left + plot_w * ((fr.ts_ns - t0) as f64) / span).max(last_x + MIN_DX);
            xs.push((fr.frame, x));
            last_x = x;
        }
        let right = last_x.max(left + plot_w);
        let x_of_frame = |fr: &FrameRef| {
            xs.iter()
                .find(|(f, _)| *f == fr.frame)
                .map_or(left, |(_, x)| *x)
        };
        const ROW_DY: f64 = 70.0;
        let height = 60.0 + ROW_DY * row_keys.len() as f64 + 20.0;
        let width = right + 160.0;
        let plot_w = right - left;
        let decisive: Vec<u64> = frames
            .iter()
            .filter(|f| f.decisive)
            .map(|f| f.frame)
            .collect();
        let client = frames.first().map(|f| client_of(f));
        let did = self.id("diagram-");
        let _ = write!(
            self.out,
            "<div class=\"diagram\" id=\"{did}\"><svg class=\"dns-timeline\" data-file=\"{}\" data-flow=\"{}\" data-rows=\"{}\" data-packets=\"{}\" data-decisive-frames=\"{}\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" role=\"img\" aria-label=\"timeline of one DNS lookup\">",
            esc(fl.file),
            esc(&fl.key),
            row_keys.len(),
            frames.len(),
            decisive.iter().map(u64::to_string).collect::<Vec<_>>().join(" ")
        );
        let _ = write!(
            self.out,
            "<text x=\"8\" y=\"18\" font-size=\"12\" font-weight=\"700\">lookup from {}</text><line x1=\"{left}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"#8a96a3\"/><text x=\"{left}\" y=\"{:.1}\" font-size=\"10\" fill=\"#5b6570\">{}</text><text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\" text-anchor=\"end\" fill=\"#5b6570\">+{}</text>",
            esc(&client.map(|c| endpoint(c.0, c.1)).unwrap_or_default()),
            height - 24.0,
            left + plot_w,
            height - 24.0,
            height - 10.0,
            esc(frames.first().map(|f| time_of_day(&f.time)).unwrap_or("")),
            left + plot_w,
            height - 10.0,
            human_duration(t1 - t0)
        );
        for (ri, key) in row_keys.iter().enumerate() {
            let y = 60.0 + ROW_DY * ri as f64;
            let in_row: Vec<&FrameRef> = frames
                .iter()
                .copied()
                .filter(|f| row_key(f) == *key)
                .collect();
            let server = in_row
                .iter()
                .find(|f| f.dst_port == 53)
                .map(|f| endpoint(f.dst, f.dst_port))
                .unwrap_or_default();
            let _ = write!(
                self.out,
                "<g class=\"question\" data-row=\"{}\"><text x=\"8\" y=\"{:.1}\" font-size=\"12\" font-weight=\"700\">{}</text><text x=\"8\" y=\"{:.1}\" font-size=\"10\" fill=\"#5b6570\">to nameserver {}</text><line x1=\"{left}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"#e1e6eb\"/>",
                esc(key),
                y - 4.0,
                esc(key),
                y + 10.0,
                esc(&server),
                left + plot_w
            );
            // The resolver's timeout: from a query never answered to its retry.
            let lost = in_row
                .iter()
                .find(|f| f.decisive || f.what.contains("never answered"));
            let retry = in_row
                .iter()
                .find(|f| f.dns.as_ref().is_some_and(|d| d.retry) || f.what.contains("re-sent"));
            if let (Some(l), Some(r)) = (lost, retry) {
                let (x0, x1) = (x_of_frame(l), x_of_frame(r));
                let _ = write!(
                    self.out,
                    "<g class=\"timeout\" data-gap-ns=\"{}\"><line x1=\"{x0:.1}\" y1=\"{:.1}\" x2=\"{x1:.1}\" y2=\"{:.1}\" stroke=\"#c62828\" stroke-dasharray=\"5 3\"/><text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"middle\" fill=\"#c62828\">no answer: timeout {}, then retry</text></g>",
                    r.ts_ns - l.ts_ns,
                    y + 30.0,
                    y + 30.0,
                    (x0 + x1) / 2.0,
                    y + 42.0,
                    human_duration(r.ts_ns - l.ts_ns)
                );
            }
            for (ei, fr) in in_row.iter().enumerate() {
                let x = x_of_frame(fr);
                // Long words of neighbouring events alternate between two lines.
                let label_y = y + if ei % 2 == 1 && fr.dns.is_none() {
                    32.0
                } else {
                    20.0
                };
                let response = fr.dns.as_ref().map_or(fr.src_port == 53, |d| d.response);
                let retry = fr.dns.as_ref().is_some_and(|d| d.retry);
                // Without the detector's DNS marks, the detector's own words say what the packet is.
                let words = (fr.dns.is_none()).then(|| shorten(&fr.what, 44));
                let (shape, label) = if response && fr.decisive {
                    (
                        format!(
                            "<path d=\"M{x:.1},{:.1}l9,9l-9,9l-9,-9z\" fill=\"#c62828\"/>",
                            y - 9.0
                        ),
                        words.clone().unwrap_or_else(|| {
                            format!(
                                "answer taken (first for its ID), from {}",
                                endpoint(fr.src, fr.src_port)
                            )
                        }),
                    )
                } else if response {
                    (
                        format!(
                            "<path d=\"M{x:.1},{:.1}l7,7l-7,7l-7,-7z\" fill=\"#2e7d32\"/>",
                            y - 7.0
                        ),
                        words.clone().unwrap_or_else(|| {
                            format!("answer from {}", endpoint(fr.src, fr.src_port))
                        }),
                    )
                } else if fr.decisive {
                    (
                        format!("<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"7\" fill=\"#fff\" stroke=\"#c62828\" stroke-width=\"3\"/>"),
                        words
                            .clone()
                            .unwrap_or_else(|| "query, never answered".to_string()),
                    )
                } else if retry {
                    (
                        format!("<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"6\" fill=\"#b26a00\"/>"),
                        words.clone().unwrap_or_else(|| "retry".to_string()),
                    )
                } else {
                    (
                        format!("<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"6\" fill=\"#1565c0\"/>"),
                        words.clone().unwrap_or_else(|| "query".to_string()),
                    )
                };
                let _ = write!(
                    self.out,
                    "<g class=\"{}\" data-frame=\"{}\" data-decisive=\"{}\" data-ts-ns=\"{}\"><title>#{} {} {}</title>{shape}<text x=\"{x:.1}\" y=\"{:.1}\" font-size=\"10.5\" text-anchor=\"middle\" font-weight=\"700\">#{} +{}</text><text x=\"{x:.1}\" y=\"{:.1}\" font-size=\"10\" text-anchor=\"middle\"{}>{}</text></g>",
                    if fr.decisive { "pkt decisive" } else { "pkt" },
                    fr.frame,
                    fr.decisive,
                    fr.ts_ns,
                    fr.frame,
                    esc(time_of_day(&fr.time)),
                    esc(&fr.what),
                    y - 12.0,
                    fr.frame,
                    human_duration(fr.ts_ns - t0),
                    label_y,
                    if fr.decisive { " fill=\"#c62828\" font-weight=\"700\"" } else { "" },
                    esc(&label)
                );
            }
            self.out.push_str("</g>");
        }
        self.out.push_str("</svg></div>");
        let _ = write!(
            self.out,
            "<p class=\"caption\">{}: {}{}</p>",
            esc(fl.file),
            esc(fl.note),
            if decisive.is_empty() {
                String::new()
            } else {
                format!(
                    "; decisive: frame {} (highlighted)",
                    decisive
                        .iter()
                        .map(|f| format!("#{f}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        );
    }

    fn diagnostics(&mut self, diags: &[super::json::Diagnostic]) {
        if diags.is_empty() {
            return;
        }
        self.out.push_str("<h2>Input problems</h2><p class=\"muted\">Counted; the rest was analysed.</p><table><tr><th>source</th><th>code</th><th>count</th><th>where</th><th>message</th></tr>");
        for d in diags {
            let mut at = Vec::new();
            if let Some(o) = d.offset {
                at.push(format!("byte {o}"));
            }
            if let Some(f) = d.frame {
                at.push(format!("frame {f}"));
            }
            if let Some(l) = d.line {
                at.push(format!("line {l}"));
            }
            let _ = write!(
                self.out,
                "<tr><td>{}</td><td class=\"mono\">{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&d.source),
                esc(&d.code),
                d.count,
                at.join(", "),
                esc(&d.message)
            );
        }
        self.out.push_str("</table>");
    }

    fn notes(&mut self, notes: &[String]) {
        if notes.is_empty() {
            return;
        }
        self.out.push_str("<h4>Notes</h4><ul class=\"notes\">");
        for n in notes {
            let _ = write!(self.out, "<li>{}</li>", esc(n));
        }
        self.out.push_str("</ul>");
    }
}

const GUTTER: f64 = 180.0;
const COL_W: f64 = 330.0;
const TOP: f64 = 66.0;
const ROW_H: f64 = 34.0;
const IDLE_H: f64 = 44.0;
const LANE_COLOURS: [&str; 6] = [
    "#1565c0", "#6a1b9a", "#00838f", "#ef6c00", "#2e7d32", "#ad1457",
];

type Ep = (IpAddr, u16);
/// A leg: a tuple as an unordered pair of endpoints (smaller first).
type LegKey = (Ep, Ep);

fn leg_of(fr: &FrameRef) -> LegKey {
    let (a, b) = ((fr.src, fr.src_port), (fr.dst, fr.dst_port));
    if a <= b {
        (a, b)
    } else {
        (b, a)
    }
}

enum Row<'a> {
    Idle { y: f64, gap: i64 },
    Packet { y: f64, fr: &'a FrameRef },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FlowKind {
    Tcp,
    Dns,
}

/// One connection or lookup of a finding's evidence: the frames one diagram draws.
struct Flow<'a> {
    file: &'a str,
    note: &'a str,
    /// The detector's flow id, else the tuple (`flow 12`, `10.0.0.1:5 ↔ 10.0.0.2:80`).
    key: String,
    kind: FlowKind,
    frames: Vec<&'a FrameRef>,
}

/// The connections and lookups of a finding's packets: per evidence item, frames grouped by the
/// detector's `flow` id (a connection across its NAT legs, a lookup's queries), or by tuple where
/// the detector gave none; each sorted by time.
fn flows_of(evidence: &[Evidence]) -> Vec<Flow<'_>> {
    let mut out: Vec<Flow<'_>> = Vec::new();
    for e in evidence {
        let Evidence::Packets { file, frames, note } = e else {
            continue;
        };
        let start = out.len();
        for fr in frames {
            let key = match fr.flow {
                Some(id) => format!("flow {id}"),
                None if fr.tcp.is_none() && (fr.src_port == 53 || fr.dst_port == 53) => {
                    // A DNS packet without a lookup id: one timeline per client socket.
                    let c = if fr.dst_port == 53 {
                        (fr.src, fr.src_port)
                    } else {
                        (fr.dst, fr.dst_port)
                    };
                    format!("socket {}", endpoint(c.0, c.1))
                }
                None => {
                    let (a, b) = leg_of(fr);
                    format!("{} ↔ {}", endpoint(a.0, a.1), endpoint(b.0, b.1))
                }
            };
            match out[start..].iter_mut().find(|f| f.key == key) {
                Some(f) => f.frames.push(fr),
                None => out.push(Flow {
                    file,
                    note,
                    key,
                    kind: FlowKind::Tcp,
                    frames: vec![fr],
                }),
            }
        }
        for f in &mut out[start..] {
            f.frames.sort_by_key(|fr| (fr.ts_ns, fr.frame));
            let dns = f.frames.iter().all(|fr| {
                fr.tcp.is_none() && (fr.dns.is_some() || fr.src_port == 53 || fr.dst_port == 53)
            });
            if dns {
                f.kind = FlowKind::Dns;
            }
        }
    }
    out
}

/// `SYN seq=… ack=… len=…` of a TCP packet; the detector's words otherwise.
fn packet_label(fr: &FrameRef) -> String {
    match &fr.tcp {
        Some(t) => {
            let mut s = t.flags.clone();
            if t.flags != "RST" || t.seq != 0 {
                let _ = write!(s, " seq={}", t.seq);
            }
            if t.flags.contains("ACK") {
                let _ = write!(s, " ack={}", t.ack);
            }
            if let Some(l) = fr.len {
                let _ = write!(s, " len={l}");
            }
            s
        }
        None => fr.what.clone(),
    }
}

fn endpoint(ip: IpAddr, port: u16) -> String {
    match ip {
        IpAddr::V4(a) => format!("{a}:{port}"),
        IpAddr::V6(a) => format!("[{a}]:{port}"),
    }
}

fn conf(f: &Finding) -> &'static str {
    match f.confidence {
        super::json::Confidence::Confirmed => "confirmed",
        super::json::Confidence::Likely => "likely",
        super::json::Confidence::Possible => "possible",
    }
}

fn kind_class(k: FindingKind) -> &'static str {
    match k {
        FindingKind::Incident => "incident",
        FindingKind::LatentRisk => "latent-risk",
    }
}

/// `3 h 12 min`, `4 min 5 s`, `3.5 s`, `120 ms`, `850 µs`.
pub fn human_duration(ns: i64) -> String {
    let ns = ns.max(0);
    let s = ns / 1_000_000_000;
    if s >= 3600 {
        format!("{} h {} min", s / 3600, (s % 3600) / 60)
    } else if s >= 60 {
        format!("{} min {} s", s / 60, s % 60)
    } else if ns >= 1_000_000_000 {
        format!("{:.1} s", ns as f64 / 1e9)
    } else if ns >= 1_000_000 {
        format!("{} ms", ns / 1_000_000)
    } else {
        format!("{} µs", ns / 1_000)
    }
}

/// `s` cut to `max` characters, with `…` when cut.
fn shorten(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &s[..at]),
        None => s.to_string(),
    }
}

/// `08:24:34.685334` of `2026-11-23T08:24:34.685334Z`; the whole text when it is not of that shape.
fn time_of_day(rfc3339: &str) -> &str {
    rfc3339
        .get(11..rfc3339.len().saturating_sub(1))
        .filter(|_| rfc3339.as_bytes().get(10) == Some(&b'T'))
        .unwrap_or(rfc3339)
}

/// `s` as one POSIX shell word: bare when it holds only safe characters, else single-quoted.
fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:,+@%=".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::json::{Confidence, FrameRef, TcpFields};

    fn frame(n: u64, ts_s: f64, src: &str, dst: &str, flags: &str) -> FrameRef {
        let (s, sp) = src.rsplit_once(':').unwrap();
        let (d, dp) = dst.rsplit_once(':').unwrap();
        FrameRef {
            frame: n,
            ts_ns: (ts_s * 1e9) as i64,
            time: crate::finding::format_ts((ts_s * 1e9) as i64),
            src: s.parse().unwrap(),
            src_port: sp.parse().unwrap(),
            dst: d.parse().unwrap(),
            dst_port: dp.parse().unwrap(),
            what: format!("TCP {flags} <hostile>\u{1b}[2J"),
            interface: None,
            tcp: Some(TcpFields {
                flags: flags.into(),
                seq: 7,
                ack: 9,
            }),
            len: Some(0),
            flow: Some(3),
            decisive: n == 245,
            dns: None,
            src_name: None,
            dst_name: None,
        }
    }

    fn dnat_doc(connections: usize) -> Document {
        let mut evidence = Vec::new();
        for c in 0..connections {
            let mut frames = vec![
                frame(88, 0.0, "10.244.1.10:50814", "10.96.0.20:80", "ACK"),
                frame(
                    245,
                    11520.0,
                    "10.244.1.10:50814",
                    "10.244.2.12:8080",
                    "PSH|ACK",
                ),
                frame(
                    247,
                    11520.001,
                    "10.244.2.12:8080",
                    "10.244.1.10:50814",
                    "RST",
                ),
            ];
            for f in &mut frames {
                f.flow = Some(c as u64);
            }
            evidence.push(Evidence::Packets {
                file: "it's <a>.pcap".into(),
                frames,
                note: "one connection".into(),
            });
        }
        let f = Finding {
            id: "conntrack-dnat-rebalance".into(),
            kind: FindingKind::Incident,
            confidence: Confidence::Confirmed,
            summary: "<script>alert(1)</script>".into(),
            evidence,
            reasoning: vec![],
            explanation: "x".into(),
            remedy: "y".into(),
            cases: vec![],
            look_alikes: vec![],
        };
        let mut doc: Document =
            serde_json::from_str(&crate::report::json::Document::catalogue(&[]).to_json()).unwrap();
        doc.command = "analyze".into();
        doc.catalogue = None;
        doc.findings = vec![f];
        doc
    }

    #[test]
    fn a_ladder_has_a_lane_per_leg_an_idle_break_and_the_decisive_packet() {
        let html = render(&dnat_doc(1));
        assert_eq!(html.matches("<svg class=\"ladder\"").count(), 1);
        assert_eq!(html.matches("<g class=\"lane\"").count(), 2);
        assert!(html.contains("idle 3 h 12 min"), "{html}");
        assert!(html.contains("data-frame=\"245\" data-leg=\"1\" data-decisive=\"true\""));
        assert!(html.contains("PSH|ACK seq=7 ack=9 len=0"));
        assert!(html.contains("tshark -r &#39;it&#39;\\&#39;&#39;s &lt;a&gt;.pcap&#39; -Y &#39;frame.number in {88 245 247}&#39;"));
        assert!(!html.contains("<script>alert"));
        assert!(!html.contains('\u{1b}'));
        assert!(!html.contains("http://") && !html.contains("https://"));
    }

    #[test]
    fn many_connections_are_capped() {
        let html = render(&dnat_doc(500));
        assert_eq!(html.matches("<svg class=\"ladder\"").count(), MAX_DIAGRAMS);
        assert!(html.contains(&format!("and {} more like it", 500 - MAX_DIAGRAMS)));
        assert!(html.len() < 200_000, "{} bytes", html.len());
    }

    #[test]
    fn a_counter_is_charted_over_its_samples() {
        let mut doc = dnat_doc(0);
        doc.command = "check".into();
        doc.findings[0].evidence = vec![
            Evidence::Counter {
                source: "netns/node/netstat".into(),
                name: "TcpExt.ListenOverflows".into(),
                before: Some(10),
                after: 250,
            },
            Evidence::Counter {
                source: "netns/node/conntrack-S.txt".into(),
                name: "insert_failed".into(),
                before: None,
                after: 1,
            },
        ];
        let html = render(&doc);
        assert!(html.contains("data-counter=\"TcpExt.ListenOverflows\" data-samples=\"2\""));
        assert!(html.contains("data-counter=\"insert_failed\" data-samples=\"1\""));
        assert!(html.contains("<b>+240</b>"));
        assert_eq!(html.matches("<svg class=\"ladder\"").count(), 0);
    }

    #[test]
    fn durations_read_as_people_say_them() {
        assert_eq!(human_duration(11_520 * 1_000_000_000), "3 h 12 min");
        assert_eq!(human_duration(3_500_000_000), "3.5 s");
        assert_eq!(human_duration(125 * 1_000_000_000), "2 min 5 s");
        assert_eq!(human_duration(120_000_000), "120 ms");
        assert_eq!(shell_quote("a/b.pcap"), "a/b.pcap");
        assert_eq!(shell_quote("a b"), "'a b'");
    }

    #[test]
    fn kubernetes_names_reach_the_page_words_and_the_ladder_columns() {
        let names = crate::names::Names::from_json(
            br#"{"kind":"List","items":[{"kind":"Pod","metadata":{"name":"client-7d9f","namespace":"default"},"status":{"podIP":"10.244.1.10","podIPs":[{"ip":"10.244.1.10"}]}}]}"#,
        )
        .unwrap();
        let mut doc = dnat_doc(1);
        doc.findings[0].summary = "connection 10.244.1.10:50814 was reset".into();
        let plain = render(&doc);
        assert!(!plain.contains("client-7d9f"));
        // The words: annotated for the page only.
        let page = render_named(&doc.clone().with_names(&names), &names);
        assert!(
            page.contains("pod default/client-7d9f"),
            "summary not named"
        );
        assert_eq!(
            doc.findings[0].summary,
            "connection 10.244.1.10:50814 was reset"
        );
        // The ladder: the client's column carries its name from the frames.
        let named = doc.with_names(&names);
        let html = render(&named);
        assert!(
            html.contains("client · pod default/client-7d9f"),
            "column not named"
        );
    }
}
