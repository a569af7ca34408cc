#!/usr/bin/env bash
# Makes sure nats-server (Debian's package, 2.9 or later, with JetStream) is installed,
# for the fleet tests (tests/e2e/fleet.rs), which start private servers of their own on
# loopback ports they pick. Installs the package when running as root with apt-get.
set -euo pipefail
for p in nats-server /usr/sbin/nats-server /usr/bin/nats-server; do
    if command -v "$p" >/dev/null 2>&1; then
        "$p" --version
        exit 0
    fi
done
if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "installing Debian's nats-server (for the fleet tests)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q --no-install-recommends nats-server >/dev/null 2>&1 ||
        { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends nats-server >/dev/null; }
    # The package enables a system service; the tests never use it.
    systemctl disable --now nats-server >/dev/null 2>&1 || true
    /usr/sbin/nats-server --version
else
    echo "the fleet tests need nats-server (Debian: apt-get install nats-server), or MMAUDIT_NATS_SERVER=/path/to/nats-server" >&2
    exit 1
fi
