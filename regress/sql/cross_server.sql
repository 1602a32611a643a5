-- A source on another server, running the other major version (15 -> 18 when
-- this suite runs on 18, 18 -> 15 when it runs on 15): snapshot, then CDC.
\getenv port SYNCHDB_PORT
\getenv otherport SYNCHDB_OTHER_PORT
\getenv srcuser SYNCHDB_SRC_USER
\getenv srcpwd SYNCHDB_SRC_PASSWORD
\c postgres postgres 127.0.0.1 :otherport
SELECT current_setting('server_version_num')::int / 10000 <> :'port'::int % 100 AS other_major_version;
CREATE DATABASE xsrc;
\c xsrc postgres 127.0.0.1 :otherport
CREATE TABLE accounts (id int PRIMARY KEY, owner text NOT NULL, balance numeric(14,2) DEFAULT 0,
                       opened timestamptz, attrs jsonb, active bool DEFAULT true);
INSERT INTO accounts SELECT g, 'owner ' || g, g * 10.25, '2023-06-01 12:00+00'::timestamptz + g * interval '1 day',
                            jsonb_build_object('tier', g % 3), g % 5 <> 0
FROM generate_series(1, 1000) g;

\c contrib_regression postgres 127.0.0.1 :port
SELECT synchdb_add_conninfo('xconn', '127.0.0.1', :otherport, :'srcuser', :'srcpwd',
                            'xsrc', 'public', 'null', 'null', 'postgres');
SELECT synchdb_start_engine_bgw('xconn');
SELECT synchdb_test_wait($$SELECT count(*) = 1000 FROM xsrc.accounts$$);

\c xsrc postgres 127.0.0.1 :otherport
UPDATE accounts SET balance = balance - 100 WHERE id <= 100;
UPDATE accounts SET balance = balance + 100 WHERE id > 900;
DELETE FROM accounts WHERE NOT active;
INSERT INTO accounts (id, owner, attrs) VALUES (1001, 'new owner', '{"tier": 9}');
SELECT md5(string_agg(t::text, '|' ORDER BY id)) AS acc_sum, count(*) AS acc_rows FROM accounts t \gset

\c contrib_regression postgres 127.0.0.1 :port
SELECT synchdb_test_wait(format($$SELECT md5(string_agg(t::text, '|' ORDER BY id)) = %L FROM xsrc.accounts t$$, :'acc_sum'));
SELECT count(*) = :acc_rows AS same_rows, sum(balance), count(*) FILTER (WHERE NOT active) AS inactive
FROM xsrc.accounts;
SELECT stage, state, err FROM synchdb_state_view WHERE name = 'xconn';
SELECT synchdb_stop_engine_bgw('xconn');
SELECT synchdb_del_conninfo('xconn');
DROP SCHEMA xsrc CASCADE;

\c postgres postgres 127.0.0.1 :otherport
SELECT count(*) AS slots_left FROM pg_replication_slots;
DROP DATABASE xsrc;
