//! Phase 2, choose a passing baseline: what the failing runs are compared with — passing runs of
//! the same capture, a peer host that ran the failing step's command and passed, or nothing (then
//! only the items a failing run handled can be compared).

use heisen_recordings::{Bundle, Scenario};

/// What failing runs are compared with.
#[derive(Clone, Debug)]
pub enum Baseline {
    /// Passing runs of the same capture.
    Runs(Vec<u32>),
    /// Every run failed, but a step running the same command on another host passed in them:
    /// compare the failing host with that peer.
    Peer { failing_step: String, failing_host: String, peer_step: String, peer_host: String },
    /// Nothing passed: only the items a failing run handled can be compared.
    None,
}

impl Baseline {
    pub(crate) fn describe(&self) -> String {
        match self {
            Baseline::Runs(r) => format!(
                "{} passing run(s) of the same capture: {}",
                r.len(),
                r.iter().map(|r| r.to_string()).collect::<Vec<_>>().join(", ")
            ),
            Baseline::Peer { failing_step, failing_host, peer_step, peer_host } => format!(
                "no run passed; step {peer_step} on {peer_host} runs the same command as the failing step \
                 {failing_step} on {failing_host} and passed: host {failing_host} is compared with {peer_host}"
            ),
            Baseline::None => {
                "no run passed and no step on another host runs the failing step's command: the items the failing \
                 runs handled are compared (those the failure names against the others)"
                    .into()
            }
        }
    }
}

/// Phase 2.
pub fn choose_baseline(bundle: &Bundle, scenario: Option<&Scenario>, failing: &[u32], valid: &[u32]) -> Baseline {
    let passing: Vec<u32> = valid.iter().copied().filter(|r| !failing.contains(r)).collect();
    if !passing.is_empty() {
        return Baseline::Runs(passing);
    }
    let Some(s) = scenario else { return Baseline::None };
    let Some(step) = s.process(&s.failure.step) else { return Baseline::None };
    for peer in s.steps.iter().filter(|p| p.host != step.host && p.command == step.command) {
        let passed = failing.iter().all(|run| {
            bundle
                .runs
                .iter()
                .find(|o| o.run == *run)
                .and_then(|o| o.steps.iter().find(|st| st.name == peer.name))
                .is_some_and(|st| st.exit_code == 0)
        });
        if passed {
            return Baseline::Peer {
                failing_step: step.name.clone(),
                failing_host: step.host.clone(),
                peer_step: peer.name.clone(),
                peer_host: peer.host.clone(),
            };
        }
    }
    Baseline::None
}
