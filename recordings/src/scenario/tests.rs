use super::*;

const GOOD: &str = r#"name = "t"
[hosts.a]
[hosts.b]
[services.srv]
host = "a"
command = ["srv"]
ready = "listening"
[steps.w]
host = "b"
command = ["w"]
[steps.k]
host = "a"
command = ["k"]
[failure]
step = "w"
exit = "nonzero"
[hypothesis]
cause = { step = "k", syscall = "kill", signal = "SIGHUP" }
victim = { step = "w", syscall = "write", nth = 3, fd_at_least = 3 }
victim_count = 8
effect_started = { process = "srv", output = "reloading" }
effect_done = { process = "srv", output = "reloaded" }
"#;

fn check_err(text: &str, expected: &str) {
    let got = Scenario::parse("s.toml", text).unwrap_err().to_string();
    assert_eq!(got, expected);
}

#[test]
fn parses_a_good_scenario() {
    let s = Scenario::parse("s.toml", GOOD).unwrap();
    assert_eq!(s.hosts, vec!["a", "b"]);
    assert_eq!(s.repeat, 20);
    let Some(Hypothesis::During(h)) = s.hypothesis else { panic!("a during hypothesis") };
    assert_eq!(h.cause.signal, Some(1));
    assert_eq!(h.victim.nth, 3);
    assert_eq!(h.effect_started.unwrap().process, "srv");
    assert!(s.steps.iter().all(|st| st.timeout_s == DEFAULT_STEP_TIMEOUT_S));
}

#[test]
fn step_timeouts() {
    let s = Scenario::parse("s.toml", &GOOD.replace("command = [\"w\"]", "command = [\"w\"]\ntimeout = 90")).unwrap();
    let w = s.steps.iter().find(|st| st.name == "w").unwrap();
    assert_eq!(w.timeout_s, 90);
    check_err(
        &GOOD.replace("command = [\"w\"]", "command = [\"w\"]\ntimeout = 0"),
        "s.toml:11: steps.w.timeout: timeout must be at least 1 (seconds)",
    );
    check_err(
        &GOOD.replace("ready = \"listening\"", "ready = \"listening\"\ntimeout = 5"),
        "s.toml:8: services.srv.timeout: `timeout` is for steps; a service runs until the run ends",
    );
}

const STATE: &str = r#"name = "t"
[hosts.a]
[variants.statd]
description = "the status daemon runs"
[services.lockd]
host = "a"
command = ["lockd"]
after = ["statd"]
[services.statd]
host = "a"
command = ["statd"]
variant = "statd"
[steps.w]
host = "a"
command = ["w"]
[failure]
step = "w"
exit = "nonzero"
[hypothesis]
variant = "statd"
fails_when = "off"
"#;

#[test]
fn state_hypotheses_variants_and_service_order() {
    let s = Scenario::parse("s.toml", STATE).unwrap();
    let order: Vec<_> = s.services.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(order, vec!["statd", "lockd"], "lockd waits for statd");
    assert_eq!(s.services[0].variant.as_deref(), Some("statd"));
    assert!(s.default_variants().is_empty());
    let Some(Hypothesis::State(h)) = s.hypothesis else { panic!("a state hypothesis") };
    assert_eq!((h.variant.as_str(), h.fails_when_on, h.runs), ("statd", false, 5));
    check_err(
        &STATE.replace("variant = \"statd\"\n[steps", "variant = \"nfs\"\n[steps"),
        "s.toml:12: services.statd.variant: unknown variant `nfs`; declare it as [variants.nfs] (declared: statd)",
    );
    check_err(
        &STATE.replace("after = [\"statd\"]", "after = [\"lockd\"]"),
        "s.toml:8: services.lockd.after: services wait for each other in a cycle",
    );
    check_err(
        &STATE.replace("fails_when = \"off\"", "fails_when = \"never\""),
        "s.toml:21: hypothesis.fails_when: say when the failure happens: \"on\" or \"off\" (the variant present or absent)",
    );
}

#[test]
fn errors_name_file_line_and_key() {
    check_err(
        &GOOD.replace("host = \"b\"", "host = \"c\""),
        "s.toml:9: steps.w.host: unknown host `c`; the scenario's hosts are: a, b",
    );
    check_err(
        &GOOD.replace("step = \"w\"\nexit", "step = \"x\"\nexit"),
        "s.toml:15: failure.step: unknown step `x`; the scenario's steps are: k, w",
    );
    check_err(
        &GOOD.replace("\"SIGHUP\"", "\"SIGNOPE\""),
        "s.toml:18: hypothesis.cause.signal: unknown signal `SIGNOPE`",
    );
    check_err(
        &GOOD.replace("ready =", "redy ="),
        "s.toml:7: redy: unknown field `redy`, expected one of `host`, `command`, `ready`, `after`, `variant`, `ptrace`, `timeout`",
    );
    check_err(&GOOD.replace("[steps.k]", "[steps.k"), "s.toml:11: syntax: invalid table header\nexpected `.`, `]`");
    check_err(
        &GOOD.replace("name = \"t\"\n", "name = \"t\"\nsyscalls = [\"file\", \"wirte\"]\n"),
        "s.toml:2: syscalls: `wirte` is neither a syscall heisen records nor a class (file, desc, read, write, network, \
         signal, mount, lock, process, default)",
    );
}

#[test]
fn failure_predicates_take_codes_signals_patterns_and_a_combination() {
    let with = |failure: &str| GOOD.replace("exit = \"nonzero\"\n", failure);
    let parsed = |failure: &str| Scenario::parse("s.toml", &with(failure)).unwrap().failure;
    let f = parsed("exit = 3\n");
    assert_eq!(f.exit, Some(ExitMatch::Codes(vec![3])));
    let f = parsed("exit = [1, 3]\nsignal = [\"SIGSEGV\", \"SIGABRT\"]\nmatch = \"any\"\n");
    assert_eq!(f.exit, Some(ExitMatch::Codes(vec![1, 3])));
    assert_eq!(f.signals, vec![11, 6]);
    assert!(!f.all);
    let f = parsed("output_regex = \"^lost: \"\noutput = \"lost\"\nmatch = \"all\"\n");
    assert!(f.all && f.exit.is_none());
    assert_eq!(f.to_string(), "`w` prints \"lost\" and prints a line matching /^lost: /");
    let lines = vec!["lost: job-1".to_string()];
    assert!(f.holds(Ending { code: 1, signal: 0, lines: &lines }));
    assert!(!f.holds(Ending { code: 1, signal: 0, lines: &["lost".to_string()] }));

    check_err(
        &with("exit = \"nonzero!\"\n"),
        "s.toml:16: failure.exit: `nonzero!` is not understood; use \"nonzero\", a code (3) or codes ([1, 3])",
    );
    check_err(&with("exit = 300\n"), "s.toml:16: failure.exit: 300 is no exit code; exit codes are 0 to 255");
    check_err(&with("exit = []\n"), "s.toml:16: failure.exit: give at least one exit code");
    check_err(&with("signal = \"SIGSEGVV\"\n"), "s.toml:16: failure.signal: unknown signal `SIGSEGVV`");
    let bad_pattern = Scenario::parse("s.toml", &with("output_regex = \"(lost\"\n")).unwrap_err().to_string();
    assert!(
        bad_pattern.starts_with("s.toml:16: failure.output_regex: not a regular expression: ")
            && bad_pattern.contains("unclosed group"),
        "{bad_pattern}"
    );
    check_err(
        &with("exit = 1\nmatch = \"both\"\n"),
        "s.toml:17: failure.match: `both` is not understood; use \"any\" (one part is enough) or \"all\"",
    );
    check_err(
        &with(""),
        "s.toml:15: failure: say when the run failed: `exit = \"nonzero\"` (or a code, or codes), `signal = \"SIGSEGV\"`, \
         `output = \"TEXT\"` or `output_regex = \"PATTERN\"`",
    );
}

#[test]
fn a_scenario_names_what_its_hosts_record() {
    let s =
        Scenario::parse("s.toml", &GOOD.replace("name = \"t\"\n", "name = \"t\"\nsyscalls = [\"file\", \"kill\"]\n"))
            .unwrap();
    assert_eq!(s.syscalls, vec!["file", "kill"]);
    assert!(Scenario::parse("s.toml", GOOD).unwrap().syscalls.is_empty(), "none named: the default set");
}

#[test]
fn hypotheses_round_trip_through_inline_toml() {
    for name in ["mountd-sighup", "lost-wakeup", "butterfly", "cron-twin", "statd-flock"] {
        let path = format!("{}/scenarios/{name}.toml", env!("CARGO_MANIFEST_DIR"));
        let s = Scenario::load(Path::new(&path)).unwrap();
        let h = s.hypothesis.clone().unwrap();
        let inline = h.to_inline_toml();
        let again = s.with_hypothesis(&path, &inline).unwrap_or_else(|e| panic!("{name}: {e}\n{inline}"));
        let h2 = again.hypothesis.unwrap();
        assert!(h.same_cause(&h2), "{name}: {inline}");
        assert_eq!(h2.to_inline_toml(), inline, "{name}");
        assert_eq!(again.text, s.text);
    }
    // Story 2's stream begins at its connect; a victim_begins of another step is an error.
    let path = format!("{}/scenarios/lost-wakeup.toml", env!("CARGO_MANIFEST_DIR"));
    let s = Scenario::load(Path::new(&path)).unwrap();
    let Some(Hypothesis::During(d)) = &s.hypothesis else { panic!("during") };
    let begins = d.victim_begins.clone().expect("victim_begins");
    assert_eq!((begins.step.as_str(), begins.syscall.as_str(), begins.nth), ("upload", "connect", 1));
    let inline = s
        .hypothesis
        .as_ref()
        .unwrap()
        .to_inline_toml()
        .replace("victim_begins = { step = \"upload\"", "victim_begins = { step = \"healthcheck\"");
    let e = s.with_hypothesis(&path, &inline).unwrap_err();
    assert_eq!(e.key, "--hypothesis hypothesis.victim_begins.step", "{e}");

    let s = Scenario::parse("s.toml", GOOD).unwrap();
    let e = s.with_hypothesis("s.toml", "{ variant = \"nope\", fails_when = \"off\" }").unwrap_err();
    assert_eq!(e.key, "--hypothesis hypothesis.variant", "{e}");
    assert!(s.with_hypothesis("s.toml", "not toml").unwrap_err().to_string().contains("inline table"));
}

/// A three-point order: the cause between two calls of one step. It round-trips through its
/// inline form; a window across two steps, or a cause inside its own window, is an error that
/// says which key and why.
#[test]
fn three_point_orders_name_a_window_of_one_step() {
    let s = Scenario::parse("s.toml", GOOD).unwrap();
    let inline = r#"{ cause = { step = "w", syscall = "openat", path = "{shared}/pid" }, opens = { step = "k", syscall = "kill", signal = "SIGTERM" }, closes = { step = "k", syscall = "renameat", path = "{shared}/pid.tmp" }, runs = 4 }"#;
    let h = s.with_hypothesis("s.toml", inline).unwrap().hypothesis.unwrap();
    let Hypothesis::Between(b) = &h else { panic!("between: {h:?}") };
    assert_eq!(
        (b.cause.step.as_str(), b.opens.signal, b.closes.path.as_deref()),
        ("w", Some(15), Some("{shared}/pid.tmp"))
    );
    assert_eq!(h.runs(), 4);
    assert_eq!(h.to_inline_toml(), inline);
    assert!(h.same_cause(
        &s.with_hypothesis("s.toml", &inline.replace("runs = 4", "runs = 2")).unwrap().hypothesis.unwrap()
    ));

    let e =
        s.with_hypothesis("s.toml", &inline.replace("closes = { step = \"k\"", "closes = { step = \"w\"")).unwrap_err();
    assert_eq!(e.key, "--hypothesis hypothesis.closes.step", "{e}");
    assert!(e.message.contains("two calls of one process"), "{e}");
    let e =
        s.with_hypothesis("s.toml", &inline.replace("cause = { step = \"w\"", "cause = { step = \"k\"")).unwrap_err();
    assert_eq!(e.key, "--hypothesis hypothesis.cause.step", "{e}");
    let e = s.with_hypothesis("s.toml", &inline.replace(", closes = {", ", then = {")).unwrap_err();
    assert_eq!(e.key, "--hypothesis hypothesis.closes", "{e}");
}

/// An order says how far the passing ordering's leading side goes first: its step's end by
/// default, or only its call (`settle = "call"`, a service that goes on serving). The key
/// round-trips; another value is an error naming the key.
#[test]
fn an_order_can_let_its_passing_side_go_on_past_its_call() {
    let s = Scenario::parse("s.toml", GOOD).unwrap();
    let inline = r#"{ first = { step = "k", syscall = "bind" }, then = { step = "w", syscall = "connect", fd_at_least = 3 }, fails_when = "after", settle = "call", runs = 5 }"#;
    let h = s.with_hypothesis("s.toml", inline).unwrap().hypothesis.unwrap();
    let Hypothesis::Order(o) = &h else { panic!("order: {h:?}") };
    assert!(o.settle_call);
    assert_eq!(h.to_inline_toml(), inline);
    let by_default = s.with_hypothesis("s.toml", &inline.replace(r#"settle = "call", "#, "")).unwrap();
    let Some(Hypothesis::Order(o)) = by_default.hypothesis else { panic!("order") };
    assert!(!o.settle_call);
    let e = s.with_hypothesis("s.toml", &inline.replace(r#""call""#, r#""exit""#)).unwrap_err();
    assert_eq!(e.key, "--hypothesis hypothesis.settle", "{e}");
}
