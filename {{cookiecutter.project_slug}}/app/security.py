"""Signed tokens: a subject and an HMAC of it under SECRET_KEY.

Small on purpose: they let a trusted backend hand a client a token that names
it, with nothing stored. Replace them with your identity provider's tokens
(for example JWTs) by keeping `verify_token`'s contract: the subject, or None.
"""

import hashlib
import hmac


def issue_token(subject: str, secret: str) -> str:
    """A token for `subject`: `<subject>.<hex HMAC-SHA256>`."""
    signature = hmac.new(secret.encode(), subject.encode(), hashlib.sha256).hexdigest()
    return f"{subject}.{signature}"


def verify_token(token: object, secret: str) -> str | None:
    """The token's subject when its signature is valid, else None."""
    if not isinstance(token, str):
        return None
    subject, _, signature = token.rpartition(".")
    if not subject:
        return None
    expected = issue_token(subject, secret).rpartition(".")[2]
    return subject if hmac.compare_digest(signature, expected) else None
