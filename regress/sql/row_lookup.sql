-- Rows an UPDATE or DELETE changes are looked for first right after the row
-- changed before them (a statement changing many rows visits them in table
-- order, which the destination shares when its rows came in that order), and
-- through the replica identity index when they are not there. Checked here:
-- the tables equal to the source after ordered and unordered changes, rows
-- changed twice, key changes of a text and numeric key, a row missing on the
-- destination, a row locked by a destination session; and, from the index's
-- statistics, that the ordered changes did not walk the index row by row while
-- the unordered ones did. A row changed again in the same destination
-- transaction is looked for first where that transaction wrote it: checked
-- with a few hot rows changed by many source transactions (HOT updates and
-- updates to another page, key changes, a key deleted and inserted again), the
-- index hardly walked.
\getenv port SYNCHDB_PORT
\getenv srcuser SYNCHDB_SRC_USER
\getenv srcpwd SYNCHDB_SRC_PASSWORD
\getenv bindir SYNCHDB_BINDIR
\setenv PGBIN :bindir
\setenv PGPORT :port
-- each table's row count and md5 (setup's synchdb_test_sums), here and, from
-- its definition here, in the source database
CREATE FUNCTION rl_sums(s text) RETURNS text LANGUAGE sql AS $$ SELECT synchdb_test_sums(s, ARRAY['ord', 'rnd', 'two', 'hot']) $$;
SELECT pg_get_functiondef('synchdb_test_sums(text,text[])'::regprocedure) AS sums_def,
       pg_get_functiondef('rl_sums(text)'::regprocedure) AS rl_sums_def \gset
-- index scans of each destination table's key, as the statistics have them
CREATE FUNCTION rl_scans(OUT ord bigint, OUT rnd bigint, OUT two bigint, OUT hot bigint) LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_stat_clear_snapshot();
    SELECT sum(idx_scan) FILTER (WHERE relname = 'ord'), sum(idx_scan) FILTER (WHERE relname = 'rnd'),
           sum(idx_scan) FILTER (WHERE relname = 'two'), sum(idx_scan) FILTER (WHERE relname = 'hot')
      INTO ord, rnd, two, hot FROM pg_stat_user_indexes WHERE schemaname = 'rl_src';
END $$;
CREATE DATABASE rl_src;
\c rl_src
:sums_def;
:rl_sums_def;
-- ord: rows stored in key order; rnd: in random order, also changed in key
-- order below; two: a key of two columns, text and numeric
CREATE TABLE ord (id int PRIMARY KEY, n int NOT NULL, v text);
CREATE TABLE rnd (id int PRIMARY KEY, n int NOT NULL, v text);
CREATE TABLE two (a text, b numeric, n int, PRIMARY KEY (a, b));
-- hot: a few rows changed over and over (section 3)
CREATE TABLE hot (id int PRIMARY KEY, n int NOT NULL, v text);
INSERT INTO hot SELECT g, 0, 'v' FROM generate_series(1, 10) g;
INSERT INTO ord SELECT g, 0, md5(g::text) FROM generate_series(1, 5000) g;
INSERT INTO rnd SELECT g, 0, md5(g::text) FROM generate_series(1, 3000) g ORDER BY md5(g::text);
INSERT INTO two SELECT 'k' || g, g / 7.0, 0 FROM generate_series(1, 2000) g;
\c contrib_regression
SELECT synchdb_add_conninfo('rlconn', '127.0.0.1', :port, :'srcuser', :'srcpwd',
                            'rl_src', 'public', 'null', 'null', 'postgres');
SELECT synchdb_start_engine_bgw('rlconn');
SELECT synchdb_test_wait($$SELECT count(*) = 2000 FROM rl_src.two$$);
-- stopped while the changes are made: the statistics of the index scans are
-- whole when the worker has exited
SELECT synchdb_stop_engine_bgw('rlconn');
SELECT * FROM rl_scans() \gset b_
-- a row the destination lost: its changes are update_missing, skipped
DELETE FROM rl_src.ord WHERE id = 2500;

-- one transaction: every row of each table updated in table order (a
-- sequential scan on the source), ord's twice, rnd's again in key order (an
-- index scan), keys changed, rows deleted in table order
\c rl_src
BEGIN;
SET LOCAL enable_indexscan = off;
SET LOCAL enable_bitmapscan = off;
UPDATE ord SET n = n + 1;
UPDATE ord SET n = n + 1, v = v || 'x';
UPDATE two SET n = n + 1;
UPDATE rnd SET n = n + 1;
UPDATE two SET b = b + 1000 WHERE a LIKE 'k1%';
DELETE FROM ord WHERE id % 3 = 0;
SET LOCAL enable_indexscan = on;
SET LOCAL enable_seqscan = off;
UPDATE rnd SET n = n + 10 WHERE id BETWEEN 1 AND 3000;
COMMIT;
DELETE FROM ord WHERE id = 2500;
SELECT rl_sums('public') AS want \gset
\c contrib_regression
SELECT synchdb_start_engine_bgw('rlconn');
SELECT synchdb_test_wait(format('SELECT rl_sums(%L) = %L', 'rl_src', :'want'));
SELECT synchdb_stop_engine_bgw('rlconn');
SELECT rl_sums('rl_src');
SELECT count(*) FILTER (WHERE n = 2 AND v LIKE '%x') AS ord_twice FROM rl_src.ord;
SELECT count(*) FILTER (WHERE n = 11) AS rnd_both FROM rl_src.rnd;
SELECT count(*) FILTER (WHERE b >= 1000) AS two_moved FROM rl_src.two;
-- rows changed in table order were found where the row before them was, not
-- in the index (ord's deletes skip rows: those take the index); rnd's second
-- update, in key order in a table stored in another, walked it once per row,
-- less the rows still found where the first update wrote them (at most 256
-- are remembered). (The index was walked for every row before: 11664, 6000
-- and 3111 times.)
SELECT ord - :b_ord < 1666 + 1000 AS ord_few, rnd - :b_rnd BETWEEN 3000 - 256 AND 3300 AS rnd_once,
       two - :b_two < 311 AS two_few
  FROM rl_scans();

-- 2. a destination session holds a row lock on a row an update changes (the
-- second: the first row of a batch is looked up in the index, the next one
-- where the first was): the update waits for it, then applies
\c contrib_regression
SELECT synchdb_start_engine_bgw('rlconn');
\! PGAPPNAME=synchdb_rl_lock "$PGBIN/psql" -X -q -h 127.0.0.1 -p "$PGPORT" -d contrib_regression -c 'BEGIN' -c 'SELECT id FROM rl_src.ord WHERE id = 2 FOR UPDATE' -c 'SELECT pg_sleep(300)' >/dev/null 2>&1 &
SELECT synchdb_test_wait($$SELECT count(*) = 1 FROM pg_locks WHERE relation = 'rl_src.ord'::regclass AND mode = 'RowShareLock' AND granted$$);
\c rl_src
UPDATE ord SET n = 100 WHERE id <= 10;
SELECT rl_sums('public') AS want \gset
\c contrib_regression
-- the worker waits for the lock holder's transaction
SELECT synchdb_test_wait($$SELECT count(*) = 1 FROM pg_locks WHERE locktype = 'transactionid' AND NOT granted$$);
SELECT count(*) AS changed FROM rl_src.ord WHERE id <= 10 AND n = 100;
SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'synchdb_rl_lock';
SELECT synchdb_test_wait(format('SELECT rl_sums(%L) = %L', 'rl_src', :'want'));
SELECT id, n FROM rl_src.ord WHERE id <= 10 ORDER BY id;
SELECT synchdb_stop_engine_bgw('rlconn');

-- 3. hot rows: 400 source transactions, applied in one destination
-- transaction, each changing one of 10 rows; v grows, so after a few HOT
-- updates on its page a row's new version goes to another page (and the index
-- gets an entry for it). Then in one more transaction each: a key changed and
-- the row changed again under its new key, a key deleted and inserted again
-- and that row changed, and a key taken by another row after its row left it.
SELECT * FROM rl_scans() \gset b_
\c rl_src
DO $$
BEGIN
    FOR i IN 1..400 LOOP
        UPDATE hot SET n = n + 1, v = repeat('x', 40 + i) WHERE id = i % 10 + 1;
        COMMIT;
    END LOOP;
END $$;
BEGIN;
UPDATE hot SET id = 101 WHERE id = 1;
UPDATE hot SET n = n + 1000 WHERE id = 101;
COMMIT;
BEGIN;
DELETE FROM hot WHERE id = 2;
INSERT INTO hot VALUES (2, -1, 'again');
UPDATE hot SET n = n - 1 WHERE id = 2;
COMMIT;
UPDATE hot SET id = 103 WHERE id = 3;
UPDATE hot SET id = 3 WHERE id = 4;
UPDATE hot SET n = n + 7 WHERE id = 3;
SELECT rl_sums('public') AS want \gset
SELECT string_agg(id || ':' || n, ' ' ORDER BY id) AS hot_rows FROM hot;
\c contrib_regression
SELECT synchdb_start_engine_bgw('rlconn');
SELECT synchdb_test_wait(format('SELECT rl_sums(%L) = %L', 'rl_src', :'want'));
SELECT synchdb_stop_engine_bgw('rlconn');
SELECT string_agg(id || ':' || n, ' ' ORDER BY id) AS hot_rows FROM rl_src.hot;
-- the 400 changes did not walk the index (each row's first change is found
-- right after the row changed before it, the rows being stored in key order;
-- the later ones where the transaction wrote the row last); a few of the last
-- changes may walk it. (Without remembering the rows: more than 390 walks.)
SELECT hot - :b_hot < 20 AS hot_few FROM rl_scans();
SELECT synchdb_del_conninfo('rlconn');
DROP SCHEMA rl_src CASCADE;
DROP DATABASE rl_src;
DROP FUNCTION rl_sums(text), rl_scans();
