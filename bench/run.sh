#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR/..
# bench/run.sh [15|18] [--quick] — synchdb vs PostgreSQL's built-in logical
# replication, side by side, on the same data, in one run.
#
# Layout (all on 127.0.0.1, throwaway clusters under $TMPDIR/synchdb-bench.*):
#   source       port 25470  wal_level=logical, database "benchsrc"
#   destination  port 25471  shared_preload_libraries=synchdb, two databases:
#                  dst_synchdb  CREATE EXTENSION synchdb; connector "benchconn"
#                               (tables land in schema benchsrc)
#                  dst_builtin  CREATE SUBSCRIPTION bench_sub (tables in public)
#   Both replicas live in the same destination cluster, so they run with
#   exactly the same server settings.
#
# Method: ONE AFTER THE OTHER on identical data. A 2-core machine cannot run
# a source workload and two appliers at once without them stealing CPU from
# each other, so every measurement has one replica working alone:
#   1. initial copy: synchdb's snapshot, then CREATE SUBSCRIPTION (copy_data
#      defaults to true); the source does not change in between.
#   2./3. CDC: both replicas are paused (synchdb_stop_engine_bgw /
#      ALTER SUBSCRIPTION ... DISABLE; their slots keep the WAL), the workload
#      runs on the source, a marker row is committed last, then each replica
#      is resumed alone and timed until the marker row is visible on its
#      destination (everything before it was applied, in commit order) and
#      until its slot's confirmed_flush_lsn reaches the source's
#      pg_current_wal_lsn() taken after the marker. Both replicas decode and
#      apply the very same WAL. The order alternates between scenarios.
#   After each replica caught up, its tables are compared with the source.
#
# Peak memory of the applying process (synchdb's background worker, the
# built-in apply worker) is sampled from /proc/<pid>/status (VmRSS = what
# `ps -o rss` shows, plus RssAnon = private memory without the shared buffers
# it touched) at every poll (4 per second), along with its CPU time.
#
# --quick scales everything down ~10x (smoke run). Nothing here is a
# pass/fail threshold: the script prints ratios. It exits non-zero only if
# the setup itself fails; a failing replica is reported in the table.
set -euo pipefail
export LC_ALL=C

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/pgenv.sh
. "$REPO/scripts/pgenv.sh"
# shellcheck disable=SC2034  # log prefix used by pgenv.sh
PGENV_TAG="bench"

usage() { sed -n '2,3p' "$0" | sed 's/^# \{0,1\}//'; }

PGVER=18
QUICK=0
for arg in "$@"; do
    case $arg in
    15 | 18) PGVER=$arg ;;
    --quick) QUICK=1 ;;
    -h | --help)
        usage
        exit 0
        ;;
    *)
        usage >&2
        pgenv_die "unknown argument '$arg'"
        ;;
    esac
done

SRC_PORT=25470
DST_PORT=25471
SRC_DB=benchsrc          # synchdb puts its tables in schema "benchsrc"
DST_SDB=dst_synchdb
DST_BI=dst_builtin
DST_PGL=dst_pglogical
PGL_SUB=bench_pgl
CONN=benchconn
SUB=bench_sub
PUB=bench_pub
SRC_USER=synchdb_src     # matches the scram line of PGENV_SYNCHDB_HBA
SRC_PASSWORD=bench_pw
CLIENTS=4
THREADS=2
POLL=0.25                # seconds between polls (and memory samples)
FAST_POLL=0.05           # for the scenarios that last about a second (small
                         # tables, large transactions): a 0.25 s step would be
                         # a quarter of what is measured

if [[ $QUICK -eq 1 ]]; then
    RUN_KIND="quick run (--quick, ~10x smaller)"
    SCALE=1
    MIXED_ROWS=50000
    TPCB_SECS=3
    INS_TOTAL=50000
    SMALL_TABLES=20
    BIG_ROWS=100000
    LAG_SECS=10
    WAIT_COPY=240
    WAIT_CDC=240
else
    RUN_KIND="full run"
    SCALE=10
    MIXED_ROWS=500000
    TPCB_SECS=30
    INS_TOTAL=500000
    SMALL_TABLES=100
    BIG_ROWS=1000000
    LAG_SECS=60
    WAIT_COPY=420
    WAIT_CDC=420
fi
INS_PER_CLIENT=$((INS_TOTAL / CLIENTS))
INS_TOTAL=$((INS_PER_CLIENT * CLIENTS))
WAIT_STOP=90

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

PG_CONFIG=$(pg_config_for "$PGVER")
BINDIR=$("$PG_CONFIG" --bindir)
[[ -f "$("$PG_CONFIG" --pkglibdir)/synchdb.so" ]] ||
    pgenv_die "synchdb is not installed for PostgreSQL $PGVER ($("$PG_CONFIG" --pkglibdir)/synchdb.so missing)"
[[ -x $BINDIR/pgbench ]] || pgenv_die "no pgbench in $BINDIR"

pgenv_workdir bench
WORK=$PGENV_WORKDIR
SRC_DATA=$WORK/source
DST_DATA=$WORK/dest
SRC_LOG=$(pgenv_server_log "$SRC_DATA")
DST_LOG=$(pgenv_server_log "$DST_DATA")
# On a setup failure show what the servers said (runs after they stopped).
# shellcheck disable=SC2016  # expanded when the hook runs
pgenv_on_exit 'if [[ $PGENV_EXIT_RC -ne 0 ]]; then pgenv_tail_logs 60 "$SRC_DATA" "$DST_DATA" >&2; fi'

# Same settings on every cluster (the destination adds synchdb). fsync=off
# and full_page_writes=off come from pgenv.sh (throwaway clusters). Autovacuum
# is off so it cannot kick in during one replica's measurement and not the
# other's; the script runs VACUUM ANALYZE itself between phases, untimed.
COMMON_CONF="wal_level = logical
track_commit_timestamp = on
max_replication_slots = 10
max_wal_senders = 10
max_worker_processes = 16
shared_buffers = 1GB
max_wal_size = 8GB
checkpoint_timeout = 30min
autovacuum = off
min_wal_size = 1GB
password_encryption = 'scram-sha-256'"

# pglogical 2 (Debian's postgresql-15-pglogical) is a second peer in the
# PostgreSQL 15 run, for the initial copy and both CDC backlogs.
PGL=0
if [[ $PGVER == 15 && -f $("$PG_CONFIG" --sharedir)/extension/pglogical.control ]]; then
    PGL=1
fi
PGL_PRELOAD=""
PGL_SRC_CONF=""
if [[ $PGL == 1 ]]; then
    PGL_PRELOAD=",pglogical"
    # minor releases from 15.19 allow only listed output plugins
    if [[ $("$BINDIR/postgres" --describe-config 2>/dev/null || true) == *$'\n'output_plugin_libraries* ]]; then
        PGL_SRC_CONF="output_plugin_libraries = 'pgoutput, test_decoding, pglogical_output'"
    fi
fi

log "PostgreSQL $PGVER ($BINDIR), $RUN_KIND, work dir $WORK$([[ $PGL == 0 ]] || echo ", with pglogical")"
PGENV_HBA=$PGENV_SYNCHDB_HBA start_cluster "$BINDIR" "$SRC_DATA" "$SRC_PORT" <<EOF
$COMMON_CONF
shared_preload_libraries = '${PGL_PRELOAD#,}'
$PGL_SRC_CONF
EOF
PGENV_HBA=$PGENV_SYNCHDB_HBA start_cluster "$BINDIR" "$DST_DATA" "$DST_PORT" <<EOF
$COMMON_CONF
shared_preload_libraries = 'synchdb$PGL_PRELOAD'
EOF

# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------
# sql PORT DB SQL — unaligned, tuples only, '|' between columns; SQL is
# sent as a script, so each statement is its own transaction
sql() {
    printf '%s\n' "$3" |
        "$BINDIR/psql" -X -q -At -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$1" -U "$PGENV_SUPERUSER" \
            -d "$2" -f -
}
qs() { sql "$SRC_PORT" "$SRC_DB" "$1"; }
qsdb() { sql "$DST_PORT" "$DST_SDB" "$1"; }
qbi() { sql "$DST_PORT" "$DST_BI" "$1"; }
qpl() { sql "$DST_PORT" "$DST_PGL" "$1"; }

now() { printf '%s' "$EPOCHREALTIME"; }
# calc EXPR — float arithmetic via awk, e.g. calc "3 / 2" -> 1.5
calc() { awk "BEGIN { printf \"%.6g\", $1 }"; }
fmt_int() { awk -v x="$1" 'BEGIN { printf "%.0f", x }'; }
fmt2() { awk -v x="$1" 'BEGIN { printf "%.2f", x }'; }

# Memory/CPU of the process(es) being measured; reset by mem_reset. Peak
# memory is that of the largest single process; CPU time is summed over all
# processes seen (the last sample of each, so a process that exits loses at
# most one poll interval).
MEM_RSS=0
MEM_ANON=0
CPU_SECS=0
declare -A CPU_TICKS=()
CLK_TCK=$(getconf CLK_TCK)
mem_reset() {
    MEM_RSS=0
    MEM_ANON=0
    CPU_SECS=0
    CPU_TICKS=()
}
# mem_sample PID[,PID...] — updates the peaks and the CPU time.
mem_sample() {
    local pids pid k v rest stat total=0 f
    IFS=',' read -r -a pids <<<"$1"
    for pid in "${pids[@]}"; do
        [[ $pid =~ ^[0-9]+$ && $pid -gt 0 && -r /proc/$pid/status ]] || continue
        while read -r k v rest; do
            case $k in
            VmRSS:) ((v > MEM_RSS)) && MEM_RSS=$v ;;
            RssAnon:) ((v > MEM_ANON)) && MEM_ANON=$v ;;
            esac
        done </proc/"$pid"/status 2>/dev/null || continue
        stat=$(cat /proc/"$pid"/stat 2>/dev/null) || continue
        stat=${stat##*) }
        # fields after "(comm) ": state=0 ... utime=11 stime=12
        read -r -a f <<<"$stat"
        CPU_TICKS[$pid]=$((f[11] + f[12]))
    done
    for pid in "${!CPU_TICKS[@]}"; do
        total=$((total + CPU_TICKS[$pid]))
    done
    CPU_SECS=$(calc "$total / $CLK_TCK")
}
# proc_cpu PID — CPU seconds used so far by PID ("-" if unknown)
proc_cpu() {
    local stat f
    if [[ $1 =~ ^[0-9]+$ ]] && stat=$(cat /proc/"$1"/stat 2>/dev/null); then
        stat=${stat##*) }
        read -r -a f <<<"$stat"
        calc "(${f[11]} + ${f[12]}) / $CLK_TCK"
    else
        echo "-"
    fi
}
# walsender_cpu SLOT — CPU time of the source walsender streaming SLOT
walsender_cpu() {
    proc_cpu "$(qs "SELECT active_pid FROM pg_replication_slots WHERE slot_name = '$1'" || true)"
}
mb() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }

# ---------------------------------------------------------------------------
# source data
# ---------------------------------------------------------------------------
log "creating source database $SRC_DB: pgbench -i -s $SCALE, mixed ($MIXED_ROWS rows), ins_test, bench_marker"
sql "$SRC_PORT" postgres "SET password_encryption = 'scram-sha-256';
CREATE ROLE $SRC_USER LOGIN REPLICATION SUPERUSER PASSWORD '$SRC_PASSWORD';
CREATE DATABASE $SRC_DB;" >/dev/null
# pgbench -i creates logged tables by default (it has no --unlogged-tables=false).
"$BINDIR/pgbench" -i -q -s "$SCALE" -h 127.0.0.1 -p "$SRC_PORT" -U "$PGENV_SUPERUSER" "$SRC_DB" \
    >"$WORK/pgbench-init.log" 2>&1 || {
    cat "$WORK/pgbench-init.log" >&2
    pgenv_die "pgbench -i failed"
}
qs "CREATE TABLE mixed (
    id    int PRIMARY KEY,
    big   bigint,
    num   numeric(14,4),
    txt   text,
    vc    varchar(64),
    ts    timestamptz,
    d     date,
    flag  bool,
    doc   jsonb,
    bin   bytea,
    u     uuid,
    tags  text[]
);
INSERT INTO mixed
SELECT g,
       g::bigint * 1000003,
       CASE WHEN g % 17 = 0 THEN NULL ELSE round(g * 1.2345, 4) END,
       'text value ' || g || ' ' || repeat('x', g % 40),
       'vc-' || md5(g::text),
       timestamptz '2024-01-01 00:00:00+00' + g * interval '1 minute',
       date '2020-01-01' + g % 3650,
       CASE WHEN g % 11 = 0 THEN NULL ELSE g % 3 = 0 END,
       jsonb_build_object('id', g, 'tag', 't' || g % 100, 'arr', jsonb_build_array(g, g + 1)),
       decode(md5(g::text), 'hex'),
       gen_random_uuid(),
       ARRAY['a' || g, 'b' || g % 7]
  FROM generate_series(1, $MIXED_ROWS) AS g;
CREATE TABLE ins_test (id bigserial PRIMARY KEY, v int NOT NULL, note text);
CREATE TABLE bench_marker (id int PRIMARY KEY, what text);
CREATE PUBLICATION $PUB FOR TABLE pgbench_accounts, pgbench_branches, pgbench_tellers,
    pgbench_history, mixed, ins_test, bench_marker;
VACUUM ANALYZE;
CHECKPOINT;" >/dev/null

# The fingerprints below are computed the same way on the source and on each
# destination; S is replaced by the schema.
FP_COPY="SELECT (SELECT count(*) || '/' || sum(abalance) || '/' || sum(hashtext(a::text)::bigint) FROM S.pgbench_accounts a)
 || ' ' || (SELECT count(*) || '/' || sum(hashtext(m::text)::bigint) FROM S.mixed m)
 || ' ' || (SELECT count(*) FROM S.pgbench_branches) || '/' || (SELECT count(*) FROM S.pgbench_tellers)"
FP_TPCB="SELECT (SELECT sum(abalance) FROM S.pgbench_accounts) || '/' || (SELECT sum(bbalance) FROM S.pgbench_branches)
 || '/' || (SELECT sum(tbalance) FROM S.pgbench_tellers)
 || '/' || (SELECT count(*) || ':' || coalesce(sum(delta), 0) FROM S.pgbench_history)"
FP_INS="SELECT count(*) || '/' || coalesce(sum(v), 0) || '/' || coalesce(sum(hashtext(note)::bigint), 0) FROM S.ins_test"
fp() { printf '%s' "${1//S./$2.}"; }

SRC_ACCOUNTS=$(qs "SELECT count(*) FROM pgbench_accounts")
SRC_MIXED=$(qs "SELECT count(*) FROM mixed")
SRC_ROWS_TOTAL=$(qs "SELECT (SELECT count(*) FROM pgbench_accounts) + (SELECT count(*) FROM mixed)
  + (SELECT count(*) FROM pgbench_branches) + (SELECT count(*) FROM pgbench_tellers)
  + (SELECT count(*) FROM pgbench_history)")
SRC_FP_COPY=$(qs "$(fp "$FP_COPY" public)")
log "source: $SRC_ACCOUNTS pgbench_accounts + $SRC_MIXED mixed rows ($SRC_ROWS_TOTAL rows in all replicated tables)"

# ---------------------------------------------------------------------------
# destinations
# ---------------------------------------------------------------------------
log "creating destination databases $DST_SDB (synchdb) and $DST_BI (built-in)"
sql "$DST_PORT" postgres "CREATE DATABASE $DST_SDB; CREATE DATABASE $DST_BI;" >/dev/null
qsdb "CREATE EXTENSION synchdb;
SELECT synchdb_add_conninfo('$CONN', '127.0.0.1', $SRC_PORT, '$SRC_USER', '$SRC_PASSWORD',
                            '$SRC_DB', 'public', 'null', 'null', 'postgres');" >/dev/null
# Built-in replication needs the tables on the subscriber beforehand (schema
# only, with their primary keys, as pg_dump gives them).
"$BINDIR/pg_dump" -s -h 127.0.0.1 -p "$SRC_PORT" -U "$PGENV_SUPERUSER" \
    --no-publications --no-subscriptions -t 'public.*' "$SRC_DB" >"$WORK/schema.sql" ||
    pgenv_die "pg_dump -s of the source failed"
"$BINDIR/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$DST_PORT" -U "$PGENV_SUPERUSER" \
    -d "$DST_BI" -f "$WORK/schema.sql" >/dev/null 2>"$WORK/schema.err" || {
    cat "$WORK/schema.err" >&2
    pgenv_die "loading the schema into $DST_BI failed"
}
SUB_CONNINFO="host=127.0.0.1 port=$SRC_PORT dbname=$SRC_DB user=$SRC_USER password=$SRC_PASSWORD"
if [[ $PGL == 1 ]]; then
    # pglogical: a provider node on the source with the tables in its
    # replication sets (pgbench_history has no key: inserts only), and a
    # subscriber node in a database of its own with the same tables
    qs "CREATE EXTENSION pglogical;
SELECT pglogical.create_node(node_name := 'bench_provider', dsn := '$SUB_CONNINFO');
SELECT pglogical.replication_set_add_table('default', t)
  FROM unnest(ARRAY['pgbench_accounts', 'pgbench_branches', 'pgbench_tellers', 'mixed', 'ins_test', 'bench_marker']::regclass[]) t;
SELECT pglogical.replication_set_add_table('default_insert_only', 'pgbench_history');" >/dev/null
    sql "$DST_PORT" postgres "CREATE DATABASE $DST_PGL" >/dev/null
    "$BINDIR/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$DST_PORT" -U "$PGENV_SUPERUSER" \
        -d "$DST_PGL" -f "$WORK/schema.sql" >/dev/null 2>"$WORK/schema.err" || {
        cat "$WORK/schema.err" >&2
        pgenv_die "loading the schema into $DST_PGL failed"
    }
    qpl "CREATE EXTENSION pglogical;
SELECT pglogical.create_node(node_name := 'bench_subscriber',
                             dsn := 'host=127.0.0.1 port=$DST_PORT dbname=$DST_PGL user=$PGENV_SUPERUSER');" >/dev/null
fi

SERVER_NUM=$(qs "SHOW server_version_num")
if ((SERVER_NUM >= 160000)); then
    APPLY_FILTER="relid IS NULL AND leader_pid IS NULL"
else
    APPLY_FILTER="relid IS NULL"
fi

# ---------------------------------------------------------------------------
# results
# ---------------------------------------------------------------------------
declare -A SECS CONF_SECS RATE TXRATE NOTE RSS ANON CPU WS_CPU CHECK
SDB_BROKEN=""        # set once synchdb failed: later CDC scenarios are skipped
SDB_SLOT=""

# sdb_state — "pid|stage|state|err" of the connector (err last: it may hold '|')
sdb_state() {
    qsdb "SELECT pid, coalesce(stage, '-'), state, replace(err, E'\n', ' ') FROM synchdb_state_view WHERE name = '$CONN'" ||
        true
}
sdb_fail() { # SCENARIO MESSAGE
    local st err
    st=$(sdb_state)
    err=${st#*|*|*|}
    NOTE[sdb,$1]="FAILED: $2 (state view: pid|stage|state = ${st%|"$err"}; err = ${err:-?})"
    SDB_BROKEN="synchdb failed in scenario '$1'"
    log "synchdb FAILED in '$1': $2"
    log "  connector err: ${err:-?}"
    grep -E 'synchdb|benchconn' "$DST_LOG" | grep -E 'WARNING|ERROR|FATAL|PANIC' | tail -n 5 | sed 's/^/  dest log: /' >&2 || true
}
bi_fail() {
    NOTE[bi,$1]="FAILED: $2"
    log "built-in FAILED in '$1': $2"
    grep -E 'ERROR|FATAL|PANIC' "$DST_LOG" | grep -v synchdb | tail -n 5 | sed 's/^/  dest log: /' >&2 || true
}

# wait_slot_inactive SLOTNAME — the walsender of a paused replica has gone.
wait_slot_inactive() {
    local slot=$1 deadline=$((SECONDS + WAIT_STOP)) a
    while :; do
        a=$(qs "SELECT active FROM pg_replication_slots WHERE slot_name = '$slot'")
        [[ $a == t ]] || return 0
        ((SECONDS < deadline)) || {
            log "slot $slot still active after ${WAIT_STOP}s"
            return 1
        }
        sleep "$POLL"
    done
}

sdb_stop() {
    qsdb "SELECT synchdb_stop_engine_bgw('$CONN')" >/dev/null || log "synchdb_stop_engine_bgw failed"
    local deadline=$((SECONDS + WAIT_STOP)) st
    while :; do
        st=$(sdb_state)
        [[ ${st%%|*} == -1 ]] && break
        ((SECONDS < deadline)) || {
            log "synchdb worker still running after ${WAIT_STOP}s: $st"
            return 1
        }
        sleep "$POLL"
    done
    [[ -z $SDB_SLOT ]] || wait_slot_inactive "$SDB_SLOT"
}

bi_apply_pid() {
    qbi "SELECT pid FROM pg_stat_subscription WHERE subname = '$SUB' AND $APPLY_FILTER AND pid IS NOT NULL LIMIT 1" || true
}
bi_disable() {
    qbi "ALTER SUBSCRIPTION $SUB DISABLE" >/dev/null || log "ALTER SUBSCRIPTION DISABLE failed"
    local deadline=$((SECONDS + WAIT_STOP))
    while [[ -n $(qbi "SELECT pid FROM pg_stat_subscription WHERE subname = '$SUB' AND pid IS NOT NULL LIMIT 1" || true) ]]; do
        ((SECONDS < deadline)) || {
            log "built-in workers still running ${WAIT_STOP}s after DISABLE"
            return 1
        }
        sleep "$POLL"
    done
    wait_slot_inactive "$SUB"
}

prepare_measurement() {
    qs "VACUUM ANALYZE; CHECKPOINT" >/dev/null
    qsdb "VACUUM ANALYZE" >/dev/null 2>&1 || true
    qbi "VACUUM ANALYZE" >/dev/null 2>&1 || true
    [[ $PGL == 0 ]] || qpl "VACUUM ANALYZE" >/dev/null 2>&1 || true
    sql "$DST_PORT" postgres "CHECKPOINT" >/dev/null
    # the checkpoints' writes (fsync is off) still sit in the page cache: write
    # them out now, not during whichever replica is measured next
    sync
}

# Warm-up, untimed: a new cluster's first big writer zero-fills the WAL
# segments it writes (later writers reuse them once a checkpoint recycled
# them; min_wal_size keeps them) and is the first to touch the pages of
# shared_buffers (the kernel zeroes each on its first touch). The initial copy
# measured first (synchdb's) paid for both (see README: up to a third of its
# time in a harness). An INSERT (not COPY or CREATE TABLE AS, whose
# ring buffer touches 16 MB) of about shared_buffers' size does both for
# every replica measured after it.
WARM_ROWS=$((QUICK == 1 ? 400000 : 4000000))
log "warming up the destination (WAL segments, shared buffers): $WARM_ROWS rows written and dropped, untimed"
sql "$DST_PORT" postgres "CREATE TABLE bench_warmup (g int, pad text);
INSERT INTO bench_warmup SELECT g, repeat('x', 200) FROM generate_series(1, $WARM_ROWS) g;
DROP TABLE bench_warmup;
CHECKPOINT" >/dev/null

# ---------------------------------------------------------------------------
# 1. initial copy
# ---------------------------------------------------------------------------
S1="copy"
copy_synchdb() {
    local t0 deadline st pid state err have cnt
    mem_reset
    prepare_measurement
    log "[initial copy] synchdb: synchdb_start_engine_bgw('$CONN')"
    t0=$(now)
    deadline=$((SECONDS + WAIT_COPY))
    qsdb "SELECT synchdb_start_engine_bgw('$CONN')" >/dev/null || {
        sdb_fail "$S1" "synchdb_start_engine_bgw failed"
        return 0
    }
    while :; do
        # the worker and its copy helpers
        st=$(qsdb "SELECT concat_ws(',', v.pid, (SELECT string_agg(pid::text, ',') FROM pg_stat_activity
                                                  WHERE backend_type = 'synchdb copy helper')),
                          v.state, to_regclass('$SRC_DB.pgbench_accounts') IS NOT NULL
                          AND to_regclass('$SRC_DB.mixed') IS NOT NULL,
                          replace(v.err, E'\n', ' ')
                     FROM synchdb_state_view v WHERE v.name = '$CONN'") || st="-1|?|f|psql failed"
        IFS='|' read -r pid state have err <<<"$st"
        mem_sample "$pid"
        if [[ $err != "no error" ]]; then
            sdb_fail "$S1" "the connector reported an error during the snapshot"
            return 0
        fi
        if [[ $have == t ]]; then
            cnt=$(qsdb "SELECT (SELECT count(*) FROM $SRC_DB.pgbench_accounts) || '|' || (SELECT count(*) FROM $SRC_DB.mixed)") || cnt="?"
            if [[ $cnt == "$SRC_ACCOUNTS|$SRC_MIXED" ]]; then
                SECS[sdb,$S1]=$(calc "$(now) - $t0")
                break
            fi
        fi
        if ((SECONDS >= deadline)); then
            sdb_fail "$S1" "timeout: tables not complete after ${WAIT_COPY}s (state=$state, tables present=$have)"
            return 0
        fi
        sleep "$POLL"
    done
    RSS[sdb,$S1]=$MEM_RSS ANON[sdb,$S1]=$MEM_ANON CPU[sdb,$S1]=$CPU_SECS
    RATE[sdb,$S1]=$(calc "$SRC_ROWS_TOTAL / ${SECS[sdb,$S1]}")
    SDB_SLOT=$(qs "SELECT slot_name FROM pg_replication_slots WHERE slot_name LIKE 'synchdb\_${CONN}\_%' LIMIT 1")
    log "[initial copy] synchdb done in ${SECS[sdb,$S1]} s (slot $SDB_SLOT)"
    local got
    got=$(qsdb "$(fp "$FP_COPY" "$SRC_DB")" 2>&1) || true
    if [[ $got == "$SRC_FP_COPY" ]]; then CHECK[sdb,$S1]="data identical"; else
        CHECK[sdb,$S1]="DATA DIFFERS: source $SRC_FP_COPY, synchdb $got"
        log "[initial copy] synchdb ${CHECK[sdb,$S1]}"
    fi
}

copy_builtin() {
    local t0 deadline st notready total pid serr aerr cnt
    mem_reset
    prepare_measurement
    log "[initial copy] built-in: CREATE SUBSCRIPTION $SUB (copy_data = true by default)"
    t0=$(now)
    deadline=$((SECONDS + WAIT_COPY))
    qbi "CREATE SUBSCRIPTION $SUB CONNECTION '$SUB_CONNINFO' PUBLICATION $PUB" >/dev/null 2>"$WORK/sub.err" || {
        bi_fail "$S1" "CREATE SUBSCRIPTION failed: $(cat "$WORK/sub.err")"
        return 1
    }
    while :; do
        st=$(qbi "SELECT (SELECT count(*) FILTER (WHERE srsubstate <> 'r') FROM pg_subscription_rel),
                         (SELECT count(*) FROM pg_subscription_rel),
                         coalesce((SELECT string_agg(pid::text, ',') FROM pg_stat_subscription WHERE subname = '$SUB' AND pid IS NOT NULL), '-1'),
                         (SELECT sync_error_count || '|' || apply_error_count FROM pg_stat_subscription_stats WHERE subname = '$SUB')") ||
            st="1|0|-1|0|0"
        IFS='|' read -r notready total pid serr aerr <<<"$st"
        mem_sample "$pid"
        if [[ $notready == 0 && $total -gt 0 ]]; then
            cnt=$(qbi "SELECT (SELECT count(*) FROM public.pgbench_accounts) || '|' || (SELECT count(*) FROM public.mixed)")
            if [[ $cnt == "$SRC_ACCOUNTS|$SRC_MIXED" ]]; then
                SECS[bi,$S1]=$(calc "$(now) - $t0")
                break
            fi
        fi
        if ((SECONDS >= deadline)); then
            bi_fail "$S1" "timeout after ${WAIT_COPY}s: $notready of $total tables not ready, sync errors $serr, apply errors $aerr"
            return 1
        fi
        sleep "$POLL"
    done
    [[ ${serr:-0} == 0 && ${aerr:-0} == 0 ]] || NOTE[bi,$S1]="sync errors $serr, apply errors $aerr (retried)"
    RSS[bi,$S1]=$MEM_RSS ANON[bi,$S1]=$MEM_ANON CPU[bi,$S1]=$CPU_SECS
    RATE[bi,$S1]=$(calc "$SRC_ROWS_TOTAL / ${SECS[bi,$S1]}")
    log "[initial copy] built-in done in ${SECS[bi,$S1]} s"
    local got
    got=$(qbi "$(fp "$FP_COPY" public)" 2>&1) || true
    if [[ $got == "$SRC_FP_COPY" ]]; then CHECK[bi,$S1]="data identical"; else
        CHECK[bi,$S1]="DATA DIFFERS: source $SRC_FP_COPY, built-in $got"
        log "[initial copy] built-in ${CHECK[bi,$S1]}"
    fi
}

# pglogical: the processes of the subscriber database (apply, sync workers)
pgl_pids() {
    qpl "SELECT coalesce(string_agg(pid::text, ','), '-1') FROM pg_stat_activity
          WHERE backend_type LIKE 'pglogical%' AND datname = '$DST_PGL'" || echo -1
}
pgl_fail() {
    NOTE[pgl,$1]="FAILED: $2"
    log "pglogical FAILED in '$1': $2"
    PGL_OK=0
}
PGL_SLOT=""
copy_pglogical() {
    local t0 deadline st status notready total cnt
    mem_reset
    prepare_measurement
    log "[initial copy] pglogical: pglogical.create_subscription (synchronize_data)"
    t0=$(now)
    deadline=$((SECONDS + WAIT_COPY))
    qpl "SELECT pglogical.create_subscription(subscription_name := '$PGL_SUB', provider_dsn := '$SUB_CONNINFO',
                                              replication_sets := ARRAY['default', 'default_insert_only'],
                                              synchronize_structure := false, synchronize_data := true,
                                              forward_origins := '{}')" >/dev/null 2>"$WORK/pgl.err" || {
        pgl_fail "$S1" "create_subscription failed: $(cat "$WORK/pgl.err")"
        return 1
    }
    while :; do
        st=$(qpl "SELECT (SELECT status FROM pglogical.show_subscription_status('$PGL_SUB')),
                         (SELECT count(*) FILTER (WHERE sync_status <> 'r') FROM pglogical.local_sync_status WHERE sync_relname IS NOT NULL),
                         (SELECT count(*) FROM pglogical.local_sync_status WHERE sync_relname IS NOT NULL)") || st="?|1|0"
        IFS='|' read -r status notready total <<<"$st"
        mem_sample "$(pgl_pids)"
        if [[ $status == replicating && $notready == 0 && $total -gt 0 ]]; then
            cnt=$(qpl "SELECT (SELECT count(*) FROM public.pgbench_accounts) || '|' || (SELECT count(*) FROM public.mixed)")
            if [[ $cnt == "$SRC_ACCOUNTS|$SRC_MIXED" ]]; then
                SECS[pgl,$S1]=$(calc "$(now) - $t0")
                break
            fi
        fi
        if ((SECONDS >= deadline)); then
            pgl_fail "$S1" "timeout after ${WAIT_COPY}s: status $status, $notready of $total tables not ready"
            return 1
        fi
        sleep "$POLL"
    done
    RSS[pgl,$S1]=$MEM_RSS ANON[pgl,$S1]=$MEM_ANON CPU[pgl,$S1]=$CPU_SECS
    RATE[pgl,$S1]=$(calc "$SRC_ROWS_TOTAL / ${SECS[pgl,$S1]}")
    PGL_SLOT=$(qpl "SELECT slot_name FROM pglogical.show_subscription_status('$PGL_SUB')")
    log "[initial copy] pglogical done in ${SECS[pgl,$S1]} s (slot $PGL_SLOT)"
    local got
    got=$(qpl "$(fp "$FP_COPY" public)" 2>&1) || true
    if [[ $got == "$SRC_FP_COPY" ]]; then CHECK[pgl,$S1]="data identical"; else
        CHECK[pgl,$S1]="DATA DIFFERS: source $SRC_FP_COPY, pglogical $got"
        log "[initial copy] pglogical ${CHECK[pgl,$S1]}"
    fi
}
pgl_disable() {
    qpl "SELECT pglogical.alter_subscription_disable('$PGL_SUB', true)" >/dev/null ||
        log "pglogical.alter_subscription_disable failed"
    wait_slot_inactive "$PGL_SLOT"
}
# drain_pglogical SCEN MARK TARGET_LSN FP SRC_FP CHANGES TXS
drain_pglogical() {
    local scen=$1 mark=$2 target=$3 fpq=$4 srcfp=$5 changes=$6 txs=$7
    local t0 deadline seen conf got pids
    [[ $PGL == 1 ]] || return 0
    if [[ $PGL_OK != 1 ]]; then
        NOTE[pgl,$scen]=${NOTE[pgl,$scen]:-"skipped: pglogical failed earlier"}
        return 0
    fi
    mem_reset
    prepare_measurement
    log "[$scen] pglogical: alter_subscription_enable to apply the backlog"
    t0=$(now)
    deadline=$((SECONDS + WAIT_CDC))
    qpl "SELECT pglogical.alter_subscription_enable('$PGL_SUB', true)" >/dev/null || {
        pgl_fail "$scen" "alter_subscription_enable failed"
        return 0
    }
    while :; do
        seen=$(qpl "SELECT EXISTS (SELECT 1 FROM public.bench_marker WHERE id = $mark)") || seen=f
        pids=$(pgl_pids)
        mem_sample "$pids"
        if [[ $seen == t ]]; then
            SECS[pgl,$scen]=$(calc "$(now) - $t0")
            break
        fi
        if ((SECONDS >= deadline)); then
            pgl_fail "$scen" "timeout: the backlog was not applied within ${WAIT_CDC}s"
            pgl_disable >/dev/null 2>&1 || true
            return 0
        fi
        sleep "$POLL"
    done
    while :; do
        conf=$(qs "SELECT confirmed_flush_lsn >= '$target'::pg_lsn FROM pg_replication_slots WHERE slot_name = '$PGL_SLOT'")
        mem_sample "$pids"
        if [[ $conf == t ]]; then
            CONF_SECS[pgl,$scen]=$(calc "$(now) - $t0")
            break
        fi
        if ((SECONDS >= deadline)); then
            NOTE[pgl,$scen]="confirmed_flush_lsn of $PGL_SLOT did not reach $target within ${WAIT_CDC}s"
            CONF_SECS[pgl,$scen]="-"
            break
        fi
        sleep "$POLL"
    done
    RSS[pgl,$scen]=$MEM_RSS ANON[pgl,$scen]=$MEM_ANON CPU[pgl,$scen]=$CPU_SECS
    WS_CPU[pgl,$scen]=$(walsender_cpu "$PGL_SLOT")
    RATE[pgl,$scen]=$(calc "$changes / ${SECS[pgl,$scen]}")
    TXRATE[pgl,$scen]=$(calc "$txs / ${SECS[pgl,$scen]}")
    log "[$scen] pglogical applied in ${SECS[pgl,$scen]} s, confirmed after ${CONF_SECS[pgl,$scen]} s"
    pgl_disable || pgl_fail "$scen" "could not disable the subscription"
    got=$(qpl "$(fp "$fpq" public)" 2>&1) || true
    if [[ $got == "$srcfp" ]]; then CHECK[pgl,$scen]="data identical"; else
        CHECK[pgl,$scen]="DATA DIFFERS: source $srcfp, pglogical $got"
        log "[$scen] pglogical ${CHECK[pgl,$scen]}"
    fi
}

copy_synchdb
BI_OK=1
copy_builtin || BI_OK=0
PGL_OK=$PGL
if [[ $PGL == 1 ]]; then
    copy_pglogical && pgl_disable || PGL_OK=0
fi

# Pause both replicas; their slots keep the WAL of the workloads to come.
if [[ -z $SDB_BROKEN ]]; then
    sdb_stop || sdb_fail "$S1" "could not stop the connector after the initial copy"
else
    sdb_stop >/dev/null 2>&1 || true
fi
if [[ $BI_OK == 1 ]]; then
    bi_disable || {
        bi_fail "$S1" "could not disable the subscription"
        BI_OK=0
    }
fi

# ---------------------------------------------------------------------------
# CDC drains
# ---------------------------------------------------------------------------
# drain_synchdb SCEN MARK TARGET_LSN FP SRC_FP CHANGES TXS
drain_synchdb() {
    local scen=$1 mark=$2 target=$3 fpq=$4 srcfp=$5 changes=$6 txs=$7
    local t0 deadline st pid stage state seen err conf got
    if [[ -n $SDB_BROKEN ]]; then
        NOTE[sdb,$scen]=${NOTE[sdb,$scen]:-"skipped: $SDB_BROKEN"}
        return 0
    fi
    mem_reset
    prepare_measurement
    log "[$scen] synchdb: resuming the connector to apply the backlog"
    t0=$(now)
    deadline=$((SECONDS + WAIT_CDC))
    qsdb "SELECT synchdb_start_engine_bgw('$CONN')" >/dev/null || {
        sdb_fail "$scen" "synchdb_start_engine_bgw failed"
        return 0
    }
    # phase A: the marker row (committed last on the source) is visible
    while :; do
        st=$(qsdb "SELECT v.pid, coalesce(v.stage, '-'), v.state,
                          EXISTS (SELECT 1 FROM $SRC_DB.bench_marker WHERE id = $mark),
                          replace(v.err, E'\n', ' ')
                     FROM synchdb_state_view v WHERE v.name = '$CONN'") || st="-1|?|?|f|psql failed"
        IFS='|' read -r pid stage state seen err <<<"$st"
        mem_sample "$pid"
        if [[ $err != "no error" ]]; then
            sdb_fail "$scen" "the connector reported an error during CDC"
            sdb_stop >/dev/null 2>&1 || true
            return 0
        fi
        if [[ $seen == t ]]; then
            SECS[sdb,$scen]=$(calc "$(now) - $t0")
            break
        fi
        if ((SECONDS >= deadline)); then
            sdb_fail "$scen" "timeout: the backlog was not applied within ${WAIT_CDC}s (stage=$stage, state=$state)"
            sdb_stop >/dev/null 2>&1 || true
            return 0
        fi
        sleep "$POLL"
    done
    # phase B: the source knows (confirmed_flush_lsn of the slot)
    while :; do
        conf=$(qs "SELECT confirmed_flush_lsn >= '$target'::pg_lsn FROM pg_replication_slots WHERE slot_name = '$SDB_SLOT'") || conf="?"
        mem_sample "$pid"
        if [[ $conf == t ]]; then
            CONF_SECS[sdb,$scen]=$(calc "$(now) - $t0")
            break
        fi
        if ((SECONDS >= deadline)); then
            NOTE[sdb,$scen]="confirmed_flush_lsn of $SDB_SLOT did not reach $target within ${WAIT_CDC}s"
            CONF_SECS[sdb,$scen]="-"
            break
        fi
        sleep "$POLL"
    done
    mem_sample "$pid"
    RSS[sdb,$scen]=$MEM_RSS ANON[sdb,$scen]=$MEM_ANON CPU[sdb,$scen]=$CPU_SECS
    WS_CPU[sdb,$scen]=$(walsender_cpu "$SDB_SLOT")
    RATE[sdb,$scen]=$(calc "$changes / ${SECS[sdb,$scen]}")
    TXRATE[sdb,$scen]=$(calc "$txs / ${SECS[sdb,$scen]}")
    STAGE_AFTER[$scen]=$(sdb_state)
    log "[$scen] synchdb applied in ${SECS[sdb,$scen]} s, confirmed after ${CONF_SECS[sdb,$scen]} s"
    sdb_stop || sdb_fail "$scen" "could not stop the connector"
    got=$(qsdb "$(fp "$fpq" "$SRC_DB")" 2>&1) || true
    if [[ $got == "$srcfp" ]]; then CHECK[sdb,$scen]="data identical"; else
        CHECK[sdb,$scen]="DATA DIFFERS: source $srcfp, synchdb $got"
        log "[$scen] synchdb ${CHECK[sdb,$scen]}"
    fi
}
declare -A STAGE_AFTER

drain_builtin() {
    local scen=$1 mark=$2 target=$3 fpq=$4 srcfp=$5 changes=$6 txs=$7
    local t0 deadline st pid seen aerr conf got
    if [[ $BI_OK != 1 ]]; then
        NOTE[bi,$scen]=${NOTE[bi,$scen]:-"skipped: the built-in subscription failed earlier"}
        return 0
    fi
    mem_reset
    prepare_measurement
    log "[$scen] built-in: ALTER SUBSCRIPTION $SUB ENABLE to apply the backlog"
    t0=$(now)
    deadline=$((SECONDS + WAIT_CDC))
    qbi "ALTER SUBSCRIPTION $SUB ENABLE" >/dev/null || {
        bi_fail "$scen" "ALTER SUBSCRIPTION ENABLE failed"
        BI_OK=0
        return 0
    }
    while :; do
        st=$(qbi "SELECT coalesce((SELECT pid FROM pg_stat_subscription WHERE subname = '$SUB' AND $APPLY_FILTER AND pid IS NOT NULL LIMIT 1), -1),
                         EXISTS (SELECT 1 FROM public.bench_marker WHERE id = $mark),
                         (SELECT apply_error_count FROM pg_stat_subscription_stats WHERE subname = '$SUB')") ||
            st="-1|f|?"
        IFS='|' read -r pid seen aerr <<<"$st"
        mem_sample "$pid"
        if [[ $seen == t ]]; then
            SECS[bi,$scen]=$(calc "$(now) - $t0")
            break
        fi
        if ((SECONDS >= deadline)); then
            bi_fail "$scen" "timeout: the backlog was not applied within ${WAIT_CDC}s (apply errors $aerr)"
            bi_disable >/dev/null 2>&1 || true
            return 0
        fi
        sleep "$POLL"
    done
    while :; do
        conf=$(qs "SELECT confirmed_flush_lsn >= '$target'::pg_lsn FROM pg_replication_slots WHERE slot_name = '$SUB'")
        mem_sample "$pid"
        if [[ $conf == t ]]; then
            CONF_SECS[bi,$scen]=$(calc "$(now) - $t0")
            break
        fi
        if ((SECONDS >= deadline)); then
            NOTE[bi,$scen]="confirmed_flush_lsn of $SUB did not reach $target within ${WAIT_CDC}s"
            CONF_SECS[bi,$scen]="-"
            break
        fi
        sleep "$POLL"
    done
    mem_sample "$pid"
    RSS[bi,$scen]=$MEM_RSS ANON[bi,$scen]=$MEM_ANON CPU[bi,$scen]=$CPU_SECS
    WS_CPU[bi,$scen]=$(walsender_cpu "$SUB")
    RATE[bi,$scen]=$(calc "$changes / ${SECS[bi,$scen]}")
    TXRATE[bi,$scen]=$(calc "$txs / ${SECS[bi,$scen]}")
    log "[$scen] built-in applied in ${SECS[bi,$scen]} s, confirmed after ${CONF_SECS[bi,$scen]} s"
    bi_disable || {
        bi_fail "$scen" "could not disable the subscription"
        BI_OK=0
    }
    got=$(qbi "$(fp "$fpq" public)" 2>&1) || true
    if [[ $got == "$srcfp" ]]; then CHECK[bi,$scen]="data identical"; else
        CHECK[bi,$scen]="DATA DIFFERS: source $srcfp, built-in $got"
        log "[$scen] built-in ${CHECK[bi,$scen]}"
    fi
}

declare -A WL_SECS WL_TX TARGET
# after_workload SCEN MARK — commit the marker row last, remember the WAL end
after_workload() {
    qs "INSERT INTO bench_marker VALUES ($2, '$1')" >/dev/null
    TARGET[$1]=$(qs "SELECT pg_current_wal_lsn()")
}

# ---------------------------------------------------------------------------
# 2. CDC of a pgbench TPC-B run
# ---------------------------------------------------------------------------
S2="tpcb"
prepare_measurement
H0=$(qs "SELECT count(*) FROM pgbench_history")
log "[$S2] workload: pgbench -T $TPCB_SECS -c $CLIENTS -j $THREADS (both replicas paused)"
t0=$(now)
"$BINDIR/pgbench" -n -T "$TPCB_SECS" -c "$CLIENTS" -j "$THREADS" -h 127.0.0.1 -p "$SRC_PORT" \
    -U "$PGENV_SUPERUSER" "$SRC_DB" >"$WORK/pgbench-tpcb.log" 2>&1 || {
    cat "$WORK/pgbench-tpcb.log" >&2
    pgenv_die "pgbench TPC-B run failed"
}
WL_SECS[$S2]=$(calc "$(now) - $t0")
after_workload "$S2" 2
WL_TX[$S2]=$(($(qs "SELECT count(*) FROM pgbench_history") - H0))
TPCB_TX=${WL_TX[$S2]}
TPCB_CHANGES=$((TPCB_TX * 4)) # 3 UPDATEs + 1 INSERT per transaction
SRC_FP_TPCB=$(qs "$(fp "$FP_TPCB" public)")
log "[$S2] $TPCB_TX transactions on the source in ${WL_SECS[$S2]} s; WAL end ${TARGET[$S2]}"
drain_synchdb "$S2" 2 "${TARGET[$S2]}" "$FP_TPCB" "$SRC_FP_TPCB" "$TPCB_CHANGES" "$TPCB_TX"
drain_builtin "$S2" 2 "${TARGET[$S2]}" "$FP_TPCB" "$SRC_FP_TPCB" "$TPCB_CHANGES" "$TPCB_TX"
drain_pglogical "$S2" 2 "${TARGET[$S2]}" "$FP_TPCB" "$SRC_FP_TPCB" "$TPCB_CHANGES" "$TPCB_TX"

# ---------------------------------------------------------------------------
# 3. CDC of single-row insert transactions
# ---------------------------------------------------------------------------
S3="inserts"
cat >"$WORK/insert.sql" <<'EOF'
\set r random(1, 1000000)
INSERT INTO ins_test (v, note) VALUES (:r, 'row ' || :r);
EOF
chmod 644 "$WORK/insert.sql"
prepare_measurement
log "[$S3] workload: $INS_TOTAL single-row INSERT transactions (pgbench -c $CLIENTS -j $THREADS -t $INS_PER_CLIENT; both replicas paused)"
t0=$(now)
"$BINDIR/pgbench" -n -f "$WORK/insert.sql" -t "$INS_PER_CLIENT" -c "$CLIENTS" -j "$THREADS" \
    -h 127.0.0.1 -p "$SRC_PORT" -U "$PGENV_SUPERUSER" "$SRC_DB" >"$WORK/pgbench-ins.log" 2>&1 || {
    cat "$WORK/pgbench-ins.log" >&2
    pgenv_die "pgbench insert run failed"
}
WL_SECS[$S3]=$(calc "$(now) - $t0")
after_workload "$S3" 3
WL_TX[$S3]=$(qs "SELECT count(*) FROM ins_test")
SRC_FP_INS=$(qs "$(fp "$FP_INS" public)")
log "[$S3] ${WL_TX[$S3]} rows on the source in ${WL_SECS[$S3]} s; WAL end ${TARGET[$S3]}"
# the other order this time
drain_builtin "$S3" 3 "${TARGET[$S3]}" "$FP_INS" "$SRC_FP_INS" "${WL_TX[$S3]}" "${WL_TX[$S3]}"
drain_pglogical "$S3" 3 "${TARGET[$S3]}" "$FP_INS" "$SRC_FP_INS" "${WL_TX[$S3]}" "${WL_TX[$S3]}"
drain_synchdb "$S3" 3 "${TARGET[$S3]}" "$FP_INS" "$SRC_FP_INS" "${WL_TX[$S3]}" "${WL_TX[$S3]}"

# sdb_remove CONN SCEN — stops a connector of the scenarios below (bounded
# wait) and deletes it, which drops its slot and publication on the source.
sdb_remove() {
    local deadline=$((SECONDS + WAIT_STOP))
    qsdb "SELECT synchdb_stop_engine_bgw('$1')" >/dev/null || true
    until [[ $(qsdb "SELECT pid FROM synchdb_state_view WHERE name = '$1'") == -1 ]] || ((SECONDS >= deadline)); do
        sleep "$POLL"
    done
    qsdb "SELECT synchdb_del_conninfo('$1')" >/dev/null || log "[$2] synchdb_del_conninfo of $1 failed"
}

# ---------------------------------------------------------------------------
# 4. initial copy with schema objects
# ---------------------------------------------------------------------------
# The copied tables again, in a database of their own, with three secondary
# indexes on each. Timed until the rows are in and the last index is valid:
#   synchdb   builds the indexes after the rows, in its snapshot;
#   built-in  copies into tables that have the indexes already (its users must
#             create the schema first: pg_dump --schema-only, as above);
#   dump      pg_dump -Fd -j 2 then pg_restore -j 2 (a one-off copy that does not
#             follow the source; pg_restore -j cannot read a pipe, so the
#             archive goes through a directory).
S4="objects"
OBJ_DB=benchobj
OBJ_SDB_SCHEMA=$OBJ_DB   # synchdb's tables land in dst_synchdb, schema benchobj
OBJ_BI=dst_obj_builtin
OBJ_DUMP=dst_obj_restore
OBJ_CONN=objconn
OBJ_SUB=bench_obj_sub
OBJ_PUB=bench_obj_pub
declare -A OBJ_SECS OBJ_CHECK
qos() { sql "$SRC_PORT" "$OBJ_DB" "$1"; }
log "[$S4] source database $OBJ_DB: the copied tables with three secondary indexes each"
if [[ $PGL == 1 ]]; then
    # pglogical's part ends here; its manager process on the source database
    # would keep the database from serving as a template
    qpl "SELECT pglogical.drop_subscription('$PGL_SUB')" >/dev/null || log "pglogical.drop_subscription failed"
    qs "DROP EXTENSION pglogical CASCADE" >/dev/null || log "DROP EXTENSION pglogical on the source failed"
    deadline=$((SECONDS + WAIT_STOP))
    until [[ $(sql "$SRC_PORT" postgres "SELECT count(*) FROM pg_stat_activity WHERE datname = '$SRC_DB'") == 0 ]] ||
        ((SECONDS >= deadline)); do
        sql "$SRC_PORT" postgres "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '$SRC_DB' AND backend_type LIKE 'pglogical%'" >/dev/null
        sleep "$POLL"
    done
fi
sql "$SRC_PORT" postgres "CREATE DATABASE $OBJ_DB TEMPLATE $SRC_DB STRATEGY FILE_COPY" >/dev/null
qos "DROP PUBLICATION $PUB; DROP TABLE ins_test, bench_marker;
CREATE INDEX accounts_bid ON pgbench_accounts (bid);
CREATE INDEX accounts_balance ON pgbench_accounts (abalance);
CREATE INDEX accounts_bid_balance ON pgbench_accounts (bid, abalance);
CREATE INDEX branches_balance ON pgbench_branches (bbalance);
CREATE INDEX branches_filler ON pgbench_branches (filler);
CREATE INDEX branches_bid_balance ON pgbench_branches (bid, bbalance);
CREATE INDEX tellers_bid ON pgbench_tellers (bid);
CREATE INDEX tellers_balance ON pgbench_tellers (tbalance);
CREATE INDEX tellers_bid_balance ON pgbench_tellers (bid, tbalance);
CREATE INDEX history_aid ON pgbench_history (aid);
CREATE INDEX history_tid ON pgbench_history (tid);
CREATE INDEX history_mtime ON pgbench_history (mtime);
CREATE INDEX mixed_big ON mixed (big);
CREATE INDEX mixed_txt ON mixed (txt);
CREATE INDEX mixed_doc ON mixed USING gin (doc);
CREATE PUBLICATION $OBJ_PUB FOR TABLES IN SCHEMA public;
VACUUM ANALYZE;" >/dev/null 2>"$WORK/obj.err" || {
    # FOR TABLES IN SCHEMA is PostgreSQL 15+, which is all this script runs on
    cat "$WORK/obj.err" >&2
    pgenv_die "preparing $OBJ_DB failed"
}
OBJ_INDEXES=$(qos "SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
                    WHERE c.relnamespace = 'public'::regnamespace")
OBJ_FP=$(qos "$(fp "$FP_COPY" public)")
# obj_done DB SCHEMA — "t" once the rows and every index (valid) are there
obj_done() {
    # the tables first: counting rows of a table not there yet would log errors
    [[ $(sql "$DST_PORT" "$1" "SELECT to_regclass('$2.pgbench_accounts') IS NOT NULL
                                   AND to_regclass('$2.mixed') IS NOT NULL" 2>/dev/null) == t ]] || {
        echo f
        return 0
    }
    sql "$DST_PORT" "$1" "SELECT (SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
                                  WHERE c.relnamespace = to_regnamespace('$2') AND i.indisvalid) = $OBJ_INDEXES
                              AND (SELECT count(*) FROM $2.pgbench_accounts) = $SRC_ACCOUNTS
                              AND (SELECT count(*) FROM $2.mixed) = $SRC_MIXED" 2>/dev/null || echo f
}
obj_check() { # WHO DB SCHEMA
    local got
    got=$(sql "$DST_PORT" "$2" "$(fp "$FP_COPY" "$3")" 2>&1) || true
    if [[ $got == "$OBJ_FP" ]]; then OBJ_CHECK[$1]="data identical, $OBJ_INDEXES indexes valid"; else
        OBJ_CHECK[$1]="DATA DIFFERS: source $OBJ_FP, got $got"
        log "[$S4] $1 ${OBJ_CHECK[$1]}"
    fi
}
obj_wait() { # WHO DB SCHEMA T0 — sets OBJ_SECS[WHO]
    local deadline=$((SECONDS + WAIT_COPY)) err
    while [[ $(obj_done "$2" "$3") != t ]]; do
        if [[ $1 == synchdb ]]; then
            err=$(qsdb "SELECT err FROM synchdb_state_view WHERE name = '$OBJ_CONN'" || echo "?")
            [[ $err == "no error" ]] || {
                OBJ_CHECK[$1]="FAILED: $err"
                return 1
            }
        fi
        ((SECONDS < deadline)) || {
            OBJ_CHECK[$1]="FAILED: not complete after ${WAIT_COPY}s"
            return 1
        }
        sleep "$POLL"
    done
    OBJ_SECS[$1]=$(calc "$(now) - $4")
    log "[$S4] $1 done in ${OBJ_SECS[$1]} s"
    obj_check "$1" "$2" "$3"
}

prepare_measurement
log "[$S4] synchdb: a connector for $OBJ_DB"
qsdb "SELECT synchdb_add_conninfo('$OBJ_CONN', '127.0.0.1', $SRC_PORT, '$SRC_USER', '$SRC_PASSWORD',
                                  '$OBJ_DB', 'public', 'null', 'null', 'postgres')" >/dev/null
t0=$(now)
qsdb "SELECT synchdb_start_engine_bgw('$OBJ_CONN')" >/dev/null
obj_wait synchdb "$DST_SDB" "$OBJ_SDB_SCHEMA" "$t0" || log "[$S4] synchdb ${OBJ_CHECK[synchdb]}"
sdb_remove "$OBJ_CONN" "$S4"

prepare_measurement
log "[$S4] built-in: schema with its indexes first (pg_dump --schema-only), then CREATE SUBSCRIPTION"
sql "$DST_PORT" postgres "CREATE DATABASE $OBJ_BI" >/dev/null
"$BINDIR/pg_dump" -s -h 127.0.0.1 -p "$SRC_PORT" -U "$PGENV_SUPERUSER" \
    --no-publications --no-subscriptions -t 'public.*' "$OBJ_DB" |
    "$BINDIR/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$DST_PORT" -U "$PGENV_SUPERUSER" -d "$OBJ_BI" \
        >/dev/null 2>"$WORK/obj-schema.err" || {
    cat "$WORK/obj-schema.err" >&2
    pgenv_die "loading the schema of $OBJ_DB into $OBJ_BI failed"
}
t0=$(now)
sql "$DST_PORT" "$OBJ_BI" "CREATE SUBSCRIPTION $OBJ_SUB CONNECTION 'host=127.0.0.1 port=$SRC_PORT dbname=$OBJ_DB user=$SRC_USER password=$SRC_PASSWORD' PUBLICATION $OBJ_PUB" >/dev/null
obj_wait built-in "$OBJ_BI" public "$t0" || log "[$S4] built-in ${OBJ_CHECK[built-in]}"
sql "$DST_PORT" "$OBJ_BI" "DROP SUBSCRIPTION $OBJ_SUB" >/dev/null || log "[$S4] DROP SUBSCRIPTION failed"

prepare_measurement
log "[$S4] pg_dump -Fd -j 2, then pg_restore -j 2"
sql "$DST_PORT" postgres "CREATE DATABASE $OBJ_DUMP" >/dev/null
t0=$(now)
if "$BINDIR/pg_dump" -Fd -j 2 -f "$WORK/objdump" -h 127.0.0.1 -p "$SRC_PORT" -U "$PGENV_SUPERUSER" \
    --no-publications -t 'public.*' "$OBJ_DB" 2>"$WORK/objdump.err" &&
    "$BINDIR/pg_restore" -j 2 --no-owner -h 127.0.0.1 -p "$DST_PORT" -U "$PGENV_SUPERUSER" \
        -d "$OBJ_DUMP" "$WORK/objdump" 2>>"$WORK/objdump.err"; then
    OBJ_SECS[dump]=$(calc "$(now) - $t0")
    log "[$S4] dump done in ${OBJ_SECS[dump]} s"
    if [[ $(obj_done "$OBJ_DUMP" public) == t ]]; then obj_check dump "$OBJ_DUMP" public; else
        OBJ_CHECK[dump]="incomplete after pg_restore"
    fi
else
    OBJ_CHECK[dump]="FAILED: $(tail -n 3 "$WORK/objdump.err" | tr '\n' ' ')"
fi

# ---------------------------------------------------------------------------
# 5. initial copy of many small tables
# ---------------------------------------------------------------------------
# SMALL_TABLES tables of 1,000 rows each, in a database of their own: the
# per-table cost of a copy (catalog, slot, one COPY each), timed until every
# row is on the destination. Built-in replication copies them with its table
# sync workers (max_sync_workers_per_subscription, default 2), into tables
# created beforehand.
S5="small"
SMALL_DB=benchsmall
SMALL_BI=dst_small_builtin
SMALL_CONN=smallconn
SMALL_SUB=bench_small_sub
SMALL_PUB=bench_small_pub
declare -A SMALL_SECS SMALL_CHECK
qms() { sql "$SRC_PORT" "$SMALL_DB" "$1"; }
log "[$S5] source database $SMALL_DB: $SMALL_TABLES tables of 1000 rows"
sql "$SRC_PORT" postgres "CREATE DATABASE $SMALL_DB" >/dev/null
qms "DO \$\$
BEGIN
    FOR i IN 1..$SMALL_TABLES LOOP
        EXECUTE format('CREATE TABLE s%s (id int PRIMARY KEY, n int, v text, at timestamptz)', i);
        EXECUTE format('INSERT INTO s%s SELECT g, g * %s, md5(g::text), now() FROM generate_series(1, 1000) g', i, i);
    END LOOP;
END \$\$;
CREATE PUBLICATION $SMALL_PUB FOR TABLES IN SCHEMA public;
VACUUM ANALYZE;" >/dev/null
SMALL_ROWS=$((SMALL_TABLES * 1000))
SMALL_FP=$(qms "SELECT count(*) || '/' || sum(h) FROM (SELECT hashtext(x::text)::bigint AS h FROM
                  (SELECT * FROM s1 UNION ALL SELECT * FROM s$SMALL_TABLES) x) y")
small_wait() { # WHO DB SCHEMA T0 ROWSQUERY
    local deadline=$((SECONDS + WAIT_COPY)) got
    while :; do
        got=$(sql "$DST_PORT" "$2" "$5" 2>/dev/null || echo 0)
        [[ $got == "$SMALL_ROWS" ]] && break
        if [[ $1 == synchdb ]]; then
            err=$(qsdb "SELECT err FROM synchdb_state_view WHERE name = '$SMALL_CONN'" || echo "?")
            [[ $err == "no error" ]] || {
                SMALL_CHECK[$1]="FAILED: $err"
                return 1
            }
        fi
        ((SECONDS < deadline)) || {
            SMALL_CHECK[$1]="FAILED: $got of $SMALL_ROWS rows after ${WAIT_COPY}s"
            return 1
        }
        sleep "$FAST_POLL"
    done
    SMALL_SECS[$1]=$(calc "$(now) - $4")
    log "[$S5] $1 done in ${SMALL_SECS[$1]} s"
    got=$(sql "$DST_PORT" "$2" "SELECT count(*) || '/' || sum(h) FROM (SELECT hashtext(x::text)::bigint AS h FROM
                  (SELECT * FROM $3.s1 UNION ALL SELECT * FROM $3.s$SMALL_TABLES) x) y" 2>&1) || true
    if [[ $got == "$SMALL_FP" ]]; then SMALL_CHECK[$1]="rows identical (first and last table compared)"; else
        SMALL_CHECK[$1]="DATA DIFFERS: source $SMALL_FP, got $got"
    fi
}
# bench_rows(schema): every small table's rows, counted on the destination
# (a function in each destination database; xml functions are not in every build)
BENCH_ROWS_FN="CREATE OR REPLACE FUNCTION bench_rows(s text) RETURNS bigint LANGUAGE plpgsql AS \$\$
DECLARE r record; n bigint := 0; c bigint;
BEGIN
    FOR r IN SELECT c2.relname FROM pg_class c2 JOIN pg_namespace ns ON ns.oid = c2.relnamespace
              WHERE ns.nspname = s AND c2.relkind = 'r' AND c2.relname ~ '^s[0-9]+\$' LOOP
        EXECUTE format('SELECT count(*) FROM %I.%I', s, r.relname) INTO c;
        n := n + c;
    END LOOP;
    RETURN n;
END \$\$"
qsdb "$BENCH_ROWS_FN" >/dev/null

prepare_measurement
log "[$S5] synchdb: a connector for $SMALL_DB"
qsdb "SELECT synchdb_add_conninfo('$SMALL_CONN', '127.0.0.1', $SRC_PORT, '$SRC_USER', '$SRC_PASSWORD',
                                  '$SMALL_DB', 'public', 'null', 'null', 'postgres')" >/dev/null
t0=$(now)
qsdb "SELECT synchdb_start_engine_bgw('$SMALL_CONN')" >/dev/null
small_wait synchdb "$DST_SDB" "$SMALL_DB" "$t0" "SELECT bench_rows('$SMALL_DB')" || log "[$S5] synchdb ${SMALL_CHECK[synchdb]}"
sdb_remove "$SMALL_CONN" "$S5"

prepare_measurement
log "[$S5] built-in: the tables first (pg_dump --schema-only), then CREATE SUBSCRIPTION"
sql "$DST_PORT" postgres "CREATE DATABASE $SMALL_BI" >/dev/null
sql "$DST_PORT" "$SMALL_BI" "$BENCH_ROWS_FN" >/dev/null
"$BINDIR/pg_dump" -s -h 127.0.0.1 -p "$SRC_PORT" -U "$PGENV_SUPERUSER" \
    --no-publications --no-subscriptions -t 'public.*' "$SMALL_DB" |
    "$BINDIR/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$DST_PORT" -U "$PGENV_SUPERUSER" -d "$SMALL_BI" \
        >/dev/null 2>"$WORK/small-schema.err" || {
    cat "$WORK/small-schema.err" >&2
    pgenv_die "loading the schema of $SMALL_DB into $SMALL_BI failed"
}
t0=$(now)
sql "$DST_PORT" "$SMALL_BI" "CREATE SUBSCRIPTION $SMALL_SUB CONNECTION 'host=127.0.0.1 port=$SRC_PORT dbname=$SMALL_DB user=$SRC_USER password=$SRC_PASSWORD' PUBLICATION $SMALL_PUB" >/dev/null
small_wait built-in "$SMALL_BI" public "$t0" "SELECT bench_rows('public')" || log "[$S5] built-in ${SMALL_CHECK[built-in]}"
sql "$DST_PORT" "$SMALL_BI" "DROP SUBSCRIPTION $SMALL_SUB" >/dev/null || log "[$S5] DROP SUBSCRIPTION failed"

# ---------------------------------------------------------------------------
# 6. large transactions, from their commit on the source to visible
# ---------------------------------------------------------------------------
# One transaction inserting BIG_ROWS rows, then one updating all of them,
# each timed from its COMMIT returning on the source until the destination
# shows it (a transaction is visible whole, so its last row tells). Each
# replica runs alone while its pair of transactions runs: synchdb first (its
# connector streaming), then built-in (a subscription created on the emptied
# table, with its default settings).
S6="bigtx"
BIG_DB=benchbig
BIG_BI=dst_big_builtin
BIG_CONN=bigconn
BIG_SUB=bench_big_sub
BIG_PUB=bench_big_pub
declare -A BIG_INS BIG_UPD BIG_CHECK
qbs() { sql "$SRC_PORT" "$BIG_DB" "$1"; }
log "[$S6] source database $BIG_DB: one table, then $BIG_ROWS-row transactions"
sql "$SRC_PORT" postgres "CREATE DATABASE $BIG_DB" >/dev/null
qbs "CREATE TABLE big (id bigint PRIMARY KEY, n int NOT NULL, v text);
CREATE PUBLICATION $BIG_PUB FOR TABLE big;" >/dev/null
# big_pair WHO DB SCHEMA — the two transactions, each timed until visible
big_pair() {
    local who=$1 db=$2 schema=$3 t0 deadline
    qbs "TRUNCATE big" >/dev/null
    t0=$(now)
    qbs "INSERT INTO big SELECT g, 0, md5(g::text) FROM generate_series(1, $BIG_ROWS) g" >/dev/null
    t0=$(now)
    deadline=$((SECONDS + WAIT_CDC))
    until [[ $(sql "$DST_PORT" "$db" "SELECT EXISTS (SELECT 1 FROM $schema.big WHERE id = $BIG_ROWS)" 2>/dev/null) == t ]]; do
        ((SECONDS < deadline)) || {
            BIG_CHECK[$who]="FAILED: the insert was not visible after ${WAIT_CDC}s"
            return 1
        }
        sleep "$FAST_POLL"
    done
    BIG_INS[$who]=$(calc "$(now) - $t0")
    qbs "UPDATE big SET n = n + 1" >/dev/null
    t0=$(now)
    until [[ $(sql "$DST_PORT" "$db" "SELECT n = 1 FROM $schema.big WHERE id = $BIG_ROWS" 2>/dev/null) == t ]]; do
        ((SECONDS < deadline)) || {
            BIG_CHECK[$who]="FAILED: the update was not visible after ${WAIT_CDC}s"
            return 1
        }
        sleep "$FAST_POLL"
    done
    BIG_UPD[$who]=$(calc "$(now) - $t0")
    local src dst
    src=$(qbs "SELECT count(*) || '/' || sum(n) || '/' || sum(hashtext(v)::bigint) FROM big")
    dst=$(sql "$DST_PORT" "$db" "SELECT count(*) || '/' || sum(n) || '/' || sum(hashtext(v)::bigint) FROM $schema.big")
    if [[ $src == "$dst" ]]; then BIG_CHECK[$who]="data identical"; else BIG_CHECK[$who]="DATA DIFFERS: $src vs $dst"; fi
    log "[$S6] $who: insert visible ${BIG_INS[$who]} s after its commit, update ${BIG_UPD[$who]} s"
}

prepare_measurement
qsdb "SELECT synchdb_add_conninfo('$BIG_CONN', '127.0.0.1', $SRC_PORT, '$SRC_USER', '$SRC_PASSWORD',
                                  '$BIG_DB', 'public', 'null', 'null', 'postgres');
      SELECT synchdb_start_engine_bgw('$BIG_CONN')" >/dev/null
deadline=$((SECONDS + WAIT_COPY))
until [[ $(qsdb "SELECT state = 'polling' AND to_regclass('$BIG_DB.big') IS NOT NULL FROM synchdb_state_view WHERE name = '$BIG_CONN'") == t ]] ||
    ((SECONDS >= deadline)); do
    sleep "$POLL"
done
big_pair synchdb "$DST_SDB" "$BIG_DB" || log "[$S6] synchdb ${BIG_CHECK[synchdb]}"
sdb_remove "$BIG_CONN" "$S6"

prepare_measurement
qbs "TRUNCATE big" >/dev/null
sql "$DST_PORT" postgres "CREATE DATABASE $BIG_BI" >/dev/null
sql "$DST_PORT" "$BIG_BI" "CREATE TABLE big (id bigint PRIMARY KEY, n int NOT NULL, v text)" >/dev/null
sql "$DST_PORT" "$BIG_BI" "CREATE SUBSCRIPTION $BIG_SUB CONNECTION 'host=127.0.0.1 port=$SRC_PORT dbname=$BIG_DB user=$SRC_USER password=$SRC_PASSWORD' PUBLICATION $BIG_PUB" >/dev/null
deadline=$((SECONDS + WAIT_COPY))
until [[ $(sql "$DST_PORT" "$BIG_BI" "SELECT count(*) = 0 FROM pg_subscription_rel WHERE srsubstate <> 'r'") == t ]] ||
    ((SECONDS >= deadline)); do
    sleep "$POLL"
done
BIG_STREAMING=$(sql "$DST_PORT" "$BIG_BI" "SELECT substream FROM pg_subscription WHERE subname = '$BIG_SUB'")
big_pair built-in "$BIG_BI" public || log "[$S6] built-in ${BIG_CHECK[built-in]}"
sql "$DST_PORT" "$BIG_BI" "DROP SUBSCRIPTION $BIG_SUB" >/dev/null || log "[$S6] DROP SUBSCRIPTION failed"

# ---------------------------------------------------------------------------
# 7. lag at a steady rate
# ---------------------------------------------------------------------------
# One-row INSERT transactions at LAG_TPS for LAG_SECS s from one client (so
# ids follow commit order), both replicas live at once (one workload, one WAL,
# the same machine load for both). A row's lag: from the commit of its source
# transaction (pg_xact_commit_timestamp; track_commit_timestamp is on) to the
# moment it is visible on the destination, seen by a session there that reads
# max(id) every 2 ms (on a destination the commit timestamp of an applied
# transaction is the source's, so it cannot tell). Both clusters share this
# machine's clock.
S7="lag"
LAG_TPS=1000
LAG_DB=benchlag
LAG_BI=dst_lag_builtin
LAG_CONN=lagconn
LAG_SUB=bench_lag_sub
LAG_PUB=bench_lag_pub
declare -A LAG_P50 LAG_P99 LAG_MAX LAG_CHECK
qls() { sql "$SRC_PORT" "$LAG_DB" "$1"; }
log "[$S7] source database $LAG_DB: one table; both replicas live"
sql "$SRC_PORT" postgres "CREATE DATABASE $LAG_DB" >/dev/null
qls "CREATE TABLE lag_test (id bigserial PRIMARY KEY, pad text);
CREATE PUBLICATION $LAG_PUB FOR TABLE lag_test;" >/dev/null
qsdb "SELECT synchdb_add_conninfo('$LAG_CONN', '127.0.0.1', $SRC_PORT, '$SRC_USER', '$SRC_PASSWORD',
                                  '$LAG_DB', 'public', 'null', 'null', 'postgres');
      SELECT synchdb_start_engine_bgw('$LAG_CONN')" >/dev/null
sql "$DST_PORT" postgres "CREATE DATABASE $LAG_BI" >/dev/null
sql "$DST_PORT" "$LAG_BI" "CREATE TABLE lag_test (id bigint PRIMARY KEY, pad text)" >/dev/null
sql "$DST_PORT" "$LAG_BI" "CREATE SUBSCRIPTION $LAG_SUB CONNECTION 'host=127.0.0.1 port=$SRC_PORT dbname=$LAG_DB user=$SRC_USER password=$SRC_PASSWORD' PUBLICATION $LAG_PUB" >/dev/null
deadline=$((SECONDS + WAIT_COPY))
until [[ $(qsdb "SELECT state = 'polling' AND to_regclass('$LAG_DB.lag_test') IS NOT NULL FROM synchdb_state_view WHERE name = '$LAG_CONN'") == t &&
    $(sql "$DST_PORT" "$LAG_BI" "SELECT count(*) = 0 FROM pg_subscription_rel WHERE srsubstate <> 'r'") == t ]] ||
    ((SECONDS >= deadline)); do
    sleep "$POLL"
done
# lag_watch DB SCHEMA — in the background: records when each new max(id) is
# first seen, until lag_stop holds an id it has reached (or a time limit)
LAG_WATCHERS=()
lag_watch() {
    sql "$DST_PORT" "$1" "CREATE TABLE lag_poll (ts timestamptz, max_id bigint); CREATE TABLE lag_stop (max_id bigint)" >/dev/null
    sql "$DST_PORT" "$1" "SET synchronous_commit = off;
DO \$\$
DECLARE
    m bigint;
    last bigint := -1;
    stop bigint;
    deadline timestamptz := clock_timestamp() + make_interval(secs => $LAG_SECS + $WAIT_CDC);
BEGIN
    LOOP
        SELECT coalesce(max(id), 0) INTO m FROM $2.lag_test;
        IF m <> last THEN
            INSERT INTO lag_poll VALUES (clock_timestamp(), m);
            last := m;
        END IF;
        SELECT max(max_id) INTO stop FROM lag_stop;
        EXIT WHEN (stop IS NOT NULL AND m >= stop) OR clock_timestamp() > deadline;
        PERFORM pg_sleep(0.002);
    END LOOP;
END \$\$;" >/dev/null 2>&1 &
    LAG_WATCHERS+=($!)
}
lag_watch "$DST_SDB" "$LAG_DB"
lag_watch "$LAG_BI" public
echo "INSERT INTO lag_test (pad) VALUES ('lag');" >"$WORK/lag.sql"
chmod 644 "$WORK/lag.sql"
log "[$S7] workload: $LAG_TPS one-row INSERT transactions a second for $LAG_SECS s"
"$BINDIR/pgbench" -n -f "$WORK/lag.sql" -R "$LAG_TPS" -T "$LAG_SECS" -c 1 -j 1 \
    -h 127.0.0.1 -p "$SRC_PORT" -U "$PGENV_SUPERUSER" "$LAG_DB" >"$WORK/pgbench-lag.log" 2>&1 || {
    cat "$WORK/pgbench-lag.log" >&2
    pgenv_die "pgbench lag run failed"
}
LAG_ROWS=$(qls "SELECT count(*) FROM lag_test")
LAG_LAST=$(qls "SELECT max(id) FROM lag_test")
sql "$DST_PORT" "$DST_SDB" "INSERT INTO lag_stop VALUES ($LAG_LAST)" >/dev/null
sql "$DST_PORT" "$LAG_BI" "INSERT INTO lag_stop VALUES ($LAG_LAST)" >/dev/null
for w in "${LAG_WATCHERS[@]}"; do wait "$w" || true; done
qls "COPY (SELECT id, pg_xact_commit_timestamp(xmin) FROM lag_test) TO STDOUT" >"$WORK/lag_src.tsv"
# lag_of WHO DB SCHEMA — the lag percentiles (ms) of every row
lag_of() {
    local who=$1 db=$2 schema=$3 r n
    n=$(sql "$DST_PORT" "$db" "SELECT count(*) FROM $schema.lag_test")
    if [[ $n != "$LAG_ROWS" ]]; then
        LAG_CHECK[$who]="FAILED: $n of $LAG_ROWS rows"
        return 1
    fi
    sql "$DST_PORT" "$db" "CREATE TABLE lag_src (id bigint PRIMARY KEY, ts timestamptz); CREATE INDEX ON lag_poll (max_id)" >/dev/null
    sql "$DST_PORT" "$db" "\\copy lag_src FROM '$WORK/lag_src.tsv'" >/dev/null
    r=$(sql "$DST_PORT" "$db" "SELECT round((1000 * percentile_cont(0.5) WITHIN GROUP (ORDER BY l))::numeric, 1) || '|' ||
                                      round((1000 * percentile_cont(0.99) WITHIN GROUP (ORDER BY l))::numeric, 1) || '|' ||
                                      round((1000 * max(l))::numeric, 1) || '|' || count(l)
                                 FROM (SELECT extract(epoch FROM (SELECT p.ts FROM lag_poll p WHERE p.max_id >= s.id
                                                                   ORDER BY p.max_id LIMIT 1) - s.ts)::float8 AS l
                                         FROM lag_src s) x")
    IFS='|' read -r LAG_P50[$who] LAG_P99[$who] LAG_MAX[$who] n <<<"$r"
    if [[ $n == "$LAG_ROWS" ]]; then LAG_CHECK[$who]="all $n rows"; else LAG_CHECK[$who]="ROWS DIFFER: $n of $LAG_ROWS seen"; fi
    log "[$S7] $who: p50 ${LAG_P50[$who]} ms, p99 ${LAG_P99[$who]} ms, max ${LAG_MAX[$who]} ms"
}
lag_of synchdb "$DST_SDB" "$LAG_DB" || log "[$S7] synchdb ${LAG_CHECK[synchdb]}"
lag_of built-in "$LAG_BI" public || log "[$S7] built-in ${LAG_CHECK[built-in]}"
sdb_remove "$LAG_CONN" "$S7"
sql "$DST_PORT" "$LAG_BI" "DROP SUBSCRIPTION $LAG_SUB" >/dev/null || log "[$S7] DROP SUBSCRIPTION failed"

# The documented way out: stop (already stopped) and delete the connector,
# which drops its slot and publication on the source.
DEL_OUT=$(qsdb "SELECT synchdb_del_conninfo('$CONN')" 2>&1) || log "synchdb_del_conninfo failed: $DEL_OUT"
LEFT_SLOTS=$(qs "SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE 'synchdb\_%'")

# ---------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------
cell() { # WHO SCEN — rows/s or FAILED/skipped
    if [[ -n ${RATE[$1,$2]:-} ]]; then fmt_int "${RATE[$1,$2]}"; elif [[ ${NOTE[$1,$2]:-} == skipped* ]]; then
        echo skipped
    else echo FAILED; fi
}
ratio() { # SCEN [PEER] — synchdb's rate over the peer's (default built-in)
    local peer=${2:-bi}
    if [[ -n ${RATE[sdb,$1]:-} && -n ${RATE[$peer,$1]:-} ]]; then fmt2 "$(calc "${RATE[sdb,$1]} / ${RATE[$peer,$1]}")"; else echo n/a; fi
}
ratio_of() { # A B
    if [[ -n $1 && -n $2 && $1 != 0 && $2 != 0 ]]; then fmt2 "$(calc "$1 / $2")"; else echo n/a; fi
}
secs() { if [[ -n ${1:-} && $1 != - ]]; then fmt2 "$1"; else echo "-"; fi; }

copy_label="initial copy ($(awk -v n="$SRC_ROWS_TOTAL" 'BEGIN { printf (n >= 1e6 ? "%.1fM" : "%.0fk"), (n >= 1e6 ? n / 1e6 : n / 1e3) }') rows)"
tpcb_label="CDC pgbench TPC-B ($TPCB_TX tx)"
ins_label="CDC $(awk -v n="${WL_TX[$S3]}" 'BEGIN { printf "%.0fk", n / 1e3 }') single-row inserts"

{
    echo
    echo "synchdb vs built-in logical replication — PostgreSQL $PGVER, $RUN_KIND, $(nproc) cores"
    echo "method: one replica at a time on identical data (same source tables / the same retained WAL); both"
    echo "        destinations are databases of one cluster (same settings). CDC = apply of a backlog produced"
    echo "        while both replicas were paused, timed from resume until the last source commit is visible."
    echo
    printf '%-34s %15s %17s %27s\n' "scenario" "synchdb rows/s" "built-in rows/s" "ratio (synchdb/built-in)"
    printf '%-34s %15s %17s %27s\n' "$copy_label" "$(cell sdb "$S1")" "$(cell bi "$S1")" "$(ratio "$S1")"
    printf '%-34s %15s %17s %27s\n' "$tpcb_label" "$(cell sdb "$S2")" "$(cell bi "$S2")" "$(ratio "$S2")"
    printf '%-34s %15s %17s %27s\n' "$ins_label" "$(cell sdb "$S3")" "$(cell bi "$S3")" "$(ratio "$S3")"
    if [[ $PGL == 1 ]]; then
        echo
        printf '%-34s %15s %17s %27s\n' "second peer: pglogical 2" "synchdb rows/s" "pglogical rows/s" "ratio (synchdb/pglogical)"
        printf '%-34s %15s %17s %27s\n' "$copy_label" "$(cell sdb "$S1")" "$(cell pgl "$S1")" "$(ratio "$S1" pgl)"
        printf '%-34s %15s %17s %27s\n' "$tpcb_label" "$(cell sdb "$S2")" "$(cell pgl "$S2")" "$(ratio "$S2" pgl)"
        printf '%-34s %15s %17s %27s\n' "$ins_label" "$(cell sdb "$S3")" "$(cell pgl "$S3")" "$(ratio "$S3" pgl)"
    fi
    echo
    echo "details (seconds until applied / until the source slot confirmed it; tx/s; peak memory and CPU time"
    echo "         of the applying process(es): synchdb's worker, plus its copy helpers during the initial copy;"
    echo "         built-in: apply worker, plus its table sync workers during the initial copy; memory: the largest one)"
    for s in "$S1" "$S2" "$S3"; do
        case $s in
        "$S1") label="initial copy" ;;
        "$S2") label="TPC-B ($TPCB_CHANGES changes)" ;;
        "$S3") label="inserts" ;;
        esac
        for who in sdb bi pgl; do
            [[ $who != pgl || $PGL == 1 ]] || continue
            name=synchdb
            [[ $who == bi ]] && name=built-in
            [[ $who == pgl ]] && name=pglogical
            if [[ -n ${SECS[$who,$s]:-} ]]; then
                line=$(printf '  %-28s %-9s %8s s' "$label" "$name" "$(secs "${SECS[$who,$s]}")")
                [[ $s == "$S1" ]] || line+=$(printf ', confirmed %7s s, %8s tx/s' "$(secs "${CONF_SECS[$who,$s]:-}")" "$(fmt_int "${TXRATE[$who,$s]}")")
                line+=$(printf ', peak RSS %7s MB (anon %6s MB), CPU %6s s' "$(mb "${RSS[$who,$s]}")" "$(mb "${ANON[$who,$s]}")" "$(secs "${CPU[$who,$s]}")")
                [[ $s == "$S1" ]] || line+=$(printf ' (source walsender %6s s)' "$(secs "${WS_CPU[$who,$s]:-}")")
                line+=", ${CHECK[$who,$s]:-not checked}"
                echo "$line"
            fi
            [[ -z ${NOTE[$who,$s]:-} ]] || printf '  %-28s %-9s %s\n' "$label" "$name" "${NOTE[$who,$s]}"
        done
    done
    echo "  source workloads (replicas paused): TPC-B $TPCB_TX tx in $(secs "${WL_SECS[$S2]}") s" \
        "($(fmt_int "$(calc "$TPCB_TX / ${WL_SECS[$S2]}")") tx/s), inserts ${WL_TX[$S3]} tx in $(secs "${WL_SECS[$S3]}") s" \
        "($(fmt_int "$(calc "${WL_TX[$S3]} / ${WL_SECS[$S3]}")") tx/s); CDC order: TPC-B synchdb first, inserts built-in first"
    # peak memory over both CDC scenarios
    ps=0 pa=0 bs=0 ba=0
    for s in "$S2" "$S3"; do
        ((${RSS[sdb,$s]:-0} > ps)) && ps=${RSS[sdb,$s]}
        ((${ANON[sdb,$s]:-0} > pa)) && pa=${ANON[sdb,$s]}
        ((${RSS[bi,$s]:-0} > bs)) && bs=${RSS[bi,$s]}
        ((${ANON[bi,$s]:-0} > ba)) && ba=${ANON[bi,$s]}
    done
    echo
    printf '%-34s %15s %17s %27s\n' "peak memory during CDC" "synchdb" "built-in" "ratio (synchdb/built-in)"
    printf '%-34s %15s %17s %27s\n' "RSS (ps -o rss) of the applier, MB" "$(mb "$ps")" "$(mb "$bs")" "$(ratio_of "$ps" "$bs")"
    printf '%-34s %15s %17s %27s\n' "private (RssAnon) of it, MB" "$(mb "$pa")" "$(mb "$ba")" "$(ratio_of "$pa" "$ba")"
    echo "  (synchdb: its background worker; built-in: the subscription's apply worker; sampled every ${POLL} s."
    echo "   RSS includes the shared buffers a process touched, RssAnon does not.)"
    echo
    echo "initial copy with 3 secondary indexes per table ($OBJ_INDEXES indexes with the keys), until the last index is valid"
    printf '%-46s %9s %27s\n' "" "seconds" "ratio (synchdb speed/its)"
    for who in synchdb built-in dump; do
        case $who in
        synchdb) label="synchdb (indexes built after the rows)" ;;
        built-in) label="built-in (into tables indexed beforehand)" ;;
        dump) label="pg_dump -Fd -j 2 + pg_restore -j 2" ;;
        esac
        r="-"
        [[ $who == synchdb ]] || r=$(ratio_of "${OBJ_SECS[$who]:-}" "${OBJ_SECS[synchdb]:-}")
        printf '%-46s %9s %27s   %s\n' "$label" "$(secs "${OBJ_SECS[$who]:-}")" "$r" "${OBJ_CHECK[$who]:-not checked}"
    done
    echo
    echo "initial copy of $SMALL_TABLES small tables (1000 rows each), until every row is there"
    printf '%-46s %9s %27s\n' "" "seconds" "ratio (synchdb speed/its)"
    printf '%-46s %9s %27s   %s\n' "synchdb" "$(secs "${SMALL_SECS[synchdb]:-}")" "-" "${SMALL_CHECK[synchdb]:-not checked}"
    printf '%-46s %9s %27s   %s\n' "built-in (tables created beforehand)" "$(secs "${SMALL_SECS[built-in]:-}")" \
        "$(ratio_of "${SMALL_SECS[built-in]:-}" "${SMALL_SECS[synchdb]:-}")" "${SMALL_CHECK[built-in]:-not checked}"
    echo
    echo "one transaction of $BIG_ROWS rows, from its commit on the source to visible (built-in: streaming = ${BIG_STREAMING:-?})"
    printf '%-34s %15s %17s %27s\n' "" "synchdb s" "built-in s" "ratio (synchdb/built-in)"
    printf '%-34s %15s %17s %27s\n' "INSERT" "$(secs "${BIG_INS[synchdb]:-}")" "$(secs "${BIG_INS[built-in]:-}")" \
        "$(ratio_of "${BIG_INS[synchdb]:-}" "${BIG_INS[built-in]:-}")"
    printf '%-34s %15s %17s %27s\n' "UPDATE of every row" "$(secs "${BIG_UPD[synchdb]:-}")" "$(secs "${BIG_UPD[built-in]:-}")" \
        "$(ratio_of "${BIG_UPD[synchdb]:-}" "${BIG_UPD[built-in]:-}")"
    echo "  (time ratios: below 1, synchdb is faster) synchdb: ${BIG_CHECK[synchdb]:-not checked}; built-in: ${BIG_CHECK[built-in]:-not checked}"
    echo
    echo "lag at a steady $LAG_TPS one-row transactions/s for $LAG_SECS s, both replicas live at once:"
    echo "from each source commit until a destination session sees the row (polled every 2 ms; $LAG_ROWS rows)"
    printf '%-34s %15s %17s %27s\n' "" "synchdb ms" "built-in ms" "ratio (synchdb/built-in)"
    for q in p50 p99 max; do
        case $q in
        p50) a=${LAG_P50[synchdb]:-} b=${LAG_P50[built-in]:-} ;;
        p99) a=${LAG_P99[synchdb]:-} b=${LAG_P99[built-in]:-} ;;
        max) a=${LAG_MAX[synchdb]:-} b=${LAG_MAX[built-in]:-} ;;
        esac
        printf '%-34s %15s %17s %27s\n' "$q" "${a:--}" "${b:--}" "$(ratio_of "$a" "$b")"
    done
    echo "  (time ratios: below 1, synchdb is faster) synchdb: ${LAG_CHECK[synchdb]:-not checked}; built-in: ${LAG_CHECK[built-in]:-not checked}"
    echo
    # the goals of issue 12, as ratios against built-in in this run
    goal() { # LABEL VALUE OP LIMIT
        local met=no
        if [[ -z $2 || $2 == n/a ]]; then met="n/a"
        elif awk -v v="$2" -v l="$4" -v op="$3" 'BEGIN { exit !((op == ">=" && v >= l) || (op == "<=" && v <= l)) }'; then met=yes; fi
        printf '  %-58s %8s  goal %s %-5s %s\n' "$1" "$2" "$3" "$4" "$met"
    }
    peak_anon=0
    for s in "$S1" "$S2" "$S3"; do ((${ANON[sdb,$s]:-0} > peak_anon)) && peak_anon=${ANON[sdb,$s]}; done
    echo "goals (against built-in in this run)"
    goal "initial copy, speed ratio" "$(ratio "$S1")" ">=" 1.5
    goal "initial copy of $SMALL_TABLES small tables, speed ratio" "$(ratio_of "${SMALL_SECS[built-in]:-}" "${SMALL_SECS[synchdb]:-}")" ">=" 3
    goal "CDC TPC-B backlog, speed ratio" "$(ratio "$S2")" ">=" 1.5
    goal "CDC single-row inserts backlog, speed ratio" "$(ratio "$S3")" ">=" 1.5
    goal "$BIG_ROWS-row INSERT, commit to visible, time ratio" "$(ratio_of "${BIG_INS[synchdb]:-}" "${BIG_INS[built-in]:-}")" "<=" 0.5
    goal "$BIG_ROWS-row UPDATE, commit to visible, time ratio" "$(ratio_of "${BIG_UPD[synchdb]:-}" "${BIG_UPD[built-in]:-}")" "<=" 0.5
    goal "lag p99 at $LAG_TPS tx/s, time ratio" "$(ratio_of "${LAG_P99[synchdb]:-}" "${LAG_P99[built-in]:-}")" "<=" 1
    goal "peak private memory (RssAnon) of worker and helpers, MB" "$(mb "$peak_anon")" "<=" 64
    # A backlog is applied no sooner than one process, the source's walsender,
    # decodes and sends it. Built-in's time over its walsender's CPU time is the
    # most any subscriber could gain in this run, were its walsender to need no
    # more CPU than built-in's (the decoding is the same).
    echo "  ceiling of the CDC speed ratios in this run: built-in's time / the CPU time of its source walsender"
    for s in "$S2" "$S3"; do
        printf '    %-24s %6s s / %6s s = %5s   (synchdb: %s s, its walsender %s s CPU)\n' \
            "$([[ $s == "$S2" ]] && echo "TPC-B backlog" || echo "single-row inserts")" \
            "$(secs "${SECS[bi,$s]:-}")" "$(secs "${WS_CPU[bi,$s]:-}")" \
            "$(ratio_of "${SECS[bi,$s]:-}" "${WS_CPU[bi,$s]:-}")" \
            "$(secs "${SECS[sdb,$s]:-}")" "$(secs "${WS_CPU[sdb,$s]:-}")"
    done
    echo
    echo "synchdb connector after the runs: ${STAGE_AFTER[$S3]:-${STAGE_AFTER[$S2]:-n/a}} (pid|stage|state|err, before the last stop)"
    echo "synchdb_del_conninfo: ${DEL_OUT:-?}; synchdb slots left on the source: $LEFT_SLOTS"
    nwarn=$(grep -cE '(WARNING|ERROR|FATAL|PANIC):.*' "$DST_LOG" | tr -d ' ' || true)
    sdbwarn=$(grep -E 'WARNING|ERROR|FATAL|PANIC' "$DST_LOG" | grep -ciE 'synchdb|benchconn' || true)
    srcwarn=$(grep -E 'synchdb_' "$SRC_LOG" | grep -cE 'WARNING|ERROR|FATAL|PANIC' || true)
    echo "server logs: destination $nwarn WARNING/ERROR/FATAL lines ($sdbwarn mention synchdb), source $srcwarn from synchdb's connections"
    if [[ $sdbwarn != 0 || $srcwarn != 0 ]]; then
        { grep -E 'WARNING|ERROR|FATAL|PANIC' "$DST_LOG" | grep -iE 'synchdb|benchconn'; grep -E 'synchdb_' "$SRC_LOG" | grep -E 'WARNING|ERROR|FATAL|PANIC'; } |
            head -n 10 | cut -c1-300 | sed 's/^/  /'
    fi
} | tee "$WORK/report.txt"
