//! `heisen bench`: measurements that print numbers (never asserts). The figures, with machine and
//! date, are recorded in `docs/BENCHMARKS.md`.

pub mod hosts;
pub mod merge;
pub mod record;

/// How a table shows whether a row meets its target.
fn verdict(met: Option<bool>) -> &'static str {
    match met {
        Some(true) => " (met)",
        Some(false) => " (MISSED)",
        None => "",
    }
}
