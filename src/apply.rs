//! Change data capture: the replication stream is read and decoded on the network
//! thread; the main thread applies whole source transactions, several per
//! destination transaction, through the executor-level operations of the shim, and
//! records the source commit LSN with the replication origin in the same
//! transaction. The source is told only positions that are durable here.

use crate::config::{quote_ident, ConnectorConfig};
use crate::ddl::ColumnChange;
use crate::decoder::{Decoder, LogicalMessage, RelColumn, TupleValue};
use crate::error::{DestContext, WorkerError};
use crate::ffi::{SdbValue, SDB_VALUE_ABSENT, SDB_VALUE_NULL, SDB_VALUE_TEXT, SDB_VALUE_UNCHANGED};
use crate::net::{Net, Waker};
use crate::objmap::{DestColumn, DestTable, Rules};
use crate::offset::{MessageType, Offset};
use crate::pg::{Pg, RelHandle};
use crate::replconn::{ConnParams, ReplConnection, ReplEvent};
use crate::state;
use futures_util::FutureExt;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// What the network thread passes to the main thread.
pub enum StreamItem {
    /// Decoded messages with the WAL position of each, in stream order, and the
    /// bytes they hold (counted in `Budget`).
    Batch(Vec<(u64, LogicalMessage)>, usize),
    /// The source accepted START_REPLICATION: streaming (again).
    Streaming,
    /// A large transaction streams while it runs: the batches that follow, up
    /// to `EarlyEnd` or `EarlyCommit`, are its changes, to be applied at once
    /// in a destination transaction left open (see `Early`).
    EarlyBegin(u32),
    /// Something else must be applied before that transaction ends: roll its
    /// open transaction back; its file replays it when it commits.
    EarlyEnd,
    /// The early transaction committed on the source.
    EarlyCommit(Box<EarlyCommit>),
    Error(WorkerError),
}

/// The Stream Commit of a transaction applied early, with its file: what it
/// was applied from, should applying it early have failed.
pub struct EarlyCommit {
    replay: crate::spill::Replay,
    xid: u32,
    flags: u8,
    commit_lsn: u64,
    end_lsn: u64,
    commit_ts: i64,
}

impl StreamItem {
    fn bytes(&self) -> usize {
        match self {
            StreamItem::Batch(_, n) => *n,
            _ => 0,
        }
    }
}

/// What the main thread tells the network thread after it committed.
pub struct Feedback {
    /// Source LSN whose changes are durable here.
    pub flush: u64,
    /// Stream items fully applied and durable; equal to what was sent means idle.
    pub processed: u64,
}

/// Batches in flight between the threads at most.
const CHANNEL_DEPTH: usize = 64;
/// Bytes of decoded changes in flight between the threads at most (a single
/// batch may exceed it when nothing else is in flight): what bounds the memory
/// of a connector whatever the row size, while the network thread can still
/// decode ahead of the applier.
const INFLIGHT_BYTES: usize = 1 << 20;
/// What one message costs beside its payload (enum, vectors), roughly.
const MESSAGE_OVERHEAD: usize = 96;

/// The bytes of decoded changes the applier has not finished with yet; the
/// applier gives them back and wakes the network thread through `room`.
#[derive(Default)]
pub struct Budget {
    bytes: std::sync::atomic::AtomicUsize,
    room: tokio::sync::Notify,
}

impl Budget {
    /// Whether `add` more bytes would go past the bound (never when empty).
    fn full(&self, add: usize) -> bool {
        let cur = self.bytes.load(Ordering::Acquire);
        cur > 0 && cur + add > INFLIGHT_BYTES
    }

    fn give_back(&self, n: usize) {
        self.bytes.fetch_sub(n, Ordering::AcqRel);
        self.room.notify_one();
    }
}
/// Messages per batch at most.
const MAX_BATCH: usize = 1024;
/// Pause after a partial batch (see stream_task) when the socket cannot say
/// how much it holds.
const READ_PACING: Duration = Duration::from_millis(1);
/// A read that brought fewer messages than this, of transactions committed
/// less than PACE_BEHIND ago, is a live stream that is caught up: the next is
/// read at once (pacing would only add to the lag). Behind a backlog, small
/// reads mean the walsender is the slower side: then they are gathered.
const PACE_MIN: usize = 32;
const PACE_BEHIND_USEC: i64 = 50_000;

/// Lets a backlog gather in the socket before the next read, until the socket
/// stops filling or READ_PACING_MAX has passed. A socket that stops filling
/// has closed its window: the walsender then queues its small messages and the
/// kernel sends them in large segments, instead of one packet (and one wake-up
/// of this thread) per message, which cost the walsender twice the CPU of
/// serving the built-in subscriber and made it the bottleneck of a backlog of
/// small transactions. The wait blocks the thread, outside epoll: data arriving
/// meanwhile wakes nobody. Where the socket cannot say what it holds, a fixed
/// pause.
fn pace(stream: &crate::replconn::ReplStream) {
    let start = Instant::now();
    let mut last = stream.unread();
    if last.is_none() {
        std::thread::sleep(READ_PACING);
        return;
    }
    loop {
        std::thread::sleep(PACE_STEP);
        let now = stream.unread();
        if start.elapsed() >= READ_PACING_MAX || (now == last && now.is_some_and(|n| n > 0)) {
            return;
        }
        last = now;
    }
}

/// How often `pace` looks at the socket.
const PACE_STEP: Duration = Duration::from_micros(200);
/// The longest `pace` lets a backlog gather.
const READ_PACING_MAX: Duration = Duration::from_millis(2);

/// Reads the slot from `start_lsn`, decodes, forwards; sends status updates.
/// Where the stream reads from.
#[derive(Clone)]
pub struct StreamTarget {
    pub params: ConnParams,
    pub slot: String,
    pub publication: String,
    pub start_lsn: u64,
    /// Where streamed transactions wait for their commit (spill.rs).
    pub spill_dir: std::path::PathBuf,
    /// logical_decoding_work_mem (kB) for the source's walsender, when set
    /// (synchdb.source_decoding_work_mem).
    pub decoding_work_mem_kb: Option<i64>,
}

/// A batch of decoded messages and their WAL positions.
type Batch = Vec<(u64, LogicalMessage)>;

/// Hands `item` to the applier, or queues it in `pending` (items already
/// waiting, no room in the budget or the channel). False: the applier is gone.
fn offer(
    tx: &mpsc::Sender<StreamItem>,
    budget: &Budget,
    waker: &Waker,
    item: StreamItem,
    pending: &mut VecDeque<StreamItem>,
    pushed: &mut u64,
) -> bool {
    if matches!(&item, StreamItem::Batch(b, _) if b.is_empty()) {
        return true;
    }
    let bytes = item.bytes();
    if !pending.is_empty() || budget.full(bytes) {
        pending.push_back(item);
        return true;
    }
    budget.bytes.fetch_add(bytes, Ordering::AcqRel);
    match tx.try_send(item) {
        Ok(()) => {
            *pushed += 1;
            // wake only on empty -> non-empty; the reader drains all
            if tx.max_capacity() - tx.capacity() <= 1 {
                waker.wake();
            }
            true
        }
        Err(mpsc::error::TrySendError::Full(item)) => {
            budget.bytes.fetch_sub(bytes, Ordering::AcqRel);
            pending.push_back(item);
            true
        }
        Err(mpsc::error::TrySendError::Closed(_)) => false,
    }
}

/// A committed streamed transaction being handed to the applier as an
/// ordinary one: Begin, its changes read back from its file, Commit.
struct Replaying {
    r: crate::spill::Replay,
    xid: u32,
    flags: u8,
    commit_lsn: u64,
    end_lsn: u64,
    commit_ts: i64,
    begun: bool,
}

impl Replaying {
    /// The next batch; true once it ends with the Commit.
    fn next_batch(&mut self) -> Result<(Batch, usize, bool), WorkerError> {
        let mut batch = Vec::new();
        let mut bytes = 0;
        if !self.begun {
            self.begun = true;
            batch.push((
                self.commit_lsn,
                LogicalMessage::Begin {
                    final_lsn: self.commit_lsn,
                    commit_ts: self.commit_ts,
                    xid: self.xid,
                },
            ));
        }
        while batch.len() < MAX_BATCH && bytes < INFLIGHT_BYTES / 4 {
            match self.r.next_message().map_err(spill_error)? {
                Some((lsn, m, n)) => {
                    bytes += n + MESSAGE_OVERHEAD;
                    batch.push((lsn, m));
                }
                None => {
                    batch.push((
                        self.commit_lsn,
                        LogicalMessage::Commit {
                            flags: self.flags,
                            commit_lsn: self.commit_lsn,
                            end_lsn: self.end_lsn,
                            commit_ts: self.commit_ts,
                        },
                    ));
                    return Ok((batch, bytes, true));
                }
            }
        }
        Ok((batch, bytes, false))
    }
}

fn spill_error(e: String) -> WorkerError {
    WorkerError::Internal(format!("a streamed transaction's file: {e}"))
}

async fn stream_task(
    target: StreamTarget,
    tx: mpsc::Sender<StreamItem>,
    mut fb_rx: mpsc::UnboundedReceiver<Feedback>,
    waker: Waker,
    closed: Arc<AtomicBool>,
    budget: Arc<Budget>,
    slot_idx: i32,
) {
    let StreamTarget {
        params,
        slot,
        publication,
        start_lsn,
        spill_dir,
        decoding_work_mem_kb,
    } = target;
    let r = async {
        let mut conn = ReplConnection::connect(&params).await?;
        crate::snapshot::check_source(&mut conn, &params).await?;
        // A position past what the source has written would be confirmed back to it
        // and move its slot past changes not yet made: they would never arrive.
        let wal_end = crate::snapshot::source_wal_end(&mut conn).await?;
        if start_lsn > wal_end {
            return Err(WorkerError::Config(format!(
                "the connector's position {} (its replication origin) is past the source's current WAL position {}, \
                 so it cannot stream from there; nothing was confirmed to the source, whose slot still holds every change. \
                 With the connector stopped, move the origin back to the slot's confirmed_flush_lsn \
                 (pg_replication_origin_advance), or start it in mode 'always' to copy everything again",
                crate::offset::format_lsn(start_lsn),
                crate::offset::format_lsn(wal_end)
            )));
        }
        // the lag view starts from what is known now (shared memory only)
        state::stat_set(slot_idx, state::Stat::SrcWalLsn, wal_end);
        state::stat_set(slot_idx, state::Stat::ConfirmedLsn, start_lsn);
        // protocol 2 (PostgreSQL 14 and later): large transactions are sent as
        // they run (streaming 'on') and wait in files here until they commit
        let proto = if conn.server_version_num() >= 140_000 { 2 } else { 1 };
        // The walsender starts sending a running transaction once the changes it
        // holds pass logical_decoding_work_mem (64MB by default). A smaller value
        // for this session only: it is applied sooner, and less of it is left
        // for after its commit. (Before 14 it would only make the source spill
        // to its disk.)
        if let (2, Some(kb)) = (proto, decoding_work_mem_kb) {
            conn.simple_query(&format!("SET logical_decoding_work_mem = {kb}"))
                .await?;
        }
        let mut spill = crate::spill::Spill::open(spill_dir).map_err(spill_error)?;
        let mut replay: Option<Replaying> = None;
        let mut stream = conn.start_replication(&slot, start_lsn, &publication, proto, false).await?;
        // counted in `pushed` like a batch: the applier's count of what it has
        // processed must meet `pushed` for positions past it to be confirmed
        if tx.send(StreamItem::Streaming).await.is_err() {
            return Ok(());
        }
        waker.wake();
        let mut decoder = Decoder::new(proto);
        let mut pushed: u64 = 1;
        let mut processed: u64 = 0;
        let mut flushed = start_lsn;
        let mut seen_end = start_lsn;
        let mut pending: VecDeque<StreamItem> = VecDeque::new();
        // the streamed transaction whose changes also go to the applier as they
        // arrive (at most one; see `Early`)
        let mut early: Option<u32> = None;
        let mut tick = tokio::time::interval(Duration::from_secs(10));
        loop {
            // a batch held back waits for a channel slot and for room in the budget
            let held = pending.front().map(StreamItem::bytes);
            let held_full = held.is_some_and(|n| budget.full(n));
            tokio::select! {
                biased;
                fb = fb_rx.recv() => {
                    let Some(fb) = fb else {
                        // the applier stopped: end the stream politely
                        let _ = tokio::time::timeout(Duration::from_secs(2), stream.close()).await;
                        return Ok::<(), WorkerError>(());
                    };
                    flushed = flushed.max(fb.flush);
                    processed = fb.processed;
                    // When everything sent has been applied, positions past it hold
                    // nothing for us: confirm them too, so the slot does not pin WAL.
                    // (Not while a committed streamed transaction is still being
                    // handed over; one still open is sent again in full after a
                    // restart, since its commit lies past any position confirmed.)
                    let idle = processed == pushed && pending.is_empty() && replay.is_none();
                    let pos = confirm_position(flushed, seen_end, wal_end, idle);
                    stream.send_status(pos, pos, pos, false).await?;
                    // shared memory, no PostgreSQL call: fine from this thread
                    state::stat_set(slot_idx, state::Stat::ConfirmedLsn, pos);
                }
                _ = tick.tick() => {
                    let idle = processed == pushed && pending.is_empty() && replay.is_none();
                    let pos = confirm_position(flushed, seen_end, wal_end, idle);
                    // idle: ask for a keepalive, whose WAL end lets the next
                    // status confirm (and the lag view show) the source's end
                    stream.send_status(pos, pos, pos, idle).await?;
                    // shared memory, no PostgreSQL call: fine from this thread
                    state::stat_set(slot_idx, state::Stat::ConfirmedLsn, pos);
                }
                _ = budget.room.notified(), if held_full => {}
                _ = std::future::ready(()), if pending.is_empty() && replay.is_some() => {
                    if let Some(rp) = replay.as_mut() {
                        let (batch, bytes, done) = rp.next_batch()?;
                        if done {
                            replay = None;
                        }
                        if !offer(&tx, &budget, &waker, StreamItem::Batch(batch, bytes), &mut pending, &mut pushed) {
                            return Ok(());
                        }
                    }
                }
                permit = tx.reserve(), if held.is_some() && !held_full => {
                    let Ok(permit) = permit else { return Ok(()) };
                    if let Some(item) = pending.pop_front() {
                        budget.bytes.fetch_add(item.bytes(), Ordering::AcqRel);
                        permit.send(item);
                        pushed += 1;
                        waker.wake();
                    }
                }
                ev = stream.next_event(), if pending.is_empty() && replay.is_none() => {
                    // Take every message the last read already brought, so that one
                    // channel operation and at most one wake-up serve them all.
                    let mut batch = Vec::new();
                    let mut bytes = 0usize;
                    let mut reply_due = false;
                    let mut read = 0usize;
                    let mut last_commit_ts: Option<i64> = None;
                    let mut next = Some(ev);
                    while let Some(ev) = next.take() {
                        match ev? {
                            Some(ReplEvent::XLogData { wal_start, wal_end, data, .. }) => {
                                seen_end = seen_end.max(wal_end);
                                state::stat_set(slot_idx, state::Stat::SrcWalLsn, seen_end);
                                let msg = decoder.decode(data.clone()).map_err(|e| WorkerError::Source(e.to_string()))?;
                                // A control item for the early transaction, after what
                                // was gathered so far: the applier sees them in order.
                                macro_rules! after_batch {
                                    ($item:expr) => {{
                                        let b = std::mem::take(&mut batch);
                                        let n = std::mem::take(&mut bytes);
                                        if !offer(&tx, &budget, &waker, StreamItem::Batch(b, n), &mut pending, &mut pushed)
                                            || !offer(&tx, &budget, &waker, $item, &mut pending, &mut pushed)
                                        {
                                            return Ok(());
                                        }
                                    }};
                                }
                                // Ends it before anything else is applied.
                                macro_rules! end_early {
                                    ($item:expr) => {{
                                        after_batch!($item);
                                        early = None;
                                    }};
                                }
                                match msg {
                                    LogicalMessage::StreamStart { xid, first_segment } => {
                                        spill.start(xid).map_err(spill_error)?;
                                        // only from its first change on, and one at a time
                                        if early.is_none() && first_segment {
                                            after_batch!(StreamItem::EarlyBegin(xid));
                                            early = Some(xid);
                                        }
                                    }
                                    LogicalMessage::StreamStop => spill.stop(),
                                    LogicalMessage::StreamAbort { xid, subxid } => {
                                        // a rolled-back savepoint too: its file, cut back,
                                        // applies it at its commit
                                        if early == Some(xid) {
                                            end_early!(StreamItem::EarlyEnd);
                                        }
                                        spill.abort(xid, subxid).map_err(spill_error)?
                                    }
                                    LogicalMessage::StreamCommit { xid, flags, commit_lsn, end_lsn, commit_ts } if early == Some(xid) => {
                                        last_commit_ts = Some(commit_ts);
                                        let replay = spill.commit(xid).map_err(spill_error)?;
                                        end_early!(StreamItem::EarlyCommit(Box::new(EarlyCommit {
                                            replay,
                                            xid,
                                            flags,
                                            commit_lsn,
                                            end_lsn,
                                            commit_ts,
                                        })));
                                    }
                                    LogicalMessage::StreamCommit { xid, flags, commit_lsn, end_lsn, commit_ts } => {
                                        if early.is_some() {
                                            end_early!(StreamItem::EarlyEnd);
                                        }
                                        replay = Some(Replaying {
                                            r: spill.commit(xid).map_err(spill_error)?,
                                            xid,
                                            flags,
                                            commit_lsn,
                                            end_lsn,
                                            commit_ts,
                                            begun: false,
                                        });
                                        // what follows waits until it is replayed
                                        break;
                                    }
                                    m if spill.in_stream() => {
                                        spill.write(wal_start, m.xid(), &data).map_err(spill_error)?;
                                        if early.is_some() && spill.current() == early {
                                            bytes += data.len() + MESSAGE_OVERHEAD;
                                            batch.push((wal_start, m));
                                        }
                                    }
                                    m => {
                                        if early.is_some() {
                                            end_early!(StreamItem::EarlyEnd);
                                        }
                                        if let LogicalMessage::Commit { commit_ts, .. } = &m {
                                            last_commit_ts = Some(*commit_ts);
                                        }
                                        bytes += data.len() + MESSAGE_OVERHEAD;
                                        batch.push((wal_start, m));
                                    }
                                }
                            }
                            Some(ReplEvent::Keepalive { wal_end, reply_requested, .. }) => {
                                seen_end = seen_end.max(wal_end);
                                state::stat_set(slot_idx, state::Stat::SrcWalLsn, seen_end);
                                reply_due |= reply_requested;
                            }
                            None => {
                                // as a server does when it shuts down: it will be back
                                return Err(WorkerError::Transient("the source ended the replication stream".into()));
                            }
                        }
                        read += 1;
                        // a streamed transaction goes to its file, not the batch:
                        // bound the reading anyway, so that status updates go out
                        if batch.len() >= MAX_BATCH
                            || bytes >= INFLIGHT_BYTES / 4
                            || read >= 8 * MAX_BATCH
                            || !pending.is_empty()
                        {
                            break;
                        }
                        next = stream.next_event().now_or_never();
                    }
                    let partial = replay.is_none() && !batch.is_empty() && batch.len() < MAX_BATCH
                        && bytes < INFLIGHT_BYTES / 4;
                    let batch_len = batch.len();
                    if !offer(&tx, &budget, &waker, StreamItem::Batch(batch, bytes), &mut pending, &mut pushed) {
                        return Ok(());
                    }
                    if reply_due {
                        // after the push: a batch not yet applied is never confirmed
                        let idle = processed == pushed && pending.is_empty() && replay.is_none();
                        let pos = confirm_position(flushed, seen_end, wal_end, idle);
                        stream.send_status(pos, pos, pos, false).await?;
                    // shared memory, no PostgreSQL call: fine from this thread
                    state::stat_set(slot_idx, state::Stat::ConfirmedLsn, pos);
                    }
                    let behind = last_commit_ts.is_some_and(|ts| {
                        now_ms() * 1000 - crate::decoder::pg_ts_to_unix_usec(ts) > PACE_BEHIND_USEC
                    });
                    if partial && (batch_len >= PACE_MIN || behind) {
                        // Behind a backlog, let it gather in the socket (see
                        // `pace`). A stream that is caught up is read at once.
                        pace(&stream);
                    }
                }
            }
        }
    }
    .await;
    if let Err(e) = r {
        let _ = tx.send(StreamItem::Error(e)).await;
    }
    closed.store(true, Ordering::Release);
    waker.wake();
}

/// The position a status update confirms to the source: what is durably applied
/// (`flushed`), or, when everything received has been applied, also what the source
/// has decoded and sent (`seen_end`). Never past what the source has said it has
/// (`wal_end` at the start, `seen_end` since), whatever the origin holds: the slot
/// must not forget changes that were never applied.
fn confirm_position(flushed: u64, seen_end: u64, wal_end: u64, idle: bool) -> u64 {
    let pos = if idle { flushed.max(seen_end) } else { flushed };
    pos.min(wal_end.max(seen_end))
}

/// How the applier takes in tables that appear on the source while it streams
/// (created, or attached as partitions, in the replicated schemas).
struct NewTables {
    /// Copy their rows (a partial snapshot at a new point S, changes before S
    /// left out for them); else only publish them and let CDC create them.
    copy: bool,
    interval: Duration,
    last: Instant,
    slot: String,
    publication: String,
    rules: Rules,
}

/// The parent of a source partition, planned on the destination, and the
/// partition's bound.
struct PartitionOf {
    dest: DestTable,
    bound: String,
}

/// How one source relation lands on its destination table.
struct RelMap {
    handle: RelHandle,
    dest: String,
    /// The table's transform rules as one prepared query, when it has any.
    transform: Option<RowTransform>,
    /// For each destination attribute, the source column feeding it.
    from_source: Vec<Option<usize>>,
    /// The source's schema and table name, as its last Relation message said.
    source_name: (String, String),
    source_cols: Vec<RelColumn>,
    replica_identity: u8,
    new_buf: Vec<SdbValue>,
    old_buf: Vec<SdbValue>,
}

/// Every transform rule of one table as a single prepared query: `SELECT e1, e2, ...`
/// where parameter k is the incoming value of source column `cols[k-1]` (as text)
/// and result column k is its transformed value. One query per row, planned once.
struct RowTransform {
    plan: crate::pg::PlanHandle,
    cols: Vec<usize>,
}

fn close_rel(pg: &Pg, m: RelMap) {
    pg.rel_close(m.handle);
    if let Some(t) = m.transform {
        pg.free_plan(t.plan);
    }
}

/// Types below this OID come from PostgreSQL's own catalog files and have the
/// same OID on every server (FirstGenbkiObjectId); pgoutput describes the others
/// by name, and initdb or users assign them, so they differ between servers.
const FIRST_NON_BUILTIN_OID: u32 = 10_000;

/// A built-in type of a source column as the destination declares it, and its
/// name without modifier (for type rules); built-in OIDs are the same everywhere.
fn builtin_type(pg: &Pg, c: &RelColumn) -> Result<(String, String), WorkerError> {
    let rows = pg
        .query(
            "SELECT format_type($1::oid, $2::int), format_type($1::oid, NULL)",
            &[
                Some(&c.type_oid.to_string()),
                Some(&c.type_modifier.to_string()),
            ],
        )
        .ctx(|| format!("resolving the type of column {}", quote_ident(&c.name)))?;
    match rows
        .into_iter()
        .next()
        .map(|mut r| (r[0].take(), r[1].take()))
    {
        Some((Some(natural), Some(base))) => Ok((natural, base)),
        _ => Err(WorkerError::Internal(format!(
            "no type name for type oid {}",
            c.type_oid
        ))),
    }
}

/// The values with the table's transform rules applied (the slower path: one
/// prepared query per row); the values themselves when the table has none. The
/// values travel as parameters, so nothing in them can change the statement.
/// A NULL goes through the expressions as the snapshot's INSERT ... SELECT does
/// (coalesce(%d, 0) gives the same row either way); an unchanged TOAST value is
/// absent and keeps the transformed value already stored.
fn transformed<'v>(
    pg: &Pg,
    m: &RelMap,
    vals: &'v [TupleValue],
) -> Result<std::borrow::Cow<'v, [TupleValue]>, WorkerError> {
    let Some(t) = &m.transform else {
        return Ok(std::borrow::Cow::Borrowed(vals));
    };
    let texts: Vec<Option<std::borrow::Cow<str>>> = t
        .cols
        .iter()
        .map(|&i| match vals.get(i) {
            Some(TupleValue::Text(b)) => Some(String::from_utf8_lossy(b)),
            _ => None,
        })
        .collect();
    let params: Vec<Option<&str>> = texts.iter().map(|v| v.as_deref()).collect();
    let rows = pg
        .query_plan(t.plan, &params)
        .ctx(|| format!("applying the transform rules of {}", m.dest))?;
    let row = rows.into_iter().next().unwrap_or_default();
    let mut out = vals.to_vec();
    for (k, &i) in t.cols.iter().enumerate() {
        if matches!(vals.get(i), Some(TupleValue::Text(_) | TupleValue::Null)) {
            out[i] = match row.get(k).cloned().flatten() {
                Some(v) => TupleValue::Text(bytes::Bytes::from(v)),
                None => TupleValue::Null,
            };
        }
    }
    Ok(std::borrow::Cow::Owned(out))
}

fn fill(buf: &mut Vec<SdbValue>, map: &[Option<usize>], vals: &[TupleValue]) -> Result<(), String> {
    buf.clear();
    for src in map {
        let v = match src.and_then(|i| vals.get(i)) {
            None => SdbValue {
                data: std::ptr::null(),
                len: 0,
                kind: SDB_VALUE_ABSENT,
            },
            Some(TupleValue::Null) => SdbValue {
                data: std::ptr::null(),
                len: 0,
                kind: SDB_VALUE_NULL,
            },
            Some(TupleValue::UnchangedToast) => SdbValue {
                data: std::ptr::null(),
                len: 0,
                kind: SDB_VALUE_UNCHANGED,
            },
            Some(TupleValue::Text(b)) => SdbValue {
                data: b.as_ptr() as *const std::ffi::c_char,
                len: b.len() as i32,
                kind: SDB_VALUE_TEXT,
            },
            Some(TupleValue::Binary(_)) => {
                return Err("binary tuple values were not requested".into())
            }
        };
        buf.push(v);
    }
    Ok(())
}

/// synchdb.error_handling_strategy
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    Exit,
    Retry,
    Skip,
}

impl Strategy {
    fn current(pg: &Pg) -> Strategy {
        Strategy::of(&pg.apply_settings())
    }

    fn of(s: &crate::ffi::SdbApplySettings) -> Strategy {
        match s.error_strategy {
            crate::ffi::SDB_STRATEGY_RETRY => Strategy::Retry,
            crate::ffi::SDB_STRATEGY_SKIP => Strategy::Skip,
            _ => Strategy::Exit,
        }
    }
}

/// Counters of the destination transaction being built; published to the state
/// area only when it commits, so the statistics count exactly what was applied.
#[derive(Default)]
struct BatchStats {
    bad: u64,
    creates: u64,
    updates: u64,
    deletes: u64,
    truncates: u64,
    ddls: u64,
    txs: u64,
    first_src_ms: Option<i64>,
    last_src_ms: i64,
    first_pg_ms: Option<i64>,
}

pub fn now_ms_pub() -> i64 {
    now_ms()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The answer of a look at the source made on the network thread.
type ProbeRx<T> = tokio::sync::oneshot::Receiver<T>;

/// What a look for new tables saw: the tables of the selection, and which of
/// the known ones the source still has.
type NewTablesSeen =
    Result<(Vec<crate::source::SourceTable>, Vec<u32>), crate::source::SourceError>;

/// A source relation's description as a Relation message gives it: schema,
/// name, columns, replica identity.
type RelDef = (String, String, Vec<RelColumn>, u8);

/// A large transaction applied while it still runs on the source (PostgreSQL's
/// built-in subscriber does the same with its parallel apply workers): its
/// changes go into a destination transaction left open and committed at its
/// Stream Commit, so that a commit is visible here soon after it is on the
/// source instead of after a replay of the whole transaction. Anything else to
/// apply first, a rolled-back savepoint, or an error ends the attempt: the open
/// transaction is rolled back and the file the transaction was also written to
/// applies it at its commit, exactly as without this.
enum Early {
    Off,
    /// Applying transaction `xid`. What mapped relations before it began, to
    /// put back after a rollback: its own Relation messages must not outlive it.
    /// Conflicts met in it wait for its commit here (see `conflict`).
    Applying {
        xid: u32,
        rels: Vec<(u32, RelDef)>,
        pending: HashMap<u32, RelDef>,
        conflicts: Vec<(crate::conflict::Conflict, String)>,
    },
    /// Given up: its batches are left out, its commit replays its file.
    Failed,
}

pub struct Applier<'a> {
    batch: BatchStats,
    strategy: Strategy,
    log_change_on_error: bool,
    on_missing_row: crate::conflict::OnMissingRow,
    /// An error was reported and the worker retries: clear it once a batch commits.
    recovering: bool,
    /// Attempts to reconnect since the source was last streaming (transient errors).
    reconnects: u32,
    pg: &'a Pg<'a>,
    net: &'a Net,
    slot_idx: i32,
    connector: String,
    dest_schema: String,
    /// The replicated source schemas: the search_path of source catalog reads.
    srcschemas: Vec<String>,
    cfg: ConnectorConfig,
    /// Looking for tables new on the source while streaming (None: not asked).
    new_tables: Option<NewTables>,
    /// When the sequences were last brought to the source's values.
    last_seq_sync: Instant,
    /// The source connection of the periodic looks (new tables, sequences):
    /// kept open, used on the network thread, so that the applier never waits
    /// for a connection set-up or a catalog query between two batches.
    kept: crate::source::Kept,
    /// A look for new tables under way: the tables known when it began, and
    /// its answer (the source's tables, and which known ones it still has).
    probe_new: Option<(HashSet<u32>, ProbeRx<NewTablesSeen>)>,
    /// The sequences' values being read from the source.
    probe_seq: Option<ProbeRx<Result<String, crate::source::SourceError>>>,
    /// Source tables dropped on the source whose destination table was dropped:
    /// changes of theirs still on the way are left out.
    dropped: HashSet<u32>,
    rels: HashMap<u32, RelMap>,
    batch_size: i64,
    in_xact: bool,
    at_boundary: bool,
    batch_changes: i64,
    processed: u64,
    processed_durable: u64,
    cdc_stage_shown: bool,
    cur_xid: u32,
    last_change_lsn: u64,
    last_type: MessageType,
    last_commit: Option<(u64, u64, i64, u32)>,
    /// Tables a partial snapshot copied at a later point than the stream's
    /// position, by source oid (the relation id, which a rename keeps): their
    /// changes from transactions that committed before that point are in the
    /// copy already.
    skips: HashMap<u32, u64>,
    /// Relation messages of skipped tables, mapped when their first change to
    /// apply arrives: a description from before the copy must not alter it.
    pending: HashMap<u32, RelDef>,
    /// A large transaction applied while it runs (see `Early`).
    early: Early,
    /// Commit LSN of the source transaction being applied (from its Begin).
    cur_final_lsn: u64,
    rules: Rules,
    /// The source, for what a Relation message does not say (see `added_column`).
    source: Option<ConnParams>,
    /// Source types that are not built in, by (oid, typmod): the type the
    /// destination declares and the source's name of the type (see `source_type`).
    source_types: HashMap<(u32, i32), (String, String)>,
    /// INSERTs the shim keeps to write together (`insert`, `flush_inserts`), all
    /// into one table, in order: an error names the one that failed.
    ins_buf: Vec<LogicalMessage>,
}

/// What the rows a source table already had hold in a column added to it.
enum AddedColumn {
    /// NULL, or nothing to say (the column is gone again).
    Nothing,
    /// The value every earlier row got (PostgreSQL's "missing value" of a column
    /// added with a non-volatile default), as the text of a one-element array.
    Value(String),
    /// The column has a default but no missing value: the rows got their values
    /// in a table rewrite, which logical decoding does not carry.
    Rewritten(String),
}

impl<'a> Applier<'a> {
    pub fn new(
        pg: &'a Pg<'a>,
        net: &'a Net,
        slot_idx: i32,
        cfg: &ConnectorConfig,
        cdc_stage_shown: bool,
        rules: Rules,
    ) -> Self {
        let settings = pg.apply_settings();
        Applier {
            batch: BatchStats::default(),
            strategy: Strategy::of(&settings),
            log_change_on_error: settings.log_change_on_error,
            on_missing_row: crate::conflict::OnMissingRow::of(&settings),
            // a start after a transient error (worker::run) shows it until streaming
            recovering: true,
            reconnects: 0,
            pg,
            net,
            slot_idx,
            connector: cfg.name.clone(),
            dest_schema: cfg.dest_schema(),
            srcschemas: cfg.srcschemas.clone(),
            cfg: cfg.clone(),
            new_tables: None,
            last_seq_sync: Instant::now(),
            kept: Default::default(),
            probe_new: None,
            probe_seq: None,
            dropped: HashSet::new(),
            rels: HashMap::new(),
            batch_size: pg.guc_int("synchdb.batch_size", 5000).max(1),
            in_xact: false,
            at_boundary: true,
            batch_changes: 0,
            processed: 0,
            processed_durable: 0,
            cdc_stage_shown,
            cur_xid: 0,
            last_change_lsn: 0,
            last_type: MessageType::Insert,
            last_commit: None,
            skips: HashMap::new(),
            pending: HashMap::new(),
            early: Early::Off,
            cur_final_lsn: 0,
            rules,
            source: None,
            source_types: HashMap::new(),
            ins_buf: Vec::new(),
        }
    }

    /// How the destination declares a column of a source type that is not built
    /// in (its OID means nothing here: the same number may be another type, or
    /// none), from the source's catalog, as the snapshot does: a user-defined type
    /// (or an array of one) by its copy in `dest_schema`, created with what it
    /// uses when the destination lacks it; any other type (an extension's) by
    /// its name. Also returns the source's name of the type, for type rules.
    /// Asked once per type.
    fn source_type(
        &mut self,
        oid: u32,
        typmod: i32,
        dest_schema: &str,
    ) -> Result<(String, String), WorkerError> {
        if let Some(t) = self.source_types.get(&(oid, typmod)) {
            return Ok(t.clone());
        }
        let Some(params) = self.source.clone() else {
            return Err(WorkerError::Internal(format!(
                "type {oid} of the source is not built in and the source is not known yet"
            )));
        };
        let srcschemas = self.srcschemas.clone();
        let r = self.net.call(self.pg, async move {
            crate::source::with_client(&params, async |client: &tokio_postgres::Client| {
                let perr = |e: tokio_postgres::Error| crate::source::pg_error_text(&params, &e);
                // deparsed expressions name the replicated types as the snapshot's do
                crate::source::set_search_path(client, &srcschemas)
                    .await
                    .map_err(perr)?;
                let rows = client
                    .query(
                        &format!(
                            "SELECT format_type(t.oid, nullif($2::int, -1)), format_type(t.oid, NULL),
                                    {udt},
                                    t.typtype = 'b' AND t.typelem <> 0 AND t.typlen = -1
                               FROM pg_catalog.pg_type t WHERE t.oid = $1::oid",
                            udt = crate::usertypes::column_udt_sql().replace("a.atttypid", "t.oid")
                        ),
                        &[&oid, &typmod],
                    )
                    .await
                    .map_err(perr)?;
                let Some(r) = rows.into_iter().next() else {
                    return Ok(None);
                };
                let bad = |e: tokio_postgres::Error| format!("unexpected reply from the source: {e}");
                let name: Option<String> = r.try_get(0).map_err(bad)?;
                let base: Option<String> = r.try_get(1).map_err(bad)?;
                let udt: Option<u32> = r.try_get(2).map_err(bad)?;
                let arr: Option<bool> = r.try_get(3).map_err(bad)?;
                let udt = udt.unwrap_or(0);
                let types = if udt != 0 {
                    crate::usertypes::read_types(client, &[udt]).await?
                } else {
                    Vec::new()
                };
                Ok::<_, String>(Some((
                    name.unwrap_or_default(),
                    base.unwrap_or_default(),
                    udt,
                    arr.unwrap_or(false),
                    types,
                )))
            })
            .await
        })?;
        let (name, base, udt, is_array, types) = r
            .map_err(|e| e.within(&format!("reading type {oid} from the source")))?
            .ok_or_else(|| {
                WorkerError::Source(format!(
                    "type {oid} of a replicated column no longer exists on the source"
                ))
            })?;
        let natural = if udt == 0 {
            name
        } else {
            let placed: Vec<(crate::usertypes::UserType, String)> = types
                .into_iter()
                .map(|t| (t, dest_schema.to_string()))
                .collect();
            let pg = self.pg;
            crate::snapshot::with_dest_search_path(pg, &[dest_schema], || {
                pg.exec(&crate::ddl::ensure_schema_sql(dest_schema), &[])
                    .ctx(|| format!("creating schema {}", quote_ident(dest_schema)))?;
                crate::usertypes::create_types(pg, &self.connector, &placed)
            })?;
            crate::usertypes::ref_sql(
                &crate::usertypes::TypeRef {
                    udt,
                    is_array,
                    sql: name,
                },
                &crate::usertypes::type_names(&placed),
            )
        };
        let t = (natural, base);
        self.source_types.insert((oid, typmod), t.clone());
        Ok(t)
    }

    /// Asks the source what the existing rows of `schema.table` hold in `column`,
    /// which was just added to it. A source ADD COLUMN ... DEFAULT gives every
    /// existing row the default without writing a change for it, so the
    /// destination must be told. The catalog is read as it is now, not as of the
    /// WAL position: a column dropped since says nothing.
    fn added_column(
        &self,
        schema: &str,
        table: &str,
        column: &str,
    ) -> Result<AddedColumn, WorkerError> {
        let Some(params) = self.source.clone() else {
            return Ok(AddedColumn::Nothing);
        };
        let (s, t, c) = (schema.to_string(), table.to_string(), column.to_string());
        let r = self.net.call(self.pg, async move {
            let rows = crate::source::query_once(
                &params,
                "SELECT a.atthasmissing, a.attmissingval::text, pg_get_expr(d.adbin, d.adrelid)
                   FROM pg_catalog.pg_attribute a
                   JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
                   JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                   LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
                  WHERE n.nspname = $1 AND c.relname = $2 AND a.attname = $3 AND NOT a.attisdropped",
                &[&s, &t, &c],
            )
            .await?;
            Ok::<_, String>(rows.into_iter().next().map(|r| {
                (
                    r.get::<_, Option<bool>>(0).unwrap_or(false),
                    r.get::<_, Option<String>>(1),
                    r.get::<_, Option<String>>(2),
                )
            }))
        })?;
        match r {
            Ok(Some((true, Some(v), _))) => Ok(AddedColumn::Value(v)),
            Ok(Some((_, _, Some(default)))) => Ok(AddedColumn::Rewritten(default)),
            Ok(_) => Ok(AddedColumn::Nothing),
            Err(e) => {
                self.pg.log(
                    crate::pg::LOG_WARNING,
                    &format!(
                        "connector {}: could not read the default of column {} added to source table {}.{} ({e}); \
                         rows the table had before it hold NULL in it on the destination",
                        self.connector,
                        quote_ident(column),
                        quote_ident(schema),
                        quote_ident(table)
                    ),
                );
                Ok(AddedColumn::Nothing)
            }
        }
    }

    /// Look for tables new on the source every `synchdb.new_table_check_interval`
    /// ms (0: never), copying their rows when `copy`.
    pub fn watch_new_tables(&mut self, copy: bool, slot: &str, publication: &str) {
        let ms = self.pg.guc_int("synchdb.new_table_check_interval", 5000);
        if ms <= 0 {
            return;
        }
        self.new_tables = Some(NewTables {
            copy,
            interval: Duration::from_millis(ms as u64),
            last: Instant::now(),
            slot: slot.to_string(),
            publication: publication.to_string(),
            rules: self.rules.clone(),
        });
    }

    /// Brings the destination's copies of the source's sequences to the source's
    /// values (never backwards) every `synchdb.sequence_sync_interval` ms, or now
    /// when `force` (a stop). Sequence changes are not in pgoutput; a failure is
    /// logged, not fatal: the next round tries again.
    fn sync_sequences(&mut self, force: bool) {
        if force {
            // a look under way answers too late: this one waits for the source
            self.probe_seq = None;
            return self.sync_sequences_now();
        }
        if self.in_xact {
            return;
        }
        if let Err(e) = self.sequence_look() {
            self.pg.log(
                crate::pg::LOG_WARNING,
                &format!(
                    "connector {}: bringing the sequences to the source's values: {e}; trying again later",
                    self.connector
                ),
            );
        }
    }

    /// The periodic sync, one step: applies the source's values once they
    /// have come, or starts reading them when the interval has passed.
    fn sequence_look(&mut self) -> Result<(), WorkerError> {
        let pg = self.pg;
        if let Some(rx) = self.probe_seq.as_mut() {
            let Some(answer) = crate::net::answer(rx) else {
                return Ok(());
            };
            self.probe_seq = None;
            let vals = answer?.map_err(|e| WorkerError::Source(e.text))?;
            pg.in_xact(|| {
                pg.query(
                    "SELECT count(*)::text FROM synchdb_set_sequences($1, $2::jsonb)",
                    &[Some(&self.connector), Some(&vals)],
                )
                .ctx(|| "synchdb_set_sequences".into())
            })?;
            return Ok(());
        }
        let ms = pg.apply_settings().sequence_sync_interval_ms;
        if ms <= 0 || self.last_seq_sync.elapsed() < Duration::from_millis(ms as u64) {
            return Ok(());
        }
        self.last_seq_sync = Instant::now();
        let Some(params) = self.source.clone() else {
            return Ok(());
        };
        let names: Vec<String> = pg
            .in_xact(|| {
                pg.query(
                    "SELECT srcobj FROM synchdb_objects
                      WHERE name = $1 AND kind = 'sequence' AND state = 'created'",
                    &[Some(&self.connector)],
                )
                .ctx(|| "reading synchdb_objects".into())
            })?
            .into_iter()
            .filter_map(|r| r.into_iter().next().flatten())
            .collect();
        if names.is_empty() {
            return Ok(());
        }
        let kept = self.kept.clone();
        self.probe_seq = Some(self.net.begin(async move {
            crate::source::with_kept(&kept, &params, async |client: &tokio_postgres::Client| {
                crate::control::sequence_values(client, &params, &names).await
            })
            .await
        })?);
        Ok(())
    }

    /// At a stop or pause: the sequences now, whatever the interval (the
    /// destination is handed over with them current).
    fn sync_sequences_now(&mut self) {
        self.last_seq_sync = Instant::now();
        let pg = self.pg;
        // a stop request cancels the statement it finds running: not this one
        pg.accept_stop();
        let r = pg.in_xact(|| {
            pg.query(
                "SELECT count(*)::text FROM synchdb_sync_sequences($1)",
                &[Some(&self.connector)],
            )
            .ctx(|| "bringing the sequences to the source's values".into())
        });
        if let Err(e) = r {
            // stopping (perhaps with the server, perhaps the source with it)
            pg.log(
                crate::pg::LOG_LOG,
                &format!("connector {}: at stop: {e}", self.connector),
            );
        }
    }

    /// Source table `oid` no longer exists on the source: its destination table is
    /// dropped too (synchdb.replicate_drop_table, default on), and changes of it
    /// still on the way are left out; or kept, and the log says so.
    fn table_dropped(&mut self, oid: u32) -> Result<(), WorkerError> {
        let pg = self.pg;
        let o = oid.to_string();
        let rows = pg.in_xact(|| {
            pg.query(
                "SELECT t.srcschema, t.srctable,
                        (SELECT a.attrelid::regclass::text FROM synchdb_attribute a
                          WHERE a.name = t.name AND a.ext_relid = t.srcrelid LIMIT 1)
                   FROM synchdb_tables t WHERE t.name = $1 AND t.srcrelid = $2::oid",
                &[Some(&self.connector), Some(&o)],
            )
            .ctx(|| "reading synchdb_tables".into())
        })?;
        let Some([Some(schema), Some(table), dest]) = rows
            .first()
            .map(|r| [r[0].clone(), r[1].clone(), r[2].clone()])
        else {
            return Ok(());
        };
        let dest = dest.unwrap_or_else(|| {
            let (s, t) = self.rules.dest_table(&schema, &table, &self.dest_schema);
            format!("{}.{}", quote_ident(&s), quote_ident(&t))
        });
        let drop = pg.guc("synchdb.replicate_drop_table").as_deref() != Some("off");
        if let Some(m) = self.rels.remove(&oid) {
            pg.apply_release()?;
            close_rel(pg, m);
        }
        pg.in_xact(|| -> Result<(), WorkerError> {
            if drop {
                pg.exec(&format!("DROP TABLE IF EXISTS {dest}"), &[])
                    .ctx(|| format!("dropping {dest}, whose source table was dropped"))?;
                pg.exec(
                    "DELETE FROM synchdb_attribute WHERE name = $1 AND ext_relid = $2::oid",
                    &[Some(&self.connector), Some(&o)],
                )
                .ctx(|| "updating synchdb_attribute".into())?;
            }
            pg.exec(
                "DELETE FROM synchdb_tables WHERE name = $1 AND srcrelid = $2::oid",
                &[Some(&self.connector), Some(&o)],
            )
            .ctx(|| "updating synchdb_tables".into())?;
            Ok(())
        })?;
        if drop {
            self.dropped.insert(oid);
        }
        pg.log(
            crate::pg::LOG_LOG,
            &format!(
                "connector {}: source table {}.{} was dropped; {}",
                self.connector,
                quote_ident(&schema),
                quote_ident(&table),
                if drop {
                    format!("dropped {dest} (synchdb.replicate_drop_table = on)")
                } else {
                    format!("kept {dest} (synchdb.replicate_drop_table = off)")
                }
            ),
        );
        Ok(())
    }

    /// Between batches: tables of the selection that the connector has not taken
    /// in yet are published and (when it copies) copied at a point S from a
    /// temporary slot, their changes before S left out, as `always` with
    /// `snapshottable` does. A table CDC created earlier is built again, so its
    /// rows are exactly those at S plus the changes after.
    fn check_new_tables(&mut self) -> Result<(), WorkerError> {
        if self.in_xact {
            return Ok(());
        }
        let Some(params) = self.source.clone() else {
            return Ok(());
        };
        let pg = self.pg;
        // the source's answer is read on the network thread, over the kept
        // connection, while batches go on being applied here
        if let Some((_, rx)) = self.probe_new.as_mut() {
            let Some(answer) = crate::net::answer(rx) else {
                return Ok(());
            };
            let known = self.probe_new.take().map(|(k, _)| k).unwrap_or_default();
            if let Some(n) = self.new_tables.as_mut() {
                n.last = Instant::now();
            }
            let (listed, alive) =
                answer?.map_err(|e| e.within("looking for tables new on the source"))?;
            return self.new_tables_seen(params, known, listed, alive);
        }
        let due = self
            .new_tables
            .as_ref()
            .is_some_and(|n| n.last.elapsed() >= n.interval);
        if !due {
            return Ok(());
        }
        let known: HashSet<u32> = pg
            .in_xact(|| {
                pg.query(
                    "SELECT srcrelid::text FROM synchdb_tables WHERE name = $1",
                    &[Some(&self.connector)],
                )
                .ctx(|| "reading synchdb_tables".into())
            })?
            .iter()
            .filter_map(|r| r[0].as_deref().and_then(|v| v.parse().ok()))
            .collect();
        let cfg = self.cfg.clone();
        let p = params.clone();
        let known_list: Vec<u32> = known.iter().copied().collect();
        let kept = self.kept.clone();
        let rx = self.net.begin(async move {
            crate::source::with_kept(&kept, &p, async |client: &tokio_postgres::Client| {
                let mut problems = Vec::new();
                let listed = crate::source::list_tables(client, &cfg, &mut problems).await?;
                // of the tables taken in, those the source still has (in the
                // selection or not: one moved out of it is not dropped)
                let alive: Vec<u32> = client
                    .query(
                        "SELECT o FROM unnest($1::oid[]) o WHERE EXISTS (SELECT 1 FROM pg_catalog.pg_class c WHERE c.oid = o)",
                        &[&known_list],
                    )
                    .await
                    .map_err(|e| crate::source::pg_error_text(&p, &e))?
                    .iter()
                    .map(|r| r.get(0))
                    .collect();
                Ok::<_, String>((listed, alive))
            })
            .await
        })?;
        self.probe_new = Some((known, rx));
        Ok(())
    }

    /// What a look for new tables saw: drops what the source dropped, and
    /// copies (or publishes) what it has that is new.
    fn new_tables_seen(
        &mut self,
        params: ConnParams,
        known: HashSet<u32>,
        listed: Vec<crate::source::SourceTable>,
        alive: Vec<u32>,
    ) -> Result<(), WorkerError> {
        let pg = self.pg;
        for oid in &known {
            if !alive.contains(oid) && !self.dropped.contains(oid) {
                self.table_dropped(*oid)?;
            }
        }
        let new: Vec<&crate::source::SourceTable> =
            listed.iter().filter(|t| !known.contains(&t.oid)).collect();
        if new.is_empty() {
            return Ok(());
        }
        let names: Vec<String> = new.iter().map(|t| t.qualified()).collect();
        let oids: Vec<u32> = new.iter().map(|t| t.oid).collect();
        let Some(n) = self.new_tables.as_ref() else {
            return Ok(());
        };
        let (copy, slot, publication, rules) = (
            n.copy,
            n.slot.clone(),
            n.publication.clone(),
            n.rules.clone(),
        );
        if copy {
            pg.log(
                crate::pg::LOG_LOG,
                &format!(
                    "connector {}: new on the source: {}; copying them",
                    self.connector,
                    names.join(", ")
                ),
            );
            let r = crate::snapshot::resnapshot(
                pg,
                self.net,
                &self.cfg,
                &params,
                &slot,
                &publication,
                &rules,
                Some(&oids),
            )?;
            // tables built again have new oids on the destination: map them again
            pg.apply_release()?;
            for oid in &oids {
                if let Some(m) = self.rels.remove(oid) {
                    close_rel(pg, m);
                }
                self.skips.insert(*oid, r.consistent_point);
            }
        } else {
            // published from now on; CDC creates each at its first change
            let add: Vec<(String, String)> = new
                .iter()
                .map(|t| (t.schema.clone(), t.name.clone()))
                .collect();
            self.net
                .call(pg, async move {
                    crate::source::with_client(&params, async |client: &tokio_postgres::Client| {
                        crate::snapshot::publish_tables(client, &publication, &add).await
                    })
                    .await
                })?
                .map_err(|e| e.within("publishing tables new on the source"))?;
            pg.in_xact(|| -> Result<(), WorkerError> {
                for t in &new {
                    crate::snapshot::remember_table(
                        pg,
                        &self.connector,
                        t.oid,
                        &t.schema,
                        &t.name,
                    )?;
                }
                Ok(())
            })?;
            pg.log(
                crate::pg::LOG_LOG,
                &format!(
                    "connector {}: new on the source: {}; published, created at their first change",
                    self.connector,
                    names.join(", ")
                ),
            );
        }
        Ok(())
    }

    pub fn set_skips(&mut self, skips: HashMap<u32, u64>) {
        self.skips = skips;
    }

    /// Whether a change to this relation in the current transaction is already in
    /// a partial snapshot's copy.
    fn skipped(&self, rel_id: u32) -> bool {
        // almost always empty: no hashing per change then
        (!self.skips.is_empty()
            && self
                .skips
                .get(&rel_id)
                .is_some_and(|&until| self.cur_final_lsn < until))
            || (!self.dropped.is_empty() && self.dropped.contains(&rel_id))
    }

    /// Streams and applies until stopped or an error; a pause closes the stream
    /// and waits (the slot keeps the WAL), a resume opens it again from the origin.
    pub fn run(&mut self, mut target: StreamTarget, origin: &str) -> Result<(), WorkerError> {
        self.source = Some(target.params.clone());
        loop {
            match self.stream(target.clone()) {
                Ok(()) => {
                    self.sync_sequences(true);
                    target.start_lsn = self.pause(origin)?
                }
                Err(WorkerError::Stopped) => {
                    // a stop hands the destination over: its sequences must be current
                    self.sync_sequences(true);
                    return Err(WorkerError::Stopped);
                }
                // the source went away: connect again, whatever the strategy
                Err(e) if e.is_transient() && !self.pg.should_exit() => {
                    target.start_lsn = self.reconnect_after(&e)?;
                }
                Err(e)
                    if Strategy::current(self.pg) == Strategy::Retry && !self.pg.should_exit() =>
                {
                    target.start_lsn = self.retry_after(&e)?;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Strategy 'retry': report the error, wait, and start again from the origin's
    /// position (the failed batch was rolled back, so nothing is lost or doubled).
    fn retry_after(&mut self, e: &WorkerError) -> Result<u64, WorkerError> {
        let msg = e.to_string();
        state::set_error(self.slot_idx, &msg);
        state::set_state(self.slot_idx, state::STATE_RESTARTING);
        let wait = self
            .pg
            .guc_int("synchdb.error_retry_interval", 5000)
            .max(10);
        self.pg.log(
            crate::pg::LOG_WARNING,
            &format!("connector {}: {msg}; retrying in {wait} ms", self.connector),
        );
        let lsn = self.wait_then_resume(Duration::from_millis(wait as u64))?;
        state::set_state(self.slot_idx, state::STATE_POLLING);
        Ok(lsn)
    }

    /// Waits (a stop still ends the wait), forgets the relation mappings (the
    /// failed transaction may have changed tables it rolled back: map again),
    /// and returns the origin's position, where the stream starts again. The
    /// error shown stays until the source streams again (`recovering`).
    fn wait_then_resume(&mut self, wait: Duration) -> Result<u64, WorkerError> {
        let until = Instant::now() + wait;
        while Instant::now() < until {
            self.net
                .sleep(self.pg, (until - Instant::now()).as_millis().max(1) as i64)?;
        }
        for (_, m) in self.rels.drain() {
            close_rel(self.pg, m);
        }
        self.recovering = true;
        Ok(self.pg.origin_progress(false)?)
    }

    /// A transient error (the source unreachable, the connection lost): the
    /// state shows `restarting` and err says what and when the next attempt
    /// is, the wait doubles from 1 s to 60 s, and the stream starts again from
    /// the origin's position (a partly applied batch was rolled back). The state
    /// goes back to polling, and err to "no error", once the source accepts the
    /// stream again.
    fn reconnect_after(&mut self, e: &WorkerError) -> Result<u64, WorkerError> {
        self.reconnects += 1;
        let wait = crate::worker::reconnect_wait(self.reconnects);
        crate::worker::report_transient(
            self.pg,
            self.slot_idx,
            &self.connector,
            e,
            self.reconnects,
            wait,
        );
        self.wait_then_resume(wait)
    }

    /// Paused: the origin is released (synchdb_set_offset may move it); returns the
    /// position to resume from once synchdb_resume_engine asks.
    pub fn pause(&mut self, origin: &str) -> Result<u64, WorkerError> {
        self.pg.origin_release()?;
        state::set_state(self.slot_idx, state::STATE_PAUSED);
        self.pg.log(
            crate::pg::LOG_LOG,
            &format!("connector {}: paused", self.connector),
        );
        loop {
            self.net.sleep(self.pg, 1000)?;
            match state::take_cmd(self.slot_idx) {
                state::CMD_RESUME => break,
                state::CMD_OFFSET_CHANGED => self.show_origin_position(origin)?,
                _ => {}
            }
        }
        let pg = self.pg;
        let lsn = pg.in_xact(|| -> Result<u64, WorkerError> {
            pg.origin_setup(origin)
                .ctx(|| format!("setting up replication origin {origin}"))?;
            Ok(pg.origin_progress(false)?)
        })?;
        state::set_state(self.slot_idx, state::STATE_POLLING);
        self.pg.log(
            crate::pg::LOG_LOG,
            &format!(
                "connector {}: resumed at {}",
                self.connector,
                crate::offset::format_lsn(lsn)
            ),
        );
        Ok(lsn)
    }

    /// After synchdb_set_offset: show the new position in the state view.
    fn show_origin_position(&mut self, origin: &str) -> Result<(), WorkerError> {
        let pg = self.pg;
        let rows = pg.in_xact(|| {
            pg.query(
                // as text: an LSN past 2^63 does not fit a bigint
                "SELECT remote_lsn::text FROM pg_replication_origin_status WHERE external_id = $1",
                &[Some(origin)],
            )
            .ctx(|| "reading the replication origin".into())
        })?;
        if let Some(lsn) = rows
            .first()
            .and_then(|r| r[0].as_deref())
            .and_then(|v| crate::offset::parse_lsn(v).ok())
        {
            let off = Offset {
                lsn_proc: lsn,
                lsn_commit: lsn,
                lsn,
                message_type: MessageType::Commit,
                ..Default::default()
            };
            state::set_offset(self.slot_idx, &off.to_json());
        }
        Ok(())
    }

    /// One replication stream, until a pause is asked (Ok), a stop or an error.
    fn stream(&mut self, target: StreamTarget) -> Result<(), WorkerError> {
        // counts of this stream's items, matched against the network thread's
        // (a new stream after a pause or retry starts both at zero)
        self.processed = 0;
        self.processed_durable = 0;
        self.early = Early::Off;
        let (tx, mut rx) = mpsc::channel(CHANNEL_DEPTH);
        let (fb_tx, fb_rx) = mpsc::unbounded_channel();
        let closed = Arc::new(AtomicBool::new(false));
        let budget = Arc::new(Budget::default());
        self.net.spawn(stream_task(
            target,
            tx,
            fb_rx,
            self.net.waker(),
            closed.clone(),
            budget.clone(),
            self.slot_idx,
        ))?;
        let naptime = self.pg.guc_int("synchdb.naptime", 100);
        let mut last_fb = Instant::now();
        let mut fb_due = false;
        let r = (|| -> Result<(), WorkerError> {
            loop {
                self.net.drain();
                let mut got = 0;
                let mut pause = state::take_cmd(self.slot_idx) == state::CMD_PAUSE;
                while let Some(item) = if pause { None } else { rx.try_recv().ok() } {
                    got += 1;
                    match item {
                        StreamItem::Batch(msgs, bytes) => {
                            match self.early {
                                Early::Off => {
                                    for (lsn, msg) in msgs {
                                        self.handle(lsn, msg)?;
                                        if self.in_xact
                                            && self.at_boundary
                                            && self.batch_changes >= self.batch_size
                                        {
                                            self.commit_batch()?;
                                            fb_due = true;
                                        }
                                    }
                                }
                                Early::Applying { .. } => {
                                    for (lsn, msg) in msgs {
                                        if let Err(e) = self.handle(lsn, msg) {
                                            self.early_failed(&e);
                                            break;
                                        }
                                    }
                                }
                                // its file has these changes
                                Early::Failed => {}
                            }
                            budget.give_back(bytes);
                        }
                        StreamItem::EarlyBegin(xid) => fb_due |= self.early_begin(xid)?,
                        StreamItem::EarlyEnd => self.early_end(),
                        StreamItem::EarlyCommit(c) => self.early_commit(*c)?,
                        StreamItem::Streaming => {
                            // back after an error: say so at once, not only
                            // when a batch next commits (there may be none)
                            if self.recovering {
                                self.recovering = false;
                                state::set_error(self.slot_idx, state::NO_ERROR);
                                state::set_state(self.slot_idx, state::STATE_POLLING);
                                if self.reconnects > 0 {
                                    self.pg.log(
                                        crate::pg::LOG_LOG,
                                        &format!(
                                            "connector {}: streaming again after {} attempt(s) to reconnect",
                                            self.connector, self.reconnects
                                        ),
                                    );
                                }
                            }
                            self.reconnects = 0;
                        }
                        StreamItem::Error(e) => return Err(e),
                    }
                    self.processed += 1;
                    if self.pg.should_exit() {
                        return Err(WorkerError::Stopped);
                    }
                    pause = state::take_cmd(self.slot_idx) == state::CMD_PAUSE;
                }
                if pause {
                    // keep whole source transactions; a partial one is rolled back
                    // and comes again from the origin's position on resume
                    if self.in_xact && self.at_boundary {
                        self.commit_batch()?;
                    } else if self.in_xact {
                        self.pg.abort();
                        self.ins_buf.clear();
                        self.in_xact = false;
                        self.batch = BatchStats::default();
                        // it may have mapped tables it created or altered: the
                        // stream resumed sends every description again
                        for (_, m) in self.rels.drain() {
                            close_rel(self.pg, m);
                        }
                    }
                    self.early = Early::Off;
                    return Ok(());
                }
                if self.in_xact && self.at_boundary {
                    self.commit_batch()?;
                    fb_due = true;
                }
                if !self.in_xact {
                    self.processed_durable = self.processed;
                }
                if !self.in_xact {
                    self.check_new_tables()?;
                    self.sync_sequences(false);
                }
                if (fb_due && last_fb.elapsed() >= Duration::from_millis(200))
                    || last_fb.elapsed() >= Duration::from_secs(2)
                {
                    let flush = self.pg.origin_progress(true)?;
                    let _ = fb_tx.send(Feedback {
                        flush,
                        processed: self.processed_durable,
                    });
                    last_fb = Instant::now();
                    fb_due = false;
                }
                if got == 0 {
                    self.net.sleep(self.pg, naptime)?;
                } else if self.pg.should_exit() {
                    return Err(WorkerError::Stopped);
                }
            }
        })();
        if self.in_xact {
            self.pg.abort();
            self.in_xact = false;
        }
        self.ins_buf.clear();
        // let the network thread close the stream (bounded), even when stopping
        drop(fb_tx);
        drop(rx);
        let deadline = Instant::now() + Duration::from_secs(3);
        while !closed.load(Ordering::Acquire) && Instant::now() < deadline {
            self.net.drain();
            if self.pg.wait(-1, 50).is_err() {
                break;
            }
        }
        // looks under way are dropped (the next stream starts them again), and
        // the kept connection closes politely
        self.probe_new = None;
        self.probe_seq = None;
        let kept = self.kept.clone();
        let _ = self.net.call(self.pg, async move {
            let _ = tokio::time::timeout(Duration::from_secs(3), crate::source::close_kept(&kept))
                .await;
        });
        r
    }

    /// A streamed transaction's first block: apply it early when nothing else
    /// is open and no rule needs its commit position first. True when a batch
    /// was committed to make way.
    fn early_begin(&mut self, xid: u32) -> Result<bool, WorkerError> {
        let mut committed = false;
        if self.in_xact && self.at_boundary {
            self.commit_batch()?;
            committed = true;
        }
        // a partial snapshot's skips depend on the commit position, unknown
        // yet; 'skip' counts and logs each failed change, which a replay after
        // a rollback would do again
        if self.in_xact || !self.skips.is_empty() || Strategy::current(self.pg) == Strategy::Skip {
            self.early = Early::Failed;
            return Ok(committed);
        }
        let rels = self
            .rels
            .iter()
            .map(|(&id, m)| {
                let def = (
                    m.source_name.0.clone(),
                    m.source_name.1.clone(),
                    m.source_cols.clone(),
                    m.replica_identity,
                );
                (id, def)
            })
            .collect();
        self.begin_if_needed()?;
        self.at_boundary = false;
        self.cur_xid = xid;
        self.cur_final_lsn = 0;
        self.early = Early::Applying {
            xid,
            rels,
            pending: self.pending.clone(),
            conflicts: Vec::new(),
        };
        Ok(committed)
    }

    /// Something else must be applied first: roll the early transaction back.
    fn early_end(&mut self) {
        let Early::Applying { rels, pending, .. } = std::mem::replace(&mut self.early, Early::Off)
        else {
            self.early = Early::Off;
            return;
        };
        self.pg.abort();
        self.ins_buf.clear();
        self.in_xact = false;
        self.at_boundary = true;
        self.batch = BatchStats::default();
        self.batch_changes = 0;
        self.last_change_lsn = 0;
        // mappings built in it may name what the rollback undid: map again,
        // from the descriptions that held before it, when next used
        for (_, m) in self.rels.drain() {
            close_rel(self.pg, m);
        }
        self.pending = pending;
        self.pending.extend(rels);
        self.source_types.clear();
    }

    /// Applying early failed: the same change fails again, and is reported
    /// under the error strategy, when the file replays the transaction.
    fn early_failed(&mut self, e: &WorkerError) {
        if let Early::Applying { xid, .. } = self.early {
            self.pg.log(
                crate::pg::LOG_DEBUG,
                &format!(
                    "connector {}: streamed transaction {xid} is applied at its commit instead: {e}",
                    self.connector
                ),
            );
        }
        self.early_end();
        self.early = Early::Failed;
    }

    /// The early transaction committed on the source: commit it here, or, if
    /// applying it early was given up, apply it now from its file.
    fn early_commit(&mut self, c: EarlyCommit) -> Result<(), WorkerError> {
        let EarlyCommit {
            mut replay,
            xid,
            flags,
            commit_lsn,
            end_lsn,
            commit_ts,
        } = c;
        let commit = LogicalMessage::Commit {
            flags,
            commit_lsn,
            end_lsn,
            commit_ts,
        };
        if let Early::Applying { conflicts, .. } = std::mem::replace(&mut self.early, Early::Off) {
            // it commits with the batch: its conflicts count now, once
            for (kind, line) in conflicts {
                state::stat_add(self.slot_idx, kind.stat(), 1);
                self.pg.log(crate::pg::LOG_LOG, &line);
            }
            return self.handle(commit_lsn, commit);
        }
        let begin = LogicalMessage::Begin {
            final_lsn: commit_lsn,
            commit_ts,
            xid,
        };
        self.handle(commit_lsn, begin)?;
        let mut n: u64 = 0;
        while let Some((lsn, m, _)) = replay.next_message().map_err(spill_error)? {
            self.handle(lsn, m)?;
            n += 1;
            if n.is_multiple_of(1024) && self.pg.should_exit() {
                return Err(WorkerError::Stopped);
            }
        }
        self.handle(commit_lsn, commit)
    }

    fn begin_if_needed(&mut self) -> Result<(), WorkerError> {
        if !self.in_xact {
            // read for every destination transaction: a reload takes effect at
            // the next one
            let settings = self.pg.apply_settings();
            self.strategy = Strategy::of(&settings);
            self.log_change_on_error = settings.log_change_on_error;
            self.on_missing_row = crate::conflict::OnMissingRow::of(&settings);
            self.pg.begin()?;
            self.in_xact = true;
            self.batch_changes = 0;
        }
        Ok(())
    }

    fn commit_batch(&mut self) -> Result<(), WorkerError> {
        if let Err(e) = self.flush_inserts() {
            self.in_xact = false;
            self.pg.abort();
            return Err(e);
        }
        if let Err(e) = self.pg.commit() {
            self.in_xact = false;
            self.pg.abort();
            return Err(WorkerError::Dest {
                context: format!(
                    "committing applied changes of connector \"{}\"",
                    self.connector
                ),
                err: e,
            });
        }
        self.in_xact = false;
        self.batch_changes = 0;
        self.publish_batch_stats();
        if self.recovering {
            self.recovering = false;
            state::set_error(self.slot_idx, state::NO_ERROR);
        }
        if let Some((commit_lsn, end_lsn, ts, xid)) = self.last_commit {
            state::stat_set(self.slot_idx, state::Stat::AppliedLsn, end_lsn);
            let proc = if self.last_change_lsn > 0 {
                self.last_change_lsn
            } else {
                commit_lsn
            };
            let off = Offset {
                lsn_proc: proc,
                lsn_commit: commit_lsn,
                lsn: proc,
                tx_id: xid,
                ts_usec: crate::decoder::pg_ts_to_unix_usec(ts),
                message_type: self.last_type,
            };
            state::set_offset(self.slot_idx, &off.to_json());
            if !self.cdc_stage_shown {
                state::set_stage(self.slot_idx, state::STAGE_CDC);
                self.cdc_stage_shown = true;
            }
        }
        Ok(())
    }

    fn handle(&mut self, lsn: u64, msg: LogicalMessage) -> Result<(), WorkerError> {
        if !self.ins_buf.is_empty() && !self.keeps_inserts(&msg) {
            self.flush_inserts()?;
        }
        match msg {
            LogicalMessage::Begin { xid, final_lsn, .. } => {
                self.begin_if_needed()?;
                self.at_boundary = false;
                self.cur_xid = xid;
                self.cur_final_lsn = final_lsn;
                // transactions arrive in commit order: once one commits at or
                // after a table's point, no later one is in its copy
                if !self.skips.is_empty() {
                    self.skips.retain(|_, until| final_lsn < *until);
                }
            }
            LogicalMessage::Commit {
                commit_lsn,
                end_lsn,
                commit_ts,
                ..
            } => {
                self.begin_if_needed()?;
                self.pg.origin_set_commit(end_lsn, commit_ts)?;
                self.last_commit = Some((commit_lsn, end_lsn, commit_ts, self.cur_xid));
                let src_ms = crate::decoder::pg_ts_to_unix_usec(commit_ts) / 1000;
                self.batch.txs += 1;
                self.batch.first_src_ms.get_or_insert(src_ms);
                self.batch.last_src_ms = src_ms;
                self.at_boundary = true;
            }
            LogicalMessage::Relation {
                rel_id,
                namespace,
                name,
                columns,
                replica_identity,
                ..
            } => {
                self.begin_if_needed()?;
                if self.skipped(rel_id) {
                    if let Some(old) = self.rels.remove(&rel_id) {
                        self.pg.apply_release()?;
                        close_rel(self.pg, old);
                    }
                    self.pending
                        .insert(rel_id, (namespace, name, columns, replica_identity));
                } else {
                    self.pending.remove(&rel_id);
                    self.relation(rel_id, &namespace, &name, columns, replica_identity)?;
                }
            }
            LogicalMessage::Insert { rel_id, .. }
            | LogicalMessage::Update { rel_id, .. }
            | LogicalMessage::Delete { rel_id, .. }
                if self.skipped(rel_id) => {}
            LogicalMessage::Truncate {
                options,
                rel_ids,
                xid,
            } if rel_ids.iter().any(|&r| self.skipped(r)) => {
                let rel_ids: Vec<u32> = rel_ids.into_iter().filter(|&r| !self.skipped(r)).collect();
                if !rel_ids.is_empty() {
                    let msg = LogicalMessage::Truncate {
                        options,
                        rel_ids,
                        xid,
                    };
                    self.apply_with_strategy(lsn, &msg)?;
                }
            }
            LogicalMessage::Insert { .. } if self.strategy != Strategy::Skip => {
                self.insert(lsn, msg)?
            }
            LogicalMessage::Insert { .. }
            | LogicalMessage::Update { .. }
            | LogicalMessage::Delete { .. }
            | LogicalMessage::Truncate { .. } => self.apply_with_strategy(lsn, &msg)?,
            LogicalMessage::Origin { .. }
            | LogicalMessage::Type { .. }
            | LogicalMessage::Message { .. } => {}
            other => {
                return Err(WorkerError::Internal(format!(
                    "unexpected message in the replication stream: {other:?}"
                )))
            }
        }
        Ok(())
    }

    /// Whether the kept INSERTs may stay kept while `msg` is handled: it is
    /// another INSERT into their table, or says nothing about any table. All
    /// else must see them written first. (None are kept under 'skip', which is
    /// read only between batches, when none are.)
    fn keeps_inserts(&self, msg: &LogicalMessage) -> bool {
        match msg {
            LogicalMessage::Begin { .. }
            | LogicalMessage::Commit { .. }
            | LogicalMessage::Origin { .. }
            | LogicalMessage::Type { .. }
            | LogicalMessage::Message { .. } => true,
            LogicalMessage::Insert { rel_id, .. } => matches!(self.ins_buf.first(),
                Some(LogicalMessage::Insert { rel_id: kept, .. }) if kept == rel_id),
            _ => false,
        }
    }

    /// An INSERT: kept by the shim to be written with the next ones into the same
    /// table in one multi-insert, as COPY writes (one WAL record per heap page
    /// instead of per row), where the table allows it; else applied at once.
    /// Not under 'skip', where each change has a subtransaction of its own, nor
    /// through transform rules (SQL per row).
    fn insert(&mut self, lsn: u64, msg: LogicalMessage) -> Result<(), WorkerError> {
        let LogicalMessage::Insert { rel_id, new, .. } = &msg else {
            return self.apply_with_strategy(lsn, &msg);
        };
        let pg = self.pg;
        let m = self.rel(*rel_id)?;
        if m.transform.is_some() {
            return self.apply_with_strategy(lsn, &msg);
        }
        fill(&mut m.new_buf, &m.from_source, new).map_err(WorkerError::Internal)?;
        let kept = match pg.insert_buffered(m.handle, &m.new_buf) {
            Ok(Some(kept)) => Ok(Some(kept)),
            Ok(None) => pg.insert(m.handle, &m.new_buf).map(|_| None),
            Err(e) => Err(e),
        };
        let kept = match kept {
            Ok(k) => k,
            Err(e) => {
                let dest = m.dest.clone();
                let err = self.failed_write(false, &dest, e, &msg);
                self.log_failed_change(&msg, &err);
                return Err(err);
            }
        };
        self.changed(lsn, MessageType::Insert);
        if let Some((n, full)) = kept {
            // the shim starts a new set after a rollback: so does this list
            if n == 1 {
                self.ins_buf.clear();
            }
            self.ins_buf.push(msg);
            if full {
                self.flush_inserts()?;
            }
        }
        Ok(())
    }

    /// Writes the INSERTs the shim keeps. A failure is reported against the
    /// change that failed, as if it had been applied alone.
    fn flush_inserts(&mut self) -> Result<(), WorkerError> {
        if self.ins_buf.is_empty() {
            return Ok(());
        }
        let res = self.pg.flush_inserts();
        let mut kept = std::mem::take(&mut self.ins_buf);
        let out = match res {
            Ok(()) => Ok(()),
            Err((e, row)) => {
                let dest = match kept.first() {
                    Some(LogicalMessage::Insert { rel_id, .. }) => self
                        .rels
                        .get(rel_id)
                        .map(|m| m.dest.clone())
                        .unwrap_or_else(|| format!("relation {rel_id}")),
                    _ => String::new(),
                };
                match row.and_then(|i| kept.get(i)) {
                    Some(msg) => {
                        let err = self.failed_write(false, &dest, e, msg);
                        self.log_failed_change(msg, &err);
                        Err(err)
                    }
                    None => Err(WorkerError::Dest {
                        context: format!("applying {} INSERTs into {dest}", kept.len()),
                        err: e,
                    }),
                }
            }
        };
        kept.clear();
        self.ins_buf = kept;
        out
    }

    /// Applies one change under synchdb.error_handling_strategy: with 'skip' in a
    /// subtransaction of its own, so that a failing change is logged, counted as a
    /// bad event and left out while the rest of its batch is applied.
    fn apply_with_strategy(&mut self, lsn: u64, msg: &LogicalMessage) -> Result<(), WorkerError> {
        if self.strategy != Strategy::Skip {
            return self
                .apply_change(lsn, msg)
                .inspect_err(|e| self.log_failed_change(msg, e));
        }
        self.pg.subxact_begin()?;
        match self.apply_change(lsn, msg) {
            Ok(()) => {
                self.pg.subxact_commit()?;
                Ok(())
            }
            Err(e @ WorkerError::Dest { .. }) => {
                self.pg.subxact_abort();
                self.log_failed_change(msg, &e);
                self.pg.log(
                    crate::pg::LOG_WARNING,
                    &format!(
                        "connector {}: skipped a change that failed: {e}",
                        self.connector
                    ),
                );
                self.batch.bad += 1;
                Ok(())
            }
            Err(e) => {
                self.pg.subxact_abort();
                Err(e)
            }
        }
    }

    /// synchdb.log_change_on_error: the failing change, with its values as text.
    fn log_failed_change(&self, msg: &LogicalMessage, err: &WorkerError) {
        // applied early: a replay from the file does it again, for real
        if matches!(err, WorkerError::Stopped) || matches!(self.early, Early::Applying { .. }) {
            return;
        }
        if let Some(what) = self.describe_change(msg) {
            self.pg.log(
                crate::pg::LOG_LOG,
                &format!("connector {}: change that failed: {what}", self.connector),
            );
        }
    }

    /// A change as a log line shows it (table, kind, values), or None when
    /// synchdb.log_change_on_error is off.
    fn describe_change(&self, msg: &LogicalMessage) -> Option<String> {
        if !self.log_change_on_error {
            return None;
        }
        let describe = |rel_id: &u32, kind: &str, vals: &[TupleValue]| {
            let Some(m) = self.rels.get(rel_id) else {
                return format!("{kind} on relation {rel_id}");
            };
            let cols: Vec<String> = m
                .source_cols
                .iter()
                .zip(vals)
                .map(|(c, v)| {
                    let shown = match v {
                        TupleValue::Null => "NULL".to_string(),
                        TupleValue::UnchangedToast => "(unchanged)".to_string(),
                        TupleValue::Text(b) | TupleValue::Binary(b) => {
                            let t = String::from_utf8_lossy(b);
                            let n = crate::ffi::truncate_at_char(&t, 200);
                            format!("'{}'{}", &t[..n], if n < t.len() { "..." } else { "" })
                        }
                    };
                    format!("{}={shown}", c.name)
                })
                .collect();
            format!("{kind} on {}: ({})", m.dest, cols.join(", "))
        };
        Some(match msg {
            LogicalMessage::Insert { rel_id, new, .. } => describe(rel_id, "INSERT", new),
            LogicalMessage::Update { rel_id, new, .. } => describe(rel_id, "UPDATE", new),
            LogicalMessage::Delete { rel_id, old, .. } => describe(rel_id, "DELETE", &old.1),
            LogicalMessage::Truncate { rel_ids, .. } => {
                format!("TRUNCATE of relations {rel_ids:?}")
            }
            _ => return None,
        })
    }

    /// Counts and logs a conflict (see `conflict`). One met while a streamed
    /// transaction is applied early waits for that transaction to commit here:
    /// rolled back, it is met again when its file replays it, and counted then.
    fn conflict(
        &mut self,
        kind: crate::conflict::Conflict,
        dest: &str,
        what: &str,
        outcome: &str,
        msg: &LogicalMessage,
    ) {
        let change = self.describe_change(msg);
        let line = crate::conflict::log_line(
            &self.connector,
            kind,
            dest,
            what,
            outcome,
            change.as_deref(),
        );
        if let Early::Applying { conflicts, .. } = &mut self.early {
            conflicts.push((kind, line));
            return;
        }
        state::stat_add(self.slot_idx, kind.stat(), 1);
        self.pg.log(crate::pg::LOG_LOG, &line);
    }

    /// An INSERT or UPDATE failed: counted as the conflict it is, if it is one;
    /// the strategy decides what follows.
    fn failed_write(
        &mut self,
        update: bool,
        dest: &str,
        e: crate::pg::PgError,
        msg: &LogicalMessage,
    ) -> WorkerError {
        if let Some(kind) = crate::conflict::Conflict::of_error(&e, update) {
            self.conflict(
                kind,
                dest,
                &e.message,
                "the change failed (synchdb.error_handling_strategy decides)",
                msg,
            );
        }
        WorkerError::Dest {
            context: format!(
                "{} {dest}",
                if update {
                    "applying an UPDATE to"
                } else {
                    "applying an INSERT into"
                }
            ),
            err: e,
        }
    }

    /// The row an UPDATE or DELETE names is not on the destination: skipped and
    /// logged, as PostgreSQL's subscriber does (synchdb.on_missing_row = skip),
    /// or a failed change (error).
    fn row_missing(
        &mut self,
        kind: crate::conflict::Conflict,
        lsn: u64,
        dest: &str,
        msg: &LogicalMessage,
    ) -> Result<(), WorkerError> {
        let what = if kind == crate::conflict::Conflict::UpdateMissing {
            "the row to be updated is not on the destination"
        } else {
            "the row to be deleted is not on the destination"
        };
        if self.on_missing_row == crate::conflict::OnMissingRow::Error {
            self.conflict(
                kind,
                dest,
                what,
                "the change failed (synchdb.on_missing_row = error)",
                msg,
            );
            return Err(WorkerError::Dest {
                context: format!(
                    "{} {dest}",
                    if kind == crate::conflict::Conflict::UpdateMissing {
                        "applying an UPDATE to"
                    } else {
                        "applying a DELETE to"
                    }
                ),
                err: crate::conflict::missing_row_error(kind, dest),
            });
        }
        self.conflict(
            kind,
            dest,
            what,
            "skipped (synchdb.on_missing_row = skip)",
            msg,
        );
        // processed: the position moves past it
        self.batch.first_pg_ms.get_or_insert_with(now_ms);
        self.batch_changes += 1;
        self.last_change_lsn = lsn;
        Ok(())
    }

    fn apply_change(&mut self, lsn: u64, msg: &LogicalMessage) -> Result<(), WorkerError> {
        match msg {
            LogicalMessage::Insert { rel_id, new, .. } => {
                let rel_id = *rel_id;
                let pg = self.pg;
                let m = self.rel(rel_id)?;
                let new = transformed(pg, m, new)?;
                fill(&mut m.new_buf, &m.from_source, &new).map_err(WorkerError::Internal)?;
                if let Err(e) = pg.insert(m.handle, &m.new_buf) {
                    let dest = m.dest.clone();
                    return Err(self.failed_write(false, &dest, e, msg));
                }
                self.changed(lsn, MessageType::Insert);
            }
            LogicalMessage::Update {
                rel_id, old, new, ..
            } => {
                let rel_id = *rel_id;
                let pg = self.pg;
                let m = self.rel(rel_id)?;
                let new = transformed(pg, m, new)?;
                fill(&mut m.new_buf, &m.from_source, &new).map_err(WorkerError::Internal)?;
                if let Some((_, oldv)) = &old {
                    let oldv = transformed(pg, m, oldv)?;
                    fill(&mut m.old_buf, &m.from_source, &oldv).map_err(WorkerError::Internal)?;
                }
                let oldp = old.as_ref().map(|_| m.old_buf.as_slice());
                let dest = m.dest.clone();
                match pg.update(m.handle, oldp, &m.new_buf) {
                    Ok(true) => self.changed(lsn, MessageType::Update),
                    Ok(false) => {
                        self.row_missing(crate::conflict::Conflict::UpdateMissing, lsn, &dest, msg)?
                    }
                    Err(e) => return Err(self.failed_write(true, &dest, e, msg)),
                }
            }
            LogicalMessage::Delete {
                rel_id,
                old: (_, oldv),
                ..
            } => {
                let rel_id = *rel_id;
                let pg = self.pg;
                let m = self.rel(rel_id)?;
                let oldv = transformed(pg, m, oldv)?;
                fill(&mut m.old_buf, &m.from_source, &oldv).map_err(WorkerError::Internal)?;
                let dest = m.dest.clone();
                let found = pg
                    .delete(m.handle, &m.old_buf)
                    .ctx(|| format!("applying a DELETE to {dest}"))?;
                if found {
                    self.changed(lsn, MessageType::Delete);
                } else {
                    self.row_missing(crate::conflict::Conflict::DeleteMissing, lsn, &dest, msg)?;
                }
            }
            LogicalMessage::Truncate {
                options, rel_ids, ..
            } => {
                let mut names = Vec::new();
                for id in rel_ids {
                    names.push(self.rel(*id)?.dest.clone());
                }
                self.pg.apply_release()?;
                let mut sql = format!("TRUNCATE {}", names.join(", "));
                if *options & 2 != 0 {
                    sql.push_str(" RESTART IDENTITY");
                }
                if *options & 1 != 0 {
                    sql.push_str(" CASCADE");
                }
                self.pg.exec(&sql, &[]).ctx(|| format!("applying {sql}"))?;
                self.changed(lsn, MessageType::Truncate);
            }
            _ => {}
        }
        Ok(())
    }

    /// The destination plan of a relation, under the object mapping rules.
    fn rel_plan(
        &mut self,
        rel_id: u32,
        namespace: &str,
        name: &str,
        columns: &[RelColumn],
    ) -> Result<DestTable, WorkerError> {
        let pg = self.pg;
        let (schema, dname) = self.rules.dest_table(namespace, name, &self.dest_schema);
        let serial = self.serial_columns(rel_id, namespace, name, columns)?;
        let mut cols = Vec::with_capacity(columns.len());
        for c in columns {
            let (natural, base) = if c.type_oid >= FIRST_NON_BUILTIN_OID {
                self.source_type(c.type_oid, c.type_modifier, &schema)?
            } else {
                builtin_type(pg, c)?
            };
            let is_serial = serial.contains(&c.name);
            let rule = self
                .rules
                .type_rule(namespace, name, &c.name, &base, is_serial);
            cols.push(DestColumn {
                src: c.name.clone(),
                name: self.rules.dest_column(namespace, name, &c.name),
                type_sql: rule
                    .map(|r| r.apply(&natural))
                    .unwrap_or_else(|| natural.clone()),
                natural_type: natural.clone(),
                not_null: false,
                default: None,
                source_type: natural,
                serial: is_serial,
                transform: self
                    .rules
                    .transform(namespace, name, &c.name)
                    .map(str::to_string),
                generated: None,
                identity: None,
                collation: None,
            });
        }
        Ok(DestTable {
            src_oid: rel_id,
            src_schema: namespace.to_string(),
            src_name: name.to_string(),
            schema,
            name: dname,
            primary_key: Vec::new(),
            pk_include: Vec::new(),
            replica_identity: 'd',
            identity_index_name: String::new(),
            identity_index: Vec::new(),
            partitioned_by: None,
            attach_to: None,
            columns: cols,
        })
    }

    /// Which columns of a source relation are serial (identity or a nextval()
    /// default), for `type|true` datatype rules and synchdb_attribute; a Relation
    /// message does not say. Columns synchdb_attribute knows (by source name, or by
    /// oid when the source renamed the table) keep what was recorded
    /// (the snapshot read it in its own catalog snapshot); only columns new to the
    /// destination (a table CDC creates, an added or renamed column) are looked up
    /// on the source, as its catalog is now.
    fn serial_columns(
        &self,
        rel_id: u32,
        namespace: &str,
        name: &str,
        columns: &[RelColumn],
    ) -> Result<HashSet<String>, WorkerError> {
        let ext = format!("{namespace}.{name}");
        let rows = self
            .pg
            .query(
                "SELECT ext_attname, ext_isserial::text FROM synchdb_attribute
                  WHERE name = $1 AND (ext_tbname = $2 OR ext_relid = $3::oid)",
                &[Some(&self.connector), Some(&ext), Some(&rel_id.to_string())],
            )
            .ctx(|| format!("reading synchdb_attribute for source table {ext}"))?;
        let mut known: HashMap<String, bool> = HashMap::new();
        for r in rows {
            if let [Some(n), Some(s)] = r.as_slice() {
                known.insert(n.clone(), s == "true");
            }
        }
        let mut serial: HashSet<String> = known
            .iter()
            .filter(|(_, s)| **s)
            .map(|(n, _)| n.clone())
            .collect();
        if columns.iter().all(|c| known.contains_key(&c.name)) {
            return Ok(serial);
        }
        let Some(params) = self.source.clone() else {
            return Ok(serial);
        };
        let found = self
            .net
            .call(self.pg, async move {
                crate::source::serial_columns(&params, rel_id).await
            })?
            .map_err(|e| e.within(&format!("reading the columns of source table {ext}")))?;
        serial.extend(found.into_iter().filter(|n| !known.contains_key(n)));
        Ok(serial)
    }

    /// The source renamed a replicated table or moved it to another schema (its
    /// Relation message names it anew, under the same oid): the destination table
    /// copied from it moves to where the rules put the new name, keeping its rows,
    /// and synchdb_attribute follows. Without this the new name would get a new,
    /// empty table, and changes to rows copied earlier would find nothing.
    fn follow_source_rename(&mut self, plan: &DestTable) -> Result<(), WorkerError> {
        let pg = self.pg;
        let oid = plan.src_oid.to_string();
        let found = pg
            .query(
                "SELECT n.nspname::text, c.relname::text, a.ext_tbname,
                        (to_regclass($3) IS NOT NULL AND to_regclass($3) <> c.oid)::text
                   FROM synchdb_attribute a
                   JOIN pg_class c ON c.oid = a.attrelid
                   JOIN pg_namespace n ON n.oid = c.relnamespace
                  WHERE a.name = $1 AND a.ext_relid = $2::oid
                  LIMIT 1",
                &[Some(&self.connector), Some(&oid), Some(&plan.qualified())],
            )
            .ctx(|| {
                format!(
                    "looking up the destination of source table {}",
                    plan.ext_tbname()
                )
            })?;
        let Some([Some(schema), Some(table), Some(was), Some(taken)]) =
            found.first().map(Vec::as_slice)
        else {
            return Ok(());
        };
        let ext = plan.ext_tbname();
        if *was == ext {
            return Ok(());
        }
        let current = format!("{}.{}", quote_ident(schema), quote_ident(table));
        // several source schemas can map to one destination schema: then only
        // the recorded source name changes
        let moved = *schema != plan.schema || *table != plan.name;
        if moved {
            if taken == "true" {
                return Err(WorkerError::Config(format!(
                    "source table {was} is now {ext}, which maps to {}, but that table already \
                     exists on the destination; {current} still holds the rows of {ext}. \
                     Drop or rename {} (or map {ext} elsewhere with synchdb_add_objmap), then \
                     start the connector again",
                    plan.qualified(),
                    plan.qualified()
                )));
            }
            pg.apply_release()?;
            if let Some(old) = self.rels.remove(&plan.src_oid) {
                close_rel(pg, old);
            }
            let mut sql = Vec::new();
            if *schema != plan.schema {
                sql.push(crate::ddl::ensure_schema_sql(&plan.schema));
                sql.push(format!(
                    "ALTER TABLE {current} SET SCHEMA {}",
                    quote_ident(&plan.schema)
                ));
            }
            if *table != plan.name {
                sql.push(format!(
                    "ALTER TABLE {}.{} RENAME TO {}",
                    quote_ident(&plan.schema),
                    quote_ident(table),
                    quote_ident(&plan.name)
                ));
            }
            pg.exec(&sql.join("; "), &[])
                .ctx(|| format!("moving {current} to {}", plan.qualified()))?;
            self.batch.ddls += 1;
        }
        pg.exec(
            "UPDATE synchdb_attribute SET ext_tbname = $3 WHERE name = $1 AND ext_relid = $2::oid",
            &[Some(&self.connector), Some(&oid), Some(&ext)],
        )
        .ctx(|| "updating synchdb_attribute".into())?;
        let what = if moved {
            format!("{current} moved to {}", plan.qualified())
        } else {
            format!("it still maps to {current}")
        };
        pg.log(
            crate::pg::LOG_LOG,
            &format!(
                "connector {}: source table {was} is now {ext}: {what}",
                self.connector
            ),
        );
        Ok(())
    }

    /// A table the destination lacks (mode never, a table or partition new on the
    /// source, one dropped by hand): from the source's catalog when it still has
    /// the table (`create_from_catalog`), else from the Relation message: its
    /// columns with their types; the key columns become the primary key when the
    /// source's replica identity is its primary key ('d').
    fn create_from_relation(
        &mut self,
        plan: &DestTable,
        columns: &[RelColumn],
        replica_identity: u8,
    ) -> Result<(), WorkerError> {
        let pg = self.pg;
        pg.apply_release()?;
        // a connector of a role that is not a superuser creates only in its schemas
        let owner = crate::ownership::owner_role(pg, &self.cfg)?;
        if let Some(role) = &owner {
            crate::ownership::check_table(pg, &self.cfg, role, plan)?;
        }
        if self.create_from_catalog(plan, owner.as_deref())? {
            return Ok(());
        }
        let mut plan = plan.clone();
        if replica_identity == b'd' {
            plan.primary_key = columns
                .iter()
                .zip(&plan.columns)
                .filter(|(c, _)| c.flags & 1 == 1)
                .map(|(_, d)| d.name.clone())
                .collect();
        }
        let mut sql = format!(
            "{}; {}",
            crate::ddl::ensure_schema_sql(&plan.schema),
            crate::ddl::create_table(&plan, false)
        );
        if let Some(pk) = crate::ddl::add_primary_key(&plan) {
            sql.push_str(&format!("; {pk}"));
        }
        pg.exec(&sql, &[]).ctx(|| {
            format!(
                "creating {} for source table {}",
                plan.qualified(),
                plan.ext_tbname()
            )
        })?;
        if let Some(role) = &owner {
            crate::ownership::give(pg, role, &[&plan], &[], &[])?;
        }
        crate::objmap::record_attributes(pg, &self.connector, &plan)?;
        crate::snapshot::remember_table(
            pg,
            &self.connector,
            plan.src_oid,
            &plan.src_schema,
            &plan.src_name,
        )?;
        pg.log(
            crate::pg::LOG_LOG,
            &format!(
                "connector {}: created {} from the source's description",
                self.connector,
                plan.qualified()
            ),
        );
        Ok(())
    }

    /// Creates the destination table of source relation `plan.src_oid` as the
    /// snapshot would, from the source's catalog as it is now: its types, the
    /// columns a Relation message leaves out (generated ones), identity columns,
    /// the primary key with INCLUDE columns, the replica identity, and, for a
    /// partition of a table the destination has, the attachment to it. False when
    /// the source no longer has the table (then the Relation message is all there is).
    fn create_from_catalog(
        &mut self,
        plan: &DestTable,
        owner: Option<&str>,
    ) -> Result<bool, WorkerError> {
        let Some(params) = self.source.clone() else {
            return Ok(false);
        };
        let cfg = self.cfg.clone();
        let oid = plan.src_oid;
        let r = self.net.call(self.pg, async move {
            crate::source::with_client(&params, async |client: &tokio_postgres::Client| {
                let Some(t) = crate::source::describe_table(client, &cfg, oid).await? else {
                    return Ok(None);
                };
                let roots: Vec<u32> = t
                    .columns
                    .iter()
                    .map(|c| c.udt)
                    .filter(|&u| u != 0)
                    .collect();
                let types = crate::usertypes::read_types(client, &roots).await?;
                let mut objs = crate::objects::read(client, &[oid]).await?;
                let seqs = crate::objects::read_sequences(client, &[oid], &[]).await?;
                Ok::<_, String>(Some((
                    t,
                    types,
                    objs.remove(&oid).unwrap_or_default(),
                    seqs,
                )))
            })
            .await
        })?;
        let Some((mut t, types, objs, seqs)) = r.map_err(|e| {
            e.within(&format!(
                "reading source table {} to create it on the destination",
                plan.ext_tbname()
            ))
        })?
        else {
            return Ok(false);
        };
        let pg = self.pg;
        let placed: Vec<(crate::usertypes::UserType, String)> = types
            .into_iter()
            .map(|ty| (ty, plan.schema.clone()))
            .collect();
        let names = crate::usertypes::type_names(&placed);
        for c in &mut t.columns {
            if c.udt != 0 {
                c.type_sql = crate::usertypes::ref_sql(
                    &crate::usertypes::TypeRef {
                        udt: c.udt,
                        is_array: c.udt_array,
                        sql: c.type_sql.clone(),
                    },
                    &names,
                );
            }
        }
        let mut dplan = crate::objmap::plan_table(&self.rules, &t, &self.dest_schema);
        dplan.schema = plan.schema.clone();
        dplan.name = plan.name.clone();
        if t.partition_of.is_some() {
            if let Some(p) = self.source_partition_of(oid)? {
                let parent = p.dest.qualified();
                let exists = pg
                    .query("SELECT to_regclass($1) IS NOT NULL", &[Some(&parent)])
                    .ctx(|| format!("looking up {parent}"))?;
                // a parent gets no change of its own (mode never): it comes
                // with its first partition, and its own parent with it
                let mut there = exists.first().and_then(|r| r[0].as_deref()) == Some("t");
                if !there {
                    if let Some(role) = owner {
                        crate::ownership::check_table(pg, &self.cfg, role, &p.dest)?;
                    }
                    there = self.create_from_catalog(&p.dest, owner)?;
                }
                if there {
                    dplan.attach_to = Some((parent, p.bound));
                }
            }
        }
        let virtual_ok = pg
            .guc("server_version_num")
            .and_then(|v| v.parse::<u32>().ok())
            .is_some_and(|v| v >= 180_000);
        let dest = dplan.qualified();
        let dest_of: HashMap<u32, &DestTable> = [(oid, &dplan)].into_iter().collect();
        let placed_seqs = crate::objects::place_sequences(&seqs, &dest_of, &self.dest_schema);
        let mut schemas: Vec<&str> = vec![dplan.schema.as_str()];
        schemas.extend(placed_seqs.iter().map(|(_, s)| s.as_str()));
        let connector = self.connector.clone();
        let rules = self.rules.clone();
        crate::snapshot::with_dest_search_path(pg, &schemas, || {
            for s in &schemas {
                pg.exec(&crate::ddl::ensure_schema_sql(s), &[])
                    .ctx(|| format!("creating schema {}", quote_ident(s)))?;
            }
            crate::usertypes::create_types(pg, &connector, &placed)?;
            crate::objects::create_sequences(pg, &connector, &placed_seqs)?;
            let mut stmts = vec![crate::ddl::create_table(&dplan, virtual_ok)];
            stmts.extend(crate::ddl::attach_partition(&dplan));
            for sql in &stmts {
                pg.exec(sql, &[]).ctx(|| {
                    format!(
                        "creating {dest} for source table {}: {sql}",
                        dplan.ext_tbname()
                    )
                })?;
            }
            if !crate::snapshot::has_primary_key(pg, &dplan)? {
                if let Some(sql) = crate::ddl::add_primary_key(&dplan) {
                    pg.exec(&sql, &[]).ctx(|| {
                        format!(
                            "creating {dest} for source table {}: {sql}",
                            dplan.ext_tbname()
                        )
                    })?;
                }
            }
            crate::objects::build_table_objects(pg, &connector, &dplan, &objs, &rules)?;
            for sql in crate::ddl::replica_identity(&dplan) {
                pg.exec(&sql, &[]).ctx(|| {
                    format!(
                        "creating {dest} for source table {}: {sql}",
                        dplan.ext_tbname()
                    )
                })?;
            }
            // keys to tables the connector has (this one included)
            let dest_name = |ref_oid: u32| -> Result<Option<String>, WorkerError> {
                if ref_oid == oid {
                    return Ok(Some(dest.clone()));
                }
                let rows = pg
                    .query(
                        "SELECT attrelid::regclass::text FROM synchdb_attribute
                          WHERE name = $1 AND ext_relid = $2::oid LIMIT 1",
                        &[Some(&connector), Some(&ref_oid.to_string())],
                    )
                    .ctx(|| "looking up the table a foreign key references".into())?;
                Ok(rows.first().and_then(|r| r[0].clone()))
            };
            crate::objects::build_foreign_keys(
                pg,
                &connector,
                &dplan,
                dplan.partitioned_by.is_some(),
                &objs,
                &dest_name,
            )?;
            crate::objects::finish_sequences(pg, &connector, &placed_seqs, &dest_of, &rules)?;
            if let Some(role) = &owner {
                crate::ownership::give(pg, role, &[&dplan], &placed, &placed_seqs)?;
            }
            Ok(())
        })?;
        crate::objmap::record_attributes(pg, &self.connector, &dplan)?;
        crate::snapshot::remember_table(pg, &self.connector, oid, &t.schema, &t.name)?;
        pg.log(
            crate::pg::LOG_LOG,
            &format!(
                "connector {}: created {dest} from the source's catalog{}",
                self.connector,
                match &dplan.attach_to {
                    Some((parent, bound)) => format!(", as a partition of {parent} {bound}"),
                    None => String::new(),
                }
            ),
        );
        Ok(true)
    }

    /// If source relation `oid` is a partition: its parent (planned under the
    /// rules) and its bound (`FOR VALUES ...`, `DEFAULT`).
    fn source_partition_of(&self, oid: u32) -> Result<Option<PartitionOf>, WorkerError> {
        let Some(params) = self.source.clone() else {
            return Ok(None);
        };
        let r = self.net.call(self.pg, async move {
            let rows = crate::source::query_once(
                &params,
                "SELECT p.oid, pn.nspname::text, p.relname::text, pg_get_expr(c.relpartbound, c.oid)
                   FROM pg_catalog.pg_class c
                   JOIN pg_catalog.pg_inherits i ON i.inhrelid = c.oid
                   JOIN pg_catalog.pg_class p ON p.oid = i.inhparent
                   JOIN pg_catalog.pg_namespace pn ON pn.oid = p.relnamespace
                  WHERE c.oid = $1::oid AND c.relispartition",
                &[&oid],
            )
            .await?;
            Ok::<_, crate::source::SourceError>(rows.into_iter().next().and_then(|r| {
                Some((
                    r.get::<_, Option<u32>>(0)?,
                    r.get::<_, Option<String>>(1)?,
                    r.get::<_, Option<String>>(2)?,
                    r.get::<_, Option<String>>(3)?,
                ))
            }))
        })?;
        let found = r.map_err(|e| {
            e.within(&format!(
                "reading the partition bound of relation {oid} on the source"
            ))
        })?;
        Ok(found.map(|(poid, schema, name, bound)| {
            let src = crate::source::SourceTable {
                oid: poid,
                schema,
                name,
                ..Default::default()
            };
            PartitionOf {
                dest: crate::objmap::plan_table(&self.rules, &src, &self.dest_schema),
                bound,
            }
        }))
    }

    fn publish_batch_stats(&mut self) {
        use state::Stat;
        let b = std::mem::take(&mut self.batch);
        let i = self.slot_idx;
        let dmls = b.creates + b.updates + b.deletes + b.truncates;
        state::stat_add(i, Stat::Creates, b.creates);
        state::stat_add(i, Stat::Updates, b.updates);
        state::stat_add(i, Stat::Deletes, b.deletes);
        state::stat_add(i, Stat::Truncates, b.truncates);
        state::stat_add(i, Stat::Dmls, dmls);
        state::stat_add(i, Stat::Ddls, b.ddls);
        state::stat_add(i, Stat::Txs, b.txs);
        state::stat_add(i, Stat::BadEvents, b.bad);
        state::stat_add(i, Stat::TotalEvents, dmls + b.ddls + b.bad);
        state::stat_add(i, Stat::BatchesDone, 1);
        if let Some(first) = b.first_src_ms {
            state::stat_set(i, Stat::FirstSrcTs, first as u64);
            state::stat_set(i, Stat::LastSrcTs, b.last_src_ms as u64);
        }
        if let Some(first) = b.first_pg_ms {
            state::stat_set(i, Stat::FirstPgTs, first as u64);
        }
        state::stat_set(i, Stat::LastPgTs, now_ms() as u64);
    }

    fn changed(&mut self, lsn: u64, t: MessageType) {
        match t {
            MessageType::Insert => self.batch.creates += 1,
            MessageType::Update => self.batch.updates += 1,
            MessageType::Delete => self.batch.deletes += 1,
            MessageType::Truncate => self.batch.truncates += 1,
            _ => {}
        }
        self.batch.first_pg_ms.get_or_insert_with(now_ms);
        self.batch_changes += 1;
        self.last_change_lsn = lsn;
        self.last_type = t;
    }

    fn rel(&mut self, rel_id: u32) -> Result<&mut RelMap, WorkerError> {
        if !self.rels.contains_key(&rel_id) {
            if let Some((ns, name, cols, ri)) = self.pending.remove(&rel_id) {
                self.relation(rel_id, &ns, &name, cols, ri)?;
            }
        }
        self.rels.get_mut(&rel_id).ok_or_else(|| {
            WorkerError::Internal(format!(
                "change for relation {rel_id} arrived before its description"
            ))
        })
    }

    /// A Relation message: (re)maps a source relation onto its destination table
    /// (under the object mapping rules), following the source's column changes.
    fn relation(
        &mut self,
        rel_id: u32,
        namespace: &str,
        name: &str,
        columns: Vec<RelColumn>,
        replica_identity: u8,
    ) -> Result<(), WorkerError> {
        if let Some(old) = self.rels.get(&rel_id) {
            if old.source_cols == columns
                && old.source_name.0 == namespace
                && old.source_name.1 == name
            {
                return Ok(());
            }
        }
        let pg = self.pg;
        let plan = self.rel_plan(rel_id, namespace, name, &columns)?;
        self.follow_source_rename(&plan)?;
        let dest = plan.qualified();
        // the first row says whether the table exists (a table may have no columns)
        let attrs = pg
            .query(
                "SELECT NULL, NULL, NULL WHERE to_regclass($1) IS NOT NULL
                 UNION ALL
                 SELECT a.attnum::text, a.attname::text, format_type(a.atttypid, a.atttypmod)
                   FROM pg_attribute a
                  WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped",
                &[Some(&dest)],
            )
            .ctx(|| format!("looking up {dest}"))?;
        // The source's catalog does not show an open transaction's tables and
        // columns, and what they hold is read from there: a transaction applied
        // early leaves creating and altering tables to its commit.
        let early = matches!(self.early, Early::Applying { .. });
        if attrs.is_empty() && early {
            return Err(WorkerError::Internal(format!(
                "{dest} is created at the commit of the transaction that first writes to it"
            )));
        }
        if attrs.is_empty() {
            // not on the destination (mode never, or dropped by hand): create it
            // from what the source says about it
            self.create_from_relation(&plan, &columns, replica_identity)?;
            self.batch.ddls += 1;
            return self.relation(rel_id, namespace, name, columns, replica_identity);
        }
        // a connector of a role that is not a superuser writes only into its tables
        if let Some(role) = crate::ownership::owner_role(pg, &self.cfg)? {
            crate::ownership::check_table(pg, &self.cfg, &role, &plan)?;
        }
        let mut have: HashMap<String, usize> = HashMap::new();
        // the destination's own column types: a transform's result is cast to
        // these, not to what a datatype rule asks (a rule the last reload
        // refused is in synchdb_objmap but not on the table)
        let mut have_type: HashMap<String, String> = HashMap::new();
        for a in &attrs {
            if let (Some(num), Some(n)) = (&a[0], &a[1]) {
                if let Ok(num) = num.parse::<usize>() {
                    have.insert(n.clone(), num);
                }
                if let Some(t) = &a[2] {
                    have_type.insert(n.clone(), t.clone());
                }
            }
        }
        // schema changes on the source: the destination follows, in its own names
        let dcol = |n: &str| self.rules.dest_column(namespace, name, n);
        let previous = self.rels.get(&rel_id).map(|m| m.source_cols.clone());
        let changes = crate::ddl::column_changes(previous.as_deref(), &columns, |n| {
            have.contains_key(&dcol(n))
        });
        if !changes.is_empty() && early {
            return Err(WorkerError::Internal(format!(
                "the schema change of {dest} is applied at its transaction's commit"
            )));
        }
        if !changes.is_empty() {
            pg.apply_release()?;
        }
        for change in &changes {
            let typed = |c: &RelColumn| -> (RelColumn, String) {
                let d = plan.columns.iter().find(|d| d.src == c.name);
                let mut c = c.clone();
                c.name = dcol(&c.name);
                (c, d.map(|d| d.type_sql.clone()).unwrap_or_default())
            };
            let (mapped, ty) = match change {
                ColumnChange::Add(c) => {
                    let (c, t) = typed(c);
                    (ColumnChange::Add(c), t)
                }
                ColumnChange::Retype(c) => {
                    let (c, t) = typed(c);
                    (ColumnChange::Retype(c), t)
                }
                ColumnChange::Drop(n) => (ColumnChange::Drop(dcol(n)), String::new()),
                ColumnChange::Rename { from, to } => (
                    ColumnChange::Rename {
                        from: dcol(from),
                        to: dcol(to),
                    },
                    String::new(),
                ),
            };
            let mut sql = crate::ddl::alter_sql(&dest, &mapped, &ty);
            // rows the table had get what they hold on the source: a constant
            // default (kept only for them, as PostgreSQL's own missing value)
            let mut fill = None;
            if let (ColumnChange::Add(src), ColumnChange::Add(c)) = (change, &mapped) {
                let warn = |why: &str| {
                    pg.log(
                        crate::pg::LOG_WARNING,
                        &format!(
                            "connector {}: column {} was added to source table {}.{} {why}; \
                             logical decoding does not carry those values, so the existing rows \
                             hold NULL in {dest}.{}. To copy the table again: set snapshottable \
                             to it and synchdb_restart_connector('{}', 'always')",
                            self.connector,
                            quote_ident(&src.name),
                            quote_ident(namespace),
                            quote_ident(name),
                            quote_ident(&c.name),
                            self.connector
                        ),
                    )
                };
                match self.added_column(namespace, name, &src.name)? {
                    AddedColumn::Value(v) if !ty.is_empty() && !ty.ends_with(']') => {
                        sql.push_str(&format!(
                            " DEFAULT (({}::{ty}[])[1])",
                            crate::config::quote_literal(&v)
                        ));
                        fill = Some(format!(
                            "ALTER TABLE {dest} ALTER COLUMN {} DROP DEFAULT",
                            quote_ident(&c.name)
                        ));
                    }
                    AddedColumn::Value(v) => warn(&format!("with the value {v} for its existing rows")),
                    AddedColumn::Rewritten(d) => warn(&format!(
                        "with default {d}, which the source wrote into its existing rows by rewriting the table"
                    )),
                    AddedColumn::Nothing => {}
                }
            }
            pg.exec(&sql, &[])
                .ctx(|| format!("applying schema change: {sql}"))?;
            if let Some(fill) = &fill {
                pg.exec(fill, &[])
                    .ctx(|| format!("applying schema change: {fill}"))?;
            }
            pg.log(
                crate::pg::LOG_LOG,
                &format!("connector {}: {sql}", self.connector),
            );
        }
        let altered = !changes.is_empty();
        self.batch.ddls += changes.len() as u64;
        if let Some(old) = self.rels.remove(&rel_id) {
            pg.apply_release()?;
            close_rel(pg, old);
        }
        if altered {
            crate::objmap::record_attributes(pg, &self.connector, &plan)?;
            // look the table up again; `previous` is gone, so nothing repeats
            return self.relation(rel_id, namespace, name, columns, replica_identity);
        }
        let mut exprs = Vec::new();
        let mut cols = Vec::new();
        for (i, c) in plan.columns.iter().enumerate() {
            if let Some(x) = &c.transform {
                let p = format!("${}", cols.len() + 1);
                let typed = format!("{p}::{}", c.natural_type);
                let sql =
                    crate::objmap::compile_transform(x, &p, &typed).map_err(WorkerError::Config)?;
                let cast = have_type.get(&c.name).unwrap_or(&c.type_sql);
                exprs.push(format!("(({sql})::{cast})::text"));
                cols.push(i);
            }
        }
        let transform = if cols.is_empty() {
            None
        } else {
            let sql = format!("SELECT {}", exprs.join(", "));
            let plan = pg
                .prepare(&sql, cols.len())
                .ctx(|| format!("preparing the transform rules of {dest}"))?;
            Some(RowTransform { plan, cols })
        };
        let opened = pg
            .rel_open(&plan.schema, &plan.name)
            .ctx(|| format!("opening {dest}"));
        let (handle, natts) = match opened {
            Ok(h) => h,
            Err(e) => {
                if let Some(t) = transform {
                    pg.free_plan(t.plan);
                }
                return Err(e);
            }
        };
        let mut from_source = vec![None; natts];
        for (i, c) in plan.columns.iter().enumerate() {
            if let Some(&num) = have.get(&c.name) {
                if num >= 1 && num <= natts {
                    from_source[num - 1] = Some(i);
                }
            }
        }
        self.rels.insert(
            rel_id,
            RelMap {
                handle,
                dest,
                transform,
                from_source,
                source_name: (namespace.to_string(), name.to_string()),
                source_cols: columns,
                replica_identity,
                new_buf: Vec::with_capacity(natts),
                old_buf: Vec::with_capacity(natts),
            },
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::confirm_position;

    #[test]
    fn confirmed_position_never_passes_the_source() {
        // busy: only what is applied
        assert_eq!(confirm_position(0x10, 0x40, 0x20, false), 0x10);
        // idle: what the source has sent is confirmed too
        assert_eq!(confirm_position(0x10, 0x40, 0x20, true), 0x40);
        // an origin past everything the source has said is never confirmed
        assert_eq!(confirm_position(u64::MAX, 0x40, 0x30, true), 0x40);
        assert_eq!(confirm_position(u64::MAX, 0, 0x30, false), 0x30);
    }
}
