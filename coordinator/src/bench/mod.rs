//! `heisen bench`: measurements that print numbers (never asserts). The figures, with machine and
//! date, are recorded in `docs/BENCHMARKS.md`.

pub mod hosts;
pub mod merge;
pub mod record;
