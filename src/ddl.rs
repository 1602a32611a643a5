//! SQL that builds destination tables from what the source catalog says.

use crate::config::quote_ident;
use crate::source::SourceTable;

/// CREATE TABLE without the primary key: keys and indexes are built after the rows
/// are in, which is faster than maintaining them row by row.
pub fn create_table(dest_schema: &str, t: &SourceTable) -> String {
    let cols: Vec<String> = t
        .columns
        .iter()
        .map(|c| {
            let mut s = format!("{} {}", quote_ident(&c.name), c.type_sql);
            if let Some(d) = &c.default {
                s.push_str(&format!(" DEFAULT {d}"));
            }
            if c.not_null {
                s.push_str(" NOT NULL");
            }
            s
        })
        .collect();
    format!(
        "CREATE TABLE {}.{} ({})",
        quote_ident(dest_schema),
        quote_ident(&t.name),
        cols.join(", ")
    )
}

pub fn add_primary_key(dest_schema: &str, t: &SourceTable) -> Option<String> {
    if t.primary_key.is_empty() {
        return None;
    }
    let cols: Vec<String> = t.primary_key.iter().map(|c| quote_ident(c)).collect();
    Some(format!(
        "ALTER TABLE {}.{} ADD PRIMARY KEY ({})",
        quote_ident(dest_schema),
        quote_ident(&t.name),
        cols.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::SourceColumn;

    #[test]
    fn create_table_keeps_types_not_null_and_constant_defaults() {
        let t = SourceTable {
            oid: 1,
            schema: "public".into(),
            name: "Orders".into(),
            columns: vec![
                SourceColumn {
                    name: "id".into(),
                    type_sql: "integer".into(),
                    not_null: true,
                    default: None,
                },
                SourceColumn {
                    name: "note".into(),
                    type_sql: "character varying(20)".into(),
                    not_null: false,
                    default: Some("'x'::character varying".into()),
                },
            ],
            primary_key: vec!["id".into()],
        };
        assert_eq!(
            create_table("postgres", &t),
            "CREATE TABLE \"postgres\".\"Orders\" (\"id\" integer NOT NULL, \"note\" character varying(20) DEFAULT 'x'::character varying)"
        );
        assert_eq!(
            add_primary_key("postgres", &t).unwrap(),
            "ALTER TABLE \"postgres\".\"Orders\" ADD PRIMARY KEY (\"id\")"
        );
    }
}
