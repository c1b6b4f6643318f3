//! Logging: one JSON object per line (`log.format = "json"`) or human-readable lines,
//! filtered by `log.level`. The worker logs to standard output; the `enqueue` and `plan`
//! commands log to standard error, keeping standard output for their results. Human
//! lines are coloured only on a terminal, and never when `NO_COLOR` is set
//! (<https://no-color.org>).

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, LogSection};

/// Installs the global subscriber. Call once, before anything logs.
pub fn init(log: &LogSection, to_stderr: bool) {
    // The level was validated with the configuration; fall back to info regardless.
    let filter = EnvFilter::try_new(&log.level).unwrap_or_else(|_| EnvFilter::new("info"));
    let writer =
        tracing_subscriber::fmt::writer::BoxMakeWriter::new(move || -> Box<dyn std::io::Write> {
            if to_stderr {
                Box::new(std::io::stderr())
            } else {
                Box::new(std::io::stdout())
            }
        });
    let terminal = if to_stderr {
        std::io::stderr().is_terminal()
    } else {
        std::io::stdout().is_terminal()
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour(terminal, std::env::var_os("NO_COLOR").as_deref()))
        .with_writer(writer);
    let result = match log.format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
    if let Err(e) = result {
        eprintln!("logging was already set up: {e}");
    }
}

/// Whether human log lines get colour: only on a terminal, and `NO_COLOR` (set and not
/// empty) always wins.
fn colour(terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn colour_only_on_a_terminal_and_never_against_no_color() {
        assert!(colour(true, None));
        assert!(!colour(false, None), "pipes and files get plain text");
        assert!(!colour(true, Some(OsStr::new("1"))));
        assert!(
            colour(true, Some(OsStr::new(""))),
            "an empty NO_COLOR is unset"
        );
    }
}
