//! The human report: causes first, then the evidence for each, then what else was seen.
//!
//! Every string that can hold input-derived text (file names, summaries quoting config lines, evidence,
//! notes, diagnostics) goes through [`esc`] as it is formatted; the line breaks and indentation are the
//! renderer's own. `id`, `explanation` and `remedy` are the catalogue's compiled-in text.

use super::escape::for_terminal as esc;
use super::Report;
use crate::finding::{format_ts, Confidence, Diagnostic, Evidence, FindingKind, FrameRef};
use crate::names::Names;
use std::fmt::Write;

/// The terminal width the report is laid out for: every line fits it (a token longer than a line,
/// such as a long path, is broken across lines).
pub const WIDTH: usize = 80;

/// How capture timestamps are shown: with their date and zone, like `tcpdump -tttt`.
#[derive(Clone, Copy, Default)]
pub enum Zone<'a> {
    /// `2026-11-23 21:02:32.360527 UTC`.
    #[default]
    Utc,
    /// A local zone: for a Unix time in seconds, its offset from UTC in seconds and its abbreviation
    /// (`CET`). The caller reads the zone; the core reads no clock and no environment.
    Local(&'a dyn Fn(i64) -> (i32, String)),
}

/// How the human report is drawn. The default is what a pipe gets: no colour, UTC, every line within
/// [`WIDTH`], addresses bare.
#[derive(Clone, Copy)]
pub struct Style<'a> {
    /// ANSI colour for confidence, kinds and headings (the renderer's own words only: input text is
    /// never coloured).
    pub color: bool,
    pub zone: Zone<'a>,
    /// Kubernetes names for the addresses (`--k8s`).
    pub names: Option<&'a Names>,
    /// Only the causes (`--quiet`): the headline lines, no details.
    pub headline_only: bool,
    pub width: usize,
}

impl Default for Style<'_> {
    fn default() -> Self {
        Style {
            color: false,
            zone: Zone::Utc,
            names: None,
            headline_only: false,
            width: WIDTH,
        }
    }
}

const BOLD: &str = "1";
const RED: &str = "1;31";
const YELLOW: &str = "33";
const CYAN: &str = "36";
const GREEN: &str = "32";

impl Style<'_> {
    /// `text` in an ANSI colour when colour is on. Only the renderer's own words are painted.
    pub fn paint(&self, sgr: &str, text: &str) -> String {
        if self.color {
            format!("\x1b[{sgr}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }

    pub fn bold(&self, text: &str) -> String {
        self.paint(BOLD, text)
    }

    /// `[confirmed]` red, `[likely]` yellow, `[possible]` cyan.
    pub fn confidence(&self, c: Confidence) -> String {
        let sgr = match c {
            Confidence::Confirmed => RED,
            Confidence::Likely => YELLOW,
            Confidence::Possible => CYAN,
        };
        self.paint(sgr, c.as_str())
    }

    pub fn kind(&self, k: FindingKind) -> String {
        match k {
            FindingKind::Incident => self.paint(RED, "incident"),
            FindingKind::LatentRisk => self.paint(YELLOW, "latent risk"),
        }
    }

    /// A verdict of the lab: `PROVEN` green, `NOT PROVEN` red.
    pub fn verdict(&self, proven: bool) -> String {
        if proven {
            self.paint(GREEN, "PROVEN")
        } else {
            self.paint(RED, "NOT PROVEN")
        }
    }

    /// Input-derived text: its addresses named (`--k8s`), then escaped for the terminal.
    pub fn text(&self, s: &str) -> String {
        match self.names {
            Some(n) => esc(&n.annotate(s)).into_owned(),
            None => esc(s).into_owned(),
        }
    }

    /// A socket address as the report prints it: named when the table knows it. Port 0 is no
    /// TCP/UDP port: the packet has none (ARP, ICMP), so the address stands alone.
    fn socket(&self, addr: &std::net::IpAddr, port: u16) -> String {
        match self.names {
            Some(n) => esc(&n.socket(addr, (port != 0).then_some(port))).into_owned(),
            None => Names::default().socket(addr, (port != 0).then_some(port)),
        }
    }

    /// A capture timestamp with its date and zone: `2026-11-23 21:02:32.360527 UTC`.
    pub fn timestamp(&self, ts_ns: i64) -> String {
        let (offset, zone) = match self.zone {
            Zone::Utc => (0, "UTC".to_string()),
            Zone::Local(f) => f(ts_ns.div_euclid(1_000_000_000)),
        };
        let local = ts_ns.saturating_add(i64::from(offset).saturating_mul(1_000_000_000));
        let text = format_ts(local);
        let text = text
            .strip_suffix('Z')
            .unwrap_or(&text)
            .replacen('T', " ", 1);
        format!("{text} {}", esc(&zone))
    }

    /// `text` wrapped within the width: the first line after `first`, the next ones after `rest`.
    pub fn wrap(&self, out: &mut String, first: &str, rest: &str, text: &str) {
        wrap_into(out, self.width, first, rest, text);
    }
}

/// How many columns `s` takes: ANSI colour sequences (only ever the renderer's own) take none.
pub fn visible_width(s: &str) -> usize {
    let mut n = 0;
    let mut in_escape = false;
    for c in s.chars() {
        if in_escape {
            in_escape = c != 'm';
        } else if c == '\x1b' {
            in_escape = true;
        } else {
            n += 1;
        }
    }
    n
}

/// Greedy word wrap of `text` into lines of at most `width` columns; a word longer than a line is
/// broken. Each line ends with a newline.
pub fn wrap_into(out: &mut String, width: usize, first: &str, rest: &str, text: &str) {
    let mut line = first.to_string();
    let mut empty = true;
    for word in text.split(' ').filter(|w| !w.is_empty()) {
        let need = visible_width(word) + usize::from(!empty);
        if !empty && visible_width(&line) + need > width {
            out.push_str(line.trim_end());
            out.push('\n');
            line = rest.to_string();
            empty = true;
        }
        let room = width.saturating_sub(visible_width(&line) + usize::from(!empty));
        if visible_width(word) > room && !word.contains('\x1b') && room > 0 {
            // Too long for any line (a long path): broken where the line ends.
            let mut chars = word.chars().peekable();
            if !empty {
                line.push(' ');
            }
            let mut room = room;
            while chars.peek().is_some() {
                let piece: String = chars.by_ref().take(room).collect();
                line.push_str(&piece);
                if chars.peek().is_some() {
                    out.push_str(&line);
                    out.push('\n');
                    line = rest.to_string();
                    room = width.saturating_sub(visible_width(&line)).max(1);
                }
            }
            empty = false;
            continue;
        }
        if !empty {
            line.push(' ');
        }
        line.push_str(word);
        empty = false;
    }
    out.push_str(line.trim_end());
    out.push('\n');
}

/// Text laid out by someone else (the lab's record of a run) made to fit `width`: a longer line is
/// wrapped under its own indentation, its continuation two columns deeper.
pub fn fit(text: &str, width: usize) -> String {
    let mut out = String::new();
    for line in text.lines() {
        if visible_width(line) <= width {
            out.push_str(line);
            out.push('\n');
            continue;
        }
        let body = line.trim_start();
        let indent = &line[..line.len() - body.len()];
        wrap_into(&mut out, width, indent, &format!("{indent}  "), body);
    }
    out
}

/// `1234567` → `1,234,567`.
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The report as a pipe gets it (see [`Style::default`]).
pub fn render(r: &Report) -> String {
    render_with(r, &Style::default())
}

pub fn render_with(r: &Report, st: &Style<'_>) -> String {
    let mut out = String::new();
    let incidents: Vec<_> = r
        .findings
        .iter()
        .filter(|f| f.kind == FindingKind::Incident)
        .collect();
    let risks: Vec<_> = r
        .findings
        .iter()
        .filter(|f| f.kind == FindingKind::LatentRisk)
        .collect();
    let inputs = st.text(&r.inputs.join(", "));
    if incidents.is_empty() {
        st.wrap(
            &mut out,
            "",
            "  ",
            &format!("No incident found in {inputs}."),
        );
    } else {
        let head = format!("{} incident finding(s) in {inputs}:", incidents.len());
        st.wrap(&mut out, "", "  ", &st.bold(&head));
        for f in &incidents {
            let line = format!(
                "[{}] {}: {}",
                st.confidence(f.confidence),
                st.bold(f.id),
                st.text(&f.summary)
            );
            st.wrap(&mut out, "  ", "    ", &line);
        }
    }
    if !risks.is_empty() {
        st.wrap(
            &mut out,
            "",
            "  ",
            &st.bold(&format!("{} latent risk(s):", risks.len())),
        );
        for f in &risks {
            let line = format!(
                "[{}] {}: {}",
                st.confidence(f.confidence),
                st.bold(f.id),
                st.text(&f.summary)
            );
            st.wrap(&mut out, "  ", "    ", &line);
        }
    }
    if st.headline_only {
        return out;
    }
    if !r.symptoms.is_empty() {
        let some_unexplained = r
            .symptoms
            .iter()
            .any(|s| !s.considered.iter().any(|c| c.verdict == "explains"));
        let head = format!(
            "{} symptom(s) seen{}:",
            r.symptoms.len(),
            if some_unexplained {
                " (some with no catalogue cause: see \"Symptoms\" below)"
            } else {
                ""
            }
        );
        st.wrap(&mut out, "", "  ", &head);
        for s in &r.symptoms {
            let by: Vec<&str> = s
                .considered
                .iter()
                .filter(|c| c.verdict == "explains")
                .map(|c| c.id)
                .collect();
            let by = if by.is_empty() {
                String::new()
            } else {
                format!(" — explained by {}", by.join(", "))
            };
            st.wrap(
                &mut out,
                "  ",
                "    ",
                &format!("{}{by}", st.text(&s.summary)),
            );
        }
    }
    if !r.blind_spots.is_empty() {
        st.wrap(
            &mut out,
            "",
            "  ",
            &format!(
                "{} blind spot(s): see \"Not examined\" below",
                r.blind_spots.len()
            ),
        );
    }
    for (i, f) in r.findings.iter().enumerate() {
        let _ = writeln!(out);
        let head = format!(
            "{}. {} ({}, {})",
            i + 1,
            st.bold(f.id),
            st.kind(f.kind),
            st.confidence(f.confidence)
        );
        st.wrap(&mut out, "", "   ", &head);
        st.wrap(&mut out, "   ", "   ", &st.text(&f.summary));
        for c in &f.cases {
            st.wrap(&mut out, "   ", "     ", &format!("also: {}", st.text(c)));
        }
        if !f.reasoning.is_empty() {
            let _ = writeln!(
                out,
                "   {}",
                st.bold(&format!("Why {}:", f.confidence.as_str()))
            );
            for why in &f.reasoning {
                st.wrap(&mut out, "     - ", "       ", &st.text(why));
            }
        }
        if !f.look_alikes.is_empty() {
            let _ = writeln!(out, "   {}", st.bold("Look-alikes:"));
            for l in &f.look_alikes {
                let verdict = if l.ruled_out {
                    "not"
                } else {
                    "cannot rule out"
                };
                let line = format!("{verdict} {}: {}", l.id, st.text(&l.why));
                st.wrap(&mut out, "     - ", "       ", &line);
            }
        }
        if !f.evidence.is_empty() {
            let _ = writeln!(out, "   {}", st.bold("Evidence:"));
        }
        for e in &f.evidence {
            write_evidence(&mut out, st, e, "     ");
        }
        let mechanism = format!("{} {}", st.bold("Mechanism:"), f.explanation);
        st.wrap(&mut out, "   ", "     ", &mechanism);
        st.wrap(
            &mut out,
            "   ",
            "     ",
            &format!("{} {}", st.bold("Fix:"), f.remedy),
        );
    }
    for (i, sy) in r.symptoms.iter().enumerate() {
        if i == 0 {
            let _ = writeln!(out);
            let head = "Symptoms (what the input shows, whatever the cause):";
            st.wrap(&mut out, "", "  ", &st.bold(head));
        }
        let _ = writeln!(out);
        st.wrap(&mut out, "  ", "    ", &st.text(&sy.summary));
        for e in &sy.evidence {
            write_evidence(&mut out, st, e, "     ");
        }
        if !sy.considered.is_empty() {
            let _ = writeln!(out, "   Causes considered:");
        }
        for c in &sy.considered {
            let line = format!("{} ({}): {}", c.id, c.verdict, st.text(&c.why));
            st.wrap(&mut out, "     - ", "       ", &line);
        }
        if let Some(o) = &sy.otherwise {
            st.wrap(
                &mut out,
                "   ",
                "     ",
                &format!("Otherwise: {}", st.text(o)),
            );
        }
    }
    if !r.blind_spots.is_empty() {
        let _ = writeln!(out);
        st.wrap(
            &mut out,
            "",
            "  ",
            &st.bold("Not examined (no finding is claimed for these):"),
        );
        for b in &r.blind_spots {
            st.wrap(&mut out, "  - ", "    ", &st.text(&b.what));
            if !b.undecided.is_empty() {
                st.wrap(
                    &mut out,
                    "    undecided: ",
                    "      ",
                    &b.undecided.join(", "),
                );
            }
        }
    }
    let (info, problems): (Vec<&Diagnostic>, Vec<&Diagnostic>) =
        r.diagnostics.iter().partition(|d| d.is_info());
    if !r.notes.is_empty() || !info.is_empty() {
        let _ = writeln!(out);
        for n in &r.notes {
            st.wrap(&mut out, "note: ", "  ", &st.text(n));
        }
        // One line per kind of fact, however many inputs share it (`captured with snaplen 262`).
        let mut shown: Vec<&str> = Vec::new();
        for d in &info {
            if shown.contains(&d.message.as_str()) {
                continue;
            }
            shown.push(&d.message);
            let same: Vec<&&Diagnostic> = info.iter().filter(|x| x.message == d.message).collect();
            let packets: u64 = same.iter().map(|x| x.count).sum();
            let whence = if same.len() == 1 {
                st.text(&d.source)
            } else {
                format!("{} files", same.len())
            };
            let line = format!(
                "{} ({packets} packet(s) cut in {whence})",
                st.text(&d.message)
            );
            st.wrap(&mut out, "info: ", "  ", &line);
        }
    }
    if !problems.is_empty() {
        let _ = writeln!(out);
        let head = "Input problems (counted, the rest was analysed):";
        st.wrap(&mut out, "", "  ", &st.bold(head));
        for d in &problems {
            let mut loc = String::new();
            if let Some(o) = d.offset {
                let _ = write!(loc, " at byte {o}");
            }
            if let Some(fr) = d.frame {
                let _ = write!(loc, " (first at frame {fr})");
            }
            if let Some(l) = d.line {
                let _ = write!(loc, " (first at line {l})");
            }
            let line = format!(
                "{}: {} ×{}{}: {}",
                st.text(&d.source),
                d.code,
                d.count,
                loc,
                st.text(&d.message)
            );
            st.wrap(&mut out, "  ", "    ", &line);
        }
    }
    out
}

/// One piece of evidence, indented by `indent`; input-derived text escaped.
fn write_evidence(out: &mut String, st: &Style<'_>, e: &Evidence, indent: &str) {
    let deeper = format!("{indent}  ");
    match e {
        Evidence::Packets { file, frames, note } => {
            let line = format!("{}: {}", st.text(file), st.text(note));
            st.wrap(out, indent, &deeper, &line);
            let frame_indent = format!("{indent}  ");
            let what_indent = format!("{indent}      ");
            for fr in frames {
                write_frame(out, st, fr, &frame_indent, &what_indent);
            }
        }
        Evidence::Counter {
            source,
            name,
            before,
            after,
        } => {
            let (source, name) = (st.text(source), st.text(name));
            let line = match before {
                Some(b) => format!(
                    "{source}: {name} {b} → {after} (+{})",
                    after.saturating_sub(*b)
                ),
                None => format!("{source}: {name} = {after}"),
            };
            st.wrap(out, indent, &deeper, &line);
        }
        Evidence::Config { source, line, text } => {
            let (source, text) = (st.text(source), st.text(text));
            let l = match line {
                Some(l) => format!("{source}:{l}: {text}"),
                None => format!("{source}: {text}"),
            };
            st.wrap(out, indent, &deeper, &l);
        }
        Evidence::Fact { source, text } => {
            let l = format!("{}: {}", st.text(source), st.text(text));
            st.wrap(out, indent, &deeper, &l);
        }
    }
}

/// `#88 2026-11-23 21:02:32.360527 UTC 10.244.1.10:50814 > 10.96.0.20:80`, then what the packet is:
/// on the same line when it fits, else on the lines below.
fn write_frame(out: &mut String, st: &Style<'_>, fr: &FrameRef, first: &str, rest: &str) {
    let line = format!(
        "#{} {} {} > {}",
        fr.frame,
        st.timestamp(fr.ts_ns),
        st.socket(&fr.src, fr.src_port),
        st.socket(&fr.dst, fr.dst_port)
    );
    let what = st.text(&fr.what);
    // A short description (`SYN`) stays on the packet's line; a longer one goes below it.
    if visible_width(first) + visible_width(&line) + 2 + visible_width(&what) <= st.width {
        out.push_str(&format!("{first}{line}  {what}\n"));
        return;
    }
    st.wrap(out, first, rest, &line);
    st.wrap(out, rest, rest, &what);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::CATALOGUE;
    use crate::finding::{Confidence, Diagnostic, Finding, FrameRef};

    const HOSTILE: &str = "\u{1b}]0;PWNED\u{7}\u{1b}[2J\nfake line\u{9b}";

    fn hostile_report() -> Report {
        let h = || HOSTILE.to_string();
        let frame = FrameRef {
            frame: 1,
            ts_ns: 0,
            time: h(),
            src: "10.0.0.1".parse().unwrap(),
            src_port: 1,
            dst: "10.0.0.2".parse().unwrap(),
            dst_port: 53,
            what: h(),
            interface: Some(h()),
            tcp: None,
            len: None,
            flow: None,
            decisive: false,
            dns: None,
        };
        let finding = |kind| {
            Finding::new(CATALOGUE[0], kind, Confidence::Likely, h())
                .because(h())
                .with_evidence(Evidence::Packets {
                    file: h(),
                    frames: vec![frame.clone()],
                    note: h(),
                })
                .with_evidence(Evidence::Counter {
                    source: h(),
                    name: h(),
                    before: Some(1),
                    after: 2,
                })
                .with_evidence(Evidence::Config {
                    source: h(),
                    line: Some(3),
                    text: h(),
                })
                .with_evidence(Evidence::Fact {
                    source: h(),
                    text: h(),
                })
        };
        Report {
            command: "check",
            inputs: vec![h(), h()],
            findings: vec![
                finding(FindingKind::Incident),
                finding(FindingKind::LatentRisk),
            ],
            diagnostics: vec![Diagnostic {
                source: h(),
                code: "unparsed-input",
                offset: Some(1),
                frame: Some(2),
                line: Some(3),
                count: 1,
                message: h(),
            }],
            stats: serde_json::Value::Null,
            notes: vec![h()],
            symptoms: Vec::new(),
            blind_spots: Vec::new(),
        }
    }

    #[test]
    fn input_text_cannot_reach_the_terminal_raw() {
        let text = render(&hostile_report());
        assert!(text.contains("\\x1b]0;PWNED\\x07\\x1b[2J\\nfake line\\u{9b}"));
        assert!(
            !text
                .chars()
                .any(|c| (c.is_control() && c != '\n') || c == '\u{9b}'),
            "{text:?}"
        );
        // Only the renderer's own lines: the hostile "\nfake line" never starts one.
        assert!(!text.lines().any(|l| l.starts_with("fake line")));
    }

    #[test]
    fn odd_timestamps_do_not_panic() {
        let mut r = hostile_report();
        for time in ["", "2026", "-1234-01-01T00:00:00.000000Z", "é"] {
            if let Evidence::Packets { frames, .. } = &mut r.findings[0].evidence[0] {
                frames[0].time = time.to_string();
            }
            render(&r);
        }
        let st = Style::default();
        assert_eq!(
            st.timestamp(1_795_422_283_924_598_000),
            "2026-11-23 08:24:43.924598 UTC"
        );
        let cet = |_secs: i64| (3600, "CET".to_string());
        let st = Style {
            zone: Zone::Local(&cet),
            ..Style::default()
        };
        assert_eq!(
            st.timestamp(1_795_422_283_924_598_000),
            "2026-11-23 09:24:43.924598 CET"
        );
        // The extremes of the clock saturate instead of overflowing.
        st.timestamp(i64::MAX);
        st.timestamp(i64::MIN);
    }

    /// The text with the renderer's colour sequences taken out.
    fn strip_sgr(s: &str) -> String {
        let mut out = String::new();
        let mut in_escape = false;
        for c in s.chars() {
            if in_escape {
                in_escape = c != 'm';
            } else if c == '\x1b' {
                in_escape = true;
            } else {
                out.push(c);
            }
        }
        out
    }

    #[test]
    fn colour_only_when_asked_and_every_line_fits_the_width() {
        let mut r = hostile_report();
        r.findings[0].summary = format!("{} {}", "word ".repeat(40), "x".repeat(200));
        let plain = render(&r);
        assert!(!plain.contains('\x1b'));
        let coloured = render_with(
            &r,
            &Style {
                color: true,
                ..Style::default()
            },
        );
        assert!(coloured.contains("\x1b[1;31mlikely") || coloured.contains("\x1b[33mlikely"));
        assert!(coloured.contains("\x1b[1;31mincident\x1b[0m"));
        // The same words at the same places: colour takes no column.
        assert_eq!(strip_sgr(&coloured), plain);
        for l in plain.lines() {
            assert!(
                l.chars().count() <= WIDTH,
                "{} columns: {l}",
                l.chars().count()
            );
        }
        // A token longer than a line is broken, not left overflowing.
        assert!(plain.contains(&"x".repeat(70)));
    }

    #[test]
    fn headline_only_stops_after_the_causes() {
        let r = hostile_report();
        let st = Style {
            headline_only: true,
            ..Style::default()
        };
        let text = render_with(&r, &st);
        assert!(text.contains("latent risk(s):"));
        assert!(!text.contains("Mechanism:") && !text.contains("Input problems"));
    }

    #[test]
    fn wrapping_keeps_indents_and_words() {
        let mut out = String::new();
        wrap_into(
            &mut out,
            20,
            "  - ",
            "    ",
            "one two three four five six seven",
        );
        assert_eq!(out, "  - one two three\n    four five six\n    seven\n");
        let mut out = String::new();
        wrap_into(&mut out, 10, "", "  ", "abcdefghijklmnopqrstuvwxyz");
        assert!(out.lines().all(|l| l.chars().count() <= 10), "{out}");
        assert_eq!(out.replace(['\n', ' '], ""), "abcdefghijklmnopqrstuvwxyz");
    }
}
