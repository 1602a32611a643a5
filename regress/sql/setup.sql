-- Shared by the tests that run in contrib_regression: the extension and a bounded
-- polling wait (never a fixed sleep).
CREATE EXTENSION synchdb;
CREATE FUNCTION synchdb_test_wait(q text, secs int DEFAULT 90) RETURNS bool
LANGUAGE plpgsql AS $$
DECLARE
    ok bool;
    deadline timestamptz := clock_timestamp() + make_interval(secs => secs);
BEGIN
    LOOP
        -- each attempt runs in a subtransaction that is rolled back (ok, a
        -- variable, keeps its value): the locks the query took go with it, so
        -- the wait never holds off a connector's ALTER TABLE on what it reads
        BEGIN
            EXECUTE q INTO ok;
            RAISE EXCEPTION USING ERRCODE = 'SDBTW';
        EXCEPTION
            WHEN SQLSTATE 'SDBTW' THEN NULL;
            -- what the query reads may not be there yet (a table, or a column a
            -- source ALTER TABLE adds, still on its way)
            WHEN undefined_table OR invalid_schema_name OR undefined_column THEN
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
-- one line per table of schema s: row count and md5 of the sorted rows (tests
-- copy it into their source database with pg_get_functiondef)
CREATE FUNCTION synchdb_test_sums(s text, tabs text[]) RETURNS text LANGUAGE plpgsql AS $$
DECLARE t text; n bigint; h text; out text := '';
BEGIN
    FOREACH t IN ARRAY tabs LOOP
        EXECUTE format('SELECT count(*), md5(coalesce(string_agg(x::text, E''\n'' ORDER BY x::text COLLATE "C"), '''')) FROM %I.%I x', s, t)
            INTO n, h;
        out := out || format('%s %s %s', t, n, h) || E'\n';
    END LOOP;
    RETURN out;
END $$;
SELECT count(*) FROM synchdb_conninfo;
SELECT * FROM synchdb_state_view;
