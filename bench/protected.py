"""The generated app with one more route: its cached item read behind the project's own
bearer check (`get_principal`), so the benchmark prices authentication on a read that
is otherwise the same as GET /items/{id}.

The route joins the items router right after GET /items/{id}, before the app is made:
routes are tried in order, and one added after every router would also pay for trying
all of theirs first.

Served as `protected:app` with `--app-dir bench`, from the generated project's directory.
"""

from app.deps import get_principal
from app.items.routes import get_item, router
from fastapi import Depends

router.add_api_route("/{item_id}/protected", get_item, dependencies=[Depends(get_principal)])
routes = router.routes
public = next(index for index, route in enumerate(routes) if getattr(route, "endpoint", None) is get_item)
routes.insert(public + 1, routes.pop())

from app.main import app  # noqa: E402  (made from the routers as they are now)

__all__ = ["app"]
