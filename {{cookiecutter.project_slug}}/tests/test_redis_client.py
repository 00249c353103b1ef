import logging

import pytest

from app.redis_client import FIRST_PAUSE_SECONDS, LONGEST_PAUSE_SECONDS, RedisBreaker


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_after_a_failure_redis_is_skipped_for_a_pause_that_doubles() -> None:
    clock = Clock()
    breaker = RedisBreaker(clock)
    assert breaker.available()

    pauses = []
    for _ in range(8):
        breaker.failed(ConnectionError())
        assert not breaker.available()
        started = clock.now
        while not breaker.available():
            clock.now += 0.25
        pauses.append(clock.now - started)

    assert pauses[0] == FIRST_PAUSE_SECONDS
    assert pauses[1] == 2 * FIRST_PAUSE_SECONDS
    assert pauses[-1] == LONGEST_PAUSE_SECONDS


def test_an_outage_is_logged_once_and_the_recovery_once(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    breaker = RedisBreaker(clock)
    with caplog.at_level(logging.INFO, logger="app.redis_client"):
        for _ in range(3):
            breaker.failed(ConnectionError())
            clock.now += LONGEST_PAUSE_SECONDS
        breaker.succeeded()
        breaker.succeeded()

    assert [record.levelname for record in caplog.records] == ["WARNING", "INFO"]
    assert breaker.available()
    breaker.failed(ConnectionError())
    clock.now += FIRST_PAUSE_SECONDS
    assert breaker.available()
