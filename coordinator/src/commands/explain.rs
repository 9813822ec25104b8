//! `heisen explain`: rank candidate causes in a bundle.

use anyhow::{Context, Result};
use heisen_analysis::explain;
use heisen_recordings::Bundle;

use crate::ExplainArgs;

pub fn run(a: ExplainArgs) -> Result<i32> {
    let bundle = Bundle::read(&a.bundle)?;
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
