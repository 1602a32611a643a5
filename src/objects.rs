//! The schema objects of the replicated tables besides their columns and primary
//! key: secondary indexes, unique / check / exclusion constraints, foreign keys,
//! defaults that are not constant, comments, and the sequences the tables use.
//! Read from the source catalog in the snapshot (or, for a table CDC creates, as
//! the catalog is then) and built on the destination after the rows, each on its
//! own (a subtransaction), so that one that cannot be built (an access method or
//! operator class the destination lacks) is reported and the rest go on. What
//! was built, and what failed with its error, is in `synchdb_objects` (and the
//! view `synchdb_object_view`).

use crate::config::{quote_ident, quote_literal};
use crate::error::{DestContext, WorkerError};
use crate::objmap::{DestTable, Rules};
use crate::pg::Pg;
use std::collections::HashMap;
use tokio_postgres::Client;

/// A secondary index: `CREATE [UNIQUE] INDEX name ON <table> USING <rest>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexDef {
    pub name: String,
    pub unique: bool,
    /// What follows `USING ` in pg_get_indexdef: the access method, the key
    /// columns with their operator classes, INCLUDE, NULLS NOT DISTINCT, WITH,
    /// WHERE (None: the definition did not read as expected; reported).
    pub rest: Option<String>,
    /// The source's definition, for messages.
    pub source_def: String,
    /// Extensions that provide its access method or operator classes on the source.
    pub extensions: Option<String>,
}

/// A unique, check or exclusion constraint: `CONSTRAINT name <def>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConstraintDef {
    pub name: String,
    pub def: String,
    pub extensions: Option<String>,
}

/// A foreign key: its definition with the referenced table's name as the source
/// wrote it (`ref_sql`), replaced by the destination's when both are replicated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignKeyDef {
    pub name: String,
    pub def: String,
    pub ref_oid: u32,
    pub ref_sql: String,
    pub validated: bool,
}

/// What a table has besides its columns and keys.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableObjects {
    pub indexes: Vec<IndexDef>,
    pub constraints: Vec<ConstraintDef>,
    pub foreign_keys: Vec<ForeignKeyDef>,
    /// Defaults that are not constant (nextval(), now(), ...): (column, expression).
    pub defaults: Vec<(String, String)>,
    pub comment: Option<String>,
    /// (column, comment)
    pub column_comments: Vec<(String, String)>,
}

/// A sequence the replicated tables use or own, or one of the replicated schemas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SequenceDef {
    pub oid: u32,
    pub schema: String,
    pub name: String,
    /// `AS bigint START WITH ... CYCLE`
    pub options: String,
    /// The table (oid) and column that own it, if any.
    pub owned_by: Option<(u32, String)>,
    /// The identity column it serves (it comes with the column), if any.
    pub identity_of: Option<(u32, String)>,
    /// Its last value, when it has been called.
    pub last_value: Option<i64>,
}

impl SequenceDef {
    pub fn qualified(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.name))
    }
}

/// Extensions (comma list) that own any of the objects in `expr`, an SQL
/// expression over the pg_depend alias `d`.
fn extensions_of(cond: &str) -> String {
    format!(
        "(SELECT string_agg(DISTINCT e.extname::text, ', ')
            FROM pg_catalog.pg_depend d JOIN pg_catalog.pg_extension e ON e.oid = d.refobjid
           WHERE d.deptype = 'e' AND ({cond}))"
    )
}

/// Reads the objects of `oids` (tables of the source), in the current
/// transaction, with the search_path `source::read_catalog` set.
pub async fn read(client: &Client, oids: &[u32]) -> Result<HashMap<u32, TableObjects>, String> {
    let mut out: HashMap<u32, TableObjects> = HashMap::new();
    if oids.is_empty() {
        return Ok(out);
    }
    let list = format!(
        "'{{{}}}'::oid[]",
        oids.iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(",")
    );
    let err = crate::source::catalog_err;
    // Indexes that no constraint owns (those come with their constraint) and
    // that are not a partition's part of its parent's index (that comes with
    // the parent's).
    let rows = client
        .query(
            &format!(
                "SELECT i.indrelid, ic.relname::text, i.indisunique, pg_get_indexdef(i.indexrelid),
                        quote_ident(tn.nspname) || '.' || quote_ident(tc.relname), {ext}
                   FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid
                   JOIN pg_class tc ON tc.oid = i.indrelid
                   JOIN pg_namespace tn ON tn.oid = tc.relnamespace
                  WHERE i.indrelid = ANY({list}) AND NOT i.indisprimary
                    AND NOT EXISTS (SELECT 1 FROM pg_constraint c
                                     WHERE c.conindid = i.indexrelid AND c.contype IN ('p', 'u', 'x'))
                    AND NOT EXISTS (SELECT 1 FROM pg_inherits h WHERE h.inhrelid = i.indexrelid)
                  ORDER BY i.indrelid, ic.relname",
                ext = extensions_of(
                    "(d.classid = 'pg_am'::regclass AND d.objid = ic.relam)
                     OR (d.classid = 'pg_opclass'::regclass AND d.objid = ANY(i.indclass::oid[]))"
                )
            ),
            &[],
        )
        .await
        .map_err(err)?;
    for r in &rows {
        let rel: u32 = r.try_get(0).map_err(err)?;
        let name: String = r.try_get(1).map_err(err)?;
        let unique: bool = r.try_get(2).map_err(err)?;
        let def: String = r.try_get(3).map_err(err)?;
        let table: String = r.try_get(4).map_err(err)?;
        let rest = index_rest(&def, &name, unique, &table);
        out.entry(rel).or_default().indexes.push(IndexDef {
            name,
            unique,
            rest,
            source_def: def,
            extensions: r.try_get(5).map_err(err)?,
        });
    }
    // Constraints of the table itself (not those a partition has from its
    // parent, nor the internal ones behind a foreign key to a partitioned table).
    let rows = client
        .query(
            &format!(
                "SELECT c.conrelid, c.conname::text, c.contype::text, pg_get_constraintdef(c.oid),
                        c.confrelid, CASE WHEN c.confrelid <> 0 THEN c.confrelid::regclass::text END,
                        c.convalidated, {ext}
                   FROM pg_constraint c
                  WHERE c.conrelid = ANY({list}) AND c.contype IN ('u', 'c', 'x', 'f')
                    AND c.conislocal AND c.conparentid = 0
                  ORDER BY c.conrelid, c.contype, c.conname",
                ext = extensions_of(
                    "d.classid = 'pg_opclass'::regclass AND d.objid IN
                       (SELECT unnest(x.indclass::oid[]) FROM pg_index x WHERE x.indexrelid = c.conindid)"
                )
            ),
            &[],
        )
        .await
        .map_err(err)?;
    for r in &rows {
        let rel: u32 = r.try_get(0).map_err(err)?;
        let name: String = r.try_get(1).map_err(err)?;
        let kind: String = r.try_get(2).map_err(err)?;
        let def: String = r.try_get(3).map_err(err)?;
        let o = out.entry(rel).or_default();
        if kind == "f" {
            o.foreign_keys.push(ForeignKeyDef {
                name,
                def,
                ref_oid: r.try_get(4).map_err(err)?,
                ref_sql: r
                    .try_get::<_, Option<String>>(5)
                    .map_err(err)?
                    .unwrap_or_default(),
                validated: r.try_get(6).map_err(err)?,
            });
        } else {
            o.constraints.push(ConstraintDef {
                name,
                def,
                extensions: r.try_get(7).map_err(err)?,
            });
        }
    }
    // Defaults that are not constant (the constant ones are in CREATE TABLE),
    // and comments.
    let rows = client
        .query(
            &format!(
                "SELECT a.attrelid, a.attname::text, pg_get_expr(d.adbin, d.adrelid)
                   FROM pg_attribute a JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
                  WHERE a.attrelid = ANY({list}) AND a.attnum > 0 AND NOT a.attisdropped
                    AND a.attgenerated = '' AND NOT ({constant})
                  ORDER BY a.attrelid, a.attnum",
                constant = crate::source::CONSTANT_DEFAULT
            ),
            &[],
        )
        .await
        .map_err(err)?;
    for r in &rows {
        let rel: u32 = r.try_get(0).map_err(err)?;
        out.entry(rel)
            .or_default()
            .defaults
            .push((r.try_get(1).map_err(err)?, r.try_get(2).map_err(err)?));
    }
    let rows = client
        .query(
            &format!(
                "SELECT d.objoid, d.objsubid, a.attname::text, d.description
                   FROM pg_description d
                   LEFT JOIN pg_attribute a ON a.attrelid = d.objoid AND a.attnum = d.objsubid
                  WHERE d.classoid = 'pg_class'::regclass AND d.objoid = ANY({list})
                    AND (d.objsubid = 0 OR NOT a.attisdropped)
                  ORDER BY d.objoid, d.objsubid"
            ),
            &[],
        )
        .await
        .map_err(err)?;
    for r in &rows {
        let rel: u32 = r.try_get(0).map_err(err)?;
        let sub: i32 = r.try_get(1).map_err(err)?;
        let text: String = r.try_get(3).map_err(err)?;
        let o = out.entry(rel).or_default();
        if sub == 0 {
            o.comment = Some(text);
        } else if let Some(col) = r.try_get::<_, Option<String>>(2).map_err(err)? {
            o.column_comments.push((col, text));
        }
    }
    Ok(out)
}

/// What follows `USING ` in an index definition, if it starts as expected.
fn index_rest(def: &str, name: &str, unique: bool, table: &str) -> Option<String> {
    let head = format!(
        "CREATE {}INDEX {} ON ",
        if unique { "UNIQUE " } else { "" },
        quote_ident_min(name)
    );
    let after = def.strip_prefix(&head)?;
    let after = after.strip_prefix("ONLY ").unwrap_or(after);
    let after = after.strip_prefix(table)?;
    after.strip_prefix(" USING ").map(str::to_string)
}

/// PostgreSQL's quote_identifier: quotes only when needed (what its deparser
/// writes). Lower-case letters, digits and underscores, not starting with a
/// digit, and not a keyword, stay bare; keywords are rare in index names and
/// come out quoted, which the caller then fails to match and reports.
fn quote_ident_min(s: &str) -> String {
    let bare = !s.is_empty()
        && s.chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if bare {
        s.to_string()
    } else {
        quote_ident(s)
    }
}

/// The sequences the replicated tables own or use in defaults, those behind
/// their identity columns, and every other sequence of the replicated schemas,
/// with their options and last values.
pub async fn read_sequences(
    client: &Client,
    oids: &[u32],
    schemas: &[String],
) -> Result<Vec<SequenceDef>, String> {
    let err = crate::source::catalog_err;
    let list = format!(
        "'{{{}}}'::oid[]",
        oids.iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(",")
    );
    let rows = client
        .query(
            &format!(
                "WITH used AS (
                     SELECT dp.refobjid AS seq FROM pg_depend dp JOIN pg_attrdef ad ON ad.oid = dp.objid
                      WHERE dp.classid = 'pg_attrdef'::regclass AND dp.refclassid = 'pg_class'::regclass
                        AND ad.adrelid = ANY({list})
                     UNION
                     SELECT dp.objid FROM pg_depend dp
                      WHERE dp.classid = 'pg_class'::regclass AND dp.refclassid = 'pg_class'::regclass
                        AND dp.refobjid = ANY({list}) AND dp.deptype IN ('a', 'i')
                     UNION
                     SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                      WHERE n.nspname = ANY($1::text[]))
                 SELECT c.oid, n.nspname::text, c.relname::text,
                        format('AS %s INCREMENT BY %s MINVALUE %s MAXVALUE %s START WITH %s CACHE %s %s',
                               format_type(s.seqtypid, NULL), s.seqincrement, s.seqmin, s.seqmax,
                               s.seqstart, s.seqcache, CASE WHEN s.seqcycle THEN 'CYCLE' ELSE 'NO CYCLE' END),
                        own.refobjid, own.attname::text, own.deptype::text,
                        pg_sequence_last_value(c.oid)
                   FROM used u JOIN pg_class c ON c.oid = u.seq AND c.relkind = 'S'
                   JOIN pg_namespace n ON n.oid = c.relnamespace
                   JOIN pg_sequence s ON s.seqrelid = c.oid
                   LEFT JOIN LATERAL (
                       SELECT dp.refobjid, a.attname, dp.deptype FROM pg_depend dp
                         JOIN pg_attribute a ON a.attrelid = dp.refobjid AND a.attnum = dp.refobjsubid
                        WHERE dp.classid = 'pg_class'::regclass AND dp.objid = c.oid
                          AND dp.refclassid = 'pg_class'::regclass AND dp.deptype IN ('a', 'i')
                        LIMIT 1) own ON true
                  WHERE NOT EXISTS (SELECT 1 FROM pg_depend e WHERE e.classid = 'pg_class'::regclass
                                       AND e.objid = c.oid AND e.deptype = 'e')
                  ORDER BY 2, 3"
            ),
            &[&schemas],
        )
        .await
        .map_err(err)?;
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        let owner: Option<u32> = r.try_get(4).map_err(err)?;
        let col: Option<String> = r.try_get(5).map_err(err)?;
        let dep: Option<String> = r.try_get(6).map_err(err)?;
        let owned = owner.zip(col);
        let identity = dep.as_deref() == Some("i");
        out.push(SequenceDef {
            oid: r.try_get(0).map_err(err)?,
            schema: r.try_get(1).map_err(err)?,
            name: r.try_get(2).map_err(err)?,
            options: r.try_get(3).map_err(err)?,
            owned_by: if identity { None } else { owned.clone() },
            identity_of: if identity { owned } else { None },
            last_value: r.try_get(7).map_err(err)?,
        });
    }
    Ok(out)
}

/// One object built (or not) on the destination, for synchdb_objects.
pub struct Outcome<'a> {
    pub kind: &'a str,
    pub source: String,
    pub dest: String,
    pub err: Option<String>,
}

/// Runs `sql` in a subtransaction: its error is returned, the transaction goes on.
/// A stop request, or a statement cancelled from outside, is no failure of the
/// object: it ends the whole transaction (the snapshot is then redone whole).
fn try_exec(pg: &Pg, sql: &str) -> Result<Option<String>, WorkerError> {
    pg.subxact_begin()?;
    match pg.exec(sql, &[]) {
        Ok(_) => {
            pg.subxact_commit()?;
            Ok(None)
        }
        Err(e) => {
            pg.subxact_abort();
            if pg.should_exit() {
                return Err(WorkerError::Stopped);
            }
            if e.sqlstate == "57014" {
                return Err(WorkerError::Dest {
                    context: format!("running {sql}"),
                    err: e,
                });
            }
            Ok(Some(e.message))
        }
    }
}

pub fn record(pg: &Pg, connector: &str, o: &Outcome) -> Result<(), WorkerError> {
    pg.exec(
        "INSERT INTO synchdb_objects (name, kind, srcobj, dstobj, state, err)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (name, kind, dstobj) DO UPDATE
            SET srcobj = EXCLUDED.srcobj, state = EXCLUDED.state, err = EXCLUDED.err",
        &[
            Some(connector),
            Some(o.kind),
            Some(&o.source),
            Some(&o.dest),
            Some(if o.err.is_some() { "failed" } else { "created" }),
            o.err.as_deref(),
        ],
    )
    .ctx(|| "recording the connector's objects".into())?;
    Ok(())
}

fn report(pg: &Pg, connector: &str, o: Outcome) -> Result<(), WorkerError> {
    if let Some(e) = &o.err {
        pg.log(
            crate::pg::LOG_WARNING,
            &format!(
                "connector {connector}: {} {} was not created on the destination ({}): {e}; the other objects and the rows are there",
                o.kind, o.dest, o.source
            ),
        );
    }
    record(pg, connector, &o)
}

/// Where the replicated sequences go: beside the table that owns them, else in
/// the connector's default schema.
pub fn place_sequences(
    seqs: &[SequenceDef],
    dest_of: &HashMap<u32, &DestTable>,
    default_schema: &str,
) -> Vec<(SequenceDef, String)> {
    seqs.iter()
        .map(|s| {
            let schema = s
                .owned_by
                .as_ref()
                .and_then(|(t, _)| dest_of.get(t))
                .map(|d| d.schema.clone())
                .unwrap_or_else(|| default_schema.to_string());
            (s.clone(), schema)
        })
        .collect()
}

/// Creates the sequences (not those of identity columns, which come with their
/// column) before the tables, whose defaults may name them. One the destination
/// has already is kept.
pub fn create_sequences(
    pg: &Pg,
    connector: &str,
    placed: &[(SequenceDef, String)],
) -> Result<(), WorkerError> {
    for (s, schema) in placed {
        if s.identity_of.is_some() {
            continue;
        }
        let dest = format!("{}.{}", quote_ident(schema), quote_ident(&s.name));
        let sql = format!("CREATE SEQUENCE IF NOT EXISTS {dest} {}", s.options);
        let err = try_exec(pg, &sql)?;
        report(
            pg,
            connector,
            Outcome {
                kind: "sequence",
                source: s.qualified(),
                dest,
                err,
            },
        )?;
    }
    Ok(())
}

/// After the tables exist: owned sequences are tied to their column, identity
/// sequences are recorded under the name the destination gave them, and every
/// sequence gets the source's value (never moving a destination sequence back).
pub fn finish_sequences(
    pg: &Pg,
    connector: &str,
    placed: &[(SequenceDef, String)],
    dest_of: &HashMap<u32, &DestTable>,
    rules: &Rules,
) -> Result<(), WorkerError> {
    for (s, schema) in placed {
        let col_of = |t: &u32, c: &String| -> Option<(String, String)> {
            let d = dest_of.get(t)?;
            Some((
                d.qualified(),
                rules.dest_column(&d.src_schema, &d.src_name, c),
            ))
        };
        let dest = if let Some((t, c)) = &s.identity_of {
            let Some((table, col)) = col_of(t, c) else {
                continue;
            };
            let rows = pg
                .query(
                    "SELECT n.nspname::text, c.relname::text FROM pg_class c
                       JOIN pg_namespace n ON n.oid = c.relnamespace
                      WHERE c.oid = pg_get_serial_sequence($1, $2)::regclass",
                    &[Some(&table), Some(&col)],
                )
                .ctx(|| format!("looking up the identity sequence of {table}.{col}"))?;
            let Some(name) = rows.first().and_then(|r| match (&r[0], &r[1]) {
                (Some(n), Some(c)) => Some(format!("{}.{}", quote_ident(n), quote_ident(c))),
                _ => None,
            }) else {
                continue;
            };
            record(
                pg,
                connector,
                &Outcome {
                    kind: "sequence",
                    source: s.qualified(),
                    dest: name.clone(),
                    err: None,
                },
            )?;
            name
        } else {
            let dest = format!("{}.{}", quote_ident(schema), quote_ident(&s.name));
            if let Some((t, c)) = &s.owned_by {
                if let Some((table, col)) = col_of(t, c) {
                    let sql = format!(
                        "ALTER SEQUENCE {dest} OWNED BY {table}.{}",
                        quote_ident(&col)
                    );
                    if let Some(e) = try_exec(pg, &sql)? {
                        pg.log(
                            crate::pg::LOG_WARNING,
                            &format!("connector {connector}: {sql}: {e}"),
                        );
                    }
                }
            }
            dest
        };
        if let Some(v) = s.last_value {
            advance_sequence(pg, &dest, v)?;
        }
    }
    Ok(())
}

/// Moves destination sequence `dest` to the source's last value `v`, unless it
/// is already past it (in the sequence's own direction): never backwards.
pub fn advance_sequence(pg: &Pg, dest: &str, v: i64) -> Result<bool, WorkerError> {
    let rows = pg
        .query(
            "SELECT setval(s.seqrelid, $2::bigint, true)
               FROM pg_sequence s
              WHERE s.seqrelid = to_regclass($1)
                AND (pg_sequence_last_value(s.seqrelid) IS NULL
                     OR (s.seqincrement > 0 AND pg_sequence_last_value(s.seqrelid) < $2::bigint)
                     OR (s.seqincrement < 0 AND pg_sequence_last_value(s.seqrelid) > $2::bigint))",
            &[Some(dest), Some(&v.to_string())],
        )
        .ctx(|| format!("setting sequence {dest}"))?;
    Ok(!rows.is_empty())
}

/// Builds what `objs` describes for destination table `t`, after its rows:
/// defaults that are not constant, indexes, constraints, comments. Each on its
/// own: one that fails is reported (log, synchdb_objects) and the rest go on.
pub fn build_table_objects(
    pg: &Pg,
    connector: &str,
    t: &DestTable,
    objs: &TableObjects,
    rules: &Rules,
) -> Result<(), WorkerError> {
    let q = t.qualified();
    let dcol = |c: &str| rules.dest_column(&t.src_schema, &t.src_name, c);
    for (col, expr) in &objs.defaults {
        let Some(dc) = t.columns.iter().find(|c| c.src == *col) else {
            continue;
        };
        // a datatype rule changed the type: a default written for the source's may not suit
        if dc.type_sql != dc.natural_type {
            continue;
        }
        let sql = format!(
            "ALTER TABLE {q} ALTER COLUMN {} SET DEFAULT {expr}",
            quote_ident(&dc.name)
        );
        let err = try_exec(pg, &sql)?;
        report(
            pg,
            connector,
            Outcome {
                kind: "default",
                source: format!("{}.{} DEFAULT {expr}", t.ext_tbname(), col),
                dest: format!("{q}.{}", quote_ident(&dc.name)),
                err,
            },
        )?;
    }
    for ix in &objs.indexes {
        let name = free_name(pg, connector, t, &ix.name, true)?;
        let err = match &ix.rest {
            Some(rest) => {
                let sql = format!(
                    "CREATE {}INDEX {} ON {q} USING {rest}",
                    if ix.unique { "UNIQUE " } else { "" },
                    quote_ident(&name),
                );
                try_exec(pg, &sql)?.map(|e| missing_hint(e, ix.extensions.as_deref()))
            }
            None => Some("its definition on the source is not one synchdb can read".into()),
        };
        report(
            pg,
            connector,
            Outcome {
                kind: "index",
                source: ix.source_def.clone(),
                dest: format!("{}.{}", quote_ident(&t.schema), quote_ident(&name)),
                err,
            },
        )?;
    }
    for c in &objs.constraints {
        // unique and exclusion constraints come with an index of their name
        let with_index = c.def.starts_with("UNIQUE") || c.def.starts_with("EXCLUDE");
        let name = free_name(pg, connector, t, &c.name, with_index)?;
        let sql = format!(
            "ALTER TABLE {q} ADD CONSTRAINT {} {}",
            quote_ident(&name),
            c.def
        );
        let err = try_exec(pg, &sql)?.map(|e| missing_hint(e, c.extensions.as_deref()));
        report(
            pg,
            connector,
            Outcome {
                kind: "constraint",
                source: format!("{} {}", t.ext_tbname(), c.def),
                dest: format!("{q}.{}", quote_ident(&name)),
                err,
            },
        )?;
    }
    if let Some(text) = &objs.comment {
        let sql = format!("COMMENT ON TABLE {q} IS {}", quote_literal(text));
        if let Some(e) = try_exec(pg, &sql)? {
            pg.log(
                crate::pg::LOG_WARNING,
                &format!("connector {connector}: {sql}: {e}"),
            );
        }
    }
    for (col, text) in &objs.column_comments {
        let sql = format!(
            "COMMENT ON COLUMN {q}.{} IS {}",
            quote_ident(&dcol(col)),
            quote_literal(text)
        );
        if let Some(e) = try_exec(pg, &sql)? {
            pg.log(
                crate::pg::LOG_WARNING,
                &format!("connector {connector}: {sql}: {e}"),
            );
        }
    }
    Ok(())
}

/// The name a new index or constraint of `t` gets: the source's, unless the
/// destination has it already (a relation of that name in the schema, for an
/// object that comes with an index; a constraint of that name on the table),
/// as when two source schemas land in one destination schema, or a table of
/// the user's is named so. Then the first free `name_N`, cut to 63 bytes as
/// PostgreSQL would cut it; the log says which name it got.
fn free_name(
    pg: &Pg,
    connector: &str,
    t: &DestTable,
    name: &str,
    with_index: bool,
) -> Result<String, WorkerError> {
    let q = t.qualified();
    let taken = |candidate: &str| -> Result<bool, WorkerError> {
        let rows = pg
            .query(
                "SELECT ($3::bool AND EXISTS (SELECT 1 FROM pg_class c
                                          JOIN pg_namespace n ON n.oid = c.relnamespace
                                         WHERE n.nspname = $1 AND c.relname = $4))
                     OR EXISTS (SELECT 1 FROM pg_constraint
                                 WHERE conrelid = to_regclass($2) AND conname = $4)",
                &[
                    Some(&t.schema),
                    Some(&q),
                    Some(if with_index { "true" } else { "false" }),
                    Some(candidate),
                ],
            )
            .ctx(|| format!("looking for a free name for {name} on {q}"))?;
        Ok(rows.first().and_then(|r| r[0].as_deref()) == Some("t"))
    };
    if !taken(name)? {
        return Ok(name.to_string());
    }
    for n in 1..=1000u32 {
        let candidate = with_suffix(name, n);
        if !taken(&candidate)? {
            pg.log(
                crate::pg::LOG_LOG,
                &format!(
                    "connector {connector}: {} of {q} is named {} on the destination: {} is taken there",
                    quote_ident(name),
                    quote_ident(&candidate),
                    quote_ident(name)
                ),
            );
            return Ok(candidate);
        }
    }
    // a thousand taken: the source's name, whose "already exists" is then
    // reported for this object alone
    Ok(name.to_string())
}

/// `name_n`, with `name` cut (at a character boundary) so the whole fits in
/// PostgreSQL's 63 bytes.
fn with_suffix(name: &str, n: u32) -> String {
    let suffix = format!("_{n}");
    let mut end = name.len().min(63 - suffix.len());
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{suffix}", &name[..end])
}

/// Adds what to install when the error is about a missing access method or
/// operator class that an extension provides on the source.
fn missing_hint(e: String, extensions: Option<&str>) -> String {
    match extensions {
        Some(x)
            if e.contains("access method")
                || e.contains("operator class")
                || e.contains("does not exist") =>
        {
            format!(
                "{e} (on the source it comes from extension {x}: install it on the destination)"
            )
        }
        _ => e,
    }
}

/// Foreign keys of table `t` whose referenced table is replicated too (`dest_name`):
/// added NOT VALID (nothing is checked while adding), then validated, each on its
/// own. A key to a table that is not replicated is left out, and logged.
pub fn build_foreign_keys(
    pg: &Pg,
    connector: &str,
    t: &DestTable,
    partitioned: bool,
    objs: &TableObjects,
    dest_name: &dyn Fn(u32) -> Result<Option<String>, WorkerError>,
) -> Result<(), WorkerError> {
    let q = t.qualified();
    for fk in &objs.foreign_keys {
        let name = free_name(pg, connector, t, &fk.name, false)?;
        let dest = format!("{q}.{}", quote_ident(&name));
        let Some(target) = dest_name(fk.ref_oid)? else {
            pg.log(
                crate::pg::LOG_LOG,
                &format!(
                    "connector {connector}: foreign key {} of {} references {}, which is not replicated: left out",
                    quote_ident(&fk.name),
                    t.ext_tbname(),
                    fk.ref_sql
                ),
            );
            continue;
        };
        let needle = format!(" REFERENCES {}(", fk.ref_sql);
        let Some(at) = fk.def.find(&needle) else {
            report(
                pg,
                connector,
                Outcome {
                    kind: "foreign key",
                    source: fk.def.clone(),
                    dest,
                    err: Some("unexpected definition on the source".into()),
                },
            )?;
            continue;
        };
        let def = format!(
            "{} REFERENCES {}({}",
            &fk.def[..at],
            target,
            &fk.def[at + needle.len()..]
        );
        // NOT VALID on a partitioned table is refused before PostgreSQL 18
        let not_valid = !partitioned && !def.ends_with("NOT VALID");
        let sql = format!(
            "ALTER TABLE {q} ADD CONSTRAINT {} {def}{}",
            quote_ident(&name),
            if not_valid { " NOT VALID" } else { "" }
        );
        let mut err = try_exec(pg, &sql)?;
        if err.is_none() && not_valid && fk.validated {
            err = try_exec(
                pg,
                &format!("ALTER TABLE {q} VALIDATE CONSTRAINT {}", quote_ident(&name)),
            )?
            .map(|e| format!("added NOT VALID, but validating it failed: {e}"));
        }
        report(
            pg,
            connector,
            Outcome {
                kind: "foreign key",
                source: format!("{} {}", t.ext_tbname(), fk.def),
                dest,
                err,
            },
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffixed_names_fit_in_63_bytes() {
        assert_eq!(with_suffix("by_v", 1), "by_v_1");
        let long = "x".repeat(63);
        assert_eq!(with_suffix(&long, 12), format!("{}_12", "x".repeat(60)));
        // never cut inside a character
        let wide = "é".repeat(40);
        let cut = with_suffix(&wide, 3);
        assert!(cut.len() <= 63 && cut.ends_with("_3"));
        assert_eq!(cut, format!("{}_3", "é".repeat(30)));
    }

    #[test]
    fn index_definitions_are_cut_after_using() {
        assert_eq!(
            index_rest(
                "CREATE UNIQUE INDEX t_ident_key ON t_ident USING btree (region, code)",
                "t_ident_key",
                true,
                "t_ident"
            )
            .as_deref(),
            Some("btree (region, code)")
        );
        assert_eq!(
            index_rest(
                "CREATE INDEX \"Idx\" ON ONLY public.\"P\" USING gin (doc jsonb_path_ops) WHERE (x > 0)",
                "Idx",
                false,
                "public.\"P\""
            )
            .as_deref(),
            Some("gin (doc jsonb_path_ops) WHERE (x > 0)")
        );
        assert_eq!(
            index_rest("CREATE INDEX a ON b USING btree (c)", "a", true, "b"),
            None
        );
    }
}
