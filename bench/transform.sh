#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR/..
# bench/transform.sh [15|18] [rows] [cdc-rows] — what a transform rule costs the initial
# snapshot. One source table (id int primary key, name text, n int) is copied
# twice by synchdb in mode initial_only, one run after the other on the same
# data: once without rules (the direct COPY path), once with two transforms
# ('<' || '%d' || '>' on name, %d + 1 on n: the staged INSERT ... SELECT path).
# Prints both times (from synchdb_snapstats) and their ratio; no thresholds.
# Then the same for CDC: a connector in mode no_data (schema only) streams one
# source transaction of CDC_ROWS inserts, without and with the two transforms;
# the time is from the source's COMMIT to the last row being visible on the
# destination (polled every 20 ms).
# Source on port 25480, destination on 25481 (throwaway clusters).
set -euo pipefail
export LC_ALL=C
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/pgenv.sh
. "$REPO/scripts/pgenv.sh"

PGVER=${1:-18}
ROWS=${2:-1000000}
CDC_ROWS=${3:-100000}
SRC_PORT=25480
DST_PORT=25481
# shellcheck disable=SC2034  # log prefix used by pgenv.sh
PGENV_TAG="transform bench"
PG_CONFIG=$(pg_config_for "$PGVER")
BINDIR=$("$PG_CONFIG" --bindir)
[[ -f "$("$PG_CONFIG" --pkglibdir)/synchdb.so" ]] ||
    pgenv_die "synchdb is not installed for PostgreSQL $PGVER"
pgenv_workdir transform
WORK=$PGENV_WORKDIR
CONF="wal_level = logical
shared_buffers = 512MB
max_wal_size = 8GB
autovacuum = off
password_encryption = 'scram-sha-256'"
PGENV_HBA=$PGENV_SYNCHDB_HBA start_cluster "$BINDIR" "$WORK/source" "$SRC_PORT" <<<"$CONF"
PGENV_HBA=$PGENV_SYNCHDB_HBA start_cluster "$BINDIR" "$WORK/dest" "$DST_PORT" <<EOF
$CONF
shared_preload_libraries = 'synchdb'
EOF

sql() {
    printf '%s\n' "$3" |
        "$BINDIR/psql" -X -q -At -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$1" -U "$PGENV_SUPERUSER" -d "$2" -f -
}
sql "$SRC_PORT" postgres "CREATE ROLE tb_src LOGIN REPLICATION SUPERUSER PASSWORD 'tb_pw'; CREATE DATABASE tsrc;"
sql "$SRC_PORT" tsrc "CREATE TABLE t (id int PRIMARY KEY, name text, n int);
INSERT INTO t SELECT g, 'name ' || g, g FROM generate_series(1, $ROWS) g; VACUUM ANALYZE t;"
sql "$DST_PORT" postgres "CREATE EXTENSION synchdb;"

# copy_once CONNECTOR [RULES-SQL] — prints the snapshot's milliseconds
copy_once() {
    sql "$DST_PORT" postgres "SELECT synchdb_add_conninfo('$1', '127.0.0.1', $SRC_PORT, 'tb_src', 'tb_pw',
        'tsrc', 'public', 'public.t', 'null', 'postgres'); ${2:-}
        SELECT synchdb_start_engine_bgw('$1', 'initial_only');" >/dev/null
    local deadline=$((SECONDS + 600)) ms=""
    while ((SECONDS < deadline)); do
        ms=$(sql "$DST_PORT" postgres "SELECT snapshot_end_ts - snapshot_begin_ts FROM synchdb_snapstats
                                        WHERE name = '$1' AND snapshot_end_ts > 0")
        [[ -n $ms ]] && break
        sleep 0.5
    done
    [[ -n $ms ]] || pgenv_die "connector $1 did not finish its snapshot"
    local rows
    rows=$(sql "$DST_PORT" postgres "SELECT count(*) FROM tsrc.t")
    [[ $rows == "$ROWS" ]] || pgenv_die "connector $1 copied $rows rows, expected $ROWS"
    sql "$DST_PORT" postgres "SELECT synchdb_stop_engine_bgw('$1'); SELECT synchdb_del_conninfo('$1');
        DROP TABLE tsrc.t; CHECKPOINT;" >/dev/null
    printf '%s' "$ms"
}

now_ms() { date +%s%3N; }

# stream_once CONNECTOR [RULES-SQL] — prints the milliseconds CDC took to apply
# one transaction of CDC_ROWS inserts
stream_once() {
    sql "$DST_PORT" postgres "SELECT synchdb_add_conninfo('$1', '127.0.0.1', $SRC_PORT, 'tb_src', 'tb_pw',
        'tsrc', 'public', 'public.t', 'null', 'postgres'); ${2:-}
        SELECT synchdb_start_engine_bgw('$1', 'no_data');" >/dev/null
    local deadline=$((SECONDS + 120)) ok=""
    while ((SECONDS < deadline)); do
        ok=$(sql "$DST_PORT" postgres "SELECT 1 FROM synchdb_snapstats WHERE name = '$1' AND snapshot_end_ts > 0")
        [[ -n $ok ]] && break
        sleep 0.2
    done
    [[ -n $ok ]] || pgenv_die "connector $1 did not finish its schema copy"
    sql "$SRC_PORT" tsrc "INSERT INTO t SELECT g, 'name ' || g, g FROM generate_series($ROWS + 1, $ROWS + $CDC_ROWS) g;"
    local t0 n=0
    t0=$(now_ms)
    deadline=$((SECONDS + 600))
    while ((SECONDS < deadline)); do
        n=$(sql "$DST_PORT" postgres "SELECT count(*) FROM tsrc.t")
        [[ $n == "$CDC_ROWS" ]] && break
        sleep 0.02
    done
    local t1
    t1=$(now_ms)
    [[ $n == "$CDC_ROWS" ]] || pgenv_die "connector $1 applied $n rows, expected $CDC_ROWS"
    if [[ -n ${2:-} ]]; then
        n=$(sql "$DST_PORT" postgres "SELECT count(*) FROM tsrc.t WHERE name LIKE '<%>' AND n = id + 1")
        [[ $n == "$CDC_ROWS" ]] || pgenv_die "connector $1 transformed $n rows, expected $CDC_ROWS"
    fi
    sql "$DST_PORT" postgres "SELECT synchdb_stop_engine_bgw('$1'); SELECT synchdb_del_conninfo('$1');
        DROP TABLE tsrc.t; CHECKPOINT;" >/dev/null
    sql "$SRC_PORT" tsrc "DELETE FROM t WHERE id > $ROWS; VACUUM t;"
    printf '%s' $((t1 - t0))
}

# report TITLE LABEL-PLAIN LABEL-RULES PLAIN1 RULES PLAIN2 — times and the ratio
report() {
    printf '%-44s %10s\n' "$1" "ms"
    printf '%-44s %10s\n' "$2, first run" "$4"
    printf '%-44s %10s\n' "$3" "$5"
    printf '%-44s %10s\n' "$2, second run" "$6"
    awk -v a="$4" -v b="$6" -v x="$5" \
        'BEGIN { printf "%-44s %10.2f\n", "ratio transforms / mean of no-rule runs", x / ((a + b) / 2) }'
}

plain=$(copy_once plain)
rules="SELECT synchdb_add_objmap('xf', 'transform', 'public.t.name', '''<'' || ''%d'' || ''>''');
       SELECT synchdb_add_objmap('xf', 'transform', 'public.t.n', '%d + 1');"
xf=$(copy_once xf "$rules")
plain2=$(copy_once plain2)
report "snapshot of $ROWS rows (PostgreSQL $PGVER)" "no rules (COPY)" \
    "two transforms (staged INSERT ... SELECT)" "$plain" "$xf" "$plain2"

splain=$(stream_once splain)
sxf=$(stream_once sxf "${rules//xf/sxf}")
splain2=$(stream_once splain2)
report "CDC of one $CDC_ROWS-row transaction" "no rules" "two transforms" "$splain" "$sxf" "$splain2"
