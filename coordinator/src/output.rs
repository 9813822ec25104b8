//! What the command line shows on the terminal: progress lines, the live event counter of a
//! capture, and JSON pieces several commands print.
//!
//! Progress goes to stderr, results to stdout. The live counter redraws one line in place only
//! when stderr is a terminal; redirected into a file it prints a plain line now and then.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use heisen_recordings::Bundle;

/// Ends the process quietly (exit 141, as a shell reports a SIGPIPE death) when printing to
/// stdout fails because its reader went away; every other panic is reported as usual.
pub fn quiet_on_broken_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(141);
        }
        default(info);
    }));
}

/// Whether a command failed because its output's reader went away (`heisen timeline | head`):
/// the error is the write's own, not a cause wrapped in another operation's context (a socket's
/// broken pipe reaches here inside the call that met it).
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
        || e.downcast_ref::<serde_json::Error>()
            .is_some_and(|j| j.io_error_kind() == Some(std::io::ErrorKind::BrokenPipe))
}

/// A progress line on stderr (long work shows progress).
pub fn progress(line: &str) {
    eprintln!("{line}");
}

/// A counter redrawn on one stderr line (`\r`) on a terminal; in a file, a line every
/// `every_plain` so a log shows progress without a wall of carriage returns.
pub struct LiveLine {
    terminal: bool,
    drawn: bool,
    last_plain: Option<Instant>,
    every_plain: Duration,
}

impl LiveLine {
    pub fn new(every_plain: Duration) -> LiveLine {
        LiveLine { terminal: std::io::stderr().is_terminal(), drawn: false, last_plain: None, every_plain }
    }

    pub fn show(&mut self, text: &str) {
        if self.terminal {
            eprint!("\r{text}   ");
            self.drawn = true;
        } else if self.last_plain.is_none_or(|t| t.elapsed() >= self.every_plain) {
            eprintln!("{text}");
            self.last_plain = Some(Instant::now());
        }
    }

    /// Ends the redrawn line (a newline after it, on a terminal).
    pub fn finish(&mut self) {
        if self.drawn {
            eprintln!();
            self.drawn = false;
        }
    }
}

/// Each host's fitted clock model (host minus coordinator), for `--json` outputs.
pub fn clocks_json(bundle: &Bundle) -> serde_json::Value {
    bundle
        .hosts
        .iter()
        .map(|h| {
            serde_json::json!({
                "name": h.name, "offset_ns": h.clock.offset_ns, "error_ns": h.clock.error_ns,
                "drift_ppm": h.clock.drift_ppm, "ref_ns": h.clock.ref_ns, "anchors": h.clock.anchors.len(),
            })
        })
        .collect()
}
