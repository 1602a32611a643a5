-- Object mapping, the reference workflow: schemasync, review synchdb_att_view,
-- add rules (every kind), reload, see the view change, resume (CDC only), then
-- restart in always (rows rebuilt under the rules); a reload on a streaming
-- connector; errors at call time.
\getenv port SYNCHDB_PORT
\getenv srcuser SYNCHDB_SRC_USER
\getenv srcpwd SYNCHDB_SRC_PASSWORD
CREATE DATABASE om_src;
\c om_src
CREATE TABLE products (id int PRIMARY KEY, name text, weight real);
INSERT INTO products VALUES (1, 'scooter', 3.14), (2, 'car battery', 8.1);
CREATE TABLE customers (id serial PRIMARY KEY, first_name text, last_name text, email varchar(40));
INSERT INTO customers (first_name, last_name, email) VALUES ('Sally', 'Thomas', 'sally@example.com');
CREATE TABLE geom (id int PRIMARY KEY, g text, qty smallint);
INSERT INTO geom VALUES (1, 'POINT(1 1)', 7);
\c contrib_regression
SELECT synchdb_add_conninfo('omconn', '127.0.0.1', :port, :'srcuser', :'srcpwd',
                            'om_src', 'public', 'null', 'null', 'postgres');
SELECT synchdb_start_engine_bgw('omconn', 'schemasync');
SELECT synchdb_test_wait($$SELECT state = 'paused' FROM synchdb_state_view WHERE name = 'omconn'$$);
SELECT name, stage, state FROM synchdb_state_view WHERE name = 'omconn';
-- review: the default mapping
SELECT * FROM synchdb_att_view WHERE name = 'omconn';
SELECT synchdb_translate_datatype('postgres', 'varchar', 40, -1, -1),
       synchdb_translate_datatype('postgres', 'numeric', -1, 2, 10),
       synchdb_translate_datatype('postgres', 'int4', -1, -1, -1);

-- rules that are wrong, refused at call time
SELECT synchdb_add_objmap('nosuch', 'table', 'public.products', 'stuff');
SELECT synchdb_add_objmap('omconn', 'index', 'public.products', 'stuff');
SELECT synchdb_add_objmap('omconn', 'table', 'public.nosuch', 'stuff');
SELECT synchdb_add_objmap('omconn', 'column', 'public.products.nosuch', 'x');
SELECT synchdb_add_objmap('omconn', 'column', 'otherdb.public.products.name', 'x');
SELECT synchdb_add_objmap('omconn', 'datatype', 'public.geom.g', 'nosuchtype|0');
SELECT synchdb_add_objmap('omconn', 'datatype', 'public.geom.g', 'varchar|x');
SELECT synchdb_add_objmap('omconn', 'transform', 'public.products.name', 'upper(name)');
SELECT synchdb_add_objmap('omconn', 'transform', 'public.products.name', '''%d''; DROP TABLE x');
SELECT synchdb_add_objmap('omconn', 'transform', 'public.products.weight', '%d +* 5');
SELECT synchdb_del_objmap('omconn', 'table', 'public.geom');
SELECT count(*) FROM synchdb_objmap;

-- every kind of rule
SELECT synchdb_add_objmap('omconn', 'table', 'om_src.public.products', 'stuff');
SELECT synchdb_add_objmap('omconn', 'table', 'public.customers', 'schema1.people');
SELECT synchdb_add_objmap('omconn', 'column', 'public.customers.last_name', 'family_name');
SELECT synchdb_add_objmap('omconn', 'column', 'public.customers.email', 'contact');
SELECT synchdb_add_objmap('omconn', 'datatype', 'public.geom.g', 'varchar|64');
SELECT synchdb_add_objmap('omconn', 'datatype', 'int2|false', 'int8|0');
SELECT synchdb_add_objmap('omconn', 'transform', 'public.products.name', '''>>>'' || ''%d'' || ''<<<''');
SELECT synchdb_add_objmap('omconn', 'transform', 'public.products.weight', '%d + 500');
-- adding a rule again updates it
SELECT synchdb_add_objmap('omconn', 'column', 'public.customers.email', 'mail');
SELECT synchdb_add_objmap('omconn', 'column', 'public.customers.email', 'contact');
SELECT * FROM synchdb_objmap ORDER BY objtype, srcobj;
SELECT synchdb_reload_objmap('omconn');
SELECT * FROM synchdb_att_view WHERE name = 'omconn';

-- resume: CDC only, under the rules. A value full of quotes and SQL is data.
-- (It waits for the connector the reload started again, which stayed paused:
-- it would say "not paused" otherwise.)
SELECT synchdb_resume_engine('omconn');
\c om_src
INSERT INTO products VALUES (3, 'x''); DROP TABLE public.stuff; --', 1);
UPDATE products SET weight = 2 WHERE id = 3;
INSERT INTO customers (first_name, last_name, email) VALUES ('Anne', 'Kretchmar', 'annek@example.com');
INSERT INTO geom VALUES (2, 'POINT(2 2)', 9);
\c contrib_regression
SELECT synchdb_test_wait($$SELECT count(*) = 1 FROM om_src.geom WHERE id = 2$$);
SELECT * FROM public.stuff ORDER BY id;
SELECT * FROM schema1.people ORDER BY id;
SELECT * FROM om_src.geom ORDER BY id;

-- a full rebuild with rows under the rules
SELECT 'public.stuff'::regclass::oid AS stuff1 \gset
SELECT synchdb_restart_connector('omconn', 'always');
-- (pg_class, not the table: a wait that reads the table would hold off its rebuild)
SELECT synchdb_test_wait(format($$SELECT count(*) = 1 FROM pg_class WHERE relname = 'stuff' AND relnamespace = 'public'::regnamespace AND oid <> %s$$, :stuff1));
SELECT synchdb_test_wait($$SELECT state = 'polling' FROM synchdb_state_view WHERE name = 'omconn'$$);
SELECT * FROM public.stuff ORDER BY id;
SELECT * FROM schema1.people ORDER BY id;
SELECT * FROM om_src.geom ORDER BY id;
SELECT pg_tbname, pg_attname, pg_atttypename, transform FROM synchdb_att_view WHERE name = 'omconn';

-- reload on a streaming connector: changes before, during and after all arrive,
-- the new transform applies from then on, a rename follows
\c om_src
INSERT INTO customers (first_name, last_name, email) VALUES ('before', 'reload', 'b@example.com');
\c contrib_regression
SELECT synchdb_test_wait($$SELECT count(*) = 3 FROM schema1.people$$);
SELECT synchdb_add_objmap('omconn', 'transform', 'public.customers.first_name', 'upper(coalesce(''%d'', ''nameless''))');
SELECT synchdb_add_objmap('omconn', 'table', 'public.geom', 'shapes');
SELECT synchdb_reload_objmap('omconn');
\c om_src
INSERT INTO customers (first_name, last_name, email) VALUES ('after', 'reload', 'a@example.com');
-- a NULL goes through the transform too, as in the snapshot
INSERT INTO customers (first_name, last_name, email) VALUES (NULL, 'null', 'n@example.com');
INSERT INTO geom VALUES (3, 'POINT(3 3)', 1);
\c contrib_regression
SELECT synchdb_test_wait($$SELECT count(*) = 1 FROM public.shapes WHERE id = 3$$);
SELECT synchdb_test_wait($$SELECT count(*) = 5 FROM schema1.people$$);
SELECT id, first_name, family_name FROM schema1.people ORDER BY id;
SELECT to_regclass('om_src.geom') IS NULL AS old_name_gone, count(*) AS shapes FROM public.shapes;

-- a type PostgreSQL cannot cast to: the reload fails, says why, changes nothing,
-- and the connector keeps streaming
SELECT synchdb_add_objmap('omconn', 'datatype', 'public.customers.first_name', 'int4|0');
SELECT synchdb_reload_objmap('omconn');
SELECT synchdb_del_objmap('omconn', 'datatype', 'public.customers.first_name');
SELECT synchdb_test_wait($$SELECT state = 'polling' FROM synchdb_state_view WHERE name = 'omconn'$$);
\c om_src
INSERT INTO customers (first_name, last_name, email) VALUES ('still', 'streaming', 's@example.com');
\c contrib_regression
SELECT synchdb_test_wait($$SELECT count(*) = 6 FROM schema1.people$$);
SELECT pg_attname, pg_atttypename FROM synchdb_att_view WHERE name = 'omconn' AND ext_attname = 'first_name';

-- datatype rules disabled and reloaded: the columns go back to the default types
SELECT synchdb_del_objmap('omconn', 'datatype', 'public.geom.g');
SELECT synchdb_del_objmap('omconn', 'datatype', 'int2|false');
SELECT synchdb_reload_objmap('omconn');
SELECT pg_tbname, pg_attname, pg_atttypename FROM synchdb_att_view WHERE name = 'omconn' AND ext_tbname = 'public.geom';
\c om_src
INSERT INTO geom VALUES (4, 'POINT(4 4)', 32767);
\c contrib_regression
SELECT synchdb_test_wait($$SELECT count(*) = 1 FROM public.shapes WHERE id = 4$$);
SELECT * FROM public.shapes ORDER BY id;
SELECT name, state, err FROM synchdb_state_view WHERE name = 'omconn';

SELECT synchdb_stop_engine_bgw('omconn');
SELECT synchdb_del_conninfo('omconn');
SELECT count(*) AS rules, (SELECT count(*) FROM synchdb_attribute) AS attributes FROM synchdb_objmap;

-- before a connector's first snapshot nothing is known at call time, so a rule
-- naming a table or column it does not replicate is accepted; the worker refuses
-- it with err set, before anything is created on the source or the destination
SELECT synchdb_add_conninfo('omconn2', '127.0.0.1', :port, :'srcuser', :'srcpwd',
                            'om_src', 'public', 'public.products', 'null', 'postgres');
SELECT synchdb_add_objmap('omconn2', 'table', 'public.nosuch', 'stuff2');
SELECT synchdb_start_engine_bgw('omconn2');
SELECT synchdb_test_wait($$SELECT state = 'stopped' AND err <> 'no error' FROM synchdb_state_view WHERE name = 'omconn2'$$);
SELECT name, state, err FROM synchdb_state_view WHERE name = 'omconn2';
SELECT synchdb_del_objmap('omconn2', 'table', 'public.nosuch');
SELECT synchdb_add_objmap('omconn2', 'column', 'public.products.nosuch', 'x');
SELECT synchdb_start_engine_bgw('omconn2');
SELECT synchdb_test_wait($$SELECT state = 'stopped' AND err LIKE '%column%' FROM synchdb_state_view WHERE name = 'omconn2'$$);
SELECT name, state, err FROM synchdb_state_view WHERE name = 'omconn2';
SELECT count(*) AS slots FROM pg_replication_slots WHERE slot_name LIKE 'synchdb_omconn2%';
\c om_src
SELECT count(*) AS publications FROM pg_publication WHERE pubname LIKE 'synchdb_omconn2%';
\c contrib_regression
SELECT to_regclass('om_src.products') IS NULL AS no_table, count(*) AS attributes
FROM synchdb_attribute WHERE name = 'omconn2';
-- with the rules fixed the same connector starts and copies under them
SELECT synchdb_del_objmap('omconn2', 'column', 'public.products.nosuch');
SELECT synchdb_add_objmap('omconn2', 'column', 'public.products.name', 'label');
SELECT synchdb_start_engine_bgw('omconn2');
-- (polling is also the state during a snapshot: wait for its rows, which
-- appear when the snapshot commits)
SELECT synchdb_test_wait($$SELECT count(*) = 3 FROM om_src.products$$);
SELECT * FROM om_src.products ORDER BY id;
SELECT name, state, err FROM synchdb_state_view WHERE name = 'omconn2';
SELECT synchdb_stop_engine_bgw('omconn2');
SELECT synchdb_del_conninfo('omconn2');
DROP TABLE om_src.products;

-- serial columns are known to CDC too: a type|true rule applies to a table CDC
-- creates (mode never), and the column stays serial in synchdb_attribute through
-- a schema change on the source, so a reload keeps the rule's type
\c om_src
CREATE TABLE tickets (id serial PRIMARY KEY, note text, qty int);
\c contrib_regression
SELECT synchdb_add_conninfo('omconn3', '127.0.0.1', :port, :'srcuser', :'srcpwd',
                            'om_src', 'public', 'public.tickets', 'null', 'postgres');
SELECT synchdb_add_objmap('omconn3', 'datatype', 'int4|true', 'int8|0');
SELECT synchdb_start_engine_bgw('omconn3', 'never');
SELECT synchdb_test_wait($$SELECT count(*) = 1 FROM pg_replication_slots WHERE slot_name LIKE 'synchdb_omconn3_%' AND active$$);
\c om_src
INSERT INTO tickets (note, qty) VALUES ('first', 1);
ALTER TABLE tickets ADD COLUMN prio int;
INSERT INTO tickets (note, qty, prio) VALUES ('second', 2, 5);
\c contrib_regression
SELECT synchdb_test_wait($$SELECT count(*) = 2 FROM om_src.tickets$$);
SELECT ext_attname, pg_attname, ext_atttypename, pg_atttypename FROM synchdb_att_view WHERE name = 'omconn3' ORDER BY attnum;
SELECT ext_attname, ext_isserial FROM synchdb_attribute WHERE name = 'omconn3' ORDER BY attnum;
SELECT synchdb_reload_objmap('omconn3');
SELECT ext_attname, pg_atttypename FROM synchdb_att_view WHERE name = 'omconn3' ORDER BY attnum;
SELECT * FROM om_src.tickets ORDER BY id;
SELECT synchdb_test_wait($$SELECT state = 'polling' FROM synchdb_state_view WHERE name = 'omconn3'$$);
SELECT name, state, err FROM synchdb_state_view WHERE name = 'omconn3';

-- a rule added and reloaded in one transaction: the connector starts again when
-- it commits, under the new rule (a worker started inside it saw only the old
-- rules and streamed into a table of the old name, created again beside the
-- renamed one)
BEGIN;
SELECT synchdb_add_objmap('omconn3', 'table', 'public.tickets', 'om_src.tickets2');
SELECT synchdb_reload_objmap('omconn3');
COMMIT;
SELECT synchdb_test_wait($$SELECT state = 'polling' FROM synchdb_state_view WHERE name = 'omconn3'$$);
\c om_src
INSERT INTO tickets (note, qty, prio) VALUES ('third', 3, 1);
\c contrib_regression
SELECT synchdb_test_wait($$SELECT count(*) = 3 FROM om_src.tickets2$$);
SELECT to_regclass('om_src.tickets') IS NULL AS old_name_gone;
SELECT * FROM om_src.tickets2 ORDER BY id;
-- rolled back: the rule and the rename are undone, the connector runs as before
BEGIN;
SELECT synchdb_add_objmap('omconn3', 'table', 'public.tickets', 'om_src.tickets3');
SELECT synchdb_reload_objmap('omconn3');
ROLLBACK;
SELECT synchdb_test_wait($$SELECT state = 'polling' AND pid > 0 FROM synchdb_state_view WHERE name = 'omconn3'$$);
\c om_src
INSERT INTO tickets (note, qty, prio) VALUES ('fourth', 4, 2);
\c contrib_regression
SELECT synchdb_test_wait($$SELECT count(*) = 4 FROM om_src.tickets2$$);
SELECT to_regclass('om_src.tickets3') IS NULL AS no_tickets3, to_regclass('om_src.tickets') IS NULL AS no_tickets;
SELECT srcobj, dstobj, enabled FROM synchdb_objmap WHERE name = 'omconn3' AND objtype = 'table';
-- a reload whose transaction stays open while the source changes the table it
-- renames: the connector waits for that transaction to end (one started at
-- once applied the change before the rename committed, creating the table under
-- its new name too, and stopped on "duplicate key" when the rename committed)
SELECT synchdb_add_objmap('omconn3', 'table', 'public.tickets', 'om_src.tickets4');
CREATE EXTENSION dblink;
SELECT format('host=127.0.0.1 port=%s dbname=om_src user=%s password=%s', :'port', :'srcuser', :'srcpwd') AS src \gset
BEGIN;
SELECT synchdb_reload_objmap('omconn3');
SELECT state FROM synchdb_state_view WHERE name = 'omconn3';
SELECT dblink_exec(:'src', $$INSERT INTO tickets (note, qty, prio) VALUES ('fifth', 5, 3)$$);
SELECT pg_sleep(2);
COMMIT;
SELECT synchdb_test_wait($$SELECT count(*) = 5 FROM om_src.tickets4$$);
SELECT name, state, err FROM synchdb_state_view WHERE name = 'omconn3';
SELECT to_regclass('om_src.tickets2') IS NULL AS old_name_gone;
DROP EXTENSION dblink;
SELECT synchdb_stop_engine_bgw('omconn3');
SELECT synchdb_del_conninfo('omconn3');
DROP TABLE om_src.tickets4;

DROP TABLE public.stuff, schema1.people, public.shapes;
DROP SCHEMA schema1;
-- the sequences of the source schema came too (those of tables not replicated)
SET client_min_messages = warning;
DROP SCHEMA om_src CASCADE;
RESET client_min_messages;
DROP DATABASE om_src;
