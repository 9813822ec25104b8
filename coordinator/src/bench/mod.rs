//! `heisen bench`: measurements that print numbers (never asserts). The figures, with machine and
//! date, are recorded in `docs/BENCHMARKS.md`.

pub mod hosts;
pub mod merge;
pub mod record;
pub mod scale;

/// How a table shows whether a row meets its target.
fn verdict(met: Option<bool>) -> &'static str {
    match met {
        Some(true) => " (met)",
        Some(false) => " (MISSED)",
        None => "",
    }
}

/// The `q` quantile (0.0-1.0) of some measurements, nearest rank; NaN for none.
pub(crate) fn percentile(values: &mut [f64], q: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    values[((values.len() - 1) as f64 * q).round() as usize]
}
