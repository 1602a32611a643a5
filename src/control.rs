//! Work that SQL functions do against the source from an ordinary backend
//! (synchdb_set_offset's check), on a short-lived thread with its own runtime.

use crate::config::{self, ConnectorConfig, LocalIds};
use std::path::Path;
use std::time::Duration;

/// Runs `work` to completion on a short-lived thread with its own runtime and every
/// signal blocked (we are inside an ordinary backend), bounded to 30 s.
pub fn run_blocking<T: Send + 'static>(
    work: impl std::future::Future<Output = Result<T, String>> + Send + 'static,
) -> Result<T, String> {
    let handle = std::thread::Builder::new()
        .name("synchdb-sql".into())
        .spawn(move || {
            // SAFETY: blocks signals on this thread only, so they stay with the backend.
            unsafe {
                let mut all: libc::sigset_t = std::mem::zeroed();
                libc::sigfillset(&mut all);
                libc::pthread_sigmask(libc::SIG_BLOCK, &all, std::ptr::null_mut());
            }
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(async { tokio::time::timeout(Duration::from_secs(30), work).await })
                .map_err(|_| "timed out after 30 s".to_string())?
        })
        .map_err(|e| format!("cannot start a thread: {e}"))?;
    handle
        .join()
        .map_err(|_| "the helper thread panicked".to_string())?
}

/// synchdb_set_offset: the connector's slot must still hold the changes from `lsn`
/// on (a logical slot never goes back before its confirmed position).
pub fn check_slot_serves(
    data_dir: &Path,
    ids: &LocalIds,
    name: &str,
    json: &str,
    lsn: u64,
) -> Result<(), String> {
    let slot = config::slot_name(ids, name);
    let cfg = ConnectorConfig::from_json(name, json)?;
    let password = crate::secret::source_password(data_dir, &cfg)?;
    let params = crate::source::conn_params(&cfg, &password);
    let want = crate::offset::format_lsn(lsn);
    // The source's WAL end bounds every offset: a position past it would make the
    // connector confirm, and the slot forget, changes the source has not written yet.
    let (end, found) = run_blocking(async move {
        let rows = crate::source::query_once(
            &params,
            "SELECT w.pos::text, s.slot_name IS NOT NULL, s.confirmed_flush_lsn::text, \
                    coalesce(s.wal_status, 'reserved') \
               FROM (SELECT CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() \
                                 ELSE pg_current_wal_flush_lsn() END AS pos) w \
               LEFT JOIN pg_replication_slots s ON s.slot_name = $1",
            &[&slot],
        )
        .await?;
        let r = rows
            .first()
            .ok_or_else(|| "the source returned no row".to_string())?;
        let bad = |e: tokio_postgres::Error| format!("unexpected reply from the source: {e}");
        let end: Option<String> = r.try_get(0).map_err(bad)?;
        let found = if r.try_get::<_, bool>(1).map_err(bad)? {
            Some((r.try_get(2).map_err(bad)?, r.try_get(3).map_err(bad)?))
        } else {
            None
        };
        Ok::<_, String>((end, found))
    })
    .map_err(|e| format!("cannot check offset {want} on the source: {e}"))?;
    let end = end
        .ok_or_else(|| format!("cannot check offset {want}: the source reports no WAL position"))
        .and_then(|e| crate::offset::parse_lsn(&e).map_err(|e| e.to_string()))?;
    slot_serves(name, &want, lsn, end, found)
}

/// synchdb_sync_sequences: the last values of `names` (qualified sequence names)
/// on the connector's source, as a JSON object (null for one never called or gone).
pub fn source_sequence_values(
    data_dir: &Path,
    _ids: &LocalIds,
    name: &str,
    json: &str,
    names: Vec<String>,
) -> Result<String, String> {
    let cfg = ConnectorConfig::from_json(name, json)?;
    let password = crate::secret::source_password(data_dir, &cfg)?;
    let params = crate::source::conn_params(&cfg, &password);
    run_blocking(async move {
        crate::source::with_client(&params, async |client: &tokio_postgres::Client| {
            sequence_values(client, &params, &names).await
        })
        .await
        .map_err(|e| e.text)
    })
}

/// The last values of `names` (qualified sequence names) on the source, as a
/// JSON object (null for one never called or gone).
pub async fn sequence_values(
    client: &tokio_postgres::Client,
    params: &crate::replconn::ConnParams,
    names: &[String],
) -> Result<String, String> {
    let rows = client
        .query(
            "SELECT s, pg_sequence_last_value(to_regclass(s)) FROM unnest($1::text[]) s",
            &[&names],
        )
        .await
        .map_err(|e| crate::source::pg_error_text(params, &e))?;
    let mut out = serde_json::Map::new();
    for r in &rows {
        let bad = |e: tokio_postgres::Error| format!("unexpected reply from the source: {e}");
        let n: String = r.try_get(0).map_err(bad)?;
        let v: Option<i64> = r.try_get(1).map_err(bad)?;
        out.insert(
            n,
            v.map_or(serde_json::Value::Null, serde_json::Value::from),
        );
    }
    Ok(serde_json::Value::Object(out).to_string())
}

/// The decision of check_slot_serves, given what the source said about the slot.
fn slot_serves(
    name: &str,
    want: &str,
    lsn: u64,
    end: u64,
    found: Option<(Option<String>, String)>,
) -> Result<(), String> {
    if lsn > end {
        let end = crate::offset::format_lsn(end);
        return Err(format!(
            "offset {want} is past the source's current WAL position {end}; \
             an offset must not be after {end} (nothing was changed)"
        ));
    }
    match found {
        None => Err(format!(
            "connector \"{name}\" has no replication slot on the source, so offset {want} cannot be served; \
             start it in mode 'when_needed' or 'initial' to take a new snapshot"
        )),
        Some((_, status)) if status == "lost" => Err(format!(
            "the replication slot of connector \"{name}\" was invalidated on the source (wal_status lost), so offset {want} cannot be served"
        )),
        Some((Some(confirmed), _)) => {
            let c = crate::offset::parse_lsn(&confirmed).map_err(|e| e.to_string())?;
            if lsn < c {
                Err(format!(
                    "offset {want} is before {confirmed}, the oldest position the replication slot of connector \"{name}\" still serves; \
                     choose an offset at or after {confirmed}"
                ))
            } else {
                Ok(())
            }
        }
        Some((None, _)) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_the_slot_cannot_serve_are_refused() {
        let ok = slot_serves(
            "c",
            "0/20",
            0x20,
            0x30,
            Some((Some("0/10".into()), "reserved".into())),
        );
        assert!(ok.is_ok());
        let e = slot_serves(
            "c",
            "0/5",
            0x5,
            0x30,
            Some((Some("0/10".into()), "reserved".into())),
        )
        .unwrap_err();
        assert!(e.contains("before 0/10"), "{e}");
        let e = slot_serves(
            "c",
            "0/20",
            0x20,
            0x30,
            Some((Some("0/10".into()), "lost".into())),
        )
        .unwrap_err();
        assert!(e.contains("invalidated"), "{e}");
        let e = slot_serves("c", "0/20", 0x20, 0x30, None).unwrap_err();
        assert!(e.contains("no replication slot"), "{e}");
        // past the source's WAL end: refused whatever the slot says, with the end named
        let e = slot_serves(
            "c",
            "FFFFFFFF/FFFFFFFF",
            u64::MAX,
            0x30,
            Some((Some("0/10".into()), "reserved".into())),
        )
        .unwrap_err();
        assert!(
            e.contains("past the source's current WAL position 0/30"),
            "{e}"
        );
        // exactly at the end is fine
        let ok = slot_serves(
            "c",
            "0/30",
            0x30,
            0x30,
            Some((Some("0/10".into()), "reserved".into())),
        );
        assert!(ok.is_ok());
    }
}
