//! `heisen export`: a bundle's events in a format the tools people already run can read.
//!
//! Parquet (docs/EXPORT.md has the schema): one file per host, `HOST.parquet`, each event a row
//! with its host-clock stamp and its interval on the coordinator's clock, and `runs.parquet`
//! with each run's outcome, so a fleet's captures can be queried with DuckDB, Spark, Trino or
//! DataFusion (`SELECT host, count(*) FROM 'out/*.parquet' GROUP BY host`). Rows are written in
//! batches as the bundle's chunks are read: memory does not grow with the capture.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use arrow_array::builder::{BooleanBuilder, Int32Builder, Int64Builder, StringBuilder, UInt32Builder, UInt64Builder};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use heisen_analysis::timeline;
use heisen_recordings::{errno_name, AtomicFile, BundleFile, Event, EventKind, Interval, Placed};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

/// Rows per record batch (and so per row group's page at most).
const BATCH_ROWS: usize = 65_536;

/// One written file: what it holds and how many rows.
#[derive(Debug, serde::Serialize)]
pub struct Written {
    /// The host whose events it holds, or `runs`.
    pub table: String,
    pub path: PathBuf,
    pub rows: u64,
}

/// The events table's columns, in order (docs/EXPORT.md describes each).
pub fn event_schema() -> SchemaRef {
    let utf8 = |name: &str, nullable: bool| Field::new(name, DataType::Utf8, nullable);
    let i64 = |name: &str, nullable: bool| Field::new(name, DataType::Int64, nullable);
    Arc::new(Schema::new(vec![
        utf8("host", false),
        Field::new("seq", DataType::UInt64, false),
        i64("raw_ns", false),
        i64("earliest_ns", false),
        i64("latest_ns", false),
        Field::new("pid", DataType::Int32, false),
        utf8("comm", false),
        Field::new("run", DataType::UInt32, false),
        utf8("kind", false),
        utf8("name", true),
        i64("ret", true),
        utf8("errno", true),
        i64("duration_ns", true),
        utf8("fd_path", true),
        utf8("call", true),
        utf8("detail", true),
    ]))
}

fn run_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("run", DataType::UInt32, false),
        Field::new("failed", DataType::Boolean, false),
        Field::new("valid", DataType::Boolean, false),
        Field::new("ordering", DataType::Utf8, true),
        Field::new("note", DataType::Utf8, false),
    ]))
}

/// The columns of a batch being built.
struct Columns {
    host: StringBuilder,
    seq: UInt64Builder,
    raw_ns: Int64Builder,
    earliest_ns: Int64Builder,
    latest_ns: Int64Builder,
    pid: Int32Builder,
    comm: StringBuilder,
    run: UInt32Builder,
    kind: StringBuilder,
    name: StringBuilder,
    ret: Int64Builder,
    errno: StringBuilder,
    duration_ns: Int64Builder,
    fd_path: StringBuilder,
    call: StringBuilder,
    detail: StringBuilder,
    rows: usize,
}

/// The fields every event has, which the events table holds as columns rather than in `detail`.
const COMMON: &[&str] = &["host", "seq", "kind", "pid", "comm", "run", "raw_ns", "earliest_ns", "latest_ns"];

impl Columns {
    fn new() -> Columns {
        Columns {
            host: StringBuilder::new(),
            seq: UInt64Builder::with_capacity(BATCH_ROWS),
            raw_ns: Int64Builder::with_capacity(BATCH_ROWS),
            earliest_ns: Int64Builder::with_capacity(BATCH_ROWS),
            latest_ns: Int64Builder::with_capacity(BATCH_ROWS),
            pid: Int32Builder::with_capacity(BATCH_ROWS),
            comm: StringBuilder::new(),
            run: UInt32Builder::with_capacity(BATCH_ROWS),
            kind: StringBuilder::new(),
            name: StringBuilder::new(),
            ret: Int64Builder::with_capacity(BATCH_ROWS),
            errno: StringBuilder::new(),
            duration_ns: Int64Builder::with_capacity(BATCH_ROWS),
            fd_path: StringBuilder::new(),
            call: StringBuilder::new(),
            detail: StringBuilder::new(),
            rows: 0,
        }
    }

    fn push(&mut self, host: &str, p: &Placed<Event>) {
        let e = &p.event;
        self.host.append_value(host);
        self.seq.append_value(e.seq);
        self.raw_ns.append_value(e.raw_ns);
        self.earliest_ns.append_value(p.interval.earliest_ns);
        self.latest_ns.append_value(p.interval.latest_ns);
        self.pid.append_value(e.pid);
        self.comm.append_value(&e.comm);
        self.run.append_value(e.run);
        self.kind.append_value(e.kind.name());
        // As `timeline --format strace` prints it, without the host, pid and comm the columns hold.
        self.call.append_option(timeline::strace_call(e));
        match &e.kind {
            EventKind::Syscall { name, ret, enter_ns, fd_path, .. } => {
                self.name.append_value(name);
                self.ret.append_value(*ret);
                self.errno.append_option((*ret < 0).then(|| errno_name(ret.saturating_neg())).flatten());
                self.duration_ns.append_value(e.raw_ns - enter_ns);
                self.fd_path.append_option(fd_path.as_deref());
                self.detail.append_null();
            }
            other => {
                let (name, ret, duration) = match other {
                    EventKind::Traced { name, ret, enter_ns, .. } => {
                        (Some(name.as_str()), Some(*ret), Some(e.raw_ns - enter_ns))
                    }
                    EventKind::Lock { call, ret, enter_ns, .. } => {
                        (Some(call.as_str()), Some(*ret), Some(e.raw_ns - enter_ns))
                    }
                    _ => (None, None, None),
                };
                self.name.append_option(name);
                self.ret.append_option(ret);
                self.errno.append_option(ret.filter(|r| (-4095..0).contains(r)).and_then(|r| errno_name(-r)));
                self.duration_ns.append_option(duration);
                self.fd_path.append_null();
                let mut v = timeline::to_json(host, p);
                if let serde_json::Value::Object(map) = &mut v {
                    map.retain(|k, _| !COMMON.contains(&k.as_str()));
                }
                self.detail.append_value(v.to_string());
            }
        }
        self.rows += 1;
    }

    fn finish(&mut self, schema: &SchemaRef) -> Result<RecordBatch> {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.host.finish()),
            Arc::new(self.seq.finish()),
            Arc::new(self.raw_ns.finish()),
            Arc::new(self.earliest_ns.finish()),
            Arc::new(self.latest_ns.finish()),
            Arc::new(self.pid.finish()),
            Arc::new(self.comm.finish()),
            Arc::new(self.run.finish()),
            Arc::new(self.kind.finish()),
            Arc::new(self.name.finish()),
            Arc::new(self.ret.finish()),
            Arc::new(self.errno.finish()),
            Arc::new(self.duration_ns.finish()),
            Arc::new(self.fd_path.finish()),
            Arc::new(self.call.finish()),
            Arc::new(self.detail.finish()),
        ];
        self.rows = 0;
        Ok(RecordBatch::try_new(schema.clone(), columns)?)
    }
}

fn writer(path: &Path, schema: &SchemaRef) -> Result<ArrowWriter<AtomicFile>> {
    let out = AtomicFile::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let props = WriterProperties::builder().set_compression(Compression::SNAPPY).build();
    Ok(ArrowWriter::try_new(out, schema.clone(), Some(props))?)
}

fn commit(w: ArrowWriter<AtomicFile>, path: &Path) -> Result<()> {
    let out = w.into_inner().with_context(|| format!("cannot finish {}", path.display()))?;
    out.commit().with_context(|| format!("cannot write {}", path.display()))
}

/// A file name for host `name` that stays inside the output directory whatever the bundle says
/// (names come from agents): letters, digits, `.`, `_` and `-` are kept, anything else is `_`,
/// and a name taken already or reserved gets the host's index.
fn file_name(name: &str, index: usize, taken: &[String]) -> String {
    let mut clean: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() || "._-".contains(c) { c } else { '_' }).collect();
    if clean.is_empty() || clean.starts_with('.') || clean == "runs" || taken.contains(&clean) {
        clean = format!("host{index}-{clean}");
    }
    clean
}

/// Writes `file`'s events as Parquet under `dir`: `HOST.parquet` per host and `runs.parquet`.
/// Each file appears whole (written beside, then renamed) or not at all.
pub fn parquet(file: &BundleFile, dir: &Path) -> Result<Vec<Written>> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let head = file.head();
    let schema = event_schema();
    let mut written = Vec::new();
    let mut taken = Vec::new();
    for (h, host) in head.hosts.iter().enumerate() {
        let name = file_name(&host.name, h, &taken);
        taken.push(name.clone());
        let path = dir.join(format!("{name}.parquet"));
        let mut w = writer(&path, &schema)?;
        let mut cols = Columns::new();
        let mut rows = 0u64;
        for e in file.host_events(h) {
            let centre = host.clock.centre(e.raw_ns);
            let error = host.clock.error_at(centre);
            let interval = Interval { earliest_ns: centre - error, latest_ns: centre + error };
            cols.push(&host.name, &Placed { host: h, event: e, interval });
            rows += 1;
            if cols.rows == BATCH_ROWS {
                w.write(&cols.finish(&schema)?)?;
            }
        }
        if cols.rows > 0 {
            w.write(&cols.finish(&schema)?)?;
        }
        commit(w, &path)?;
        written.push(Written { table: host.name.clone(), path, rows });
    }
    let schema = run_schema();
    let path = dir.join("runs.parquet");
    let mut w = writer(&path, &schema)?;
    let (mut run, mut failed, mut valid, mut ordering, mut note) = (
        UInt32Builder::new(),
        BooleanBuilder::new(),
        BooleanBuilder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
    );
    for r in &head.runs {
        run.append_value(r.run);
        failed.append_value(r.failed);
        valid.append_value(r.valid);
        ordering.append_option(r.ordering.as_deref());
        note.append_value(&r.note);
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(run.finish()),
        Arc::new(failed.finish()),
        Arc::new(valid.finish()),
        Arc::new(ordering.finish()),
        Arc::new(note.finish()),
    ];
    w.write(&RecordBatch::try_new(schema, columns)?)?;
    commit(w, &path)?;
    written.push(Written { table: "runs".into(), path, rows: head.runs.len() as u64 });
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_from_the_wire_stay_inside_the_directory() {
        let mut taken = Vec::new();
        for (i, name) in ["server", "../etc/passwd", "", ".hidden", "runs", "server", "a b/c"].iter().enumerate() {
            let f = file_name(name, i, &taken);
            assert!(!f.contains('/') && !f.starts_with('.') && !f.is_empty() && f != "runs", "{name} -> {f}");
            assert!(!taken.contains(&f), "{name} -> {f} twice");
            taken.push(f);
        }
        assert_eq!(taken[0], "server");
    }
}
