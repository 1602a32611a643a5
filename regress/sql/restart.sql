-- Stopping and starting again resumes exactly: no new snapshot, no change lost,
-- none applied twice (a table without a key would show duplicates).
\getenv port SYNCHDB_PORT
\getenv srcuser SYNCHDB_SRC_USER
\getenv srcpwd SYNCHDB_SRC_PASSWORD
CREATE DATABASE restart_src;
\c restart_src
CREATE TABLE log (n int NOT NULL, note text);
INSERT INTO log SELECT g, 'snapshot' FROM generate_series(1, 100) g;
\c contrib_regression
SELECT synchdb_add_conninfo('rsconn', '127.0.0.1', :port, :'srcuser', :'srcpwd',
                            'restart_src', 'public', 'null', 'null', 'postgres');
SELECT synchdb_start_engine_bgw('rsconn');
SELECT synchdb_test_wait($$SELECT count(*) = 100 FROM restart_src.log$$);
\c restart_src
INSERT INTO log SELECT g, 'cdc 1' FROM generate_series(101, 200) g;
\c contrib_regression
SELECT synchdb_test_wait($$SELECT count(*) = 200 FROM restart_src.log$$);
SELECT synchdb_stop_engine_bgw('rsconn');
\c restart_src
INSERT INTO log SELECT g, 'while stopped' FROM generate_series(201, 300) g;
\c contrib_regression
SELECT synchdb_start_engine_bgw('rsconn', 'initial');
SELECT synchdb_test_wait($$SELECT count(*) = 300 FROM restart_src.log$$);
-- stop and start again twice more, with changes in between
SELECT synchdb_stop_engine_bgw('rsconn');
\c restart_src
INSERT INTO log SELECT g, 'stopped again' FROM generate_series(301, 350) g;
\c contrib_regression
SELECT synchdb_start_engine_bgw('rsconn');
\c restart_src
INSERT INTO log SELECT g, 'after restart' FROM generate_series(351, 400) g;
\c contrib_regression
SELECT synchdb_test_wait($$SELECT count(*) = 400 FROM restart_src.log$$);
SELECT note, count(*), count(DISTINCT n) AS distinct_n, min(n), max(n)
FROM restart_src.log GROUP BY note ORDER BY min(n);
SELECT stage, state, err FROM synchdb_state_view WHERE name = 'rsconn';
SELECT synchdb_stop_engine_bgw('rsconn');
SELECT synchdb_del_conninfo('rsconn');
DROP SCHEMA restart_src CASCADE;
DROP DATABASE restart_src;
