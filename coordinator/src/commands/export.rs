//! `heisen export`: a bundle's events as Parquet (see `crate::export`).

use anyhow::Result;
use heisen_recordings::BundleFile;

use crate::{ExportArgs, ExportFormat};

pub fn run(a: ExportArgs) -> Result<i32> {
    let file = BundleFile::open(&a.bundle)?;
    let written = match a.format {
        ExportFormat::Parquet => crate::export::parquet(&file, &a.out)?,
    };
    if a.json {
        println!("{}", serde_json::json!({ "bundle": a.bundle, "format": "parquet", "files": written }));
    } else {
        for w in &written {
            println!("{:>12} rows  {}  ({})", w.rows, w.path.display(), w.table);
        }
    }
    let damage = file.damage();
    if let Some(d) = damage.first() {
        anyhow::bail!(
            "{}: damaged {d}; the files hold what reads before the damage (a `lost` row marks where)",
            a.bundle.display()
        );
    }
    Ok(0)
}
