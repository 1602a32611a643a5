#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR/..
# scripts/test.sh [15|18|all] — the project's whole test run (default: all).
#
#   1. cargo fmt --check                       (counts as 1 check)
#   2. cargo clippy --all-targets -D warnings  (counts as 1 check)
#   3. cargo test                              (counts every Rust test)
#      Live tests in the crate run only when SYNCHDB_TEST_PGPORT is set; unless
#      the caller set it, a throwaway logical-decoding cluster (no extension)
#      is started on port 25450 and exported to them as SYNCHDB_TEST_PGHOST,
#      SYNCHDB_TEST_PGPORT, SYNCHDB_TEST_USER, SYNCHDB_TEST_PASSWORD,
#      SYNCHDB_TEST_DB (role synchdb_src/synchdb_pw, scram, like the
#      regression clusters).
#   4. regress/run.sh 15 and/or 18             (counts every pg_regress test)
#   5. regress/autolaunch.sh, same versions    (counts its checks; server restarts)
#   6. regress/crash.sh, same versions         (counts its crash points: worker,
#      destination and source crashed at random moments under load)
#
# Every step runs even when an earlier one failed, so one run shows all
# problems. The last line printed is exactly "N passed, N failed", N being
# the number of individual tests/checks; the exit status is non-zero if
# anything failed. SYNCHDB_CARGO_TEST_TIMEOUT (default 900 s) bounds
# cargo test; regress/run.sh has its own SYNCHDB_REGRESS_TIMEOUT;
# SYNCHDB_AUTOLAUNCH_TIMEOUT and SYNCHDB_CRASH_TIMEOUT (default 600 s each)
# bound regress/autolaunch.sh and regress/crash.sh.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/pgenv.sh
. "$REPO/scripts/pgenv.sh"
# shellcheck disable=SC2034  # log prefix used by pgenv.sh
PGENV_TAG="test"

case ${1:-all} in
15) VERSIONS=(15) ;;
18) VERSIONS=(18) ;;
all) VERSIONS=(15 18) ;;
*)
    echo "usage: $0 [15|18|all]" >&2
    exit 2
    ;;
esac

ensure_cargo_path
cd "$REPO"

TMP=$(mktemp -d "${TMPDIR:-/tmp}/synchdb-test.XXXXXX")
chmod 755 "$TMP"
pgenv_on_exit "rm -rf $(printf '%q' "$TMP")"

PASSED=0
FAILED=0
SUMMARY=()
DONE=0
# If this script dies unexpectedly (set -e, a helper's pgenv_die, a signal),
# still end with a count line that shows the failure.
# shellcheck disable=SC2016  # expanded when the hook runs
pgenv_on_exit 'if [[ $DONE -eq 0 ]]; then echo "$PASSED passed, $((FAILED + 1)) failed"; fi'

# record NAME PASSED FAILED — adds a step's counts to the totals.
record() {
    PASSED=$((PASSED + $2))
    FAILED=$((FAILED + $3))
    SUMMARY+=("$(printf '  %-20s %4d ok, %4d failing' "$1" "$2" "$3")")
}

banner() { printf '\n===== %s =====\n' "$*"; }

# check NAME CMD... — a step that is one pass/fail check.
check() {
    local name=$1
    shift
    banner "$name"
    if "$@" </dev/null; then
        record "$name" 1 0
    else
        echo "FAILED: $name"
        record "$name" 0 1
    fi
}

# ---------------------------------------------------------------------------
check "cargo fmt --check" cargo fmt --check
check "cargo clippy" cargo clippy --all-targets --quiet -- -D warnings

# ---------------------------------------------------------------------------
# A cluster for the crate's live tests. Failing to start it is not fatal:
# the live tests then skip themselves and the rest still runs.
start_live_cluster() {
    local pgc
    pgc=$(pg_config_for "${VERSIONS[0]}") || return 1
    LIVE_BIN=$("$pgc" --bindir)
    # start_cluster would abort the whole run on a busy port; check first.
    local rc=0
    "$LIVE_BIN/pg_isready" -q -h 127.0.0.1 -p 25450 -t 2 >/dev/null 2>&1 || rc=$?
    if [[ $rc -le 1 ]]; then # 0 = accepting, 1 = rejecting: both mean busy
        pgenv_log "port 25450 is busy"
        return 1
    fi
    LIVE_DIR=$TMP/cargo-live
    ensure_test_user
    [[ $EUID -ne 0 ]] || chown "$PGENV_TEST_USER" "$TMP"
    PGENV_HBA=$PGENV_SYNCHDB_HBA start_cluster "$LIVE_BIN" "$LIVE_DIR" 25450 <<EOF
wal_level = logical
max_replication_slots = 10
max_wal_senders = 10
password_encryption = 'scram-sha-256'
EOF
    "$LIVE_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p 25450 -U "$PGENV_SUPERUSER" \
        -d postgres -c "CREATE ROLE synchdb_src LOGIN REPLICATION SUPERUSER PASSWORD 'synchdb_pw'" \
        </dev/null || return 1
    # Only for cargo test: regress/run.sh must not inherit these.
    LIVE_ENV=(SYNCHDB_TEST_PGHOST=127.0.0.1 SYNCHDB_TEST_PGPORT=25450
        SYNCHDB_TEST_USER=synchdb_src SYNCHDB_TEST_PASSWORD=synchdb_pw SYNCHDB_TEST_DB=postgres)
}

banner "cargo test"
LIVE_DIR=""
LIVE_ENV=()
if [[ -z ${SYNCHDB_TEST_PGPORT:-} ]]; then
    start_live_cluster ||
        pgenv_log "no cluster for the live cargo tests; they will skip themselves"
fi

# cargo test prints "test result: ok. 12 passed; 0 failed; ..." once per test
# binary (unit tests, each integration test file, doc tests): add them up.
# The timeout keeps a hung test from eating CI's whole time budget.
CARGO_TIMEOUT=${SYNCHDB_CARGO_TEST_TIMEOUT:-900}
rc=0
env "${LIVE_ENV[@]}" timeout -k 30 "$CARGO_TIMEOUT" cargo test </dev/null 2>&1 | tee "$TMP/cargo-test.log" || rc=$?
[[ $rc -eq 124 ]] && echo "cargo test timed out after ${CARGO_TIMEOUT}s"
sum_col() {
    sed -nE "s/^test result: [a-zA-Z]+\. ([0-9]+) passed; ([0-9]+) failed.*/\\$1/p" \
        "$TMP/cargo-test.log" | awk '{s += $1} END {print s + 0}'
}
p=$(sum_col 1)
f=$(sum_col 2)
# A compile error, a crashing or a hung test binary fails without a count.
if [[ $rc -ne 0 && $f -eq 0 ]]; then f=1; fi
record "cargo test" "$p" "$f"
if [[ -n $LIVE_DIR ]]; then stop_cluster "$LIVE_BIN" "$LIVE_DIR"; fi

# ---------------------------------------------------------------------------
# counted_script TITLE NAME TIMEOUT VERSION — runs regress/NAME.sh VERSION, whose
# last line is "N passed, N failed", and records its counts (a run that ends
# otherwise, or times out, counts as one failure at least).
counted_script() {
    local title=$1 name=$2 limit=$3 v=$4 log rc=0 p f
    banner "$title, PostgreSQL $v"
    log=$TMP/$name$v.log
    SYNCHDB_SKIP_BUILD=1 timeout -k 30 "$limit" bash "$REPO/regress/$name.sh" "$v" </dev/null 2>&1 |
        tee "$log" || rc=$?
    [[ $rc -eq 124 ]] && echo "regress/$name.sh timed out"
    p=$(sed -nE 's/^([0-9]+) passed, ([0-9]+) failed$/\1/p' "$log" | tail -n 1)
    f=$(sed -nE 's/^([0-9]+) passed, ([0-9]+) failed$/\2/p' "$log" | tail -n 1)
    p=${p:-0}
    f=${f:-0}
    if [[ $rc -ne 0 && $f -eq 0 ]]; then f=1; fi
    record "$name PG$v" "$p" "$f"
}

for v in "${VERSIONS[@]}"; do
    banner "pg_regress PostgreSQL $v"
    counts=$TMP/regress$v.counts
    rm -f "$counts"
    rc=0
    SYNCHDB_REGRESS_COUNTS=$counts bash "$REPO/regress/run.sh" "$v" </dev/null || rc=$?
    p=0
    f=0
    if [[ -s $counts ]]; then read -r p f <"$counts"; fi
    # run.sh failed before counting anything (e.g. build error): one failure.
    if [[ $rc -ne 0 && $f -eq 0 ]]; then f=1; fi
    record "pg_regress PG$v" "$p" "$f"

    # What pg_regress cannot do: restarts of the server (the auto-launcher).
    # Its last line is "N passed, N failed".
    # Server restarts and the auto-launcher, then crashes at random moments
    # (fixed seed) under load: the connector's worker, the destination, the
    # source. Built and installed by the pg_regress step just before.
    counted_script "auto-launch across restarts" autolaunch "${SYNCHDB_AUTOLAUNCH_TIMEOUT:-600}" "$v"
    counted_script "crash test" crash "${SYNCHDB_CRASH_TIMEOUT:-600}" "$v"
done

# ---------------------------------------------------------------------------
banner "summary"
printf '%s\n' "${SUMMARY[@]}"
# shellcheck disable=SC2034  # read by the exit hook
DONE=1
echo "${PASSED} passed, ${FAILED} failed"
[[ $FAILED -eq 0 ]]
