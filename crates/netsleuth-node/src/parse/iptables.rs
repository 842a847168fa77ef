//! `iptables-save` / `ip6tables-save` text, with kube-proxy's structure recognised.
//!
//! Each rule keeps its line and its text, once, in the ruleset's text arena; the options the detectors
//! use (target, protocol, destination, destination port, output interface, comment, probability,
//! `--to-destination`, `--random-fully`) are lifted as byte ranges into that text, and table, chain and
//! target names are interned in the ruleset's name table, so a rule is a fixed 52-byte record and no
//! option costs an allocation. Any other option is read from the text again on demand
//! ([`RuleRef::option`]). kube-proxy's chains (`KUBE-SERVICES` → `KUBE-SVC-*` → `KUBE-SEP-*` with
//! `statistic` probabilities and `DNAT --to-destination`) are assembled into [`Service`]s. A line that is
//! not iptables-save syntax (e.g. an `iptables -L` listing pasted in) is counted, not fatal.
//!
//! Memory is bounded by a [`RuleBudget`] shared by every ruleset of a bundle: past it, the rest of the
//! text is counted but not kept, and [`Ruleset::overflow`] says where and how much.

use super::{numbered_lines, IssueLog, Parsed};
use netsleuth_core::report::human::thousands;
use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;
use std::hash::BuildHasher;

/// Rules kept per bundle (and, separately, chain and table declarations): kube-proxy in iptables mode
/// writes about 11 rules and 4 chains per Service with 3 endpoints, so a cluster of 50 k Services
/// (≈ 550 k rules, 200 k chains) fits, with room for node ports and the filter table.
pub const MAX_RULES: usize = 750_000;

/// The longest rule kept (its text and unescaped option values): option ranges are 16-bit offsets.
/// iptables-save's longest lines are a few kB (a comment is at most 256 bytes).
pub const MAX_RULE_BYTES: usize = u16::MAX as usize - 1;

/// How many more rules and declarations may be kept. One budget is shared by every ruleset read from
/// one bundle (its namespaces' `iptables-save`, `iptables-legacy-save` and `ip6tables-save`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleBudget {
    /// What the budget started at (for the message).
    pub limit: usize,
    /// Rules that may still be kept.
    pub rules: usize,
    /// Chain (`:NAME POLICY`) and table (`*nat`) declarations that may still be kept.
    pub declarations: usize,
}

impl RuleBudget {
    pub fn new(limit: usize) -> RuleBudget {
        RuleBudget {
            limit,
            rules: limit,
            declarations: limit,
        }
    }
}

impl Default for RuleBudget {
    fn default() -> Self {
        RuleBudget::new(MAX_RULES)
    }
}

/// What was past the budget: counted, not kept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Overflow {
    /// The budget (rules per bundle).
    pub limit: usize,
    /// Line of the first rule or declaration not kept.
    pub line: u64,
    /// Rules counted, not kept (from that line on).
    pub rules: u64,
    /// Chain and table declarations counted, not kept.
    pub declarations: u64,
}

impl Overflow {
    /// The diagnostic's text, `source` being the artifact's name.
    pub fn message(&self, source: &str) -> String {
        let decls = if self.declarations > 0 {
            format!(
                " (and {} chain or table declaration(s))",
                thousands(self.declarations)
            )
        } else {
            String::new()
        };
        format!(
            "rule budget ({} rules per bundle) reached at line {} of {source}: {} further rules{decls} counted, not analysed; Service assembly is incomplete",
            thousands(self.limit as u64),
            thousands(self.line),
            thousands(self.rules),
        )
    }
}

/// An index into a ruleset's name table.
type NameId = u32;
const NO_NAME: NameId = u32::MAX;

/// Where a lifted option's value sits: `len` bytes at `off` from the start of the rule's text (a value
/// that had to be unescaped is stored right after the text). `off == u16::MAX`: the option is absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Field {
    off: u16,
    len: u16,
}

const ABSENT: Field = Field {
    off: u16::MAX,
    len: 0,
};

/// The lifted options, in [`Rule::fields`] order.
#[derive(Clone, Copy)]
enum F {
    Protocol = 0,
    Dst = 1,
    Dport = 2,
    OutIface = 3,
    Comment = 4,
    Probability = 5,
    ToDestination = 6,
}
const FIELDS: usize = 7;

/// `flags` bits: the option was negated (`! -d …`); `--random-fully` was given.
const NEGATED: [u16; 4] = [1, 2, 4, 8]; // protocol, dst, dport, out_iface
const RANDOM_FULLY: u16 = 16;

/// One kept rule: offsets into its ruleset's text arena and ids in its name table. Read it through
/// [`Ruleset::rule`] / [`Ruleset::iter`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    line: u32,
    /// The text: `len` bytes at `start` of the arena.
    start: u32,
    len: u16,
    flags: u16,
    table: NameId,
    chain: NameId,
    target: NameId,
    fields: [Field; FIELDS],
}

/// A chain declaration (`:KUBE-SERVICES - [0:0]`), as name-table ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainDecl {
    table: NameId,
    name: NameId,
    policy: NameId,
}

const EMPTY: u64 = u64::MAX;

/// Interned names (tables, chains, targets, policies): each stored once, found by an open-addressing
/// table hashed with a per-process random key (hostile names cannot be made to collide).
#[derive(Clone, Default)]
struct Names {
    text: String,
    spans: Vec<(u32, u32)>,
    /// Slot → the name's id in the low half and 32 bits of its hash in the high half (a probe compares
    /// text only when they match), `EMPTY` empty; the length is a power of two, at most half full.
    slots: Vec<u64>,
    hasher: std::collections::hash_map::RandomState,
}

impl fmt::Debug for Names {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries((0..self.spans.len() as NameId).map(|i| self.get(i)))
            .finish()
    }
}

impl PartialEq for Names {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text && self.spans == other.spans
    }
}

impl Names {
    fn get(&self, id: NameId) -> &str {
        let (s, l) = self.spans[id as usize];
        &self.text[s as usize..(s + l) as usize]
    }

    fn len(&self) -> usize {
        self.spans.len()
    }

    /// The slot where `s` (of hash `h`) is or would go.
    fn slot(&self, s: &str, h: u64) -> usize {
        let mask = self.slots.len() - 1;
        let tag = h >> 32;
        let mut i = h as usize & mask;
        loop {
            let v = self.slots[i];
            if v == EMPTY || (v >> 32 == tag && self.get(v as NameId) == s) {
                return i;
            }
            i = (i + 1) & mask;
        }
    }

    fn find(&self, s: &str) -> Option<NameId> {
        if self.slots.is_empty() {
            return None;
        }
        let v = self.slots[self.slot(s, self.hasher.hash_one(s))];
        (v != EMPTY).then_some(v as NameId)
    }

    fn intern(&mut self, s: &str) -> NameId {
        if self.slots.len() < 2 * (self.spans.len() + 1) {
            self.grow();
        }
        let h = self.hasher.hash_one(s);
        let i = self.slot(s, h);
        if self.slots[i] != EMPTY {
            return self.slots[i] as NameId;
        }
        let id = self.spans.len() as NameId;
        self.spans.push((self.text.len() as u32, s.len() as u32));
        self.text.push_str(s);
        self.slots[i] = (h >> 32 << 32) | id as u64;
        id
    }

    fn grow(&mut self) {
        let n = (self.slots.len() * 2).max(64);
        self.slots = vec![EMPTY; n];
        for id in 0..self.spans.len() as NameId {
            let h = self.hasher.hash_one(self.get(id));
            let i = self.slot(self.get(id), h);
            self.slots[i] = (h >> 32 << 32) | id as u64;
        }
    }

    /// Bytes held on the heap.
    fn heap_bytes(&self) -> usize {
        self.text.capacity()
            + self.spans.capacity() * std::mem::size_of::<(u32, u32)>()
            + self.slots.capacity() * std::mem::size_of::<u64>()
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Ruleset {
    /// Tables in the order of their `*table` lines.
    pub tables: Vec<String>,
    pub chains: Vec<ChainDecl>,
    pub rules: Vec<Rule>,
    /// Rules and declarations past the [`RuleBudget`]: counted, not kept.
    pub overflow: Option<Overflow>,
    /// The kept rules' text (and the unescaped values of quoted options), end to end.
    text: String,
    names: Names,
}

/// An option's value and whether it was negated (`! -o cni0`); displayed as iptables-save writes it in
/// a field, `!cni0`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arg<'a> {
    pub negated: bool,
    pub value: Cow<'a, str>,
}

impl fmt::Display for Arg<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.negated {
            f.write_str("!")?;
        }
        f.write_str(&self.value)
    }
}

/// A rule with the ruleset it lives in: what the rule says.
#[derive(Debug, Clone, Copy)]
pub struct RuleRef<'a> {
    rs: &'a Ruleset,
    rule: &'a Rule,
}

impl<'a> RuleRef<'a> {
    /// 1-based line in the input.
    pub fn line(&self) -> u32 {
        self.rule.line
    }

    /// The table (`nat`, `filter` …); empty for a rule before any `*table` line.
    pub fn table(&self) -> &'a str {
        self.rs.names.get(self.rule.table)
    }

    pub fn chain(&self) -> &'a str {
        self.rs.names.get(self.rule.chain)
    }

    /// The rule as written, without the `[packets:bytes]` prefix.
    pub fn text(&self) -> &'a str {
        let s = self.rule.start as usize;
        &self.rs.text[s..s + self.rule.len as usize]
    }

    /// `-j` / `-g`.
    pub fn target(&self) -> Option<&'a str> {
        (self.rule.target != NO_NAME).then(|| self.rs.names.get(self.rule.target))
    }

    fn field(&self, f: F) -> Option<&'a str> {
        let v = self.rule.fields[f as usize];
        if v.off == u16::MAX {
            return None;
        }
        let s = self.rule.start as usize + v.off as usize;
        Some(&self.rs.text[s..s + v.len as usize])
    }

    fn arg(&self, f: F) -> Option<Arg<'a>> {
        Some(Arg {
            negated: self.rule.flags & NEGATED[f as usize] != 0,
            value: Cow::Borrowed(self.field(f)?),
        })
    }

    /// `-p`.
    pub fn protocol(&self) -> Option<Arg<'a>> {
        self.arg(F::Protocol)
    }

    /// `-d`, as written (`10.96.0.10/32`).
    pub fn dst(&self) -> Option<Arg<'a>> {
        self.arg(F::Dst)
    }

    /// `--dport` / `--dports`, as written (`53`, `80,443`, `1000:2000`).
    pub fn dport(&self) -> Option<Arg<'a>> {
        self.arg(F::Dport)
    }

    /// `-o`.
    pub fn out_iface(&self) -> Option<Arg<'a>> {
        self.arg(F::OutIface)
    }

    /// `--comment`, unquoted.
    pub fn comment(&self) -> Option<&'a str> {
        self.field(F::Comment)
    }

    /// `--probability` of the `statistic` match.
    pub fn probability(&self) -> Option<f64> {
        self.field(F::Probability)?.parse().ok()
    }

    /// `--to-destination` of DNAT.
    pub fn to_destination(&self) -> Option<&'a str> {
        self.field(F::ToDestination)
    }

    pub fn random_fully(&self) -> bool {
        self.rule.flags & RANDOM_FULLY != 0
    }

    /// Any option, read from the text again: the word after the last of `names` (e.g.
    /// `["-s", "--source"]`, `["--to-source"]`), with `!` before the option noted. Words are walked as
    /// the parser walks them.
    pub fn option(&self, names: &[&str]) -> Option<Arg<'a>> {
        let text = self.text();
        let (mut words, mut scratch) = (Vec::new(), String::new());
        split_words(text, &mut words, &mut scratch);
        let mut found = None;
        walk(&words, text, &scratch, |i, negated, option| {
            if names.contains(&option) {
                found = Some((i, negated));
            }
        });
        let (i, negated) = found?;
        let value = match words.get(i + 1) {
            Some(w) if w.owned => Cow::Owned(w.get(text, &scratch).to_string()),
            Some(w) => Cow::Borrowed(&text[w.start as usize..w.end as usize]),
            None => Cow::Borrowed(""),
        };
        Some(Arg { negated, value })
    }

    /// Whether the rule has the option or flag (`--random`, `--random-fully`, `-s`).
    pub fn has(&self, option: &str) -> bool {
        let text = self.text();
        let (mut words, mut scratch) = (Vec::new(), String::new());
        split_words(text, &mut words, &mut scratch);
        let mut found = false;
        walk(&words, text, &scratch, |_, _, o| found |= o == option);
        found
    }
}

/// A Service (or any DNAT target) as the ruleset programs it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Service {
    /// `namespace/name:port` from kube-proxy's comment, or the chain name.
    pub name: String,
    pub vip: String,
    pub port: Option<u16>,
    /// `tcp`, `udp`, `all` … (common names are static: no allocation per Service).
    pub protocol: Cow<'static, str>,
    /// `cluster IP`, `loadbalancer IP`, `external IP`, `dnat` (a plain DNAT rule, not kube-proxy's),
    /// `ipvs`.
    pub kind: &'static str,
    /// Endpoints `ip:port` with the probability of choosing each (1.0 for the last).
    pub endpoints: Vec<(String, f64)>,
}

/// A NAT rule that rewrites the source: what `snat-port-clash` and `conntrack-snat-remap` look at.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceNatRule {
    /// The artifact it was read from (shared by the rules of one artifact).
    pub source: std::sync::Arc<str>,
    pub line: u32,
    pub text: String,
    pub masquerade: bool,
    pub out_iface: Option<String>,
    pub random_fully: bool,
}

/// One shell word of a rule: a range of the rule's text, or (`owned`) of the scratch string its
/// unescaped value was written to.
#[derive(Debug, Clone, Copy)]
struct Word {
    start: u32,
    end: u32,
    owned: bool,
}

impl Word {
    fn get<'s>(&self, text: &'s str, scratch: &'s str) -> &'s str {
        let src = if self.owned { scratch } else { text };
        &src[self.start as usize..self.end as usize]
    }
}

fn char_len(s: &str, i: usize) -> usize {
    s[i..].chars().next().map(char::len_utf8).unwrap_or(1)
}

/// Splits `s` into shell words (`"…"` quoting with `\\"` escapes, as iptables-save writes comments).
/// A word without quotes, or quoted whole without escapes (`"ns/svc:http cluster IP"`), is a range of
/// `s`; any other is unescaped into `scratch`. `s` must be shorter than 4 GiB.
fn split_words(s: &str, out: &mut Vec<Word>, scratch: &mut String) {
    out.clear();
    scratch.clear();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        if i >= b.len() {
            break;
        }
        let start = i;
        let (mut quoted, mut quotes, mut escapes) = (false, 0usize, false);
        while i < b.len() && (quoted || !b[i].is_ascii_whitespace()) {
            match b[i] {
                b'"' => {
                    quoted = !quoted;
                    quotes += 1;
                    i += 1;
                }
                b'\\' if quoted && i + 1 < b.len() => {
                    escapes = true;
                    i += 1;
                    i += char_len(s, i);
                }
                _ => i += 1,
            }
        }
        let end = i;
        let w = if quotes == 0 {
            Word {
                start: start as u32,
                end: end as u32,
                owned: false,
            }
        } else if quotes == 2
            && !escapes
            && end - start >= 2
            && b[start] == b'"'
            && b[end - 1] == b'"'
        {
            Word {
                start: start as u32 + 1,
                end: end as u32 - 1,
                owned: false,
            }
        } else {
            let from = scratch.len();
            unquote(&s[start..end], scratch);
            Word {
                start: from as u32,
                end: scratch.len() as u32,
                owned: true,
            }
        };
        out.push(w);
    }
}

/// A quoted word's value: quotes dropped, `\\x` taken as `x` inside quotes.
fn unquote(raw: &str, out: &mut String) {
    let b = raw.as_bytes();
    let (mut i, mut quoted) = (0, false);
    while i < b.len() {
        match b[i] {
            b'"' => {
                quoted = !quoted;
                i += 1;
            }
            b'\\' if quoted && i + 1 < b.len() => {
                i += 1;
                let l = char_len(raw, i);
                out.push_str(&raw[i..i + l]);
                i += l;
            }
            _ => {
                let l = char_len(raw, i);
                out.push_str(&raw[i..i + l]);
                i += l;
            }
        }
    }
}

/// Splits a rule into shell words (`"…"` quoting with `\"` escapes, as iptables-save writes comments).
/// Words borrow from the line unless an escape forces a copy.
pub fn shell_words(s: &str) -> Vec<Cow<'_, str>> {
    let (mut words, mut scratch) = (Vec::new(), String::new());
    split_words(s, &mut words, &mut scratch);
    words
        .iter()
        .map(|w| {
            if w.owned {
                Cow::Owned(w.get(s, &scratch).to_string())
            } else {
                Cow::Borrowed(&s[w.start as usize..w.end as usize])
            }
        })
        .collect()
}

/// Options whose value is the next word. The walk steps over the value of these only: any other word
/// (a match module, a flag, an option this parser does not know) is one step.
fn takes_value(w: &str) -> bool {
    matches!(
        w,
        "-A" | "-I"
            | "-j"
            | "--jump"
            | "-g"
            | "--goto"
            | "-p"
            | "--protocol"
            | "-s"
            | "--source"
            | "-d"
            | "--destination"
            | "--dport"
            | "--destination-port"
            | "--dports"
            | "-i"
            | "--in-interface"
            | "-o"
            | "--out-interface"
            | "--comment"
            | "--probability"
            | "--to-destination"
            | "--to-source"
    )
}

/// Walks a rule's words: `on(index, negated, word)` for each option (a `!` before it sets `negated`).
fn walk(words: &[Word], text: &str, scratch: &str, mut on: impl FnMut(usize, bool, &str)) {
    let (mut i, mut negate) = (0, false);
    while i < words.len() {
        let w = words[i].get(text, scratch);
        if w == "!" {
            negate = true;
            i += 1;
            continue;
        }
        on(i, negate, w);
        negate = false;
        i += if takes_value(w) { 2 } else { 1 };
    }
}

/// The parser's state between lines.
struct Parser<'b> {
    rs: Ruleset,
    issues: IssueLog,
    budget: &'b mut RuleBudget,
    table: NameId,
    words: Vec<Word>,
    scratch: String,
    /// Unescaped values to store after the current rule's text, in field order: ranges of `scratch`.
    extras: Vec<(u32, u32)>,
    /// The previous rule's chain: rules of a chain come together.
    last_chain: NameId,
}

/// A rule as the walk lifted it: word indexes of the options' values.
struct Lifted {
    chain: Option<usize>,
    target: Option<usize>,
    fields: [Option<usize>; FIELDS],
    flags: u16,
}

pub fn parse_iptables_save(text: &str) -> Parsed<Ruleset> {
    parse_iptables_save_within(text, &mut RuleBudget::default())
}

/// Parses within `budget` (what is kept is taken from it): past it, the rest of the text is counted,
/// not kept, and [`Ruleset::overflow`] says so.
pub fn parse_iptables_save_within(text: &str, budget: &mut RuleBudget) -> Parsed<Ruleset> {
    let mut p = Parser {
        rs: Ruleset::default(),
        issues: IssueLog::default(),
        budget,
        table: NO_NAME,
        words: Vec::with_capacity(32),
        scratch: String::new(),
        extras: Vec::new(),
        last_chain: NO_NAME,
    };
    for (n, line) in numbered_lines(text) {
        p.line(n, line);
    }
    p.rs.shrink_to_fit();
    Parsed {
        value: p.rs,
        issues: p.issues,
    }
}

impl Parser<'_> {
    /// Whether one more item fits; if not, the overflow starts (or goes on) at line `n`.
    fn fits(&mut self, n: u64, rule: bool) -> bool {
        let left = if rule {
            self.budget.rules
        } else {
            self.budget.declarations
        };
        // The arena's offsets are 32-bit: a text near 4 GiB ends the budget too.
        let room =
            self.rs.text.len() + self.rs.names.text.len() < u32::MAX as usize - 2 * (1 << 16);
        if self.rs.overflow.is_none() && left > 0 && room {
            return true;
        }
        let limit = self.budget.limit;
        let o = self.rs.overflow.get_or_insert(Overflow {
            limit,
            line: n,
            ..Default::default()
        });
        if rule {
            o.rules += 1;
        } else {
            o.declarations += 1;
        }
        false
    }

    fn line(&mut self, n: u64, line: &str) {
        let mut t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            return;
        }
        if let Some(name) = t.strip_prefix('*') {
            if self.fits(n, false) {
                self.budget.declarations -= 1;
                let name = name.trim();
                self.table = self.rs.names.intern(name);
                self.rs.tables.push(name.to_string());
            }
            return;
        }
        if t == "COMMIT" {
            return;
        }
        if let Some(rest) = t.strip_prefix(':') {
            let mut it = rest.split_whitespace();
            match (it.next(), it.next()) {
                (Some(name), Some(policy)) => {
                    if self.fits(n, false) {
                        self.budget.declarations -= 1;
                        let table = self.table();
                        let decl = ChainDecl {
                            table,
                            name: self.rs.names.intern(name),
                            policy: self.rs.names.intern(policy),
                        };
                        self.rs.chains.push(decl);
                    }
                }
                _ => self.issues.push(n, "bad-chain", t),
            }
            return;
        }
        // `iptables-save -c` puts `[packets:bytes]` before the rule.
        if t.starts_with('[') {
            if let Some(end) = t.find(']') {
                t = t[end + 1..].trim_start();
            }
        }
        if !(t.starts_with("-A ") || t.starts_with("-I ")) {
            self.issues.push(n, "unknown-line", t);
            return;
        }
        // Past the budget a rule is only counted: not split, not checked.
        if self.rs.overflow.is_some() {
            self.fits(n, true);
            return;
        }
        if self.table == NO_NAME || self.rs.names.get(self.table).is_empty() {
            self.issues.push(n, "rule-outside-table", t);
        }
        let Some(l) = self.lift(t) else {
            self.issues.push(n, "bad-rule", t);
            return;
        };
        if !self.fits(n, true) {
            return;
        }
        if !self.keep(n, t, &l) {
            self.issues.push(n, "rule-too-long", t);
            return;
        }
        self.budget.rules -= 1;
    }

    fn table(&mut self) -> NameId {
        if self.table == NO_NAME {
            self.table = self.rs.names.intern("");
        }
        self.table
    }

    /// Splits `t` into [`Self::words`] and walks it as iptables-save writes rules: the last value of an
    /// option counts. `None`: no chain (`-A` with nothing after it, or an empty name).
    fn lift(&mut self, t: &str) -> Option<Lifted> {
        split_words(t, &mut self.words, &mut self.scratch);
        let mut l = Lifted {
            chain: None,
            target: None,
            fields: [None; FIELDS],
            flags: 0,
        };
        let n = self.words.len();
        let mut no_chain = false;
        walk(&self.words, t, &self.scratch, |i, negate, w| {
            let next = (i + 1 < n).then_some(i + 1);
            let mut set = |f: F, negatable: bool| {
                l.fields[f as usize] = next;
                if negatable {
                    let bit = NEGATED[f as usize];
                    l.flags = if negate {
                        l.flags | bit
                    } else {
                        l.flags & !bit
                    };
                }
            };
            match w {
                "-A" | "-I" => match next {
                    Some(c) => l.chain = Some(c),
                    None => no_chain = true,
                },
                "-j" | "--jump" | "-g" | "--goto" => l.target = next,
                "-p" | "--protocol" => set(F::Protocol, true),
                "-d" | "--destination" => set(F::Dst, true),
                "--dport" | "--destination-port" | "--dports" => set(F::Dport, true),
                "-o" | "--out-interface" => set(F::OutIface, true),
                "--comment" => set(F::Comment, false),
                "--probability" => set(F::Probability, false),
                "--to-destination" => set(F::ToDestination, false),
                "--random-fully" => l.flags |= RANDOM_FULLY,
                _ => {}
            }
        });
        let chain = l.chain?;
        if no_chain || self.words[chain].get(t, &self.scratch).is_empty() {
            return None;
        }
        Some(l)
    }

    /// Stores the lifted rule; `false` when it is too long for 16-bit offsets.
    fn keep(&mut self, n: u64, t: &str, l: &Lifted) -> bool {
        let mut fields = [ABSENT; FIELDS];
        self.extras.clear();
        let mut end = t.len();
        for (f, w) in l.fields.iter().enumerate() {
            let Some(w) = w.map(|i| self.words[i]) else {
                continue;
            };
            let (off, len) = if w.owned {
                let off = end;
                end += (w.end - w.start) as usize;
                self.extras.push((w.start, w.end));
                (off, w.end - w.start)
            } else {
                (w.start as usize, w.end - w.start)
            };
            if off + len as usize > MAX_RULE_BYTES {
                return false;
            }
            fields[f] = Field {
                off: off as u16,
                len: len as u16,
            };
        }
        if end > MAX_RULE_BYTES {
            return false;
        }
        let table = self.table();
        let name = |p: &mut Self, w: Option<usize>| match w {
            Some(i) => {
                let w = p.words[i];
                p.rs.names.intern(w.get(t, &p.scratch))
            }
            None => NO_NAME,
        };
        let chain = match l.chain.map(|i| self.words[i].get(t, &self.scratch)) {
            Some(c) if self.last_chain != NO_NAME && self.rs.names.get(self.last_chain) == c => {
                self.last_chain
            }
            _ => name(self, l.chain),
        };
        self.last_chain = chain;
        let target = name(self, l.target);
        let start = self.rs.text.len() as u32;
        self.rs.text.push_str(t);
        for &(a, b) in &self.extras {
            self.rs.text.push_str(&self.scratch[a as usize..b as usize]);
        }
        self.rs.rules.push(Rule {
            line: n as u32,
            start,
            len: t.len() as u16,
            flags: l.flags,
            table,
            chain,
            target,
            fields,
        });
        true
    }
}

/// Rule indexes by chain: the rules of chain `c` are `idx[start[c]..start[c + 1]]`, in file order.
struct ChainIndex {
    start: Vec<u32>,
    idx: Vec<u32>,
}

impl ChainIndex {
    fn of(&self, chain: NameId) -> &[u32] {
        let c = chain as usize;
        if c + 1 >= self.start.len() {
            return &[];
        }
        &self.idx[self.start[c] as usize..self.start[c + 1] as usize]
    }
}

impl Ruleset {
    fn shrink_to_fit(&mut self) {
        self.tables.shrink_to_fit();
        self.chains.shrink_to_fit();
        self.rules.shrink_to_fit();
        self.text.shrink_to_fit();
        self.names.text.shrink_to_fit();
        self.names.spans.shrink_to_fit();
    }

    /// Rule `i` of [`Ruleset::rules`].
    pub fn rule(&self, i: usize) -> RuleRef<'_> {
        RuleRef {
            rs: self,
            rule: &self.rules[i],
        }
    }

    /// The rules in file order.
    pub fn iter(&self) -> impl Iterator<Item = RuleRef<'_>> + '_ {
        self.rules
            .iter()
            .map(move |rule| RuleRef { rs: self, rule })
    }

    /// Chain declarations as (table, name, policy); the policy is `-` for a user chain.
    pub fn declared_chains(&self) -> impl Iterator<Item = (&str, &str, &str)> + '_ {
        self.chains.iter().map(move |c| {
            (
                self.names.get(c.table),
                self.names.get(c.name),
                self.names.get(c.policy),
            )
        })
    }

    /// Bytes this ruleset holds on the heap (its vectors' capacities, the text arena, the name table),
    /// besides `size_of::<Ruleset>()`.
    pub fn heap_bytes(&self) -> usize {
        self.tables.capacity() * std::mem::size_of::<String>()
            + self.tables.iter().map(String::capacity).sum::<usize>()
            + self.chains.capacity() * std::mem::size_of::<ChainDecl>()
            + self.rules.capacity() * std::mem::size_of::<Rule>()
            + self.text.capacity()
            + self.names.heap_bytes()
    }

    /// Rules of the `nat` table (or of no table) by chain.
    fn nat_index(&self) -> ChainIndex {
        let nat = self.names.find("nat");
        let none = self.names.find("");
        let is_nat = |r: &Rule| Some(r.table) == nat || Some(r.table) == none;
        let mut start = vec![0u32; self.names.len() + 1];
        for r in self.rules.iter().filter(|r| is_nat(r)) {
            start[r.chain as usize + 1] += 1;
        }
        for i in 1..start.len() {
            start[i] += start[i - 1];
        }
        let mut fill = start.clone();
        let mut idx = vec![0u32; *start.last().unwrap_or(&0) as usize];
        for (i, r) in self.rules.iter().enumerate().filter(|(_, r)| is_nat(r)) {
            let at = &mut fill[r.chain as usize];
            idx[*at as usize] = i as u32;
            *at += 1;
        }
        ChainIndex { start, idx }
    }

    /// MASQUERADE and SNAT rules. A rule identical to an earlier one of its table (same text) is
    /// shadowed by it and not listed again.
    pub fn source_nat_rules(&self, source: &str) -> Vec<SourceNatRule> {
        let mut seen = HashSet::new();
        let source: std::sync::Arc<str> = source.into();
        self.iter()
            .filter(|r| matches!(r.target(), Some("MASQUERADE") | Some("SNAT")))
            .filter(|r| seen.insert((r.rule.table, r.text())))
            .map(|r| SourceNatRule {
                source: source.clone(),
                line: r.line(),
                text: r.text().to_string(),
                masquerade: r.target() == Some("MASQUERADE"),
                out_iface: r.out_iface().map(|a| a.to_string()),
                random_fully: r.random_fully(),
            })
            .collect()
    }

    /// Services as kube-proxy (iptables mode) programs them, plus plain DNAT rules with a destination.
    /// A rule identical to an earlier one of its table is shadowed by it: it makes no second Service.
    pub fn services(&self) -> Vec<Service> {
        let by_chain = self.nat_index();
        let mut out = Vec::new();
        let (mut seen, mut seen_dnat) = (HashSet::new(), HashSet::new());
        let sep_dest = |chain: NameId| -> Option<String> {
            by_chain
                .of(chain)
                .iter()
                .find_map(|&i| self.rule(i as usize).to_destination().map(str::to_string))
        };
        let mut svc_name = String::new();
        let services = self.names.find("KUBE-SERVICES").unwrap_or(NO_NAME);
        for &i in by_chain.of(services) {
            let r = self.rule(i as usize);
            let (Some(dst), Some(target)) = (r.dst(), r.target()) else {
                continue;
            };
            if dst.negated || dst.value.starts_with('!') || !seen.insert((r.rule.table, r.text())) {
                continue;
            }
            let comment = r.comment().unwrap_or_default();
            let kind = if comment.contains("loadbalancer IP") {
                "loadbalancer IP"
            } else if comment.contains("external IP") {
                "external IP"
            } else {
                "cluster IP"
            };
            let name = comment
                .split(' ')
                .next()
                .filter(|s| s.contains('/'))
                .unwrap_or(target);
            // KUBE-FW-/KUBE-EXT- chains jump on to the KUBE-SVC- chain of the same hash.
            let svc_chain = if target.starts_with("KUBE-SVC-") {
                r.rule.target
            } else {
                svc_name.clear();
                svc_name.push_str("KUBE-SVC-");
                svc_name.push_str(target.rsplit('-').next().unwrap_or(""));
                self.names.find(&svc_name).unwrap_or(NO_NAME)
            };
            let mut endpoints = Vec::new();
            for &j in by_chain.of(svc_chain) {
                let sr = self.rule(j as usize);
                let Some(t) = sr.target() else { continue };
                if t.starts_with("KUBE-SEP-") {
                    if let Some(d) = sep_dest(sr.rule.target) {
                        endpoints.push((d, sr.probability().unwrap_or(1.0)));
                    }
                }
            }
            out.push(Service {
                name: name.to_string(),
                vip: strip_prefix_len(&dst.value).to_string(),
                port: port(r.dport()),
                protocol: r.protocol().map_or(Cow::Borrowed("tcp"), protocol_name),
                kind,
                endpoints,
            });
        }
        // Plain DNAT rules (docker, hand-made VIPs): the destination is a NATed address all the same.
        for r in self.iter() {
            if r.target() != Some("DNAT") || r.chain().starts_with("KUBE-SEP-") {
                continue;
            }
            let (Some(dst), Some(to)) = (r.dst(), r.to_destination()) else {
                continue;
            };
            if dst.negated
                || dst.value.starts_with('!')
                || !seen_dnat.insert((r.rule.table, r.text()))
            {
                continue;
            }
            out.push(Service {
                name: format!("{}:{}", r.chain(), r.line()),
                vip: strip_prefix_len(&dst.value).to_string(),
                port: port(r.dport()),
                protocol: r.protocol().map_or(Cow::Borrowed("all"), protocol_name),
                kind: "dnat",
                endpoints: vec![(to.to_string(), 1.0)],
            });
        }
        out
    }

    /// Whether kube-proxy (iptables or ipvs mode) programmed this ruleset.
    pub fn has_kube_proxy(&self) -> bool {
        let ids = [
            self.names.find("KUBE-SERVICES"),
            self.names.find("KUBE-POSTROUTING"),
        ];
        self.chains.iter().any(|c| ids.contains(&Some(c.name)))
    }
}

/// A protocol as a Service names it (`!tcp` when negated); the usual ones without an allocation.
fn protocol_name(p: Arg<'_>) -> Cow<'static, str> {
    const KNOWN: [&str; 8] = [
        "tcp", "udp", "sctp", "all", "icmp", "icmpv6", "udplite", "esp",
    ];
    match KNOWN.iter().find(|k| **k == p.value) {
        Some(k) if !p.negated => Cow::Borrowed(k),
        _ => Cow::Owned(p.to_string()),
    }
}

/// A destination port as a number (`None` for a negated port, a range or a list).
fn port(p: Option<Arg<'_>>) -> Option<u16> {
    p.filter(|p| !p.negated)?.value.parse().ok()
}

fn strip_prefix_len(cidr: &str) -> &str {
    cidr.strip_suffix("/32")
        .or_else(|| cidr.strip_suffix("/128"))
        .unwrap_or(cidr)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KUBE: &str = r#"# Generated by iptables-save v1.8.9
*nat
:PREROUTING ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-POSTROUTING - [0:0]
:KUBE-SVC-TCOU7JCQXEZGVUNU - [0:0]
:KUBE-SEP-AAA - [0:0]
:KUBE-SEP-BBB - [0:0]
-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING
-A POSTROUTING -s 10.244.0.0/16 ! -o cni0 -j MASQUERADE
-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully
-A KUBE-SERVICES -d 10.96.0.10/32 -p udp -m comment --comment "kube-system/kube-dns:dns cluster IP" -m udp --dport 53 -j KUBE-SVC-TCOU7JCQXEZGVUNU
-A KUBE-SVC-TCOU7JCQXEZGVUNU -m comment --comment "kube-system/kube-dns:dns" -m statistic --mode random --probability 0.50000000000 -j KUBE-SEP-AAA
-A KUBE-SVC-TCOU7JCQXEZGVUNU -m comment --comment "kube-system/kube-dns:dns" -j KUBE-SEP-BBB
-A KUBE-SEP-AAA -p udp -m comment --comment "kube-system/kube-dns:dns" -m udp -j DNAT --to-destination 10.244.0.2:53
-A KUBE-SEP-BBB -p udp -m comment --comment "kube-system/kube-dns:dns" -m udp -j DNAT --to-destination 10.244.0.3:53
[5:300] -A PREROUTING -d 192.0.2.1/32 -p tcp -m tcp --dport 80 -j DNAT --to-destination 10.0.0.2:8080
Chain INPUT (policy ACCEPT)
COMMIT
"#;

    #[test]
    fn kube_proxy_services_endpoints_and_masquerade_flags() {
        let p = parse_iptables_save(KUBE);
        assert_eq!(p.issues.count("unknown-line"), 1);
        let rs = p.value;
        assert!(rs.has_kube_proxy());
        let svcs = rs.services();
        let dns = svcs.iter().find(|s| s.vip == "10.96.0.10").unwrap();
        assert_eq!(dns.name, "kube-system/kube-dns:dns");
        assert_eq!(dns.port, Some(53));
        assert_eq!(dns.protocol, "udp");
        assert_eq!(
            dns.endpoints,
            vec![
                ("10.244.0.2:53".to_string(), 0.5),
                ("10.244.0.3:53".to_string(), 1.0)
            ]
        );
        let plain = svcs.iter().find(|s| s.kind == "dnat").unwrap();
        assert_eq!(plain.vip, "192.0.2.1");
        let masq = rs.source_nat_rules("iptables");
        assert_eq!(masq.len(), 2);
        assert_eq!(masq[0].out_iface.as_deref(), Some("!cni0"));
        assert!(!masq[0].random_fully);
        assert!(masq[1].random_fully);
    }

    #[test]
    fn shell_words_keep_quoted_comments() {
        assert_eq!(
            shell_words(r#"-m comment --comment "a \"b\" c" -j X"#),
            vec!["-m", "comment", "--comment", "a \"b\" c", "-j", "X"]
        );
        assert_eq!(
            shell_words(r#"--comment "ns/svc:p cluster IP"  -j  KUBE-SVC-ABC"#),
            vec!["--comment", "ns/svc:p cluster IP", "-j", "KUBE-SVC-ABC"]
        );
        assert_eq!(
            shell_words("a \"héllo wörld\" ünï"),
            vec!["a", "héllo wörld", "ünï"]
        );
    }
}
