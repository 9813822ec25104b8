//! One module per subcommand: each reads its arguments (defined in `main.rs`), calls the
//! orchestration or the analysis, and prints the result as text or `--json`.

pub mod agents;
pub mod bench;
pub mod capture;
pub mod certs;
pub mod demo;
pub mod diff;
pub mod explain;
pub mod export;
pub mod pull;
pub mod replay;
pub mod run;
pub mod timeline;
pub mod verify;
