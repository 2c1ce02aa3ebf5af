"""How one step's arrivals of a producer cohort turn into goodput, shed, lost, rejected and latency.

The producer models of `simulate.loop` (see its docstring): a delay on a closed loop (the caller is
slowed) or an open-loop pool (Little's law, arrivals that find the pool full are lost), and the
DrainTime token bucket for a closed loop (the caller blocks for a token) and an open loop (calls wait
in a queue, holding pool slots, until the deadline). Apart from the loop so that each model reads
on its own; the loop decides which one applies.
"""

from __future__ import annotations

from collections import deque

from sluice_operator.simulate.scenario import ProducerGroup

__all__ = ["Flow", "WaitQueue", "closed_paced", "open_paced", "zone_step"]

class Flow:
    """What one priority's producers did in one step (message counts)."""

    __slots__ = ("goodput", "latency", "lost", "rejected", "shed")

    def __init__(self) -> None:
        self.goodput = self.shed = self.lost = self.rejected = self.latency = 0.0


def zone_step(flow: Flow, group: ProducerGroup, arrived: float, per_producer: float, delay_ms: int) -> float:
    """A delay of `delay_ms` on `arrived` messages of one cohort; returns in-flight calls per producer."""
    d = delay_ms / 1000.0
    if group.kind == "closed":
        flow.goodput += arrived / (1.0 + per_producer * d)
        flow.latency += arrived / (1.0 + per_producer * d) * d
        return 0.0
    if d <= 0.0:
        flow.goodput += arrived
        return 0.0
    pool = float(group.pool_size or 0)
    demand = per_producer * d  # Little's law: calls sleeping at once
    share = 1.0 if demand <= pool else pool / demand
    flow.goodput += arrived * share
    flow.lost += arrived * (1.0 - share)
    flow.latency += arrived * share * d
    return min(demand, pool)


def closed_paced(flow: Flow, arrived: float, per_producer: float, tokens_rate: float, deadline: float) -> None:
    """A caller loop paced to `tokens_rate` msgs/s (per producer): it blocks for a token, so it sends
    at the token rate; only when a token is further away than the deadline is a call rejected."""
    if per_producer <= 0.0 or arrived <= 0.0:
        return
    blocked_rate = 1.0 / (1.0 / per_producer + deadline)  # a caller that times out on every call
    if tokens_rate >= blocked_rate:
        sent = min(per_producer, tokens_rate)
        rejected = 0.0
        wait = max(0.0, 1.0 / tokens_rate - 1.0 / per_producer) if tokens_rate > 0 else 0.0
    else:
        sent, rejected, wait = tokens_rate, blocked_rate - tokens_rate, deadline
    flow.goodput += arrived * sent / per_producer
    flow.rejected += arrived * rejected / per_producer
    flow.latency += arrived * sent / per_producer * wait


class WaitQueue:
    """Open-loop calls of one cohort waiting for a token, oldest first: [arrival step, messages]."""

    __slots__ = ("items", "total")

    def __init__(self) -> None:
        self.items: deque[list[float]] = deque()
        self.total = 0.0

    def expire(self, k: int, deadline_steps: float) -> float:
        """Drop the calls that have waited `deadline_steps` or more; returns how many."""
        dropped = 0.0
        items = self.items
        while items and k - items[0][0] >= deadline_steps:
            dropped += items.popleft()[1]
        self.total -= dropped
        if not items:
            self.total = 0.0
        return dropped

    def serve(self, k: int, tokens: float, dt: float, flow: Flow) -> float:
        """Give up to `tokens` to the oldest waiting calls; returns the tokens left."""
        items = self.items
        while items and tokens > 0.0:
            head = items[0]
            take = min(tokens, head[1])
            flow.goodput += take
            flow.latency += take * (k - head[0]) * dt
            tokens -= take
            self.total -= take
            if take >= head[1]:
                items.popleft()
            else:
                head[1] -= take
        if not items:
            self.total = 0.0
        return tokens


def open_paced(
    flow: Flow, queue: WaitQueue, k: int, arrived: float, tokens: float, pool: float, dt: float, deadline_steps: float
) -> float:
    """Open-loop arrivals of a `wait` priority against `tokens`; returns the calls now waiting."""
    flow.rejected += queue.expire(k, deadline_steps)
    tokens = queue.serve(k, tokens, dt, flow)
    direct = min(arrived, tokens)
    flow.goodput += direct
    rest = arrived - direct
    if rest > 0.0:
        space = max(0.0, pool - queue.total)
        waiting = min(rest, space)
        flow.lost += rest - waiting
        if waiting > 0.0:
            queue.items.append([float(k), waiting])
            queue.total += waiting
    return queue.total
