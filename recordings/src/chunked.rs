//! Bundle format v2: a capture as a stream of checksummed chunks, so a reader seeks to what it
//! needs, holds one chunk per host at a time, and a damaged byte costs one chunk, not the file.
//!
//! ```text
//! header   "HEISENBN" (8) | version = 2 (u32 LE)
//! chunk*   kind (u8) | body length (u32 LE) | CRC-32 of kind and body (u32 LE) | body
//! trailer  byte offset of the index chunk (u64 LE) | "HEISENIX" (8)
//! ```
//!
//! Chunks in the order they are written: a *head* (the capture's metadata as known when writing
//! began: JSON of the bundle without events); *events* chunks, each holding up to
//! [`CHUNK_EVENTS`] consecutive events of one host (host u32, count u32, first seq u64, then the
//! events as an LZ4 block of varint bincode, the encoding of the agent's store); the final
//! *head*; and the *index* (JSON: the final head's offset and, per events chunk, its offset,
//! host, seq range, raw time range and runs). The trailer points at the index, so a reader opens
//! a bundle of any size by reading its last 16 bytes, the index and the head.
//!
//! Reading checks every size against the file before allocating for it, every chunk's checksum
//! as it is read, and every events chunk against its index entry. A file whose trailer, index or
//! final head is unreadable (a write cut short, a damaged tail) is read by walking its chunks from
//! the start: what comes before the damage is kept, and the damage is named by chunk number and
//! byte offset.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use bincode::Options;
use serde::{Deserialize, Serialize};

use crate::bundle::check_event;
use crate::store::{packed, unpack};
use crate::{Bundle, BundleProblem, Event, EventKind, RecordingsError};

/// The chunked format's version number.
pub const VERSION_CHUNKED: u32 = 2;
/// Events per events chunk: large enough that LZ4 finds the repetition between events, small
/// enough that a reader holds one chunk per host (about 100 KiB) and damage costs little.
pub const CHUNK_EVENTS: usize = 4096;
const TRAILER_MAGIC: &[u8; 8] = b"HEISENIX";
const HEADER_LEN: u64 = 12;
const CHUNK_HEAD_LEN: u64 = 9;
const TRAILER_LEN: u64 = 16;
const EVENTS_HEAD_LEN: usize = 16;
/// No chunk heisen writes comes near this; a larger length is damage, never an allocation.
const MAX_CHUNK: u64 = 64 << 20;

const HEAD: u8 = 1;
const EVENTS: u8 = 2;
const INDEX: u8 = 3;

/// Where one events chunk is and what it holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkEntry {
    /// Byte offset of the chunk in the file.
    pub offset: u64,
    /// Index of the host in the head's `hosts`.
    pub host: u32,
    pub first_seq: u64,
    pub last_seq: u64,
    pub count: u32,
    /// Earliest and latest host-clock stamp of its events.
    pub min_raw_ns: i64,
    pub max_raw_ns: i64,
    /// The runs its events belong to.
    pub runs: Vec<u32>,
    /// The kinds of its events: bit `i` is `EventKind::NAMES[i]`, so a reader that needs only
    /// forks, sockets or execs skips the chunks of a write storm.
    #[serde(default = "all_kinds")]
    pub kinds: u32,
}

fn all_kinds() -> u32 {
    u32::MAX
}

impl ChunkEntry {
    /// Whether the chunk holds an event of kind `name` (`syscall`, `exec`, ...).
    pub fn has_kind(&self, name: &str) -> bool {
        EventKind::NAMES.iter().position(|n| *n == name).is_some_and(|i| self.kinds & (1 << i) != 0)
    }
}

#[derive(Serialize, Deserialize)]
struct Index {
    head_offset: u64,
    chunks: Vec<ChunkEntry>,
}

/// Damage found in a bundle file: which chunk, where, and what was wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Damage {
    /// Chunk number in file order (0 is the first chunk after the header), when known.
    pub chunk: Option<usize>,
    pub offset: u64,
    pub what: String,
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.chunk {
            Some(n) => write!(f, "chunk {n} at byte {}: {}", self.offset, self.what),
            None => write!(f, "at byte {}: {}", self.offset, self.what),
        }
    }
}

/// Writes a chunked bundle as a stream: events go to the file as chunks fill, so memory holds at
/// most one chunk per host whatever the capture's size. Nothing is at the bundle's path until
/// [`BundleWriter::finish`]; a writer dropped before it leaves no file.
pub struct BundleWriter {
    out: crate::files::AtomicFile,
    path: PathBuf,
    offset: u64,
    entries: Vec<ChunkEntry>,
    /// Per host: events not yet in a chunk, and the seq of the last event given.
    pending: Vec<Vec<Event>>,
    last_seq: Vec<Option<u64>>,
}

impl BundleWriter {
    /// Starts a bundle at `path` whose hosts are `head`'s (their events, if any, are not written).
    pub fn create(path: &Path, head: &Bundle) -> Result<BundleWriter, RecordingsError> {
        let out = crate::files::AtomicFile::create(path).map_err(|source| io_error("write bundle", path, source))?;
        let hosts = head.hosts.len();
        let mut w = BundleWriter {
            out,
            path: path.to_path_buf(),
            offset: 0,
            entries: Vec::new(),
            pending: vec![Vec::new(); hosts],
            last_seq: vec![None; hosts],
        };
        let mut header = Vec::with_capacity(HEADER_LEN as usize);
        header.extend_from_slice(crate::BUNDLE_MAGIC);
        header.extend_from_slice(&VERSION_CHUNKED.to_le_bytes());
        w.write_raw(&header)?;
        w.write_head(head)?;
        Ok(w)
    }

    fn write_raw(&mut self, bytes: &[u8]) -> Result<(), RecordingsError> {
        self.out.write_all(bytes).map_err(|source| io_error("write bundle", &self.path, source))?;
        self.offset += bytes.len() as u64;
        Ok(())
    }

    fn write_chunk(&mut self, kind: u8, body: &[u8]) -> Result<u64, RecordingsError> {
        let at = self.offset;
        let mut head = [0u8; CHUNK_HEAD_LEN as usize];
        head[0] = kind;
        head[1..5].copy_from_slice(&(body.len() as u32).to_le_bytes());
        head[5..9].copy_from_slice(&checksum(kind, body).to_le_bytes());
        self.write_raw(&head)?;
        self.write_raw(body)?;
        Ok(at)
    }

    fn write_head(&mut self, head: &Bundle) -> Result<u64, RecordingsError> {
        let json = serde_json::to_vec(&head.head()).map_err(RecordingsError::EncodeBundle)?;
        self.write_chunk(HEAD, &json)
    }

    /// Adds events of host `host` (an index into the head's hosts), in increasing seq order
    /// across calls.
    pub fn events(&mut self, host: usize, events: &[Event]) -> Result<(), RecordingsError> {
        if host >= self.pending.len() {
            return Err(RecordingsError::Invalid(format!(
                "events of host {host}, but the bundle has {} hosts",
                self.pending.len()
            )));
        }
        for e in events {
            if self.last_seq[host].is_some_and(|s| e.seq <= s) {
                return Err(RecordingsError::Invalid(format!(
                    "host {host}'s event seq {} given after seq {}",
                    e.seq,
                    self.last_seq[host].unwrap_or(0)
                )));
            }
            self.last_seq[host] = Some(e.seq);
        }
        let mut rest = events;
        // Top up what is pending first, then whole chunks straight from the slice.
        if !self.pending[host].is_empty() {
            let take = (CHUNK_EVENTS - self.pending[host].len()).min(rest.len());
            self.pending[host].extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if self.pending[host].len() == CHUNK_EVENTS {
                let full = std::mem::take(&mut self.pending[host]);
                self.write_events(host, &full)?;
            }
        }
        while rest.len() >= CHUNK_EVENTS {
            self.write_events(host, &rest[..CHUNK_EVENTS])?;
            rest = &rest[CHUNK_EVENTS..];
        }
        self.pending[host].extend_from_slice(rest);
        Ok(())
    }

    fn write_events(&mut self, host: usize, events: &[Event]) -> Result<(), RecordingsError> {
        let (Some(first), Some(last)) = (events.first(), events.last()) else { return Ok(()) };
        let encoded = packed()
            .serialize(events)
            .map_err(|source| RecordingsError::Encode { what: "encoding a bundle chunk", source })?;
        let mut body = Vec::with_capacity(EVENTS_HEAD_LEN + encoded.len() / 2);
        body.extend_from_slice(&(host as u32).to_le_bytes());
        body.extend_from_slice(&(events.len() as u32).to_le_bytes());
        body.extend_from_slice(&first.seq.to_le_bytes());
        body.extend_from_slice(&lz4_flex::block::compress_prepend_size(&encoded));
        let offset = self.write_chunk(EVENTS, &body)?;
        self.entries.push(summarize(offset, host as u32, events, first.seq, last.seq));
        Ok(())
    }

    /// Writes what is pending, the final `head` (runs, clocks and notes as they ended), the index
    /// and the trailer, then puts the file at its path atomically.
    pub fn finish(mut self, head: &Bundle) -> Result<(), RecordingsError> {
        if head.hosts.len() < self.pending.len() {
            return Err(RecordingsError::Invalid(format!(
                "the final head names {} hosts, events were written for {}",
                head.hosts.len(),
                self.pending.len()
            )));
        }
        for host in 0..self.pending.len() {
            let rest = std::mem::take(&mut self.pending[host]);
            self.write_events(host, &rest)?;
        }
        let head_offset = self.write_head(head)?;
        let index = serde_json::to_vec(&Index { head_offset, chunks: std::mem::take(&mut self.entries) })
            .map_err(RecordingsError::EncodeBundle)?;
        let index_offset = self.write_chunk(INDEX, &index)?;
        let mut trailer = Vec::with_capacity(TRAILER_LEN as usize);
        trailer.extend_from_slice(&index_offset.to_le_bytes());
        trailer.extend_from_slice(TRAILER_MAGIC);
        self.write_raw(&trailer)?;
        let path = self.path.clone();
        self.out.commit().map_err(|source| io_error("write bundle", &path, source))
    }
}

fn summarize(offset: u64, host: u32, events: &[Event], first_seq: u64, last_seq: u64) -> ChunkEntry {
    let mut runs = BTreeSet::new();
    let mut kinds = 0u32;
    let (mut min_raw_ns, mut max_raw_ns) = (i64::MAX, i64::MIN);
    for e in events {
        runs.insert(e.run);
        kinds |= 1 << e.kind.index();
        min_raw_ns = min_raw_ns.min(e.raw_ns);
        max_raw_ns = max_raw_ns.max(e.raw_ns);
    }
    ChunkEntry {
        offset,
        host,
        first_seq,
        last_seq,
        count: events.len() as u32,
        min_raw_ns,
        max_raw_ns,
        runs: runs.into_iter().collect(),
        kinds,
    }
}

fn checksum(kind: u8, body: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&[kind]);
    h.update(body);
    h.finalize()
}

fn io_error(op: &'static str, path: &Path, source: std::io::Error) -> RecordingsError {
    RecordingsError::Io { op, path: path.to_path_buf(), source }
}

/// The bytes a bundle is read from.
enum Source {
    File(File, u64),
    Bytes(Vec<u8>),
}

impl Source {
    fn len(&self) -> u64 {
        match self {
            Source::File(_, len) => *len,
            Source::Bytes(b) => b.len() as u64,
        }
    }

    /// `len` bytes at `offset`, which the caller has checked lie inside the source.
    fn read(&self, offset: u64, len: u64) -> std::io::Result<Vec<u8>> {
        match self {
            Source::File(f, _) => {
                let mut buf = vec![0u8; len as usize];
                f.read_exact_at(&mut buf, offset)?;
                Ok(buf)
            }
            Source::Bytes(b) => Ok(b[offset as usize..(offset + len) as usize].to_vec()),
        }
    }
}

/// Where a bundle's events are.
enum Events {
    /// A format 1 bundle, read whole.
    Memory(Vec<Vec<Event>>),
    Chunked {
        source: Source,
        chunks: Vec<ChunkEntry>,
    },
}

/// An open bundle: its head (hosts, clocks, runs, scenario) in memory, its events read chunk by
/// chunk as they are iterated. Damage met while reading is kept and reported by
/// [`BundleFile::damage`]; a host's events end at its first damaged chunk with a `lost` event
/// saying where.
pub struct BundleFile {
    path: PathBuf,
    head: Bundle,
    events: Events,
    /// Damage found when opening: the file was read by walking its chunks and stops here.
    cut: Option<Damage>,
    damage: RefCell<Vec<Damage>>,
}

impl BundleFile {
    /// Opens a bundle of either format. Only a regular file is read (a FIFO or a device is
    /// refused at once), and every size its header or index claims is checked against the file.
    pub fn open(path: &Path) -> Result<BundleFile, RecordingsError> {
        let bad = |problem| RecordingsError::BadBundle { path: path.to_path_buf(), problem };
        let (file, size) = crate::files::open_regular(path).map_err(|source| io_error("read bundle", path, source))?;
        let mut header = [0u8; HEADER_LEN as usize];
        if size < HEADER_LEN {
            return Err(bad(BundleProblem::NotABundle));
        }
        file.read_exact_at(&mut header, 0).map_err(|source| io_error("read bundle", path, source))?;
        match version(&header).map_err(bad)? {
            VERSION_CHUNKED => BundleFile::chunked(path, Source::File(file, size)).map_err(bad),
            _ => {
                let bundle = Bundle::read_json(path, file, size)?;
                Ok(BundleFile::from_bundle(path, bundle))
            }
        }
    }

    /// Reads a bundle of either format from its bytes (`path` only names it in messages).
    pub fn from_bytes(path: &Path, bytes: Vec<u8>) -> Result<BundleFile, BundleProblem> {
        if bytes.len() < HEADER_LEN as usize {
            return Err(BundleProblem::NotABundle);
        }
        match version(&bytes)? {
            VERSION_CHUNKED => BundleFile::chunked(path, Source::Bytes(bytes)),
            _ => Ok(BundleFile::from_bundle(path, Bundle::decode_json(&bytes)?)),
        }
    }

    /// A bundle already in memory, read through the same interface.
    pub fn from_bundle(path: &Path, mut bundle: Bundle) -> BundleFile {
        let events = bundle.hosts.iter_mut().map(|h| std::mem::take(&mut h.events)).collect();
        BundleFile {
            path: path.to_path_buf(),
            head: bundle,
            events: Events::Memory(events),
            cut: None,
            damage: RefCell::new(Vec::new()),
        }
    }

    fn chunked(path: &Path, source: Source) -> Result<BundleFile, BundleProblem> {
        let (head, chunks, cut) = match read_index(&source) {
            Ok((head, chunks)) => (head, chunks, None),
            Err(damage) => {
                let (head, chunks, cut) = walk(&source)?;
                let cut = cut.unwrap_or(damage);
                (head, chunks, Some(cut))
            }
        };
        head.check_head().map_err(BundleProblem::Invalid)?;
        check_index(&head, &chunks, source.len()).map_err(BundleProblem::Invalid)?;
        let damage = RefCell::new(cut.iter().cloned().collect());
        Ok(BundleFile { path: path.to_path_buf(), head, events: Events::Chunked { source, chunks }, cut, damage })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The capture without its events: hosts, clocks, runs, scenario, causal marks.
    pub fn head(&self) -> &Bundle {
        &self.head
    }

    /// Damage met so far (opening, and every chunk read since), each once.
    pub fn damage(&self) -> Vec<Damage> {
        self.damage.borrow().clone()
    }

    fn note(&self, d: Damage) {
        let mut all = self.damage.borrow_mut();
        if !all.contains(&d) {
            all.push(d);
        }
    }

    /// How many events host `host` has (as the index says, for a chunked bundle).
    pub fn event_count(&self, host: usize) -> u64 {
        match &self.events {
            Events::Memory(hosts) => hosts.get(host).map_or(0, |e| e.len() as u64),
            Events::Chunked { chunks, .. } => {
                chunks.iter().filter(|c| c.host as usize == host).map(|c| c.count as u64).sum()
            }
        }
    }

    /// The earliest and latest host-clock stamp of host `host`'s events.
    pub fn host_span(&self, host: usize) -> Option<(i64, i64)> {
        let spans: Vec<(i64, i64)> = match &self.events {
            Events::Memory(hosts) => hosts.get(host)?.iter().map(|e| (e.raw_ns, e.raw_ns)).collect(),
            Events::Chunked { chunks, .. } => {
                chunks.iter().filter(|c| c.host as usize == host).map(|c| (c.min_raw_ns, c.max_raw_ns)).collect()
            }
        };
        let lo = spans.iter().map(|s| s.0).min()?;
        let hi = spans.iter().map(|s| s.1).max()?;
        Some((lo, hi))
    }

    /// The runs any event belongs to.
    pub fn event_runs(&self) -> BTreeSet<u32> {
        match &self.events {
            Events::Memory(hosts) => hosts.iter().flatten().map(|e| e.run).collect(),
            Events::Chunked { chunks, .. } => chunks.iter().flat_map(|c| c.runs.iter().copied()).collect(),
        }
    }

    /// Host `host`'s events in seq order.
    pub fn host_events(&self, host: usize) -> HostEvents<'_> {
        self.host_events_where(host, |_| true)
    }

    /// Host `host`'s events in seq order, skipping chunks `keep` refuses (by run, by time): a
    /// filtered reader seeks past what it will not show. A bundle read whole ignores `keep`.
    pub fn host_events_where(&self, host: usize, keep: impl Fn(&ChunkEntry) -> bool) -> HostEvents<'_> {
        let chunks = match &self.events {
            Events::Memory(_) => Vec::new(),
            Events::Chunked { chunks, .. } => {
                chunks.iter().enumerate().filter(|(_, c)| c.host as usize == host && keep(c)).map(|(i, _)| i).collect()
            }
        };
        HostEvents {
            file: self,
            host,
            chunks,
            next_chunk: 0,
            buf: Vec::new().into_iter(),
            memory: 0,
            last: None,
            done: false,
        }
    }

    /// Reads events chunk `i`, checked against its index entry.
    fn read_events(&self, i: usize) -> Result<Vec<Event>, Damage> {
        let Events::Chunked { source, chunks } = &self.events else { return Ok(Vec::new()) };
        let entry = &chunks[i];
        let damage = |what: String| Damage { chunk: Some(i + 1), offset: entry.offset, what };
        let (kind, body, _) = read_chunk(source, entry.offset).map_err(&damage)?;
        if kind != EVENTS {
            return Err(damage(format!("the index points at a chunk of kind {kind}, not events")));
        }
        let events = decode_events(&body).map_err(&damage)?;
        let host = self.head.hosts.get(entry.host as usize).map_or("?", |h| h.name.as_str());
        let first = events.first().map(|e| e.seq);
        if events.len() != entry.count as usize || first != Some(entry.first_seq) {
            return Err(damage(format!(
                "holds {} events from seq {:?}; the index says {} from seq {}",
                events.len(),
                first,
                entry.count,
                entry.first_seq
            )));
        }
        let mut last = None;
        for e in &events {
            check_event(host, last, e).map_err(&damage)?;
            last = Some(e.seq);
        }
        Ok(events)
    }

    /// The whole bundle in memory; any damage is an error naming the file and the chunk.
    pub fn load(self) -> Result<Bundle, RecordingsError> {
        let path = self.path.clone();
        let (bundle, damage) = self.load_salvaging();
        match damage.into_iter().next() {
            Some(d) => Err(RecordingsError::BadBundle { path, problem: BundleProblem::Damaged(d.to_string()) }),
            None => Ok(bundle),
        }
    }

    /// The whole bundle in memory, with every host's events up to its first damage (a `lost`
    /// event marks it) and the damage found.
    pub fn load_salvaging(self) -> (Bundle, Vec<Damage>) {
        let mut hosts = Vec::with_capacity(self.head.hosts.len());
        for h in 0..self.head.hosts.len() {
            hosts.push(self.host_events(h).collect::<Vec<_>>());
        }
        let damage = self.damage();
        let mut bundle = self.head;
        for (h, events) in bundle.hosts.iter_mut().zip(hosts) {
            h.events = events;
        }
        (bundle, damage)
    }
}

/// A host's events, read a chunk at a time.
pub struct HostEvents<'f> {
    file: &'f BundleFile,
    host: usize,
    chunks: Vec<usize>,
    next_chunk: usize,
    buf: std::vec::IntoIter<Event>,
    /// Next index into a bundle read whole.
    memory: usize,
    last: Option<(u64, i64)>,
    done: bool,
}

impl HostEvents<'_> {
    /// The `lost` event a host's stream ends with when the file is damaged.
    fn lost(&mut self, damage: &Damage) -> Event {
        self.done = true;
        let (seq, raw_ns) = self.last.map_or((0, self.file.head.started_ns), |(s, t)| (s + 1, t));
        Event {
            seq,
            raw_ns,
            pid: 0,
            comm: String::new(),
            run: 0,
            kind: EventKind::Lost {
                count: 0,
                location: format!(
                    "{} is damaged, the events after this were not read: {damage}",
                    self.file.path.display()
                ),
                from_ns: Some(raw_ns),
            },
        }
    }
}

impl Iterator for HostEvents<'_> {
    type Item = Event;

    fn next(&mut self) -> Option<Event> {
        if let Events::Memory(hosts) = &self.file.events {
            let e = hosts.get(self.host)?.get(self.memory)?;
            self.memory += 1;
            return Some(e.clone());
        }
        loop {
            if let Some(e) = self.buf.next() {
                self.last = Some((e.seq, e.raw_ns));
                return Some(e);
            }
            if self.done {
                return None;
            }
            let Some(&i) = self.chunks.get(self.next_chunk) else {
                self.done = true;
                let cut = self.file.cut.clone()?;
                return Some(self.lost(&cut));
            };
            self.next_chunk += 1;
            match self.file.read_events(i) {
                Ok(events) => self.buf = events.into_iter(),
                Err(d) => {
                    self.file.note(d.clone());
                    return Some(self.lost(&d));
                }
            }
        }
    }
}

fn version(header: &[u8]) -> Result<u32, BundleProblem> {
    if header.len() < HEADER_LEN as usize || &header[..8] != crate::BUNDLE_MAGIC {
        return Err(BundleProblem::NotABundle);
    }
    match u32::from_le_bytes(header[8..12].try_into().expect("4 bytes")) {
        0 => Err(BundleProblem::VersionZero),
        v if v > VERSION_CHUNKED => Err(BundleProblem::TooNew { version: v }),
        v => Ok(v),
    }
}

/// The chunk at `offset`: its kind, its body, and where the next chunk starts.
fn read_chunk(source: &Source, offset: u64) -> Result<(u8, Vec<u8>, u64), String> {
    let size = source.len();
    let body_at = offset.checked_add(CHUNK_HEAD_LEN).filter(|end| *end <= size);
    let Some(body_at) = body_at else {
        return Err(format!("the chunk's header runs past the end of the file ({size} bytes)"));
    };
    let head = source.read(offset, CHUNK_HEAD_LEN).map_err(|e| format!("cannot read the chunk's header: {e}"))?;
    let kind = head[0];
    let len = u32::from_le_bytes(head[1..5].try_into().expect("4 bytes")) as u64;
    let crc = u32::from_le_bytes(head[5..9].try_into().expect("4 bytes"));
    if len > MAX_CHUNK || body_at + len > size {
        return Err(format!("the chunk claims {len} bytes; the file has {} after its header", size - body_at));
    }
    let body = source.read(body_at, len).map_err(|e| format!("cannot read the chunk: {e}"))?;
    if checksum(kind, &body) != crc {
        return Err("checksum mismatch: the chunk is corrupt".to_string());
    }
    Ok((kind, body, body_at + len))
}

fn decode_events(body: &[u8]) -> Result<Vec<Event>, String> {
    if body.len() < EVENTS_HEAD_LEN {
        return Err("an events chunk shorter than its header".into());
    }
    let count = u32::from_le_bytes(body[4..8].try_into().expect("4 bytes")) as usize;
    if count > CHUNK_EVENTS * 16 {
        return Err(format!("an events chunk claims {count} events"));
    }
    let bytes = unpack(&body[EVENTS_HEAD_LEN..]).map_err(|e| e.to_string())?;
    let events: Vec<Event> = packed().deserialize(&bytes).map_err(|e| format!("events do not decode: {e}"))?;
    if events.len() != count {
        return Err(format!("an events chunk says {count} events and holds {}", events.len()));
    }
    Ok(events)
}

fn parse_head(body: &[u8]) -> Result<Bundle, String> {
    serde_json::from_slice(body).map_err(|e| format!("the metadata does not decode: {e}"))
}

/// The head and chunk list through the trailer and index.
fn read_index(source: &Source) -> Result<(Bundle, Vec<ChunkEntry>), Damage> {
    let size = source.len();
    let at_end = |what: String| Damage { chunk: None, offset: size.saturating_sub(TRAILER_LEN), what };
    if size < HEADER_LEN + TRAILER_LEN {
        return Err(at_end("the file ends before its index (a write cut short?)".into()));
    }
    let trailer = source.read(size - TRAILER_LEN, TRAILER_LEN).map_err(|e| at_end(e.to_string()))?;
    if &trailer[8..] != TRAILER_MAGIC {
        return Err(at_end("the file does not end with its index (a write cut short, or a damaged tail)".into()));
    }
    let index_at = u64::from_le_bytes(trailer[..8].try_into().expect("8 bytes"));
    let at = |offset: u64, what: String| Damage { chunk: None, offset, what: format!("the index: {what}") };
    if !(HEADER_LEN..size - TRAILER_LEN).contains(&index_at) {
        return Err(at(index_at, "points outside the file".into()));
    }
    let (kind, body, _) = read_chunk(source, index_at).map_err(|e| at(index_at, e))?;
    if kind != INDEX {
        return Err(at(index_at, format!("a chunk of kind {kind}, not an index")));
    }
    let index: Index = serde_json::from_slice(&body).map_err(|e| at(index_at, e.to_string()))?;
    let head_at =
        |what: String| Damage { chunk: None, offset: index.head_offset, what: format!("the metadata: {what}") };
    let (kind, body, _) = read_chunk(source, index.head_offset).map_err(head_at)?;
    if kind != HEAD {
        return Err(head_at(format!("a chunk of kind {kind}, not metadata")));
    }
    let head = parse_head(&body).map_err(head_at)?;
    Ok((head, index.chunks))
}

/// Reads a file whose index is unusable by walking its chunks from the start: the last head
/// read and every events chunk before the first damage, and that damage (None when the walk
/// reached the index intact).
fn walk(source: &Source) -> Result<(Bundle, Vec<ChunkEntry>, Option<Damage>), BundleProblem> {
    let size = source.len();
    let mut offset = HEADER_LEN;
    let mut head = None;
    let mut chunks = Vec::new();
    let mut cut = None;
    for n in 0.. {
        if offset >= size {
            cut = Some(Damage { chunk: Some(n), offset, what: "the file ends here, before its index".into() });
            break;
        }
        let damage = |what: String| Damage { chunk: Some(n), offset, what };
        let (kind, body, next) = match read_chunk(source, offset) {
            Ok(c) => c,
            Err(e) => {
                cut = Some(damage(e));
                break;
            }
        };
        match kind {
            HEAD => match parse_head(&body) {
                Ok(h) => head = Some(h),
                Err(e) => {
                    cut = Some(damage(e));
                    break;
                }
            },
            EVENTS => match decode_events(&body) {
                Ok(events) if !events.is_empty() => {
                    let host = u32::from_le_bytes(body[..4].try_into().expect("4 bytes"));
                    let (first, last) = (events[0].seq, events[events.len() - 1].seq);
                    chunks.push(summarize(offset, host, &events, first, last));
                }
                Ok(_) => {}
                Err(e) => {
                    cut = Some(damage(e));
                    break;
                }
            },
            INDEX => break,
            other => {
                cut = Some(damage(format!("unknown chunk kind {other}")));
                break;
            }
        }
        offset = next;
    }
    let head = head.ok_or_else(|| {
        BundleProblem::Damaged(
            cut.as_ref().map_or("no metadata chunk".into(), |c| format!("no readable metadata before {c}")),
        )
    })?;
    Ok((head, chunks, cut))
}

/// The index names hosts the head has, offsets inside the file, and each host's chunks in
/// increasing, non-overlapping seq ranges.
fn check_index(head: &Bundle, chunks: &[ChunkEntry], size: u64) -> Result<(), String> {
    let mut last: Vec<Option<u64>> = vec![None; head.hosts.len()];
    for (i, c) in chunks.iter().enumerate() {
        let host = c.host as usize;
        if host >= head.hosts.len() {
            return Err(format!("the index's chunk {i} belongs to host {host}; the bundle has {}", head.hosts.len()));
        }
        if c.offset < HEADER_LEN || c.offset >= size || c.first_seq > c.last_seq || c.count == 0 {
            return Err(format!(
                "the index's chunk {i} is malformed (offset {}, seq {}..{})",
                c.offset, c.first_seq, c.last_seq
            ));
        }
        if last[host].is_some_and(|l| c.first_seq <= l) {
            return Err(format!("the index's chunk {i} does not follow the host's previous chunk"));
        }
        last[host] = Some(c.last_seq);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ClockModel, HostRecording};

    fn event(seq: u64, run: u32) -> Event {
        Event {
            seq,
            raw_ns: 1_000_000 + seq as i64 * 1_000,
            pid: 7,
            comm: "dd".into(),
            run,
            kind: EventKind::Syscall {
                name: "write".into(),
                args: vec![1, 0, 1],
                ret: 1,
                enter_ns: 1_000_000 + seq as i64 * 1_000 - 200,
                fd_path: Some("/tmp/out".into()),
                strings: vec![],
                addr: None,
                path_from: None,
            },
        }
    }

    fn host(name: &str, events: Vec<Event>) -> HostRecording {
        HostRecording::new(name, ClockModel::identity(), events)
    }

    /// Two hosts, the first over three chunks (the last one partial), the second in one.
    fn sample() -> Bundle {
        let a = (0..(2 * CHUNK_EVENTS as u64 + 10)).map(|s| event(s, 1 + (s as u32 >= CHUNK_EVENTS as u32) as u32));
        let b = (5..105).map(|s| event(s, 2));
        Bundle {
            capture_id: "c".into(),
            started_ns: 1,
            scenario: None,
            hosts: vec![host("a", a.collect()), host("b", b.collect())],
            runs: vec![],
            causal: vec![],
            placeholders: Default::default(),
        }
    }

    fn written() -> (tempfile::TempDir, PathBuf, Vec<u8>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.heisen");
        sample().write(&path).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        (dir, path, bytes)
    }

    /// The offsets of the file's chunks, in file order.
    fn chunk_offsets(bytes: &[u8]) -> Vec<u64> {
        let source = Source::Bytes(bytes.to_vec());
        let mut out = Vec::new();
        let mut at = HEADER_LEN;
        while at < bytes.len() as u64 - TRAILER_LEN {
            out.push(at);
            at = read_chunk(&source, at).unwrap().2;
        }
        out
    }

    #[test]
    fn a_bundle_round_trips_through_chunks_and_reads_host_by_host() {
        let (_dir, path, bytes) = written();
        let file = BundleFile::open(&path).unwrap();
        assert_eq!(file.head().hosts.len(), 2);
        assert!(file.head().hosts.iter().all(|h| h.events.is_empty()), "the head holds no events");
        assert_eq!((file.event_count(0), file.event_count(1)), (2 * CHUNK_EVENTS as u64 + 10, 100));
        assert_eq!(file.event_runs().into_iter().collect::<Vec<_>>(), vec![1, 2]);
        let b: Vec<u64> = file.host_events(1).map(|e| e.seq).collect();
        assert_eq!(b, (5..105).collect::<Vec<_>>());
        // A filter on runs skips whole chunks: run 1 lives in host a's first chunk only.
        let run1 = file.host_events_where(0, |c| c.runs.contains(&1)).count();
        assert_eq!(run1, CHUNK_EVENTS);
        let chunks = match &file.events {
            Events::Chunked { chunks, .. } => chunks.clone(),
            Events::Memory(_) => unreachable!(),
        };
        assert!(chunks.iter().all(|c| c.has_kind("syscall") && !c.has_kind("exec")));
        assert!(file.damage().is_empty());
        let whole = Bundle::read(&path).unwrap();
        assert_eq!(whole.hosts[0].events, sample().hosts[0].events);
        // head, 3 + 1 events chunks, head, index
        assert_eq!(chunk_offsets(&bytes).len(), 7);
        assert!(bytes.len() < 40 * 8300, "{} bytes", bytes.len());
    }

    #[test]
    fn a_format_1_bundle_still_reads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.heisen");
        std::fs::write(&path, Bundle::frame(&serde_json::to_vec(&sample()).unwrap())).unwrap();
        let file = BundleFile::open(&path).unwrap();
        assert_eq!(file.host_events(1).count(), 100);
        assert_eq!(file.event_runs().len(), 2);
        assert_eq!(Bundle::read(&path).unwrap().hosts[0].events.len(), 2 * CHUNK_EVENTS + 10);
    }

    #[test]
    fn damage_in_a_chunk_is_named_and_what_comes_before_it_still_reads() {
        let (_dir, path, good) = written();
        let offsets = chunk_offsets(&good);
        // A flipped bit in host a's second events chunk (file chunk 2).
        let mut flipped = good.clone();
        flipped[offsets[2] as usize + 100] ^= 0x04;
        std::fs::write(&path, &flipped).unwrap();
        let err = Bundle::read(&path).unwrap_err().to_string();
        assert!(err.contains("b.heisen") && err.contains("chunk 2 at byte") && err.contains("checksum"), "{err}");
        let file = BundleFile::open(&path).unwrap();
        let a: Vec<Event> = file.host_events(0).collect();
        assert_eq!(a.len(), CHUNK_EVENTS + 1, "the first chunk, then a lost event");
        assert!(matches!(&a[CHUNK_EVENTS].kind, EventKind::Lost { location, .. } if location.contains("chunk 2")));
        assert_eq!(file.host_events(1).count(), 100, "the other host reads whole");
        assert_eq!(file.damage().len(), 1);

        // Cut short inside host a's third chunk: no index; the walk keeps what is before.
        let cut = &good[..offsets[3] as usize + 50];
        std::fs::write(&path, cut).unwrap();
        let file = BundleFile::open(&path).unwrap();
        let damage = file.damage();
        assert!(damage[0].to_string().contains("chunk 3"), "{damage:?}");
        assert_eq!(file.host_events(0).filter(|e| e.kind.name() == "syscall").count(), 2 * CHUNK_EVENTS);
        assert_eq!(file.host_events(1).filter(|e| e.kind.name() == "syscall").count(), 0);

        // An index that lies about a chunk (offsets swapped, checksums redone).
        let source = Source::Bytes(good.clone());
        let index_at = u64::from_le_bytes(good[good.len() - 16..good.len() - 8].try_into().unwrap());
        let (_, body, _) = read_chunk(&source, index_at).unwrap();
        let mut index: Index = serde_json::from_slice(&body).unwrap();
        index.chunks.swap(0, 1);
        let body = serde_json::to_vec(&index).unwrap();
        let mut lying = good[..index_at as usize].to_vec();
        lying.push(INDEX);
        lying.extend_from_slice(&(body.len() as u32).to_le_bytes());
        lying.extend_from_slice(&checksum(INDEX, &body).to_le_bytes());
        lying.extend_from_slice(&body);
        lying.extend_from_slice(&index_at.to_le_bytes());
        lying.extend_from_slice(TRAILER_MAGIC);
        std::fs::write(&path, &lying).unwrap();
        let err = Bundle::read(&path).unwrap_err().to_string();
        assert!(err.contains("does not follow"), "{err}");
    }

    #[test]
    fn what_is_not_a_bundle_file_is_refused_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let err = BundleFile::open(Path::new("/dev/zero")).err().unwrap().to_string();
        assert!(err.contains("device"), "{err}");
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid C string path.
        assert_eq!(unsafe { nix::libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let err = BundleFile::open(&fifo).err().unwrap().to_string();
        assert!(err.contains("FIFO"), "{err}");
        // A huge sparse file with a bundle's header: its "chunk" claims more than the file has
        // left or more than any chunk may hold, so nothing of its size is ever allocated.
        let sparse = dir.path().join("sparse.heisen");
        let f = File::create(&sparse).unwrap();
        let mut head = crate::BUNDLE_MAGIC.to_vec();
        head.extend_from_slice(&VERSION_CHUNKED.to_le_bytes());
        head.extend_from_slice(&[HEAD, 0xff, 0xff, 0xff, 0x7f]);
        f.write_all_at(&head, 0).unwrap();
        f.set_len(3 << 30).unwrap();
        let err = BundleFile::open(&sparse).err().unwrap().to_string();
        assert!(err.contains("no readable metadata") && err.contains("claims"), "{err}");
    }
}
