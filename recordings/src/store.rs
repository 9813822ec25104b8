//! The agent's on-disk store: one sled tree per capture holding batches of events, each batch one
//! value keyed by the big-endian sequence number of its first event, so a range scan returns
//! events in same-host order.
//!
//! Why one value per batch: sled copies a leaf node on every insert, so storing each event as its
//! own value capped ingest near 0.1 M events/s (docs/BENCHMARKS.md); a batch of hundreds of
//! events costs one insert. Batches are written as the agent's sink fills them (at most 50 ms
//! apart), sled writes its buffers out every `FLUSH_EVERY_MS` (100 ms), and a stopped capture is
//! flushed and marked stopped: a crash of the agent loses at most the last `CRASH_WINDOW_MS`
//! (measured: its last stored event 67–128 ms before a kill -9), never a stopped capture.
//!
//! Why varints and LZ4: sled copies a value several times on its way to disk (log buffer, leaf
//! splits every 16 values, whole nodes written as blob files past 128 KiB), so its cost grows
//! with the bytes stored, and in a storm it was the agent's largest cost per event. A batch of
//! 512 recorded writes is 61 KiB in fixed-width bincode, 32 KiB with varints, 10 KiB once LZ4
//! has taken the repetition out (names, paths, nearby stamps); storing it costs about half
//! (docs/BENCHMARKS.md). Captures stored by earlier versions are still read: one fixed-width
//! value per event (`events/` trees), then fixed-width batches (`batches/` trees).

use std::path::{Path, PathBuf};

use bincode::Options;

use crate::{Event, RecordingsError};

/// The tree of captures stopped cleanly (its name has no layout prefix, so it is no capture).
const STOPPED_TREE: &str = "meta/stopped";

/// How often sled writes its buffers to the file (ms).
pub const FLUSH_EVERY_MS: u64 = 100;

/// What a crash of the agent process can lose at most: the events its sink had not yet handed
/// to the store (batches go every 50 ms) and what sled had not yet written (every
/// [`FLUSH_EVERY_MS`]). Bundles state it where an agent crashed.
pub const CRASH_WINDOW_MS: u64 = FLUSH_EVERY_MS + 50;

/// The agent's store of captures (a sled database in the agent's data dir).
pub struct Store {
    db: sled::Db,
    path: PathBuf,
}

impl Store {
    /// Opens (or creates) the store under `dir`. sled writes its buffers out every
    /// [`FLUSH_EVERY_MS`], which bounds what a crash of the agent can lose (see `CRASH_WINDOW_MS`).
    pub fn open(dir: &Path) -> Result<Store, RecordingsError> {
        let path = dir.join("store");
        let db = sled::Config::new()
            .path(&path)
            .flush_every_ms(Some(FLUSH_EVERY_MS))
            .open()
            .map_err(|source| RecordingsError::Store { op: "open", path: path.clone(), source })?;
        Ok(Store { db, path })
    }

    /// Whether `capture` has a tree in the store (never creates one: ids come from the wire).
    pub fn has(&self, capture: &str) -> bool {
        let names = self.db.tree_names();
        [Layout::PerEvent, Layout::Batches, Layout::Packed]
            .iter()
            .any(|layout| names.iter().any(|n| n.as_ref() == format!("{}{capture}", layout.prefix()).as_bytes()))
    }

    fn tree(&self, capture: &str) -> Result<sled::Tree, RecordingsError> {
        self.db.open_tree(format!("{}{capture}", Layout::Packed.prefix())).map_err(|e| self.err("open tree", e))
    }

    /// The trees of `capture` in the layouts of earlier versions that exist (never created
    /// here), oldest layout first.
    fn legacy_trees(&self, capture: &str) -> Result<Vec<(Layout, sled::Tree)>, RecordingsError> {
        let names = self.db.tree_names();
        let mut trees = Vec::new();
        for layout in [Layout::PerEvent, Layout::Batches] {
            let name = format!("{}{capture}", layout.prefix());
            if names.iter().any(|n| n.as_ref() == name.as_bytes()) {
                trees.push((layout, self.db.open_tree(name).map_err(|e| self.err("open tree", e))?));
            }
        }
        Ok(trees)
    }

    fn err(&self, op: &'static str, source: sled::Error) -> RecordingsError {
        RecordingsError::Store { op, path: self.path.clone(), source }
    }

    /// Appends events (already numbered by the caller, in increasing order) as one batch.
    pub fn append(&self, capture: &str, events: &[Event]) -> Result<(), RecordingsError> {
        let Some(first) = events.first() else { return Ok(()) };
        let value = packed()
            .serialize(events)
            .map_err(|source| RecordingsError::Encode { what: "encoding a batch", source })?;
        let value = lz4_flex::block::compress_prepend_size(&value);
        self.tree(capture)?.insert(first.seq.to_be_bytes(), value).map_err(|e| self.err("append", e))?;
        Ok(())
    }

    /// The sequence number the next event of `capture` gets (0 for a new capture).
    pub fn next_seq(&self, capture: &str) -> Result<u64, RecordingsError> {
        let mut next = 0;
        for (layout, tree) in self.legacy_trees(capture)?.into_iter().chain([(Layout::Packed, self.tree(capture)?)]) {
            if let Some((_, value)) = tree.last().map_err(|e| self.err("read", e))? {
                next = next.max(layout.decode(&value)?.last().map_or(0, |e| e.seq + 1));
            }
        }
        Ok(next)
    }

    /// Up to `limit` events of `capture` starting at `from_seq`, in sequence order.
    pub fn read(&self, capture: &str, from_seq: u64, limit: usize) -> Result<Vec<Event>, RecordingsError> {
        let mut out = Vec::new();
        for (layout, tree) in self.legacy_trees(capture)?.into_iter().chain([(Layout::Packed, self.tree(capture)?)]) {
            // The value holding `from_seq` starts at or before it.
            let start = match tree.range(..=from_seq.to_be_bytes()).next_back() {
                Some(item) => item.map_err(|e| self.err("read", e))?.0.to_vec(),
                None => from_seq.to_be_bytes().to_vec(),
            };
            for item in tree.range(start..) {
                if out.len() >= limit {
                    break;
                }
                let (_, value) = item.map_err(|e| self.err("read", e))?;
                let left = limit - out.len();
                out.extend(layout.decode(&value)?.into_iter().filter(|e| e.seq >= from_seq).take(left));
            }
        }
        Ok(out)
    }

    /// Notes that `capture` was stopped cleanly (its last events are all stored), so a later run
    /// of the agent tells it from one that was recording when the agent died.
    pub fn mark_stopped(&self, capture: &str) -> Result<(), RecordingsError> {
        let tree = self.db.open_tree(STOPPED_TREE).map_err(|e| self.err("open tree", e))?;
        tree.insert(capture.as_bytes(), &[1u8]).map_err(|e| self.err("mark stopped", e))?;
        Ok(())
    }

    /// Whether `capture` was stopped cleanly (see `mark_stopped`).
    pub fn was_stopped(&self, capture: &str) -> Result<bool, RecordingsError> {
        let tree = self.db.open_tree(STOPPED_TREE).map_err(|e| self.err("open tree", e))?;
        tree.contains_key(capture.as_bytes()).map_err(|e| self.err("read", e))
    }

    /// Flushes everything to disk.
    pub fn flush(&self) -> Result<(), RecordingsError> {
        self.db.flush().map(|_| ()).map_err(|e| self.err("flush", e))
    }
}

/// How a version of heisen laid a capture's events out in sled (the tree name's prefix says).
#[derive(Clone, Copy, Debug)]
enum Layout {
    /// One fixed-width bincode value per event (the first versions).
    PerEvent,
    /// Fixed-width bincode batches.
    Batches,
    /// LZ4-compressed varint bincode batches (written now).
    Packed,
}

impl Layout {
    fn prefix(self) -> &'static str {
        match self {
            Layout::PerEvent => "events/",
            Layout::Batches => "batches/",
            Layout::Packed => "packed/",
        }
    }

    /// The events of one stored value.
    fn decode(self, value: &[u8]) -> Result<Vec<Event>, RecordingsError> {
        let encode = |source| RecordingsError::Encode { what: "decoding a stored batch", source };
        match self {
            Layout::PerEvent => bincode::deserialize(value).map(|e| vec![e]).map_err(encode),
            Layout::Batches => bincode::deserialize(value).map_err(encode),
            Layout::Packed => packed().deserialize(&unpack(value)?).map_err(encode),
        }
    }
}

/// The encoding of `packed/` batches: bincode with varints, little endian, no trailing bytes
/// (then LZ4-compressed, see [`unpack`]).
pub(crate) fn packed() -> impl bincode::Options {
    bincode::DefaultOptions::new()
}

/// The largest batch a `packed/` value may claim to hold once decompressed: far above any
/// batch the sink writes (512 events, ~30 KiB), so a corrupt length is an error, not an
/// allocation of gigabytes.
const MAX_UNPACKED: usize = 64 << 20;

/// Decompresses a `packed/` value: a little-endian u32 length, then an LZ4 block.
pub(crate) fn unpack(value: &[u8]) -> Result<Vec<u8>, RecordingsError> {
    let corrupt = |why: String| RecordingsError::CorruptBatch { why };
    let (len, block) = value.split_first_chunk::<4>().ok_or_else(|| corrupt("shorter than its length".into()))?;
    let len = u32::from_le_bytes(*len) as usize;
    if len > MAX_UNPACKED {
        return Err(corrupt(format!("claims {len} bytes")));
    }
    lz4_flex::block::decompress(block, len).map_err(|e| corrupt(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EventKind;

    fn event(seq: u64) -> Event {
        Event {
            seq,
            raw_ns: seq as i64 * 10,
            pid: 7,
            comm: "w".into(),
            run: 1,
            kind: EventKind::Exit { exit_code: 0, killed_by: None },
        }
    }

    #[test]
    fn survives_reopen_in_sequence_order() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            assert_eq!(store.next_seq("c1").unwrap(), 0);
            store.append("c1", &(0..300).map(event).collect::<Vec<_>>()).unwrap();
            store.append("c2", &[event(0)]).unwrap();
            store.flush().unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.next_seq("c1").unwrap(), 300);
        let page = store.read("c1", 256, 100).unwrap();
        assert_eq!(page.iter().map(|e| e.seq).collect::<Vec<_>>(), (256..300).collect::<Vec<_>>());
        assert_eq!(store.read("c2", 0, 10).unwrap().len(), 1);
        // Pages that start inside a batch and span batches.
        store.append("c1", &(300..310).map(event).collect::<Vec<_>>()).unwrap();
        let seqs = |from, limit| store.read("c1", from, limit).unwrap().iter().map(|e| e.seq).collect::<Vec<_>>();
        assert_eq!(seqs(298, 5), vec![298, 299, 300, 301, 302]);
        assert_eq!(seqs(305, 100), (305..310).collect::<Vec<_>>());
        assert_eq!(seqs(310, 100), Vec::<u64>::new());
        assert_eq!(store.next_seq("c1").unwrap(), 310);
    }

    #[test]
    fn captures_stored_by_earlier_versions_are_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let per_event = store.db.open_tree("events/c").unwrap();
        for e in (0..5).map(event) {
            per_event.insert(e.seq.to_be_bytes(), bincode::serialize(&e).unwrap()).unwrap();
        }
        assert_eq!(store.next_seq("c").unwrap(), 5);
        let batches = store.db.open_tree("batches/c").unwrap();
        let fixed: Vec<Event> = (5..8).map(event).collect();
        batches.insert(5u64.to_be_bytes(), bincode::serialize(&fixed).unwrap()).unwrap();
        assert_eq!(store.next_seq("c").unwrap(), 8);
        store.append("c", &(8..10).map(event).collect::<Vec<_>>()).unwrap();
        let seqs: Vec<u64> = store.read("c", 3, 100).unwrap().iter().map(|e| e.seq).collect();
        assert_eq!(seqs, (3..10).collect::<Vec<_>>());
        let seqs: Vec<u64> = store.read("c", 6, 3).unwrap().iter().map(|e| e.seq).collect();
        assert_eq!(seqs, vec![6, 7, 8]);
        assert_eq!(store.next_seq("c").unwrap(), 10);
    }

    #[test]
    fn a_batch_of_writes_is_stored_in_a_quarter_of_the_fixed_width_bytes() {
        let write = |seq: u64| Event {
            seq: 1_000_000 + seq,
            raw_ns: 1_764_000_000_000_000_000 + seq as i64 * 700,
            pid: 41_234,
            comm: "storm".into(),
            run: 1,
            kind: EventKind::Syscall {
                name: "write".into(),
                args: vec![3, 0x7ffd_1234_5678, 1],
                ret: 1,
                enter_ns: 1_764_000_000_000_000_000 + seq as i64 * 700 - 300,
                fd_path: Some("/dev/null".into()),
                strings: vec![],
                addr: None,
                path_from: Some(crate::PathFrom::Trace),
            },
        };
        let batch: Vec<Event> = (0..512).map(write).collect();
        let fixed = bincode::serialize(&batch).unwrap().len();
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.append("c", &batch).unwrap();
        let stored = store.tree("c").unwrap().get(1_000_000u64.to_be_bytes()).unwrap().unwrap().len();
        assert!(stored * 4 <= fixed, "stored {stored} bytes against fixed-width {fixed}");
        assert_eq!(store.read("c", 1_000_000, 1000).unwrap(), batch);
    }

    #[test]
    fn a_corrupt_value_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let tree = store.tree("c").unwrap();
        // Too short, a length of 4 GiB, garbage after a sane length, a valid block of garbage.
        let garbage = lz4_flex::block::compress_prepend_size(&[0xff; 40]);
        for value in [vec![1, 0], vec![0xff; 7], [&[100u8, 0, 0, 0][..], &[0xf0; 20]].concat(), garbage] {
            tree.insert(0u64.to_be_bytes(), value.clone()).unwrap();
            assert!(
                matches!(
                    store.read("c", 0, 10),
                    Err(RecordingsError::Encode { .. } | RecordingsError::CorruptBatch { .. })
                ),
                "{value:?}"
            );
            assert!(store.next_seq("c").is_err());
        }
    }
}
