-- Values whose text form depends on the session (DateStyle, IntervalStyle,
-- extra_float_digits) arrive unchanged whatever the source's settings: both
-- connections to the source ask for ISO dates, postgres intervals and exact
-- floats, as PostgreSQL's own subscriber does. The source database here reads
-- dates day first and prints floats with 12 digits; 2024-03-04 must stay the
-- 4th of March, in the snapshot and in CDC.
\getenv port SYNCHDB_PORT
\getenv srcuser SYNCHDB_SRC_USER
\getenv srcpwd SYNCHDB_SRC_PASSWORD
CREATE DATABASE ds_src;
ALTER DATABASE ds_src SET datestyle = 'SQL, DMY';
ALTER DATABASE ds_src SET intervalstyle = 'sql_standard';
ALTER DATABASE ds_src SET extra_float_digits = -3;
\c ds_src
CREATE TABLE t (id int PRIMARY KEY, d date, ts timestamp, tz timestamptz, iv interval, f float8);
INSERT INTO t VALUES (1, date '2024-03-04', timestamp '2024-03-04 05:06:07.25',
                      timestamptz '2024-03-04 05:06:07.25+00', interval '-1 day +02:03:04', 0.1::float8 + 0.2::float8);
\c contrib_regression
SELECT synchdb_add_conninfo('dsconn', '127.0.0.1', :port, :'srcuser', :'srcpwd',
                            'ds_src', 'public', 'null', 'null', 'postgres');
SELECT synchdb_start_engine_bgw('dsconn');
SELECT synchdb_test_wait($$SELECT count(*) = 1 FROM ds_src.t$$);
\c ds_src
INSERT INTO t SELECT 2, d, ts, tz, iv, f FROM t WHERE id = 1;
\c contrib_regression
SELECT synchdb_test_wait($$SELECT count(*) = 2 FROM ds_src.t$$);
SELECT id,
       d = date '2024-03-04' AS date_ok,
       ts = timestamp '2024-03-04 05:06:07.25' AS timestamp_ok,
       tz = timestamptz '2024-03-04 05:06:07.25+00' AS timestamptz_ok,
       iv = interval '-1 day +02:03:04' AS interval_ok,
       f = 0.1::float8 + 0.2::float8 AS float_exact
FROM ds_src.t ORDER BY id;
SELECT name, state, err FROM synchdb_state_view WHERE name = 'dsconn';
SELECT synchdb_stop_engine_bgw('dsconn');
SELECT synchdb_del_conninfo('dsconn');
DROP SCHEMA ds_src CASCADE;
DROP DATABASE ds_src;
