import asyncio
import signal
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from types import FrameType

import socketio


@asynccontextmanager
async def open_realtime(sio: socketio.AsyncServer) -> AsyncIterator[None]:
    """Serve Socket.IO for the app's lifetime; close every connection on the way out."""
    restore_signals = close_clients_on_stop(sio)
    try:
        yield
    finally:
        restore_signals()
        await sio.shutdown()


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
