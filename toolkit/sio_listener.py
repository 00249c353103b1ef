"""A Socket.IO client that joins one room and reports what happens, one JSON line per event.

Run with the generated projects' virtualenv (it has python-socketio and aiohttp):
`python tests/sio_listener.py BASE_URL ROOM [TRANSPORT]`. It prints `connected`,
`joined`, each `message` it receives with its data, and `disconnected` with the
reason the client library gives, then exits. It does not reconnect: a test
sees exactly how the server let it go. SIGTERM disconnects it from the client
side.
"""

import asyncio
import json
import signal
import sys
import time
from typing import Any

import socketio


def report(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, "at": time.time(), **fields}), flush=True)


async def main(base: str, room: str, transport: str) -> None:
    client = socketio.AsyncClient(reconnection=False)
    gone = asyncio.Event()

    async def disconnect(reason: object = None) -> None:
        report("disconnected", reason=str(reason))
        gone.set()

    async def on_any(event: str, data: object = None) -> None:
        report("message", name=event, data=data)

    client.on("disconnect", disconnect)
    client.on("*", on_any)
    await client.connect(base, transports=[transport], wait_timeout=10)
    report("connected", sid=client.sid)
    answer = await client.call("join", {"room": room}, timeout=10)
    report("joined", answer=answer)
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, lambda: asyncio.ensure_future(client.disconnect()))
    await gone.wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else "websocket"))
