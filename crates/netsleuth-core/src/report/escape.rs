//! Escaping of input-derived text for human output.
//!
//! Everything netsleuth reports quotes its inputs: file names, hostnames, resolv.conf and hosts lines,
//! rule text, process names, parsers' excerpts of lines they did not understand. A pod controls its
//! own `/etc/resolv.conf` and `/etc/hosts`, and whoever wrote a capture controls its file name, so any of
//! those strings may carry terminal control sequences (set the window title, clear the screen, recolour,
//! or rewrite what was printed before). Renderers pass every such field through [`for_terminal`] (or
//! [`for_html`]) as they format it, so the line structure the renderer itself produces survives and an
//! input can never add a line, a control sequence or a fake report entry.
//!
//! Backslashes are left as they are (rule text and paths stay readable); an escape in the output is
//! therefore not proof that the input held a control character, only that it is safe to print.

use std::borrow::Cow;

/// Whether `c` must not reach a terminal as is: C0 controls (newline and tab included: a field is one
/// line), DEL, C1 controls (UTF-8 terminals may honour U+009B as CSI), and the Unicode characters
/// that reorder or break displayed text (bidirectional overrides and isolates, line and paragraph
/// separators), which can make a line read differently from what it holds.
fn is_unsafe(c: char) -> bool {
    matches!(c,
        '\u{0}'..='\u{1f}'
        | '\u{7f}'..='\u{9f}'
        | '\u{61c}'
        | '\u{200e}'
        | '\u{200f}'
        | '\u{2028}'..='\u{202e}'
        | '\u{2066}'..='\u{2069}')
}

fn push_escaped(out: &mut String, c: char) {
    match c {
        '\n' => out.push_str("\\n"),
        '\t' => out.push_str("\\t"),
        '\r' => out.push_str("\\r"),
        c if (c as u32) < 0x80 => out.push_str(&format!("\\x{:02x}", c as u32)),
        c => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
    }
}

/// `s` made safe to write to a terminal as one field of a line: every control character (C0 with
/// newline and tab, DEL, C1, and the bidirectional and line-separating characters) becomes a visible
/// escape (`\x1b`, `\n`, `\u{9b}`). Borrowed when nothing changes.
pub fn for_terminal(s: &str) -> Cow<'_, str> {
    let Some(first) = s.find(is_unsafe) else {
        return Cow::Borrowed(s);
    };
    let mut out = String::with_capacity(s.len() + 8);
    out.push_str(&s[..first]);
    for c in s[first..].chars() {
        if is_unsafe(c) {
            push_escaped(&mut out, c);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// `s` made safe as HTML text or a quoted attribute value: markup characters become entities, and
/// control characters the same visible escapes as [`for_terminal`] (HTML forbids most of them, and a
/// browser's copy-paste would carry them to a terminal).
pub fn for_html(s: &str) -> Cow<'_, str> {
    let needs = |c: char| matches!(c, '&' | '<' | '>' | '"' | '\'') || is_unsafe(c);
    let Some(first) = s.find(needs) else {
        return Cow::Borrowed(s);
    };
    let mut out = String::with_capacity(s.len() + 16);
    out.push_str(&s[..first]);
    for c in s[first..].chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if is_unsafe(c) => push_escaped(&mut out, c),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_borrowed() {
        let s = "nameserver 10.96.0.10 — ndots:5 \\ ok";
        assert!(matches!(for_terminal(s), Cow::Borrowed(_)));
        assert!(matches!(for_html("a b"), Cow::Borrowed(_)));
    }

    #[test]
    fn terminal_sequences_become_visible() {
        let title = "\u{1b}]0;PWNED-TITLE\u{7}\u{1b}[2J";
        assert_eq!(for_terminal(title), "\\x1b]0;PWNED-TITLE\\x07\\x1b[2J");
        assert_eq!(for_terminal("a\nb\tc\rd\u{0}"), "a\\nb\\tc\\rd\\x00");
        assert_eq!(for_terminal("x\u{7f}y"), "x\\x7fy");
        assert_eq!(for_terminal("csi\u{9b}31m"), "csi\\u{9b}31m");
        assert_eq!(for_terminal("abc\u{202e}fed"), "abc\\u{202e}fed");
        assert_eq!(for_terminal("é ü 名前"), "é ü 名前");
    }

    #[test]
    fn output_never_holds_a_control_character() {
        let all: String = (0u32..0x3000).filter_map(char::from_u32).collect();
        for out in [for_terminal(&all), for_html(&all)] {
            assert!(!out.chars().any(is_unsafe), "{out:?}");
        }
    }

    #[test]
    fn html_markup_is_entities() {
        assert_eq!(
            for_html("<a href=\"x\">'&'</a>\u{1b}"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;\\x1b"
        );
    }
}
