"""Realtime: a Socket.IO server on the same ASGI app, and an HTTP route that emits to rooms.

`create_app()` wraps the FastAPI app with `socketio.ASGIApp`, so `app.main:app`
serves HTTP and `/socket.io/` alike.
{% if cookiecutter.use_redis %}
With REDIS_URL set, emits go through Redis and reach the clients of every instance.
{% else %}
Emits reach the clients connected to this process.
{% endif %}

Events a client can send: `join` and `leave` (`{"room": "..."}`) and `message`
(`{"room": "...", "text": "..."}`, broadcast to the room as `message`). Each
answers through the acknowledgement callback with `{"ok": true}` or
`{"ok": false, "error": "..."}`.
"""

import asyncio
import hashlib
import hmac
import logging
import signal
import threading
from collections.abc import Awaitable, Callable
from types import FrameType
from typing import Annotated, Any

import socketio
from fastapi import APIRouter, Depends, Header, HTTPException, Path, Request, status
from pydantic import BaseModel, Field, StringConstraints, ValidationError, field_validator

from app.settings import Settings, SettingsDep

logger = logging.getLogger(__name__)

RoomName = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[\w.:-]+$")]
RESERVED_EVENTS = frozenset({"connect", "connect_error", "disconnect", "disconnecting"})
EMIT_TIMEOUT_SECONDS = 2.0
# Emitted data nested deeper than this is refused (422) rather than failing to encode.
MAX_DATA_DEPTH = 32


def issue_token(subject: str, secret: str) -> str:
    """A token for `subject`, signed with SECRET_KEY: `<subject>.<hmac>`.

    Replace this with your identity provider's tokens (for example JWTs); the
    connect handler only needs `verify_token` to return the subject or None.
    """
    signature = hmac.new(secret.encode(), subject.encode(), hashlib.sha256).hexdigest()
    return f"{subject}.{signature}"


def verify_token(token: object, secret: str) -> str | None:
    """The token's subject when its signature is valid, else None."""
    if not isinstance(token, str):
        return None
    subject, _, signature = token.rpartition(".")
    if not subject:
        return None
    expected = issue_token(subject, secret).rpartition(".")[2]
    return subject if hmac.compare_digest(signature, expected) else None


class JoinRequest(BaseModel):
    room: RoomName


class ChatMessage(BaseModel):
    room: RoomName
    text: str = Field(min_length=1, max_length=2000)


def _refusal(error: ValidationError) -> dict[str, Any]:
    first = error.errors()[0]
    return {"ok": False, "error": f"{'.'.join(map(str, first['loc']))}: {first['msg']}"}


async def _in_room(data: object, action: Callable[[str], Awaitable[None]]) -> dict[str, Any]:
    """Validate a `{"room": ...}` payload, then enter or leave that room."""
    try:
        request = JoinRequest.model_validate(data)
    except ValidationError as error:
        return _refusal(error)
    await action(request.room)
    return {"ok": True}


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
    secret = settings.secret_key.get_secret_value()

    async def connect(sid: str, _environ: dict[str, Any], auth: object = None) -> None:
        if not settings.socketio_auth_required:
            return
        token = auth.get("token") if isinstance(auth, dict) else None
        subject = verify_token(token, secret)
        if subject is None:
            raise socketio.exceptions.ConnectionRefusedError(
                "authentication failed: missing or invalid token"
            )
        await sio.save_session(sid, {"subject": subject})

    async def join(sid: str, data: object) -> dict[str, Any]:
        return await _in_room(data, lambda room: sio.enter_room(sid, room))

    async def leave(sid: str, data: object) -> dict[str, Any]:
        return await _in_room(data, lambda room: sio.leave_room(sid, room))

    async def message(sid: str, data: object) -> dict[str, Any]:
        try:
            chat = ChatMessage.model_validate(data)
        except ValidationError as error:
            return _refusal(error)
        if chat.room not in sio.rooms(sid):
            return {"ok": False, "error": f"join {chat.room!r} before sending to it"}
        await sio.emit(
            "message", {"room": chat.room, "text": chat.text, "from": sid}, room=chat.room
        )
        return {"ok": True}

    for handler in (connect, join, leave, message):
        sio.on(handler.__name__, handler)
    return sio


def close_clients_on_stop(sio: socketio.AsyncServer) -> Callable[[], None]:
    """Close every Socket.IO connection as soon as the server is told to stop.

    On SIGTERM uvicorn (and gunicorn's uvicorn worker) first waits for open
    requests, and only then runs the lifespan's shutdown; a long-polling client
    always has a request open, so the stop would wait out the whole grace period
    and cut it. Closing the Engine.IO sessions at the signal answers those
    requests, and clients reconnect (to another instance, when there is one).
    The server's own handler still runs. Call the returned function to restore it.
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    loop = asyncio.get_running_loop()
    # Only a handler the server installed is wrapped; a default one is left alone.
    previous = {
        number: handler
        for number in (signal.SIGTERM, signal.SIGINT)
        if callable(handler := signal.getsignal(number))
    }
    closing: set[asyncio.Task[None]] = set()

    async def close_all() -> None:
        if sio.eio.sockets:
            await sio.eio.disconnect()

    def start_closing() -> None:
        task = loop.create_task(close_all())
        closing.add(task)
        task.add_done_callback(closing.discard)

    def on_stop(number: int, frame: FrameType | None) -> None:
        if not loop.is_closed():
            loop.call_soon_threadsafe(start_closing)
        previous[signal.Signals(number)](number, frame)

    for number in previous:
        signal.signal(number, on_stop)

    def restore() -> None:
        for number, handler in previous.items():
            signal.signal(number, handler)

    return restore


async def get_sio(request: Request) -> socketio.AsyncServer:
    # `async def`: a plain `def` dependency would run in a worker thread.
    sio: socketio.AsyncServer = request.state.sio
    return sio


async def require_token(
    settings: SettingsDep, authorization: Annotated[str | None, Header()] = None
) -> None:
    """With SOCKETIO_AUTH_REQUIRED, the HTTP bridge takes the same tokens as the socket."""
    if not settings.socketio_auth_required:
        return
    token = (authorization or "").removeprefix("Bearer ").strip()
    if verify_token(token, settings.secret_key.get_secret_value()) is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "Missing or invalid bearer token",
            headers={"WWW-Authenticate": "Bearer"},
        )


class Emit(BaseModel):
    event: str = Field(default="message", min_length=1, max_length=64, pattern=r"^[\w.:-]+$")
    data: dict[str, Any] = Field(default_factory=dict)

    @field_validator("event")
    @classmethod
    def _not_reserved(cls, value: str) -> str:
        if value in RESERVED_EVENTS:
            raise ValueError(f"{value!r} is reserved by Socket.IO")
        return value

    @field_validator("data")
    @classmethod
    def _not_too_deep(cls, value: dict[str, Any]) -> dict[str, Any]:
        deepest = 0
        pending: list[tuple[object, int]] = [(value, 1)]
        while pending:
            item, depth = pending.pop()
            if isinstance(item, dict | list):
                deepest = max(deepest, depth)
                children = item.values() if isinstance(item, dict) else item
                pending.extend((child, depth + 1) for child in children)
        if deepest > MAX_DATA_DEPTH:
            raise ValueError(f"nests deeper than {MAX_DATA_DEPTH} levels")
        return value


class EmitAccepted(BaseModel):
    room: str
    event: str


router = APIRouter(prefix="/realtime", tags=["realtime"])


@router.post(
    "/rooms/{room}/emit",
    status_code=status.HTTP_202_ACCEPTED,
    dependencies=[Depends(require_token)],
)
async def emit_to_room(
    room: Annotated[RoomName, Path()],
    payload: Emit,
    sio: Annotated[socketio.AsyncServer, Depends(get_sio)],
) -> EmitAccepted:
    """Send `event` with `data` to every client in `room`, on every instance."""
    try:
        async with asyncio.timeout(EMIT_TIMEOUT_SECONDS):
            await sio.emit(payload.event, payload.data, room=room)
    except TimeoutError:
        logger.warning("Emit to room %s timed out", room)
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "Realtime unavailable") from None
    return EmitAccepted(room=room, event=payload.event)
