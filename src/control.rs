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
    let password = crate::secret::decrypt(data_dir, &cfg.pwd).map_err(|e| e.to_string())?;
    let params = crate::source::conn_params(&cfg, &password);
    let want = crate::offset::format_lsn(lsn);
    let found = run_blocking(async move {
        let rows = crate::source::query_once(
            &params,
            "SELECT confirmed_flush_lsn::text, coalesce(wal_status, 'reserved') FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await?;
        Ok::<_, String>(rows.first().map(|r| (r.get::<_, Option<String>>(0), r.get::<_, String>(1))))
    })
    .map_err(|e| format!("cannot check offset {want} on the source: {e}"))?;
    slot_serves(name, &want, lsn, found)
}

/// The decision of check_slot_serves, given what the source said about the slot.
fn slot_serves(
    name: &str,
    want: &str,
    lsn: u64,
    found: Option<(Option<String>, String)>,
) -> Result<(), String> {
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
            Some((Some("0/10".into()), "reserved".into())),
        );
        assert!(ok.is_ok());
        let e = slot_serves(
            "c",
            "0/5",
            0x5,
            Some((Some("0/10".into()), "reserved".into())),
        )
        .unwrap_err();
        assert!(e.contains("before 0/10"), "{e}");
        let e = slot_serves(
            "c",
            "0/20",
            0x20,
            Some((Some("0/10".into()), "lost".into())),
        )
        .unwrap_err();
        assert!(e.contains("invalidated"), "{e}");
        let e = slot_serves("c", "0/20", 0x20, None).unwrap_err();
        assert!(e.contains("no replication slot"), "{e}");
    }
}
