//! `heisen explain`: rank candidate causes in a bundle.

use anyhow::{Context, Result};
use heisen_analysis::explain;
use heisen_recordings::BundleFile;

use crate::ExplainArgs;

pub fn run(a: ExplainArgs) -> Result<i32> {
    // What explain needs of a capture's runs is in its head: a capture it cannot use is refused
    // before any of its events are read.
    let file = BundleFile::open(&a.bundle)?;
    explain::choose_failing(file.head()).with_context(|| a.bundle.display().to_string())?;
    let bundle = file.load()?;
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
    // A script can tell "found candidates" from "found nothing to verify".
    Ok(if x.candidates.is_empty() { 1 } else { 0 })
}
