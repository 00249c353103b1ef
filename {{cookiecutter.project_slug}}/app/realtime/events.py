"""The events a client sends. Each answers through the acknowledgement callback with
`{"ok": true}` or `{"ok": false, "error": "..."}`:

- `join` and `leave` with `{"room": "..."}`;
- `message` with `{"room": "...", "text": "..."}`, broadcast to the room as `message`.
"""

from typing import Annotated, Any

import socketio
from pydantic import BaseModel, Field, StringConstraints, ValidationError

{% if cookiecutter.use_auth %}
from app.auth.tokens import verify_access_token
{% endif %}
{% if cookiecutter.use_metrics %}
from app.metrics.collectors import SOCKETIO_CLIENTS
{% endif %}
{% if not cookiecutter.use_auth %}
from app.security import verify_token
{% endif %}
from app.settings import Settings

RoomName = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[\w.:-]+$")]


class JoinRequest(BaseModel):
    room: RoomName


class ChatMessage(BaseModel):
    room: RoomName
    text: str = Field(min_length=1, max_length=2000)


def refusal(error: ValidationError) -> dict[str, Any]:
    first = error.errors()[0]
    return {"ok": False, "error": f"{'.'.join(map(str, first['loc']))}: {first['msg']}"}


class ChatEvents(socketio.AsyncNamespace):  # type: ignore[misc]
    """Rooms and messages on the default namespace; `on_<event>` handles `<event>`."""

    def __init__(self, settings: Settings) -> None:
        super().__init__("/")
        self.auth_required = settings.socketio_auth_required
{% if cookiecutter.use_auth %}
        self.settings = settings
{% else %}
        self.secret = settings.secret_key.get_secret_value()
{% endif %}

    async def on_connect(self, sid: str, _environ: dict[str, Any], auth: object = None) -> None:
        """With SOCKETIO_AUTH_REQUIRED, a client connects with `auth={"token": ...}`."""
        if self.auth_required:
            await self.authenticate(sid, auth)
{% if cookiecutter.use_metrics %}
        SOCKETIO_CLIENTS.inc()

    async def on_disconnect(self, _sid: str, _reason: str) -> None:
        # Only a client whose connect handler succeeded is ever disconnected.
        SOCKETIO_CLIENTS.dec()
{% endif %}

    async def authenticate(self, sid: str, auth: object) -> None:
        """Refuse the connection unless `auth` carries a valid token."""
        token = auth.get("token") if isinstance(auth, dict) else None
{% if cookiecutter.use_auth %}
        subject = verify_access_token(token, self.settings)
{% else %}
        subject = verify_token(token, self.secret)
{% endif %}
        if subject is None:
            raise socketio.exceptions.ConnectionRefusedError(
                "authentication failed: missing or invalid token"
            )
        await self.save_session(sid, {"subject": subject})

    async def on_join(self, sid: str, data: object) -> dict[str, Any]:
        try:
            request = JoinRequest.model_validate(data)
        except ValidationError as error:
            return refusal(error)
        await self.enter_room(sid, request.room)
        return {"ok": True}

    async def on_leave(self, sid: str, data: object) -> dict[str, Any]:
        try:
            request = JoinRequest.model_validate(data)
        except ValidationError as error:
            return refusal(error)
        await self.leave_room(sid, request.room)
        return {"ok": True}

    async def on_message(self, sid: str, data: object) -> dict[str, Any]:
        try:
            chat = ChatMessage.model_validate(data)
        except ValidationError as error:
            return refusal(error)
        if chat.room not in self.rooms(sid):
            return {"ok": False, "error": f"join {chat.room!r} before sending to it"}
        await self.emit(
            "message", {"room": chat.room, "text": chat.text, "from": sid}, room=chat.room
        )
        return {"ok": True}
