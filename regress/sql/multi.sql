-- Several connectors at once: nine in this database (one source, different
-- table sets) and one in another database; synchdb.max_connector_workers (10 on
-- this test cluster) is enforced with a clear error.
\getenv port SYNCHDB_PORT
\getenv srcuser SYNCHDB_SRC_USER
\getenv srcpwd SYNCHDB_SRC_PASSWORD
SHOW synchdb.max_connector_workers;
CREATE DATABASE multi_src;
\c multi_src
SELECT format('CREATE TABLE t%s (id int PRIMARY KEY, v text)', g) FROM generate_series(1, 10) g \gexec
\c contrib_regression
SELECT synchdb_add_conninfo('mc' || g, '127.0.0.1', :port, :'srcuser', :'srcpwd', 'multi_src',
                            'public', 'public.t' || g, 'null', 'postgres')
FROM generate_series(1, 9) g;
SELECT synchdb_start_engine_bgw('mc' || g) FROM generate_series(1, 9) g;

-- the tenth in another database
CREATE DATABASE multi_dst2;
\c multi_dst2
CREATE EXTENSION synchdb;
CREATE FUNCTION synchdb_test_wait(q text, secs int DEFAULT 90) RETURNS bool
LANGUAGE plpgsql AS $fn$
DECLARE ok bool; deadline timestamptz := clock_timestamp() + make_interval(secs => secs);
BEGIN
    LOOP
        BEGIN
            EXECUTE q INTO ok;
        EXCEPTION WHEN undefined_table OR invalid_schema_name THEN
            ok := false;
        END;
        IF ok THEN RETURN true; END IF;
        IF clock_timestamp() > deadline THEN
            RAISE EXCEPTION 'timed out after % s waiting for: %', secs, q;
        END IF;
        PERFORM pg_sleep(0.05);
    END LOOP;
END $fn$;
SELECT synchdb_add_conninfo('mc10', '127.0.0.1', :port, :'srcuser', :'srcpwd', 'multi_src',
                            'public', 'public.t10', 'null', 'postgres');
SELECT synchdb_start_engine_bgw('mc10');
-- an eleventh is one too many, wherever it is
SELECT synchdb_add_conninfo('mc11', '127.0.0.1', :port, :'srcuser', :'srcpwd', 'multi_src',
                            'public', 'public.t1', 'null', 'postgres');
SELECT synchdb_start_engine_bgw('mc11');
SELECT name, pid > 0 AS running FROM synchdb_state_view ORDER BY name;

\c multi_src
SELECT format('INSERT INTO t%s SELECT i, %L FROM generate_series(1, %s) i', g, 't' || g, g * 10) FROM generate_series(1, 10) g \gexec
\c multi_dst2
SELECT count(*) = 1 AS started FROM synchdb_state_view WHERE name = 'mc10' AND pid > 0;
SELECT synchdb_test_wait($$SELECT count(*) = 100 FROM multi_src.t10$$);
SELECT count(*), min(v), max(id) FROM multi_src.t10;
SELECT relname FROM pg_class WHERE relkind = 'r' AND relnamespace::regnamespace::text = 'multi_src' ORDER BY 1;
SELECT synchdb_stop_engine_bgw('mc10');
SELECT synchdb_del_conninfo(name) FROM synchdb_conninfo ORDER BY name;

\c contrib_regression
SELECT synchdb_test_wait($$SELECT (SELECT count(*) FROM multi_src.t1) = 10 AND (SELECT count(*) FROM multi_src.t2) = 20
                             AND (SELECT count(*) FROM multi_src.t3) = 30 AND (SELECT count(*) FROM multi_src.t4) = 40
                             AND (SELECT count(*) FROM multi_src.t5) = 50 AND (SELECT count(*) FROM multi_src.t6) = 60
                             AND (SELECT count(*) FROM multi_src.t7) = 70 AND (SELECT count(*) FROM multi_src.t8) = 80
                             AND (SELECT count(*) FROM multi_src.t9) = 90$$);
SELECT relname FROM pg_class WHERE relkind = 'r' AND relnamespace::regnamespace::text = 'multi_src' ORDER BY 1;
-- (no stage: a connector whose snapshot already held the rows sees no change)
SELECT name, state, err FROM synchdb_state_view WHERE name LIKE 'mc%' ORDER BY name;
SELECT synchdb_stop_engine_bgw('mc' || g) FROM generate_series(1, 9) g;
SELECT synchdb_del_conninfo('mc' || g) FROM generate_series(1, 9) g;
-- (the nine tables were created concurrently: the cascade's list has no fixed order)
SET client_min_messages = warning;
DROP SCHEMA multi_src CASCADE;
RESET client_min_messages;
DROP DATABASE multi_dst2;
DROP DATABASE multi_src;
