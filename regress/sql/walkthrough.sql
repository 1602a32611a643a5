-- The reference walkthrough (Postgres -> Postgres), statements as written; only the
-- port and credentials differ. Source: schema public of database postgres; the
-- destination is schema postgres of the very same database.
\getenv port SYNCHDB_PORT
\getenv srcuser SYNCHDB_SRC_USER
\getenv srcpwd SYNCHDB_SRC_PASSWORD
\c postgres
CREATE TABLE public.orders (
    order_number int PRIMARY KEY,
    order_date date NOT NULL DEFAULT '2024-01-01',
    purchaser int,
    quantity int NOT NULL,
    product_id int,
    note varchar(40) DEFAULT 'none',
    price numeric(10,2) DEFAULT 0,
    created timestamptz DEFAULT now()
);
INSERT INTO public.orders
SELECT g, date '2024-01-01' + g, g % 7, g * 2, g % 3, 'n' || g, g / 4.0, '2024-01-01 00:00+00'
FROM generate_series(1, 500) g;

CREATE EXTENSION synchdb;
CREATE FUNCTION synchdb_test_wait(q text, secs int DEFAULT 90) RETURNS bool
LANGUAGE plpgsql AS $$
DECLARE
    ok bool;
    deadline timestamptz := clock_timestamp() + make_interval(secs => secs);
BEGIN
    LOOP
        BEGIN
            EXECUTE q INTO ok;
        EXCEPTION WHEN undefined_table OR invalid_schema_name THEN
            ok := false;
        END;
        IF ok THEN
            RETURN true;
        END IF;
        IF clock_timestamp() > deadline THEN
            RAISE EXCEPTION 'timed out after % s waiting for: %', secs, q;
        END IF;
        PERFORM pg_sleep(0.05);
    END LOOP;
END $$;

SELECT
  synchdb_add_conninfo(
    'pgconn', '127.0.0.1', :port,
    :'srcuser', :'srcpwd', 'postgres', 'public',
    'null', 'null', 'postgres');
-- the password is stored encrypted, never in clear text
SELECT data->>'pwd' LIKE 'sdbenc1:%' AS encrypted,
       position(:'srcpwd' IN data::text) = 0 AS no_clear_text
FROM synchdb_conninfo WHERE name = 'pgconn';

SELECT synchdb_start_engine_bgw('pgconn', 'initial');
SELECT synchdb_test_wait($$SELECT count(*) = 500 FROM postgres.orders$$);

-- first run: stage initial snapshot until a change has been processed
select name, connector_type, pid > 0 AS has_pid, stage, state, err, last_dbz_offset
from synchdb_state_view where name='pgconn';

set search_path=postgres;
\d
reset search_path;
\d postgres.orders
-- the extension's own tables are never replicated
SELECT count(*) FROM pg_tables WHERE schemaname = 'postgres' AND tablename LIKE 'synchdb%';
SELECT count(*), sum(price), min(order_date), max(note) FROM postgres.orders;

-- a change on the source: CDC stage, Debezium-style offset with real LSN and txId
INSERT INTO public.orders (order_number, purchaser, quantity, product_id)
VALUES (501, 3, 10, 2) RETURNING pg_current_xact_id()::text AS xid \gset
SELECT synchdb_test_wait($$SELECT stage = 'change data capture' FROM synchdb_state_view WHERE name = 'pgconn'$$);
SELECT stage, state, err,
       last_dbz_offset ~ '^\{"lsn_proc":[0-9]+,"messageType":"INSERT","lsn_commit":[0-9]+,"lsn":[0-9]+,"txId":[0-9]+,"ts_usec":[0-9]+\}$' AS offset_form,
       (last_dbz_offset::jsonb->>'txId') = :'xid' AS txid_is_source_xid,
       (last_dbz_offset::jsonb->>'lsn_commit')::numeric >= (last_dbz_offset::jsonb->>'lsn')::numeric AS commit_after_change,
       abs((last_dbz_offset::jsonb->>'ts_usec')::numeric / 1e6 - extract(epoch FROM now())) < 3600 AS ts_is_recent
FROM synchdb_state_view WHERE name = 'pgconn';
SELECT order_number, order_date, purchaser, quantity, note, price FROM postgres.orders WHERE order_number = 501;

-- stop; changes while stopped; start again in initial: no new snapshot, nothing
-- lost, nothing applied twice
SELECT 'postgres.orders'::regclass::oid AS table_oid \gset
SELECT synchdb_stop_engine_bgw('pgconn');
SELECT name, pid, state, err FROM synchdb_state_view WHERE name = 'pgconn';
INSERT INTO public.orders (order_number, quantity) VALUES (502, 1), (503, 1);
UPDATE public.orders SET quantity = quantity + 1000 WHERE order_number <= 10;
DELETE FROM public.orders WHERE order_number BETWEEN 11 AND 20;
SELECT synchdb_start_engine_bgw('pgconn');
SELECT synchdb_test_wait($$SELECT count(*) = 493 AND sum(quantity) = (SELECT sum(quantity) FROM public.orders) FROM postgres.orders$$);
SELECT stage, state, err FROM synchdb_state_view WHERE name = 'pgconn';
SELECT 'postgres.orders'::regclass::oid = :table_oid AS same_table_no_resnapshot;
SELECT count(*) AS rows, count(DISTINCT order_number) AS distinct_keys FROM postgres.orders;

-- removing the connector drops its slot and publication on the source
SELECT synchdb_stop_engine_bgw('pgconn');
SELECT synchdb_del_conninfo('pgconn');
SELECT count(*) AS slots FROM pg_replication_slots WHERE slot_name LIKE 'synchdb_pgconn%';
SELECT count(*) AS publications FROM pg_publication WHERE pubname LIKE 'synchdb_pgconn%';
SELECT count(*) AS origins FROM pg_replication_origin WHERE roname LIKE 'synchdb_pgconn%';
SELECT * FROM synchdb_state_view;

DROP SCHEMA postgres CASCADE;
DROP TABLE public.orders;
DROP FUNCTION synchdb_test_wait(text, int);
DROP EXTENSION synchdb;
