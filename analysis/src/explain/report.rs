//! The result of `heisen explain` (its JSON contract) and its text form.

use heisen_recordings::{Bundle, Hypothesis};
use serde::Serialize;

use crate::align::Occ;
use crate::error::Unverifiable;

/// The result of `heisen explain`.
#[derive(Debug, Serialize)]
pub struct Explanation {
    pub capture_id: String,
    pub scenario: Option<String>,
    pub seed: u64,
    pub phases: Vec<PhaseReport>,
    pub failing_runs: Vec<u32>,
    /// What the failing runs are compared with, in words.
    pub baseline: String,
    pub candidates: Vec<Candidate>,
    /// Observations that are not candidates but change how to read the capture (an attach that
    /// woke a blocked call, ...).
    pub findings: Vec<Finding>,
}

/// One phase and what it found, in words.
#[derive(Debug, Serialize)]
pub struct PhaseReport {
    pub name: &'static str,
    pub summary: String,
}

/// A ranked candidate cause.
#[derive(Clone, Debug, Serialize)]
pub struct Candidate {
    pub rank: usize,
    /// `ordering` or `environment`.
    pub kind: &'static str,
    pub summary: String,
    /// Separation: share of failing cases where it holds minus share of passing cases (1.0 at best).
    pub score: f64,
    /// How likely a separation at least this large is by chance, if the candidate had nothing to
    /// do with the failure: Fisher's exact test, one-sided, on failing/passing × holds/not.
    pub p_value: f64,
    /// What a "case" is: `runs`, `host pairs` (a failing host against a passing peer), or `items`
    /// (the things a run handled, e.g. job files, failing ones named by the failure).
    pub unit: &'static str,
    pub failing: Count,
    pub passing: Count,
    pub evidence: Vec<Evidence>,
    /// The hypothesis as a TOML inline table, when heisen can verify it with this scenario.
    pub hypothesis: Option<String>,
    pub verify: Option<String>,
    /// Why it cannot be verified as is.
    pub not_verifiable: Option<String>,
    #[serde(skip)]
    pub parsed: Option<Hypothesis>,
    #[serde(skip)]
    pub(crate) prior: u32,
    /// Where the cause comes in its process (its first occurrence's seq in the evidence run):
    /// between equals, the earlier call of one process is the cause, later ones follow from it
    /// (a connect, then the request written on it).
    #[serde(skip)]
    pub(crate) cause_seq: u64,
    /// How long the victim's window lasts (median over failing runs, ns; 0 when the candidate has
    /// none): between equals, the narrower window says more (a connection's calls, not every
    /// close the process made from start to end).
    #[serde(skip)]
    pub(crate) window_ns: i64,
    /// When the cause comes in a failing run (median over failing runs, ns after the run's first
    /// event): between equals, the earlier departure from the passing runs is the cause and the
    /// later one its consequence (a job deletes the running one's file; *then* the running one's
    /// rename lands while the job has its file open).
    #[serde(skip)]
    pub(crate) cause_at_ns: i64,
    /// How much it names (between equals, the more specific first): the files its two events
    /// act on, and whether the named call it is ordered against took effect (a rename that
    /// returned EEXIST changed nothing).
    #[serde(skip)]
    pub(crate) specificity: u8,
}

/// In how many of `of` cases a candidate holds.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Count {
    pub holds: usize,
    pub of: usize,
}

/// An event behind a candidate: where and when (coordinator time, ± the clock error).
#[derive(Clone, Debug, Serialize)]
pub struct Evidence {
    pub host: String,
    pub run: u32,
    pub time_ns: i64,
    pub error_ns: i64,
    pub what: String,
}

/// Something explain noticed that is not a ranked cause.
#[derive(Clone, Debug, Serialize)]
pub struct Finding {
    pub kind: &'static str,
    pub summary: String,
    pub evidence: Vec<Evidence>,
}

/// Fisher's exact test, one-sided: the probability that, with the same totals, the failing
/// cases would hold at least `failing.holds` times if holding had nothing to do with failing
/// (the hypergeometric tail). 1.0 when there is nothing to compare.
pub(crate) fn fisher_greater(failing: Count, passing: Count) -> f64 {
    let n = failing.of;
    let total = failing.of + passing.of;
    let k = failing.holds + passing.holds;
    if n == 0 || passing.of == 0 || k == 0 {
        return 1.0;
    }
    // ln(i!) for i = 0..=total.
    let mut ln_fact = vec![0.0f64; total + 1];
    for i in 1..=total {
        ln_fact[i] = ln_fact[i - 1] + (i as f64).ln();
    }
    let ln_choose = |a: usize, b: usize| ln_fact[a] - ln_fact[b] - ln_fact[a - b];
    let ln_all = ln_choose(total, n);
    let top = k.min(n);
    let p: f64 = (failing.holds..=top)
        .filter(|x| n - x <= total - k)
        .map(|x| (ln_choose(k, x) + ln_choose(total - k, n - x) - ln_all).exp())
        .sum();
    p.min(1.0)
}

/// A p-value as people read it: 0.24, 0.018, 8.7e-5.
fn p_text(p: f64) -> String {
    let fixed = |digits: usize| format!("{p:.digits$}").trim_end_matches('0').trim_end_matches('.').to_string();
    if p >= 0.1 {
        fixed(2)
    } else if p >= 0.001 {
        fixed(3)
    } else {
        format!("{p:.1e}")
    }
}

pub(crate) fn share(c: Count) -> f64 {
    if c.of == 0 {
        0.0
    } else {
        c.holds as f64 / c.of as f64
    }
}

pub(crate) fn evidence_of(bundle: &Bundle, run: u32, o: &Occ, what: String) -> Evidence {
    Evidence {
        host: bundle.hosts[o.host].name.clone(),
        run,
        time_ns: o.at.midpoint_ns(),
        error_ns: (o.at.latest_ns - o.at.earliest_ns) / 2,
        what,
    }
}

impl Candidate {
    /// An unranked candidate with its counts `(failing, passing, score)` and the hypothesis that
    /// would verify it, or why there is none.
    pub(crate) fn new(
        kind: &'static str,
        unit: &'static str,
        summary: String,
        (failing, passing, score): (Count, Count, f64),
        evidence: Vec<Evidence>,
        prior: u32,
        h: Result<Hypothesis, Unverifiable>,
    ) -> Candidate {
        let (parsed, not_verifiable) = match h {
            Ok(h) => (Some(h), None),
            Err(why) => (None, Some(why.to_string())),
        };
        Candidate {
            rank: 0,
            kind,
            summary,
            score,
            p_value: fisher_greater(failing, passing),
            unit,
            failing,
            passing,
            evidence,
            hypothesis: parsed.as_ref().map(Hypothesis::to_inline_toml),
            verify: None,
            not_verifiable,
            parsed,
            prior,
            cause_seq: u64::MAX,
            window_ns: 0,
            cause_at_ns: i64::MAX,
            specificity: 0,
        }
    }
}

/// The explanation as text.
pub fn to_text(x: &Explanation) -> String {
    let mut out = format!(
        "explain: capture {}{}, seed {}\n",
        x.capture_id,
        x.scenario.as_ref().map(|s| format!(" (scenario {s})")).unwrap_or_default(),
        x.seed
    );
    for (i, p) in x.phases.iter().enumerate() {
        out.push_str(&format!("phase {}/{} {}: {}\n", i + 1, x.phases.len(), p.name, p.summary));
    }
    if x.candidates.is_empty() {
        out.push_str("\nno candidate separates failing from passing cases\n");
    }
    for c in &x.candidates {
        out.push_str(&format!("\n{}. [{}] {}\n", c.rank, c.kind, c.summary));
        out.push_str(&format!(
            "   separates {}: holds in {}/{} failing, {}/{} passing (score {:.2}, p = {})\n",
            c.unit,
            c.failing.holds,
            c.failing.of,
            c.passing.holds,
            c.passing.of,
            c.score,
            p_text(c.p_value)
        ));
        if let Some(first) = c.evidence.iter().map(|e| e.time_ns).min() {
            for e in &c.evidence {
                out.push_str(&format!(
                    "   run {:<3} {:<8} t+{:>10.3} ms ±{:.3} ms  {}\n",
                    e.run,
                    e.host,
                    (e.time_ns - first) as f64 / 1e6,
                    e.error_ns as f64 / 1e6,
                    e.what
                ));
            }
        }
        match (&c.verify, &c.not_verifiable) {
            (Some(v), _) => out.push_str(&format!("   verify: {v}\n")),
            (None, Some(why)) => out.push_str(&format!("   not verifiable as is: {why}\n")),
            _ => {}
        }
    }
    for f in &x.findings {
        out.push_str(&format!("\nfinding [{}]: {}\n", f.kind, f.summary));
        if let Some(first) = f.evidence.iter().map(|e| e.time_ns).min() {
            for e in &f.evidence {
                out.push_str(&format!(
                    "   {:<8} t+{:>10.3} ms  {}\n",
                    e.host,
                    (e.time_ns - first) as f64 / 1e6,
                    e.what
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fishers_exact_test_against_hand_computed_tails() {
        let c = |holds, of| Count { holds, of };
        let close = |a: f64, b: f64| (a - b).abs() < 1e-9 * b.max(1e-300);
        // 5/5 vs 0/3: one table of C(8,5) = 56.
        assert!(close(fisher_greater(c(5, 5), c(0, 3)), 1.0 / 56.0));
        // 7/7 vs 0/9 (torn-config): 1/C(16,7).
        assert!(close(fisher_greater(c(7, 7), c(0, 9)), 1.0 / 11440.0));
        // 3/4 vs 1/4: (C(4,3)C(4,1) + C(4,4)C(4,0)) / C(8,4) = 17/70.
        assert!(close(fisher_greater(c(3, 4), c(1, 4)), 17.0 / 70.0));
        // Nothing to compare, or it never holds.
        assert_eq!(fisher_greater(c(3, 3), c(0, 0)), 1.0);
        assert_eq!(fisher_greater(c(0, 3), c(0, 3)), 1.0);
        assert_eq!(
            (p_text(17.0 / 70.0), p_text(1.0 / 56.0), p_text(1.0 / 11440.0)),
            ("0.24".into(), "0.018".into(), "8.7e-5".into())
        );
    }
}
