#!/bin/sh
# Run once by the postgres image on a new data folder (docker-entrypoint-initdb.d), as
# the owner POSTGRES_USER: create the application role with its password from the
# docker secret. Its privileges come from migration 0006 (`dropship db upgrade`).
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
     -v app_password="$(cat /run/secrets/pg_app_password)" <<'SQL'
CREATE ROLE dropship_app LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION
    PASSWORD :'app_password';
SQL
