-- The parallel initial copy: the connector and its copy helpers copy several
-- tables, and page ranges of a large one, at once into a staging schema; the
-- destination tables appear in the snapshot's one last transaction, equal to
-- the source row by row, with every change made during the copy applied once.
-- A stop in the middle leaves only the staging schema, which the next start
-- drops; a failing item fails the snapshot with its reason and leaves nothing.
\getenv port SYNCHDB_PORT
\getenv srcuser SYNCHDB_SRC_USER
\getenv srcpwd SYNCHDB_SRC_PASSWORD
\getenv bindir SYNCHDB_BINDIR
\setenv PGBIN :bindir
\setenv PGPORT :port
ALTER SYSTEM SET synchdb.snapshot_parallelism = 3;
SELECT pg_reload_conf();
CREATE DATABASE par_src;
\c par_src
-- large enough to be split into page ranges (about 40 MB)
CREATE TABLE big (id bigserial PRIMARY KEY, n numeric, doc jsonb, note text NOT NULL DEFAULT 'none');
INSERT INTO big (n, doc, note)
SELECT g / 7.0, jsonb_build_object('g', g, 'tag', 'r' || g % 13), repeat('x', 60) || g
  FROM generate_series(1, 300000) g;
CREATE TABLE ident (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, v text);
INSERT INTO ident (v) SELECT 'v' || g FROM generate_series(1, 5000) g;
CREATE TABLE keyless (a int, b text);
INSERT INTO keyless SELECT g % 100, 'k' || g FROM generate_series(1, 20000) g;
CREATE TABLE "Odd ""Name""" ("Col A" int PRIMARY KEY, total int GENERATED ALWAYS AS ("Col A" * 2) STORED);
INSERT INTO "Odd ""Name""" ("Col A") SELECT g FROM generate_series(1, 3000) g;
CREATE TABLE gate (id int PRIMARY KEY, v text);
INSERT INTO gate SELECT g, 'snapshot' FROM generate_series(1, 100) g;
CREATE FUNCTION sums() RETURNS TABLE (t text, rows bigint, sum text)
LANGUAGE sql AS $$
    SELECT 'big', count(*), md5(string_agg(x::text, '|' ORDER BY id)) FROM big x
    UNION ALL SELECT 'ident', count(*), md5(string_agg(x::text, '|' ORDER BY id)) FROM ident x
    UNION ALL SELECT 'keyless', count(*), md5(string_agg(x::text, '|' ORDER BY a, b)) FROM keyless x
    UNION ALL SELECT 'odd', count(*), md5(string_agg(x::text, '|' ORDER BY "Col A")) FROM "Odd ""Name""" x
    UNION ALL SELECT 'gate', count(*), md5(string_agg(x::text, '|' ORDER BY id)) FROM gate x
    ORDER BY 1
$$;

\c contrib_regression
SELECT synchdb_add_conninfo('parconn', '127.0.0.1', :port, :'srcuser', :'srcpwd',
                            'par_src', 'public', 'null', 'null', 'postgres');
-- A session of its own (in the background) holds table gate locked from the
-- moment the copy runs (the publication, which would wait for the lock too,
-- exists by then): the copy of gate, the smallest item and so the last one
-- taken, waits for it. (pg_stat_activity would stay frozen in a waiting
-- transaction: the waits read the work list and pg_locks.)
CREATE FUNCTION hold_gate(old_snapshot text) RETURNS bool LANGUAGE plpgsql AS $$
BEGIN
    PERFORM synchdb_test_wait(format($q$SELECT count(*) > 0 FROM synchdb_copy_work
                                         WHERE name = 'parconn' AND state = 'running' AND snapshot <> %L$q$, old_snapshot));
    RETURN true;
END $$;
-- a copy (not the locking session) waits for the lock on gate
CREATE FUNCTION gate_waiting() RETURNS bool LANGUAGE sql AS $$
    SELECT count(*) > 0 FROM pg_locks l JOIN pg_database d ON d.oid = l.database
     WHERE d.datname = 'par_src' AND l.locktype = 'relation' AND NOT l.granted
       AND l.mode = 'AccessShareLock'
$$;
-- no copy helper runs (pg_stat_activity is read afresh: a waiting
-- transaction would see it frozen)
CREATE FUNCTION helpers_gone() RETURNS bool LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_stat_clear_snapshot();
    RETURN NOT EXISTS (SELECT 1 FROM pg_stat_activity WHERE backend_type = 'synchdb copy helper');
END $$;
CREATE FUNCTION release_gate() RETURNS bool LANGUAGE sql AS $$
    SELECT bool_and(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = 'synchdb_gate'
$$;

-- the first start is stopped in the middle of its copy
\set old_snapshot none
SELECT synchdb_start_engine_bgw('parconn');
SELECT hold_gate(:'old_snapshot');
\! PGAPPNAME=synchdb_gate "$PGBIN/psql" -X -q -h 127.0.0.1 -p "$PGPORT" -d par_src -c 'BEGIN' -c 'LOCK TABLE gate IN ACCESS EXCLUSIVE MODE' -c 'SELECT pg_sleep(300)' >/dev/null 2>&1 &
SELECT synchdb_test_wait('SELECT gate_waiting()');
SELECT count(DISTINCT helper) > 1 AS several_processes FROM synchdb_copy_work WHERE name = 'parconn' AND state <> 'todo';
-- nothing is in place yet: the rows go to the staging schema
SELECT nspname FROM pg_namespace WHERE nspname LIKE 'synchdb_stage_%';
SELECT count(*) AS dest_tables FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'par_src';
SELECT count(DISTINCT srcrelid) AS tables, count(*) > 5 AS split_into_page_ranges FROM synchdb_copy_work WHERE name = 'parconn';
SELECT synchdb_stop_engine_bgw('parconn');
SELECT synchdb_test_wait($$SELECT pid = -1 FROM synchdb_state_view WHERE name = 'parconn'$$);
SELECT synchdb_test_wait('SELECT helpers_gone()');
SELECT count(*) AS dest_tables FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'par_src';
SELECT release_gate();

-- a copy whose source session ends (an administrator, a crash) fails the
-- snapshot with the source's words and puts nothing in place
SELECT max(snapshot) AS old_snapshot FROM synchdb_copy_work WHERE name = 'parconn' \gset
SELECT synchdb_start_engine_bgw('parconn');
SELECT hold_gate(:'old_snapshot');
\! PGAPPNAME=synchdb_gate "$PGBIN/psql" -X -q -h 127.0.0.1 -p "$PGPORT" -d par_src -c 'BEGIN' -c 'LOCK TABLE gate IN ACCESS EXCLUSIVE MODE' -c 'SELECT pg_sleep(300)' >/dev/null 2>&1 &
SELECT synchdb_test_wait('SELECT gate_waiting()');
-- the source session whose COPY of gate waits for the lock
SELECT count(pg_terminate_backend(pid)) AS ended FROM pg_stat_activity
 WHERE datname = 'par_src' AND application_name = 'synchdb_parconn' AND query LIKE 'COPY %gate%';
SELECT synchdb_test_wait($$SELECT pid = -1 FROM synchdb_state_view WHERE name = 'parconn'$$);
SELECT err LIKE '%COPY %"gate"% on the source failed: FATAL: terminating connection due to administrator command%' AS says_why
  FROM synchdb_state_view WHERE name = 'parconn';
SELECT synchdb_test_wait('SELECT helpers_gone()');
SELECT count(*) AS dest_tables FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'par_src';
SELECT release_gate();


-- the second start copies everything again, while rows change (the failed
-- copy left no work list)
SELECT coalesce(max(snapshot), 'none') AS old_snapshot FROM synchdb_copy_work WHERE name = 'parconn' \gset
SELECT synchdb_start_engine_bgw('parconn');
SELECT hold_gate(:'old_snapshot');
\! PGAPPNAME=synchdb_gate "$PGBIN/psql" -X -q -h 127.0.0.1 -p "$PGPORT" -d par_src -c 'BEGIN' -c 'LOCK TABLE gate IN ACCESS EXCLUSIVE MODE' -c 'SELECT pg_sleep(300)' >/dev/null 2>&1 &
SELECT synchdb_test_wait('SELECT gate_waiting()');
-- one staging schema, fresh (the failed copy dropped its own)
SELECT count(*) AS staging_schemas FROM pg_namespace WHERE nspname LIKE 'synchdb_stage_%';
\! "$PGBIN/psql" -X -q -h 127.0.0.1 -p "$PGPORT" -d par_src -c 'UPDATE big SET note = $$updated during snapshot$$ WHERE id % 50000 = 1' -c 'DELETE FROM big WHERE id BETWEEN 100 AND 110' -c 'INSERT INTO big (n, doc) VALUES (-1, $${"during": true}$$)' -c 'INSERT INTO ident (v) VALUES ($$during snapshot$$)'
SELECT release_gate();
\c par_src
INSERT INTO gate SELECT g, 'after snapshot' FROM generate_series(101, 150) g;
INSERT INTO keyless VALUES (-1, 'after snapshot');
UPDATE "Odd ""Name""" SET "Col A" = -"Col A" WHERE "Col A" <= 5;
SELECT string_agg(format('%s:%s:%s', t, rows, sum), ' ' ORDER BY t) AS want FROM sums() \gset
\c contrib_regression
SELECT synchdb_test_wait($$SELECT stage = 'change data capture' FROM synchdb_state_view WHERE name = 'parconn'$$);
-- row by row as on the source
CREATE FUNCTION par_sums() RETURNS text LANGUAGE sql AS $$
    SELECT string_agg(format('%s:%s:%s', t, rows, sum), ' ' ORDER BY t) FROM (
        SELECT 'big' AS t, count(*) AS rows, md5(string_agg(x::text, '|' ORDER BY id)) AS sum FROM par_src.big x
        UNION ALL SELECT 'gate', count(*), md5(string_agg(x::text, '|' ORDER BY id)) FROM par_src.gate x
        UNION ALL SELECT 'ident', count(*), md5(string_agg(x::text, '|' ORDER BY id)) FROM par_src.ident x
        UNION ALL SELECT 'keyless', count(*), md5(string_agg(x::text, '|' ORDER BY a, b)) FROM par_src.keyless x
        UNION ALL SELECT 'odd', count(*), md5(string_agg(x::text, '|' ORDER BY "Col A")) FROM par_src."Odd ""Name""" x) s
$$;
SELECT synchdb_test_wait(format('SELECT par_sums() = %L', :'want'));
SELECT split_part(x, ':', 1) AS t, split_part(x, ':', 2) AS rows FROM regexp_split_to_table(par_sums(), ' ') x;
DROP FUNCTION par_sums();
-- the tables are as the serial copy makes them: defaults, identity, keys, names
SELECT table_name, column_name, column_default, is_identity, is_generated
  FROM information_schema.columns WHERE table_schema = 'par_src' ORDER BY table_name, ordinal_position;
SELECT c.relname, i.indisprimary, pg_get_indexdef(i.indexrelid) FROM pg_index i
  JOIN pg_class c ON c.oid = i.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = 'par_src' ORDER BY 1, 3;
SELECT sequence_name FROM information_schema.sequences WHERE sequence_schema = 'par_src' ORDER BY 1;
-- the staging schema and the work list are gone
SELECT count(*) AS staging_schemas FROM pg_namespace WHERE nspname LIKE 'synchdb_stage_%';
SELECT count(*) AS work_items FROM synchdb_copy_work;
SELECT snapshot_tables, snapshot_tables_done FROM synchdb_stat_view WHERE name = 'parconn';
SELECT stage, state, err FROM synchdb_state_view WHERE name = 'parconn';
SELECT synchdb_stop_engine_bgw('parconn');
SELECT synchdb_test_wait($$SELECT pid = -1 FROM synchdb_state_view WHERE name = 'parconn'$$);
SELECT synchdb_del_conninfo('parconn');
DROP SCHEMA par_src CASCADE;
DROP FUNCTION hold_gate(text), gate_waiting(), helpers_gone(), release_gate();

-- an item that fails fails the snapshot, with its reason; nothing stays
\c par_src
DROP TABLE big;
CREATE TABLE bad (id int PRIMARY KEY, v text);
INSERT INTO bad SELECT g, CASE WHEN g = 777 THEN 'not a number' ELSE g::text END FROM generate_series(1, 1000) g;
\c contrib_regression
SELECT synchdb_add_conninfo('parbad', '127.0.0.1', :port, :'srcuser', :'srcpwd',
                            'par_src', 'public', 'null', 'null', 'postgres');
SELECT synchdb_add_objmap('parbad', 'datatype', 'public.bad.v', 'int4|0');
SELECT synchdb_start_engine_bgw('parbad');
SELECT synchdb_test_wait($$SELECT pid = -1 FROM synchdb_state_view WHERE name = 'parbad'$$);
SELECT err LIKE '%invalid input syntax for type integer: "not a number"%' AS says_why FROM synchdb_state_view WHERE name = 'parbad';
SELECT count(*) AS staging_schemas FROM pg_namespace WHERE nspname LIKE 'synchdb_stage_%';
SELECT count(*) AS work_items FROM synchdb_copy_work;
SELECT count(*) AS dest_schema FROM pg_namespace WHERE nspname = 'par_src';
SELECT synchdb_del_conninfo('parbad');
ALTER SYSTEM RESET synchdb.snapshot_parallelism;
SELECT pg_reload_conf();
DROP DATABASE par_src;
