//! SQL that builds destination tables from what the source catalog says.

use crate::config::quote_ident;
use crate::decoder::RelColumn;
use crate::objmap::DestTable;

/// CREATE TABLE without the primary key: keys and indexes are built after the rows
/// are in, which is faster than maintaining them row by row. `virtual_ok`: the
/// destination has virtual generated columns (PostgreSQL 18); a virtual column of
/// the source is stored otherwise, which gives the same values.
pub fn create_table(t: &DestTable, virtual_ok: bool) -> String {
    let cols: Vec<String> = t
        .columns
        .iter()
        .map(|c| {
            let mut s = format!("{} {}", quote_ident(&c.name), c.type_sql);
            if let Some(coll) = &c.collation {
                s.push_str(&format!(" COLLATE {coll}"));
            }
            if let Some(g) = &c.generated {
                let kind = if g.virtual_ && virtual_ok {
                    "VIRTUAL"
                } else {
                    "STORED"
                };
                s.push_str(&format!(" GENERATED ALWAYS AS ({}) {kind}", g.expr));
            } else if let Some(i) = &c.identity {
                let when = if i.always { "ALWAYS" } else { "BY DEFAULT" };
                s.push_str(&format!(" GENERATED {when} AS IDENTITY"));
                if !i.options.is_empty() {
                    s.push_str(&format!(" ({})", i.options));
                }
            } else if let Some(d) = &c.default {
                s.push_str(&format!(" DEFAULT {d}"));
            }
            if c.not_null {
                s.push_str(" NOT NULL");
            }
            s
        })
        .collect();
    let mut sql = format!("CREATE TABLE {} ({})", t.qualified(), cols.join(", "));
    if let Some(key) = &t.partitioned_by {
        sql.push_str(&format!(" PARTITION BY {key}"));
    }
    sql
}

/// Attaches a partition created as a table of its own to its parent: its columns
/// stay in the source partition's order, which may differ from the parent's.
pub fn attach_partition(t: &DestTable) -> Option<String> {
    let (parent, bound) = t.attach_to.as_ref()?;
    Some(format!(
        "ALTER TABLE {parent} ATTACH PARTITION {} {bound}",
        t.qualified()
    ))
}

fn ident_list(v: &[String]) -> String {
    v.iter()
        .map(|c| quote_ident(c))
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn add_primary_key(t: &DestTable) -> Option<String> {
    if t.primary_key.is_empty() {
        return None;
    }
    let mut sql = format!(
        "ALTER TABLE {} ADD PRIMARY KEY ({})",
        t.qualified(),
        ident_list(&t.primary_key)
    );
    if !t.pk_include.is_empty() {
        sql.push_str(&format!(" INCLUDE ({})", ident_list(&t.pk_include)));
    }
    Some(sql)
}

/// The source's replica identity, when it is not the default: FULL and NOTHING as
/// they are; USING INDEX the unique index it names (built with the other indexes,
/// after the rows), which the apply path then uses to find rows whose old key it
/// receives.
pub fn replica_identity(t: &DestTable) -> Vec<String> {
    let q = t.qualified();
    match t.replica_identity {
        'f' => vec![format!("ALTER TABLE {q} REPLICA IDENTITY FULL")],
        'n' => vec![format!("ALTER TABLE {q} REPLICA IDENTITY NOTHING")],
        // the index itself is built with the table's other indexes (objects)
        'i' if !t.identity_index.is_empty() => vec![format!(
            "ALTER TABLE {q} REPLICA IDENTITY USING INDEX {}",
            quote_ident(&t.identity_index_name)
        )],
        _ => vec![],
    }
}

/// Creates `schema` if missing. Concurrent `CREATE SCHEMA IF NOT EXISTS` can fail
/// with a unique violation when several connectors land in one schema, so the
/// creation is serialised by an advisory lock held to the end of the transaction.
pub fn ensure_schema_sql(schema: &str) -> String {
    format!(
        "SELECT pg_advisory_xact_lock(hashtext('synchdb create schema'), hashtext({})); CREATE SCHEMA IF NOT EXISTS {}",
        crate::config::quote_literal(schema),
        quote_ident(schema)
    )
}

/// A change to a replicated table's columns, seen in a new Relation message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ColumnChange {
    Add(RelColumn),
    Drop(String),
    Rename { from: String, to: String },
    Retype(RelColumn),
}

/// What the destination must do so its columns follow the source's again.
///
/// `old` is the previous description of the relation in this stream (None after a
/// start: then only missing columns are added, since a destination column the
/// source lacks may be the user's own). A column that keeps its position and type
/// but changes its name is a rename, not a drop and an add, so its data stays.
pub fn column_changes(
    old: Option<&[RelColumn]>,
    new: &[RelColumn],
    dest_has: impl Fn(&str) -> bool,
) -> Vec<ColumnChange> {
    let mut out = Vec::new();
    let mut renamed_to: Vec<&str> = Vec::new();
    if let Some(old) = old {
        let mut renamed_from: Vec<&str> = Vec::new();
        if old.len() == new.len() {
            for (o, n) in old.iter().zip(new) {
                if o.name != n.name
                    && o.type_oid == n.type_oid
                    && !new.iter().any(|c| c.name == o.name)
                    && !old.iter().any(|c| c.name == n.name)
                {
                    out.push(ColumnChange::Rename {
                        from: o.name.clone(),
                        to: n.name.clone(),
                    });
                    renamed_from.push(&o.name);
                    renamed_to.push(&n.name);
                }
            }
        }
        for o in old {
            if !new.iter().any(|c| c.name == o.name)
                && !renamed_from.contains(&o.name.as_str())
                && dest_has(&o.name)
            {
                out.push(ColumnChange::Drop(o.name.clone()));
            }
        }
        for n in new {
            if let Some(o) = old.iter().find(|o| o.name == n.name) {
                if o.type_oid != n.type_oid || o.type_modifier != n.type_modifier {
                    out.push(ColumnChange::Retype(n.clone()));
                }
            }
        }
    }
    for n in new {
        if !dest_has(&n.name) && !renamed_to.contains(&n.name.as_str()) {
            out.push(ColumnChange::Add(n.clone()));
        }
    }
    out
}

/// The ALTER TABLE for one change; `ty` is the destination type name of the column
/// (for Add and Retype).
pub fn alter_sql(dest: &str, change: &ColumnChange, ty: &str) -> String {
    match change {
        ColumnChange::Add(c) => format!(
            "ALTER TABLE {dest} ADD COLUMN {} {ty}",
            quote_ident(&c.name)
        ),
        ColumnChange::Drop(n) => format!(
            "ALTER TABLE {dest} DROP COLUMN IF EXISTS {}",
            quote_ident(n)
        ),
        ColumnChange::Rename { from, to } => {
            format!(
                "ALTER TABLE {dest} RENAME COLUMN {} TO {}",
                quote_ident(from),
                quote_ident(to)
            )
        }
        ColumnChange::Retype(c) => {
            let n = quote_ident(&c.name);
            format!("ALTER TABLE {dest} ALTER COLUMN {n} TYPE {ty} USING {n}::text::{ty}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::{SourceColumn, SourceTable};

    #[test]
    fn create_table_keeps_types_not_null_and_constant_defaults() {
        let col = |name: &str, ty: &str, not_null, default: Option<&str>| SourceColumn {
            name: name.into(),
            type_sql: ty.into(),
            not_null,
            default: default.map(str::to_string),
            source_type: ty.into(),
            base_type: ty.into(),
            ..Default::default()
        };
        let t = SourceTable {
            oid: 1,
            schema: "public".into(),
            name: "Orders".into(),
            columns: vec![
                col("id", "integer", true, None),
                col(
                    "note",
                    "character varying(20)",
                    false,
                    Some("'x'::character varying"),
                ),
            ],
            primary_key: vec!["id".into()],
            ..Default::default()
        };
        let plain = crate::objmap::plan_table(&Default::default(), &t, "postgres");
        assert_eq!(
            create_table(&plain, false),
            "CREATE TABLE \"postgres\".\"Orders\" (\"id\" integer NOT NULL, \"note\" character varying(20) DEFAULT 'x'::character varying)"
        );
        assert_eq!(
            add_primary_key(&plain).unwrap(),
            "ALTER TABLE \"postgres\".\"Orders\" ADD PRIMARY KEY (\"id\")"
        );
        // with rules: another schema and name, a renamed key column, a new type
        let rows = [
            ("table", "public.Orders", "sales.orders"),
            ("column", "public.Orders.id", "order_id"),
            ("datatype", "public.Orders.note", "text|0"),
        ]
        .map(|(o, s, d)| crate::objmap::RuleRow {
            objtype: o.into(),
            srcobj: s.into(),
            dstobj: d.into(),
            canonical: None,
        });
        let rules = crate::objmap::Rules::parse(&rows, "db").unwrap();
        let mapped = crate::objmap::plan_table(&rules, &t, "postgres");
        assert_eq!(
            create_table(&mapped, false),
            "CREATE TABLE \"sales\".\"orders\" (\"order_id\" integer NOT NULL, \"note\" text)"
        );
        assert_eq!(
            add_primary_key(&mapped).unwrap(),
            "ALTER TABLE \"sales\".\"orders\" ADD PRIMARY KEY (\"order_id\")"
        );
    }

    #[test]
    fn generated_identity_include_and_replica_identity() {
        let col = |name: &str| SourceColumn {
            name: name.into(),
            type_sql: "integer".into(),
            source_type: "integer".into(),
            base_type: "integer".into(),
            ..Default::default()
        };
        let mut id = col("id");
        id.identity = Some(crate::source::Identity {
            always: true,
            options: "START WITH 100 INCREMENT BY 5".into(),
        });
        id.not_null = true;
        let mut g = col("g");
        g.generated = Some(crate::source::Generated {
            expr: "(a * 2)".into(),
            virtual_: true,
        });
        let t = SourceTable {
            oid: 1,
            schema: "public".into(),
            name: "t".into(),
            columns: vec![id, col("a"), g, col("b")],
            primary_key: vec!["id".into()],
            pk_include: vec!["a".into(), "b".into()],
            replica_identity: 'i',
            identity_index_name: "t_ab".into(),
            identity_index: vec!["a".into(), "b".into()],
            ..Default::default()
        };
        let p = crate::objmap::plan_table(&Default::default(), &t, "d");
        assert_eq!(
            create_table(&p, false),
            "CREATE TABLE \"d\".\"t\" (\"id\" integer GENERATED ALWAYS AS IDENTITY (START WITH 100 INCREMENT BY 5) NOT NULL, \
             \"a\" integer, \"g\" integer GENERATED ALWAYS AS ((a * 2)) STORED, \"b\" integer)"
        );
        assert!(create_table(&p, true).contains("GENERATED ALWAYS AS ((a * 2)) VIRTUAL"));
        assert_eq!(
            add_primary_key(&p).unwrap(),
            "ALTER TABLE \"d\".\"t\" ADD PRIMARY KEY (\"id\") INCLUDE (\"a\", \"b\")"
        );
        assert_eq!(
            replica_identity(&p),
            ["ALTER TABLE \"d\".\"t\" REPLICA IDENTITY USING INDEX \"t_ab\""]
        );
        // only the columns rows carry are copied
        assert_eq!(t.column_list(), "\"id\", \"a\", \"b\"");
    }

    fn col(name: &str, ty: u32, typmod: i32) -> RelColumn {
        RelColumn {
            flags: 0,
            name: name.into(),
            type_oid: ty,
            type_modifier: typmod,
        }
    }

    #[test]
    fn column_changes_follow_the_source() {
        let old = vec![
            col("id", 23, -1),
            col("a", 25, -1),
            col("b", 1700, 655366),
            col("c", 16, -1),
        ];
        // c renamed to d (same place, same type), b retyped, a dropped, e added
        let new = vec![
            col("id", 23, -1),
            col("b", 1700, 917510),
            col("d", 16, -1),
            col("e", 20, -1),
        ];
        let dest = ["id", "a", "b", "c"];
        let ch = column_changes(Some(&old), &new, |n| dest.contains(&n));
        assert_eq!(
            ch,
            vec![
                ColumnChange::Drop("a".into()),
                ColumnChange::Drop("c".into()),
                ColumnChange::Retype(col("b", 1700, 917510)),
                ColumnChange::Add(col("d", 16, -1)),
                ColumnChange::Add(col("e", 20, -1)),
            ]
        );
        // a pure rename keeps the data
        let old = vec![col("id", 23, -1), col("flag", 16, -1)];
        let new = vec![col("id", 23, -1), col("active", 16, -1)];
        let ch = column_changes(Some(&old), &new, |n| ["id", "flag"].contains(&n));
        assert_eq!(
            ch,
            vec![ColumnChange::Rename {
                from: "flag".into(),
                to: "active".into()
            }]
        );
        // after a start nothing is dropped, only missing columns added
        let ch = column_changes(None, &new, |n| ["id", "flag", "mine"].contains(&n));
        assert_eq!(ch, vec![ColumnChange::Add(col("active", 16, -1))]);
        assert_eq!(
            alter_sql("\"s\".\"t\"", &ColumnChange::Retype(col("b", 1700, 917510)), "numeric(14,2)"),
            "ALTER TABLE \"s\".\"t\" ALTER COLUMN \"b\" TYPE numeric(14,2) USING \"b\"::text::numeric(14,2)"
        );
    }
}
