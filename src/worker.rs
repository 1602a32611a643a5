//! A connector's background worker: reads its configuration, takes the snapshot when
//! the mode asks for one, then streams changes until it is stopped.

use crate::apply::Applier;
use crate::config::{self, ConnectorConfig};
use crate::error::{DestContext, WorkerError};
use crate::net::Net;
use crate::offset::{Offset, NOT_FLUSHED};
use crate::pg::{Pg, LOG_LOG, LOG_WARNING};
use crate::state;
use std::time::{Duration, Instant};

/// Snapshot modes and what each does on a start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Initial,
    InitialOnly,
    NoData,
    /// Every start copies again: all tables, or those `snapshottable` names while
    /// the others keep their rows and position.
    Always,
    Never,
    /// Schema only, then paused for review; resume goes on to CDC.
    SchemaSync,
    /// Snapshot only when there is no usable position (none yet, or the slot is
    /// gone or invalidated on the source).
    WhenNeeded,
}

pub const MODES: &[&str] = &[
    "initial",
    "initial_only",
    "no_data",
    "always",
    "never",
    "schemasync",
    "when_needed",
];

impl Mode {
    pub fn parse(s: &str) -> Result<Mode, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "initial" | "" => Ok(Mode::Initial),
            "initial_only" => Ok(Mode::InitialOnly),
            "no_data" => Ok(Mode::NoData),
            "always" => Ok(Mode::Always),
            "never" => Ok(Mode::Never),
            "schemasync" => Ok(Mode::SchemaSync),
            "when_needed" => Ok(Mode::WhenNeeded),
            other => Err(format!(
                "unknown snapshot mode \"{other}\"; valid modes are: {}",
                MODES.join(", ")
            )),
        }
    }
}

/// How long to wait before attempt `n` (1, 2, ...) to reach the source again:
/// 1 s, doubling, at most 60 s.
pub fn reconnect_wait(n: u32) -> Duration {
    Duration::from_secs(1u64 << n.saturating_sub(1).min(6)).min(Duration::from_secs(60))
}

/// Shows a transient error: state `restarting`, err saying it is transient and
/// when the next attempt is; the server log has it too.
pub fn report_transient(
    pg: &Pg,
    slot: i32,
    name: &str,
    e: &WorkerError,
    attempt: u32,
    wait: Duration,
) {
    let msg = format!(
        "transient error, reconnecting in {} s (attempt {attempt}): {e}",
        wait.as_secs()
    );
    state::set_error(slot, &msg);
    state::set_state(slot, state::STATE_RESTARTING);
    // the first of a series is a warning; the rest would flood the log
    let level = if attempt == 1 { LOG_WARNING } else { LOG_LOG };
    pg.log(level, &format!("connector {name}: {msg}"));
}

/// Whether the connector has a position to resume from (its origin has moved):
/// then a transient error before it streams (auto-launch while the source is
/// down, a snapshot of new tables cut by a source restart) is waited out. A
/// connector that never had one stops instead and says why: its user is at
/// hand, and a host or port typed wrong is more likely than a passing outage.
fn has_position(pg: &Pg, name: &str) -> bool {
    let origin = config::origin_name(pg.local_ids().database_oid, name);
    pg.in_xact(|| {
        pg.query(
            "SELECT 1 FROM pg_replication_origin_status WHERE external_id = $1 AND remote_lsn <> '0/0'",
            &[Some(&origin)],
        )
    })
    .is_ok_and(|rows| !rows.is_empty())
}

/// Returns the process exit code; the outcome is in the state slot.
pub fn run(pg: &Pg, slot: i32, name: &str, mode: &str) -> i32 {
    state::set_my_slot(slot);
    state::set_error(slot, state::NO_ERROR);
    state::set_state(slot, state::STATE_INITIALIZING);
    let mut attempt = 0;
    let outcome = loop {
        match run_inner(pg, slot, name, mode) {
            Err(e) if e.is_transient() && !pg.should_exit() && has_position(pg, name) => {
                attempt += 1;
                let wait = reconnect_wait(attempt);
                report_transient(pg, slot, name, &e, attempt, wait);
                // run_inner sets the origin up again
                let _ = pg.origin_release();
                let until = Instant::now() + wait;
                while Instant::now() < until && !pg.should_exit() {
                    let left = (until - Instant::now()).as_millis().clamp(1, 1000) as i64;
                    if pg.wait(-1, left).is_err() {
                        break;
                    }
                }
                if pg.should_exit() {
                    break Err(WorkerError::Stopped);
                }
            }
            other => break other,
        }
    };
    match outcome {
        Ok(()) | Err(WorkerError::Stopped) => {
            pg.log(LOG_LOG, &format!("connector {name}: stopped"));
            0
        }
        // a stop request cancels whatever PostgreSQL was doing: that is no error
        Err(_) if pg.should_exit() => {
            pg.log(LOG_LOG, &format!("connector {name}: stopped"));
            0
        }
        Err(e) => {
            let msg = e.to_string();
            state::set_error(slot, &msg);
            pg.log(LOG_WARNING, &format!("connector {name}: {msg}"));
            1
        }
    }
}

/// The settings of a connector's sessions (its worker's and its copy
/// helpers'), inside a transaction: applied changes must not fire ordinary
/// triggers (they fired on the source), and durability is asked for
/// explicitly before a position is confirmed.
pub fn session_settings(pg: &Pg) -> Result<(), WorkerError> {
    pg.exec(
        "SELECT set_config('session_replication_role', 'replica', false)",
        &[],
    )
    .ctx(|| "setting session_replication_role".into())?;
    pg.exec("SELECT set_config('synchronous_commit', 'off', false)", &[])
        .ctx(|| "setting synchronous_commit".into())?;
    Ok(())
}

pub fn load_config(pg: &Pg, name: &str) -> Result<ConnectorConfig, WorkerError> {
    let rows = pg.in_xact(|| {
        pg.query(
            "SELECT data::text FROM synchdb_conninfo WHERE name = $1",
            &[Some(name)],
        )
        .ctx(|| "reading synchdb_conninfo".into())
    })?;
    let json = rows.first().and_then(|r| r[0].clone()).ok_or_else(|| {
        WorkerError::Config(format!(
            "connector \"{name}\" does not exist in synchdb_conninfo"
        ))
    })?;
    ConnectorConfig::from_json(name, &json).map_err(WorkerError::Config)
}

fn run_inner(pg: &Pg, slot: i32, name: &str, mode: &str) -> Result<(), WorkerError> {
    let mode = Mode::parse(mode).map_err(WorkerError::Config)?;
    let cfg = load_config(pg, name)?;
    let ids = pg.local_ids();
    let password =
        crate::secret::source_password(&pg.data_dir(), &cfg).map_err(WorkerError::Config)?;
    let params = crate::source::conn_params(&cfg, &password);
    let slot_name = config::slot_name(&ids, name);
    let publication = config::publication_name(&ids, name);
    let origin = config::origin_name(ids.database_oid, name);

    let progress = pg.in_xact(|| -> Result<u64, WorkerError> {
        session_settings(pg)?;
        pg.origin_setup(&origin)
            .ctx(|| format!("setting up replication origin {origin}"))?;
        Ok(pg.origin_progress(false)?)
    })?;

    let rules = pg.in_xact(|| crate::objmap::load(pg, name, &cfg.srcdb))?;
    let net = Net::start()?;
    let mut has_position = progress != 0;
    // these modes replace what an earlier snapshot left when they take a new one
    let mut rebuild = matches!(mode, Mode::Always | Mode::WhenNeeded);
    let mut partial = false;
    if has_position && matches!(mode, Mode::WhenNeeded | Mode::Always) {
        let unusable = net.call(pg, slot_unusable(params.clone(), slot_name.clone()))??;
        let why = match (mode, unusable) {
            (_, Some(why)) => Some(format!("{why}: taking a new snapshot")),
            (Mode::Always, None) if cfg.snapshot_tables.is_empty() => {
                Some("mode always: copying every table again".to_string())
            }
            (Mode::Always, None) => {
                partial = true;
                None
            }
            _ => None,
        };
        if let Some(why) = why {
            pg.log(LOG_LOG, &format!("connector {name}: {why}"));
            reset_origin(pg, &origin)?;
            has_position = false;
            rebuild = true;
        }
    }
    if partial {
        state::set_stage(slot, state::STAGE_SNAPSHOT);
        state::set_state(slot, state::STATE_POLLING);
        let began = crate::apply::now_ms_pub();
        let r = crate::snapshot::resnapshot(
            pg,
            &net,
            &cfg,
            &params,
            &slot_name,
            &publication,
            &rules,
            None,
        )?;
        record_snapshot(pg, slot, name, &r, began);
    }
    let start_lsn = if has_position {
        state::set_stage(slot, state::STAGE_CDC);
        let off = Offset {
            lsn_proc: progress,
            lsn_commit: progress,
            lsn: progress,
            message_type: crate::offset::MessageType::Commit,
            ..Default::default()
        };
        if state::offset_of(slot).is_empty() || state::offset_of(slot) == NOT_FLUSHED {
            state::set_offset(slot, &off.to_json());
        }
        if mode == Mode::InitialOnly {
            // the snapshot was taken; initial_only does no CDC
            state::set_state(slot, state::STATE_POLLING);
            return idle_until_stopped(pg, &net);
        }
        progress
    } else {
        let stage = if mode == Mode::SchemaSync {
            state::STAGE_SCHEMA_SYNC
        } else {
            state::STAGE_SNAPSHOT
        };
        state::set_stage(slot, stage);
        state::set_offset(slot, NOT_FLUSHED);
        state::set_state(slot, state::STATE_POLLING);
        let began = crate::apply::now_ms_pub();
        let r = crate::snapshot::run(
            pg,
            &net,
            &cfg,
            &params,
            &slot_name,
            &publication,
            crate::snapshot::Plan {
                create_tables: mode != Mode::Never,
                copy_rows: !matches!(mode, Mode::NoData | Mode::SchemaSync | Mode::Never),
                rebuild,
                rules: &rules,
            },
        )?;
        record_snapshot(pg, slot, name, &r, began);
        if mode == Mode::InitialOnly {
            return idle_until_stopped(pg, &net);
        }
        r.consistent_point
    };
    state::set_state(slot, state::STATE_POLLING);
    let skips = load_skips(pg, name, start_lsn)?;
    let mut applier = Applier::new(pg, &net, slot, &cfg, has_position, rules);
    applier.set_skips(skips);
    // tables created (or attached as partitions) on the source later: the modes
    // that copy rows copy theirs too; the others publish them and let CDC create them
    let copy_new = matches!(mode, Mode::Initial | Mode::Always | Mode::WhenNeeded);
    applier.watch_new_tables(copy_new, &slot_name, &publication);
    // schemasync: the schema is there; wait for the user's review, then CDC from
    // the point the schema was taken
    let start_lsn = if mode == Mode::SchemaSync {
        applier.pause(&origin)?
    } else {
        start_lsn
    };
    applier.run(
        crate::apply::StreamTarget {
            params,
            spill_dir: crate::spill::spill_dir(&pg.data_dir(), &slot_name),
            decoding_work_mem_kb: Some(pg.guc_int("synchdb.source_decoding_work_mem", 1024))
                .filter(|kb| *kb >= 64),
            slot: slot_name,
            publication,
            start_lsn,
        },
        &origin,
    )
}

/// Starts the origin over: the old position means nothing for a new slot.
fn reset_origin(pg: &Pg, origin: &str) -> Result<(), WorkerError> {
    pg.origin_release()?;
    pg.in_xact(|| -> Result<(), WorkerError> {
        pg.exec(
            "SELECT pg_replication_origin_advance($1, '0/0')",
            &[Some(origin)],
        )
        .ctx(|| format!("resetting replication origin {origin}"))?;
        pg.origin_setup(origin)
            .ctx(|| format!("setting up replication origin {origin}"))?;
        Ok(())
    })
}

fn record_snapshot(
    pg: &Pg,
    slot: i32,
    name: &str,
    r: &crate::snapshot::SnapshotResult,
    began: i64,
) {
    state::stat_set(slot, state::Stat::SnapTables, r.tables as u64);
    state::stat_set(slot, state::Stat::SnapTablesDone, r.tables as u64);
    state::stat_set(slot, state::Stat::SnapRows, r.rows);
    state::stat_set(slot, state::Stat::SnapBeginTs, began as u64);
    state::stat_set(
        slot,
        state::Stat::SnapEndTs,
        crate::apply::now_ms_pub() as u64,
    );
    pg.log(
        LOG_LOG,
        &format!(
            "connector {name}: initial snapshot done: {} table(s), {} row(s) at {}",
            r.tables,
            r.rows,
            crate::offset::format_lsn(r.consistent_point)
        ),
    );
}

/// The tables copied again by a partial snapshot whose point CDC has not passed
/// yet, with that point; entries CDC has passed are removed.
fn load_skips(
    pg: &Pg,
    name: &str,
    position: u64,
) -> Result<std::collections::HashMap<u32, u64>, WorkerError> {
    let pos = crate::offset::format_lsn(position);
    let rows = pg.in_xact(|| {
        pg.exec(
            "DELETE FROM synchdb_snapshot_skip WHERE name = $1 AND until_lsn <= $2::pg_lsn",
            &[Some(name), Some(&pos)],
        )
        .ctx(|| "reading synchdb_snapshot_skip".into())?;
        pg.query(
            "SELECT srcrelid::text, (until_lsn - '0/0'::pg_lsn)::text FROM synchdb_snapshot_skip WHERE name = $1",
            &[Some(name)],
        )
        .ctx(|| "reading synchdb_snapshot_skip".into())
    })?;
    let mut out = std::collections::HashMap::new();
    for r in rows {
        if let [Some(oid), Some(l)] = r.as_slice() {
            let bad =
                |v: &str| WorkerError::Internal(format!("synchdb_snapshot_skip: bad value {v}"));
            let lsn = l.parse::<u64>().map_err(|_| bad(l))?;
            let oid = oid.parse::<u32>().map_err(|_| bad(oid))?;
            out.insert(oid, lsn);
        }
    }
    Ok(out)
}

/// `initial_only`: nothing to stream; stay visible until stopped, as SynchDB does.
fn idle_until_stopped(pg: &Pg, net: &Net) -> Result<(), WorkerError> {
    loop {
        net.sleep(pg, 1000)?;
    }
}

/// when_needed: why the connector's slot cannot continue, if it cannot.
async fn slot_unusable(
    params: crate::replconn::ConnParams,
    slot: String,
) -> Result<Option<String>, WorkerError> {
    let client = crate::source::connect(&params)
        .await
        .map_err(WorkerError::from)?;
    let rows = client
        .query(
            "SELECT coalesce(wal_status, 'reserved') FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .map_err(|e| WorkerError::from(crate::source::source_error(&params, &e)))?;
    Ok(match rows.first().map(|r| r.get::<_, String>(0)) {
        None => Some(format!(
            "replication slot {slot} does not exist on the source"
        )),
        Some(s) if s == "lost" => Some(format!(
            "replication slot {slot} was invalidated on the source"
        )),
        Some(_) => None,
    })
}
