#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR/..
# regress/run.sh 15|18 [test ...] — builds and installs synchdb for one
# PostgreSQL major version, starts the two clusters the regression tests talk
# to, and runs pg_regress against the first one.
#
#   main       port 25415 (PG15) / 25418 (PG18): wal_level=logical,
#              shared_preload_libraries=synchdb; it is both the source
#              (role synchdb_src, password-checked) and the destination
#   nological  port 25515 / 25518: wal_level=replica, same pg_hba.conf,
#              for the tests of "source cannot do logical decoding" errors
#
#   other      port 25615 / 25618: the OTHER major version (18 when testing 15,
#              15 when testing 18), wal_level=logical, no extension: a source
#              on another server, as in a major-version migration
#
#   ssl        port 25715 / 25718: wal_level=logical, ssl=on with certificates
#              this script makes with openssl (a CA, a server certificate for
#              DNS:localhost + IP:127.0.0.1, an unrelated second CA, a client
#              certificate); it also listens on 127.0.0.2, which its certificate
#              does not name. synchdb_src must use SSL (scram; plain is
#              rejected), synchdb_cert logs in with its client certificate.
#              Same major version as the run when that build has OpenSSL,
#              else the other one (our PostgreSQL 18 is built without it).
#
# The tests get SYNCHDB_PORT, SYNCHDB_NOLOGICAL_PORT, SYNCHDB_OTHER_PORT,
# SYNCHDB_SSL_PORT, SYNCHDB_SSL_DIR (the certificate and key files),
# SYNCHDB_BINDIR (this version's pg_dump, for \! in tests), SYNCHDB_OTHER_BINDIR
# and SYNCHDB_OTHER_DATA (to stop and start the other cluster), SYNCHDB_SERVER_LOG
# (the main cluster's server log, for tests of what is logged), SYNCHDB_SCRATCH
# (a directory the tests may write files to),
# SYNCHDB_SRC_USER and SYNCHDB_SRC_PASSWORD in their environment (read them
# with psql's \getenv).
# Tests come from regress/schedule, or from the command line when given.
#
# Environment knobs:
#   SYNCHDB_SKIP_BUILD=1        use what is installed, skip make/make install
#   SYNCHDB_KEEP_TMP=1          keep the temp dir (data dirs, logs, results)
#   SYNCHDB_REGRESS_TIMEOUT=s   pg_regress wall-clock limit (default 1200)
#   SYNCHDB_REGRESS_COUNTS=f    write "<passed> <failed>" there (scripts/test.sh)
#   SYNCHDB_EXTRA_CONF=lines    appended to both clusters' postgresql.conf
#                               (e.g. "log_min_messages = debug1")
#
# Exit status: 0 only if the build, both clusters and every test succeeded.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/pgenv.sh
. "$REPO/scripts/pgenv.sh"

VER=${1:-}
case $VER in
15 | 18) shift ;;
*)
    echo "usage: $0 15|18 [test ...]" >&2
    exit 2
    ;;
esac
# shellcheck disable=SC2034  # log prefix used by pgenv.sh
PGENV_TAG="regress PG$VER"
MAIN_PORT=254$VER
NOLOGICAL_PORT=255$VER
OTHER_PORT=256$VER
if [[ $VER == 15 ]]; then OTHER_VER=18; else OTHER_VER=15; fi
SSL_PORT=257$VER
SRC_USER=synchdb_src
SRC_PASSWORD=synchdb_pw
TIMEOUT=${SYNCHDB_REGRESS_TIMEOUT:-1200}
COUNTS_FILE=${SYNCHDB_REGRESS_COUNTS:-}

ensure_cargo_path
ensure_test_user
PG_CONFIG=$(pg_config_for "$VER")
BINDIR=$("$PG_CONFIG" --bindir)
PG_REGRESS=$(pg_regress_for "$PG_CONFIG")

# All state of this run lives in one fresh directory owned by the test user:
# data dirs, sockets, server logs, a copy of regress/ (the repo may sit in a
# directory the test user cannot read, e.g. under /root) and the results.
pgenv_workdir "regress$VER"
WORK=$PGENV_WORKDIR

# Results are reported through the counts file even when we die early, so
# the caller never mistakes a crash for "no tests".
PASSED=0
FAILED=0
write_counts() {
    [[ -n $COUNTS_FILE ]] && printf '%s %s\n' "$PASSED" "$FAILED" >"$COUNTS_FILE"
    return 0
}
# shellcheck disable=SC2016  # expanded when the hook runs
pgenv_on_exit 'if [[ $PGENV_EXIT_RC -ne 0 && $FAILED -eq 0 ]]; then FAILED=1; fi; write_counts'

# ---------------------------------------------------------------------------
# Build and install
# ---------------------------------------------------------------------------
pgenv_build_install "$PG_CONFIG" "$WORK"
[[ ${SYNCHDB_SKIP_BUILD:-0} == 1 ]] || pgenv_log "installed into $("$PG_CONFIG" --pkglibdir)"

# ---------------------------------------------------------------------------
# Clusters
# ---------------------------------------------------------------------------
MAIN=$WORK/main
NOLOGICAL=$WORK/nological
OTHER=$WORK/other
OTHER_BINDIR=$("$(pg_config_for "$OTHER_VER")" --bindir)
SSL=$WORK/ssl
SSL_DIR=$WORK/sslfiles

# From here on, any failure shows the tails of both server logs. Hooks run
# last-registered-first, so this runs right after the clusters (registered
# below) have been stopped and the logs are complete.
# shellcheck disable=SC2016  # expanded when the hook runs
pgenv_on_exit 'if [[ $PGENV_EXIT_RC -ne 0 ]]; then pgenv_tail_logs 60 "$MAIN" "$NOLOGICAL" "$OTHER" "$SSL"; fi'

COMMON_CONF="max_replication_slots = 20
max_wal_senders = 20
max_worker_processes = 32
password_encryption = 'scram-sha-256'
log_min_messages = info
${SYNCHDB_EXTRA_CONF:-}"

PGENV_HBA=$PGENV_SYNCHDB_HBA start_cluster "$BINDIR" "$MAIN" "$MAIN_PORT" <<EOF
wal_level = logical
shared_preload_libraries = 'synchdb'
# small enough for the 'multi' test to reach it; no other test runs more at once
synchdb.max_connector_workers = 10
$COMMON_CONF
EOF
PGENV_HBA=$PGENV_SYNCHDB_HBA start_cluster "$BINDIR" "$NOLOGICAL" "$NOLOGICAL_PORT" <<EOF
wal_level = replica
$COMMON_CONF
EOF

# The source role exists on both clusters so that connecting to "nological"
# gets past authentication and fails on wal_level, which is what tests check.
PGENV_HBA=$PGENV_SYNCHDB_HBA start_cluster "$OTHER_BINDIR" "$OTHER" "$OTHER_PORT" <<EOF
wal_level = logical
$COMMON_CONF
EOF

# --- the ssl cluster -------------------------------------------------------
# A server build with OpenSSL: this run's version if it has one, else the other.
has_openssl() { "$1/pg_config" --configure 2>/dev/null | grep -qE -- "--with-(openssl|ssl=openssl)"; }
if has_openssl "$BINDIR"; then
    SSL_BINDIR=$BINDIR
elif has_openssl "$OTHER_BINDIR"; then
    SSL_BINDIR=$OTHER_BINDIR
    pgenv_log "PostgreSQL $VER here is built without OpenSSL: the ssl source runs PostgreSQL $OTHER_VER"
else
    pgenv_die "no PostgreSQL server built with OpenSSL for the ssl cluster"
fi
command -v openssl >/dev/null || pgenv_die "openssl is needed to make the test certificates"

# Certificates: EC P-256 keys, CA-signed, valid for 10 years. Keys are 0600 and
# belong to the cluster owner (the server and libpq both insist).
make_ssl_files() (
    set -e
    cd "$1"
    ossl() { openssl "$@" 2>>openssl.log; }
    newkey=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
    for ca in ca other-ca; do
        ossl req -x509 -new "${newkey[@]}" -sha256 -days 3650 -subj "/CN=synchdb test $ca" \
            -addext "basicConstraints=critical,CA:TRUE" \
            -addext "keyUsage=critical,keyCertSign,cRLSign" \
            -keyout "$ca.key" -out "$ca.crt"
    done
    # sign NAME CN EXTENSIONS: NAME.crt and NAME.key, signed by ca
    sign() {
        ossl req -new "${newkey[@]}" -subj "/CN=$2" -keyout "$1.key" -out "$1.csr"
        printf '%s\n' "basicConstraints=CA:FALSE" "keyUsage=critical,digitalSignature" "$3" >"$1.ext"
        ossl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 -sha256 \
            -extfile "$1.ext" -out "$1.crt"
        rm -f "$1.csr" "$1.ext"
    }
    sign server localhost $'extendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1'
    sign client synchdb_cert "extendedKeyUsage=clientAuth"
    cat client.crt client.key >client.pem # certificate and key in one file
    cp client.key client-open.key         # for the key permission check
    cp ca.crt noread.crt                  # for the unreadable-file check
    chmod 644 ./*.crt
    chmod 600 ./*.key client.pem
    chmod 644 client-open.key
    chmod 000 noread.crt
)
mkdir -p "$SSL_DIR"
make_ssl_files "$SSL_DIR" || {
    cat "$SSL_DIR/openssl.log" >&2
    pgenv_die "making the test certificates failed"
}
[[ $EUID -eq 0 ]] && chown -R "$PGENV_TEST_USER" "$SSL_DIR"

# First matching line wins: synchdb_src only over SSL, synchdb_cert by its client
# certificate, everyone else (the tests' superuser) as on the other clusters.
PGENV_HBA="local     all          all                            trust
hostssl   all          $SRC_USER    127.0.0.0/8     scram-sha-256
hostssl   replication  $SRC_USER    127.0.0.0/8     scram-sha-256
hostnossl all          $SRC_USER    127.0.0.0/8     reject
hostnossl replication  $SRC_USER    127.0.0.0/8     reject
hostssl   all          synchdb_cert 127.0.0.1/32    cert
hostssl   replication  synchdb_cert 127.0.0.1/32    cert
host      all          all          127.0.0.1/32    trust" start_cluster "$SSL_BINDIR" "$SSL" "$SSL_PORT" <<EOF
wal_level = logical
listen_addresses = '127.0.0.1, 127.0.0.2'
ssl = on
ssl_cert_file = '$SSL_DIR/server.crt'
ssl_key_file = '$SSL_DIR/server.key'
ssl_ca_file = '$SSL_DIR/ca.crt'
$COMMON_CONF
EOF

for port in "$MAIN_PORT" "$NOLOGICAL_PORT" "$OTHER_PORT" "$SSL_PORT"; do
    "$BINDIR/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U "$PGENV_SUPERUSER" -d postgres \
        -c "SET password_encryption = 'scram-sha-256'" \
        -c "CREATE ROLE $SRC_USER LOGIN REPLICATION SUPERUSER PASSWORD '$SRC_PASSWORD'" </dev/null
done
"$BINDIR/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$SSL_PORT" -U "$PGENV_SUPERUSER" -d postgres \
    -c "CREATE ROLE synchdb_cert LOGIN REPLICATION SUPERUSER" </dev/null
# Check the certificates with libpq before blaming the extension.
for conninfo in "user=$SRC_USER sslmode=verify-full sslrootcert=$SSL_DIR/ca.crt" \
    "user=synchdb_cert sslmode=verify-full sslrootcert=$SSL_DIR/ca.crt sslcert=$SSL_DIR/client.crt sslkey=$SSL_DIR/client.key"; do
    got=$(as_test_user env PGPASSWORD="$SRC_PASSWORD" "$SSL_BINDIR/psql" -X -q -At \
        "host=127.0.0.1 port=$SSL_PORT dbname=postgres $conninfo" \
        -c "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()" </dev/null) ||
        pgenv_die "SSL login to the ssl cluster failed ($conninfo)"
    [[ $got == t ]] || pgenv_die "the ssl cluster's connection is not encrypted ($conninfo)"
done
# --use-existing makes pg_regress neither drop nor create its database, so
# create it here (the cluster is fresh; template0 as pg_regress would).
"$BINDIR/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$MAIN_PORT" -U "$PGENV_SUPERUSER" -d postgres \
    -c "CREATE DATABASE contrib_regression TEMPLATE template0" </dev/null
# Check the scram line of pg_hba.conf works before blaming the extension.
PGPASSWORD=$SRC_PASSWORD "$BINDIR/psql" -X -q -At -h 127.0.0.1 -p "$MAIN_PORT" \
    -U "$SRC_USER" -d postgres -c "SELECT 1" </dev/null >/dev/null ||
    pgenv_die "password login as $SRC_USER failed"

# ---------------------------------------------------------------------------
# pg_regress
# ---------------------------------------------------------------------------
cp -r "$REPO/regress" "$WORK/regress"
mkdir -p "$WORK/out"
[[ $EUID -eq 0 ]] && chown -R "$PGENV_TEST_USER" "$WORK/regress" "$WORK/out"

if (($# > 0)); then
    TESTS=("$@")
else
    [[ -f $WORK/regress/schedule ]] || pgenv_die "regress/schedule is missing"
    TESTS=(--schedule="$WORK/regress/schedule")
fi

pgenv_log "pg_regress on 127.0.0.1:$MAIN_PORT (timeout ${TIMEOUT}s)"
regress_rc=0
# --bindir: pg_regress would otherwise look for psql in the directory the
# install was configured for, which is wrong for the relocated PG18 copy.
# timeout: a hung test must not hang CI; -k kills it if TERM is ignored.
as_test_user env \
    SYNCHDB_PORT="$MAIN_PORT" \
    SYNCHDB_NOLOGICAL_PORT="$NOLOGICAL_PORT" \
    SYNCHDB_OTHER_PORT="$OTHER_PORT" \
    SYNCHDB_OTHER_BINDIR="$OTHER_BINDIR" \
    SYNCHDB_OTHER_DATA="$OTHER" \
    SYNCHDB_SSL_PORT="$SSL_PORT" \
    SYNCHDB_SSL_DIR="$SSL_DIR" \
    SYNCHDB_SRC_USER="$SRC_USER" \
    SYNCHDB_SRC_PASSWORD="$SRC_PASSWORD" \
    SYNCHDB_BINDIR="$BINDIR" \
    SYNCHDB_SCRATCH="$WORK/out" \
    SYNCHDB_SERVER_LOG="$(pgenv_server_log "$MAIN")" \
    timeout -k 30 "$TIMEOUT" \
    "$PG_REGRESS" \
    --use-existing \
    --host=127.0.0.1 --port="$MAIN_PORT" --user="$PGENV_SUPERUSER" \
    --bindir="$BINDIR" \
    --inputdir="$WORK/regress" --outputdir="$WORK/out" \
    --dbname=contrib_regression \
    "${TESTS[@]}" </dev/null 2>&1 | tee "$WORK/out/pg_regress.log" || regress_rc=$?
[[ $regress_rc -eq 124 ]] && pgenv_log "pg_regress timed out after ${TIMEOUT}s"

# Count individual tests. Two output formats:
#   PG15:   "test smoke    ... ok   12 ms"   (in parallel groups: "     smoke ... ok")
#           "test smoke    ... FAILED"       "... failed (ignored)"
#   PG16+:  "ok 1         - smoke   12 ms"   "not ok 2     + other   5 ms"
PASSED=$(grep -cE '^(ok [0-9]+ +[-+] |(test )? *[^ ]+ +\.\.\. ok( |$))' "$WORK/out/pg_regress.log" || true)
FAILED=$(grep -cE '^(not ok [0-9]+ +[-+] |(test )? *[^ ]+ +\.\.\. (FAILED|failed))' "$WORK/out/pg_regress.log" || true)

# A crashed backend or worker can leave every test green (e.g. a panic that
# aborts a background worker after the test finished). Count it as a failure.
if grep -E 'terminated by signal (4|6|7|8|11)|PANIC:' "$(pgenv_server_log "$MAIN")" \
    "$(pgenv_server_log "$NOLOGICAL")" "$(pgenv_server_log "$OTHER")" \
    "$(pgenv_server_log "$SSL")" >"$WORK/crashes.txt" 2>/dev/null; then
    pgenv_log "server crash in the logs:"
    head -n 20 "$WORK/crashes.txt"
    FAILED=$((FAILED + 1))
fi

if [[ $regress_rc -ne 0 && $FAILED -eq 0 ]]; then
    FAILED=1 # pg_regress itself failed (timeout, bad schedule, ...)
fi

if [[ $FAILED -ne 0 ]]; then
    if [[ -s $WORK/out/regression.diffs ]]; then
        echo "===== regression.diffs (first 300 lines) ====="
        head -n 300 "$WORK/out/regression.diffs"
    fi
    pgenv_log "PG$VER regression: $PASSED ok, $FAILED failed"
    exit 1
fi
pgenv_log "PG$VER regression: $PASSED ok, 0 failed"
