"""Service settings: one class, read from the environment and `.env`."""

import ipaddress
import json
import re
from functools import lru_cache
from typing import Annotated, Literal
{% if cookiecutter.use_sentry %}
from urllib.parse import urlsplit
{% endif %}

{% if cookiecutter.use_rate_limit %}
from limits import parse_many
{% endif %}
from pydantic import Field, {{ "HttpUrl, " if cookiecutter.use_metrics else "" }}SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
{% if cookiecutter.use_postgres %}
from sqlalchemy import make_url
from sqlalchemy.exc import ArgumentError
{% endif %}

PLACEHOLDER_SECRETS = frozenset({"", "change-me", "changeme", "secret", "dev"})
{% if cookiecutter.use_rate_limit %}
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
{% endif %}

CommaList = Annotated[list[str], NoDecode]
# An HTTP field name (RFC 9110's token).
_HEADER_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+")
{% if cookiecutter.use_postgres %}

# libpq-only query parameters that asyncpg rejects.
_LIBPQ_ONLY = ("sslmode", "channel_binding", "gssencmode", "target_session_attrs")
_SSLMODES = frozenset({"disable", "allow", "prefer", "require", "verify-ca", "verify-full"})


def normalise_database_url(url: str) -> str:
    """Return the URL with an async driver, whatever form the platform handed out.

    `postgres://`, `postgresql://` and `postgresql+psycopg://` become
    `postgresql+asyncpg://`, and libpq's `?sslmode=` becomes asyncpg's `?ssl=`;
    SQLite URLs get the aiosqlite driver.
    """
    url = url.strip()
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return "sqlite+aiosqlite" + url[url.index(":") :]
    if backend in {"postgres", "postgresql"}:
        sslmode = parsed.query.get("sslmode")
        parsed = parsed.set(drivername="postgresql+asyncpg").difference_update_query(_LIBPQ_ONLY)
        if isinstance(sslmode, str) and "ssl" not in parsed.query:
            if sslmode not in _SSLMODES:
                raise ValueError(f"DATABASE_URL has an unknown sslmode {sslmode!r}")
            parsed = parsed.update_query_dict({"ssl": sslmode})
    else:
        raise ValueError(f"DATABASE_URL must be a PostgreSQL or SQLite URL, not {backend!r}")
    return parsed.render_as_string(hide_password=False)
{% endif %}
{% if cookiecutter.use_sentry %}


def is_sentry_dsn(value: str) -> bool:
    """Whether `value` has the parts sentry-sdk needs: a bad DSN makes its `init` raise."""
    parts = urlsplit(value)
    project = parts.path.rstrip("/").rpartition("/")[2]
    return (
        parts.scheme in {"http", "https"}
        and bool(parts.hostname)
        and bool(parts.username)
        and project.isdigit()
    )
{% endif %}


class Settings(BaseSettings):
    """Every setting of the service; each field is read from the upper-case env var."""

    # An invalid value is reported by variable name only: a URL can carry a password.
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", hide_input_in_errors=True)

    service_name: str = "{{ cookiecutter.project_slug }}"
    environment: Literal["development", "test", "staging", "production"] = "development"
    debug: bool = False
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    # JSON log lines; unset means JSON in staging and production, text elsewhere.
    log_json: bool | None = None
    secret_key: SecretStr = SecretStr("change-me")
{% if cookiecutter.use_auth %}
    # The key SECRET_KEY replaces, still accepted for access tokens during a rotation.
    secret_key_previous: SecretStr | None = None
{% endif %}

    # HTTP
    cors_origins: CommaList = Field(default_factory=list)
    cors_allow_credentials: bool = True
    trusted_hosts: CommaList = Field(default_factory=lambda: ["*"])
    # The client's address behind a proxy (app/proxy.py): the peers whose forwarding
    # headers are believed (addresses, networks, or * for any), how many proxies append
    # to X-Forwarded-For, or a header the platform's edge sets to the client's address.
    forwarded_allow_ips: CommaList = Field(default_factory=lambda: ["127.0.0.1", "::1"])
    forwarded_hops: int = Field(default=1, ge=1)
    client_ip_header: str | None = None
    # Interactive docs (/docs, /openapi.json); unset means everywhere but production.
    docs_enabled: bool | None = None
    max_body_bytes: int = Field(default=1_048_576, ge=1)
    health_check_timeout: float = Field(default=1.0, gt=0)
{% if cookiecutter.use_postgres %}

    # Database: unset means a local SQLite file, created on startup.
    database_url: str = "sqlite+aiosqlite:///./local.db"
    # Every connection is kept once opened: under load, SQLAlchemy closes an overflow
    # connection as soon as it is returned, so each burst would pay a new handshake
    # and login (the README's "What the settings cost" has the figures).
    db_pool_size: int = Field(default=15, ge=1)
    db_max_overflow: int = Field(default=0, ge=0)
    db_pool_timeout: float = Field(default=10.0, gt=0)
    # Below the 10-minute idle cut of several platform proxies.
    db_pool_recycle: int = Field(default=300, ge=-1)
    # Test each connection before use: a BEGIN, a query and a ROLLBACK on every
    # checkout. Off: a connection that died is found when a query fails, and the
    # pool then replaces every connection older than it.
    db_pool_pre_ping: bool = False
    # Transaction-mode PgBouncer: no prepared-statement caches.
    db_pgbouncer: bool = False
    db_echo: bool = False
{% endif %}
{% if cookiecutter.use_redis %}

    # Redis: unset means an in-process cache (one instance only).
    redis_url: str | None = None
    redis_socket_timeout: float = Field(default=0.5, gt=0)
    cache_ttl_seconds: int = Field(default=60, ge=1)
    # Prefix of every key this service writes, so services can share one Redis.
    cache_key_prefix: str = "{{ cookiecutter.project_slug }}:"
{% endif %}
{% if cookiecutter.use_worker %}
    # Background jobs (app/jobs): a job's time limit (past it, it counts as stuck and
    # runs again) and attempts, how long its record stays in Redis, and the clean-up's
    # schedule (cron, UTC).
    jobs_timeout_seconds: int = Field(default=60, ge=1)
    jobs_retries: int = Field(default=3, ge=1)
    jobs_record_seconds: int = Field(default=86_400, ge=1)
    jobs_cleanup_cron: str = "0 3 * * *"
    # Seconds between a worker's looks for jobs whose worker died.
    jobs_sweep_seconds: int = Field(default=60, ge=1)
    # The worker: jobs run at once, whether it also queues the scheduled jobs (false
    # where a scheduler process runs), seconds running jobs get after SIGTERM (below
    # the platform's own grace period), and where its liveness check answers.
    worker_concurrency: int = Field(default=10, ge=1)
    worker_schedules: bool = True
    worker_shutdown_grace_seconds: int = Field(default=8, ge=0)
    # Empty: every address, IPv4 and IPv6.
    worker_health_host: str = ""
    worker_health_port: int = Field(default=8001, ge=1, le=65535)
{% endif %}
{% if cookiecutter.use_socketio %}

    # Socket.IO: "websocket" alone where several instances run without sticky sessions.
    socketio_transports: CommaList = Field(default_factory=lambda: ["polling", "websocket"])
    # Seconds between pings (keep it under every proxy's idle timeout), and seconds
    # without an answer before a client counts as gone.
    socketio_ping_interval: float = Field(default=25.0, gt=0)
    socketio_ping_timeout: float = Field(default=20.0, gt=0)
{% if cookiecutter.use_auth %}
    # Require an API access token to connect (see app/auth/tokens.py).
{% else %}
    # Require a token signed with SECRET_KEY to connect (see app/security.py).
{% endif %}
    socketio_auth_required: bool = False
{% endif %}
{% if cookiecutter.use_rate_limit %}

    # Rate limiting: RATE_LIMIT_DEFAULT per client, for the requests of these methods
    # (writes, by default) to every route that declares no limit of its own.
    rate_limit_enabled: bool = True
    rate_limit_default: str = "120/minute"
    rate_limit_default_methods: CommaList = Field(
        default_factory=lambda: ["POST", "PUT", "PATCH", "DELETE"]
    )
{% endif %}
{% if cookiecutter.use_auth %}

    # Authentication (app/auth): token lifetimes, open registration, the refresh token
    # in an HttpOnly cookie for browsers, and the lock after failed logins.
    access_token_minutes: int = Field(default=15, ge=1, le=1440)
    refresh_token_days: int = Field(default=30, ge=1, le=365)
    registration_open: bool = False
    auth_refresh_cookie: bool = False
    login_max_failures: int = Field(default=5, ge=1)
    login_lock_minutes: int = Field(default=15, ge=1)
{% endif %}
{% if cookiecutter.use_metrics %}

    # Prometheus metrics at /metrics, for scrapers sending `Authorization: Bearer
    # <METRICS_TOKEN>`; unset means /metrics answers 404.
    metrics_token: SecretStr | None = None
    # OpenTelemetry traces, sent over OTLP/HTTP when an endpoint is set (the standard
    # variables; the exporter reads the others, such as OTEL_EXPORTER_OTLP_HEADERS).
    otel_exporter_otlp_endpoint: HttpUrl | None = None
    otel_exporter_otlp_traces_endpoint: HttpUrl | None = None
    otel_exporter_otlp_protocol: Literal["http/protobuf"] = "http/protobuf"
    otel_sdk_disabled: bool = False
    # Share of requests traced (0 to 1); a query outside a request is never traced alone.
    traces_sample_rate: float = Field(default=1.0, ge=0.0, le=1.0)
{% endif %}
{% if cookiecutter.use_sentry %}

    # Sentry: off unless a DSN is set.
    sentry_dsn: SecretStr | None = None
    sentry_traces_sample_rate: float = Field(default=0.0, ge=0.0, le=1.0)
{% endif %}

    @field_validator("log_level", mode="before")
    @classmethod
    def _any_case(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator(
        "cors_origins",
        "trusted_hosts",
        "forwarded_allow_ips",
{% if cookiecutter.use_socketio %}
        "socketio_transports",
{% endif %}
{% if cookiecutter.use_rate_limit %}
        "rate_limit_default_methods",
{% endif %}
        mode="before",
    )
    @classmethod
    def _split_list(cls, value: object) -> object:
        """Accept a JSON list or a comma-separated string."""
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [item.strip() for item in text.split(",") if item.strip()]
        return value

    @field_validator("forwarded_allow_ips", mode="after")
    @classmethod
    def _addresses_or_networks(cls, value: list[str]) -> list[str]:
        for entry in value:
            if entry != "*":
                try:
                    ipaddress.ip_network(entry, strict=False)
                except ValueError:
                    raise ValueError(
                        f"FORWARDED_ALLOW_IPS: {entry!r} is not an address, a network or *"
                    ) from None
        return value

    @field_validator("client_ip_header", mode="before")
    @classmethod
    def _header_name(cls, value: object) -> object:
        if isinstance(value, str):
            value = value.strip() or None
        if isinstance(value, str) and not _HEADER_NAME.fullmatch(value):
            raise ValueError(f"CLIENT_IP_HEADER {value!r} is not a header name")
        return value
{% if cookiecutter.use_postgres %}

    @field_validator("database_url", mode="after")
    @classmethod
    def _normalise_database_url(cls, value: str) -> str:
        try:
            return normalise_database_url(value)
        except ArgumentError:
            raise ValueError("DATABASE_URL is not a database URL") from None
{% endif %}
{% set unset_when_empty = (['"secret_key_previous"'] if cookiecutter.use_auth else []) + (['"redis_url"'] if cookiecutter.use_redis else []) + (['"metrics_token"', '"otel_exporter_otlp_endpoint"', '"otel_exporter_otlp_traces_endpoint"'] if cookiecutter.use_metrics else []) + (['"sentry_dsn"'] if cookiecutter.use_sentry else []) %}
{% if unset_when_empty %}

    @field_validator(
{% for name in unset_when_empty %}
        {{ name }},
{% endfor %}
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return value or None
{% endif %}

{% if cookiecutter.use_sentry %}
    @field_validator("sentry_dsn", mode="after")
    @classmethod
    def _usable_dsn(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not is_sentry_dsn(value.get_secret_value()):
            raise ValueError(
                "SENTRY_DSN must be a project's DSN as Sentry shows it "
                "(https://<public key>@<host>/<project number>), or unset"
            )
        return value

{% endif %}
{% if cookiecutter.use_metrics %}
    @field_validator("metrics_token", mode="after")
    @classmethod
    def _long_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError("METRICS_TOKEN must be at least 16 characters, or unset")
        return value

{% endif %}
{% if cookiecutter.use_socketio %}
    @field_validator("socketio_transports", mode="after")
    @classmethod
    def _known_transports(cls, value: list[str]) -> list[str]:
        if not value or not set(value) <= {"polling", "websocket"}:
            raise ValueError("SOCKETIO_TRANSPORTS must be polling, websocket or both")
        return value

{% endif %}
{% if cookiecutter.use_rate_limit %}
    @field_validator("rate_limit_default", mode="after")
    @classmethod
    def _parsable_limit(cls, value: str) -> str:
        try:
            parse_many(value)
        except ValueError:
            raise ValueError(
                f"RATE_LIMIT_DEFAULT {value!r} is not a limit like 120/minute"
            ) from None
        return value

    @field_validator("rate_limit_default_methods", mode="after")
    @classmethod
    def _http_methods(cls, value: list[str]) -> list[str]:
        methods = [method.upper() for method in value]
        if not set(methods) <= HTTP_METHODS:
            allowed = ", ".join(sorted(HTTP_METHODS))
            raise ValueError(f"RATE_LIMIT_DEFAULT_METHODS must be HTTP methods from {allowed}")
        return methods

{% endif %}
    @model_validator(mode="after")
    def _refuse_unsafe_production(self) -> "Settings":
        if self.environment != "production":
            return self
        if self.debug:
            raise ValueError("DEBUG must be false in production")
        if self.secret_key.get_secret_value() in PLACEHOLDER_SECRETS:
            raise ValueError("SECRET_KEY is a placeholder: set a random value in production")
        if len(self.secret_key.get_secret_value()) < 32:
            raise ValueError("SECRET_KEY must be at least 32 characters in production")
        if "*" in self.cors_origins and self.cors_allow_credentials:
            raise ValueError(
                "CORS_ORIGINS='*' with CORS_ALLOW_CREDENTIALS=true is refused in production"
            )
{% if cookiecutter.use_postgres %}
        if self.database_url.startswith("sqlite"):
            raise ValueError("DATABASE_URL must point at PostgreSQL in production")
{% endif %}
        return self

    @property
    def serve_docs(self) -> bool:
        if self.docs_enabled is not None:
            return self.docs_enabled
        return self.environment != "production"

    @property
    def json_logs(self) -> bool:
        if self.log_json is not None:
            return self.log_json
        return self.environment in {"staging", "production"}
{% if cookiecutter.use_metrics %}

    @property
    def otlp_traces_endpoint(self) -> str | None:
        """Where spans are sent, resolved as OpenTelemetry's specification says; None: nowhere."""
        if self.otel_sdk_disabled:
            return None
        if self.otel_exporter_otlp_traces_endpoint is not None:
            return str(self.otel_exporter_otlp_traces_endpoint)
        if self.otel_exporter_otlp_endpoint is not None:
            return f"{str(self.otel_exporter_otlp_endpoint).rstrip('/')}/v1/traces"
        return None
{% endif %}


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment and `.env`.

    An invalid value stops the process with one line naming the variable: a
    platform shows a crash loop's last lines, and a traceback would bury it.
    """
    try:
        return Settings()
    except ValidationError as error:
        raise SystemExit(f"Invalid settings: {describe(error)}") from None


def describe(error: ValidationError) -> str:
    """Each problem on one line, as `VARIABLE: what it accepts` (never the value)."""
    problems = []
    for problem in error.errors():
        message = problem["msg"].removeprefix("Value error, ")
        variable = "_".join(str(part) for part in problem["loc"]).upper()
        if variable and not message.startswith(variable):
            message = f"{variable}: {message}"
        problems.append(message)
    return "; ".join(problems)
