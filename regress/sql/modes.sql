-- Snapshot modes: initial_only, no_data, never, when_needed (schemasync is in
-- control). Each connector has its own source database.
\getenv port SYNCHDB_PORT
\getenv srcuser SYNCHDB_SRC_USER
\getenv srcpwd SYNCHDB_SRC_PASSWORD
CREATE DATABASE m_src;
\c m_src
CREATE TABLE t (id int PRIMARY KEY, v text);
INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 20) g;
\c contrib_regression

-- initial_only: the snapshot, then no CDC (no stream: the slot stays inactive);
-- starting again in initial_only does not rebuild the table
SELECT synchdb_add_conninfo('m1', '127.0.0.1', :port, :'srcuser', :'srcpwd', 'm_src', 'public', 'null', 'null', 'postgres');
SELECT synchdb_start_engine_bgw('m1', 'initial_only');
SELECT synchdb_test_wait($$SELECT count(*) = 20 FROM m_src.t$$);
\c m_src
INSERT INTO t VALUES (21, 'not replicated');
\c contrib_regression
SELECT name, stage, state, err FROM synchdb_state_view WHERE name = 'm1';
SELECT active FROM pg_replication_slots WHERE slot_name LIKE 'synchdb_m1_%';
SELECT count(*) FROM m_src.t;
SELECT 'm_src.t'::regclass::oid AS oid1 \gset
SELECT synchdb_restart_connector('m1', 'initial_only');
SELECT synchdb_test_wait($$SELECT state = 'polling' FROM synchdb_state_view WHERE name = 'm1'$$);
SELECT 'm_src.t'::regclass::oid = :oid1 AS not_rebuilt, count(*) FROM m_src.t;
SELECT synchdb_stop_engine_bgw('m1');
SELECT synchdb_del_conninfo('m1');
DROP SCHEMA m_src CASCADE;

-- no_data: tables without rows, then CDC; a restart resumes CDC
SELECT synchdb_add_conninfo('m2', '127.0.0.1', :port, :'srcuser', :'srcpwd', 'm_src', 'public', 'null', 'null', 'postgres');
SELECT synchdb_start_engine_bgw('m2', 'no_data');
-- (pg_class, not to_regclass: a long wait would see a stale catalog cache)
SELECT synchdb_test_wait($$SELECT count(*) = 1 FROM pg_class WHERE relname = 't' AND relnamespace::regnamespace::text = 'm_src'$$);
\c m_src
INSERT INTO t VALUES (22, 'cdc');
\c contrib_regression
SELECT synchdb_test_wait($$SELECT count(*) = 1 FROM m_src.t$$);
SELECT synchdb_restart_connector('m2', 'no_data');
\c m_src
INSERT INTO t VALUES (23, 'after restart');
\c contrib_regression
SELECT synchdb_test_wait($$SELECT count(*) = 2 FROM m_src.t$$);
SELECT * FROM m_src.t ORDER BY id;
SELECT synchdb_stop_engine_bgw('m2');
SELECT synchdb_del_conninfo('m2');
DROP SCHEMA m_src CASCADE;

-- never: CDC only; a table missing on the destination is created from what the
-- source says about it (columns, types, primary key)
SELECT synchdb_add_conninfo('m3', '127.0.0.1', :port, :'srcuser', :'srcpwd', 'm_src', 'public', 'null', 'null', 'postgres');
SELECT synchdb_start_engine_bgw('m3', 'never');
SELECT synchdb_test_wait($$SELECT count(*) = 1 FROM pg_replication_slots WHERE slot_name LIKE 'synchdb_m3_%' AND active$$);
\c m_src
INSERT INTO t VALUES (24, 'first change');
UPDATE t SET v = 'changed' WHERE id = 24;
INSERT INTO t VALUES (25, 'second change');
\c contrib_regression
-- created at the first change (pg_class, not to_regclass: see above)
SELECT synchdb_test_wait($$SELECT count(*) = 1 FROM pg_class WHERE relname = 't' AND relnamespace::regnamespace::text = 'm_src'$$);
SELECT synchdb_test_wait($$SELECT count(*) = 2 FROM m_src.t$$);
\d m_src.t
SELECT * FROM m_src.t ORDER BY id;
SELECT name, stage, state, err FROM synchdb_state_view WHERE name = 'm3';
SELECT synchdb_stop_engine_bgw('m3');
SELECT synchdb_del_conninfo('m3');
DROP SCHEMA m_src CASCADE;

-- when_needed: resumes while the slot is there; takes a new snapshot when the
-- slot is gone from the source
SELECT synchdb_add_conninfo('m4', '127.0.0.1', :port, :'srcuser', :'srcpwd', 'm_src', 'public', 'null', 'null', 'postgres');
SELECT synchdb_start_engine_bgw('m4', 'when_needed');
SELECT synchdb_test_wait($$SELECT count(*) = 25 FROM m_src.t$$);
SELECT 'm_src.t'::regclass::oid AS oid4 \gset
SELECT synchdb_restart_connector('m4', 'when_needed');
\c m_src
INSERT INTO t VALUES (26, 'resumed');
\c contrib_regression
SELECT synchdb_test_wait($$SELECT count(*) = 26 FROM m_src.t$$);
SELECT 'm_src.t'::regclass::oid = :oid4 AS same_table;
SELECT snapshot_end_ts AS snap_end FROM synchdb_snapstats WHERE name = 'm4' \gset
SELECT synchdb_stop_engine_bgw('m4');
\c m_src
SELECT count(*) AS dropped FROM (SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name LIKE 'synchdb_m4_%') d;
INSERT INTO t VALUES (27, 'while the slot was gone');
\c contrib_regression
SELECT synchdb_start_engine_bgw('m4', 'when_needed');
-- the rebuild drops and recreates the table: wait on the statistics, not on the
-- table (a reader's lock would hold the rebuild up)
SELECT synchdb_test_wait(format($$SELECT snapshot_end_ts > %s FROM synchdb_snapstats WHERE name = 'm4'$$, :snap_end));
SELECT 'm_src.t'::regclass::oid <> :oid4 AS rebuilt, count(*), max(id) FROM m_src.t;
\c m_src
INSERT INTO t VALUES (28, 'after the new snapshot');
\c contrib_regression
SELECT synchdb_test_wait($$SELECT count(*) = 28 FROM m_src.t$$);
SELECT name, stage, state, err FROM synchdb_state_view WHERE name = 'm4';
SELECT synchdb_stop_engine_bgw('m4');
SELECT synchdb_del_conninfo('m4');
DROP SCHEMA m_src CASCADE;
DROP DATABASE m_src;
