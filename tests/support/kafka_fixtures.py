"""Pytest fixtures for SDK tests on librdkafka's mock cluster (registered in tests/conftest.py).

* `kafka` (per module): a 3-broker mock cluster in this process, real sockets on loopback.
* `topic`: a fresh topic name, created on the cluster.
* `make`: builds ThrottledProducers on the cluster and closes them after the test;
  ``make(source=None, conf=None, **kwargs)``, where a dict in the first place is taken as `conf`.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from sluice import StaticDecisions, ThrottledProducer
from tests.support.sdk_helpers import InProcessKafka, make_decision

_names = itertools.count()
CLOSE_TIMEOUT = 5.0


@pytest.fixture(scope="module")
def kafka() -> Iterator[InProcessKafka]:
    with InProcessKafka(num_brokers=3) as cluster:
        yield cluster


@pytest.fixture
def topic(kafka: InProcessKafka, request: pytest.FixtureRequest) -> str:
    name = f"{request.module.__name__.rsplit('.', 1)[-1].removeprefix('test_')}-{next(_names)}"
    kafka.create_topic(name, 3)
    return name


@pytest.fixture
def make(kafka: InProcessKafka) -> Iterator[Callable[..., ThrottledProducer]]:
    """Build producers on the mock cluster; all are closed after the test."""
    made: list[ThrottledProducer] = []

    def factory(source: StaticDecisions | dict[str, Any] | None = None, conf: dict[str, Any] | None = None,
                **kwargs: Any) -> ThrottledProducer:
        if isinstance(source, dict):  # make({"message.max.bytes": ...}, dlq_topic=...)
            source, conf = None, {**source, **(conf or {})}
        source = kwargs.pop("source", None) or source or StaticDecisions(make_decision())
        producer = ThrottledProducer({"bootstrap.servers": kafka.bootstrap_servers, "linger.ms": 5, **(conf or {})},
                                     source, **kwargs)
        made.append(producer)
        return producer

    yield factory
    for producer in made:
        producer.close(CLOSE_TIMEOUT)
