import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

{% if cookiecutter.use_postgres %}
from app.settings import Settings, normalise_database_url
{% else %}
from app.settings import Settings
{% endif %}

PROJECT_ROOT = Path(__file__).resolve().parent.parent
{% if cookiecutter.use_postgres %}


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgres://u:p@db:5432/app", "postgresql+asyncpg://u:p@db:5432/app"),
        ("postgresql://u:p@db/app", "postgresql+asyncpg://u:p@db/app"),
        ("postgresql+psycopg://u:p@db/app", "postgresql+asyncpg://u:p@db/app"),
        ("postgresql://u:p@db/app?sslmode=require", "postgresql+asyncpg://u:p@db/app?ssl=require"),
        (
            "postgres://u:p@db/app?sslmode=disable&application_name=api",
            "postgresql+asyncpg://u:p@db/app?application_name=api&ssl=disable",
        ),
        ("postgresql+asyncpg://u@db/app?ssl=require", "postgresql+asyncpg://u@db/app?ssl=require"),
        (
            "postgresql+asyncpg://u:p@/app?host=/cloudsql/proj:region:inst",
            "postgresql+asyncpg://u:p@/app?host=%2Fcloudsql%2Fproj%3Aregion%3Ainst",
        ),
        ("sqlite:///./local.db", "sqlite+aiosqlite:///./local.db"),
        ("sqlite+aiosqlite:///:memory:", "sqlite+aiosqlite:///:memory:"),
    ],
)
def test_database_urls_become_async_driver_urls(given: str, expected: str) -> None:
    assert normalise_database_url(given) == expected
    assert Settings(_env_file=None, database_url=given).database_url == expected


@pytest.mark.parametrize("url", ["mysql://u:p@db/app", "postgres://db/app?sslmode=sometimes"])
def test_unusable_database_urls_are_refused(url: str) -> None:
    with pytest.raises(ValidationError, match="DATABASE_URL"):
        Settings(_env_file=None, database_url=url)
{% endif %}


def test_lists_read_from_json_or_commas(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORS_ORIGINS", '["https://a.example", "https://b.example"]')
    monkeypatch.setenv("TRUSTED_HOSTS", "api.example.com, *.example.com")

    settings = Settings(_env_file=None)

    assert settings.cors_origins == ["https://a.example", "https://b.example"]
    assert settings.trusted_hosts == ["api.example.com", "*.example.com"]


SAFE_PRODUCTION = {
    "environment": "production",
    "secret_key": "x" * 40,
    "cors_origins": ["https://app.example.com"],
{% if cookiecutter.use_postgres %}
    "database_url": "postgresql://u:p@db/app",
{% endif %}
}


def test_production_accepts_safe_values() -> None:
    settings = Settings(_env_file=None, **SAFE_PRODUCTION)  # type: ignore[arg-type]
    assert settings.json_logs
    # The interactive docs are off unless asked for.
    assert not settings.serve_docs
    asked = Settings(_env_file=None, **SAFE_PRODUCTION, docs_enabled=True)  # type: ignore[arg-type]
    assert asked.serve_docs


@pytest.mark.parametrize(
    ("unsafe", "variable"),
    [
        ({"debug": True}, "DEBUG"),
        ({"secret_key": "change-me"}, "SECRET_KEY"),
        ({"secret_key": "short"}, "SECRET_KEY"),
        ({"cors_origins": ["*"], "cors_allow_credentials": True}, "CORS_ORIGINS"),
{% if cookiecutter.use_postgres %}
        ({"database_url": "sqlite:///./local.db"}, "DATABASE_URL"),
{% endif %}
    ],
)
def test_production_refuses_unsafe_values(unsafe: dict[str, object], variable: str) -> None:
    with pytest.raises(ValidationError, match=variable):
        Settings(_env_file=None, **{**SAFE_PRODUCTION, **unsafe})  # type: ignore[arg-type]


def test_unsafe_values_are_fine_outside_production() -> None:
    settings = Settings(_env_file=None, environment="development", debug=True, cors_origins=["*"])
    assert settings.debug
    assert not settings.json_logs
    assert settings.serve_docs


def test_invalid_settings_name_the_variable_but_never_the_value() -> None:
    secret = "hunter2-too-short"
    with pytest.raises(ValidationError) as refused:
        Settings(_env_file=None, environment="production", secret_key=secret)
    assert "SECRET_KEY" in str(refused.value)
    assert secret not in str(refused.value)
{% if cookiecutter.use_postgres %}

    url = f"postgres://app:{secret}@db/app?sslmode=sometimes"
    with pytest.raises(ValidationError) as refused:
        Settings(_env_file=None, database_url=url)
    assert "DATABASE_URL" in str(refused.value)
    assert secret not in str(refused.value)
{% endif %}


def test_log_levels_accept_any_case() -> None:
    assert Settings(_env_file=None, log_level="info").log_level == "INFO"
    assert Settings(_env_file=None, log_level="Warning").log_level == "WARNING"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("LOG_LEVEL", "chatty"),
        ("MAX_BODY_BYTES", "a lot"),
{% if cookiecutter.use_sentry %}
        ("SENTRY_DSN", "https://KEY@ORG.ingest.sentry.io/PROJECT"),
{% endif %}
{% if cookiecutter.use_postgres %}
        ("DATABASE_URL", "mysql://app:hunter2@db/app"),
{% endif %}
    ],
)
def test_an_invalid_setting_stops_startup_with_one_line(variable: str, value: str) -> None:
    env = {**os.environ, variable: value}
    started = subprocess.run(
        [sys.executable, "-c", "import app.main"],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )

    assert started.returncode == 1
    lines = started.stderr.strip().splitlines()
    assert len(lines) == 1, started.stderr
    assert variable in lines[0]
    assert "Traceback" not in started.stderr
    assert "hunter2" not in started.stderr
{% if cookiecutter.use_sentry %}


@pytest.mark.parametrize(
    "dsn",
    ["https://KEY@ORG.ingest.sentry.io/PROJECT", "not a url", "https://o1.ingest.sentry.io/1"],
)
def test_a_sentry_dsn_sentry_would_refuse_is_refused_here(dsn: str) -> None:
    with pytest.raises(ValidationError, match="SENTRY_DSN"):
        Settings(_env_file=None, sentry_dsn=dsn)


def test_a_real_sentry_dsn_is_accepted() -> None:
    dsn = "https://0123456789abcdef@o1.ingest.us.sentry.io/4500000000000000"
    settings = Settings(_env_file=None, sentry_dsn=dsn)
    assert settings.sentry_dsn is not None
{% endif %}
