"""The realtime routes of the HTTP API: a backend sends an event to a room's Socket.IO
clients (`POST /realtime/rooms/{room}/emit`) or to its plain WebSocket listeners
(`POST /realtime/rooms/{room}/broadcast`, heard at `/realtime/ws/{room}`)."""

import asyncio
import logging
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, HTTPException, Path, WebSocket, status
from pydantic import BaseModel, Field, ValidationError, field_validator
from starlette.websockets import WebSocketDisconnect

{% if cookiecutter.use_auth %}
from app.auth.tokens import verify_access_token
{% endif %}
from app.deps import BroadcasterDep, SettingsDep, SioDep, app_state
from app.realtime.events import RoomName
{% if not cookiecutter.use_auth %}
from app.security import verify_token
{% endif %}

logger = logging.getLogger(__name__)

RESERVED_EVENTS = frozenset({"connect", "connect_error", "disconnect", "disconnecting"})
EMIT_TIMEOUT_SECONDS = 2.0
# How long a listener that must authenticate has to send its token.
AUTH_TIMEOUT_SECONDS = 5.0
# Data nested deeper than this is refused (422) rather than failing to encode.
MAX_DATA_DEPTH = 32


async def require_token(
    settings: SettingsDep, authorization: Annotated[str | None, Header()] = None
) -> None:
    """With SOCKETIO_AUTH_REQUIRED, the bridge takes the same tokens as the socket."""
    if not settings.socketio_auth_required:
        return
    token = (authorization or "").removeprefix("Bearer ").strip()
{% if cookiecutter.use_auth %}
    if verify_access_token(token, settings) is None:
{% else %}
    if verify_token(token, settings.secret_key.get_secret_value()) is None:
{% endif %}
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "Missing or invalid bearer token",
            headers={"WWW-Authenticate": "Bearer"},
        )


def depth(value: object) -> int:
    """How deeply lists and dicts nest in `value` (without recursion, which deep input exhausts)."""
    deepest = 0
    pending: list[tuple[object, int]] = [(value, 1)]
    while pending:
        item, level = pending.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, level)
            children = item.values() if isinstance(item, dict) else item
            pending.extend((child, level + 1) for child in children)
    return deepest


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
        if depth(value) > MAX_DATA_DEPTH:
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
    room: Annotated[RoomName, Path()], payload: Emit, sio: SioDep
) -> EmitAccepted:
    """Send `event` with `data` to every client in `room`, on every instance."""
    try:
        async with asyncio.timeout(EMIT_TIMEOUT_SECONDS):
            await sio.emit(payload.event, payload.data, room=room)
    except TimeoutError:
        logger.warning("Emit to room %s timed out", room)
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "Realtime unavailable") from None
    return EmitAccepted(room=room, event=payload.event)


@router.post(
    "/rooms/{room}/broadcast",
    status_code=status.HTTP_202_ACCEPTED,
    dependencies=[Depends(require_token)],
)
async def broadcast_to_room(
    room: Annotated[RoomName, Path()], payload: Emit, broadcaster: BroadcasterDep
) -> EmitAccepted:
    """Send `event` with `data` to the room's plain WebSocket listeners, on every instance."""
    try:
        async with asyncio.timeout(EMIT_TIMEOUT_SECONDS):
            await broadcaster.publish(room, payload.event, payload.data)
    except TimeoutError:
        logger.warning("Broadcast to room %s timed out", room)
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "Realtime unavailable") from None
    return EmitAccepted(room=room, event=payload.event)


class ListenerAuth(BaseModel):
    token: str


@router.websocket("/ws/{room}")
async def listen_to_room(websocket: WebSocket, room: Annotated[RoomName, Path()]) -> None:
    """A plain WebSocket that receives the room's broadcasts as JSON text messages.

    With SOCKETIO_AUTH_REQUIRED the first message must be `{"token": "..."}`: a token
    in the URL would end up in every proxy's access log.
    """
    state = app_state(websocket)
    settings = state.settings
    await websocket.accept()
    if settings.socketio_auth_required:
        try:
            async with asyncio.timeout(AUTH_TIMEOUT_SECONDS):
                auth = ListenerAuth.model_validate_json(await websocket.receive_text())
        except (TimeoutError, ValidationError, WebSocketDisconnect, KeyError):
            await websocket.close(code=status.WS_1008_POLICY_VIOLATION)
            return
{% if cookiecutter.use_auth %}
        if verify_access_token(auth.token, settings) is None:
{% else %}
        if verify_token(auth.token, settings.secret_key.get_secret_value()) is None:
{% endif %}
            await websocket.close(code=status.WS_1008_POLICY_VIOLATION)
            return
    state.broadcaster.join(room, websocket)
    try:
        while True:  # Listen-only: what the client sends is read and dropped.
            await websocket.receive_text()
    except (WebSocketDisconnect, KeyError):
        pass
    finally:
        state.broadcaster.leave(room, websocket)
