"""Seeded randomness of the simulator: Poisson counts and slowly wandering rate multipliers.

Every stream has its own `random.Random`, seeded from ``"<seed>:<stream>"`` (string seeds hash
with SHA-512, independent of PYTHONHASHSEED), so adding draws to one stream never shifts another
and the same seed gives the same run on every machine.
"""

from __future__ import annotations

import math
import random

__all__ = ["Jitter", "poisson", "stream"]

#: Above this mean, the normal approximation replaces Knuth's product-of-uniforms method.
_KNUTH_LIMIT = 30.0


def stream(seed: int, name: str) -> random.Random:
    """An independent generator for one purpose."""
    return random.Random(f"{seed}:{name}")


def poisson(rng: random.Random, mean: float) -> float:
    """A Poisson draw (exact for small means, normal approximation above 30)."""
    if mean <= 0.0:
        return 0.0
    if mean > _KNUTH_LIMIT:
        return float(max(0, round(rng.gauss(mean, math.sqrt(mean)))))
    limit = math.exp(-mean)
    count = 0
    product = rng.random()
    while product > limit:
        count += 1
        product *= rng.random()
    return float(count)


class Jitter:
    """A multiplier ``max(0, 1 + x)`` where x is a stationary AR(1) process with sd `sigma`.

    A slow wander (time constant `tau`) rather than white noise: real load drifts for tens of
    seconds, which is what makes a backlog hover around a threshold.
    """

    def __init__(self, rng: random.Random, sigma: float, tau: float, step: float) -> None:
        self._rng = rng
        self._sigma = sigma
        self._phi = math.exp(-step / tau)
        self._innovation = sigma * math.sqrt(1.0 - self._phi * self._phi)
        self._x = rng.gauss(0.0, sigma) if sigma > 0.0 else 0.0

    def next(self) -> float:
        """The multiplier for the next step."""
        if self._sigma <= 0.0:
            return 1.0
        value = max(0.0, 1.0 + self._x)
        self._x = self._phi * self._x + self._innovation * self._rng.gauss(0.0, 1.0)
        return value
