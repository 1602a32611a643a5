#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR/..
# regress/crash.sh 15|18 — a randomized crash test: a connector replicates a
# source database under a concurrent pgbench load while, at random moments,
# its worker is killed, the destination crashes or the source restarts; after
# each crash it must catch up by itself, with every row exactly once.
#
# Builds and installs synchdb for that version (unless SYNCHDB_SKIP_BUILD=1),
# then starts two clusters of that version:
#
#   destination  127.0.0.1:259<VER>   (25915 / 25918) shared_preload_libraries=synchdb,
#                                      database crashdst, where the copies land in
#                                      schema crashsrc (named after the source database)
#   source       127.0.0.1:2592<V>    (25925 / 25928, V = last digit of VER)
#                                      wal_level=logical, database crashsrc
#
# (below the kernel's ephemeral port range, and apart from regress/autolaunch.sh's
# 258xx). The source holds pgbench's tables (pgbench -i -s 5) and a table
# without a key, "keyless" (REPLICA IDENTITY FULL, duplicate rows, NULLs), which
# the load inserts into, updates and deletes from in the same transactions as
# pgbench's own. The connector replicates all of public, as role synchdb_src
# with a scram password.
#
# Each point starts the load (the connector's snapshot too, for a snapshot
# point), crashes something after a random delay while the load runs, lets the
# load run on for a random while, stops it, waits (at most SYNCHDB_CRASH_WAIT,
# default 120 s) until the destination has caught up by itself -- the script
# never starts a connector after a crash: a point that needs a person fails --
# and compares every replicated table with the source (row count and md5 of
# the rows in sorted order, so a row lost or applied twice shows, also between
# duplicates of the keyless table). The crashes:
#
#   worker      kill -9 of the connector's background worker (its pid in
#               synchdb_state_view): PostgreSQL reinitializes and the
#               auto-launcher starts the connector again;
#   postmaster  pg_ctl stop -m immediate of the destination, then start;
#   source      pg_ctl restart -m immediate of the source, once, during CDC:
#               the connector reconnects by itself (state restarting, then
#               polling). Not during a first snapshot: a connector that has no
#               position yet stops on a lost source, by design, so that its
#               user sees the problem.
#
# Point 0 is the baseline (a snapshot and CDC under load, no crash) and gives
# the snapshot's duration; points 1-8 are three crashes during a snapshot (the
# connector is created afresh for each: stopped, deleted, its schema dropped,
# added and started again; the crash comes a random part of the baseline's
# snapshot time after the worker logs "snapshot of") and five during CDC (a
# random 0.5-6 s after the load starts), followed by 0.5-4 s more of load, in
# an order and with delays drawn from $RANDOM seeded with SYNCHDB_CRASH_SEED
# (default 20261201): the plan depends on the seed only, and is printed.
# pgbench's own random numbers use the seed too. Besides the rows, a point
# checks that the source has exactly one replication slot left (the
# connector's: a crash must not leak one, it would pin WAL for good) and that
# no server process died by itself. After a failed point the connector is
# created afresh before the next one, so that one failure does not make every
# later point fail.
#
# Two last points are not random: kill -9 of the worker while it builds an index of
# a table created on the source during CDC (afterwards the table is there once,
# with each of its indexes exactly once), and while a large transaction is open
# on the source and already streamed to the worker (it arrives once, whole).
#
# One line per point: "point N (what, when): table ok, table ok, ..."; the
# last line printed is exactly "N passed, N failed" (N = points); the exit
# status is non-zero if any point failed. Timings, and the details of a
# failure (diffs of the rows, the connector's state, its log lines), go to
# stderr. SYNCHDB_KEEP_TMP=1 keeps the work directory (data directories, server
# logs, pgbench's log).
# Other knobs: SYNCHDB_CRASH_SCALE (pgbench scale, default 5),
# SYNCHDB_CRASH_RATE (load in transactions per second, default 300).
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
PGENV_TAG="crash PG$VER"
DST_PORT=259$VER
SRC_PORT=2592${VER#1}
SRC_USER=synchdb_src
SRC_PASSWORD=synchdb_pw
SRC_DB=crashsrc
DST_DB=crashdst
SCALE=${SYNCHDB_CRASH_SCALE:-5}
RATE=${SYNCHDB_CRASH_RATE:-300}
CATCHUP_SECS=${SYNCHDB_CRASH_WAIT:-120}
SEED=${SYNCHDB_CRASH_SEED:-20261201}
[[ $SEED =~ ^[0-9]+$ ]] || pgenv_die "SYNCHDB_CRASH_SEED must be a number, not '$SEED'"
RANDOM=$SEED
# every table of the source's public schema: all are replicated and compared
TABLES=(pgbench_accounts pgbench_branches pgbench_history pgbench_tellers keyless)

PASSED=0
FAILED=0
DONE=0
# The count line is printed at exit, by the hook registered first, so that it
# comes last: after the clusters have been stopped and any log tails shown. A
# run that dies early (a setup step, a signal) counts one more failure.
# shellcheck disable=SC2016  # expanded when the hook runs
pgenv_on_exit 'if [[ $DONE -eq 0 ]]; then FAILED=$((FAILED + 1)); fi; echo "$PASSED passed, $FAILED failed"'

ensure_cargo_path
ensure_test_user
PG_CONFIG=$(pg_config_for "$VER")
BINDIR=$("$PG_CONFIG" --bindir)

pgenv_workdir "crash$VER"
WORK=$PGENV_WORKDIR
DST=$WORK/dst
SRC=$WORK/src
DST_LOG=$(pgenv_server_log "$DST")
SRC_LOG=$(pgenv_server_log "$SRC")

pgenv_build_install "$PG_CONFIG" "$WORK"

# ---------------------------------------------------------------------------
# The plan: drawn before anything runs, so that it depends on the seed only
# ($RANDOM is used in this shell alone; a subshell would reseed it).
# ---------------------------------------------------------------------------

# rand LO HI — sets R to a number from LO to HI.
rand() { R=$(($1 + RANDOM % ($2 - $1 + 1))); }

points=(snapshot:worker snapshot:postmaster cdc:worker cdc:worker cdc:postmaster cdc:postmaster cdc:source)
if ((RANDOM % 2)); then points+=(snapshot:worker); else points+=(snapshot:postmaster); fi
for ((i = ${#points[@]} - 1; i > 0; i--)); do
    j=$((RANDOM % (i + 1)))
    tmp=${points[i]}
    points[i]=${points[j]}
    points[j]=$tmp
done
PLAN_PHASE=(baseline)
PLAN_KIND=(none)
PLAN_DELAY=(0) # snapshot: per mille of the baseline's snapshot time; cdc: ms
rand 1000 3000
PLAN_AFTER=("$R") # ms of load after the crash
for p in "${points[@]}"; do
    PLAN_PHASE+=("${p%%:*}")
    PLAN_KIND+=("${p#*:}")
    if [[ ${p%%:*} == snapshot ]]; then rand 0 950; else rand 500 6000; fi
    PLAN_DELAY+=("$R")
    rand 500 4000
    PLAN_AFTER+=("$R")
done

echo "# seed $SEED (set SYNCHDB_CRASH_SEED to change it); destination port $DST_PORT, source port $SRC_PORT"
for ((i = 1; i < ${#PLAN_PHASE[@]}; i++)); do
    if [[ ${PLAN_PHASE[i]} == snapshot ]]; then
        when="${PLAN_DELAY[i]}/1000 of the baseline's snapshot time after it began"
    else
        when="after ${PLAN_DELAY[i]} ms"
    fi
    echo "# plan point $i: ${PLAN_KIND[i]} during ${PLAN_PHASE[i]} $when, then ${PLAN_AFTER[i]} ms of load"
done

# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------

now_ms() { date +%s%3N; }
secs() { printf '%d.%d' $(($1 / 1000)) $(($1 % 1000 / 100)); } # ms -> "2.4"
sleep_ms() { sleep "$(printf '%d.%03d' $(($1 / 1000)) $(($1 % 1000)))"; }

port_of() { if [[ $1 == src ]]; then echo "$SRC_PORT"; else echo "$DST_PORT"; fi; }
db_of() { if [[ $1 == src ]]; then echo "$SRC_DB"; else echo "$DST_DB"; fi; }
schema_of() { if [[ $1 == src ]]; then echo public; else echo "$SRC_DB"; fi; }

# sql src|dst STATEMENT... — a setup step: any error ends the run.
sql() {
    local side=$1
    shift
    local args=() s
    for s in "$@"; do args+=(-c "$s"); done
    PGCONNECT_TIMEOUT=10 "$BINDIR/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$(port_of "$side")" \
        -U "$PGENV_SUPERUSER" -d "$(db_of "$side")" "${args[@]}" </dev/null >/dev/null ||
        pgenv_die "setup failed on the $side: $*"
}

# val src|dst QUERY — one value, unaligned; "<error>" when the query fails.
val() {
    PGCONNECT_TIMEOUT=10 "$BINDIR/psql" -X -q -At -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$(port_of "$1")" \
        -U "$PGENV_SUPERUSER" -d "$(db_of "$1")" -c "$2" </dev/null 2>>"$WORK/psql.err" || echo "<error>"
}

# wait_true src|dst QUERY SECS — polls QUERY (a boolean) until true.
wait_true() {
    local deadline=$((SECONDS + $3))
    while ((SECONDS < deadline)); do
        [[ $(val "$1" "$2") == t ]] && return 0
        sleep 0.2
    done
    return 1
}

# fp_cheap src|dst — per table: row count and the sum of the rows' hashes
# (order-independent, counts duplicates); cheap enough to poll.
fp_cheap() {
    local q="" t schema
    schema=$(schema_of "$1")
    for t in "${TABLES[@]}"; do
        q+="${q:+ UNION ALL }SELECT '$t:' || count(*) || ':' || coalesce(sum(hashtext(x::text)::bigint), 0) FROM $schema.$t x"
    done
    val "$1" "SELECT string_agg(f, ' ') FROM ($q) s(f)"
}

# fp_full src|dst TABLE — row count and md5 of all rows sorted (all columns).
fp_full() {
    val "$1" "SELECT count(*) || ' ' || md5(coalesce(string_agg(x::text, E'\n' ORDER BY x::text COLLATE \"C\"), ''))
                FROM $(schema_of "$1").$2 x"
}

# rows_of src|dst TABLE — the table's rows as text, sorted (for diffs).
rows_of() {
    "$BINDIR/psql" -X -q -At -h 127.0.0.1 -p "$(port_of "$1")" -U "$PGENV_SUPERUSER" -d "$(db_of "$1")" \
        -c "SELECT x::text FROM $(schema_of "$1").$2 x ORDER BY x::text COLLATE \"C\"" </dev/null 2>&1 || true
}

log_size() { stat -c %s "$1"; }
log_since() { tail -c +"$(($2 + 1))" "$1"; }
count_log() { log_since "$1" "$2" | grep -cE -- "$3" || true; }
# wait_log OFFSET REGEX SECS — waits until the destination's log has a line
# matching REGEX after byte OFFSET (polled every 20 ms: it is only a file).
wait_log() {
    local deadline=$((SECONDS + $3))
    while ((SECONDS < deadline)); do
        log_since "$DST_LOG" "$1" | grep -E -- "$2" >/dev/null && return 0
        sleep 0.02
    done
    return 1
}

# ---------------------------------------------------------------------------
# The load: pgbench's TPC-B-like transaction plus changes of the keyless table
# (two identical rows and one with a NULL, for one k; an update of every row
# of that k; deletes of one row of that k and two of another: about as many
# rows go as come, so the table, which the destination scans for every change
# of a row without a key, does not grow), all in one transaction. Two
# transactions can deadlock on the keyless rows; --max-tries retries them.
# ---------------------------------------------------------------------------
cat >"$WORK/load.sql" <<'EOF'
\set aid random(1, 100000 * :sf)
\set bid random(1, :sf)
\set tid random(1, 10 * :sf)
\set delta random(-5000, 5000)
\set k random(1, 200)
\set k2 random(1, 200)
BEGIN;
UPDATE pgbench_accounts SET abalance = abalance + :delta WHERE aid = :aid;
SELECT abalance FROM pgbench_accounts WHERE aid = :aid;
UPDATE pgbench_tellers SET tbalance = tbalance + :delta WHERE tid = :tid;
UPDATE pgbench_branches SET bbalance = bbalance + :delta WHERE bid = :bid;
INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (:tid, :bid, :aid, :delta, CURRENT_TIMESTAMP);
INSERT INTO keyless (k, v, note) VALUES (:k, :delta % 3, 'load'), (:k, :delta % 3, 'load'), (:k, :delta % 3, NULL);
UPDATE keyless SET v = v + 1 WHERE k = :k;
DELETE FROM keyless WHERE ctid = (SELECT ctid FROM keyless WHERE k = :k LIMIT 1);
DELETE FROM keyless WHERE ctid = (SELECT ctid FROM keyless WHERE k = :k2 LIMIT 1);
DELETE FROM keyless WHERE ctid = (SELECT ctid FROM keyless WHERE k = :k2 LIMIT 1);
END;
EOF
chmod 644 "$WORK/load.sql"

LOAD_PID=""
# start_load SEED — pgbench against the source, in the background.
start_load() {
    "$BINDIR/pgbench" -n -h 127.0.0.1 -p "$SRC_PORT" -U "$PGENV_SUPERUSER" -c 4 -j 2 -T 3600 -R "$RATE" \
        --max-tries=10 --random-seed="$1" -D sf="$SCALE" -f "$WORK/load.sql" "$SRC_DB" \
        </dev/null >>"$WORK/pgbench.log" 2>&1 &
    LOAD_PID=$!
}
# stop_load — ends pgbench and waits until the source has no pgbench session
# left (a transaction it sent COMMIT for may still be committing).
stop_load() {
    if [[ -n $LOAD_PID ]]; then
        kill -TERM "$LOAD_PID" 2>/dev/null || true
        wait "$LOAD_PID" 2>/dev/null || true
        LOAD_PID=""
    fi
    wait_true src "SELECT count(*) = 0 FROM pg_stat_activity WHERE application_name = 'pgbench'" 30 ||
        pgenv_log "pgbench sessions still on the source after 30 s"
}

# ---------------------------------------------------------------------------
# The clusters
# ---------------------------------------------------------------------------
# shellcheck disable=SC2016  # expanded when the hook runs
pgenv_on_exit 'if [[ $PGENV_EXIT_RC -ne 0 || $FAILED -ne 0 ]]; then pgenv_tail_logs 80 "$DST" "$SRC"; fi'
# synchdb.source_decoding_work_mem, the logical_decoding_work_mem the
# connector sets for its walsender: the last point's large transaction is streamed
PGENV_HBA=$PGENV_SYNCHDB_HBA start_cluster "$BINDIR" "$SRC" "$SRC_PORT" <<EOF
wal_level = logical
max_replication_slots = 10
max_wal_senders = 10
password_encryption = 'scram-sha-256'
EOF
start_cluster "$BINDIR" "$DST" "$DST_PORT" <<EOF
shared_preload_libraries = 'synchdb'
max_worker_processes = 16
log_min_messages = info
synchdb.source_decoding_work_mem = 64kB
${SYNCHDB_EXTRA_CONF:-}
EOF
# registered after the clusters: runs before they are stopped
# shellcheck disable=SC2016  # expanded when the hook runs
pgenv_on_exit 'if [[ -n $LOAD_PID ]]; then kill -TERM "$LOAD_PID" 2>/dev/null; wait "$LOAD_PID" 2>/dev/null; fi'

PGCONNECT_TIMEOUT=10 "$BINDIR/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$SRC_PORT" \
    -U "$PGENV_SUPERUSER" -d postgres </dev/null >/dev/null \
    -c "SET password_encryption = 'scram-sha-256'" \
    -c "CREATE ROLE $SRC_USER LOGIN REPLICATION SUPERUSER PASSWORD '$SRC_PASSWORD'" \
    -c "CREATE DATABASE $SRC_DB" || pgenv_die "setup of the source failed"
PGCONNECT_TIMEOUT=10 "$BINDIR/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$DST_PORT" \
    -U "$PGENV_SUPERUSER" -d postgres -c "CREATE DATABASE $DST_DB" </dev/null >/dev/null ||
    pgenv_die "setup of the destination failed"
"$BINDIR/pgbench" -i -q -s "$SCALE" -h 127.0.0.1 -p "$SRC_PORT" -U "$PGENV_SUPERUSER" "$SRC_DB" \
    </dev/null >"$WORK/pgbench-init.log" 2>&1 || {
    tail -n 20 "$WORK/pgbench-init.log" >&2
    pgenv_die "pgbench -i failed"
}
sql src "CREATE TABLE keyless (k int NOT NULL, v int, note text)" \
    "ALTER TABLE keyless REPLICA IDENTITY FULL" \
    "INSERT INTO keyless SELECT g % 200 + 1, g % 3, CASE WHEN g % 10 = 0 THEN NULL ELSE 'init' END
       FROM generate_series(1, 1000) g"
sql dst "CREATE EXTENSION synchdb"

# ---------------------------------------------------------------------------
# The connector
# ---------------------------------------------------------------------------
GEN=0
CONN=""

pid_of_conn() { val dst "SELECT pid FROM synchdb_state_view WHERE name = '$CONN'"; }
conn_status() {
    val dst "SELECT 'pid ' || pid || ', stage ' || stage || ', state ' || state || ', err ' || quote_literal(err)
               FROM synchdb_state_view WHERE name = '$CONN'"
}

# new_connector — removes the current connector (stopped, deleted: its slot and
# publication go too) and its tables, and adds a new one, not started.
new_connector() {
    stop_load
    if [[ -n $CONN ]]; then
        sql dst "SELECT synchdb_stop_engine_bgw('$CONN')"
        wait_true dst "SELECT pid <= 0 FROM synchdb_state_view WHERE name = '$CONN'" 60 ||
            pgenv_die "connector $CONN did not stop: $(conn_status)"
        sql dst "SELECT synchdb_del_conninfo('$CONN')" "SET client_min_messages = warning" \
            "DROP SCHEMA IF EXISTS $SRC_DB CASCADE"
    fi
    GEN=$((GEN + 1))
    CONN=crash$GEN
    sql dst "SELECT synchdb_add_conninfo('$CONN', '127.0.0.1', $SRC_PORT, '$SRC_USER', '$SRC_PASSWORD',
                                         '$SRC_DB', 'public', 'null', 'null', 'postgres')"
}

start_connector() { sql dst "SELECT synchdb_start_engine_bgw('$CONN', 'initial')"; }

# caught_up — waits (at most CATCHUP_SECS) until the copies have the source's
# rows and the connector streams; the load must be stopped.
caught_up() {
    local want deadline=$((SECONDS + CATCHUP_SECS))
    want=$(fp_cheap src)
    while ((SECONDS < deadline)); do
        if [[ $(fp_cheap dst) == "$want" &&
            $(val dst "SELECT pid > 0 AND state = 'polling' FROM synchdb_state_view WHERE name = '$CONN'") == t ]]; then
            return 0
        fi
        sleep 0.5
    done
    return 1
}

# is_dst_child PID — whether PID is a process of the destination's postmaster.
is_dst_child() {
    local ppid
    ppid=$(sed -n 's/^PPid:[[:space:]]*//p' "/proc/$1/status" 2>/dev/null || true)
    [[ -n $ppid && $ppid == "$(head -n 1 "$DST/postmaster.pid" 2>/dev/null || true)" ]]
}

# crash worker|postmaster|source — sets CRASH_NOTE to anything worth saying.
crash() {
    local pid i
    CRASH_NOTE=""
    case $1 in
    worker)
        pid=$(pid_of_conn)
        # between a start and the worker's registration the pid is not known yet
        for ((i = 0; i < 50; i++)); do
            [[ $pid =~ ^[0-9]+$ && $pid -gt 0 ]] && break
            sleep 0.1
            pid=$(pid_of_conn)
        done
        # only a child of our destination's postmaster: never a pid reused since
        if [[ $pid =~ ^[0-9]+$ && $pid -gt 0 ]] && is_dst_child "$pid"; then
            kill -9 "$pid" || CRASH_NOTE="kill -9 $pid failed"
        else
            CRASH_NOTE="no worker to kill ($(conn_status))"
        fi
        ;;
    postmaster)
        as_test_user "$BINDIR/pg_ctl" -D "$DST" -m immediate -w -t 60 -s stop ||
            CRASH_NOTE="pg_ctl stop -m immediate failed"
        as_test_user "$BINDIR/pg_ctl" -D "$DST" -l "$DST_LOG" -w -t 120 -s start ||
            pgenv_die "the destination did not start again after its crash"
        ;;
    source)
        as_test_user "$BINDIR/pg_ctl" -D "$SRC" -l "$SRC_LOG" -m immediate -w -t 120 -s restart >/dev/null ||
            pgenv_die "the source did not start again after pg_ctl restart -m immediate"
        ;;
    esac
}

# fail WHY — the current point failed (ok=0) and its note says why (the
# point's own ok and note, which a point's body sets up)
fail() {
    ok=0
    note="${note:+$note; }$1"
}

# verdict N DESCRIPTION OK_SO_FAR NOTE — compares every table, prints the
# point's line, counts it; details of a failure go to stderr.
verdict() {
    local n=$1 desc=$2 ok=$3 note=$4 t s d parts=() bad=()
    for t in "${TABLES[@]}"; do
        s=$(fp_full src "$t")
        d=$(fp_full dst "$t")
        if [[ $s == "$d" && $s != "<error>" ]]; then
            parts+=("$t ok")
        else
            ok=0
            bad+=("$t")
            if [[ $d == "<error>" ]]; then
                parts+=("$t MISSING on the destination")
            elif [[ ${s%% *} != "${d%% *}" ]]; then
                parts+=("$t DIFFERS (${d%% *} rows, source ${s%% *})")
            else
                parts+=("$t DIFFERS (same ${s%% *} rows, other values)")
            fi
        fi
    done
    local line="point $n ($desc): " part sep=""
    [[ -z $note ]] || line+="$note: "
    for part in "${parts[@]}"; do
        line+="$sep$part"
        sep=", "
    done
    if [[ $ok == 1 ]]; then
        PASSED=$((PASSED + 1))
        echo "$line"
    else
        FAILED=$((FAILED + 1))
        echo "$line -- FAILED"
        {
            echo "  connector $CONN: $(conn_status)"
            for t in "${bad[@]}"; do
                echo "  $t: diff source destination (first lines):"
                diff <(rows_of src "$t") <(rows_of dst "$t") | head -n 10 | sed 's/^/    /' || true
            done
            echo "  destination log since the point (synchdb lines):"
            log_since "$DST_LOG" "$POINT_OFF" | grep -E 'synchdb|connector|terminated|PANIC|FATAL' |
                tail -n 30 | sed 's/^/    /' || true
        } >&2
        UNHEALTHY=1
    fi
}

# ---------------------------------------------------------------------------
# The points
# ---------------------------------------------------------------------------
UNHEALTHY=0
COPY_MS=0
RUN_START=$SECONDS

for ((n = 0; n < ${#PLAN_PHASE[@]}; n++)); do
    phase=${PLAN_PHASE[n]}
    kind=${PLAN_KIND[n]}
    after=${PLAN_AFTER[n]}
    ok=1
    note=""

    # A CDC point needs a connector that streams; after a failure it is made anew.
    if [[ $phase == cdc && $UNHEALTHY == 1 ]]; then
        new_connector
        start_connector
        start_load $((SEED + 100 + n))
        sleep 1
        stop_load
        if ! caught_up; then
            POINT_OFF=$(log_size "$DST_LOG")
            verdict "$n" "$kind during CDC: not run, a fresh connector did not catch up" 0 \
                "the fresh connector $CONN did not catch up in ${CATCHUP_SECS}s"
            continue
        fi
        UNHEALTHY=0
    fi

    POINT_OFF=$(log_size "$DST_LOG")
    SRC_OFF=$(log_size "$SRC_LOG")
    if [[ $phase != cdc ]]; then
        new_connector
        start_load $((SEED + n))
        sleep 0.5
        start_connector
        # the copy starts once the slot exists; its line marks that moment
        wait_log "$POINT_OFF" "connector $CONN: snapshot of " 60 || note="no 'snapshot of' line within 60 s"
    else
        start_load $((SEED + n))
    fi
    t0=$(now_ms)

    if [[ $phase == baseline ]]; then
        # no crash: how long does the snapshot take under load?
        wait_log "$POINT_OFF" "connector $CONN: initial snapshot done" "$CATCHUP_SECS" || true
        COPY_MS=$(($(now_ms) - t0))
        desc="no crash: snapshot and CDC under load, the snapshot took $(secs "$COPY_MS") s"
        sleep_ms "$after"
    else
        if [[ $phase == snapshot ]]; then
            delay=$((COPY_MS * PLAN_DELAY[n] / 1000))
        else
            delay=${PLAN_DELAY[n]}
        fi
        left=$((delay - ($(now_ms) - t0)))
        ((left <= 0)) || sleep_ms "$left"
        when="during CDC"
        if [[ $phase == snapshot ]]; then
            if [[ $(count_log "$DST_LOG" "$POINT_OFF" "connector $CONN: initial snapshot done") -eq 0 ]]; then
                when="during the snapshot"
            else
                when="just after the snapshot"
            fi
        fi
        elapsed=$(($(now_ms) - t0))
        crash "$kind"
        case $kind in
        worker) what="kill -9 worker" ;;
        postmaster) what="immediate stop/start of the destination" ;;
        source) what="immediate restart of the source" ;;
        esac
        if [[ $phase == snapshot ]]; then
            desc="$what $when, $elapsed ms after it began"
        else
            desc="$what $when after $(secs "$elapsed") s"
        fi
        pgenv_log "point $n: $desc (crash took $(secs $(($(now_ms) - t0 - elapsed))) s)"
        if [[ -n $CRASH_NOTE ]]; then
            fail "$CRASH_NOTE"
        fi
        if [[ $kind == source ]]; then
            # pgbench's sessions died with the source: a new load while the
            # connector reconnects
            stop_load
            start_load $((SEED + 50 + n))
        fi
        sleep_ms "$after"
    fi
    stop_load
    t1=$(now_ms)
    if caught_up; then
        pgenv_log "point $n: caught up $(secs $(($(now_ms) - t1))) s after the load stopped"
    else
        fail "not caught up after ${CATCHUP_SECS}s"
    fi
    if [[ $kind == source ]]; then
        desc+=", $(count_log "$DST_LOG" "$POINT_OFF" "connector $CONN: transient error, reconnecting") reconnect attempt(s)"
    fi
    if [[ $(count_log "$DST_LOG" "$POINT_OFF" 'terminated by signal (4|6|7|8|11)|PANIC:') -ne 0 ||
        $(count_log "$SRC_LOG" "$SRC_OFF" 'terminated by signal (4|6|7|8|11)|PANIC:') -ne 0 ]]; then
        fail "a server process crashed by itself (see the log)"
    fi
    slots=$(val src "SELECT count(*) || ' (' || coalesce(string_agg(slot_name, ', '), '') || ')'
                       FROM pg_replication_slots WHERE NOT temporary")
    if [[ $slots != "1 ("*"_${CONN}_"* ]]; then
        fail "replication slots on the source: $slots, want only $CONN's"
    fi
    t1=$(now_ms)
    verdict "$n" "$desc" "$ok" "$note"
    pgenv_log "point $n: compared in $(secs $(($(now_ms) - t1))) s"
done
# ---------------------------------------------------------------------------
# The last point, not random: kill -9 of the worker while it builds an index
# of a table created on the source while the connector streams (the new
# table's copy is one destination transaction). After the auto-launch the table
# is copied again, and each of its indexes exists exactly once. The index is
# made slow on the destination only: its expression calls public.slow_key,
# which sleeps there and not on the source.
# ---------------------------------------------------------------------------
n=${#PLAN_PHASE[@]}
POINT_OFF=$(log_size "$DST_LOG")
SRC_OFF=$(log_size "$SRC_LOG")
ok=1
note=""
if [[ $UNHEALTHY == 1 ]]; then
    new_connector
    start_connector
fi
stop_load
if ! caught_up; then
    fail "the connector did not stream before the point"
fi
sql dst "CREATE FUNCTION public.slow_key(i int) RETURNS int LANGUAGE plpgsql IMMUTABLE AS
           'BEGIN PERFORM pg_sleep(0.02); RETURN i; END'"
sql src "CREATE FUNCTION public.slow_key(i int) RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT i'" \
    "CREATE TABLE slowidx (id int PRIMARY KEY, v text)" \
    "INSERT INTO slowidx SELECT g, 'v' || g FROM generate_series(1, 300) g" \
    "CREATE INDEX slowidx_slow ON slowidx (public.slow_key(id))" \
    "CREATE INDEX slowidx_v ON slowidx (v)"
TABLES+=(slowidx)
pid=$(pid_of_conn)
# CREATE INDEX holds a ShareLock on its table; the table is not in pg_class
# for anyone else yet (the copy's transaction has not committed)
building="SELECT EXISTS (SELECT 1 FROM pg_locks l WHERE l.locktype = 'relation' AND l.mode = 'ShareLock'
                            AND l.granted AND l.pid = $pid)"
if wait_true dst "$building" 60; then
    crash worker
    [[ -z $CRASH_NOTE ]] || fail "$CRASH_NOTE"
else
    fail "the worker was not seen building the new table's index within 60 s"
fi
if caught_up; then
    pgenv_log "point $n: caught up after the crash during the index build"
else
    fail "not caught up after ${CATCHUP_SECS}s"
fi
indexes=$(val dst "SELECT string_agg(indexname, ', ' ORDER BY indexname) FROM pg_indexes
                    WHERE schemaname = '$SRC_DB' AND tablename = 'slowidx'")
if [[ $indexes != "slowidx_pkey, slowidx_slow, slowidx_v" ]]; then
    fail "indexes of slowidx on the destination: $indexes"
fi
verdict "$n" "kill -9 worker while it builds an index of a table created during CDC; indexes after: $indexes" "$ok" "$note"

# ---------------------------------------------------------------------------
# Another point, not random either: kill -9 of the worker while a large
# transaction is open on the source and already streamed to it (the source
# streams any transaction over the connector's logical_decoding_work_mem,
# 64 kB here): what the worker kept of it goes with the worker; after the
# auto-launch the source sends it again, whole, once it commits, and it is
# applied once. It waits, open, on an advisory lock that a session of its
# own holds past the crash.
# ---------------------------------------------------------------------------
n=$((n + 1))
POINT_OFF=$(log_size "$DST_LOG")
ok=1
note=""
sql src "CREATE TABLE bigtx (id int PRIMARY KEY, v text)"
TABLES+=(bigtx)
caught_up || fail "the new table bigtx did not arrive"
streamed="SELECT coalesce(sum(stream_txns), 0) FROM pg_stat_replication_slots WHERE slot_name LIKE 'synchdb\_${CONN}\_%'"
before=$(val src "$streamed")
PGAPPNAME=crash_gate "$BINDIR/psql" -X -q -h 127.0.0.1 -p "$SRC_PORT" -U "$PGENV_SUPERUSER" -d "$SRC_DB" \
    -c 'SELECT pg_advisory_lock(42)' -c 'SELECT pg_sleep(600)' </dev/null >/dev/null 2>&1 &
wait_true src "SELECT count(*) = 1 FROM pg_locks WHERE locktype = 'advisory' AND objid = 42 AND granted" 30 || fail "the lock session did not start"
"$BINDIR/psql" -X -q -h 127.0.0.1 -p "$SRC_PORT" -U "$PGENV_SUPERUSER" -d "$SRC_DB" -c 'BEGIN' \
    -c "INSERT INTO bigtx SELECT g, repeat('x', 100) FROM generate_series(1, 50000) g" \
    -c 'SELECT pg_advisory_xact_lock(42)' -c "UPDATE bigtx SET v = 'updated' WHERE id % 7 = 0" -c 'COMMIT' \
    </dev/null >/dev/null 2>&1 &
BIG_PID=$!
if wait_true src "SELECT count(*) = 1 FROM pg_locks WHERE locktype = 'advisory' AND objid = 42 AND NOT granted" 60 &&
    wait_true src "SELECT ($streamed) > $before" 60; then
    crash worker
    [[ -z $CRASH_NOTE ]] || fail "$CRASH_NOTE"
else
    fail "the large transaction was not seen streamed within 60 s"
fi
val src "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'crash_gate'" >/dev/null
wait "$BIG_PID" || true
if caught_up; then
    pgenv_log "point $n: caught up after the crash during a streamed transaction"
else
    fail "not caught up after ${CATCHUP_SECS}s"
fi
verdict "$n" "kill -9 worker while a streamed transaction is open on the source" "$ok" "$note"
pgenv_log "points done in $((SECONDS - RUN_START)) s"

# ---------------------------------------------------------------------------
# shellcheck disable=SC2034  # read by the exit hook
DONE=1
[[ $FAILED -eq 0 ]] # the exit hook prints the count line
