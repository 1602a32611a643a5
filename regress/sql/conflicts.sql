-- Conflicts, recognised by kind with PostgreSQL 18's names, counted in
-- synchdb_conflict_stats and logged with the table and the change; handled as
-- PostgreSQL's subscriber does: a row missing for an UPDATE or DELETE is
-- skipped (synchdb.on_missing_row = skip, the default), a unique violation is a
-- failed change that synchdb.error_handling_strategy decides (here skip). Each
-- conflict is made on purpose by changing the destination by hand; the other
-- changes of the same source transaction must arrive.
\getenv port SYNCHDB_PORT
\getenv srcuser SYNCHDB_SRC_USER
\getenv srcpwd SYNCHDB_SRC_PASSWORD
\getenv serverlog SYNCHDB_SERVER_LOG
-- the conflict lines connector c wrote to the server log
CREATE FUNCTION conflict_log(c text, logfile text) RETURNS SETOF text LANGUAGE sql AS $$
    SELECT substring(l FROM 'conflict .*')
      FROM regexp_split_to_table(pg_read_file(logfile), E'\n') l
     WHERE l LIKE '%connector ' || c || ': conflict %'
$$;
CREATE DATABASE cf_src;
\c cf_src
CREATE TABLE t (id int PRIMARY KEY, code text UNIQUE, v text);
INSERT INTO t VALUES (1, 'a', 'one'), (2, 'b', 'two'), (3, 'c', 'three'), (4, 'd', 'four');
\c contrib_regression
ALTER DATABASE contrib_regression SET synchdb.error_handling_strategy = 'skip';
SELECT synchdb_add_conninfo('cfconn', '127.0.0.1', :port, :'srcuser', :'srcpwd',
                            'cf_src', 'public', 'null', 'null', 'postgres');
SELECT synchdb_start_engine_bgw('cfconn');
SELECT synchdb_test_wait($$SELECT count(*) = 4 FROM cf_src.t$$);

-- update_missing and delete_missing: rows removed by hand on the destination
DELETE FROM cf_src.t WHERE id IN (1, 2);
\c cf_src
BEGIN;
UPDATE t SET v = 'one!' WHERE id = 1;
DELETE FROM t WHERE id = 2;
INSERT INTO t VALUES (5, 'e', 'five');
COMMIT;
-- insert_exists: a row added by hand that the source inserts too
\c contrib_regression
INSERT INTO cf_src.t VALUES (6, 'f', 'by hand');
\c cf_src
BEGIN;
INSERT INTO t VALUES (6, 'f6', 'from the source');
INSERT INTO t VALUES (7, 'g', 'seven');
COMMIT;
-- update_exists: a row added by hand holds the code an UPDATE moves to
\c contrib_regression
INSERT INTO cf_src.t VALUES (100, 'zz', 'by hand');
\c cf_src
BEGIN;
UPDATE t SET code = 'zz' WHERE id = 3;
INSERT INTO t VALUES (8, 'h', 'eight');
COMMIT;
-- multiple_unique_conflicts: an INSERT that collides on the primary key with
-- one row and on the unique code with another
\c contrib_regression
INSERT INTO cf_src.t VALUES (9, 'x', 'by hand'), (101, 'm', 'by hand');
\c cf_src
BEGIN;
INSERT INTO t VALUES (9, 'm', 'nine');
INSERT INTO t VALUES (10, 'j', 'ten');
COMMIT;
\c contrib_regression
SELECT synchdb_test_wait($$SELECT EXISTS (SELECT 1 FROM cf_src.t WHERE id = 10)$$);
SELECT name, state, err FROM synchdb_state_view WHERE name = 'cfconn';
-- the rest of each transaction is there; the conflicting changes are not
SELECT id, code, v FROM cf_src.t ORDER BY id;
SELECT * FROM synchdb_conflict_stats WHERE name = 'cfconn';
SELECT * FROM conflict_log('cfconn', :'serverlog');
-- SynchDB's own statistics views keep their columns
SELECT count(*) AS cdcstats_columns FROM information_schema.columns WHERE table_name = 'synchdb_cdcstats';
SELECT synchdb_reset_stats('cfconn');
SELECT * FROM synchdb_conflict_stats WHERE name = 'cfconn';
SELECT synchdb_stop_engine_bgw('cfconn');

-- on_missing_row = error: the strictness of before, the same message
ALTER DATABASE contrib_regression RESET synchdb.error_handling_strategy;
ALTER DATABASE contrib_regression SET synchdb.on_missing_row = 'error';
SELECT synchdb_start_engine_bgw('cfconn');
\c cf_src
UPDATE t SET v = 'one again' WHERE id = 1;
\c contrib_regression
SELECT synchdb_test_wait($$SELECT state = 'stopped' FROM synchdb_state_view WHERE name = 'cfconn'$$);
SELECT name, state, err FROM synchdb_state_view WHERE name = 'cfconn';
SELECT confl_update_missing FROM synchdb_conflict_stats WHERE name = 'cfconn';
ALTER DATABASE contrib_regression RESET synchdb.on_missing_row;
SELECT synchdb_del_conninfo('cfconn');
SET client_min_messages = warning;
DROP SCHEMA cf_src CASCADE;
RESET client_min_messages;
DROP DATABASE cf_src;

-- the reference's no_data mode: tables created empty, then CDC; a transaction
-- that inserts a new row and updates a row never copied: the insert arrives,
-- the update is counted as update_missing and skipped, nothing stops. The same
-- in mode never, where the tables are created at their first change.
CREATE DATABASE nd_src;
\c nd_src
CREATE TABLE t1 (id int PRIMARY KEY, v text);
CREATE TABLE t2 (id int PRIMARY KEY, v text);
INSERT INTO t1 SELECT g, 'old' FROM generate_series(1, 100) g;
INSERT INTO t2 SELECT g, 'old' FROM generate_series(1, 100) g;
\c contrib_regression
SELECT synchdb_add_conninfo('ndconn', '127.0.0.1', :port, :'srcuser', :'srcpwd',
                            'nd_src', 'public', 'null', 'null', 'postgres');
SELECT synchdb_start_engine_bgw('ndconn', 'no_data');
SELECT synchdb_test_wait($$SELECT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name LIKE 'synchdb\_ndconn\_%' AND active)$$);
\c nd_src
BEGIN;
INSERT INTO t1 VALUES (1000, 'new');
UPDATE t2 SET v = 'x' WHERE id = 1;
COMMIT;
\c contrib_regression
SELECT synchdb_test_wait($$SELECT EXISTS (SELECT 1 FROM nd_src.t1 WHERE id = 1000)$$);
SELECT name, state, err FROM synchdb_state_view WHERE name = 'ndconn';
SELECT (SELECT count(*) FROM nd_src.t1) AS t1_rows, (SELECT count(*) FROM nd_src.t2) AS t2_rows;
SELECT * FROM synchdb_conflict_stats WHERE name = 'ndconn';
SELECT synchdb_stop_engine_bgw('ndconn');
SELECT synchdb_del_conninfo('ndconn');
SET client_min_messages = warning;
DROP SCHEMA nd_src CASCADE;
RESET client_min_messages;
SELECT synchdb_add_conninfo('nvconn', '127.0.0.1', :port, :'srcuser', :'srcpwd',
                            'nd_src', 'public', 'null', 'null', 'postgres');
SELECT synchdb_start_engine_bgw('nvconn', 'never');
SELECT synchdb_test_wait($$SELECT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name LIKE 'synchdb\_nvconn\_%' AND active)$$);
\c nd_src
BEGIN;
INSERT INTO t1 VALUES (1001, 'new');
UPDATE t2 SET v = 'y' WHERE id = 2;
DELETE FROM t2 WHERE id = 3;
COMMIT;
\c contrib_regression
SELECT synchdb_test_wait($$SELECT EXISTS (SELECT 1 FROM nd_src.t1 WHERE id = 1001)$$);
SELECT synchdb_test_wait($$SELECT confl_delete_missing = 1 FROM synchdb_conflict_stats WHERE name = 'nvconn'$$);
SELECT name, state, err FROM synchdb_state_view WHERE name = 'nvconn';
SELECT (SELECT count(*) FROM nd_src.t1) AS t1_rows, to_regclass('nd_src.t2') IS NOT NULL AS t2_created;
SELECT * FROM synchdb_conflict_stats WHERE name = 'nvconn';
SELECT * FROM conflict_log('nvconn', :'serverlog');
SELECT synchdb_stop_engine_bgw('nvconn');
SELECT synchdb_del_conninfo('nvconn');
SET client_min_messages = warning;
DROP SCHEMA nd_src CASCADE;
RESET client_min_messages;
DROP DATABASE nd_src;
DROP FUNCTION conflict_log(text, text);
