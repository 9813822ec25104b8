//! `heisen-agent`: the per-host daemon. `heisen-agent fixture NAME ...` runs a story guest program.
use clap::Parser;

fn main() {
    let mut args = std::env::args();
    if std::env::args().nth(1).as_deref() == Some("ptrace-record") {
        std::process::exit(heisen_agent::run_ptrace_recorder(args.skip(2).collect()));
    }
    if std::env::args().nth(1).as_deref() == Some("fixture") {
        args.next();
        args.next();
        std::process::exit(heisen_agent::run_fixture(args.collect()));
    }
    std::process::exit(heisen_agent::run(heisen_agent::AgentArgs::parse()));
}
