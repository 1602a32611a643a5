//! User-defined types of the source (enum, domain, composite, range and the
//! multirange that comes with it): read from the source catalog, then created on
//! the destination before the tables that use them, so a column keeps its type
//! instead of being flattened to text. Arrays of each come with the type.
//!
//! Expressions inside a type (domain defaults and checks) are deparsed by the
//! source with the replicated schemas on its search_path, and run on the
//! destination with the destination schemas first on its search_path, so names
//! of replicated types resolve to the copies (see `source::read_catalog`).

use crate::config::{quote_ident, quote_literal};
use crate::error::{DestContext, WorkerError};
use crate::pg::Pg;
use std::collections::{HashMap, HashSet};
use tokio_postgres::Client;

/// A reference from one type to another (a domain's base type, a composite
/// attribute, a range's subtype).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeRef {
    /// The user type at the bottom of the reference (arrays looked through), or 0
    /// for a type that is not replicated (built in, or an extension's).
    pub udt: u32,
    pub is_array: bool,
    /// The reference as the source's format_type writes it.
    pub sql: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TypeKind {
    Enum {
        labels: Vec<String>,
    },
    Domain {
        base: TypeRef,
        default: Option<String>,
        not_null: bool,
        collation: Option<String>,
        /// `CONSTRAINT name CHECK (...)`, as the source deparses them.
        checks: Vec<String>,
    },
    Composite {
        /// (attribute name, type, collation clause)
        attrs: Vec<(String, TypeRef, Option<String>)>,
    },
    /// Comes with its range (`range`): nothing to create of its own.
    Multirange {
        range: u32,
    },
    Range {
        subtype: TypeRef,
        opclass: Option<String>,
        collation: Option<String>,
        subtype_diff: Option<String>,
        multirange: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserType {
    pub oid: u32,
    pub schema: String,
    pub name: String,
    pub kind: TypeKind,
}

impl UserType {
    /// The replicated user types this one uses.
    pub fn deps(&self) -> Vec<u32> {
        let refs: Vec<&TypeRef> = match &self.kind {
            TypeKind::Enum { .. } => vec![],
            TypeKind::Domain { base, .. } => vec![base],
            TypeKind::Composite { attrs } => attrs.iter().map(|(_, t, _)| t).collect(),
            TypeKind::Range { subtype, .. } => vec![subtype],
            TypeKind::Multirange { range } => return vec![*range],
        };
        refs.iter().filter(|r| r.udt != 0).map(|r| r.udt).collect()
    }
}

/// Whether a pg_type row (alias `ut`) is a user type we replicate: an enum,
/// domain, standalone composite, range or multirange that no extension owns and
/// that is not built in.
pub const REPLICATED_TYPE: &str = "(ut.oid >= 16384 AND ut.typtype IN ('e', 'd', 'c', 'r', 'm')
      AND (ut.typtype <> 'c' OR EXISTS (SELECT 1 FROM pg_catalog.pg_class rc
                                         WHERE rc.oid = ut.typrelid AND rc.relkind = 'c'))
      AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend e
                       WHERE e.classid = 'pg_catalog.pg_type'::regclass AND e.objid = ut.oid
                         AND e.deptype = 'e'))";

/// SQL giving, for a type oid expression `$T`, the replicated user type at its
/// bottom (arrays looked through) or 0.
fn bottom_udt(t: &str) -> String {
    format!(
        "(SELECT CASE WHEN {REPLICATED_TYPE} THEN ut.oid ELSE 0 END
            FROM pg_catalog.pg_type bt
            JOIN pg_catalog.pg_type ut ON ut.oid = CASE WHEN bt.typtype = 'b' AND bt.typelem <> 0 AND bt.typlen = -1
                                                        THEN bt.typelem ELSE bt.oid END
           WHERE bt.oid = {t})"
    )
}

/// The SQL of `bottom_udt` for use in a column query over `pg_attribute a`.
pub fn column_udt_sql() -> String {
    bottom_udt("a.atttypid")
}

fn type_ref(udt: u32, ref_oid_is_array: bool, sql: String) -> TypeRef {
    TypeRef {
        udt,
        is_array: ref_oid_is_array,
        sql,
    }
}

/// Reads the definitions of `roots` and of every user type they depend on, in an
/// order where each type comes after those it uses.
pub async fn read_types(client: &Client, roots: &[u32]) -> Result<Vec<UserType>, String> {
    let err = crate::source::catalog_err;
    let mut found: HashMap<u32, UserType> = HashMap::new();
    let mut todo: Vec<u32> = roots.iter().copied().filter(|&o| o != 0).collect();
    while !todo.is_empty() {
        todo.sort_unstable();
        todo.dedup();
        todo.retain(|o| !found.contains_key(o));
        if todo.is_empty() {
            break;
        }
        let oids: Vec<String> = todo.iter().map(u32::to_string).collect();
        let list = format!("'{{{}}}'::oid[]", oids.join(","));
        let is_array = |t: &str| {
            format!("(SELECT x.typtype = 'b' AND x.typelem <> 0 AND x.typlen = -1 FROM pg_catalog.pg_type x WHERE x.oid = {t})")
        };
        let rows = client
            .query(
                &format!(
                    "SELECT t.oid, n.nspname::text, t.typname::text, t.typtype::text,
                            ARRAY(SELECT e.enumlabel::text FROM pg_catalog.pg_enum e
                                   WHERE e.enumtypid = t.oid ORDER BY e.enumsortorder),
                            {base_udt}, {base_arr}, format_type(t.typbasetype, nullif(t.typtypmod, -1)),
                            t.typdefault, t.typnotnull,
                            CASE WHEN t.typcollation <> 0 AND t.typcollation <> bt.typcollation
                                 THEN (SELECT format('%I.%I', cn.nspname, co.collname) FROM pg_catalog.pg_collation co
                                        JOIN pg_catalog.pg_namespace cn ON cn.oid = co.collnamespace
                                       WHERE co.oid = t.typcollation) END,
                            ARRAY(SELECT format('CONSTRAINT %I %s', c.conname, pg_get_constraintdef(c.oid))
                                    FROM pg_catalog.pg_constraint c
                                   WHERE c.contypid = t.oid AND c.contype = 'c' ORDER BY c.conname),
                            r.rngsubtype, {sub_udt}, {sub_arr}, format_type(r.rngsubtype, NULL),
                            (SELECT format('%I.%I', ocn.nspname, oc.opcname) FROM pg_catalog.pg_opclass oc
                               JOIN pg_catalog.pg_namespace ocn ON ocn.oid = oc.opcnamespace
                              WHERE oc.oid = r.rngsubopc AND NOT oc.opcdefault),
                            CASE WHEN r.rngcollation <> 0 THEN
                                 (SELECT format('%I.%I', cn.nspname, co.collname) FROM pg_catalog.pg_collation co
                                    JOIN pg_catalog.pg_namespace cn ON cn.oid = co.collnamespace
                                   WHERE co.oid = r.rngcollation) END,
                            CASE WHEN r.rngsubdiff <> 0 AND r.rngsubdiff < 16384 THEN r.rngsubdiff::regproc::text END,
                            (SELECT m.typname::text FROM pg_catalog.pg_type m WHERE m.oid = r.rngmultitypid),
                            (SELECT mr.rngtypid FROM pg_catalog.pg_range mr WHERE mr.rngmultitypid = t.oid)
                       FROM pg_catalog.pg_type t
                       JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace
                       LEFT JOIN pg_catalog.pg_type bt ON bt.oid = t.typbasetype
                       LEFT JOIN pg_catalog.pg_range r ON r.rngtypid = t.oid
                      WHERE t.oid = ANY({list})",
                    base_udt = bottom_udt("t.typbasetype"),
                    base_arr = is_array("t.typbasetype"),
                    sub_udt = bottom_udt("r.rngsubtype"),
                    sub_arr = is_array("r.rngsubtype"),
                ),
                &[],
            )
            .await
            .map_err(err)?;
        let attrs = client
            .query(
                &format!(
                    "SELECT t.oid, a.attname::text, {udt}, {arr}, format_type(a.atttypid, a.atttypmod),
                            CASE WHEN a.attcollation <> 0 AND a.attcollation <> at.typcollation THEN
                                 (SELECT format('%I.%I', cn.nspname, co.collname) FROM pg_catalog.pg_collation co
                                    JOIN pg_catalog.pg_namespace cn ON cn.oid = co.collnamespace
                                   WHERE co.oid = a.attcollation) END
                       FROM pg_catalog.pg_type t
                       JOIN pg_catalog.pg_attribute a ON a.attrelid = t.typrelid
                       JOIN pg_catalog.pg_type at ON at.oid = a.atttypid
                      WHERE t.oid = ANY({list}) AND t.typtype = 'c' AND a.attnum > 0 AND NOT a.attisdropped
                      ORDER BY t.oid, a.attnum",
                    udt = bottom_udt("a.atttypid"),
                    arr = is_array("a.atttypid"),
                ),
                &[],
            )
            .await
            .map_err(err)?;
        let mut comp: HashMap<u32, Vec<(String, TypeRef, Option<String>)>> = HashMap::new();
        for a in &attrs {
            let oid: u32 = a.try_get(0).map_err(err)?;
            let udt: u32 = a.try_get(2).map_err(err)?;
            let arr: bool = a.try_get(3).map_err(err)?;
            comp.entry(oid).or_default().push((
                a.try_get(1).map_err(err)?,
                type_ref(udt, arr, a.try_get(4).map_err(err)?),
                a.try_get(5).map_err(err)?,
            ));
        }
        let mut next = Vec::new();
        for r in &rows {
            let oid: u32 = r.try_get(0).map_err(err)?;
            let typtype: String = r.try_get(3).map_err(err)?;
            let kind = match typtype.as_str() {
                "e" => TypeKind::Enum {
                    labels: r.try_get(4).map_err(err)?,
                },
                "d" => TypeKind::Domain {
                    base: type_ref(
                        r.try_get(5).map_err(err)?,
                        r.try_get::<_, Option<bool>>(6)
                            .map_err(err)?
                            .unwrap_or(false),
                        r.try_get(7).map_err(err)?,
                    ),
                    default: r.try_get(8).map_err(err)?,
                    not_null: r.try_get(9).map_err(err)?,
                    collation: r.try_get(10).map_err(err)?,
                    checks: r.try_get(11).map_err(err)?,
                },
                "c" => TypeKind::Composite {
                    attrs: comp.remove(&oid).unwrap_or_default(),
                },
                "r" => TypeKind::Range {
                    subtype: type_ref(
                        r.try_get::<_, Option<u32>>(13).map_err(err)?.unwrap_or(0),
                        r.try_get::<_, Option<bool>>(14)
                            .map_err(err)?
                            .unwrap_or(false),
                        r.try_get::<_, Option<String>>(15)
                            .map_err(err)?
                            .unwrap_or_default(),
                    ),
                    opclass: r.try_get(16).map_err(err)?,
                    collation: r.try_get(17).map_err(err)?,
                    subtype_diff: r.try_get(18).map_err(err)?,
                    multirange: r.try_get(19).map_err(err)?,
                },
                "m" => TypeKind::Multirange {
                    range: r.try_get::<_, Option<u32>>(20).map_err(err)?.unwrap_or(0),
                },
                other => {
                    return Err(format!(
                        "source type {oid} has kind '{other}', which synchdb cannot recreate"
                    ))
                }
            };
            let t = UserType {
                oid,
                schema: r.try_get(1).map_err(err)?,
                name: r.try_get(2).map_err(err)?,
                kind,
            };
            next.extend(t.deps());
            found.insert(oid, t);
        }
        for o in &todo {
            if !found.contains_key(o) {
                return Err(format!(
                    "source type {o} used by a replicated column no longer exists"
                ));
            }
        }
        todo = next;
    }
    Ok(order(found.into_values().collect()))
}

/// Each type after the types it uses; otherwise by schema and name, so the
/// order (and the DDL) is the same on every run.
pub fn order(mut types: Vec<UserType>) -> Vec<UserType> {
    types.sort_by(|a, b| (&a.schema, &a.name).cmp(&(&b.schema, &b.name)));
    let by_oid: HashMap<u32, usize> = types.iter().enumerate().map(|(i, t)| (t.oid, i)).collect();
    let mut out: Vec<UserType> = Vec::with_capacity(types.len());
    let mut done: HashSet<u32> = HashSet::new();
    fn visit(
        i: usize,
        types: &[UserType],
        by_oid: &HashMap<u32, usize>,
        done: &mut HashSet<u32>,
        out: &mut Vec<UserType>,
        depth: usize,
    ) {
        let t = &types[i];
        if done.contains(&t.oid) || depth > types.len() {
            return;
        }
        for d in t.deps() {
            if let Some(&j) = by_oid.get(&d) {
                visit(j, types, by_oid, done, out, depth + 1);
            }
        }
        if done.insert(t.oid) {
            out.push(t.clone());
        }
    }
    for i in 0..types.len() {
        visit(i, &types, &by_oid, &mut done, &mut out, 0);
    }
    out
}

/// Where each user type lands on the destination: `schema.name`, quoted.
pub type TypeNames = HashMap<u32, String>;

/// The destination spelling of a reference: a replicated type by its qualified
/// destination name, any other type as the source wrote it.
pub fn ref_sql(r: &TypeRef, names: &TypeNames) -> String {
    match names.get(&r.udt) {
        Some(n) if r.is_array => format!("{n}[]"),
        Some(n) => n.clone(),
        None => r.sql.clone(),
    }
}

/// The statement that creates `t` in destination schema `schema`, under its
/// source name (none for a multirange: its range creates it).
pub fn create_sql(t: &UserType, schema: &str, names: &TypeNames) -> Option<String> {
    create_sql_inner(t, schema, names)
}

fn create_sql_inner(t: &UserType, schema: &str, names: &TypeNames) -> Option<String> {
    let dest = format!("{}.{}", quote_ident(schema), quote_ident(&t.name));
    match &t.kind {
        TypeKind::Enum { labels } => {
            let l: Vec<String> = labels.iter().map(|s| quote_literal(s)).collect();
            Some(format!("CREATE TYPE {dest} AS ENUM ({})", l.join(", ")))
        }
        TypeKind::Domain {
            base,
            default,
            not_null,
            collation,
            checks,
        } => {
            let mut s = format!("CREATE DOMAIN {dest} AS {}", ref_sql(base, names));
            if let Some(c) = collation {
                s.push_str(&format!(" COLLATE {c}"));
            }
            if let Some(d) = default {
                s.push_str(&format!(" DEFAULT {d}"));
            }
            if *not_null {
                s.push_str(" NOT NULL");
            }
            for c in checks {
                s.push(' ');
                s.push_str(c);
            }
            Some(s)
        }
        TypeKind::Composite { attrs } => {
            let a: Vec<String> = attrs
                .iter()
                .map(|(n, r, coll)| {
                    let mut s = format!("{} {}", quote_ident(n), ref_sql(r, names));
                    if let Some(c) = coll {
                        s.push_str(&format!(" COLLATE {c}"));
                    }
                    s
                })
                .collect();
            Some(format!("CREATE TYPE {dest} AS ({})", a.join(", ")))
        }
        TypeKind::Range {
            subtype,
            opclass,
            collation,
            subtype_diff,
            multirange,
        } => {
            let mut opts = vec![format!("SUBTYPE = {}", ref_sql(subtype, names))];
            if let Some(o) = opclass {
                opts.push(format!("SUBTYPE_OPCLASS = {o}"));
            }
            if let Some(c) = collation {
                opts.push(format!("COLLATION = {c}"));
            }
            if let Some(d) = subtype_diff {
                opts.push(format!("SUBTYPE_DIFF = {d}"));
            }
            if let Some(m) = multirange {
                // beside the range, under the source's name
                opts.push(format!(
                    "MULTIRANGE_TYPE_NAME = {}.{}",
                    quote_ident(schema),
                    quote_ident(m)
                ));
            }
            Some(format!("CREATE TYPE {dest} AS RANGE ({})", opts.join(", ")))
        }
        TypeKind::Multirange { .. } => None,
    }
}

/// The qualified destination names of placed types.
pub fn type_names(placed: &[(UserType, String)]) -> TypeNames {
    placed
        .iter()
        .map(|(t, s)| {
            (
                t.oid,
                format!("{}.{}", quote_ident(s), quote_ident(&t.name)),
            )
        })
        .collect()
}

/// Creates the user types the destination does not have yet, dependencies first.
/// Each is recorded in synchdb_objects for `connector`.
pub fn create_types(
    pg: &Pg,
    connector: &str,
    placed: &[(UserType, String)],
) -> Result<(), WorkerError> {
    let names = type_names(placed);
    for (t, schema) in placed {
        let dest = format!("{}.{}", quote_ident(schema), quote_ident(&t.name));
        let exists = pg
            .query("SELECT to_regtype($1) IS NOT NULL", &[Some(&dest)])
            .ctx(|| format!("looking up type {dest}"))?;
        if exists.first().and_then(|r| r[0].as_deref()) == Some("t") {
            continue;
        }
        let Some(sql) = create_sql(t, schema, &names) else {
            continue;
        };
        pg.exec(&sql, &[]).ctx(|| {
            format!(
                "creating type {dest} for source type {}.{}",
                quote_ident(&t.schema),
                quote_ident(&t.name)
            )
        })?;
        crate::objects::record(
            pg,
            connector,
            &crate::objects::Outcome {
                kind: "type",
                source: format!("{}.{}", quote_ident(&t.schema), quote_ident(&t.name)),
                dest: dest.clone(),
                err: None,
            },
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(udt: u32, arr: bool, sql: &str) -> TypeRef {
        type_ref(udt, arr, sql.into())
    }

    #[test]
    fn types_come_after_what_they_use_and_reference_the_copies() {
        let mood = UserType {
            oid: 100,
            schema: "public".into(),
            name: "mood".into(),
            kind: TypeKind::Enum {
                labels: vec!["sad".into(), "it's ok".into()],
            },
        };
        let pos = UserType {
            oid: 101,
            schema: "public".into(),
            name: "a_pos".into(),
            kind: TypeKind::Domain {
                base: r(0, false, "integer"),
                default: Some("1".into()),
                not_null: true,
                collation: None,
                checks: vec!["CONSTRAINT a_pos_check CHECK ((VALUE > 0))".into()],
            },
        };
        let addr = UserType {
            oid: 102,
            schema: "public".into(),
            name: "addr".into(),
            kind: TypeKind::Composite {
                attrs: vec![
                    ("Street".into(), r(0, false, "text"), None),
                    ("moods".into(), r(100, true, "mood[]"), None),
                    ("n".into(), r(101, false, "a_pos"), None),
                ],
            },
        };
        let rng = UserType {
            oid: 103,
            schema: "public".into(),
            name: "textrange".into(),
            kind: TypeKind::Range {
                subtype: r(0, false, "text"),
                opclass: None,
                collation: Some("pg_catalog.\"C\"".into()),
                subtype_diff: None,
                multirange: Some("textmultirange".into()),
            },
        };
        let ordered = order(vec![addr.clone(), rng.clone(), pos.clone(), mood.clone()]);
        let names: Vec<&str> = ordered.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["a_pos", "mood", "addr", "textrange"]);
        let mut map = TypeNames::new();
        for t in &ordered {
            map.insert(t.oid, format!("\"d\".{}", quote_ident(&t.name)));
        }
        assert_eq!(
            create_sql(&mood, "d", &map).unwrap(),
            "CREATE TYPE \"d\".\"mood\" AS ENUM ('sad', 'it''s ok')"
        );
        assert_eq!(
            create_sql(&pos, "d", &map).unwrap(),
            "CREATE DOMAIN \"d\".\"a_pos\" AS integer DEFAULT 1 NOT NULL CONSTRAINT a_pos_check CHECK ((VALUE > 0))"
        );
        assert_eq!(
            create_sql(&addr, "d", &map).unwrap(),
            "CREATE TYPE \"d\".\"addr\" AS (\"Street\" text, \"moods\" \"d\".\"mood\"[], \"n\" \"d\".\"a_pos\")"
        );
        assert_eq!(
            create_sql(&rng, "d", &map).unwrap(),
            "CREATE TYPE \"d\".\"textrange\" AS RANGE (SUBTYPE = text, COLLATION = pg_catalog.\"C\", MULTIRANGE_TYPE_NAME = \"d\".\"textmultirange\")"
        );
    }
}
