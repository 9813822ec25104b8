//! `heisen verify`: enforce a hypothesis and its alternatives; print the verdict.

use anyhow::{anyhow, Context, Result};
use heisen_analysis::explain;

use crate::files::{capture_id, incomplete_hosts, scenario_or_bundle, write_bundle};
use crate::hosts::connect;
use crate::output::progress;
use crate::{verify, VerifyArgs};

pub async fn run(a: VerifyArgs) -> Result<i32> {
    let (mut scenario, bundle) = scenario_or_bundle(&a.scenario)?;
    let natural = bundle.as_ref().and_then(verify::Natural::of);
    let shown = a.scenario.display().to_string();
    if let Some(inline) = &a.hypothesis {
        scenario = scenario.with_hypothesis(&shown, inline)?;
    }
    if let Some(n) = a.candidate {
        let bundle =
            bundle.ok_or_else(|| anyhow!("--candidate needs a bundle (explain reads one), not a scenario file"))?;
        let opts = explain::Options { seed: a.seed, bundle_arg: shown.clone(), ..Default::default() };
        let x = explain::explain(&bundle, &opts).with_context(|| shown.clone())?;
        let c = x.candidates.iter().find(|c| c.rank == n).ok_or_else(|| {
            anyhow!("{shown}: explain has {} candidate(s); there is no candidate {n}", x.candidates.len())
        })?;
        let h = c.parsed.clone().ok_or_else(|| {
            anyhow!(
                "candidate {n} ({}) cannot be verified: {}",
                c.summary,
                c.not_verifiable.clone().unwrap_or_default()
            )
        })?;
        progress(&format!("verifying candidate {n}: {}", c.summary));
        scenario.hypothesis = Some(h);
    }
    let runs = a.runs.or(scenario.hypothesis.as_ref().map(|h| h.runs())).unwrap_or(5).max(1);
    let hosts = connect(&scenario, &a.target).await?;
    let (session, mut results) =
        verify::verify(hosts.agents, &scenario, &hosts.vars, &capture_id(&scenario.name, "verify"), runs).await?;
    let bundle = session.close(Some(&scenario), &a.scenario.display().to_string()).await?;
    let path = write_bundle(&bundle, a.out)?;
    verify::recount(&mut results, &bundle.runs);
    let incomplete = incomplete_hosts(&bundle, &path);
    let verdict = verify::verdict(&results, runs);
    if a.json {
        let v = serde_json::json!({"scenario": scenario.name, "verdict": verdict, "natural": natural, "orderings": results, "bundle": path});
        println!("{v}");
    } else {
        print!("{}", verify::table(&results, verdict, natural));
        println!("bundle: {}", path.display());
    }
    match incomplete {
        Some(e) => Err(e),
        None => Ok(verdict.exit_code()),
    }
}
