import socketio

from app.realtime.events import ChatEvents
from app.settings import Settings


def create_server(settings: Settings) -> socketio.AsyncServer:
    """The Socket.IO server, with the same CORS origins as the HTTP API."""
{% if cookiecutter.use_redis %}
    manager = None
    if settings.redis_url is not None:
        manager = socketio.AsyncRedisManager(
            settings.redis_url,
            channel=f"{settings.cache_key_prefix}socketio",
            redis_options={"socket_connect_timeout": settings.redis_socket_timeout},
        )
{% endif %}
    sio = socketio.AsyncServer(
        async_mode="asgi",
{% if cookiecutter.use_redis %}
        client_manager=manager,
{% endif %}
        # None means same-origin only; the HTTP API then sends no CORS headers either.
        cors_allowed_origins=settings.cors_origins or None,
        cors_credentials=settings.cors_allow_credentials,
        transports=settings.socketio_transports,
        ping_interval=settings.socketio_ping_interval,
        ping_timeout=settings.socketio_ping_timeout,
    )
    sio.register_namespace(ChatEvents(settings))
    return sio
