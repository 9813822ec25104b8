//! heisen's analysis: a bundle in, reports out.
//!
//! [`explain`] ranks candidate causes, [`timeline`] merges the hosts' events with their causal
//! and concurrency facts, [`diff`] compares environments, [`schedule`] turns a hypothesis into the
//! orderings `verify` enforces and [`recorded`] reads where a hypothesis's gate points fell in a
//! recorded run (what `replay` enforces).
//!
//! This crate does no I/O and knows nothing of gRPC: every function takes a [`Bundle`] or a
//! [`Scenario`] already read, and returns values the command line prints.
//!
//! [`Bundle`]: heisen_recordings::Bundle
//! [`Scenario`]: heisen_recordings::Scenario

mod align;
pub mod diff;
mod error;
pub mod explain;
pub mod losses;
pub mod recorded;
pub mod schedule;
pub mod strace;
pub mod timeline;

pub use error::AnalysisError;
pub use recorded::{recorded, Recorded};
