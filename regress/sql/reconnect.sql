-- Losing the source is transient, whatever synchdb.error_handling_strategy says
-- (here the default, exit): the connector reconnects by itself with a growing
-- wait, shows state restarting and a transient err meanwhile, and streams again
-- with nothing lost or doubled. The source is the other cluster: first it is
-- stopped for a while, then restarted with -m immediate (a crash and recovery)
-- while a writer commits changes to a keyed and a keyless table.
\getenv port SYNCHDB_PORT
\getenv otherport SYNCHDB_OTHER_PORT
\getenv otherbindir SYNCHDB_OTHER_BINDIR
\getenv otherdata SYNCHDB_OTHER_DATA
\getenv bindir SYNCHDB_BINDIR
\getenv srcuser SYNCHDB_SRC_USER
\getenv srcpwd SYNCHDB_SRC_PASSWORD
\setenv PGBIN :bindir
\setenv OTHERBIN :otherbindir
\setenv OTHERDATA :otherdata
\setenv OTHERPORT :otherport
\c postgres postgres 127.0.0.1 :otherport
CREATE DATABASE rcsrc;
\c rcsrc postgres 127.0.0.1 :otherport
CREATE TABLE t (id int PRIMARY KEY, n int, note text);
CREATE TABLE k (a int, b text);
ALTER TABLE k REPLICA IDENTITY FULL;
INSERT INTO t SELECT g, 0, 'before' FROM generate_series(1, 100) g;
INSERT INTO k SELECT g, 'before' FROM generate_series(1, 100) g;
-- each call goes on from where the last one stopped
CREATE PROCEDURE writer(rounds int) LANGUAGE plpgsql AS $$
DECLARE
    base int;
BEGIN
    FOR i IN 1..rounds LOOP
        SELECT coalesce(max(id), 0) INTO base FROM t;
        INSERT INTO t VALUES (base + 1, 0, 'written');
        UPDATE t SET n = n + 1 WHERE id = base - 50;
        DELETE FROM t WHERE id = base - 70;
        INSERT INTO k VALUES (base + 1, 'written');
        UPDATE k SET b = b || '+' WHERE a = base - 30;
        COMMIT;
        PERFORM pg_sleep(0.01);
    END LOOP;
END $$;

\c contrib_regression postgres 127.0.0.1 :port
SHOW synchdb.error_handling_strategy;
SELECT synchdb_add_conninfo('rcconn', '127.0.0.1', :otherport, :'srcuser', :'srcpwd',
                            'rcsrc', 'public', 'null', 'null', 'postgres');
SELECT synchdb_start_engine_bgw('rcconn');
SELECT synchdb_test_wait($$SELECT count(*) = 100 FROM rcsrc.k$$);

-- the source down for a while
\! "$OTHERBIN/pg_ctl" -D "$OTHERDATA" -m immediate -w -s stop
-- (the third attempt: the waits double, 1 s then 2 s, then 4 s)
SELECT synchdb_test_wait($$SELECT state = 'restarting' AND err LIKE 'transient error, reconnecting in % s (attempt 3): %'
                             FROM synchdb_state_view WHERE name = 'rcconn'$$);
SELECT pid > 0 AS worker_alive, state, replace(err, :'otherport', '<port>') AS err
  FROM synchdb_state_view WHERE name = 'rcconn';
\! "$OTHERBIN/pg_ctl" -D "$OTHERDATA" -l "$OTHERDATA.log" -w -s start
SELECT synchdb_test_wait($$SELECT state = 'polling' AND err = 'no error'
                             FROM synchdb_state_view WHERE name = 'rcconn'$$);

-- a crash of the source while changes flow: the writer's session dies with it,
-- a second one goes on after the restart
\! "$PGBIN/psql" -X -q -h 127.0.0.1 -p "$OTHERPORT" -U postgres -d rcsrc -c 'CALL writer(100000)' > /dev/null 2>&1 &
SELECT synchdb_test_wait($$SELECT max(id) > 300 FROM rcsrc.t$$);
\! "$OTHERBIN/pg_ctl" -D "$OTHERDATA" -l "$OTHERDATA.log" -m immediate -w -s restart
\c rcsrc postgres 127.0.0.1 :otherport
CALL writer(200);
SELECT count(*) AS t_rows, md5(string_agg(format('%s|%s|%s', id, n, note), ',' ORDER BY id)) AS t_md5 FROM t \gset
SELECT count(*) AS k_rows, md5(string_agg(format('%s|%s', a, b), ',' ORDER BY a, b)) AS k_md5 FROM k \gset
SELECT max(id) > 500 AS writes_before_and_after FROM t;

\c contrib_regression postgres 127.0.0.1 :port
SELECT synchdb_test_wait(format($$SELECT count(*) = %s FROM rcsrc.t$$, :t_rows), 120);
SELECT synchdb_test_wait(format($$SELECT count(*) = %s FROM rcsrc.k$$, :k_rows), 120);
SELECT count(*) = :t_rows AS t_rows_equal,
       md5(string_agg(format('%s|%s|%s', id, n, note), ',' ORDER BY id)) = :'t_md5' AS t_equal
  FROM rcsrc.t;
SELECT count(*) = :k_rows AS k_rows_equal,
       md5(string_agg(format('%s|%s', a, b), ',' ORDER BY a, b)) = :'k_md5' AS k_equal
  FROM rcsrc.k;
SELECT name, state, err FROM synchdb_state_view WHERE name = 'rcconn';

SELECT synchdb_stop_engine_bgw('rcconn');
SELECT synchdb_del_conninfo('rcconn');
SET client_min_messages = warning;
DROP SCHEMA rcsrc CASCADE;
RESET client_min_messages;
\c postgres postgres 127.0.0.1 :otherport
DROP DATABASE rcsrc;
\c contrib_regression postgres 127.0.0.1 :port
