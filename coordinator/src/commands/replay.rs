//! `heisen replay`: re-execute a recorded run with its recorded order enforced, for CI.

use anyhow::{anyhow, Result};

use crate::files::{capture_id, incomplete_hosts, scenario_or_bundle, write_bundle};
use crate::hosts::connect;
use crate::output::progress;
use crate::{replay, session, ReplayArgs};

pub async fn run(a: ReplayArgs) -> Result<i32> {
    let shown = a.bundle.display().to_string();
    let (scenario, bundle) = scenario_or_bundle(&a.bundle)?;
    let bundle = bundle.ok_or_else(|| anyhow!("{shown} is a scenario file; replay re-executes a run of a bundle"))?;
    let (h, source) = replay::hypothesis(&bundle, &scenario, &shown)?;
    let (ordering, recorded) = replay::plan(&bundle, &scenario, &h, a.run)?;
    let expected = if recorded.failed { "failed" } else { "passed" };
    progress(&format!("run {} {expected} when recorded; gate points of {source}", a.run));
    progress(&format!("enforcing {}", ordering.description));
    let repeat = a.repeat.max(1);
    let hosts = connect(&scenario, &a.target).await?;
    let mut session = session::Session::open(hosts.agents, &capture_id(&scenario.name, "replay"), &scenario).await?;
    let reps = replay::execute(&mut session, &scenario, &ordering, &hosts.vars, repeat).await?;
    let replay_bundle = session.close(Some(&scenario), &shown).await?;
    let path = write_bundle(&replay_bundle, a.out)?;
    let incomplete = incomplete_hosts(&replay_bundle, &path);
    let same = reps.iter().filter(|r| r.valid && r.failed == recorded.failed).count();
    if let Some(file) = &a.junit {
        let props = [
            ("bundle", shown.clone()),
            ("run", a.run.to_string()),
            ("recorded", expected.to_string()),
            ("ordering", ordering.description.clone()),
            ("replay_bundle", path.display().to_string()),
        ];
        let xml = replay::junit(
            &format!("heisen replay {shown} --run {}", a.run),
            &format!("heisen.replay.{}", scenario.name),
            a.run,
            &reps,
            &props,
        );
        replay::write_junit(file, &xml)?;
    }
    if a.json {
        let v = serde_json::json!({
            "scenario": scenario.name, "run": a.run, "recorded": expected, "hypothesis": source,
            "ordering": ordering.description, "repetitions": reps, "reproduced": same, "of": reps.len(),
            "bundle": path,
        });
        println!("{v}");
    } else {
        println!("run {} {expected} when recorded; replayed {repeat} time(s) with {}", a.run, ordering.description);
        println!("the recorded outcome came back {same} of {} time(s); bundle: {}", reps.len(), path.display());
    }
    match incomplete {
        Some(e) => Err(e),
        None => Ok(if same == reps.len() { 0 } else { 1 }),
    }
}
