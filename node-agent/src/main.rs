//! `heisen-agent`: the per-host daemon.
use clap::Parser;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(code) = heisen_agent::run_helper(&args) {
        std::process::exit(code);
    }
    std::process::exit(heisen_agent::run(heisen_agent::AgentArgs::parse()));
}
