//! Phase 1, choose failing runs: the valid free runs (no gates) of a capture, and those of them
//! that failed. Runs perturbed by the ptrace recorder are left out unless only they failed.

use heisen_recordings::{Bundle, RunObserver};

use crate::AnalysisError;

/// Phase 1: the valid free runs (no gates), and those of them that failed.
pub fn choose_failing(bundle: &Bundle) -> Result<(Vec<u32>, Vec<u32>), AnalysisError> {
    if bundle.runs.is_empty() {
        return Err(AnalysisError::NoRuns { capture: bundle.capture_id.clone() });
    }
    let free: Vec<_> = bundle.runs.iter().filter(|r| r.valid && r.ordering.is_none()).collect();
    // A verify capture has only gated runs: compare those, gates and all.
    let mut pool: Vec<_> = if free.is_empty() { bundle.runs.iter().filter(|r| r.valid).collect() } else { free };
    // Runs with the ptrace recorder attached are perturbed: compare the undisturbed ones, unless
    // none of those failed (then the observer is part of the story: compare them all).
    let undisturbed_failed = pool.iter().any(|r| r.observer != RunObserver::Ptrace && r.failed);
    if pool.iter().any(|r| r.observer == RunObserver::Ptrace) && undisturbed_failed {
        pool.retain(|r| r.observer != RunObserver::Ptrace);
    }
    let valid: Vec<u32> = pool.iter().map(|r| r.run).collect();
    let failing: Vec<u32> = pool.iter().filter(|r| r.failed).map(|r| r.run).collect();
    if valid.is_empty() {
        let notes: Vec<String> =
            bundle.runs.iter().filter(|r| !r.valid).map(|r| format!("run {}: {}", r.run, r.note)).collect();
        return Err(AnalysisError::NoValidRun {
            capture: bundle.capture_id.clone(),
            runs: bundle.runs.len(),
            notes: notes.join("; "),
        });
    }
    if failing.is_empty() {
        return Err(AnalysisError::NothingFailed { capture: bundle.capture_id.clone(), valid: valid.len() });
    }
    Ok((failing, valid))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::explain::tests::outcome;

    #[test]
    fn no_valid_run_is_explained_with_the_runs_notes() {
        let mut run = outcome(1, false, RunObserver::Kernel);
        run.valid = false;
        run.note = "step submit did not exit within 60 s (its `timeout`); stopped".into();
        let bundle = Bundle {
            capture_id: "c".into(),
            started_ns: 0,
            scenario: None,
            hosts: vec![],
            runs: vec![run],
            causal: vec![],
            placeholders: Default::default(),
        };
        let e = choose_failing(&bundle).unwrap_err();
        assert!(
            e.to_string().contains("none of the 1 runs of capture c is valid")
                && e.to_string().contains("run 1: step submit did not exit"),
            "{e}"
        );
    }
}
