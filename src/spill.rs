//! Streamed transactions (pgoutput protocol version 2, `streaming 'on'`).
//!
//! A source transaction larger than the source's `logical_decoding_work_mem` is
//! sent while it runs, in blocks between Stream Start and Stream Stop that
//! interleave with other transactions, and ends with Stream Commit or Stream
//! Abort. The network thread keeps each one's messages, as they arrive, in a
//! file of its own under the data directory (so memory stays bounded whatever
//! the transaction's size, and the source no longer decodes it all again at its
//! commit), and at its commit replays them as one ordinary transaction (Begin,
//! its changes, Commit) in commit order: the applier, the batching and the
//! replication origin see what they see for any other transaction, so its
//! changes commit with its commit position exactly as before.
//!
//! An abort drops the file; a subtransaction's abort cuts the file back to
//! that subtransaction's first change (what follows it belongs to it or to its
//! own subtransactions), as PostgreSQL's own subscriber does. The files are
//! transient: after a restart the source sends again every transaction whose
//! commit we had not applied, so a new stream empties the directory first.

use crate::decoder::{Decoder, LogicalMessage};
use bytes::{Bytes, BytesMut};
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Where a connector's streamed transactions wait: `<data dir>/pg_synchdb/stream/<slot>`.
pub fn spill_dir(data_dir: &Path, slot: &str) -> PathBuf {
    data_dir.join("pg_synchdb").join("stream").join(slot)
}

/// The file of one streamed transaction being received.
struct SpillFile {
    path: PathBuf,
    w: BufWriter<File>,
    len: u64,
    /// Each subtransaction's first change, in the order they appeared.
    subxacts: Vec<(u32, u64)>,
}

/// The streamed transactions in progress on one replication connection.
pub struct Spill {
    dir: PathBuf,
    files: HashMap<u32, SpillFile>,
    /// The transaction whose block is being received (between Stream Start and
    /// Stream Stop).
    current: Option<u32>,
    /// Bytes waiting in all files now (kept in step with every write, cut and
    /// drop; the unit test checks it returns to 0).
    pub bytes: u64,
}

/// Context for an I/O error on a spill file.
fn ctx(what: &str, path: &Path, e: io::Error) -> String {
    format!("{what} {} failed: {e}", path.display())
}

impl Spill {
    /// Opens `dir`, removing what an earlier stream left there.
    pub fn open(dir: PathBuf) -> Result<Spill, String> {
        std::fs::create_dir_all(&dir).map_err(|e| ctx("creating directory", &dir, e))?;
        let entries = std::fs::read_dir(&dir).map_err(|e| ctx("reading directory", &dir, e))?;
        for entry in entries.flatten() {
            let p = entry.path();
            if p.extension().is_some_and(|x| x == "spill") {
                std::fs::remove_file(&p).map_err(|e| ctx("removing", &p, e))?;
            }
        }
        Ok(Spill {
            dir,
            files: HashMap::new(),
            current: None,
            bytes: 0,
        })
    }

    /// Whether messages now belong to a streamed transaction.
    pub fn in_stream(&self) -> bool {
        self.current.is_some()
    }

    /// The transaction whose block is being received, if any.
    pub fn current(&self) -> Option<u32> {
        self.current
    }

    /// Stream Start of transaction `xid`.
    pub fn start(&mut self, xid: u32) -> Result<(), String> {
        if !self.files.contains_key(&xid) {
            let path = self.dir.join(format!("{xid}.spill"));
            let f = OpenOptions::new()
                .create(true)
                .truncate(true)
                .read(true)
                .write(true)
                .open(&path)
                .map_err(|e| ctx("creating", &path, e))?;
            self.files.insert(
                xid,
                SpillFile {
                    path,
                    w: BufWriter::with_capacity(256 * 1024, f),
                    len: 0,
                    subxacts: Vec::new(),
                },
            );
        }
        self.current = Some(xid);
        Ok(())
    }

    /// Stream Stop.
    pub fn stop(&mut self) {
        self.current = None;
    }

    /// A message of the current block: its WAL position and its bytes, and the
    /// (sub)transaction it names.
    pub fn write(&mut self, wal_start: u64, sub: Option<u32>, data: &[u8]) -> Result<(), String> {
        let xid = self
            .current
            .ok_or_else(|| "a streamed change arrived outside Stream Start/Stop".to_string())?;
        let f = self
            .files
            .get_mut(&xid)
            .ok_or_else(|| format!("no spill file for streamed transaction {xid}"))?;
        if let Some(s) = sub {
            if s != xid && !f.subxacts.iter().any(|(x, _)| *x == s) {
                f.subxacts.push((s, f.len));
            }
        }
        let len =
            u32::try_from(data.len()).map_err(|_| "a streamed message over 4 GB".to_string())?;
        let mut head = [0u8; 12];
        head[..8].copy_from_slice(&wal_start.to_le_bytes());
        head[8..].copy_from_slice(&len.to_le_bytes());
        f.w.write_all(&head)
            .and_then(|()| f.w.write_all(data))
            .map_err(|e| ctx("writing", &f.path, e))?;
        f.len += 12 + data.len() as u64;
        self.bytes += 12 + data.len() as u64;
        Ok(())
    }

    /// Stream Abort: the whole transaction, or subtransaction `subxid` of it.
    pub fn abort(&mut self, xid: u32, subxid: u32) -> Result<(), String> {
        if xid == subxid {
            if let Some(f) = self.files.remove(&xid) {
                self.bytes = self.bytes.saturating_sub(f.len);
                drop(f.w);
                std::fs::remove_file(&f.path).map_err(|e| ctx("removing", &f.path, e))?;
            }
            return Ok(());
        }
        let Some(f) = self.files.get_mut(&xid) else {
            return Ok(());
        };
        // a subtransaction without changes has nothing in the file
        let Some(i) = f.subxacts.iter().position(|(x, _)| *x == subxid) else {
            return Ok(());
        };
        let cut = f.subxacts[i].1;
        f.subxacts.truncate(i);
        f.w.flush().map_err(|e| ctx("writing", &f.path, e))?;
        let file = f.w.get_mut();
        file.set_len(cut)
            .and_then(|()| file.seek(SeekFrom::Start(cut)).map(|_| ()))
            .map_err(|e| ctx("truncating", &f.path, e))?;
        self.bytes = self.bytes.saturating_sub(f.len - cut);
        f.len = cut;
        Ok(())
    }

    /// Stream Commit: the transaction's messages, to be replayed.
    pub fn commit(&mut self, xid: u32) -> Result<Replay, String> {
        let Some(f) = self.files.remove(&xid) else {
            // streamed without any change we receive (all of another publication)
            return Ok(Replay {
                r: None,
                path: None,
                decoder: Decoder::streamed(2),
            });
        };
        self.bytes = self.bytes.saturating_sub(f.len);
        let SpillFile { path, w, .. } = f;
        let mut file = w
            .into_inner()
            .map_err(|e| ctx("writing", &path, e.into_error()))?;
        file.seek(SeekFrom::Start(0))
            .map_err(|e| ctx("reading", &path, e))?;
        Ok(Replay {
            r: Some(BufReader::with_capacity(256 * 1024, file)),
            path: Some(path),
            decoder: Decoder::streamed(2),
        })
    }
}

/// A committed streamed transaction's messages, read back in order. Its file
/// goes when it is dropped.
pub struct Replay {
    r: Option<BufReader<File>>,
    path: Option<PathBuf>,
    decoder: Decoder,
}

impl Replay {
    /// The next message and its WAL position; None at the end.
    pub fn next_message(&mut self) -> Result<Option<(u64, LogicalMessage, usize)>, String> {
        let Some(r) = self.r.as_mut() else {
            return Ok(None);
        };
        let path = self.path.clone().unwrap_or_default();
        let mut head = [0u8; 12];
        match r.read_exact(&mut head) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(ctx("reading", &path, e)),
        }
        let mut lsn = [0u8; 8];
        lsn.copy_from_slice(&head[..8]);
        let mut len = [0u8; 4];
        len.copy_from_slice(&head[8..]);
        let len = u32::from_le_bytes(len) as usize;
        let mut buf = BytesMut::zeroed(len);
        r.read_exact(&mut buf)
            .map_err(|e| ctx("reading", &path, e))?;
        let data: Bytes = buf.freeze();
        let msg = self.decoder.decode(data).map_err(|e| {
            format!(
                "decoding a streamed change read back from {}: {e}",
                path.display()
            )
        })?;
        Ok(Some((u64::from_le_bytes(lsn), msg, len)))
    }
}

impl Drop for Replay {
    fn drop(&mut self) {
        self.r = None;
        if let Some(p) = &self.path {
            let _ = std::fs::remove_file(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An Insert as pgoutput sends it inside a stream: tag, xid, relation,
    /// 'N', one text column.
    fn insert(xid: u32, v: &str) -> Vec<u8> {
        let mut m = vec![b'I'];
        m.extend_from_slice(&xid.to_be_bytes());
        m.extend_from_slice(&16384u32.to_be_bytes());
        m.push(b'N');
        m.extend_from_slice(&1u16.to_be_bytes());
        m.push(b't');
        m.extend_from_slice(&(v.len() as u32).to_be_bytes());
        m.extend_from_slice(v.as_bytes());
        m
    }

    fn values(mut r: Replay) -> Vec<String> {
        let mut out = Vec::new();
        while let Some((_, m, _)) = r.next_message().expect("read") {
            if let LogicalMessage::Insert { new, .. } = m {
                if let Some(crate::decoder::TupleValue::Text(b)) = new.first() {
                    out.push(String::from_utf8_lossy(b).into_owned());
                }
            }
        }
        out
    }

    #[test]
    fn commit_replays_and_subtransaction_abort_cuts() {
        let dir = std::env::temp_dir().join(format!("sdb_spill_test_{}", std::process::id()));
        let mut s = Spill::open(dir.clone()).expect("open");
        s.start(100).expect("start");
        s.write(1, Some(100), &insert(100, "a")).expect("w");
        s.write(2, Some(101), &insert(101, "b")).expect("w");
        s.stop();
        // another streamed transaction interleaves
        s.start(200).expect("start");
        s.write(3, Some(200), &insert(200, "x")).expect("w");
        s.stop();
        s.start(100).expect("start");
        s.write(4, Some(102), &insert(102, "c")).expect("w");
        s.write(5, Some(100), &insert(100, "d")).expect("w");
        s.stop();
        // subtransaction 102 rolled back: c and what followed it go
        s.abort(100, 102).expect("abort sub");
        s.start(100).expect("start");
        s.write(6, Some(100), &insert(100, "e")).expect("w");
        s.stop();
        s.abort(200, 200).expect("abort");
        assert_eq!(values(s.commit(100).expect("commit")), ["a", "b", "e"]);
        assert_eq!(s.bytes, 0);
        // nothing is left behind
        assert_eq!(std::fs::read_dir(&dir).expect("dir").count(), 0);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
