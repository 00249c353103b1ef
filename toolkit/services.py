"""Stand-ins for the images compose.yaml and compose.prod.yaml name besides the
app: `postgres:17-alpine`, `redis:7-alpine` and `caddy:2-alpine`.

No registry is reachable, so each is made here from one Debian 13 root with
Debian's `postgresql-17` and `redis-server` (Redis 8.0: its commands, options
and `redis-cli` are those the compose files use with Redis 7), plus the Caddy
binary of the template's own tools. Each honours what the compose files rely
on in the official image: its entrypoint and default command, the variables
(POSTGRES_USER, POSTGRES_PASSWORD, POSTGRES_DB, PGDATA; REDISCLI_AUTH; Caddy's
XDG directories), the data directories that the volumes mount, the ports, and
the health commands on PATH (`pg_isready`, `redis-cli`). Alpine's busybox is
not there: the compose files call no shell tool of the image but `sh`.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from toolkit import images
from toolkit.deploy import BIN
from toolkit.docker import Docker

SUITE = "trixie"
POSTGRES_MAJOR = "17"
PACKAGES = ("ca-certificates", f"postgresql-{POSTGRES_MAJOR}", "redis-server")
BASE = "fastapi-template-tests/services:trixie"
TAGS = ("postgres:17-alpine", "redis:7-alpine", "caddy:2-alpine")

# First start: initialise PGDATA as the official image does, then run
# PostgreSQL as its own user, listening everywhere with password auth.
POSTGRES_ENTRYPOINT = r"""#!/bin/sh
set -eu
: "${PGDATA:=/var/lib/postgresql/data}"
export PGDATA
if [ "${1:-}" != postgres ]; then
    exec "$@"
fi
if [ "$(id -u)" = 0 ]; then
    mkdir -p "$PGDATA" /var/run/postgresql
    chown -R postgres:postgres "$PGDATA" /var/run/postgresql
    chmod 700 "$PGDATA"
    exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    : "${POSTGRES_PASSWORD:?the postgres stand-in needs POSTGRES_PASSWORD, as the official image does}"
    user=${POSTGRES_USER:-postgres}
    database=${POSTGRES_DB:-$user}
    password_file=$(mktemp)
    printf '%s\n' "$POSTGRES_PASSWORD" > "$password_file"
    initdb --username="$user" --pwfile="$password_file" --auth-local=trust \
        --auth-host=scram-sha-256 >/dev/null
    rm -f "$password_file"
    echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
    if [ "$database" != postgres ]; then
        echo "CREATE DATABASE \"$database\" OWNER \"$user\"" |
            postgres --single -j -D "$PGDATA" postgres >/dev/null
    fi
fi
shift
exec postgres -c listen_addresses='*' "$@"
"""

# As the official image: options alone mean redis-server, which runs as the
# redis user in /data, and without a password protected mode is off.
REDIS_ENTRYPOINT = r"""#!/bin/sh
set -eu
case "${1:-}" in
    -* | *.conf) set -- redis-server "$@" ;;
esac
if [ "${1:-}" = redis-server ] && [ "$(id -u)" = 0 ]; then
    chown -R redis:redis /data
    exec setpriv --reuid=redis --regid=redis --init-groups "$0" "$@"
fi
if [ "${1:-}" = redis-server ]; then
    case " $* " in
        *" --protected-mode "* | *" --requirepass "*) ;;
        *) set -- "$@" --protected-mode no ;;
    esac
fi
exec "$@"
"""

PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
IMAGE_SETTINGS = {
    "postgres:17-alpine": [
        f"ENV PATH=/usr/lib/postgresql/{POSTGRES_MAJOR}/bin:{PATH}",
        "ENV PGDATA=/var/lib/postgresql/data",
        'ENTRYPOINT ["/usr/local/bin/postgres-entrypoint"]',
        'CMD ["postgres"]',
        "EXPOSE 5432",
        "STOPSIGNAL SIGINT",
    ],
    "redis:7-alpine": [
        "WORKDIR /data",
        'ENTRYPOINT ["/usr/local/bin/redis-entrypoint"]',
        'CMD ["redis-server"]',
        "EXPOSE 6379",
    ],
    "caddy:2-alpine": [
        "ENV XDG_CONFIG_HOME=/config XDG_DATA_HOME=/data",
        "WORKDIR /srv",
        'CMD ["caddy", "run", "--config", "/etc/caddy/Caddyfile", "--adapter", "caddyfile"]',
        "EXPOSE 80 443 443/udp",
    ],
}


def service_images(docker: Docker) -> tuple[str, ...]:
    """Make (or find up to date) every stand-in; returns their tags."""
    caddy = BIN / "caddy"
    caddy_digest = hashlib.sha256(caddy.read_bytes()).hexdigest()

    def customise(root: Path) -> None:
        # The package's own cluster: the entrypoint makes one in PGDATA instead.
        shutil.rmtree(root / "var/lib/postgresql" / POSTGRES_MAJOR, ignore_errors=True)
        shutil.rmtree(root / "etc/postgresql" / POSTGRES_MAJOR, ignore_errors=True)
        local_bin = root / "usr/local/bin"
        for name, text in (
            ("postgres-entrypoint", POSTGRES_ENTRYPOINT),
            ("redis-entrypoint", REDIS_ENTRYPOINT),
        ):
            (local_bin / name).write_text(text)
            (local_bin / name).chmod(0o755)
        shutil.copyfile(caddy, root / "usr/bin/caddy")
        (root / "usr/bin/caddy").chmod(0o755)
        for directory in ("etc/caddy", "config", "data", "srv"):
            (root / directory).mkdir(parents=True, exist_ok=True)

    entrypoints = (POSTGRES_ENTRYPOINT, REDIS_ENTRYPOINT)
    images.stand_in(
        docker, BASE, suite=SUITE, packages=PACKAGES, customise=customise, inputs=[entrypoints, caddy_digest]
    )
    base_inputs = images.inputs_of(docker, BASE)
    for tag, settings in IMAGE_SETTINGS.items():
        key = images.digest(images.RECIPE, base_inputs, settings)
        if images.inputs_of(docker, tag) == key:
            continue
        dockerfile = "\n".join([f"FROM {BASE}", *settings, f"LABEL {images.LABEL}={key}", ""])
        docker("build", "--tag", tag, "-", input=dockerfile, env={"DOCKER_BUILDKIT": "0"}, timeout=300)
    return TAGS
