//! The initial snapshot: a slot with an exported snapshot, a publication, the source
//! catalog read in that snapshot, tables created and rows copied with COPY into the
//! destination's own COPY FROM, all in one destination transaction that also records
//! the slot's consistent point as the replication origin's progress. So a snapshot
//! is either wholly there, with the exact point CDC must start from, or not at all.

use crate::config::{quote_ident, ConnectorConfig};
use crate::ddl;
use crate::error::{DestContext, WorkerError};
use crate::net::Net;
use crate::objects;
use crate::objmap::{DestTable, Rules};
use crate::pg::Pg;
use crate::replconn::{ConnParams, ReplConnection};
use crate::source::{self, SourceTable};
use crate::usertypes::{self, UserType};
use bytes::{Bytes, BytesMut};
use futures_util::{pin_mut, StreamExt};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::ffi::{c_char, CString};
use std::sync::Arc;
use tokio_postgres::Client;

static COPY_ERROR: Mutex<Option<CString>> = Mutex::new(None);

pub fn set_copy_error(msg: &str) {
    *COPY_ERROR.lock() = CString::new(msg.replace('\0', " ")).ok();
}

/// Pointer stays valid until the next `set_copy_error` (main thread only).
pub fn copy_error_ptr() -> *const c_char {
    static FALLBACK: &[u8] = b"snapshot copy failed\0";
    match COPY_ERROR.lock().as_ref() {
        Some(c) => c.as_ptr(),
        None => FALLBACK.as_ptr() as *const c_char,
    }
}

/// What the source side holds while the destination copies.
struct Prepared {
    repl: ReplConnection,
    client: Arc<Client>,
    tables: Vec<SourceTable>,
    /// The user-defined types the tables use, dependencies first.
    types: Vec<UserType>,
    /// Tables of the replicated schemas that are left out, with why.
    left_out: Vec<String>,
    objects: HashMap<u32, objects::TableObjects>,
    sequences: Vec<objects::SequenceDef>,
    consistent_point: u64,
    /// The slot's exported snapshot, which copy helpers import.
    snapshot_name: Option<String>,
}

/// What a start asks of the snapshot.
#[derive(Clone, Copy)]
pub struct Plan<'a> {
    /// Create the destination tables now (else CDC creates them from the source's
    /// description when their first change arrives: mode never).
    pub create_tables: bool,
    pub copy_rows: bool,
    /// The tables exist from an earlier snapshot that can no longer be continued:
    /// drop and build them again.
    pub rebuild: bool,
    /// The object mapping rules the tables are built under.
    pub rules: &'a Rules,
}

pub struct SnapshotResult {
    pub consistent_point: u64,
    pub tables: usize,
    pub rows: u64,
}

/// Checks that the source can do logical decoding, before anything is created.
pub async fn check_source(repl: &mut ReplConnection, p: &ConnParams) -> Result<(), WorkerError> {
    let rows = repl.simple_query("SHOW wal_level").await?;
    let level = rows
        .first()
        .and_then(|r| r.first().cloned().flatten())
        .unwrap_or_default();
    if level != "logical" {
        return Err(WorkerError::Config(format!(
            "source server at {}:{} has wal_level = {level}; logical replication needs wal_level = logical \
             (set it in the source's postgresql.conf and restart the source server)",
            p.host, p.port
        )));
    }
    Ok(())
}

/// The source's current WAL position (IDENTIFY_SYSTEM's xlogpos: what it has
/// flushed, or on a standby what it has received).
pub async fn source_wal_end(repl: &mut ReplConnection) -> Result<u64, WorkerError> {
    let rows = repl.simple_query("IDENTIFY_SYSTEM").await?;
    let pos = rows
        .first()
        .and_then(|r| r.get(2).cloned().flatten())
        .ok_or_else(|| WorkerError::Source("IDENTIFY_SYSTEM returned no WAL position".into()))?;
    crate::offset::parse_lsn(&pos).map_err(|e| {
        WorkerError::Source(format!("IDENTIFY_SYSTEM returned a bad WAL position: {e}"))
    })
}

fn source_error(params: &ConnParams, what: &str, e: tokio_postgres::Error) -> WorkerError {
    let mut err = source::source_error(params, &e);
    if e.code() == Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE) {
        err.text.push_str(&format!(
            "; the source role {} needs LOGIN and REPLICATION, ownership of the replicated tables \
             (to publish them) and CREATE on database {} (for the connector's publication): \
             GRANT CREATE ON DATABASE {} TO {}",
            quote_ident(&params.user),
            quote_ident(&params.dbname),
            quote_ident(&params.dbname),
            quote_ident(&params.user)
        ));
    }
    err.within(&format!("{what} on the source failed"))
}

/// Both connections to the source, checked for logical decoding, and the tables
/// the connector replicates, with every problem the source shows (tables the
/// `table` option names that do not exist, patterns that match nothing, a wrong
/// `snapshottable` when `partial`). Nothing is created on the source here: the
/// main thread checks the rest (`precheck`) before anything is.
struct Opened {
    repl: ReplConnection,
    client: Client,
    tables: Vec<SourceTable>,
    problems: Vec<String>,
}

async fn open_source(
    cfg: ConnectorConfig,
    params: ConnParams,
    partial: bool,
) -> Result<Opened, WorkerError> {
    let mut repl = ReplConnection::connect(&params).await?;
    check_source(&mut repl, &params).await?;
    let client = source::connect(&params).await.map_err(WorkerError::from)?;
    let (tables, mut problems) = source::read_catalog_checked(&client, &cfg)
        .await
        .map_err(WorkerError::Config)?;
    if partial {
        if let Err(e) = source::select_snapshot_tables(&client, &cfg, &tables).await {
            problems.push(e);
        }
    }
    Ok(Opened {
        repl,
        client,
        tables,
        problems,
    })
}

/// Every reason the connector cannot replicate what it was asked to, found before
/// anything is created on the source or the destination, reported at once (in
/// `err` and the log), each with what to do: the source's problems, object
/// mapping rules naming unknown tables or columns, two tables landing on one
/// name, destination tables in the way (`create` without `rebuild`), and column
/// types the destination does not have.
fn precheck(
    pg: &Pg,
    cfg: &ConnectorConfig,
    rules: &Rules,
    tables: &[SourceTable],
    mut problems: Vec<String>,
    create: bool,
    rebuild: bool,
) -> Result<(), WorkerError> {
    if let Err(e) = crate::objmap::check_rules(rules, tables, &cfg.name) {
        problems.push(e);
    }
    let plans: Vec<DestTable> = tables
        .iter()
        .map(|t| crate::objmap::plan_table(rules, t, &cfg.dest_schema()))
        .collect();
    problems.extend(crate::objmap::all_clashes(&plans, &cfg.name));
    if let Some(role) = crate::ownership::owner_role(pg, cfg)? {
        let refs: Vec<&DestTable> = plans.iter().collect();
        problems.extend(crate::ownership::problems(pg, cfg, &role, &refs)?);
    }
    if create {
        let mut known: std::collections::HashMap<String, bool> = Default::default();
        for (t, p) in tables.iter().zip(&plans) {
            if !rebuild && dest_table_exists(pg, &p.schema, &p.name)? {
                problems.push(format!(
                    "destination table {} already exists; drop it (or rename it) before the initial snapshot of connector \"{}\", \
                     or start the connector in mode 'always' to replace it",
                    p.qualified(),
                    cfg.name
                ));
            }
            for (c, d) in t.columns.iter().zip(&p.columns) {
                // the connector creates user types itself
                if c.udt != 0 && d.type_sql == d.natural_type {
                    continue;
                }
                let ok = match known.get(&d.type_sql) {
                    Some(&ok) => ok,
                    None => {
                        let rows = pg
                            .query("SELECT to_regtype($1) IS NOT NULL", &[Some(&d.type_sql)])
                            .ctx(|| format!("looking up type {}", d.type_sql))?;
                        let ok = rows.first().and_then(|r| r[0].as_deref()) == Some("t");
                        known.insert(d.type_sql.clone(), ok);
                        ok
                    }
                };
                if !ok {
                    let install = match &c.type_extension {
                        Some(e) => format!(
                            "install extension {e} on the destination (CREATE EXTENSION {})",
                            quote_ident(e)
                        ),
                        None => "create that type on the destination".to_string(),
                    };
                    problems.push(format!(
                        "column {} of table {} has type {}, which the destination does not have; {install}, \
                         or map the column to another type: SELECT synchdb_add_objmap('{}', 'datatype', '{}.{}.{}', 'text|0')",
                        quote_ident(&c.name),
                        t.qualified(),
                        d.type_sql,
                        cfg.name,
                        t.schema,
                        t.name,
                        c.name
                    ));
                }
            }
        }
    }
    if problems.is_empty() {
        return Ok(());
    }
    let lead = format!(
        "connector \"{}\" cannot start (nothing was created on the source or the destination)",
        cfg.name
    );
    Err(WorkerError::Config(if problems.len() == 1 {
        format!("{lead}: {}", problems[0])
    } else {
        format!(
            "{lead}: {} problems:\n  - {}",
            problems.len(),
            problems.join("\n  - ")
        )
    }))
}

/// Starts a transaction that sees exactly the slot's exported snapshot.
pub fn import_snapshot_sql(snapshot: &str) -> String {
    format!(
        "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT {}",
        crate::config::quote_literal(snapshot)
    )
}

/// Makes the session's transaction see exactly the slot's exported snapshot.
pub async fn import_snapshot(client: &Client, snapshot: &str) -> Result<(), tokio_postgres::Error> {
    client.batch_execute(&import_snapshot_sql(snapshot)).await
}

/// What the source catalog says, read in the slot's snapshot.
struct Catalog {
    tables: Vec<SourceTable>,
    types: Vec<UserType>,
    left_out: Vec<String>,
    objects: HashMap<u32, objects::TableObjects>,
    sequences: Vec<objects::SequenceDef>,
}

/// Puts the session in the snapshot a new slot exported and reads the tables'
/// catalog in it: the copy and the tables' description are of the same instant.
async fn catalog_in_snapshot(
    client: &Client,
    cfg: &ConnectorConfig,
    params: &ConnParams,
    snapshot: Option<String>,
    slot_kind: &str,
) -> Result<Catalog, WorkerError> {
    let snapshot = snapshot.ok_or_else(|| {
        WorkerError::Source(format!(
            "the source did not export a snapshot for the {slot_kind}"
        ))
    })?;
    import_snapshot(client, &snapshot)
        .await
        .map_err(|e| source_error(params, "importing the snapshot", e))?;
    let tables = source::read_catalog(client, cfg)
        .await
        .map_err(WorkerError::Config)?;
    let roots: Vec<u32> = tables
        .iter()
        .flat_map(|t| t.columns.iter().map(|c| c.udt))
        .filter(|&u| u != 0)
        .collect();
    let types = usertypes::read_types(client, &roots)
        .await
        .map_err(WorkerError::Source)?;
    let left_out = source::left_out(client, cfg)
        .await
        .map_err(WorkerError::Source)?;
    let oids: Vec<u32> = tables.iter().map(|t| t.oid).collect();
    let objects = objects::read(client, &oids)
        .await
        .map_err(WorkerError::Source)?;
    let sequences = objects::read_sequences(client, &oids, &cfg.srcschemas)
        .await
        .map_err(WorkerError::Source)?;
    Ok(Catalog {
        tables,
        types,
        left_out,
        objects,
        sequences,
    })
}

/// Where each user type lands: in the destination schema of the first table that
/// uses it (a type used only by another type goes with that type). Column types
/// are rewritten to the qualified destination names.
fn place_types(
    cfg: &ConnectorConfig,
    rules: &Rules,
    tables: &mut [SourceTable],
    types: &[UserType],
) -> Vec<(UserType, String)> {
    let mut schema_of: std::collections::HashMap<u32, String> = Default::default();
    for t in tables.iter() {
        let (schema, _) = rules.dest_table(&t.schema, &t.name, &cfg.dest_schema());
        for c in &t.columns {
            if c.udt != 0 {
                schema_of.entry(c.udt).or_insert_with(|| schema.clone());
            }
        }
    }
    // users come after their dependencies: walk back so a user is placed first
    for ty in types.iter().rev() {
        let Some(s) = schema_of.get(&ty.oid).cloned() else {
            continue;
        };
        let deps = ty.deps();
        for d in deps.into_iter().filter(|&d| d != 0) {
            schema_of.entry(d).or_insert_with(|| s.clone());
        }
    }
    // a multirange lives beside its range, whoever placed which first
    for ty in types {
        if let usertypes::TypeKind::Multirange { range } = ty.kind {
            if let Some(s) = schema_of.get(&range).cloned() {
                schema_of.insert(ty.oid, s);
            }
        }
    }
    let default = cfg.dest_schema();
    let placed: Vec<(UserType, String)> = types
        .iter()
        .map(|t| {
            let s = schema_of
                .get(&t.oid)
                .cloned()
                .unwrap_or_else(|| default.clone());
            (t.clone(), s)
        })
        .collect();
    let names = usertypes::type_names(&placed);
    for t in tables.iter_mut() {
        for c in &mut t.columns {
            if c.udt != 0 {
                c.type_sql = usertypes::ref_sql(
                    &usertypes::TypeRef {
                        udt: c.udt,
                        is_array: c.udt_array,
                        sql: c.type_sql.clone(),
                    },
                    &names,
                );
            }
        }
    }
    placed
}

/// Runs `f` with the destination schemas first on the search_path, so that
/// expressions deparsed by the source (defaults, generated columns, domain
/// checks) find the copies of the source's types; the old path comes back after.
pub fn with_dest_search_path<T>(
    pg: &Pg,
    schemas: &[&str],
    f: impl FnOnce() -> Result<T, WorkerError>,
) -> Result<T, WorkerError> {
    let mut uniq: Vec<String> = Vec::new();
    for s in schemas {
        let q = quote_ident(s);
        if !uniq.contains(&q) {
            uniq.push(q);
        }
    }
    let old = pg
        .query("SELECT current_setting('search_path')", &[])
        .ctx(|| "reading search_path".into())?
        .first()
        .and_then(|r| r[0].clone())
        .unwrap_or_default();
    let path = if old.trim().is_empty() {
        uniq.join(", ")
    } else {
        format!("{}, {old}", uniq.join(", "))
    };
    pg.exec("SELECT set_config('search_path', $1, true)", &[Some(&path)])
        .ctx(|| "setting search_path".into())?;
    let r = f();
    if r.is_ok() {
        pg.exec("SELECT set_config('search_path', $1, true)", &[Some(&old)])
            .ctx(|| "restoring search_path".into())?;
    }
    r
}

async fn prepare(
    opened: Opened,
    cfg: ConnectorConfig,
    params: ConnParams,
    slot: String,
    publication: String,
) -> Result<Prepared, WorkerError> {
    // The tables to publish, outside the snapshot; they are read again inside it.
    let Opened {
        mut repl,
        client,
        tables,
        ..
    } = opened;
    let srcerr = |what: &str, e: tokio_postgres::Error| source_error(&params, what, e);
    // A slot left by an earlier, unfinished snapshot is useless: its snapshot is gone.
    client
        .execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .map_err(|e| srcerr("dropping an old replication slot", e))?;
    let mut pubsql = format!(
        "DROP PUBLICATION IF EXISTS {pq}; CREATE PUBLICATION {pq}",
        pq = quote_ident(&publication)
    );
    if !tables.is_empty() {
        let list: Vec<String> = tables.iter().map(|t| t.qualified()).collect();
        pubsql.push_str(&format!(" FOR TABLE {}", list.join(", ")));
    }
    client
        .batch_execute(&pubsql)
        .await
        .map_err(|e| srcerr("creating the publication", e))?;
    // The publication must exist before the slot: pgoutput reads it as of the WAL
    // position it decodes.
    let info = repl.create_logical_slot(&slot).await?;
    let snapshot_name = info.snapshot_name.clone();
    let cat = catalog_in_snapshot(&client, &cfg, &params, info.snapshot_name, "new slot").await?;
    Ok(Prepared {
        repl,
        client: Arc::new(client),
        tables: cat.tables,
        types: cat.types,
        left_out: cat.left_out,
        objects: cat.objects,
        sequences: cat.sequences,
        consistent_point: info.consistent_point,
        snapshot_name,
    })
}

const CHUNK: usize = 256 * 1024;

/// The source's own words for a failed COPY (tokio-postgres' Display of a server
/// error is only "db error").
fn copy_failed(sql: &str, e: &tokio_postgres::Error) -> String {
    let why = match e.as_db_error() {
        Some(db) => {
            let mut s = format!("{}: {}", db.severity(), db.message());
            if let Some(d) = db.detail() {
                s.push_str(&format!(" DETAIL: {d}"));
            }
            s
        }
        None => {
            let mut s = e.to_string();
            let mut src = std::error::Error::source(e);
            while let Some(inner) = src {
                s.push_str(&format!(": {inner}"));
                src = inner.source();
            }
            s
        }
    };
    format!("{sql} on the source failed: {why}")
}

/// Streams `COPY table TO STDOUT` from the source into `tx` in large chunks.
async fn copy_out(
    client: Arc<Client>,
    sql: String,
    tx: tokio::sync::mpsc::Sender<crate::copysource::Chunk>,
    waker: crate::net::Waker,
) {
    let send = |item| {
        let tx = tx.clone();
        let waker = waker.clone();
        async move {
            let ok = tx.send(item).await.is_ok();
            waker.wake();
            ok
        }
    };
    let stream = match client.copy_out(sql.as_str()).await {
        Ok(s) => s,
        Err(e) => {
            send(Err(copy_failed(&sql, &e))).await;
            return;
        }
    };
    pin_mut!(stream);
    let mut buf = BytesMut::with_capacity(CHUNK);
    while let Some(item) = stream.next().await {
        match item {
            Ok(b) => {
                buf.extend_from_slice(&b);
                if buf.len() >= CHUNK && !send(Ok((buf.split().freeze(), None))).await {
                    return;
                }
            }
            Err(e) => {
                send(Err(copy_failed(&sql, &e))).await;
                return;
            }
        }
    }
    if !buf.is_empty() {
        send(Ok((buf.freeze(), None))).await;
    }
    // dropping tx tells the reader that the data is complete (copy_stream
    // wakes it then)
}

/// Streams the source table's rows into `dest_schema.dest_table` (columns `cols`,
/// in the source's column order) through the destination's COPY FROM.
fn copy_table(
    pg: &Pg,
    net: &Net,
    client: &Arc<Client>,
    t: &SourceTable,
    dest_schema: &str,
    dest_table: &str,
    cols: &[String],
) -> Result<u64, WorkerError> {
    let sql = copy_out_sql(t, None, false);
    let dest = CopyDest {
        schema: dest_schema,
        table: dest_table,
        cols,
        freeze: true,
        binary: false,
    };
    copy_stream(
        pg,
        net,
        RowSource::Client(client),
        sql,
        &t.qualified(),
        &dest,
    )
}

/// The COPY that reads table `t` on the source: all of it, or pages
/// [from, to) (`to` None: to the end, whatever the table has grown to since its
/// size was read), in text or binary format. A table without (copied) columns
/// still has rows: COPY without a list.
pub fn copy_out_sql(t: &SourceTable, range: Option<(i64, Option<i64>)>, binary: bool) -> String {
    let list = t.column_list();
    let fmt = if binary { " (FORMAT binary)" } else { "" };
    let Some((from, to)) = range else {
        return if list.is_empty() {
            format!("COPY {} TO STDOUT{fmt}", t.qualified())
        } else {
            format!("COPY {} ({list}) TO STDOUT{fmt}", t.qualified())
        };
    };
    let mut cond = Vec::new();
    if from > 0 {
        cond.push(format!("ctid >= '({from},0)'::tid"));
    }
    if let Some(to) = to {
        cond.push(format!("ctid < '({to},0)'::tid"));
    }
    let wh = if cond.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", cond.join(" AND "))
    };
    format!(
        "COPY (SELECT {list} FROM {}{wh}) TO STDOUT{fmt}",
        t.qualified()
    )
}

/// Where copy_stream reads the rows: the snapshot's own session on the source,
/// or a session of the parallel copy (see copysource).
pub enum RowSource<'a> {
    Client(&'a Arc<Client>),
    Conn(&'a crate::copysource::CopyConn),
}

/// Where copy_stream puts the rows: a table, its columns, whether COPY FREEZE
/// applies (the table was created or truncated in this transaction), and
/// whether the source sends COPY's binary format.
pub struct CopyDest<'a> {
    pub schema: &'a str,
    pub table: &'a str,
    pub cols: &'a [String],
    pub freeze: bool,
    pub binary: bool,
}

/// Runs `sql` (a COPY ... TO STDOUT) on the source and feeds what it sends into
/// the destination's COPY FROM of `dest`; `label` names the source side in
/// progress lines and errors. The number of rows copied.
pub fn copy_stream(
    pg: &Pg,
    net: &Net,
    source: RowSource,
    sql: String,
    label: &str,
    dest: &CopyDest,
) -> Result<u64, WorkerError> {
    let (tx, mut rx) = tokio::sync::mpsc::channel(8);
    // The reader learns that the data is complete when the channel closes: when
    // the task ends and drops its sender, after its last chunk's wake-up. Wake
    // it once more then, or a reader that found the channel empty but still
    // open in between sleeps a whole naptime (it did, for 1 table in 16).
    let task: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> = match source {
        RowSource::Client(client) => Box::pin(copy_out(client.clone(), sql, tx, net.waker())),
        RowSource::Conn(conn) => Box::pin(conn.clone().copy_out(sql, CHUNK, tx, net.waker())),
    };
    let waker = net.waker();
    net.spawn(async move {
        task.await;
        waker.wake();
    })?;
    let mut cur = Bytes::new();
    let mut stop: Option<WorkerError> = None;
    let naptime = pg.guc_int("synchdb.naptime", 100);
    let mut progress = CopyProgress::new(label.to_string(), dest.binary);
    let mut read = |out: &mut [u8], _min: usize| -> Result<usize, String> {
        while cur.is_empty() {
            match rx.try_recv() {
                Ok(Ok((b, rows))) => {
                    progress.chunk(pg, &b, rows);
                    cur = b
                }
                Ok(Err(e)) => return Err(e),
                Err(tokio::sync::mpsc::error::TryRecvError::Disconnected) => return Ok(0),
                Err(tokio::sync::mpsc::error::TryRecvError::Empty) => {
                    net.drain();
                    if !rx.is_empty() {
                        continue;
                    }
                    if let Err(e) = net.sleep(pg, naptime) {
                        let msg = e.to_string();
                        stop = Some(e);
                        return Err(msg);
                    }
                }
            }
        }
        let n = cur.len().min(out.len());
        out[..n].copy_from_slice(&cur[..n]);
        let _ = cur.split_to(n);
        Ok(n)
    };
    let flags = if dest.freeze {
        crate::ffi::SDB_COPY_FREEZE
    } else {
        0
    } | if dest.binary {
        crate::ffi::SDB_COPY_BINARY
    } else {
        0
    };
    let r = pg.copy_from(dest.schema, dest.table, dest.cols, flags, &mut read);
    if let Some(e) = stop {
        return Err(e);
    }
    r.ctx(|| {
        format!(
            "copying rows of {label} into {}.{}",
            quote_ident(dest.schema),
            quote_ident(dest.table)
        )
    })
}

/// Rows and bytes of a table's copy as they arrive, in the shared statistics
/// (synchdb_snapstats, synchdb_stat_view) and, every PROGRESS_EVERY, in the log.
struct CopyProgress {
    table: String,
    counter: crate::copyformat::RowCounter,
    rows: u64,
    bytes: u64,
    began: std::time::Instant,
    logged: std::time::Instant,
}

const PROGRESS_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

impl CopyProgress {
    fn new(table: String, binary: bool) -> Self {
        let now = std::time::Instant::now();
        CopyProgress {
            table,
            counter: crate::copyformat::RowCounter::new(binary),
            rows: 0,
            bytes: 0,
            began: now,
            logged: now,
        }
    }

    /// A chunk of COPY data and its rows (None: counted here).
    fn chunk(&mut self, pg: &Pg, b: &[u8], rows: Option<u64>) {
        let rows = rows.unwrap_or_else(|| self.counter.feed(b));
        self.rows += rows;
        self.bytes += b.len() as u64;
        let i = crate::state::my_slot();
        crate::state::stat_add(i, crate::state::Stat::SnapRows, rows);
        crate::state::stat_add(i, crate::state::Stat::SnapBytes, b.len() as u64);
        if self.logged.elapsed() >= PROGRESS_EVERY {
            self.logged = std::time::Instant::now();
            pg.log(
                crate::pg::LOG_LOG,
                &format!(
                    "copying {}: {} rows, {:.1} MB in {:.0} s",
                    self.table,
                    self.rows,
                    self.bytes as f64 / 1048576.0,
                    self.began.elapsed().as_secs_f64()
                ),
            );
        }
    }
}

/// The source's estimate of the rows of `oids` (its statistics; 0 when it has
/// none), for the snapshot's progress and ETA.
fn estimate_rows(pg: &Pg, net: &Net, client: &Arc<Client>, oids: Vec<u32>) -> u64 {
    let client = client.clone();
    net.call(pg, async move {
        client
            .query_one(
                "SELECT coalesce(sum(greatest(reltuples, 0)), 0)::bigint FROM pg_catalog.pg_class
                  WHERE oid = ANY($1::oid[])",
                &[&oids],
            )
            .await
            .ok()
            .and_then(|r| r.try_get::<_, i64>(0).ok())
    })
    .ok()
    .flatten()
    .map_or(0, |n| n.max(0) as u64)
}

/// Records that the connector has taken in source table `oid` (synchdb_tables):
/// a table of its selection that is not recorded is new on the source.
pub fn remember_table(
    pg: &Pg,
    connector: &str,
    oid: u32,
    schema: &str,
    table: &str,
) -> Result<(), WorkerError> {
    pg.exec(
        "INSERT INTO synchdb_tables (name, srcrelid, srcschema, srctable) VALUES ($1, $2::oid, $3, $4)
         ON CONFLICT (name, srcrelid) DO UPDATE SET srcschema = EXCLUDED.srcschema, srctable = EXCLUDED.srctable",
        &[Some(connector), Some(&oid.to_string()), Some(schema), Some(table)],
    )
    .ctx(|| "recording the connector's tables".into())?;
    Ok(())
}

/// Whether the destination table already has a primary key (a partition gets its
/// parent's).
pub fn has_primary_key(pg: &Pg, p: &DestTable) -> Result<bool, WorkerError> {
    let rows = pg
        .query(
            "SELECT 1 FROM pg_index WHERE indrelid = to_regclass($1) AND indisprimary",
            &[Some(&p.qualified())],
        )
        .ctx(|| format!("looking up the primary key of {}", p.qualified()))?;
    Ok(!rows.is_empty())
}

/// Whether the destination has a table of that name.
fn dest_table_exists(pg: &Pg, schema: &str, name: &str) -> Result<bool, WorkerError> {
    let rows = pg
        .query(
            "SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = $2",
            &[Some(schema), Some(name)],
        )
        .ctx(|| "looking up destination tables".into())?;
    Ok(!rows.is_empty())
}

/// Copies one table's rows under its plan. Without transforms the rows go straight
/// into the destination table through COPY (a datatype rule is applied by the new
/// type's input function, as the text arrives). With transforms they are copied
/// into a temporary table first and moved with one INSERT ... SELECT that
/// evaluates each transform over the staged column: the value is a column
/// reference there, never SQL text.
fn copy_rows(
    pg: &Pg,
    net: &Net,
    client: &Arc<Client>,
    t: &SourceTable,
    plan: &DestTable,
) -> Result<u64, WorkerError> {
    let copied: Vec<&crate::objmap::DestColumn> =
        plan.columns.iter().filter(|c| c.copied()).collect();
    if !plan.has_transforms() {
        let cols: Vec<String> = copied.iter().map(|c| c.name.clone()).collect();
        return copy_table(pg, net, client, t, &plan.schema, &plan.name, &cols);
    }
    const STAGE: &str = "synchdb_stage";
    let defs: Vec<String> = copied
        .iter()
        .map(|c| format!("{} {}", quote_ident(&c.src), c.natural_type))
        .collect();
    pg.exec(
        &format!(
            "CREATE TEMP TABLE {STAGE} ({}) ON COMMIT DROP",
            defs.join(", ")
        ),
        &[],
    )
    .ctx(|| format!("creating a staging table for {}", t.qualified()))?;
    let src_cols: Vec<String> = copied.iter().map(|c| c.src.clone()).collect();
    copy_table(pg, net, client, t, "pg_temp", STAGE, &src_cols)?;
    let mut exprs = Vec::with_capacity(copied.len());
    for c in &copied {
        let col = format!("stg.{}", quote_ident(&c.src));
        let e = match &c.transform {
            Some(x) => {
                let sql = crate::objmap::compile_transform(x, &format!("{col}::text"), &col)
                    .map_err(WorkerError::Config)?;
                format!("({sql})::{}", c.type_sql)
            }
            None if c.type_sql != c.natural_type => format!("{col}::text::{}", c.type_sql),
            None => col,
        };
        exprs.push(e);
    }
    let names: Vec<String> = copied.iter().map(|c| quote_ident(&c.name)).collect();
    let rows = pg
        .exec(
            &format!(
                // identity columns keep the source's values
                "INSERT INTO {} ({}) OVERRIDING SYSTEM VALUE SELECT {} FROM pg_temp.{STAGE} stg",
                plan.qualified(),
                names.join(", "),
                exprs.join(", ")
            ),
            &[],
        )
        .ctx(|| {
            format!(
                "transforming the rows of {} into {}",
                t.qualified(),
                plan.qualified()
            )
        })?;
    pg.exec(&format!("DROP TABLE pg_temp.{STAGE}"), &[])
        .ctx(|| "dropping the staging table".into())?;
    Ok(rows)
}

/// Creates the destination tables, copies their rows when asked, then adds their
/// primary keys (after the rows: a bulk index build is cheaper than row by row).
/// `rebuild` drops tables that exist; otherwise an existing table is an error.
/// What build_tables creates besides the tables, and how.
struct BuildOpts<'a> {
    /// User types, placed, dependencies first; created when missing.
    types: &'a [(UserType, String)],
    /// Indexes, constraints, foreign keys, defaults, comments, by source table.
    objects: &'a HashMap<u32, objects::TableObjects>,
    /// The sequences the tables use (created when missing, values set).
    sequences: &'a [objects::SequenceDef],
    /// Every table the connector replicates (foreign keys may reference them).
    all_plans: &'a [DestTable],
    rules: &'a Rules,
    /// Drop tables that exist and build them again.
    rebuild: bool,
    /// Copy the rows.
    copy: bool,
    /// Tables a parallel copy filled in a staging schema: moved into place.
    staged: Option<&'a crate::parallel::Staged>,
}

/// Resets the snapshot's progress counters for copying `tables` (the source's
/// estimate of their rows, for the ETA).
fn begin_copy_progress(
    pg: &Pg,
    net: &Net,
    client: &Arc<Client>,
    tables: &[(&SourceTable, &DestTable)],
) {
    let with_rows: Vec<u32> = tables
        .iter()
        .filter(|(t, _)| t.has_rows())
        .map(|(t, _)| t.oid)
        .collect();
    let i = crate::state::my_slot();
    let est = estimate_rows(pg, net, client, with_rows.clone());
    for (st, v) in [
        (crate::state::Stat::SnapTables, with_rows.len() as u64),
        (crate::state::Stat::SnapTablesDone, 0),
        (crate::state::Stat::SnapRows, 0),
        (crate::state::Stat::SnapBytes, 0),
        (crate::state::Stat::SnapRowsEst, est),
        (
            crate::state::Stat::SnapBeginTs,
            crate::apply::now_ms_pub() as u64,
        ),
        (crate::state::Stat::SnapEndTs, 0),
    ] {
        crate::state::stat_set(i, st, v);
    }
}

/// Whether the destination has virtual generated columns (PostgreSQL 18).
fn virtual_ok(pg: &Pg) -> bool {
    pg.guc("server_version_num")
        .and_then(|v| v.parse::<u32>().ok())
        .is_some_and(|v| v >= 180_000)
}

fn build_tables(
    pg: &Pg,
    net: &Net,
    client: &Arc<Client>,
    cfg: &ConnectorConfig,
    tables: &[(&SourceTable, &DestTable)],
    opts: BuildOpts,
) -> Result<u64, WorkerError> {
    let BuildOpts {
        types,
        rebuild,
        copy,
        objects,
        sequences,
        all_plans,
        rules,
        staged,
    } = opts;
    let dest_of: HashMap<u32, &DestTable> = all_plans.iter().map(|p| (p.src_oid, p)).collect();
    let placed_seqs = objects::place_sequences(sequences, &dest_of, &cfg.dest_schema());
    // every type lands in the schema of a table that uses it, which exists
    let mut schemas: Vec<&str> = tables.iter().map(|(_, p)| p.schema.as_str()).collect();
    schemas.extend(types.iter().map(|(_, s)| s.as_str()));
    schemas.extend(placed_seqs.iter().map(|(_, s)| s.as_str()));
    let virtual_ok = virtual_ok(pg);
    // parents before their partitions: a partition gets its parent's primary key
    // (and its indexes and constraints) when the parent's are added
    let depth = |p: &DestTable| {
        let mut d = 0;
        let mut cur = p.attach_to.as_ref().map(|a| a.0.clone());
        while let Some(parent) = cur.take() {
            d += 1;
            if d > tables.len() {
                break;
            }
            cur = tables
                .iter()
                .find(|(_, q)| q.qualified() == parent)
                .and_then(|(_, q)| q.attach_to.as_ref().map(|a| a.0.clone()));
        }
        d
    };
    let mut by_depth: Vec<(&SourceTable, &DestTable)> = tables.to_vec();
    by_depth.sort_by_key(|(_, p)| depth(p));
    let no_objects = objects::TableObjects::default();
    let mut rows = 0;
    with_dest_search_path(pg, &schemas, || -> Result<(), WorkerError> {
        if rebuild {
            // first, so that sequences they owned are created afresh below
            for (_, p) in tables {
                pg.exec(&format!("DROP TABLE IF EXISTS {}", p.qualified()), &[])
                    .ctx(|| format!("dropping {} to build it again", p.qualified()))?;
            }
        }
        usertypes::create_types(pg, &cfg.name, types)?;
        // before the tables: their defaults may name them
        objects::create_sequences(pg, &cfg.name, &placed_seqs)?;
        for (t, p) in tables {
            if dest_table_exists(pg, &p.schema, &p.name)? {
                return Err(WorkerError::Config(format!(
                    "destination table {} already exists; drop it (or rename it) before the initial snapshot of connector \"{}\", \
                     or start the connector in mode 'always' to replace it",
                    p.qualified(),
                    cfg.name
                )));
            }
            if let Some((st, stage)) = staged.and_then(|st| Some((st, st.tables.get(&t.oid)?))) {
                crate::parallel::move_into_place(pg, st, stage, p)?;
                continue;
            }
            let sql = ddl::create_table(p, virtual_ok);
            pg.exec(&sql, &[]).ctx(|| {
                format!(
                    "creating destination table {} for {} ({sql})",
                    p.qualified(),
                    t.qualified()
                )
            })?;
        }
        // partitions were created as tables of their own (the source partition's
        // column order may differ from its parent's); attached while still empty,
        // so the bound check scans nothing
        for (_, p) in tables {
            if let Some(sql) = ddl::attach_partition(p) {
                pg.exec(&sql, &[])
                    .ctx(|| format!("attaching partition {}: {sql}", p.qualified()))?;
                if let Some((parent, bound)) = &p.attach_to {
                    objects::record(
                        pg,
                        &cfg.name,
                        &objects::Outcome {
                            kind: "partition",
                            source: format!("{} {bound}", p.ext_tbname()),
                            dest: format!("{} of {parent}", p.qualified()),
                            err: None,
                        },
                    )?;
                }
            }
        }
        if copy {
            // (the caller started the progress counters)
            let i = crate::state::my_slot();
            if let Some(st) = staged {
                rows += st.rows;
            }
            for (t, p) in tables {
                if staged.is_some_and(|st| st.tables.contains_key(&t.oid)) {
                    continue;
                }
                if t.has_rows() {
                    rows += copy_rows(pg, net, client, t, p)?;
                    crate::state::stat_add(i, crate::state::Stat::SnapTablesDone, 1);
                }
            }
        }
        // after the rows: one bulk build per key and index
        for (t, p) in &by_depth {
            if let Some(sql) = ddl::add_primary_key(p) {
                if !has_primary_key(pg, p)? {
                    pg.exec(&sql, &[])
                        .ctx(|| format!("adding the primary key of {}", p.qualified()))?;
                }
            }
            let objs = objects.get(&t.oid).unwrap_or(&no_objects);
            objects::build_table_objects(pg, &cfg.name, p, objs, rules)?;
            for sql in ddl::replica_identity(p) {
                pg.exec(&sql, &[])
                    .ctx(|| format!("setting the replica identity of {}: {sql}", p.qualified()))?;
            }
            crate::objmap::record_attributes(pg, &cfg.name, p)?;
            remember_table(pg, &cfg.name, p.src_oid, &p.src_schema, &p.src_name)?;
        }
        // foreign keys last: every table they may reference is there
        let dest_name = |oid: u32| Ok(dest_of.get(&oid).map(|d| d.qualified()));
        for (t, p) in &by_depth {
            let objs = objects.get(&t.oid).unwrap_or(&no_objects);
            objects::build_foreign_keys(pg, &cfg.name, p, !t.has_rows(), objs, &dest_name)?;
        }
        objects::finish_sequences(pg, &cfg.name, &placed_seqs, &dest_of, rules)?;
        if let Some(role) = crate::ownership::owner_role(pg, cfg)? {
            let created: Vec<&DestTable> = tables.iter().map(|(_, p)| *p).collect();
            crate::ownership::give(pg, &role, &created, types, &placed_seqs)?;
        }
        Ok(())
    })?;
    Ok(rows)
}

/// Adds to the connector's publication those of `tables` (schema, name) it does
/// not publish yet (creating it if it is gone). A partition of a published
/// partitioned table is published already.
pub async fn publish_tables(
    client: &Client,
    publication: &str,
    tables: &[(String, String)],
) -> Result<(), String> {
    let err = |what: &str, e: tokio_postgres::Error| match e.as_db_error() {
        Some(db) => format!(
            "{what} on the source failed: {}: {}",
            db.severity(),
            db.message()
        ),
        None => format!("{what} on the source failed: {e}"),
    };
    // direct members (a partitioned table is one; pg_publication_tables shows
    // its partitions instead) and what the publication publishes through them
    let published: Vec<(String, String)> = client
        .query(
            "SELECT n.nspname::text, c.relname::text
               FROM pg_publication_rel pr
               JOIN pg_publication p ON p.oid = pr.prpubid
               JOIN pg_class c ON c.oid = pr.prrelid
               JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE p.pubname = $1
             UNION
             SELECT schemaname::text, tablename::text FROM pg_publication_tables WHERE pubname = $1",
            &[&publication],
        )
        .await
        .map_err(|e| err("reading the publication", e))?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let missing: Vec<String> = tables
        .iter()
        .filter(|t| !published.contains(t))
        .map(|(s, n)| format!("{}.{}", quote_ident(s), quote_ident(n)))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let pq = quote_ident(publication);
    let exists = !client
        .query(
            "SELECT 1 FROM pg_publication WHERE pubname = $1",
            &[&publication],
        )
        .await
        .map_err(|e| err("reading the publication", e))?
        .is_empty();
    let sql = if exists {
        format!("ALTER PUBLICATION {pq} ADD TABLE {}", missing.join(", "))
    } else {
        format!("CREATE PUBLICATION {pq} FOR TABLE {}", missing.join(", "))
    };
    client
        .batch_execute(&sql)
        .await
        .map_err(|e| err("adding tables to the publication", e))
}

/// Says in the log which tables of the replicated schemas are not replicated.
fn log_left_out(pg: &Pg, cfg: &ConnectorConfig, left_out: &[String]) {
    if !left_out.is_empty() {
        pg.log(
            crate::pg::LOG_LOG,
            &format!(
                "connector {}: not replicated: {} (unlogged tables: their changes are not written to the WAL, \
                 so logical replication cannot see them; ALTER TABLE ... SET LOGGED on the source to replicate them)",
                cfg.name,
                left_out.join(", ")
            ),
        );
    }
}

/// The destination plans of the tables, checked: every rule names a replicated
/// table and column, and no two tables land on one name.
fn plan_tables(
    cfg: &ConnectorConfig,
    rules: &Rules,
    tables: &[SourceTable],
) -> Result<Vec<DestTable>, WorkerError> {
    crate::objmap::check_rules(rules, tables, &cfg.name).map_err(WorkerError::Config)?;
    let mut plans: Vec<DestTable> = tables
        .iter()
        .map(|t| crate::objmap::plan_table(rules, t, &cfg.dest_schema()))
        .collect();
    let dest_of: std::collections::HashMap<u32, String> =
        plans.iter().map(|p| (p.src_oid, p.qualified())).collect();
    for (t, p) in tables.iter().zip(plans.iter_mut()) {
        if let Some((parent, bound)) = &t.partition_of {
            if let Some(d) = dest_of.get(parent) {
                p.attach_to = Some((d.clone(), bound.clone()));
            }
        }
    }
    crate::objmap::check_clashes(&plans, &cfg.name).map_err(WorkerError::Config)?;
    Ok(plans)
}

/// Creates the destination schemas, each in a short transaction of its own: other
/// connectors may be creating them too, and their snapshots must not wait for ours.
/// Returns (in `created`) those it created, for `drop_new_schemas`.
fn ensure_schemas(
    pg: &Pg,
    plans: &[DestTable],
    created: &mut Vec<String>,
) -> Result<(), WorkerError> {
    let mut done: Vec<&str> = Vec::new();
    for p in plans {
        if done.contains(&p.schema.as_str()) {
            continue;
        }
        let new = pg.in_xact(|| {
            let rows = pg
                .query(
                    "SELECT to_regnamespace(quote_ident($1)) IS NULL",
                    &[Some(&p.schema)],
                )
                .ctx(|| format!("looking up schema {}", quote_ident(&p.schema)))?;
            pg.exec(&ddl::ensure_schema_sql(&p.schema), &[])
                .ctx(|| format!("creating schema {}", quote_ident(&p.schema)))?;
            Ok::<_, WorkerError>(rows.first().and_then(|r| r[0].as_deref()) == Some("t"))
        })?;
        if new {
            created.push(p.schema.clone());
        }
        done.push(&p.schema);
    }
    Ok(())
}

/// A snapshot that failed leaves no schema it created: each is dropped if it is
/// still empty (another connector may have put tables in it meanwhile).
fn drop_new_schemas(pg: &Pg, created: &[String]) {
    for s in created {
        let _ = pg.in_xact(|| {
            pg.exec(
                &format!("DROP SCHEMA IF EXISTS {} RESTRICT", quote_ident(s)),
                &[],
            )
        });
    }
}

/// Runs the snapshot; on success the destination has the tables (and rows when
/// the plan asks for them) and the origin's progress is the slot's consistent point.
pub fn run(
    pg: &Pg,
    net: &Net,
    cfg: &ConnectorConfig,
    params: &ConnParams,
    slot: &str,
    publication: &str,
    plan: Plan,
) -> Result<SnapshotResult, WorkerError> {
    let mut opened = net.call(pg, open_source(cfg.clone(), params.clone(), false))??;
    let problems = std::mem::take(&mut opened.problems);
    pg.in_xact(|| {
        precheck(
            pg,
            cfg,
            plan.rules,
            &opened.tables,
            problems,
            plan.create_tables,
            plan.rebuild,
        )
    })?;
    let prepared = net.call(
        pg,
        prepare(
            opened,
            cfg.clone(),
            params.clone(),
            slot.to_string(),
            publication.to_string(),
        ),
    )?;
    let prepared = match prepared {
        Ok(p) => p,
        Err(e) => {
            drop_created(pg, net, cfg, params, slot, publication, async {});
            return Err(e);
        }
    };
    let Prepared {
        repl,
        client,
        mut tables,
        types,
        left_out,
        objects,
        sequences,
        consistent_point,
        snapshot_name,
    } = prepared;
    log_left_out(pg, cfg, &left_out);
    let types = place_types(cfg, plan.rules, &mut tables, &types);
    pg.log(
        crate::pg::LOG_LOG,
        &format!(
            "connector {}: snapshot of {} table(s) from {}:{}/{} at {}",
            cfg.name,
            tables.len(),
            cfg.hostname,
            cfg.port,
            cfg.srcdb,
            crate::offset::format_lsn(consistent_point)
        ),
    );
    let mut new_schemas = Vec::new();
    let result = (|| -> Result<u64, WorkerError> {
        let plans = plan_tables(cfg, plan.rules, &tables)?;
        if plan.create_tables {
            ensure_schemas(pg, &plans, &mut new_schemas)?;
        }
        // tables copied at once, into a staging schema, before the one
        // transaction that puts everything in place
        let staged = if plan.create_tables && plan.copy_rows {
            let pairs: Vec<(&SourceTable, &DestTable)> = tables.iter().zip(plans.iter()).collect();
            begin_copy_progress(pg, net, &client, &pairs);
            match &snapshot_name {
                Some(snap) => crate::parallel::copy(
                    pg,
                    net,
                    &client,
                    params,
                    cfg,
                    snap,
                    &pairs,
                    virtual_ok(pg),
                )?,
                None => None,
            }
        } else {
            None
        };
        let r = pg.in_xact(|| -> Result<u64, WorkerError> {
            // an xid, so that the commit records the origin's progress even when
            // there is nothing to create
            pg.exec("SELECT pg_current_xact_id()", &[])
                .ctx(|| "starting the snapshot transaction".into())?;
            // a new slot: positions kept for an earlier partial snapshot mean nothing now
            pg.exec(
                "DELETE FROM synchdb_snapshot_skip WHERE name = $1",
                &[Some(&cfg.name)],
            )
            .ctx(|| "clearing the connector's snapshot positions".into())?;
            pg.exec(
                "DELETE FROM synchdb_tables WHERE name = $1",
                &[Some(&cfg.name)],
            )
            .ctx(|| "clearing the connector's tables".into())?;
            let rows = if plan.create_tables {
                let pairs: Vec<(&SourceTable, &DestTable)> =
                    tables.iter().zip(plans.iter()).collect();
                build_tables(
                    pg,
                    net,
                    &client,
                    cfg,
                    &pairs,
                    BuildOpts {
                        types: &types,
                        rebuild: plan.rebuild,
                        copy: plan.copy_rows,
                        objects: &objects,
                        sequences: &sequences,
                        all_plans: &plans,
                        rules: plan.rules,
                        staged: staged.as_ref(),
                    },
                )?
            } else {
                0
            };
            if let Some(st) = &staged {
                crate::parallel::finish(pg, &cfg.name, st)?;
            }
            pg.origin_set_commit(consistent_point, 0)?;
            Ok(rows)
        });
        if let (Err(_), Some(st)) = (&r, &staged) {
            crate::parallel::discard(pg, &cfg.name, &st.schema);
        }
        r
    })();
    // the exported snapshot is no longer needed either way
    let closing = async move {
        drop(client);
        let _ = repl.close().await;
    };
    let rows = match result {
        Ok(rows) => {
            let _ = net.spawn(closing);
            rows
        }
        Err(e) => {
            if !pg.should_exit() {
                drop_new_schemas(pg, &new_schemas);
            }
            drop_created(pg, net, cfg, params, slot, publication, closing);
            return Err(e);
        }
    };
    Ok(SnapshotResult {
        consistent_point,
        tables: tables.len(),
        rows,
    })
}

/// A snapshot that failed after the slot and publication were created drops
/// them (after `closing`, which ends the connection holding the slot), so that
/// no orphan slot holds WAL on the source; the destination side was rolled
/// back, so the connector is as before its start. Not on a stop: the next start
/// replaces both anyway, and a stop must not wait on the source.
fn drop_created(
    pg: &Pg,
    net: &Net,
    cfg: &ConnectorConfig,
    params: &ConnParams,
    slot: &str,
    publication: &str,
    closing: impl std::future::Future<Output = ()> + Send + 'static,
) {
    if pg.should_exit() {
        let _ = net.spawn(closing);
        return;
    }
    let (p, s, pb) = (params.clone(), slot.to_string(), publication.to_string());
    let r = net.call(pg, async move {
        closing.await;
        match tokio::time::timeout(
            std::time::Duration::from_secs(30),
            crate::cleanup::drop_slot_and_publication(&p, &s, &pb),
        )
        .await
        {
            Ok(r) => r,
            Err(_) => Err("no answer from the source within 30 s".to_string()),
        }
    });
    match r {
        Ok(Ok(())) => pg.log(
            crate::pg::LOG_LOG,
            &format!(
                "connector {}: the snapshot failed; dropped replication slot {slot} and publication {publication} \
                 it had created on the source, so they hold no WAL there",
                cfg.name
            ),
        ),
        Ok(Err(e)) => pg.log(
            crate::pg::LOG_WARNING,
            &format!(
                "connector {}: the snapshot failed, and dropping replication slot {slot} and publication {publication} \
                 on the source failed too ({e}); the next start replaces them, or drop them by hand on the source: \
                 SELECT pg_drop_replication_slot({}); DROP PUBLICATION IF EXISTS {};",
                cfg.name,
                crate::config::quote_literal(slot),
                quote_ident(publication)
            ),
        ),
        Err(_) => {}
    }
}

/// What the source side holds for a partial snapshot: a temporary slot's exported
/// snapshot, and which tables `snapshottable` names in it.
struct PreparedPartial {
    inner: Prepared,
    snapshottable: Vec<u32>,
}

/// Makes sure the connector's publication holds every table it replicates (the
/// `table` option may have grown), then takes a snapshot through a temporary slot.
/// The connector's own slot, and so every other table's position, is untouched.
async fn prepare_partial(
    opened: Opened,
    cfg: ConnectorConfig,
    params: ConnParams,
    slot: String,
    publication: String,
) -> Result<PreparedPartial, WorkerError> {
    let Opened {
        mut repl,
        client,
        tables,
        ..
    } = opened;
    // added before the temporary slot exists, so that every change after its
    // snapshot is published to the connector's slot
    let all: Vec<(String, String)> = tables
        .iter()
        .map(|t| (t.schema.clone(), t.name.clone()))
        .collect();
    publish_tables(&client, &publication, &all)
        .await
        .map_err(WorkerError::Source)?;
    // slot names are [a-z0-9_]: cutting at a byte is safe
    let temp = format!("{}_rs", &slot[..slot.len().min(60)]);
    let info = repl.create_temporary_slot(&temp).await?;
    let cat =
        catalog_in_snapshot(&client, &cfg, &params, info.snapshot_name, "temporary slot").await?;
    let snapshottable = source::select_snapshot_tables(&client, &cfg, &cat.tables)
        .await
        .map_err(WorkerError::Config)?;
    Ok(PreparedPartial {
        inner: Prepared {
            repl,
            client: Arc::new(client),
            tables: cat.tables,
            types: cat.types,
            left_out: cat.left_out,
            objects: cat.objects,
            sequences: cat.sequences,
            consistent_point: info.consistent_point,
            // a partial snapshot copies one table at a time
            snapshot_name: None,
        },
        snapshottable,
    })
}

/// Mode `always` with `snapshottable`, on a connector that has a position: copies
/// again the tables `snapshottable` names (and any replicated table the destination
/// lacks), at a new consistent point S taken by a temporary slot. Every other table
/// keeps its rows and the connector keeps its slot and position. CDC then resumes
/// from the position; for a copied table it leaves out the changes of transactions
/// that committed before S (they are in the copy). Those per-table points are
/// stored with the copied rows, in one transaction, so a stop at any moment
/// neither loses nor repeats a change.
///
/// `only`: copy these source tables (new on the source, found while streaming)
/// instead of those `snapshottable` names.
#[allow(clippy::too_many_arguments)]
pub fn resnapshot(
    pg: &Pg,
    net: &Net,
    cfg: &ConnectorConfig,
    params: &ConnParams,
    slot: &str,
    publication: &str,
    rules: &Rules,
    only: Option<&[u32]>,
) -> Result<SnapshotResult, WorkerError> {
    let mut opened = net.call(pg, open_source(cfg.clone(), params.clone(), true))??;
    // tables already there are replaced, those missing created
    let problems = std::mem::take(&mut opened.problems);
    pg.in_xact(|| precheck(pg, cfg, rules, &opened.tables, problems, true, true))?;
    let PreparedPartial {
        inner:
            Prepared {
                repl,
                client,
                mut tables,
                types,
                left_out,
                objects,
                sequences,
                consistent_point,
                ..
            },
        snapshottable,
    } = net.call(
        pg,
        prepare_partial(
            opened,
            cfg.clone(),
            params.clone(),
            slot.to_string(),
            publication.to_string(),
        ),
    )??;
    log_left_out(pg, cfg, &left_out);
    let types = place_types(cfg, rules, &mut tables, &types);
    let result = (|| -> Result<(usize, u64), WorkerError> {
        let plans = plan_tables(cfg, rules, &tables)?;
        ensure_schemas(pg, &plans, &mut Vec::new())?;
        pg.in_xact(|| -> Result<(usize, u64), WorkerError> {
            let mut copy: Vec<(&SourceTable, &DestTable)> = Vec::new();
            for (t, p) in tables.iter().zip(plans.iter()) {
                let wanted = match only {
                    Some(o) => o.contains(&t.oid),
                    None => snapshottable.contains(&t.oid),
                };
                if wanted || !dest_table_exists(pg, &p.schema, &p.name)? {
                    copy.push((t, p));
                }
            }
            // a partitioned table built again drops its partitions: they come too
            loop {
                let parents: Vec<String> = copy.iter().map(|(_, p)| p.qualified()).collect();
                let more: Vec<(&SourceTable, &DestTable)> = tables
                    .iter()
                    .zip(plans.iter())
                    .filter(|(t, _)| !copy.iter().any(|(c, _)| c.oid == t.oid))
                    .filter(|(_, p)| p.attach_to.as_ref().is_some_and(|(a, _)| parents.contains(a)))
                    .collect();
                if more.is_empty() {
                    break;
                }
                copy.extend(more);
            }
            pg.log(
                crate::pg::LOG_LOG,
                &format!(
                    "connector {}: snapshot of {} of its {} table(s) at {} ({}); the others keep their rows and position",
                    cfg.name,
                    copy.len(),
                    tables.len(),
                    crate::offset::format_lsn(consistent_point),
                    copy.iter().map(|(t, _)| t.qualified()).collect::<Vec<_>>().join(", ")
                ),
            );
            let opts = BuildOpts {
                staged: None,
                types: &types,
                rebuild: true,
                copy: true,
                objects: &objects,
                sequences: &sequences,
                all_plans: &plans,
                rules,
            };
            begin_copy_progress(pg, net, &client, &copy);
            let rows = build_tables(pg, net, &client, cfg, &copy, opts)?;
            let lsn = crate::offset::format_lsn(consistent_point);
            for (t, _) in &copy {
                pg.exec(
                    "INSERT INTO synchdb_snapshot_skip (name, srcrelid, srcschema, srctable, until_lsn)
                     VALUES ($1, $2::oid, $3, $4, $5::pg_lsn)
                     ON CONFLICT (name, srcrelid) DO UPDATE
                        SET srcschema = EXCLUDED.srcschema, srctable = EXCLUDED.srctable,
                            until_lsn = EXCLUDED.until_lsn",
                    &[
                        Some(&cfg.name),
                        Some(&t.oid.to_string()),
                        Some(&t.schema),
                        Some(&t.name),
                        Some(&lsn),
                    ],
                )
                .ctx(|| format!("recording the snapshot point of {}", t.qualified()))?;
            }
            Ok((copy.len(), rows))
        })
    })();
    let _ = net.spawn(async move {
        drop(client);
        // closing the connection drops the temporary slot
        let _ = repl.close().await;
    });
    let (n, rows) = result?;
    Ok(SnapshotResult {
        consistent_point,
        tables: n,
        rows,
    })
}
