-- synchdb 0.1: PostgreSQL -> PostgreSQL replication, SynchDB-compatible interface.
\echo Use "CREATE EXTENSION synchdb" to load this file. \quit

-- Connectors. data: hostname, port, user, pwd (encrypted), srcdb, srcschema, table,
-- snapshottable, connector. Holds secrets: not readable by PUBLIC.
CREATE TABLE synchdb_conninfo (
    name text PRIMARY KEY,
    isactive bool NOT NULL DEFAULT false,
    data jsonb NOT NULL
);
REVOKE ALL ON synchdb_conninfo FROM PUBLIC;

-- Mode 'always' with 'snapshottable' copies some tables again at a new point of the
-- source (until_lsn) while the others keep their position. Until CDC has passed
-- that point, changes to those tables from transactions that committed before it
-- are already in the copy and are left out. Written with the copied rows. Keyed
-- by the source table's oid, the relation id of its pgoutput messages, which a
-- rename on the source keeps; the names are for people reading it.
CREATE TABLE synchdb_snapshot_skip (
    name text NOT NULL REFERENCES synchdb_conninfo (name) ON DELETE CASCADE,
    srcrelid oid NOT NULL,
    srcschema text NOT NULL,
    srctable text NOT NULL,
    until_lsn pg_lsn NOT NULL,
    PRIMARY KEY (name, srcrelid)
);
REVOKE ALL ON synchdb_snapshot_skip FROM PUBLIC;
-- The source tables a connector has taken in (by the snapshot, a later copy, or
-- CDC): a table of its selection that is not here is new on the source.
CREATE TABLE synchdb_tables (
    name text NOT NULL REFERENCES synchdb_conninfo (name) ON DELETE CASCADE,
    srcrelid oid NOT NULL,
    srcschema text NOT NULL,
    srctable text NOT NULL,
    PRIMARY KEY (name, srcrelid)
);
REVOKE ALL ON synchdb_tables FROM PUBLIC;

-- The work list of a parallel initial copy: one row per table, or per range of
-- a large table's pages, copied by the connector and its copy helpers into a
-- staging schema (dst_schema) under the slot's exported snapshot. An item's
-- rows and its 'done' commit together. The staging tables move into place in
-- the snapshot's last transaction; a copy cut short leaves only the staging
-- schema, which the next snapshot (or synchdb_del_conninfo) drops.
CREATE TABLE synchdb_copy_work (
    name text NOT NULL REFERENCES synchdb_conninfo (name) ON DELETE CASCADE,
    item int NOT NULL,
    srcrelid oid NOT NULL,
    snapshot text NOT NULL,
    copy_sql text NOT NULL,
    label text NOT NULL,
    dst_schema text NOT NULL,
    dst_table text NOT NULL,
    dst_cols text[] NOT NULL,
    frozen bool NOT NULL,
    binary_format bool NOT NULL,
    then_sql text,
    ddl bool NOT NULL DEFAULT false,
    state text NOT NULL DEFAULT 'todo' CHECK (state IN ('todo', 'running', 'done', 'failed')),
    helper int,
    rows bigint,
    err text,
    PRIMARY KEY (name, item)
);
REVOKE ALL ON synchdb_copy_work FROM PUBLIC;

-- Internal entry points of the shim (C) and core (Rust).
CREATE FUNCTION synchdb_encrypt_secret(text) RETURNS text
    AS 'MODULE_PATHNAME', 'synchdb_encrypt_secret_sql' LANGUAGE C STRICT VOLATILE;
CREATE FUNCTION synchdb_launch(name text, mode text, at_commit bool DEFAULT false, at_end bool DEFAULT false) RETURNS int
    AS 'MODULE_PATHNAME', 'synchdb_launch' LANGUAGE C STRICT VOLATILE;
CREATE FUNCTION synchdb_terminate(name text, timeout_ms int) RETURNS int
    AS 'MODULE_PATHNAME', 'synchdb_terminate' LANGUAGE C STRICT VOLATILE;
CREATE FUNCTION synchdb_forget(name text) RETURNS void
    AS 'MODULE_PATHNAME', 'synchdb_forget' LANGUAGE C STRICT VOLATILE;
CREATE FUNCTION synchdb_origin_name(name text) RETURNS text
    AS 'MODULE_PATHNAME', 'synchdb_origin_name_sql' LANGUAGE C STRICT STABLE;
CREATE FUNCTION synchdb_drop_source(name text, data text) RETURNS text
    AS 'MODULE_PATHNAME', 'synchdb_drop_source' LANGUAGE C STRICT VOLATILE;
CREATE FUNCTION synchdb_state_rows(OUT name text, OUT pid int, OUT stage text, OUT state text,
                                   OUT err text, OUT last_dbz_offset text)
    RETURNS SETOF record
    AS 'MODULE_PATHNAME', 'synchdb_state_rows' LANGUAGE C STRICT VOLATILE;

-- The role that called synchdb, as the session sees it (SET ROLE included),
-- also inside the SECURITY DEFINER functions below (PostgreSQL's outer user).
CREATE FUNCTION synchdb_caller() RETURNS oid
    AS 'MODULE_PATHNAME', 'synchdb_caller' LANGUAGE C STRICT VOLATILE;
CREATE FUNCTION synchdb_caller_is_superuser() RETURNS bool
LANGUAGE sql STABLE AS $$ SELECT rolsuper FROM pg_catalog.pg_roles WHERE oid = synchdb_caller() $$;

-- For what only superusers may give.
CREATE FUNCTION synchdb_require_superuser(what text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT synchdb_caller_is_superuser() THEN
        RAISE EXCEPTION 'only superusers may give %', what USING ERRCODE = 'insufficient_privilege';
    END IF;
END $$;

-- A connector's data, after checking that it exists and that the caller may
-- use it: a superuser, or the role that created it (a member of synchdb_admin).
CREATE FUNCTION synchdb_check_connector(cname text) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE d jsonb;
BEGIN
    IF cname IS NULL THEN
        RAISE EXCEPTION 'connector name must not be NULL'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'See SELECT name FROM synchdb_conninfo.';
    END IF;
    SELECT c.data INTO d FROM synchdb_conninfo c WHERE c.name = cname;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'connector "%" does not exist', cname
            USING ERRCODE = 'undefined_object',
                  HINT = 'Create it with synchdb_add_conninfo(), or see SELECT name FROM synchdb_conninfo.';
    END IF;
    IF NOT synchdb_caller_is_superuser()
       AND (d->>'owner') IS DISTINCT FROM synchdb_caller()::text THEN
        RAISE EXCEPTION 'permission denied for connector "%"', cname
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Only the role that created it and superusers may use a connector.';
    END IF;
    RETURN d;
END $$;

-- pwd NULL: the password is not stored, nor ever in SQL text; the worker looks
-- it up in a pgpass-format file (synchdb_set_passfile names one; else the
-- server's $PGPASSFILE or ~/.pgpass, as libpq). The way to use in production.
CREATE FUNCTION synchdb_add_conninfo(name text, hostname text, port int, "user" text, pwd text,
                                     srcdb text, srcschema text, "table" text,
                                     snapshottable text, connector text)
RETURNS int LANGUAGE plpgsql AS $$
DECLARE
    missing text;
BEGIN
    -- every argument that must have a value, named
    missing := CASE WHEN name IS NULL THEN 'name' WHEN hostname IS NULL THEN 'hostname'
                    WHEN port IS NULL THEN 'port' WHEN "user" IS NULL THEN 'user'
                    WHEN srcdb IS NULL THEN 'srcdb' WHEN connector IS NULL THEN 'connector' END;
    IF missing = 'name' THEN
        RAISE EXCEPTION 'name must not be NULL'
            USING ERRCODE = 'null_value_not_allowed', HINT = 'Use 1 to 40 letters, digits or underscores.';
    ELSIF missing = 'connector' THEN
        RAISE EXCEPTION 'connector must not be NULL'
            USING ERRCODE = 'null_value_not_allowed', HINT = 'Use connector type ''postgres''.';
    ELSIF missing IS NOT NULL THEN
        RAISE EXCEPTION '% must not be NULL', missing USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF name !~ '^[A-Za-z0-9_]{1,40}$' THEN
        RAISE EXCEPTION 'invalid connector name "%"', name
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use 1 to 40 letters, digits or underscores.';
    END IF;
    IF lower(connector) <> 'postgres' THEN
        RAISE EXCEPTION 'connector type "%" is not supported', connector
            USING ERRCODE = 'feature_not_supported',
                  HINT = 'This synchdb replicates from PostgreSQL only: use connector type ''postgres''.';
    END IF;
    IF btrim(hostname) = '' THEN
        RAISE EXCEPTION 'hostname must not be empty' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF port < 1 OR port > 65535 THEN
        RAISE EXCEPTION 'port % is not a TCP port number (1-65535)', port USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF btrim("user") = '' THEN
        RAISE EXCEPTION 'user must not be empty' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF btrim(srcdb) = '' THEN
        RAISE EXCEPTION 'source database (srcdb) must not be empty' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF octet_length(pwd) > 512 THEN
        RAISE EXCEPTION 'password is % bytes long; synchdb takes source passwords of at most 512 bytes', octet_length(pwd)
            USING ERRCODE = 'string_data_right_truncation',
                  HINT = 'Use a shorter password for the source role, or pwd NULL and a pgpass file (see synchdb_set_passfile).';
    END IF;
    -- PostgreSQL's safeguard for subscriptions of non-superusers: a password,
    -- which the source must ask for (checked at every connection)
    IF NOT synchdb_caller_is_superuser() AND coalesce(pwd, '') = '' THEN
        RAISE EXCEPTION 'a password is required for a connector of a role that is not a superuser'
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Give the source role''s password as pwd; the source must ask for it (scram-sha-256 in its pg_hba.conf).';
    END IF;
    IF EXISTS (SELECT 1 FROM synchdb_conninfo c WHERE c.name = synchdb_add_conninfo.name) THEN
        RAISE EXCEPTION 'connector "%" already exists', name
            USING ERRCODE = 'duplicate_object',
                  HINT = 'Choose another name, or remove it first with synchdb_del_conninfo().';
    END IF;
    INSERT INTO synchdb_conninfo (name, isactive, data)
    VALUES (name, false, jsonb_build_object(
        'hostname', hostname, 'port', port, 'user', "user",
        'pwd', CASE WHEN pwd IS NOT NULL THEN synchdb_encrypt_secret(pwd) END,
        'srcdb', srcdb, 'srcschema', coalesce(srcschema, 'null'),
        'table', coalesce("table", 'null'), 'snapshottable', coalesce(snapshottable, 'null'),
        'connector', lower(connector))
        || CASE WHEN synchdb_caller_is_superuser() THEN '{}'::jsonb
                ELSE jsonb_build_object('owner', synchdb_caller()::bigint, 'password_required', true) END);
    RETURN 0;
END $$;

-- The pgpass-format file a connector created with pwd NULL takes its password
-- from (path NULL: back to the default, $PGPASSFILE or ~/.pgpass of the
-- server's operating-system user). Read by the worker at each start; it must be
-- readable only by that user (chmod 0600), as libpq requires.
CREATE FUNCTION synchdb_set_passfile(name text, path text)
RETURNS int LANGUAGE plpgsql AS $$
BEGIN
    PERFORM synchdb_check_connector(name);
    PERFORM synchdb_require_superuser('a pgpass file (it is read from this server''s file system)');
    IF path IS NOT NULL AND left(path, 1) <> '/' THEN
        RAISE EXCEPTION 'pgpass file "%" is not an absolute path', path
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Give the full path of the file on this server, where synchdb runs.';
    END IF;
    UPDATE synchdb_conninfo c
       SET data = (c.data - 'passfile') || jsonb_strip_nulls(jsonb_build_object('passfile', path))
     WHERE c.name = synchdb_set_passfile.name;
    RETURN 0;
END $$;

CREATE FUNCTION synchdb_start_engine_bgw(name text, mode text)
RETURNS int LANGUAGE plpgsql AS $$
DECLARE m text := lower(btrim(coalesce(mode, 'initial')));
BEGIN
    PERFORM synchdb_check_connector(name);
    IF m NOT IN ('initial', 'initial_only', 'no_data', 'always', 'never', 'schemasync', 'when_needed') THEN
        RAISE EXCEPTION 'unknown snapshot mode "%"', mode
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Valid modes are: initial, initial_only, no_data, always, never, schemasync, when_needed.';
    END IF;
    -- last_mode: the auto-launcher starts the connector in this mode after a server
    -- restart. A restart must not copy everything again: 'always' comes back as
    -- 'when_needed', which resumes, or finishes a rebuild that was cut short.
    UPDATE synchdb_conninfo c SET isactive = true,
           data = c.data || jsonb_build_object('last_mode', CASE m WHEN 'always' THEN 'when_needed' ELSE m END)
     WHERE c.name = synchdb_start_engine_bgw.name;
    -- takes effect when this transaction commits (nothing if it rolls back)
    PERFORM synchdb_launch(name, m, true);
    RETURN 0;
END $$;

CREATE FUNCTION synchdb_start_engine_bgw(name text)
RETURNS int LANGUAGE sql AS $$ SELECT synchdb_start_engine_bgw(name, 'initial') $$;

CREATE FUNCTION synchdb_stop_engine_bgw(name text)
RETURNS int LANGUAGE plpgsql AS $$
BEGIN
    PERFORM synchdb_check_connector(name);
    PERFORM synchdb_terminate(name, 30000);
    UPDATE synchdb_conninfo c SET isactive = false WHERE c.name = synchdb_stop_engine_bgw.name;
    RETURN 0;
END $$;

CREATE FUNCTION synchdb_del_conninfo(name text)
RETURNS int LANGUAGE plpgsql AS $$
DECLARE
    d jsonb := synchdb_check_connector(name);
    msg text;
    o text := synchdb_origin_name(name);
BEGIN
    IF EXISTS (SELECT 1 FROM synchdb_state_rows() s WHERE s.name = synchdb_del_conninfo.name AND s.pid > 0) THEN
        RAISE EXCEPTION 'connector "%" is running', name
            USING ERRCODE = 'object_in_use',
                  HINT = format('Stop it first with SELECT synchdb_stop_engine_bgw(%L).', name);
    END IF;
    msg := synchdb_drop_source(name, d::text);
    IF msg IS NOT NULL THEN
        RAISE WARNING '%', msg;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_replication_origin WHERE roname = o) THEN
        PERFORM pg_replication_origin_drop(o);
    END IF;
    -- the staging schema of a parallel copy that was cut short
    FOR msg IN SELECT DISTINCT w.dst_schema FROM synchdb_copy_work w WHERE w.name = synchdb_del_conninfo.name LOOP
        EXECUTE format('DROP SCHEMA IF EXISTS %I CASCADE', msg);
    END LOOP;
    DELETE FROM synchdb_conninfo c WHERE c.name = synchdb_del_conninfo.name;
    PERFORM synchdb_forget(name);
    RETURN 0;
END $$;

-- The position of a connector's replication origin (NULL before it has one).
-- Runs as the extension's owner: pg_replication_origin_status is for superusers,
-- and this shows only synchdb's own origins.
CREATE FUNCTION synchdb_origin_lsn(cname text) RETURNS pg_lsn
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT o.remote_lsn FROM pg_catalog.pg_replication_origin_status o
     WHERE o.external_id = @extschema@.synchdb_origin_name(cname)
$$;

CREATE VIEW synchdb_state_view AS
SELECT c.name,
       c.data->>'connector' AS connector_type,
       coalesce(s.pid, -1) AS pid,
       nullif(s.stage, '') AS stage,
       coalesce(s.state, 'stopped') AS state,
       coalesce(s.err, 'no error') AS err,
       coalesce(nullif(s.last_dbz_offset, ''),
                (SELECT format('{"lsn_proc":%s,"messageType":"COMMIT","lsn_commit":%s,"lsn":%s,"txId":0,"ts_usec":0}',
                               l, l, l)
                   FROM (SELECT (o - '0/0'::pg_lsn)::bigint AS l
                           FROM synchdb_origin_lsn(c.name) o
                          WHERE o <> '0/0'::pg_lsn) p),
                'offset file not flushed yet') AS last_dbz_offset
  FROM synchdb_conninfo c
  LEFT JOIN synchdb_state_rows() s ON s.name = c.name;

-- ------------------------------------------------------------ control, statistics

CREATE FUNCTION synchdb_send_command(name text, cmd int) RETURNS int
    AS 'MODULE_PATHNAME', 'synchdb_send_command' LANGUAGE C STRICT VOLATILE;
CREATE FUNCTION synchdb_stats_rows(
        OUT name text, OUT bad_events bigint, OUT total_events bigint, OUT batches_done bigint,
        OUT first_src_ts bigint, OUT first_pg_ts bigint, OUT last_src_ts bigint, OUT last_pg_ts bigint,
        OUT snap_tables bigint, OUT snap_rows bigint, OUT snap_begin_ts bigint, OUT snap_end_ts bigint,
        OUT ddls bigint, OUT dmls bigint, OUT creates bigint, OUT updates bigint, OUT deletes bigint,
        OUT txs bigint, OUT truncates bigint,
        OUT confl_insert_exists bigint, OUT confl_update_exists bigint,
        OUT confl_update_missing bigint, OUT confl_delete_missing bigint,
        OUT confl_multiple_unique_conflicts bigint,
        OUT src_wal_lsn bigint, OUT applied_lsn bigint, OUT confirmed_lsn bigint,
        OUT snap_tables_done bigint, OUT snap_rows_est bigint, OUT snap_bytes bigint)
    RETURNS SETOF record
    AS 'MODULE_PATHNAME', 'synchdb_stats_rows' LANGUAGE C STRICT VOLATILE;
CREATE FUNCTION synchdb_reset_stats_c(name text) RETURNS bool
    AS 'MODULE_PATHNAME', 'synchdb_reset_stats_c' LANGUAGE C STRICT VOLATILE;
CREATE FUNCTION synchdb_parse_offset(text) RETURNS pg_lsn
    AS 'MODULE_PATHNAME', 'synchdb_parse_offset_sql' LANGUAGE C STRICT IMMUTABLE;
CREATE FUNCTION synchdb_check_offset(name text, data text, lsn pg_lsn) RETURNS text
    AS 'MODULE_PATHNAME', 'synchdb_check_offset_sql' LANGUAGE C STRICT VOLATILE;

-- Waits (bounded) until the connector's worker reports state `want`.
CREATE FUNCTION synchdb_wait_state(cname text, want text, secs int) RETURNS bool
LANGUAGE plpgsql AS $$
DECLARE deadline timestamptz := clock_timestamp() + make_interval(secs => secs);
BEGIN
    LOOP
        IF EXISTS (SELECT 1 FROM synchdb_state_rows() s WHERE s.name = cname AND s.state = want) THEN
            RETURN true;
        END IF;
        IF clock_timestamp() > deadline THEN
            RETURN false;
        END IF;
        PERFORM pg_sleep(0.01);
    END LOOP;
END $$;

CREATE FUNCTION synchdb_check_running(cname text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE st text;
BEGIN
    PERFORM synchdb_check_connector(cname);
    SELECT s.state INTO st FROM synchdb_state_rows() s WHERE s.name = cname AND s.pid > 0;
    IF st IS NULL THEN
        RAISE EXCEPTION 'connector "%" is not running', cname
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = format('Start it with SELECT synchdb_start_engine_bgw(%L).', cname);
    END IF;
    RETURN st;
END $$;

CREATE FUNCTION synchdb_pause_engine(name text)
RETURNS int LANGUAGE plpgsql AS $$
BEGIN
    IF synchdb_check_running(name) = 'paused' THEN
        RETURN 0;
    END IF;
    PERFORM synchdb_send_command(name, 1);
    IF NOT synchdb_wait_state(name, 'paused', 10) THEN
        PERFORM synchdb_send_command(name, 0);
        RAISE EXCEPTION 'connector "%" did not pause within 10 s', name
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'A connector pauses between source transactions once its initial snapshot is done; try again.';
    END IF;
    RETURN 0;
END $$;

CREATE FUNCTION synchdb_resume_engine(name text)
RETURNS int LANGUAGE plpgsql AS $$
BEGIN
    IF synchdb_check_running(name) <> 'paused' THEN
        -- one starting again (as after synchdb_reload_objmap) is waited for
        FOR i IN 1..3000 LOOP
            EXIT WHEN synchdb_check_running(name) <> 'initializing';
            PERFORM pg_sleep(0.01);
        END LOOP;
        IF synchdb_check_running(name) <> 'paused' THEN
            RAISE EXCEPTION 'connector "%" is not paused', name
                USING ERRCODE = 'object_not_in_prerequisite_state';
        END IF;
    END IF;
    PERFORM synchdb_send_command(name, 2);
    -- a schemasync connector resumed by hand is in CDC now: a server restart
    -- must bring it back streaming, not paused again
    UPDATE synchdb_conninfo c SET data = c.data || '{"last_mode": "initial"}'
     WHERE c.name = synchdb_resume_engine.name AND c.data->>'last_mode' = 'schemasync';
    IF NOT synchdb_wait_state(name, 'polling', 10) THEN
        RAISE EXCEPTION 'connector "%" did not resume within 10 s', name
            USING ERRCODE = 'object_not_in_prerequisite_state', HINT = 'See synchdb_state_view and the server log.';
    END IF;
    RETURN 0;
END $$;

-- Offset: the JSON shown in synchdb_state_view.last_dbz_offset, or a plain LSN.
-- Nothing moves until both sides accept the offset: the source's slot must still
-- serve it and it must not be past the source's WAL end (checked on the source),
-- and the origin is advanced in this transaction. The slot itself is moved only by
-- the worker's confirmations after resume, which never pass what was applied.
CREATE FUNCTION synchdb_set_offset(name text, "offset" text)
RETURNS int LANGUAGE plpgsql AS $$
DECLARE
    d jsonb;
    lsn pg_lsn;
    msg text;
BEGIN
    IF "offset" IS NULL THEN
        RAISE EXCEPTION 'offset must not be NULL'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Give an LSN such as ''0/16B3748'' or the JSON shown in synchdb_state_view.last_dbz_offset.';
    END IF;
    d := synchdb_check_connector(name);
    IF NOT EXISTS (SELECT 1 FROM synchdb_state_rows() s
                    WHERE s.name = synchdb_set_offset.name AND s.pid > 0 AND s.state = 'paused') THEN
        RAISE EXCEPTION 'connector "%" must be paused to set its offset', name
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = format('Pause it first with SELECT synchdb_pause_engine(%L).', name);
    END IF;
    lsn := synchdb_parse_offset("offset");
    msg := synchdb_check_offset(name, d::text, lsn);
    IF msg IS NOT NULL THEN
        RAISE EXCEPTION '%', msg USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM pg_replication_origin_advance(synchdb_origin_name(name), lsn);
    PERFORM synchdb_send_command(name, 3);
    RETURN 0;
END $$;

CREATE FUNCTION synchdb_restart_connector(name text, mode text)
RETURNS int LANGUAGE plpgsql AS $$
BEGIN
    PERFORM synchdb_check_connector(name);
    -- every argument is checked before the running connector is touched
    IF lower(btrim(coalesce(mode, 'initial'))) NOT IN
       ('initial', 'initial_only', 'no_data', 'always', 'never', 'schemasync', 'when_needed') THEN
        RAISE EXCEPTION 'unknown snapshot mode "%"', mode
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Valid modes are: initial, initial_only, no_data, always, never, schemasync, when_needed.';
    END IF;
    PERFORM synchdb_stop_engine_bgw(name);
    RETURN synchdb_start_engine_bgw(name, mode);
END $$;

CREATE FUNCTION synchdb_reset_stats(name text)
RETURNS int LANGUAGE plpgsql AS $$
BEGIN
    PERFORM synchdb_check_connector(name);
    PERFORM synchdb_reset_stats_c(name);
    RETURN 0;
END $$;

-- Counters live in shared memory: they start at zero with the server, as SynchDB's.
CREATE VIEW synchdb_genstats AS
SELECT c.name,
       coalesce(s.bad_events, 0) AS bad_events,
       coalesce(s.total_events, 0) AS total_events,
       coalesce(s.batches_done, 0) AS batches_done,
       coalesce(s.total_events / nullif(s.batches_done, 0), 0) AS average_batch_size,
       coalesce(s.first_src_ts, 0) AS first_src_ts,
       coalesce(s.first_pg_ts, 0) AS first_pg_ts,
       coalesce(s.last_src_ts, 0) AS last_src_ts,
       coalesce(s.last_pg_ts, 0) AS last_pg_ts
  FROM synchdb_conninfo c LEFT JOIN synchdb_stats_rows() s ON s.name = c.name;

CREATE VIEW synchdb_snapstats AS
SELECT c.name,
       coalesce(s.snap_tables, 0) AS tables,
       coalesce(s.snap_rows, 0) AS rows,
       coalesce(s.snap_begin_ts, 0) AS snapshot_begin_ts,
       coalesce(s.snap_end_ts, 0) AS snapshot_end_ts
  FROM synchdb_conninfo c LEFT JOIN synchdb_stats_rows() s ON s.name = c.name;

CREATE VIEW synchdb_cdcstats AS
SELECT c.name,
       coalesce(s.ddls, 0) AS ddls,
       coalesce(s.dmls, 0) AS dmls,
       coalesce(s.creates, 0) AS creates,
       coalesce(s.updates, 0) AS updates,
       coalesce(s.deletes, 0) AS deletes,
       coalesce(s.txs, 0) AS txs,
       coalesce(s.truncates, 0) AS truncates
  FROM synchdb_conninfo c LEFT JOIN synchdb_stats_rows() s ON s.name = c.name;

-- How far behind each connector is, and how far its snapshot has come.
-- source_wal_lsn: the source's WAL end as last reported to the stream (it
-- sends it with every change and keepalive, at least every 10 s);
-- applied_lsn: the end of the last source transaction committed here;
-- confirmed_lsn: what the source was last told it may forget. lag_bytes: WAL
-- the source has that the connector has not confirmed (0 when idle: it
-- confirms up to the source's end once everything sent was applied);
-- lag_seconds: while behind, the age of the newest source commit applied.
-- Snapshot: tables and rows copied so far, against the source's estimate, and
-- an ETA at the rate so far (NULL when none is running or it cannot tell).
CREATE VIEW synchdb_stat_view AS
SELECT c.name,
       CASE WHEN s.src_wal_lsn > 0 THEN '0/0'::pg_lsn + s.src_wal_lsn END AS source_wal_lsn,
       CASE WHEN s.applied_lsn > 0 THEN '0/0'::pg_lsn + s.applied_lsn END AS applied_lsn,
       CASE WHEN s.confirmed_lsn > 0 THEN '0/0'::pg_lsn + s.confirmed_lsn END AS confirmed_lsn,
       CASE WHEN s.src_wal_lsn > 0 AND s.confirmed_lsn > 0
            THEN greatest(s.src_wal_lsn - s.confirmed_lsn, 0) END AS lag_bytes,
       CASE WHEN s.src_wal_lsn > 0 AND s.confirmed_lsn > 0
            THEN CASE WHEN s.src_wal_lsn <= s.confirmed_lsn OR s.last_src_ts = 0 THEN 0
                      ELSE greatest(extract(epoch FROM clock_timestamp()) - s.last_src_ts / 1000.0, 0)
                 END::numeric(12, 3) END AS lag_seconds,
       coalesce(s.snap_tables_done, 0) AS snapshot_tables_done,
       coalesce(s.snap_tables, 0) AS snapshot_tables,
       coalesce(s.snap_rows, 0) AS snapshot_rows,
       coalesce(s.snap_rows_est, 0) AS snapshot_rows_estimated,
       coalesce(s.snap_bytes, 0) AS snapshot_bytes,
       CASE WHEN s.snap_begin_ts > 0 AND s.snap_end_ts = 0 AND s.snap_rows > 0
                 AND s.snap_rows_est > s.snap_rows
            THEN ((s.snap_rows_est - s.snap_rows)
                  * (extract(epoch FROM clock_timestamp()) - s.snap_begin_ts / 1000.0)
                  / s.snap_rows)::numeric(12, 1) END AS snapshot_eta_seconds
  FROM synchdb_conninfo c LEFT JOIN synchdb_stats_rows() s ON s.name = c.name;

-- Conflicts in applying changes, by kind, with PostgreSQL 18's names (as its
-- pg_stat_subscription_stats): a row that is there already for an INSERT
-- (insert_exists) or for the new values of an UPDATE (update_exists), on more
-- than one unique index at once (multiple_unique_conflicts), a row that is not
-- there for an UPDATE or DELETE (update_missing, delete_missing). Beside
-- SynchDB's views, which stay as they are; reset by synchdb_reset_stats.
CREATE VIEW synchdb_conflict_stats AS
SELECT c.name,
       coalesce(s.confl_insert_exists, 0) AS confl_insert_exists,
       coalesce(s.confl_update_exists, 0) AS confl_update_exists,
       coalesce(s.confl_update_missing, 0) AS confl_update_missing,
       coalesce(s.confl_delete_missing, 0) AS confl_delete_missing,
       coalesce(s.confl_multiple_unique_conflicts, 0) AS confl_multiple_unique_conflicts
  FROM synchdb_conninfo c LEFT JOIN synchdb_stats_rows() s ON s.name = c.name;

-- ------------------------------------------------------------ SSL to the source

-- A certificate or key file given to synchdb_add_extra_conninfo: an absolute path to
-- a regular file that the server can read, holding the PEM block expected. Returns
-- the path, or NULL when none is given (NULL, '' or 'null'). Never shows the contents.
CREATE FUNCTION synchdb_check_ssl_file(what text, path text, is_key bool) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    p text := btrim(coalesce(path, ''));
    st record;
    body bytea;
BEGIN
    IF p = '' OR lower(p) = 'null' THEN
        RETURN NULL;
    END IF;
    IF left(p, 1) <> '/' THEN
        RAISE EXCEPTION '% file "%" is not an absolute path', what, p
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Give the full path of the file on this server, where synchdb runs.';
    END IF;
    BEGIN
        SELECT * INTO st FROM pg_stat_file(p, true);
        IF st.size IS NOT NULL AND NOT st.isdir THEN
            body := pg_read_binary_file(p, 0, 1048576, true);
        END IF;
    EXCEPTION WHEN OTHERS THEN
        RAISE EXCEPTION '% file "%" cannot be read: %', what, p, SQLERRM
            USING ERRCODE = SQLSTATE,
                  HINT = 'The file must be readable by the operating system user the server runs as; '
                         'checking it needs superuser or the pg_read_server_files role.';
    END;
    IF st.size IS NULL THEN
        RAISE EXCEPTION '% file "%" does not exist', what, p
            USING ERRCODE = 'undefined_file',
                  HINT = 'The file must exist on this server, where synchdb runs.';
    END IF;
    IF st.isdir THEN
        RAISE EXCEPTION '% file "%" is a directory', what, p
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF is_key THEN
        IF position(convert_to('-----BEGIN ENCRYPTED PRIVATE KEY-----', 'UTF8') IN body) > 0
           OR position(convert_to('Proc-Type: 4,ENCRYPTED', 'UTF8') IN body) > 0 THEN
            RAISE EXCEPTION '% file "%" holds an encrypted private key', what, p
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Only unencrypted keys are supported: decrypt it with openssl pkey -in <file> -out <new file> '
                             'and make the new file readable by the server''s user only (chmod 600).';
        END IF;
        IF position(convert_to('PRIVATE KEY-----', 'UTF8') IN body) = 0 THEN
            RAISE EXCEPTION '% file "%" does not contain a PEM private key', what, p
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Expected "-----BEGIN PRIVATE KEY-----", "-----BEGIN RSA PRIVATE KEY-----" or '
                             '"-----BEGIN EC PRIVATE KEY-----"; without ssl_key, the key is read from the ssl_cert file.';
        END IF;
    ELSIF position(convert_to('-----BEGIN CERTIFICATE-----', 'UTF8') IN body) = 0 THEN
        RAISE EXCEPTION '% file "%" does not contain a PEM certificate', what, p
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Expected "-----BEGIN CERTIFICATE-----"; convert a DER file with '
                         'openssl x509 -inform der -in <file> -out <new file>.';
    END IF;
    RETURN p;
END $$;

-- SSL of a connector's connections to its source (the replication connection and the
-- SQL ones), as libpq's sslmode: disable, prefer (the default), require, verify-ca,
-- verify-full. ssl_rootcert: PEM file of the CA certificate(s) the server's
-- certificate must chain to (needed by verify-ca and verify-full; with prefer or
-- require it makes them check the chain, as libpq). ssl_cert / ssl_key: client
-- certificate and its unencrypted key (PEM) for cert authentication; ssl_key defaults
-- to ssl_cert (one file holding both). Stored in synchdb_conninfo.data as ssl_mode,
-- ssl_rootcert, ssl_cert, ssl_key; used from the connector's next start.
CREATE FUNCTION synchdb_add_extra_conninfo(name text, ssl_mode text, ssl_rootcert text DEFAULT NULL,
                                           ssl_cert text DEFAULT NULL, ssl_key text DEFAULT NULL)
RETURNS int LANGUAGE plpgsql AS $$
DECLARE
    m text := lower(btrim(coalesce(ssl_mode, '')));
    root text;
    cert text;
    keyfile text;
BEGIN
    PERFORM synchdb_check_connector(name);
    -- SynchDB's names of the modes are accepted too
    m := CASE m WHEN 'disabled' THEN 'disable' WHEN 'preferred' THEN 'prefer'
                WHEN 'required' THEN 'require' WHEN 'verify_ca' THEN 'verify-ca'
                WHEN 'verify_full' THEN 'verify-full' WHEN 'verify_identity' THEN 'verify-full'
                ELSE m END;
    IF m NOT IN ('disable', 'prefer', 'require', 'verify-ca', 'verify-full') THEN
        RAISE EXCEPTION '%', CASE WHEN ssl_mode IS NULL THEN 'ssl_mode must not be NULL'
                                  ELSE format('unknown ssl_mode "%s"', ssl_mode) END
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Valid modes are: disable, prefer, require, verify-ca, verify-full '
                         '(SynchDB''s disabled, preferred, required, verify_ca and verify_identity are accepted too).';
    END IF;
    IF btrim(lower(coalesce(ssl_rootcert, 'null') || coalesce(ssl_cert, 'null') || coalesce(ssl_key, 'null')))
       <> 'nullnullnull' THEN
        PERFORM synchdb_require_superuser('certificate files (they are read from this server''s file system)');
    END IF;
    root := synchdb_check_ssl_file('ssl_rootcert', ssl_rootcert, false);
    cert := synchdb_check_ssl_file('ssl_cert', ssl_cert, false);
    keyfile := synchdb_check_ssl_file('ssl_key', ssl_key, true);
    IF keyfile IS NOT NULL AND cert IS NULL THEN
        RAISE EXCEPTION 'ssl_key is given without ssl_cert'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Give the client certificate file as ssl_cert too.';
    END IF;
    IF cert IS NOT NULL AND keyfile IS NULL THEN
        keyfile := synchdb_check_ssl_file('ssl_cert', cert, true);
    END IF;
    IF m IN ('verify-ca', 'verify-full') AND root IS NULL THEN
        RAISE EXCEPTION 'ssl_mode "%" needs ssl_rootcert', m
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Give the PEM file of the CA certificate(s) that signed the source server''s certificate.';
    END IF;
    IF m = 'disable' AND (root IS NOT NULL OR cert IS NOT NULL) THEN
        RAISE EXCEPTION 'ssl_mode "disable" uses no certificate files'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Leave ssl_rootcert, ssl_cert and ssl_key NULL, or choose another ssl_mode.';
    END IF;
    UPDATE synchdb_conninfo c
       SET data = (c.data - ARRAY['ssl_mode', 'ssl_rootcert', 'ssl_cert', 'ssl_key'])
                  || jsonb_strip_nulls(jsonb_build_object('ssl_mode', m, 'ssl_rootcert', root,
                                                          'ssl_cert', cert, 'ssl_key', keyfile))
     WHERE c.name = synchdb_add_extra_conninfo.name;
    RETURN 0;
END $$;

-- SynchDB's form, whose JVM key and trust stores become PEM files here: ssl_truststore
-- is the CA certificate(s) file (ssl_rootcert), ssl_keystore one file holding the
-- client certificate and its unencrypted key (ssl_cert = ssl_key). The passwords must
-- be NULL or 'null'.
CREATE FUNCTION synchdb_add_extra_conninfo(name text, ssl_mode text, ssl_keystore text,
                                           ssl_keystore_pass text, ssl_truststore text,
                                           ssl_truststore_pass text)
RETURNS int LANGUAGE plpgsql AS $$
BEGIN
    PERFORM synchdb_check_connector(name);
    IF lower(btrim(coalesce(ssl_keystore_pass, ''))) NOT IN ('', 'null')
       OR lower(btrim(coalesce(ssl_truststore_pass, ''))) NOT IN ('', 'null') THEN
        RAISE EXCEPTION 'password-protected key and trust stores are not supported'
            USING ERRCODE = 'feature_not_supported',
                  HINT = 'synchdb reads PEM files: give the CA certificate file as ssl_truststore and one file '
                         'holding the client certificate and its unencrypted key as ssl_keystore, with NULL '
                         'passwords; or call synchdb_add_extra_conninfo(name, ssl_mode, ssl_rootcert, ssl_cert, ssl_key).';
    END IF;
    RETURN synchdb_add_extra_conninfo(name, ssl_mode, ssl_truststore, ssl_keystore, NULL::text);
END $$;

-- Removes what synchdb_add_extra_conninfo set: the connector goes back to ssl_mode
-- prefer without certificate files, from its next start.
CREATE FUNCTION synchdb_del_extra_conninfo(name text)
RETURNS int LANGUAGE plpgsql AS $$
BEGIN
    PERFORM synchdb_check_connector(name);
    UPDATE synchdb_conninfo c
       SET data = c.data - ARRAY['ssl_mode', 'ssl_rootcert', 'ssl_cert', 'ssl_key']
     WHERE c.name = synchdb_del_extra_conninfo.name;
    RETURN 0;
END $$;

-- ------------------------------------------------------------ object mapping
-- Rules: table (srcobj schema.table -> name | schema.name), column
-- (schema.table.column -> new name), datatype (schema.table.column or type|serial
-- -> type|size), transform (schema.table.column -> SQL expression with %d).
-- srcobj is stored without the source database prefix.
CREATE TABLE synchdb_objmap (
    name text NOT NULL REFERENCES synchdb_conninfo (name) ON DELETE CASCADE,
    objtype text NOT NULL,
    enabled bool NOT NULL DEFAULT true,
    srcobj text NOT NULL,
    dstobj text NOT NULL,
    PRIMARY KEY (name, objtype, srcobj)
);

-- One row per replicated column, by destination relation and attribute number,
-- so renames on the destination show in synchdb_att_view by themselves.
CREATE TABLE synchdb_attribute (
    name text NOT NULL REFERENCES synchdb_conninfo (name) ON DELETE CASCADE,
    type text NOT NULL,
    attrelid oid NOT NULL,
    attnum smallint NOT NULL,
    ext_tbname text NOT NULL,
    ext_attname text NOT NULL,
    ext_atttypename text NOT NULL,
    ext_isserial bool NOT NULL DEFAULT false,
    -- the type the default translation gives (what a column returns to when its
    -- datatype rule is disabled and the rules are reloaded)
    ext_deftype text,
    -- the source table's oid: how CDC knows the table again after the source
    -- renames it or moves it to another schema
    ext_relid oid NOT NULL DEFAULT 0,
    PRIMARY KEY (name, type, attrelid, attnum)
);

CREATE VIEW synchdb_att_view AS
SELECT s.name, s.type, s.attnum, s.ext_tbname,
       n.nspname || '.' || c.relname AS pg_tbname,
       s.ext_attname, a.attname::text AS pg_attname, s.ext_atttypename,
       format_type(a.atttypid, a.atttypmod) AS pg_atttypename,
       (SELECT o.dstobj FROM synchdb_objmap o
         WHERE o.name = s.name AND o.objtype = 'transform' AND o.enabled
           AND o.srcobj = s.ext_tbname || '.' || s.ext_attname) AS transform
  FROM synchdb_attribute s
  LEFT JOIN pg_attribute a ON a.attrelid = s.attrelid AND a.attnum = s.attnum
  LEFT JOIN pg_class c ON c.oid = s.attrelid
  LEFT JOIN pg_namespace n ON n.oid = c.relnamespace
 ORDER BY s.name, s.ext_tbname, s.attnum;

-- What a connector built on the destination besides tables and columns: types,
-- sequences, defaults, indexes, constraints, foreign keys; and what it could not.
CREATE TABLE synchdb_objects (
    name text NOT NULL REFERENCES synchdb_conninfo (name) ON DELETE CASCADE,
    kind text NOT NULL,
    srcobj text NOT NULL,
    dstobj text NOT NULL,
    state text NOT NULL,
    err text,
    PRIMARY KEY (name, kind, dstobj)
);
REVOKE ALL ON synchdb_objects FROM PUBLIC;

CREATE VIEW synchdb_object_view AS
SELECT o.name, o.kind, o.srcobj AS source, o.dstobj AS destination, o.state, o.err AS error
  FROM synchdb_objects o
 ORDER BY o.name, o.kind, o.dstobj;

-- The last values of sequences on the connector's source, as a JSON object
-- keyed by the names given (one per line).
CREATE FUNCTION synchdb_source_sequences(name text, data text, seqs text) RETURNS text
    AS 'MODULE_PATHNAME', 'synchdb_source_sequences_sql' LANGUAGE C STRICT VOLATILE;

-- Brings the connector's sequences on the destination to their values on the
-- source, never moving one backwards; returns each with its value now. A running
-- connector does this every synchdb.sequence_sync_interval and when it stops.
-- Moves connector name's sequences forward (never back) to the values in vals
-- (the source's last values, by source sequence name) and lists them.
CREATE FUNCTION synchdb_set_sequences(name text, vals jsonb)
RETURNS TABLE (sequence text, value bigint) LANGUAGE plpgsql AS $$
DECLARE
    d jsonb := synchdb_check_connector(name);
    r record;
    v bigint;
BEGIN
    FOR r IN SELECT o.srcobj, o.dstobj FROM synchdb_objects o
              WHERE o.name = synchdb_set_sequences.name AND o.kind = 'sequence' AND o.state = 'created'
              ORDER BY o.dstobj LOOP
        CONTINUE WHEN to_regclass(r.dstobj) IS NULL;
        v := (vals->>r.srcobj)::bigint;
        IF v IS NOT NULL THEN
            PERFORM setval(s.seqrelid, v, true)
               FROM pg_sequence s
              WHERE s.seqrelid = to_regclass(r.dstobj)
                AND (pg_sequence_last_value(s.seqrelid) IS NULL
                     OR (s.seqincrement > 0 AND pg_sequence_last_value(s.seqrelid) < v)
                     OR (s.seqincrement < 0 AND pg_sequence_last_value(s.seqrelid) > v));
        END IF;
        sequence := r.dstobj;
        value := pg_sequence_last_value(to_regclass(r.dstobj));
        RETURN NEXT;
    END LOOP;
END $$;

CREATE FUNCTION synchdb_sync_sequences(name text)
RETURNS TABLE (sequence text, value bigint) LANGUAGE plpgsql AS $$
DECLARE
    d jsonb := synchdb_check_connector(name);
    vals jsonb;
BEGIN
    SELECT synchdb_source_sequences(synchdb_sync_sequences.name, d::text, string_agg(o.srcobj, E'\n'))::jsonb
      INTO vals
      FROM synchdb_objects o
     WHERE o.name = synchdb_sync_sequences.name AND o.kind = 'sequence' AND o.state = 'created';
    IF vals IS NULL THEN
        RETURN;
    END IF;
    RETURN QUERY SELECT * FROM synchdb_set_sequences(name, vals);
END $$;

CREATE FUNCTION synchdb_compile_transform(expr text, as_text text, typed text) RETURNS text
    AS 'MODULE_PATHNAME', 'synchdb_compile_transform_sql' LANGUAGE C STRICT IMMUTABLE;

-- This server's spelling of a type name (int4, integer and int are one type), or
-- the name itself lowercased when the type is unknown here.
CREATE FUNCTION synchdb_canonical_type(t text) RETURNS text
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN coalesce(format_type(to_regtype(t), NULL), lower(btrim(t)));
EXCEPTION WHEN others THEN
    RETURN lower(btrim(t));
END $$;

-- The default type translation: a source type (with its length, scale and
-- precision; -1 or 0 when it has none) as the destination declares it. Domains
-- become their base type, enums and types this server lacks become text.
CREATE FUNCTION synchdb_translate_datatype(connector_type name, ext_datatype name,
                                           ext_length bigint, ext_scale bigint, ext_precision bigint)
RETURNS text LANGUAGE plpgsql STABLE AS $$
DECLARE
    t oid;
    k "char";
    base text;
BEGIN
    IF connector_type IS NULL OR ext_datatype IS NULL THEN
        RAISE EXCEPTION '% must not be NULL', CASE WHEN connector_type IS NULL THEN 'connector_type' ELSE 'ext_datatype' END
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF lower(connector_type) <> 'postgres' THEN
        RAISE EXCEPTION 'connector type "%" is not supported', connector_type
            USING ERRCODE = 'feature_not_supported', HINT = 'Supported connector types: postgres.';
    END IF;
    BEGIN
        t := to_regtype(ext_datatype);
    EXCEPTION WHEN others THEN
        t := NULL;
    END;
    IF t IS NULL THEN
        RETURN 'text';
    END IF;
    SELECT typtype, CASE WHEN typtype = 'd' THEN typbasetype ELSE oid END INTO k, t
      FROM pg_type WHERE oid = t;
    IF k = 'e' THEN
        RETURN 'text';
    END IF;
    base := format_type(t, NULL);
    IF base = 'numeric' AND ext_precision > 0 THEN
        RETURN format('numeric(%s,%s)', ext_precision, greatest(ext_scale, 0));
    ELSIF base IN ('character varying', 'character', 'bit', 'bit varying') AND ext_length > 0 THEN
        RETURN format('%s(%s)', base, ext_length);
    ELSIF base IN ('timestamp without time zone', 'timestamp with time zone', 'time without time zone',
                   'time with time zone', 'interval') AND ext_scale >= 0 THEN
        RETURN regexp_replace(base, '^(\w+)', '\1(' || ext_scale || ')');
    END IF;
    RETURN base;
END $$;

-- The destination type a datatype rule asks for (type|size) for a column the
-- source declares as src_type: size 0 drops any length, -1 keeps the source's.
CREATE FUNCTION synchdb_rule_type(rule text, src_type text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
             WHEN sz = 0 THEN ty
             WHEN sz = -1 THEN ty || coalesce(substring(src_type FROM '\([0-9, ]+\)'), '')
             ELSE ty || '(' || sz || ')'
           END
      FROM (SELECT btrim(regexp_replace(rule, '\|[^|]*$', '')) AS ty,
                   CASE WHEN strpos(rule, '|') > 0
                        THEN btrim(regexp_replace(rule, '^.*\|', ''))::int ELSE 0 END AS sz) r
$$;

-- srcobj without a leading source database name, checked to have `parts` parts.
CREATE FUNCTION synchdb_objmap_srcobj(cname text, objtype text, srcobj text, parts int) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    p text[] := string_to_array(srcobj, '.');
    db text := synchdb_check_connector(cname)->>'srcdb';
BEGIN
    IF array_length(p, 1) = parts + 1 THEN
        IF lower(p[1]) <> lower(db) THEN
            RAISE EXCEPTION '% rule "%" names database "%", but connector "%" replicates database "%"',
                            objtype, srcobj, p[1], cname, db USING ERRCODE = 'invalid_parameter_value';
        END IF;
        p := p[2:];
    END IF;
    IF coalesce(array_length(p, 1), 0) <> parts OR EXISTS (SELECT 1 FROM unnest(p) x WHERE btrim(x) = '') THEN
        RAISE EXCEPTION '% rule "%" is malformed', objtype, srcobj
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = CASE parts WHEN 2 THEN 'Expected schema.table (or srcdb.schema.table).'
                         ELSE 'Expected schema.table.column (or srcdb.schema.table.column).' END;
    END IF;
    RETURN array_to_string(p, '.');
END $$;

CREATE FUNCTION synchdb_add_objmap(name text, objtype text, srcobj text, dstobj text)
RETURNS int LANGUAGE plpgsql AS $$
DECLARE
    cname text := name;
    kind text := lower(btrim(objtype));
    src text;
    dst text := btrim(dstobj);
    known bool;
    tbl text;
    col text;
    ty text;
    coltype text;
    sz text;
BEGIN
    PERFORM synchdb_check_connector(cname);
    IF objtype IS NULL THEN
        RAISE EXCEPTION 'objtype is missing'
            USING ERRCODE = 'null_value_not_allowed', HINT = 'Valid types are: table, column, datatype, transform.';
    END IF;
    IF kind NOT IN ('table', 'column', 'datatype', 'transform') THEN
        RAISE EXCEPTION 'unknown object mapping type "%"', objtype
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Valid types are: table, column, datatype, transform.';
    END IF;
    IF srcobj IS NULL OR dstobj IS NULL THEN
        RAISE EXCEPTION '% must not be NULL', CASE WHEN srcobj IS NULL THEN 'srcobj' ELSE 'dstobj' END
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF dst = '' THEN
        RAISE EXCEPTION 'srcobj and dstobj of an object mapping rule must not be empty'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- what this connector has replicated so far (empty before its first snapshot)
    known := EXISTS (SELECT 1 FROM synchdb_attribute a WHERE a.name = cname);
    IF kind = 'datatype' AND strpos(srcobj, '|') > 0 THEN
        src := btrim(srcobj);
        IF lower(btrim(split_part(src, '|', 2))) NOT IN ('true', 'false') THEN
            RAISE EXCEPTION 'datatype rule "%": after | comes true (serial columns) or false', srcobj
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
    ELSE
        src := synchdb_objmap_srcobj(cname, kind, srcobj, CASE kind WHEN 'table' THEN 2 ELSE 3 END);
        tbl := CASE kind WHEN 'table' THEN src ELSE regexp_replace(src, '\.[^.]*$', '') END;
        col := CASE kind WHEN 'table' THEN NULL ELSE regexp_replace(src, '^.*\.', '') END;
        IF known AND NOT EXISTS (SELECT 1 FROM synchdb_attribute a WHERE a.name = cname AND a.ext_tbname = tbl) THEN
            RAISE EXCEPTION 'connector "%" does not replicate source table "%"', cname, tbl
                USING ERRCODE = 'undefined_table', HINT = 'See SELECT DISTINCT ext_tbname FROM synchdb_att_view.';
        END IF;
        IF known AND col IS NOT NULL
           AND NOT EXISTS (SELECT 1 FROM synchdb_attribute a WHERE a.name = cname AND a.ext_tbname = tbl AND a.ext_attname = col) THEN
            RAISE EXCEPTION 'source table "%" has no column "%"', tbl, col
                USING ERRCODE = 'undefined_column', HINT = 'See synchdb_att_view.';
        END IF;
        SELECT v.pg_atttypename INTO coltype FROM synchdb_att_view v
         WHERE v.name = cname AND v.ext_tbname = tbl AND v.ext_attname = col;
    END IF;
    IF kind = 'table' AND (array_length(string_to_array(dst, '.'), 1) > 2 OR dst LIKE '.%' OR dst LIKE '%.') THEN
        RAISE EXCEPTION 'destination table "%" is not name or schema.name', dstobj USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF kind = 'datatype' THEN
        ty := btrim(regexp_replace(dst, '\|[^|]*$', ''));
        sz := CASE WHEN strpos(dst, '|') > 0 THEN btrim(regexp_replace(dst, '^.*\|', '')) ELSE '0' END;
        IF sz !~ '^-?[0-9]+$' OR sz::int < -1 THEN
            RAISE EXCEPTION 'datatype rule "%": size "%" must be -1 (keep the source''s), 0 (none) or a length', dstobj, sz
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        BEGIN
            PERFORM synchdb_rule_type(dst, 'x')::regtype;
        EXCEPTION WHEN others THEN
            RAISE EXCEPTION 'datatype rule "%": "%" is not a type on this server (%)', dstobj, ty, SQLERRM
                USING ERRCODE = 'undefined_object';
        END;
    END IF;
    IF kind = 'transform' THEN
        -- the value is a parameter: check the expression with a NULL one, in the
        -- column's type when it is known already
        BEGIN
            EXECUTE format('SELECT (%s)', synchdb_compile_transform(dst, '$1', '$1::' || coalesce(coltype, 'text')))
                USING NULL::text;
        EXCEPTION WHEN invalid_parameter_value THEN
            RAISE;
        WHEN others THEN
            IF coltype IS NOT NULL OR SQLSTATE LIKE '42%' AND SQLSTATE NOT IN ('42883', '42804') THEN
                RAISE EXCEPTION 'transform "%" is not a valid expression: %', dstobj, SQLERRM
                    USING ERRCODE = 'invalid_parameter_value',
                          HINT = 'Write an SQL expression in which %d stands for the incoming value, e.g. ''>>'' || ''%d'' or %d + 500.';
            END IF;
        END;
    END IF;
    INSERT INTO synchdb_objmap AS o (name, objtype, enabled, srcobj, dstobj)
    VALUES (cname, kind, true, src, dst)
    ON CONFLICT ON CONSTRAINT synchdb_objmap_pkey DO UPDATE SET dstobj = EXCLUDED.dstobj, enabled = true;
    RETURN 0;
END $$;

CREATE FUNCTION synchdb_del_objmap(name text, objtype text, srcobj text)
RETURNS int LANGUAGE plpgsql AS $$
DECLARE
    cname text := name;
    kind text := lower(btrim(objtype));
    src text := btrim(srcobj);
BEGIN
    PERFORM synchdb_check_connector(cname);
    IF objtype IS NULL OR srcobj IS NULL THEN
        RAISE EXCEPTION '% is missing', CASE WHEN objtype IS NULL THEN 'objtype' ELSE 'srcobj' END
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF NOT (kind = 'datatype' AND strpos(src, '|') > 0) AND kind IN ('table', 'column', 'datatype', 'transform') THEN
        src := synchdb_objmap_srcobj(cname, kind, src, CASE kind WHEN 'table' THEN 2 ELSE 3 END);
    END IF;
    UPDATE synchdb_objmap o SET enabled = false
     WHERE o.name = cname AND o.objtype = kind AND o.srcobj = src;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'connector "%" has no % rule for "%"', cname, kind, srcobj
            USING ERRCODE = 'undefined_object', HINT = 'See SELECT * FROM synchdb_objmap.';
    END IF;
    RETURN 0;
END $$;

-- Brings the destination in line with the rules: renames tables and columns and
-- changes column types of what the connector has replicated (synchdb_attribute).
CREATE FUNCTION synchdb_apply_objmap(cname text) RETURNS int
LANGUAGE plpgsql AS $$
DECLARE
    d jsonb := synchdb_check_connector(cname);
    r record;
    want_schema text;
    want_table text;
    rule text;
    want text;
    colname text;
    n int := 0;
BEGIN
    FOR r IN SELECT DISTINCT a.ext_tbname, a.attrelid, c.relname::text AS relname, ns.nspname::text AS nspname
               FROM synchdb_attribute a JOIN pg_class c ON c.oid = a.attrelid
               JOIN pg_namespace ns ON ns.oid = c.relnamespace
              WHERE a.name = cname LOOP
        SELECT o.dstobj INTO rule FROM synchdb_objmap o
         WHERE o.name = cname AND o.objtype = 'table' AND o.enabled AND o.srcobj = r.ext_tbname;
        IF rule IS NULL THEN
            want_schema := lower(d->>'srcdb');
            want_table := split_part(r.ext_tbname, '.', 2);
        ELSIF strpos(rule, '.') > 0 THEN
            want_schema := split_part(rule, '.', 1);
            want_table := split_part(rule, '.', 2);
        ELSE
            want_schema := 'public';
            want_table := rule;
        END IF;
        IF want_schema <> r.nspname THEN
            PERFORM pg_advisory_xact_lock(hashtext('synchdb create schema'), hashtext(want_schema));
            IF NOT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = want_schema) THEN
                EXECUTE format('CREATE SCHEMA %I', want_schema);
            END IF;
            EXECUTE format('ALTER TABLE %I.%I SET SCHEMA %I', r.nspname, r.relname, want_schema);
            n := n + 1;
        END IF;
        IF want_table <> r.relname THEN
            EXECUTE format('ALTER TABLE %I.%I RENAME TO %I', want_schema, r.relname, want_table);
            n := n + 1;
        END IF;
    END LOOP;
    FOR r IN SELECT a.ext_tbname, a.ext_attname, a.ext_atttypename, a.ext_isserial, a.ext_deftype, a.attrelid,
                    pa.attname::text AS attname, format_type(pa.atttypid, pa.atttypmod) AS curtype
               FROM synchdb_attribute a
               JOIN pg_attribute pa ON pa.attrelid = a.attrelid AND pa.attnum = a.attnum AND NOT pa.attisdropped
              WHERE a.name = cname LOOP
        want := coalesce((SELECT o.dstobj FROM synchdb_objmap o
                           WHERE o.name = cname AND o.objtype = 'column' AND o.enabled
                             AND o.srcobj = r.ext_tbname || '.' || r.ext_attname), r.ext_attname);
        IF want <> r.attname THEN
            EXECUTE format('ALTER TABLE %s RENAME COLUMN %I TO %I', r.attrelid::regclass, r.attname, want);
            n := n + 1;
        END IF;
        colname := want;
        rule := coalesce(
            (SELECT o.dstobj FROM synchdb_objmap o
              WHERE o.name = cname AND o.objtype = 'datatype' AND o.enabled
                AND o.srcobj = r.ext_tbname || '.' || r.ext_attname),
            (SELECT o.dstobj FROM synchdb_objmap o
              WHERE o.name = cname AND o.objtype = 'datatype' AND o.enabled AND strpos(o.srcobj, '|') > 0
                AND synchdb_canonical_type(split_part(o.srcobj, '|', 1)) = synchdb_canonical_type(r.ext_atttypename)
                AND lower(btrim(split_part(o.srcobj, '|', 2)))::bool = r.ext_isserial
              LIMIT 1));
        -- no rule (any more): the column goes back to the default translation
        want := CASE WHEN rule IS NOT NULL THEN synchdb_rule_type(rule, r.ext_atttypename) ELSE r.ext_deftype END;
        IF want IS NOT NULL THEN
            IF want IS DISTINCT FROM r.curtype
               AND synchdb_canonical_type(want) || coalesce(substring(want FROM '\([0-9, ]+\)'), '')
                   IS DISTINCT FROM r.curtype THEN
                BEGIN
                    EXECUTE format('ALTER TABLE %s ALTER COLUMN %I TYPE %s USING %I::%s',
                                   r.attrelid::regclass, colname, want, colname, want);
                EXCEPTION WHEN others THEN
                    RAISE EXCEPTION 'cannot change column "%" of % (source %.%) to type %: %',
                                    colname, r.attrelid::regclass, r.ext_tbname, r.ext_attname, want, SQLERRM
                        USING ERRCODE = SQLSTATE,
                              HINT = CASE WHEN rule IS NULL
                                          THEN 'The column goes back to its default type as no datatype rule names it; add one (synchdb_add_objmap), then reload again.'
                                          ELSE 'Change or disable the datatype rule (synchdb_del_objmap), then reload again.' END;
                END;
                n := n + 1;
            END IF;
        END IF;
    END LOOP;
    RETURN n;
END $$;

-- Applies the current rules: a running connector is stopped between source
-- transactions, the destination brought in line (in this transaction: an error,
-- e.g. a type PostgreSQL cannot cast to, is raised here and changes nothing), and
-- the connector started again in its mode when this transaction ends; it resumes
-- from its position with the new rules, so no change is lost. A paused
-- (schemasync) connector stays paused.
CREATE FUNCTION synchdb_reload_objmap(name text)
RETURNS int LANGUAGE plpgsql AS $$
DECLARE
    cname text := name;
    d jsonb := synchdb_check_connector(cname);
    running bool := EXISTS (SELECT 1 FROM synchdb_state_rows() s WHERE s.name = cname AND s.pid > 0);
    mode text := coalesce(nullif(d->>'last_mode', ''), 'initial');
BEGIN
    IF running THEN
        PERFORM synchdb_terminate(cname, 30000);
        -- The worker starts again when this transaction ends (an xid makes
        -- sure it waits for it) and reads what it committed, or, rolled back
        -- (the changes below raised an error), runs as before. One started at
        -- once would not see the renames below, nor rules added earlier in this
        -- transaction: a change of a renamed table arriving meanwhile would make
        -- it create that table again under one name or the other.
        PERFORM pg_current_xact_id();
        PERFORM synchdb_launch(cname, mode, at_end => true);
    END IF;
    PERFORM synchdb_apply_objmap(cname);
    RETURN 0;
END $$;

REVOKE ALL ON synchdb_objmap, synchdb_attribute FROM PUBLIC;

-- ------------------------------------------------------------ privileges
-- Nothing of synchdb is PUBLIC's: its functions show every connector's name,
-- pid, positions and errors, start and stop workers, and hold source
-- credentials. Every function of the extension (those above, whichever they
-- are) is revoked from PUBLIC here; superusers manage connectors. The tables
-- were revoked where they are created, and views grant nothing by default.
DO $$
DECLARE f regprocedure;
BEGIN
    FOR f IN SELECT d.objid::regprocedure
               FROM pg_catalog.pg_depend d
               JOIN pg_catalog.pg_extension e ON e.oid = d.refobjid
              WHERE d.classid = 'pg_catalog.pg_proc'::regclass
                AND d.refclassid = 'pg_catalog.pg_extension'::regclass
                AND d.deptype = 'e' AND e.extname = 'synchdb'
    LOOP
        EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', f);
    END LOOP;
END $$;

-- Connectors for roles that are not superusers, as PostgreSQL 16's
-- pg_create_subscription: members of synchdb_admin may create connectors and
-- use their own (synchdb_check_connector), with PostgreSQL's safeguards for
-- subscriptions of non-superusers: a password that the source must ask for.
-- Their connectors write only into destination schemas and tables their owner
-- owns, and what they create there is the owner's (checked by the worker).
-- The user-facing functions run as the extension's owner (SECURITY DEFINER,
-- search_path pinned) because they start workers and move replication origins.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'synchdb_admin') THEN
        CREATE ROLE synchdb_admin NOLOGIN;
    END IF;
END $$;
DO $$
DECLARE f regprocedure;
BEGIN
    FOR f IN SELECT unnest(ARRAY[
        'synchdb_add_conninfo(text,text,int,text,text,text,text,text,text,text)',
        'synchdb_start_engine_bgw(text,text)', 'synchdb_start_engine_bgw(text)',
        'synchdb_stop_engine_bgw(text)', 'synchdb_del_conninfo(text)',
        'synchdb_pause_engine(text)', 'synchdb_resume_engine(text)',
        'synchdb_set_offset(text,text)', 'synchdb_restart_connector(text,text)',
        'synchdb_reset_stats(text)', 'synchdb_add_extra_conninfo(text,text,text,text,text)',
        'synchdb_add_extra_conninfo(text,text,text,text,text,text)',
        'synchdb_del_extra_conninfo(text)', 'synchdb_set_passfile(text,text)',
        'synchdb_sync_sequences(text)', 'synchdb_set_sequences(text,jsonb)',
        'synchdb_add_objmap(text,text,text,text)',
        'synchdb_del_objmap(text,text,text)', 'synchdb_reload_objmap(text)',
        'synchdb_translate_datatype(name,name,bigint,bigint,bigint)']::regprocedure[])
    LOOP
        EXECUTE format('ALTER FUNCTION %s SECURITY DEFINER SET search_path = %I, pg_temp', f, '@extschema@');
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO synchdb_admin', f);
    END LOOP;
END $$;
-- what the views call runs as the caller
GRANT EXECUTE ON FUNCTION synchdb_state_rows(), synchdb_stats_rows(), synchdb_origin_name(text),
    synchdb_origin_lsn(text),
    synchdb_caller(), synchdb_caller_is_superuser() TO synchdb_admin;
GRANT SELECT ON synchdb_state_view, synchdb_genstats, synchdb_snapstats, synchdb_cdcstats, synchdb_conflict_stats,
    synchdb_stat_view,
    synchdb_att_view, synchdb_object_view TO synchdb_admin;
