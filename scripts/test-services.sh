#!/usr/bin/env bash
# Make sure the database servers the tests use are up: PostgreSQL on 127.0.0.1:5432 and MariaDB on
# 127.0.0.1:3306. Starts them when they are installed but stopped; never installs or reconfigures.
# Tests create (and drop) their own databases on them, so nothing here touches data.
set -uo pipefail

up() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

if ! up 5432 && [ -d /etc/postgresql ]; then
  echo "starting PostgreSQL" >&2
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
fi
if ! up 3306 && command -v mariadbd >/dev/null; then
  echo "starting MariaDB" >&2
  start-stop-daemon --start --oknodo --background --exec "$(command -v mariadbd)" || true
fi
for _ in $(seq 1 30); do
  if up 5432 && up 3306; then exit 0; fi
  sleep 1
done
up 5432 || echo "warning: PostgreSQL is not reachable on 127.0.0.1:5432" >&2
up 3306 || echo "warning: MariaDB is not reachable on 127.0.0.1:3306" >&2
exit 0  # the tests themselves fail (CI=true) or skip when a server is missing
