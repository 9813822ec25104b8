//! `heisen timeline`: a bundle's merged timeline, as text or the JSON contract.

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
    use std::io::Write;
    let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    let lines = format == TimelineFormat::Jsonl;
    let mut first = true;
    // The text timeline's times are relative to its first shown event.
    let mut origin = None;
    let mut previous: Option<(String, u64)> = None;
    if format == TimelineFormat::Json {
        out.write_all(b"[")?;
    }
    // Written as it goes, never held whole.
    let summary = timeline::stream(&file, &filter, |s| -> Result<()> {
        match format {
            TimelineFormat::Strace => {
                if let Some(line) = timeline::to_strace(s.host, &s.placed.event) {
                    writeln!(out, "{line}")?;
                }
            }
            TimelineFormat::Json | TimelineFormat::Jsonl => {
                if !first && !lines {
                    out.write_all(b",")?;
                }
                timeline::write_json(&mut out, &s)?;
                if lines {
                    out.write_all(b"\n")?;
                }
            }
            TimelineFormat::Text => {
                let origin = *origin.get_or_insert(s.placed.interval.midpoint_ns());
                let concurrent = previous.as_ref().is_some_and(|(h, seq)| s.concurrent.contains(&(h.as_str(), *seq)));
                let marker = if concurrent { "≈" } else { " " };
                let mut line = format!("{marker}{}", timeline::to_text(s.host, &s.placed, origin));
                for (from, host, kind, bad) in s.caused_by.iter().filter(|(from, ..)| from.host != s.placed.host) {
                    let warn = if *bad { " CLOCK VIOLATION" } else { "" };
                    line.push_str(&format!("  <-{kind:?} {host}#{}{warn}", from.seq));
                }
                writeln!(out, "{line}")?;
                previous = Some((s.host.to_string(), s.placed.event.seq));
            }
        }
        first = false;
        Ok(())
    })?;
    if format == TimelineFormat::Json {
        out.write_all(b"]\n")?;
    }
    out.flush()?;
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
