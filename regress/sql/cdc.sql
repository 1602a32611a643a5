-- CDC of every operation from a source in another database of the same server:
-- INSERT, UPDATE (also of the primary key, and of rows whose unchanged TOASTed
-- columns are not sent), DELETE, TRUNCATE, REPLICA IDENTITY FULL tables, rolled
-- back transactions, in commit order.
\getenv port SYNCHDB_PORT
\getenv srcuser SYNCHDB_SRC_USER
\getenv srcpwd SYNCHDB_SRC_PASSWORD
CREATE DATABASE cdc_src;
\c cdc_src
CREATE TABLE items (
    id int PRIMARY KEY,
    name text NOT NULL,
    price numeric(12,2),
    tags text[],
    doc jsonb,
    created timestamptz,
    flag bool DEFAULT true,
    big text
);
ALTER TABLE items ALTER COLUMN big SET STORAGE EXTERNAL;
CREATE TABLE events (id bigserial PRIMARY KEY, kind text NOT NULL, payload bytea);
CREATE TABLE fullid (a int, b text);
CREATE TABLE defaults (id int PRIMARY KEY);
CREATE TYPE mood AS ENUM ('sad', 'happy');
CREATE DOMAIN posint AS int CHECK (VALUE > 0);
INSERT INTO defaults VALUES (1), (2);
ALTER TABLE fullid REPLICA IDENTITY FULL;
INSERT INTO items SELECT g, 'item ' || g, g * 1.5, ARRAY['t' || g, 'x'], jsonb_build_object('g', g),
                         '2024-01-01 00:00+00'::timestamptz + g * interval '1 hour', g % 2 = 0, NULL
FROM generate_series(1, 200) g;
INSERT INTO fullid SELECT g, 'v' || g FROM generate_series(1, 10) g;

\c contrib_regression
SELECT synchdb_add_conninfo('cdcconn', '127.0.0.1', :port, :'srcuser', :'srcpwd',
                            'cdc_src', 'public', 'null', 'null', 'postgres');
SELECT synchdb_start_engine_bgw('cdcconn');
SELECT synchdb_test_wait($$SELECT count(*) = 200 FROM cdc_src.items$$);
SELECT synchdb_test_wait($$SELECT count(*) = 10 FROM cdc_src.fullid$$);

\c cdc_src
INSERT INTO items (id, name, price) VALUES (1001, 'new one', 9.99), (1002, 'new two', NULL);
UPDATE items SET name = name || ' (upd)', price = price + 1 WHERE id % 10 = 0;
UPDATE items SET id = 5000 WHERE id = 7;               -- primary key change
DELETE FROM items WHERE id BETWEEN 100 AND 110;
BEGIN;
INSERT INTO items (id, name) VALUES (9999, 'rolled back');
ROLLBACK;
-- a TOASTed value stored out of line; later updates do not send it again
INSERT INTO items (id, name, big) VALUES (3000, 'toasty', repeat(md5('a'), 400));
UPDATE items SET price = 42 WHERE id = 3000;
UPDATE items SET name = 'toasty2', tags = '{a,b}' WHERE id = 3000;
-- several changes to the same row inside one transaction, in order
BEGIN;
INSERT INTO events (kind, payload) VALUES ('a', '\x01'), ('b', '\x0203');
UPDATE events SET kind = 'a2' WHERE kind = 'a';
DELETE FROM events WHERE kind = 'b';
INSERT INTO events (kind) VALUES ('c');
COMMIT;
UPDATE fullid SET b = 'changed' WHERE a = 1;
DELETE FROM fullid WHERE a = 2;
INSERT INTO fullid VALUES (11, NULL);
-- schema changes on the source: a new column, a rename, a new type, a drop
ALTER TABLE items ADD COLUMN extra int;
INSERT INTO items (id, name, extra) VALUES (4000, 'with extra', 7);
ALTER TABLE items RENAME COLUMN flag TO active;
UPDATE items SET active = false WHERE id = 1;
ALTER TABLE items ALTER COLUMN price TYPE numeric(14,3);
UPDATE items SET price = 1.125 WHERE id = 2;
ALTER TABLE items DROP COLUMN doc;
-- columns added with a default: the rows already there get it on the source
-- without a change being written; the destination gets the same values (now()
-- is the time of the ALTER, not of its apply)
ALTER TABLE items ADD COLUMN status text NOT NULL DEFAULT 'new';
ALTER TABLE items ADD COLUMN stamp timestamptz DEFAULT now();
-- columns of the source's own types: their OIDs mean nothing on the destination;
-- as in the snapshot, the types are created there from the source's catalog
-- (the first change that needs them does it) and the columns use them (a domain
-- with a check makes the source rewrite the table: not on items, whose missing
-- values above would go with it before the worker reads them)
ALTER TABLE fullid ADD COLUMN m mood, ADD COLUMN p posint;
UPDATE fullid SET m = 'happy', p = 5 WHERE a = 1;
-- a volatile default rewrites the table: what the rows got is not in the WAL,
-- so they hold NULL on the destination (and the server log says so); a constant
-- default added after it is carried
ALTER TABLE defaults ADD COLUMN r float8 DEFAULT random();
ALTER TABLE defaults ADD COLUMN k int DEFAULT 5;
INSERT INTO defaults (id, r) VALUES (3, 0.5);
INSERT INTO items (id, name) VALUES (4001, 'after drop');
TRUNCATE events;
INSERT INTO events (kind, payload) VALUES ('after truncate', '\xff');
SELECT md5(string_agg(t::text, '|' ORDER BY id)) AS items_sum FROM items t \gset
SELECT md5(string_agg(t::text, '|' ORDER BY id)) AS events_sum FROM events t \gset
SELECT md5(string_agg(t::text, '|' ORDER BY a)) AS fullid_sum FROM fullid t \gset
SELECT length(big) AS big_len FROM items WHERE id = 3000 \gset

\c contrib_regression
SELECT synchdb_test_wait(format($$SELECT md5(string_agg(t::text, '|' ORDER BY id)) = %L FROM cdc_src.items t$$, :'items_sum'));
SELECT synchdb_test_wait(format($$SELECT md5(string_agg(t::text, '|' ORDER BY id)) = %L FROM cdc_src.events t$$, :'events_sum'));
SELECT synchdb_test_wait(format($$SELECT md5(string_agg(t::text, '|' ORDER BY a)) = %L FROM cdc_src.fullid t$$, :'fullid_sum'));
SELECT id, name, price, tags, length(big) = :big_len AS toast_kept FROM cdc_src.items WHERE id IN (3000, 5000, 1001, 1002, 10) ORDER BY id;
SELECT count(*) FROM cdc_src.items WHERE id = 9999 OR id BETWEEN 100 AND 110 OR id = 7;
SELECT id, name, price, active, extra FROM cdc_src.items WHERE id IN (1, 2, 4000, 4001) ORDER BY id;
SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute
WHERE attrelid = 'cdc_src.items'::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum;
SELECT id, kind, payload FROM cdc_src.events ORDER BY id;
SELECT * FROM cdc_src.fullid ORDER BY a;
SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute
WHERE attrelid = 'cdc_src.fullid'::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum;
SELECT synchdb_test_wait($$SELECT count(*) = 3 FROM cdc_src.defaults$$);
SELECT * FROM cdc_src.defaults ORDER BY id;
SELECT stage, state, err, last_dbz_offset::jsonb->>'messageType' AS last_type
FROM synchdb_state_view WHERE name = 'cdcconn';

SELECT synchdb_stop_engine_bgw('cdcconn');
SELECT synchdb_del_conninfo('cdcconn');
DROP SCHEMA cdc_src CASCADE;
DROP DATABASE cdc_src;
