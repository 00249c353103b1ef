"""Every router the service serves, in one list: add a new resource's router here."""

from fastapi import APIRouter

from app import meta
{% if cookiecutter.use_auth %}
from app.auth.routes import router as auth_router
{% endif %}
{% if cookiecutter.use_postgres %}
from app.items.routes import router as items_router
{% endif %}
{% if cookiecutter.use_socketio %}
from app.realtime.bridge import router as realtime_router
{% endif %}

# FastAPI tries each router's routes in this order on every request, after the
# health probes (app/health.py): the most requested first, the sign-in routes
# last (a new resource goes before them).
ROUTERS: list[APIRouter] = [
    meta.router,
{% if cookiecutter.use_postgres %}
    items_router,
{% endif %}
{% if cookiecutter.use_socketio %}
    realtime_router,
{% endif %}
{% if cookiecutter.use_auth %}
    auth_router,
{% endif %}
]
