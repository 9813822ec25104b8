//! `heisen timeline`: a bundle's merged timeline, as text or the JSON contract.

use anyhow::Result;
use heisen_analysis::timeline;
use heisen_recordings::Bundle;

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
    let bundle = Bundle::read(&a.bundle)?;
    filter.check(&bundle)?;
    let timeline = timeline::build(&bundle, &filter);
    if timeline.violations > 0 {
        eprintln!(
            "warning: {} causal edge(s) contradict the clock intervals (clock violation); see `violates_clocks`",
            timeline.violations
        );
    }
    if format == TimelineFormat::Strace {
        use std::io::Write;
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        for s in &timeline.events {
            if let Some(line) = timeline::to_strace(s.host, s.placed.event) {
                writeln!(out, "{line}")?;
            }
        }
        out.flush()?;
    } else if matches!(format, TimelineFormat::Json | TimelineFormat::Jsonl) {
        // Written as it goes, never held whole: a JSON array, or one object per line.
        use std::io::Write;
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        let lines = format == TimelineFormat::Jsonl;
        if !lines {
            out.write_all(b"[")?;
        }
        for (i, s) in timeline.events.iter().enumerate() {
            let mut v = timeline::to_json(s.host, &s.placed);
            if let (serde_json::Value::Object(v), serde_json::Value::Object(facts)) = (&mut v, timeline::facts_json(s))
            {
                v.extend(facts);
            }
            if i > 0 && !lines {
                out.write_all(b",")?;
            }
            serde_json::to_writer(&mut out, &v)?;
            if lines {
                out.write_all(b"\n")?;
            }
        }
        if !lines {
            out.write_all(b"]\n")?;
        }
        out.flush()?;
    } else {
        let origin = timeline.events.first().map(|s| s.placed.interval.midpoint_ns()).unwrap_or(0);
        let mut previous: Option<(&str, u64)> = None;
        for s in &timeline.events {
            let concurrent = previous.is_some_and(|p| s.concurrent.contains(&p));
            let marker = if concurrent { "≈" } else { " " };
            let mut line = format!("{marker}{}", timeline::to_text(s.host, &s.placed, origin));
            for (from, host, kind, bad) in s.caused_by.iter().filter(|(from, ..)| from.host != s.placed.host) {
                let warn = if *bad { " CLOCK VIOLATION" } else { "" };
                line.push_str(&format!("  <-{kind:?} {host}#{}{warn}", from.seq));
            }
            println!("{line}");
            previous = Some((s.host, s.placed.event.seq));
        }
    }
    Ok(0)
}
