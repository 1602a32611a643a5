-- A change committed on the source while the snapshot is being taken is neither
-- lost nor applied twice. The test holds a lock on the table the snapshot copies
-- last, so its COPY waits, and commits changes at exactly that moment.
\getenv port SYNCHDB_PORT
\getenv srcuser SYNCHDB_SRC_USER
\getenv srcpwd SYNCHDB_SRC_PASSWORD
CREATE DATABASE conc_src;
\c conc_src
CREATE TABLE aa (id int PRIMARY KEY, v text);
INSERT INTO aa SELECT g, repeat('x', 100) FROM generate_series(1, 300000) g;
CREATE TABLE zz (id int PRIMARY KEY, v text);
INSERT INTO zz SELECT g, 'snapshot' FROM generate_series(1, 100) g;
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
SELECT synchdb_add_conninfo('concconn', '127.0.0.1', :port, :'srcuser', :'srcpwd',
                            'conc_src', 'public', 'null', 'null', 'postgres');
SELECT synchdb_start_engine_bgw('concconn');

\c conc_src
-- the slot (with its exported snapshot) exists: the snapshot has begun
SELECT wait_until($$SELECT count(*) = 1 FROM pg_replication_slots WHERE slot_name LIKE 'synchdb_concconn%'$$);
BEGIN;
SET LOCAL lock_timeout = '60s';
LOCK TABLE zz IN ACCESS EXCLUSIVE MODE;
-- the snapshot's COPY of zz is now waiting for us (pg_locks is live; the
-- activity view would be frozen for this transaction)
SELECT wait_until($$SELECT count(*) = 1 FROM pg_locks
                    WHERE relation = 'zz'::regclass AND NOT granted AND pid <> pg_backend_pid()$$);
INSERT INTO zz SELECT g, 'during snapshot' FROM generate_series(101, 150) g;
UPDATE zz SET v = 'updated during snapshot' WHERE id <= 10;
DELETE FROM zz WHERE id BETWEEN 11 AND 15;
INSERT INTO aa VALUES (300001, 'during snapshot');
UPDATE aa SET v = 'updated during snapshot' WHERE id <= 3;
DELETE FROM aa WHERE id BETWEEN 4 AND 6;
COMMIT;
-- and after it
INSERT INTO zz VALUES (151, 'after snapshot');
SELECT md5(string_agg(t::text, '|' ORDER BY id)) AS zz_sum FROM zz t \gset
SELECT md5(string_agg(t::text, '|' ORDER BY id)) AS aa_sum FROM aa t \gset

\c contrib_regression
SELECT synchdb_test_wait(format($$SELECT md5(string_agg(t::text, '|' ORDER BY id)) = %L FROM conc_src.zz t$$, :'zz_sum'));
SELECT synchdb_test_wait(format($$SELECT md5(string_agg(t::text, '|' ORDER BY id)) = %L FROM conc_src.aa t$$, :'aa_sum'));
SELECT v, count(*) FROM conc_src.zz GROUP BY v ORDER BY v;
SELECT count(*) AS aa_rows, count(*) FILTER (WHERE v LIKE '%during%') AS aa_during FROM conc_src.aa;
SELECT stage, state, err FROM synchdb_state_view WHERE name = 'concconn';
SELECT synchdb_stop_engine_bgw('concconn');
SELECT synchdb_del_conninfo('concconn');
DROP SCHEMA conc_src CASCADE;
DROP DATABASE conc_src;
