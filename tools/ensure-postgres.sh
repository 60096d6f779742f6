#!/usr/bin/env bash
# Install (from Debian's packages, when absent) and start PostgreSQL, and make the role the tests use.
# Idempotent. Prints nothing but progress; the tests connect with MODELLOOP_TEST_POSTGRES_URL (see Makefile).
set -euo pipefail

ROLE=${MODELLOOP_TEST_PG_ROLE:-modelloop}
PASSWORD=${MODELLOOP_TEST_PG_PASSWORD:-modelloop-test}

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

if ! command -v pg_ctlcluster >/dev/null 2>&1 || ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
  echo "postgres: installing from Debian's packages"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
fi

cluster=$(pg_lsclusters --no-header | head -n 1 || true)
if [ -z "$cluster" ]; then
  ver=$(ls /usr/lib/postgresql | sort -n | tail -n 1)
  echo "postgres: creating cluster $ver/main"
  as_root pg_createcluster "$ver" main >/dev/null
  cluster=$(pg_lsclusters --no-header | head -n 1)
fi
ver=$(echo "$cluster" | awk '{print $1}')
name=$(echo "$cluster" | awk '{print $2}')
status=$(echo "$cluster" | awk '{print $4}')
if [ "$status" != "online" ]; then
  echo "postgres: starting cluster $ver/$name"
  as_root pg_ctlcluster "$ver" "$name" start
fi

for _ in $(seq 1 30); do
  if as_root su postgres -c "psql -qtAc 'select 1'" >/dev/null 2>&1; then break; fi
  sleep 1
done

as_root su postgres -c "psql -v ON_ERROR_STOP=1 -qtA" <<SQL >/dev/null
DO \$\$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '${ROLE}') THEN
    CREATE ROLE ${ROLE} LOGIN CREATEDB PASSWORD '${PASSWORD}';
  ELSE
    ALTER ROLE ${ROLE} LOGIN CREATEDB PASSWORD '${PASSWORD}';
  END IF;
END \$\$;
SQL
echo "postgres: ready (role ${ROLE} on 127.0.0.1:$(echo "$cluster" | awk '{print $3}'))"
