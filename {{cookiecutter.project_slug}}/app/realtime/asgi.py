import socketio
from starlette.types import ASGIApp, Receive, Scope, Send

from app.paths import SOCKETIO_PATH


class SocketIOMiddleware:
    """Hands `/socket.io/` to the Socket.IO server and every other request to the app.

    A middleware rather than `socketio.ASGIApp(sio, other_asgi_app=app)` around the
    app, so `app.main:app` stays the FastAPI app that tests and users reach.
    """

    def __init__(self, app: ASGIApp, sio: socketio.AsyncServer) -> None:
        self.app = app
        # `socketio_path=None`: this middleware has already chosen the requests it gets.
        self.socketio = socketio.ASGIApp(sio, socketio_path=None)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if path == SOCKETIO_PATH or path.startswith(SOCKETIO_PATH + "/"):
            await self.socketio(scope, receive, send)
        else:
            await self.app(scope, receive, send)
