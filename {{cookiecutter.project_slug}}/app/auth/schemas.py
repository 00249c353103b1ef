import re
from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from app.db import StoredText, is_storable

# Bounded above so a hash never runs on megabytes; 12 and up, as current guidance asks.
MIN_PASSWORD_LENGTH = 12
MAX_PASSWORD_LENGTH = 128
MAX_EMAIL_LENGTH = 320
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")


def normalise_email(value: str) -> str:
    """Emails are compared and stored lower-cased, so case never makes a second account."""
    return value.strip().lower()


def is_email(value: str) -> bool:
    return len(value) <= MAX_EMAIL_LENGTH and is_storable(value) and bool(_EMAIL.fullmatch(value))


def _email(value: str) -> str:
    value = normalise_email(value)
    if not is_email(value):
        raise ValueError("not an email address")
    return value


Email = Annotated[str, AfterValidator(_email)]
Password = Annotated[str, Field(min_length=MIN_PASSWORD_LENGTH, max_length=MAX_PASSWORD_LENGTH)]
Scope = Literal["write", "admin"]


class Registration(BaseModel):
    email: Email
    password: Password


class UserRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    email: str
    is_active: bool
    is_superuser: bool
    created_at: datetime


class Tokens(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"  # noqa: S105 (a scheme's name, not a secret)
    # Seconds the access token lives.
    expires_in: int
    # None when AUTH_REFRESH_COOKIE carries it in an HttpOnly cookie instead.
    refresh_token: str | None


class RefreshRequest(BaseModel):
    # Optional: with AUTH_REFRESH_COOKIE, a browser sends the cookie instead.
    refresh_token: str | None = Field(default=None, max_length=100)


class ApiKeyCreate(BaseModel):
    name: StoredText = Field(min_length=1, max_length=100)
    scopes: list[Scope] = Field(min_length=1)


class ApiKeyRead(BaseModel):
    id: int
    name: str
    prefix: str
    scopes: list[str]
    created_at: datetime
    revoked: bool


class ApiKeyCreated(ApiKeyRead):
    # Shown once: only its hash is stored.
    key: str
