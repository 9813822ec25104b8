//! `heisen diff`: environment differences between two hosts or two captures.

use anyhow::{anyhow, Result};
use heisen_analysis::diff;
use heisen_recordings::Bundle;

use crate::DiffArgs;

pub fn run(a: DiffArgs) -> Result<i32> {
    let bundle_a = Bundle::read(&a.a)?;
    let bundle_b = match &a.b {
        Some(path) => Some(Bundle::read(path)?),
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
