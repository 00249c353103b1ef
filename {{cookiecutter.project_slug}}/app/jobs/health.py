"""The worker's liveness check: `GET /health` answers 200 while its event loop runs.

Written by hand because it is one fixed response; uvicorn would take over the
SIGTERM handling that lets SAQ finish running tasks.
"""

import asyncio
import sys
import urllib.request

RESPONSE = (
    b"HTTP/1.1 200 OK\r\n"
    b"Content-Type: application/json\r\n"
    b"Content-Length: 15\r\n"
    b"Connection: close\r\n"
    b"\r\n"
    b'{"status":"ok"}'
)


async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        # Whatever the request, once its first line has arrived.
        await asyncio.wait_for(reader.readline(), timeout=5)
        writer.write(RESPONSE)
        await writer.drain()
    except (TimeoutError, ConnectionError):
        pass
    finally:
        writer.close()


async def serve_health(host: str, port: int) -> asyncio.Server:
    return await asyncio.start_server(answer, host, port)


def check(port: int) -> int:
    """0 when the worker on this machine answers, 1 otherwise: for exec probes."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=3) as response:
            return 0 if response.status == 200 else 1
    except OSError as error:
        print(f"worker not answering on port {port}: {error}", file=sys.stderr)
        return 1
