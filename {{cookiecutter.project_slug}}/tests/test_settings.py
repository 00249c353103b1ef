import pytest
from pydantic import ValidationError

{% if cookiecutter.use_postgres %}
from app.settings import Settings, normalise_database_url
{% else %}
from app.settings import Settings
{% endif %}
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
