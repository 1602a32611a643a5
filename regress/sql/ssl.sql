-- SSL to the source (synchdb_add_extra_conninfo, libpq's sslmode) against the ssl
-- cluster of regress/run.sh: ssl=on with certificates the script made; there
-- synchdb_src may log in only over SSL, synchdb_cert only with its client certificate.
\getenv port SYNCHDB_PORT
\getenv sslport SYNCHDB_SSL_PORT
\getenv ssldir SYNCHDB_SSL_DIR
\getenv srcuser SYNCHDB_SRC_USER
\getenv srcpwd SYNCHDB_SRC_PASSWORD

\c postgres postgres 127.0.0.1 :sslport
SHOW ssl;
CREATE DATABASE sslsrc;
\c sslsrc postgres 127.0.0.1 :sslport
CREATE TABLE items (id int PRIMARY KEY, label text NOT NULL);
INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 100) g;

\c contrib_regression postgres 127.0.0.1 :port
-- errors at call time, shown without the test's directory
CREATE FUNCTION ssl_try(q text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    msg text;
    hint text;
BEGIN
    EXECUTE q;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS msg = MESSAGE_TEXT, hint = PG_EXCEPTION_HINT;
    RETURN SQLSTATE || ': ' || msg || coalesce(' HINT: ' || nullif(hint, ''), '');
END $$;
-- a worker's err, likewise
CREATE FUNCTION ssl_err(cname text, dir text, ports text[]) RETURNS text LANGUAGE sql AS $$
    SELECT replace(replace(replace(err, dir, '<dir>'), ports[1], '<port>'), ports[2], '<port>')
      FROM synchdb_state_view WHERE name = cname
$$;

-- verify-full, the right CA, host 127.0.0.1 (an IP SAN of the server certificate):
-- snapshot and CDC. pg_hba.conf rejects synchdb_src without SSL, so every
-- connection (replication, snapshot, slot removal) has to be encrypted.
SELECT synchdb_add_conninfo('sslfull', '127.0.0.1', :sslport, :'srcuser', :'srcpwd',
                            'sslsrc', 'public', 'null', 'null', 'postgres');
SELECT synchdb_add_extra_conninfo('sslfull', 'verify-full', :'ssldir' || '/ca.crt');
SELECT data->>'ssl_mode' AS ssl_mode, replace(data->>'ssl_rootcert', :'ssldir', '<dir>') AS ssl_rootcert,
       data ? 'ssl_cert' AS has_cert, data ? 'ssl_key' AS has_key
FROM synchdb_conninfo WHERE name = 'sslfull';
SELECT synchdb_start_engine_bgw('sslfull');
SELECT synchdb_test_wait($$SELECT count(*) = 100 FROM sslsrc.items$$);
\c sslsrc postgres 127.0.0.1 :sslport
INSERT INTO items VALUES (101, 'over ssl');
UPDATE items SET label = 'changed' WHERE id = 1;
-- the stream's connection opens after the snapshot: wait for it (bounded)
DO $$
BEGIN
    FOR i IN 1..4500 LOOP
        EXIT WHEN EXISTS (SELECT 1 FROM pg_stat_activity
                           WHERE application_name = 'synchdb_sslfull' AND backend_type = 'walsender');
        PERFORM pg_sleep(0.02);
        PERFORM pg_stat_clear_snapshot();
    END LOOP;
END $$;
SELECT count(*) > 0 AS walsender, bool_and(s.ssl) AS encrypted
FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
WHERE a.application_name = 'synchdb_sslfull';
\c contrib_regression postgres 127.0.0.1 :port
SELECT synchdb_test_wait($$SELECT count(*) = 101 AND bool_or(label = 'changed') FROM sslsrc.items$$);
SELECT stage, state, err FROM synchdb_state_view WHERE name = 'sslfull';
SELECT synchdb_stop_engine_bgw('sslfull');
SELECT synchdb_del_conninfo('sslfull');
DROP SCHEMA sslsrc CASCADE;

-- verify-full with host name localhost (a DNS SAN), and a client certificate for
-- synchdb_cert (cert authentication), given in SynchDB's six-argument form: the
-- "keystore" is one PEM file with the certificate and its key, the "truststore"
-- the CA certificate
SELECT synchdb_add_conninfo('sslcert', 'localhost', :sslport, 'synchdb_cert', '',
                            'sslsrc', 'public', 'null', 'null', 'postgres');
SELECT synchdb_add_extra_conninfo('sslcert', 'verify_identity', :'ssldir' || '/client.pem', 'null',
                                  :'ssldir' || '/ca.crt', NULL);
SELECT data->>'ssl_mode' AS ssl_mode, replace(data->>'ssl_cert', :'ssldir', '<dir>') AS ssl_cert,
       replace(data->>'ssl_key', :'ssldir', '<dir>') AS ssl_key
FROM synchdb_conninfo WHERE name = 'sslcert';
SELECT synchdb_start_engine_bgw('sslcert');
SELECT synchdb_test_wait($$SELECT count(*) = 101 FROM sslsrc.items$$);
SELECT stage, state, err FROM synchdb_state_view WHERE name = 'sslcert';
SELECT synchdb_stop_engine_bgw('sslcert');
SELECT synchdb_del_conninfo('sslcert');
DROP SCHEMA sslsrc CASCADE;

-- verify-ca checks the chain but not the name: 127.0.0.2 is fine
SELECT synchdb_add_conninfo('sslca', '127.0.0.2', :sslport, :'srcuser', :'srcpwd',
                            'sslsrc', 'public', 'null', 'null', 'postgres');
SELECT synchdb_add_extra_conninfo('sslca', 'verify-ca', :'ssldir' || '/ca.crt');
SELECT synchdb_start_engine_bgw('sslca', 'initial_only');
SELECT synchdb_test_wait($$SELECT count(*) = 101 FROM sslsrc.items$$);
SELECT synchdb_stop_engine_bgw('sslca');
SELECT synchdb_del_conninfo('sslca');
DROP SCHEMA sslsrc CASCADE;

-- no ssl_mode at all means prefer, as in libpq: SSL here (plain is rejected)...
SELECT synchdb_add_conninfo('sslprefer', '127.0.0.1', :sslport, :'srcuser', :'srcpwd',
                            'sslsrc', 'public', 'null', 'null', 'postgres');
SELECT synchdb_start_engine_bgw('sslprefer', 'initial_only');
SELECT synchdb_test_wait($$SELECT count(*) = 101 FROM sslsrc.items$$);
SELECT synchdb_stop_engine_bgw('sslprefer');
SELECT synchdb_del_conninfo('sslprefer');
DROP SCHEMA sslsrc CASCADE;
-- ... and plain against servers without SSL: every other test of this suite

-- failures only a connection can tell: the worker stops and says why
SELECT synchdb_add_conninfo(n, h, :sslport, u, pw, 'sslsrc', 'public', 'null', 'null', 'postgres')
FROM (VALUES ('sslwrongca', '127.0.0.1', :'srcuser', :'srcpwd'),
             ('sslwronghost', '127.0.0.2', :'srcuser', :'srcpwd'),
             ('sslreqca', '127.0.0.1', :'srcuser', :'srcpwd'),
             ('ssldisable', '127.0.0.1', :'srcuser', :'srcpwd'),
             ('sslbadpw', '127.0.0.1', :'srcuser', 'wrong password'),
             ('sslnocert', '127.0.0.1', 'synchdb_cert', ''),
             ('sslkeymismatch', '127.0.0.1', 'synchdb_cert', ''),
             ('sslopenkey', '127.0.0.1', 'synchdb_cert', '')) v(n, h, u, pw);
SELECT synchdb_add_conninfo('sslnossl', '127.0.0.1', :port, :'srcuser', :'srcpwd',
                            'postgres', 'public', 'null', 'null', 'postgres');
-- an unrelated CA; require with a root certificate checks the chain as verify-ca
SELECT synchdb_add_extra_conninfo('sslwrongca', 'verify-full', :'ssldir' || '/other-ca.crt');
SELECT synchdb_add_extra_conninfo('sslreqca', 'require', :'ssldir' || '/other-ca.crt');
-- a host name the certificate does not name
SELECT synchdb_add_extra_conninfo('sslwronghost', 'verify-full', :'ssldir' || '/ca.crt');
-- no SSL against a server that requires it: the server's own message
SELECT synchdb_add_extra_conninfo('ssldisable', 'disable');
-- prefer: the SSL attempt fails (password), the plain one too (pg_hba.conf); both said
SELECT synchdb_add_extra_conninfo('sslbadpw', 'prefer');
-- the server asks synchdb_cert for a certificate
SELECT synchdb_add_extra_conninfo('sslnocert', 'verify-full', :'ssldir' || '/ca.crt');
-- a key that is not the certificate's; a key others can read (libpq refuses both)
SELECT synchdb_add_extra_conninfo('sslkeymismatch', 'verify-full', :'ssldir' || '/ca.crt',
                                  :'ssldir' || '/client.crt', :'ssldir' || '/other-ca.key');
SELECT synchdb_add_extra_conninfo('sslopenkey', 'verify-full', :'ssldir' || '/ca.crt',
                                  :'ssldir' || '/client.crt', :'ssldir' || '/client-open.key');
-- require against a server without SSL (the main cluster)
SELECT synchdb_add_extra_conninfo('sslnossl', 'require');
SELECT synchdb_start_engine_bgw(name) FROM synchdb_conninfo WHERE name LIKE 'ssl%' ORDER BY name;
SELECT synchdb_test_wait($$SELECT bool_and(state = 'stopped' AND err <> 'no error') FROM synchdb_state_view
                           WHERE name LIKE 'ssl%'$$);
SELECT name, ssl_err(name, :'ssldir', ARRAY[:'sslport', :'port']) AS err
FROM synchdb_conninfo WHERE name LIKE 'ssl%' ORDER BY name;
-- nothing was created on the source
\c sslsrc postgres 127.0.0.1 :sslport
SELECT count(*) AS slots FROM pg_replication_slots;
SELECT count(*) AS publications FROM pg_publication;
\c contrib_regression postgres 127.0.0.1 :port

-- synchdb_del_extra_conninfo: back to the default (prefer, no files)
SELECT synchdb_del_extra_conninfo('sslwrongca');
SELECT data ?| ARRAY['ssl_mode', 'ssl_rootcert', 'ssl_cert', 'ssl_key'] AS has_ssl_keys
FROM synchdb_conninfo WHERE name = 'sslwrongca';

-- bad input, refused at call time
SELECT ssl_try($$SELECT synchdb_add_extra_conninfo('nosuch', 'require')$$);
SELECT ssl_try($$SELECT synchdb_add_extra_conninfo('sslwrongca', 'sometimes')$$);
SELECT ssl_try($$SELECT synchdb_add_extra_conninfo('sslwrongca', NULL)$$);
SELECT ssl_try($$SELECT synchdb_add_extra_conninfo('sslwrongca', 'verify-full')$$);
SELECT ssl_try($$SELECT synchdb_add_extra_conninfo('sslwrongca', 'verify-ca', 'null')$$);
SELECT ssl_try($$SELECT synchdb_add_extra_conninfo('sslwrongca', 'verify-ca', 'certs/ca.crt')$$);
SELECT replace(ssl_try(format($$SELECT synchdb_add_extra_conninfo('sslwrongca', 'verify-ca', %L)$$,
                              :'ssldir' || '/nosuch.crt')), :'ssldir', '<dir>') AS err;
SELECT replace(ssl_try(format($$SELECT synchdb_add_extra_conninfo('sslwrongca', 'verify-ca', %L)$$,
                              :'ssldir')), :'ssldir', '<dir>') AS err;
SELECT replace(ssl_try(format($$SELECT synchdb_add_extra_conninfo('sslwrongca', 'verify-ca', %L)$$,
                              :'ssldir' || '/noread.crt')), :'ssldir', '<dir>') AS err;
SELECT replace(ssl_try(format($$SELECT synchdb_add_extra_conninfo('sslwrongca', 'verify-ca', %L)$$,
                              :'ssldir' || '/ca.key')), :'ssldir', '<dir>') AS err;
SELECT replace(ssl_try(format($$SELECT synchdb_add_extra_conninfo('sslwrongca', 'require', NULL, %L)$$,
                              :'ssldir' || '/client.crt')), :'ssldir', '<dir>') AS err;
SELECT replace(ssl_try(format($$SELECT synchdb_add_extra_conninfo('sslwrongca', 'require', NULL, NULL, %L)$$,
                              :'ssldir' || '/client.key')), :'ssldir', '<dir>') AS err;
SELECT replace(ssl_try(format($$SELECT synchdb_add_extra_conninfo('sslwrongca', 'disable', %L)$$,
                              :'ssldir' || '/ca.crt')), :'ssldir', '<dir>') AS err;
SELECT ssl_try($$SELECT synchdb_add_extra_conninfo('sslwrongca', 'verify-ca', '/x/ks.jks', 'secret', '/x/ts.jks', 'secret')$$);
SELECT ssl_try($$SELECT synchdb_del_extra_conninfo('nosuch')$$);
-- nothing was changed by them
SELECT data ?| ARRAY['ssl_mode', 'ssl_rootcert', 'ssl_cert', 'ssl_key'] AS has_ssl_keys
FROM synchdb_conninfo WHERE name = 'sslwrongca';

-- clean up (the failed connectors' sources may refuse us: warnings hidden)
SET client_min_messages = error;
SELECT synchdb_del_conninfo(name) FROM synchdb_conninfo WHERE name LIKE 'ssl%' ORDER BY name;
RESET client_min_messages;
DROP FUNCTION ssl_try(text);
DROP FUNCTION ssl_err(text, text, text[]);
\c postgres postgres 127.0.0.1 :sslport
SELECT count(*) AS slots_left FROM pg_replication_slots;
DROP DATABASE sslsrc;
\c contrib_regression postgres 127.0.0.1 :port
SELECT * FROM synchdb_state_view WHERE name LIKE 'ssl%';
