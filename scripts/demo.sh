#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR/..
# scripts/demo.sh — synchdb end to end in one command.
#
#   1. installs the dependencies if something is missing (install_deps.sh)
#   2. builds and installs synchdb for PostgreSQL 18 (PGVER=15 for 15)
#   3. starts a throwaway cluster on 127.0.0.1:25460 (wal_level=logical,
#      shared_preload_libraries=synchdb) — it is both source and destination
#   4. creates the source database "shop" (1000 orders, 50 customers)
#   5. in database "postgres": CREATE EXTENSION synchdb, registers connector
#      "shopconn" for shop's schema public, starts it, and waits (max 60 s)
#      until the initial copy shows up as shop.orders / shop.customers
#   6. runs INSERT/UPDATE/DELETE on the source and waits (max 60 s) until the
#      destination matches again (change data capture)
#   7. prints synchdb_state_view, the replicated tables and sample rows,
#      stops the connector; the cluster is stopped and removed on exit
#
# Anything failing prints the server log tail and exits non-zero.
# SYNCHDB_KEEP_TMP=1 keeps the cluster's directory for a look afterwards.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/pgenv.sh
. "$REPO/scripts/pgenv.sh"
# shellcheck disable=SC2034  # log prefix used by pgenv.sh
PGENV_TAG="demo"

PGVER=${PGVER:-18}
PORT=25460
CONN=shopconn
WAIT_SECS=60
SRC_USER=synchdb_src
SRC_PASSWORD=synchdb_pw

step() { printf '\n==> %s\n' "$*"; }

# ---------------------------------------------------------------------------
step "checking dependencies"
ensure_cargo_path
deps_ok=1
for tool in cargo make gcc python3; do
    command -v "$tool" >/dev/null 2>&1 || deps_ok=0
done
# pg_config_for exits when the install is missing: ask in a subshell.
(pg_config_for "$PGVER" >/dev/null 2>&1) || deps_ok=0
if [[ $deps_ok -eq 0 ]]; then
    bash "$REPO/scripts/install_deps.sh" </dev/null
    ensure_cargo_path
else
    echo "all present"
fi
PG_CONFIG=$(pg_config_for "$PGVER")
BINDIR=$("$PG_CONFIG" --bindir)

pgenv_workdir demo
WORK=$PGENV_WORKDIR
DATA=$WORK/demo

# ---------------------------------------------------------------------------
step "building and installing synchdb for PostgreSQL $PGVER ($PG_CONFIG)"
if ! { make -C "$REPO" PG_CONFIG="$PG_CONFIG" &&
    make -C "$REPO" PG_CONFIG="$PG_CONFIG" install; } >"$WORK/build.log" 2>&1; then
    tail -n 100 "$WORK/build.log"
    pgenv_die "build failed (full log above)"
fi
echo "installed into $("$PG_CONFIG" --pkglibdir)"

# ---------------------------------------------------------------------------
step "starting PostgreSQL $PGVER on 127.0.0.1:$PORT"
# On failure, show what the server said (runs after the cluster stopped).
# shellcheck disable=SC2016  # expanded when the hook runs
pgenv_on_exit 'if [[ $PGENV_EXIT_RC -ne 0 ]]; then pgenv_tail_logs 80 "$DATA"; fi'
PGENV_HBA=$PGENV_SYNCHDB_HBA start_cluster "$BINDIR" "$DATA" "$PORT" <<EOF
wal_level = logical
shared_preload_libraries = 'synchdb'
max_replication_slots = 10
max_wal_senders = 10
max_worker_processes = 16
password_encryption = 'scram-sha-256'
EOF

# q DB SQL — one value, unaligned. run DB — SQL script on stdin, echoed
# output as a user would see it in psql.
q() {
    "$BINDIR/psql" -X -q -At -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PORT" -U "$PGENV_SUPERUSER" \
        -d "$1" -c "$2" </dev/null
}
run() {
    "$BINDIR/psql" -X -q -v ON_ERROR_STOP=1 -P pager=off -h 127.0.0.1 -p "$PORT" \
        -U "$PGENV_SUPERUSER" -d "$1"
}

# ---------------------------------------------------------------------------
step "creating the source database shop (role $SRC_USER)"
run postgres <<EOF
SET password_encryption = 'scram-sha-256';
CREATE ROLE $SRC_USER LOGIN REPLICATION SUPERUSER PASSWORD '$SRC_PASSWORD';
CREATE DATABASE shop;
EOF
run shop <<'EOF'
CREATE TABLE public.orders (
    id       serial PRIMARY KEY,
    customer text NOT NULL,
    amount   numeric(10,2) DEFAULT 0,
    created  timestamptz DEFAULT now()
);
CREATE TABLE public.customers (
    id    int PRIMARY KEY,
    name  text,
    email varchar(100)
);
INSERT INTO public.customers
SELECT i, 'Customer ' || i, 'customer' || i || '@example.com'
  FROM generate_series(1, 50) AS i;
INSERT INTO public.orders (customer, amount, created)
SELECT 'Customer ' || (1 + (i * 7) % 50), round(((i * 37) % 10000) / 100.0, 2),
       now() - make_interval(mins => i)
  FROM generate_series(1, 1000) AS i;
EOF
echo "shop: $(q shop "SELECT count(*) FROM orders") orders, $(q shop "SELECT count(*) FROM customers") customers"

# ---------------------------------------------------------------------------
# Fingerprints of the table contents, computed the same way on both sides.
ORDERS_FP="count(*) || ' rows, sum ' || coalesce(sum(amount), 0) || ', md5 ' ||
  coalesce(md5(string_agg(id || ':' || customer || ':' || coalesce(amount::text, '-'), ',' ORDER BY id)), '-')"
CUSTOMERS_FP="count(*) || ' rows, md5 ' ||
  coalesce(md5(string_agg(id || ':' || coalesce(name, '-') || ':' || coalesce(email, '-'), ',' ORDER BY id)), '-')"

# dest_fp TABLE FP — fingerprint of shop.TABLE in "postgres", "absent" if
# the connector has not created it yet.
dest_fp() {
    if [[ -z $(q postgres "SELECT to_regclass('shop.$1')") ]]; then
        echo absent
    else
        q postgres "SELECT $2 FROM shop.$1"
    fi
}

# wait_in_sync WHAT — polls (bounded) until both tables match the source,
# printing the connector's stage/state whenever it changes.
wait_in_sync() {
    local what=$1 deadline status last="" want_o want_c got_o got_c
    want_o=$(q shop "SELECT $ORDERS_FP FROM public.orders")
    want_c=$(q shop "SELECT $CUSTOMERS_FP FROM public.customers")
    deadline=$((SECONDS + WAIT_SECS))
    while :; do
        status=$(q postgres "SELECT coalesce(stage, '-') || ' / ' || state || ' / ' || err
                               FROM synchdb_state_view WHERE name = '$CONN'")
        if [[ $status != "$last" ]]; then
            echo "  [$((SECONDS))s] stage / state / err: $status"
            last=$status
        fi
        got_o=$(dest_fp orders "$ORDERS_FP")
        got_c=$(dest_fp customers "$CUSTOMERS_FP")
        if [[ $got_o == "$want_o" && $got_c == "$want_c" ]]; then
            echo "  $what: in sync (orders: $got_o; customers: $got_c)"
            return 0
        fi
        if ((SECONDS >= deadline)); then
            echo "  source      orders: $want_o; customers: $want_c"
            echo "  destination orders: $got_o; customers: $got_c"
            pgenv_die "$what: destination not in sync after ${WAIT_SECS}s"
        fi
        sleep 1
    done
}

step "creating the extension and starting connector $CONN"
run postgres <<EOF
CREATE EXTENSION synchdb;
SELECT synchdb_add_conninfo('$CONN', '127.0.0.1', $PORT, '$SRC_USER', '$SRC_PASSWORD',
                            'shop', 'public', 'null', 'null', 'postgres');
SELECT synchdb_start_engine_bgw('$CONN');
EOF

step "waiting for the initial copy (at most ${WAIT_SECS}s)"
SECONDS=0
wait_in_sync "initial copy"

# ---------------------------------------------------------------------------
step "changing the source: INSERT, UPDATE, DELETE"
run shop <<'EOF'
\set ECHO queries
INSERT INTO orders (customer, amount) VALUES ('Alice', 42.50), ('Bob', 17.25), ('Carol', 99.99);
UPDATE orders SET amount = amount + 1 WHERE id <= 10;
DELETE FROM orders WHERE id BETWEEN 991 AND 1000;
INSERT INTO customers VALUES (51, 'Dora', 'dora@example.com');
UPDATE customers SET email = NULL WHERE id = 2;
DELETE FROM customers WHERE id = 50;
EOF

step "waiting for the changes (at most ${WAIT_SECS}s)"
SECONDS=0
wait_in_sync "changes"

# ---------------------------------------------------------------------------
step "what it looks like in database postgres"
run postgres <<'EOF'
\echo '--- SELECT * FROM synchdb_state_view'
\x on
SELECT * FROM synchdb_state_view;
\x off
\echo '--- \\dt shop.*'
\dt shop.*
\echo '--- \\d shop.orders'
\d shop.orders
\echo '--- newest replicated orders'
SELECT * FROM shop.orders ORDER BY id DESC LIMIT 5;
\echo '--- replicated customers (first 3 and the changed ones)'
SELECT * FROM shop.customers WHERE id <= 3 OR id >= 49 ORDER BY id;
EOF

step "stopping connector $CONN"
run postgres <<EOF
SELECT synchdb_stop_engine_bgw('$CONN');
EOF
for _ in $(seq 1 20); do
    state=$(q postgres "SELECT state FROM synchdb_state_view WHERE name = '$CONN'")
    [[ $state == stopped ]] && break
    sleep 0.5
done
echo "state: $state"
[[ $state == stopped ]] || pgenv_die "connector did not stop"

step "demo finished: the cluster is stopped and removed now"
