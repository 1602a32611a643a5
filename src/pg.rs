//! Safe wrappers over the shim's PostgreSQL operations (`SdbPgOps`).
//!
//! Only the backend's main thread may use a `Pg`. Every failed call returns a
//! `PgError` carrying PostgreSQL's own message and SQLSTATE; the caller then aborts
//! the transaction.

use crate::ffi::{SdbCopyReadCb, SdbPgOps, SdbValue};
use std::ffi::{c_char, c_void, CStr, CString};
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgError {
    pub message: String,
    pub sqlstate: String,
}

impl fmt::Display for PgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for PgError {}

impl PgError {
    pub fn new(message: impl Into<String>) -> Self {
        PgError {
            message: message.into(),
            sqlstate: "XX000".into(),
        }
    }
}

pub type Row = Vec<Option<String>>;

/// Feeds COPY FROM: fills the buffer, returns the byte count (0 at the end).
pub type CopyReader<'r> = dyn FnMut(&mut [u8], usize) -> Result<usize, String> + 'r;

/// An open destination relation (see `rel_open`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelHandle(*mut c_void);

pub struct Pg<'a> {
    ops: &'a SdbPgOps,
}

fn cstring(s: &str) -> Result<CString, PgError> {
    CString::new(s).map_err(|_| PgError::new(format!("text contains a NUL byte: {s:?}")))
}

macro_rules! op {
    ($self:ident . $f:ident) => {
        match $self.ops.$f {
            Some(f) => f,
            None => {
                return Err(PgError::new(concat!(
                    "shim operation missing: ",
                    stringify!($f)
                )))
            }
        }
    };
}

pub const LOG_DEBUG: i32 = crate::ffi::SDB_LOG_DEBUG;
pub const LOG_LOG: i32 = crate::ffi::SDB_LOG_LOG;
pub const LOG_WARNING: i32 = crate::ffi::SDB_LOG_WARNING;

/// A prepared statement (see `Pg::prepare`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanHandle(*mut c_void);

/// Turns text parameters into C strings and collects result rows for one SPI call;
/// returns the number of rows processed.
fn with_params(
    params: &[Option<&str>],
    rows: Option<&mut Vec<Row>>,
    call: impl FnOnce(
        i32,
        *const *const c_char,
        crate::ffi::SdbRowCb,
        *mut c_void,
        &mut u64,
    ) -> Result<(), PgError>,
) -> Result<u64, PgError> {
    let cparams: Vec<Option<CString>> = params
        .iter()
        .map(|p| p.map(cstring).transpose())
        .collect::<Result<_, _>>()?;
    let ptrs: Vec<*const c_char> = cparams
        .iter()
        .map(|p| p.as_ref().map(|c| c.as_ptr()).unwrap_or(std::ptr::null()))
        .collect();
    let mut processed = 0u64;
    unsafe extern "C" fn collect(ctx: *mut c_void, n: i32, vals: *const *const c_char) {
        let _ = catch_unwind(AssertUnwindSafe(|| {
            // SAFETY: ctx is the Vec<Row> passed below; vals has n entries.
            let rows = unsafe { &mut *(ctx as *mut Vec<Row>) };
            let row = (0..n.max(0) as usize)
                .map(|i| {
                    let p = unsafe { *vals.add(i) };
                    (!p.is_null())
                        .then(|| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
                })
                .collect();
            rows.push(row);
        }));
    }
    let (cb, ctx): (crate::ffi::SdbRowCb, *mut c_void) = match rows {
        Some(r) => (Some(collect), r as *mut Vec<Row> as *mut c_void),
        None => (None, std::ptr::null_mut()),
    };
    call(ptrs.len() as i32, ptrs.as_ptr(), cb, ctx, &mut processed)?;
    Ok(processed)
}

impl<'a> Pg<'a> {
    pub fn new(ops: &'a SdbPgOps) -> Self {
        Pg { ops }
    }

    fn last_error(&self) -> PgError {
        let read = |f: Option<extern "C" fn() -> *const c_char>| {
            f.map(|f| f())
                .filter(|p| !p.is_null())
                // SAFETY: the shim returns a NUL-terminated static buffer.
                .map(|p| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
                .unwrap_or_default()
        };
        PgError {
            message: read(self.ops.last_error),
            sqlstate: read(self.ops.last_sqlstate),
        }
    }

    fn check(&self, rc: i32) -> Result<(), PgError> {
        if rc == 0 {
            Ok(())
        } else {
            Err(self.last_error())
        }
    }

    pub fn log(&self, level: i32, msg: &str) {
        if let (Some(f), Ok(c)) = (self.ops.log, CString::new(msg.replace('\0', " "))) {
            f(level, c.as_ptr());
        }
    }

    pub fn begin(&self) -> Result<(), PgError> {
        let f = op!(self.xact_begin);
        self.check(f())
    }

    pub fn commit(&self) -> Result<(), PgError> {
        let f = op!(self.xact_commit);
        self.check(f())
    }

    pub fn abort(&self) {
        if let Some(f) = self.ops.xact_abort {
            f();
        }
    }

    /// Runs `body` in a transaction: committed if it succeeds, aborted otherwise.
    pub fn in_xact<T, E: From<PgError>>(
        &self,
        body: impl FnOnce() -> Result<T, E>,
    ) -> Result<T, E> {
        self.begin()?;
        match body() {
            Ok(v) => {
                if let Err(e) = self.commit() {
                    self.abort();
                    return Err(e.into());
                }
                Ok(v)
            }
            Err(e) => {
                self.abort();
                Err(e)
            }
        }
    }

    fn spi(
        &self,
        sql: &str,
        params: &[Option<&str>],
        rows: Option<&mut Vec<Row>>,
    ) -> Result<u64, PgError> {
        let f = op!(self.spi_exec);
        let csql = cstring(sql)?;
        with_params(params, rows, |n, p, cb, ctx, processed| {
            self.check(f(csql.as_ptr(), n, p, cb, ctx, processed))
        })
    }

    /// Parses and plans `sql` once ($1..$nparams are text); the plan lives until
    /// `free_plan`, across transactions.
    pub fn prepare(&self, sql: &str, nparams: usize) -> Result<PlanHandle, PgError> {
        let f = op!(self.spi_prepare);
        let csql = cstring(sql)?;
        let mut p: *mut c_void = std::ptr::null_mut();
        self.check(f(csql.as_ptr(), nparams as i32, &mut p))?;
        Ok(PlanHandle(p))
    }

    /// Runs a prepared query; every value as text.
    pub fn query_plan(
        &self,
        plan: PlanHandle,
        params: &[Option<&str>],
    ) -> Result<Vec<Row>, PgError> {
        let f = op!(self.spi_exec_plan);
        let mut rows = Vec::new();
        with_params(params, Some(&mut rows), |n, p, cb, ctx, processed| {
            self.check(f(plan.0, n, p, cb, ctx, processed))
        })?;
        Ok(rows)
    }

    pub fn free_plan(&self, plan: PlanHandle) {
        if let Some(f) = self.ops.spi_free_plan {
            f(plan.0);
        }
    }

    /// Executes a statement; returns the number of rows processed.
    pub fn exec(&self, sql: &str, params: &[Option<&str>]) -> Result<u64, PgError> {
        self.spi(sql, params, None)
    }

    /// Runs a query; every value as text.
    pub fn query(&self, sql: &str, params: &[Option<&str>]) -> Result<Vec<Row>, PgError> {
        let mut rows = Vec::new();
        self.spi(sql, params, Some(&mut rows))?;
        Ok(rows)
    }

    /// COPY FROM into `schema.table`, fed by `read` (returns bytes written into the
    /// buffer, 0 at end, or an error message).
    pub fn copy_from(
        &self,
        schema: &str,
        table: &str,
        cols: &[String],
        flags: i32,
        read: &mut CopyReader,
    ) -> Result<u64, PgError> {
        let f = op!(self.copy_from);
        let cs = cstring(schema)?;
        let ct = cstring(table)?;
        let ccols: Vec<CString> = cols.iter().map(|c| cstring(c)).collect::<Result<_, _>>()?;
        let ptrs: Vec<*const c_char> = ccols.iter().map(|c| c.as_ptr()).collect();
        unsafe extern "C" fn trampoline(
            ctx: *mut c_void,
            buf: *mut c_char,
            minread: i32,
            maxread: i32,
        ) -> i32 {
            let r = catch_unwind(AssertUnwindSafe(|| {
                // SAFETY: ctx is the &mut dyn FnMut below; buf has maxread bytes.
                let read = unsafe { &mut *(ctx as *mut &mut CopyReader) };
                let out = unsafe {
                    std::slice::from_raw_parts_mut(buf as *mut u8, maxread.max(0) as usize)
                };
                read(out, minread.max(0) as usize)
            }));
            match r {
                Ok(Ok(n)) => n as i32,
                Ok(Err(e)) => {
                    crate::snapshot::set_copy_error(&e);
                    -1
                }
                Err(_) => {
                    crate::snapshot::set_copy_error("internal error while reading snapshot data");
                    -1
                }
            }
        }
        let mut ctx: &mut CopyReader = read;
        let cb: SdbCopyReadCb = Some(trampoline);
        let mut rows = 0u64;
        let rc = f(
            cs.as_ptr(),
            ct.as_ptr(),
            ptrs.len() as i32,
            ptrs.as_ptr(),
            flags,
            cb,
            &mut ctx as *mut _ as *mut c_void,
            &mut rows,
        );
        self.check(rc)?;
        Ok(rows)
    }

    pub fn rel_open(&self, schema: &str, table: &str) -> Result<(RelHandle, usize), PgError> {
        let f = op!(self.rel_open);
        let cs = cstring(schema)?;
        let ct = cstring(table)?;
        let mut h: *mut c_void = std::ptr::null_mut();
        let mut natts = 0i32;
        self.check(f(cs.as_ptr(), ct.as_ptr(), &mut h, &mut natts))?;
        Ok((RelHandle(h), natts.max(0) as usize))
    }

    pub fn rel_close(&self, h: RelHandle) {
        if let Some(f) = self.ops.rel_close {
            f(h.0);
        }
    }

    pub fn insert(&self, h: RelHandle, vals: &[SdbValue]) -> Result<(), PgError> {
        let f = op!(self.apply_insert);
        self.check(f(h.0, vals.as_ptr(), vals.len() as i32))
    }

    /// Keeps an insert to be written with the next ones (see `flush_inserts`):
    /// Some((rows kept now, flush now)), or None when the table cannot keep rows
    /// and nothing was done.
    pub fn insert_buffered(
        &self,
        h: RelHandle,
        vals: &[SdbValue],
    ) -> Result<Option<(usize, bool)>, PgError> {
        let f = op!(self.apply_insert_buffered);
        let mut full = false;
        let rc = f(h.0, vals.as_ptr(), vals.len() as i32, &mut full);
        match rc {
            0 => Ok(None),
            n if n > 0 => Ok(Some((n as usize, full))),
            _ => Err(self.last_error()),
        }
    }

    /// Writes the kept inserts; an error comes with the kept row that failed.
    pub fn flush_inserts(&self) -> Result<(), (PgError, Option<usize>)> {
        let f = match self.ops.apply_flush {
            Some(f) => f,
            None => return Err((PgError::new("shim operation missing: apply_flush"), None)),
        };
        let mut row = -1i32;
        if f(&mut row) == 0 {
            return Ok(());
        }
        Err((self.last_error(), usize::try_from(row).ok()))
    }

    /// False when the row is not on the destination (nothing changed).
    pub fn update(
        &self,
        h: RelHandle,
        old: Option<&[SdbValue]>,
        new: &[SdbValue],
    ) -> Result<bool, PgError> {
        let f = op!(self.apply_update);
        let oldp = old.map(|o| o.as_ptr()).unwrap_or(std::ptr::null());
        self.check_found(f(h.0, oldp, new.as_ptr(), new.len() as i32))
    }

    /// False when the row is not on the destination (nothing changed).
    pub fn delete(&self, h: RelHandle, old: &[SdbValue]) -> Result<bool, PgError> {
        let f = op!(self.apply_delete);
        self.check_found(f(h.0, old.as_ptr(), old.len() as i32))
    }

    fn check_found(&self, rc: i32) -> Result<bool, PgError> {
        match rc {
            0 => Ok(true),
            crate::ffi::SDB_ROW_MISSING => Ok(false),
            _ => Err(self.last_error()),
        }
    }

    pub fn apply_release(&self) -> Result<(), PgError> {
        let f = op!(self.apply_release);
        self.check(f())
    }

    pub fn subxact_begin(&self) -> Result<(), PgError> {
        let f = op!(self.subxact_begin);
        self.check(f())
    }

    pub fn subxact_commit(&self) -> Result<(), PgError> {
        let f = op!(self.subxact_commit);
        self.check(f())
    }

    pub fn subxact_abort(&self) {
        if let Some(f) = self.ops.subxact_abort {
            f();
        }
    }

    pub fn origin_setup(&self, name: &str) -> Result<(), PgError> {
        let f = op!(self.origin_setup);
        let c = cstring(name)?;
        self.check(f(c.as_ptr()))
    }

    pub fn origin_release(&self) -> Result<(), PgError> {
        let f = op!(self.origin_release);
        self.check(f())
    }

    pub fn origin_progress(&self, flush: bool) -> Result<u64, PgError> {
        let f = op!(self.origin_progress);
        Ok(f(flush))
    }

    pub fn origin_set_commit(&self, lsn: u64, ts: i64) -> Result<(), PgError> {
        let f = op!(self.origin_set_commit);
        f(lsn, ts);
        Ok(())
    }

    /// Waits for the latch, `fd` or the timeout; returns `SDB_WAIT_*` bits.
    pub fn wait(&self, fd: i32, timeout_ms: i64) -> Result<i32, PgError> {
        let f = op!(self.wait);
        let rc = f(fd, timeout_ms);
        if rc < 0 {
            Err(self.last_error())
        } else {
            Ok(rc)
        }
    }

    /// Starts copy helper `no` of connector `name`: its pid, or None when no
    /// background worker slot is free.
    pub fn start_helper(
        &self,
        name: &str,
        parent_slot: i32,
        no: i32,
    ) -> Result<Option<i32>, PgError> {
        let f = self
            .ops
            .start_helper
            .ok_or_else(|| PgError::new("the shim cannot start copy helpers"))?;
        let c = CString::new(name).map_err(|_| PgError::new("connector name holds a NUL byte"))?;
        match f(c.as_ptr(), parent_slot, no) {
            rc if rc < 0 => Err(self.last_error()),
            0 => Ok(None),
            pid => Ok(Some(pid)),
        }
    }

    /// Asks every copy helper this process started to stop.
    pub fn stop_helpers(&self) {
        if let Some(f) = self.ops.stop_helpers {
            f();
        }
    }

    /// Whether copy helper `no` started by this process still runs.
    pub fn helper_running(&self, no: i32) -> bool {
        self.ops.helper_running.is_some_and(|f| f(no))
    }

    pub fn should_exit(&self) -> bool {
        self.ops.should_exit.map(|f| f()).unwrap_or(false)
    }

    /// After a stop request: lets the stop's own last statements run.
    pub fn accept_stop(&self) {
        if let Some(f) = self.ops.accept_stop {
            f();
        }
    }

    pub fn guc(&self, name: &str) -> Option<String> {
        let f = self.ops.guc?;
        let c = CString::new(name).ok()?;
        let p = f(c.as_ptr());
        // SAFETY: GetConfigOption returns a NUL-terminated string or NULL.
        (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
    }

    /// The settings read for every applied transaction (see `SdbApplySettings`):
    /// the values in effect now, at the cost of a struct copy.
    pub fn apply_settings(&self) -> crate::ffi::SdbApplySettings {
        let mut out = crate::ffi::SdbApplySettings::default();
        if let Some(f) = self.ops.apply_settings {
            f(&mut out);
        }
        out
    }

    pub fn guc_int(&self, name: &str, default: i64) -> i64 {
        self.guc(name)
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(default)
    }

    pub fn data_dir(&self) -> std::path::PathBuf {
        if self.ops.data_dir.is_null() {
            return std::path::PathBuf::from(".");
        }
        // SAFETY: DataDir is a NUL-terminated string for the life of the process.
        let s = unsafe { CStr::from_ptr(self.ops.data_dir) }
            .to_string_lossy()
            .into_owned();
        std::path::PathBuf::from(s)
    }

    pub fn local_ids(&self) -> crate::config::LocalIds {
        crate::config::LocalIds {
            system_identifier: self.ops.system_identifier,
            database_oid: self.ops.database_oid,
        }
    }
}
