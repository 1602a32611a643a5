//! A connector's configuration (the `data` of its `synchdb_conninfo` row) and the
//! names of the objects it owns on the source and the destination.

use crate::tls::{SslMode, TlsSettings};
use serde_json::Value;

/// Identifies the destination, so that object names on a shared source never clash
/// between two destinations that use the same connector name.
#[derive(Debug, Clone, Copy)]
pub struct LocalIds {
    pub system_identifier: u64,
    pub database_oid: u32,
}

#[derive(Clone)]
pub struct ConnectorConfig {
    pub name: String,
    pub hostname: String,
    pub port: u16,
    pub user: String,
    /// Encrypted as stored; see `secret`.
    pub pwd: String,
    /// `pwd` was NULL: the password comes from a pgpass file (see `pgpass`),
    /// the one `passfile` names, else libpq's default for the server's user.
    pub pwd_from_file: bool,
    pub passfile: Option<String>,
    /// Created by a role that is not a superuser: the source must ask for the
    /// password (see `ConnParams::password_required`), and the destination
    /// tables must be that role's (`owner`, a role oid).
    pub password_required: bool,
    pub owner: Option<u32>,
    pub srcdb: String,
    pub srcschemas: Vec<String>,
    /// Explicit `schema.table` list; empty means every table of `srcschemas`.
    pub tables: Vec<TableSel>,
    /// `snapshottable`: the tables a start in mode `always` copies again (a subset
    /// of `tables`); empty means all of them.
    pub snapshot_tables: Vec<TableSel>,
    pub connector: String,
    /// ssl_mode, ssl_rootcert, ssl_cert, ssl_key (synchdb_add_extra_conninfo);
    /// `prefer` without files when not set, as libpq.
    pub ssl: TlsSettings,
}

impl std::fmt::Debug for ConnectorConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectorConfig")
            .field("name", &self.name)
            .field("hostname", &self.hostname)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("pwd", &"********")
            .field("srcdb", &self.srcdb)
            .field("srcschemas", &self.srcschemas)
            .field("tables", &self.tables)
            .field("snapshot_tables", &self.snapshot_tables)
            .field("ssl", &self.ssl)
            .finish()
    }
}

/// `'null'`, `''` and SQL NULL all mean "not set" in SynchDB's interface.
pub fn is_unset(v: &str) -> bool {
    let t = v.trim();
    t.is_empty() || t.eq_ignore_ascii_case("null")
}

fn text_field(data: &Value, key: &str) -> Option<String> {
    match data.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

impl ConnectorConfig {
    pub fn from_json(name: &str, json: &str) -> Result<Self, String> {
        let data: Value = serde_json::from_str(json).map_err(|e| {
            format!("connector \"{name}\": its data in synchdb_conninfo is not valid JSON: {e}")
        })?;
        let req = |k: &str| {
            text_field(&data, k)
                .filter(|v| !is_unset(v))
                .ok_or_else(|| {
                    format!("connector \"{name}\": \"{k}\" is missing in synchdb_conninfo.data")
                })
        };
        let port_text = req("port")?;
        let port: u16 = port_text
            .trim()
            .parse()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| {
                format!(
                    "connector \"{name}\": port \"{port_text}\" is not a TCP port number (1-65535)"
                )
            })?;
        let srcschema = text_field(&data, "srcschema").unwrap_or_default();
        let srcschemas: Vec<String> = if is_unset(&srcschema) {
            vec!["public".to_string()]
        } else {
            srcschema
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect()
        };
        let table = text_field(&data, "table").unwrap_or_default();
        let srcdb = req("srcdb")?;
        let tables = parse_table_list(&table, &srcdb, &srcschemas)?;
        let snapshottable = text_field(&data, "snapshottable").unwrap_or_default();
        let snapshot_tables = parse_snapshot_list(&snapshottable, &table, &srcdb, &srcschemas)
            .map_err(|e| format!("connector \"{name}\": snapshottable: {e}"))?;
        let ssl = parse_ssl(&data).map_err(|e| format!("connector \"{name}\": {e}"))?;
        Ok(ConnectorConfig {
            name: name.to_string(),
            hostname: req("hostname")?,
            port,
            user: req("user")?,
            pwd: text_field(&data, "pwd").unwrap_or_default(),
            pwd_from_file: data.get("pwd").is_some_and(|v| v.is_null()),
            passfile: text_field(&data, "passfile").filter(|p| !is_unset(p)),
            password_required: data
                .get("password_required")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            owner: text_field(&data, "owner").and_then(|o| o.trim().parse::<u32>().ok()),
            srcdb,
            srcschemas,
            tables,
            snapshot_tables,
            connector: text_field(&data, "connector").unwrap_or_else(|| "postgres".into()),
            ssl,
        })
    }

    /// Destination schema for the source's tables: named after the source database.
    pub fn dest_schema(&self) -> String {
        self.srcdb.to_lowercase()
    }
}

/// The `ssl_*` keys written by synchdb_add_extra_conninfo.
fn parse_ssl(data: &Value) -> Result<TlsSettings, String> {
    let opt = |k: &str| text_field(data, k).filter(|v| !is_unset(v));
    let mode = match opt("ssl_mode") {
        Some(m) => SslMode::parse(&m)?,
        None => SslMode::default(),
    };
    Ok(TlsSettings {
        mode,
        rootcert: opt("ssl_rootcert"),
        cert: opt("ssl_cert"),
        key: opt("ssl_key"),
    })
}

/// One entry of the `table` option.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TableSel {
    /// `schema.table` (or `db.schema.table`), exactly.
    Exact(String, String),
    /// A PostgreSQL regular expression matched, whole, against `schema.table` of
    /// the tables in the connector's source schemas.
    Pattern(String),
}

/// Characters that make an entry a regular expression (a lone `.` separates
/// schema and table).
const PATTERN_CHARS: &[char] = &[
    '*', '+', '?', '[', ']', '(', ')', '|', '^', '$', '\\', '{', '}',
];

/// Parses the `table` option: a comma list of `schema.table`, `db.schema.table` or
/// regular expressions, or `file:<path>` naming a JSON file with a `table_list`
/// array of such entries (read on this server).
pub fn parse_table_list(
    spec: &str,
    srcdb: &str,
    schemas: &[String],
) -> Result<Vec<TableSel>, String> {
    if is_unset(spec) {
        return Ok(Vec::new());
    }
    let spec = spec.trim();
    let entries: Vec<String> = match spec.strip_prefix("file:") {
        Some(path) => read_table_file(path.trim())?.0,
        None => split_entries(spec),
    };
    entries
        .iter()
        .map(|e| parse_entry(e, srcdb, schemas))
        .collect()
}

/// Parses the `snapshottable` option, in the same forms as `table`. A `file:`
/// holds `snapshot_table_list` (or, failing that, `table_list`). When the option is
/// not set and `table` is a `file:`, that file's `snapshot_table_list` applies.
pub fn parse_snapshot_list(
    spec: &str,
    table_spec: &str,
    srcdb: &str,
    schemas: &[String],
) -> Result<Vec<TableSel>, String> {
    let from_file = |path: &str, fallback: bool| -> Result<Vec<String>, String> {
        let (list, snap) = read_lists(path)?;
        Ok(if snap.is_empty() && fallback {
            list
        } else {
            snap
        })
    };
    let entries: Vec<String> = if is_unset(spec) {
        match table_spec.trim().strip_prefix("file:") {
            Some(path) => from_file(path.trim(), false)?,
            None => Vec::new(),
        }
    } else {
        match spec.trim().strip_prefix("file:") {
            Some(path) => {
                let e = from_file(path.trim(), true)?;
                if e.is_empty() {
                    return Err(format!(
                        "file \"{}\" has no \"snapshot_table_list\" entries",
                        path.trim()
                    ));
                }
                e
            }
            None => split_entries(spec.trim()),
        }
    };
    entries
        .iter()
        .map(|e| parse_entry(e, srcdb, schemas))
        .collect()
}

/// Entries of a comma list; a comma inside {...} (a regex bound) does not split.
fn split_entries(spec: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut cur = String::new();
    for ch in spec.chars() {
        match ch {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth <= 0 => {
                out.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(ch);
    }
    out.push(cur);
    out.into_iter()
        .map(|e| e.trim().to_string())
        .filter(|e| !e.is_empty())
        .collect()
}

/// `file:` JSON: `{"table_list": [...], "snapshot_table_list": [...]}`.
pub fn read_table_file(path: &str) -> Result<(Vec<String>, Vec<String>), String> {
    let (tables, snapshot) = read_lists(path)?;
    if tables.is_empty() {
        return Err(format!(
            "table list file \"{path}\" has no \"table_list\" entries; expected {{\"table_list\": [\"schema.table\", ...]}}"
        ));
    }
    Ok((tables, snapshot))
}

/// Both lists of a table list file; either may be empty.
fn read_lists(path: &str) -> Result<(Vec<String>, Vec<String>), String> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        format!("cannot read table list file \"{path}\" on the destination server: {e}")
    })?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| format!("table list file \"{path}\" is not valid JSON: {e}"))?;
    let list = |key: &str| -> Result<Vec<String>, String> {
        match v.get(key) {
            None | Some(serde_json::Value::Null) => Ok(Vec::new()),
            Some(serde_json::Value::Array(a)) => a
                .iter()
                .map(|x| {
                    x.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| format!("table list file \"{path}\": \"{key}\" must hold strings, found {x}"))
                })
                .collect(),
            Some(other) => Err(format!(
                "table list file \"{path}\": \"{key}\" must be an array of table names, found {other}"
            )),
        }
    };
    Ok((list("table_list")?, list("snapshot_table_list")?))
}

fn parse_entry(entry: &str, srcdb: &str, schemas: &[String]) -> Result<TableSel, String> {
    if entry.contains(PATTERN_CHARS) {
        return Ok(TableSel::Pattern(entry.to_string()));
    }
    let parts: Vec<&str> = entry.split('.').collect();
    let (schema, table) = match parts.as_slice() {
        [t] => (schemas.first().cloned().unwrap_or_else(|| "public".into()), t.to_string()),
        [s, t] => (s.to_string(), t.to_string()),
        [db, s, t] if db.eq_ignore_ascii_case(srcdb) => (s.to_string(), t.to_string()),
        [db, _, _] => {
            return Err(format!(
                "table \"{entry}\" names database \"{db}\", but the connector's source database is \"{srcdb}\""
            ))
        }
        _ => {
            return Err(format!(
                "table entry \"{entry}\" is malformed: expected schema.table, db.schema.table or a regular expression"
            ))
        }
    };
    Ok(TableSel::Exact(schema, table))
}

/// Keeps `[a-z0-9_]` of a name, for object names built from it.
fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect()
}

pub fn bounded(prefix: &str, name: &str, suffix: &str) -> String {
    let mut n = sanitize(name);
    let room = 63usize.saturating_sub(prefix.len() + suffix.len());
    n.truncate(room);
    format!("{prefix}{n}{suffix}")
}

/// Logical replication slot of a connector on its source.
pub fn slot_name(ids: &LocalIds, name: &str) -> String {
    let suffix = format!("_{}_{:08x}", ids.database_oid, ids.system_identifier as u32);
    bounded("synchdb_", name, &suffix)
}

/// Publication of a connector on its source.
pub fn publication_name(ids: &LocalIds, name: &str) -> String {
    let suffix = format!(
        "_{}_{:08x}_pub",
        ids.database_oid, ids.system_identifier as u32
    );
    bounded("synchdb_", name, &suffix)
}

/// Replication origin that records a connector's progress on the destination.
pub fn origin_name(dboid: u32, name: &str) -> String {
    bounded("synchdb_", name, &format!("_{dboid}"))
}

/// `"ident"` with embedded quotes doubled.
pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// `'literal'` for standard_conforming_strings=on (always on since PostgreSQL 9.1).
pub fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: &str = r#"{"hostname":"127.0.0.1","port":5432,"user":"myuser","pwd":"x","srcdb":"postgres","srcschema":"public","table":"null","snapshottable":"null","connector":"postgres"}"#;

    #[test]
    fn parses_the_reference_connector() {
        let c = ConnectorConfig::from_json("pgconn", SEED).unwrap();
        assert_eq!(c.port, 5432);
        assert_eq!(c.srcschemas, vec!["public"]);
        assert!(c.tables.is_empty());
        assert_eq!(c.dest_schema(), "postgres");
        assert!(!format!("{c:?}").contains("\"x\""));
        assert_eq!(c.ssl, TlsSettings::default());
        assert_eq!(c.ssl.mode, SslMode::Prefer);
    }

    #[test]
    fn parses_the_ssl_settings() {
        let with = SEED.replace(
            "\"connector\":\"postgres\"",
            "\"connector\":\"postgres\",\"ssl_mode\":\"verify-full\",\"ssl_rootcert\":\"/x/ca.crt\",\"ssl_cert\":\"/x/c.pem\",\"ssl_key\":\"null\"",
        );
        let c = ConnectorConfig::from_json("c", &with).unwrap();
        assert_eq!(c.ssl.mode, SslMode::VerifyFull);
        assert_eq!(c.ssl.rootcert.as_deref(), Some("/x/ca.crt"));
        assert_eq!(c.ssl.cert.as_deref(), Some("/x/c.pem"));
        assert_eq!(c.ssl.key, None);
        let bad = SEED.replace(
            "\"connector\":\"postgres\"",
            "\"connector\":\"postgres\",\"ssl_mode\":\"sometimes\"",
        );
        let e = ConnectorConfig::from_json("c", &bad).unwrap_err();
        assert!(
            e.starts_with("connector \"c\": unknown ssl_mode \"sometimes\""),
            "{e}"
        );
    }

    #[test]
    fn rejects_bad_port_and_table_entries() {
        let bad = SEED.replace("5432", "\"70000\"");
        assert!(ConnectorConfig::from_json("c", &bad)
            .unwrap_err()
            .contains("not a TCP port"));
        let t = parse_table_list(
            "public.a, other.b,postgres.public.c",
            "postgres",
            &["public".into()],
        )
        .unwrap();
        assert_eq!(
            t,
            vec![
                TableSel::Exact("public".into(), "a".into()),
                TableSel::Exact("other".into(), "b".into()),
                TableSel::Exact("public".into(), "c".into())
            ]
        );
        // a regex (its comma inside {} does not split the list)
        let t = parse_table_list(r"sales\.o.*, public.x_{1,3}", "db", &[]).unwrap();
        assert_eq!(
            t,
            vec![
                TableSel::Pattern(r"sales\.o.*".into()),
                TableSel::Pattern("public.x_{1,3}".into())
            ]
        );
        // file: JSON
        let path = std::env::temp_dir().join(format!("sdb_tables_{}.json", std::process::id()));
        std::fs::write(
            &path,
            r#"{"table_list": ["public.a", "s\\..*"], "snapshot_table_list": ["public.a"]}"#,
        )
        .unwrap();
        let t = parse_table_list(&format!("file:{}", path.display()), "db", &[]).unwrap();
        assert_eq!(
            t,
            vec![
                TableSel::Exact("public".into(), "a".into()),
                TableSel::Pattern(r"s\..*".into())
            ]
        );
        // snapshottable: from the table file when not set, or its own file or list
        let file = format!("file:{}", path.display());
        let a = vec![TableSel::Exact("public".into(), "a".into())];
        assert_eq!(parse_snapshot_list("null", &file, "db", &[]).unwrap(), a);
        assert_eq!(parse_snapshot_list(&file, "null", "db", &[]).unwrap(), a);
        assert_eq!(parse_snapshot_list("", "x.y", "db", &[]).unwrap(), vec![]);
        assert_eq!(
            parse_snapshot_list("free.customers, s\\.o.*", "null", "db", &[]).unwrap(),
            vec![
                TableSel::Exact("free".into(), "customers".into()),
                TableSel::Pattern(r"s\.o.*".into())
            ]
        );
        let json = SEED.replace(
            "\"snapshottable\":\"null\"",
            "\"snapshottable\":\"free.customers\"",
        );
        let c = ConnectorConfig::from_json("c", &json).unwrap();
        assert_eq!(
            c.snapshot_tables,
            vec![TableSel::Exact("free".into(), "customers".into())]
        );
        let bad = SEED.replace(
            "\"snapshottable\":\"null\"",
            "\"snapshottable\":\"a.b.c.d\"",
        );
        let e = ConnectorConfig::from_json("c", &bad).unwrap_err();
        assert!(
            e.starts_with("connector \"c\": snapshottable: table entry"),
            "{e}"
        );
        std::fs::write(&path, r#"{"tables": []}"#).unwrap();
        let e = parse_table_list(&format!("file:{}", path.display()), "db", &[]).unwrap_err();
        assert!(e.contains("no \"table_list\""), "{e}");
        std::fs::remove_file(&path).unwrap();
        assert!(parse_table_list("file:/nonexistent/x.json", "db", &[])
            .unwrap_err()
            .contains("cannot read table list file \"/nonexistent/x.json\""));
        assert!(parse_table_list("x.y.z", "postgres", &[])
            .unwrap_err()
            .contains("names database \"x\""));
        assert!(parse_table_list("a.b.c.d", "postgres", &[])
            .unwrap_err()
            .contains("malformed"));
    }

    #[test]
    fn object_names_are_bounded_and_distinct_per_destination() {
        let a = LocalIds {
            system_identifier: 0x1234_5678_9abc_def0,
            database_oid: 5,
        };
        let b = LocalIds {
            system_identifier: 0x1234_5678_9abc_def0,
            database_oid: 6,
        };
        assert_eq!(slot_name(&a, "PgConn"), "synchdb_pgconn_5_9abcdef0");
        assert_ne!(slot_name(&a, "x"), slot_name(&b, "x"));
        assert!(slot_name(&a, &"n".repeat(200)).len() <= 63);
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
    }
}
