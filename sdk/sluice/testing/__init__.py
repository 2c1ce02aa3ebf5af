"""Test helpers shipped with the SDK: a real (librdkafka mock) Kafka cluster that can hang on demand.

Names are imported lazily so ``python -m sluice.testing.mockcluster`` runs the
module once, as ``__main__``, instead of importing it first through here.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sluice.testing.mockcluster import MockClusterError, MockKafkaCluster

__all__ = ["MockClusterError", "MockKafkaCluster"]


def __getattr__(name: str) -> object:
    if name in __all__:
        return getattr(importlib.import_module("sluice.testing.mockcluster"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
