//! Removing a connector: its replication slot and publication on the source.
//! Runs in an ordinary backend (synchdb_del_conninfo), through
//! control::run_blocking, so the backend's signal handling is untouched.

use crate::config::{self, quote_ident, quote_literal, ConnectorConfig, LocalIds};
use std::path::Path;
use std::time::Duration;

pub fn drop_source_objects(
    data_dir: &Path,
    ids: &LocalIds,
    name: &str,
    json: &str,
) -> Result<(), String> {
    let slot = config::slot_name(ids, name);
    let publication = config::publication_name(ids, name);
    let by_hand = format!(
        "drop them by hand on the source: SELECT pg_drop_replication_slot({}); DROP PUBLICATION IF EXISTS {};",
        quote_literal(&slot),
        quote_ident(&publication)
    );
    let cfg = ConnectorConfig::from_json(name, json).map_err(|e| format!("{e}; {by_hand}"))?;
    let password =
        crate::secret::source_password(data_dir, &cfg).map_err(|e| format!("{e}; {by_hand}"))?;
    let params = crate::source::conn_params(&cfg, &password);
    let work = async move { drop_slot_and_publication(&params, &slot, &publication).await };
    let r = crate::control::run_blocking(work);
    r.map_err(|e| format!("could not drop the replication slot and publication of connector \"{name}\" on the source ({e}); {by_hand}"))
}

/// Drops replication slot `slot` (waiting a little for a walsender that still
/// holds it) and publication `publication` on the source, if they exist.
pub async fn drop_slot_and_publication(
    params: &crate::replconn::ConnParams,
    slot: &str,
    publication: &str,
) -> Result<(), String> {
    let err = |e: tokio_postgres::Error| crate::source::pg_error_text(params, &e);
    crate::source::with_client(params, async |client: &tokio_postgres::Client| {
        // the walsender of a just-stopped worker may hold the slot for a moment
        let mut tries = 0;
        loop {
            match client
                .execute(
                    "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1",
                    &[&slot],
                )
                .await
            {
                Ok(_) => break,
                Err(e) if tries < 50 && e.as_db_error().is_some_and(|d| d.code().code() == "55006") => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Err(err(e)),
            }
        }
        client
            .batch_execute(&format!(
                "DROP PUBLICATION IF EXISTS {}",
                quote_ident(publication)
            ))
            .await
            .map_err(err)
    })
    .await
    .map_err(String::from)
}
