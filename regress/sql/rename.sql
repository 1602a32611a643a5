-- A source table renamed or moved to another schema is the same table (same
-- oid): its destination table follows and keeps its rows, whether the connector
-- is streaming or stopped at the time, and synchdb_att_view shows the new source
-- name. Rules are by source name. A new name that maps onto a table the
-- destination already has stops the connector with the reason; nothing is lost.
\getenv port SYNCHDB_PORT
\getenv srcuser SYNCHDB_SRC_USER
\getenv srcpwd SYNCHDB_SRC_PASSWORD
CREATE DATABASE rn_src;
\c rn_src
CREATE TABLE orders (id int PRIMARY KEY, v text);
INSERT INTO orders SELECT g, 'o' || g FROM generate_series(1, 3) g;
CREATE TABLE parts (id int PRIMARY KEY, v text);
INSERT INTO parts VALUES (1, 'p1');
CREATE SCHEMA other;
\c contrib_regression
SELECT synchdb_add_conninfo('rnconn', '127.0.0.1', :port, :'srcuser', :'srcpwd',
                            'rn_src', 'public', 'null', 'null', 'postgres');
SELECT synchdb_add_objmap('rnconn', 'table', 'public.parts', 'shop.parts');
SELECT synchdb_start_engine_bgw('rnconn');
SELECT synchdb_test_wait($$SELECT rows = 4 FROM synchdb_snapstats WHERE name = 'rnconn'$$);

-- renamed while streaming, between two changes
\c rn_src
UPDATE orders SET v = 'before' WHERE id = 1;
ALTER TABLE orders RENAME TO orders2;
UPDATE orders2 SET v = 'after' WHERE id = 2;
INSERT INTO orders2 VALUES (4, 'new');
\c contrib_regression
SELECT synchdb_test_wait($$SELECT count(*) = 4 FROM rn_src.orders2$$);
SELECT * FROM rn_src.orders2 ORDER BY id;
SELECT to_regclass('rn_src.orders') IS NULL AS old_name_gone;

-- renamed while stopped, then moved to another source schema (which maps to the
-- same destination schema: only the recorded source name changes)
SELECT synchdb_stop_engine_bgw('rnconn');
\c rn_src
ALTER TABLE orders2 RENAME TO orders3;
UPDATE orders3 SET v = 'while stopped' WHERE id = 3;
ALTER TABLE orders3 SET SCHEMA other;
DELETE FROM other.orders3 WHERE id = 4;
\c contrib_regression
SELECT synchdb_start_engine_bgw('rnconn');
SELECT synchdb_test_wait($$SELECT count(*) = 3 FROM rn_src.orders3$$);
SELECT synchdb_test_wait($$SELECT count(*) = 2 FROM synchdb_attribute WHERE name = 'rnconn' AND ext_tbname = 'other.orders3'$$);
SELECT * FROM rn_src.orders3 ORDER BY id;
SELECT ext_tbname, pg_tbname, ext_attname FROM synchdb_att_view WHERE name = 'rnconn' ORDER BY ext_tbname, attnum;

-- parts was mapped to shop.parts by its old source name; no rule names the new
-- one, so the table moves to where the default mapping puts it
\c rn_src
ALTER TABLE parts RENAME TO parts2;
INSERT INTO parts2 VALUES (2, 'p2');
\c contrib_regression
SELECT synchdb_test_wait($$SELECT count(*) = 2 FROM rn_src.parts2$$);
SELECT * FROM rn_src.parts2 ORDER BY id;
SELECT to_regclass('shop.parts') IS NULL AS rule_target_gone;

-- a new name that maps onto a table the destination already has: the connector
-- stops and says why, and applies nothing of that transaction; once the clash
-- is resolved it resumes and the change arrives
CREATE TABLE rn_src.clash (x int);
\c rn_src
ALTER TABLE parts2 RENAME TO clash;
INSERT INTO clash VALUES (3, 'p3');
\c contrib_regression
SELECT synchdb_test_wait($$SELECT state = 'stopped' FROM synchdb_state_view WHERE name = 'rnconn'$$);
SELECT state, err FROM synchdb_state_view WHERE name = 'rnconn';
SELECT count(*) AS rows_in_parts2 FROM rn_src.parts2;
DROP TABLE rn_src.clash;
SELECT synchdb_start_engine_bgw('rnconn');
SELECT synchdb_test_wait($$SELECT count(*) = 3 FROM rn_src.clash$$);
SELECT * FROM rn_src.clash ORDER BY id;
SELECT state, err FROM synchdb_state_view WHERE name = 'rnconn';

SELECT synchdb_stop_engine_bgw('rnconn');
SELECT synchdb_del_conninfo('rnconn');
DROP SCHEMA rn_src CASCADE;
DROP SCHEMA shop;
DROP DATABASE rn_src;
