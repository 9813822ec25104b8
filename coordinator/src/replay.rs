//! `heisen replay BUNDLE --run N`: re-execute a recorded run with the recorded order of its gate
//! points enforced, so a flaky failure becomes a deterministic test; `--junit FILE` for CI.
//!
//! The gate points are the hypothesis's (the scenario's own, else explain's first verifiable
//! candidate); the recorded run says in which order they came (heisen_analysis::recorded), and
//! schedule::replay_ordering turns that into gates and releases.

use std::path::Path;
use std::time::Instant;

use anyhow::{anyhow, Result};
use heisen_recordings::{Bundle, Hypothesis, RunOutcome, Scenario};

use heisen_analysis::explain;
use heisen_analysis::schedule::{replay_ordering, Ordering};

/// The hypothesis whose gate points replay orders, and where it came from.
pub fn hypothesis(bundle: &Bundle, scenario: &Scenario, shown: &str) -> Result<(Hypothesis, String)> {
    if let Some(h) = &scenario.hypothesis {
        return Ok((h.clone(), "the scenario's hypothesis".into()));
    }
    let opts = explain::Options { bundle_arg: shown.to_string(), ..Default::default() };
    let x = explain::explain(bundle, &opts).map_err(|e| anyhow!("{shown}: the scenario has no hypothesis and {e}"))?;
    let c = x.candidates.iter().find(|c| c.parsed.is_some()).ok_or_else(|| {
        anyhow!("{shown}: the scenario has no hypothesis and explain proposes none heisen can verify: no gate points to order")
    })?;
    Ok((c.parsed.clone().expect("found"), format!("explain's candidate {}: {}", c.rank, c.summary)))
}

/// The ordering that replays `run`, and the recorded outcome it should bring back.
pub fn plan(bundle: &Bundle, scenario: &Scenario, h: &Hypothesis, run: u32) -> Result<(Ordering, RunOutcome)> {
    let outcome = bundle.runs.iter().find(|r| r.run == run).cloned().ok_or_else(|| {
        anyhow!("capture {} has no run {run}; it has runs 1..={}", bundle.capture_id, bundle.runs.len())
    })?;
    if !outcome.valid {
        return Err(anyhow!(
            "run {run} of capture {} was invalid ({}): there is nothing to replay",
            bundle.capture_id,
            outcome.note
        ));
    }
    let rec = heisen_analysis::recorded(bundle, scenario, run, h)?;
    let ordering = replay_ordering(scenario, h, &rec)?;
    Ok((ordering, outcome))
}

/// One repetition's result.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Repetition {
    pub repetition: u32,
    pub failed: bool,
    pub valid: bool,
    pub note: String,
    pub seconds: f64,
}

/// JUnit XML (testsuites/testsuite/testcase, `failure` when the scenario's failure predicate held,
/// `error` when the run could not be carried out as scheduled).
pub fn junit(suite: &str, classname: &str, run: u32, reps: &[Repetition], properties: &[(&str, String)]) -> String {
    let failures = reps.iter().filter(|r| r.valid && r.failed).count();
    let errors = reps.iter().filter(|r| !r.valid).count();
    let time: f64 = reps.iter().map(|r| r.seconds).sum();
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    x.push_str(&format!(
        "<testsuites name=\"heisen replay\" tests=\"{}\" failures=\"{failures}\" errors=\"{errors}\" time=\"{time:.3}\">\n",
        reps.len()
    ));
    x.push_str(&format!(
        "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{failures}\" errors=\"{errors}\" skipped=\"0\" time=\"{time:.3}\">\n",
        esc(suite),
        reps.len()
    ));
    x.push_str("    <properties>\n");
    for (k, v) in properties {
        x.push_str(&format!("      <property name=\"{}\" value=\"{}\"/>\n", esc(k), esc(v)));
    }
    x.push_str("    </properties>\n");
    for r in reps {
        x.push_str(&format!(
            "    <testcase classname=\"{}\" name=\"run {run} replay {}\" time=\"{:.3}\"",
            esc(classname),
            r.repetition,
            r.seconds
        ));
        if !r.valid {
            x.push_str(&format!(
                ">\n      <error message=\"{}\" type=\"invalid-run\"/>\n    </testcase>\n",
                esc(&r.note)
            ));
        } else if r.failed {
            x.push_str(&format!(
                ">\n      <failure message=\"{}\" type=\"scenario-failure\">{}</failure>\n    </testcase>\n",
                esc(&r.note),
                esc(&r.note)
            ));
        } else {
            x.push_str("/>\n");
        }
    }
    x.push_str("  </testsuite>\n</testsuites>\n");
    x
}

fn esc(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '&' => "&amp;".to_string(),
            '<' => "&lt;".to_string(),
            '>' => "&gt;".to_string(),
            '"' => "&quot;".to_string(),
            '\'' => "&apos;".to_string(),
            c if (c as u32) < 0x20 && c != '\n' && c != '\t' => " ".to_string(),
            c => c.to_string(),
        })
        .collect()
}

/// Runs the replay `repeat` times in one capture.
pub async fn execute(
    session: &mut crate::session::Session,
    scenario: &Scenario,
    ordering: &Ordering,
    vars: &crate::session::Placeholders,
    repeat: u32,
) -> Result<Vec<Repetition>> {
    let mut reps = Vec::new();
    for i in 1..=repeat {
        let started = Instant::now();
        let o = session.run(scenario, Some(ordering), vars).await?;
        let what = if !o.valid {
            format!("invalid ({})", o.note)
        } else if o.failed {
            format!("FAILED: {}", o.note)
        } else {
            "passed".into()
        };
        crate::output::progress(&format!("[replay {i}/{repeat}] {what}"));
        reps.push(Repetition {
            repetition: i,
            failed: o.failed,
            valid: o.valid,
            note: o.note,
            seconds: started.elapsed().as_secs_f64(),
        });
    }
    Ok(reps)
}

/// Writes the JUnit file atomically enough for CI (temporary file, rename).
pub fn write_junit(path: &Path, xml: &str) -> Result<()> {
    let tmp = path.with_extension("partial");
    std::fs::write(&tmp, xml).map_err(|e| anyhow!("cannot write {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| anyhow!("cannot write {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn junit_has_the_usual_shape_and_escapes() {
        let reps = vec![
            Repetition {
                repetition: 1,
                failed: true,
                valid: true,
                note: "write exited 13: <EACCES> & \"more\"".into(),
                seconds: 1.5,
            },
            Repetition { repetition: 2, failed: false, valid: true, note: String::new(), seconds: 1.0 },
            Repetition { repetition: 3, failed: false, valid: false, note: "gate timed out".into(), seconds: 30.0 },
        ];
        let x = junit("replay b.heisen run 3", "heisen.replay.s", 3, &reps, &[("capture", "c".into())]);
        assert!(x.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites "), "{x}");
        assert!(x.contains("<testsuite name=\"replay b.heisen run 3\" tests=\"3\" failures=\"1\" errors=\"1\""), "{x}");
        assert_eq!(x.matches("<testcase ").count(), 3);
        assert!(x.contains("<failure message=\"write exited 13: &lt;EACCES&gt; &amp; &quot;more&quot;\""), "{x}");
        assert!(x.contains("<error message=\"gate timed out\" type=\"invalid-run\"/>"), "{x}");
        assert!(x.contains("name=\"run 3 replay 2\" time=\"1.000\"/>"), "{x}");
        assert!(x.trim_end().ends_with("</testsuites>"));
    }
}
