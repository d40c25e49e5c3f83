#!/bin/sh
# The official postgres image's first start, in short: as root, hand the data folder to postgres; as postgres,
# on an empty folder, initdb with POSTGRES_USER and POSTGRES_PASSWORD and create POSTGRES_DB while listening
# on the socket only (nobody connects before it is ready); then serve on the network.
set -eu
: "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD is required}"
POSTGRES_USER=${POSTGRES_USER:-postgres}
POSTGRES_DB=${POSTGRES_DB:-$POSTGRES_USER}
bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)

if [ "$(id -u)" = 0 ]; then
    mkdir -p "$PGDATA" /var/run/postgresql
    chown postgres:postgres "$PGDATA" /var/run/postgresql
    chmod 700 "$PGDATA"
    exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    pwfile=$(mktemp)
    printf '%s\n' "$POSTGRES_PASSWORD" > "$pwfile"
    "$bin/initdb" --pgdata="$PGDATA" --username="$POSTGRES_USER" --pwfile="$pwfile" \
        --auth-local=trust --auth-host=scram-sha-256 --encoding=UTF8 --locale=C.UTF-8 >/dev/null
    rm -f "$pwfile"
    echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
    "$bin/pg_ctl" --pgdata="$PGDATA" --wait --silent -o "-c listen_addresses=''" start
    if [ "$POSTGRES_DB" != postgres ]; then
        "$bin/createdb" --username="$POSTGRES_USER" "$POSTGRES_DB"
    fi
    "$bin/pg_ctl" --pgdata="$PGDATA" --wait --silent --mode=fast stop
    echo "postgres-entrypoint: database $POSTGRES_DB created for $POSTGRES_USER"
fi

exec "$bin/postgres" -D "$PGDATA" -c listen_addresses='*'
