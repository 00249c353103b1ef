"""Password hashing with argon2 (pwdlib), run in a worker thread: one hash takes tens of
milliseconds of CPU, which on the event loop would stall every other request.

Hashes made with bcrypt or older argon2 parameters still verify, and `verify` returns
a new hash for the caller to store (the upgrade happens at the next login).
"""

import asyncio
import secrets
from functools import cache

from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher
from pwdlib.hashers.bcrypt import BcryptHasher

# The first hasher makes new hashes; the others only verify old ones.
HASHER = PasswordHash((Argon2Hasher(), BcryptHasher()))


async def hash_password(password: str) -> str:
    return await asyncio.to_thread(HASHER.hash, password)


async def verify(password: str, stored_hash: str) -> tuple[bool, str | None]:
    """Whether `password` matches, and a replacement hash when the stored one is outdated."""
    return await asyncio.to_thread(HASHER.verify_and_update, password, stored_hash)


@cache
def _decoy_hash() -> str:
    return HASHER.hash(secrets.token_urlsafe(16))


async def verify_decoy(password: str) -> None:
    """Spend the time a real check takes, for an email with no account: an unknown
    email and a wrong password then answer alike."""
    decoy = await asyncio.to_thread(_decoy_hash)
    await verify(password, decoy)
