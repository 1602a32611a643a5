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
-- duplicate name
SELECT synchdb_add_conninfo('dupconn', '127.0.0.1', :port, :'srcuser', :'srcpwd', 'postgres', 'public', 'null', 'null', 'postgres');
SELECT synchdb_add_conninfo('dupconn', '127.0.0.1', :port, :'srcuser', :'srcpwd', 'postgres', 'public', 'null', 'null', 'postgres');
-- unknown snapshot mode
SELECT synchdb_start_engine_bgw('dupconn', 'sometimes');
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
