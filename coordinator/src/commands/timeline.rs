//! `heisen timeline`: a bundle's merged timeline, as text or the JSON contract.

use std::io::Write;

use anyhow::Result;
use heisen_analysis::timeline;
use heisen_recordings::BundleFile;

use crate::commands::capture::parse_duration;
use crate::{TimelineArgs, TimelineFormat};

pub fn run(a: TimelineArgs) -> Result<i32> {
    let format = match (a.json, a.jsonl) {
        (true, _) => TimelineFormat::Json,
        (_, true) => TimelineFormat::Jsonl,
        _ => a.format,
    };
    let essentials = !a.all && format == TimelineFormat::Text;
    let syscalls = heisen_recordings::expand_syscalls(&a.syscall).map_err(|bad| {
        let classes: Vec<&str> = heisen_recordings::CLASSES.iter().map(|(c, _)| *c).collect();
        anyhow::anyhow!("--syscall: `{bad}` is neither a syscall heisen records nor a class ({})", classes.join(", "))
    })?;
    let offset = |flag: &str, d: &Option<String>| -> Result<Option<i64>> {
        d.as_deref().map(|d| Ok(parse_duration(flag, d)?.as_nanos().min(i64::MAX as u128) as i64)).transpose()
    };
    let filter = timeline::Filter {
        hosts: a.host,
        run: a.run,
        kinds: a.kind,
        pids: a.pid,
        comms: a.comm,
        syscalls: syscalls.into_iter().map(str::to_string).collect(),
        since_ns: offset("--since", &a.since)?,
        until_ns: offset("--until", &a.until)?,
        essentials,
    };
    let file = BundleFile::open(&a.bundle)?;
    filter.check(&file)?;
    // Written as it goes, never held whole: the merge hands batches of events to a thread that
    // formats them, so formatting (most of the work for --json) runs beside reading and merging.
    const BATCH: usize = 1024;
    let summary = std::thread::scope(|scope| -> Result<timeline::Summary> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<timeline::Shown<'_>>>(4);
        let writer = scope.spawn(move || -> Result<()> {
            let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
            let mut printer = Printer::new(format);
            for batch in rx {
                for s in &batch {
                    printer.print(&mut out, s)?;
                }
            }
            printer.finish(&mut out)?;
            out.flush()?;
            Ok(())
        });
        let mut batch = Vec::with_capacity(BATCH);
        let streamed = timeline::stream(&file, &filter, |s| -> Result<()> {
            batch.push(s);
            if batch.len() == BATCH {
                let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
                tx.send(full).map_err(|_| anyhow::anyhow!("the output writer stopped"))?;
            }
            Ok(())
        });
        if streamed.is_ok() && !batch.is_empty() {
            let _ = tx.send(batch);
        }
        drop(tx);
        // The writer's own error (a reader that went away) explains a stopped stream best.
        writer.join().map_err(|_| anyhow::anyhow!("the output writer panicked"))??;
        streamed
    })?;
    if summary.violations > 0 {
        eprintln!(
            "warning: {} causal edge(s) contradict the clock intervals (clock violation); see `violates_clocks`",
            summary.violations
        );
    }
    let damage = file.damage();
    if let Some(d) = damage.first() {
        anyhow::bail!(
            "{}: damaged {d}{}; the timeline above holds what reads before the damage",
            a.bundle.display(),
            if damage.len() > 1 { format!(" (and {} more)", damage.len() - 1) } else { String::new() }
        );
    }
    Ok(0)
}

/// Prints shown events in one of the timeline's formats, keeping what a line depends on from the
/// lines before it (the JSON array's commas, the text's origin and concurrency mark).
struct Printer {
    format: TimelineFormat,
    first: bool,
    /// The text timeline's times are relative to its first shown event.
    origin: Option<i64>,
    previous: Option<(String, u64)>,
}

impl Printer {
    fn new(format: TimelineFormat) -> Printer {
        Printer { format, first: true, origin: None, previous: None }
    }

    fn print(&mut self, out: &mut impl Write, s: &timeline::Shown<'_>) -> Result<()> {
        match self.format {
            TimelineFormat::Strace => {
                if let Some(line) = timeline::to_strace(s.host, &s.placed.event) {
                    writeln!(out, "{line}")?;
                }
            }
            TimelineFormat::Json | TimelineFormat::Jsonl => {
                let lines = self.format == TimelineFormat::Jsonl;
                if !lines {
                    out.write_all(if self.first { b"[" } else { b"," })?;
                }
                timeline::write_json(out, s)?;
                if lines {
                    out.write_all(b"\n")?;
                }
            }
            TimelineFormat::Text => {
                let origin = *self.origin.get_or_insert(s.placed.interval.midpoint_ns());
                let concurrent =
                    self.previous.as_ref().is_some_and(|(h, seq)| s.concurrent.contains(&(h.as_str(), *seq)));
                let marker = if concurrent { "≈" } else { " " };
                let mut line = format!("{marker}{}", timeline::to_text(s.host, &s.placed, origin));
                for (from, host, kind, bad) in s.caused_by.iter().filter(|(from, ..)| from.host != s.placed.host) {
                    let warn = if *bad { " CLOCK VIOLATION" } else { "" };
                    line.push_str(&format!("  <-{kind:?} {host}#{}{warn}", from.seq));
                }
                writeln!(out, "{line}")?;
                self.previous = Some((s.host.to_string(), s.placed.event.seq));
            }
        }
        self.first = false;
        Ok(())
    }

    fn finish(&mut self, out: &mut impl Write) -> Result<()> {
        if self.format == TimelineFormat::Json {
            out.write_all(if self.first { b"[]\n" } else { b"]\n" })?;
        }
        Ok(())
    }
}
