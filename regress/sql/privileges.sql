\getenv port SYNCHDB_PORT
\getenv srcuser SYNCHDB_SRC_USER
\getenv srcpwd SYNCHDB_SRC_PASSWORD
\getenv scratch SYNCHDB_SCRATCH
-- Least privilege: no function of synchdb is executable by PUBLIC (they show
-- every connector's name, pid, positions and errors, start and stop workers and
-- hold source credentials), and no table or view of it is readable by PUBLIC.
-- Checked over every function the extension has, whatever they are.
SELECT count(*) > 40 AS many_functions_checked,
       count(*) FILTER (WHERE p.proacl IS NULL
                           OR EXISTS (SELECT 1 FROM aclexplode(p.proacl) a WHERE a.grantee = 0)) AS executable_by_public
  FROM pg_depend d JOIN pg_proc p ON p.oid = d.objid
 WHERE d.classid = 'pg_proc'::regclass AND d.deptype = 'e'
   AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'synchdb');
SELECT p.oid::regprocedure AS executable_by_public
  FROM pg_depend d JOIN pg_proc p ON p.oid = d.objid
 WHERE d.classid = 'pg_proc'::regclass AND d.deptype = 'e'
   AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'synchdb')
   AND (p.proacl IS NULL OR EXISTS (SELECT 1 FROM aclexplode(p.proacl) a WHERE a.grantee = 0))
 ORDER BY 1;
SELECT count(*) > 10 AS many_relations_checked,
       count(*) FILTER (WHERE EXISTS (SELECT 1 FROM aclexplode(c.relacl) a WHERE a.grantee = 0)) AS readable_by_public
  FROM pg_depend d JOIN pg_class c ON c.oid = d.objid
 WHERE d.classid = 'pg_class'::regclass AND d.deptype = 'e'
   AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'synchdb');

-- a login role that was granted nothing sees and does nothing
CREATE ROLE synchdb_nobody LOGIN;
SET ROLE synchdb_nobody;
SELECT * FROM synchdb_state_rows();
SELECT * FROM synchdb_stats_rows();
SELECT * FROM synchdb_state_view;
SELECT * FROM synchdb_conninfo;
SELECT synchdb_add_conninfo('sneaky', '127.0.0.1', 5432, 'u', 'p', 'db', 'public', 'null', 'null', 'postgres');
SELECT synchdb_stop_engine_bgw('anything');
RESET ROLE;
DROP ROLE synchdb_nobody;

-- credentials with no password in any statement: pwd NULL, and the password in a
-- pgpass-format file that only the server's operating-system user may read
\setenv SCRATCH :scratch
\setenv PGPORT :port
\setenv SRCUSER :srcuser
\setenv SRCPWD :srcpwd
CREATE DATABASE pp_src;
\c pp_src
CREATE TABLE t (id int PRIMARY KEY, v text);
INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 10) g;
\c contrib_regression
SELECT synchdb_add_conninfo('ppconn', '127.0.0.1', :port, :'srcuser', NULL, 'pp_src', 'public', 'null', 'null', 'postgres');
SELECT data->'pwd' AS stored_password FROM synchdb_conninfo WHERE name = 'ppconn';
SELECT synchdb_set_passfile('ppconn', :'scratch' || '/synchdb.pgpass');
\! printf '# host:port:database:user:password\n127.0.0.1:%s:pp_src:%s:%s\n' "$PGPORT" "$SRCUSER" "$SRCPWD" > "$SCRATCH/synchdb.pgpass"
-- readable by others: refused, as libpq refuses it
\! chmod 0644 "$SCRATCH/synchdb.pgpass"
SELECT synchdb_start_engine_bgw('ppconn');
SELECT synchdb_test_wait($$SELECT state = 'stopped' AND err <> 'no error' FROM synchdb_state_view WHERE name = 'ppconn'$$);
SELECT state, replace(err, :'scratch', '<scratch>') AS err FROM synchdb_state_view WHERE name = 'ppconn';
\! chmod 0600 "$SCRATCH/synchdb.pgpass"
-- started by another superuser: the connector still runs as the extension's
-- owner, who owns what it creates (as after an auto-launch)
CREATE ROLE synchdb_other_admin SUPERUSER;
SET ROLE synchdb_other_admin;
SELECT synchdb_start_engine_bgw('ppconn');
RESET ROLE;
SELECT synchdb_test_wait($$SELECT count(*) = 10 FROM pp_src.t$$);
SELECT name, state, err FROM synchdb_state_view WHERE name = 'ppconn';
SELECT c.relowner = e.extowner AS owned_by_extension_owner
  FROM pg_class c, pg_extension e WHERE c.oid = 'pp_src.t'::regclass AND e.extname = 'synchdb';
DROP ROLE synchdb_other_admin;
SELECT synchdb_stop_engine_bgw('ppconn');
SELECT synchdb_del_conninfo('ppconn');
SET client_min_messages = warning;
DROP SCHEMA pp_src CASCADE;
RESET client_min_messages;
DROP DATABASE pp_src;

-- a role that is not a superuser manages connectors through membership of
-- synchdb_admin (as PostgreSQL 16's pg_create_subscription), with PostgreSQL's
-- safeguards for subscriptions of non-superusers: a password, which the source
-- must ask for; its connectors write only into schemas and tables it owns, own
-- what they create there, and are its own
CREATE ROLE sd_member LOGIN;
GRANT synchdb_admin TO sd_member;
CREATE DATABASE mem_src;
\c mem_src
CREATE TABLE t (id int PRIMARY KEY, v text);
CREATE SEQUENCE free_seq;
INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 5) g;
\c contrib_regression
SELECT synchdb_add_conninfo('suconn', '127.0.0.1', :port, :'srcuser', :'srcpwd', 'mem_src', 'public', 'null', 'null', 'postgres');
SET ROLE sd_member;
SELECT synchdb_add_conninfo('memconn', '127.0.0.1', :port, :'srcuser', NULL, 'mem_src', 'public', 'null', 'null', 'postgres');
SELECT synchdb_add_conninfo('memconn', '127.0.0.1', :port, :'srcuser', :'srcpwd', 'mem_src', 'public', 'null', 'null', 'postgres');
-- the destination schema (named after the source database) is not its own yet
SELECT synchdb_start_engine_bgw('memconn');
SELECT synchdb_test_wait($$SELECT state = 'stopped' AND err <> 'no error' FROM synchdb_state_view WHERE name = 'memconn'$$);
SELECT name, state, err FROM synchdb_state_view WHERE name = 'memconn';
RESET ROLE;
CREATE SCHEMA mem_src AUTHORIZATION sd_member;
SET ROLE sd_member;
SELECT synchdb_start_engine_bgw('memconn');
SELECT synchdb_test_wait($$SELECT count(*) = 5 FROM mem_src.t$$);
SELECT name, state, err FROM synchdb_state_view WHERE name = 'memconn';
SELECT c.relname, c.relkind, c.relowner::regrole AS owner FROM pg_class c
 WHERE c.relnamespace = 'mem_src'::regnamespace ORDER BY 1;
-- not the member's: other connectors, certificate files, pgpass files
SELECT synchdb_stop_engine_bgw('suconn');
SELECT synchdb_del_conninfo('suconn');
SELECT synchdb_add_extra_conninfo('memconn', 'require', '/etc/ssl/certs/ca-certificates.crt');
SELECT synchdb_set_passfile('memconn', '/tmp/any');
SELECT synchdb_stop_engine_bgw('memconn');
SELECT synchdb_del_conninfo('memconn');
-- a source that does not ask for the password (pg_hba.conf trusts this role) is refused
SELECT synchdb_add_conninfo('trustconn', '127.0.0.1', :port, 'postgres', 'not asked for', 'mem_src', 'public', 'null', 'null', 'postgres');
SELECT synchdb_start_engine_bgw('trustconn');
SELECT synchdb_test_wait($$SELECT state = 'stopped' AND err <> 'no error' FROM synchdb_state_view WHERE name = 'trustconn'$$);
SELECT name, state, replace(err, :'port', '<port>') AS err FROM synchdb_state_view WHERE name = 'trustconn';
SELECT synchdb_del_conninfo('trustconn');
RESET ROLE;
SELECT synchdb_del_conninfo('suconn');
SET client_min_messages = warning;
DROP SCHEMA mem_src CASCADE;
RESET client_min_messages;
DROP DATABASE mem_src;
DROP ROLE sd_member;
