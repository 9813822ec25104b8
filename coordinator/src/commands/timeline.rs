//! `heisen timeline`: a bundle's merged timeline, as text or the JSON contract.

use anyhow::Result;
use heisen_analysis::timeline;
use heisen_recordings::Bundle;

use crate::{TimelineArgs, TimelineFormat};

pub fn run(a: TimelineArgs) -> Result<i32> {
    let bundle = Bundle::read(&a.bundle)?;
    let format = if a.json { TimelineFormat::Json } else { a.format };
    let essentials = !a.all && format == TimelineFormat::Text;
    let filter = timeline::Filter { hosts: a.host, run: a.run, kinds: a.kind, essentials };
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
    } else if format == TimelineFormat::Json {
        let array: Vec<_> = timeline
            .events
            .iter()
            .map(|s| {
                let mut v = timeline::to_json(s.host, &s.placed);
                if let (serde_json::Value::Object(v), serde_json::Value::Object(facts)) =
                    (&mut v, timeline::facts_json(s))
                {
                    v.extend(facts);
                }
                v
            })
            .collect();
        println!("{}", serde_json::to_string(&array)?);
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
