"""A helper subprocess that reports events as JSON lines on stdout, collected by a thread."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any


class EventProcess:
    """Run `command`; every stdout line is a JSON object with an "event" key."""

    def __init__(self, command: list[str | Path], cwd: Path, env: dict[str, str] | None = None) -> None:
        self.process = subprocess.Popen(
            [str(part) for part in command],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.events: list[dict[str, Any]] = []
        self.stderr = ""
        self._changed = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._changed:
                self.events.append(json.loads(line))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.stderr += line

    def wait_for(self, event: str, after: int = 0, timeout: float = 15) -> dict[str, Any]:
        """The first `event` at or after index `after`, waiting up to `timeout` seconds."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = [item for item in self.events[after:] if item["event"] == event]
                if found:
                    return found[0]
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (self.process.poll() is not None and not found):
                    time.sleep(0.1)  # let the reader catch the last lines
                    found = [item for item in self.events[after:] if item["event"] == event]
                    if found:
                        return found[0]
                    raise AssertionError(
                        f"{self.process.args}: no {event!r} event within {timeout} s; "
                        f"saw {self.events[after:]}\n{self.stderr[-3000:]}"
                    )
                self._changed.wait(min(remaining, 0.5))

    def of(self, event: str) -> list[dict[str, Any]]:
        with self._changed:
            return [item for item in self.events if item["event"] == event]

    def signal(self, number: int, expect: str | None = None) -> dict[str, Any] | None:
        """Send a signal; with `expect`, wait for the event that acknowledges it."""
        mark = len(self.events)
        self.process.send_signal(number)
        return self.wait_for(expect, after=mark) if expect else None

    def stop(self, timeout: float = 10) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()

    def __enter__(self) -> EventProcess:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()
