//! `heisen demo [STORY]`: the embedded default. Local hosts, the story's scenario under load,
//! a timeline excerpt of a failing run, explain's ranked candidates, then verification of the
//! first candidate and the verdict.

use anyhow::{anyhow, Context, Result};
use heisen_recordings::{Bundle, EventKind, Scenario};
use serde_json::json;

use crate::hosts::Hosts;
use crate::output::progress;
use crate::verify;
use crate::{DemoArgs, Target};
use heisen_analysis::explain;
use heisen_analysis::timeline::{self, Filter};
use heisen_harness::{Hosts as LocalHosts, Mode};

/// Stories with an embedded scenario.
pub const STORIES: &[(&str, &str)] = &[
    ("mountd-sighup", include_str!("../../../recordings/scenarios/mountd-sighup.toml")),
    ("lost-wakeup", include_str!("../../../recordings/scenarios/lost-wakeup.toml")),
    ("butterfly", include_str!("../../../recordings/scenarios/butterfly.toml")),
    ("cron-twin", include_str!("../../../recordings/scenarios/cron-twin.toml")),
    ("statd-flock", include_str!("../../../recordings/scenarios/statd-flock.toml")),
];

pub async fn run(args: &DemoArgs) -> Result<i32> {
    let (story, json_out, out) = (args.story.as_str(), args.json, args.out.as_path());
    let text = STORIES.iter().find(|(name, _)| *name == story).map(|(_, t)| *t).ok_or_else(|| {
        let names: Vec<_> = STORIES.iter().map(|(n, _)| *n).collect();
        anyhow!("unknown story `{story}`; stories with a demo: {}", names.join(", "))
    })?;
    let scenario = Scenario::parse(&format!("<embedded {story}.toml>"), text)?;
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let needs_root = match story {
        "butterfly" => Some("it mounts tmpfs file systems on its build hosts (CAP_SYS_ADMIN)"),
        "cron-twin" => Some("its hosts run real cron daemons for root and tell each other apart by address (netns)"),
        _ => None,
    };
    if let (Some(why), false) = (needs_root, root) {
        return Err(anyhow!("story {story} needs root: {why}; run it as root"));
    }
    if let (Some(why), true) = (needs_root, args.loopback) {
        return Err(anyhow!("story {story} cannot run on loopback hosts: {why}"));
    }
    let load_runs = args.load_runs.unwrap_or(scenario.repeat).max(1);
    let runs = args.runs.or(scenario.hypothesis.as_ref().map(|h| h.runs())).unwrap_or(5).max(1);
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;

    let target = Target {
        agents: vec![],
        local: true,
        loopback: args.loopback,
        skews: args.skews.clone(),
        access: Default::default(),
        shared: None,
    };
    let Hosts { agents, vars, harness } = crate::hosts::connect(&scenario, &target).await?;
    let harness: LocalHosts = harness.expect("local hosts");
    let mode = match &harness.mode {
        Mode::Netns => "netns".to_string(),
        Mode::Loopback(why) => format!("loopback ({why})"),
    };
    progress(&format!("story {story}: {} hosts on {mode}", scenario.hosts.len()));

    progress(&format!("phase 1/4: {load_runs} load runs without gates"));
    let session =
        verify::load(agents.clone(), &scenario, &vars, &crate::files::capture_id(story, "load"), load_runs).await?;
    let load_bundle = session.close(Some(&scenario), &format!("embedded:{story}")).await?;
    let load_path = out.join(format!("{}.heisen", load_bundle.capture_id));
    load_bundle.write(&load_path)?;
    let load_failures = load_bundle.runs.iter().filter(|r| r.failed).count();

    let excerpt = excerpt(&load_bundle);
    let differences = host_differences(&load_bundle);

    // explain before verify: the hypothesis verified is explain's first candidate, found without
    // being told; where the scenario's own hypothesis ranks among the candidates is reported.
    progress("phase 2/4: explain (ranking candidate causes)");
    let opts = explain::Options { bundle_arg: load_path.display().to_string(), ..Default::default() };
    let explanation = explain::explain(&load_bundle, &opts);
    let stated = scenario.hypothesis.clone();
    let explain_rank = match (&explanation, &stated) {
        (Ok(x), Some(h)) => {
            x.candidates.iter().find(|c| c.parsed.as_ref().is_some_and(|p| p.same_cause(h))).map(|c| c.rank)
        }
        _ => None,
    };
    let first = explanation.as_ref().ok().and_then(|x| x.candidates.first());
    let mut verified = scenario.clone();
    let verified_what = match first.and_then(|c| c.parsed.clone().map(|h| (c, h))) {
        Some((c, h)) => {
            verified.hypothesis = Some(h);
            format!("explain's candidate 1: {}", c.summary)
        }
        None => "the scenario's stated hypothesis (explain proposed no verifiable candidate)".to_string(),
    };

    progress(&format!("phase 3/4: verifying {verified_what}, {runs} runs per ordering"));
    let (session, results) =
        verify::verify(agents, &verified, &vars, &crate::files::capture_id(story, "verify"), runs).await?;
    let verify_bundle = session.close(Some(&scenario), &format!("embedded:{story}")).await?;
    let verify_path = out.join(format!("{}.heisen", verify_bundle.capture_id));
    verify_bundle.write(&verify_path)?;
    let verdict = verify::verdict(&results, runs);
    progress("phase 4/4: verdict");
    drop(harness);

    if json_out {
        let v = json!({
            "story": story,
            "verdict": verdict,
            "hosts": mode,
            "load": {"runs": load_bundle.runs.len(), "failures": load_failures},
            "natural": verify::Natural::of(&load_bundle),
            "orderings": results,
            "explain_rank": explain_rank,
            "verified": verified_what,
            "verified_hypothesis": verified.hypothesis.as_ref().map(|h| h.to_inline_toml()),
            "explain": match &explanation {
                Ok(x) => serde_json::to_value(x)?,
                Err(e) => json!({"error": e.to_string()}),
            },
            "bundle": load_path,
            "clocks": crate::output::clocks_json(&load_bundle),
            "verify_bundle": verify_path,
            "timeline_excerpt": excerpt.as_ref().map(|(_, events)| events.clone()),
            "diff": differences.as_ref().map(|(a, b, d)| serde_json::json!({
                "a": a, "b": b,
                "differences": d.iter().map(|x| serde_json::json!({
                    "category": x.category, "subject": x.subject, "a": x.a, "b": x.b, "score": x.score,
                    "summary": x.summary(a, b),
                })).collect::<Vec<_>>(),
            })),
        });
        println!("{v}");
    } else {
        println!("story: {story} — {}", scenario.description);
        println!("hosts: {mode}");
        println!(
            "load: {load_failures} of {} runs failed without any gate (bundle {})",
            load_bundle.runs.len(),
            load_path.display()
        );
        match &excerpt {
            Some((text, _)) => {
                println!("\ntimeline of the first failing load run:");
                print!("{text}");
            }
            None => println!("\n(no failing load run to show)"),
        }
        if let Some((a, b, d)) = &differences {
            println!("\nenvironment differences, {a} vs {b} (heisen diff):");
            if d.is_empty() {
                println!("  none");
            }
            for (i, x) in d.iter().take(5).enumerate() {
                println!("  {}. {}", i + 1, x.summary(a, b));
            }
        }
        match &explanation {
            Ok(x) => {
                println!("\nexplain (heisen explain {}):", load_path.display());
                for c in x.candidates.iter().take(3) {
                    println!("  {}. [{}] {} (score {:.2})", c.rank, c.kind, c.summary, c.score);
                }
                for f in &x.findings {
                    println!("  finding: {}", f.summary);
                }
                match explain_rank {
                    Some(r) => println!("  the scenario's stated hypothesis is candidate {r}"),
                    None => println!("  the scenario's stated hypothesis is not among the candidates"),
                }
            }
            Err(e) => println!("\nexplain: {e}"),
        }
        println!("\nverifying {verified_what}");
        println!("verification ({runs} runs per ordering, bundle {}):", verify_path.display());
        print!("{}", verify::table(&results, verdict, verify::Natural::of(&load_bundle)));
    }
    Ok(verdict.exit_code())
}

/// `heisen diff` of a two-host capture, at its first failing run: (host a, host b, differences).
fn host_differences(bundle: &Bundle) -> Option<(String, String, Vec<heisen_analysis::diff::Difference>)> {
    let [a, b] = bundle.hosts.as_slice() else { return None };
    let ea = heisen_analysis::diff::pick(bundle, &a.name, None).ok()?;
    let eb = heisen_analysis::diff::pick(bundle, &b.name, None).ok()?;
    Some((a.name.clone(), b.name.clone(), heisen_analysis::diff::compare(ea, eb)))
}

/// The essential events of the first failing run: signals with sender, errors, the writer's last
/// writes, outputs and exits.
fn excerpt(bundle: &Bundle) -> Option<(String, Vec<serde_json::Value>)> {
    let run = bundle.runs.iter().find(|r| r.failed && r.valid)?.run;
    let events = timeline::merged(bundle, &Filter { run: Some(run), essentials: true, ..Filter::default() });
    // Keep only the last three successful socket writes per host; the rest is the stream itself.
    let mut writes_left: std::collections::HashMap<&str, usize> = Default::default();
    let mut keep = vec![true; events.len()];
    for (i, (host, p)) in events.iter().enumerate().rev() {
        if let EventKind::Syscall { name, ret, .. } = &p.event.kind {
            if (name == "write" || name == "sendto") && *ret >= 0 {
                let left = writes_left.entry(host).or_insert(3);
                if *left == 0 {
                    keep[i] = false;
                } else {
                    *left -= 1;
                }
            }
        }
    }
    let shown: Vec<_> = events.iter().zip(keep).filter(|(_, k)| *k).map(|(e, _)| e).collect();
    let origin = shown.first().map(|(_, p)| p.interval.midpoint_ns()).unwrap_or(0);
    let text: String = shown.iter().map(|(h, p)| format!("  {}\n", timeline::to_text(h, p, origin))).collect();
    let json = shown.iter().map(|(h, p)| timeline::to_json(h, p)).collect();
    Some((text, json))
}
