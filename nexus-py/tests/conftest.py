"""Fixtures: the real mock upstream binary (one per session) and a fresh in-memory hub per test.

The mock is ``nexus-mock-upstream`` (``cargo build -p nexus --features testing --bin
nexus-mock-upstream``); ``NEXUS_MOCK_BIN`` overrides its path. Its behaviour is chosen by words
in the model name (see nexus/src/testing.rs): ``chunks5-delay20``, ``fail429``, ``stall``...
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any, Callable, Dict, Iterator

import pytest

import nexus
from support import Mock, unique

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def mock() -> Iterator[Mock]:
    default = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "debug" / "nexus-mock-upstream"
    binary = Path(os.environ.get("NEXUS_MOCK_BIN", default))
    if not binary.exists():
        pytest.fail(
            f"mock upstream not found at {binary}: build it with "
            "`cargo build -p nexus --features testing --bin nexus-mock-upstream` "
            "or set NEXUS_MOCK_BIN"
        )
    proc = subprocess.Popen([str(binary)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://"), f"mock printed {url!r}"
        yield Mock(url)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


@pytest.fixture
def hub() -> Iterator[nexus.Hub]:
    h = nexus.Hub()
    yield h
    h.flush()


@pytest.fixture
def provider(hub: nexus.Hub, mock: Mock) -> Dict[str, Any]:
    """A provider on the mock with one attempt per request (tests of failures stay fast)."""
    p: Dict[str, Any] = hub.create_provider(
        "mock", mock.base_url, "sk-mock", options={"max_retries": 1}
    )
    return p


@pytest.fixture
def model(hub: nexus.Hub, provider: Dict[str, Any]) -> Callable[[str], str]:
    """Registers a model (made unique) on the mock provider and returns its name."""

    def make(name: str) -> str:
        name = unique(name)
        hub.create_model(provider["id"], name)
        return name

    return make
