"""A loopback TCP proxy that can be cut, to take a server away from its clients and give it back.

`python -m toolkit.tcp_proxy HOST PORT` listens on a free loopback port, prints
`{"event": "listening", "port": N}` and forwards every connection to HOST:PORT.

- SIGUSR1 cuts: open connections are reset (both sides), and new ones are
  accepted and reset at once, as when the upstream address is a dead port.
- SIGUSR2 restores forwarding.
- SIGTERM stops the proxy.

Each event is a JSON line on stdout. A closed connection reports who closed it
first and whether the client's last bytes were PostgreSQL's Terminate message,
which a client sends when it closes a connection properly (a disposed pool).

`TcpProxy` runs it as a subprocess for a test. Written here because Debian
packages no proxy that injects faults on a signal (toxiproxy is not packaged).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
import struct
import sys
from pathlib import Path
from typing import Any

from toolkit.events import EventProcess

# PostgreSQL's Terminate message: 'X' and a length of 4.
TERMINATE = b"X\x00\x00\x00\x04"
ROOT = Path(__file__).resolve().parents[1]


def emit(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


def reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP reset, as a crashed or cut peer does."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class Proxy:
    def __init__(self, host: str, port: int) -> None:
        self.upstream = (host, port)
        self.is_cut = False
        self.open: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self.cut_pairs: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self.accepted = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if self.is_cut:
            reset(writer)
            emit("refused")
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError as error:
            reset(writer)
            emit("refused", error=type(error).__name__)
            return
        pair = (writer, up_writer)
        self.open.add(pair)
        state: dict[str, Any] = {"tail": b"", "first": None}

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter, side: str) -> None:
            try:
                while data := await source.read(65536):
                    if side == "client":
                        state["tail"] = (state["tail"] + data)[-len(TERMINATE) :]
                    sink.write(data)
                    await sink.drain()
            except (OSError, asyncio.IncompleteReadError):
                pass
            finally:
                state["first"] = state["first"] or side
                sink.close()

        await asyncio.gather(pipe(reader, up_writer, "client"), pipe(up_reader, writer, "server"))
        self.open.discard(pair)
        emit(
            "closed",
            by="proxy" if pair in self.cut_pairs else state["first"],
            terminate=state["tail"] == TERMINATE,
        )

    def cut(self) -> None:
        self.is_cut = True
        self.cut_pairs = set(self.open)
        for client, upstream in self.cut_pairs:
            reset(client)
            reset(upstream)
        emit("cut", connections=len(self.cut_pairs))

    def restore(self) -> None:
        self.is_cut = False
        emit("restored")


async def main(host: str, port: int) -> None:
    proxy = Proxy(host, port)
    server = await asyncio.start_server(proxy.handle, "127.0.0.1", 0)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGUSR1, proxy.cut)
    loop.add_signal_handler(signal.SIGUSR2, proxy.restore)
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    emit("listening", port=server.sockets[0].getsockname()[1])
    async with server:
        await stop.wait()
    emit("stopped", accepted=proxy.accepted)


class TcpProxy(EventProcess):
    """The proxy as a subprocess, in front of HOST:PORT; `port` is where it listens."""

    def __init__(self, host: str, port: int) -> None:
        super().__init__([sys.executable, "-m", "toolkit.tcp_proxy", host, str(port)], ROOT)
        self.port = int(self.wait_for("listening")["port"])

    def cut(self) -> None:
        self.signal(signal.SIGUSR1, expect="cut")

    def restore(self) -> None:
        self.signal(signal.SIGUSR2, expect="restored")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
