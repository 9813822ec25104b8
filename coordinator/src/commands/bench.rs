//! `heisen bench`: numbers, not asserts (docs/BENCHMARKS.md).

use anyhow::Result;

use crate::bench;
use crate::output::progress;
use crate::{BenchCommand, RecordArgs};

pub async fn run(command: BenchCommand) -> Result<i32> {
    match command {
        BenchCommand::Scale { sizes, hosts, runs, only, timeout, real, dir, json } => {
            let temp = match &dir {
                Some(_) => None,
                None => Some(tempfile::Builder::new().prefix("heisen-bench-scale-").tempdir()?),
            };
            let plan = bench::scale::Plan {
                sizes,
                hosts: hosts.max(1),
                runs: runs.max(1),
                dir: dir.unwrap_or_else(|| temp.as_ref().expect("a temporary directory").path().to_path_buf()),
                timeout: std::time::Duration::from_secs(timeout),
                steps: only,
                real,
            };
            let rows = tokio::task::spawn_blocking(move || {
                bench::scale::scale(&plan, |what| progress(&format!("bench: {what}")))
            })
            .await??;
            if json {
                println!("{}", serde_json::to_string(&rows)?);
            } else {
                print!("{}", bench::scale::table(&rows));
            }
            Ok(0)
        }
        BenchCommand::ScaleStep { step, file, events, hosts, runs } => {
            match step.as_str() {
                "write" => bench::scale::write_step(&file, events, hosts, runs)?,
                "read" => {
                    bench::scale::read_step(&file)?;
                }
                other => anyhow::bail!("unknown scale step `{other}`"),
            }
            Ok(0)
        }
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
                    "  bare heap merge   {:>12.0} events/s   (same streams and keys, generation included)",
                    r.bare_heap_events_per_s
                );
                println!(
                    "  merge / bare heap {:>12.2}            (aim: >= 0.5){}",
                    r.ratio_to_bare_heap,
                    if r.ratio_to_bare_heap >= 0.5 { " (met)" } else { " (MISSED)" }
                );
                println!(
                    "  peak RSS          {:>12} bytes after all, {} after a tenth",
                    r.peak_rss_bytes, r.peak_rss_after_tenth_bytes
                );
            }
            Ok(0)
        }
    }
}
