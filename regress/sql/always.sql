-- Mode always: every start copies the tables again, then CDC. With snapshottable
-- only the tables it names are copied again; every other table keeps its rows and
-- its position, and nothing is lost or applied twice around the new copy's point.
\getenv port SYNCHDB_PORT
\getenv srcuser SYNCHDB_SRC_USER
\getenv srcpwd SYNCHDB_SRC_PASSWORD
CREATE DATABASE al_src;
\c al_src
CREATE TABLE a (id int PRIMARY KEY, v text);
INSERT INTO a SELECT g, 'snapshot' FROM generate_series(1, 200000) g;
CREATE TABLE b (id int PRIMARY KEY, v text);
INSERT INTO b SELECT g, 'snapshot' FROM generate_series(1, 50) g;
-- no key: a change applied twice would show as a second row
CREATE TABLE c (id int, v text);
ALTER TABLE c REPLICA IDENTITY FULL;
INSERT INTO c SELECT g, 'snapshot' FROM generate_series(1, 10) g;
-- replicated only once the table option names it
CREATE TABLE d (id int PRIMARY KEY);
INSERT INTO d SELECT generate_series(1, 7);
CREATE FUNCTION wait_until(q text, secs int DEFAULT 90) RETURNS bool
LANGUAGE plpgsql AS $$
DECLARE ok bool; deadline timestamptz := clock_timestamp() + make_interval(secs => secs);
BEGIN
    LOOP
        EXECUTE q INTO ok;
        IF ok THEN RETURN true; END IF;
        IF clock_timestamp() > deadline THEN
            RAISE EXCEPTION 'timed out after % s waiting for: %', secs, q;
        END IF;
        PERFORM pg_sleep(0.02);
    END LOOP;
END $$;
\c contrib_regression
CREATE FUNCTION al_sum(t regclass) RETURNS text LANGUAGE plpgsql AS $$
DECLARE s text;
BEGIN
    EXECUTE format('SELECT md5(string_agg(x::text, ''|'' ORDER BY x::text)) FROM %s x', t) INTO s;
    RETURN s;
END $$;

SELECT synchdb_add_conninfo('alconn', '127.0.0.1', :port, :'srcuser', :'srcpwd',
                            'al_src', 'public', 'public.a,public.b,public.c', 'null', 'postgres');
-- a first start in always is a full snapshot
SELECT synchdb_start_engine_bgw('alconn', 'always');
SELECT synchdb_test_wait($$SELECT count(*) = 10 FROM al_src.c$$);
SELECT (SELECT count(*) FROM al_src.a) AS a, (SELECT count(*) FROM al_src.b) AS b;
-- a server restart must not copy everything again: it comes back as when_needed
SELECT data->>'last_mode' AS last_mode FROM synchdb_conninfo WHERE name = 'alconn';

-- always without snapshottable: everything is built again (a row added by hand on
-- the destination disappears), with a new slot; then CDC
INSERT INTO al_src.b VALUES (1000, 'by hand');
SELECT 'al_src.a'::regclass::oid AS a1, 'al_src.b'::regclass::oid AS b1 \gset
SELECT synchdb_restart_connector('alconn', 'always');
-- (pg_class, not regclass: a long wait would see a stale catalog cache)
SELECT synchdb_test_wait(format($$SELECT count(*) = 1 FROM pg_class WHERE relname = 'b' AND relnamespace = 'al_src'::regnamespace AND oid <> %s$$, :b1));
SELECT 'al_src.a'::regclass::oid <> :a1 AS a_rebuilt, count(*) AS b_rows, count(*) FILTER (WHERE id = 1000) AS hand_rows FROM al_src.b;
\c al_src
INSERT INTO b VALUES (51, 'cdc after rebuild');
\c contrib_regression
SELECT synchdb_test_wait($$SELECT count(*) = 1 FROM al_src.b WHERE id = 51$$);
SELECT name, stage, state, err FROM synchdb_state_view WHERE name = 'alconn';

-- snapshottable set as the reference shows: a and c are copied again, b keeps its
-- rows (and a row added by hand) and its position. The table option also grew
-- by d, which the destination lacks: it is copied too and added to the publication.
SELECT synchdb_stop_engine_bgw('alconn');
UPDATE synchdb_conninfo
SET data = jsonb_set(jsonb_set(data, '{snapshottable}', '"public.a, public.c"'),
                     '{table}', '"public.a,public.b,public.c,public.d"')
WHERE name = 'alconn';
INSERT INTO al_src.a VALUES (500000, 'by hand');
INSERT INTO al_src.b VALUES (5000, 'by hand');
SELECT 'al_src.a'::regclass::oid AS a2, 'al_src.b'::regclass::oid AS b2, 'al_src.c'::regclass::oid AS c2 \gset
\c al_src
-- while stopped, so before the new copy's point: in the copy for a and c (and must
-- not be applied again), applied by CDC for b
INSERT INTO a VALUES (200001, 'while stopped');
UPDATE a SET v = 'updated while stopped' WHERE id = 1;
DELETE FROM a WHERE id = 2;
INSERT INTO c VALUES (11, 'while stopped');
ALTER TABLE c ADD COLUMN extra text;
INSERT INTO c VALUES (12, 'while stopped', 'x');
-- renamed and back: the copy's point is kept by source oid, so a change made
-- under the other name is not applied twice either
ALTER TABLE c RENAME TO c_renamed;
INSERT INTO c_renamed VALUES (20, 'while renamed', 'r');
ALTER TABLE c_renamed RENAME TO c;
INSERT INTO b VALUES (52, 'while stopped');
INSERT INTO d VALUES (8);
\c contrib_regression
SELECT synchdb_start_engine_bgw('alconn', 'always');
\c al_src
-- the copy's temporary slot exists: hold c so that its COPY waits, and commit
-- changes at exactly that moment (after the copy's point: applied by CDC)
SELECT wait_until($$SELECT count(*) = 1 FROM pg_replication_slots WHERE slot_name LIKE 'synchdb_alconn%_rs'$$);
BEGIN;
SET LOCAL lock_timeout = '60s';
LOCK TABLE c IN ACCESS EXCLUSIVE MODE;
SELECT wait_until($$SELECT count(*) = 1 FROM pg_locks
                    WHERE relation = 'c'::regclass AND NOT granted AND pid <> pg_backend_pid()$$);
INSERT INTO c VALUES (13, 'during copy', 'y');
UPDATE c SET v = 'updated during copy' WHERE id = 3;
INSERT INTO a VALUES (200002, 'during copy');
DELETE FROM a WHERE id = 3;
INSERT INTO b VALUES (53, 'during copy');
INSERT INTO d VALUES (9);
COMMIT;
INSERT INTO a VALUES (200003, 'after copy');
INSERT INTO c VALUES (14, 'after copy', 'z');
SELECT md5(string_agg(x::text, '|' ORDER BY x::text)) AS a_sum FROM a x \gset
SELECT md5(string_agg(x::text, '|' ORDER BY x::text)) AS c_sum FROM c x \gset
SELECT md5(string_agg(x::text, '|' ORDER BY x::text)) AS d_sum FROM d x \gset
\c contrib_regression
SELECT synchdb_test_wait(format($$SELECT al_sum('al_src.a') = %L$$, :'a_sum'));
SELECT synchdb_test_wait(format($$SELECT al_sum('al_src.c') = %L$$, :'c_sum'));
SELECT synchdb_test_wait(format($$SELECT al_sum('al_src.d') = %L$$, :'d_sum'));
SELECT synchdb_test_wait($$SELECT count(*) = 1 FROM al_src.b WHERE id = 53$$);
SELECT 'al_src.a'::regclass::oid <> :a2 AS a_rebuilt,
       'al_src.c'::regclass::oid <> :c2 AS c_rebuilt,
       'al_src.b'::regclass::oid = :b2 AS b_kept;
SELECT id, v FROM al_src.b WHERE id > 50 ORDER BY id;
SELECT count(*) AS c_rows, count(DISTINCT id) AS c_ids, count(extra) AS c_extra,
       to_regclass('al_src.c_renamed') IS NULL AS no_stray_table FROM al_src.c;
SELECT tables, rows FROM synchdb_snapstats WHERE name = 'alconn';
SELECT name, stage, state, err FROM synchdb_state_view WHERE name = 'alconn';
SELECT count(*) AS slots FROM pg_replication_slots WHERE slot_name LIKE 'synchdb_alconn%';

-- the copy's points are stored with the copied rows: a stop before CDC has passed
-- them (here an apply error on b) loses nothing and applies nothing twice.
-- snapshottable as a regular expression this time.
SELECT synchdb_stop_engine_bgw('alconn');
UPDATE synchdb_conninfo SET data = jsonb_set(data, '{snapshottable}', '"public.(a|c)"')
WHERE name = 'alconn';
INSERT INTO al_src.b VALUES (54, 'by hand');
\c al_src
INSERT INTO a VALUES (200004, 'before the copy');
INSERT INTO c VALUES (15, 'before the copy', 'w');
INSERT INTO b VALUES (54, 'from source');
\c contrib_regression
SELECT synchdb_start_engine_bgw('alconn', 'always');
SELECT synchdb_test_wait($$SELECT state = 'stopped' FROM synchdb_state_view WHERE name = 'alconn'$$);
SELECT name, state, err FROM synchdb_state_view WHERE name = 'alconn';
SELECT srctable FROM synchdb_snapshot_skip WHERE name = 'alconn' ORDER BY 1;
SELECT (SELECT count(*) FROM al_src.a WHERE id = 200004) AS a_200004, (SELECT count(*) FROM al_src.c WHERE id = 15) AS c_15;
DELETE FROM al_src.b WHERE id = 54;
SELECT synchdb_start_engine_bgw('alconn');
SELECT synchdb_test_wait($$SELECT count(*) = 1 FROM al_src.b WHERE id = 54 AND v = 'from source'$$);
\c al_src
INSERT INTO c VALUES (16, 'after', 'v');
SELECT md5(string_agg(x::text, '|' ORDER BY x::text)) AS a_sum FROM a x \gset
SELECT md5(string_agg(x::text, '|' ORDER BY x::text)) AS c_sum FROM c x \gset
\c contrib_regression
SELECT synchdb_test_wait(format($$SELECT al_sum('al_src.c') = %L$$, :'c_sum'));
SELECT al_sum('al_src.a') = :'a_sum' AS a_same;
SELECT name, stage, state, err FROM synchdb_state_view WHERE name = 'alconn';
-- once CDC is past the points, the next start forgets them
SELECT synchdb_restart_connector('alconn', 'initial');
SELECT synchdb_test_wait($$SELECT count(*) = 0 FROM synchdb_snapshot_skip WHERE name = 'alconn'$$);

-- snapshottable that names a table the connector does not replicate: a clear
-- error, and the connector's slot and position are untouched
SELECT synchdb_stop_engine_bgw('alconn');
UPDATE synchdb_conninfo SET data = jsonb_set(data, '{snapshottable}', '"public.nosuch"')
WHERE name = 'alconn';
SELECT synchdb_start_engine_bgw('alconn', 'always');
SELECT synchdb_test_wait($$SELECT state = 'stopped' FROM synchdb_state_view WHERE name = 'alconn'$$);
SELECT name, state, err FROM synchdb_state_view WHERE name = 'alconn';
SELECT count(*) AS slots FROM pg_replication_slots WHERE slot_name LIKE 'synchdb_alconn%';
UPDATE synchdb_conninfo SET data = jsonb_set(data, '{snapshottable}', '"null"') WHERE name = 'alconn';
\c al_src
INSERT INTO a VALUES (200005, 'resumed');
\c contrib_regression
SELECT synchdb_start_engine_bgw('alconn');
SELECT synchdb_test_wait($$SELECT count(*) = 1 FROM al_src.a WHERE id = 200005$$);

SELECT synchdb_stop_engine_bgw('alconn');
SELECT synchdb_del_conninfo('alconn');
SELECT count(*) AS skip_rows FROM synchdb_snapshot_skip;
DROP FUNCTION al_sum(regclass);
DROP TABLE al_src.a, al_src.b, al_src.c, al_src.d;
DROP SCHEMA al_src;
DROP DATABASE al_src;
