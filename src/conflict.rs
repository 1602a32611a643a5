//! Conflicts in applying a change, recognised by kind with PostgreSQL 18's
//! names (its pg_stat_subscription_stats and conflict log lines), counted per
//! connector (synchdb_conflict_stats) and logged with the table and the change.
//! Handling follows PostgreSQL's subscriber: a row missing for an UPDATE or
//! DELETE is logged and skipped (synchdb.on_missing_row = error makes it a
//! failed change instead); a unique violation is a failed change, which
//! synchdb.error_handling_strategy decides (exit, skip, retry).

use crate::pg::{Pg, PgError};
use crate::state::Stat;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conflict {
    InsertExists,
    UpdateExists,
    UpdateMissing,
    DeleteMissing,
    MultipleUniqueConflicts,
}

impl Conflict {
    pub fn name(self) -> &'static str {
        match self {
            Conflict::InsertExists => "insert_exists",
            Conflict::UpdateExists => "update_exists",
            Conflict::UpdateMissing => "update_missing",
            Conflict::DeleteMissing => "delete_missing",
            Conflict::MultipleUniqueConflicts => "multiple_unique_conflicts",
        }
    }

    pub fn stat(self) -> Stat {
        match self {
            Conflict::InsertExists => Stat::ConflInsertExists,
            Conflict::UpdateExists => Stat::ConflUpdateExists,
            Conflict::UpdateMissing => Stat::ConflUpdateMissing,
            Conflict::DeleteMissing => Stat::ConflDeleteMissing,
            Conflict::MultipleUniqueConflicts => Stat::ConflMultipleUniqueConflicts,
        }
    }

    /// The conflict a failed INSERT (`update` false) or UPDATE is, if any: a
    /// unique violation, on more than one unique index when the shim's probe
    /// says so (its message, see sdb_check_unique_conflicts in shim/pgops.c).
    pub fn of_error(e: &PgError, update: bool) -> Option<Conflict> {
        if e.sqlstate != "23505" {
            return None;
        }
        Some(
            if e.message.starts_with("row conflicts with existing rows on") {
                Conflict::MultipleUniqueConflicts
            } else if update {
                Conflict::UpdateExists
            } else {
                Conflict::InsertExists
            },
        )
    }
}

/// synchdb.on_missing_row
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnMissingRow {
    Skip,
    Error,
}

impl OnMissingRow {
    pub fn current(pg: &Pg) -> OnMissingRow {
        OnMissingRow::of(&pg.apply_settings())
    }

    pub fn of(s: &crate::ffi::SdbApplySettings) -> OnMissingRow {
        match s.on_missing_row {
            crate::ffi::SDB_MISSING_ROW_ERROR => OnMissingRow::Error,
            _ => OnMissingRow::Skip,
        }
    }
}

/// The error of a row missing under on_missing_row = error: the message a
/// missing row always had, so that scripts reading err see no change.
pub fn missing_row_error(kind: Conflict, dest: &str) -> PgError {
    let what = if kind == Conflict::UpdateMissing {
        "updated"
    } else {
        "deleted"
    };
    PgError {
        message: format!(
            "row to be {what} was not found in {dest} DETAIL: The destination has diverged from the source."
        ),
        sqlstate: "02000".into(),
    }
}

/// The log line of a conflict: its kind, the table, what happened, what was
/// done, and the change (when synchdb.log_change_on_error allows).
pub fn log_line(
    connector: &str,
    kind: Conflict,
    dest: &str,
    what: &str,
    outcome: &str,
    change: Option<&str>,
) -> String {
    let mut s = format!(
        "connector {connector}: conflict {} on {dest}: {}; {outcome}",
        kind.name(),
        what.trim_end_matches('.')
    );
    if let Some(c) = change {
        s.push_str(&format!("; change: {c}"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(sqlstate: &str, message: &str) -> PgError {
        PgError {
            message: message.into(),
            sqlstate: sqlstate.into(),
        }
    }

    #[test]
    fn unique_violations_are_classified() {
        let dup = err(
            "23505",
            "duplicate key value violates unique constraint \"t_pkey\"",
        );
        assert_eq!(
            Conflict::of_error(&dup, false),
            Some(Conflict::InsertExists)
        );
        assert_eq!(Conflict::of_error(&dup, true), Some(Conflict::UpdateExists));
        let many = err(
            "23505",
            "row conflicts with existing rows on 2 unique indexes of \"s\".\"t\": t_pkey, t_code_key",
        );
        assert_eq!(
            Conflict::of_error(&many, false),
            Some(Conflict::MultipleUniqueConflicts)
        );
        assert_eq!(Conflict::of_error(&err("23503", "fk"), false), None);
    }

    #[test]
    fn missing_rows_keep_their_old_message() {
        let e = missing_row_error(Conflict::UpdateMissing, "\"s\".\"t\"");
        assert_eq!(
            e.message,
            "row to be updated was not found in \"s\".\"t\" DETAIL: The destination has diverged from the source."
        );
        assert_eq!(
            log_line(
                "c",
                Conflict::DeleteMissing,
                "\"s\".\"t\"",
                "no row",
                "skipped",
                None
            ),
            "connector c: conflict delete_missing on \"s\".\"t\": no row; skipped"
        );
    }
}
