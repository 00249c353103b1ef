#!/usr/bin/env bash
# Install or update {{ cookiecutter.project_name }} on this machine from this checkout. Run it as
# root from anywhere in the project, first to install and again for every update:
# each step leaves what is already in place as it is.
#
#   sudo deploy/vm/install.sh                 install or update, with the systemd units
#   sudo deploy/vm/install.sh --supervisor    the same, with supervisor instead of systemd
#   sudo deploy/vm/install.sh --rollback      back to the previous release (code only)
#
# Each update is a new directory under /opt/{{ cookiecutter.project_slug }}/releases with its own
# virtualenv; /opt/{{ cookiecutter.project_slug }}/current points at the one that serves.
#
# Each release's virtualenv is made by uv, exactly from uv.lock when the checkout has one, with
# the distribution's python{{ cookiecutter.python_version }}, or where it has none with a Python that uv installs
# under /opt/{{ cookiecutter.project_slug }}/python. uv itself comes from PyPI into /opt/{{ cookiecutter.project_slug }}/uv.
#
# Environment: KEEP_RELEASES, how many releases to keep [5].
set -euo pipefail

APP={{ cookiecutter.project_slug }}
PREFIX=/opt/$APP
ENV_FILE=/etc/$APP/$APP.env
{% if cookiecutter.use_socketio and cookiecutter.use_redis %}
# One single-worker process per port, behind nginx's ip_hash (see the nginx site).
PORTS=(8000 8001)
{% else %}
PORTS=(8000)
{% endif %}
{% if cookiecutter.use_worker %}
# The liveness checks of the worker and the scheduler, as their units and supervisor programs set them.
WORKER_PORT=8100
SCHEDULER_PORT=8101
{% endif %}
PYTHON_VERSION={{ cookiecutter.python_version }}
# Pinned, as in the Dockerfile of the image-based targets.
UV_VERSION=0.13.9
export UV_PYTHON_INSTALL_DIR=$PREFIX/python
KEEP_RELEASES=${KEEP_RELEASES:-5}

usage() {
    sed -n '2,17p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

log() {
    printf '==> %s\n' "$*"
}

# A release is built while the servers keep serving: at low priority, so they keep
# answering on a small machine.
uv() {
    nice -n 10 "$PREFIX/uv/bin/uv" "$@"
}

fail() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}

manager=systemd
rollback=false
case "${1:-}" in
"") ;;
--supervisor) manager=supervisor ;;
--rollback) rollback=true ;;
-h | --help)
    usage
    exit 0
    ;;
*)
    usage >&2
    exit 2
    ;;
esac

[[ $EUID -eq 0 ]] || fail "run as root: sudo $0 $*"
if [[ $manager == supervisor ]]; then
    command -v supervisorctl >/dev/null || fail "supervisor is not installed: apt install supervisor"
fi
source_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

# Which process manager serves now: supervisor when its program file is installed.
if [[ $rollback == true && -f /etc/supervisor/conf.d/$APP.conf ]]; then
    manager=supervisor
fi

# Point `current` at a release in one step (a rename), so nothing sees it half-switched.
switch_to() {
    ln -sfn "$1" "$PREFIX/current.new"
    mv -T "$PREFIX/current.new" "$PREFIX/current"
}

restart_servers() {
    local port
    if [[ $manager == supervisor ]]; then
        supervisorctl reread
{% if cookiecutter.use_worker %}
        supervisorctl update "$APP" "$APP-worker" "$APP-scheduler"
        # The worker first: jobs the new code queues then find a worker that knows them.
        supervisorctl restart "$APP-worker:*"
        "$source_dir/deploy/vm/wait-healthy" "$WORKER_PORT"
        supervisorctl restart "$APP-scheduler:*"
        "$source_dir/deploy/vm/wait-healthy" "$SCHEDULER_PORT"
{% else %}
        supervisorctl update "$APP"
{% endif %}
        supervisorctl restart "$APP:*"
        "$source_dir/deploy/vm/wait-healthy" "${PORTS[@]}"
    else
{% if cookiecutter.use_worker %}
        # The worker first: jobs the new code queues then find a worker that knows them.
        # Meanwhile jobs wait in Redis; the old worker finishes its running ones first.
        systemctl enable --quiet "$APP-worker.service"
        systemctl restart "$APP-worker.service"
        "$source_dir/deploy/vm/wait-healthy" "$WORKER_PORT"
        # Then the scheduler, with the new code's schedules. Meanwhile the next scheduled run
        # already waits in Redis, queued ahead of its time, and the worker takes it when due.
        systemctl enable --quiet "$APP-scheduler.service"
        systemctl restart "$APP-scheduler.service"
        "$source_dir/deploy/vm/wait-healthy" "$SCHEDULER_PORT"
{% endif %}
        # One process at a time: nginx sends requests to the others meanwhile.
        for port in "${PORTS[@]}"; do
            systemctl enable --quiet "$APP@$port.service"
            systemctl restart "$APP@$port.service"
            "$source_dir/deploy/vm/wait-healthy" "$port"
        done
    fi
{% if cookiecutter.use_worker %}
    log "worker running, its health check on 127.0.0.1:$WORKER_PORT"
    log "scheduler running, its health check on 127.0.0.1:$SCHEDULER_PORT"
{% endif %}
    log "serving on ports ${PORTS[*]}"
}

if [[ $rollback == true ]]; then
    current=$(readlink -f "$PREFIX/current")
    previous=$(find "$PREFIX/releases" -mindepth 1 -maxdepth 1 -type d | sort | grep -B1 -Fx "$current" | head -n 1)
    [[ -n $previous && $previous != "$current" ]] || fail "no release older than $current"
    log "rolling back from $(basename "$current") to $(basename "$previous")"
    switch_to "$previous"
    restart_servers
{% if cookiecutter.use_postgres %}
    log "the database schema was left as it is: see 'Roll back' in the README"
{% endif %}
    exit 0
fi

log "user $APP"
if ! id -u "$APP" >/dev/null 2>&1; then
    useradd --system --user-group --home-dir "$PREFIX" --no-create-home --shell /usr/sbin/nologin "$APP"
fi
install -d -m 0755 "$PREFIX" "$PREFIX/releases"
install -d -m 0750 -o root -g "$APP" "$(dirname "$ENV_FILE")"

if [[ ! -f $ENV_FILE ]]; then
    log "settings $ENV_FILE"
    secret_key=$(python3 -c 'import secrets; print(secrets.token_urlsafe(48))')
{% if cookiecutter.use_postgres %}
    # Hex: nothing to percent-encode in the URL. The README's next step gives it to PostgreSQL.
    db_password=$(python3 -c 'import secrets; print(secrets.token_hex(24))')
{% endif %}
    install -m 0640 -o root -g "$APP" /dev/null "$ENV_FILE"
    cat >"$ENV_FILE" <<EOF
# Settings of $APP (see "Deploy to a VM" in the README). Read by systemd, and by the
# service itself through the release's .env link. No quotes needed; no PORT here.
ENVIRONMENT=production
SECRET_KEY=$secret_key
# Your domain(s), and localhost for install.sh's health check.
TRUSTED_HOSTS=api.example.com,localhost
{% if cookiecutter.use_metrics %}
METRICS_TOKEN=
# Above: a bearer token for /metrics (openssl rand -hex 24); empty: /metrics answers 404.
{% endif %}
# Browser origins allowed to call the API, comma-separated.
CORS_ORIGINS=
{% if not cookiecutter.use_socketio %}
# gunicorn worker processes (default: one per CPU).
# WEB_CONCURRENCY=2
{% endif %}
{% if cookiecutter.use_postgres %}
DATABASE_URL=postgresql://{{ cookiecutter.project_slug | replace("-", "_") }}:$db_password@127.0.0.1:5432/{{ cookiecutter.project_slug | replace("-", "_") }}
{% endif %}
{% if cookiecutter.use_redis %}
REDIS_URL=redis://127.0.0.1:6379/0
{% endif %}
{% if cookiecutter.use_socketio and cookiecutter.use_redis %}
# The processes share Socket.IO rooms through Redis; nginx keeps a client on one.
SOCKETIO_TRANSPORTS=polling,websocket
{% endif %}
{% if cookiecutter.use_rate_limit %}
RATE_LIMIT_DEFAULT=120/minute
{% endif %}
{% if cookiecutter.use_sentry %}
# Empty: Sentry off.
SENTRY_DSN=
{% endif %}
{% if cookiecutter.use_worker %}
# Jobs the background worker runs at once. The health checks' addresses of the worker and the
# scheduler, and WORKER_SCHEDULES, are set in their units: keep them out of this file.
# WORKER_CONCURRENCY=10
{% endif %}
EOF
    log "review $ENV_FILE, then run this script again"
    exit 1
fi

release=$(date -u +%Y%m%d%H%M%S)
if revision=$(git -C "$source_dir" rev-parse --short=12 HEAD 2>/dev/null); then
    release=$release-$revision
fi
dest=$PREFIX/releases/$release
[[ ! -e $dest ]] || fail "$dest already exists: run again in a second"
log "release $dest"
install -d -m 0755 "$dest"
tar -C "$source_dir" --exclude=./.git --exclude=./.venv --exclude=./.env --exclude='*.db' \
    --exclude=__pycache__ --exclude=.mypy_cache --exclude=.pytest_cache --exclude=.ruff_cache \
    -cf - . | tar -C "$dest" -xf -

if [[ $(uv --version 2>/dev/null) != "uv $UV_VERSION"* ]]; then
    log "uv $UV_VERSION into $PREFIX/uv"
    python3 -m venv "$PREFIX/uv"
    "$PREFIX/uv/bin/pip" install --quiet --disable-pip-version-check "uv==$UV_VERSION"
fi
if ! python=$(command -v "python$PYTHON_VERSION"); then
    # The download is a python-build-standalone build, kept for every later release.
    log "Python $PYTHON_VERSION: not in this distribution, installing it with uv into $UV_PYTHON_INSTALL_DIR"
    uv python install --quiet --no-bin "$PYTHON_VERSION"
    python=$(uv python find --managed-python "$PYTHON_VERSION")
fi
# Bytecode now (--compile-bytecode, and compileall below): the sandbox keeps the release read-only.
if [[ -f $dest/uv.lock ]]; then
    log "dependencies from uv.lock, with $python"
    (cd "$dest" && uv sync --quiet --frozen --no-dev --no-editable --compile-bytecode --python "$python")
else
    log "dependencies from pyproject.toml (no uv.lock), with $python"
    uv venv --quiet --python "$python" "$dest/.venv"
    uv pip install --quiet --compile-bytecode --python "$dest/.venv/bin/python" "$dest"
fi
nice -n 10 "$dest/.venv/bin/python" -m compileall -q "$dest/app"{{ ' "$dest/migrations"' if cookiecutter.use_postgres else "" }}
ln -sfn "$ENV_FILE" "$dest/.env"
chown -R root:root "$dest"

# Empty on a first install: -e prints nothing for a link that does not exist yet.
previous=$(readlink -e "$PREFIX/current" || true)
switch_to "$dest"

if [[ $manager == supervisor ]]; then
    log "supervisor program"
    install -m 0644 "$source_dir/deploy/vm/supervisor/$APP.conf" "/etc/supervisor/conf.d/$APP.conf"
else
    log "systemd units"
    install -m 0644 "$source_dir/deploy/vm/systemd/$APP@.service" /etc/systemd/system/
{% if cookiecutter.use_worker %}
    install -m 0644 "$source_dir/deploy/vm/systemd/$APP-worker.service" \
        "$source_dir/deploy/vm/systemd/$APP-scheduler.service" /etc/systemd/system/
{% endif %}
{% if cookiecutter.use_postgres %}
    install -m 0644 "$source_dir/deploy/vm/systemd/$APP-migrate.service" /etc/systemd/system/
    install -m 0644 "$source_dir/deploy/vm/systemd/$APP-backup.service" \
        "$source_dir/deploy/vm/systemd/$APP-backup.timer" /etc/systemd/system/
{% endif %}
    systemctl daemon-reload
fi
{% if cookiecutter.use_postgres %}

log "migrations"
if [[ $manager == supervisor ]]; then
    migrate=(runuser -u "$APP" -- env "PATH=$PREFIX/current/.venv/bin:/usr/bin:/bin" scripts/migrate)
    (cd "$PREFIX/current" && "${migrate[@]}") || migrated=false
else
    systemctl start "$APP-migrate.service" || migrated=false
fi
if [[ ${migrated:-true} == false ]]; then
    # The failed release goes; the next run starts from the state before this one.
    rm -rf "$dest"
    logs="Logs: journalctl -u $APP-migrate"
    if [[ -z $previous ]]; then
        rm -f "$PREFIX/current"
        fail "migrations failed on the first install: nothing is serving yet. Fix the cause and run this again. $logs"
    fi
    switch_to "$previous"
    fail "migrations failed; still serving $(basename "$previous"). $logs"
fi
{% endif %}

restart_servers
{% if cookiecutter.use_postgres %}

if [[ $manager == systemd ]]; then
    log "nightly backups into /var/backups/$APP"
    install -d -m 0700 -o "$APP" -g "$APP" "/var/backups/$APP"
    systemctl enable --quiet --now "$APP-backup.timer"
fi
{% endif %}

site=/etc/nginx/sites-available/$APP.conf
if [[ ! -f $site ]]; then
    # Only the first time: certbot edits the installed site to add HTTPS.
    log "nginx site $site"
    install -m 0644 "$source_dir/deploy/vm/nginx/$APP.conf" "$site"
    ln -sfn "$site" "/etc/nginx/sites-enabled/$APP.conf"
    nginx -t
    systemctl reload nginx
elif ! cmp -s "$source_dir/deploy/vm/nginx/$APP.conf" "$site"; then
    # Not reloaded otherwise: a reload closes clients' idle keep-alive connections,
    # and a request sent on one at that moment fails.
    log "note: $site differs from deploy/vm/nginx/$APP.conf; merge changes by hand"
fi

log "removing all but the $KEEP_RELEASES newest releases"
find "$PREFIX/releases" -mindepth 1 -maxdepth 1 -type d | sort | head -n "-$KEEP_RELEASES" |
    while read -r old; do
        [[ $old == "$(readlink -f "$PREFIX/current")" ]] || rm -rf "$old"
    done
log "done: $(basename "$dest")"
