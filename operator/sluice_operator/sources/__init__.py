"""Backlog and failure signals (Prometheus, Kafka offsets, static).

Only the shared result type is re-exported here, so importing one source never
pulls in another source's client library.
"""

from sluice_operator.sources.reading import Reading, SignalStatus

__all__ = ["Reading", "SignalStatus"]
