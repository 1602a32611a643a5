//! Source passwords that never appear in SQL: a connector created with
//! `pwd => NULL` takes its password from a file in libpq's pgpass format
//! (`hostname:port:database:username:password`, `*` matching anything, `\:` and
//! `\\` escaping, `#` comments, the first matching line wins). The file is the
//! one the connector names (synchdb_set_passfile), else the one libpq would use
//! for the server's operating-system user: $PGPASSFILE, else ~/.pgpass. As libpq
//! does, a file that its group or others may read is refused.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// What the password is looked up by.
pub struct Key<'a> {
    pub host: &'a str,
    pub port: u16,
    pub database: &'a str,
    pub user: &'a str,
}

/// The file used when the connector names none.
pub fn default_file() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("PGPASSFILE").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    home_dir().map(|h| h.join(".pgpass"))
}

fn home_dir() -> Option<PathBuf> {
    if let Some(h) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        return Some(PathBuf::from(h));
    }
    // SAFETY: getpwuid returns a pointer into static storage or NULL; this
    // runs on one thread of the worker and the value is copied at once.
    unsafe {
        let pw = libc::getpwuid(libc::geteuid());
        if pw.is_null() || (*pw).pw_dir.is_null() {
            return None;
        }
        let dir = std::ffi::CStr::from_ptr((*pw).pw_dir);
        Some(PathBuf::from(dir.to_string_lossy().into_owned()))
    }
}

/// The password for `key` in `file` (or the default file), with an error that
/// says which file, what is wrong with it and what to do.
pub fn lookup(file: Option<&str>, key: &Key) -> Result<String, String> {
    let path = match file {
        Some(f) => PathBuf::from(f),
        None => default_file().ok_or_else(|| {
            "the connector's password is to come from a pgpass file (pwd is NULL), but the server's \
             operating-system user has no home directory and PGPASSFILE is not set; name a file with \
             synchdb_set_passfile"
                .to_string()
        })?,
    };
    let text = read_private(&path)?;
    find(&text, key).ok_or_else(|| {
        format!(
            "pgpass file {} has no line for {}:{}:{}:{} (hostname:port:database:username); add one \
             ending with the password",
            path.display(),
            key.host,
            key.port,
            key.database,
            key.user
        )
    })
}

fn read_private(path: &Path) -> Result<String, String> {
    let shown = path.display();
    let meta = std::fs::metadata(path).map_err(|e| {
        format!(
            "the connector's password is to come from pgpass file {shown} (pwd is NULL), which cannot be read: {e}; \
             create it, readable only by the operating-system user the server runs as (chmod 0600)"
        )
    })?;
    if !meta.is_file() {
        return Err(format!("pgpass file {shown} is not a regular file"));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(format!(
            "pgpass file {shown} has group or world access (mode {:04o}); it holds passwords, so it must be \
             readable only by its owner, the operating-system user the server runs as: chmod 0600 {shown}",
            meta.mode() & 0o7777
        ));
    }
    std::fs::read_to_string(path).map_err(|e| format!("pgpass file {shown} cannot be read: {e}"))
}

/// The password of the first line of `text` that matches `key`.
pub fn find(text: &str, key: &Key) -> Option<String> {
    let port = key.port.to_string();
    let want = [key.host, port.as_str(), key.database, key.user];
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
        .find_map(|line| {
            let fields = split(line);
            if fields.len() < 5 {
                return None;
            }
            let matches = want.iter().zip(&fields).all(|(w, f)| f == "*" || f == w);
            // the password is the rest of the line (it may hold unescaped colons)
            matches.then(|| fields[4..].join(":"))
        })
}

/// Splits a line at unescaped colons, undoing `\:` and `\\`.
fn split(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = line.trim_end_matches(['\r', '\n']).chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => cur.extend(chars.next()),
            ':' => out.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    out.push(cur);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Key<'static> {
        Key {
            host: "db.example",
            port: 5432,
            database: "sales",
            user: "repl",
        }
    }

    #[test]
    fn first_matching_line_wins_with_wildcards_and_escapes() {
        let text = "# comment\n\
                    other:5432:sales:repl:nope\n\
                    db.example:5433:*:repl:wrong port\n\
                    db.example:*:sales:repl:p\\:a\\\\ss:with:colons\n\
                    *:*:*:*:fallback\n";
        assert_eq!(find(text, &key()).as_deref(), Some("p:a\\ss:with:colons"));
        let other = Key {
            host: "elsewhere",
            ..key()
        };
        assert_eq!(find(text, &other).as_deref(), Some("fallback"));
        assert_eq!(find("a:b:c\n", &key()), None);
    }

    #[test]
    fn a_file_others_can_read_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("synchdb-pgpass-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let f = dir.join("pgpass");
        std::fs::write(&f, "*:*:*:repl:secret\n").expect("write");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let e = lookup(f.to_str(), &key()).expect_err("0644 must be refused");
        assert!(e.contains("group or world access"), "{e}");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        assert_eq!(lookup(f.to_str(), &key()).as_deref(), Ok("secret"));
        let e = lookup(
            f.to_str(),
            &Key {
                user: "other",
                ..key()
            },
        )
        .expect_err("no line");
        assert!(
            e.contains("has no line for db.example:5432:sales:other"),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
