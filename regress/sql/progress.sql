-- synchdb_stat_view: how far behind a connector is (source WAL end, applied
-- and confirmed positions, lag in bytes and seconds) and how far its snapshot
-- has come (tables, rows and bytes copied, the source's estimate, an ETA).
\getenv port SYNCHDB_PORT
\getenv srcuser SYNCHDB_SRC_USER
\getenv srcpwd SYNCHDB_SRC_PASSWORD
\getenv bindir SYNCHDB_BINDIR
\setenv PGBIN :bindir
\setenv PGPORT :port
CREATE DATABASE lag_src;
\c lag_src
CREATE TABLE t (id int PRIMARY KEY, v text);
CREATE TABLE u (id int PRIMARY KEY);
INSERT INTO t SELECT g, repeat('x', 50) FROM generate_series(1, 20000) g;
INSERT INTO u SELECT generate_series(1, 10);
ANALYZE t;
ANALYZE u;
\c contrib_regression
SELECT synchdb_add_conninfo('lagconn', '127.0.0.1', :port, :'srcuser', :'srcpwd',
                            'lag_src', 'public', 'null', 'null', 'postgres');
SELECT synchdb_start_engine_bgw('lagconn');
SELECT synchdb_test_wait($$SELECT count(*) = 20000 FROM lag_src.t$$);
-- the snapshot, counted as it went: every table and row, bytes, the estimate
SELECT snapshot_tables_done, snapshot_tables, snapshot_rows, snapshot_bytes > 20000 * 50 AS bytes_counted,
       snapshot_rows_estimated, snapshot_eta_seconds
  FROM synchdb_stat_view WHERE name = 'lagconn';
SELECT tables, rows FROM synchdb_snapstats WHERE name = 'lagconn';
-- a change applied, then idle: caught up, no lag
\c lag_src
INSERT INTO t VALUES (20001, 'cdc');
\c contrib_regression
SELECT synchdb_test_wait($$SELECT count(*) = 20001 FROM lag_src.t$$);
SELECT synchdb_test_wait($$SELECT lag_bytes = 0 AND lag_seconds = 0 FROM synchdb_stat_view WHERE name = 'lagconn'$$);
SELECT source_wal_lsn IS NOT NULL AS has_source_end, applied_lsn IS NOT NULL AS has_applied,
       confirmed_lsn >= applied_lsn AS confirmed_past_applied
  FROM synchdb_stat_view WHERE name = 'lagconn';
-- held back: this session locks the destination table, so the connector waits
-- to apply what the source commits meanwhile; the lag shows, then goes
BEGIN;
LOCK TABLE lag_src.t IN ACCESS EXCLUSIVE MODE;
\! "$PGBIN/psql" -X -q -h 127.0.0.1 -p "$PGPORT" -d lag_src -c 'INSERT INTO t SELECT g, $$later$$ FROM generate_series(20002, 20100) g'
SELECT synchdb_test_wait($$SELECT lag_bytes > 0 AND lag_seconds > 0 FROM synchdb_stat_view WHERE name = 'lagconn'$$);
SELECT source_wal_lsn > confirmed_lsn AS source_ahead FROM synchdb_stat_view WHERE name = 'lagconn';
ROLLBACK;
SELECT synchdb_test_wait($$SELECT count(*) = 20100 FROM lag_src.t$$);
SELECT synchdb_test_wait($$SELECT lag_bytes = 0 AND lag_seconds = 0 FROM synchdb_stat_view WHERE name = 'lagconn'$$);
SELECT name, state, err FROM synchdb_state_view WHERE name = 'lagconn';
SELECT synchdb_stop_engine_bgw('lagconn');
SELECT synchdb_del_conninfo('lagconn');
SET client_min_messages = warning;
DROP SCHEMA lag_src CASCADE;
RESET client_min_messages;
DROP DATABASE lag_src;
