//! Bad input never panics: generated bundles and scenarios through the parsers and everything
//! downstream of them (timeline, explain, environment diff, schedules). 10,000 cases in all,
//! each a mutation of a real input, so most get past the first check and reach the code behind
//! it: bundles whose JSON was changed and re-framed with a correct checksum, raw byte damage to a
//! bundle file, and scenario files with characters, lines and values changed.
//!
//! A case passes when the input is refused with an error or accepted and analysed without a
//! panic; proptest shrinks a panicking case to a small one and prints it.

use std::path::Path;

use heisen_analysis::{diff, explain, schedule, timeline};
use heisen_recordings::{Bundle, Scenario};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::Value;

const BUNDLE_JSON_CASES: u32 = 5_000;
const BUNDLE_BYTE_CASES: u32 = 1_000;
const SCENARIO_CASES: u32 = 4_000;

fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// The committed bundle, cut to its first events per host so a case costs milliseconds; its
/// runs, clocks, environments and scenario stay whole.
fn base_bundle() -> Value {
    let bytes = std::fs::read(root().join("recordings/bundles/mountd-sighup-small.heisen")).unwrap();
    let mut v: Value = serde_json::from_slice(&bytes[24..]).unwrap();
    for host in v["hosts"].as_array_mut().unwrap() {
        host["events"].as_array_mut().unwrap().truncate(80);
    }
    v
}

/// One change to a JSON document: node `at` (in depth-first order, modulo the node count)
/// becomes something else, goes, or is doubled.
#[derive(Clone, Debug)]
enum Change {
    /// Keeps the node's type: a number moves by the delta (or to an extreme), a text gets another
    /// value of its kind, a bool flips. Most of these still decode, so they reach the analysis.
    Tweak(usize, i64),
    Number(usize, i64),
    Float(usize, f64),
    Text(usize, String),
    Null(usize),
    Bool(usize, bool),
    Empty(usize),
    Remove(usize),
    Double(usize),
}

fn change() -> impl Strategy<Value = Change> {
    let at = any::<usize>();
    let number = prop_oneof![
        Just(0i64),
        Just(-1),
        Just(1),
        Just(i64::MAX),
        Just(i64::MIN),
        Just(u32::MAX as i64 + 1),
        any::<i64>(),
        -1000i64..1000
    ];
    prop_oneof![
        6 => (at, prop_oneof![-3i64..3, any::<i64>(), Just(i64::MAX), Just(i64::MIN), -1_000_000_000i64..1_000_000_000])
            .prop_map(|(a, d)| Change::Tweak(a, d)),
        1 => (at, number).prop_map(|(a, n)| Change::Number(a, n)),
        1 => (at, prop_oneof![Just(f64::MAX), Just(-0.5), Just(1e300), any::<f64>()])
            .prop_map(|(a, f)| Change::Float(a, f)),
        1 => (at, prop_oneof![Just(String::new()), "[a-z_]{1,12}", ".{0,24}", Just("{shared}/x-{run}".to_string())])
            .prop_map(|(a, s)| Change::Text(a, s)),
        1 => at.prop_map(Change::Null),
        1 => (at, any::<bool>()).prop_map(|(a, b)| Change::Bool(a, b)),
        1 => at.prop_map(Change::Empty),
        2 => at.prop_map(Change::Remove),
        2 => at.prop_map(Change::Double),
    ]
}

fn count(v: &Value) -> usize {
    1 + match v {
        Value::Array(a) => a.iter().map(count).sum(),
        Value::Object(o) => o.values().map(count).sum(),
        _ => 0,
    }
}

/// Applies `c` at node `*at` (counting down as the walk goes); true once applied.
fn apply(v: &mut Value, at: &mut usize, c: &Change) -> bool {
    if *at == 0 {
        let new = match c {
            Change::Tweak(_, d) => match &*v {
                Value::Number(n) if n.is_i64() || n.is_u64() => {
                    let n = n.as_i64().unwrap_or(i64::MAX);
                    Value::from(if d.unsigned_abs() < 3 { n.saturating_add(*d) } else { *d })
                }
                Value::Number(n) => serde_json::Number::from_f64(n.as_f64().unwrap_or(0.0) * (*d as f64))
                    .map(Value::Number)
                    .unwrap_or(Value::Null),
                Value::String(s) => Value::from(match d.rem_euclid(4) {
                    0 => String::new(),
                    1 => format!("{s}{s}"),
                    2 => s.chars().rev().collect(),
                    _ => s.chars().take(s.len() / 2).collect(),
                }),
                Value::Bool(b) => Value::from(!*b),
                other => other.clone(),
            },
            Change::Number(_, n) => Value::from(*n),
            Change::Float(_, f) => serde_json::Number::from_f64(*f).map(Value::Number).unwrap_or(Value::Null),
            Change::Text(_, s) => Value::from(s.clone()),
            Change::Null(_) => Value::Null,
            Change::Bool(_, b) => Value::from(*b),
            Change::Empty(_) => match &*v {
                Value::Array(_) => Value::Array(vec![]),
                _ => Value::Object(Default::default()),
            },
            // Removal and doubling are done by the parent; a root or leaf stays.
            Change::Remove(_) | Change::Double(_) => return true,
        };
        *v = new;
        return true;
    }
    *at -= 1;
    match v {
        Value::Array(items) => {
            for i in 0..items.len() {
                if *at == 0 {
                    match c {
                        Change::Remove(_) => {
                            items.remove(i);
                            return true;
                        }
                        Change::Double(_) => {
                            let copy = items[i].clone();
                            items.insert(i, copy);
                            return true;
                        }
                        _ => {}
                    }
                }
                let size = count(&items[i]);
                if *at < size {
                    return apply(&mut items[i], at, c);
                }
                *at -= size;
            }
        }
        Value::Object(map) => {
            let keys: Vec<String> = map.keys().cloned().collect();
            for k in keys {
                if *at == 0 {
                    if let Change::Remove(_) = c {
                        map.remove(&k);
                        return true;
                    }
                }
                let size = count(&map[&k]);
                if *at < size {
                    return apply(map.get_mut(&k).expect("key"), at, c);
                }
                *at -= size;
            }
        }
        _ => {}
    }
    false
}

fn at_of(c: &Change) -> usize {
    match c {
        Change::Tweak(a, _)
        | Change::Number(a, _)
        | Change::Float(a, _)
        | Change::Text(a, _)
        | Change::Null(a)
        | Change::Bool(a, _)
        | Change::Empty(a)
        | Change::Remove(a)
        | Change::Double(a) => *a,
    }
}

/// Everything a user can run on a bundle that reads: none may panic.
fn analyse(bundle: &Bundle) {
    let shown = timeline::build(bundle, &timeline::Filter::default());
    for p in shown.events.iter().take(200) {
        let _ = timeline::to_text(p.host, &p.placed, 0);
        let _ = timeline::to_json(p.host, &p.placed);
        let _ = timeline::to_strace(p.host, &p.placed.event);
    }
    let _ = explain::explain(bundle, &explain::Options::default());
    let hosts: Vec<&str> = bundle.hosts.iter().map(|h| h.name.as_str()).collect();
    if let (Some(a), Some(b)) = (hosts.first(), hosts.last()) {
        if let (Ok(ea), Ok(eb)) = (diff::pick(bundle, a, None), diff::pick(bundle, b, None)) {
            let _ = diff::compare(ea, eb);
        }
    }
    if let Some(src) = &bundle.scenario {
        if let Ok(scenario) = Scenario::from_source(&src.path, &src.text) {
            if let Some(h) = &scenario.hypothesis {
                let _ = schedule::for_scenario(&scenario, h);
                for run in bundle.runs.iter().take(3) {
                    if let Ok(rec) = heisen_analysis::recorded(bundle, &scenario, run.run, h) {
                        let _ = schedule::replay_ordering(&scenario, h, &rec);
                    }
                }
            }
        }
    }
}

#[test]
fn bundles_whose_json_was_changed_are_refused_or_analysed_never_panic() {
    let base = base_bundle();
    let nodes = count(&base);
    let mut runner =
        TestRunner::new(Config { cases: BUNDLE_JSON_CASES, failure_persistence: None, ..Config::default() });
    let read = std::cell::Cell::new(0u32);
    runner
        .run(&proptest::collection::vec(change(), 1..4), |changes| {
            let mut v = base.clone();
            for c in &changes {
                let mut at = at_of(c) % nodes;
                apply(&mut v, &mut at, c);
            }
            let bytes = Bundle::frame(&serde_json::to_vec(&v).unwrap());
            if let Ok(bundle) = Bundle::decode(&bytes) {
                read.set(read.get() + 1);
                analyse(&bundle);
            }
            Ok(())
        })
        .unwrap();
    let read = read.get();
    eprintln!("{BUNDLE_JSON_CASES} changed bundles: {read} read and analysed, the rest refused");
    assert!(read > BUNDLE_JSON_CASES / 10, "only {read} changed bundles were read: the cases test only the parser");
}

#[test]
fn damaged_bundle_files_are_refused_never_panic() {
    let v1 = std::fs::read(root().join("recordings/bundles/mountd-sighup-small.heisen")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v2.heisen");
    Bundle::decode(&v1).unwrap().write(&path).unwrap();
    let v2 = std::fs::read(&path).unwrap();
    for bytes in [v1, v2] {
        damage_bytes(&bytes);
    }
}

/// Damages a bundle file's bytes in every way proptest finds: flipped bits, cut short, a new tail.
fn damage_bytes(bytes: &[u8]) {
    let len = bytes.len();
    let damage = prop_oneof![
        (0..len, any::<u8>()).prop_map(|(i, b)| (i, Some(b), None)),
        (0..len).prop_map(|i| (i, None, None)),
        (0..64usize, proptest::collection::vec(any::<u8>(), 0..64)).prop_map(|(i, tail)| (i, None, Some(tail))),
    ];
    let mut runner =
        TestRunner::new(Config { cases: BUNDLE_BYTE_CASES, failure_persistence: None, ..Config::default() });
    runner
        .run(&damage, |(at, set, tail)| {
            let mut b = bytes.to_vec();
            match (set, tail) {
                (Some(byte), _) => b[at] ^= byte.max(1),
                (None, None) => b.truncate(at),
                (None, Some(tail)) => {
                    b.truncate(at);
                    b.extend(tail);
                }
            }
            if let Ok(bundle) = Bundle::decode(&b) {
                analyse(&bundle);
            }
            Ok(())
        })
        .unwrap();
}

/// Every scenario file of the project: the examples and the stories.
fn scenario_texts() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for dir in ["recordings/scenarios"] {
        for e in std::fs::read_dir(root().join(dir)).unwrap().flatten() {
            if e.path().extension().is_some_and(|x| x == "toml") {
                out.push((e.path().display().to_string(), std::fs::read_to_string(e.path()).unwrap()));
            }
        }
    }
    for story in std::fs::read_dir(root().join("stories")).unwrap().flatten() {
        for e in std::fs::read_dir(story.path()).unwrap().flatten() {
            if e.path().extension().is_some_and(|x| x == "toml") {
                out.push((e.path().display().to_string(), std::fs::read_to_string(e.path()).unwrap()));
            }
        }
    }
    out.sort();
    out
}

#[derive(Clone, Debug)]
enum Edit {
    /// Replace the characters at `at..at+n` with `with`.
    Splice { at: usize, n: usize, with: String },
    /// Drop line `at`.
    DropLine(usize),
    /// Repeat line `at`.
    RepeatLine(usize),
    /// Replace the value after `=` on line `at`.
    Value { at: usize, with: String },
}

fn edit() -> impl Strategy<Value = Edit> {
    let value = prop_oneof![
        Just("0".to_string()),
        Just("-1".to_string()),
        Just("99999999999999999999".to_string()),
        Just("\"\"".to_string()),
        Just("[]".to_string()),
        Just("{}".to_string()),
        Just("true".to_string()),
        Just("\"{shared}/{run}\"".to_string()),
        Just("[\"kill\", \"SIGHUP\"]".to_string()),
        "\"[a-z:{}/ ]{0,16}\"",
        ".{0,12}",
    ];
    prop_oneof![
        (any::<usize>(), 0..8usize, "[\\[\\]={}\",.a-z0-9 \n#]{0,6}").prop_map(|(at, n, with)| Edit::Splice {
            at,
            n,
            with
        }),
        any::<usize>().prop_map(Edit::DropLine),
        any::<usize>().prop_map(Edit::RepeatLine),
        (any::<usize>(), value).prop_map(|(at, with)| Edit::Value { at, with }),
    ]
}

fn edited(text: &str, e: &Edit) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    match e {
        Edit::Splice { at, n, with } => {
            let chars: Vec<char> = text.chars().collect();
            let at = at % (chars.len() + 1);
            let end = (at + n).min(chars.len());
            return chars[..at]
                .iter()
                .chain(with.chars().collect::<Vec<_>>().iter())
                .chain(chars[end..].iter())
                .collect();
        }
        Edit::DropLine(at) if !lines.is_empty() => {
            let i = at % lines.len();
            lines.remove(i);
        }
        Edit::RepeatLine(at) if !lines.is_empty() => {
            let i = at % lines.len();
            let line = lines[i].clone();
            lines.insert(i, line);
        }
        Edit::Value { at, with } => {
            let assignments: Vec<usize> = (0..lines.len()).filter(|i| lines[*i].contains('=')).collect();
            if let Some(i) = (!assignments.is_empty()).then(|| assignments[at % assignments.len()]) {
                let key = lines[i].split('=').next().unwrap_or_default().to_string();
                lines[i] = format!("{key}= {with}");
            }
        }
        _ => {}
    }
    lines.join("\n")
}

#[test]
fn changed_scenarios_are_refused_or_scheduled_never_panic() {
    let texts = scenario_texts();
    assert!(texts.len() >= 10, "scenario files found: {}", texts.len());
    let n = texts.len();
    let mut runner = TestRunner::new(Config { cases: SCENARIO_CASES, failure_persistence: None, ..Config::default() });
    let accepted = std::cell::Cell::new(0u32);
    runner
        .run(&(0..n, proptest::collection::vec(edit(), 1..4)), |(which, edits)| {
            let (path, text) = &texts[which];
            let text = edits.iter().fold(text.clone(), |t, e| edited(&t, e));
            if let Ok(scenario) = Scenario::from_source(path, &text) {
                accepted.set(accepted.get() + 1);
                if let Some(h) = &scenario.hypothesis {
                    for ordering in schedule::for_scenario(&scenario, h) {
                        let _ = ordering.description;
                    }
                }
            }
            Ok(())
        })
        .unwrap();
    let accepted = accepted.get();
    eprintln!("{SCENARIO_CASES} changed scenarios: {accepted} accepted and scheduled, the rest refused");
    assert!(accepted > SCENARIO_CASES / 20, "only {accepted} changed scenarios were accepted");
}
