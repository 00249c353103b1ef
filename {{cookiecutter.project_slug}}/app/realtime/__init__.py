"""Realtime: a Socket.IO server in the same process as the HTTP API.

- `server.py` makes the server{{ " (with REDIS_URL set, emits go through Redis and\n  reach the clients of every instance)" if cookiecutter.use_redis else "" }};
- `events.py` holds the events clients send: `join`, `leave`, `message`;
- `bridge.py` is the HTTP route that emits to a room;
- `asgi.py` serves `/socket.io/` next to the API;
- `lifecycle.py` closes every connection when the server stops.
"""
