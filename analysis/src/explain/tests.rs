//! explain's scoring core, table-driven: a small capture written as a table goes in, the ranked
//! candidates come out one per line and are compared with `expect![[...]]`
//! (`UPDATE_EXPECT=1 cargo test -p heisen-analysis` rewrites the expectations).
//!
//! A table has one line per fact:
//! - `run N passed` / `run N failed`: the runs, and the run the following events belong to;
//! - `host NAME ±US`: a host and its clock error bound (µs);
//! - `HOST PID T_US launch NAME`: a scenario process starts (its pid gets the role NAME);
//! - `HOST PID T_US CALL ARG... [= RET]`: a syscall returning at T_US (entered 1 µs before); an
//!   argument starting with `/` is a path (`/s` is the capture's shared directory, `{shared}`);
//! - `HOST PID T_US prints TEXT`: an output line;
//! - `HOST PID T_US exec`: the process execs (a program named after its role);
//! - `HOST PID T_US exit CODE` / `HOST PID T_US killed SIG`: a launched process ends.
//!
//! Every host clock is the coordinator's (offset 0), so only the error bounds matter.

use expect_test::{expect, Expect};
use heisen_recordings::{Bundle, ClockModel, Event, EventKind, HostRecording, RunObserver, RunOutcome};

use super::{explain, Options};

/// A valid free run of the given outcome and observer.
pub(super) fn outcome(run: u32, failed: bool, observer: RunObserver) -> RunOutcome {
    RunOutcome {
        run,
        ordering: None,
        failed,
        valid: true,
        note: String::new(),
        steps: vec![],
        observer,
        variants: vec![],
    }
}

fn bundle(table: &str) -> Bundle {
    let mut hosts: Vec<HostRecording> = Vec::new();
    let mut runs: Vec<RunOutcome> = Vec::new();
    for line in table.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["run", n, result] => runs.push(outcome(n.parse().unwrap(), *result == "failed", RunObserver::Kernel)),
            ["host", name, error] => hosts.push(HostRecording {
                name: name.to_string(),
                agent_version: String::new(),
                kernel: String::new(),
                observer: "tracefs".into(),
                clock: ClockModel {
                    error_ns: error.trim_start_matches('±').parse::<i64>().unwrap() * 1_000,
                    ..ClockModel::identity()
                },
                probes: vec![],
                events: vec![],
                lost: 0,
                environments: vec![],
                incomplete: None,
            }),
            [host, pid, t_us, what, rest @ ..] => {
                let raw_ns = t_us.parse::<i64>().unwrap() * 1_000;
                let kind = match (*what, rest) {
                    ("launch", [name]) => {
                        EventKind::Launch { name: name.to_string(), role: "step".into(), argv: vec![] }
                    }
                    ("exec", []) => {
                        EventKind::Exec { filename: format!("/bin/{host}-prog"), argv: vec![], ppid: 1, chain: vec![] }
                    }
                    ("exit", [code]) => EventKind::Exit { exit_code: code.parse().unwrap(), killed_by: None },
                    ("killed", [sig]) => EventKind::Exit {
                        exit_code: 128 + sig.parse::<i32>().unwrap(),
                        killed_by: Some(heisen_recordings::KilledBy {
                            signal: sig.parse().unwrap(),
                            sender_pid: 0,
                            sender_comm: String::new(),
                        }),
                    },
                    ("prints", text) => {
                        EventKind::Output { name: String::new(), stream: "stdout".into(), line: text.join(" ") }
                    }
                    (call, args) => {
                        let (args, ret) = match args.iter().position(|a| *a == "=") {
                            Some(i) => (&args[..i], args[i + 1].parse().unwrap()),
                            None => (args, 0),
                        };
                        // Paths (`/s/...`, under the capture's shared directory `/s`) are the
                        // call's strings; an fd call's path is the file its fd names.
                        let (paths, numbers): (Vec<&str>, Vec<&str>) = args.iter().partition(|a| a.starts_with('/'));
                        let by_fd = matches!(call, "write" | "read" | "close" | "fsync");
                        EventKind::Syscall {
                            name: call.to_string(),
                            args: numbers.iter().map(|a| a.parse().unwrap()).collect(),
                            ret,
                            enter_ns: raw_ns - 1_000,
                            fd_path: paths.first().filter(|_| by_fd).map(|p| p.to_string()),
                            strings: if by_fd { vec![] } else { paths.iter().map(|p| p.to_string()).collect() },
                            addr: None,
                            path_from: None,
                        }
                    }
                };
                let run = runs.last().expect("a `run` line comes first").run;
                let rec = hosts.iter_mut().find(|h| h.name == *host).expect("a `host` line names the host first");
                let seq = rec.events.len() as u64;
                rec.events.push(Event { seq, raw_ns, pid: pid.parse().unwrap(), comm: String::new(), run, kind });
            }
            _ => panic!("not a table line: {line}"),
        }
    }
    Bundle {
        capture_id: "t".into(),
        started_ns: 0,
        scenario: None,
        hosts,
        runs,
        causal: vec![],
        placeholders: [("shared".to_string(), "/s".to_string())].into(),
    }
}

/// Ranked candidates, one line each: score, failing and passing counts, kind, summary.
fn check(table: &str, expect: Expect) {
    let x = explain(&bundle(table), &Options::default()).unwrap();
    let lines: String = x
        .candidates
        .iter()
        .map(|c| {
            format!(
                "{:.2} {}/{} vs {}/{} [{}] {}\n",
                c.score, c.failing.holds, c.failing.of, c.passing.holds, c.passing.of, c.kind, c.summary
            )
        })
        .collect();
    expect.assert_eq(&lines);
}

/// Three writes of a client and a reload signal on the server, per run: the signal lands among
/// the writes in the failing runs, before them in the passing one.
#[test]
fn a_signal_among_a_stream_of_calls_separates() {
    check(
        r#"
        host client ±10
        host server ±10
        run 1 failed
        client 100 1000 launch writer
        server 200 1000 launch remount
        client 100 2000 write 3 = 8
        client 100 3000 write 3 = 8
        server 200 3500 kill 300 1
        client 100 4000 write 3 = -13
        run 2 failed
        client 101 11000 launch writer
        server 201 11000 launch remount
        client 101 12000 write 3 = 8
        server 201 12500 kill 300 1
        client 101 13000 write 3 = 8
        client 101 14000 write 3 = -13
        run 3 passed
        client 102 21000 launch writer
        server 202 21000 launch remount
        server 202 21500 kill 300 1
        client 102 22000 write 3 = 8
        client 102 23000 write 3 = 8
        client 102 24000 write 3 = 8
        "#,
        expect![[r#"
            1.00 2/2 vs 0/1 [ordering] remount's kill(SIGHUP) [server] lands while writer's write(fd>=3) calls are under way [client]
            1.00 2/2 vs 0/1 [ordering] writer's write(fd>=3) [client] before remount's kill(SIGHUP) [server]
        "#]],
    );
}

/// Across hosts, a signal within the clock error of the last write is not known to come after
/// it: it counts as "during" in the failing runs, and the passing run (well after) does not.
#[test]
fn within_the_clock_error_is_concurrent_not_after() {
    check(
        r#"
        host client ±400
        host server ±400
        run 1 failed
        client 100 1000 launch writer
        server 200 1000 launch remount
        client 100 2000 write 3 = 8
        client 100 3000 write 3 = 8
        server 200 3300 kill 300 1
        run 2 passed
        client 101 11000 launch writer
        server 201 11000 launch remount
        client 101 12000 write 3 = 8
        client 101 13000 write 3 = 8
        server 201 15000 kill 300 1
        "#,
        expect![[r#"
            1.00 1/1 vs 0/1 [ordering] remount's kill(SIGHUP) [server] lands while writer's write(fd>=3) calls are under way [client]
            1.00 1/1 vs 0/1 [ordering] remount's kill(SIGHUP) [server] lands before the end of writer's write(fd>=3) calls [client]
        "#]],
    );
}

/// On one host the order is (host, seq): a signal sent after the last write by seq is after it,
/// even when the host's clock error would make the two concurrent across hosts.
#[test]
fn same_host_order_is_by_seq_not_clock() {
    check(
        r#"
        host box ±5000
        run 1 failed
        box 100 1000 launch writer
        box 200 1000 launch remount
        box 100 2000 write 3 = 8
        box 200 2100 kill 300 1
        box 100 2200 write 3 = 8
        run 2 passed
        box 101 11000 launch writer
        box 201 11000 launch remount
        box 101 12000 write 3 = 8
        box 101 12200 write 3 = 8
        box 201 12100 kill 300 1
        "#,
        expect![[r#"
            1.00 1/1 vs 0/1 [ordering] remount's kill(SIGHUP) [box] lands while writer's write(fd>=3) calls are under way [box]
            1.00 1/1 vs 0/1 [ordering] remount's kill(SIGHUP) [box] lands before the end of writer's write(fd>=3) calls [box]
        "#]],
    );
}

/// What holds in every run, failing or passing, separates nothing and is no candidate.
#[test]
fn an_ordering_every_run_has_is_no_candidate() {
    check(
        r#"
        host a ±10
        host b ±10
        run 1 failed
        a 100 1000 launch first
        b 200 1000 launch second
        a 100 2000 connect 3
        b 200 5000 connect 3
        run 2 passed
        a 101 11000 launch first
        b 201 11000 launch second
        a 101 12000 connect 3
        b 201 15000 connect 3
        "#,
        expect![[r#""#]],
    );
}

/// A process's exec and the call right after it separate alike: the call is ranked first (a
/// gate can hold it; the exec is only the process being born).
#[test]
fn a_call_outranks_its_own_processes_exec() {
    check(
        r#"
        host client ±10
        host node ±10
        run 1 failed
        client 100 1000 launch upload
        client 100 2000 write 3 = 8
        node 200 2100 launch healthcheck
        node 200 2200 exec
        node 200 2300 connect 3
        client 100 3000 write 3 = 8
        run 2 passed
        client 101 11000 launch upload
        node 201 11100 launch healthcheck
        node 201 11200 exec
        node 201 11300 connect 3
        client 101 12000 write 3 = 8
        client 101 13000 write 3 = 8
        "#,
        expect![[r#"
            1.00 1/1 vs 0/1 [ordering] healthcheck's connect [node] lands while upload's write(fd>=3) calls are under way [client]
            1.00 1/1 vs 0/1 [ordering] upload's write(fd>=3) [client] before healthcheck's connect [node]
            1.00 1/1 vs 0/1 [ordering] upload's write(fd>=3) [client] before healthcheck's exec node-prog [node]
            1.00 1/1 vs 0/1 [ordering] healthcheck's exec node-prog [node] lands while upload's write(fd>=3) calls are under way [client]
        "#]],
    );
}

/// A signal that lands early, while the failing process is still starting, precedes the end of
/// its start-up calls (openat) as well as of its writes: both separate alike. The writes end in
/// the error in the failing run and in no passing one, so they are where the failure shows and
/// rank first (CI once ranked the loader's openat calls first on a tie of summaries).
#[test]
fn the_victim_that_ends_in_the_error_outranks_a_bystander() {
    check(
        r#"
        host client ±10
        host server ±10
        run 1 failed
        client 100 1000 launch writer
        server 200 1000 launch remount
        server 200 1100 kill 300 1
        client 100 1500 openat 3
        client 100 1600 openat 3
        client 100 2000 write 3 = 8
        client 100 3000 write 3 = -13
        run 2 passed
        client 101 11000 launch writer
        server 201 11000 launch remount
        client 101 11500 openat 3
        client 101 11600 openat 3
        client 101 12000 write 3 = 8
        client 101 13000 write 3 = 8
        server 201 14000 kill 300 1
        "#,
        expect![[r#"
            1.00 1/1 vs 0/1 [ordering] remount's kill(SIGHUP) [server] lands before the end of writer's write(fd>=3) calls [client]
            1.00 1/1 vs 0/1 [ordering] remount's kill(SIGHUP) [server] before writer's write(fd>=3) [client]
            1.00 1/1 vs 0/1 [ordering] remount's kill(SIGHUP) [server] before writer's openat [client]
        "#]],
    );
}

/// A signal that lands among a process's writes on one socket also lands among its sends on
/// another, which run from its start to its end: both separate alike, and the narrower window
/// (the writes) ranks first; it says more about when the cause must land. (A process's unnamed
/// close or openat calls are no stream at all: they are not candidates.)
#[test]
fn the_narrower_window_outranks_a_process_long_one() {
    check(
        r#"
        host client ±10
        host server ±10
        run 1 failed
        client 100 1000 launch writer
        server 200 1000 launch remount
        client 100 1100 sendto 5 = 8
        client 100 5000 write 4 = 8
        server 200 5500 kill 300 1
        client 100 6000 write 4 = 8
        client 100 9000 sendto 5 = 8
        run 2 passed
        client 101 11000 launch writer
        server 201 11000 launch remount
        client 101 11100 sendto 5 = 8
        client 101 15000 write 4 = 8
        client 101 16000 write 4 = 8
        client 101 19000 sendto 5 = 8
        server 201 20000 kill 300 1
        "#,
        expect![[r#"
            1.00 1/1 vs 0/1 [ordering] remount's kill(SIGHUP) [server] lands while writer's write(fd>=3) calls are under way [client]
            1.00 1/1 vs 0/1 [ordering] remount's kill(SIGHUP) [server] lands while writer's sendto(fd>=3) calls are under way [client]
            1.00 1/1 vs 0/1 [ordering] remount's kill(SIGHUP) [server] lands before the end of writer's write(fd>=3) calls [client]
            1.00 1/1 vs 0/1 [ordering] remount's kill(SIGHUP) [server] lands before the end of writer's sendto(fd>=3) calls [client]
        "#]],
    );
}

/// A connection's writes and its receives span the same window (its connect to its close) and
/// separate alike: the calls that open the stream (the writes) rank first, they are where a
/// gate holds the request.
#[test]
fn a_connections_first_calls_outrank_its_later_ones() {
    check(
        r#"
        host client ±10
        host node ±10
        run 1 failed
        client 100 1000 launch upload
        client 100 2000 connect 4
        client 100 3000 write 4 = 8
        client 100 3500 recvfrom 4 = 8
        node 200 4000 launch healthcheck
        node 200 4100 connect 3
        client 100 5000 write 4 = 8
        client 100 5500 recvfrom 4 = 8
        run 2 passed
        client 101 11000 launch upload
        client 101 12000 connect 4
        client 101 13000 write 4 = 8
        client 101 13500 recvfrom 4 = 8
        client 101 15000 write 4 = 8
        client 101 15500 recvfrom 4 = 8
        node 201 18000 launch healthcheck
        node 201 18100 connect 3
        "#,
        expect![[r#"
            1.00 1/1 vs 0/1 [ordering] healthcheck's connect [node] lands while upload's connection is in use (from its connect through its write(fd>=3) calls to its close) [client]
            1.00 1/1 vs 0/1 [ordering] healthcheck's connect [node] lands while upload's connection is in use (from its connect through its recvfrom(fd>=3) calls to its close) [client]
            1.00 1/1 vs 0/1 [ordering] healthcheck's connect [node] lands before the end of upload's write(fd>=3) calls [client]
            1.00 1/1 vs 0/1 [ordering] healthcheck's connect [node] lands before the end of upload's recvfrom(fd>=3) calls [client]
        "#]],
    );
}

/// A read that fails only between two calls of another process (a pid file read after the old
/// process is stopped and before the new one writes its pid): "before the write" holds in a
/// passing run too (a read before the stop), "after the stop" in another (a read after the
/// write); only the window of the two separates, and ranks first. The kill that fails (ESRCH)
/// is where the failure shows: it ranks after the read that set it up.
#[test]
fn a_window_between_two_calls_of_one_process_separates_when_neither_edge_does() {
    check(
        r#"
        host app ±10
        host ops ±10
        run 1 failed
        app 100 1000 launch restart
        ops 200 1000 launch reload
        app 100 2000 kill 300 15
        ops 200 2500 openat 3
        ops 200 2600 kill 300 1 = -3
        app 100 4000 renameat 3
        run 2 failed
        app 101 11000 launch restart
        ops 201 11000 launch reload
        app 101 12000 kill 301 15
        ops 201 13000 openat 3
        ops 201 13100 kill 301 1 = -3
        app 101 14000 renameat 3
        run 3 passed
        app 102 21000 launch restart
        ops 202 21000 launch reload
        ops 202 21500 openat 3
        ops 202 21600 kill 302 1
        app 102 22000 kill 302 15
        app 102 24000 renameat 3
        run 4 passed
        app 103 31000 launch restart
        ops 203 31000 launch reload
        app 103 32000 kill 303 15
        app 103 34000 renameat 3
        ops 203 35000 openat 3
        ops 203 35100 kill 103 1
        "#,
        expect![[r#"
            1.00 2/2 vs 0/2 [ordering] reload's openat [ops] lands after restart's kill(SIGTERM) [app] and before its renameat [app]
            1.00 2/2 vs 0/2 [ordering] reload's kill(SIGHUP) [ops] lands after restart's kill(SIGTERM) [app] and before its renameat [app]
            0.50 2/2 vs 1/2 [ordering] reload's openat [ops] before restart's renameat [app]
            0.50 2/2 vs 1/2 [ordering] restart's kill(SIGTERM) [app] before reload's openat [ops]
            0.50 2/2 vs 1/2 [ordering] reload's kill(SIGHUP) [ops] before restart's renameat [app]
            0.50 2/2 vs 1/2 [ordering] restart's kill(SIGTERM) [app] before reload's kill(SIGHUP) [ops]
        "#]],
    );
}

/// Two runs of one job overlap in the failing run: the second one's writes land while the first
/// one's are under way, and — a consequence — the first one's rename lands while the second's
/// are. Both separate alike over windows of about the same width; the earlier departure from
/// the passing run (the second job's writes) ranks first, whichever window is a hair narrower.
#[test]
fn between_equals_the_earlier_cause_ranks_first() {
    check(
        r#"
        host primary ±10
        host standby ±10
        run 1 failed
        primary 100 1000 launch nightly
        standby 200 1000 launch failover
        primary 100 2000 write 3 = 8
        primary 100 3000 write 3 = 8
        standby 200 3500 write 3 = 8
        primary 100 4000 write 3 = 8
        primary 100 4200 rename 0 0
        standby 200 4500 write 3 = 8
        standby 200 5400 write 3 = 8
        run 2 passed
        primary 101 11000 launch nightly
        standby 201 11000 launch failover
        primary 101 12000 write 3 = 8
        primary 101 13000 write 3 = 8
        primary 101 14000 write 3 = 8
        primary 101 14200 rename 0 0
        standby 201 15500 write 3 = 8
        standby 201 16500 write 3 = 8
        standby 201 17400 write 3 = 8
        "#,
        expect![[r#"
            1.00 1/1 vs 0/1 [ordering] failover's write(fd>=3) [standby] lands while nightly's write(fd>=3) calls are under way [primary]
            1.00 1/1 vs 0/1 [ordering] nightly's rename [primary] lands while failover's write(fd>=3) calls are under way [standby]
            1.00 1/1 vs 0/1 [ordering] failover's write(fd>=3) [standby] lands before the end of nightly's write(fd>=3) calls [primary]
            1.00 1/1 vs 0/1 [ordering] failover's write(fd>=3) [standby] before nightly's rename [primary]
        "#]],
    );
}

/// A janitor deletes an upload's file while the upload writes it. Its delete happens only in
/// failing runs, yet it is what a process did (a call on a named file that succeeded), not the
/// failure showing: the failing runs are cut at the upload's error, and the window between the
/// upload's open and its rename stays in view.
#[test]
fn a_delete_only_failing_runs_make_is_no_symptom() {
    check(
        r#"
        host ingest ±10
        host maint ±10
        run 1 failed
        ingest 100 1000 launch upload
        maint 200 1000 launch janitor
        ingest 100 2000 openat /s/spool/u.part = 3
        maint 200 3000 openat /s/spool = 3
        maint 200 3100 unlink /s/spool/u.part
        ingest 100 4000 write 3 /s/spool/u.part = 8
        ingest 100 5000 rename /s/spool/u.part /s/spool/u = -2
        ingest 100 5100 prints E: upload lost
        run 2 passed
        ingest 101 11000 launch upload
        maint 201 11000 launch janitor
        maint 201 11500 openat /s/spool = 3
        ingest 101 12000 openat /s/spool/u.part = 3
        ingest 101 14000 write 3 /s/spool/u.part = 8
        ingest 101 15000 rename /s/spool/u.part /s/spool/u
        run 3 passed
        ingest 102 21000 launch upload
        maint 202 21000 launch janitor
        ingest 102 22000 openat /s/spool/u.part = 3
        ingest 102 22500 write 3 /s/spool/u.part = 8
        ingest 102 23000 rename /s/spool/u.part /s/spool/u
        maint 202 24000 openat /s/spool = 3
        "#,
        expect![[r#"
            1.00 1/1 vs 0/2 [ordering] janitor's openat on {shared}/spool [maint] lands after upload's openat on {shared}/spool/u.part [ingest] and before its rename on {shared}/spool/u.part [ingest]
            0.50 1/1 vs 1/2 [ordering] janitor's openat on {shared}/spool [maint] before upload's rename on {shared}/spool/u.part [ingest]
            0.50 1/1 vs 1/2 [ordering] upload's openat on {shared}/spool/u.part [ingest] before janitor's openat on {shared}/spool [maint]
            0.50 1/1 vs 1/2 [ordering] janitor's openat on {shared}/spool [maint] before upload's write(fd>=3) on {shared}/spool/u.part [ingest]
        "#]],
    );
}

/// Ranked candidates with what verify would run: each candidate's hypothesis, or why it has
/// none, under the given scenario.
fn check_verifiable(table: &str, scenario: &str, expect: Expect) {
    let mut b = bundle(table);
    b.scenario = Some(heisen_recordings::ScenarioSource { path: "s.toml".into(), text: scenario.into() });
    let x = explain(&b, &Options::default()).unwrap();
    let lines: String = x
        .candidates
        .iter()
        .take(2)
        .map(|c| {
            format!(
                "{:.2} {}\n  {}\n",
                c.score,
                c.summary,
                c.hypothesis.clone().or(c.not_verifiable.clone()).unwrap_or_default()
            )
        })
        .collect();
    expect.assert_eq(&lines);
}

const COPYTRUNCATE: &str = r#"
name = "t"
[hosts.web]
[hosts.ops]
[services.app]
host = "web"
command = ["app"]
ready = "ready"
[steps.rotate]
host = "ops"
command = ["rotate"]
[failure]
step = "rotate"
exit = 1
"#;

/// A service appends to its log while a rotation on another host copies the log (into a
/// compressed file) and then truncates it. The window on the log itself (from the copy's open
/// to the truncation) ranks above the copy's stream into another file, though both separate:
/// a race is on what both sides touch. The cause is the service's own call, held once the
/// service is ready.
#[test]
fn a_services_call_in_a_window_on_its_own_file_is_verifiable() {
    // The service's ready line in the failing run: before its write, or after it.
    let table = |early: &str, late: &str| {
        format!(
            r#"
        host web ±10
        host ops ±10
        run 1 failed
        web 100 1000 launch app
        web 100 1100 openat /s/app.log = 3
        {early}
        ops 200 1000 launch rotate
        ops 200 2000 openat /s/app.log = 3
        ops 200 2100 close 3 /s/app.log
        ops 200 2200 openat /s/app.log.gz = 4
        ops 200 2300 write 4 /s/app.log.gz = 8
        web 100 2500 write 3 /s/app.log = 8
        {late}
        ops 200 2600 write 4 /s/app.log.gz = 8
        ops 200 2700 close 4 /s/app.log.gz
        ops 200 2800 truncate /s/app.log
        run 2 passed
        web 101 11000 launch app
        web 101 11100 openat /s/app.log = 3
        web 101 11200 prints ready
        web 101 11500 write 3 /s/app.log = 8
        ops 201 11000 launch rotate
        ops 201 12000 openat /s/app.log = 3
        ops 201 12100 close 3 /s/app.log
        ops 201 12200 openat /s/app.log.gz = 4
        ops 201 12300 write 4 /s/app.log.gz = 8
        ops 201 12600 write 4 /s/app.log.gz = 8
        ops 201 12700 close 4 /s/app.log.gz
        ops 201 12800 truncate /s/app.log
        run 3 passed
        web 102 21000 launch app
        web 102 21100 openat /s/app.log = 3
        web 102 21200 prints ready
        ops 202 21000 launch rotate
        ops 202 22000 openat /s/app.log = 3
        ops 202 22100 close 3 /s/app.log
        ops 202 22200 openat /s/app.log.gz = 4
        ops 202 22300 write 4 /s/app.log.gz = 8
        ops 202 22600 write 4 /s/app.log.gz = 8
        ops 202 22700 close 4 /s/app.log.gz
        ops 202 22800 truncate /s/app.log
        web 102 23500 write 3 /s/app.log = 8
        "#
        )
    };
    check_verifiable(
        &table("web 100 1200 prints ready", ""),
        COPYTRUNCATE,
        expect![[r#"
            1.00 app's write(fd>=3) on {shared}/app.log [web] lands after rotate's openat on {shared}/app.log [ops] and before its truncate on {shared}/app.log [ops]
              { cause = { step = "app", syscall = "write", fd_at_least = 3, path = "{shared}/app.log" }, opens = { step = "rotate", syscall = "openat", path = "{shared}/app.log" }, closes = { step = "rotate", syscall = "truncate", path = "{shared}/app.log" }, runs = 5 }
            1.00 app's write(fd>=3) on {shared}/app.log [web] lands while rotate has {shared}/app.log.gz open (from its open through its write calls to its close) [ops]
              { cause = { step = "app", syscall = "write", fd_at_least = 3, path = "{shared}/app.log" }, victim = { step = "rotate", syscall = "write", nth = 2, fd_at_least = 3, path = "{shared}/app.log.gz" }, victim_count = 2, victim_begins = { step = "rotate", syscall = "openat", path = "{shared}/app.log.gz" }, runs = 5 }
        "#]],
    );
    // The service printed its ready line only after the write in the failing run: verify starts
    // a run's steps once its services are ready, so it cannot hold that write.
    check_verifiable(
        &table("", "web 100 2550 prints ready"),
        COPYTRUNCATE,
        expect![[r#"
            1.00 app's write(fd>=3) on {shared}/app.log [web] lands after rotate's openat on {shared}/app.log [ops] and before its truncate on {shared}/app.log [ops]
              write(fd>=3) on {shared}/app.log #1 of service app comes before it prints "ready" in run 1; verify holds a service only once it is ready
            1.00 app's write(fd>=3) on {shared}/app.log [web] lands while rotate has {shared}/app.log.gz open (from its open through its write calls to its close) [ops]
              write(fd>=3) on {shared}/app.log #1 of service app comes before it prints "ready" in run 1; verify holds a service only once it is ready
        "#]],
    );
}

/// The same race where every passing run happened to write before the copy (none after the
/// truncation): "the copy's open before the write" then separates as well as the window, which
/// implies it. The window ranks first: verifying it tests both of its edges, while the order alone
/// would let the write land after the truncation, where the record is kept.
#[test]
fn a_window_ranks_above_the_order_it_implies_when_they_separate_alike() {
    let mut table = String::from(
        r#"
        host web ±10
        host ops ±10
        "#,
    );
    for (run, failed, base) in [(1, true, 0), (2, false, 10_000), (3, false, 20_000), (4, true, 30_000)] {
        let (web, ops) = (100 + run, 200 + run);
        let write_at = if failed { base + 2500 } else { base + 1500 };
        table.push_str(&format!(
            r#"
        run {run} {}
        web {web} {} launch app
        web {web} {} openat /s/app.log = 3
        web {web} {} prints ready
        web {web} {write_at} write 3 /s/app.log = 8
        ops {ops} {} launch rotate
        ops {ops} {} openat /s/app.log = 3
        ops {ops} {} close 3 /s/app.log
        ops {ops} {} truncate /s/app.log
        ops {} {} launch audit
        ops {} {} exit {}
        "#,
            if failed { "failed" } else { "passed" },
            base + 1000,
            base + 1100,
            base + 1200,
            base + 1000,
            base + 2000,
            base + 2100,
            base + 2800,
            300 + run,
            base + 3000,
            300 + run,
            base + 3500,
            failed as i32,
        ));
    }
    check_verifiable(
        &table,
        &copytruncate_audited(),
        expect![[r#"
            1.00 app's write(fd>=3) on {shared}/app.log [web] lands after rotate's openat on {shared}/app.log [ops] and before its truncate on {shared}/app.log [ops]
              { cause = { step = "app", syscall = "write", fd_at_least = 3, path = "{shared}/app.log" }, opens = { step = "rotate", syscall = "openat", path = "{shared}/app.log" }, closes = { step = "rotate", syscall = "truncate", path = "{shared}/app.log" }, runs = 5 }
            1.00 rotate's openat on {shared}/app.log [ops] before app's write(fd>=3) on {shared}/app.log [web]
              { first = { step = "app", syscall = "write", fd_at_least = 3, path = "{shared}/app.log" }, then = { step = "rotate", syscall = "openat", path = "{shared}/app.log" }, fails_when = "after", settle = "call", runs = 5 }
        "#]],
    );
}

/// COPYTRUNCATE where an audit after the rotation is what fails, as in the story.
fn copytruncate_audited() -> String {
    assert!(COPYTRUNCATE.contains("[failure]\nstep = \"rotate\""));
    COPYTRUNCATE.replace(
        "[failure]\nstep = \"rotate\"",
        "[steps.audit]\nhost = \"ops\"\ncommand = [\"audit\"]\n[failure]\nstep = \"audit\"",
    )
}

const RELOAD: &str = r#"
name = "t"
[hosts.app]
[hosts.ops]
[services.daemon]
host = "app"
command = ["daemon"]
[steps.reload]
host = "ops"
command = ["reload"]
[steps.check]
host = "app"
command = ["check"]
[failure]
step = "check"
exit = 1
"#;

/// A reload signal that reaches a daemon before it has installed its handler ends it (the
/// default action), so the install never comes in the failing runs: "the kill before the
/// install" holds there because a signal ended the daemon after the kill, while the run's steps
/// still ran. Verify can hold the install (not the query before it), on the service.
#[test]
fn a_signal_before_its_handler_is_installed_is_an_order_verify_can_hold() {
    check_verifiable(
        r#"
        host app ±10
        host ops ±10
        run 1 failed
        app 100 1000 launch daemon
        ops 200 1000 launch reload
        app 300 1000 launch check
        app 100 1100 rt_sigaction 1 0 = 0
        ops 200 1500 kill 100 1
        app 100 1600 killed 1
        ops 200 1700 exit 0
        app 300 3000 exit 1
        run 2 passed
        app 101 11000 launch daemon
        ops 201 11000 launch reload
        app 301 11000 launch check
        app 101 11100 rt_sigaction 1 0 = 0
        app 101 11200 rt_sigaction 1 24576 = 0
        ops 201 12000 kill 101 1
        ops 201 12100 exit 0
        app 301 13000 exit 0
        app 101 13500 killed 15
        run 3 passed
        app 102 21000 launch daemon
        ops 202 21000 launch reload
        app 302 21000 launch check
        app 102 21100 rt_sigaction 1 0 = 0
        app 102 21300 rt_sigaction 1 24576 = 0
        ops 202 22500 kill 102 1
        ops 202 22600 exit 0
        app 302 23000 exit 0
        app 102 23500 killed 15
        "#,
        RELOAD,
        expect![[r#"
            1.00 reload's kill(SIGHUP) [ops] before daemon's rt_sigaction(SIGHUP) [app]
              { first = { step = "daemon", syscall = "rt_sigaction", signal = "SIGHUP" }, then = { step = "reload", syscall = "kill", signal = "SIGHUP" }, fails_when = "after", settle = "call", runs = 5 }
        "#]],
    );
}
