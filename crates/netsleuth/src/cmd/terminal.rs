//! The terminal conventions: colour (`--color`, `NO_COLOR`), `--quiet`, the local zone of timestamps
//! (`--utc`), a progress bar on stderr only when stderr is a terminal.

use crate::cli::{ColorChoice, TerminalArgs};
use netsleuth_core::names::Names;
use netsleuth_core::report::human::{Style, Zone};
use std::ffi::CStr;
use std::io::IsTerminal;

/// Inputs at least this large get a progress bar (when stderr is a terminal): below it, a debug build
/// reads them in about a second.
pub const PROGRESS_MIN_BYTES: u64 = 32 << 20;

/// What the terminal conventions decided for this run.
#[derive(Debug, Clone, Copy)]
pub struct Term {
    /// Colour on stdout.
    pub color: bool,
    pub quiet: bool,
    pub utc: bool,
    /// A progress bar may be drawn on stderr (a terminal, and not `--quiet`).
    pub progress: bool,
}

impl Term {
    pub fn new(a: &TerminalArgs) -> Term {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        let dumb = std::env::var_os("TERM").is_some_and(|t| t == "dumb");
        Term {
            color: decide_color(a.color, std::io::stdout().is_terminal(), no_color, dumb),
            quiet: a.quiet,
            utc: a.utc,
            progress: !a.quiet && std::io::stderr().is_terminal(),
        }
    }

    /// Runs `f` with the human report's style for this terminal.
    pub fn with_style<T>(&self, names: Option<&Names>, f: impl FnOnce(&Style<'_>) -> T) -> T {
        let local = local_zone;
        let st = Style {
            color: self.color,
            zone: if self.utc {
                Zone::Utc
            } else {
                Zone::Local(&local)
            },
            names: names.filter(|n| !n.is_empty()),
            headline_only: self.quiet,
            ..Style::default()
        };
        f(&st)
    }

    /// A message for stderr (not an error): nothing with `--quiet`.
    pub fn say(&self, text: &str) {
        if !self.quiet {
            eprintln!("{text}");
        }
    }
}

/// `--color` against the conventions: `always` and `never` are what they say; `auto` colours a
/// terminal, unless `NO_COLOR` is set to something (no-color.org) or `TERM=dumb`.
pub fn decide_color(choice: ColorChoice, stdout_tty: bool, no_color: bool, dumb: bool) -> bool {
    match choice {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => stdout_tty && !no_color && !dumb,
    }
}

/// The local zone at Unix time `secs`: its offset from UTC and its abbreviation (`CET`, or `+0530`
/// when the zone has none), as the C library reads `TZ` and `/etc/localtime`.
fn local_zone(secs: i64) -> (i32, String) {
    // libc marks time_t deprecated on musl (its width changes in a future libc release); it is the
    // type localtime_r takes on both C libraries.
    #[allow(deprecated)]
    let t = secs as libc::time_t;
    // SAFETY: `tm` is plain data that localtime_r fills; it reads `t` and writes only `tm`.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    if unsafe { libc::localtime_r(&t, &mut tm) }.is_null() {
        return (0, "UTC".into());
    }
    let offset = tm.tm_gmtoff as i32;
    let abbr = if tm.tm_zone.is_null() {
        String::new()
    } else {
        // SAFETY: tm_zone points at a NUL-terminated string owned by the C library.
        unsafe { CStr::from_ptr(tm.tm_zone) }
            .to_string_lossy()
            .into_owned()
    };
    let abbr = if abbr.is_empty() || abbr.starts_with(['+', '-']) {
        let sign = if offset < 0 { '-' } else { '+' };
        let a = offset.unsigned_abs();
        format!("{sign}{:02}{:02}", a / 3600, (a % 3600) / 60)
    } else {
        abbr
    };
    (offset, abbr)
}

/// A progress bar over `total` bytes on stderr, when the terminal conventions allow one and the
/// input is long; `None` otherwise (a pipe, `--quiet`, a short input, stdin of unknown length).
pub fn progress_bar(term: &Term, total: u64, what: &str) -> Option<indicatif::ProgressBar> {
    if !term.progress || total < PROGRESS_MIN_BYTES {
        return None;
    }
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(total),
        indicatif::ProgressDrawTarget::stderr(),
    );
    let style = indicatif::ProgressStyle::with_template(
        "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    )
    .map(|s| s.progress_chars("=> "))
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    bar.set_style(style);
    bar.set_message(what.to_string());
    Some(bar)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_follows_the_conventions() {
        use ColorChoice::*;
        // auto: a terminal without NO_COLOR or TERM=dumb
        assert!(decide_color(Auto, true, false, false));
        assert!(!decide_color(Auto, false, false, false));
        assert!(!decide_color(Auto, true, true, false));
        assert!(!decide_color(Auto, true, false, true));
        // the flag beats the environment
        assert!(decide_color(Always, false, true, true));
        assert!(!decide_color(Never, true, false, false));
    }

    #[test]
    fn the_local_zone_is_named() {
        let (_, abbr) = local_zone(0);
        assert!(!abbr.is_empty());
    }
}
