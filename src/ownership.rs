//! Connectors of roles that are not superusers (members of synchdb_admin): the
//! worker runs as the extension's owner, so it confines such a connector to
//! what its owner may do. It writes only into destination schemas and tables
//! its owner owns (or a role the owner is a member of owns), and what it
//! creates there (tables with their indexes and owned sequences, user types,
//! other sequences) is given to the owner. The source side is guarded by
//! `ConnParams::password_required`.

use crate::config::{quote_ident, ConnectorConfig};
use crate::error::{DestContext, WorkerError};
use crate::objects::SequenceDef;
use crate::objmap::DestTable;
use crate::pg::Pg;
use crate::usertypes::{TypeKind, UserType};

/// The owner's role name, quoted, when the connector has an owner that is not
/// a superuser (None: no confinement).
pub fn owner_role(pg: &Pg, cfg: &ConnectorConfig) -> Result<Option<String>, WorkerError> {
    let Some(owner) = cfg.owner else {
        return Ok(None);
    };
    let rows = pg
        .query(
            "SELECT quote_ident(rolname), rolsuper FROM pg_catalog.pg_roles WHERE oid = $1::oid",
            &[Some(&owner.to_string())],
        )
        .ctx(|| "looking up the connector's owner".into())?;
    match rows.first() {
        Some(r) if r[1].as_deref() == Some("t") => Ok(None),
        Some(r) => Ok(r[0].clone()),
        None => Err(WorkerError::Config(format!(
            "connector \"{}\" belongs to a role (oid {owner}) that no longer exists; a superuser can drop the \
             connector (synchdb_del_conninfo) and create it again",
            cfg.name
        ))),
    }
}

/// What stands in the way of a connector owned by `role` writing into `plans`:
/// a destination schema that does not exist (the worker does not create schemas
/// for it) or is not the owner's, a destination table that exists and is not
/// the owner's. One line each, with what to do.
pub fn problems(
    pg: &Pg,
    cfg: &ConnectorConfig,
    role: &str,
    plans: &[&DestTable],
) -> Result<Vec<String>, WorkerError> {
    let mut out = Vec::new();
    let mut seen: Vec<&str> = Vec::new();
    let lead = format!(
        "connector \"{}\" belongs to role {role}, which is not a superuser, so it writes only into schemas and tables {role} owns",
        cfg.name
    );
    for p in plans {
        if !seen.contains(&p.schema.as_str()) {
            seen.push(&p.schema);
            let rows = pg
                .query(
                    "SELECT pg_has_role(r.oid, n.nspowner, 'USAGE'), n.nspowner::regrole::text
                       FROM pg_catalog.pg_namespace n, pg_catalog.pg_roles r
                      WHERE n.nspname = $1 AND quote_ident(r.rolname) = $2",
                    &[Some(&p.schema), Some(role)],
                )
                .ctx(|| format!("looking up schema {}", quote_ident(&p.schema)))?;
            match rows.first() {
                None => out.push(format!(
                    "destination schema {} does not exist; {lead}: create it as {role} (CREATE SCHEMA {})",
                    quote_ident(&p.schema),
                    quote_ident(&p.schema)
                )),
                Some(r) if r[0].as_deref() != Some("t") => out.push(format!(
                    "destination schema {} belongs to {}; {lead}: map the tables to a schema of {role}'s \
                     (synchdb_add_objmap 'table' rules)",
                    quote_ident(&p.schema),
                    r[1].as_deref().unwrap_or("?")
                )),
                Some(_) => {}
            }
        }
        if let Some(problem) = table_problem(pg, role, p, &lead)? {
            out.push(problem);
        }
    }
    Ok(out)
}

/// A destination table that exists and is not the owner's.
fn table_problem(
    pg: &Pg,
    role: &str,
    p: &DestTable,
    lead: &str,
) -> Result<Option<String>, WorkerError> {
    let rows = pg
        .query(
            "SELECT pg_has_role(r.oid, c.relowner, 'USAGE'), c.relowner::regrole::text
               FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace,
                    pg_catalog.pg_roles r
              WHERE n.nspname = $1 AND c.relname = $2 AND quote_ident(r.rolname) = $3",
            &[Some(&p.schema), Some(&p.name), Some(role)],
        )
        .ctx(|| format!("looking up {}", p.qualified()))?;
    Ok(match rows.first() {
        Some(r) if r[0].as_deref() != Some("t") => Some(format!(
            "destination table {} belongs to {}; {lead}",
            p.qualified(),
            r[1].as_deref().unwrap_or("?")
        )),
        _ => None,
    })
}

/// CDC is about to write into (or create) `p` for a confined connector.
pub fn check_table(
    pg: &Pg,
    cfg: &ConnectorConfig,
    role: &str,
    p: &DestTable,
) -> Result<(), WorkerError> {
    let problems = problems(pg, cfg, role, &[p])?;
    if problems.is_empty() {
        Ok(())
    } else {
        Err(WorkerError::Config(problems.join("; ")))
    }
}

/// Gives `role` what the connector just created: the tables (their indexes and
/// the sequences they own follow), the user types, the other sequences.
pub fn give(
    pg: &Pg,
    role: &str,
    tables: &[&DestTable],
    types: &[(UserType, String)],
    sequences: &[(SequenceDef, String)],
) -> Result<(), WorkerError> {
    let mut stmts = Vec::new();
    for t in tables {
        stmts.push(format!("ALTER TABLE {} OWNER TO {role}", t.qualified()));
    }
    for (t, schema) in types {
        let what = if matches!(t.kind, TypeKind::Domain { .. }) {
            "DOMAIN"
        } else {
            "TYPE"
        };
        stmts.push(format!(
            "ALTER {what} {}.{} OWNER TO {role}",
            quote_ident(schema),
            quote_ident(&t.name)
        ));
    }
    for (s, schema) in sequences {
        // those a column owns or an identity uses change with their table
        if s.owned_by.is_none() && s.identity_of.is_none() {
            stmts.push(format!(
                "ALTER SEQUENCE {}.{} OWNER TO {role}",
                quote_ident(schema),
                quote_ident(&s.name)
            ));
        }
    }
    for sql in stmts {
        pg.exec(&sql, &[])
            .ctx(|| format!("giving the connector's owner what it created: {sql}"))?;
    }
    Ok(())
}
