//! The shared-memory state area: one slot per connector, read by the state view.
//!
//! The shim reserves the memory and hands us its address; the layout is ours. Each
//! slot's text fields are guarded by a sequence counter (seqlock): the writer makes
//! it odd while it writes, readers copy and retry if it moved, so a reader never
//! blocks the worker. Writers of one slot (its worker, the launcher) take a small
//! per-slot spin lock that is never held across a PostgreSQL call.

use crate::ffi::SdbStateRow;
use std::ffi::c_void;
use std::sync::atomic::{fence, AtomicI32, AtomicPtr, AtomicU32, AtomicU64, Ordering};

const MAGIC: u64 = 0x5359_4e43_4844_4232;
const NAME_LEN: usize = 64;
const STAGE_LEN: usize = 32;
const STATE_LEN: usize = 32;
const ERR_LEN: usize = 4096;
const OFFSET_LEN: usize = 256;

pub const STAGE_SNAPSHOT: &str = "initial snapshot";
pub const STAGE_CDC: &str = "change data capture";
pub const STAGE_SCHEMA_SYNC: &str = "schema sync";
pub const STATE_INITIALIZING: &str = "initializing";
pub const STATE_POLLING: &str = "polling";
pub const STATE_STOPPED: &str = "stopped";
pub const NO_ERROR: &str = "no error";
pub const STATE_PAUSED: &str = "paused";
pub const STATE_RESTARTING: &str = "restarting";

/// Requests from SQL to a running worker.
pub const CMD_NONE: u32 = 0;
pub const CMD_PAUSE: u32 = 1;
pub const CMD_RESUME: u32 = 2;
/// While paused: the origin's position was moved (synchdb_set_offset).
pub const CMD_OFFSET_CHANGED: u32 = 3;

/// Counters of a connector, as SynchDB's synchdb_genstats / snapstats / cdcstats
/// show them. Timestamps are Unix milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum Stat {
    BadEvents,
    TotalEvents,
    BatchesDone,
    FirstSrcTs,
    FirstPgTs,
    LastSrcTs,
    LastPgTs,
    SnapTables,
    SnapRows,
    SnapBeginTs,
    SnapEndTs,
    Ddls,
    Dmls,
    Creates,
    Updates,
    Deletes,
    Txs,
    Truncates,
    /// Conflicts, with PostgreSQL 18's names (its pg_stat_subscription_stats).
    ConflInsertExists,
    ConflUpdateExists,
    ConflUpdateMissing,
    ConflDeleteMissing,
    ConflMultipleUniqueConflicts,
    /// Positions (LSNs) for the lag: the source's WAL end as last reported to
    /// the stream (keepalives and changes), the end of the last source
    /// transaction committed here, and what was last confirmed to the source.
    SrcWalLsn,
    AppliedLsn,
    ConfirmedLsn,
    /// Snapshot progress, kept current while the rows are copied: tables done,
    /// the estimated rows of all (the source's statistics) and bytes copied.
    SnapTablesDone,
    SnapRowsEst,
    SnapBytes,
}
pub const NSTATS: usize = 29;

#[repr(C)]
struct Header {
    magic: u64,
    nslots: u32,
    /// Serialises claiming and releasing slots.
    claim_lock: AtomicU32,
}

#[repr(C)]
struct Slot {
    seq: AtomicU64,
    write_lock: AtomicU32,
    used: AtomicU32,
    dboid: AtomicU32,
    pid: AtomicI32,
    /// A request from SQL (`CMD_*`), taken by the worker.
    cmd: AtomicU32,
    stats: [AtomicU64; NSTATS],
    name: [u8; NAME_LEN],
    stage: [u8; STAGE_LEN],
    state: [u8; STATE_LEN],
    err: [u8; ERR_LEN],
    offset: [u8; OFFSET_LEN],
}

static BASE: AtomicPtr<u8> = AtomicPtr::new(std::ptr::null_mut());
static NSLOTS: AtomicU32 = AtomicU32::new(0);
/// The slot of the connector this process (a worker) runs; -1 elsewhere.
static MY_SLOT: AtomicI32 = AtomicI32::new(-1);

/// A worker says which slot is its own, for code that reports progress
/// without being handed the slot (the snapshot).
pub fn set_my_slot(idx: i32) {
    MY_SLOT.store(idx, Ordering::Relaxed);
}

pub fn my_slot() -> i32 {
    MY_SLOT.load(Ordering::Relaxed)
}

pub fn area_size(max_connectors: u32) -> usize {
    std::mem::size_of::<Header>() + std::mem::size_of::<Slot>() * max_connectors as usize
}

/// Called once per process that maps the area (the postmaster at startup; children
/// inherit it).
pub fn attach(base: *mut c_void, max_connectors: u32, found: bool) {
    let base = base as *mut u8;
    if base.is_null() {
        return;
    }
    if !found {
        // SAFETY: the shim reserved area_size(max_connectors) bytes at base.
        unsafe {
            std::ptr::write_bytes(base, 0, area_size(max_connectors));
            let h = base as *mut Header;
            (*h).magic = MAGIC;
            (*h).nslots = max_connectors;
        }
    }
    BASE.store(base, Ordering::Release);
    NSLOTS.store(max_connectors, Ordering::Release);
}

fn header() -> Option<&'static Header> {
    let b = BASE.load(Ordering::Acquire);
    if b.is_null() {
        return None;
    }
    // SAFETY: attach() stored a pointer to an initialised area that lives as long
    // as the process.
    let h = unsafe { &*(b as *const Header) };
    (h.magic == MAGIC).then_some(h)
}

fn slot(idx: i32) -> Option<&'static Slot> {
    let h = header()?;
    if idx < 0 || idx as u32 >= h.nslots {
        return None;
    }
    let b = BASE.load(Ordering::Acquire);
    // SAFETY: idx is in range; slots follow the header.
    Some(unsafe { &*((b.add(std::mem::size_of::<Header>()) as *const Slot).add(idx as usize)) })
}

pub fn slot_count() -> u32 {
    header().map(|h| h.nslots).unwrap_or(0)
}

fn spin_lock(l: &AtomicU32) {
    while l
        .compare_exchange_weak(0, 1, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        std::hint::spin_loop();
    }
}

fn spin_unlock(l: &AtomicU32) {
    l.store(0, Ordering::Release);
}

fn field_ptr(s: &Slot, f: Field) -> (*mut u8, usize) {
    let (p, n) = match f {
        Field::Name => (s.name.as_ptr(), NAME_LEN),
        Field::Stage => (s.stage.as_ptr(), STAGE_LEN),
        Field::State => (s.state.as_ptr(), STATE_LEN),
        Field::Err => (s.err.as_ptr(), ERR_LEN),
        Field::Offset => (s.offset.as_ptr(), OFFSET_LEN),
    };
    (p as *mut u8, n)
}

#[derive(Clone, Copy)]
enum Field {
    Name,
    Stage,
    State,
    Err,
    Offset,
}

/// Writes text fields of a slot under its seqlock.
fn write_fields(s: &Slot, fields: &[(Field, &str)]) {
    spin_lock(&s.write_lock);
    s.seq.fetch_add(1, Ordering::AcqRel);
    fence(Ordering::Release);
    for (f, v) in fields {
        let (p, cap) = field_ptr(s, *f);
        let n = crate::ffi::truncate_at_char(v, cap - 1);
        // SAFETY: p points into the slot's field of `cap` bytes; n < cap.
        unsafe {
            std::ptr::copy_nonoverlapping(v.as_ptr(), p, n);
            std::ptr::write_bytes(p.add(n), 0, cap - n);
        }
    }
    fence(Ordering::Release);
    s.seq.fetch_add(1, Ordering::AcqRel);
    spin_unlock(&s.write_lock);
}

/// Consistent copy of a slot's text fields.
fn read_fields(s: &Slot) -> [Vec<u8>; 5] {
    loop {
        let before = s.seq.load(Ordering::Acquire);
        if before % 2 == 1 {
            std::hint::spin_loop();
            continue;
        }
        let copy = |f| {
            let (p, cap) = field_ptr(s, f);
            let mut v = vec![0u8; cap];
            // SAFETY: reading the field's bytes; a torn read is detected below.
            unsafe { std::ptr::copy_nonoverlapping(p as *const u8, v.as_mut_ptr(), cap) };
            let end = v.iter().position(|&b| b == 0).unwrap_or(cap);
            v.truncate(end);
            v
        };
        let out = [
            copy(Field::Name),
            copy(Field::Stage),
            copy(Field::State),
            copy(Field::Err),
            copy(Field::Offset),
        ];
        fence(Ordering::Acquire);
        if s.seq.load(Ordering::Acquire) == before {
            return out;
        }
    }
}

fn slot_name_is(s: &Slot, dboid: u32, name: &str) -> bool {
    s.used.load(Ordering::Acquire) == 1
        && s.dboid.load(Ordering::Acquire) == dboid
        && read_fields(s)[0] == name.as_bytes()
}

fn process_alive(pid: i32) -> bool {
    // SAFETY: kill with signal 0 only checks for existence.
    pid > 0 && unsafe { libc::kill(pid, 0) } == 0
}

pub fn find(dboid: u32, name: &str) -> Option<usize> {
    (0..slot_count() as i32)
        .find(|&i| slot(i).is_some_and(|s| slot_name_is(s, dboid, name)))
        .map(|i| i as usize)
}

/// Finds or claims the slot for a start of connector `name`.
pub fn acquire(dboid: u32, name: &str) -> Result<usize, String> {
    let h = header().ok_or("synchdb shared memory is not initialised")?;
    if name.len() >= NAME_LEN {
        return Err(format!(
            "connector name \"{name}\" is longer than {} bytes",
            NAME_LEN - 1
        ));
    }
    spin_lock(&h.claim_lock);
    let r = (|| {
        let n = h.nslots as i32;
        let mut running = 0;
        let mut chosen = None;
        let mut free = None;
        let mut stale = None;
        for i in 0..n {
            let Some(s) = slot(i) else { continue };
            let pid = s.pid.load(Ordering::Acquire);
            let used = s.used.load(Ordering::Acquire) == 1;
            let alive = used && pid != 0 && (pid < 0 || process_alive(pid));
            if alive {
                running += 1;
            }
            if used && slot_name_is(s, dboid, name) {
                if alive {
                    return Err(if pid > 0 {
                        format!("connector \"{name}\" is already running (pid {pid})")
                    } else {
                        format!("connector \"{name}\" is already starting")
                    });
                }
                chosen = Some(i);
            } else if !used && free.is_none() {
                free = Some(i);
            } else if used && !alive && stale.is_none() {
                // a stopped connector's slot only keeps its last error for display:
                // taken only when no slot is free
                stale = Some(i);
            }
        }
        let idx = chosen.or(free).or(stale).ok_or_else(|| {
            format!(
                "cannot start connector \"{name}\": all {n} connector slots are in use ({running} running); \
                 stop a connector or raise synchdb.max_connector_workers"
            )
        })?;
        let s = slot(idx).ok_or("slot index out of range")?;
        if chosen.is_none() {
            // a different connector takes this slot: its counters start at zero
            for c in s.stats.iter() {
                c.store(0, Ordering::Relaxed);
            }
        }
        s.cmd.store(CMD_NONE, Ordering::Release);
        s.dboid.store(dboid, Ordering::Release);
        s.pid.store(-1, Ordering::Release);
        s.used.store(1, Ordering::Release);
        write_fields(
            s,
            &[
                (Field::Name, name),
                (Field::Stage, ""),
                (Field::State, STATE_INITIALIZING),
                (Field::Err, NO_ERROR),
            ],
        );
        Ok(idx as usize)
    })();
    spin_unlock(&h.claim_lock);
    r
}

pub fn release(dboid: u32, name: &str) {
    let Some(h) = header() else { return };
    spin_lock(&h.claim_lock);
    if let Some(i) = find(dboid, name) {
        if let Some(s) = slot(i as i32) {
            s.used.store(0, Ordering::Release);
            s.pid.store(0, Ordering::Release);
            write_fields(s, &[(Field::Name, "")]);
        }
    }
    spin_unlock(&h.claim_lock);
}

pub fn pid_of(idx: i32) -> i32 {
    slot(idx)
        .map(|s| s.pid.load(Ordering::Acquire))
        .unwrap_or(0)
}

pub fn set_pid(idx: i32, pid: i32) {
    if let Some(s) = slot(idx) {
        // the worker may have exited already: never resurrect it
        let _ = s
            .pid
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |cur| {
                (cur != 0).then_some(pid)
            });
    }
}

pub fn worker_exited(idx: i32) {
    if let Some(s) = slot(idx) {
        s.pid.store(0, Ordering::Release);
        write_fields(s, &[(Field::State, STATE_STOPPED)]);
    }
}

pub fn set_stage(idx: i32, stage: &str) {
    if let Some(s) = slot(idx) {
        write_fields(s, &[(Field::Stage, stage)]);
    }
}

pub fn set_state(idx: i32, state: &str) {
    if let Some(s) = slot(idx) {
        write_fields(s, &[(Field::State, state)]);
    }
}

pub fn set_error(idx: i32, err: &str) {
    if let Some(s) = slot(idx) {
        write_fields(s, &[(Field::Err, err)]);
    }
}

pub fn set_offset(idx: i32, offset: &str) {
    if let Some(s) = slot(idx) {
        write_fields(s, &[(Field::Offset, offset)]);
    }
}

pub fn offset_of(idx: i32) -> String {
    slot(idx)
        .map(|s| String::from_utf8_lossy(&read_fields(s)[4]).into_owned())
        .unwrap_or_default()
}

/// Fills a view row from slot `idx` if it belongs to database `dboid`.
pub fn read_row(idx: i32, dboid: u32, row: &mut SdbStateRow) -> bool {
    let Some(s) = slot(idx) else { return false };
    if s.used.load(Ordering::Acquire) != 1 || s.dboid.load(Ordering::Acquire) != dboid {
        return false;
    }
    let [name, stage, state, err, offset] = read_fields(s);
    if name.is_empty() {
        return false;
    }
    let pid = s.pid.load(Ordering::Acquire);
    let put = |dst: &mut [std::ffi::c_char], src: &[u8]| {
        let n = src.len().min(dst.len() - 1);
        for (d, s) in dst.iter_mut().zip(src[..n].iter()) {
            *d = *s as std::ffi::c_char;
        }
        dst[n] = 0;
    };
    put(&mut row.name, &name);
    put(&mut row.stage, &stage);
    put(&mut row.state, &state);
    put(&mut row.err, &err);
    put(&mut row.offset, &offset);
    row.pid = if pid > 0 { pid } else { -1 };
    true
}

/// Takes the pending request of slot `idx`.
pub fn take_cmd(idx: i32) -> u32 {
    slot(idx)
        .map(|s| s.cmd.swap(CMD_NONE, Ordering::AcqRel))
        .unwrap_or(CMD_NONE)
}

pub fn set_cmd(idx: i32, cmd: u32) {
    if let Some(s) = slot(idx) {
        s.cmd.store(cmd, Ordering::Release);
    }
}

pub fn stat_add(idx: i32, st: Stat, n: u64) {
    if let Some(s) = slot(idx) {
        s.stats[st as usize].fetch_add(n, Ordering::Relaxed);
    }
}

pub fn stat_get(idx: i32, st: Stat) -> u64 {
    slot(idx).map_or(0, |s| s.stats[st as usize].load(Ordering::Relaxed))
}

pub fn stat_set(idx: i32, st: Stat, v: u64) {
    if let Some(s) = slot(idx) {
        s.stats[st as usize].store(v, Ordering::Relaxed);
    }
}

/// All counters of slot `idx` if it belongs to database `dboid`.
pub fn stats_of(idx: i32, dboid: u32) -> Option<[u64; NSTATS]> {
    let s = slot(idx)?;
    if s.used.load(Ordering::Acquire) != 1 || s.dboid.load(Ordering::Acquire) != dboid {
        return None;
    }
    let mut out = [0u64; NSTATS];
    for (o, c) in out.iter_mut().zip(s.stats.iter()) {
        *o = c.load(Ordering::Relaxed);
    }
    Some(out)
}

pub fn reset_stats(dboid: u32, name: &str) -> bool {
    match find(dboid, name).and_then(|i| slot(i as i32)) {
        Some(s) => {
            for c in s.stats.iter() {
                c.store(0, Ordering::Relaxed);
            }
            true
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_claim_update_and_read_back() {
        let n = 4;
        let mut mem = vec![0u64; area_size(n) / 8 + 1];
        attach(mem.as_mut_ptr() as *mut c_void, n, false);
        let i = acquire(1, "pgconn").expect("claim") as i32;
        assert_eq!(find(1, "pgconn"), Some(i as usize));
        assert_eq!(find(2, "pgconn"), None);
        // pid -1 = starting: a second start is refused
        assert!(acquire(1, "pgconn")
            .unwrap_err()
            .contains("already starting"));
        set_pid(i, std::process::id() as i32);
        assert!(acquire(1, "pgconn")
            .unwrap_err()
            .contains("already running"));
        set_stage(i, STAGE_SNAPSHOT);
        set_state(i, STATE_POLLING);
        set_offset(i, crate::offset::NOT_FLUSHED);
        let mut row: SdbStateRow = unsafe { std::mem::zeroed() };
        assert!(read_row(i, 1, &mut row));
        assert!(!read_row(i, 2, &mut row));
        let text = |a: &[std::ffi::c_char]| {
            let b: Vec<u8> = a
                .iter()
                .take_while(|&&c| c != 0)
                .map(|&c| c as u8)
                .collect();
            String::from_utf8(b).unwrap()
        };
        assert_eq!(text(&row.name), "pgconn");
        assert_eq!(text(&row.stage), STAGE_SNAPSHOT);
        assert_eq!(text(&row.state), STATE_POLLING);
        assert_eq!(text(&row.err), NO_ERROR);
        assert_eq!(text(&row.offset), crate::offset::NOT_FLUSHED);
        worker_exited(i);
        assert_eq!(pid_of(i), 0);
        set_error(i, "boom");
        // another connector takes a free slot, not the stopped one's
        let j = acquire(1, "other").expect("claim other") as i32;
        assert_ne!(i, j);
        assert!(read_row(i, 1, &mut row));
        assert_eq!(text(&row.err), "boom");
        worker_exited(j);
        release(1, "other");
        // a stopped connector can start again in the same slot
        assert_eq!(acquire(1, "pgconn").unwrap() as i32, i);
        release(1, "pgconn");
        assert_eq!(find(1, "pgconn"), None);
        BASE.store(std::ptr::null_mut(), Ordering::Release);
    }
}
