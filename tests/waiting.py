"""Waiting for a state that has no event to wait on, always with a timeout (never sleep-and-hope)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any


def wait_until(condition: Callable[[], Any], timeout: float = 5.0, what: str = "condition") -> Any:
    """Poll ``condition()`` (every 10 ms) until it returns something truthy; return that.

    For state that has no frame to wait on (actor registry, database rows); raises
    AssertionError naming ``what`` after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what} not reached within {timeout:g} s")
        time.sleep(0.01)


async def async_wait_until(condition: Callable[[], Any], timeout: float = 5.0, what: str = "condition") -> Any:
    """:func:`wait_until` for coroutines: polls without blocking the event loop."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what} not reached within {timeout:g} s")
        await asyncio.sleep(0.01)


def poll(fetch: Callable[[], Any], check: Callable[[Any], bool], timeout: float = 5.0) -> Any:
    """Call ``fetch`` until ``check`` holds on its result; return that result (AssertionError
    with the last value after ``timeout`` seconds)."""
    deadline = time.monotonic() + timeout
    while True:
        got = fetch()
        if check(got):
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"condition never held; last value: {str(got)[:2000]}")
        time.sleep(0.01)
