"""The client address behind each target's edge: a forged X-Forwarded-For escapes no limit.

For every deploy target, the settings that decide the client's address
(FORWARDED_ALLOW_IPS, FORWARDED_HOPS, CLIENT_IP_HEADER, and the rest of the
environment) are read from the target's own deploy files. The app is built from
them, in process, and each request reaches it the way the platform's edge
delivers it: from the edge's address, with the forwarding headers rewritten as
the platform documents (see EDGES). A client that writes its own
X-Forwarded-For (and any client-address header the platform uses) must still
spend one budget, and two real clients must get two.

The edges themselves cannot run here; what each does to the headers is taken
from its documentation, cited next to each emulation.
"""

from __future__ import annotations

import json
import re
import secrets
import shlex
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from toolkit.deploy import (
    SLUG,
    bake_group,
    on_this_machine,
    target_params,
    unit_settings,
    venv_env,
)
from toolkit.platforms import launch
from toolkit.processes import clean_env, free_port
from toolkit.servers import serving

Headers = list[tuple[str, str]]
# What the edge delivers: the address the app's connection comes from, and the headers.
Delivery = tuple[str, Headers]

# Documentation prefixes (RFC 5737): the two real clients.
CLIENT_A = "203.0.113.10"
CLIENT_B = "198.51.100.20"
# URLs nothing connects to (app_env leaves Redis out).
UNUSED_DATABASE = "postgresql://app:unused@127.0.0.1:9/app"
UNUSED_REDIS = "redis://127.0.0.1:9/0"
# Headers a client may write to pick an address; an edge that sets one overwrites it.
FORGEABLE = ("X-Forwarded-For", "X-Real-IP", "Fly-Client-IP", "CF-Connecting-IP")


def appended(sent: Headers, *entries: str) -> str:
    """X-Forwarded-For after proxies appended `entries` to what the client sent."""
    incoming = [value for name, value in sent if name.lower() == "x-forwarded-for"]
    return ", ".join([*incoming, *entries])


def without(sent: Headers, *names: str) -> Headers:
    lowered = {name.lower() for name in names}
    return [(name, value) for name, value in sent if name.lower() not in lowered]


def caddy(client: str, sent: Headers) -> Delivery:
    """Caddy 2 in compose.prod.yaml: with no trusted_proxies configured it ignores the
    client's X-Forwarded-For and sends the client's address alone
    (https://caddyserver.com/docs/caddyfile/directives/reverse_proxy#defaults)."""
    headers = without(sent, "X-Forwarded-For", "X-Forwarded-Proto")
    return "172.18.0.5", [*headers, ("X-Forwarded-For", client), ("X-Forwarded-Proto", "https")]


def railway(client: str, sent: Headers) -> Delivery:
    """Railway's edge sets X-Real-IP to the client's address
    (https://docs.railway.com/networking/public-networking/specs-and-limits) and
    overwrites one the client sent; X-Forwarded-For is taken as appended to (the worst case)."""
    headers = without(sent, "X-Real-IP", "X-Forwarded-For")
    return "fd12:3456::7", [
        *headers,
        ("X-Real-IP", client),
        ("X-Forwarded-For", appended(sent, client)),
        ("X-Forwarded-Proto", "https"),
    ]


def cloud_run(client: str, sent: Headers) -> Delivery:
    """Google's front end appends the address it received the request from to
    X-Forwarded-For (https://cloud.google.com/load-balancing/docs/https#x-forwarded-for_header:
    `<supplied-value>,<client-ip>,...`); on a run.app URL no load balancer entry follows."""
    headers = without(sent, "X-Forwarded-For")
    return "169.254.1.1", [
        *headers,
        ("X-Forwarded-For", appended(sent, client)),
        ("X-Forwarded-Proto", "https"),
    ]


def envoy_gateway(client: str, sent: Headers) -> Delivery:
    """A Gateway API implementation on Envoy appends the downstream address to
    X-Forwarded-For (https://www.envoyproxy.io/docs/envoy/latest/configuration/http/http_conn_man/headers#x-forwarded-for);
    the pod sees the Envoy pod's address."""
    headers = without(sent, "X-Forwarded-For")
    return "10.42.3.17", [
        *headers,
        ("X-Forwarded-For", appended(sent, client)),
        ("X-Forwarded-Proto", "https"),
    ]


def nginx(client: str, sent: Headers) -> Delivery:
    """nginx on the VM, as its site sets them: `$proxy_add_x_forwarded_for` appends
    `$remote_addr`, and X-Real-IP is `$remote_addr`
    (https://nginx.org/en/docs/http/ngx_http_proxy_module.html#var_proxy_add_x_forwarded_for)."""
    headers = without(sent, "X-Forwarded-For", "X-Real-IP", "X-Forwarded-Proto")
    return "127.0.0.1", [
        *headers,
        ("X-Real-IP", client),
        ("X-Forwarded-For", appended(sent, client)),
        ("X-Forwarded-Proto", "https"),
    ]


def fly(client: str, sent: Headers) -> Delivery:
    """Fly's proxy sets Fly-Client-IP to the address it accepted the connection from,
    and X-Forwarded-For ends with one of the app's own addresses
    (https://fly.io/docs/networking/request-headers/)."""
    headers = without(sent, "Fly-Client-IP", "X-Forwarded-For")
    return "172.16.5.2", [
        *headers,
        ("Fly-Client-IP", client),
        ("X-Forwarded-For", appended(sent, client, "66.241.124.11")),
        ("X-Forwarded-Proto", "https"),
    ]


def render(client: str, sent: Headers) -> Delivery:
    """Render: Cloudflare in front appends the client's address to X-Forwarded-For
    (https://developers.cloudflare.com/fundamentals/reference/http-headers/), then
    Render's proxy appends Cloudflare's; the app's peer is Render's proxy."""
    headers = without(sent, "X-Forwarded-For", "CF-Connecting-IP")
    return "10.201.4.7", [
        *headers,
        ("CF-Connecting-IP", client),
        ("X-Forwarded-For", appended(sent, client, "104.22.17.40")),
        ("X-Forwarded-Proto", "https"),
    ]


EDGES: dict[str, Callable[[str, Headers], Delivery]] = {
    "docker-compose": caddy,
    "railway": railway,
    "cloud-run": cloud_run,
    "kubernetes": envoy_gateway,
    "vm": nginx,
    "fly": fly,
    "render": render,
}


# --- The settings each target's files give the app ---------------------------------


def vm_env(project: Path) -> dict[str, str]:
    """The settings file install.sh writes (its heredoc), as systemd reads it."""
    script = (project / "deploy" / "vm" / "install.sh").read_text()
    body = re.search(r'cat >"\$ENV_FILE" <<EOF\n(.*?)\nEOF\n', script, re.DOTALL)
    assert body, "install.sh writes the settings file from a heredoc"
    env = {}
    for line in body.group(1).splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            env[name] = value
    return env


def target_settings(project: Path, target: str, home: Path) -> dict[str, str]:
    """The settings a target's files give the app: what its platform starts the server
    with, or on the VM the settings file install.sh writes."""
    if target == "vm":
        return vm_env(project)
    return launch(target, project, UNUSED_DATABASE, UNUSED_REDIS, home).serve.env


# --- Driving the app ---------------------------------------------------------------

# Runs in the project's virtualenv: the app built from the environment, its lifespan
# run, and each request sent from the address the edge connects from.
DRIVER = """
import asyncio, json, sys

import httpx
from asgi_lifespan import LifespanManager
from limits import parse

from app.main import create_app
from app.settings import Settings
from tests.support import per_request_state


async def main() -> None:
    steps = json.load(sys.stdin)
    settings = Settings(_env_file=None)
    limit = parse(settings.rate_limit_default).amount
    app = create_app(settings)
    results = []
    async with LifespanManager(per_request_state(app)) as manager:
        for step in steps:
            statuses = []
            for n in range(limit + 1 if step["count"] == "limit+1" else step["count"]):
                headers = [(k, v.replace("{n}", str(n))) for k, v in step["headers"]]
                transport = httpx.ASGITransport(app=manager.app, client=(step["peer"], 40000 + n))
                async with httpx.AsyncClient(transport=transport, base_url=step["base"]) as client:
                    statuses.append((await client.get("/", headers=headers)).status_code)
            results.append(statuses)
    print(json.dumps({"limit": limit, "results": results}))


asyncio.run(main())
"""


def drive(venv: Path, project: Path, env: dict[str, str], steps: list[dict[str, Any]]) -> dict[str, Any]:
    """Run the steps against the app built from `env` alone (no .env, no inherited settings)."""
    result = subprocess.run(
        [str(venv / "bin" / "python"), "-c", DRIVER],
        cwd=project,
        env=clean_env(only=("PATH", "HOME"), **env),
        input=json.dumps(steps),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    outcome: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return outcome


@pytest.mark.parametrize("target", target_params(tuple(EDGES)))
def test_a_forged_x_forwarded_for_cannot_escape_the_rate_limit(
    bakery: Any, venv: Path, tmp_path: Path, target: str
) -> None:
    project = bakery(deploy_target=target)
    files = target_settings(project, target, tmp_path)
    assert files.get("ENVIRONMENT") == "production"
    env = app_env(files)
    host = trusted_host(env)
    edge = EDGES[target]

    def step(client: str, sent: Headers, count: int | str) -> dict[str, Any]:
        peer, headers = edge(client, sent)
        return {"peer": peer, "headers": headers, "count": count, "base": f"https://{host}"}

    forged = [(name, f"6.6.{{n}}.{index}") for index, name in enumerate(FORGEABLE)]
    outcome = drive(
        venv,
        project,
        env,
        [
            # A real client naming a new address in every forgeable header, every time.
            step(CLIENT_A, forged, "limit+1"),
            # The same client, with nothing forged: the same spent budget.
            step(CLIENT_A, [], 1),
            # Another real client: a budget of its own, even naming the first one.
            step(CLIENT_B, [(name, CLIENT_A) for name in FORGEABLE], 1),
        ],
    )
    limit = outcome["limit"]
    spending, again, other = outcome["results"]

    assert spending == [200] * limit + [429], f"{target}: forged addresses escaped the limit"
    assert again == [429]
    assert other == [200], f"{target}: a second client shares the first one's budget"


def app_env(files: dict[str, str]) -> dict[str, str]:
    """The target's settings, with stand-ins for the secrets the platform holds.

    The database URL is never connected to (GET / does not touch it); without
    REDIS_URL the budgets are counted in memory, which changes nothing here.
    """
    env = {name: value for name, value in files.items() if name not in {"PORT", "REDIS_URL"}}
    env["SECRET_KEY"] = secrets.token_urlsafe(48)
    env["DATABASE_URL"] = UNUSED_DATABASE
    env.pop("SENTRY_DSN", None)
    # The default limit covers writes only; here GET / stands for any limited route.
    env["RATE_LIMIT_DEFAULT_METHODS"] = "GET,HEAD,POST,PUT,PATCH,DELETE"
    return env


def trusted_host(env: dict[str, str]) -> str:
    hosts = [host for host in env.get("TRUSTED_HOSTS", "*").split(",") if host]
    named = [
        host for host in hosts if host not in {"*", "localhost", "127.0.0.1"} and not host.startswith("*.")
    ]
    return named[0] if named else "api.example.com"


@pytest.mark.xdist_group(bake_group(deploy_target="vm"))
def test_on_a_vm_gunicorn_leaves_the_forwarding_headers_to_the_app(
    bakery: Any, venv: Path, tmp_path: Path
) -> None:
    """The unit's gunicorn, for real, behind a load balancer and nginx (FORWARDED_HOPS=2).

    uvicorn's worker has a proxy-headers pass of its own, run before the app's, which
    gunicorn.conf.py turns off: otherwise it would take the leftmost, forgeable entry.
    """
    project = bakery(deploy_target="vm")
    unit = unit_settings(project / "deploy" / "vm" / "systemd" / f"{SLUG}@.service")
    port = free_port()
    settings = app_env(vm_env(project)) | {
        "PORT": str(port),
        "FORWARDED_HOPS": "2",
        "RATE_LIMIT_DEFAULT": "3/minute",
    }
    env = venv_env(venv, **settings)
    base = f"http://127.0.0.1:{port}"
    balancer = "192.0.2.99"

    def get(xff: str) -> int:
        headers = {"X-Forwarded-For": xff, "Host": "api.example.com"}
        return httpx.get(f"{base}/", headers=headers, timeout=5).status_code

    command = shlex.split(on_this_machine(unit["ExecStart"][0], project, venv))
    with serving(command, project, env, f"{base}/health", tmp_path / "gunicorn.log"):
        # What nginx passes on: the client's own entries, the balancer's, then its own.
        spending = [get(f"6.6.6.{n}, {CLIENT_A}, {balancer}") for n in range(4)]
        other = get(f"{CLIENT_B}, {balancer}")

    assert spending == [200, 200, 200, 429]
    assert other == 200
