"""schemathesis checks of our own, loaded with SCHEMATHESIS_HOOKS=toolkit.fuzz_checks.

Besides schemathesis's own checks (no 5xx, invalid data refused), every error the
service answers must be JSON with a readable `detail`, and no response may carry
a traceback or the secret named by FUZZ_SECRET (the database password).
"""

from __future__ import annotations

import os
from typing import Any

import schemathesis


@schemathesis.check
def errors_are_json_with_a_detail(ctx: Any, response: schemathesis.Response, case: schemathesis.Case) -> None:
    if response.status_code < 400:
        return
    content_type = response.headers.get("content-type", [""])[0]
    assert content_type.startswith("application/json"), f"{response.status_code} is not JSON: {content_type}"
    detail = response.json().get("detail")
    if isinstance(detail, str):
        assert detail.strip(), "the detail is empty"
        return
    assert isinstance(detail, list) and detail, f"no detail: {response.text[:200]}"
    for problem in detail:
        assert problem.get("msg") and problem.get("loc"), f"a problem without msg or loc: {problem}"


@schemathesis.check
def no_internals_leak(ctx: Any, response: schemathesis.Response, case: schemathesis.Case) -> None:
    text = response.text or ""
    # The phrase, not the word: a 422 echoes the request, which may hold the word.
    assert "Traceback (most recent call last)" not in text, "a traceback in the response"
    secret = os.environ.get("FUZZ_SECRET")
    assert not secret or secret not in text, "the database password in the response"
