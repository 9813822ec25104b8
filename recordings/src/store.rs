//! The agent's on-disk store: one sled tree per capture holding batches of events, each batch one
//! value keyed by the big-endian sequence number of its first event, so a range scan returns
//! events in same-host order.
//!
//! Why one value per batch: sled copies a leaf node on every insert, so storing each event as its
//! own value capped ingest near 0.1 M events/s (docs/BENCHMARKS.md); a batch of hundreds of
//! events costs one insert. Batches are written as the agent's sink fills them (at most 20 ms
//! apart) and flushed when a capture stops, so a crash loses at most the batch in flight, never
//! a stopped capture. Captures stored one value per event by earlier versions (`events/` trees)
//! are still read.

use std::path::{Path, PathBuf};

use crate::{Event, RecordingsError};

/// The agent's store of captures (a sled database in the agent's data dir).
pub struct Store {
    db: sled::Db,
    path: PathBuf,
}

impl Store {
    /// Opens (or creates) the store under `dir`.
    pub fn open(dir: &Path) -> Result<Store, RecordingsError> {
        let path = dir.join("store");
        let db =
            sled::open(&path).map_err(|source| RecordingsError::Store { op: "open", path: path.clone(), source })?;
        Ok(Store { db, path })
    }

    fn tree(&self, capture: &str) -> Result<sled::Tree, RecordingsError> {
        self.db.open_tree(format!("batches/{capture}")).map_err(|e| self.err("open tree", e))
    }

    /// The per-event tree of an earlier version, if this capture has one (never created here).
    fn legacy_tree(&self, capture: &str) -> Result<Option<sled::Tree>, RecordingsError> {
        let name = format!("events/{capture}");
        if !self.db.tree_names().iter().any(|n| n.as_ref() == name.as_bytes()) {
            return Ok(None);
        }
        self.db.open_tree(name).map(Some).map_err(|e| self.err("open tree", e))
    }

    fn err(&self, op: &'static str, source: sled::Error) -> RecordingsError {
        RecordingsError::Store { op, path: self.path.clone(), source }
    }

    /// Appends events (already numbered by the caller, in increasing order) as one batch.
    pub fn append(&self, capture: &str, events: &[Event]) -> Result<(), RecordingsError> {
        let Some(first) = events.first() else { return Ok(()) };
        let value = bincode::serialize(events).map_err(|e| RecordingsError::Encode(e.to_string()))?;
        self.tree(capture)?.insert(first.seq.to_be_bytes(), value).map_err(|e| self.err("append", e))?;
        Ok(())
    }

    /// The sequence number the next event of `capture` gets (0 for a new capture).
    pub fn next_seq(&self, capture: &str) -> Result<u64, RecordingsError> {
        let batches = match self.tree(capture)?.last().map_err(|e| self.err("read", e))? {
            Some((_, value)) => decode_batch(&value)?.last().map_or(0, |e| e.seq + 1),
            None => 0,
        };
        let legacy = match self.legacy_tree(capture)? {
            Some(tree) => tree.last().map_err(|e| self.err("read", e))?.map_or(0, |(key, _)| seq_of(&key) + 1),
            None => 0,
        };
        Ok(batches.max(legacy))
    }

    /// Up to `limit` events of `capture` starting at `from_seq`, in sequence order.
    pub fn read(&self, capture: &str, from_seq: u64, limit: usize) -> Result<Vec<Event>, RecordingsError> {
        let mut out = Vec::new();
        if let Some(tree) = self.legacy_tree(capture)? {
            for item in tree.range(from_seq.to_be_bytes()..).take(limit) {
                let (_, value) = item.map_err(|e| self.err("read", e))?;
                out.push(bincode::deserialize(&value).map_err(|e| RecordingsError::Encode(e.to_string()))?);
            }
        }
        let tree = self.tree(capture)?;
        // The batch holding `from_seq` starts at or before it.
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
            out.extend(decode_batch(&value)?.into_iter().filter(|e| e.seq >= from_seq).take(left));
        }
        Ok(out)
    }

    /// Flushes everything to disk.
    pub fn flush(&self) -> Result<(), RecordingsError> {
        self.db.flush().map(|_| ()).map_err(|e| self.err("flush", e))
    }
}

fn decode_batch(value: &[u8]) -> Result<Vec<Event>, RecordingsError> {
    bincode::deserialize(value).map_err(|e| RecordingsError::Encode(e.to_string()))
}

fn seq_of(key: &[u8]) -> u64 {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&key[..8]);
    u64::from_be_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EventKind;

    fn event(seq: u64) -> Event {
        Event { seq, raw_ns: seq as i64 * 10, pid: 7, comm: "w".into(), run: 1, kind: EventKind::Exit { exit_code: 0 } }
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
    fn captures_stored_one_value_per_event_are_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let old = store.db.open_tree("events/c").unwrap();
        for e in (0..5).map(event) {
            old.insert(e.seq.to_be_bytes(), bincode::serialize(&e).unwrap()).unwrap();
        }
        assert_eq!(store.next_seq("c").unwrap(), 5);
        store.append("c", &(5..8).map(event).collect::<Vec<_>>()).unwrap();
        let seqs: Vec<u64> = store.read("c", 3, 100).unwrap().iter().map(|e| e.seq).collect();
        assert_eq!(seqs, vec![3, 4, 5, 6, 7]);
        assert_eq!(store.next_seq("c").unwrap(), 8);
    }
}
