-- A stop in the middle of the snapshot: the worker stops promptly, leaves no
-- half-filled table looking complete, and the next start takes the snapshot
-- again, whole. The snapshot is held mid-way, after its slot, by a lock this
-- session takes on the table it copies last, once the slot exists (the worker
-- then usually waits on it when it reads the tables' sizes, before the copy);
-- the stop is sent to the destination through dblink. Two processes copy, so
-- that the small table is claimed only after several page ranges of the large
-- one (the lock has to come first).
\getenv port SYNCHDB_PORT
\getenv srcuser SYNCHDB_SRC_USER
\getenv srcpwd SYNCHDB_SRC_PASSWORD
ALTER SYSTEM SET synchdb.snapshot_parallelism = 2;
SELECT pg_reload_conf();
CREATE DATABASE st_src;
\c st_src
CREATE EXTENSION dblink;
CREATE TABLE a_first (id int PRIMARY KEY, v text);
-- big enough that the snapshot is still copying it when the test takes its lock
INSERT INTO a_first SELECT g, repeat('v', 100) FROM generate_series(1, 1000000) g;
CREATE TABLE z_last (id int PRIMARY KEY, v text);
INSERT INTO z_last SELECT g, 'v' || g FROM generate_series(1, 100) g;
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
SELECT synchdb_add_conninfo('stconn', '127.0.0.1', :port, :'srcuser', :'srcpwd',
                            'st_src', 'public', 'null', 'null', 'postgres');
SELECT synchdb_start_engine_bgw('stconn');
\c st_src
SELECT wait_until($$SELECT count(*) = 1 FROM pg_replication_slots WHERE slot_name LIKE 'synchdb_stconn%'$$);
BEGIN;
SET LOCAL lock_timeout = '60s';
LOCK TABLE z_last IN ACCESS EXCLUSIVE MODE;
SELECT wait_until($$SELECT count(*) = 1 FROM pg_locks WHERE relation = 'z_last'::regclass AND NOT granted$$);
SELECT format('host=127.0.0.1 port=%s dbname=contrib_regression user=postgres', current_setting('port')) AS dst \gset
SELECT * FROM dblink(:'dst', $$SELECT stage || ' / ' || state FROM synchdb_state_view WHERE name = 'stconn'$$) AS t(s text);
SELECT * FROM dblink(:'dst', $$SELECT synchdb_stop_engine_bgw('stconn')$$) AS t(r int);
SELECT * FROM dblink(:'dst', $$SELECT pid || ' / ' || state || ' / ' || err FROM synchdb_state_view WHERE name = 'stconn'$$) AS t(s text);
-- nothing of the interrupted snapshot is visible on the destination
SELECT * FROM dblink(:'dst', $$SELECT count(*)::int FROM pg_class WHERE relnamespace = to_regnamespace('st_src')$$) AS t(n int);
COMMIT;

\c contrib_regression
SELECT synchdb_start_engine_bgw('stconn');
SELECT synchdb_test_wait($$SELECT count(*) = 2 FROM pg_class WHERE relkind = 'r' AND relnamespace::regnamespace::text = 'st_src'$$);
SELECT (SELECT count(*) FROM st_src.a_first) AS a_rows, (SELECT count(*) FROM st_src.z_last) AS z_rows;
SELECT name, tables, rows FROM synchdb_snapstats WHERE name = 'stconn';
SELECT synchdb_stop_engine_bgw('stconn');
SELECT synchdb_del_conninfo('stconn');
DROP SCHEMA st_src CASCADE;
DROP DATABASE st_src;
ALTER SYSTEM RESET synchdb.snapshot_parallelism;
SELECT pg_reload_conf();
