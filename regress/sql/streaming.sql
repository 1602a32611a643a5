-- Large transactions arrive while they run (pgoutput protocol 2, streaming
-- 'on'): the source sends a transaction larger than its
-- logical_decoding_work_mem in blocks before its commit; the connector keeps
-- it in a file of its own until its commit, then applies it with its commit
-- position. What a rollback (of the transaction, or to a savepoint) undid
-- never arrives; transactions committed meanwhile are applied at once, in
-- their order; a stop in the middle loses nothing and applies nothing twice.
\getenv port SYNCHDB_PORT
\getenv srcuser SYNCHDB_SRC_USER
\getenv srcpwd SYNCHDB_SRC_PASSWORD
\getenv bindir SYNCHDB_BINDIR
\getenv serverlog SYNCHDB_SERVER_LOG
\setenv PGBIN :bindir
\setenv PGPORT :port
-- the source streams every transaction of more than 64 kB of changes: the
-- connector sets logical_decoding_work_mem for its own walsender (the
-- server's stays at its default, 64MB)
ALTER SYSTEM SET synchdb.source_decoding_work_mem = '64kB';
SELECT pg_reload_conf();
CREATE DATABASE str_src;
\c str_src
CREATE TABLE t (id int PRIMARY KEY, v text, n int);
CREATE TABLE small (id int PRIMARY KEY, v text);
CREATE FUNCTION sums() RETURNS text LANGUAGE sql AS $$
    SELECT format('t:%s:%s small:%s:%s',
                  (SELECT count(*) FROM t), (SELECT md5(string_agg(x::text, '|' ORDER BY id)) FROM t x),
                  (SELECT count(*) FROM small), (SELECT md5(string_agg(x::text, '|' ORDER BY id)) FROM small x))
$$;
\c contrib_regression
CREATE FUNCTION str_sums() RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    RETURN format('t:%s:%s small:%s:%s',
                  (SELECT count(*) FROM str_src.t), (SELECT md5(string_agg(x::text, '|' ORDER BY id)) FROM str_src.t x),
                  (SELECT count(*) FROM str_src.small), (SELECT md5(string_agg(x::text, '|' ORDER BY id)) FROM str_src.small x));
END $$;
-- transactions the source streamed on the connector's slot (read afresh: a
-- waiting transaction would see the statistics frozen)
CREATE FUNCTION streamed() RETURNS bigint LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_stat_clear_snapshot();
    RETURN (SELECT coalesce(sum(stream_txns), 0) FROM pg_stat_replication_slots WHERE slot_name LIKE 'synchdb_strconn%');
END $$;
-- files of streamed transactions waiting for their commit
CREATE FUNCTION spill_files() RETURNS bigint LANGUAGE sql AS $$
    SELECT count(*) FROM pg_ls_dir('pg_synchdb/stream', true, false) d,
           LATERAL pg_ls_dir('pg_synchdb/stream/' || d, true, false) f
     WHERE d LIKE 'synchdb_strconn%'
$$;
-- a session of its own holds advisory lock 42 in str_src; a transaction that
-- asks for it waits there, open
CREATE FUNCTION gate_held() RETURNS bool LANGUAGE sql AS $$
    SELECT count(*) = 1 FROM pg_locks WHERE locktype = 'advisory' AND objid = 42 AND granted
$$;
CREATE FUNCTION gate_waited() RETURNS bool LANGUAGE sql AS $$
    SELECT count(*) = 1 FROM pg_locks WHERE locktype = 'advisory' AND objid = 42 AND NOT granted
$$;
CREATE FUNCTION open_gate() RETURNS bool LANGUAGE sql AS $$
    SELECT bool_and(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = 'synchdb_str_gate'
$$;
SELECT synchdb_add_conninfo('strconn', '127.0.0.1', :port, :'srcuser', :'srcpwd',
                            'str_src', 'public', 'null', 'null', 'postgres');
SELECT synchdb_start_engine_bgw('strconn');
SELECT synchdb_test_wait($$SELECT count(*) = 0 FROM str_src.t$$);
SELECT streamed() AS streamed_before \gset

-- 1. committed, with a savepoint rolled back and one released
\c str_src
BEGIN;
INSERT INTO t SELECT g, repeat('a', 50), g FROM generate_series(1, 20000) g;
SAVEPOINT s1;
INSERT INTO t SELECT g, 'rolled back', g FROM generate_series(20001, 30000) g;
UPDATE t SET n = -1 WHERE id <= 100;
ROLLBACK TO SAVEPOINT s1;
SAVEPOINT s2;
UPDATE t SET v = 'kept' WHERE id % 100 = 0;
RELEASE SAVEPOINT s2;
DELETE FROM t WHERE id BETWEEN 500 AND 599;
COMMIT;
SELECT sums() AS want \gset
\c contrib_regression
SELECT synchdb_test_wait(format('SELECT str_sums() = %L', :'want'));
SELECT count(*) AS rows, count(*) FILTER (WHERE v = 'kept') AS kept,
       count(*) FILTER (WHERE v = 'rolled back' OR n < 0) AS rolled_back FROM str_src.t;
SELECT synchdb_test_wait(format('SELECT streamed() > %s', :streamed_before));
SELECT spill_files();

-- 2. rolled back after it was streamed: nothing of it arrives, its file goes
\! PGAPPNAME=synchdb_str_gate "$PGBIN/psql" -X -q -h 127.0.0.1 -p "$PGPORT" -d str_src -c 'SELECT pg_advisory_lock(42)' -c 'SELECT pg_sleep(300)' >/dev/null 2>&1 &
SELECT synchdb_test_wait('SELECT gate_held()');
SELECT streamed() AS streamed_before \gset
\! "$PGBIN/psql" -X -q -h 127.0.0.1 -p "$PGPORT" -d str_src -c 'BEGIN' -c 'INSERT INTO t SELECT g, $$aborted$$, g FROM generate_series(200001, 220000) g' -c 'SELECT pg_advisory_xact_lock(42)' -c 'ROLLBACK' >/dev/null 2>&1 &
SELECT synchdb_test_wait('SELECT gate_waited()');
SELECT synchdb_test_wait(format('SELECT streamed() > %s', :streamed_before));
SELECT synchdb_test_wait('SELECT spill_files() = 1');
SELECT open_gate();
\c str_src
INSERT INTO small VALUES (1, 'after the rollback');
\c contrib_regression
SELECT synchdb_test_wait($$SELECT count(*) = 1 FROM str_src.small$$);
SELECT count(*) AS aborted_rows FROM str_src.t WHERE v = 'aborted';
SELECT synchdb_test_wait('SELECT spill_files() = 0');

-- 3. open while others commit: those are applied at once, it at its commit.
-- It first deletes a row already gone here (removed by hand): that conflict,
-- met while it was applied early and met again when it is applied at its
-- commit, counts and is logged once
DELETE FROM str_src.t WHERE id = 2;
\! PGAPPNAME=synchdb_str_gate "$PGBIN/psql" -X -q -h 127.0.0.1 -p "$PGPORT" -d str_src -c 'SELECT pg_advisory_lock(42)' -c 'SELECT pg_sleep(300)' >/dev/null 2>&1 &
SELECT synchdb_test_wait('SELECT gate_held()');
SELECT streamed() AS streamed_before \gset
\! "$PGBIN/psql" -X -q -h 127.0.0.1 -p "$PGPORT" -d str_src -c 'BEGIN' -c 'DELETE FROM t WHERE id = 2' -c 'INSERT INTO t SELECT g, $$late$$, g FROM generate_series(100001, 120000) g' -c 'SELECT pg_advisory_xact_lock(42)' -c 'UPDATE t SET n = n + 1 WHERE id > 110000' -c 'COMMIT' >/dev/null 2>&1 &
SELECT synchdb_test_wait('SELECT gate_waited()');
SELECT synchdb_test_wait(format('SELECT streamed() > %s', :streamed_before));
\c str_src
BEGIN;
INSERT INTO small VALUES (2, 'while the large one is open');
UPDATE t SET v = 'updated meanwhile' WHERE id = 1;
COMMIT;
\c contrib_regression
SELECT synchdb_test_wait($$SELECT count(*) = 2 FROM str_src.small$$);
SELECT v FROM str_src.t WHERE id = 1;
SELECT count(*) AS late_rows_before_commit FROM str_src.t WHERE v = 'late';
SELECT spill_files() AS files_while_open;
SELECT open_gate();
SELECT synchdb_test_wait($$SELECT count(*) = 20000 FROM str_src.t WHERE v = 'late'$$);
\c str_src
SELECT sums() AS want \gset
\c contrib_regression
SELECT synchdb_test_wait(format('SELECT str_sums() = %L', :'want'));
SELECT count(*) FILTER (WHERE n = id + 1) AS updated_in_it FROM str_src.t WHERE v = 'late';
SELECT confl_delete_missing FROM synchdb_conflict_stats WHERE name = 'strconn';
SELECT count(*) AS delete_missing_logged
  FROM regexp_split_to_table(pg_read_file(:'serverlog'), E'\n') l
 WHERE l LIKE '%connector strconn: conflict delete_missing%';

-- 4. stopped while one is open: it arrives once, after the next start
\! PGAPPNAME=synchdb_str_gate "$PGBIN/psql" -X -q -h 127.0.0.1 -p "$PGPORT" -d str_src -c 'SELECT pg_advisory_lock(42)' -c 'SELECT pg_sleep(300)' >/dev/null 2>&1 &
SELECT synchdb_test_wait('SELECT gate_held()');
SELECT streamed() AS streamed_before \gset
\! "$PGBIN/psql" -X -q -h 127.0.0.1 -p "$PGPORT" -d str_src -c 'BEGIN' -c 'INSERT INTO t SELECT g, $$across a stop$$, g FROM generate_series(300001, 320000) g' -c 'SELECT pg_advisory_xact_lock(42)' -c 'DELETE FROM t WHERE id <= 10' -c 'COMMIT' >/dev/null 2>&1 &
SELECT synchdb_test_wait('SELECT gate_waited()');
SELECT synchdb_test_wait(format('SELECT streamed() > %s', :streamed_before));
SELECT synchdb_stop_engine_bgw('strconn');
SELECT synchdb_test_wait($$SELECT pid = -1 FROM synchdb_state_view WHERE name = 'strconn'$$);
SELECT open_gate();
SELECT synchdb_start_engine_bgw('strconn');
SELECT synchdb_test_wait($$SELECT count(*) = 20000 FROM str_src.t WHERE v = 'across a stop'$$);
\c str_src
SELECT sums() AS want \gset
\c contrib_regression
SELECT synchdb_test_wait(format('SELECT str_sums() = %L', :'want'));
SELECT count(*) AS rows FROM str_src.t;
SELECT synchdb_test_wait('SELECT spill_files() = 0');
SELECT stage, state, err FROM synchdb_state_view WHERE name = 'strconn';

-- 5. alone, it is applied while it runs: the connector's open transaction
-- already writes into the destination table (it holds its lock), nothing of
-- it is visible before its commit, all of it right after
\! PGAPPNAME=synchdb_str_gate "$PGBIN/psql" -X -q -h 127.0.0.1 -p "$PGPORT" -d str_src -c 'SELECT pg_advisory_lock(42)' -c 'SELECT pg_sleep(300)' >/dev/null 2>&1 &
SELECT synchdb_test_wait('SELECT gate_held()');
SELECT streamed() AS streamed_before \gset
\! "$PGBIN/psql" -X -q -h 127.0.0.1 -p "$PGPORT" -d str_src -c 'BEGIN' -c 'INSERT INTO t SELECT g, $$early$$, g FROM generate_series(400001, 430000) g' -c 'UPDATE t SET n = 0 WHERE id BETWEEN 400001 AND 400100' -c 'SELECT pg_advisory_xact_lock(42)' -c 'DELETE FROM t WHERE id BETWEEN 400101 AND 400200' -c 'COMMIT' >/dev/null 2>&1 &
SELECT synchdb_test_wait('SELECT gate_waited()');
SELECT synchdb_test_wait(format('SELECT streamed() > %s', :streamed_before));
SELECT synchdb_test_wait($$SELECT count(*) > 0 FROM pg_locks
                            WHERE relation = 'str_src.t'::regclass AND mode = 'RowExclusiveLock'
                              AND pid = (SELECT pid FROM synchdb_state_view WHERE name = 'strconn')$$);
SELECT count(*) AS early_rows_before_commit FROM str_src.t WHERE v = 'early';
SELECT open_gate();
SELECT synchdb_test_wait($$SELECT count(*) = 29900 FROM str_src.t WHERE v = 'early'$$);
\c str_src
SELECT sums() AS want \gset
\c contrib_regression
SELECT synchdb_test_wait(format('SELECT str_sums() = %L', :'want'));
SELECT count(*) FILTER (WHERE n = 0) AS updated_in_it FROM str_src.t WHERE v = 'early';

-- 6. a column added in it, then others commit: the schema change waits for
-- its commit (the rows the table had get the column's default), the
-- transactions committed meanwhile are applied with the table as it was
\! PGAPPNAME=synchdb_str_gate "$PGBIN/psql" -X -q -h 127.0.0.1 -p "$PGPORT" -d str_src -c 'SELECT pg_advisory_lock(42)' -c 'SELECT pg_sleep(300)' >/dev/null 2>&1 &
SELECT synchdb_test_wait('SELECT gate_held()');
SELECT streamed() AS streamed_before \gset
\! "$PGBIN/psql" -X -q -h 127.0.0.1 -p "$PGPORT" -d str_src -c 'BEGIN' -c 'INSERT INTO t SELECT g, $$before w$$, g FROM generate_series(500001, 520000) g' -c 'ALTER TABLE t ADD COLUMN w int DEFAULT 7' -c 'INSERT INTO t SELECT g, $$with w$$, g, g FROM generate_series(520001, 540000) g' -c 'SELECT pg_advisory_xact_lock(42)' -c 'COMMIT' >/dev/null 2>&1 &
SELECT synchdb_test_wait('SELECT gate_waited()');
SELECT synchdb_test_wait(format('SELECT streamed() > %s', :streamed_before));
\c str_src
INSERT INTO small VALUES (3, 'while the column is added');
\c contrib_regression
SELECT synchdb_test_wait($$SELECT count(*) = 3 FROM str_src.small$$);
SELECT open_gate();
SELECT synchdb_test_wait($$SELECT count(*) = 20000 FROM str_src.t WHERE v = 'with w'$$);
\c str_src
SELECT sums() AS want \gset
\c contrib_regression
SELECT synchdb_test_wait(format('SELECT str_sums() = %L', :'want'));
SELECT count(*) FILTER (WHERE w = 7) AS default_w, count(*) FILTER (WHERE w > 7) AS own_w FROM str_src.t;
SELECT synchdb_test_wait('SELECT spill_files() = 0');
SELECT stage, state, err FROM synchdb_state_view WHERE name = 'strconn';

SELECT synchdb_stop_engine_bgw('strconn');
SELECT synchdb_test_wait($$SELECT pid = -1 FROM synchdb_state_view WHERE name = 'strconn'$$);
SELECT synchdb_del_conninfo('strconn');
DROP SCHEMA str_src CASCADE;
DROP FUNCTION str_sums(), streamed(), spill_files(), gate_held(), gate_waited(), open_gate();
ALTER SYSTEM RESET synchdb.source_decoding_work_mem;
SELECT pg_reload_conf();
DROP DATABASE str_src;
