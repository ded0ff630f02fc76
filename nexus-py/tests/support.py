"""Helpers shared by the tests (conftest.py has the fixtures)."""

from __future__ import annotations

import json
import time
import urllib.request
import uuid
from typing import Any, Dict, List


class Mock:
    """A running mock upstream: its base URL and its counters."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url

    def stats(self) -> Dict[str, Any]:
        with urllib.request.urlopen(self.base_url + "/mock/stats", timeout=5) as r:
            stats: Dict[str, Any] = json.load(r)
            return stats

    def wait_for(self, counter: str, at_least: int, timeout: float = 5.0) -> int:
        """Polls a counter until it reaches `at_least` (cancellation is seen asynchronously by
        the mock, when its next write fails); returns the last value either way."""
        deadline = time.monotonic() + timeout
        while True:
            value = int(self.stats()[counter])
            if value >= at_least or time.monotonic() > deadline:
                return value
            time.sleep(0.02)


def unique(model: str) -> str:
    """`model` with a word the mock ignores, so per-model mock state (flakyN) is not shared."""
    return f"{model}-u{uuid.uuid4().hex[:10]}"


def user(text: str) -> List[Dict[str, Any]]:
    return [{"role": "user", "content": text}]
