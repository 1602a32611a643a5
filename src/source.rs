//! SQL connections to the source (tokio-postgres) and what we read from its catalog:
//! the tables to replicate, their columns, types, NOT NULL, constant defaults and
//! primary keys. Runs on the network thread.

use crate::config::{quote_ident, ConnectorConfig, TableSel};
use crate::error::WorkerError;
use crate::replconn::ConnParams;
use crate::tls::{self, SslMode};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_postgres::{Client, NoTls};

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SourceColumn {
    pub name: String,
    /// The type as the destination should declare it.
    pub type_sql: String,
    pub not_null: bool,
    /// A default that is a constant, as SQL text.
    pub default: Option<String>,
    /// The type as the source declares it (format_type), for synchdb_att_view.
    pub source_type: String,
    /// The source type without modifier, for `type|serial` datatype rules.
    pub base_type: String,
    /// An identity column, or one whose default is nextval().
    pub serial: bool,
    /// The replicated user type at the bottom of the column's type (0: none), and
    /// whether the column is an array of it.
    pub udt: u32,
    pub udt_array: bool,
    /// GENERATED ALWAYS AS (expression): the destination computes it.
    pub generated: Option<Generated>,
    /// GENERATED { ALWAYS | BY DEFAULT } AS IDENTITY with its sequence options.
    pub identity: Option<Identity>,
    /// The extension that provides the column's type on the source, if one does.
    pub type_extension: Option<String>,
    /// A collation other than its type's default (`pg_catalog."C"`).
    pub collation: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generated {
    pub expr: String,
    /// PostgreSQL 18's virtual generated column (else stored).
    pub virtual_: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub always: bool,
    /// `START WITH ... CYCLE`, the identity sequence's options.
    pub options: String,
}

impl SourceColumn {
    /// Whether the source's rows carry this column (COPY and logical decoding
    /// leave generated columns to whoever stores the row).
    pub fn copied(&self) -> bool {
        self.generated.is_none()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SourceTable {
    pub oid: u32,
    pub schema: String,
    pub name: String,
    pub columns: Vec<SourceColumn>,
    /// Key columns of the primary key (never its INCLUDE columns).
    pub primary_key: Vec<String>,
    /// The primary key's INCLUDE columns.
    pub pk_include: Vec<String>,
    /// pg_class.relreplident: 'd' default, 'f' full, 'i' index, 'n' nothing.
    pub replica_identity: char,
    /// The replica identity index (REPLICA IDENTITY USING INDEX, not the primary
    /// key): its name and key columns.
    pub identity_index_name: String,
    pub identity_index: Vec<String>,
    /// A partitioned table: its partition key (pg_get_partkeydef, e.g. `RANGE (d)`).
    /// It holds no rows of its own: its partitions are copied.
    pub partitioned_by: Option<String>,
    /// A partition: its parent's oid and its bound (`FOR VALUES ...`, `DEFAULT`).
    pub partition_of: Option<(u32, String)>,
}

impl SourceTable {
    /// Whether the table stores rows (a partitioned table's are in its partitions).
    pub fn has_rows(&self) -> bool {
        self.partitioned_by.is_none()
    }

    pub fn qualified(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.name))
    }

    /// The columns the source's rows carry, for COPY.
    pub fn column_list(&self) -> String {
        self.columns
            .iter()
            .filter(|c| c.copied())
            .map(|c| quote_ident(&c.name))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

pub fn conn_params(cfg: &ConnectorConfig, password: &str) -> ConnParams {
    ConnParams {
        host: cfg.hostname.clone(),
        port: cfg.port,
        user: cfg.user.clone(),
        password: password.to_string(),
        dbname: cfg.srcdb.clone(),
        application_name: format!("synchdb_{}", cfg.name),
        connect_timeout: Duration::from_secs(10),
        tls: cfg.ssl.clone(),
        password_required: cfg.password_required,
        replication: true,
    }
}

fn target(p: &ConnParams) -> String {
    format!("{}:{}", p.host, p.port)
}

/// An error of a SQL connection to the source, and whether it is transient
/// (the source unreachable or gone for now: the worker connects again).
#[derive(Debug, Clone)]
pub struct SourceError {
    pub text: String,
    pub transient: bool,
}

impl std::fmt::Display for SourceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl From<SourceError> for String {
    fn from(e: SourceError) -> String {
        e.text
    }
}

impl From<SourceError> for WorkerError {
    fn from(e: SourceError) -> WorkerError {
        if e.transient {
            WorkerError::Transient(e.text)
        } else {
            WorkerError::Source(e.text)
        }
    }
}

/// Whether a tokio-postgres error says the source is unavailable for now: the
/// connection closed or failed on the network, or a server error whose
/// SQLSTATE says so (see `error::transient_sqlstate`).
pub fn is_transient(e: &tokio_postgres::Error) -> bool {
    if let Some(db) = e.as_db_error() {
        return crate::error::transient_sqlstate(db.code().code());
    }
    if e.is_closed() {
        return true;
    }
    let mut src = std::error::Error::source(e);
    while let Some(inner) = src {
        if inner.is::<std::io::Error>() {
            return true;
        }
        src = inner.source();
    }
    // tokio-postgres' own connect timeout has no cause
    e.to_string().contains("timeout")
}

/// `pg_error_text` with its kind.
pub fn source_error(p: &ConnParams, e: &tokio_postgres::Error) -> SourceError {
    SourceError {
        text: pg_error_text(p, e),
        transient: is_transient(e),
    }
}

impl SourceError {
    /// The error as the worker reports it, after what it was doing.
    pub fn within(self, what: &str) -> WorkerError {
        SourceError {
            text: format!("{what}: {}", self.text),
            ..self
        }
        .into()
    }
}

/// The outcome of reads on `client`: an error is transient when the connection
/// is gone (the source went away while we asked), else it is the source's answer.
pub fn classify_read<T>(client: &Client, r: Result<T, String>) -> Result<T, SourceError> {
    r.map_err(|text| SourceError {
        transient: client.is_closed(),
        text,
    })
}

/// Text of a tokio-postgres error: the server's own message when there is one.
pub fn pg_error_text(p: &ConnParams, e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut s = format!("{}: {}", db.severity(), db.message());
        if let Some(d) = db.detail() {
            s.push_str(&format!(" DETAIL: {d}"));
        }
        if let Some(h) = db.hint() {
            s.push_str(&format!(" HINT: {h}"));
        }
        return s;
    }
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(inner) = src {
        s.push_str(&format!(": {inner}"));
        src = inner.source();
    }
    format!("could not connect to source server at {}: {s}", target(p))
}

/// Runs one query on a short connection of its own and closes it politely;
/// errors are the text of `pg_error_text`.
pub async fn query_once(
    p: &ConnParams,
    sql: &str,
    args: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<Vec<tokio_postgres::Row>, SourceError> {
    let (client, driver) = connect_with_driver(p).await?;
    let rows = client
        .query(sql, args)
        .await
        .map_err(|e| source_error(p, &e));
    close(client, driver).await;
    rows
}

/// Runs `work` on a short connection of its own and closes it politely (the
/// driver ends once the client is dropped); a failure of `work` is transient
/// when the connection died under it (`classify_read`).
pub async fn with_client<T>(
    p: &ConnParams,
    work: impl AsyncFnOnce(&Client) -> Result<T, String>,
) -> Result<T, SourceError> {
    let (client, driver) = connect_with_driver(p).await?;
    let r = work(&client).await;
    let r = classify_read(&client, r);
    close(client, driver).await;
    r
}

/// Closes a connection politely: the driver ends (Terminate sent) once the
/// client is dropped; waited for 2 s at most.
async fn close(client: Client, driver: JoinHandle<()>) {
    drop(client);
    let _ = tokio::time::timeout(Duration::from_secs(2), driver).await;
}

/// A source connection kept open between uses (the applier's periodic looks at
/// the source), with its driver; opened at first use, again after a failure.
pub type Kept = std::sync::Arc<tokio::sync::Mutex<Option<(Client, JoinHandle<()>)>>>;

/// `with_client` on the kept connection: no connection set-up (TLS, password
/// exchange) per use, which on a busy source costs more than the query.
pub async fn with_kept<T>(
    kept: &Kept,
    p: &ConnParams,
    work: impl AsyncFnOnce(&Client) -> Result<T, String>,
) -> Result<T, SourceError> {
    let mut slot = kept.lock().await;
    if slot.as_ref().is_some_and(|(c, _)| c.is_closed()) {
        *slot = None;
    }
    if slot.is_none() {
        *slot = Some(connect_with_driver(p).await?);
    }
    let Some((client, _)) = slot.as_ref() else {
        return Err(SourceError {
            text: "no connection to the source".into(),
            transient: true,
        });
    };
    let r = work(client).await;
    let r = classify_read(client, r);
    if r.is_err() {
        // a fresh connection next time; this one closes politely
        if let Some((c, driver)) = slot.take() {
            close(c, driver).await;
        }
    }
    r
}

/// Closes the kept connection politely, if it is open.
pub async fn close_kept(kept: &Kept) {
    if let Some((c, driver)) = kept.lock().await.take() {
        close(c, driver).await;
    }
}

/// Opens a regular SQL connection; its driver runs as a task on the current runtime.
/// TLS as the connector's ssl_mode says, with libpq's semantics (see `tls`).
pub async fn connect(p: &ConnParams) -> Result<Client, SourceError> {
    connect_with_driver(p).await.map(|(client, _)| client)
}

/// `connect`, also returning the driver task: it ends once the client is dropped
/// and the connection closed politely (Terminate; over TLS also close_notify, without
/// which the server logs "could not receive data from client"). Await it before a
/// runtime that is about to go away is dropped.
pub async fn connect_with_driver(p: &ConnParams) -> Result<(Client, JoinHandle<()>), SourceError> {
    let mut cfg = tokio_postgres::Config::new();
    cfg.host(&p.host)
        .port(p.port)
        .user(&p.user)
        .password(p.password.as_bytes())
        .dbname(&p.dbname)
        .application_name(&p.application_name)
        .options(crate::replconn::SESSION_OPTIONS)
        .connect_timeout(p.connect_timeout);
    let mode = p.tls.mode_for(&p.host);
    if mode == SslMode::Disable {
        return connect_plain(p, &mut cfg).await;
    }
    let target = p.target();
    let ssl_error = match connect_ssl(p, &mut cfg, mode).await {
        Ok(client) => return Ok(client),
        Err((e, retry)) if retry && mode == SslMode::Prefer => e,
        Err((e, _)) => return Err(e),
    };
    // libpq's prefer: a failed SSL attempt is followed by one without SSL
    connect_plain(p, &mut cfg).await.map_err(|e| {
        let lead = format!("could not connect to source server at {target}: ");
        let now = e.text.strip_prefix(&lead).unwrap_or(&e.text);
        let before = ssl_error
            .text
            .strip_prefix(&format!(
                "SSL connection to source server at {target} failed: "
            ))
            .unwrap_or(&ssl_error.text);
        if now == before {
            e.clone()
        } else {
            SourceError {
                text: format!(
                    "{lead}{now}; an SSL connection was tried first and failed: {before}"
                ),
                transient: e.transient,
            }
        }
    })
}

async fn connect_plain(
    p: &ConnParams,
    cfg: &mut tokio_postgres::Config,
) -> Result<(Client, JoinHandle<()>), SourceError> {
    cfg.ssl_mode(tokio_postgres::config::SslMode::Disable);
    let (client, conn) = cfg.connect(NoTls).await.map_err(|e| source_error(p, &e))?;
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok((client, driver))
}

/// One connection attempt with SSL. Err((message, whether libpq's prefer would
/// retry without SSL)).
async fn connect_ssl(
    p: &ConnParams,
    cfg: &mut tokio_postgres::Config,
    mode: SslMode,
) -> Result<(Client, JoinHandle<()>), (SourceError, bool)> {
    let target = p.target();
    // SSL set-up and handshake failures are the configuration's (definite)
    let definite = |text: String| SourceError {
        text,
        transient: false,
    };
    let connector = tls::Connector::new(&p.tls, &p.host)
        .map_err(|m| (definite(tls::ssl_failed(&target, &m)), true))?;
    let attempt = Arc::new(tls::Attempt::default());
    cfg.ssl_mode(if mode.requires_tls() {
        tokio_postgres::config::SslMode::Require
    } else {
        tokio_postgres::config::SslMode::Prefer
    });
    let make = tls::MakeTls::new(Arc::new(connector), attempt.clone());
    match cfg.connect(make).await {
        Ok((client, conn)) => {
            let driver = tokio::spawn(async move {
                let _ = conn.await;
            });
            Ok((client, driver))
        }
        Err(e) => {
            if let Some(m) = attempt.error().or_else(|| tls::tls_failure_in(&e)) {
                return Err((definite(tls::ssl_failed(&target, &m)), true));
            }
            // tokio-postgres' words for an 'N' answer to the SSLRequest (in the
            // error's cause, which pg_error_text includes)
            let text = pg_error_text(p, &e);
            if !attempt.started()
                && e.as_db_error().is_none()
                && text.contains("server does not support TLS")
            {
                return Err((
                    definite(format!(
                        "could not connect to source server at {target}: {}",
                        tls::no_ssl_reason(mode)
                    )),
                    false,
                ));
            }
            // a server error after a successful handshake: libpq retries prefer
            Err((
                SourceError {
                    text,
                    transient: is_transient(&e),
                },
                attempt.started() && e.as_db_error().is_some(),
            ))
        }
    }
}

/// The tables the connector replicates, with their columns and keys, read in the
/// current transaction (the exported snapshot when called from the snapshot).
///
/// The session's search_path becomes the replicated schemas, so that expressions
/// the source deparses (defaults, generated columns, domain checks) name the
/// replicated types without a schema: the destination runs them with its own
/// schemas first on its search_path, where the copies of those types are.
pub async fn read_catalog(
    client: &Client,
    cfg: &ConnectorConfig,
) -> Result<Vec<SourceTable>, String> {
    let (tables, problems) = read_catalog_checked(client, cfg).await?;
    if problems.is_empty() {
        Ok(tables)
    } else {
        Err(problems.join("; "))
    }
}

/// `read_catalog`, with what is wrong with the `table` option as a list of
/// problems beside the tables that are fine (the caller reports them all at once).
pub async fn read_catalog_checked(
    client: &Client,
    cfg: &ConnectorConfig,
) -> Result<(Vec<SourceTable>, Vec<String>), String> {
    let mut problems: Vec<String> = Vec::new();
    let err = catalog_err;
    let schemas = searched_schemas(cfg);
    let missing = client
        .query(
            "SELECT s FROM unnest($1::text[]) WITH ORDINALITY AS u(s, i)
              WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_namespace n WHERE n.nspname = u.s)
              ORDER BY i",
            &[&cfg.srcschemas],
        )
        .await
        .map_err(err)?;
    if !missing.is_empty() {
        let names: Vec<String> = missing
            .iter()
            .map(|r| format!("\"{}\"", r.get::<_, String>(0)))
            .collect();
        return Err(format!(
            "schema {} (srcschema of connector \"{}\") does not exist in database \"{}\" on the source; \
             fix srcschema with synchdb_del_conninfo and synchdb_add_conninfo, or edit synchdb_conninfo.data",
            names.join(", "),
            cfg.name,
            cfg.srcdb
        ));
    }
    set_search_path(client, &schemas).await.map_err(err)?;
    let mut tables = list_tables(client, cfg, &mut problems).await?;
    if tables.is_empty() {
        return Ok((tables, problems));
    }
    describe_tables(client, &mut tables).await?;
    Ok((tables, problems))
}

/// The tables the connector's selection names on the source now (without their
/// columns), partitions of selected partitioned tables included; what is wrong
/// with the `table` option goes to `problems`.
pub async fn list_tables(
    client: &Client,
    cfg: &ConnectorConfig,
    problems: &mut Vec<String>,
) -> Result<Vec<SourceTable>, String> {
    let err = catalog_err;
    let schemas = searched_schemas(cfg);
    let rows = client
        .query(
            "SELECT c.oid, n.nspname::text, c.relname::text,
                    CASE WHEN c.relkind = 'p' THEN pg_get_partkeydef(c.oid) END,
                    (SELECT i.inhparent FROM pg_inherits i WHERE i.inhrelid = c.oid AND c.relispartition),
                    CASE WHEN c.relispartition THEN pg_get_expr(c.relpartbound, c.oid) END
               FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE c.relkind IN ('r', 'p') AND c.relpersistence = 'p'
                AND n.nspname = ANY($1::text[])
                AND NOT EXISTS (SELECT 1 FROM pg_depend d
                                 WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                                   AND d.deptype = 'e')
              ORDER BY 2, 3",
            &[&schemas],
        )
        .await
        .map_err(err)?;
    let mut tables: Vec<SourceTable> = Vec::with_capacity(rows.len());
    for r in &rows {
        let parent: Option<u32> = r.try_get(4).map_err(err)?;
        let bound: Option<String> = r.try_get(5).map_err(err)?;
        tables.push(SourceTable {
            oid: r.try_get(0).map_err(err)?,
            schema: r.try_get(1).map_err(err)?,
            name: r.try_get(2).map_err(err)?,
            replica_identity: 'd',
            partitioned_by: r.try_get(3).map_err(err)?,
            partition_of: parent.zip(bound),
            ..Default::default()
        });
    }

    if !cfg.tables.is_empty() {
        let all = tables.clone();
        tables = select_tables(client, cfg, tables, problems).await?;
        // a partitioned table comes with all its partitions, at every level
        loop {
            let chosen: HashSet<u32> = tables.iter().map(|t| t.oid).collect();
            let more: Vec<SourceTable> = all
                .iter()
                .filter(|t| !chosen.contains(&t.oid))
                .filter(|t| {
                    t.partition_of
                        .as_ref()
                        .is_some_and(|(p, _)| chosen.contains(p))
                })
                .cloned()
                .collect();
            if more.is_empty() {
                break;
            }
            tables.extend(more);
        }
    }
    // A partition whose parent is not replicated is an ordinary table here.
    let chosen: HashSet<u32> = tables.iter().map(|t| t.oid).collect();
    for t in &mut tables {
        if t.partition_of
            .as_ref()
            .is_some_and(|(p, _)| !chosen.contains(p))
        {
            t.partition_of = None;
        }
    }
    Ok(tables)
}

/// Fills in the columns, keys and replica identity of `tables`, as the current
/// transaction sees the source catalog.
async fn describe_tables(client: &Client, tables: &mut [SourceTable]) -> Result<(), String> {
    let err = catalog_err;
    let oids = format!(
        "'{{{}}}'::oid[]",
        tables
            .iter()
            .map(|t| t.oid.to_string())
            .collect::<Vec<_>>()
            .join(",")
    );
    // A default is kept only when it is constant: PostgreSQL stores defaults
    // unfolded, so we accept expressions that call only immutable functions and
    // read no column, parameter, subquery or session value (now(), nextval() and
    // CURRENT_USER are left out). Generated columns come with their expression.
    let cols = client
        .query(
            &format!(
                "SELECT a.attrelid, a.attname::text,
                        format_type(a.atttypid, a.atttypmod),
                        a.attnotnull,
                        CASE WHEN a.attgenerated = '' AND d.adbin IS NOT NULL AND {CONSTANT_DEFAULT}
                             THEN pg_get_expr(d.adbin, d.adrelid) END,
                        format_type(a.atttypid, a.atttypmod),
                        format_type(a.atttypid, NULL),
                        {SERIAL_COLUMN},
                        {udt},
                        (SELECT x.typtype = 'b' AND x.typelem <> 0 AND x.typlen = -1
                           FROM pg_type x WHERE x.oid = a.atttypid),
                        a.attgenerated::text,
                        CASE WHEN a.attgenerated <> '' THEN pg_get_expr(d.adbin, d.adrelid) END,
                        a.attidentity::text,
                        (SELECT format('START WITH %s INCREMENT BY %s MINVALUE %s MAXVALUE %s CACHE %s %s',
                                       s.seqstart, s.seqincrement, s.seqmin, s.seqmax, s.seqcache,
                                       CASE WHEN s.seqcycle THEN 'CYCLE' ELSE 'NO CYCLE' END)
                           FROM pg_depend dp JOIN pg_sequence s ON s.seqrelid = dp.objid
                          WHERE a.attidentity <> '' AND dp.classid = 'pg_class'::regclass
                            AND dp.refclassid = 'pg_class'::regclass AND dp.refobjid = a.attrelid
                            AND dp.refobjsubid = a.attnum AND dp.deptype = 'i' LIMIT 1),
                        (SELECT e.extname::text
                           FROM pg_type bt
                           JOIN pg_depend de ON de.classid = 'pg_type'::regclass AND de.deptype = 'e'
                                            AND de.objid = CASE WHEN bt.typtype = 'b' AND bt.typelem <> 0 AND bt.typlen = -1
                                                                THEN bt.typelem ELSE bt.oid END
                           JOIN pg_extension e ON e.oid = de.refobjid
                          WHERE bt.oid = a.atttypid LIMIT 1),
                        (SELECT format('%I.%I', cn.nspname, co.collname)
                           FROM pg_type ct, pg_collation co JOIN pg_namespace cn ON cn.oid = co.collnamespace
                          WHERE ct.oid = a.atttypid AND co.oid = a.attcollation
                            AND a.attcollation <> 0 AND a.attcollation <> ct.typcollation)
                   FROM pg_attribute a
                   LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
                  WHERE a.attrelid = ANY({oids}) AND a.attnum > 0 AND NOT a.attisdropped
                  ORDER BY a.attrelid, a.attnum",
                udt = crate::usertypes::column_udt_sql(),
            ),
            &[],
        )
        .await
        .map_err(err)?;
    // Key columns come from indnkeyatts: the INCLUDE columns that follow them in
    // indkey are carried by the index, not part of the key.
    let keys = client
        .query(
            &format!(
                "SELECT i.indrelid, a.attname::text, i.indisprimary, k.ord <= i.indnkeyatts,
                        (SELECT ic.relname::text FROM pg_class ic WHERE ic.oid = i.indexrelid)
                   FROM pg_index i
                   CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
                   JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
                  WHERE (i.indisprimary OR i.indisreplident) AND i.indrelid = ANY({oids})
                  ORDER BY i.indrelid, i.indisprimary DESC, k.ord"
            ),
            &[],
        )
        .await
        .map_err(err)?;
    let idents = client
        .query(
            &format!(
                "SELECT c.oid, c.relreplident::text FROM pg_class c WHERE c.oid = ANY({oids})"
            ),
            &[],
        )
        .await
        .map_err(err)?;
    let index: HashMap<u32, usize> = tables.iter().enumerate().map(|(i, t)| (t.oid, i)).collect();
    for r in &cols {
        if let Some(&i) = index.get(&r.try_get::<_, u32>(0).map_err(err)?) {
            let gen: String = r.try_get(10).map_err(err)?;
            let gen_expr: Option<String> = r.try_get(11).map_err(err)?;
            let ident: String = r.try_get(12).map_err(err)?;
            let ident_opts: Option<String> = r.try_get(13).map_err(err)?;
            tables[i].columns.push(SourceColumn {
                name: r.try_get(1).map_err(err)?,
                type_sql: r.try_get(2).map_err(err)?,
                not_null: r.try_get(3).map_err(err)?,
                default: r.try_get(4).map_err(err)?,
                source_type: r.try_get(5).map_err(err)?,
                base_type: r.try_get(6).map_err(err)?,
                serial: r.try_get(7).map_err(err)?,
                udt: r.try_get::<_, Option<u32>>(8).map_err(err)?.unwrap_or(0),
                udt_array: r
                    .try_get::<_, Option<bool>>(9)
                    .map_err(err)?
                    .unwrap_or(false),
                generated: gen_expr.filter(|_| !gen.is_empty()).map(|expr| Generated {
                    expr,
                    virtual_: gen == "v",
                }),
                identity: if ident.is_empty() {
                    None
                } else {
                    Some(Identity {
                        always: ident == "a",
                        options: ident_opts.unwrap_or_default(),
                    })
                },
                type_extension: r.try_get(14).map_err(err)?,
                collation: r.try_get(15).map_err(err)?,
            });
        }
    }
    for r in &keys {
        if let Some(&i) = index.get(&r.try_get::<_, u32>(0).map_err(err)?) {
            let col: String = r.try_get(1).map_err(err)?;
            let primary: bool = r.try_get(2).map_err(err)?;
            let is_key: bool = r.try_get(3).map_err(err)?;
            let t = &mut tables[i];
            match (primary, is_key) {
                (true, true) => t.primary_key.push(col),
                (true, false) => t.pk_include.push(col),
                (false, true) => {
                    t.identity_index_name = r.try_get(4).map_err(err)?;
                    t.identity_index.push(col)
                }
                (false, false) => {}
            }
        }
    }
    for r in &idents {
        if let Some(&i) = index.get(&r.try_get::<_, u32>(0).map_err(err)?) {
            let ri: String = r.try_get(1).map_err(err)?;
            tables[i].replica_identity = ri.chars().next().unwrap_or('d');
        }
    }
    for t in tables.iter_mut() {
        // a primary key that is also the identity index was read twice
        if t.replica_identity != 'i' {
            t.identity_index.clear();
        }
    }
    Ok(())
}

/// The source's description of one table (by oid) as its catalog has it now,
/// with the search_path of `read_catalog`; None if it no longer exists.
pub async fn describe_table(
    client: &Client,
    cfg: &ConnectorConfig,
    oid: u32,
) -> Result<Option<SourceTable>, String> {
    let err = catalog_err;
    set_search_path(client, &searched_schemas(cfg))
        .await
        .map_err(err)?;
    let rows = client
        .query(
            "SELECT n.nspname::text, c.relname::text,
                    CASE WHEN c.relkind = 'p' THEN pg_get_partkeydef(c.oid) END,
                    (SELECT i.inhparent FROM pg_inherits i WHERE i.inhrelid = c.oid AND c.relispartition),
                    CASE WHEN c.relispartition THEN pg_get_expr(c.relpartbound, c.oid) END
               FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE c.oid = $1::oid",
            &[&oid],
        )
        .await
        .map_err(err)?;
    let Some(r) = rows.first() else {
        return Ok(None);
    };
    let parent: Option<u32> = r.try_get(3).map_err(err)?;
    let bound: Option<String> = r.try_get(4).map_err(err)?;
    let mut t = [SourceTable {
        oid,
        schema: r.try_get(0).map_err(err)?,
        name: r.try_get(1).map_err(err)?,
        replica_identity: 'd',
        partitioned_by: r.try_get(2).map_err(err)?,
        partition_of: parent.zip(bound),
        ..Default::default()
    }];
    describe_tables(client, &mut t).await?;
    let [t] = t;
    Ok(Some(t))
}

/// Makes `schemas` the session's search_path, so that what the source deparses
/// names objects of the replicated schemas without their schema.
pub async fn set_search_path(
    client: &Client,
    schemas: &[String],
) -> Result<(), tokio_postgres::Error> {
    let path: Vec<String> = schemas.iter().map(|s| quote_ident(s)).collect();
    client
        .execute(
            "SELECT pg_catalog.set_config('search_path', $1, false)",
            &[&path.join(", ")],
        )
        .await
        .map(|_| ())
}

/// Tables of the replicated schemas that are not replicated because their changes
/// are not in the WAL (unlogged), with why: for the log.
pub async fn left_out(client: &Client, cfg: &ConnectorConfig) -> Result<Vec<String>, String> {
    Ok(left_out_in(client, &cfg.srcschemas)
        .await?
        .iter()
        .map(|(s, t)| format!("{}.{}", quote_ident(s), quote_ident(t)))
        .collect())
}

/// The unlogged tables of `schemas`, as (schema, table).
async fn left_out_in(client: &Client, schemas: &[String]) -> Result<Vec<(String, String)>, String> {
    let rows = client
        .query(
            "SELECT n.nspname::text, c.relname::text
               FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE c.relkind IN ('r', 'p') AND c.relpersistence = 'u' AND n.nspname = ANY($1::text[])
              ORDER BY 1, 2",
            &[&schemas],
        )
        .await
        .map_err(|e| format!("reading the source catalog failed: {e}"))?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// A failed catalog query on the source, with the source's own message.
pub fn catalog_err(e: tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("reading the source catalog failed: {}", db.message()),
        None => format!("reading the source catalog failed: {e}"),
    }
}

/// Whether the default in pg_attrdef `d` is constant: PostgreSQL stores defaults
/// unfolded, so we accept expressions that call only immutable functions and read
/// no column, parameter, subquery or session value (now(), nextval() and
/// CURRENT_USER are not). Constant defaults go into CREATE TABLE; the others are
/// set after the rows (see `objects`).
pub const CONSTANT_DEFAULT: &str =
    "(d.adbin::text !~ '\\{(VAR|PARAM|SUBLINK|SQLVALUEFUNCTION|NEXTVALUEEXPR|CURRENTOFEXPR) '
      AND NOT EXISTS (
          SELECT 1 FROM regexp_matches(d.adbin::text, ':(?:funcid|opfuncid) (\\d+)', 'g') AS f(m)
          JOIN pg_proc p ON p.oid = f.m[1]::oid
         WHERE p.provolatile <> 'i'))";

/// Whether a source column is serial (an identity column, or one whose default is
/// nextval()), over pg_attribute `a` LEFT JOIN pg_attrdef `d`: what `type|true`
/// datatype rules match.
const SERIAL_COLUMN: &str =
    "(a.attidentity <> '' OR coalesce(pg_get_expr(d.adbin, d.adrelid) LIKE 'nextval(%', false))";

/// The serial columns of source relation `oid`, as its catalog has them now.
pub async fn serial_columns(p: &ConnParams, oid: u32) -> Result<Vec<String>, SourceError> {
    let rows = query_once(
        p,
        &format!(
            "SELECT a.attname::text FROM pg_catalog.pg_attribute a
               LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
              WHERE a.attrelid = $1::oid AND a.attnum > 0 AND NOT a.attisdropped AND {SERIAL_COLUMN}"
        ),
        &[&oid],
    )
    .await?;
    Ok(rows
        .iter()
        .filter_map(|r| r.get::<_, Option<String>>(0))
        .collect())
}

/// The source schemas to look in: `srcschema`, plus any schema an exact `table`
/// entry names.
fn searched_schemas(cfg: &ConnectorConfig) -> Vec<String> {
    let mut out = cfg.srcschemas.clone();
    for sel in &cfg.tables {
        if let TableSel::Exact(s, _) = sel {
            if !out.contains(s) {
                out.push(s.clone());
            }
        }
    }
    out
}

/// Applies the `table` option to the source's tables, in the option's order: an
/// exact entry must exist; a pattern (a PostgreSQL regular expression, matched
/// whole against `schema.table` by the source itself) must match at least one
/// table of the source schemas. Entries that fail are all returned as problems
/// (with what to do), not only the first.
async fn select_tables(
    client: &Client,
    cfg: &ConnectorConfig,
    all: Vec<SourceTable>,
    problems: &mut Vec<String>,
) -> Result<Vec<SourceTable>, String> {
    let mut chosen: Vec<SourceTable> = Vec::new();
    let push = |chosen: &mut Vec<SourceTable>, t: &SourceTable| {
        if !chosen.iter().any(|c| c.oid == t.oid) {
            chosen.push(t.clone());
        }
    };
    let mut unlogged: Option<Vec<(String, String)>> = None;
    for sel in &cfg.tables {
        match sel {
            TableSel::Exact(s, t) => match all.iter().find(|x| &x.schema == s && &x.name == t) {
                Some(x) => push(&mut chosen, x),
                None => {
                    if unlogged.is_none() {
                        unlogged = Some(left_out_in(client, &searched_schemas(cfg)).await?);
                    }
                    if unlogged
                        .as_ref()
                        .is_some_and(|u| u.iter().any(|(us, ut)| us == s && ut == t))
                    {
                        problems.push(format!(
                            "table \"{s}.{t}\" is unlogged: its changes are not written to the WAL, so logical \
                             replication cannot see them; ALTER TABLE ... SET LOGGED on the source, or leave it out of \
                             the \"table\" option"
                        ));
                    } else {
                        problems.push(format!(
                            "table \"{s}.{t}\" does not exist in database \"{}\" on the source; \
                             fix the \"table\" option of connector \"{}\"",
                            cfg.srcdb, cfg.name
                        ));
                    }
                }
            },
            TableSel::Pattern(p) => {
                let names: Vec<String> = all
                    .iter()
                    .filter(|x| cfg.srcschemas.contains(&x.schema))
                    .map(|x| format!("{}.{}", x.schema, x.name))
                    .collect();
                let rows = match match_pattern(client, &names, p).await {
                    Ok(r) => r,
                    Err(e) => {
                        problems.push(format!(
                            "table pattern \"{p}\" of connector \"{}\": {e}",
                            cfg.name
                        ));
                        continue;
                    }
                };
                if rows.is_empty() {
                    problems.push(format!(
                        "table pattern \"{p}\" of connector \"{}\" matches no table in schema(s) {} of database \"{}\"",
                        cfg.name,
                        cfg.srcschemas.join(", "),
                        cfg.srcdb
                    ));
                }
                for n in rows {
                    if let Some(x) = all.iter().find(|x| format!("{}.{}", x.schema, x.name) == n) {
                        push(&mut chosen, x);
                    }
                }
            }
        }
    }
    Ok(chosen)
}

/// The names among `names` that a PostgreSQL regular expression matches whole,
/// in order; the source evaluates it, so its syntax is exactly PostgreSQL's.
async fn match_pattern(client: &Client, names: &[String], p: &str) -> Result<Vec<String>, String> {
    let rows = client
        .query(
            "SELECT n FROM unnest($1::text[]) WITH ORDINALITY AS u(n, i) WHERE n ~ ('^(?:' || $2 || ')$') ORDER BY i",
            &[&names, &p],
        )
        .await
        .map_err(|e| match e.as_db_error() {
            Some(db) => db.message().to_string(),
            None => e.to_string(),
        })?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// The oids of the tables `snapshottable` names, among the connector's `tables`;
/// empty when the option is not set (meaning all of them). An entry that names no
/// replicated table is an error naming it.
pub async fn select_snapshot_tables(
    client: &Client,
    cfg: &ConnectorConfig,
    tables: &[SourceTable],
) -> Result<Vec<u32>, String> {
    let mut out: Vec<u32> = Vec::new();
    let names: Vec<String> = tables
        .iter()
        .map(|x| format!("{}.{}", x.schema, x.name))
        .collect();
    for sel in &cfg.snapshot_tables {
        let found: Vec<u32> = match sel {
            TableSel::Exact(s, t) => {
                let f: Vec<u32> = tables
                    .iter()
                    .filter(|x| &x.schema == s && &x.name == t)
                    .map(|x| x.oid)
                    .collect();
                if f.is_empty() {
                    return Err(format!(
                        "snapshottable names table \"{s}.{t}\", which connector \"{}\" does not replicate; \
                         snapshottable must name tables of the \"table\" option",
                        cfg.name
                    ));
                }
                f
            }
            TableSel::Pattern(p) => {
                let matched = match_pattern(client, &names, p).await.map_err(|e| {
                    format!(
                        "snapshottable pattern \"{p}\" of connector \"{}\": {e}",
                        cfg.name
                    )
                })?;
                if matched.is_empty() {
                    return Err(format!(
                        "snapshottable pattern \"{p}\" of connector \"{}\" matches none of the tables it replicates",
                        cfg.name
                    ));
                }
                tables
                    .iter()
                    .filter(|x| matched.contains(&format!("{}.{}", x.schema, x.name)))
                    .map(|x| x.oid)
                    .collect()
            }
        };
        for oid in found {
            if !out.contains(&oid) {
                out.push(oid);
            }
        }
    }
    Ok(out)
}
