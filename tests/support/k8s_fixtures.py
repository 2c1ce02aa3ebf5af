"""Pytest fixtures for the Kubernetes API emulator (import them into tests/conftest.py).

* `k8s_emulator`: a fresh emulator on a free 127.0.0.1 port; an `EmulatorHandle`, which unpacks as
  `(emulator, base_url)` and also has `.emulator` / `.base_url`.
* `k8s_api_client`: a sync `kubernetes.client.ApiClient` pointed at it (call it from a worker thread,
  e.g. `await asyncio.to_thread(...)`, because the emulator serves from the test's event loop).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import pytest_asyncio

from tests.support.k8s_emulator import EmulatorHandle, make_sync_api_client, running_emulator


@pytest_asyncio.fixture
async def k8s_emulator() -> AsyncIterator[EmulatorHandle]:
    """A running emulator with the default resources and namespaces `default`, `kube-system`."""
    async with running_emulator() as handle:
        yield handle


@pytest.fixture
def k8s_api_client(k8s_emulator: EmulatorHandle) -> Iterator[Any]:
    """A sync kubernetes ApiClient for the emulator, closed after the test."""
    client = make_sync_api_client(k8s_emulator.base_url)
    try:
        yield client
    finally:
        client.close()
