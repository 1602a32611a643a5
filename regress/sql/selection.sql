-- Table selection: several source schemas, exact entries and regular expressions,
-- file: JSON, and the errors (a pattern that matches nothing, two tables that
-- would land on the same name, a file that cannot be read).
\getenv port SYNCHDB_PORT
\getenv srcuser SYNCHDB_SRC_USER
\getenv srcpwd SYNCHDB_SRC_PASSWORD
CREATE DATABASE sel_src;
\c sel_src
CREATE SCHEMA sales;
CREATE SCHEMA other;
CREATE TABLE public.a (id int PRIMARY KEY);
CREATE TABLE public.b (id int PRIMARY KEY);
CREATE TABLE public.c_log (id int PRIMARY KEY);
CREATE TABLE sales.orders (id int PRIMARY KEY);
CREATE TABLE sales.order_items (id int PRIMARY KEY);
CREATE TABLE sales.refunds (id int PRIMARY KEY);
CREATE TABLE other.x (id int PRIMARY KEY);
CREATE TABLE other.a (id int PRIMARY KEY);
\c contrib_regression

-- two schemas; an exact entry and a regular expression
SELECT synchdb_add_conninfo('selconn', '127.0.0.1', :port, :'srcuser', :'srcpwd', 'sel_src',
                            'public,sales', 'public.a, sales\.order.*', 'null', 'postgres');
SELECT synchdb_start_engine_bgw('selconn');
SELECT synchdb_test_wait($$SELECT count(*) = 3 FROM pg_class WHERE relkind = 'r' AND relnamespace::regnamespace::text = 'sel_src'$$);
SELECT relname FROM pg_class WHERE relkind = 'r' AND relnamespace::regnamespace::text = 'sel_src' ORDER BY 1;
\c sel_src
INSERT INTO sales.orders VALUES (1);
INSERT INTO public.b VALUES (1);
INSERT INTO public.a VALUES (1);
\c contrib_regression
SELECT synchdb_test_wait($$SELECT (SELECT count(*) FROM sel_src.orders) = 1 AND (SELECT count(*) FROM sel_src.a) = 1$$);
SELECT synchdb_stop_engine_bgw('selconn');
SELECT synchdb_del_conninfo('selconn');
DROP SCHEMA sel_src CASCADE;

-- file: a JSON table list on this server
SELECT current_setting('data_directory') || '/synchdb_selection_test.json' AS selfile \gset
COPY (SELECT '{"table_list": ["public.b", "other.x"]}') TO :'selfile';
SELECT synchdb_add_conninfo('selfile', '127.0.0.1', :port, :'srcuser', :'srcpwd', 'sel_src',
                            'public', 'file:' || :'selfile', 'null', 'postgres');
SELECT synchdb_start_engine_bgw('selfile');
SELECT synchdb_test_wait($$SELECT count(*) = 2 FROM pg_class WHERE relkind = 'r' AND relnamespace::regnamespace::text = 'sel_src'$$);
SELECT relname FROM pg_class WHERE relkind = 'r' AND relnamespace::regnamespace::text = 'sel_src' ORDER BY 1;
SELECT synchdb_stop_engine_bgw('selfile');
SELECT synchdb_del_conninfo('selfile');
DROP SCHEMA sel_src CASCADE;

-- errors, reported in err; nothing is created
SELECT synchdb_add_conninfo('selnone', '127.0.0.1', :port, :'srcuser', :'srcpwd', 'sel_src',
                            'public', 'public\.nothing_like_this.*', 'null', 'postgres');
SELECT synchdb_add_conninfo('selclash', '127.0.0.1', :port, :'srcuser', :'srcpwd', 'sel_src',
                            'public,other', 'null', 'null', 'postgres');
SELECT synchdb_add_conninfo('selnofile', '127.0.0.1', :port, :'srcuser', :'srcpwd', 'sel_src',
                            'public', 'file:/nonexistent/tables.json', 'null', 'postgres');
SELECT synchdb_start_engine_bgw('selnone');
SELECT synchdb_start_engine_bgw('selclash');
SELECT synchdb_start_engine_bgw('selnofile');
SELECT synchdb_test_wait($$SELECT bool_and(state = 'stopped' AND err <> 'no error') FROM synchdb_state_view
                           WHERE name IN ('selnone', 'selclash', 'selnofile')$$);
SELECT name, err FROM synchdb_state_view WHERE name LIKE 'sel%' ORDER BY name;
SELECT count(*) AS slots FROM pg_replication_slots WHERE slot_name LIKE 'synchdb_sel%';
SELECT count(*) AS schemas FROM pg_namespace WHERE nspname = 'sel_src';
SET client_min_messages = error;
SELECT synchdb_del_conninfo(name) FROM synchdb_conninfo WHERE name LIKE 'sel%' ORDER BY name;
RESET client_min_messages;
DROP DATABASE sel_src;
