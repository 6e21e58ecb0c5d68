#!/bin/sh
# Generate the secrets docker-compose.yml reads, once, into deploy/secrets/ (a 0700
# folder, git-ignored). Run from the project folder:  sh deploy/make-secrets.sh
# Existing files are kept (delete deploy/secrets/ to start over; Postgres and Kafka
# keep the passwords they were first started with in their volumes).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out="$here/secrets"
umask 077
mkdir -p "$out"
printf '*\n' > "$out/.gitignore"

secret() {  # secret NAME: a random password in $out/NAME unless it exists
    [ -s "$out/$1" ] || head -c 48 /dev/urandom | od -An -tx1 | tr -d ' \n' | head -c 40 > "$out/$1"
}
for name in kafka_admin_password kafka_worker_password kafka_store_password \
            pg_owner_password pg_app_password; do
    secret "$name"
    # compose bind-mounts a secret file as it is: the containers' own users (kafka,
    # postgres) must read it; the folder (0700) keeps everyone else on this host out
    chmod 0644 "$out/$name"
done

fill() {  # fill TEMPLATE TARGET: the template with every CHANGE-ME-<NAME> replaced
    [ -s "$out/$2" ] && return 0
    sed -e "s/CHANGE-ME-kafka_worker_password/$(cat "$out/kafka_worker_password")/" \
        -e "s/CHANGE-ME-pg_app_password/$(cat "$out/pg_app_password")/" \
        -e "s/CHANGE-ME-pg_owner_password/$(cat "$out/pg_owner_password")/" \
        "$here/env/$1" > "$out/$2"
}
fill worker.env.example worker.env
fill admin.env.example admin.env
echo "secrets written to $out (never commit them)"
