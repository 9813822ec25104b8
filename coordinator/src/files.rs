//! The files a command reads and writes: scenarios, bundles, and the names of new captures.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use heisen_recordings::{Bundle, Scenario};

pub fn load_scenario(path: &Path) -> Result<Scenario> {
    Ok(Scenario::load(path)?)
}

pub fn capture_id(scenario: &str, phase: &str) -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    format!("{scenario}-{phase}-{secs}-{}", std::process::id())
}

/// Where the bundle of capture `id` goes: `out`, or `heisen-out/ID.heisen` (the directory made).
pub fn bundle_path_for(id: &str, out: Option<PathBuf>) -> Result<PathBuf> {
    match out {
        Some(p) => Ok(p),
        None => {
            std::fs::create_dir_all("heisen-out").context("cannot create heisen-out/")?;
            Ok(heisen_recordings::bundle_path(Path::new("heisen-out"), id))
        }
    }
}

pub fn write_bundle(bundle: &Bundle, out: Option<PathBuf>) -> Result<PathBuf> {
    let path = bundle_path_for(&bundle.capture_id, out)?;
    bundle.write(&path)?;
    Ok(path)
}

/// An error naming every host whose recording in `bundle` (written to `path`) is incomplete, and
/// why; None when every host is whole. Commands print what they have, then exit 2 with it.
pub fn incomplete_hosts(bundle: &Bundle, path: &Path) -> Option<anyhow::Error> {
    let notes: Vec<String> =
        bundle.hosts.iter().filter_map(|h| h.incomplete.as_ref().map(|why| format!("{}: {why}", h.name))).collect();
    if notes.is_empty() {
        return None;
    }
    Some(anyhow!(
        "the capture is incomplete; {} was written with what the hosts had ({}); `lost` events in it cover what is missing",
        path.display(),
        notes.join("; ")
    ))
}

pub fn scenario_or_bundle(path: &Path) -> Result<(Scenario, Option<Bundle>)> {
    let mut head = [0u8; 8];
    let is_bundle = heisen_recordings::open_regular(path)
        .and_then(|(mut f, _)| std::io::Read::read_exact(&mut f, &mut head))
        .is_ok_and(|_| &head == heisen_recordings::BUNDLE_MAGIC);
    if !is_bundle {
        return Ok((load_scenario(path)?, None));
    }
    let bundle = Bundle::read(path)?;
    let Some(src) = &bundle.scenario else {
        return Err(anyhow!(
            "{} was captured without a scenario (an ad-hoc capture): there is nothing to re-run; write a scenario \
             for the processes involved and `heisen run` it, or inspect this capture with `heisen timeline`/`heisen diff`",
            path.display()
        ));
    };
    let scenario = Scenario::from_source(&src.path, &src.text).context("the bundle's scenario")?;
    Ok((scenario, Some(bundle)))
}
