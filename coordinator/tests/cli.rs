//! The `heisen` command line against bad input: every case exits 2 with a one-line error that
//! names the file (or host), and never panics. Plus the `--help` snapshot.

use std::path::Path;

use heisen_recordings::{ClockModel, Event, EventKind, HostRecording, CHUNK_EVENTS};
use std::process::{Command, Output};

const HEISEN: &str = env!("CARGO_BIN_EXE_heisen");

fn heisen(args: &[&str]) -> Output {
    Command::new(HEISEN).args(args).output().unwrap()
}

fn assert_bad_input(out: &Output, mentions: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line expected: {stderr}");
    for m in mentions {
        assert!(stderr.contains(m), "`{m}` missing from: {stderr}");
    }
}

/// Compares with `tests/snapshots/NAME`; `UPDATE_SNAPSHOTS=1` rewrites it.
fn check_snapshot(name: &str, actual: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots").join(name);
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&path, actual).unwrap();
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    assert_eq!(actual, expected, "snapshot {name} differs; rerun with UPDATE_SNAPSHOTS=1 if intended");
}

#[test]
fn help_text() {
    let out = heisen(&["--help"]);
    assert!(out.status.success());
    check_snapshot("help.txt", &String::from_utf8_lossy(&out.stdout));
    let out = heisen(&["timeline", "--help"]);
    check_snapshot("timeline-help.txt", &String::from_utf8_lossy(&out.stdout));
}

/// A real bundle written by the recordings crate's writer, read back through `heisen`: host `a`
/// with three chunks of writes, host `b` with a few.
fn good_bundle(dir: &Path) -> Vec<u8> {
    let event = |seq: u64| Event {
        seq,
        raw_ns: 1_000_000_000 + seq as i64 * 10_000,
        pid: 7,
        comm: "dd".into(),
        run: 0,
        kind: EventKind::Syscall {
            name: "write".into(),
            args: vec![1, 0, 1],
            ret: 1,
            enter_ns: 1_000_000_000 + seq as i64 * 10_000 - 100,
            fd_path: Some("/tmp/out".into()),
            strings: vec![],
            addr: None,
            path_from: None,
        },
    };
    let host = |name: &str, events: Vec<Event>| HostRecording::new(name, ClockModel::identity(), events);
    let bundle = heisen_recordings::Bundle {
        causal: vec![],
        placeholders: Default::default(),
        capture_id: "c".into(),
        started_ns: 1_000_000_000,
        scenario: None,
        hosts: vec![
            host("a", (0..3 * CHUNK_EVENTS as u64).map(event).collect()),
            host("b", (0..10).map(event).collect()),
        ],
        runs: vec![],
    };
    let path = dir.join("good.heisen");
    bundle.write(&path).unwrap();
    let out = heisen(&["timeline", path.to_str().unwrap(), "--jsonl", "--host", "b"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 10);
    std::fs::read(&path).unwrap()
}

#[test]
fn timeline_refuses_damaged_bundles() {
    let dir = tempfile::tempdir().unwrap();
    let good = good_bundle(dir.path());
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let random: Vec<u8> = (0..4096)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect();
    let mut old_flipped = heisen_recordings::Bundle::frame(b"{}");
    old_flipped[25] ^= 0x01;
    let cases: [(&str, &[u8], &str); 5] = [
        ("random.heisen", &random, "not a heisen bundle"),
        ("empty.heisen", b"", "not a heisen bundle"),
        ("header-only.heisen", &good[..24], "no readable metadata"),
        ("future.heisen", &[&good[..8], &[9, 0, 0, 0][..], &good[12..]].concat(), "newer"),
        ("old-flipped.heisen", &old_flipped, "checksum"),
    ];
    for (name, bytes, problem) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        assert_bad_input(&heisen(&["timeline", path.to_str().unwrap()]), &[name, problem]);
    }
    assert_bad_input(&heisen(&["timeline", "/nonexistent/x.heisen"]), &["/nonexistent/x.heisen"]);
    assert_bad_input(&heisen(&["timeline", "/dev/zero"]), &["/dev/zero", "device"]);
}

/// A damaged chunked bundle: the timeline shows what reads before the damage, marks where it
/// stops with a `lost` event, and exits 2 naming the file and the chunk.
#[test]
fn a_damaged_bundle_shows_what_reads_and_names_the_chunk() {
    let dir = tempfile::tempdir().unwrap();
    let good = good_bundle(dir.path());
    let chunks = CHUNK_EVENTS;
    // (name, bytes, what the error names, events of host a shown before its lost event)
    let mut flipped = good.clone();
    // Inside host a's first events chunk, which follows the header (12 bytes) and the head chunk
    // (9 bytes and its body).
    let head_len = u32::from_le_bytes(good[13..17].try_into().unwrap()) as usize;
    flipped[12 + 9 + head_len + 100] ^= 0x08;
    let mut trailer = good.clone();
    let at = good.len() - 10;
    trailer[at] ^= 0x01; // the trailer's magic: the index is found by walking the chunks
    let cut = &good[..good.len() * 2 / 3];
    for (name, bytes, problem) in [
        ("flipped.heisen", &flipped[..], "chunk 1 at byte"),
        ("trailer.heisen", &trailer[..], "index"),
        ("cut.heisen", cut, "chunk"),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let out = heisen(&["timeline", path.to_str().unwrap(), "--jsonl", "--host", "a"]);
        assert_bad_input(&out, &[name, problem, "damaged"]);
        let shown: Vec<serde_json::Value> =
            String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        let lost = shown.iter().filter(|e| e["kind"] == "lost").count();
        let syscalls = shown.iter().filter(|e| e["kind"] == "syscall").count();
        match name {
            "flipped.heisen" => assert_eq!((syscalls, lost), (0, 1), "{name}"),
            "trailer.heisen" => assert_eq!((syscalls, lost), (3 * chunks, 1), "{name}: every chunk reads"),
            _ => assert!(syscalls >= chunks && syscalls < 3 * chunks && lost == 1, "{name}: {syscalls} {lost}"),
        }
    }
}

/// The events of `heisen timeline ARGS --jsonl`, one JSON object per line.
fn jsonl(args: &[&str]) -> Vec<serde_json::Value> {
    let out = heisen(&[&["timeline", "--jsonl"], args].concat());
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// `--jsonl` prints the events of `--json`, one per line; `--pid`, `--comm`, `--syscall` (names
/// and classes), `--since` and `--until` keep exactly the events they name; bad values exit 2.
#[test]
fn timeline_streams_jsonl_and_filters_by_process_call_and_time() {
    let b = "../recordings/bundles/mountd-sighup-small.heisen";
    let all = jsonl(&[b, "--all"]);
    let array = heisen(&["timeline", b, "--json", "--all"]);
    let array: Vec<serde_json::Value> = serde_json::from_slice(&array.stdout).unwrap();
    assert_eq!(all, array, "--jsonl and --json differ");
    assert!(all.len() > 1000, "{}", all.len());

    let kills = jsonl(&[b, "--syscall", "kill"]);
    let expected = all.iter().filter(|e| e["kind"] == "syscall" && e["name"] == "kill").count();
    assert!(expected > 0);
    assert_eq!(kills.len(), expected);
    let signal_class = jsonl(&[b, "--syscall", "signal", "--all"]);
    assert!(signal_class.len() >= kills.len() && signal_class.iter().all(|e| e["kind"] == "syscall"));

    let pid = all[all.len() / 2]["pid"].as_i64().unwrap();
    let of_pid = jsonl(&[b, "--all", "--pid", &pid.to_string()]);
    assert_eq!(of_pid.len(), all.iter().filter(|e| e["pid"] == pid).count());
    let comm = all[0]["comm"].as_str().unwrap().to_string();
    let of_comm = jsonl(&[b, "--all", "--comm", &comm]);
    assert_eq!(of_comm.len(), all.iter().filter(|e| e["comm"] == comm.as_str()).count());

    // Before and after one instant: together, every event once.
    let (before, after) = (jsonl(&[b, "--all", "--until", "2s"]), jsonl(&[b, "--all", "--since", "2s"]));
    assert!(!before.is_empty() && !after.is_empty());
    assert_eq!(before.len() + after.len(), all.len(), "an event is on neither or both sides of 2 s");
    assert!(jsonl(&[b, "--all", "--since", "1h"]).is_empty());

    assert_bad_input(&heisen(&["timeline", b, "--syscall", "nope"]), &["--syscall", "`nope`"]);
    assert_bad_input(&heisen(&["timeline", b, "--since", "5x"]), &["--since", "`5x`"]);
}

/// A filter naming a host, kind or run the capture does not have is an error that lists the
/// choices (it printed nothing and exited 0); the device, FIFO or huge file given as a bundle is
/// refused at once.
#[test]
fn timeline_filters_name_only_what_the_capture_has() {
    let b = "../recordings/bundles/mountd-sighup-small.heisen";
    assert_bad_input(&heisen(&["timeline", b, "--host", "nope"]), &["no host `nope`", "hosts: client, server"]);
    assert_bad_input(&heisen(&["timeline", b, "--kind", "sycall"]), &["no event kind `sycall`", "kinds: syscall"]);
    assert_bad_input(&heisen(&["timeline", b, "--run", "99"]), &["no run 99", "runs: 0, 1,"]);
    let ok = heisen(&["timeline", b, "--host", "server", "--kind", "signal", "--run", "2"]);
    assert_eq!(ok.status.code(), Some(0), "{}", String::from_utf8_lossy(&ok.stderr));
    assert!(String::from_utf8_lossy(&ok.stdout).contains("SIGHUP"));
    assert_bad_input(&heisen(&["timeline", "/dev/zero"]), &["/dev/zero", "not a regular file"]);
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    assert_bad_input(&heisen(&["timeline", fifo.to_str().unwrap()]), &["FIFO"]);
}

#[test]
fn scenario_errors_name_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "name = \"x\"\n[hosts.a]\n[steps.s]\nhost = \"b\"\ncommand = [\"true\"]\n[failure]\nstep = \"s\"\nexit = \"nonzero\"\n").unwrap();
    let out = heisen(&["run", path.to_str().unwrap(), "--agent", "a=127.0.0.1:1"]);
    assert_bad_input(&out, &["bad.toml:4:", "steps.s.host", "unknown host `b`"]);
}

#[test]
fn unreachable_agents_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ok.toml");
    std::fs::write(&path, "name = \"x\"\n[hosts.a]\n[steps.s]\nhost = \"a\"\ncommand = [\"true\"]\n[failure]\nstep = \"s\"\nexit = \"nonzero\"\n").unwrap();
    // Port 1 on loopback: nothing listens there.
    let out = heisen(&["run", path.to_str().unwrap(), "--agent", "a=127.0.0.1:1"]);
    assert_bad_input(&out, &["agent a", "127.0.0.1:1", "unreachable"]);
    let out = heisen(&["run", path.to_str().unwrap()]);
    assert_bad_input(&out, &["needs hosts a", "--agent"]);
    let out = heisen(&["agents", "--agent", "a=127.0.0.1:1", "--json"]);
    assert_eq!(out.status.code(), Some(2));
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows[0]["reachable"], false);
}

#[test]
fn capture_and_diff_refuse_bad_input() {
    let out = heisen(&["capture", "--agent", "a=127.0.0.1:1", "--for", "soon"]);
    assert_bad_input(&out, &["--for `soon`", "30s"]);
    let out = heisen(&["capture", "--agent", "a=127.0.0.1:1", "--for", "1s"]);
    assert_bad_input(&out, &["agent a", "127.0.0.1:1", "unreachable"]);
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("b.heisen");
    std::fs::write(&bundle, good_bundle(dir.path())).unwrap();
    let out = heisen(&["diff", bundle.to_str().unwrap(), "--hosts", "nope,a"]);
    assert_bad_input(&out, &["no host `nope`"]);
}

/// explain on the small story-1 bundle under recordings/ (regenerate both with
/// scripts/regenerate-explain-bundle): the text and JSON are snapshots, and the first candidate is
/// the scenario's own cause.
#[test]
fn explain_on_the_stored_story1_bundle() {
    let bundle = "../recordings/bundles/mountd-sighup-small.heisen";
    let run = |json: bool| {
        let mut cmd = Command::new(HEISEN);
        cmd.current_dir(env!("CARGO_MANIFEST_DIR")).args(["explain", bundle]);
        if json {
            cmd.arg("--json");
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let text = run(false);
    check_snapshot("explain.txt", &text);
    let json: serde_json::Value = serde_json::from_str(&run(true)).unwrap();
    check_snapshot("explain.json", &(serde_json::to_string_pretty(&json).unwrap() + "\n"));

    let first = &json["candidates"][0];
    assert_eq!(first["rank"], 1);
    assert!(first["summary"].as_str().unwrap().starts_with("remount's kill(SIGHUP) [server]"), "{first}");
    assert_eq!(first["passing"]["holds"], 0);
    assert_eq!(first["failing"]["holds"], first["failing"]["of"]);
    let h = first["hypothesis"].as_str().unwrap();
    assert!(h.contains(r#"cause = { step = "remount", syscall = "kill", signal = "SIGHUP" }"#), "{h}");
    assert!(h.contains(r#"effect_done = { process = "exportd", output = "exports reloaded" }"#), "{h}");
    let phases: Vec<&str> = json["phases"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(
        phases,
        ["choose failing runs", "choose a passing baseline", "align events across runs", "score candidates", "propose"]
    );
    // Deterministic: the same bundle, the same answer.
    assert_eq!(run(false), text);
}

#[test]
fn explain_and_verify_refuse_what_they_cannot_use() {
    let dir = tempfile::tempdir().unwrap();
    good_bundle(dir.path());
    let adhoc = dir.path().join("good.heisen");
    let adhoc = adhoc.to_str().unwrap();
    assert_bad_input(&heisen(&["explain", adhoc]), &["good.heisen", "no runs of a scenario", "heisen run"]);
    assert_bad_input(&heisen(&["verify", adhoc, "--candidate", "1"]), &["good.heisen", "without a scenario"]);
    let scenario = concat!(env!("CARGO_MANIFEST_DIR"), "/../recordings/scenarios/statd-flock.toml");
    assert_bad_input(&heisen(&["verify", scenario, "--candidate", "1"]), &["--candidate needs a bundle"]);
    assert_bad_input(
        &heisen(&["verify", scenario, "--hypothesis", "{ variant = \"nope\", fails_when = \"off\" }"]),
        &["statd-flock.toml", "--hypothesis hypothesis.variant", "unknown variant `nope`"],
    );
    assert_bad_input(&heisen(&["verify", scenario, "--hypothesis", "oops"]), &["inline table"]);
    let stored = concat!(env!("CARGO_MANIFEST_DIR"), "/../recordings/bundles/mountd-sighup-small.heisen");
    assert_bad_input(&heisen(&["verify", stored, "--candidate", "99"]), &["there is no candidate 99"]);
}

#[test]
fn replay_refuses_what_it_cannot_re_execute() {
    let dir = tempfile::tempdir().unwrap();
    good_bundle(dir.path());
    let adhoc = dir.path().join("good.heisen");
    let out = heisen(&["replay", adhoc.to_str().unwrap(), "--run", "1", "--local"]);
    assert_bad_input(&out, &["good.heisen", "without a scenario", "nothing to re-run", "heisen timeline"]);
    let stored = concat!(env!("CARGO_MANIFEST_DIR"), "/../recordings/bundles/mountd-sighup-small.heisen");
    assert_bad_input(&heisen(&["replay", stored, "--run", "99", "--local"]), &["has no run 99", "1..=8"]);
    let scenario = concat!(env!("CARGO_MANIFEST_DIR"), "/../recordings/scenarios/statd-flock.toml");
    assert_bad_input(&heisen(&["replay", scenario, "--run", "1", "--local"]), &["is a scenario file"]);
}

#[test]
fn capture_refuses_an_unknown_syscall_before_asking_any_agent() {
    // Port 1 on loopback: nothing listens; the name is refused before a connection is tried.
    let out = heisen(&["capture", "--agent", "a=127.0.0.1:1", "--syscalls", "file,wirte", "--for", "1s"]);
    assert_bad_input(&out, &["--syscalls", "`wirte`", "network"]);
}

/// A recorded openat, as `heisen timeline --format strace` prints it: path, decoded flags, mode,
/// and the new fd with what it names.
#[test]
fn timeline_prints_strace_notation() {
    use heisen_recordings::{ClockModel, Event, EventKind, HostRecording, PathFrom};
    let dir = tempfile::tempdir().unwrap();
    let openat = EventKind::Syscall {
        name: "openat".into(),
        args: vec![-100i64 as u64, 0x7f00, 0o1101 | 0o2000000, 0o644],
        ret: 3,
        enter_ns: 900,
        fd_path: Some("/srv/a.tmp".into()),
        strings: vec!["/srv/a.tmp".into()],
        addr: None,
        path_from: Some(PathFrom::Trace),
    };
    let host = HostRecording {
        name: "app".into(),
        agent_version: String::new(),
        kernel: String::new(),
        observer: "tracefs".into(),
        clock: ClockModel::identity(),
        probes: vec![],
        events: vec![Event { seq: 0, raw_ns: 1000, pid: 42, comm: "svc".into(), run: 0, kind: openat }],
        lost: 0,
        environments: vec![],
        incomplete: None,
    };
    let bundle = heisen_recordings::Bundle {
        causal: vec![],
        placeholders: Default::default(),
        capture_id: "c".into(),
        started_ns: 0,
        scenario: None,
        hosts: vec![host],
        runs: vec![],
    };
    let path = dir.path().join("one.heisen");
    bundle.write(&path).unwrap();
    let out = heisen(&["timeline", path.to_str().unwrap(), "--format", "strace"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "app 42 svc openat(AT_FDCWD, \"/srv/a.tmp\", O_WRONLY|O_CREAT|O_TRUNC|O_CLOEXEC, 0644) = 3</srv/a.tmp>\n"
    );
}

#[test]
fn bench_refuses_unknown_parts() {
    let out = heisen(&["bench", "--only", "observer,nope"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("invalid value 'nope'") && stderr.contains("observer"), "{stderr}");
    let out = heisen(&["bench", "hosts", "--releases", "many"]);
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
}

/// The guest programs' binary beside heisen (the bench's workloads): `cargo test` builds the
/// binaries of the package under test only.
fn build_guests() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo).args(["build", "--quiet", "-p", "heisen-guests"]).status().unwrap();
    assert!(status.success(), "building heisen-guest failed");
    let guest = Path::new(HEISEN).with_file_name("heisen-guest");
    assert!(guest.is_file(), "{} was not built", guest.display());
}

#[test]
fn bench_json_has_a_row_per_measurement_with_its_target() {
    build_guests();
    // A small storm (the gate rows need no root: the filter is installed with no_new_privs).
    let out = heisen(&["bench", "--only", "gate", "--workload", "storm", "--storm-writes", "20000", "--json"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = rows.as_array().unwrap();
    let method =
        |m: &str| rows.iter().find(|r| r["method"] == m).unwrap_or_else(|| panic!("no row {m}: {rows:#?}")).clone();
    for r in rows {
        assert_eq!(r["workload"], "storm", "{r}");
        for key in ["ns_per_syscall", "ratio_vs_untraced"] {
            assert!(r[key].as_f64().is_some_and(|v| v > 0.0), "{key} of {r}");
        }
        assert!(r.get("events_lost").is_some() && r.get("target").is_some(), "{r}");
    }
    // The gate is judged against the untraced runs taken in turn with it, and says so.
    let (local, gate) =
        (method("untraced, in turn with the two below"), method("gate, syscall not made (filter path)"));
    let ratio = gate["ns_per_syscall"].as_f64().unwrap() / local["ns_per_syscall"].as_f64().unwrap();
    assert!((gate["ratio_vs_untraced"].as_f64().unwrap() - ratio).abs() < 1e-9, "{gate} vs {local}");
    assert_eq!(gate["target"], "<= +50 ns per syscall");
    assert!(gate["met"].is_boolean(), "{gate}");
    assert!(method("bare allow-all seccomp filter (floor)")["met"].is_null());
}

/// `heisen timeline BUNDLE | head -1`: when the reader goes away, heisen ends quietly (141, as a
/// SIGPIPE death reads in a shell) with no panic on stderr; SIGPIPE itself stays ignored, so a
/// socket whose peer went away is an error, not a silent death.
#[test]
fn a_reader_that_goes_away_ends_the_output_quietly() {
    let bundle = Path::new(env!("CARGO_MANIFEST_DIR")).join("../recordings/bundles/mountd-sighup-small.heisen");
    let mut child = Command::new(HEISEN)
        .args(["timeline", "--all"])
        .arg(&bundle)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take()); // the reader is gone before the first line
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(141), "{stderr}");
    assert!(stderr.is_empty(), "{stderr}");
}

/// `format-1.heisen` is a story-1 capture in format 1 (one JSON payload), kept as it was when
/// format 2 came (`mountd-sighup-small.heisen` is rewritten whenever explain's bundle is
/// regenerated). Read through the chunked reader and the streamed timeline, it gives byte for
/// byte the timeline the whole-bundle reader gave (the figures were taken with heisen at 7c3f10a).
#[test]
fn a_format_1_bundle_gives_the_timeline_it_gave_before() {
    let bundle = concat!(env!("CARGO_MANIFEST_DIR"), "/../recordings/bundles/format-1.heisen");
    for (args, len, crc, lines) in [
        (&[][..], 96_383, 0x6fd9_a805, 761),
        (&["--jsonl"][..], 792_512, 0xa1b5_cfe7, 1334),
        (&["--format", "strace"][..], 121_432, 0x5056_c9c3, 1110),
    ] {
        let out = heisen(&[&["timeline", bundle][..], args].concat());
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let found =
            (out.stdout.len(), crc32fast::hash(&out.stdout), out.stdout.iter().filter(|b| **b == b'\n').count());
        assert_eq!(found, (len, crc, lines), "timeline {args:?} differs from before");
    }
}

/// `heisen bench scale` on small sizes: every step of every size is a row with its figures, each
/// step measured in a process of its own (a real peak RSS), and the bundle's bytes per event.
#[test]
fn bench_scale_measures_every_step_of_every_size() {
    let dir = tempfile::tempdir().unwrap();
    let out = heisen(&[
        "bench",
        "scale",
        "--sizes",
        "20000,40000",
        "--hosts",
        "3",
        "--runs",
        "4",
        "--dir",
        dir.path().to_str().unwrap(),
        "--json",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let steps: Vec<(u64, &str)> =
        rows.iter().map(|r| (r["events"].as_u64().unwrap(), r["step"].as_str().unwrap())).collect();
    let mut expected = Vec::new();
    for size in [19_998, 39_999] {
        for step in ["write", "read", "timeline", "explain"] {
            expected.push((size, step));
        }
    }
    assert_eq!(steps, expected, "sizes are split evenly over the hosts");
    for r in &rows {
        assert!(r["failed"].is_null(), "{r}");
        assert!(r["peak_rss_bytes"].as_u64().is_some_and(|b| b > 1 << 20), "{r}");
        assert!(r["events_per_s"].as_f64().is_some_and(|v| v > 0.0), "{r}");
        assert!(r["met"].is_boolean() && r["target"].as_str().is_some_and(|t| !t.is_empty()), "{r}");
    }
    let bpe = rows[0]["bytes_per_event"].as_f64().unwrap();
    assert!(bpe > 1.0 && bpe < 200.0, "{bpe}");
    assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none(), "the bundles are removed after");
}

/// A Python with DuckDB's package: `HEISEN_PYTHON`, the venv `scripts/setup` makes, or python3.
fn duckdb_python() -> Option<String> {
    let venv = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/pyvenv/bin/python");
    let candidates = [std::env::var("HEISEN_PYTHON").ok(), Some(venv.to_string()), Some("python3".to_string())];
    candidates
        .into_iter()
        .flatten()
        .find(|p| Command::new(p).args(["-c", "import duckdb"]).output().is_ok_and(|o| o.status.success()))
}

/// `heisen export --format parquet` opens in DuckDB (PyPI's package, as a user would query it) with
/// the timeline's event count per host, its write calls, and the bundle's runs.
#[test]
fn a_parquet_export_opens_in_duckdb_with_the_timelines_counts() {
    let Some(python) = duckdb_python() else {
        eprintln!("SKIPPED a_parquet_export_opens_in_duckdb_with_the_timelines_counts: no Python with duckdb (scripts/setup installs it into target/pyvenv from PyPI)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let synthetic = dir.path().join("synthetic.heisen");
    let plan = heisen_recordings::synthetic::Plan { events: 60_000, hosts: 3, runs: 4, span_ns: 1_000_000_000 };
    heisen_recordings::synthetic::write(&synthetic, &plan).unwrap();
    let stored = Path::new(env!("CARGO_MANIFEST_DIR")).join("../recordings/bundles/format-1.heisen");
    for (i, bundle) in [synthetic, stored].iter().enumerate() {
        let out_dir = dir.path().join(format!("out{i}"));
        let out = heisen(&[
            "export",
            bundle.to_str().unwrap(),
            "--format",
            "parquet",
            "--out",
            out_dir.to_str().unwrap(),
            "--json",
        ]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let files: Vec<String> = report["files"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["table"] != "runs")
            .map(|f| f["path"].as_str().unwrap().to_string())
            .collect();
        // What the timeline shows, per host.
        let timeline = heisen(&["timeline", bundle.to_str().unwrap(), "--jsonl"]);
        let mut expected: std::collections::BTreeMap<String, (u64, u64)> = Default::default();
        for line in String::from_utf8_lossy(&timeline.stdout).lines() {
            let e: serde_json::Value = serde_json::from_str(line).unwrap();
            let entry = expected.entry(e["host"].as_str().unwrap().to_string()).or_default();
            entry.0 += 1;
            entry.1 += (e["kind"] == "syscall" && e["name"] == "write") as u64;
        }
        let runs = heisen_recordings::Bundle::read(bundle).unwrap().runs;
        let script = format!(
            "import duckdb, json\n\
             con = duckdb.connect()\n\
             files = {files:?}\n\
             rows = con.execute(f\"select host, count(*), count(*) filter (where kind = 'syscall' and name = 'write') \
             from read_parquet({{files}}) group by host order by host\").fetchall()\n\
             runs = con.execute(\"select count(*), coalesce(sum(failed::int), 0) from read_parquet('{}')\").fetchone()\n\
             print(json.dumps({{'hosts': rows, 'runs': list(runs)}}))\n",
            out_dir.join("runs.parquet").display()
        );
        let q = Command::new(&python).args(["-c", &script]).output().unwrap();
        assert!(q.status.success(), "duckdb: {}", String::from_utf8_lossy(&q.stderr));
        let found: serde_json::Value = serde_json::from_slice(&q.stdout).unwrap();
        let hosts: std::collections::BTreeMap<String, (u64, u64)> = found["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (r[0].as_str().unwrap().to_string(), (r[1].as_u64().unwrap(), r[2].as_u64().unwrap())))
            .collect();
        assert_eq!(hosts, expected, "{}", bundle.display());
        let failed = runs.iter().filter(|r| r.failed).count() as u64;
        assert_eq!(found["runs"], serde_json::json!([runs.len(), failed]));
        assert!(expected.values().map(|c| c.0).sum::<u64>() > 1000);
    }
}

/// `heisen explain` says with its exit code what it found: 1 when no candidate separates the
/// failing runs from the passing ones (a script must not take "nothing" for a cause), 2 when the
/// capture cannot be explained, refused from its head before any event is read.
#[test]
fn explain_exits_1_when_it_finds_nothing_and_2_when_it_cannot_explain() {
    let dir = tempfile::tempdir().unwrap();
    let synthetic = dir.path().join("alike.heisen");
    // Failing and passing runs whose events are alike: nothing separates them.
    let plan = heisen_recordings::synthetic::Plan { events: 8_000, hosts: 2, runs: 4, span_ns: 100_000_000 };
    heisen_recordings::synthetic::write(&synthetic, &plan).unwrap();
    let out = heisen(&["explain", synthetic.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("no candidate separates"));
    let stored = concat!(env!("CARGO_MANIFEST_DIR"), "/../recordings/bundles/format-1.heisen");
    assert_eq!(heisen(&["explain", stored]).status.code(), Some(0));
    let mut runless = heisen_recordings::Bundle::read(&synthetic).unwrap();
    runless.runs.clear();
    let path = dir.path().join("runless.heisen");
    runless.write(&path).unwrap();
    assert_bad_input(&heisen(&["explain", path.to_str().unwrap()]), &["runless.heisen", "no runs of a scenario"]);
}
