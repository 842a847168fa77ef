//! Parsers of node-state text: pure functions from `&str` to a value plus the problems met on the way.
//!
//! Invariant: no parser fails whole. A line it does not understand is counted in an [`IssueLog`] with its
//! line number, and the rest of the input is still read. No parser opens a file or runs a command.

pub mod conntrack;
pub mod ethtool;
pub mod ip;
pub mod iptables;
pub mod ipvs;
pub mod neigh;
pub mod netlink;
pub mod netstat;
pub mod nft;
pub mod nft_netlink;
pub mod proc_tcp;
pub mod resolver;
pub mod ss;
pub mod sysctl;

use serde::{Deserialize, Serialize};

/// How many issues an [`IssueLog`] keeps verbatim; the rest are only counted.
const KEPT_ISSUES: usize = 16;

/// One thing a parser could not read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParseIssue {
    /// 1-based line number in the input (0 when the input is not line-based, e.g. JSON).
    pub line: u64,
    /// Stable short code: `unknown-line`, `bad-number`, `bad-json`, `unknown-expression` …
    pub code: String,
    /// The offending text, cut to 160 characters.
    pub text: String,
}

/// The problems of one parse: the first few kept verbatim, all counted by code.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssueLog {
    pub total: u64,
    pub first: Vec<ParseIssue>,
    /// Count per code, so a report can say "37 unknown-line" without keeping 37 lines.
    pub by_code: std::collections::BTreeMap<String, u64>,
}

impl IssueLog {
    pub fn push(&mut self, line: u64, code: &str, text: &str) {
        self.total += 1;
        *self.by_code.entry(code.to_string()).or_insert(0) += 1;
        if self.first.len() < KEPT_ISSUES {
            let text: String = text.chars().take(160).collect();
            self.first.push(ParseIssue {
                line,
                code: code.to_string(),
                text,
            });
        }
    }

    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    pub fn count(&self, code: &str) -> u64 {
        self.by_code.get(code).copied().unwrap_or(0)
    }

    pub fn merge(&mut self, other: &IssueLog) {
        self.total += other.total;
        for (k, v) in &other.by_code {
            *self.by_code.entry(k.clone()).or_insert(0) += v;
        }
        for i in &other.first {
            if self.first.len() < KEPT_ISSUES {
                self.first.push(i.clone());
            }
        }
    }
}

/// A parsed value and the issues met while parsing it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Parsed<T> {
    pub value: T,
    pub issues: IssueLog,
}

/// Lines of a text with their 1-based numbers, without the trailing `\r` of CRLF files.
pub(crate) fn numbered_lines(text: &str) -> impl Iterator<Item = (u64, &str)> {
    text.lines()
        .enumerate()
        .map(|(i, l)| (i as u64 + 1, l.strip_suffix('\r').unwrap_or(l)))
}

/// Adds to a counter map without overflowing (damaged input can hold any number).
pub(crate) fn add(m: &mut std::collections::BTreeMap<String, u64>, k: &str, v: u64) {
    match m.get_mut(k) {
        Some(x) => *x = x.saturating_add(v),
        None => {
            m.insert(k.to_string(), v);
        }
    }
}

/// Splits `key=value`; `None` when there is no `=`.
pub(crate) fn split_kv(token: &str) -> Option<(&str, &str)> {
    let i = token.bytes().position(|b| b == b'=')?;
    Some((&token[..i], &token[i + 1..]))
}
