//! The C ABI between the shim (shim/*.c) and the Rust core.
//!
//! `include/synchdb_core.h` is generated from this file by cbindgen (see build.rs)
//! and is the only contract between the two sides. Two directions:
//! - `SdbPgOps`: a table of PostgreSQL operations that the shim implements. Every one
//!   of them wraps its body in PG_TRY/PG_CATCH and reports an ERROR as a return code,
//!   so that a PostgreSQL longjmp never crosses a Rust frame.
//! - `synchdb_*` functions exported by Rust. Each catches panics, so that an unwind
//!   never crosses a C frame.

use std::ffi::{c_char, c_void, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// One column value handed to the apply operations, in destination attribute order.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct SdbValue {
    /// Not NUL-terminated; valid for `len` bytes while the call runs.
    pub data: *const c_char,
    pub len: i32,
    /// `SDB_VALUE_*`.
    pub kind: u8,
}

/// SQL NULL.
pub const SDB_VALUE_NULL: u8 = b'n';
/// Text representation, parsed by the column type's input function.
pub const SDB_VALUE_TEXT: u8 = b't';
/// An unchanged TOASTed value the source did not send: keep the stored one.
pub const SDB_VALUE_UNCHANGED: u8 = b'u';
/// The source has no such column: default on insert, keep on update.
pub const SDB_VALUE_ABSENT: u8 = b'x';

/// Returned by `SdbPgOps::apply_update` and `apply_delete` when the row to
/// change is not on the destination (nothing was changed, no error raised).
pub const SDB_ROW_MISSING: i32 = 1;
/// `copy_from` flags: COPY FREEZE (the table was created or emptied in this
/// transaction).
pub const SDB_COPY_FREEZE: i32 = 1;
/// `copy_from` flags: the data is in COPY's binary format.
pub const SDB_COPY_BINARY: i32 = 2;

/// Bits returned by `SdbPgOps::wait`.
pub const SDB_WAIT_LATCH: i32 = 1;
pub const SDB_WAIT_SOCKET: i32 = 2;
pub const SDB_WAIT_TIMEOUT: i32 = 4;

/// Row callback of `spi_exec`: `values[i]` is NULL for SQL NULL. Must not call back
/// into PostgreSQL.
pub type SdbRowCb =
    Option<unsafe extern "C" fn(ctx: *mut c_void, nfields: i32, values: *const *const c_char)>;

/// Data source of `copy_from`: fills `buf` with at least `minread` and at most
/// `maxread` bytes; returns the count, 0 at end of data, -1 on error (the message is
/// then read with `synchdb_copy_error`).
pub type SdbCopyReadCb = Option<
    unsafe extern "C" fn(ctx: *mut c_void, buf: *mut c_char, minread: i32, maxread: i32) -> i32,
>;

/// PostgreSQL operations the Rust core may call, only from the backend's main thread.
/// Functions returning `i32` return 0 on success and -1 on a caught ERROR; the
/// message and SQLSTATE are then read with `last_error` / `last_sqlstate`, and the
/// current transaction (if any) must be aborted with `xact_abort`.
#[repr(C)]
pub struct SdbPgOps {
    pub last_error: Option<extern "C" fn() -> *const c_char>,
    pub last_sqlstate: Option<extern "C" fn() -> *const c_char>,
    /// `level`: one of `SDB_LOG_*`.
    pub log: Option<extern "C" fn(level: i32, msg: *const c_char)>,
    pub xact_begin: Option<extern "C" fn() -> i32>,
    pub xact_commit: Option<extern "C" fn() -> i32>,
    pub xact_abort: Option<extern "C" fn()>,
    /// Runs one SQL statement with text parameters ($1..$n, NULL pointer = SQL NULL).
    pub spi_exec: Option<
        extern "C" fn(
            sql: *const c_char,
            nparams: i32,
            params: *const *const c_char,
            row_cb: SdbRowCb,
            ctx: *mut c_void,
            processed: *mut u64,
        ) -> i32,
    >,
    /// Parses and plans one SQL statement with `nparams` text parameters, once;
    /// `*plan` stays valid across transactions until `spi_free_plan`.
    pub spi_prepare:
        Option<extern "C" fn(sql: *const c_char, nparams: i32, plan: *mut *mut c_void) -> i32>,
    /// Runs a statement prepared by `spi_prepare`, like `spi_exec`.
    pub spi_exec_plan: Option<
        extern "C" fn(
            plan: *mut c_void,
            nparams: i32,
            params: *const *const c_char,
            row_cb: SdbRowCb,
            ctx: *mut c_void,
            processed: *mut u64,
        ) -> i32,
    >,
    pub spi_free_plan: Option<extern "C" fn(plan: *mut c_void)>,
    /// COPY FROM into schema.table (the listed columns) through PostgreSQL's own COPY
    /// machinery, fed by `read_cb`. `flags`: `SDB_COPY_*`.
    pub copy_from: Option<
        extern "C" fn(
            schema: *const c_char,
            table: *const c_char,
            ncols: i32,
            cols: *const *const c_char,
            flags: i32,
            read_cb: SdbCopyReadCb,
            ctx: *mut c_void,
            rows: *mut u64,
        ) -> i32,
    >,
    /// Looks up a destination table; `*handle` stays valid until `rel_close`.
    /// `*natts` is the number of attributes (including dropped ones), the length of
    /// every value array passed for this relation.
    pub rel_open: Option<
        extern "C" fn(
            schema: *const c_char,
            table: *const c_char,
            handle: *mut *mut c_void,
            natts: *mut i32,
        ) -> i32,
    >,
    pub rel_close: Option<extern "C" fn(handle: *mut c_void)>,
    pub apply_insert:
        Option<extern "C" fn(handle: *mut c_void, vals: *const SdbValue, n: i32) -> i32>,
    /// An insert kept to be written with the next ones in one table_multi_insert:
    /// returns how many rows are kept now, 0 when this table cannot keep rows
    /// (nothing was done: use `apply_insert`), -1 on error. `*full`: flush now.
    pub apply_insert_buffered: Option<
        extern "C" fn(handle: *mut c_void, vals: *const SdbValue, n: i32, full: *mut bool) -> i32,
    >,
    /// Writes the kept inserts. On an error `*row` is the kept row (0-based)
    /// whose insert failed, or -1 when no single row is to blame.
    pub apply_flush: Option<extern "C" fn(row: *mut i32) -> i32>,
    /// `oldvals` may be NULL: the key did not change, search with `newvals`.
    pub apply_update: Option<
        extern "C" fn(
            handle: *mut c_void,
            oldvals: *const SdbValue,
            newvals: *const SdbValue,
            n: i32,
        ) -> i32,
    >,
    pub apply_delete:
        Option<extern "C" fn(handle: *mut c_void, oldvals: *const SdbValue, n: i32) -> i32>,
    /// Closes the executor state kept for the current transaction (before TRUNCATE or DDL).
    pub apply_release: Option<extern "C" fn() -> i32>,
    /// Subtransaction around one change (error strategy 'skip'); the executor
    /// state of the change lives and dies with it.
    pub subxact_begin: Option<extern "C" fn() -> i32>,
    pub subxact_commit: Option<extern "C" fn() -> i32>,
    pub subxact_abort: Option<extern "C" fn()>,
    /// Creates the replication origin if missing and binds this session to it
    /// (inside a transaction).
    pub origin_setup: Option<extern "C" fn(name: *const c_char) -> i32>,
    /// Unbinds the session from its origin (while paused, so that SQL can move it).
    pub origin_release: Option<extern "C" fn() -> i32>,
    /// The session origin's remote LSN; `flush` makes the local commit durable first.
    pub origin_progress: Option<extern "C" fn(flush: bool) -> u64>,
    /// Source commit LSN and timestamp (µs since 2000-01-01) that the next local
    /// commit records.
    pub origin_set_commit: Option<extern "C" fn(lsn: u64, ts: i64)>,
    /// Waits on the latch, `fd` (if >= 0) and `timeout_ms` (if >= 0); handles SIGHUP
    /// and interrupts. Returns `SDB_WAIT_*` bits or -1.
    pub wait: Option<extern "C" fn(fd: i32, timeout_ms: i64) -> i32>,
    /// True once SIGTERM arrived.
    pub should_exit: Option<extern "C" fn() -> bool>,
    /// After SIGTERM: drops the query cancel it asked for (meant for the work
    /// running then), so that the stop's own last statements can run.
    pub accept_stop: Option<extern "C" fn()>,
    /// Current value of a configuration parameter as text, NULL if unknown.
    pub guc: Option<extern "C" fn(name: *const c_char) -> *const c_char>,
    /// The settings read for every applied transaction, straight from their
    /// variables (no lookup by name).
    pub apply_settings: Option<extern "C" fn(out: *mut SdbApplySettings)>,
    /// Starts copy helper `no` of connector `name` (state slot `parent_slot`) and
    /// waits until it runs: its pid, 0 when no background worker slot is free,
    /// -1 on an error (in `last_error`).
    pub start_helper: Option<extern "C" fn(name: *const c_char, parent_slot: i32, no: i32) -> i32>,
    /// Whether copy helper `no` that this process started still runs.
    pub helper_running: Option<extern "C" fn(no: i32) -> bool>,
    /// Asks every copy helper this process started to stop.
    pub stop_helpers: Option<extern "C" fn()>,
    /// The data directory (for the secret key file).
    pub data_dir: *const c_char,
    pub system_identifier: u64,
    pub database_oid: u32,
}

/// What `SdbPgOps::apply_settings` fills: the current values of the settings
/// the applier reads between transactions.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct SdbApplySettings {
    /// synchdb.error_handling_strategy: one of SDB_STRATEGY_*.
    pub error_strategy: i32,
    /// synchdb.on_missing_row: one of SDB_MISSING_ROW_*.
    pub on_missing_row: i32,
    /// synchdb.log_change_on_error.
    pub log_change_on_error: bool,
    /// synchdb.sequence_sync_interval, in milliseconds (0: off).
    pub sequence_sync_interval_ms: i32,
}

/// The values of synchdb.error_handling_strategy (the shim's enum options use
/// them too).
pub const SDB_STRATEGY_EXIT: i32 = 0;
pub const SDB_STRATEGY_RETRY: i32 = 1;
pub const SDB_STRATEGY_SKIP: i32 = 2;
/// The values of synchdb.on_missing_row.
pub const SDB_MISSING_ROW_SKIP: i32 = 0;
pub const SDB_MISSING_ROW_ERROR: i32 = 1;

impl Default for SdbApplySettings {
    /// The settings' own defaults.
    fn default() -> Self {
        SdbApplySettings {
            error_strategy: SDB_STRATEGY_EXIT,
            on_missing_row: SDB_MISSING_ROW_SKIP,
            log_change_on_error: true,
            sequence_sync_interval_ms: 5000,
        }
    }
}

pub const SDB_LOG_DEBUG: i32 = 1;
pub const SDB_LOG_LOG: i32 = 2;
pub const SDB_LOG_WARNING: i32 = 3;

/// One row of the state view, filled by `synchdb_state_read`.
#[repr(C)]
pub struct SdbStateRow {
    pub name: [c_char; 64],
    pub pid: i32,
    pub stage: [c_char; 32],
    pub state: [c_char; 32],
    pub err: [c_char; 4096],
    pub offset: [c_char; 256],
}

/// Copies `msg` into a caller-provided buffer, always NUL-terminated.
pub(crate) fn write_cbuf(buf: *mut c_char, len: usize, msg: &str) {
    if buf.is_null() || len == 0 {
        return;
    }
    let bytes = msg.as_bytes();
    let n = truncate_at_char(msg, len - 1);
    // SAFETY: the caller passes a writable buffer of `len` bytes.
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr() as *const c_char, buf, n);
        *buf.add(n) = 0;
    }
}

/// Largest prefix length of `s` not over `max` bytes that ends on a char boundary.
pub(crate) fn truncate_at_char(s: &str, max: usize) -> usize {
    if s.len() <= max {
        return s.len();
    }
    let mut n = max;
    while n > 0 && !s.is_char_boundary(n) {
        n -= 1;
    }
    n
}

/// 0 for Ok, -1 with the message in `errbuf` for Err.
/// A text result into `out` whole: its length, or -1 with `too_long` or the
/// error in `out` instead.
fn text_result(r: Result<String, String>, out: *mut c_char, outlen: usize, too_long: &str) -> i32 {
    match r {
        Ok(s) if s.len() < outlen => {
            write_cbuf(out, outlen, &s);
            s.len() as i32
        }
        Ok(_) => {
            write_cbuf(out, outlen, too_long);
            -1
        }
        Err(e) => {
            write_cbuf(out, outlen, &e);
            -1
        }
    }
}

pub(crate) fn status(r: Result<(), String>, errbuf: *mut c_char, errlen: usize) -> i32 {
    match r {
        Ok(()) => 0,
        Err(e) => {
            write_cbuf(errbuf, errlen, &e);
            -1
        }
    }
}

/// The arguments of SQL functions that act on a connector's source: the data
/// directory (for the key that decrypts its password), the destination's ids,
/// the connector's name and its `data` JSON.
fn connector_args<'a>(
    data_dir: *const c_char,
    system_identifier: u64,
    dboid: u32,
    name: *const c_char,
    conninfo_json: *const c_char,
) -> Result<
    (
        &'a std::path::Path,
        crate::config::LocalIds,
        &'a str,
        &'a str,
    ),
    String,
> {
    let dir = cstr_arg(data_dir, "data directory")?;
    let ids = crate::config::LocalIds {
        system_identifier,
        database_oid: dboid,
    };
    Ok((
        std::path::Path::new(dir),
        ids,
        cstr_arg(name, "connector name")?,
        cstr_arg(conninfo_json, "connector data")?,
    ))
}

/// Reads a C string argument; NULL and invalid UTF-8 become an error text.
pub(crate) fn cstr_arg<'a>(p: *const c_char, what: &str) -> Result<&'a str, String> {
    if p.is_null() {
        return Err(format!("{what} is NULL"));
    }
    // SAFETY: the shim passes NUL-terminated strings that outlive the call.
    unsafe { CStr::from_ptr(p) }
        .to_str()
        .map_err(|_| format!("{what} is not valid UTF-8"))
}

/// Runs `f`, turning a panic into an error message.
pub(crate) fn guard<T>(f: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(p) => {
            let what = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            Err(format!("internal error in synchdb core: {what}"))
        }
    }
}

// ---------------------------------------------------------------- shared memory

/// Bytes of shared memory the state area needs for `max_connectors` slots.
#[no_mangle]
pub extern "C" fn synchdb_shmem_size(max_connectors: u32) -> usize {
    crate::state::area_size(max_connectors)
}

/// Lays out (or attaches to) the state area at `base`.
///
/// # Safety
/// `base` points to `synchdb_shmem_size(max_connectors)` bytes of shared memory.
#[no_mangle]
pub unsafe extern "C" fn synchdb_shmem_init(base: *mut c_void, max_connectors: u32, found: bool) {
    let _ = guard(|| {
        crate::state::attach(base, max_connectors, found);
        Ok(())
    });
}

/// Finds or claims the slot of connector `name` in database `dboid` for a start.
/// Returns the slot index, or -1 with a message in `errbuf` (no free slot, or the
/// connector is already running).
#[no_mangle]
pub extern "C" fn synchdb_slot_acquire(
    dboid: u32,
    name: *const c_char,
    errbuf: *mut c_char,
    errlen: usize,
) -> i32 {
    let r = guard(|| {
        let name = cstr_arg(name, "connector name")?;
        crate::state::acquire(dboid, name).map(|i| i as i32)
    });
    match r {
        Ok(i) => i,
        Err(e) => {
            write_cbuf(errbuf, errlen, &e);
            -1
        }
    }
}

/// Slot index of connector `name` in database `dboid`, or -1.
#[no_mangle]
pub extern "C" fn synchdb_slot_find(dboid: u32, name: *const c_char) -> i32 {
    guard(|| {
        let name = cstr_arg(name, "connector name")?;
        Ok(crate::state::find(dboid, name)
            .map(|i| i as i32)
            .unwrap_or(-1))
    })
    .unwrap_or(-1)
}

/// Pid of the worker running in slot `idx`, 0 if none.
#[no_mangle]
pub extern "C" fn synchdb_slot_pid(idx: i32) -> i32 {
    guard(|| Ok(crate::state::pid_of(idx))).unwrap_or(0)
}

/// Records the pid of the worker that took slot `idx` (set by the launcher once the
/// worker has started, and by the worker itself).
#[no_mangle]
pub extern "C" fn synchdb_slot_set_pid(idx: i32, pid: i32) {
    let _ = guard(|| {
        crate::state::set_pid(idx, pid);
        Ok(())
    });
}

/// Forgets connector `name` of database `dboid` (its row was deleted).
#[no_mangle]
pub extern "C" fn synchdb_slot_release(dboid: u32, name: *const c_char) {
    let _ = guard(|| {
        let name = cstr_arg(name, "connector name")?;
        crate::state::release(dboid, name);
        Ok(())
    });
}

/// Marks the worker of slot `idx` as gone; called from the worker's exit callback,
/// whatever the way out.
#[no_mangle]
pub extern "C" fn synchdb_worker_exiting(idx: i32) {
    let _ = guard(|| {
        crate::state::worker_exited(idx);
        Ok(())
    });
}

/// Fills `row` with slot `idx` if it belongs to database `dboid`.
///
/// # Safety
/// `row` points to a writable `SdbStateRow`.
#[no_mangle]
pub unsafe extern "C" fn synchdb_state_read(idx: i32, dboid: u32, row: *mut SdbStateRow) -> bool {
    if row.is_null() {
        return false;
    }
    // SAFETY: checked non-null; the caller passes a writable row.
    let row = unsafe { &mut *row };
    guard(|| Ok(crate::state::read_row(idx, dboid, row))).unwrap_or(false)
}

/// Number of slots in the state area.
#[no_mangle]
pub extern "C" fn synchdb_slot_count() -> i32 {
    guard(|| Ok(crate::state::slot_count() as i32)).unwrap_or(0)
}

// ---------------------------------------------------------------- SQL helpers

/// Encrypts a source password with the key kept in the data directory.
/// Returns the length written (NUL excluded), or -1 with the message in `out`.
#[no_mangle]
pub extern "C" fn synchdb_encrypt_secret(
    data_dir: *const c_char,
    plain: *const c_char,
    out: *mut c_char,
    outlen: usize,
) -> i32 {
    let r = guard(|| {
        let dir = cstr_arg(data_dir, "data directory")?;
        let plain = cstr_arg(plain, "password")?;
        crate::secret::encrypt(std::path::Path::new(dir), plain).map_err(|e| e.to_string())
    });
    text_result(r, out, outlen, "encrypted password too long")
}

/// Drops the replication slot and publication of connector `name` on its source.
/// `conninfo_json` is the connector's `data`. Returns 0, or -1 with the reason in
/// `errbuf` (which then also says how to drop them by hand).
#[no_mangle]
pub extern "C" fn synchdb_drop_source_objects(
    data_dir: *const c_char,
    system_identifier: u64,
    dboid: u32,
    name: *const c_char,
    conninfo_json: *const c_char,
    errbuf: *mut c_char,
    errlen: usize,
) -> i32 {
    let r = guard(|| {
        let (dir, ids, name, json) =
            connector_args(data_dir, system_identifier, dboid, name, conninfo_json)?;
        crate::cleanup::drop_source_objects(dir, &ids, name, json)
    });
    status(r, errbuf, errlen)
}

/// The last values of the sequences named in `seqs` (one per line) on connector
/// `name`'s source, as a JSON object, written to `out`. Returns the text's length
/// (when that is `outlen` or more, `out` holds only part of it: call again with
/// more room), or -1 with the reason in `out`.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub extern "C" fn synchdb_source_sequences(
    data_dir: *const c_char,
    system_identifier: u64,
    dboid: u32,
    name: *const c_char,
    conninfo_json: *const c_char,
    seqs: *const c_char,
    out: *mut c_char,
    outlen: usize,
) -> i64 {
    let r = guard(|| {
        let (dir, ids, name, json) =
            connector_args(data_dir, system_identifier, dboid, name, conninfo_json)?;
        let seqs = cstr_arg(seqs, "sequence list")?;
        let names: Vec<String> = seqs
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect();
        crate::control::source_sequence_values(dir, &ids, name, json, names)
    });
    match r {
        Ok(text) => {
            write_cbuf(out, outlen, &text);
            text.len() as i64
        }
        Err(e) => {
            write_cbuf(out, outlen, &e);
            -1
        }
    }
}

/// Name of the replication origin that records connector `name`'s progress.
#[no_mangle]
pub extern "C" fn synchdb_origin_name(
    dboid: u32,
    name: *const c_char,
    out: *mut c_char,
    outlen: usize,
) {
    let r = guard(|| {
        let name = cstr_arg(name, "connector name")?;
        Ok(crate::config::origin_name(dboid, name))
    });
    write_cbuf(out, outlen, &r.unwrap_or_default());
}

/// Compiles a transform rule (see `objmap::compile_transform`) into `out`.
/// Returns 0, or -1 with the reason in `out`.
#[no_mangle]
pub extern "C" fn synchdb_compile_transform(
    expr: *const c_char,
    as_text: *const c_char,
    typed: *const c_char,
    out: *mut c_char,
    outlen: usize,
) -> i32 {
    let r = guard(|| {
        let expr = cstr_arg(expr, "transform")?;
        let as_text = cstr_arg(as_text, "text placeholder")?;
        let typed = cstr_arg(typed, "typed placeholder")?;
        crate::objmap::compile_transform(expr, as_text, typed)
    });
    text_result(r, out, outlen, "the transform is too long").min(0)
}

// ---------------------------------------------------------------- the worker

/// Body of a connector's background worker. Returns the process exit code.
///
/// # Safety
/// `ops` points to a fully initialised operations table valid for the whole call;
/// called only on the worker's main thread.
#[no_mangle]
pub unsafe extern "C" fn synchdb_worker_run(
    ops: *const SdbPgOps,
    slot: i32,
    name: *const c_char,
    mode: *const c_char,
) -> i32 {
    let r = guard(|| {
        let name = cstr_arg(name, "connector name")?.to_string();
        let mode = cstr_arg(mode, "snapshot mode")?.to_string();
        if ops.is_null() {
            return Err("no operations table".into());
        }
        // SAFETY: checked non-null; the shim keeps it alive for the call.
        let pg = crate::pg::Pg::new(unsafe { &*ops });
        Ok(crate::worker::run(&pg, slot, &name, &mode))
    });
    match r {
        Ok(code) => code,
        Err(e) => {
            crate::state::set_error(slot, &e);
            1
        }
    }
}

/// A copy helper's body (synchdb_helper_main): copies items of connector
/// `name`'s work list, its progress counted in state slot `parent_slot`.
/// Returns the process exit code.
///
/// # Safety
/// `ops` points to a filled operations table, `name` to a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn synchdb_helper_run(
    ops: *const SdbPgOps,
    parent_slot: i32,
    name: *const c_char,
    no: i32,
) -> i32 {
    let r = guard(|| {
        let name = cstr_arg(name, "connector name")?.to_string();
        if ops.is_null() {
            return Err("no operations table".into());
        }
        // SAFETY: checked non-null; the shim keeps it alive for the call.
        let pg = crate::pg::Pg::new(unsafe { &*ops });
        Ok(crate::parallel::helper_run(&pg, parent_slot, &name, no))
    });
    r.unwrap_or_else(|e| {
        // a panic (or bad arguments) ends the helper: say why, where the
        // connector's own errors go; the connector sees it gone and fails
        // the snapshot
        if !ops.is_null() {
            // SAFETY: checked non-null; the shim keeps it alive for the call.
            let pg = crate::pg::Pg::new(unsafe { &*ops });
            let name = cstr_arg(name, "connector name").unwrap_or("?");
            pg.log(
                crate::pg::LOG_WARNING,
                &format!("connector {name}: copy helper {no}: {e}"),
            );
        }
        1
    })
}

/// Message of the last failed copy read callback (for the shim's ereport).
#[no_mangle]
pub extern "C" fn synchdb_copy_error() -> *const c_char {
    crate::snapshot::copy_error_ptr()
}

// ---------------------------------------------------------------- control, statistics

/// Posts request `cmd` (`CMD_*` of the state module) to connector `name`'s worker.
/// Returns the worker's pid (the caller wakes it), 0 if it is not running.
#[no_mangle]
pub extern "C" fn synchdb_slot_command(dboid: u32, name: *const c_char, cmd: u32) -> i32 {
    guard(|| {
        let name = cstr_arg(name, "connector name")?;
        let Some(idx) = crate::state::find(dboid, name) else {
            return Ok(0);
        };
        let pid = crate::state::pid_of(idx as i32);
        if pid > 0 {
            crate::state::set_cmd(idx as i32, cmd);
        }
        Ok(pid.max(0))
    })
    .unwrap_or(0)
}

/// Number of counters `synchdb_stats_read` fills.
pub const SDB_NSTATS: usize = 29;
const _: () = assert!(SDB_NSTATS == crate::state::NSTATS);

/// Fills `name` (64 bytes) and `vals` (`SDB_NSTATS` counters) from slot `idx` if it
/// belongs to database `dboid`.
///
/// # Safety
/// `name` points to 64 writable bytes, `vals` to `SDB_NSTATS` u64.
#[no_mangle]
pub unsafe extern "C" fn synchdb_stats_read(
    idx: i32,
    dboid: u32,
    name: *mut c_char,
    vals: *mut u64,
) -> bool {
    if name.is_null() || vals.is_null() {
        return false;
    }
    guard(|| {
        let Some(stats) = crate::state::stats_of(idx, dboid) else {
            return Ok(false);
        };
        let mut row: SdbStateRow = unsafe { std::mem::zeroed() };
        if !crate::state::read_row(idx, dboid, &mut row) {
            return Ok(false);
        }
        // SAFETY: sizes as documented above.
        unsafe {
            std::ptr::copy_nonoverlapping(row.name.as_ptr(), name, 64);
            std::ptr::copy_nonoverlapping(stats.as_ptr(), vals, SDB_NSTATS);
        }
        Ok(true)
    })
    .unwrap_or(false)
}

/// Zeroes connector `name`'s counters; false if it has none (never started).
#[no_mangle]
pub extern "C" fn synchdb_stats_reset(dboid: u32, name: *const c_char) -> bool {
    guard(|| {
        let name = cstr_arg(name, "connector name")?;
        Ok(crate::state::reset_stats(dboid, name))
    })
    .unwrap_or(false)
}

/// Parses what synchdb_set_offset accepts (the state view's JSON or a plain LSN).
/// Returns 0 with the LSN in `*lsn`, or -1 with the reason in `errbuf`.
///
/// # Safety
/// `lsn` points to a writable u64; `errbuf` to `errlen` bytes.
#[no_mangle]
pub unsafe extern "C" fn synchdb_parse_offset(
    text: *const c_char,
    lsn: *mut u64,
    errbuf: *mut c_char,
    errlen: usize,
) -> i32 {
    let r = guard(|| {
        let t = cstr_arg(text, "offset")?;
        crate::offset::parse_resume_lsn(t).map_err(|e| e.to_string())
    });
    match r {
        Ok(v) if !lsn.is_null() => {
            // SAFETY: checked non-null; the caller passes a writable u64.
            unsafe { *lsn = v };
            0
        }
        Ok(_) => -1,
        Err(e) => {
            write_cbuf(errbuf, errlen, &e);
            -1
        }
    }
}

/// Checks on the source that connector `name`'s slot can still serve changes from
/// `lsn`. Returns 0, or -1 with the reason in `errbuf`.
#[no_mangle]
pub extern "C" fn synchdb_check_offset(
    data_dir: *const c_char,
    system_identifier: u64,
    dboid: u32,
    name: *const c_char,
    conninfo_json: *const c_char,
    lsn: u64,
    errbuf: *mut c_char,
    errlen: usize,
) -> i32 {
    let r = guard(|| {
        let (dir, ids, name, json) =
            connector_args(data_dir, system_identifier, dboid, name, conninfo_json)?;
        crate::control::check_slot_serves(dir, &ids, name, json, lsn)
    });
    status(r, errbuf, errlen)
}
