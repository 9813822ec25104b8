//! `heisen`: the coordinator's command line.
//!
//! Exit codes: 0 success / confirmed, 1 refuted or failure where it should not be, 2 bad input
//! or an unreachable dependency.

mod bench;
mod client;
mod commands;
mod export;
mod files;
mod hosts;
mod output;
mod replay;
mod session;
mod verify;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};

/// heisen: record and replay heisenbugs that span machines.
#[derive(Parser, Debug)]
#[command(name = "heisen", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a story end to end on local hosts: load run, timeline excerpt, verify, verdict.
    Demo(DemoArgs),
    /// Run a scenario under load on agents, record everything, write a bundle, print failure counts.
    Run(RunArgs),
    /// Rank candidate causes in a capture's failing and passing runs, each with the verify command.
    /// Exits 0 with candidates, 1 when it found none, 2 when the capture cannot be explained.
    Explain(ExplainArgs),
    /// Enforce a hypothesis ordering and its alternatives K times each; print the verdict.
    ///
    /// The hypothesis is the scenario's [hypothesis], one written out with --hypothesis, or
    /// candidate N of `heisen explain BUNDLE` (--candidate N).
    Verify(VerifyArgs),
    /// Re-execute a recorded run with the recorded order of its gate points enforced (CI).
    ///
    /// Exit 0 when every repetition brought the recorded outcome back (a failing run failed, a
    /// passing run passed), 1 when one did not, 2 on bad input.
    Replay(ReplayArgs),
    /// Record ad hoc on agents that are already running, until a duration passes or Ctrl-C.
    ///
    /// Production style: no scenario. Syscalls are recorded for the processes --comm/--pid
    /// select (all without them); signals, exec/exit, mounts, cron jobs and file locks host-wide.
    Capture(CaptureArgs),
    /// Recover a capture's stored events from its agents into a bundle: after a coordinator
    /// died, or to fill in a host an incomplete bundle lacks (--into).
    Pull(PullArgs),
    /// Show a bundle's merged timeline.
    Timeline(TimelineArgs),
    /// Write a bundle's events in a format other tools read: Parquet, one file per host and one
    /// of the runs (schema in docs/EXPORT.md), for DuckDB, Spark, Trino or DataFusion.
    Export(ExportArgs),
    /// Environment differences (mounts, daemons, crontabs, interfaces) between two hosts of a
    /// capture, or one host in two captures, most suspicious first.
    Diff(DiffArgs),
    /// Show each agent's reachability, version, capabilities and clock offset.
    Agents(AgentsArgs),
    /// Measure and print numbers (see docs/BENCHMARKS.md); build with --release. Without a
    /// subcommand: `record`.
    Bench(BenchArgs),
    /// Make TLS certificates for a fleet: a small authority, one certificate per agent, one per
    /// coordinator. Agents off loopback require them (mutual TLS).
    #[command(subcommand)]
    Certs(CertsCommand),
    /// Run a heisen agent (same as the heisen-agent binary); used by local hosts.
    #[command(hide = true)]
    Agent(heisen_agent::AgentArgs),
}

#[derive(Args, Debug, Clone)]
pub struct Target {
    /// An agent for a scenario host: NAME=HOST:PORT (repeat per host).
    #[arg(long = "agent", value_name = "NAME=ADDR")]
    pub agents: Vec<String>,
    /// Start local agents (network namespaces when root, loopback otherwise) instead of --agent.
    #[arg(long, conflicts_with = "agents")]
    pub local: bool,
    /// With --local: use loopback even when root.
    #[arg(long, requires = "local")]
    pub loopback: bool,
    /// With --local, testing option: skew a host's agent clock, e.g. server=+750ms,100ppm.
    #[arg(long = "skew", value_name = "HOST=OFFSET[,DRIFTppm]", requires = "local", allow_hyphen_values = true)]
    pub skews: Vec<String>,
    #[command(flatten)]
    pub access: Access,
    /// A directory every host sees at the same path (an NFS share): `{shared}` in scenarios.
    /// Local hosts get one of their own.
    #[arg(long, value_name = "DIR")]
    pub shared: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum CertsCommand {
    /// Make a new authority: DIR/ca.pem (give it to agents as --client-ca and to coordinators as
    /// --ca) and DIR/ca.key (keep it off the agents' hosts).
    Init {
        /// Directory of the authority and the certificates it issues.
        #[arg(long, default_value = "heisen-tls")]
        dir: PathBuf,
        /// Days the authority is valid.
        #[arg(long, default_value_t = 3650)]
        days: u32,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Issue DIR/NAME.pem and DIR/NAME.key: for an agent (--ip/--dns: the addresses coordinators
    /// dial it at) or for a coordinator (--client).
    Issue {
        /// The certificate's name (an agent's host name, or the coordinator's).
        name: String,
        /// Directory of the authority (`heisen certs init`).
        #[arg(long, default_value = "heisen-tls")]
        dir: PathBuf,
        /// An IP address the agent is dialled at (repeatable).
        #[arg(long)]
        ip: Vec<std::net::IpAddr>,
        /// A DNS name the agent is dialled at (repeatable).
        #[arg(long)]
        dns: Vec<String>,
        /// A client certificate, for a coordinator (it can call agents but not serve as one).
        #[arg(long, conflicts_with_all = ["ip", "dns"])]
        client: bool,
        /// Days the certificate is valid.
        #[arg(long, default_value_t = 825)]
        days: u32,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// How to reach agents: their token, and mutual TLS for agents that listen off loopback.
#[derive(Args, Debug, Clone, Default)]
pub struct Access {
    /// File with the agents' shared token (the agent's DATA/token, or its --token-file).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// The authority that signed the agents' certificates (`ca.pem` of `heisen certs init`).
    /// With --cert and --key: call agents over mutual TLS.
    #[arg(long, value_name = "FILE", requires_all = ["cert", "key"])]
    pub ca: Option<PathBuf>,
    /// This coordinator's client certificate (`heisen certs issue NAME --client`).
    #[arg(long, value_name = "FILE", requires_all = ["ca", "key"])]
    pub cert: Option<PathBuf>,
    /// The private key of --cert, readable by its owner only.
    #[arg(long, value_name = "FILE", requires_all = ["ca", "cert"])]
    pub key: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// The story to run: mountd-sighup, butterfly or statd-flock.
    #[arg(default_value = "mountd-sighup")]
    pub story: String,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// Use loopback agents even when root.
    #[arg(long)]
    pub loopback: bool,
    /// Where bundles are written.
    #[arg(long, default_value = "heisen-out")]
    pub out: PathBuf,
    /// Load runs (without gates); default: the scenario's load.repeat.
    #[arg(long)]
    pub load_runs: Option<u32>,
    /// Runs per ordering in the verification; default: the hypothesis's `runs`.
    #[arg(long)]
    pub runs: Option<u32>,
    /// Testing option: skew a host's agent clock, e.g. server=+750ms,100ppm (repeatable).
    #[arg(long = "skew", value_name = "HOST=OFFSET[,DRIFTppm]", allow_hyphen_values = true)]
    pub skews: Vec<String>,
}

#[derive(Args, Debug)]
struct RunArgs {
    /// Scenario file (TOML).
    scenario: PathBuf,
    #[command(flatten)]
    target: Target,
    /// Override the scenario's load.repeat.
    #[arg(long)]
    repeat: Option<u32>,
    /// Observer of the scenario's processes: kernel (default, does not perturb), ptrace (the
    /// ptrace recorder too, as strace would), or both alternately, to see whether observing
    /// changes the failure rate (explain reports it).
    #[arg(long, value_enum, default_value = "kernel")]
    observe: verify::Observe,
    /// Bundle file to write (default: heisen-out/CAPTURE.heisen).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct ExplainArgs {
    /// Bundle of a capture with failing and passing runs (`heisen run`).
    bundle: PathBuf,
    /// Seed of the pair sampler (only used when there are more event pairs than --budget).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Most event pairs examined.
    #[arg(long, default_value_t = 200_000)]
    budget: usize,
    /// Candidates shown.
    #[arg(long, default_value_t = 10)]
    top: usize,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct ReplayArgs {
    /// Bundle of a `heisen run` capture.
    bundle: PathBuf,
    /// The run to replay (1-based, as `heisen timeline --run` numbers them).
    #[arg(long)]
    run: u32,
    /// Repetitions.
    #[arg(long, default_value_t = 1)]
    repeat: u32,
    /// Write JUnit XML here (one testcase per repetition; a `failure` when the scenario failed).
    #[arg(long, value_name = "FILE")]
    junit: Option<PathBuf>,
    #[command(flatten)]
    target: Target,
    /// Bundle file of the replay capture.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct VerifyArgs {
    /// Scenario file (TOML), or a bundle whose scenario to use.
    scenario: PathBuf,
    /// Verify candidate N of `heisen explain` on this bundle instead of the scenario's hypothesis.
    #[arg(long, value_name = "N", conflicts_with = "hypothesis")]
    candidate: Option<usize>,
    /// Verify this hypothesis (a TOML inline table, as `heisen explain` prints it).
    #[arg(long, value_name = "TOML")]
    hypothesis: Option<String>,
    /// With --candidate: explain's seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[command(flatten)]
    target: Target,
    /// Runs per ordering (default: the hypothesis's `runs`).
    #[arg(long)]
    runs: Option<u32>,
    /// Bundle file to write.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct TimelineArgs {
    /// Bundle file.
    bundle: PathBuf,
    /// Only these hosts (repeatable).
    #[arg(long)]
    host: Vec<String>,
    /// Only this run.
    #[arg(long)]
    run: Option<u32>,
    /// Only these kinds: syscall, signal, exec, fork, exit, lost, launch, output, gate (repeatable).
    #[arg(long)]
    kind: Vec<String>,
    /// Only events of these process or thread ids (repeatable).
    #[arg(long)]
    pid: Vec<i32>,
    /// Only events of processes with this name (kernel comm, repeatable).
    #[arg(long)]
    comm: Vec<String>,
    /// Only these syscalls: names and classes as `heisen capture --syscalls` takes them
    /// (comma-separated or repeated); other kinds of events are left out.
    #[arg(long, value_name = "LIST")]
    syscall: Vec<String>,
    /// Only events from this long after the capture started (e.g. 1.5s, 300ms, 2m).
    #[arg(long, value_name = "DURATION")]
    since: Option<String>,
    /// Only events until this long after the capture started.
    #[arg(long, value_name = "DURATION")]
    until: Option<String>,
    /// Show everything, including SIGCHLD, forks and stdio writes.
    #[arg(long)]
    all: bool,
    /// Print a JSON array of events (the same as --format json).
    #[arg(long)]
    json: bool,
    /// Print one JSON object per line (the same as --format jsonl): for streams and tools like jq.
    #[arg(long, conflicts_with = "json")]
    jsonl: bool,
    /// text (times with their uncertainty, causal edges), json, or strace (`HOST PID COMM
    /// call(args) = ret`, one line per call, as strace users read them).
    #[arg(long, value_enum, default_value_t = TimelineFormat::Text)]
    format: TimelineFormat,
}

#[derive(Args, Debug)]
struct ExportArgs {
    /// Bundle file.
    bundle: PathBuf,
    /// What to write.
    #[arg(long, value_enum, default_value = "parquet")]
    format: ExportFormat,
    /// Directory to write into (created if missing; files of the same names are replaced).
    #[arg(long)]
    out: PathBuf,
    /// Print what was written as JSON.
    #[arg(long)]
    json: bool,
}

/// What `heisen export` writes.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportFormat {
    /// Apache Parquet: `HOST.parquet` per host (events) and `runs.parquet`.
    Parquet,
}

/// How `heisen timeline` prints.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimelineFormat {
    Text,
    Json,
    Jsonl,
    Strace,
}

#[derive(Args, Debug)]
struct CaptureArgs {
    /// A running agent: NAME=HOST:PORT (repeat per host).
    #[arg(long = "agent", value_name = "NAME=ADDR", required = true)]
    agents: Vec<String>,
    #[command(flatten)]
    access: Access,
    /// Stop after this long (e.g. 30s, 5m, 500ms); without it, record until Ctrl-C.
    #[arg(long = "for", value_name = "DURATION")]
    duration: Option<String>,
    /// Record syscalls of processes with this name (repeatable). Signals, exec/exit, mounts,
    /// cron jobs and file locks are recorded for every process regardless.
    #[arg(long)]
    comm: Vec<String>,
    /// Record syscalls of this pid (repeatable).
    #[arg(long)]
    pid: Vec<i32>,
    /// Which syscalls to record, as strace's -e trace=: classes (file, desc, read, write,
    /// network, signal, mount, lock, process, default) and syscall names, comma-separated.
    /// Default: file, desc, network, signal, mount and process together.
    #[arg(long, value_name = "LIST")]
    syscalls: Vec<String>,
    /// Record write(2) with one BPF event per call instead of two tracefs events: cheaper for a
    /// write storm, but every syscall on the machine pays ~130 ns more while recording (see
    /// docs/BENCHMARKS.md). Ignored with --comm/--pid.
    #[arg(long)]
    bpf_writes: bool,
    /// Also attach the ptrace recorder to process PID on HOST: decoded arguments (paths,
    /// flags), but it perturbs the process (a blocked epoll_wait returns EINTR) and slows every
    /// syscall it makes; the attach is recorded. Repeatable.
    #[arg(long, value_name = "HOST=PID")]
    ptrace: Vec<String>,
    /// Bundle file to write (default: heisen-out/CAPTURE.heisen).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Print JSON at the end.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct DiffArgs {
    /// Bundle file (A).
    a: PathBuf,
    /// A second bundle (B): compare one host across the two captures.
    b: Option<PathBuf>,
    /// The two hosts to compare within one bundle (default: its only two hosts), or with two
    /// bundles the host to compare (default: the only host they share). Repeat or comma-separate.
    #[arg(long, value_delimiter = ',')]
    hosts: Vec<String>,
    /// Which snapshot: `start`, `end` or `run:N` (default: the first failing run, else `start`).
    #[arg(long)]
    at: Option<String>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
struct BenchArgs {
    #[command(subcommand)]
    command: Option<BenchCommand>,
    #[command(flatten)]
    record: RecordArgs,
}

#[derive(Subcommand, Debug)]
enum BenchCommand {
    /// Captures the size of a load test: a synthetic capture of each size over several hosts is
    /// written, read, shown as a timeline (--jsonl to /dev/null) and explained, each step in a
    /// process of its own: time, events/s, peak RSS, bundle bytes per event.
    Scale {
        /// Sizes in events (comma-separated).
        #[arg(long, value_delimiter = ',', default_value = "1000000,10000000")]
        sizes: Vec<u64>,
        /// Hosts the events are spread over.
        #[arg(long, default_value_t = 4)]
        hosts: usize,
        /// Runs of the capture (half of them failing).
        #[arg(long, default_value_t = 20)]
        runs: u32,
        /// Steps to run beside `write` (comma-separated): read, timeline, explain. Default: all.
        #[arg(long, value_delimiter = ',', value_parser = clap::builder::PossibleValuesParser::new(bench::scale::STEPS))]
        only: Vec<String>,
        /// A step running longer than this is stopped and reported as not finished (seconds).
        #[arg(long, default_value_t = 600)]
        timeout: u64,
        /// Also measure this bundle of a real capture (repeatable).
        #[arg(long, value_name = "BUNDLE")]
        real: Vec<PathBuf>,
        /// Where the synthetic bundles are written while measured (default: a new directory under
        /// the system's temporary directory).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Print JSON (one object per row).
        #[arg(long)]
        json: bool,
    },
    /// One step of `bench scale` in a process of its own (so its peak memory is its alone).
    #[command(hide = true)]
    ScaleStep {
        step: String,
        file: PathBuf,
        #[arg(long, default_value_t = 0)]
        events: u64,
        #[arg(long, default_value_t = 4)]
        hosts: usize,
        #[arg(long, default_value_t = 20)]
        runs: u32,
    },
    /// The k-way merge of synthetic per-host streams: events/s and peak memory.
    Merge {
        /// Events in all.
        #[arg(long, default_value_t = 10_000_000)]
        events: u64,
        /// Hosts (streams).
        #[arg(long, default_value_t = 8)]
        hosts: usize,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Two local hosts (netns when root) with skewed agent clocks: the clock estimate's error
    /// against the injected skew, and the latency of a gate release on another host.
    Hosts {
        /// Clock probe bursts, 500 ms apart.
        #[arg(long, default_value_t = 10)]
        bursts: u32,
        /// Hold/release cycles of a process on the other host.
        #[arg(long, default_value_t = 200)]
        releases: u32,
        /// Print JSON (one object per row).
        #[arg(long)]
        json: bool,
    },
    /// Recording and gating costs side by side: untraced, heisen's observer, strace, gates.
    Record(RecordArgs),
}

/// What `heisen bench record` (and a bare `heisen bench`) measures.
#[derive(Args, Debug)]
struct RecordArgs {
    /// One-byte writes of the storm workload.
    #[arg(long, default_value_t = 1_000_000)]
    storm_writes: u64,
    /// MiB of the load workload (written in 64 KiB chunks).
    #[arg(long, default_value_t = 1024)]
    load_mib: u64,
    /// Writes for the rows where every write traps to a supervisor.
    #[arg(long, default_value_t = 100_000)]
    trapped_writes: u64,
    /// Iterations of the files workload (openat O_TRUNC, write, rename, close on distinct paths).
    #[arg(long, default_value_t = 20_000)]
    files_iterations: u64,
    /// Run only these parts (comma-separated): observer, strace, ptrace, gate (a filter on a
    /// syscall not made), holds (hold/release round trips), tax (getppid of an untraced
    /// process while the observer records). Default: all.
    #[arg(long, value_delimiter = ',', value_parser = clap::builder::PossibleValuesParser::new(bench::record::SECTIONS))]
    only: Vec<String>,
    /// Workloads of the per-workload parts (comma-separated): storm, load, files. Default: all.
    #[arg(long, value_delimiter = ',', value_parser = clap::builder::PossibleValuesParser::new(bench::record::WORKLOADS))]
    workload: Vec<String>,
    /// Print JSON (one object per row).
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct PullArgs {
    /// An agent that recorded the capture: NAME=HOST:PORT (repeat per host).
    #[arg(long = "agent", value_name = "NAME=ADDR", required = true)]
    agents: Vec<String>,
    #[command(flatten)]
    access: Access,
    /// The capture id (as the incomplete bundle's error, `heisen capture` or the agent's log
    /// names it); default: the --into bundle's.
    #[arg(long, value_name = "ID", required_unless_present = "into")]
    capture: Option<String>,
    /// An incomplete bundle of this capture: the pulled hosts replace its recordings of them,
    /// keeping its runs, scenario and environment snapshots.
    #[arg(long, value_name = "BUNDLE")]
    into: Option<PathBuf>,
    /// Bundle file to write (default: the --into bundle, replaced atomically; else
    /// heisen-out/CAPTURE.heisen).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct AgentsArgs {
    /// NAME=HOST:PORT (repeatable).
    #[arg(long = "agent", value_name = "NAME=ADDR", required = true)]
    agents: Vec<String>,
    #[command(flatten)]
    access: Access,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

fn main() {
    // SIGPIPE stays ignored: with its default action, a socket whose peer went away (an agent
    // that speaks TLS to a plaintext call, a coordinator gone) would kill heisen or a local agent
    // in silence. Output whose reader went away (`heisen timeline | head`) ends quietly instead.
    output::quiet_on_broken_pipe();
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(code) = heisen_agent::run_helper(&args) {
        std::process::exit(code);
    }
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Agent(args) => heisen_agent::run(args),
        command => {
            let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
            match runtime.block_on(dispatch(command)) {
                Ok(code) => code,
                // Output whose reader went away ends quietly, as the panic hook does for `print!`.
                Err(e) if output::is_broken_pipe(&e) => 141,
                Err(e) => {
                    eprintln!("heisen: {}", one_line(&e));
                    2
                }
            }
        }
    };
    std::process::exit(code);
}

/// An error and its causes on one line. Library errors already say their source in their own
/// message (`cannot open X: permission denied`), so a cause whose text is already there is not
/// repeated.
pub fn one_line(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

async fn dispatch(command: Command) -> Result<i32> {
    match command {
        Command::Demo(a) => commands::demo::run(&a).await,
        Command::Run(a) => commands::run::run(a).await,
        Command::Verify(a) => commands::verify::run(a).await,
        Command::Explain(a) => commands::explain::run(a),
        Command::Replay(a) => commands::replay::run(a).await,
        Command::Timeline(a) => commands::timeline::run(a),
        Command::Export(a) => commands::export::run(a),
        Command::Agents(a) => commands::agents::run(a).await,
        Command::Diff(a) => commands::diff::run(a),
        Command::Certs(c) => commands::certs::run(c),
        Command::Pull(a) => commands::pull::run(a).await,
        Command::Capture(a) => commands::capture::run(a).await,
        Command::Bench(BenchArgs { command, record }) => {
            commands::bench::run(command.unwrap_or(BenchCommand::Record(record))).await
        }
        Command::Agent(_) => unreachable!("handled in main"),
    }
}
