//! `heisen bench`: numbers, not asserts (docs/BENCHMARKS.md).

use anyhow::Result;

use crate::bench;
use crate::output::progress;
use crate::{BenchCommand, RecordArgs};

pub async fn run(command: BenchCommand) -> Result<i32> {
    match command {
        BenchCommand::Record(RecordArgs {
            storm_writes,
            load_mib,
            trapped_writes,
            files_iterations,
            only,
            workload,
            json,
        }) => {
            let sizes = bench::record::Sizes {
                storm_writes,
                load_mib,
                trapped_writes,
                files_iterations,
                only,
                workloads: workload,
            };
            let rows = bench::record::record(&sizes, |what| progress(&format!("bench: {what}"))).await?;
            if json {
                println!("{}", serde_json::to_string(&rows)?);
            } else {
                print!("{}", bench::record::table(&rows));
            }
            Ok(0)
        }
        BenchCommand::Hosts { bursts, releases, json } => {
            let plan = bench::hosts::Plan { bursts, releases };
            let (mode, rows) = bench::hosts::hosts(&plan, |what| progress(&format!("bench: {what}"))).await?;
            if json {
                println!("{}", serde_json::json!({ "hosts": mode, "rows": rows }));
            } else {
                print!("{}", bench::hosts::table(&mode, &rows));
            }
            Ok(0)
        }
        BenchCommand::Merge { events, hosts, json } => {
            let r = tokio::task::spawn_blocking(move || bench::merge::merge(events, hosts)).await?;
            if json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                println!("merge of {} events from {} hosts", r.events, r.hosts);
                println!("  with generation   {:>12.0} events/s", r.events_per_s);
                println!("  generation alone  {:>12.0} events/s", r.generate_events_per_s);
                println!("  merge alone       {:>12.0} events/s   (aim: >= 20,000,000)", r.merge_only_events_per_s);
                println!(
                    "  peak RSS          {:>12} bytes after all, {} after a tenth",
                    r.peak_rss_bytes, r.peak_rss_after_tenth_bytes
                );
            }
            Ok(0)
        }
    }
}
