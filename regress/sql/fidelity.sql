-- Fidelity: a broad source schema (every built-in type family, user-defined
-- types, odd identifiers, key shapes, generated and identity columns) arrives
-- with the same column types and the same rows, and stays equal after DELETE,
-- re-INSERT and UPDATE of rows in every table.
\getenv port SYNCHDB_PORT
\getenv srcuser SYNCHDB_SRC_USER
\getenv srcpwd SYNCHDB_SRC_PASSWORD
-- One line per table: its columns with their types, its row count and the md5
-- of its sorted row texts. In both databases; types are named as seen
-- from the schema given (the destination's copies of user types live there).
CREATE FUNCTION fid_sums(s text) RETURNS TABLE (tbl text, cols text, n bigint, sum text)
LANGUAGE plpgsql AS $$
DECLARE r record;
BEGIN
    PERFORM set_config('search_path', format('%I, pg_catalog', s), true);
    FOR r IN SELECT c.oid, c.relname FROM pg_class c
              WHERE c.relnamespace = s::regnamespace AND c.relkind IN ('r', 'p') AND c.relpersistence = 'p'
              ORDER BY c.relname LOOP
        tbl := r.relname;
        SELECT string_agg(format('%s %s%s', a.attname, format_type(a.atttypid, a.atttypmod),
                                 CASE a.attgenerated WHEN '' THEN '' ELSE ' generated' END
                                 || CASE a.attidentity WHEN '' THEN '' ELSE ' identity ' || a.attidentity::text END),
                          ', ' ORDER BY a.attnum)
          INTO cols FROM pg_attribute a WHERE a.attrelid = r.oid AND a.attnum > 0 AND NOT a.attisdropped;
        EXECUTE format('SELECT count(*), md5(coalesce(string_agg(x::text, E''\n'' ORDER BY x::text COLLATE "C"), '''')) FROM %I.%I x',
                       s, r.relname) INTO n, sum;
        RETURN NEXT;
    END LOOP;
END $$;
-- the source databases are made from a template that has the helper too,
-- from its definition here
SELECT pg_get_functiondef('fid_sums(text)'::regprocedure) AS fid_sums_def \gset
CREATE DATABASE fid_tmpl;
\c fid_tmpl
:fid_sums_def;
-- the helper is not a table: keep it out of the replicated schema's tables
ALTER FUNCTION fid_sums(text) SET search_path = pg_catalog;
\c contrib_regression
CREATE DATABASE fid_src TEMPLATE fid_tmpl;
\c fid_src

-- user-defined types
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy', 'it''s complicated');
CREATE DOMAIN posint AS integer CHECK (VALUE > 0);
CREATE DOMAIN short_code AS varchar(8) DEFAULT 'none' NOT NULL CHECK (VALUE ~ '^[a-z]+$');
CREATE TYPE addr AS (street text, zip int, tags mood[]);
CREATE TYPE textrange AS RANGE (subtype = text, collation = "C");
CREATE TYPE floatrange AS RANGE (subtype = float8, subtype_diff = float8mi);
CREATE DOMAIN mood_list AS mood[];

-- numbers
CREATE TABLE t_num (id int PRIMARY KEY, i2 smallint, i4 integer, i8 bigint, n numeric, n2 numeric(12,3),
                    r real, d double precision, m money);
INSERT INTO t_num VALUES
  (1, -32768, -2147483648, -9223372036854775808, 'NaN', -123456789.123, 'NaN', '-Infinity', -92233720368547758.08),
  (2, 32767, 2147483647, 9223372036854775807, 'Infinity', 0.001, 'Infinity', 'Infinity', 92233720368547758.07),
  (3, 0, 0, 0, '-Infinity', NULL, '-0', '-0', 0),
  (4, NULL, NULL, NULL, 3.14159265358979323846264338327950288419716939937510, 1.5, 1.17549435e-38, 2.2250738585072014e-308, 1.5),
  (5, 1, 2, 3, '1e-20', 12345.678, 3.4028235e+38, 1.7976931348623157e+308, NULL);
-- bits, booleans, characters, bytes
CREATE TABLE t_chr (id int PRIMARY KEY, b bit(5), vb bit varying(10), flag boolean, c char(3), vc varchar(10),
                    t text, qc "char", nm name, by bytea);
INSERT INTO t_chr VALUES
  (1, B'10101', B'1', true, 'ab', 'héllo', E'tab\there\nnewline \\ back', 'x', 'a name', '\x00ff10'),
  (2, B'00000', B'', false, '', '', '', ' ', '', ''),
  (3, NULL, NULL, NULL, NULL, NULL, 'quote '' and "double"', NULL, NULL, NULL),
  (4, B'11111', B'1111111111', true, 'xyz', repeat('z', 10), repeat('long ', 5000), 'z', 'n', decode(repeat('ab', 10000), 'hex'));
-- date and time
CREATE TABLE t_time (id int PRIMARY KEY, d date, t time, tz timetz, ts timestamp, tstz timestamptz, iv interval,
                     t3 time(3), ts0 timestamp(0));
INSERT INTO t_time VALUES
  (1, 'infinity', '24:00:00', '23:59:59.999999+14', 'infinity', '-infinity', '178000000 years', '12:34:56.789', '2020-02-29 23:59:59'),
  (2, '-infinity', '00:00:00', '00:00:00-12', '-infinity', 'infinity', '-1 days -00:00:01', '00:00:00.001', '1999-12-31 00:00:00'),
  (3, '4713-01-01 BC', '12:00', '12:00+05:30', '0001-01-01 00:00:00 BC', '2000-01-01 00:00:00+00', '1 mon 2 days 3:04:05.678901', NULL, NULL),
  (4, '5874897-12-31', NULL, NULL, '294276-12-31 23:59:59.999999', '2038-01-19 03:14:08+00', '0', NULL, NULL);
-- geometry (no equality operator: keyless, REPLICA IDENTITY FULL)
CREATE TABLE t_geo (pt point, ln line, ls lseg, bx box, pa path, po polygon, ci circle, note text);
ALTER TABLE t_geo REPLICA IDENTITY FULL;
INSERT INTO t_geo VALUES
  ('(1,2)', '{1,-1,0}', '[(0,0),(1,1)]', '(2,2),(0,0)', '[(0,0),(1,1),(2,0)]', '((0,0),(1,1),(1,0))', '<(0,0),5>', 'a'),
  ('(1.5,-2.25)', '{0,1,3}', '[(1,1),(2,2)]', '(1,1),(-1,-1)', '((0,0),(3,3))', '((0,0),(0,1),(1,1),(1,0))', '<(1,1),0.5>', 'b'),
  ('(1,2)', '{1,-1,0}', '[(0,0),(1,1)]', '(2,2),(0,0)', '[(0,0),(1,1),(2,0)]', '((0,0),(1,1),(1,0))', '<(0,0),5>', 'a'),
  (NULL, NULL, NULL, NULL, NULL, NULL, NULL, 'c');
-- network, uuid, xml, json, text search, lsn
CREATE TABLE t_misc (id int PRIMARY KEY, ip inet, net cidr, mac macaddr, mac8 macaddr8, u uuid, j json, jb jsonb,
                     tv tsvector, tq tsquery, l pg_lsn);
INSERT INTO t_misc VALUES
  (1, '192.168.0.1/24', '10.0.0.0/8', '08:00:2b:01:02:03', '08:00:2b:01:02:03:04:05', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
   '{"a": [1, 2.50, null], "b": "x"}', '{"a": [1, 2.50, null], "b": "x", "c": {"d": true}}',
   'a fat cat:1A sat', 'fat & (rat | cat)', '16/B374D848'),
  (2, '::1', '2001:db8::/32', 'ff:ff:ff:ff:ff:ff', '00:00:00:00:00:00:00:00', '00000000-0000-0000-0000-000000000000',
   '  { "spaces" :  1 }  ', '[]', '', '!x', '0/0'),
  (3, NULL, NULL, NULL, NULL, NULL, 'null', 'null', NULL, NULL, NULL);
-- xml in a keyless table: found by its image (a server built without libxml
-- cannot hold xml values: the table stays empty there)
CREATE TABLE t_xml (x xml, n int);
ALTER TABLE t_xml REPLICA IDENTITY FULL;
DO $$
BEGIN
    INSERT INTO t_xml VALUES ('<r a="1">1 &amp; x</r>', 1), ('just text', 2), ('<r a="1">1 &amp; x</r>', 1);
EXCEPTION WHEN feature_not_supported THEN NULL;
END $$;
-- arrays
CREATE TABLE t_arr (id int PRIMARY KEY, ia int[], ta text[], m2 int[][], na numeric[], ea int[], ba bool[],
                    ts timestamptz[], ja jsonb[]);
INSERT INTO t_arr VALUES
  (1, '{1,2,3}', '{"a","b c","d\"e",NULL,"NULL"}', '{{1,2},{3,4}}', '{1.5,NaN,NULL}', '{}', '{t,f,NULL}',
   '{"2020-01-01 00:00:00+00",infinity}', ARRAY['{"k": 1}'::jsonb, NULL]),
  (2, '{NULL}', '{}', '{{{1},{2}},{{3},{4}}}', NULL, '[0:2]={7,8,9}', NULL, NULL, NULL),
  (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
-- ranges and multiranges
CREATE TABLE t_rng (id int PRIMARY KEY, i4 int4range, i8 int8range, nr numrange, tsr tsrange, tzr tstzrange, dr daterange,
                    im int4multirange, dm datemultirange);
INSERT INTO t_rng VALUES
  (1, '[1,10)', '(,)', '[1.5,2.5]', '[2020-01-01,2021-01-01)', '(,2020-01-01 00:00:00+00]', '[2020-01-01,infinity)',
   '{[1,3),[5,7)}', '{}'),
  (2, 'empty', '[5,6)', '(,0)', NULL, NULL, 'empty', '{}', '{[2020-01-01,2020-02-01)}'),
  (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
-- user-defined types in columns, defaults that use them
CREATE TABLE t_udt (id int PRIMARY KEY, m mood DEFAULT 'ok', ms mood[], p posint, sc short_code, a addr, aa addr[],
                    tr textrange, tm textmultirange, fr floatrange, ml mood_list);
INSERT INTO t_udt VALUES
  (1, 'happy', '{sad,happy}', 1, 'abc', ROW('Main St', 12345, '{ok}'), ARRAY[ROW('x', 1, NULL)::addr, NULL],
   '[a,m)', '{[a,c),[x,z]}', '[1.5,2.5)', '{sad}'),
  (2, 'it''s complicated', '{}', 2147483647, 'z', ROW(NULL, NULL, NULL), '{}', 'empty', '{}', '(,)', '{}'),
  (3, NULL, NULL, NULL, 'q', NULL, NULL, NULL, NULL, NULL, NULL);
INSERT INTO t_udt (id, sc) VALUES (4, 'default');
-- odd identifiers
CREATE TABLE "Mixed Case" ("Id" int PRIMARY KEY, "select" text, "a""quote" int, "Ünïcode" text);
INSERT INTO "Mixed Case" VALUES (1, 'from', 2, 'ü'), (2, NULL, NULL, 'ß');
-- key shapes: INCLUDE, replica identity USING INDEX, NOTHING, keyless FULL, no columns
CREATE TABLE t_incl (id int, a text, b int, c text, PRIMARY KEY (id) INCLUDE (a, b));
INSERT INTO t_incl SELECT g, 'a' || g, g, 'c' || g FROM generate_series(1, 20) g;
CREATE TABLE t_ident (code text NOT NULL, region int NOT NULL, v text);
CREATE UNIQUE INDEX t_ident_key ON t_ident (region, code);
ALTER TABLE t_ident REPLICA IDENTITY USING INDEX t_ident_key;
INSERT INTO t_ident SELECT 'c' || g, g % 3, 'v' || g FROM generate_series(1, 20) g;
CREATE TABLE t_nothing (id int, v text);
ALTER TABLE t_nothing REPLICA IDENTITY NOTHING;
INSERT INTO t_nothing VALUES (1, 'only inserts');
CREATE TABLE t_keyless (a int, b text);
ALTER TABLE t_keyless REPLICA IDENTITY FULL;
INSERT INTO t_keyless VALUES (1, 'x'), (1, 'x'), (2, NULL), (NULL, NULL);
CREATE TABLE t_empty (x int);
ALTER TABLE t_empty DROP COLUMN x;
ALTER TABLE t_empty REPLICA IDENTITY FULL;
INSERT INTO t_empty DEFAULT VALUES;
INSERT INTO t_empty DEFAULT VALUES;
-- generated and identity columns
CREATE TABLE t_gen (id int GENERATED ALWAYS AS IDENTITY (START WITH 100 INCREMENT BY 5) PRIMARY KEY,
                    a int, b int GENERATED ALWAYS AS (a * 2) STORED, c text,
                    d text GENERATED ALWAYS AS (upper(c) || '!') STORED,
                    e bigint GENERATED BY DEFAULT AS IDENTITY);
INSERT INTO t_gen (a, c) SELECT g, 'row ' || g FROM generate_series(1, 10) g;
-- a dropped column in the middle
CREATE TABLE t_dropped (id int PRIMARY KEY, gone text, kept text);
ALTER TABLE t_dropped DROP COLUMN gone;
INSERT INTO t_dropped VALUES (1, 'k');
-- partitioned tables: range with a default partition and a partition whose
-- columns are in another order than its parent's, list with a second level
-- of hash partitions, a parent with a generated column
CREATE TABLE p_range (id int, d date, v text, PRIMARY KEY (id, d)) PARTITION BY RANGE (d);
CREATE TABLE p_range_2020 PARTITION OF p_range FOR VALUES FROM ('2020-01-01') TO ('2021-01-01');
CREATE TABLE p_range_2021 (v text, d date NOT NULL, id int NOT NULL);
ALTER TABLE p_range ATTACH PARTITION p_range_2021 FOR VALUES FROM ('2021-01-01') TO ('2022-01-01');
CREATE TABLE p_range_other PARTITION OF p_range DEFAULT;
INSERT INTO p_range SELECT g, date '2019-12-25' + g * 7, 'v' || g FROM generate_series(1, 150) g;
CREATE TABLE p_list (region text, id int, amount numeric(10,2), twice numeric GENERATED ALWAYS AS (amount * 2) STORED,
                     PRIMARY KEY (region, id)) PARTITION BY LIST (region);
CREATE TABLE p_list_eu PARTITION OF p_list FOR VALUES IN ('eu');
CREATE TABLE p_list_am PARTITION OF p_list FOR VALUES IN ('us', 'ca', NULL);
CREATE TABLE p_list_asia PARTITION OF p_list FOR VALUES IN ('jp', 'in') PARTITION BY HASH (id);
CREATE TABLE p_list_asia_0 PARTITION OF p_list_asia FOR VALUES WITH (MODULUS 2, REMAINDER 0);
CREATE TABLE p_list_asia_1 PARTITION OF p_list_asia FOR VALUES WITH (MODULUS 2, REMAINDER 1);
INSERT INTO p_list SELECT (ARRAY['eu', 'us', 'ca', 'jp', 'in'])[1 + g % 5], g, g * 1.25 FROM generate_series(1, 100) g;
-- tables dropped while streaming: one for good, one created again under its name
CREATE TABLE t_doomed (id int PRIMARY KEY, v text);
INSERT INTO t_doomed VALUES (1, 'gone soon');
CREATE TABLE t_reborn (id int PRIMARY KEY, v text);
INSERT INTO t_reborn VALUES (1, 'first life');
-- an unlogged table is left out, and the log says so
CREATE UNLOGGED TABLE t_unlogged (id int PRIMARY KEY);

SELECT count(*) AS source_tables FROM fid_sums('public');
\c contrib_regression
SELECT synchdb_add_conninfo('fidconn', '127.0.0.1', :port, :'srcuser', :'srcpwd',
                            'fid_src', 'public', 'null', 'null', 'postgres');
SELECT synchdb_start_engine_bgw('fidconn');
-- the snapshot commits as a whole: one table with its rows means all of them
SELECT synchdb_test_wait($$SELECT count(*) = 1 FROM fid_src.t_dropped$$);
SELECT name, state, err FROM synchdb_state_view WHERE name = 'fidconn';
SELECT to_regclass('fid_src.t_unlogged') AS unlogged_copy;

-- after the snapshot: every table equal, column types included
\c fid_src
SELECT string_agg(format('%s|%s|%s|%s', tbl, cols, n, sum), E'\n' ORDER BY tbl) AS src_sums FROM fid_sums('public') \gset
\c contrib_regression
CREATE TEMP TABLE src_lines AS SELECT regexp_split_to_table(:'src_sums', E'\n') AS line;
SELECT count(*) AS equal_tables FROM fid_sums('fid_src') d
  JOIN src_lines s ON s.line = format('%s|%s|%s|%s', d.tbl, d.cols, d.n, d.sum);
SELECT s.line AS source, format('%s|%s|%s|%s', d.tbl, d.cols, d.n, d.sum) AS destination
  FROM src_lines s FULL JOIN fid_sums('fid_src') d ON split_part(s.line, '|', 1) = d.tbl
 WHERE s.line IS DISTINCT FROM format('%s|%s|%s|%s', d.tbl, d.cols, d.n, d.sum) ORDER BY 1;
-- the key shapes
SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = 'fid_src.t_incl'::regclass AND contype = 'p';
SELECT c.relname, c.relreplident, (SELECT i.indexrelid::regclass FROM pg_index i WHERE i.indrelid = c.oid AND i.indisreplident) AS ident
  FROM pg_class c WHERE c.relnamespace = 'fid_src'::regnamespace AND c.relkind = 'r' AND c.relreplident <> 'd' ORDER BY 1;
SELECT c.relname, pg_get_partkeydef(c.oid) AS key, i.inhparent::regclass AS parent, pg_get_expr(c.relpartbound, c.oid) AS bound
  FROM pg_class c LEFT JOIN pg_inherits i ON i.inhrelid = c.oid
 WHERE c.relnamespace = 'fid_src'::regnamespace AND c.relkind IN ('r', 'p') AND (c.relkind = 'p' OR c.relispartition)
 ORDER BY 1;
SELECT kind, count(*) FROM synchdb_object_view WHERE name = 'fidconn' AND state = 'created' GROUP BY 1 ORDER BY 1;
SELECT typname, typtype FROM pg_type
 WHERE typnamespace = 'fid_src'::regnamespace AND typtype IN ('e', 'd', 'c', 'r', 'm')
   AND (typtype <> 'c' OR (SELECT relkind FROM pg_class WHERE oid = typrelid) = 'c') ORDER BY 1;

-- changes: in every table DELETE rows, INSERT them again in a later transaction,
-- UPDATE a column; then the same comparison
\c fid_src
CREATE TEMP TABLE saved (tbl text, rowdata text);
DO $$
DECLARE r record; cols text;
BEGIN
    FOR r IN SELECT c.relname FROM pg_class c
              WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'r' AND c.relreplident <> 'n'
                AND c.relpersistence = 'p' ORDER BY 1 LOOP
        SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum) INTO cols
          FROM pg_attribute a WHERE a.attrelid = format('public.%I', r.relname)::regclass
           AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = '';
        -- two rows of each table (the first in ctid order), kept as row texts
        EXECUTE format('INSERT INTO saved SELECT %L, row(%s)::text FROM (SELECT * FROM public.%I ORDER BY ctid LIMIT 2) x',
                       r.relname, coalesce(cols, ''), r.relname);
        EXECUTE format('DELETE FROM public.%I WHERE ctid IN (SELECT ctid FROM public.%I ORDER BY ctid LIMIT 2)',
                       r.relname, r.relname);
    END LOOP;
END $$;
SET client_min_messages = warning;
DO $$
DECLARE r record; cols text; typ text;
BEGIN
    FOR r IN SELECT tbl, rowdata FROM saved LOOP
        SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum),
               string_agg(format('(x.r).%s', 'f' || row_number), ', ')
          INTO cols, typ
          FROM (SELECT a.attname, a.attnum, row_number() OVER (ORDER BY a.attnum)
                  FROM pg_attribute a WHERE a.attrelid = format('public.%I', r.tbl)::regclass
                   AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = '') a;
        IF cols IS NULL THEN
            EXECUTE format('INSERT INTO public.%I DEFAULT VALUES', r.tbl);
        ELSE
            -- the row text read back through a record of the table's non-generated columns
            EXECUTE format('CREATE TEMP TABLE IF NOT EXISTS %I AS SELECT %s FROM public.%I LIMIT 0',
                           'shape_' || r.tbl, cols, r.tbl);
            EXECUTE format('INSERT INTO public.%I (%s) OVERRIDING SYSTEM VALUE SELECT (%L::%I).*',
                           r.tbl, cols, r.rowdata, 'shape_' || r.tbl);
        END IF;
    END LOOP;
END $$;
RESET client_min_messages;
UPDATE t_num SET n2 = n2 + 1;
UPDATE t_chr SET t = t || ' changed' WHERE id = 4;
UPDATE t_time SET iv = iv * 2 WHERE id > 2;
UPDATE t_geo SET note = note || '+' WHERE note IN ('a', 'b');
UPDATE t_misc SET jb = jb || '{"z": 1}' WHERE jsonb_typeof(jb) = 'object';
UPDATE t_xml SET n = n + 10 WHERE n = 1;
DELETE FROM t_xml WHERE n = 2;
UPDATE t_arr SET ia = ia || 99;
UPDATE t_rng SET i4 = int4range(lower(i4), upper(i4) + 1) WHERE NOT isempty(i4);
UPDATE t_udt SET m = 'sad', a.zip = 1 WHERE id <= 2;
UPDATE "Mixed Case" SET "select" = 'where' WHERE "Id" = 1;
UPDATE t_incl SET a = a || '!', c = c || '?' WHERE id % 2 = 0;
UPDATE t_ident SET v = v || '!' WHERE region = 1;
UPDATE t_keyless SET b = 'y' WHERE a = 1;
DELETE FROM t_keyless WHERE a IS NULL;
UPDATE t_gen SET a = a + 100 WHERE id < 120;
UPDATE t_dropped SET kept = 'k2';
INSERT INTO t_nothing VALUES (2, 'another insert');
-- rows move between partitions; a partition created while streaming is picked up
UPDATE p_range SET d = d + 365 WHERE id % 10 = 0;
UPDATE p_list SET region = 'eu' WHERE region = 'jp' AND id < 50;
CREATE TABLE p_range_2030 PARTITION OF p_range FOR VALUES FROM ('2030-01-01') TO ('2031-01-01');
INSERT INTO p_range VALUES (1000, '2030-06-01', 'new partition');
-- a table attached as a partition with rows it already had (never in the WAL
-- as changes), and a table created and filled while streaming: both copied
CREATE TABLE p_range_2040 (id int NOT NULL, d date NOT NULL, v text);
INSERT INTO p_range_2040 SELECT g, date '2040-01-01' + g, 'attached ' || g FROM generate_series(1, 30) g;
ALTER TABLE p_range ATTACH PARTITION p_range_2040 FOR VALUES FROM ('2040-01-01') TO ('2041-01-01');
UPDATE t_doomed SET v = 'changed, then dropped';
DROP TABLE t_doomed;
DROP TABLE t_reborn;
CREATE TABLE t_reborn (k text PRIMARY KEY, n int);
INSERT INTO t_reborn VALUES ('second', 2), ('life', 3);
CREATE TABLE t_later (id int PRIMARY KEY, m mood, v text);
INSERT INTO t_later SELECT g, 'ok', 'before its copy ' || g FROM generate_series(1, 50) g;

INSERT INTO t_gen (a, c) VALUES (1000, 'late');
DELETE FROM t_empty WHERE ctid = (SELECT min(ctid) FROM t_empty);
SELECT string_agg(format('%s|%s|%s|%s', tbl, cols, n, sum), E'\n' ORDER BY tbl) AS src_sums FROM fid_sums('public') \gset
\c contrib_regression
CREATE TEMP TABLE src_lines AS SELECT regexp_split_to_table(:'src_sums', E'\n') AS line;
-- caught up: every table equal (or the connector stopped)
SELECT synchdb_test_wait($$SELECT (SELECT count(*) FROM fid_sums('fid_src') d
                                     JOIN src_lines s ON s.line = format('%s|%s|%s|%s', d.tbl, d.cols, d.n, d.sum))
                                  = (SELECT count(*) FROM src_lines)
                               OR (SELECT err <> 'no error' FROM synchdb_state_view WHERE name = 'fidconn')$$, 60);
SELECT name, state, err FROM synchdb_state_view WHERE name = 'fidconn';
SELECT count(*) AS equal_tables FROM fid_sums('fid_src') d
  JOIN src_lines s ON s.line = format('%s|%s|%s|%s', d.tbl, d.cols, d.n, d.sum);
SELECT s.line AS source, format('%s|%s|%s|%s', d.tbl, d.cols, d.n, d.sum) AS destination
  FROM src_lines s FULL JOIN fid_sums('fid_src') d ON split_part(s.line, '|', 1) = d.tbl
 WHERE s.line IS DISTINCT FROM format('%s|%s|%s|%s', d.tbl, d.cols, d.n, d.sum) ORDER BY 1;
-- the destination computes generated columns
INSERT INTO fid_src.t_gen (id, a, c) OVERRIDING SYSTEM VALUE VALUES (-1, 7, 'local') RETURNING b, d;
DELETE FROM fid_src.t_gen WHERE c = 'local';

SELECT synchdb_stop_engine_bgw('fidconn');
SELECT synchdb_del_conninfo('fidconn');
SET client_min_messages = warning;
DROP SCHEMA fid_src CASCADE;
RESET client_min_messages;
DROP DATABASE fid_src;

-- mode never: a table is created at its first change from the source's catalog
-- as the snapshot would create it (generated columns, which no change carries,
-- identity, user types, INCLUDE keys, partitions attached to their parent); the
-- tables are empty at start, so every row arrives through CDC and all are equal
CREATE DATABASE fid_never TEMPLATE fid_tmpl;
\c fid_never
CREATE TYPE color AS ENUM ('red', 'green');
CREATE TABLE g (id int GENERATED BY DEFAULT AS IDENTITY, c color, n int,
                n2 int GENERATED ALWAYS AS (n * n) STORED, note text, PRIMARY KEY (id) INCLUDE (note));
CREATE TABLE pr (id int, k int, v text, PRIMARY KEY (id, k)) PARTITION BY RANGE (k);
CREATE TABLE pr_low PARTITION OF pr FOR VALUES FROM (MINVALUE) TO (100);
CREATE TABLE pr_high PARTITION OF pr FOR VALUES FROM (100) TO (MAXVALUE);
\c contrib_regression
SELECT synchdb_add_conninfo('fidnever', '127.0.0.1', :port, :'srcuser', :'srcpwd', 'fid_never', 'public',
                            'null', 'null', 'postgres');
SELECT synchdb_start_engine_bgw('fidnever', 'never');
-- changes are captured from the slot's consistent point on: wait for the slot
-- (state is polling already while the schema is read)
SELECT synchdb_test_wait($$SELECT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name LIKE 'synchdb\_fidnever\_%')$$);
\c fid_never
INSERT INTO g (c, n, note) SELECT (ARRAY['red', 'green'])[1 + i % 2]::color, i, 'n' || i FROM generate_series(1, 20) i;
INSERT INTO pr SELECT i, i * 10, 'v' || i FROM generate_series(1, 20) i;
UPDATE g SET n = n + 1 WHERE id % 3 = 0;
DELETE FROM pr WHERE id = 5;
-- a partition created while streaming (pr_low narrowed to make room)
ALTER TABLE pr DETACH PARTITION pr_low;
ALTER TABLE pr ATTACH PARTITION pr_low FOR VALUES FROM (0) TO (100);
CREATE TABLE pr_neg PARTITION OF pr FOR VALUES FROM (MINVALUE) TO (0);
INSERT INTO pr VALUES (100, -5, 'negative');
INSERT INTO pr VALUES (101, 5, 'low again');
SELECT string_agg(format('%s|%s|%s|%s', tbl, cols, n, sum), E'\n' ORDER BY tbl) AS src_sums FROM fid_sums('public') \gset
\c contrib_regression
CREATE TEMP TABLE never_lines AS SELECT regexp_split_to_table(:'src_sums', E'\n') AS line;
SELECT synchdb_test_wait($$SELECT (SELECT count(*) FROM fid_sums('fid_never') d
                                     JOIN never_lines s ON s.line = format('%s|%s|%s|%s', d.tbl, d.cols, d.n, d.sum))
                                  = (SELECT count(*) FROM never_lines)
                               OR (SELECT err <> 'no error' FROM synchdb_state_view WHERE name = 'fidnever')$$, 60);
SELECT name, state, err FROM synchdb_state_view WHERE name = 'fidnever';
SELECT s.line AS source, format('%s|%s|%s|%s', d.tbl, d.cols, d.n, d.sum) AS destination
  FROM never_lines s FULL JOIN fid_sums('fid_never') d ON split_part(s.line, '|', 1) = d.tbl
 WHERE s.line IS DISTINCT FROM format('%s|%s|%s|%s', d.tbl, d.cols, d.n, d.sum) ORDER BY 1;
SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = 'fid_never.g'::regclass AND contype = 'p';
SELECT c.relname, i.inhparent::regclass AS parent, pg_get_expr(c.relpartbound, c.oid) AS bound
  FROM pg_class c JOIN pg_inherits i ON i.inhrelid = c.oid
 WHERE c.relnamespace = 'fid_never'::regnamespace AND c.relkind = 'r' ORDER BY 1;
SELECT synchdb_stop_engine_bgw('fidnever');
SELECT synchdb_del_conninfo('fidnever');
SET client_min_messages = warning;
DROP SCHEMA fid_never CASCADE;
RESET client_min_messages;
DROP DATABASE fid_never;

-- tables that cannot be replicated: every one is named in one error, each with
-- what to do, and nothing is created on the source or the destination
CREATE DATABASE fid_bad;
\c fid_bad
CREATE EXTENSION citext;
CREATE TABLE ok_table (id int PRIMARY KEY);
CREATE TABLE uses_citext (id int PRIMARY KEY, email citext);
CREATE TABLE arr_citext (id int PRIMARY KEY, tags citext[]);
CREATE UNLOGGED TABLE unlogged_one (id int);
\c contrib_regression
SELECT synchdb_add_conninfo('fidbad', '127.0.0.1', :port, :'srcuser', :'srcpwd', 'fid_bad', 'public',
                            'public.ok_table, public.uses_citext, public.arr_citext, public.unlogged_one, public.missing_one, public\.nothing_.*',
                            'null', 'postgres');
SELECT synchdb_start_engine_bgw('fidbad');
SELECT synchdb_test_wait($$SELECT err <> 'no error' FROM synchdb_state_view WHERE name = 'fidbad'$$);
SELECT err FROM synchdb_state_view WHERE name = 'fidbad';
SELECT count(*) AS slots FROM pg_replication_slots WHERE slot_name LIKE 'synchdb_fidbad%';
SELECT to_regnamespace('fid_bad') IS NULL AS no_destination_schema;
\c fid_bad
SELECT count(*) AS publications FROM pg_publication;
\c contrib_regression
-- a misspelt srcschema is named, and nothing is created either
SELECT synchdb_add_conninfo('fidnoschema', '127.0.0.1', :port, :'srcuser', :'srcpwd', 'fid_bad', 'pubic',
                            'null', 'null', 'postgres');
SELECT synchdb_start_engine_bgw('fidnoschema');
SELECT synchdb_test_wait($$SELECT err <> 'no error' FROM synchdb_state_view WHERE name = 'fidnoschema'$$);
SELECT err FROM synchdb_state_view WHERE name = 'fidnoschema';
SELECT count(*) AS slots FROM pg_replication_slots WHERE slot_name LIKE 'synchdb_fidnoschema%';
\c fid_bad
SELECT count(*) AS publications FROM pg_publication;
\c contrib_regression
SELECT synchdb_stop_engine_bgw('fidbad');
SELECT synchdb_del_conninfo('fidbad');
SELECT synchdb_stop_engine_bgw('fidnoschema');
SELECT synchdb_del_conninfo('fidnoschema');
DROP DATABASE fid_bad;
DROP FUNCTION fid_sums(text);
DROP DATABASE fid_tmpl;
