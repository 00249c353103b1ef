"""Every ORM model, imported in one place: Alembic and the SQLite schema read `Base.metadata`.

Add a new resource's models here.
"""

{% if cookiecutter.use_auth %}
from app.auth.models import ApiKey, LoginFailure, RefreshToken, User
{% endif %}
from app.db import Base
from app.items.models import Item

{% if cookiecutter.use_auth %}
__all__ = ["ApiKey", "Base", "Item", "LoginFailure", "RefreshToken", "User"]
{% else %}
__all__ = ["Base", "Item"]
{% endif %}
