//! Parallel initial copy.
//!
//! A snapshot whose tables hold enough rows copies several at once, and a large
//! table in several ranges of its pages at once: the connector's worker and up
//! to `synchdb.snapshot_parallelism - 1` copy helpers (background workers of
//! their own: one PostgreSQL backend inserts with one core) take items from a
//! work list, `synchdb_copy_work`, all reading the slot's exported snapshot.
//!
//! They copy into tables of a staging schema, created and committed first,
//! because another backend cannot see what the snapshot's own transaction
//! creates. An item's rows and its `done` mark commit together. The snapshot's
//! last transaction then moves the staging tables into place (catalog updates,
//! no rows move) together with everything else it builds, so the destination
//! still goes in one commit from nothing to the whole snapshot, at the origin
//! position that matches it. A copy cut short (error, stop, crash) leaves only
//! the staging schema, which the next snapshot or synchdb_del_conninfo drops.
//!
//! Tables that need the snapshot's own transaction stay with the serial copy:
//! partitions (attached while empty), tables with transforms (staged through a
//! temporary table) and tables whose columns use the user types the snapshot
//! creates.

use crate::config::{quote_ident, ConnectorConfig};
use crate::copysource::CopyConn;
use crate::error::{DestContext, WorkerError};
use crate::net::Net;
use crate::objmap::DestTable;
use crate::pg::{Pg, LOG_LOG, LOG_WARNING};
use crate::replconn::ConnParams;
use crate::snapshot::{copy_out_sql, copy_stream, CopyDest, RowSource};
use crate::source::SourceTable;
use crate::state;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use tokio_postgres::Client;

/// Size of a page range of a large table, at least (16 MB of 8 kB pages): a
/// smaller one costs more in per-item work than it gains.
const MIN_CHUNK_PAGES: i64 = 2048;
/// Page ranges of one table, at most.
const MAX_CHUNKS: i64 = 64;
/// A whole table this large at least (1 MB) is copied with COPY FREEZE after
/// a TRUNCATE. A smaller one gains next to nothing from frozen rows, while its
/// TRUNCATE (and the old file's removal at commit) scans all of shared_buffers.
const FREEZE_MIN_PAGES: i64 = 128;

/// Copies that run at once: synchdb.snapshot_parallelism, or (0) one per CPU,
/// at least 2 and at most 8.
pub fn parallelism(pg: &Pg) -> usize {
    match pg.guc_int("synchdb.snapshot_parallelism", 0) {
        n if n > 0 => n as usize,
        _ => std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
            .clamp(2, 8),
    }
}

/// The staging schema of a connector's parallel copy.
pub fn staging_schema(dboid: u32, name: &str) -> String {
    crate::config::bounded("synchdb_stage_", name, &format!("_{dboid}"))
}

/// What a parallel copy left for the snapshot's last transaction: staging
/// tables by source table oid, and the rows they hold.
pub struct Staged {
    pub schema: String,
    pub tables: HashMap<u32, String>,
    pub rows: u64,
}

/// One item of the work list.
struct Item {
    srcrelid: u32,
    /// The staging schema.
    schema: String,
    label: String,
    copy_sql: String,
    table: String,
    cols: Vec<String>,
    /// Copied with COPY FREEZE after a TRUNCATE in the same transaction: a
    /// whole table (not a page range) of FREEZE_MIN_PAGES at least.
    freeze: bool,
    /// COPY's binary format (every column of the source's type).
    binary: bool,
    /// Run once every item of the table is done (its primary key, built in
    /// the staging schema: a bulk build per table, several at once).
    then_sql: Option<String>,
    /// `copy_sql` is DDL to run, not a COPY (the table's then_sql, queued by
    /// whoever finished its last item).
    ddl: bool,
}

/// Whether table `t` (planned as `p`) can be copied outside the snapshot's
/// transaction.
fn eligible(t: &SourceTable, p: &DestTable) -> bool {
    t.has_rows()
        && p.attach_to.is_none()
        && p.partitioned_by.is_none()
        && !p.has_transforms()
        && t.columns.iter().all(|c| c.udt == 0)
}

/// The staging copy of `p`: the same columns without their defaults (those may
/// name sequences the snapshot's transaction creates; set when moved into place).
fn staging_table(p: &DestTable, schema: &str, name: &str) -> DestTable {
    let mut s = p.clone();
    s.schema = schema.to_string();
    s.name = name.to_string();
    s.attach_to = None;
    for c in &mut s.columns {
        c.default = None;
    }
    s
}

/// Whether table `t`'s rows can travel in COPY's binary format: each copied
/// column is declared on the destination as on the source, with a type of
/// PostgreSQL's own (whose binary form every version reads), and both servers
/// use one encoding (binary text is not converted).
fn binary_ok(t: &SourceTable, p: &DestTable, same_encoding: bool) -> bool {
    same_encoding
        && t.columns
            .iter()
            .filter(|c| c.copied())
            .all(|c| c.udt == 0 && c.type_extension.is_none() && c.type_sql == c.source_type)
        && p.columns
            .iter()
            .filter(|c| c.copied())
            .all(|c| c.type_sql == c.natural_type)
}

/// What plan_items needs to know of the source: table sizes in pages, whether
/// it scans a ctid range without reading the whole table (PostgreSQL 14 and
/// later), its encoding.
struct SourceFacts {
    sizes: HashMap<u32, i64>,
    tid_range: bool,
    encoding: String,
}

async fn source_facts(client: &Client, oids: Vec<u32>) -> Result<SourceFacts, String> {
    let rows = client
        .query(
            "SELECT c.oid, (pg_relation_size(c.oid) / current_setting('block_size')::int)::bigint,
                    current_setting('server_version_num')::int >= 140000, current_setting('server_encoding')
               FROM pg_class c WHERE c.oid = ANY($1::oid[])",
            &[&oids],
        )
        .await
        .map_err(|e| format!("reading the sizes of the source tables failed: {e}"))?;
    let mut f = SourceFacts {
        sizes: HashMap::new(),
        tid_range: false,
        encoding: String::new(),
    };
    for r in rows {
        let oid: u32 = r.try_get(0).map_err(|e| e.to_string())?;
        let pages: i64 = r.try_get(1).map_err(|e| e.to_string())?;
        f.tid_range = r.try_get(2).map_err(|e| e.to_string())?;
        f.encoding = r.try_get(3).map_err(|e| e.to_string())?;
        f.sizes.insert(oid, pages);
    }
    Ok(f)
}

/// Splits the tables into work items, largest first: a table much larger than
/// its share of the work into page ranges. Empty when copying at once would
/// gain nothing (fewer than two items).
fn plan_items(
    tables: &[(&SourceTable, &DestTable, String)],
    facts: &SourceFacts,
    same_encoding: bool,
    k: usize,
    schema: &str,
) -> Vec<Item> {
    let (sizes, tid_range) = (&facts.sizes, facts.tid_range);
    let total: i64 = tables
        .iter()
        .map(|(t, _, _)| sizes.get(&t.oid).copied().unwrap_or(0))
        .sum();
    let chunk = (total / (k as i64 * 3)).max(MIN_CHUNK_PAGES);
    let mut order: Vec<&(&SourceTable, &DestTable, String)> = tables.iter().collect();
    order.sort_by_key(|(t, _, _)| std::cmp::Reverse(sizes.get(&t.oid).copied().unwrap_or(0)));
    let mut items = Vec::new();
    for (t, p, stage) in order {
        let pages = sizes.get(&t.oid).copied().unwrap_or(0);
        let binary = binary_ok(t, p, same_encoding);
        // under the destination's name only: the key's index is named after it
        let then_sql = if *stage == p.name {
            crate::ddl::add_primary_key(&staging_table(p, schema, stage))
        } else {
            None
        };
        let cols: Vec<String> = p
            .columns
            .iter()
            .filter(|c| c.copied())
            .map(|c| c.name.clone())
            .collect();
        let n = if tid_range && pages > chunk * 3 / 2 {
            ((pages + chunk - 1) / chunk).min(MAX_CHUNKS)
        } else {
            1
        };
        // one item for the whole table, or one per page range
        let step = (pages + n - 1) / n;
        for i in 0..n {
            let range = (n > 1).then(|| (i * step, (i + 1 < n).then_some((i + 1) * step)));
            let label = match range {
                None => t.qualified(),
                Some((from, to)) => format!(
                    "{} (pages {from}-{}, part {} of {n})",
                    t.qualified(),
                    to.map_or("end".to_string(), |x| (x - 1).to_string()),
                    i + 1
                ),
            };
            items.push(Item {
                srcrelid: t.oid,
                schema: schema.to_string(),
                label,
                copy_sql: copy_out_sql(t, range, binary),
                table: stage.clone(),
                cols: cols.clone(),
                freeze: range.is_none() && pages >= FREEZE_MIN_PAGES,
                binary,
                then_sql: then_sql.clone(),
                ddl: false,
            });
        }
    }
    if items.len() < 2 {
        items.clear();
    }
    items
}

/// Drops what an earlier parallel copy of the connector left (its staging
/// schemas and work list). Inside a transaction.
fn drop_leftovers(pg: &Pg, name: &str, schema: &str) -> Result<(), WorkerError> {
    let rows = pg
        .query(
            "SELECT DISTINCT dst_schema FROM synchdb_copy_work WHERE name = $1",
            &[Some(name)],
        )
        .ctx(|| "reading the connector's copy work list".into())?;
    let mut schemas: HashSet<String> = rows.into_iter().filter_map(|r| r[0].clone()).collect();
    schemas.insert(schema.to_string());
    for s in schemas {
        pg.exec(
            &format!("DROP SCHEMA IF EXISTS {} CASCADE", quote_ident(&s)),
            &[],
        )
        .ctx(|| format!("dropping staging schema {s}"))?;
    }
    pg.exec(
        "DELETE FROM synchdb_copy_work WHERE name = $1",
        &[Some(name)],
    )
    .ctx(|| "clearing the connector's copy work list".into())?;
    Ok(())
}

/// After a failed parallel copy: nothing of it stays (not on a stop, whose
/// leftovers the next snapshot drops: a stop must be quick).
pub fn discard(pg: &Pg, name: &str, schema: &str) {
    if pg.should_exit() {
        return;
    }
    if let Err(e) = pg.in_xact(|| drop_leftovers(pg, name, schema)) {
        pg.log(
            LOG_WARNING,
            &format!("connector {name}: dropping staging schema {schema} failed: {e}"),
        );
    }
}

/// Copies the eligible tables of `pairs` at once into a staging schema, under
/// exported snapshot `snapshot` (which `client` has imported; its catalog
/// questions go there, the rows come through sessions of their own, opened
/// with `params`). None when there
/// is nothing to gain (parallelism 1, fewer than two items): the serial copy
/// then copies everything as before.
#[allow(clippy::too_many_arguments)]
pub fn copy(
    pg: &Pg,
    net: &Net,
    client: &Arc<Client>,
    params: &ConnParams,
    cfg: &ConnectorConfig,
    snapshot: &str,
    pairs: &[(&SourceTable, &DestTable)],
    virtual_ok: bool,
) -> Result<Option<Staged>, WorkerError> {
    let k = parallelism(pg);
    let schema = staging_schema(pg.local_ids().database_oid, &cfg.name);
    // leftovers of a copy cut short are dropped whatever this one does
    pg.in_xact(|| drop_leftovers(pg, &cfg.name, &schema))?;
    if k < 2 {
        return Ok(None);
    }
    // staging tables keep the destination's names (an identity column's sequence
    // is named after its table), unless two land on one name
    let mut used = HashSet::new();
    let chosen: Vec<(&SourceTable, &DestTable, String)> = pairs
        .iter()
        .filter(|(t, p)| eligible(t, p))
        .map(|(t, p)| {
            let name = if used.insert(p.name.clone()) {
                p.name.clone()
            } else {
                format!("synchdb_stage_{}", t.oid)
            };
            (*t, *p, name)
        })
        .collect();
    if chosen.is_empty() {
        return Ok(None);
    }
    let oids: Vec<u32> = chosen.iter().map(|(t, _, _)| t.oid).collect();
    let c = client.clone();
    let facts = net
        .call(pg, async move { source_facts(&c, oids).await })?
        .map_err(WorkerError::Source)?;
    let same_encoding = pg.guc("server_encoding").as_deref() == Some(facts.encoding.as_str());
    let items = plan_items(&chosen, &facts, same_encoding, k, &schema);
    if items.is_empty() {
        return Ok(None);
    }
    let r = stage_and_run(
        pg, net, params, cfg, snapshot, &schema, &chosen, &items, k, virtual_ok,
    );
    match r {
        Ok(rows) => Ok(Some(Staged {
            tables: chosen.iter().map(|(t, _, s)| (t.oid, s.clone())).collect(),
            schema,
            rows,
        })),
        Err(e) => {
            // before the staging tables they write to are dropped
            pg.stop_helpers();
            discard(pg, &cfg.name, &schema);
            Err(e)
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn stage_and_run(
    pg: &Pg,
    net: &Net,
    params: &ConnParams,
    cfg: &ConnectorConfig,
    snapshot: &str,
    schema: &str,
    chosen: &[(&SourceTable, &DestTable, String)],
    items: &[Item],
    k: usize,
    virtual_ok: bool,
) -> Result<u64, WorkerError> {
    let name = cfg.name.as_str();
    let dest_schemas: Vec<&str> = chosen.iter().map(|(_, p, _)| p.schema.as_str()).collect();
    pg.in_xact(|| -> Result<(), WorkerError> {
        pg.exec(&format!("CREATE SCHEMA {}", quote_ident(schema)), &[])
            .ctx(|| format!("creating staging schema {schema}"))?;
        // type names resolve as in the destination schemas
        crate::snapshot::with_dest_search_path(pg, &dest_schemas, || -> Result<(), WorkerError> {
            for (t, p, stage) in chosen {
                let sql = crate::ddl::create_table(&staging_table(p, schema, stage), virtual_ok);
                pg.exec(&sql, &[]).ctx(|| {
                    format!("creating the staging table of {} ({sql})", t.qualified())
                })?;
            }
            Ok(())
        })?;
        for (i, it) in items.iter().enumerate() {
            let cols = serde_json::to_string(&it.cols)
                .map_err(|e| WorkerError::Internal(format!("encoding a column list: {e}")))?;
            pg.exec(
                "INSERT INTO synchdb_copy_work (name, item, srcrelid, snapshot, copy_sql, label, dst_schema, dst_table, dst_cols,
                                                frozen, binary_format, then_sql)
                 VALUES ($1, $2::int, $3::oid, $4, $5, $6, $7, $8, ARRAY(SELECT json_array_elements_text($9::json)),
                         $10::bool, $11::bool, $12)",
                &[
                    Some(name),
                    Some(&i.to_string()),
                    Some(&it.srcrelid.to_string()),
                    Some(snapshot),
                    Some(&it.copy_sql),
                    Some(&it.label),
                    Some(&it.schema),
                    Some(&it.table),
                    Some(&cols),
                    Some(if it.freeze { "true" } else { "false" }),
                    Some(if it.binary { "true" } else { "false" }),
                    it.then_sql.as_deref(),
                ],
            )
            .ctx(|| "filling the copy work list".into())?;
        }
        Ok(())
    })?;
    let wanted = (k - 1).min(items.len() - 1);
    let mut helpers = Vec::new();
    for no in 1..=wanted as i32 {
        match pg.start_helper(name, state::my_slot(), no) {
            Ok(Some(_)) => helpers.push(no),
            Ok(None) => {
                pg.log(
                    LOG_LOG,
                    &format!(
                        "connector {name}: no background worker slot is free for copy helper {no}; \
                         copying with {} process(es) (raise max_worker_processes for more)",
                        helpers.len() + 1
                    ),
                );
                break;
            }
            Err(e) => {
                pg.log(
                    LOG_WARNING,
                    &format!("connector {name}: copy helper {no} did not start ({e}); copying without it"),
                );
                break;
            }
        }
    }
    pg.log(
        LOG_LOG,
        &format!(
            "connector {name}: copying {} table(s) as {} item(s) with {} process(es) at once",
            chosen.len(),
            items.len(),
            helpers.len() + 1
        ),
    );
    // the worker copies too, on a session of its own in the snapshot
    let mut own = None;
    let r = work(pg, net, name, 0, &mut own, params)
        .and_then(|rows| Ok(rows + wait_for_helpers(pg, net, name, &helpers, &mut own, params)?));
    if let Some(c) = own {
        c.close(pg, net);
    }
    r
}

/// Waits until the helpers have copied every item: the rows they copied, or
/// the first error one of them reported.
fn wait_for_helpers(
    pg: &Pg,
    net: &Net,
    name: &str,
    helpers: &[i32],
    own: &mut Option<CopyConn>,
    params: &ConnParams,
) -> Result<u64, WorkerError> {
    let naptime = pg.guc_int("synchdb.naptime", 100).clamp(10, 1000);
    let base = state::stat_get(state::my_slot(), state::Stat::SnapTablesDone);
    let mut mine = 0;
    loop {
        // Whether a helper is alive, asked before the list is read: a helper
        // that ends between the two has its last item done in what is read,
        // so an item left 'running' below with no helper alive is really one
        // a helper dropped (asked after, it would race the helper's end).
        let alive = helpers.iter().any(|&h| pg.helper_running(h));
        let rows = pg
            .in_xact(|| {
                pg.query(
                    "SELECT count(*) FILTER (WHERE state IN ('todo', 'running')),
                            coalesce(sum(rows) FILTER (WHERE state = 'done' AND helper <> 0), 0),
                            min(format('%s: %s', label, err)) FILTER (WHERE state = 'failed'),
                            (SELECT count(*) FROM (SELECT FROM synchdb_copy_work WHERE name = $1
                                                    GROUP BY srcrelid HAVING bool_and(state = 'done')) d),
                            count(*) FILTER (WHERE state = 'running')
                       FROM synchdb_copy_work WHERE name = $1",
                    &[Some(name)],
                )
            })
            .ctx(|| "reading the copy work list".into())?;
        let row = rows.into_iter().next().unwrap_or_default();
        let get = |i: usize| row.get(i).cloned().flatten();
        if let Some(err) = get(2) {
            return Err(WorkerError::Source(format!("a copy helper failed: {err}")));
        }
        let open: u64 = get(0).and_then(|v| v.parse().ok()).unwrap_or(0);
        // a key queued once the helpers had nothing left to take
        if open > 0 {
            mine += work(pg, net, name, 0, own, params)?;
        }
        // tables whose every item is done, for the progress view
        let done: u64 = get(3).and_then(|v| v.parse().ok()).unwrap_or(0);
        state::stat_set(
            state::my_slot(),
            state::Stat::SnapTablesDone,
            base.max(done),
        );
        if open == 0 {
            return Ok(mine + get(1).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0));
        }
        // todo items were this process's own to do just above; running ones
        // (the worker's are never running here) belong to a helper
        let running: u64 = get(4).and_then(|v| v.parse().ok()).unwrap_or(0);
        if running > 0 && !alive {
            return Err(WorkerError::Internal(format!(
                "the copy helpers of connector \"{name}\" exited with {running} item(s) of the copy work list not done; \
                 see the server log"
            )));
        }
        if pg.should_exit() {
            return Err(WorkerError::Stopped);
        }
        // the last items running: look often, the snapshot's last transaction
        // waits for them (a hundred small tables copy in well under a second)
        let nap = if open <= helpers.len() as u64 {
            naptime.min(5)
        } else {
            naptime
        };
        pg.wait(-1, nap)?;
    }
}

/// Claims the next item of connector `name`'s work list for process `no`.
fn claim(pg: &Pg, name: &str, no: i32) -> Result<Option<(i32, String, Item)>, WorkerError> {
    let rows = pg
        .in_xact(|| {
            pg.query(
                "UPDATE synchdb_copy_work w SET state = 'running', helper = $2::int
                  WHERE (w.name, w.item) = (SELECT name, item FROM synchdb_copy_work
                                             WHERE name = $1 AND state = 'todo'
                                             ORDER BY item LIMIT 1 FOR UPDATE SKIP LOCKED)
                 RETURNING item, snapshot, srcrelid, label, copy_sql, dst_table, array_to_json(dst_cols)::text,
                           frozen, dst_schema, binary_format, then_sql, ddl",
                &[Some(name), Some(&no.to_string())],
            )
        })
        .ctx(|| "claiming an item of the copy work list".into())?;
    let Some(r) = rows.into_iter().next() else {
        return Ok(None);
    };
    let get = |i: usize| r.get(i).cloned().flatten().unwrap_or_default();
    let item: i32 = get(0).parse().unwrap_or(-1);
    let cols: Vec<String> = serde_json::from_str(&get(6)).map_err(|e| {
        WorkerError::Internal(format!("reading a column list of the copy work list: {e}"))
    })?;
    Ok(Some((
        item,
        get(1),
        Item {
            srcrelid: get(2).parse().unwrap_or(0),
            label: get(3),
            copy_sql: get(4),
            table: get(5),
            cols,
            freeze: get(7) == "t",
            schema: get(8),
            binary: get(9) == "t",
            then_sql: r.get(10).cloned().flatten(),
            ddl: get(11) == "t",
        },
    )))
}

/// Copies items of the work list until none is left; the rows copied. `client`
/// is a source connection in the snapshot (opened from `params` when None).
fn work(
    pg: &Pg,
    net: &Net,
    name: &str,
    no: i32,
    conn: &mut Option<CopyConn>,
    params: &ConnParams,
) -> Result<u64, WorkerError> {
    let mut total = 0;
    while let Some((item, snapshot, it)) = claim(pg, name, no)? {
        if pg.should_exit() {
            return Err(WorkerError::Stopped);
        }
        let (schema, label) = (&it.schema, &it.label);
        let r = (|| -> Result<u64, WorkerError> {
            if it.ddl {
                return pg.in_xact(|| -> Result<u64, WorkerError> {
                    pg.exec(&it.copy_sql, &[])
                        .ctx(|| format!("building the {label} ({})", it.copy_sql))?;
                    mark_done(pg, name, item, &it, None)?;
                    Ok(0)
                });
            }
            let c = match conn {
                Some(c) => c.clone(),
                None => {
                    let (p, snap) = (params.clone(), snapshot.clone());
                    let c = net.call(pg, async move { CopyConn::open(&p, &snap).await })??;
                    conn.insert(c).clone()
                }
            };
            pg.in_xact(|| -> Result<u64, WorkerError> {
                if it.freeze {
                    // created in another transaction: emptied in this one, so that
                    // COPY FREEZE may write its rows frozen
                    pg.exec(
                        &format!(
                            "TRUNCATE {}.{}",
                            quote_ident(schema),
                            quote_ident(&it.table)
                        ),
                        &[],
                    )
                    .ctx(|| format!("emptying the staging table of {label}"))?;
                }
                let dest = CopyDest {
                    schema,
                    table: &it.table,
                    cols: &it.cols,
                    freeze: it.freeze,
                    binary: it.binary,
                };
                let rows = copy_stream(
                    pg,
                    net,
                    RowSource::Conn(&c),
                    it.copy_sql.clone(),
                    label,
                    &dest,
                )?;
                mark_done(pg, name, item, &it, Some(rows))?;
                Ok(rows)
            })
        })();
        match r {
            Ok(rows) => total += rows,
            Err(e) => {
                let msg = e.to_string();
                let _ = pg.in_xact(|| {
                    pg.exec(
                        "UPDATE synchdb_copy_work SET state = 'failed', err = $3 WHERE name = $1 AND item = $2::int",
                        &[Some(name), Some(&item.to_string()), Some(&msg)],
                    )
                });
                return Err(e);
            }
        }
    }
    Ok(total)
}

/// Marks `item` done, in the transaction that did its work. A table's then_sql
/// runs here when the item is the table's only one; otherwise the one that
/// finishes the table's last copy item queues it: the table's items are locked
/// first, all of them in one order, so two processes finishing its last two
/// items at once take turns, and the second sees the first's done.
fn mark_done(
    pg: &Pg,
    name: &str,
    item: i32,
    it: &Item,
    rows: Option<u64>,
) -> Result<(), WorkerError> {
    let ctx = || "marking an item of the copy work list done".to_string();
    let (i, rel) = (item.to_string(), it.srcrelid.to_string());
    let mut then_sql = it.then_sql.as_deref().filter(|_| !it.ddl);
    if let Some(sql) = then_sql {
        let items = pg
            .query(
                "SELECT item FROM synchdb_copy_work WHERE name = $1 AND srcrelid = $2::oid ORDER BY item FOR UPDATE",
                &[Some(name), Some(&rel)],
            )
            .ctx(ctx)?;
        if items.len() == 1 {
            // the table's only item: its key is built here, in the transaction
            // that copied its rows. Queued as an item of its own, it cost two
            // transactions more (claim, done), which for 100 tables of 1000
            // rows was a tenth of the copy.
            pg.exec(sql, &[])
                .ctx(|| format!("building the primary key of {} ({sql})", it.label))?;
            then_sql = None;
        }
    }
    pg.exec(
        "UPDATE synchdb_copy_work SET state = 'done', rows = $3::bigint WHERE name = $1 AND item = $2::int",
        &[Some(name), Some(&i), rows.map(|r| r.to_string()).as_deref()],
    )
    .ctx(ctx)?;
    if let Some(sql) = then_sql {
        // numbered after every copy item, and once per table
        pg.exec(
            "INSERT INTO synchdb_copy_work (name, item, srcrelid, snapshot, copy_sql, label, dst_schema, dst_table,
                                            dst_cols, frozen, binary_format, ddl)
             SELECT $1, 1000000 + min(item), $2::oid, min(snapshot), $3, 'primary key of ' || quote_ident(min(dst_table)),
                    min(dst_schema), min(dst_table), '{}', false, false, true
               FROM synchdb_copy_work WHERE name = $1 AND srcrelid = $2::oid
             HAVING bool_and(state = 'done')",
            &[Some(name), Some(&rel), Some(sql)],
        )
        .ctx(ctx)?;
    }
    Ok(())
}

/// A copy helper's life: copies items of connector `name`'s work list until
/// none is left. Its progress counts in the connector's state slot
/// `parent_slot`; its errors are in the work list (which the connector
/// reports) and the server log.
pub fn helper_run(pg: &Pg, parent_slot: i32, name: &str, no: i32) -> i32 {
    state::set_my_slot(parent_slot);
    let r = (|| -> Result<u64, WorkerError> {
        let cfg = crate::worker::load_config(pg, name)?;
        let password =
            crate::secret::source_password(&pg.data_dir(), &cfg).map_err(WorkerError::Config)?;
        let params = crate::source::conn_params(&cfg, &password);
        pg.in_xact(|| crate::worker::session_settings(pg))?;
        let net = Net::start()?;
        let mut conn = None;
        let r = work(pg, &net, name, no, &mut conn, &params);
        if let Some(c) = conn {
            c.close(pg, &net);
        }
        r
    })();
    match r {
        Ok(_) => 0,
        Err(_) if pg.should_exit() => 0,
        Err(e) => {
            pg.log(
                LOG_WARNING,
                &format!("connector {name}: copy helper {no}: {e}"),
            );
            1
        }
    }
}

/// Moves staging table `stage` into place as `p` (inside the snapshot's last
/// transaction): renamed in the staging schema, then moved to its schema; the
/// defaults it was created without are set.
pub fn move_into_place(
    pg: &Pg,
    staged: &Staged,
    stage: &str,
    p: &DestTable,
) -> Result<(), WorkerError> {
    let s = quote_ident(&staged.schema);
    if stage != p.name {
        pg.exec(
            &format!(
                "ALTER TABLE {s}.{} RENAME TO {}",
                quote_ident(stage),
                quote_ident(&p.name)
            ),
            &[],
        )
        .ctx(|| format!("renaming the staging table of {}", p.qualified()))?;
    }
    pg.exec(
        &format!(
            "ALTER TABLE {s}.{} SET SCHEMA {}",
            quote_ident(&p.name),
            quote_ident(&p.schema)
        ),
        &[],
    )
    .ctx(|| format!("moving the staging table of {} into place", p.qualified()))?;
    for c in &p.columns {
        if let (Some(d), None, None) = (&c.default, &c.identity, &c.generated) {
            let sql = format!(
                "ALTER TABLE {} ALTER COLUMN {} SET DEFAULT {d}",
                p.qualified(),
                quote_ident(&c.name)
            );
            pg.exec(&sql, &[])
                .ctx(|| format!("setting a default of {} ({sql})", p.qualified()))?;
        }
    }
    Ok(())
}

/// The end of a parallel copy, in the snapshot's last transaction: the staging
/// schema (empty by now) and the work list go.
pub fn finish(pg: &Pg, name: &str, staged: &Staged) -> Result<(), WorkerError> {
    drop_leftovers(pg, name, &staged.schema)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_ranges_cover_the_table_once() {
        let t = SourceTable {
            oid: 1,
            schema: "s".into(),
            name: "t".into(),
            columns: vec![],
            primary_key: vec![],
            pk_include: vec![],
            replica_identity: 'd',
            identity_index_name: String::new(),
            identity_index: vec![],
            partitioned_by: None,
            partition_of: None,
        };
        assert_eq!(copy_out_sql(&t, None, false), "COPY \"s\".\"t\" TO STDOUT");
        assert_eq!(
            copy_out_sql(&t, None, true),
            "COPY \"s\".\"t\" TO STDOUT (FORMAT binary)"
        );
        assert_eq!(
            copy_out_sql(&t, Some((0, Some(10))), false),
            "COPY (SELECT  FROM \"s\".\"t\" WHERE ctid < '(10,0)'::tid) TO STDOUT"
        );
        assert_eq!(
            copy_out_sql(&t, Some((10, None)), false),
            "COPY (SELECT  FROM \"s\".\"t\" WHERE ctid >= '(10,0)'::tid) TO STDOUT"
        );
    }
}
