"""Producer compliance: are the producers of a policy applying its current decision?

The SDK exports ``sluice_producer_applied_epoch{policy_namespace, policy}`` per producer. For a policy with
``spec.compliance``, the operator asks Prometheus (every ``intervalSeconds``) how many producers report,
how many apply the epoch it last published, and the oldest epoch still applied, and writes them to
``status.compliance`` with a ``Compliant`` condition.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from sluice_operator.api.policy import BackpressurePolicySpec
from sluice_operator.reconcile.signals import Signals
from sluice_operator.sources.lag_query import promql_escape
from sluice_operator.sources.reading import SignalStatus

__all__ = ["ComplianceResult", "check_compliance", "default_query"]

METRIC = "sluice_producer_applied_epoch"


def default_query(namespace: str, name: str) -> str:
    """One series per producer of the policy, valued with the epoch it applies (-1: none yet)."""
    return f'{METRIC}{{policy_namespace="{promql_escape(namespace)}",policy="{promql_escape(name)}"}}'


@dataclass(frozen=True, slots=True)
class ComplianceResult:
    """What `check_compliance` found; `status` is None when Prometheus could not answer."""

    status: dict[str, Any] | None
    condition: tuple[Literal["True", "False", "Unknown"], str, str]  # (status, reason, message): Compliant


async def check_compliance(signals: Signals, namespace: str, name: str, spec: BackpressurePolicySpec,
                           epoch: int, checked_at: str) -> ComplianceResult:
    compliance = spec.compliance
    assert compliance is not None
    if signals.prometheus is None:
        return ComplianceResult(None, ("Unknown", "NoPrometheus", "no Prometheus URL is configured"))
    if compliance.query is not None and not signals.settings.raw_query_allowed(namespace):
        return ComplianceResult(None, ("Unknown", "RawQueryNotAllowed",
                                       f"spec.compliance.query is not allowed in namespace {namespace!r} "
                                       "(SLUICE_RAW_QUERY_NAMESPACES); omit it to use the default"))
    series = compliance.query or default_query(namespace, name)
    timeout = min(spec.polling.timeout_seconds, 5.0)
    read = signals.prometheus.read
    producers = await read(f"count(({series}))", empty_result="zero", timeout=timeout)
    on_epoch = await read(f"count(({series}) == {epoch})", empty_result="zero", timeout=timeout)
    oldest = await read(f"min(({series}) >= 0)", empty_result="unavailable", timeout=timeout)
    for reading in (producers, on_epoch):
        if not reading.ok or reading.value is None:
            return ComplianceResult(None, ("Unknown", "QueryFailed", f"{reading.reason}: {reading.message}"))
    total, current = int(producers.value or 0), int(on_epoch.value or 0)
    oldest_epoch = int(oldest.value) if oldest.ok and oldest.value is not None else None
    if oldest.status is SignalStatus.UNAVAILABLE and oldest.reason != "Empty":
        return ComplianceResult(None, ("Unknown", "QueryFailed", f"{oldest.reason}: {oldest.message}"))
    ratio = round(current / total, 4) if total else None
    status = {"producers": total, "onCurrentEpoch": current, "ratio": ratio, "oldestEpoch": oldest_epoch,
              "epoch": epoch, "summary": f"{current}/{total}", "checkedAt": checked_at}
    condition: tuple[Literal["True", "False", "Unknown"], str, str]
    if total == 0:
        condition = ("Unknown", "NoProducers", f"no producer reports on this policy ({series})")
    elif current == total:
        condition = ("True", "AllOnCurrentEpoch", f"all {total} producers apply epoch {epoch}")
    else:
        condition = ("False", "ProducersBehind",
                     f"{current} of {total} producers apply epoch {epoch}; the oldest applies "
                     f"{'none' if oldest_epoch is None else oldest_epoch}")
    return ComplianceResult(status, condition)
