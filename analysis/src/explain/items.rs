//! Item candidates: when a failure names the things it lost (job files, locks), the process that
//! claimed those items first against the process that claimed the others.

use std::collections::{BTreeMap, BTreeSet};

use super::hypotheses::order_hypothesis;
use super::report::{evidence_of, share, Candidate, Count};
use super::Context;
use crate::align::{Class, Occ};
use crate::error::Unverifiable;

/// Items: the failing runs' lock targets, those whose name the failing step's output gives (the
/// failure names them: "lost: job-3 job-5") against the others. A candidate is the role that
/// claimed an item first (its first successful lock).
pub(crate) fn item_candidates(ctx: &Context<'_>) -> (Vec<Candidate>, usize) {
    let Some(s) = ctx.scenario else { return (vec![], 0) };
    let mut named: BTreeSet<String> = BTreeSet::new();
    for run in ctx.failing {
        if let Some(o) = ctx.bundle.runs.iter().find(|o| o.run == *run) {
            for st in o.steps.iter().filter(|st| st.name == s.failure.step) {
                for line in &st.output_tail {
                    named.extend(line.split(|c: char| c.is_whitespace() || c == ',' || c == ':').map(str::to_string));
                }
            }
        }
    }
    named.retain(|t| t.len() >= 3);
    // item -> (failing?, first claimer role, occurrence, run)
    let mut items: BTreeMap<(u32, String), (bool, usize, Occ)> = BTreeMap::new();
    for run in ctx.failing {
        let Some(rs) = ctx.aligned.runs.get(run) else { continue };
        let mut claims: Vec<&(usize, Occ)> = rs.locks.iter().filter(|(_, o)| o.ret == 0 && o.item.is_some()).collect();
        claims.sort_by_key(|(_, o)| o.at.earliest_ns);
        for (sig, o) in claims {
            let path = o.item.clone().expect("filtered");
            let base = path.rsplit('/').next().unwrap_or(&path).to_string();
            let failing = named.contains(&base);
            items.entry((*run, path)).or_insert((failing, *sig, o.clone()));
        }
    }
    // Only items in directories where the failure named some.
    let dirs: BTreeSet<String> = items
        .iter()
        .filter(|(_, (f, _, _))| *f)
        .map(|((_, p), _)| p.rsplit_once('/').map(|(d, _)| d.to_string()).unwrap_or_default())
        .collect();
    items.retain(|(_, p), _| dirs.contains(&p.rsplit_once('/').map(|(d, _)| d.to_string()).unwrap_or_default()));
    let (nf, np) = (items.values().filter(|v| v.0).count(), items.values().filter(|v| !v.0).count());
    if nf == 0 || np == 0 {
        return (vec![], 0);
    }
    let roles: BTreeSet<usize> = items.values().map(|v| v.1).collect();
    let mut out = Vec::new();
    for sig in &roles {
        let role = &ctx.aligned.sigs[*sig].role;
        let claimed =
            |failing: bool| items.values().filter(|v| v.0 == failing && ctx.aligned.sigs[v.1].role == *role).count();
        let f = Count { holds: claimed(true), of: nf };
        let q = Count { holds: claimed(false), of: np };
        let sep = share(f) - share(q);
        if sep < 0.5 {
            continue;
        }
        let host = &ctx.bundle.hosts[role.host].name;
        let what = &ctx.aligned.sigs[*sig].what;
        let others: Vec<&usize> = roles.iter().filter(|o| ctx.aligned.sigs[**o].role != *role).collect();
        let other_label = others
            .first()
            .map(|o| {
                let r = &ctx.aligned.sigs[**o].role;
                format!("{} [{}]", r.label(), ctx.bundle.hosts[r.host].name)
            })
            .unwrap_or_else(|| "any other process".into());
        let evidence = items
            .iter()
            .filter(|(_, v)| v.0 && ctx.aligned.sigs[v.1].role == *role)
            .take(3)
            .map(|((run, _), (_, _, o))| {
                evidence_of(ctx.bundle, *run, o, format!("{}: {} (first claim)", role.label(), o.desc))
            })
            .collect();
        let h = match others.first() {
            Some(o) => order_hypothesis(ctx, **o, *sig),
            None => Err(Unverifiable::NoOtherClaimer),
        };
        let summary = format!(
            "{} [{host}] claims an item ({what}) before {other_label}: the items the failure names are the ones it took",
            role.label()
        );
        out.push(Candidate::new("ordering", "items", summary, (f, q, sep), evidence, Class::Lock as u32 * 10 + 5, h));
    }
    (out, nf + np)
}
