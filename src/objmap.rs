//! Object mapping rules (`synchdb_objmap`): where a source table lands, what its
//! columns are called and typed there, and which values are transformed on the way.
//! Parsing and name resolution live here and are pure; the snapshot, the applier and
//! the reconciler consult the resulting `Rules`.

use std::collections::HashMap;

/// A destination type from a `datatype` rule: `type|size`. Size 0 drops any length,
/// -1 keeps the source's, anything else is the new length (or precision).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeRule {
    pub name: String,
    pub size: i64,
}

impl TypeRule {
    pub fn parse(dstobj: &str) -> Result<TypeRule, String> {
        let (name, size) = match dstobj.rsplit_once('|') {
            Some((n, s)) => (n.trim(), s.trim()),
            None => (dstobj.trim(), "0"),
        };
        if name.is_empty() {
            return Err(format!(
                "datatype rule \"{dstobj}\" names no type; expected type|size, e.g. bigint|0 or varchar|64"
            ));
        }
        let size: i64 = size.parse().map_err(|_| {
            format!("datatype rule \"{dstobj}\": size \"{size}\" is not a number (0 drops the length, -1 keeps the source's)")
        })?;
        if size < -1 {
            return Err(format!(
                "datatype rule \"{dstobj}\": size must be -1, 0 or positive"
            ));
        }
        Ok(TypeRule {
            name: name.to_string(),
            size,
        })
    }

    /// The destination type for a source column declared as `source_type` (as
    /// format_type prints it, e.g. `character varying(20)`).
    pub fn apply(&self, source_type: &str) -> String {
        match self.size {
            0 => self.name.clone(),
            -1 => match type_modifier(source_type) {
                Some(m) => format!("{}{m}", self.name),
                None => self.name.clone(),
            },
            n => format!("{}({n})", self.name),
        }
    }
}

/// `(20)` of `character varying(20)`, `(10,2)` of `numeric(10,2)`, `(3)` of
/// `timestamp(3) without time zone`; None without a modifier. Array brackets are
/// not a modifier.
fn type_modifier(t: &str) -> Option<&str> {
    let start = t.find('(')?;
    let end = t[start..].find(')')? + start;
    Some(&t[start..=end])
}

type TableKey = (String, String);
type ColKey = (String, String, String);

/// The enabled rules of one connector.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    tables: HashMap<TableKey, TableKey>,
    columns: HashMap<ColKey, String>,
    col_types: HashMap<ColKey, TypeRule>,
    /// (canonical source type without modifier, serial) -> rule
    type_rules: Vec<(String, bool, TypeRule)>,
    transforms: HashMap<ColKey, String>,
}

/// One row of `synchdb_objmap`; `canonical` is, for a `type|serial` datatype rule,
/// the destination's canonical spelling of the type (format_type(to_regtype(..))).
pub struct RuleRow {
    pub objtype: String,
    pub srcobj: String,
    pub dstobj: String,
    pub canonical: Option<String>,
}

/// `srcobj` split on dots, with a leading source database name dropped.
/// Names are case-sensitive, as PostgreSQL's quoted identifiers.
pub fn split_srcobj(srcobj: &str, srcdb: &str, parts: usize) -> Result<Vec<String>, String> {
    let v: Vec<String> = srcobj.split('.').map(|s| s.trim().to_string()).collect();
    let v = if v.len() == parts + 1 {
        if !v[0].eq_ignore_ascii_case(srcdb) {
            return Err(format!(
                "\"{srcobj}\" names database \"{}\", but the connector's source database is \"{srcdb}\"",
                v[0]
            ));
        }
        v[1..].to_vec()
    } else {
        v
    };
    if v.len() != parts || v.iter().any(|p| p.is_empty()) {
        let want = if parts == 2 {
            "schema.table (or srcdb.schema.table)"
        } else {
            "schema.table.column (or srcdb.schema.table.column)"
        };
        return Err(format!("\"{srcobj}\" is not {want}"));
    }
    Ok(v)
}

/// Destination of a `table` rule: `name` (schema public) or `schema.name`.
pub fn parse_dest_table(dstobj: &str) -> Result<TableKey, String> {
    let v: Vec<&str> = dstobj.split('.').map(str::trim).collect();
    match v.as_slice() {
        [t] if !t.is_empty() => Ok(("public".into(), t.to_string())),
        [s, t] if !s.is_empty() && !t.is_empty() => Ok((s.to_string(), t.to_string())),
        _ => Err(format!(
            "destination table \"{dstobj}\" is not name or schema.name"
        )),
    }
}

impl Rules {
    pub fn parse(rows: &[RuleRow], srcdb: &str) -> Result<Rules, String> {
        let mut r = Rules::default();
        for row in rows {
            let err = |e: String| {
                format!(
                    "object mapping rule {} \"{}\": {e}",
                    row.objtype, row.srcobj
                )
            };
            let col = |srcobj: &str| -> Result<ColKey, String> {
                let v = split_srcobj(srcobj, srcdb, 3).map_err(err)?;
                Ok((v[0].clone(), v[1].clone(), v[2].clone()))
            };
            match row.objtype.as_str() {
                "table" => {
                    let v = split_srcobj(&row.srcobj, srcdb, 2).map_err(err)?;
                    let dst = parse_dest_table(&row.dstobj).map_err(err)?;
                    r.tables.insert((v[0].clone(), v[1].clone()), dst);
                }
                "column" => {
                    let name = row.dstobj.trim();
                    if name.is_empty() {
                        return Err(err("the new column name is empty".into()));
                    }
                    r.columns.insert(col(&row.srcobj)?, name.to_string());
                }
                "datatype" => {
                    let rule = TypeRule::parse(&row.dstobj).map_err(err)?;
                    match row.srcobj.rsplit_once('|') {
                        Some((ty, serial)) => {
                            let serial = match serial.trim().to_ascii_lowercase().as_str() {
                                "true" | "t" => true,
                                "false" | "f" => false,
                                other => {
                                    return Err(err(format!(
                                        "\"{other}\" after | must be true (serial columns) or false"
                                    )))
                                }
                            };
                            let canon = row
                                .canonical
                                .clone()
                                .unwrap_or_else(|| ty.trim().to_ascii_lowercase());
                            r.type_rules.push((canon, serial, rule));
                        }
                        None => {
                            r.col_types.insert(col(&row.srcobj)?, rule);
                        }
                    }
                }
                "transform" => {
                    compile_transform(&row.dstobj, "$1", "$1").map_err(err)?;
                    r.transforms.insert(col(&row.srcobj)?, row.dstobj.clone());
                }
                other => {
                    return Err(format!(
                        "unknown object mapping type \"{other}\"; valid types are table, column, datatype, transform"
                    ))
                }
            }
        }
        Ok(r)
    }

    /// Where source table schema.table lands: a rule, else `default_schema`.table.
    pub fn dest_table(&self, schema: &str, table: &str, default_schema: &str) -> TableKey {
        self.tables
            .get(&(schema.to_string(), table.to_string()))
            .cloned()
            .unwrap_or_else(|| (default_schema.to_string(), table.to_string()))
    }

    pub fn dest_column(&self, schema: &str, table: &str, column: &str) -> String {
        self.columns
            .get(&key(schema, table, column))
            .cloned()
            .unwrap_or_else(|| column.to_string())
    }

    /// The rule that decides a column's destination type, if any: the column's own,
    /// else one for every column of its source type.
    pub fn type_rule(
        &self,
        schema: &str,
        table: &str,
        column: &str,
        canonical_type: &str,
        serial: bool,
    ) -> Option<&TypeRule> {
        self.col_types.get(&key(schema, table, column)).or_else(|| {
            self.type_rules
                .iter()
                .find(|(t, s, _)| t == canonical_type && *s == serial)
                .map(|(_, _, r)| r)
        })
    }

    pub fn transform(&self, schema: &str, table: &str, column: &str) -> Option<&str> {
        self.transforms
            .get(&key(schema, table, column))
            .map(String::as_str)
    }

    pub fn has_transforms(&self, schema: &str, table: &str) -> bool {
        self.transforms
            .keys()
            .any(|(s, t, _)| s == schema && t == table)
    }

    /// Rules that name a table outside `tables` (source schema, table): an
    /// unknown source table is a user error worth reporting.
    pub fn unknown_tables(&self, tables: &[(String, String)]) -> Vec<String> {
        let known = |s: &String, t: &String| tables.iter().any(|(a, b)| a == s && b == t);
        let mut out: Vec<String> = self
            .tables
            .keys()
            .map(|(s, t)| (s, t))
            .chain(self.columns.keys().map(|(s, t, _)| (s, t)))
            .chain(self.col_types.keys().map(|(s, t, _)| (s, t)))
            .chain(self.transforms.keys().map(|(s, t, _)| (s, t)))
            .filter(|(s, t)| !known(s, t))
            .map(|(s, t)| format!("{s}.{t}"))
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// Column rules (name, type or transform) of `schema.table` whose column is not
    /// among `columns`.
    pub fn unknown_columns(&self, schema: &str, table: &str, columns: &[&str]) -> Vec<String> {
        let mut out: Vec<String> = self
            .columns
            .keys()
            .chain(self.col_types.keys())
            .chain(self.transforms.keys())
            .filter(|(s, t, c)| s == schema && t == table && !columns.contains(&c.as_str()))
            .map(|(s, t, c)| format!("{s}.{t}.{c}"))
            .collect();
        out.sort();
        out.dedup();
        out
    }
}

fn key(s: &str, t: &str, c: &str) -> ColKey {
    (s.to_string(), t.to_string(), c.to_string())
}

/// Turns a transform expression into SQL in which the incoming value is never
/// spliced as text: `'%d'` (the value as a string literal) becomes `as_text`, a
/// `%d` inside a longer literal becomes a concatenation with `as_text`, and a bare
/// `%d` becomes `typed` (the value in its column's type). Dollar-quoted and E''
/// strings may not contain `%d`.
pub fn compile_transform(expr: &str, as_text: &str, typed: &str) -> Result<String, String> {
    if !expr.contains("%d") {
        return Err(format!(
            "transform \"{expr}\" does not use %d, the incoming value"
        ));
    }
    let b = expr.as_bytes();
    let mut out = String::with_capacity(expr.len() + 16);
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match c {
            b'\'' => {
                // E'...' uses backslash escapes: left alone, but no %d inside
                let escaped = i > 0
                    && (b[i - 1] == b'e' || b[i - 1] == b'E')
                    && (i < 2 || !(b[i - 2].is_ascii_alphanumeric() || b[i - 2] == b'_'));
                let mut j = i + 1;
                let mut lit = String::new();
                loop {
                    if j >= b.len() {
                        return Err(format!("transform \"{expr}\" has an unterminated string"));
                    }
                    if escaped && b[j] == b'\\' && j + 1 < b.len() {
                        lit.push_str(&expr[j..j + 2]);
                        j += 2;
                        continue;
                    }
                    if b[j] == b'\'' {
                        if j + 1 < b.len() && b[j + 1] == b'\'' {
                            lit.push_str("''");
                            j += 2;
                            continue;
                        }
                        break;
                    }
                    let ch_len = utf8_len(b[j]);
                    lit.push_str(&expr[j..j + ch_len]);
                    j += ch_len;
                }
                if lit.contains("%d") {
                    if escaped {
                        return Err(format!(
                            "transform \"{expr}\": use %d in a plain '...' string, not E'...'"
                        ));
                    }
                    let pieces: Vec<&str> = lit.split("%d").collect();
                    let mut parts: Vec<String> = Vec::new();
                    for (k, p) in pieces.iter().enumerate() {
                        if !p.is_empty() {
                            parts.push(format!("'{p}'"));
                        }
                        if k + 1 < pieces.len() {
                            parts.push(format!("({as_text})"));
                        }
                    }
                    out.push('(');
                    out.push_str(&parts.join(" || "));
                    out.push(')');
                } else {
                    out.push('\'');
                    out.push_str(&lit);
                    out.push('\'');
                }
                i = j + 1;
            }
            b'"' => {
                let end = expr[i + 1..].find('"').ok_or_else(|| {
                    format!("transform \"{expr}\" has an unterminated quoted identifier")
                })?;
                out.push_str(&expr[i..i + end + 2]);
                i += end + 2;
            }
            b'$' if i + 1 < b.len() && (b[i + 1] == b'$' || b[i + 1].is_ascii_alphabetic()) => {
                // $tag$...$tag$ (a parameter like $1 is no quote)
                let tag_end = expr[i + 1..].find('$').map(|e| i + 1 + e);
                let tag_ok = tag_end.is_some_and(|e| {
                    expr[i + 1..e]
                        .bytes()
                        .all(|c| c.is_ascii_alphanumeric() || c == b'_')
                });
                match tag_end {
                    Some(e) if tag_ok => {
                        let tag = &expr[i..=e];
                        let body_start = e + 1;
                        let close = expr[body_start..].find(tag).ok_or_else(|| {
                            format!("transform \"{expr}\" has an unterminated {tag} string")
                        })?;
                        if expr[body_start..body_start + close].contains("%d") {
                            return Err(format!(
                                "transform \"{expr}\": use %d in a plain '...' string, not a dollar-quoted one"
                            ));
                        }
                        let stop = body_start + close + tag.len();
                        out.push_str(&expr[i..stop]);
                        i = stop;
                    }
                    _ => {
                        out.push('$');
                        i += 1;
                    }
                }
            }
            b'-' if i + 1 < b.len() && b[i + 1] == b'-' => {
                return Err(format!(
                    "transform \"{expr}\" contains a comment (--); write the expression without it"
                ));
            }
            b'%' if i + 1 < b.len() && b[i + 1] == b'd' => {
                out.push('(');
                out.push_str(typed);
                out.push(')');
                i += 2;
            }
            b';' => {
                return Err(format!(
                    "transform \"{expr}\" must be one expression, without ';'"
                ));
            }
            _ => {
                let n = utf8_len(c);
                out.push_str(&expr[i..i + n]);
                i += n;
            }
        }
    }
    Ok(out)
}

fn utf8_len(first: u8) -> usize {
    match first {
        0xF0..=0xFF => 4,
        0xE0..=0xEF => 3,
        0xC0..=0xDF => 2,
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(objtype: &str, srcobj: &str, dstobj: &str) -> RuleRow {
        RuleRow {
            objtype: objtype.into(),
            srcobj: srcobj.into(),
            dstobj: dstobj.into(),
            canonical: None,
        }
    }

    #[test]
    fn transforms_never_splice_the_value() {
        assert_eq!(
            compile_transform("'>>>' || '%d' || '<<<'", "$1", "$1::int4").unwrap(),
            "'>>>' || (($1)) || '<<<'"
        );
        assert_eq!(
            compile_transform("%d + 500", "$1", "$1::int4").unwrap(),
            "($1::int4) + 500"
        );
        assert_eq!(
            compile_transform("'id-%d-x'", "v", "v").unwrap(),
            "('id-' || (v) || '-x')"
        );
        assert_eq!(
            compile_transform("upper('%d') || 'it''s'", "$1", "$1").unwrap(),
            "upper((($1))) || 'it''s'"
        );
        assert_eq!(
            compile_transform("\"%d\" || %d", "$1", "$1").unwrap(),
            "\"%d\" || ($1)"
        );
        assert_eq!(
            compile_transform("$$x$$ || %d", "$1", "$1").unwrap(),
            "$$x$$ || ($1)"
        );
        for bad in [
            "upper(x)",
            "'%d'; DROP TABLE t",
            "%d -- comment",
            "E'%d\\n'",
            "$$%d$$",
            "'%d",
        ] {
            assert!(compile_transform(bad, "$1", "$1").is_err(), "{bad}");
        }
    }

    #[test]
    fn rules_resolve_names_and_types() {
        let mut rows = vec![
            row("table", "inventory.public.products", "stuff"),
            row("table", "public.customers", "schema1.people"),
            row("column", "public.customers.last_name", "family_name"),
            row("datatype", "public.geom.g", "text|0"),
            row("datatype", "int4|false", "int8|0"),
            row("transform", "public.products.name", "'>' || '%d'"),
        ];
        rows[4].canonical = Some("integer".into());
        let r = Rules::parse(&rows, "inventory").unwrap();
        assert_eq!(
            r.dest_table("public", "products", "inventory"),
            ("public".into(), "stuff".into())
        );
        assert_eq!(
            r.dest_table("public", "customers", "inventory"),
            ("schema1".into(), "people".into())
        );
        assert_eq!(
            r.dest_table("public", "x", "inventory"),
            ("inventory".into(), "x".into())
        );
        assert_eq!(
            r.dest_column("public", "customers", "last_name"),
            "family_name"
        );
        assert_eq!(r.dest_column("public", "customers", "email"), "email");
        assert_eq!(
            r.type_rule("public", "geom", "g", "bytea", false)
                .unwrap()
                .apply("bytea"),
            "text"
        );
        assert_eq!(
            r.type_rule("public", "t", "q", "integer", false)
                .unwrap()
                .apply("integer"),
            "int8"
        );
        assert!(r.type_rule("public", "t", "q", "integer", true).is_none());
        assert!(r.has_transforms("public", "products"));
        assert!(!r.has_transforms("public", "customers"));
        assert_eq!(
            r.unknown_tables(&[("public".into(), "products".into())]),
            vec!["public.customers", "public.geom"]
        );
        assert_eq!(
            r.unknown_columns("public", "customers", &["id", "email"]),
            vec!["public.customers.last_name"]
        );
        assert!(Rules::parse(&[row("index", "a.b", "c")], "db")
            .unwrap_err()
            .contains("unknown object mapping type \"index\""));
        assert!(Rules::parse(&[row("table", "other.public.t", "c")], "db")
            .unwrap_err()
            .contains("names database \"other\""));
        assert!(Rules::parse(&[row("column", "public.t", "c")], "db")
            .unwrap_err()
            .contains("is not schema.table.column"));
    }

    #[test]
    fn type_rules_set_keep_or_drop_the_length() {
        let r = TypeRule::parse("varchar|64").unwrap();
        assert_eq!(r.apply("text"), "varchar(64)");
        let r = TypeRule::parse("varchar|-1").unwrap();
        assert_eq!(r.apply("character varying(20)"), "varchar(20)");
        assert_eq!(r.apply("text"), "varchar");
        let r = TypeRule::parse("numeric|-1").unwrap();
        assert_eq!(r.apply("numeric(10,2)"), "numeric(10,2)");
        let r = TypeRule::parse("text|0").unwrap();
        assert_eq!(r.apply("character varying(20)"), "text");
        assert!(TypeRule::parse("|3").is_err());
        assert!(TypeRule::parse("int|x").is_err());
        assert!(TypeRule::parse("int|-5").is_err());
    }
}

/// How one source table is built on the destination under the rules.
#[derive(Debug, Clone)]
pub struct DestTable {
    /// The source table's oid (the relation id of its pgoutput messages).
    pub src_oid: u32,
    pub src_schema: String,
    pub src_name: String,
    pub schema: String,
    pub name: String,
    pub columns: Vec<DestColumn>,
    /// Destination names of the primary key columns.
    pub primary_key: Vec<String>,
    /// Destination names of the primary key's INCLUDE columns.
    pub pk_include: Vec<String>,
    /// The source's replica identity ('d', 'f', 'i', 'n'), and for 'i' the index
    /// name and the destination names of its key columns.
    pub replica_identity: char,
    pub identity_index_name: String,
    pub identity_index: Vec<String>,
    /// A partitioned table's partition key (`RANGE (d)`).
    pub partitioned_by: Option<String>,
    /// A partition: its destination parent (qualified) and its bound, filled in
    /// once every table is planned.
    pub attach_to: Option<(String, String)>,
}

#[derive(Debug, Clone)]
pub struct DestColumn {
    pub src: String,
    pub name: String,
    /// The default translation (what the column is without a datatype rule).
    pub natural_type: String,
    pub type_sql: String,
    pub not_null: bool,
    pub default: Option<String>,
    pub source_type: String,
    pub serial: bool,
    pub transform: Option<String>,
    /// A generated column: the destination computes it, nothing copies it.
    pub generated: Option<crate::source::Generated>,
    /// The source column's collation when not its type's default.
    pub collation: Option<String>,
    pub identity: Option<crate::source::Identity>,
}

impl DestColumn {
    /// Whether rows from the source carry a value for this column.
    pub fn copied(&self) -> bool {
        self.generated.is_none()
    }
}

impl DestTable {
    pub fn qualified(&self) -> String {
        format!(
            "{}.{}",
            crate::config::quote_ident(&self.schema),
            crate::config::quote_ident(&self.name)
        )
    }

    pub fn has_transforms(&self) -> bool {
        self.columns.iter().any(|c| c.transform.is_some())
    }

    pub fn ext_tbname(&self) -> String {
        format!("{}.{}", self.src_schema, self.src_name)
    }
}

/// The destination plan of a source table read from the catalog.
pub fn plan_table(
    rules: &Rules,
    t: &crate::source::SourceTable,
    default_schema: &str,
) -> DestTable {
    let (schema, name) = rules.dest_table(&t.schema, &t.name, default_schema);
    let columns = t
        .columns
        .iter()
        .map(|c| {
            let rule = rules.type_rule(&t.schema, &t.name, &c.name, &c.base_type, c.serial);
            let type_sql = match rule {
                Some(r) => r.apply(&c.source_type),
                None => c.type_sql.clone(),
            };
            DestColumn {
                src: c.name.clone(),
                name: rules.dest_column(&t.schema, &t.name, &c.name),
                natural_type: c.type_sql.clone(),
                // a default written for the source's type may not suit another
                default: if rule.is_some() {
                    None
                } else {
                    c.default.clone()
                },
                type_sql,
                not_null: c.not_null,
                source_type: c.source_type.clone(),
                serial: c.serial,
                transform: rules
                    .transform(&t.schema, &t.name, &c.name)
                    .map(str::to_string),
                generated: c.generated.clone(),
                identity: c.identity.clone(),
                // a datatype rule may give a type without collations
                collation: if rule.is_some() {
                    None
                } else {
                    c.collation.clone()
                },
            }
        })
        .collect();
    let dcols = |v: &[String]| -> Vec<String> {
        v.iter()
            .map(|k| rules.dest_column(&t.schema, &t.name, k))
            .collect()
    };
    DestTable {
        src_oid: t.oid,
        src_schema: t.schema.clone(),
        src_name: t.name.clone(),
        schema,
        name,
        columns,
        primary_key: dcols(&t.primary_key),
        pk_include: dcols(&t.pk_include),
        replica_identity: t.replica_identity,
        identity_index_name: t.identity_index_name.clone(),
        identity_index: dcols(&t.identity_index),
        partitioned_by: t.partitioned_by.clone(),
        attach_to: None,
    }
}

/// Two source tables must not land on one destination table; the error names both
/// and the rule that separates them.
pub fn check_clashes(plans: &[DestTable], connector: &str) -> Result<(), String> {
    let mut seen: HashMap<(&str, &str), &DestTable> = HashMap::new();
    for p in plans {
        if let Some(other) = seen.insert((p.schema.as_str(), p.name.as_str()), p) {
            return Err(clash_message(other, p, connector));
        }
    }
    Ok(())
}

/// Every pair of source tables that would land on one destination table, each
/// with the rule that separates them.
pub fn all_clashes(plans: &[DestTable], connector: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut seen: HashMap<(&str, &str), &DestTable> = HashMap::new();
    for p in plans {
        if let Some(other) = seen.insert((p.schema.as_str(), p.name.as_str()), p) {
            out.push(clash_message(other, p, connector));
        }
    }
    out
}

fn clash_message(other: &DestTable, p: &DestTable, connector: &str) -> String {
    format!(
        "source tables \"{}\" and \"{}\" would both be replicated to \"{}.{}\"; \
         replicate only one of them (option \"table\"), or map one elsewhere: \
         SELECT synchdb_add_objmap('{connector}', 'table', '{}', 'schema.new_name')",
        other.ext_tbname(),
        p.ext_tbname(),
        p.schema,
        p.name,
        p.ext_tbname()
    )
}

/// Every rule must name a replicated table and, for column rules, one of its
/// columns; a typo would otherwise be silently ignored.
pub fn check_rules(
    rules: &Rules,
    tables: &[crate::source::SourceTable],
    connector: &str,
) -> Result<(), String> {
    let keys: Vec<(String, String)> = tables
        .iter()
        .map(|t| (t.schema.clone(), t.name.clone()))
        .collect();
    let unknown = rules.unknown_tables(&keys);
    if !unknown.is_empty() {
        return Err(format!(
            "object mapping rules of connector \"{connector}\" name source table(s) it does not replicate: {}; \
             fix them with synchdb_add_objmap or disable them with synchdb_del_objmap",
            unknown.join(", ")
        ));
    }
    for t in tables {
        let cols: Vec<&str> = t.columns.iter().map(|c| c.name.as_str()).collect();
        let unknown = rules.unknown_columns(&t.schema, &t.name, &cols);
        if !unknown.is_empty() {
            return Err(format!(
                "object mapping rules of connector \"{connector}\" name source column(s) that do not exist: {}; \
                 fix them with synchdb_add_objmap or disable them with synchdb_del_objmap",
                unknown.join(", ")
            ));
        }
    }
    Ok(())
}

/// The connector's enabled rules, read in the current transaction.
pub fn load(
    pg: &crate::pg::Pg,
    connector: &str,
    srcdb: &str,
) -> Result<Rules, crate::error::WorkerError> {
    use crate::error::{DestContext, WorkerError};
    // a type|serial rule's type is spelled the way this server spells it, so that
    // int4, integer and int all name the same type
    let rows = pg
        .query(
            "SELECT objtype::text, srcobj::text, dstobj,
                    CASE WHEN objtype = 'datatype' AND strpos(srcobj, '|') > 0
                         THEN synchdb_canonical_type(split_part(srcobj, '|', 1)) END
               FROM synchdb_objmap WHERE name = $1 AND enabled ORDER BY objtype, srcobj",
            &[Some(connector)],
        )
        .ctx(|| "reading synchdb_objmap".into())?;
    let rows: Vec<RuleRow> = rows
        .into_iter()
        .map(|r| RuleRow {
            objtype: r[0].clone().unwrap_or_default(),
            srcobj: r[1].clone().unwrap_or_default(),
            dstobj: r[2].clone().unwrap_or_default(),
            canonical: r[3].clone(),
        })
        .collect();
    Rules::parse(&rows, srcdb).map_err(WorkerError::Config)
}

/// Writes the rows of synchdb_attribute for a table just built or altered: one per
/// column, by destination relation and attribute number, so synchdb_att_view
/// follows later renames of the destination by itself.
pub fn record_attributes(
    pg: &crate::pg::Pg,
    connector: &str,
    t: &DestTable,
) -> Result<(), crate::error::WorkerError> {
    use crate::error::DestContext;
    let cols: Vec<serde_json::Value> = t
        .columns
        .iter()
        .map(|c| serde_json::json!({"src": c.src, "typ": c.source_type, "dst": c.name, "serial": c.serial, "def": c.natural_type}))
        .collect();
    let cols = serde_json::Value::Array(cols).to_string();
    let ext = t.ext_tbname();
    pg.exec(
        "DELETE FROM synchdb_attribute
          WHERE name = $1 AND (ext_tbname = $2 OR (ext_relid = $3::oid AND $3::oid <> 0))",
        &[Some(connector), Some(&ext), Some(&t.src_oid.to_string())],
    )
    .ctx(|| "updating synchdb_attribute".into())?;
    pg.exec(
        "INSERT INTO synchdb_attribute (name, type, attrelid, attnum, ext_tbname, ext_attname, ext_atttypename, ext_isserial, ext_deftype, ext_relid)
         SELECT $1, 'postgres', a.attrelid, a.attnum, $2, j.src, j.typ, j.serial, j.def, $5::oid
           FROM jsonb_to_recordset($3::jsonb) AS j(src text, typ text, dst text, serial bool, def text)
           JOIN pg_attribute a ON a.attrelid = $4::regclass AND a.attname = j.dst AND NOT a.attisdropped",
        &[
            Some(connector),
            Some(&ext),
            Some(&cols),
            Some(&t.qualified()),
            Some(&t.src_oid.to_string()),
        ],
    )
    .ctx(|| format!("recording the columns of {} in synchdb_attribute", t.qualified()))?;
    Ok(())
}
