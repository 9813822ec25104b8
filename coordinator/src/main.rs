//! `heisen`: the coordinator's command line.
//!
//! Exit codes: 0 success / confirmed, 1 refuted or failure where it should not be, 2 bad input
//! or an unreachable dependency.

mod bench;
mod client;
mod demo;
mod replay;
mod session;
mod verify;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use clap::{Args, Parser, Subcommand};
use heisen_analysis::{diff, explain, timeline};
use heisen_recordings::{Bundle, Scenario};

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
    /// Show a bundle's merged timeline.
    Timeline(TimelineArgs),
    /// Environment differences (mounts, daemons, crontabs, interfaces) between two hosts of a
    /// capture, or one host in two captures, most suspicious first.
    Diff(DiffArgs),
    /// Show each agent's reachability, version, capabilities and clock offset.
    Agents(AgentsArgs),
    /// Measure and print numbers (see docs/BENCHMARKS.md); build with --release. Without a
    /// subcommand: `record`.
    Bench(BenchArgs),
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
    /// File with the agents' shared token.
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// A directory every host sees at the same path (an NFS share): `{shared}` in scenarios.
    /// Local hosts get one of their own.
    #[arg(long, value_name = "DIR")]
    pub shared: Option<PathBuf>,
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
    /// Show everything, including SIGCHLD, forks and stdio writes.
    #[arg(long)]
    all: bool,
    /// Print a JSON array of events.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct CaptureArgs {
    /// A running agent: NAME=HOST:PORT (repeat per host).
    #[arg(long = "agent", value_name = "NAME=ADDR", required = true)]
    agents: Vec<String>,
    /// File with the agents' shared token.
    #[arg(long)]
    token_file: Option<PathBuf>,
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
    /// Run only these parts (comma-separated): observer, strace, ptrace, gate (a filter on a
    /// syscall not made), holds (hold/release round trips), tax (getppid of an untraced
    /// process while the observer records). Default: all.
    #[arg(long, value_delimiter = ',', value_parser = clap::builder::PossibleValuesParser::new(bench::record::SECTIONS))]
    only: Vec<String>,
    /// Workloads of the per-workload parts (comma-separated): storm, load. Default: both.
    #[arg(long, value_delimiter = ',', value_parser = ["storm", "load"])]
    workload: Vec<String>,
    /// Print JSON (one object per row).
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct AgentsArgs {
    /// NAME=HOST:PORT (repeatable).
    #[arg(long = "agent", value_name = "NAME=ADDR", required = true)]
    agents: Vec<String>,
    /// File with the agents' shared token.
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

fn main() {
    // Die quietly when the reader of our output goes away (`heisen timeline | head`).
    // SAFETY: restoring the default disposition of SIGPIPE before any thread starts.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
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
                Err(e) => {
                    eprintln!("heisen: {e:#}");
                    2
                }
            }
        }
    };
    std::process::exit(code);
}

async fn dispatch(command: Command) -> Result<i32> {
    match command {
        Command::Demo(a) => demo::run(&a).await,
        Command::Run(a) => run(a).await,
        Command::Verify(a) => verify_cmd(a).await,
        Command::Explain(a) => explain_cmd(a),
        Command::Replay(a) => replay_cmd(a).await,
        Command::Timeline(a) => timeline_cmd(a),
        Command::Agents(a) => agents_cmd(a).await,
        Command::Diff(a) => diff_cmd(a),
        Command::Capture(a) => capture_cmd(a).await,
        Command::Bench(BenchArgs { command, record }) => {
            bench_cmd(command.unwrap_or(BenchCommand::Record(record))).await
        }
        Command::Agent(_) => unreachable!("handled in main"),
    }
}

async fn bench_cmd(command: BenchCommand) -> Result<i32> {
    match command {
        BenchCommand::Record(RecordArgs { storm_writes, load_mib, trapped_writes, only, workload, json }) => {
            let sizes = bench::record::Sizes { storm_writes, load_mib, trapped_writes, only, workloads: workload };
            let rows = bench::record::record(&sizes, |what| verify::progress(&format!("bench: {what}"))).await?;
            if json {
                println!("{}", serde_json::to_string(&rows)?);
            } else {
                print!("{}", bench::record::table(&rows));
            }
            Ok(0)
        }
        BenchCommand::Hosts { bursts, releases, json } => {
            let plan = bench::hosts::Plan { bursts, releases };
            let (mode, rows) = bench::hosts::hosts(&plan, |what| verify::progress(&format!("bench: {what}"))).await?;
            if json {
                println!("{}", serde_json::json!({ "hosts": mode, "rows": rows }));
            } else {
                print!("{}", bench::hosts::table(&mode, &rows));
            }
            Ok(0)
        }
        BenchCommand::Merge { events, hosts, json } => {
            let r = tokio::task::spawn_blocking(move || bench::merge::merge(events, hosts)).await?;
            if json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                println!("merge of {} events from {} hosts", r.events, r.hosts);
                println!("  with generation   {:>12.0} events/s", r.events_per_s);
                println!("  generation alone  {:>12.0} events/s", r.generate_events_per_s);
                println!("  merge alone       {:>12.0} events/s   (aim: >= 20,000,000)", r.merge_only_events_per_s);
                println!(
                    "  peak RSS          {:>12} bytes after all, {} after a tenth",
                    r.peak_rss_bytes, r.peak_rss_after_tenth_bytes
                );
            }
            Ok(0)
        }
    }
}

fn load_scenario(path: &Path) -> Result<Scenario> {
    Scenario::load(path).map_err(|e| anyhow!("{e}"))
}

fn read_token(path: &Option<PathBuf>) -> Result<Option<String>> {
    match path {
        None => Ok(None),
        Some(p) => {
            let t = std::fs::read_to_string(p).with_context(|| format!("cannot read token file {}", p.display()))?;
            Ok(Some(t.trim().to_string()))
        }
    }
}

/// Parses `NAME=ADDR` pairs.
fn parse_agents(specs: &[String]) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for spec in specs {
        let (name, addr) = spec.split_once('=').ok_or_else(|| anyhow!("--agent `{spec}` must be NAME=HOST:PORT"))?;
        if name.is_empty() || addr.is_empty() {
            return Err(anyhow!("--agent `{spec}` must be NAME=HOST:PORT"));
        }
        out.insert(name.to_string(), addr.to_string());
    }
    Ok(out)
}

/// Agents and placeholders for a scenario: `--local` hosts or the given `--agent`s.
pub struct Hosts {
    pub agents: BTreeMap<String, client::Agent>,
    pub vars: session::Placeholders,
    pub harness: Option<heisen_fixtures::hosts::Hosts>,
}

async fn connect(scenario: &Scenario, target: &Target) -> Result<Hosts> {
    let (addrs, token, harness) = if target.local {
        use heisen_fixtures::hosts;
        let exe = std::env::current_exe().context("cannot find the heisen binary")?;
        let options = hosts::Options { loopback: target.loopback, skews: parse_agents(&target.skews)? };
        let h = hosts::Hosts::start(&[exe, "agent".into()], &scenario.hosts, &options).map_err(|e| anyhow!(e))?;
        if let hosts::Mode::Loopback(why) = &h.mode {
            verify::progress(&format!("note: local hosts on loopback ({why})"));
        }
        (h.agents.clone(), h.token.clone(), Some(h))
    } else {
        (parse_agents(&target.agents)?, read_token(&target.token_file)?, None)
    };
    let missing: Vec<_> = scenario.hosts.iter().filter(|h| !addrs.contains_key(*h)).cloned().collect();
    if !missing.is_empty() {
        return Err(anyhow!(
            "scenario `{}` needs hosts {}; pass --agent NAME=HOST:PORT for each, or --local",
            scenario.name,
            missing.join(", ")
        ));
    }
    let mut agents = BTreeMap::new();
    let mut host_addrs = BTreeMap::new();
    for (name, addr) in &addrs {
        agents.insert(name.clone(), client::Agent::connect(name, addr, token.as_deref()).await?);
        let ip = harness.as_ref().and_then(|h| h.host_addrs.get(name).cloned());
        host_addrs.insert(
            name.clone(),
            ip.unwrap_or_else(|| addr.rsplit_once(':').map(|(h, _)| h.to_string()).unwrap_or_default()),
        );
    }
    let shared = match (&target.shared, &harness) {
        (Some(dir), _) => Some(dir.display().to_string()),
        (None, Some(h)) => Some(h.shared_dir().map_err(|e| anyhow!(e))?.display().to_string()),
        (None, None) => None,
    };
    if shared.is_none() && scenario.text.contains("{shared}") {
        return Err(anyhow!(
            "scenario `{}` uses {{shared}}: pass --shared DIR, a directory every host sees at the same path",
            scenario.name
        ));
    }
    let port = heisen_fixtures::hosts::free_port().map_err(|e| anyhow!(e))?;
    let vars = session::Placeholders { host_addrs, port, shared };
    Ok(Hosts { agents, vars, harness })
}

fn capture_id(scenario: &str, phase: &str) -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    format!("{scenario}-{phase}-{secs}-{}", std::process::id())
}

fn write_bundle(bundle: &Bundle, out: Option<PathBuf>) -> Result<PathBuf> {
    let path = match out {
        Some(p) => p,
        None => {
            std::fs::create_dir_all("heisen-out").context("cannot create heisen-out/")?;
            heisen_recordings::bundle_path(Path::new("heisen-out"), &bundle.capture_id)
        }
    };
    bundle.write(&path).map_err(|e| anyhow!("{e}"))?;
    Ok(path)
}

async fn run(a: RunArgs) -> Result<i32> {
    let scenario = load_scenario(&a.scenario)?;
    let hosts = connect(&scenario, &a.target).await?;
    let repeat = a.repeat.unwrap_or(scenario.repeat);
    let id = capture_id(&scenario.name, "run");
    let session = verify::load_observed(hosts.agents, &scenario, &hosts.vars, &id, repeat, a.observe).await?;
    let bundle = session.close(Some(&scenario), &a.scenario.display().to_string()).await?;
    let path = write_bundle(&bundle, a.out)?;
    let failures = bundle.runs.iter().filter(|r| r.failed).count();
    if a.json {
        let v = serde_json::json!({
            "scenario": scenario.name, "runs": bundle.runs.len(), "failures": failures, "bundle": path,
            "clocks": clocks_json(&bundle),
        });
        println!("{v}");
    } else {
        println!("{failures} of {} runs failed; bundle: {}", bundle.runs.len(), path.display());
    }
    Ok(0)
}

/// A scenario file, or the scenario a bundle was captured with (and the bundle).
fn scenario_or_bundle(path: &Path) -> Result<(Scenario, Option<Bundle>)> {
    let mut head = [0u8; 8];
    let is_bundle = std::fs::File::open(path)
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut head))
        .is_ok_and(|_| &head == heisen_recordings::BUNDLE_MAGIC);
    if !is_bundle {
        return Ok((load_scenario(path)?, None));
    }
    let bundle = Bundle::read(path).map_err(|e| anyhow!("{e}"))?;
    let Some(src) = &bundle.scenario else {
        return Err(anyhow!(
            "{} was captured without a scenario (an ad-hoc capture): there is nothing to re-run; write a scenario \
             for the processes involved and `heisen run` it, or inspect this capture with `heisen timeline`/`heisen diff`",
            path.display()
        ));
    };
    let scenario = Scenario::parse(&src.path, &src.text).map_err(|e| anyhow!("the bundle's scenario: {e}"))?;
    Ok((scenario, Some(bundle)))
}

async fn replay_cmd(a: ReplayArgs) -> Result<i32> {
    let shown = a.bundle.display().to_string();
    let (scenario, bundle) = scenario_or_bundle(&a.bundle)?;
    let bundle = bundle.ok_or_else(|| anyhow!("{shown} is a scenario file; replay re-executes a run of a bundle"))?;
    let (h, source) = replay::hypothesis(&bundle, &scenario, &shown)?;
    let (ordering, recorded) = replay::plan(&bundle, &scenario, &h, a.run)?;
    let expected = if recorded.failed { "failed" } else { "passed" };
    verify::progress(&format!("run {} {expected} when recorded; gate points of {source}", a.run));
    verify::progress(&format!("enforcing {}", ordering.description));
    let repeat = a.repeat.max(1);
    let hosts = connect(&scenario, &a.target).await?;
    let mut session = session::Session::open(hosts.agents, &capture_id(&scenario.name, "replay")).await?;
    let reps = replay::execute(&mut session, &scenario, &ordering, &hosts.vars, repeat).await?;
    let replay_bundle = session.close(Some(&scenario), &shown).await?;
    let path = write_bundle(&replay_bundle, a.out)?;
    let same = reps.iter().filter(|r| r.valid && r.failed == recorded.failed).count();
    if let Some(file) = &a.junit {
        let props = [
            ("bundle", shown.clone()),
            ("run", a.run.to_string()),
            ("recorded", expected.to_string()),
            ("ordering", ordering.description.clone()),
            ("replay_bundle", path.display().to_string()),
        ];
        let xml = replay::junit(
            &format!("heisen replay {shown} --run {}", a.run),
            &format!("heisen.replay.{}", scenario.name),
            a.run,
            &reps,
            &props,
        );
        replay::write_junit(file, &xml)?;
    }
    if a.json {
        let v = serde_json::json!({
            "scenario": scenario.name, "run": a.run, "recorded": expected, "hypothesis": source,
            "ordering": ordering.description, "repetitions": reps, "reproduced": same, "of": reps.len(),
            "bundle": path,
        });
        println!("{v}");
    } else {
        println!("run {} {expected} when recorded; replayed {repeat} time(s) with {}", a.run, ordering.description);
        println!("the recorded outcome came back {same} of {} time(s); bundle: {}", reps.len(), path.display());
    }
    Ok(if same == reps.len() { 0 } else { 1 })
}

fn explain_cmd(a: ExplainArgs) -> Result<i32> {
    let bundle = Bundle::read(&a.bundle).map_err(|e| anyhow!("{e}"))?;
    let opts = explain::Options {
        seed: a.seed,
        budget: a.budget.max(1),
        top: a.top.max(1),
        bundle_arg: a.bundle.display().to_string(),
    };
    let x = explain::explain(&bundle, &opts).with_context(|| a.bundle.display().to_string())?;
    if a.json {
        println!("{}", serde_json::to_string(&x)?);
    } else {
        print!("{}", explain::to_text(&x));
    }
    Ok(0)
}

async fn verify_cmd(a: VerifyArgs) -> Result<i32> {
    let (mut scenario, bundle) = scenario_or_bundle(&a.scenario)?;
    let shown = a.scenario.display().to_string();
    if let Some(inline) = &a.hypothesis {
        scenario = scenario.with_hypothesis(&shown, inline).map_err(|e| anyhow!("{e}"))?;
    }
    if let Some(n) = a.candidate {
        let bundle =
            bundle.ok_or_else(|| anyhow!("--candidate needs a bundle (explain reads one), not a scenario file"))?;
        let opts = explain::Options { seed: a.seed, bundle_arg: shown.clone(), ..Default::default() };
        let x = explain::explain(&bundle, &opts).with_context(|| shown.clone())?;
        let c = x.candidates.iter().find(|c| c.rank == n).ok_or_else(|| {
            anyhow!("{shown}: explain has {} candidate(s); there is no candidate {n}", x.candidates.len())
        })?;
        let h = c.parsed.clone().ok_or_else(|| {
            anyhow!(
                "candidate {n} ({}) cannot be verified: {}",
                c.summary,
                c.not_verifiable.clone().unwrap_or_default()
            )
        })?;
        verify::progress(&format!("verifying candidate {n}: {}", c.summary));
        scenario.hypothesis = Some(h);
    }
    let runs = a.runs.or(scenario.hypothesis.as_ref().map(|h| h.runs())).unwrap_or(5).max(1);
    let hosts = connect(&scenario, &a.target).await?;
    let (session, results) =
        verify::verify(hosts.agents, &scenario, &hosts.vars, &capture_id(&scenario.name, "verify"), runs).await?;
    let bundle = session.close(Some(&scenario), &a.scenario.display().to_string()).await?;
    let path = write_bundle(&bundle, a.out)?;
    let verdict = verify::verdict(&results, runs);
    if a.json {
        let v =
            serde_json::json!({"scenario": scenario.name, "verdict": verdict, "orderings": results, "bundle": path});
        println!("{v}");
    } else {
        print!("{}", verify::table(&results, verdict));
        println!("bundle: {}", path.display());
    }
    Ok(verdict.exit_code())
}

/// Each host's fitted clock model (host minus coordinator), for `--json` outputs.
pub fn clocks_json(bundle: &Bundle) -> serde_json::Value {
    bundle
        .hosts
        .iter()
        .map(|h| {
            serde_json::json!({
                "name": h.name, "offset_ns": h.clock.offset_ns, "error_ns": h.clock.error_ns,
                "drift_ppm": h.clock.drift_ppm, "ref_ns": h.clock.ref_ns, "anchors": h.clock.anchors.len(),
            })
        })
        .collect()
}

fn timeline_cmd(a: TimelineArgs) -> Result<i32> {
    let bundle = Bundle::read(&a.bundle).map_err(|e| anyhow!("{e}"))?;
    let filter = timeline::Filter { hosts: a.host, run: a.run, kinds: a.kind, essentials: !a.all && !a.json };
    let timeline = timeline::build(&bundle, &filter);
    if timeline.violations > 0 {
        eprintln!(
            "warning: {} causal edge(s) contradict the clock intervals (clock violation); see `violates_clocks`",
            timeline.violations
        );
    }
    if a.json {
        let array: Vec<_> = timeline
            .events
            .iter()
            .map(|s| {
                let mut v = timeline::to_json(s.host, &s.placed);
                if let (serde_json::Value::Object(v), serde_json::Value::Object(facts)) =
                    (&mut v, timeline::facts_json(s))
                {
                    v.extend(facts);
                }
                v
            })
            .collect();
        println!("{}", serde_json::to_string(&array)?);
    } else {
        let origin = timeline.events.first().map(|s| s.placed.interval.midpoint_ns()).unwrap_or(0);
        let mut previous: Option<(&str, u64)> = None;
        for s in &timeline.events {
            let concurrent = previous.is_some_and(|p| s.concurrent.contains(&p));
            let marker = if concurrent { "≈" } else { " " };
            let mut line = format!("{marker}{}", timeline::to_text(s.host, &s.placed, origin));
            for (from, host, kind, bad) in s.caused_by.iter().filter(|(from, ..)| from.host != s.placed.host) {
                let warn = if *bad { " CLOCK VIOLATION" } else { "" };
                line.push_str(&format!("  <-{kind:?} {host}#{}{warn}", from.seq));
            }
            println!("{line}");
            previous = Some((s.host, s.placed.event.seq));
        }
    }
    Ok(0)
}

/// `30s`, `5m`, `500ms`, `2h` or plain seconds.
fn parse_duration(text: &str) -> Result<std::time::Duration> {
    let bad = || anyhow!("--for `{text}`: want a duration like 30s, 5m, 500ms or 2h");
    let (number, unit) = text.find(|c: char| !c.is_ascii_digit() && c != '.').map_or((text, ""), |i| text.split_at(i));
    let value: f64 = number.parse().map_err(|_| bad())?;
    let secs = match unit {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(bad()),
    };
    if !(secs.is_finite() && secs > 0.0) {
        return Err(bad());
    }
    Ok(std::time::Duration::from_secs_f64(secs))
}

async fn capture_cmd(a: CaptureArgs) -> Result<i32> {
    let duration = a.duration.as_deref().map(parse_duration).transpose()?;
    let token = read_token(&a.token_file)?;
    let mut agents = BTreeMap::new();
    for (name, addr) in parse_agents(&a.agents)? {
        agents.insert(name.clone(), client::Agent::connect(&name, &addr, token.as_deref()).await?);
    }
    let selection = client::Selection { comms: a.comm.clone(), pids: a.pid.clone(), bpf_writes: a.bpf_writes };
    let id = capture_id("capture", "adhoc");
    let mut traced = Vec::new();
    for spec in &a.ptrace {
        let parsed = spec.split_once('=').and_then(|(h, p)| Some((h.to_string(), p.parse::<i32>().ok()?)));
        let Some((host, pid)) = parsed else {
            return Err(anyhow!("--ptrace `{spec}` must be HOST=PID"));
        };
        if !agents.contains_key(&host) {
            return Err(anyhow!("--ptrace `{spec}`: no --agent named {host}"));
        }
        traced.push((host, pid));
    }
    let mut session = session::Session::open_selected(agents, &id, &selection).await?;
    for (host, pid) in &traced {
        let tracer = match session.attach(host, *pid).await {
            Ok(tracer) => tracer,
            Err(e) => {
                let _ = session.close(None, "").await; // stop recording everywhere before giving up
                return Err(e);
            }
        };
        verify::progress(&format!("ptrace recorder [{tracer}] attached to pid {pid} on {host} (this perturbs it)"));
    }
    for note in session.observer_notes() {
        verify::progress(&note);
    }
    let until = match duration {
        Some(d) => format!("for {:.1} s", d.as_secs_f64()),
        None => "until Ctrl-C".to_string(),
    };
    verify::progress(&format!("capture {id}: recording {until}"));
    let started = std::time::Instant::now();
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let stopped_by = loop {
        let left = duration.map(|d| d.saturating_sub(started.elapsed()));
        if left.is_some_and(|l| l.is_zero()) {
            break "time";
        }
        let tick = left.unwrap_or(std::time::Duration::from_secs(1)).min(std::time::Duration::from_secs(1));
        tokio::select! {
            _ = &mut ctrl_c => break "Ctrl-C",
            _ = tokio::time::sleep(tick) => {}
        }
        let counts = session.counts().await;
        let shown: Vec<String> = counts
            .iter()
            .map(|(host, n)| match n {
                Ok(n) => format!("{host} {n} events"),
                Err(_) => format!("{host} UNREACHABLE"),
            })
            .collect();
        eprint!("\r[{:>4} s] {}   ", started.elapsed().as_secs(), shown.join("  "));
    };
    eprintln!();
    verify::progress(&format!("stopped by {stopped_by}; pulling every host's events"));
    let bundle = session.close(None, "").await?;
    let path = write_bundle(&bundle, a.out)?;
    let per_host: Vec<_> = bundle
        .hosts
        .iter()
        .map(|h| serde_json::json!({"name": h.name, "events": h.events.len(), "lost": h.lost, "observer": h.observer}))
        .collect();
    if a.json {
        println!("{}", serde_json::json!({"capture": bundle.capture_id, "bundle": path, "hosts": per_host}));
    } else {
        for h in &bundle.hosts {
            println!("{:<12} {:>8} events, {} lost ({})", h.name, h.events.len(), h.lost, h.observer);
        }
        println!("bundle: {}", path.display());
    }
    Ok(0)
}

fn diff_cmd(a: DiffArgs) -> Result<i32> {
    let bundle_a = Bundle::read(&a.a).map_err(|e| anyhow!("{e}"))?;
    let bundle_b = match &a.b {
        Some(path) => Some(Bundle::read(path).map_err(|e| anyhow!("{e}"))?),
        None => None,
    };
    let at = a.at.as_deref();
    // (label, environment) of each side.
    let (side_a, side_b) = match &bundle_b {
        None => {
            let names: Vec<String> = if a.hosts.is_empty() {
                bundle_a.hosts.iter().map(|h| h.name.clone()).collect()
            } else {
                a.hosts.clone()
            };
            let [ha, hb] = names.as_slice() else {
                return Err(anyhow!(
                    "{} has hosts {}; name the two to compare with --hosts A,B",
                    a.a.display(),
                    bundle_a.hosts.iter().map(|h| h.name.as_str()).collect::<Vec<_>>().join(", ")
                ));
            };
            let ea = diff::pick(&bundle_a, ha, at)?;
            let eb = diff::pick(&bundle_a, hb, at)?;
            ((ha.clone(), ea), (hb.clone(), eb))
        }
        Some(bundle_b) => {
            let host = match a.hosts.as_slice() {
                [h] => h.clone(),
                [] => {
                    let shared: Vec<_> = bundle_a
                        .hosts
                        .iter()
                        .filter(|h| bundle_b.host(&h.name).is_some())
                        .map(|h| h.name.clone())
                        .collect();
                    match shared.as_slice() {
                        [only] => only.clone(),
                        _ => {
                            return Err(anyhow!(
                                "the bundles share hosts [{}]; name one with --hosts NAME",
                                shared.join(", ")
                            ))
                        }
                    }
                }
                _ => return Err(anyhow!("with two bundles, --hosts names one host")),
            };
            let ea = diff::pick(&bundle_a, &host, at)?;
            let eb = diff::pick(bundle_b, &host, at)?;
            ((format!("{host}@{}", bundle_a.capture_id), ea), (format!("{host}@{}", bundle_b.capture_id), eb))
        }
    };
    let differences = diff::compare(side_a.1, side_b.1);
    if a.json {
        let v = serde_json::json!({
            "a": {"name": side_a.0, "at": side_a.1.at},
            "b": {"name": side_b.0, "at": side_b.1.at},
            "differences": differences.iter().enumerate().map(|(i, d)| {
                let mut v = serde_json::to_value(d).unwrap_or_default();
                v["rank"] = serde_json::json!(i + 1);
                v["summary"] = serde_json::json!(d.summary(&side_a.0, &side_b.0));
                v
            }).collect::<Vec<_>>(),
        });
        println!("{v}");
    } else {
        println!("{} ({}) vs {} ({}):", side_a.0, side_a.1.at, side_b.0, side_b.1.at);
        if differences.is_empty() {
            println!("  no differences in mounts, daemons, crontabs, interfaces, kernel or sysctls");
        }
        for (i, d) in differences.iter().enumerate() {
            println!("{:>3}. {}", i + 1, d.summary(&side_a.0, &side_b.0));
        }
    }
    Ok(0)
}

async fn agents_cmd(a: AgentsArgs) -> Result<i32> {
    let token = read_token(&a.token_file)?;
    let mut rows = Vec::new();
    let mut unreachable = false;
    for (name, addr) in parse_agents(&a.agents)? {
        match client::Agent::connect(&name, &addr, token.as_deref()).await {
            Ok(mut agent) => {
                let samples = agent.probe(16).await?;
                let clock = client::fit(&name, &samples)?;
                let caps = agent.info.capabilities.clone().unwrap_or_default();
                rows.push(serde_json::json!({
                    "name": name, "addr": addr, "reachable": true, "version": agent.info.version,
                    "kernel": agent.info.kernel, "offset_ns": clock.offset_ns, "error_ns": clock.error_ns, "at_ns": clock.ref_ns,
                    "capabilities": {"root": caps.root, "kernel_tracing": caps.kernel_tracing, "ptrace": caps.ptrace,
                                     "seccomp_notify": caps.seccomp_notify, "tracing_unavailable_reason": caps.tracing_unavailable_reason},
                }));
            }
            Err(e) => {
                unreachable = true;
                rows.push(
                    serde_json::json!({"name": name, "addr": addr, "reachable": false, "error": format!("{e:#}")}),
                );
            }
        }
    }
    if a.json {
        println!("{}", serde_json::Value::Array(rows));
    } else {
        for r in &rows {
            if r["reachable"] == true {
                println!(
                    "{:<10} {:<22} v{} kernel {} offset {} ns ± {} ns  tracing={} seccomp={}",
                    r["name"].as_str().unwrap_or(""),
                    r["addr"].as_str().unwrap_or(""),
                    r["version"].as_str().unwrap_or(""),
                    r["kernel"].as_str().unwrap_or(""),
                    r["offset_ns"],
                    r["error_ns"],
                    r["capabilities"]["kernel_tracing"],
                    r["capabilities"]["seccomp_notify"]
                );
            } else {
                println!(
                    "{:<10} {:<22} UNREACHABLE: {}",
                    r["name"].as_str().unwrap_or(""),
                    r["addr"].as_str().unwrap_or(""),
                    r["error"].as_str().unwrap_or("")
                );
            }
        }
    }
    Ok(if unreachable { 2 } else { 0 })
}
