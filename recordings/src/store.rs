//! The agent's on-disk store: one sled tree per capture, keyed by big-endian host sequence
//! number, so a range scan returns events in same-host order.
//!
//! Batches are written with one sled batch each and flushed when a capture stops, so a crash
//! loses at most the batch in flight, never a stopped capture.

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
        self.db.open_tree(format!("events/{capture}")).map_err(|e| self.err("open tree", e))
    }

    fn err(&self, op: &'static str, source: sled::Error) -> RecordingsError {
        RecordingsError::Store { op, path: self.path.clone(), source }
    }

    /// Appends events (already numbered by the caller) as one batch.
    pub fn append(&self, capture: &str, events: &[Event]) -> Result<(), RecordingsError> {
        let tree = self.tree(capture)?;
        let mut batch = sled::Batch::default();
        for event in events {
            let value = bincode::serialize(event).map_err(|e| RecordingsError::Encode(e.to_string()))?;
            batch.insert(&event.seq.to_be_bytes(), value);
        }
        tree.apply_batch(batch).map_err(|e| self.err("append", e))
    }

    /// The sequence number the next event of `capture` gets (0 for a new capture).
    pub fn next_seq(&self, capture: &str) -> Result<u64, RecordingsError> {
        let tree = self.tree(capture)?;
        Ok(match tree.last().map_err(|e| self.err("read", e))? {
            Some((key, _)) => seq_of(&key) + 1,
            None => 0,
        })
    }

    /// Up to `limit` events of `capture` starting at `from_seq`, in sequence order.
    pub fn read(&self, capture: &str, from_seq: u64, limit: usize) -> Result<Vec<Event>, RecordingsError> {
        let tree = self.tree(capture)?;
        let mut out = Vec::new();
        for item in tree.range(from_seq.to_be_bytes()..).take(limit) {
            let (_, value) = item.map_err(|e| self.err("read", e))?;
            out.push(bincode::deserialize(&value).map_err(|e| RecordingsError::Encode(e.to_string()))?);
        }
        Ok(out)
    }

    /// Flushes everything to disk.
    pub fn flush(&self) -> Result<(), RecordingsError> {
        self.db.flush().map(|_| ()).map_err(|e| self.err("flush", e))
    }
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
    }
}
