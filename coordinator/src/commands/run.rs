//! `heisen run`: a scenario under load on agents, recorded into a bundle.

use anyhow::Result;

use crate::files::{capture_id, incomplete_hosts, load_scenario, write_bundle};
use crate::hosts::connect;
use crate::output::clocks_json;
use crate::verify;
use crate::RunArgs;

pub async fn run(a: RunArgs) -> Result<i32> {
    let scenario = load_scenario(&a.scenario)?;
    let hosts = connect(&scenario, &a.target).await?;
    let repeat = a.repeat.unwrap_or(scenario.repeat);
    let id = capture_id(&scenario.name, "run");
    eprintln!("note: a run fails when {}", scenario.failure);
    let session = verify::load_observed(hosts.agents, &scenario, &hosts.vars, &id, repeat, a.observe).await?;
    let bundle = session.close(Some(&scenario), &a.scenario.display().to_string()).await?;
    let path = write_bundle(&bundle, a.out)?;
    let incomplete = incomplete_hosts(&bundle, &path);
    let failures = bundle.runs.iter().filter(|r| r.failed).count();
    if a.json {
        let v = serde_json::json!({
            "scenario": scenario.name, "failure": scenario.failure.to_string(), "runs": bundle.runs.len(), "failures": failures, "bundle": path,
            "clocks": clocks_json(&bundle),
        });
        println!("{v}");
    } else {
        println!("{failures} of {} runs failed; bundle: {}", bundle.runs.len(), path.display());
    }
    match incomplete {
        Some(e) => Err(e),
        None => Ok(0),
    }
}
