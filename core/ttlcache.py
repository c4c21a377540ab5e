"""Rows kept per process for a few seconds.

Several lookups run on every request or run step and change rarely (a
model's registry row, a key's rate limits, a project's token budgets):
each process keeps what it read for a few seconds, so an operator's edit
applies within that time everywhere.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class TtlCache(Generic[K, V]):
    """Values by key, each kept ``seconds`` after it was loaded. A load
    that finds nothing (None) is not kept: the next call looks again."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._entries: dict[K, tuple[float, V]] = {}

    def get(self, key: K, load: Callable[[], V | None]) -> V | None:
        now = time.monotonic()
        hit = self._entries.get(key)
        if hit is not None and now - hit[0] < self.seconds:
            return hit[1]
        value = load()
        if value is None:
            self._entries.pop(key, None)
        else:
            self._entries[key] = (now, value)
        return value

    def forget(self, key: K) -> None:
        self._entries.pop(key, None)

    def clear(self) -> None:
        self._entries.clear()
