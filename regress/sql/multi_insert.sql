-- INSERTs written together: rows into one table in a batch go to the table in
-- one multi-insert (as COPY writes them), where nothing on the destination must
-- see them one by one. Checked here: rows across the 1,000-row sets, tables with
-- generated columns, no key, a foreign key, partitions; order against the
-- UPDATE, DELETE and TRUNCATE after them in the same transaction; a trigger of
-- the destination's that still sees every row alone; and a unique violation in
-- the middle of a set, reported against the very row that failed.
\getenv port SYNCHDB_PORT
\getenv srcuser SYNCHDB_SRC_USER
\getenv srcpwd SYNCHDB_SRC_PASSWORD
\getenv serverlog SYNCHDB_SERVER_LOG
-- each table's row count and md5 (setup's synchdb_test_sums), here and, from
-- its definition here, in the source database
CREATE FUNCTION mi_sums(s text) RETURNS text LANGUAGE sql AS $$ SELECT synchdb_test_sums(s, ARRAY['k', 'nokey', 'parent', 'child', 'p', 'trg']) $$;
SELECT pg_get_functiondef('synchdb_test_sums(text,text[])'::regprocedure) AS sums_def,
       pg_get_functiondef('mi_sums(text)'::regprocedure) AS mi_sums_def \gset
CREATE DATABASE mi_src;
\c mi_src
:sums_def;
:mi_sums_def;
CREATE TABLE k (id int PRIMARY KEY, v text, g int GENERATED ALWAYS AS (id * 2) STORED, CHECK (id > 0));
CREATE TABLE nokey (a int, b text);
CREATE TABLE parent (id int PRIMARY KEY);
CREATE TABLE child (id int PRIMARY KEY, pid int REFERENCES parent, note text);
CREATE TABLE p (id int, d date, v text, PRIMARY KEY (id, d)) PARTITION BY RANGE (d);
CREATE TABLE p_2025 PARTITION OF p FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE p_2026 PARTITION OF p FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
CREATE TABLE trg (id int PRIMARY KEY, v text);
INSERT INTO k VALUES (1, 'snapshot');
\c contrib_regression
SELECT synchdb_add_conninfo('miconn', '127.0.0.1', :port, :'srcuser', :'srcpwd',
                            'mi_src', 'public', 'null', 'null', 'postgres');
SELECT synchdb_start_engine_bgw('miconn');
SELECT synchdb_test_wait($$SELECT count(*) = 1 FROM mi_src.k$$);
-- a trigger of the destination's own, fired by the worker (ENABLE ALWAYS): each
-- row's AFTER trigger counts the rows it sees, which is all rows up to it
CREATE TABLE trg_log (id int, seen bigint);
CREATE FUNCTION trg_note() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.trg_log SELECT NEW.id, count(*) FROM mi_src.trg;
    RETURN NEW;
END $$;
CREATE TRIGGER note AFTER INSERT ON mi_src.trg FOR EACH ROW EXECUTE FUNCTION trg_note();
ALTER TABLE mi_src.trg ENABLE ALWAYS TRIGGER note;
-- the WAL written from here on tells how the rows went in
CREATE EXTENSION pg_walinspect;
SELECT pg_current_wal_flush_lsn() AS lsn0 \gset

\c mi_src
BEGIN;
INSERT INTO k SELECT g, 'row ' || g FROM generate_series(2, 2500) g;
INSERT INTO nokey SELECT g, repeat('x', g % 50) FROM generate_series(1, 3000) g;
INSERT INTO nokey SELECT NULL, NULL FROM generate_series(1, 10);
INSERT INTO parent SELECT g FROM generate_series(1, 100) g;
INSERT INTO child SELECT g, g, 'child' FROM generate_series(1, 100) g;
-- one table after the other, row by row
DO $$ BEGIN
    FOR i IN 101..400 LOOP
        INSERT INTO parent VALUES (i);
        INSERT INTO child VALUES (i, i, 'interleaved');
        INSERT INTO k VALUES (2500 + i, 'interleaved');
    END LOOP;
END $$;
-- later changes of the same transaction see the rows before them
UPDATE k SET v = 'updated' WHERE id % 100 = 0;
DELETE FROM k WHERE id % 250 = 0;
INSERT INTO k VALUES (9999, 'gone again');
DELETE FROM k WHERE id = 9999;
INSERT INTO k VALUES (250, 'back');
TRUNCATE nokey;
INSERT INTO nokey SELECT g, 'after truncate' FROM generate_series(1, 1500) g;
INSERT INTO p SELECT g, date '2025-06-01' + g, 'p' FROM generate_series(1, 400) g;
INSERT INTO trg SELECT g, 't' FROM generate_series(1, 50) g;
COMMIT;
-- and in many small transactions, which a batch takes together
INSERT INTO k SELECT g, 'small' FROM generate_series(3001, 3010) g;
INSERT INTO k VALUES (3011, 'small');
INSERT INTO k VALUES (3012, 'small');
UPDATE k SET v = 'small updated' WHERE id = 3011;
INSERT INTO k VALUES (3013, 'last');
SELECT mi_sums('public') AS src_sums \gset
\c contrib_regression
SELECT synchdb_test_wait($$SELECT EXISTS (SELECT 1 FROM mi_src.k WHERE id = 3013)$$);
SELECT name, state, err FROM synchdb_state_view WHERE name = 'miconn';
SELECT mi_sums('mi_src') = :'src_sums' AS all_tables_equal;
SELECT count(*) AS k_rows, count(*) FILTER (WHERE g = id * 2) AS generated_right FROM mi_src.k;
SELECT (SELECT count(*) FROM mi_src.p_2025) AS rows_2025, (SELECT count(*) FROM mi_src.p_2026) AS rows_2026;
-- the trigger fired once per row, each seeing the rows before it and itself
SELECT count(*) AS fired, count(*) FILTER (WHERE seen = id) AS saw_rows_so_far FROM trg_log;
-- k's rows went in by multi-insert records (several rows each), trg's one by one
SELECT count(*) FILTER (WHERE block_ref LIKE '%/' || pg_relation_filenode('mi_src.k') || ' %') > 0 AS k_multi,
       count(*) FILTER (WHERE block_ref LIKE '%/' || pg_relation_filenode('mi_src.trg') || ' %') AS trg_multi
  FROM pg_get_wal_records_info(:'lsn0', pg_current_wal_flush_lsn())
 WHERE resource_manager = 'Heap2' AND record_type LIKE 'MULTI_INSERT%';

-- a unique violation in the middle of a set of kept rows: the connector stops
-- (exit, the default), nothing of the batch is applied, and the error and the
-- change logged name the row that failed
INSERT INTO mi_src.k VALUES (5005, 'by hand');
\c mi_src
INSERT INTO k SELECT g, 'late' FROM generate_series(5001, 5010) g;
\c contrib_regression
SELECT synchdb_test_wait($$SELECT state = 'stopped' FROM synchdb_state_view WHERE name = 'miconn'$$);
SELECT name, state, err FROM synchdb_state_view WHERE name = 'miconn';
SELECT substring(l FROM 'change that failed: .*') AS logged
  FROM regexp_split_to_table(pg_read_file(:'serverlog'), E'\n') l
 WHERE l LIKE '%connector miconn: change that failed%';
SELECT id, v FROM mi_src.k WHERE id > 5000 ORDER BY id;
-- resolved by hand: the next start applies the whole transaction
DELETE FROM mi_src.k WHERE id = 5005;
SELECT synchdb_start_engine_bgw('miconn');
SELECT synchdb_test_wait($$SELECT count(*) = 10 FROM mi_src.k WHERE id > 5000$$);
\c mi_src
SELECT mi_sums('public') AS src_sums \gset
\c contrib_regression
SELECT mi_sums('mi_src') = :'src_sums' AS all_tables_equal;
SELECT synchdb_stop_engine_bgw('miconn');
SELECT synchdb_del_conninfo('miconn');
SET client_min_messages = warning;
DROP SCHEMA mi_src CASCADE;
RESET client_min_messages;
DROP DATABASE mi_src;
DROP TABLE trg_log;
DROP EXTENSION pg_walinspect;
DROP FUNCTION trg_note();
DROP FUNCTION mi_sums(text);
