"""Security defaults of a live production instance: unsafe settings refused, headers and
trusted hosts, no password in any answer or log line, and no secret in the repository."""

from __future__ import annotations

import math
import re
import secrets
import signal
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from toolkit.auth import writer_headers
from toolkit.features import TARGETS
from toolkit.live import (
    MAX_BODY,
    SECURITY_HEADERS,
    Server,
    app_env,
    serve_grace,
    stopped_at_exit,
    uvicorn,
)
from toolkit.processes import clean_env, free_port
from toolkit.report import Figures

pytestmark = pytest.mark.xdist_group("reliability")


def test_production_refuses_unsafe_settings_and_names_only_the_variable(
    project: Path, python: Path, tmp_path: Path
) -> None:
    """ENVIRONMENT=production with an unsafe value: the server never starts, and its output
    names the variable without showing the secret it was given."""
    password = f"pw-{secrets.token_hex(8)}"
    short_key = f"short-{secrets.token_hex(6)}"
    safe = {
        "ENVIRONMENT": "production",
        "SECRET_KEY": secrets.token_urlsafe(48),
        "DATABASE_URL": f"postgresql://app:{password}@127.0.0.1:{free_port()}/app",
    }
    unsafe = {
        "DEBUG": {"DEBUG": "true"},
        "SECRET_KEY": {"SECRET_KEY": "change-me"},
        "SECRET_KEY (short)": {"SECRET_KEY": short_key},
        "CORS_ORIGINS": {"CORS_ORIGINS": "*"},
        "DATABASE_URL (SQLite)": {"DATABASE_URL": "sqlite:///./production.db"},
        "DATABASE_URL (bad sslmode)": {"DATABASE_URL": f"postgres://app:{password}@db/app?sslmode=sometimes"},
    }
    started = {
        name: subprocess.Popen(
            [str(part) for part in uvicorn(python, project, free_port())],
            cwd=project,
            env=clean_env(**(safe | change)),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for name, change in unsafe.items()
    }
    outputs = {}
    for name, process in started.items():
        try:
            output, _ = process.communicate(timeout=120)
        finally:
            if process.poll() is None:
                process.kill()
        outputs[name] = (process.returncode, output.decode(errors="replace"))
    for name, (code, output) in outputs.items():
        variable = name.split()[0]
        assert code != 0, f"{name}: the server started"
        assert f"{variable} " in output or f"{variable}=" in output, f"{name}: {output[-1500:]}"
        assert password not in output and short_key not in output, f"{name} shows a secret:\n{output[-1500:]}"


def test_live_answers_carry_security_headers_and_trusted_hosts_hold(production: Server) -> None:
    base = production.base
    answers = {
        "liveness": httpx.get(f"{base}/health", timeout=10),
        "list": httpx.get(f"{base}/items", timeout=10),
        "404": httpx.get(f"{base}/no/such/route", timeout=10),
        "422": httpx.post(f"{base}/items", json={}, headers=writer_headers(production), timeout=10),
        "413": httpx.post(f"{base}/items", content=b"x" * (MAX_BODY + 1), timeout=10),
        "untrusted host": httpx.get(f"{base}/items", headers={"host": "evil.example"}, timeout=10),
        "trusted host": httpx.get(f"{base}/items", headers={"host": "api.example.com"}, timeout=10),
    }
    https = httpx.get(f"{base}/health", headers={"x-forwarded-proto": "https"}, timeout=10)
    docs = httpx.get(f"{base}/docs", timeout=10)

    assert {name: answer.status_code for name, answer in answers.items()} == {
        "liveness": 200,
        "list": 200,
        "404": 404,
        "422": 422,
        "413": 413,
        "untrusted host": 400,
        "trusted host": 200,
    }
    assert answers["untrusted host"].json() == {"detail": "Invalid host header"}
    for name, answer in [*answers.items(), ("docs", docs), ("https", https)]:
        for header, value in SECURITY_HEADERS.items():
            assert answer.headers.get(header) == value, (name, header)
    for name, answer in answers.items():
        assert answer.headers["content-security-policy"].startswith("default-src 'none'"), name
        assert "strict-transport-security" not in answer.headers, name
    assert https.headers["strict-transport-security"].startswith("max-age=")
    assert docs.status_code == 200 and "content-security-policy" not in docs.headers


def test_database_password_never_shows_and_docs_can_be_turned_off(
    project: Path, python: Path, services: dict[str, str], figures: Figures, tmp_path: Path
) -> None:
    """Production with DOCS_ENABLED=false and a database that refuses connections: the docs
    are gone, database routes and readiness say 503, and the password in DATABASE_URL is in
    no answer and no log line."""
    password = f"pw-{secrets.token_hex(12)}"
    port = free_port()
    env = app_env(
        f"postgresql://app:{password}@127.0.0.1:{free_port()}/app",
        services["REDIS_URL"],
        DOCS_ENABLED="false",
    )
    server = Server(uvicorn(python, project, port), project, env, tmp_path / "server.log", port)
    with stopped_at_exit(server):
        server.wait_healthy()
        answers = {
            path: httpx.get(f"{server.base}{path}", timeout=30)
            for path in (
                "/docs",
                "/openapi.json",
                "/redoc",
                "/",
                "/health",
                "/health/ready",
                "/items",
                "/items/1",
            )
        }
        answers["POST /items"] = httpx.post(
            f"{server.base}/items", json={"name": "x"}, headers=writer_headers(server), timeout=30
        )
        code = server.terminate(serve_grace(project) + 10)

    statuses = {path: answer.status_code for path, answer in answers.items()}
    assert statuses == {
        "/docs": 404,
        "/openapi.json": 404,
        "/redoc": 404,
        "/": 200,
        "/health": 200,
        "/health/ready": 503,
        "/items": 503,
        "/items/1": 503,
        "POST /items": 503,
    }
    assert answers["/"].json()["docs"] is None
    assert answers["/health/ready"].json()["checks"]["database"]["status"] == "error"
    log = server.text()
    assert "Database unavailable" in log
    for text in [log, *(answer.text for answer in answers.values())]:
        assert password not in text
    assert code in (0, -signal.SIGTERM)
    figures.add(
        "Security defaults", "docs off in production (DOCS_ENABLED=false)", "404 on /docs and /openapi.json"
    )
    figures.add("Security defaults", "database password in answers or log lines", 0)


PLACEHOLDERS = {"", "postgres", "password", "secret", "change-me", "changeme", "p", "pw"}
CREDENTIAL_IN_URL = re.compile(r"[a-z+]+://[^/\s:@'\"]*:([^@\s/'\"]+)@")
# An environment-style assignment (not `${NAME:?message}`) of a secret-sounding variable.
SECRET_ASSIGNMENT = re.compile(
    r"(?<![{\w])[A-Z0-9_]*(?:SECRET|PASSWORD|TOKEN|API_KEY)[A-Z0-9_]*\s*[=:]\s*[\"']?([^\s\"'#]+)"
)
KNOWN_TOKENS = re.compile(
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----|AKIA[0-9A-Z]{16}|gh[pousr]_[A-Za-z0-9]{36}"
    r"|xox[abprs]-[A-Za-z0-9-]{10,}|sk_live_[A-Za-z0-9]{16,}|AIza[0-9A-Za-z_-]{35}|glpat-[A-Za-z0-9_-]{20}"
)
RANDOM_LOOKING = re.compile(r"[A-Za-z0-9+/_-]{32,}={0,2}")


def entropy(text: str) -> float:
    counts = Counter(text)
    return -sum(n / len(text) * math.log2(n / len(text)) for n in counts.values())


def secrets_in(project: Path) -> list[str]:
    found = []
    for path in sorted(project.rglob("*")):
        if not path.is_file():
            continue
        name = str(path.relative_to(project))
        text = path.read_text(errors="replace")
        is_test = name.startswith("tests/")
        found += [f"{name}: {match.group(0)[:40]}" for match in KNOWN_TOKENS.finditer(text)]
        found += [
            f"{name}: random-looking {token[:12]}..."
            for token in RANDOM_LOOKING.findall(text)
            if entropy(token) > 4.5 and not re.fullmatch(r"[0-9a-f]+", token)
        ]
        if is_test:
            continue  # tests hold made-up credentials on purpose
        # Code and prose name secrets (secret_key: SecretStr, --set-secrets SECRET_KEY=name:latest);
        # configuration must not hold one. Keys and random-looking values are caught above.
        patterns = [CREDENTIAL_IN_URL]
        if path.suffix not in (".py", ".md"):
            patterns.append(SECRET_ASSIGNMENT)
        for pattern in patterns:
            for match in pattern.finditer(text):
                value = match.group(1)
                # A short number is a lifetime or a count (ACCESS_TOKEN_MINUTES=15), not a secret.
                number = value.isdigit() and len(value) <= 6
                placeholder = value.lower() in PLACEHOLDERS or not re.search(r"[A-Za-z0-9]", value) or number
                if not placeholder and not value.startswith(("$", "{", "<", "...")):
                    found.append(f"{name}: {match.group(0)[:60]}")
    return found


def test_the_generated_repository_holds_no_secret(bakery: Any, figures: Figures) -> None:
    """For every deploy target: no .env, .env ignored by git (and Docker), no key or token,
    and every credential a placeholder or a reference to the environment."""
    scanned = 0
    for target in TARGETS:
        project = Path(bakery(deploy_target=target))
        assert not (project / ".env").exists(), target
        assert ".env" in (project / ".gitignore").read_text().split(), target
        if (project / ".dockerignore").exists():
            rules = [line.strip() for line in (project / ".dockerignore").read_text().splitlines()]
            # Either .env is listed, or everything is ignored and .env is not let back in.
            let_back = [rule for rule in rules if rule.startswith("!.env")]
            assert ".env" in rules or ("*" in rules and not let_back), target
        found = secrets_in(project)
        assert not found, f"{target}:\n" + "\n".join(found)
        scanned += sum(1 for path in project.rglob("*") if path.is_file())
    figures.add("Security defaults", "files scanned for secrets (every deploy target)", scanned)
