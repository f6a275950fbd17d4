#!/bin/sh
# Installs the Debian packages the tests need beyond the Python environment:
#   chromium        headless browser for tests/test_browser.py (/usr/bin/chromium)
#   docker-compose  validates docker/compose.yaml without a Docker engine (tests/test_deploy.py)
# Idempotent and quiet: exits 0 at once when both are there; uses sudo only when not root; on
# failure prints apt's output.
set -eu

missing=""
[ -x /usr/bin/chromium ] || missing="$missing chromium"
command -v docker-compose >/dev/null 2>&1 || missing="$missing docker-compose"
[ -z "$missing" ] && exit 0

if [ "$(id -u)" -eq 0 ]; then
    SUDO=""
elif command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
else
    echo "install-test-deps: missing:$missing; this is not root and there is no sudo" >&2
    exit 1
fi

log=$(mktemp)
trap 'rm -f "$log"' EXIT
if ! $SUDO env DEBIAN_FRONTEND=noninteractive sh -c \
    "apt-get update -qq && apt-get install -y -qq --no-install-recommends $missing" >"$log" 2>&1
then
    cat "$log" >&2
    echo "install-test-deps: installing$missing with apt-get failed" >&2
    exit 1
fi
if [ ! -x /usr/bin/chromium ] || ! command -v docker-compose >/dev/null 2>&1; then
    cat "$log" >&2
    echo "install-test-deps: apt-get succeeded but chromium or docker-compose is still missing" >&2
    exit 1
fi
