-- synchdb.error_handling_strategy with a real conflict: a row inserted by hand on
-- the destination that the source then inserts too.
\getenv port SYNCHDB_PORT
\getenv srcuser SYNCHDB_SRC_USER
\getenv srcpwd SYNCHDB_SRC_PASSWORD
CREATE DATABASE eh_src;
\c eh_src
CREATE TABLE t (id int PRIMARY KEY, v text);
INSERT INTO t SELECT g, 'snapshot' FROM generate_series(1, 10) g;
\c contrib_regression
SELECT synchdb_add_conninfo('ehconn', '127.0.0.1', :port, :'srcuser', :'srcpwd',
                            'eh_src', 'public', 'null', 'null', 'postgres');
SELECT synchdb_start_engine_bgw('ehconn');
SELECT synchdb_test_wait($$SELECT count(*) = 10 FROM eh_src.t$$);

-- exit (the default): the connector stops, the failing batch is not committed
INSERT INTO eh_src.t VALUES (11, 'by hand');
\c eh_src
INSERT INTO t VALUES (11, 'from source');
INSERT INTO t VALUES (12, 'from source');
\c contrib_regression
SELECT synchdb_test_wait($$SELECT state = 'stopped' FROM synchdb_state_view WHERE name = 'ehconn'$$);
SELECT name, pid, state, err FROM synchdb_state_view WHERE name = 'ehconn';
SELECT id, v FROM eh_src.t WHERE id > 10 ORDER BY id;
-- resolved by hand: the next start applies the batch that failed
DELETE FROM eh_src.t WHERE id = 11;
SELECT synchdb_start_engine_bgw('ehconn');
SELECT synchdb_test_wait($$SELECT count(*) = 2 FROM eh_src.t WHERE id > 10 AND v = 'from source'$$);
SELECT id, v FROM eh_src.t WHERE id > 10 ORDER BY id;
SELECT synchdb_stop_engine_bgw('ehconn');

-- skip: the failing change is logged and left out, the rest of its batch applied
ALTER DATABASE contrib_regression SET synchdb.error_handling_strategy = 'skip';
SELECT synchdb_reset_stats('ehconn');
SELECT synchdb_start_engine_bgw('ehconn');
INSERT INTO eh_src.t VALUES (13, 'by hand');
\c eh_src
BEGIN;
INSERT INTO t VALUES (13, 'from source');
INSERT INTO t VALUES (14, 'from source');
UPDATE t SET v = 'updated' WHERE id = 1;
COMMIT;
\c contrib_regression
SELECT synchdb_test_wait($$SELECT count(*) = 1 FROM eh_src.t WHERE id = 1 AND v = 'updated'$$);
SELECT id, v FROM eh_src.t WHERE id = 1 OR id > 12 ORDER BY id;
SELECT name, state, err FROM synchdb_state_view WHERE name = 'ehconn';
SELECT name, bad_events, total_events FROM synchdb_genstats WHERE name = 'ehconn';
SELECT name, dmls, creates, updates FROM synchdb_cdcstats WHERE name = 'ehconn';
SELECT synchdb_stop_engine_bgw('ehconn');

-- retry: the connector reports the error, waits and tries again until it works
ALTER DATABASE contrib_regression SET synchdb.error_handling_strategy = 'retry';
ALTER DATABASE contrib_regression SET synchdb.error_retry_interval = '100ms';
SELECT synchdb_start_engine_bgw('ehconn');
INSERT INTO eh_src.t VALUES (15, 'by hand');
\c eh_src
INSERT INTO t VALUES (15, 'from source'), (16, 'from source');
\c contrib_regression
SELECT synchdb_test_wait($$SELECT err LIKE '%duplicate key%' FROM synchdb_state_view WHERE name = 'ehconn'$$);
SELECT name, pid > 0 AS running, err FROM synchdb_state_view WHERE name = 'ehconn';
DELETE FROM eh_src.t WHERE id = 15;
SELECT synchdb_test_wait($$SELECT count(*) = 2 FROM eh_src.t WHERE id IN (15, 16) AND v = 'from source'$$);
SELECT synchdb_test_wait($$SELECT state = 'polling' AND err = 'no error' FROM synchdb_state_view WHERE name = 'ehconn'$$);
SELECT id, v FROM eh_src.t WHERE id > 14 ORDER BY id;
-- the source ends the stream (its walsender is terminated): the connector says
-- so, reconnects, and err is cleared as soon as it streams again, even with no
-- change to apply
SELECT synchdb_stop_engine_bgw('ehconn');
ALTER DATABASE contrib_regression SET synchdb.error_retry_interval = '2s';
SELECT synchdb_start_engine_bgw('ehconn');
SELECT synchdb_test_wait($$SELECT active FROM pg_replication_slots WHERE slot_name LIKE 'synchdb_ehconn%'$$);
SELECT count(*) AS terminated FROM pg_replication_slots s, pg_terminate_backend(s.active_pid) t
 WHERE s.slot_name LIKE 'synchdb_ehconn%' AND t;
SELECT synchdb_test_wait($$SELECT err <> 'no error' FROM synchdb_state_view WHERE name = 'ehconn'$$);
SELECT synchdb_test_wait($$SELECT state = 'polling' AND err = 'no error' FROM synchdb_state_view WHERE name = 'ehconn'$$);
\c eh_src
INSERT INTO t VALUES (17, 'after the reconnect');
\c contrib_regression
SELECT synchdb_test_wait($$SELECT count(*) = 1 FROM eh_src.t WHERE id = 17$$);

ALTER DATABASE contrib_regression RESET synchdb.error_handling_strategy;
ALTER DATABASE contrib_regression RESET synchdb.error_retry_interval;
SELECT synchdb_stop_engine_bgw('ehconn');
SELECT synchdb_del_conninfo('ehconn');
DROP SCHEMA eh_src CASCADE;
DROP DATABASE eh_src;
