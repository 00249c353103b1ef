"""Every ORM model, imported in one place: Alembic and the SQLite schema read `Base.metadata`.

Add a new resource's models here.
"""

from app.db import Base
from app.items.models import Item

__all__ = ["Base", "Item"]
