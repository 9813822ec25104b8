//! The binary tracefs reader: every CPU's `per_cpu/cpuN/trace_pipe_raw` drained on a timer, ring
//! buffer pages decoded with the layout the kernel documents (`events/header_page`,
//! `events/header_event`), records decoded with the offsets of each event's `format` file.
//!
//! Why: the text `trace_pipe` makes the kernel format every event, one reader for all CPUs, and
//! loses most of a syscall storm (docs/KERNEL.md); it also rounds timestamps to microseconds. Raw pages
//! cost the kernel nothing extra and carry nanoseconds.
//!
//! Per-CPU streams are each in time order; a task can migrate between its syscall's enter and
//! exit, so records are merged across CPUs by timestamp, up to a watermark a little behind the
//! drain, before anyone decodes them.

use std::collections::VecDeque;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// One field of an event record.
#[derive(Clone, Debug)]
pub struct Field {
    pub name: String,
    pub offset: usize,
    pub size: usize,
    pub signed: bool,
    /// `__data_loc` (u32: length << 16 | offset) or a char array.
    pub data_loc: bool,
    pub array: bool,
}

/// The layout of one event type.
#[derive(Clone, Debug)]
pub struct Format {
    /// Name as the decoder knows it: `sys_write` for both enter and exit, else the event name.
    pub name: String,
    pub exit: bool,
    pub enter: bool,
    pub fields: Vec<Field>,
}

impl Format {
    /// Parses an event's `format` file; returns its id too.
    pub fn parse(text: &str) -> Option<(u16, Format)> {
        let mut name = String::new();
        let mut id = None;
        let mut fields = Vec::new();
        for line in text.lines() {
            let line = line.trim();
            if let Some(n) = line.strip_prefix("name: ") {
                name = n.trim().to_string();
            } else if let Some(i) = line.strip_prefix("ID: ") {
                id = i.trim().parse().ok();
            } else if let Some(decl) = line.strip_prefix("field:") {
                let parts: Vec<&str> = decl.split(';').map(str::trim).collect();
                let declaration = parts.first()?;
                let get = |key: &str| {
                    parts.iter().find_map(|p| p.strip_prefix(key)).and_then(|v| v.trim().parse::<usize>().ok())
                };
                let mut field_name = declaration.rsplit(' ').next()?.to_string();
                let array = field_name.contains('[');
                if let Some(i) = field_name.find('[') {
                    field_name.truncate(i);
                }
                fields.push(Field {
                    name: field_name,
                    offset: get("offset:")?,
                    size: get("size:")?,
                    signed: get("signed:") == Some(1),
                    data_loc: declaration.starts_with("__data_loc"),
                    array,
                });
            }
        }
        let (enter, exit) = (name.starts_with("sys_enter_"), name.starts_with("sys_exit_"));
        let name = match (name.strip_prefix("sys_enter_"), name.strip_prefix("sys_exit_")) {
            (Some(s), _) | (_, Some(s)) => format!("sys_{s}"),
            _ if name == "print" => "tracing_mark_write".to_string(),
            _ => name,
        };
        Some((id?, Format { name, exit, enter, fields }))
    }

    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name == name)
    }
}

/// Reads a record's integer field.
pub fn int(data: &[u8], f: &Field) -> Option<i64> {
    let bytes = data.get(f.offset..f.offset + f.size)?;
    Some(match (f.size, f.signed) {
        (1, false) => bytes[0] as i64,
        (1, true) => bytes[0] as i8 as i64,
        (2, false) => u16::from_le_bytes(bytes.try_into().ok()?) as i64,
        (2, true) => i16::from_le_bytes(bytes.try_into().ok()?) as i64,
        (4, false) => u32::from_le_bytes(bytes.try_into().ok()?) as i64,
        (4, true) => i32::from_le_bytes(bytes.try_into().ok()?) as i64,
        (8, _) => i64::from_le_bytes(bytes.try_into().ok()?),
        _ => return None,
    })
}

/// Reads a string field (char array or `__data_loc`), up to its first NUL.
pub fn string(data: &[u8], f: &Field) -> Option<String> {
    let bytes = if f.data_loc {
        let loc = u32::from_le_bytes(data.get(f.offset..f.offset + 4)?.try_into().ok()?);
        let (off, len) = ((loc & 0xffff) as usize, (loc >> 16) as usize);
        data.get(off..off + len)?
    } else if f.size == 0 {
        data.get(f.offset..)? // a trailing flexible array (the marker's buf[])
    } else {
        data.get(f.offset..f.offset + f.size)?
    };
    let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
    Some(String::from_utf8_lossy(&bytes[..end]).trim_end_matches('\n').to_string())
}

/// A decoded ring-buffer record.
pub struct Record {
    pub mono_ns: i64,
    pub id: u16,
    pub pid: i32,
    pub data: Vec<u8>,
}

/// Record buffers handed back after use, so a storm of records does not allocate per record.
#[derive(Default)]
pub struct Pool(Vec<Vec<u8>>);

impl Pool {
    pub fn take(&mut self, bytes: &[u8]) -> Vec<u8> {
        let mut data = self.0.pop().unwrap_or_default();
        data.clear();
        data.extend_from_slice(bytes);
        data
    }

    pub fn give(&mut self, data: Vec<u8>) {
        if self.0.len() < 65_536 {
            self.0.push(data);
        }
    }
}

/// Splits one ring-buffer page into records (appended to `out`); returns false if the kernel
/// marked events as missed before this page.
pub fn parse_page(page: &[u8], out: &mut VecDeque<Record>, pool: &mut Pool) -> bool {
    if page.len() < 16 {
        return true;
    }
    let mut ts = u64::from_le_bytes(page[0..8].try_into().expect("8 bytes")) as i64;
    let commit = u64::from_le_bytes(page[8..16].try_into().expect("8 bytes"));
    let missed = commit & (1 << 31) != 0;
    let len = ((commit & 0x0fff_ffff) as usize).min(page.len() - 16);
    let data = &page[16..16 + len];
    let mut off = 0;
    while off + 4 <= data.len() {
        let header = u32::from_le_bytes(data[off..off + 4].try_into().expect("4 bytes"));
        let (type_len, delta) = (header & 0x1f, (header >> 5) as i64);
        let array0 = || data.get(off + 4..off + 8).map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")));
        match type_len {
            29 => {
                // Padding: the rest of the page, or a discarded event of array[0] bytes.
                match array0() {
                    Some(skip) if delta != 0 || skip != 0 => off += 4 + skip as usize,
                    _ => break,
                }
            }
            30 => {
                ts += delta | ((array0().unwrap_or(0) as i64) << 27);
                off += 8;
            }
            31 => {
                ts = delta | ((array0().unwrap_or(0) as i64) << 27);
                off += 8;
            }
            _ => {
                ts += delta;
                let (start, size) = if type_len == 0 {
                    let total = array0().unwrap_or(0) as usize;
                    (off + 8, total.saturating_sub(4))
                } else {
                    (off + 4, type_len as usize * 4)
                };
                let Some(record) = data.get(start..start + size) else { break };
                if record.len() >= 8 {
                    let id = u16::from_le_bytes(record[0..2].try_into().expect("2 bytes"));
                    let pid = i32::from_le_bytes(record[4..8].try_into().expect("4 bytes"));
                    out.push_back(Record { mono_ns: ts, id, pid, data: pool.take(record) });
                }
                off = start + size;
            }
        }
    }
    !missed
}

/// Reads the instance at `dir` until `stopped` (or `handle` says stop), merging CPUs, and the
/// write recorder's ring if there is one, by time. `handle` gets records in time order; returns
/// pages the kernel marked as having missed events.
/// A BPF ring buffer read beside the tracefs buffers (the write and argument recorders): its
/// records, in time order, are merged with the CPUs'.
pub trait SideBuffer {
    /// Moves every committed record into `out`, in time order.
    fn drain(&mut self, out: &mut VecDeque<Record>, pool: &mut Pool);
}

pub fn read_records(
    dir: &Path,
    page_size: usize,
    sides: &mut [&mut dyn SideBuffer],
    stopped: &AtomicBool,
    mut handle: impl FnMut(&Record) -> bool,
) -> std::io::Result<u64> {
    let mut cpus = Vec::new();
    for entry in std::fs::read_dir(dir.join("per_cpu"))? {
        let path = entry?.path().join("trace_pipe_raw");
        cpus.push(std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(&path)?);
    }
    // One queue per CPU, then one per side buffer.
    let mut queues: Vec<VecDeque<Record>> = (0..cpus.len() + sides.len()).map(|_| VecDeque::new()).collect();
    let mut page = vec![0u8; page_size];
    let mut pool = Pool::default();
    let mut missed_pages = 0;
    let mut stop_seen_at: Option<Instant> = None;
    loop {
        // Everything stamped before this point is in a buffer already (up to the watermark slack).
        let watermark = mono_ns() - 1_000_000;
        for (file, queue) in cpus.iter_mut().zip(queues.iter_mut()) {
            drain(file, &mut page, queue, &mut pool, &mut missed_pages);
        }
        // After the CPUs: a thread's BPF record is committed before its next call can be traced,
        // so every record before a traced event drained above is in its ring now.
        for (side, queue) in sides.iter_mut().zip(queues[cpus.len()..].iter_mut()) {
            side.drain(queue, &mut pool);
        }
        loop {
            let next = queues.iter().enumerate().filter_map(|(i, q)| q.front().map(|r| (r.mono_ns, i))).min();
            match next {
                Some((ts, i)) if ts <= watermark => {
                    let record = queues[i].pop_front().expect("front exists");
                    if !handle(&record) {
                        return Ok(missed_pages);
                    }
                    pool.give(record.data);
                }
                _ => break,
            }
        }
        if stopped.load(Ordering::Relaxed) {
            // Give the stop marker a moment to arrive; never spin forever on a dead instance.
            let since = *stop_seen_at.get_or_insert_with(Instant::now);
            if since.elapsed() > Duration::from_secs(10) {
                return Ok(missed_pages);
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn drain(file: &mut File, page: &mut [u8], queue: &mut VecDeque<Record>, pool: &mut Pool, missed_pages: &mut u64) {
    loop {
        match file.read(page) {
            Ok(0) => return,
            Ok(n) => {
                if !parse_page(&page[..n], queue, pool) {
                    *missed_pages += 1;
                }
            }
            Err(_) => return, // EAGAIN: empty for now
        }
    }
}

fn mono_ns() -> i64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: ts is a valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec * 1_000_000_000 + ts.tv_nsec
}

/// Formats of the enabled events of `dir` (an instance), by id; the marker's format included.
pub fn formats(tracefs_root: &Path, events: &[String]) -> fxhash::FxHashMap<u16, Format> {
    let mut out = fxhash::FxHashMap::default();
    for event in events.iter().map(String::as_str).chain(["ftrace/print"]) {
        if let Ok(text) = std::fs::read_to_string(tracefs_root.join("events").join(event).join("format")) {
            if let Some((id, format)) = Format::parse(&text) {
                out.insert(id, format);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIGNAL_FORMAT: &str = "name: signal_generate\nID: 261\nformat:\n\
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;\n\n\
\tfield:int sig;\toffset:8;\tsize:4;\tsigned:1;\n\
\tfield:char comm[16];\toffset:20;\tsize:16;\tsigned:0;\n\
\tfield:pid_t pid;\toffset:36;\tsize:4;\tsigned:1;\n";

    fn signal_record(sig: i32, comm: &str, pid: i32) -> Vec<u8> {
        let mut r = vec![0u8; 40];
        r[0..2].copy_from_slice(&261u16.to_le_bytes());
        r[4..8].copy_from_slice(&77i32.to_le_bytes());
        r[8..12].copy_from_slice(&sig.to_le_bytes());
        r[20..20 + comm.len()].copy_from_slice(comm.as_bytes());
        r[36..40].copy_from_slice(&pid.to_le_bytes());
        r
    }

    #[test]
    fn formats_and_fields_decode() {
        let (id, f) = Format::parse(SIGNAL_FORMAT).unwrap();
        assert_eq!((id, f.name.as_str()), (261, "signal_generate"));
        let r = signal_record(1, "export-server", 42);
        assert_eq!(int(&r, f.field("sig").unwrap()), Some(1));
        assert_eq!(int(&r, f.field("pid").unwrap()), Some(42));
        assert_eq!(string(&r, f.field("comm").unwrap()).as_deref(), Some("export-server"));
        let (_, enter) = Format::parse("name: sys_enter_write\nID: 700\n").unwrap();
        assert_eq!((enter.name.as_str(), enter.enter, enter.exit), ("sys_write", true, false));
    }

    #[test]
    fn pages_split_into_timed_records() {
        // Page at t=1000: a 40-byte record (type_len 10) after 5 ns, a time extend of 1<<27 + 3,
        // then a record with an explicit length (type_len 0) after 2 ns, then padding to the end.
        let rec = signal_record(1, "a", 1);
        let mut data = Vec::new();
        data.extend_from_slice(&(10u32 | (5 << 5)).to_le_bytes());
        data.extend_from_slice(&rec);
        data.extend_from_slice(&(30u32 | (3 << 5)).to_le_bytes());
        data.extend_from_slice(&1u32.to_le_bytes());
        data.extend_from_slice(&(2u32 << 5).to_le_bytes());
        data.extend_from_slice(&((rec.len() + 4) as u32).to_le_bytes());
        data.extend_from_slice(&rec);
        let mut page = 1000u64.to_le_bytes().to_vec();
        page.extend_from_slice(&(data.len() as u64).to_le_bytes());
        page.extend_from_slice(&data);
        page.resize(4096, 0);
        let mut out = VecDeque::new();
        assert!(parse_page(&page, &mut out, &mut Pool::default()));
        let times: Vec<i64> = out.iter().map(|r| r.mono_ns).collect();
        assert_eq!(times, vec![1005, 1005 + (1 << 27) + 3 + 2]);
        assert!(out.iter().all(|r| r.id == 261 && r.pid == 77 && r.data.len() == 40));
    }
}
