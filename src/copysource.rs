//! The source side of the parallel copy: a plain SQL session of our own
//! protocol client (not tokio-postgres) in the slot's exported snapshot, whose
//! `COPY ... TO STDOUT` data goes to the destination's COPY FROM in large
//! chunks.
//!
//! The source sends one CopyData message per row. tokio-postgres hands each on
//! as a message of its own (parsed, reference-counted, through its connection
//! task's channel): for a table of millions of short rows that per-row work,
//! and counting the rows again on the destination side, was a sizeable part of
//! the copy's CPU on a machine where source and destination share the cores.
//! `ReplConnection::copy_out` takes the rows out of its read buffer in place
//! and counts them as it goes.

use crate::error::WorkerError;
use crate::net::{Net, Waker};
use crate::pg::Pg;
use crate::replconn::{ConnParams, ReplConnection, ReplError};
use bytes::Bytes;
use std::sync::Arc;
use tokio::sync::Mutex;

/// Bound for `close`.
const CLOSE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// What the copy reader receives: a chunk of COPY data and the rows it holds
/// (None: not counted, the reader counts them), or the copy's error.
pub type Chunk = Result<(Bytes, Option<u64>), String>;

/// A source session in the snapshot of the copy, for its COPY TO STDOUT.
#[derive(Clone)]
pub struct CopyConn(Arc<Mutex<ReplConnection>>);

impl CopyConn {
    /// Connects (as the connector's other sessions, without `replication`) and
    /// starts a transaction that sees exactly `snapshot`.
    pub async fn open(p: &ConnParams, snapshot: &str) -> Result<CopyConn, WorkerError> {
        let mut p = p.clone();
        p.replication = false;
        let mut c = ReplConnection::connect(&p).await?;
        if let Err(e) = c
            .simple_query(&crate::snapshot::import_snapshot_sql(snapshot))
            .await
        {
            let _ = c.close().await;
            return Err(WorkerError::Source(format!(
                "importing the snapshot {snapshot} of the copy on the source failed: {}",
                error_text(&e)
            )));
        }
        Ok(CopyConn(Arc::new(Mutex::new(c))))
    }

    /// Ends the session politely (Terminate), so that the source does not log
    /// a connection lost with its transaction open. Waits on the network thread
    /// (for a copy that failed, until its reading ended, briefly).
    pub fn close(self, pg: &Pg, net: &Net) {
        let conn = self.0;
        let _ = net.call(pg, async move {
            let _ = tokio::time::timeout(CLOSE_WAIT, async move {
                conn.lock().await.terminate().await;
            })
            .await;
        });
    }

    /// On the network thread: runs `sql` (a COPY ... TO STDOUT) and sends its
    /// data to `tx` in chunks of about `chunk` bytes, waking the main thread
    /// after each. An error goes to `tx` as its text.
    pub async fn copy_out(
        self,
        sql: String,
        chunk: usize,
        tx: tokio::sync::mpsc::Sender<Chunk>,
        waker: Waker,
    ) {
        let mut c = self.0.lock().await;
        let send = |b: Bytes, rows: u64| {
            let (tx, waker) = (tx.clone(), waker.clone());
            async move {
                let ok = tx.send(Ok((b, Some(rows)))).await.is_ok();
                waker.wake();
                ok
            }
        };
        if let Err(e) = c.copy_out(&sql, chunk, send).await {
            let _ = tx
                .send(Err(format!(
                    "{sql} on the source failed: {}",
                    error_text(&e)
                )))
                .await;
            waker.wake();
        }
        // dropping tx tells the reader that the data is complete (copy_stream
        // wakes it then)
    }
}

/// An error of the copy's session in words about it (ReplError's own words
/// speak of the replication connection).
fn error_text(e: &ReplError) -> String {
    match e {
        ReplError::Closed => "the source server closed the connection".into(),
        ReplError::Protocol(m) => format!("protocol error: {m}"),
        ReplError::Tls { target, reason } if target.is_empty() => format!("SSL error: {reason}"),
        other => other.to_string(),
    }
}
