-- A migration-grade copy: secondary indexes of every access method, unique,
-- check and exclusion constraints, foreign keys, sequences with their values,
-- defaults that are not constant, collations and comments arrive with the rows;
-- an index the destination cannot build is reported and the rest go on.
\getenv port SYNCHDB_PORT
\getenv srcuser SYNCHDB_SRC_USER
\getenv srcpwd SYNCHDB_SRC_PASSWORD
\getenv bindir SYNCHDB_BINDIR
\getenv scratch SYNCHDB_SCRATCH
CREATE DATABASE obj_src;
\c obj_src
-- bloom is on the source only: its index cannot be built on the destination
CREATE EXTENSION bloom;
CREATE SEQUENCE order_no AS integer START 1000 INCREMENT 10;
CREATE SEQUENCE spare MINVALUE -100 MAXVALUE 100 START -50 INCREMENT -2 CYCLE;
CREATE TABLE customers (id serial PRIMARY KEY, email text NOT NULL, name text COLLATE "C",
                        created timestamptz DEFAULT now(), code uuid DEFAULT gen_random_uuid(),
                        UNIQUE (email), CONSTRAINT name_not_empty CHECK (length(name) > 0));
COMMENT ON TABLE customers IS 'people who buy';
COMMENT ON COLUMN customers.email IS 'where we write to them';
CREATE TABLE orders (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                     customer_id int NOT NULL REFERENCES customers (id) ON DELETE CASCADE,
                     no int DEFAULT nextval('order_no'), placed date DEFAULT CURRENT_DATE, doc jsonb,
                     during tstzrange, amount numeric(10,2) CONSTRAINT amount_positive CHECK (amount >= 0),
                     CONSTRAINT no_overlap EXCLUDE USING gist (during WITH &&));
CREATE INDEX orders_doc ON orders USING gin (doc jsonb_path_ops);
CREATE INDEX orders_placed ON orders (placed DESC NULLS LAST) WHERE amount > 0;
CREATE INDEX orders_key ON orders ((lower(doc ->> 'k'))) INCLUDE (amount);
CREATE INDEX orders_no_hash ON orders USING hash (no);
CREATE INDEX orders_placed_brin ON orders USING brin (placed);
CREATE INDEX customers_name_spgist ON customers USING spgist (name);
CREATE UNIQUE INDEX customers_code ON customers (code);
CREATE TABLE lines (order_id bigint REFERENCES orders (id), n int, qty int DEFAULT 1,
                    PRIMARY KEY (order_id, n));
CREATE INDEX lines_bloom ON lines USING bloom (n, qty);
INSERT INTO customers (email, name) SELECT 'c' || g || '@x', 'name ' || g FROM generate_series(1, 5) g;
INSERT INTO orders (customer_id, doc, during, amount)
SELECT 1 + g % 5, jsonb_build_object('k', 'K' || g), tstzrange('2024-01-01'::timestamptz + g * interval '1 day',
       '2024-01-01'::timestamptz + (g + 1) * interval '1 day'), g * 1.5
  FROM generate_series(1, 20) g;
INSERT INTO lines SELECT o.id, n, n FROM orders o, generate_series(1, 3) n;
SELECT nextval('spare') AS spare_1, nextval('spare') AS spare_2;

\c contrib_regression
SELECT synchdb_add_conninfo('objconn', '127.0.0.1', :port, :'srcuser', :'srcpwd',
                            'obj_src', 'public', 'null', 'null', 'postgres');
SELECT synchdb_start_engine_bgw('objconn');
SELECT synchdb_test_wait($$SELECT count(*) = 60 FROM obj_src.lines$$);
SELECT name, state, err FROM synchdb_state_view WHERE name = 'objconn';

-- what was built, and the one index that could not be, with what to install
SELECT kind, destination, state, error FROM synchdb_object_view WHERE name = 'objconn' ORDER BY 1, 2;
SELECT indexname, replace(indexdef, 'obj_src.', '') AS def FROM pg_indexes WHERE schemaname = 'obj_src' ORDER BY 1;
SELECT conrelid::regclass AS tbl, conname, contype, convalidated, pg_get_constraintdef(oid)
  FROM pg_constraint WHERE connamespace = 'obj_src'::regnamespace AND contype <> 'n' ORDER BY 1, 2;
SELECT attname, pg_get_expr(adbin, adrelid) AS default_expr
  FROM pg_attrdef d JOIN pg_attribute a ON a.attrelid = d.adrelid AND a.attnum = d.adnum
 WHERE d.adrelid IN ('obj_src.customers'::regclass, 'obj_src.orders'::regclass, 'obj_src.lines'::regclass)
 ORDER BY 1;
SELECT attname, attcollation::regcollation FROM pg_attribute
 WHERE attrelid = 'obj_src.customers'::regclass AND attname = 'name';
SELECT obj_description('obj_src.customers'::regclass, 'pg_class') AS table_comment,
       col_description('obj_src.customers'::regclass, 2) AS email_comment;

-- sequences: same options, values from the source
SELECT sequencename, data_type, start_value, min_value, max_value, increment_by, cycle, last_value
  FROM pg_sequences WHERE schemaname = 'obj_src' ORDER BY 1;
-- an application pointed at the destination gets fresh ids from the defaults
INSERT INTO obj_src.customers (email, name) VALUES ('local@x', 'local') RETURNING id, code IS NOT NULL AS has_code;
INSERT INTO obj_src.orders (customer_id, amount) VALUES (6, 1) RETURNING id, no, placed = CURRENT_DATE AS today;
DELETE FROM obj_src.orders WHERE customer_id = 6;
DELETE FROM obj_src.customers WHERE email = 'local@x';

-- CDC: the sequences follow the source's (never backwards), on demand and as it runs
\c obj_src
INSERT INTO customers (email, name) VALUES ('new@x', 'new');
INSERT INTO orders (customer_id, amount) SELECT 1, 2 FROM generate_series(1, 3);
SELECT last_value AS src_order_no FROM order_no \gset
\c contrib_regression
SELECT synchdb_test_wait($$SELECT count(*) = 23 FROM obj_src.orders$$);
-- a running connector does it by itself (synchdb.sequence_sync_interval)
SELECT synchdb_test_wait(format('SELECT last_value = %s FROM obj_src.order_no', :src_order_no));
SELECT * FROM synchdb_sync_sequences('objconn');
SELECT setval('obj_src.customers_id_seq', 1000);
SELECT sequence, value FROM synchdb_sync_sequences('objconn') WHERE sequence LIKE '%customers_id_seq%';

-- pg_dump --schema-only of the replicated tables on both sides: the same but
-- for the schema's name, the index that needed bloom, and sequence values
\setenv PGBIN :bindir
\setenv SCRATCH :scratch
\setenv PGPORT :port
\! "$PGBIN/pg_dump" -h 127.0.0.1 -p "$PGPORT" --schema-only --no-owner --no-privileges -n public obj_src | grep -v -e '^--' -e '^SET ' -e '^SELECT pg_catalog' -e '^$' -e 'CREATE SCHEMA' -e 'COMMENT ON SCHEMA' -e 'EXTENSION' -e 'restrict ' > "$SCRATCH/obj_src.sql"
\! "$PGBIN/pg_dump" -h 127.0.0.1 -p "$PGPORT" --schema-only --no-owner --no-privileges -n obj_src contrib_regression | sed 's/obj_src\./public./g' | grep -v -e '^--' -e '^SET ' -e '^SELECT pg_catalog' -e '^$' -e 'CREATE SCHEMA' -e 'COMMENT ON SCHEMA' -e 'EXTENSION' -e 'restrict ' > "$SCRATCH/obj_dst.sql"
\! diff "$SCRATCH/obj_src.sql" "$SCRATCH/obj_dst.sql"

SELECT synchdb_stop_engine_bgw('objconn');
SELECT synchdb_del_conninfo('objconn');
SELECT count(*) AS objects_left FROM synchdb_objects WHERE name = 'objconn';
SET client_min_messages = warning;
DROP SCHEMA obj_src CASCADE;
RESET client_min_messages;
DROP DATABASE obj_src;

-- a stop while the snapshot builds an index: the snapshot is one transaction,
-- so nothing of it stays; the next start builds everything once
CREATE FUNCTION public.slow_key(i int) RETURNS int LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    PERFORM pg_sleep(0.05);
    RETURN i;
END $$;
CREATE DATABASE obj_slow;
\c obj_slow
CREATE FUNCTION public.slow_key(i int) RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT i';
CREATE TABLE t (id int PRIMARY KEY, v text);
INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 200) g;
CREATE INDEX t_slow ON t (public.slow_key(id));
\c contrib_regression
SELECT synchdb_add_conninfo('slowconn', '127.0.0.1', :port, :'srcuser', :'srcpwd',
                            'obj_slow', 'public', 'null', 'null', 'postgres');
SELECT synchdb_start_engine_bgw('slowconn');
-- CREATE INDEX holds a ShareLock on its table (pg_locks is read live; the
-- statistics views would be read once per transaction)
SELECT synchdb_test_wait($$SELECT EXISTS (SELECT 1 FROM pg_locks l WHERE l.locktype = 'relation'
                              AND l.mode = 'ShareLock' AND l.granted AND l.pid <> pg_backend_pid()
                              AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()))$$);
SELECT synchdb_stop_engine_bgw('slowconn');
SELECT to_regclass('obj_slow.t') IS NULL AS no_table, count(*) AS objects
  FROM synchdb_objects WHERE name = 'slowconn';
SELECT synchdb_start_engine_bgw('slowconn');
SELECT synchdb_test_wait($$SELECT count(*) = 200 FROM obj_slow.t$$);
SELECT indexname FROM pg_indexes WHERE schemaname = 'obj_slow' ORDER BY 1;
SELECT kind, destination, state FROM synchdb_object_view WHERE name = 'slowconn' ORDER BY 1, 2;
SELECT synchdb_stop_engine_bgw('slowconn');
SELECT synchdb_del_conninfo('slowconn');
SET client_min_messages = warning;
DROP SCHEMA obj_slow CASCADE;
RESET client_min_messages;
DROP DATABASE obj_slow;
DROP FUNCTION public.slow_key(int);

-- names are kept unless they clash: two source schemas land in one destination
-- schema, each with an index and a unique constraint of the same name, and the
-- destination schema already has a table of the user's named as one of them
CREATE DATABASE obj_live;
\c obj_live
CREATE SCHEMA s2;
CREATE TABLE a (id int PRIMARY KEY, v text, CONSTRAINT uq UNIQUE (v));
CREATE INDEX by_v ON a (lower(v));
CREATE TABLE s2.b (id int PRIMARY KEY, v text, CONSTRAINT uq UNIQUE (v));
CREATE INDEX by_v ON s2.b (lower(v));
INSERT INTO a VALUES (1, 'x');
INSERT INTO s2.b VALUES (1, 'y');
-- a table created while the connector streams, written to during its copy by
-- another session (400 transactions of updates, inserts and deletes)
CREATE PROCEDURE live_writer() LANGUAGE plpgsql AS $$
BEGIN
    FOR i IN 1..400 LOOP
        UPDATE live SET n = n + 1 WHERE id BETWEEN i * 100 AND i * 100 + 99;
        INSERT INTO live VALUES (100000 + i, i, 'written during the copy');
        DELETE FROM live WHERE id = 50000 + i;
        COMMIT;
        PERFORM pg_sleep(0.02);
    END LOOP;
    INSERT INTO live VALUES (-1, 0, 'writer done');
END $$;
\c contrib_regression
CREATE SCHEMA obj_live;
CREATE TABLE obj_live.by_v (note text);
SELECT synchdb_add_conninfo('liveconn', '127.0.0.1', :port, :'srcuser', :'srcpwd',
                            'obj_live', 'public,s2', 'null', 'null', 'postgres');
SELECT synchdb_start_engine_bgw('liveconn');
SELECT synchdb_test_wait($$SELECT count(*) = 1 FROM obj_live.b$$);
SELECT indexname, replace(indexdef, 'obj_live.', '') AS def FROM pg_indexes WHERE schemaname = 'obj_live' ORDER BY 1;
SELECT kind, source, destination, state FROM synchdb_object_view WHERE name = 'liveconn' ORDER BY 1, 3;

\c obj_live
CREATE TABLE live (id int PRIMARY KEY, n int, v text);
INSERT INTO live SELECT g, 0, 'row ' || g FROM generate_series(1, 100000) g;
\! "$PGBIN/psql" -X -q -h 127.0.0.1 -p "$PGPORT" -d obj_live -c 'CALL live_writer()' > /dev/null 2>&1 &
\c contrib_regression
SELECT synchdb_test_wait($$SELECT EXISTS (SELECT 1 FROM obj_live.live WHERE id = -1)
                            OR (SELECT err <> 'no error' FROM synchdb_state_view WHERE name = 'liveconn')$$);
\c obj_live
SELECT count(*) AS src_rows, md5(string_agg(format('%s|%s|%s', id, n, v), ',' ORDER BY id)) AS src_md5 FROM live \gset
\c contrib_regression
SELECT name, state, err FROM synchdb_state_view WHERE name = 'liveconn';
SELECT count(*) = :src_rows AS rows_equal,
       md5(string_agg(format('%s|%s|%s', id, n, v), ',' ORDER BY id)) = :'src_md5' AS md5_equal
  FROM obj_live.live;
-- then altered: a column added with a default, one filled, one dropped
\c obj_live
ALTER TABLE live ADD COLUMN w int DEFAULT 7;
UPDATE live SET w = id % 3 WHERE id <= 1000;
ALTER TABLE live DROP COLUMN n;
INSERT INTO live VALUES (-2, 'after the alter', 9);
SELECT count(*) AS alt_rows, md5(string_agg(format('%s|%s|%s', id, v, w), ',' ORDER BY id)) AS alt_md5 FROM live \gset
\c contrib_regression
SELECT synchdb_test_wait($$SELECT EXISTS (SELECT 1 FROM obj_live.live WHERE id = -2)$$);
SELECT count(*) = :alt_rows AS rows_equal,
       md5(string_agg(format('%s|%s|%s', id, v, w), ',' ORDER BY id)) = :'alt_md5' AS md5_equal
  FROM obj_live.live;
-- and dropped
\c obj_live
DROP TABLE live;
\c contrib_regression
-- (read from pg_class: to_regclass takes no lock, so within the wait's one
-- call it would keep seeing the table from its cache)
SELECT synchdb_test_wait($$SELECT NOT EXISTS (SELECT 1 FROM pg_class WHERE relname = 'live'
                                AND relnamespace = 'obj_live'::regnamespace)$$);
SELECT name, state, err FROM synchdb_state_view WHERE name = 'liveconn';
SELECT synchdb_stop_engine_bgw('liveconn');
SELECT synchdb_del_conninfo('liveconn');
SET client_min_messages = warning;
DROP SCHEMA obj_live CASCADE;
RESET client_min_messages;
DROP DATABASE obj_live;
