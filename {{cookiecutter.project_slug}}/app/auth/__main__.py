"""Commands for operators: `python -m app.auth create-admin --email admin@example.com`.

The password comes from the ADMIN_PASSWORD environment variable or, without it, from
a prompt: never from the command line, where `ps` and shell history would show it.
"""

import argparse
import asyncio
import getpass
import os
import sys

from pydantic import TypeAdapter, ValidationError
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from app.auth.models import User
from app.auth.passwords import hash_password
from app.auth.schemas import Email, Password
from app.db import open_database
from app.models import Base
from app.settings import get_settings


def read_password() -> str:
    password = os.environ.get("ADMIN_PASSWORD")
    if password:
        return password
    if not sys.stdin.isatty():
        raise SystemExit("Set ADMIN_PASSWORD, or run this in a terminal to be asked for it")
    password = getpass.getpass("Password for the admin: ")
    if getpass.getpass("The same password again: ") != password:
        raise SystemExit("The passwords differ: nothing was changed")
    return password


async def create_admin(email: str, password: str) -> bool:
    """Create a superuser with this email; False (and no change) when one exists."""
    async with (
        open_database(get_settings(), Base.metadata) as database,
        database.sessionmaker() as session,
        session.begin(),
    ):
        if await session.scalar(select(User.id).where(User.email == email)) is not None:
            return False
        hashed = await hash_password(password)
        session.add(User(email=email, password_hash=hashed, is_superuser=True))
    return True


def checked(name: str, kind: TypeAdapter[str], value: str) -> str:
    """`value` as `kind` accepts it, or stop with what is wrong (never the value itself)."""
    try:
        result = kind.validate_python(value)
    except ValidationError as error:
        problem = error.errors()[0]["msg"].removeprefix("Value error, ")
        raise SystemExit(f"Refused: {name}: {problem}") from None
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.auth")
    commands = parser.add_subparsers(dest="command", required=True)
    create = commands.add_parser("create-admin", help="create the first admin, once")
    create.add_argument("--email", required=True)
    arguments = parser.parse_args(argv)

    email = checked("--email", TypeAdapter(Email), arguments.email)
    password = checked("the password", TypeAdapter(Password), read_password())
    try:
        created = asyncio.run(create_admin(email, password))
    except (OSError, SQLAlchemyError) as error:
        # The type only: a message can hold the database URL and its password.
        raise SystemExit(
            f"Cannot create the admin ({type(error).__name__}): is the database up and migrated?"
        ) from None
    if created:
        print(f"Created the admin {email}")
    else:
        print(f"{email} exists already: nothing was changed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
