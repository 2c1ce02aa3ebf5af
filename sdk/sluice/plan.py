"""Per-priority action plans, computed once per new document instead of once per message.

`build_plans` is pure: it turns what a source holds (`SourceView`) and the monotonic time into one
`Plan` per priority plus the time at which the answer can next change (the earliest moment a fresh
document goes stale). The producer keeps the plans until the source's version changes or that time
passes, so ``produce`` does a dict lookup and an identity check instead of pydantic or datetime work.

Rules, per document:

* a fresh Decision in ``Enforce`` applies its priority's ``delayMs`` and ``shed``, and paces it when
  ``admitRatio < 1`` (``excess`` says wait or shed; absent: wait, nothing is dropped unless the
  operator says so); in ``Observe`` it applies nothing and the plan lists what would have happened
  (``wouldDelayMs``/``wouldShed``/``wouldAdmitRatio``, the action ``pace``);
* a fresh CircuitState ``open``/``forced-open`` rejects; ``half-open`` admits ``probeRatio`` of
  messages through a deterministic counter sampler; ``closed``/``forced-closed`` does nothing. A
  circuit embedded in the Decision follows the Decision's enforcement;
* a missing or stale Decision, or a stale circuit, follows ``on_stale``: ``allow`` ignores it (the
  producer warns), ``conservative`` applies the document's fallback delays (the built-in defaults
  without a document), ``block`` refuses.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from sluice.decision import BUILTIN_CONSERVATIVE_MS, PRIORITIES, CircuitState, Decision, Excess, Priority
from sluice.sources.base import SourceView
from sluice.stale import operator_ttl

__all__ = ["CIRCUIT_GAUGE", "OnStale", "Plan", "PlanSet", "Probe", "build_plans"]

OnStale = Literal["allow", "conservative", "block"]

#: sluice_producer_circuit_state values.
CIRCUIT_GAUGE: Mapping[str, int] = {"closed": 0, "half-open": 1, "open": 2}


class Probe:
    """Deterministic half-open sampler: admits exactly ``floor(n * ratio)`` of the first n calls.

    ``itertools.count`` makes the counter atomic under the GIL, so concurrent producers neither
    skip nor repeat a slot.
    """

    __slots__ = ("_counter", "circuit", "ratio")

    def __init__(self, circuit: str, ratio: float) -> None:
        self.circuit = circuit
        self.ratio = ratio
        self._counter = itertools.count()

    def admit(self) -> bool:
        """True for a probe message, False for one to reject."""
        n = next(self._counter)
        return math.floor((n + 1) * self.ratio) > math.floor(n * self.ratio)


@dataclass(frozen=True, slots=True)
class Plan:
    """What ``produce`` does for one priority until the plans are rebuilt."""

    priority: Priority
    idx: int
    delay_s: float = 0.0
    shed: bool = False
    zone: str = "green"
    epoch: int = -1
    reject: tuple[str, str] | None = None
    probe: Probe | None = None
    stale_block: str | None = None
    stale_age: float | None = None
    observe: tuple[str, ...] = ()
    observe_probe: Probe | None = None
    admit_ratio: float = 1.0
    excess: Excess = "wait"

    @property
    def paced(self) -> bool:
        """DrainTime pacing applies: each message needs a token."""
        return self.admit_ratio < 1

    @property
    def passthrough(self) -> bool:
        """Nothing to apply or count: the hot path may produce at once."""
        return (
            self.delay_s <= 0
            and self.admit_ratio >= 1
            and not self.shed
            and self.reject is None
            and self.probe is None
            and self.stale_block is None
            and not self.observe
            and self.observe_probe is None
        )


@dataclass(frozen=True, slots=True)
class PlanSet:
    """Plans for every priority, when to rebuild them, and the state ``health()`` reports."""

    plans: Mapping[str, Plan]
    recheck_at: float
    decision_status: Literal["fresh", "stale", "missing", "mismatch"]
    decision_age: float | None
    epoch: int
    enforcement: str | None
    circuit_state: Literal["closed", "half-open", "open"]
    circuit_names: tuple[str, ...]
    stale: tuple[str, ...]
    probes: Mapping[tuple[str, int, float], Probe] = field(default_factory=dict)


@dataclass
class _Acc:
    delay_ms: dict[str, float] = field(default_factory=lambda: dict.fromkeys(PRIORITIES, 0.0))
    shed: dict[str, bool] = field(default_factory=lambda: dict.fromkeys(PRIORITIES, False))
    zone: dict[str, str] = field(default_factory=lambda: dict.fromkeys(PRIORITIES, "green"))
    observe: dict[str, list[str]] = field(default_factory=lambda: {p: [] for p in PRIORITIES})
    admit_ratio: dict[str, float] = field(default_factory=lambda: dict.fromkeys(PRIORITIES, 1.0))
    excess: dict[str, Excess] = field(default_factory=lambda: dict.fromkeys(PRIORITIES, "wait"))
    reject: tuple[str, str] | None = None
    probe_key: tuple[str, int, float] | None = None
    observe_probe_key: tuple[str, int, float] | None = None
    stale: list[str] = field(default_factory=list)
    conservative: bool = False


def build_plans(
    view: SourceView,
    now: float,
    on_stale: OnStale,
    *,
    policy: str | None = None,
    probes: Mapping[tuple[str, int, float], Probe] | None = None,
) -> PlanSet:
    """Compute the plans in force at monotonic time ``now``."""
    acc = _Acc()
    recheck = math.inf
    tracked = view.decision
    decision: Decision | None = tracked.doc if tracked is not None else None
    status: Literal["fresh", "stale", "missing", "mismatch"]
    if tracked is None or decision is None:
        status = "missing"
    elif policy is not None and f"{decision.policy.namespace}/{decision.policy.name}" != policy:
        status = "mismatch"
    elif tracked.is_fresh(now):
        status = "fresh"
        recheck = min(recheck, tracked.fresh_until)
    else:
        status = "stale"
    age = tracked.age(now) if tracked is not None else None

    if status == "fresh" and decision is not None and tracked is not None:
        _apply_decision(acc, decision)
        if decision.circuit is not None:
            embedded_until = tracked.received_at + operator_ttl(decision.circuit)
            observed = decision.enforcement == "Observe"
            if now <= embedded_until:
                recheck = min(recheck, embedded_until)
                _apply_circuit(acc, decision.circuit, observe=observed)
            elif not observed:
                acc.stale.append(f"circuit {decision.circuit.name}")
    else:
        acc.stale.append("decision")
    for circuit in view.circuits:
        if circuit.is_fresh(now):
            recheck = min(recheck, circuit.fresh_until)
            _apply_circuit(acc, circuit.doc, observe=False)
        else:
            acc.stale.append(f"circuit {circuit.doc.name}")

    stale_block: str | None = None
    if acc.stale:
        if on_stale == "block":
            stale_block = acc.stale[0]
        elif on_stale == "conservative":
            fallback = decision.fallback if decision is not None and status != "mismatch" else None
            for p in PRIORITIES:
                conservative = fallback.get(p) if fallback is not None else BUILTIN_CONSERVATIVE_MS[p]
                acc.delay_ms[p] = max(acc.delay_ms[p], float(conservative))

    previous = probes or {}
    new_probes: dict[tuple[str, int, float], Probe] = {}
    for key in (acc.probe_key, acc.observe_probe_key):
        if key is not None:
            new_probes[key] = previous.get(key) or Probe(key[0], key[2])
    probe = new_probes[acc.probe_key] if acc.probe_key is not None else None
    observe_probe = new_probes[acc.observe_probe_key] if acc.observe_probe_key is not None else None

    epoch = decision.epoch if decision is not None and status == "fresh" else -1
    plans: dict[str, Plan] = {
        p: Plan(
            priority=p,
            idx=i,
            delay_s=acc.delay_ms[p] / 1000.0,
            shed=acc.shed[p],
            zone=acc.zone[p],
            epoch=epoch,
            reject=acc.reject,
            probe=None if acc.reject is not None else probe,
            stale_block=stale_block,
            stale_age=age if stale_block == "decision" else None,
            observe=tuple(acc.observe[p]),
            observe_probe=observe_probe,
            admit_ratio=acc.admit_ratio[p],
            excess=acc.excess[p],
        )
        for i, p in enumerate(PRIORITIES)
    }
    circuit_state: Literal["closed", "half-open", "open"] = (
        "open" if acc.reject is not None else "half-open" if probe is not None else "closed"
    )
    return PlanSet(
        plans=plans,
        recheck_at=recheck,
        decision_status=status,
        decision_age=age,
        epoch=epoch,
        enforcement=decision.enforcement if decision is not None else None,
        circuit_state=circuit_state,
        circuit_names=tuple(c.doc.name for c in view.circuits)
        + ((decision.circuit.name,) if decision is not None and decision.circuit is not None else ()),
        stale=tuple(acc.stale),
        probes=new_probes,
    )


def _apply_decision(acc: _Acc, decision: Decision) -> None:
    observe = decision.enforcement == "Observe"
    for p in PRIORITIES:
        pd = decision.priorities.get(p)
        acc.zone[p] = pd.zone
        if observe:
            would_delay = pd.would_delay_ms if pd.would_delay_ms is not None else pd.delay_ms
            would_shed = pd.would_shed if pd.would_shed is not None else pd.shed
            if would_delay > 0:
                acc.observe[p].append("delay")
            if would_shed:
                acc.observe[p].append("shed")
            would_ratio = pd.would_admit_ratio if pd.would_admit_ratio is not None else pd.admit_ratio
            if would_ratio is not None and would_ratio < 1:
                acc.observe[p].append("pace")
        else:
            acc.delay_ms[p] = float(pd.delay_ms)
            acc.shed[p] = pd.shed
            if pd.admit_ratio is not None:
                acc.admit_ratio[p] = pd.admit_ratio
            if pd.excess is not None:
                acc.excess[p] = pd.excess


def _apply_circuit(acc: _Acc, circuit: CircuitState, *, observe: bool) -> None:
    if circuit.rejects_all:
        if observe:
            for p in PRIORITIES:
                if "reject_open" not in acc.observe[p]:
                    acc.observe[p].append("reject_open")
        elif acc.reject is None:
            acc.reject = (circuit.name, circuit.state)
        return
    if circuit.state != "half-open":
        return
    key = (circuit.name, circuit.epoch, circuit.probe_ratio)
    if observe:
        acc.observe_probe_key = key
    elif acc.probe_key is None or circuit.probe_ratio < acc.probe_key[2]:
        acc.probe_key = key
