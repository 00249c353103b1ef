"""slowapi's limiter: where routes declare their limits. It counts nothing itself."""

from fastapi import Request
from slowapi import Limiter


def client_address(request: Request) -> str:
    """The client's address, as the proxy middleware (`app/proxy.py`) established it.

    Forwarding headers count only from trusted proxies, so a client cannot pick
    its own budget.
    """
    return request.client.host if request.client else "unknown"


# Module-level because route decorators need it when routes are defined. The
# default limit and the on/off switch come from the settings given to
# `create_app` (see `RateLimitMiddleware`), not from here.
limiter = Limiter(key_func=client_address, auto_check=False, headers_enabled=False)
