"""Authentication: log in, refresh, rotation, reuse, log out, tokens that must be
refused, API keys, roles, the login lock, cookies with CSRF, registration."""

import logging
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import jwt
import pytest
from pwdlib.hashers.argon2 import Argon2Hasher
from pwdlib.hashers.bcrypt import BcryptHasher
from pydantic import SecretStr
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import create_async_engine

from app.auth import passwords
from app.auth.models import User
from app.auth.tokens import (
    ALGORITHM,
    AUDIENCE,
    ISSUER,
    issue_access_token,
    read_access_token,
    signing_key,
)
from app.settings import Settings
from tests.auth import PASSWORD, create_user
from tests.support import client_for

ADMIN = "admin@example.com"
USER = "user@example.com"

# The `client` fixture empties the tables after each test, also for tests that make
# clients of their own.
pytestmark = pytest.mark.usefixtures("client")


@pytest.fixture
def anonymous(client: httpx.AsyncClient) -> httpx.AsyncClient:
    """The test's client, without the signed-in header it starts with."""
    del client.headers["Authorization"]
    return client


async def log_in(client: httpx.AsyncClient, email: str, password: str = PASSWORD) -> httpx.Response:
    return await client.post("/auth/token", data={"username": email, "password": password})


async def tokens(client: httpx.AsyncClient, email: str) -> dict[str, Any]:
    response = await log_in(client, email)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def signed_in_admin(client: httpx.AsyncClient, settings: Settings) -> dict[str, str]:
    """The headers of an admin who just logged in."""
    await create_user(settings, ADMIN, superuser=True)
    return bearer((await tokens(client, ADMIN))["access_token"])


def forged(settings: Settings, **changes: object) -> str:
    """An access token for user 1 with `changes` to its claims, signed with the real key."""
    now = datetime.now(UTC)
    claims = {
        "sub": "1",
        "scope": "write",
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": now,
        "exp": now + timedelta(minutes=5),
    } | changes
    claims = {name: value for name, value in claims.items() if value is not None}
    return jwt.encode(claims, signing_key(settings.secret_key.get_secret_value()), ALGORITHM)


async def test_a_user_logs_in_reads_their_profile_and_writes(
    anonymous: httpx.AsyncClient, settings: Settings
) -> None:
    await create_user(settings, USER)

    body = await tokens(anonymous, "  User@Example.COM ")
    me = await anonymous.get("/auth/me", headers=bearer(body["access_token"]))
    created = await anonymous.post(
        "/items", json={"name": "mine"}, headers=bearer(body["access_token"])
    )

    assert body["token_type"] == "bearer"
    assert body["expires_in"] == settings.access_token_minutes * 60
    assert me.status_code == 200
    assert me.json()["email"] == USER
    assert me.json()["is_superuser"] is False
    assert created.status_code == 201


async def test_reads_are_public_and_writes_need_a_token(anonymous: httpx.AsyncClient) -> None:
    read = await anonymous.get("/items")
    write = await anonymous.post("/items", json={"name": "anonymous"})
    delete = await anonymous.delete("/items/1")

    assert read.status_code == 200
    assert write.status_code == delete.status_code == 401
    assert write.json() == {"detail": "Not authenticated"}
    assert write.headers["www-authenticate"] == "Bearer"


async def test_an_unknown_email_and_a_wrong_password_answer_alike_after_the_same_work(
    anonymous: httpx.AsyncClient, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    await create_user(settings, USER)
    checks: list[str] = []
    real_check = passwords.HASHER.verify_and_update

    def counted(password: str, stored_hash: str) -> tuple[bool, str | None]:
        checks.append(stored_hash)
        return real_check(password, stored_hash)

    monkeypatch.setattr(passwords.HASHER, "verify_and_update", counted)

    unknown = await log_in(anonymous, "nobody@example.com", "wrong password!")
    wrong = await log_in(anonymous, USER, "wrong password!")

    assert unknown.status_code == wrong.status_code == 401
    assert unknown.json() == wrong.json() == {"detail": "Incorrect email or password"}
    # One full argon2 check each: the unknown email against a decoy hash.
    assert len(checks) == 2
    assert all(stored.startswith("$argon2id$") for stored in checks)


async def test_refreshing_rotates_and_reusing_a_used_token_ends_the_session(
    anonymous: httpx.AsyncClient, settings: Settings
) -> None:
    await create_user(settings, USER)
    first = (await tokens(anonymous, USER))["refresh_token"]

    rotated = await anonymous.post("/auth/refresh", json={"refresh_token": first})
    second = rotated.json()["refresh_token"]
    reused = await anonymous.post("/auth/refresh", json={"refresh_token": first})
    after_reuse = await anonymous.post("/auth/refresh", json={"refresh_token": second})

    assert rotated.status_code == 200
    assert second != first
    assert reused.status_code == 401
    # The thief's copy and the owner's both stop working.
    assert after_reuse.status_code == 401


async def test_logging_out_ends_that_session_only(
    anonymous: httpx.AsyncClient, settings: Settings
) -> None:
    await create_user(settings, USER)
    laptop = (await tokens(anonymous, USER))["refresh_token"]
    phone = (await tokens(anonymous, USER))["refresh_token"]

    logged_out = await anonymous.post("/auth/logout", json={"refresh_token": laptop})

    assert logged_out.status_code == 204
    assert (
        await anonymous.post("/auth/refresh", json={"refresh_token": laptop})
    ).status_code == 401
    assert (await anonymous.post("/auth/refresh", json={"refresh_token": phone})).status_code == 200


async def test_logging_out_everywhere_ends_every_session(
    anonymous: httpx.AsyncClient, settings: Settings
) -> None:
    await create_user(settings, USER)
    laptop = await tokens(anonymous, USER)
    phone = (await tokens(anonymous, USER))["refresh_token"]

    everywhere = await anonymous.post("/auth/logout-all", headers=bearer(laptop["access_token"]))

    assert everywhere.status_code == 204
    for refresh_token in (laptop["refresh_token"], phone):
        refused = await anonymous.post("/auth/refresh", json={"refresh_token": refresh_token})
        assert refused.status_code == 401


async def test_an_expired_refresh_token_is_refused(
    anonymous: httpx.AsyncClient, settings: Settings
) -> None:
    await create_user(settings, USER)
    refresh_token = (await tokens(anonymous, USER))["refresh_token"]
    engine = create_async_engine(settings.database_url)
    async with engine.begin() as connection:
        await connection.exec_driver_sql(
            "UPDATE refresh_tokens SET expires_at = '2000-01-01 00:00:00+00:00'"
        )
    await engine.dispose()

    refused = await anonymous.post("/auth/refresh", json={"refresh_token": refresh_token})

    assert refused.status_code == 401


async def test_tokens_that_are_expired_forged_or_for_someone_else_are_refused(
    anonymous: httpx.AsyncClient, settings: Settings
) -> None:
    valid = forged(settings)
    header, payload, signature = valid.split(".")
    unsigned = jwt.encode({"sub": "1", "scope": "write"}, None, algorithm="none")
    refused = {
        "expired": forged(settings, exp=datetime.now(UTC) - timedelta(seconds=5)),
        "changed signature": f"{header}.{payload}.{signature[::-1]}",
        "alg none": unsigned,
        "another audience": forged(settings, aud="another-service"),
        "another issuer": forged(settings, iss="someone-else"),
        "no expiry": forged(settings, exp=None),
        "another key": jwt.encode({"sub": "1"}, b"k" * 32, ALGORITHM),
        "not a token": "hello",
    }

    accepted = await anonymous.post("/items", json={"name": "valid"}, headers=bearer(valid))
    answers = {
        name: (
            await anonymous.post("/items", json={"name": name}, headers=bearer(token))
        ).status_code
        for name, token in refused.items()
    }

    assert accepted.status_code == 201
    assert answers == dict.fromkeys(refused, 401)


async def test_a_token_verified_before_is_refused_once_it_expires(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = forged(settings, exp=datetime.now(UTC) + timedelta(seconds=30))
    first = read_access_token(token, settings)
    again = read_access_token(token, settings)  # from the tokens already verified
    later = time.time() + 31
    monkeypatch.setattr(time, "time", lambda: later)

    assert first is not None
    assert again == first
    assert read_access_token(token, settings) is None


async def test_a_token_verified_under_one_key_is_refused_under_another(settings: Settings) -> None:
    token = issue_access_token("1", frozenset({"write"}), settings)
    other = settings.model_copy(update={"secret_key": SecretStr("o" * 40)})

    assert read_access_token(token, settings) is not None
    assert read_access_token(token, other) is None


async def test_tokens_signed_with_the_previous_key_count_during_a_rotation(
    settings: Settings,
) -> None:
    old = issue_access_token("1", frozenset({"write"}), settings)
    rotated = settings.model_copy(
        update={"secret_key": SecretStr("n" * 40), "secret_key_previous": settings.secret_key}
    )
    finished = rotated.model_copy(update={"secret_key_previous": None})

    async with client_for(rotated) as client:
        during = await client.post("/items", json={"name": "during"}, headers=bearer(old))
    async with client_for(finished) as client:
        after = await client.post("/items", json={"name": "after"}, headers=bearer(old))

    assert during.status_code == 201
    assert after.status_code == 401


async def test_api_keys_are_shown_once_scoped_and_revocable(
    anonymous: httpx.AsyncClient, settings: Settings
) -> None:
    admin = await signed_in_admin(anonymous, settings)

    made = await anonymous.post(
        "/auth/api-keys", json={"name": "deploy bot", "scopes": ["write"]}, headers=admin
    )
    key = made.json()["key"]
    listed = await anonymous.get("/auth/api-keys", headers=admin)
    written = await anonymous.post("/items", json={"name": "by bot"}, headers=bearer(key))
    not_admin = await anonymous.get("/auth/api-keys", headers=bearer(key))
    not_a_user = await anonymous.get("/auth/me", headers=bearer(key))
    revoked = await anonymous.delete(f"/auth/api-keys/{made.json()['id']}", headers=admin)
    after = await anonymous.post("/items", json={"name": "too late"}, headers=bearer(key))

    assert made.status_code == 201
    assert key.startswith(made.json()["prefix"] + "_")
    assert listed.json()[0]["prefix"] == made.json()["prefix"]
    assert key not in listed.text
    assert written.status_code == 201
    assert not_admin.status_code == 403
    assert not_a_user.status_code == 403
    assert revoked.status_code == 204
    assert after.status_code == 401
    assert (await anonymous.delete("/auth/api-keys/4711", headers=admin)).status_code == 404


async def test_a_key_with_a_wrong_secret_or_a_made_up_prefix_is_refused(
    anonymous: httpx.AsyncClient, settings: Settings
) -> None:
    admin = await signed_in_admin(anonymous, settings)
    made = await anonymous.post(
        "/auth/api-keys", json={"name": "bot", "scopes": ["write"]}, headers=admin
    )
    prefix = made.json()["prefix"]

    for key in (f"{prefix}_wrong", "sk_0123abcd_unknown", "sk_zzzzzzzz_x", "sk_"):
        answer = await anonymous.post("/items", json={"name": "x"}, headers=bearer(key))
        assert answer.status_code == 401, key


async def test_only_admins_manage_api_keys(
    anonymous: httpx.AsyncClient, settings: Settings
) -> None:
    await create_user(settings, USER)
    user = bearer((await tokens(anonymous, USER))["access_token"])

    made = await anonymous.post(
        "/auth/api-keys", json={"name": "mine", "scopes": ["admin"]}, headers=user
    )

    assert made.status_code == 403
    assert made.json() == {"detail": "Needs the 'admin' scope"}


async def test_repeated_failures_lock_an_email_whether_or_not_it_has_an_account(
    anonymous: httpx.AsyncClient, settings: Settings
) -> None:
    await create_user(settings, USER)
    for email in (USER, "nobody@example.com"):
        failures = [
            (await log_in(anonymous, email, "wrong password!")).status_code
            for _ in range(settings.login_max_failures)
        ]
        locked = await log_in(anonymous, email)

        assert failures == [401] * settings.login_max_failures
        assert locked.status_code == 429
        assert 0 < int(locked.headers["retry-after"]) <= settings.login_lock_minutes * 60


async def test_a_success_clears_the_failures(
    anonymous: httpx.AsyncClient, settings: Settings
) -> None:
    await create_user(settings, USER)
    for _ in range(3):
        for _ in range(settings.login_max_failures - 1):
            assert (await log_in(anonymous, USER, "wrong password!")).status_code == 401
        assert (await log_in(anonymous, USER)).status_code == 200


async def test_an_old_bcrypt_hash_logs_in_and_is_upgraded_to_argon2(
    anonymous: httpx.AsyncClient, settings: Settings
) -> None:
    await create_user(settings, USER)
    engine = create_async_engine(settings.database_url)
    async with engine.begin() as connection:
        await connection.execute(update(User).values(password_hash=BcryptHasher().hash(PASSWORD)))

    logged_in = await log_in(anonymous, USER)
    async with engine.connect() as connection:
        stored = await connection.scalar(select(User.password_hash))
    await engine.dispose()

    assert logged_in.status_code == 200
    assert stored is not None
    assert stored.startswith("$argon2id$")


async def test_an_argon2_hash_with_older_parameters_is_upgraded_at_login(
    anonymous: httpx.AsyncClient, settings: Settings
) -> None:
    await create_user(settings, USER)
    weaker = Argon2Hasher(time_cost=1, memory_cost=8 * 1024).hash(PASSWORD)
    engine = create_async_engine(settings.database_url)
    async with engine.begin() as connection:
        await connection.execute(update(User).values(password_hash=weaker))

    logged_in = await log_in(anonymous, USER)
    async with engine.connect() as connection:
        stored = await connection.scalar(select(User.password_hash))
    await engine.dispose()

    assert logged_in.status_code == 200
    assert stored is not None
    assert stored != weaker
    assert not Argon2Hasher().check_needs_rehash(stored)


async def test_the_docs_log_in_with_the_password_flow(anonymous: httpx.AsyncClient) -> None:
    schemes = (await anonymous.get("/openapi.json")).json()["components"]["securitySchemes"]

    assert list(schemes.values()) == [
        {
            "type": "oauth2",
            "flows": {
                "password": {
                    "scopes": {
                        "write": "Create, change and delete resources",
                        "admin": "Manage API keys",
                    },
                    "tokenUrl": "/auth/token",
                }
            },
        }
    ]


async def test_an_inactive_user_cannot_log_in_or_use_their_token(
    anonymous: httpx.AsyncClient, settings: Settings
) -> None:
    await create_user(settings, USER)
    access_token = (await tokens(anonymous, USER))["access_token"]
    engine = create_async_engine(settings.database_url)
    async with engine.begin() as connection:
        await connection.execute(update(User).values(is_active=False))
    await engine.dispose()

    assert (await log_in(anonymous, USER)).status_code == 401
    assert (await anonymous.get("/auth/me", headers=bearer(access_token))).status_code == 401


async def test_the_refresh_cookie_is_out_of_scripts_reach_and_needs_the_csrf_header(
    settings: Settings,
) -> None:
    cookies = settings.model_copy(update={"auth_refresh_cookie": True})
    async with client_for(cookies) as client:
        client.base_url = httpx.URL("https://testserver")
        await create_user(settings, USER)

        logged_in = await log_in(client, USER)
        set_cookie = logged_in.headers.get_list("set-cookie")
        without_header = await client.post("/auth/refresh")
        csrf = client.cookies["csrf_token"]
        with_header = await client.post("/auth/refresh", headers={"X-CSRF-Token": csrf})
        wrong_header = await client.post("/auth/refresh", headers={"X-CSRF-Token": "guess"})
        logged_out = await client.post(
            "/auth/logout", headers={"X-CSRF-Token": client.cookies["csrf_token"]}
        )

    assert logged_in.json()["refresh_token"] is None
    refresh_cookie = next(value for value in set_cookie if value.startswith("refresh_token="))
    assert "HttpOnly" in refresh_cookie
    assert "Secure" in refresh_cookie
    assert "SameSite=strict" in refresh_cookie
    assert "Path=/auth" in refresh_cookie
    assert without_header.status_code == 403
    assert with_header.status_code == 200
    assert wrong_header.status_code == 403
    assert logged_out.status_code == 204
    assert "refresh_token" not in client.cookies


async def test_registration_is_closed_unless_opened(settings: Settings) -> None:
    account = {"email": "new@example.com", "password": PASSWORD}
    async with client_for(settings) as client:
        closed = await client.post("/auth/register", json=account)
    opened = settings.model_copy(update={"registration_open": True})
    async with client_for(opened) as client:
        created = await client.post("/auth/register", json=account)
        again = await client.post("/auth/register", json=account | {"email": "NEW@example.com"})
        short = await client.post("/auth/register", json=account | {"password": "short"})
        logged_in = await log_in(client, "new@example.com")

    assert closed.status_code == 403
    assert created.status_code == 201
    assert again.status_code == 409
    assert short.status_code == 422
    assert logged_in.status_code == 200


async def test_bad_login_input_is_a_4xx_never_a_500(anonymous: httpx.AsyncClient) -> None:
    answers = [
        await anonymous.post(
            "/auth/token", data={"username": "a\x00b@example.com", "password": "x"}
        ),
        await anonymous.post(
            "/auth/token", data={"username": "x@example.com", "password": "p" * 5000}
        ),
        await anonymous.post("/auth/token", data={"username": "x" * 5000, "password": "x"}),
        await anonymous.post("/auth/token", json={"username": "x", "password": "y"}),
        await anonymous.post("/auth/refresh", json={"refresh_token": "\x00"}),
        await anonymous.post(
            "/auth/refresh", content=b"{", headers={"content-type": "application/json"}
        ),
    ]

    assert [answer.status_code for answer in answers] == [401, 401, 401, 422, 401, 422]


async def test_passwords_and_tokens_never_reach_the_log(
    anonymous: httpx.AsyncClient, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    await create_user(settings, USER)

    body = await tokens(anonymous, USER)
    await log_in(anonymous, USER, "a wrong password")
    await anonymous.post("/auth/refresh", json={"refresh_token": body["refresh_token"]})

    for secret in (PASSWORD, "a wrong password", body["access_token"], body["refresh_token"]):
        assert secret not in caplog.text
{% if cookiecutter.use_rate_limit %}


async def test_the_login_route_allows_five_attempts_a_minute_per_client(
    settings: Settings,
) -> None:
    limited = settings.model_copy(update={"rate_limit_enabled": True})
    async with client_for(limited) as client:
        await create_user(settings, USER)
        answers = [(await log_in(client, USER)).status_code for _ in range(6)]

    assert answers == [200] * 5 + [429]
{% endif %}
