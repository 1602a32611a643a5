-- Bad input: a clear error at call time where it can be known then, otherwise in
-- err of the state view with the source server's own message; nothing is left
-- half-created.
\getenv port SYNCHDB_PORT
\getenv nolport SYNCHDB_NOLOGICAL_PORT
\getenv srcuser SYNCHDB_SRC_USER
\getenv srcpwd SYNCHDB_SRC_PASSWORD

-- unknown connector name
SELECT synchdb_start_engine_bgw('nosuch');
SELECT synchdb_stop_engine_bgw('nosuch');
SELECT synchdb_del_conninfo('nosuch');
-- connector types other than postgres
SELECT synchdb_add_conninfo('myconn', '127.0.0.1', 3306, 'u', 'p', 'inventory', 'null', 'null', 'null', 'mysql');
-- malformed name and port
SELECT synchdb_add_conninfo('bad name', '127.0.0.1', :port, 'u', 'p', 'postgres', 'public', 'null', 'null', 'postgres');
SELECT synchdb_add_conninfo('badport', '127.0.0.1', 70000, 'u', 'p', 'postgres', 'public', 'null', 'null', 'postgres');
-- every argument that needs a value, named when NULL; a password too long
SELECT synchdb_add_conninfo(NULL, '127.0.0.1', :port, 'u', 'p', 'postgres', 'public', 'null', 'null', 'postgres');
SELECT synchdb_add_conninfo('c', NULL, :port, 'u', 'p', 'postgres', 'public', 'null', 'null', 'postgres');
SELECT synchdb_add_conninfo('c', '127.0.0.1', NULL, 'u', 'p', 'postgres', 'public', 'null', 'null', 'postgres');
SELECT synchdb_add_conninfo('c', '127.0.0.1', :port, NULL, 'p', 'postgres', 'public', 'null', 'null', 'postgres');
SELECT synchdb_add_conninfo('c', '127.0.0.1', :port, 'u', 'p', NULL, 'public', 'null', 'null', 'postgres');
SELECT synchdb_add_conninfo('c', '127.0.0.1', :port, 'u', 'p', 'postgres', 'public', 'null', 'null', NULL);
SELECT synchdb_add_conninfo('c', '127.0.0.1', :port, 'u', repeat('x', 600), 'postgres', 'public', 'null', 'null', 'postgres');
SELECT synchdb_start_engine_bgw(NULL);
SELECT synchdb_stop_engine_bgw(NULL);
SELECT synchdb_del_conninfo(NULL);
SELECT synchdb_pause_engine(NULL);
SELECT synchdb_resume_engine(NULL);
SELECT synchdb_set_offset(NULL, '0/0');
SELECT synchdb_restart_connector(NULL, 'initial');
SELECT synchdb_reset_stats(NULL);
SELECT synchdb_sync_sequences(NULL);
SELECT synchdb_add_objmap(NULL, 'table', 'public.a', 'b');
SELECT synchdb_del_objmap(NULL, 'table', 'public.a');
SELECT synchdb_reload_objmap(NULL);
SELECT synchdb_add_extra_conninfo(NULL, 'require');
SELECT synchdb_del_extra_conninfo(NULL);
SELECT synchdb_set_passfile(NULL, '/tmp/x');
SELECT synchdb_translate_datatype(NULL, 'int4', -1, -1, -1);
SELECT synchdb_translate_datatype('postgres', NULL, -1, -1, -1);
SELECT count(*) FROM synchdb_conninfo;
-- duplicate name
SELECT synchdb_add_conninfo('dupconn', '127.0.0.1', :port, :'srcuser', :'srcpwd', 'postgres', 'public', 'null', 'null', 'postgres');
SELECT synchdb_add_conninfo('dupconn', '127.0.0.1', :port, :'srcuser', :'srcpwd', 'postgres', 'public', 'null', 'null', 'postgres');
-- unknown snapshot mode
SELECT synchdb_start_engine_bgw('dupconn', 'sometimes');
-- object mapping rules with a part missing
SELECT synchdb_add_objmap('dupconn', 'table', NULL, 'b');
SELECT synchdb_add_objmap('dupconn', 'table', 'public.a', NULL);
SELECT synchdb_add_extra_conninfo('dupconn', NULL);
SELECT synchdb_set_passfile('dupconn', 'relative/path');
SELECT count(*) FROM synchdb_conninfo;

-- failures only the source can tell: the worker stops and says why in err
SELECT synchdb_add_conninfo('badpw', '127.0.0.1', :port, :'srcuser', 'wrong password', 'postgres', 'public', 'null', 'null', 'postgres');
SELECT synchdb_add_conninfo('badport2', '127.0.0.1', 1, :'srcuser', :'srcpwd', 'postgres', 'public', 'null', 'null', 'postgres');
SELECT synchdb_add_conninfo('nodb', '127.0.0.1', :port, :'srcuser', :'srcpwd', 'no_such_db', 'public', 'null', 'null', 'postgres');
SELECT synchdb_add_conninfo('nolog', '127.0.0.1', :nolport, :'srcuser', :'srcpwd', 'postgres', 'public', 'null', 'null', 'postgres');
SELECT synchdb_add_conninfo('notable', '127.0.0.1', :port, :'srcuser', :'srcpwd', 'postgres', 'public', 'public.no_such_table', 'null', 'postgres');
SELECT synchdb_start_engine_bgw('badpw');
SELECT synchdb_start_engine_bgw('badport2');
SELECT synchdb_start_engine_bgw('nodb');
SELECT synchdb_start_engine_bgw('nolog');
SELECT synchdb_start_engine_bgw('notable');
SELECT synchdb_test_wait($$SELECT bool_and(state = 'stopped' AND err <> 'no error') FROM synchdb_state_view
                           WHERE name IN ('badpw', 'badport2', 'nodb', 'nolog', 'notable')$$);
SELECT name, pid, state, replace(err, :'nolport', '<port>') AS err
FROM synchdb_state_view WHERE name <> 'dupconn' ORDER BY name;
-- nothing half-created: no slot, no publication, no destination schema
SELECT count(*) AS slots FROM pg_replication_slots;
SELECT count(*) AS publications FROM pg_publication;
SELECT count(*) AS schemas FROM pg_namespace WHERE nspname IN ('postgres', 'no_such_db');

-- a failed connector can be removed (the source may be unreachable: warnings hidden)
SET client_min_messages = error;
SELECT synchdb_del_conninfo(name) FROM synchdb_conninfo ORDER BY name;
RESET client_min_messages;
SELECT * FROM synchdb_state_view;

-- a start that fails after it created its slot and publication on the source
-- (here the copy: a datatype rule makes a text column int4, and one value is
-- no number) drops them again, so nothing holds WAL on the source
CREATE DATABASE cut_src;
\c cut_src
CREATE TABLE t (id int PRIMARY KEY, v text);
INSERT INTO t VALUES (1, '12'), (2, 'twelve');
\c contrib_regression
SELECT synchdb_add_conninfo('cutconn', '127.0.0.1', :port, :'srcuser', :'srcpwd', 'cut_src', 'public', 'null', 'null', 'postgres');
SELECT synchdb_add_objmap('cutconn', 'datatype', 'public.t.v', 'int4|0');
SELECT synchdb_start_engine_bgw('cutconn');
SELECT synchdb_test_wait($$SELECT state = 'stopped' AND err <> 'no error' FROM synchdb_state_view WHERE name = 'cutconn'$$);
SELECT name, state, err FROM synchdb_state_view WHERE name = 'cutconn';
SELECT count(*) AS slots FROM pg_replication_slots WHERE slot_name LIKE 'synchdb\_cutconn%';
\c cut_src
SELECT count(*) AS publications FROM pg_publication;
\c contrib_regression
SELECT to_regnamespace('cut_src') IS NULL AS no_dest_schema;
SELECT synchdb_del_conninfo('cutconn');
DROP DATABASE cut_src;

-- a source role that may not create the connector's publication (no CREATE on
-- its database) is told what it needs
CREATE ROLE weak_src LOGIN REPLICATION;
CREATE DATABASE weak_db;
\c weak_db
CREATE TABLE t (id int PRIMARY KEY);
ALTER TABLE t OWNER TO weak_src;
\c contrib_regression
SELECT synchdb_add_conninfo('weakconn', '127.0.0.1', :port, 'weak_src', '', 'weak_db', 'public', 'null', 'null', 'postgres');
SELECT synchdb_start_engine_bgw('weakconn');
SELECT synchdb_test_wait($$SELECT state = 'stopped' AND err <> 'no error' FROM synchdb_state_view WHERE name = 'weakconn'$$);
SELECT name, state, err FROM synchdb_state_view WHERE name = 'weakconn';
SELECT count(*) AS slots FROM pg_replication_slots WHERE slot_name LIKE 'synchdb\_weakconn%';
SELECT synchdb_del_conninfo('weakconn');
DROP DATABASE weak_db;
DROP ROLE weak_src;
