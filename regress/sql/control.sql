-- Pause, resume, offsets, restart and exact statistics after a known workload;
-- schemasync (schema, then paused for review, then CDC).
\getenv port SYNCHDB_PORT
\getenv srcuser SYNCHDB_SRC_USER
\getenv srcpwd SYNCHDB_SRC_PASSWORD
CREATE DATABASE ctl_src;
\c ctl_src
CREATE TABLE t (id int PRIMARY KEY, v text);
INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 100) g;
\c contrib_regression
SELECT synchdb_add_conninfo('ctlconn', '127.0.0.1', :port, :'srcuser', :'srcpwd',
                            'ctl_src', 'public', 'null', 'null', 'postgres');
-- never started: zero counters; control needs a running connector
SELECT * FROM synchdb_cdcstats WHERE name = 'ctlconn';
SELECT synchdb_pause_engine('ctlconn');
SELECT synchdb_resume_engine('ctlconn');
SELECT synchdb_set_offset('ctlconn', '0/0');

SELECT synchdb_start_engine_bgw('ctlconn');
SELECT synchdb_test_wait($$SELECT count(*) = 100 FROM ctl_src.t$$);
-- the snapshot's end is recorded just after its rows committed
SELECT synchdb_test_wait($$SELECT snapshot_end_ts > 0 FROM synchdb_snapstats WHERE name = 'ctlconn'$$);
SELECT name, tables, rows, snapshot_begin_ts > 0 AND snapshot_end_ts >= snapshot_begin_ts AS ts_ok
FROM synchdb_snapstats WHERE name = 'ctlconn';
SELECT synchdb_resume_engine('ctlconn');

-- a known workload: 3 transactions with 6 inserts, 3 updates, 2 deletes, 1 DDL
\c ctl_src
INSERT INTO t SELECT g, 'new' FROM generate_series(101, 105) g;
BEGIN;
UPDATE t SET v = 'upd' WHERE id <= 3;
DELETE FROM t WHERE id IN (4, 5);
COMMIT;
ALTER TABLE t ADD COLUMN extra int;
INSERT INTO t VALUES (106, 'with extra', 1);
\c contrib_regression
SELECT synchdb_test_wait($$SELECT count(*) = 104 FROM ctl_src.t WHERE id <> 106 OR extra = 1$$);
SELECT * FROM synchdb_cdcstats WHERE name = 'ctlconn';
SELECT name, bad_events, total_events, batches_done BETWEEN 1 AND 3 AS batches_ok,
       average_batch_size = total_events / batches_done AS avg_ok,
       first_src_ts > 0 AND last_src_ts >= first_src_ts AND last_pg_ts >= first_pg_ts AS ts_ok
FROM synchdb_genstats WHERE name = 'ctlconn';

-- pause: the stream closes (the slot keeps the WAL) and nothing is applied
SELECT synchdb_pause_engine('ctlconn');
SELECT name, stage, state, err FROM synchdb_state_view WHERE name = 'ctlconn';
SELECT synchdb_pause_engine('ctlconn');
SELECT synchdb_test_wait($$SELECT NOT active FROM pg_replication_slots WHERE slot_name LIKE 'synchdb_ctlconn%'$$);
\c ctl_src
INSERT INTO t VALUES (200, 'while paused', NULL);
SELECT pg_current_wal_lsn()::text AS after_200 \gset
\c contrib_regression
SELECT set_config('synchdb_test.after_200', :'after_200', false) IS NOT NULL AS noted;
SELECT count(*) AS applied_while_paused FROM ctl_src.t WHERE id = 200;

-- offsets: bad ones are refused clearly; a good one skips row 200
SELECT synchdb_set_offset('ctlconn', 'not an offset');
DO $$
BEGIN
    PERFORM synchdb_set_offset('ctlconn', '0/1');
EXCEPTION WHEN invalid_parameter_value THEN
    RAISE NOTICE '%', regexp_replace(SQLERRM, '[0-9A-F]+/[0-9A-F]+', 'X/X', 'g');
END $$;
-- past the source's WAL end: refused with the source's current position, and
-- neither the origin nor the slot moves; NULL is an error, not 0
SELECT remote_lsn AS origin_before FROM pg_replication_origin_status
 WHERE external_id = synchdb_origin_name('ctlconn') \gset
SELECT confirmed_flush_lsn AS slot_before FROM pg_replication_slots WHERE slot_name LIKE 'synchdb_ctlconn%' \gset
DO $$
BEGIN
    PERFORM synchdb_set_offset('ctlconn', 'FFFFFFFF/FFFFFFFF');
EXCEPTION WHEN invalid_parameter_value THEN
    RAISE NOTICE '%', regexp_replace(SQLERRM, '(position|after) [0-9A-F]+/[0-9A-F]+', '\1 X/X', 'g');
    RAISE NOTICE 'names the source''s position: %',
        substring(SQLERRM FROM 'position ([0-9A-F]+/[0-9A-F]+)')::pg_lsn
            BETWEEN current_setting('synchdb_test.after_200')::pg_lsn AND pg_current_wal_flush_lsn();
END $$;
SELECT synchdb_set_offset('ctlconn', NULL);
SELECT remote_lsn = :'origin_before' AS origin_unchanged FROM pg_replication_origin_status
 WHERE external_id = synchdb_origin_name('ctlconn');
SELECT confirmed_flush_lsn = :'slot_before' AS slot_unchanged FROM pg_replication_slots WHERE slot_name LIKE 'synchdb_ctlconn%';
SELECT synchdb_set_offset('ctlconn', :'after_200');
SELECT synchdb_test_wait(format($$SELECT (last_dbz_offset::jsonb->>'lsn')::numeric = %s FROM synchdb_state_view WHERE name = 'ctlconn'$$,
                                (:'after_200'::pg_lsn - '0/0'::pg_lsn)));
SELECT synchdb_resume_engine('ctlconn');
SELECT name, state, err FROM synchdb_state_view WHERE name = 'ctlconn';
\c ctl_src
INSERT INTO t VALUES (201, 'after resume', NULL);
\c contrib_regression
SELECT synchdb_test_wait($$SELECT count(*) = 1 FROM ctl_src.t WHERE id = 201$$);
SELECT id, v FROM ctl_src.t WHERE id >= 200 ORDER BY id;

-- statistics reset; restart resumes without a new snapshot
SELECT synchdb_reset_stats('ctlconn');
SELECT * FROM synchdb_cdcstats WHERE name = 'ctlconn';
SELECT name, total_events, batches_done FROM synchdb_genstats WHERE name = 'ctlconn';
SELECT 'ctl_src.t'::regclass::oid AS table_oid \gset
SELECT synchdb_restart_connector('ctlconn', 'initial');
\c ctl_src
INSERT INTO t VALUES (202, 'after restart', NULL);
\c contrib_regression
SELECT synchdb_test_wait($$SELECT count(*) = 1 FROM ctl_src.t WHERE id = 202$$);
SELECT 'ctl_src.t'::regclass::oid = :table_oid AS same_table, count(*) FROM ctl_src.t;
SELECT creates, txs FROM synchdb_cdcstats WHERE name = 'ctlconn';

-- an origin moved past the source's WAL end by any other path: the worker
-- refuses to stream from it and confirms nothing, so the slot keeps every change
SELECT synchdb_stop_engine_bgw('ctlconn');
SELECT remote_lsn AS origin_before FROM pg_replication_origin_status
 WHERE external_id = synchdb_origin_name('ctlconn') \gset
SELECT confirmed_flush_lsn AS slot_before FROM pg_replication_slots WHERE slot_name LIKE 'synchdb_ctlconn%' \gset
SELECT pg_replication_origin_advance(synchdb_origin_name('ctlconn'), 'FFFFFFFF/FFFFFFFF');
\c ctl_src
INSERT INTO t VALUES (203, 'while the origin is bad', NULL);
\c contrib_regression
SELECT synchdb_start_engine_bgw('ctlconn');
-- (stopped: the worker has let go of the origin, which is moved back below)
SELECT synchdb_test_wait($$SELECT state = 'stopped' AND err LIKE '%past the source''s current WAL position%' FROM synchdb_state_view WHERE name = 'ctlconn'$$);
SELECT regexp_replace(err, 'WAL position [0-9A-F]+/[0-9A-F]+', 'WAL position X/X') AS err
  FROM synchdb_state_view WHERE name = 'ctlconn';
SELECT confirmed_flush_lsn = :'slot_before' AS slot_unchanged FROM pg_replication_slots WHERE slot_name LIKE 'synchdb_ctlconn%';
-- put the origin back: row 203 arrives, once
SELECT pg_replication_origin_advance(synchdb_origin_name('ctlconn'), :'origin_before');
SELECT synchdb_start_engine_bgw('ctlconn');
SELECT synchdb_test_wait($$SELECT count(*) = 1 FROM ctl_src.t WHERE id = 203$$);
SELECT name, state, err FROM synchdb_state_view WHERE name = 'ctlconn';

-- a call that fails changes nothing: a bad mode leaves the connector running,
-- in the same worker; a missing argument is named
SELECT pid AS pid_before FROM synchdb_state_view WHERE name = 'ctlconn' \gset
SELECT synchdb_restart_connector('ctlconn', 'bogus');
SELECT pid = :pid_before AS same_worker, state, isactive
  FROM synchdb_state_view s JOIN synchdb_conninfo c USING (name) WHERE name = 'ctlconn';
SELECT synchdb_add_objmap('ctlconn', NULL, 'public.t', 'x');
SELECT synchdb_del_objmap('ctlconn', NULL, 'public.t');
SELECT synchdb_restart_connector(NULL, 'initial');

-- a running connector cannot be removed
SELECT synchdb_del_conninfo('ctlconn');
SELECT synchdb_stop_engine_bgw('ctlconn');
SELECT synchdb_del_conninfo('ctlconn');
DROP SCHEMA ctl_src CASCADE;
DROP DATABASE ctl_src;

-- schemasync: tables without rows, then paused for review; resume streams
-- what changed after the schema was taken
CREATE DATABASE ss_src;
\c ss_src
CREATE TABLE a (id int PRIMARY KEY, v numeric(8,2) NOT NULL DEFAULT 1);
INSERT INTO a SELECT g, g FROM generate_series(1, 10) g;
\c contrib_regression
SELECT synchdb_add_conninfo('ssconn', '127.0.0.1', :port, :'srcuser', :'srcpwd',
                            'ss_src', 'public', 'null', 'null', 'postgres');
SELECT synchdb_start_engine_bgw('ssconn', 'schemasync');
SELECT synchdb_test_wait($$SELECT state = 'paused' FROM synchdb_state_view WHERE name = 'ssconn'$$);
SELECT name, stage, state, err FROM synchdb_state_view WHERE name = 'ssconn';
\d ss_src.a
SELECT count(*) FROM ss_src.a;
\c ss_src
INSERT INTO a VALUES (11, 11), (12, 12);
\c contrib_regression
SELECT synchdb_resume_engine('ssconn');
SELECT synchdb_test_wait($$SELECT count(*) = 2 FROM ss_src.a$$);
SELECT * FROM ss_src.a ORDER BY id;
SELECT synchdb_stop_engine_bgw('ssconn');
SELECT synchdb_del_conninfo('ssconn');
DROP SCHEMA ss_src CASCADE;
DROP DATABASE ss_src;

-- started in the transaction that also added it: the worker waits for that
-- transaction, and starts once it commits; a start rolled back starts nothing
CREATE DATABASE txs_src;
\c txs_src
CREATE TABLE t (id int PRIMARY KEY);
INSERT INTO t SELECT generate_series(1, 10);
\c contrib_regression
BEGIN;
SELECT synchdb_add_conninfo('txsconn', '127.0.0.1', :port, :'srcuser', :'srcpwd',
                            'txs_src', 'public', 'null', 'null', 'postgres');
SELECT synchdb_start_engine_bgw('txsconn');
SELECT pg_sleep(1.5);
COMMIT;
SELECT synchdb_test_wait($$SELECT count(*) = 10 FROM txs_src.t$$);
\c txs_src
INSERT INTO t VALUES (11);
\c contrib_regression
SELECT synchdb_test_wait($$SELECT count(*) = 11 FROM txs_src.t$$);
SELECT name, stage, state, err FROM synchdb_state_view WHERE name = 'txsconn';
SELECT synchdb_stop_engine_bgw('txsconn');
BEGIN;
SELECT synchdb_start_engine_bgw('txsconn');
SELECT pg_sleep(0.5);
ROLLBACK;
SELECT synchdb_test_wait($$SELECT pid = -1 FROM synchdb_state_view WHERE name = 'txsconn'$$);
SELECT name, state, isactive
  FROM synchdb_state_view JOIN synchdb_conninfo USING (name) WHERE name = 'txsconn';
\getenv serverlog SYNCHDB_SERVER_LOG
SELECT count(*) AS rolled_back_lines
  FROM regexp_split_to_table(pg_read_file(:'serverlog'), E'\n') l
 WHERE l LIKE '%connector txsconn: not started: the transaction that started it was rolled back%';
SELECT synchdb_del_conninfo('txsconn');
DROP SCHEMA txs_src CASCADE;
DROP DATABASE txs_src;
