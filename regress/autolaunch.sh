#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR/..
# regress/autolaunch.sh 15|18 — the auto-launcher across server restarts, which
# pg_regress cannot do. Builds and installs synchdb for that version (unless
# SYNCHDB_SKIP_BUILD=1), starts one cluster on port 25815 / 25818
# (wal_level=logical, shared_preload_libraries=synchdb; it is both the source and
# the destination), and checks:
#
#   1. default settings (synchdb.synchdb_auto_launcher on): after
#      `pg_ctl restart -m fast`, every connector that was running comes back in its
#      own database (dst1, dst2), in the mode it was started with, and resumes
#      exactly (no new snapshot; counts and sums equal the source's, also for a
#      table without a key, where a change applied twice would show); connectors
#      that were never started or were stopped stay stopped; the per-database
#      launchers are gone afterwards, the launcher itself stays idle;
#   2. synchdb.synchdb_auto_launcher = off: nothing starts after a restart;
#   3. back on: everything written meanwhile arrives exactly;
#   4. a schemasync connector resumed by hand comes back streaming, not paused;
#   5. a connector's worker killed with SIGKILL: PostgreSQL reinitializes, the
#      launcher (which stays, idle, for this) relaunches every active connector,
#      and each resumes exactly (no new snapshot, nothing lost or applied twice).
#
# Connectors:  c1 dst1 <- src    started 'initial' (explicitly)
#              c2 dst2 <- src    started with the default mode
#              c3 dst1 <- src_b  added, never started
#              c4 dst2 <- src_b  started, snapshot taken, stopped
#              c5 dst1 <- src_c  started 'initial_only': comes back idle (no CDC)
#              c6 dst2 <- src_c  started 'schemasync': comes back paused
#
# The last line printed is exactly "N passed, N failed" (N = individual checks);
# the exit status is non-zero if any check failed. SYNCHDB_KEEP_TMP=1 keeps the
# work directory (data directory, server log).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/pgenv.sh
. "$REPO/scripts/pgenv.sh"

VER=${1:-}
case $VER in
15 | 18) ;;
*)
    echo "usage: $0 15|18" >&2
    exit 2
    ;;
esac
# shellcheck disable=SC2034  # log prefix used by pgenv.sh
PGENV_TAG="autolaunch PG$VER"
PORT=258$VER
SRC_USER=synchdb_src
SRC_PASSWORD=synchdb_pw
WAIT_SECS=${SYNCHDB_AUTOLAUNCH_WAIT:-90}

PASSED=0
FAILED=0
DONE=0
# The count line is printed at exit, by the hook registered first, so that it
# comes last: after the cluster has been stopped and any log tails shown. A run
# that dies early (a setup step, a signal) counts one more failure.
# shellcheck disable=SC2016  # expanded when the hook runs
pgenv_on_exit 'if [[ $DONE -eq 0 ]]; then FAILED=$((FAILED + 1)); fi; echo "$PASSED passed, $FAILED failed"'

ensure_cargo_path
ensure_test_user
PG_CONFIG=$(pg_config_for "$VER")
BINDIR=$("$PG_CONFIG" --bindir)

pgenv_workdir "autolaunch$VER"
WORK=$PGENV_WORKDIR
DATA=$WORK/data
LOG=$(pgenv_server_log "$DATA")

pgenv_build_install "$PG_CONFIG" "$WORK"

# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------

# sql DB STATEMENT... — a setup step: any error ends the run.
sql() {
    local db=$1
    shift
    local args=() s
    for s in "$@"; do args+=(-c "$s"); done
    PGCONNECT_TIMEOUT=10 "$BINDIR/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PORT" \
        -U "$PGENV_SUPERUSER" -d "$db" "${args[@]}" </dev/null >/dev/null ||
        pgenv_die "setup failed in database $db: $*"
}

# val DB QUERY — one value, unaligned; "<error>" when the query fails.
val() {
    PGCONNECT_TIMEOUT=10 "$BINDIR/psql" -X -q -At -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PORT" \
        -U "$PGENV_SUPERUSER" -d "$1" -c "$2" </dev/null 2>>"$WORK/psql.err" || echo "<error>"
}

pass() {
    PASSED=$((PASSED + 1))
    echo "ok   - $1"
}
fail() {
    FAILED=$((FAILED + 1))
    echo "FAIL - $1"
    [[ -z ${2:-} ]] || echo "       $2"
}

# expect NAME DB QUERY WANT — the query's value must be WANT.
expect() {
    local got
    got=$(val "$2" "$3")
    if [[ $got == "$4" ]]; then pass "$1"; else fail "$1" "got '$got', want '$4'"; fi
}

# wait_true DB QUERY [SECS] — polls QUERY (a boolean) every 0.1 s until true.
wait_true() {
    local deadline=$((SECONDS + ${3:-$WAIT_SECS}))
    while ((SECONDS < deadline)); do
        [[ $(val "$1" "$2") == t ]] && return 0
        sleep 0.1
    done
    return 1
}

# expect_soon NAME DB QUERY — QUERY (a boolean) must become true within WAIT_SECS.
expect_soon() {
    if wait_true "$2" "$3"; then pass "$1"; else fail "$1" "still false after ${WAIT_SECS}s: $3"; fi
}

# Fingerprints of a source table and of its copy, to compare. A change applied
# twice or lost shows in the count or the sums (log has no key: duplicates stay).
fp_t() { val "$1" "SELECT count(*) || ' ' || coalesce(sum(id), 0) || ' ' || coalesce(sum(v), 0) FROM $2"; }
fp_log() { val "$1" "SELECT count(*) || ' ' || count(DISTINCT n) || ' ' || coalesce(sum(n), 0) FROM $2"; }

# expect_same NAME — the copies of src's tables in dst1 and dst2 equal the source.
expect_same() {
    local want_t want_log db
    want_t=$(fp_t src t)
    want_log=$(fp_log src log)
    for db in dst1 dst2; do
        # wait for the row count first, then compare everything
        wait_true "$db" "SELECT (SELECT count(*) FROM src.t) = $(val src 'SELECT count(*) FROM t')
                     AND (SELECT count(*) FROM src.log) = $(val src 'SELECT count(*) FROM log')
                     AND (SELECT sum(v) FROM src.t) = $(val src 'SELECT sum(v) FROM t')" || true
        local got_t got_log
        got_t=$(fp_t "$db" src.t)
        got_log=$(fp_log "$db" src.log)
        if [[ $got_t == "$want_t" && $got_log == "$want_log" ]]; then
            pass "$1: $db has exactly the source's rows"
        else
            fail "$1: $db has exactly the source's rows" \
                "t: got '$got_t' want '$want_t'; log: got '$got_log' want '$want_log'"
        fi
    done
}

# pid DB NAME — the connector's pid in synchdb_state_view (-1 when stopped).
pid_of() { val "$1" "SELECT pid FROM synchdb_state_view WHERE name = '$2'"; }

# restart_server — fast restart as the cluster owner; prints the log size before
# it, so that checks can look at what the server logged since.
restart_server() {
    local before
    before=$(stat -c %s "$LOG")
    as_test_user "$BINDIR/pg_ctl" -D "$DATA" -l "$LOG" -m fast -w -t 60 -s restart >/dev/null ||
        pgenv_die "pg_ctl restart failed"
    echo "$before"
}

# log_since OFFSET — the server log from byte OFFSET on.
log_since() { tail -c +"$(($1 + 1))" "$LOG"; }

# count_log OFFSET REGEX — lines of the log since OFFSET that match.
count_log() { log_since "$1" | grep -cE -- "$2" || true; }

launched_re() { printf 'LOG: +synchdb: auto-launching connector "%s" in database "%s"' "$1" "$2"; }

# ---------------------------------------------------------------------------
# The cluster and the connectors
# ---------------------------------------------------------------------------
# shellcheck disable=SC2016  # expanded when the hook runs
pgenv_on_exit 'if [[ $PGENV_EXIT_RC -ne 0 || $FAILED -ne 0 ]]; then pgenv_tail_logs 80 "$DATA"; fi'
PGENV_HBA=$PGENV_SYNCHDB_HBA start_cluster "$BINDIR" "$DATA" "$PORT" <<EOF
wal_level = logical
shared_preload_libraries = 'synchdb'
max_replication_slots = 20
max_wal_senders = 20
max_worker_processes = 32
password_encryption = 'scram-sha-256'
log_min_messages = info
${SYNCHDB_EXTRA_CONF:-}
EOF

sql postgres "SET password_encryption = 'scram-sha-256'" \
    "CREATE ROLE $SRC_USER LOGIN REPLICATION SUPERUSER PASSWORD '$SRC_PASSWORD'"
for db in src src_b src_c dst1 dst2; do
    sql postgres "CREATE DATABASE $db"
done
sql src "CREATE TABLE t (id int PRIMARY KEY, v int NOT NULL)" \
    "CREATE TABLE log (n int NOT NULL, note text)" \
    "INSERT INTO t SELECT g, g FROM generate_series(1, 1000) g" \
    "INSERT INTO log SELECT g, 'snapshot' FROM generate_series(1, 1000) g"
sql src_b "CREATE TABLE b (id int PRIMARY KEY)" "INSERT INTO b SELECT generate_series(1, 100)"
sql src_c "CREATE TABLE c (id int PRIMARY KEY)" "INSERT INTO c SELECT generate_series(1, 100)"

add() { # add DB NAME SRCDB
    sql "$1" "SELECT synchdb_add_conninfo('$2', '127.0.0.1', $PORT, '$SRC_USER', '$SRC_PASSWORD',
                                         '$3', 'public', 'null', 'null', 'postgres')"
}
for db in dst1 dst2; do sql "$db" "CREATE EXTENSION synchdb"; done
add dst1 c1 src
add dst1 c3 src_b
add dst1 c5 src_c
add dst2 c2 src
add dst2 c4 src_b
add dst2 c6 src_c

sql dst1 "SELECT synchdb_start_engine_bgw('c1', 'initial')" \
    "SELECT synchdb_start_engine_bgw('c5', 'initial_only')"
sql dst2 "SELECT synchdb_start_engine_bgw('c2')" \
    "SELECT synchdb_start_engine_bgw('c4')" \
    "SELECT synchdb_start_engine_bgw('c6', 'schemasync')"

echo "# before the restart"
expect_soon "c4 took its snapshot" dst2 "SELECT count(*) = 100 FROM src_b.b"
sql dst2 "SELECT synchdb_stop_engine_bgw('c4')"
expect_soon "c5 took its snapshot (initial_only)" dst1 "SELECT count(*) = 100 FROM src_c.c"
expect_soon "c6 paused after its schema sync" dst2 \
    "SELECT state = 'paused' FROM synchdb_state_view WHERE name = 'c6'"
# CDC before the restart, then a restart right after a burst of changes: some of
# them are in flight when the server stops
sql src "INSERT INTO t SELECT g, g FROM generate_series(1001, 1500) g" \
    "INSERT INTO log SELECT g, 'before restart' FROM generate_series(1001, 1500) g"
expect_same "snapshot and CDC"
expect_soon "c1 and c2 reached change data capture" dst1 \
    "SELECT stage = 'change data capture' FROM synchdb_state_view WHERE name = 'c1'"
expect "the start mode is recorded (c1: initial, c3: never started, c5: initial_only)" dst1 \
    "SELECT string_agg(name || '=' || coalesce(data->>'last_mode', '-'), ',' ORDER BY name) FROM synchdb_conninfo" \
    "c1=initial,c3=-,c5=initial_only"
expect "the start mode is recorded (c2: default initial, c4, c6: schemasync)" dst2 \
    "SELECT string_agg(name || '=' || coalesce(data->>'last_mode', '-'), ',' ORDER BY name) FROM synchdb_conninfo" \
    "c2=initial,c4=initial,c6=schemasync"
sql src "INSERT INTO t SELECT g, g FROM generate_series(1501, 3000) g" \
    "UPDATE t SET v = v + 1 WHERE id % 7 = 0" \
    "INSERT INTO log SELECT g, 'in flight' FROM generate_series(1501, 3000) g"

# ---------------------------------------------------------------------------
echo "# restart with the default settings (auto-launcher on)"
OFF=$(restart_server)
expect "synchdb.synchdb_auto_launcher is on by default" dst1 "SHOW synchdb.synchdb_auto_launcher" "on"
# changes while the connectors are coming back, on every source
sql src "INSERT INTO t SELECT g, g FROM generate_series(3001, 3500) g" \
    "UPDATE t SET v = v * 2 WHERE id % 11 = 0" \
    "DELETE FROM t WHERE id % 13 = 0" \
    "INSERT INTO log SELECT g, 'after restart' FROM generate_series(3001, 3500) g"
sql src_c "INSERT INTO c SELECT generate_series(101, 150)"
expect_soon "c1 is running again" dst1 "SELECT pid > 0 FROM synchdb_state_view WHERE name = 'c1'"
expect_soon "c2 is running again" dst2 "SELECT pid > 0 FROM synchdb_state_view WHERE name = 'c2'"
expect_soon "c5 is running again" dst1 "SELECT pid > 0 FROM synchdb_state_view WHERE name = 'c5'"
expect_soon "c6 is running again, paused (schemasync)" dst2 \
    "SELECT pid > 0 AND state = 'paused' FROM synchdb_state_view WHERE name = 'c6'"
expect_same "resumed after the restart"
for c in c1 c2; do
    db=dst${c#c}
    expect "$c streams, without error" "$db" \
        "SELECT stage || '/' || err FROM synchdb_state_view WHERE name = '$c'" "change data capture/no error"
    expect "$c took no new snapshot" "$db" \
        "SELECT tables || '/' || rows FROM synchdb_snapstats WHERE name = '$c'" "0/0"
done
expect "c5 came back idle (initial_only: no CDC)" dst1 \
    "SELECT (SELECT count(*) FROM src_c.c) || '/' || state FROM synchdb_state_view WHERE name = 'c5'" "100/polling"
expect "c6 stayed paused (no rows applied)" dst2 "SELECT count(*) FROM src_c.c" "0"
expect "c3 (never started) stays stopped" dst1 \
    "SELECT pid || '/' || state || '/' || (SELECT isactive FROM synchdb_conninfo WHERE name = 'c3')
       FROM synchdb_state_view WHERE name = 'c3'" "-1/stopped/false"
expect "c4 (stopped) stays stopped" dst2 \
    "SELECT pid || '/' || state || '/' || (SELECT isactive FROM synchdb_conninfo WHERE name = 'c4')
       FROM synchdb_state_view WHERE name = 'c4'" "-1/stopped/false"
# the per-database launchers (connected to a database) exit; the launcher itself
# stays, idle, to relaunch the connectors after a crash
expect_soon "only the idle auto-launcher is left" postgres \
    "SELECT count(*) FILTER (WHERE datid IS NULL) = 1 AND count(*) FILTER (WHERE datid IS NOT NULL) = 0
       FROM pg_stat_activity WHERE backend_type = 'synchdb auto-launcher'"
expect "no connector process besides c1, c2, c5, c6" postgres \
    "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'synchdb connector'" "4"
n=0
for pair in c1:dst1 c2:dst2 c5:dst1 c6:dst2; do
    [[ $(count_log "$OFF" "$(launched_re "${pair%%:*}" "${pair#*:}")") == 1 ]] && n=$((n + 1))
done
if [[ $n == 4 ]]; then pass "one 'auto-launching' log line for each of c1, c2, c5, c6"; else
    fail "one 'auto-launching' log line for each of c1, c2, c5, c6" "$(log_since "$OFF" | grep auto-launching)"
fi
expect "no 'auto-launching' line for c3 or c4" postgres "SELECT $(count_log "$OFF" 'auto-launching connector "c[34]"')" "0"
expect "no new snapshot in the log" postgres \
    "SELECT $(count_log "$OFF" 'connector c[1-6]: initial snapshot done')" "0"
expect "no synchdb warning in the log" postgres "SELECT $(count_log "$OFF" 'WARNING: +synchdb')" "0"

# ---------------------------------------------------------------------------
echo "# restart with synchdb.synchdb_auto_launcher = off"
sql postgres "ALTER SYSTEM SET synchdb.synchdb_auto_launcher = off"
OFF=$(restart_server)
expect "synchdb.synchdb_auto_launcher is off" dst1 "SHOW synchdb.synchdb_auto_launcher" "off"
sql src "INSERT INTO t SELECT g, g FROM generate_series(3501, 4000) g" \
    "INSERT INTO log SELECT g, 'while off' FROM generate_series(3501, 4000) g"
# Background workers that start at recovery end have been launched once the
# logical replication launcher shows; an auto-launcher would then start the
# connectors within a second (see above). Watch for a while that nothing starts.
wait_true postgres "SELECT count(*) > 0 FROM pg_stat_activity WHERE backend_type = 'logical replication launcher'" 30 ||
    true
started=""
deadline=$((SECONDS + 5))
while ((SECONDS < deadline)); do
    started=$(val postgres "SELECT string_agg(backend_type, ',') FROM pg_stat_activity
                             WHERE backend_type IN ('synchdb auto-launcher', 'synchdb connector')")
    [[ -z $started ]] || break
    sleep 0.2
done
if [[ -z $started ]]; then pass "nothing starts when the auto-launcher is off"; else
    fail "nothing starts when the auto-launcher is off" "running: $started"
fi
expect "c1, c5 are stopped in dst1" dst1 \
    "SELECT string_agg(name || ':' || pid, ',' ORDER BY name) FROM synchdb_state_view" "c1:-1,c3:-1,c5:-1"
expect "c2, c6 are stopped in dst2" dst2 \
    "SELECT string_agg(name || ':' || pid, ',' ORDER BY name) FROM synchdb_state_view" "c2:-1,c4:-1,c6:-1"
expect "no 'auto-launching' line in the log" postgres "SELECT $(count_log "$OFF" 'auto-launching')" "0"
expect "the connectors are still marked active" dst1 \
    "SELECT string_agg(name || ':' || isactive, ',' ORDER BY name) FROM synchdb_conninfo" "c1:true,c3:false,c5:true"

# ---------------------------------------------------------------------------
echo "# restart with the auto-launcher on again"
sql postgres "ALTER SYSTEM RESET synchdb.synchdb_auto_launcher"
OFF=$(restart_server)
sql src "INSERT INTO log SELECT g, 'on again' FROM generate_series(4001, 4100) g" \
    "UPDATE t SET v = v + 3 WHERE id % 5 = 0"
expect_soon "c1 is running again" dst1 "SELECT pid > 0 FROM synchdb_state_view WHERE name = 'c1'"
expect_soon "c2 is running again" dst2 "SELECT pid > 0 FROM synchdb_state_view WHERE name = 'c2'"
expect_same "caught up after being off"
expect "still no new snapshot" postgres "SELECT $(count_log "$OFF" 'initial snapshot done')" "0"

# ---------------------------------------------------------------------------
echo "# a schemasync connector resumed by hand comes back streaming"
expect_soon "c6 is running again, paused" dst2 \
    "SELECT pid > 0 AND state = 'paused' FROM synchdb_state_view WHERE name = 'c6'"
sql dst2 "SELECT synchdb_resume_engine('c6')"
expect_soon "c6 resumed: CDC from the point its schema was taken" dst2 "SELECT count(*) = 50 FROM src_c.c"
expect "c6's recorded mode is now initial" dst2 \
    "SELECT data->>'last_mode' FROM synchdb_conninfo WHERE name = 'c6'" "initial"
OFF=$(restart_server)
sql src_c "INSERT INTO c SELECT generate_series(151, 160)"
expect_soon "c6 streams after the restart, not paused" dst2 "SELECT count(*) = 60 FROM src_c.c"
expect "c6 is polling, without error" dst2 \
    "SELECT state || '/' || err FROM synchdb_state_view WHERE name = 'c6'" "polling/no error"

# ---------------------------------------------------------------------------
echo "# a connector's worker is killed: PostgreSQL restarts every process, the connectors come back"
sql src "INSERT INTO t SELECT g, g FROM generate_series(5001, 5500) g" \
    "INSERT INTO log SELECT g, 'before the crash' FROM generate_series(5001, 5500) g"
expect_same "caught up before the crash"
OFF=$(stat -c %s "$LOG")
victim=$(pid_of dst1 c1)
kill -9 "$victim"
reinit=0
for _ in $(seq 1 $((WAIT_SECS * 10))); do
    if [[ $(count_log "$OFF" 'all server processes terminated; reinitializing') -ge 1 ]] &&
        [[ $(val postgres "SELECT 1") == 1 ]]; then
        reinit=1
        break
    fi
    sleep 0.1
done
if [[ $reinit == 1 ]]; then pass "the server reinitialized after the kill"; else
    fail "the server reinitialized after the kill" "$(log_since "$OFF" | tail -n 20)"
fi
# changes while the connectors are coming back; "in flight" rows whose apply
# was cut off by the kill come again from the slot
sql src "INSERT INTO t SELECT g, g FROM generate_series(5501, 6000) g" \
    "UPDATE t SET v = v + 7 WHERE id % 3 = 0" \
    "INSERT INTO log SELECT g, 'after the crash' FROM generate_series(5501, 6000) g"
sql src_c "INSERT INTO c SELECT generate_series(161, 170)"
expect_soon "c1 is running again, in a new process" dst1 \
    "SELECT pid > 0 AND pid <> $victim FROM synchdb_state_view WHERE name = 'c1'"
expect_soon "c2 is running again" dst2 "SELECT pid > 0 FROM synchdb_state_view WHERE name = 'c2'"
expect_soon "c5 is running again" dst1 "SELECT pid > 0 FROM synchdb_state_view WHERE name = 'c5'"
expect_soon "c6 streams again" dst2 "SELECT count(*) = 70 FROM src_c.c"
expect_same "resumed after the crash"
expect "c4 (stopped) stays stopped after the crash" dst2 \
    "SELECT pid || '/' || state FROM synchdb_state_view WHERE name = 'c4'" "-1/stopped"
expect "no new snapshot after the crash" postgres "SELECT $(count_log "$OFF" 'initial snapshot done')" "0"
n=0
for pair in c1:dst1 c2:dst2 c5:dst1 c6:dst2; do
    [[ $(count_log "$OFF" "$(launched_re "${pair%%:*}" "${pair#*:}")") == 1 ]] && n=$((n + 1))
done
if [[ $n == 4 ]]; then pass "after the crash, one 'auto-launching' line for each of c1, c2, c5, c6"; else
    fail "after the crash, one 'auto-launching' line for each of c1, c2, c5, c6" \
        "$(log_since "$OFF" | grep auto-launching)"
fi
expect_soon "the auto-launcher is back, idle" postgres \
    "SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'synchdb auto-launcher'"

expect "no server crash" postgres \
    "SELECT $(grep -cE 'terminated by signal (4|6|7|8|11)|PANIC:' "$LOG" || true)" "0"

# ---------------------------------------------------------------------------
# shellcheck disable=SC2034  # read by the exit hook
DONE=1
[[ $FAILED -eq 0 ]] # the exit hook prints the count line
