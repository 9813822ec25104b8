//! `heisen diff`: environment differences between two hosts of a capture, or one host in two
//! captures, most suspicious first.
//!
//! Paths under each host's work directory are compared as `{workdir}/...`, pids and addresses are
//! never compared (they differ by construction), and what both sides share is not shown.

use std::collections::BTreeMap;

use heisen_recordings::{Bundle, Environment, MountEntry, SnapshotAt};
use serde::Serialize;

use crate::AnalysisError;

/// One difference, with how suspicious it is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Difference {
    /// `mount`, `daemon`, `crontab`, `interface`, `kernel`, `sysctl`.
    pub category: &'static str,
    /// What differs: a mount point, a process name, a crontab line, ...
    pub subject: String,
    /// Its state on side A and side B, in words.
    pub a: String,
    pub b: String,
    /// Higher is more suspicious: state that programs act on (mounts, daemons, crontabs) ranks
    /// above plumbing (interfaces) and identity (kernel, sysctls). A different file system under
    /// a path ranks first: it changes what every program there reads and writes.
    pub score: u32,
}

impl Difference {
    pub fn summary(&self, a_name: &str, b_name: &str) -> String {
        format!("{} {}: {} on {a_name}; {} on {b_name}", self.category, self.subject, self.a, self.b)
    }
}

/// Which snapshot of a host to compare: the first failing run's when there is one (the state the
/// failure happened in), else the start of the capture.
pub fn pick<'a>(bundle: &'a Bundle, host: &str, at: Option<&str>) -> Result<&'a Environment, AnalysisError> {
    let recording = bundle.host(host).ok_or_else(|| {
        let names: Vec<_> = bundle.hosts.iter().map(|h| h.name.as_str()).collect();
        AnalysisError::NoHost { host: host.into(), capture: bundle.capture_id.clone(), hosts: names.join(", ") }
    })?;
    if recording.environments.is_empty() {
        return Err(AnalysisError::NoSnapshots { host: host.into(), capture: bundle.capture_id.clone() });
    }
    let wanted = match at {
        Some(at) => SnapshotAt::from(at),
        None => match bundle.runs.iter().find(|r| r.failed && r.valid) {
            Some(run) => SnapshotAt::Run(run.run),
            None => SnapshotAt::Start,
        },
    };
    // As `--at` spells them: `run:3`.
    let spelled = |at: &SnapshotAt| at.to_string().replace(' ', ":");
    recording.environments.iter().find(|e| e.at == wanted).ok_or_else(|| {
        let have: Vec<_> = recording.environments.iter().map(|e| spelled(&e.at)).collect();
        AnalysisError::NoSnapshotAt { host: host.into(), at: spelled(&wanted), have: have.join(", ") }
    })
}

/// The differences between `a` and `b`, most suspicious first.
pub fn compare(a: &Environment, b: &Environment) -> Vec<Difference> {
    let mut out = Vec::new();
    mounts(a, b, &mut out);
    daemons(a, b, &mut out);
    crontabs(a, b, &mut out);
    interfaces(a, b, &mut out);
    if a.kernel != b.kernel {
        out.push(Difference {
            category: "kernel",
            subject: "release".into(),
            a: a.kernel.clone(),
            b: b.kernel.clone(),
            score: 30,
        });
    }
    let (sa, sb): (BTreeMap<_, _>, BTreeMap<_, _>) =
        (a.sysctls.iter().cloned().collect(), b.sysctls.iter().cloned().collect());
    for name in sa.keys().chain(sb.keys().filter(|k| !sa.contains_key(*k))) {
        let (va, vb) = (sa.get(name), sb.get(name));
        if va != vb {
            let show = |v: Option<&String>| v.cloned().unwrap_or_else(|| "unset".into());
            out.push(Difference { category: "sysctl", subject: name.clone(), a: show(va), b: show(vb), score: 20 });
        }
    }
    out.sort_by(|x, y| y.score.cmp(&x.score).then_with(|| x.subject.cmp(&y.subject)));
    out
}

fn mounts(a: &Environment, b: &Environment, out: &mut Vec<Difference>) {
    // The last mount on a target is the one programs see.
    let table = |env: &Environment| -> BTreeMap<String, MountEntry> {
        env.mounts.iter().map(|m| (env.portable(&m.target), m.clone())).collect()
    };
    let (ta, tb) = (table(a), table(b));
    let describe = |m: Option<&MountEntry>, env: &Environment, target: &str| match m {
        Some(m) => format!("{} (source {}, {})", m.fstype, m.source, m.options),
        None => {
            let under = covering(env, target).map(|m| format!(" (a plain directory on {} {})", m.fstype, m.target));
            format!("not a mount point{}", under.unwrap_or_default())
        }
    };
    for target in ta.keys().chain(tb.keys().filter(|k| !ta.contains_key(*k))) {
        let (ma, mb) = (ta.get(target), tb.get(target));
        let differs = match (ma, mb) {
            (Some(x), Some(y)) => x.fstype != y.fstype || x.options != y.options,
            _ => true,
        };
        if !differs {
            continue;
        }
        // A file system type missing or different decides what programs find there; options
        // alone (ro/rw aside) rarely do.
        let score = match (ma, mb) {
            (Some(x), Some(y)) if x.fstype == y.fstype => 50,
            _ => 95,
        };
        out.push(Difference {
            category: "mount",
            subject: target.clone(),
            a: describe(ma, a, target),
            b: describe(mb, b, target),
            score,
        });
    }
}

/// The mount a path lives on when it is not a mount point itself.
fn covering<'a>(env: &'a Environment, portable_target: &str) -> Option<&'a MountEntry> {
    let path = portable_target.replace("{workdir}", &env.workdir);
    env.mounts
        .iter()
        .filter(|m| std::path::Path::new(&path).starts_with(&m.target) && m.target != path)
        .max_by_key(|m| m.target.len())
}

fn daemons(a: &Environment, b: &Environment, out: &mut Vec<Difference>) {
    let count = |env: &Environment| -> BTreeMap<String, (usize, String)> {
        let mut m: BTreeMap<String, (usize, String)> = BTreeMap::new();
        for d in &env.daemons {
            let entry = m.entry(d.comm.clone()).or_insert((0, env.portable(&d.cmdline)));
            entry.0 += 1;
        }
        m
    };
    let (ca, cb) = (count(a), count(b));
    for comm in ca.keys().chain(cb.keys().filter(|k| !ca.contains_key(*k))) {
        let (na, nb) = (ca.get(comm), cb.get(comm));
        let show = |n: Option<&(usize, String)>| match n {
            Some((1, cmd)) => format!("running ({cmd})"),
            Some((k, cmd)) => format!("{k} running ({cmd})"),
            None => "not running".to_string(),
        };
        match (na, nb) {
            (Some(x), Some(y)) if x.0 == y.0 => {}
            (Some(_), Some(_)) => {
                out.push(Difference { category: "daemon", subject: comm.clone(), a: show(na), b: show(nb), score: 40 })
            }
            _ => {
                out.push(Difference { category: "daemon", subject: comm.clone(), a: show(na), b: show(nb), score: 90 })
            }
        }
    }
}

fn crontabs(a: &Environment, b: &Environment, out: &mut Vec<Difference>) {
    let lines = |env: &Environment| -> BTreeMap<String, String> {
        env.crontabs
            .iter()
            .flat_map(|c| c.lines.iter().map(move |l| (env.portable(l), env.portable(&c.path))))
            .collect()
    };
    let (la, lb) = (lines(a), lines(b));
    for line in la.keys().chain(lb.keys().filter(|k| !la.contains_key(*k))) {
        let show = |p: Option<&String>| p.map(|p| format!("in {p}")).unwrap_or_else(|| "absent".into());
        let (pa, pb) = (la.get(line), lb.get(line));
        if pa.is_none() || pb.is_none() {
            out.push(Difference { category: "crontab", subject: line.clone(), a: show(pa), b: show(pb), score: 85 });
        }
    }
}

fn interfaces(a: &Environment, b: &Environment, out: &mut Vec<Difference>) {
    let states = |env: &Environment| -> BTreeMap<String, String> {
        env.interfaces.iter().map(|i| (i.name.clone(), i.state.clone())).collect()
    };
    let (sa, sb) = (states(a), states(b));
    for name in sa.keys().chain(sb.keys().filter(|k| !sa.contains_key(*k))) {
        let (va, vb) = (sa.get(name), sb.get(name));
        if va != vb {
            let show = |v: Option<&String>| v.map(|s| format!("state {s}")).unwrap_or_else(|| "absent".into());
            out.push(Difference { category: "interface", subject: name.clone(), a: show(va), b: show(vb), score: 60 });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use heisen_recordings::Daemon;

    fn mount(target: &str, fstype: &str) -> MountEntry {
        MountEntry { target: target.into(), source: fstype.into(), fstype: fstype.into(), options: "rw".into() }
    }

    fn env(workdir: &str, mounts: Vec<MountEntry>, daemons: &[&str]) -> Environment {
        Environment {
            workdir: workdir.into(),
            mounts,
            daemons: daemons
                .iter()
                .enumerate()
                .map(|(i, c)| Daemon { pid: i as i32 + 10, comm: c.to_string(), cmdline: format!("/bin/{c}") })
                .collect(),
            ..Environment::default()
        }
    }

    #[test]
    fn a_missing_tmpfs_under_the_workdir_ranks_first_and_pids_do_not_count() {
        let good = env(
            "/w/good",
            vec![mount("/", "ext4"), mount("/w/good/chroot/dev/shm", "tmpfs"), mount("/proc", "proc")],
            &["lockd"],
        );
        let mut bad = env("/w/bad", vec![mount("/", "ext4"), mount("/proc", "proc")], &["lockd"]);
        bad.sysctls.push(("fs.file-max".into(), "1".into()));
        let d = compare(&good, &bad);
        assert_eq!(d[0].subject, "{workdir}/chroot/dev/shm");
        assert!(d[0].a.starts_with("tmpfs"), "{:?}", d[0]);
        assert_eq!(d[0].b, "not a mount point (a plain directory on ext4 /)");
        assert_eq!(d.len(), 2, "only the mount and the sysctl differ: {d:?}");
        assert_eq!(d[1].category, "sysctl");
    }

    #[test]
    fn a_daemon_running_on_one_host_only_is_named() {
        let d = compare(&env("/a", vec![], &["statd", "lockd"]), &env("/b", vec![], &["lockd"]));
        assert_eq!(d.len(), 1);
        assert_eq!((d[0].category, d[0].subject.as_str(), d[0].b.as_str()), ("daemon", "statd", "not running"));
        assert!(compare(&env("/a", vec![], &["x"]), &env("/b", vec![], &["x"])).is_empty());
    }
}
