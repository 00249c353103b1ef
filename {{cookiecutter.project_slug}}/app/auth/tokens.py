"""Access tokens (JWTs signed with a key derived from SECRET_KEY) and the random secrets
behind refresh tokens and API keys.

An access token is checked without the database: its signature, algorithm, expiry,
issuer and audience, once; then its expiry alone on each request, until it expires.
It lives ACCESS_TOKEN_MINUTES, so a revoked session or a deactivated user keeps
access until then at most.
"""

import functools
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import jwt

from app.settings import Settings

ALGORITHM = "HS256"
ISSUER = "{{ cookiecutter.project_slug }}"
AUDIENCE = "{{ cookiecutter.project_slug }}:api"
# API keys start with this, so a bearer value is told apart from a JWT at a glance.
API_KEY_START = "sk_"
# A client sends the same access token with every request until it expires, and
# verifying it costs more than most requests' own work: tokens already verified are
# kept with their claims and expiry, under the keys that verified them.
VERIFIED_MAX_ENTRIES = 10_000


@dataclass(frozen=True)
class AccessClaims:
    subject: str
    scopes: frozenset[str]


_verified: dict[tuple[str, tuple[bytes, ...]], tuple[AccessClaims, float]] = {}


@functools.cache
def signing_key(secret_key: str) -> bytes:
    """A key for JWTs alone, derived from SECRET_KEY (so nothing else is signed with the
    same key), and always 32 bytes, however short SECRET_KEY is in development."""
    return hmac.new(secret_key.encode(), b"access-token", hashlib.sha256).digest()


def verification_keys(settings: Settings) -> tuple[bytes, ...]:
    """The current key, then the previous one while a rotation is under way."""
    keys = [settings.secret_key]
    if settings.secret_key_previous is not None:
        keys.append(settings.secret_key_previous)
    return tuple(signing_key(key.get_secret_value()) for key in keys)


def issue_access_token(subject: str, scopes: frozenset[str], settings: Settings) -> str:
    now = datetime.now(UTC)
    claims = {
        "sub": subject,
        "scope": " ".join(sorted(scopes)),
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": now,
        "exp": now + timedelta(minutes=settings.access_token_minutes),
    }
    return jwt.encode(claims, signing_key(settings.secret_key.get_secret_value()), ALGORITHM)


def read_access_token(token: object, settings: Settings) -> AccessClaims | None:
    """The claims of a valid access token, else None (whatever is wrong with it)."""
    if not isinstance(token, str) or not token:
        return None
    keys = verification_keys(settings)
    known = _verified.get((token, keys))
    if known is not None:
        claims, expires_at = known
        if time.time() < expires_at:
            return claims
        _verified.pop((token, keys), None)
        return None
    for key in keys:
        try:
            decoded = jwt.decode(
                token,
                key,
                # Pinned: the token's own header never chooses the algorithm.
                algorithms=[ALGORITHM],
                audience=AUDIENCE,
                issuer=ISSUER,
                options={"require": ["exp", "iat", "sub", "iss", "aud"]},
            )
        except jwt.InvalidSignatureError:
            continue
        except jwt.InvalidTokenError:
            return None
        scope = decoded.get("scope", "")
        if not isinstance(scope, str):
            return None
        claims = AccessClaims(subject=str(decoded["sub"]), scopes=frozenset(scope.split()))
        if len(_verified) >= VERIFIED_MAX_ENTRIES:
            _verified.clear()
        _verified[token, keys] = (claims, float(decoded["exp"]))
        return claims
    return None


def verify_access_token(token: object, settings: Settings) -> str | None:
    """The subject of a valid access token, else None: for a caller that only needs to
    know who the token names."""
    claims = read_access_token(token, settings)
    return claims.subject if claims else None


def new_secret() -> str:
    """A random secret for a refresh token or an API key (256 bits)."""
    return secrets.token_urlsafe(32)


def digest(secret: str) -> str:
    """How a refresh token or an API key is stored: SHA-256 is enough for random
    256-bit secrets, where a slow password hash would only cost time."""
    return hashlib.sha256(secret.encode()).hexdigest()
