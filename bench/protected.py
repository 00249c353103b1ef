"""The generated app with one more route: its cached item read behind the project's own
bearer check (`get_principal`), so the benchmark prices authentication on a read that
is otherwise the same as GET /items/{id}.

Served as `protected:app` with `--app-dir bench`, from the generated project's directory.
"""

from app.deps import get_principal
from app.items.routes import get_item
from app.main import app
from fastapi import Depends

app.add_api_route("/protected/items/{item_id}", get_item, dependencies=[Depends(get_principal)])
