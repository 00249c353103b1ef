"""The endpoints of /auth: log in, refresh, log out, register, and API keys.

Failures that must be recorded (a wrong password, a reused refresh token) return their
401 rather than raise it: the request's transaction commits only when the endpoint
returns (app/deps.py).
"""

import hmac
import secrets
from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, Request, Response, status
from fastapi.responses import JSONResponse
from fastapi.security import OAuth2PasswordRequestForm
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from app.auth import sessions, throttle
from app.auth.models import ApiKey, User
from app.auth.passwords import hash_password, verify, verify_decoy
from app.auth.principal import new_api_key, scopes_of
from app.auth.schemas import (
    MAX_PASSWORD_LENGTH,
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyRead,
    RefreshRequest,
    Registration,
    Tokens,
    UserRead,
    is_email,
    normalise_email,
)
from app.auth.tokens import digest, issue_access_token
from app.deps import AdminDep, CurrentUserDep, ReadSessionDep, SessionDep, SettingsDep
{% if cookiecutter.use_rate_limit %}
from app.ratelimit import limiter
{% endif %}
from app.settings import Settings

{% if cookiecutter.use_rate_limit %}
# Per client address, on top of the lock per email (LOGIN_MAX_FAILURES).
LOGIN_LIMIT = "5/minute"
{% endif %}
REFRESH_COOKIE = "refresh_token"
CSRF_COOKIE = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
# The cookie goes only to the routes that read it.
REFRESH_COOKIE_PATH = "/auth"

router = APIRouter(prefix="/auth", tags=["auth"])

LoginForm = Annotated[OAuth2PasswordRequestForm, Depends()]
ApiKeyId = Annotated[int, Path(ge=1, le=2**31 - 1)]


def refused(detail: str) -> JSONResponse:
    return JSONResponse(
        {"detail": detail},
        status_code=status.HTTP_401_UNAUTHORIZED,
        headers={"WWW-Authenticate": "Bearer"},
    )


def tokens_response(
    user: User, refresh_token: str, settings: Settings, response: Response
) -> Tokens:
    """The tokens for `user`; with AUTH_REFRESH_COOKIE the refresh token goes in a cookie
    that scripts cannot read, with a CSRF token beside it that they can."""
    access_token = issue_access_token(str(user.id), scopes_of(user), settings)
    expires_in = settings.access_token_minutes * 60
    if not settings.auth_refresh_cookie:
        return Tokens(access_token=access_token, expires_in=expires_in, refresh_token=refresh_token)
    max_age = settings.refresh_token_days * 86400
    response.set_cookie(
        REFRESH_COOKIE,
        refresh_token,
        max_age=max_age,
        path=REFRESH_COOKIE_PATH,
        secure=True,
        httponly=True,
        samesite="strict",
    )
    response.set_cookie(
        CSRF_COOKIE, secrets.token_urlsafe(16), max_age=max_age, secure=True, samesite="strict"
    )
    return Tokens(access_token=access_token, expires_in=expires_in, refresh_token=None)


def presented_refresh_token(
    request: Request, payload: RefreshRequest | None, settings: Settings
) -> str | None:
    """The refresh token in the body, else (AUTH_REFRESH_COOKIE) the cookie, which counts
    only with a CSRF header that matches the CSRF cookie: another site's page can make
    a browser send the cookie, but cannot read the CSRF cookie to copy it."""
    if payload is not None and payload.refresh_token:
        return payload.refresh_token
    cookie = request.cookies.get(REFRESH_COOKIE) if settings.auth_refresh_cookie else None
    if not cookie:
        return None
    expected = request.cookies.get(CSRF_COOKIE, "")
    sent = request.headers.get(CSRF_HEADER, "")
    if not expected or not hmac.compare_digest(expected.encode(), sent.encode()):
        raise HTTPException(status.HTTP_403_FORBIDDEN, f"Missing or wrong {CSRF_HEADER} header")
    return cookie


def forget_cookies(response: Response) -> None:
    response.delete_cookie(REFRESH_COOKIE, path=REFRESH_COOKIE_PATH, secure=True, httponly=True)
    response.delete_cookie(CSRF_COOKIE, secure=True)


@router.post("/token", response_model=Tokens)
{% if cookiecutter.use_rate_limit %}
@limiter.limit(LOGIN_LIMIT)
{% endif %}
async def log_in(
{% if cookiecutter.use_rate_limit %}
    # slowapi's decorator requires the `request` parameter.
    request: Request,
{% endif %}
    response: Response,
    form: LoginForm,
    session: SessionDep,
    settings: SettingsDep,
) -> Tokens | JSONResponse:
    """The OAuth2 password flow: `username` is the email. The same 401 answers an unknown
    email and a wrong password, after the same work."""
    email = normalise_email(form.username)
    if not is_email(email) or len(form.password) > MAX_PASSWORD_LENGTH:
        return refused("Incorrect email or password")  # No account has such an email or password.
    wait = await throttle.locked_for(session, email)
    if wait:
        return JSONResponse(
            {"detail": "Too many failed logins: try again later"},
            status_code=status.HTTP_429_TOO_MANY_REQUESTS,
            headers={"Retry-After": str(wait)},
        )
    user = await session.scalar(select(User).where(User.email == email))
    matched = False
    if user is None:
        await verify_decoy(form.password)
    else:
        matched, new_hash = await verify(form.password, user.password_hash)
        if matched and new_hash is not None:
            user.password_hash = new_hash
    if user is None or not matched or not user.is_active:
        await throttle.record_failure(
            session,
            email,
            settings.login_max_failures,
            timedelta(minutes=settings.login_lock_minutes),
        )
        return refused("Incorrect email or password")
    await throttle.clear_failures(session, email)
    refresh_token = await sessions.start_session(session, user.id, refresh_lifetime(settings))
    return tokens_response(user, refresh_token, settings, response)


@router.post("/refresh", response_model=Tokens)
async def refresh(
    request: Request,
    response: Response,
    session: SessionDep,
    settings: SettingsDep,
    payload: RefreshRequest | None = None,
) -> Tokens | JSONResponse:
    """New tokens for a refresh token, which is used up: using it again ends its session."""
    presented = presented_refresh_token(request, payload, settings)
    if presented is None:
        return refused("No refresh token")
    try:
        rotated = await sessions.rotate(session, presented, refresh_lifetime(settings))
    except sessions.RefreshRefused:
        return refused("Refresh token expired, revoked or already used")
    user = await session.get(User, rotated.user_id)
    if user is None or not user.is_active:
        await sessions.end_every_session(session, rotated.user_id)
        return refused("Refresh token expired, revoked or already used")
    return tokens_response(user, rotated.refresh_token, settings, response)


@router.post("/logout", status_code=status.HTTP_204_NO_CONTENT)
async def log_out(
    request: Request,
    response: Response,
    session: SessionDep,
    settings: SettingsDep,
    payload: RefreshRequest | None = None,
) -> None:
    """End the session of a refresh token (its whole family); access tokens already
    issued expire on their own."""
    presented = presented_refresh_token(request, payload, settings)
    if presented is not None:
        await sessions.end_session(session, presented)
    forget_cookies(response)


@router.post("/logout-all", status_code=status.HTTP_204_NO_CONTENT)
async def log_out_everywhere(user: CurrentUserDep, session: SessionDep, response: Response) -> None:
    await sessions.end_every_session(session, user.id)
    forget_cookies(response)


@router.get("/me")
async def me(user: CurrentUserDep) -> UserRead:
    return UserRead.model_validate(user)


@router.post("/register", status_code=status.HTTP_201_CREATED)
async def register(payload: Registration, session: SessionDep, settings: SettingsDep) -> UserRead:
    if not settings.registration_open:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "Registration is closed")
    user = User(email=payload.email, password_hash=await hash_password(payload.password))
    session.add(user)
    try:
        await session.flush()
    except IntegrityError:
        await session.rollback()
        raise HTTPException(status.HTTP_409_CONFLICT, "An account with this email exists") from None
    return UserRead.model_validate(user)


@router.post("/api-keys", status_code=status.HTTP_201_CREATED)
async def create_api_key(
    payload: ApiKeyCreate, _admin: AdminDep, session: SessionDep
) -> ApiKeyCreated:
    """A key for a machine, shown once: store it in the caller's secret manager."""
    key, prefix = new_api_key()
    scopes = sorted(set(payload.scopes))
    row = ApiKey(name=payload.name, prefix=prefix, key_hash=digest(key), scopes=" ".join(scopes))
    session.add(row)
    await session.flush()
    return ApiKeyCreated(**api_key_fields(row), key=key)


@router.get("/api-keys")
async def list_api_keys(_admin: AdminDep, session: ReadSessionDep) -> list[ApiKeyRead]:
    keys = await session.scalars(select(ApiKey).order_by(ApiKey.id))
    return [ApiKeyRead(**api_key_fields(key)) for key in keys]


@router.delete("/api-keys/{key_id}", status_code=status.HTTP_204_NO_CONTENT)
async def revoke_api_key(key_id: ApiKeyId, _admin: AdminDep, session: SessionDep) -> None:
    revoked = await session.execute(
        update(ApiKey)
        .where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None))
        .values(revoked_at=datetime.now(UTC))
        .returning(ApiKey.id)
    )
    if revoked.first() is None and await session.get(ApiKey, key_id) is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "API key not found")


def api_key_fields(key: ApiKey) -> dict[str, object]:
    return {
        "id": key.id,
        "name": key.name,
        "prefix": key.prefix,
        "scopes": key.scopes.split(),
        "created_at": key.created_at,
        "revoked": key.revoked_at is not None,
    }


def refresh_lifetime(settings: Settings) -> timedelta:
    return timedelta(days=settings.refresh_token_days)
