"""422 answers that never fail, whatever the invalid request held.

FastAPI's own handler echoes each invalid input back, and fails with a 500 on
input that JSON cannot carry: NaN and infinities (`1e999`), lone surrogates
(`"\\ud800"`), bytes that are not UTF-8, or nesting deep enough to exhaust the
encoder. This handler keeps the same answer, with such input made printable, and
never echoes what was sent for a field whose name says it is secret.
"""

import math
from typing import Any

from fastapi import Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

# Parts of an echoed input nested deeper than this are shown as "...".
MAX_ECHO_DEPTH = 16
# A field whose name holds one of these is never echoed: a password or a token in
# a 422 body would reach whatever logs or caches error answers.
SECRET_WORDS = ("password", "secret", "token", "key")


def printable(value: Any, depth: int = 0) -> Any:
    """`value` with what a JSON response cannot hold replaced, nesting cut at MAX_ECHO_DEPTH."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, str):
        return value if value.isascii() else value.encode("utf-8", "replace").decode()
    if isinstance(value, dict | list | tuple):
        if depth >= MAX_ECHO_DEPTH:
            return "..."
        if isinstance(value, dict):
            return {printable(key, depth): printable(v, depth + 1) for key, v in value.items()}
        return [printable(item, depth + 1) for item in value]
    return value


def is_secret(location: Any) -> bool:
    field = str(location[-1]).lower() if isinstance(location, list | tuple) and location else ""
    return any(word in field for word in SECRET_WORDS)


async def request_validation_failed(_request: Request, error: Exception) -> JSONResponse:
    """422 with the list of problems, each naming where it is (`loc`) and what is wrong (`msg`)."""
    problems = error.errors() if isinstance(error, RequestValidationError) else []
    shown = [
        {**problem, "input": "[hidden]"} if is_secret(problem.get("loc")) else problem
        for problem in problems
    ]
    return JSONResponse({"detail": jsonable_encoder(printable(shown))}, status_code=422)
