"""timeline.png of one run: backlog against the threshold bands, throughput, sheds, zones.

In drain mode (DrainTime) the throughput panel also shows the drain rate the operator measured
(mu-hat) against the rate it allowed (R) and the total admitted, and a panel shows each priority's
published admitRatio.

matplotlib is imported here only (Agg backend, no display), so the rest of the simulator works
without it. `render` returns PNG bytes; the command writes them.
"""

from __future__ import annotations

import io
from typing import Any

from sluice.decision import PRIORITIES
from sluice_operator.simulate.result import SimulationResult

__all__ = ["render"]

_COLORS = {"high": "#1f77b4", "medium": "#ff7f0e", "low": "#9467bd"}
_ZONE_COLORS = ("#2ca02c", "#f2c318", "#d62728")
#: At most this many points per line; longer series are averaged in buckets.
_MAX_POINTS = 2000


def _thin(xs: list[float], ys: list[float], reduce: str = "mean") -> tuple[list[float], list[float]]:
    """At most _MAX_POINTS points: bucket means (rates) or maxima (backlog, to keep peaks visible)."""
    size = max(1, -(-len(xs) // _MAX_POINTS))
    if size == 1:
        return xs, ys
    out_x, out_y = [], []
    for i in range(0, len(xs), size):
        chunk = ys[i : i + size]
        out_x.append(xs[min(i + size, len(xs)) - 1])
        out_y.append(max(chunk) if reduce == "max" else sum(chunk) / len(chunk))
    return out_x, out_y


def render(result: SimulationResult, title: str | None = None) -> bytes:
    """The chart of `result` as PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = result.series
    spec = result.spec
    drain = result.mode == "drain"
    if drain:
        fig, axes = plt.subplots(5, 1, figsize=(11, 13), sharex=True, height_ratios=[3, 2, 1.3, 1.3, 1.1])
        ax_b, ax_t, ax_a, ax_s, ax_z = axes
    else:
        fig, axes = plt.subplots(4, 1, figsize=(11, 11), sharex=True, height_ratios=[3, 2, 1.3, 1.1])
        ax_b, ax_t, ax_s, ax_z = axes
    fig.suptitle(title or f"{result.scenario.name} - mode {result.mode}, seed {result.seed}")
    _shade_windows(result, axes)

    xs, ys = _thin(s.t, s.backlog, "max")
    ax_b.plot(xs, ys, color="black", linewidth=1.0, label="backlog")
    for p in PRIORITIES:
        window = getattr(spec.thresholds, p)
        for level, style in ((window.green, ":"), (window.yellow, "--"), (window.red, "-")):
            ax_b.axhline(level, color=_COLORS[p], linestyle=style, linewidth=0.7, alpha=0.6)
    top = max(max(s.backlog, default=0.0), spec.thresholds.low.red) * 1.1
    ax_b.set_ylim(0, top)
    ax_b.set_ylabel("backlog (msgs)")
    ax_b.legend(
        handles=[
            _line(ax_b, "black", "-", "backlog"),
            _line(ax_b, "gray", ":", "green threshold"),
            _line(ax_b, "gray", "--", "yellow threshold"),
            _line(ax_b, "gray", "-", "red threshold"),
            *(_line(ax_b, _COLORS[p], "-", p) for p in PRIORITIES),
        ],
        loc="upper right",
        fontsize=7,
        ncol=2,
    )

    for i, p in enumerate(PRIORITIES):
        ax_t.plot(*_thin(s.t, s.goodput[i]), color=_COLORS[p], linewidth=0.9, label=f"{p} goodput")
        ax_t.plot(*_thin(s.t, s.offered[i]), color=_COLORS[p], linewidth=0.6, linestyle=":", alpha=0.7)
    ax_t.plot(*_thin(s.t, s.capacity), color="gray", linewidth=0.8, linestyle="--", label="consumer capacity")
    ax_t.plot(*_thin(s.t, s.consumed), color="black", linewidth=0.8, label="consumed")
    if drain:
        admitted = [a + b + c for a, b, c in zip(*s.goodput, strict=True)]
        ax_t.plot(*_thin(s.t, admitted), color="#2ca02c", linewidth=0.9, label="admitted (all)")
        ax_t.plot(*_thin(s.t, s.mu), color="#8c564b", linewidth=1.1, linestyle="-.", label="mu-hat (measured)")
        ax_t.plot(*_thin(s.t, s.allowed), color="#e377c2", linewidth=1.0, linestyle="--", label="R (allowed)")
        for i, p in enumerate(PRIORITIES):
            ax_a.step(s.t, s.admit[i], where="post", color=_COLORS[p], linewidth=0.9, label=p)
        ax_a.set_ylim(-0.05, 1.05)
        ax_a.set_ylabel("admitRatio")
        ax_a.legend(loc="lower right", fontsize=7, ncol=3)
    ax_t.set_ylabel("msgs/s")
    ax_t.legend(loc="upper right", fontsize=7, ncol=3, title="dotted: offered", title_fontsize=7)

    for i, p in enumerate(PRIORITIES):
        ax_s.plot(*_thin(s.t, s.shed[i]), color=_COLORS[p], linewidth=0.9, label=f"{p} shed")
        if any(s.lost[i]):
            lost = _thin(s.t, s.lost[i])
            ax_s.plot(*lost, color=_COLORS[p], linewidth=0.7, linestyle="--", label=f"{p} lost/rejected")
    ax_s.set_ylabel("dropped msgs/s")
    ax_s.legend(loc="upper right", fontsize=7, ncol=3)

    for i in range(len(PRIORITIES)):
        _zone_band(ax_z, s.t, s.zone[i], len(PRIORITIES) - 1 - i)
    ax_z.set_yticks(range(len(PRIORITIES)), list(reversed(PRIORITIES)))
    ax_z.set_ylim(-0.5, len(PRIORITIES) - 0.5)
    ax_z.set_ylabel("zone")
    ax_z.set_xlabel("time (s)")
    ax_z.set_xlim(0, result.scenario.duration_seconds)

    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig)
    return buffer.getvalue()


def _line(ax: Any, color: str, style: Any, label: str) -> Any:
    from matplotlib.lines import Line2D

    return Line2D([], [], color=color, linestyle=style, label=label)


def _shade_windows(result: SimulationResult, axes: Any) -> None:
    scenario = result.scenario
    for ax in axes:
        if scenario.surge is not None:
            ax.axvspan(scenario.surge.start, scenario.surge.end, color="#d62728", alpha=0.06, linewidth=0)
        for w in scenario.signal_outages:
            ax.axvspan(w.start, w.end, color="gray", alpha=0.15, linewidth=0)


def _zone_band(ax: Any, ts: list[float], zones: list[int], row: int) -> None:
    """One horizontal band per priority, colored by zone, one bar per run of equal zones."""
    if not ts:
        return
    start, current = 0.0, zones[0]
    for t, z in zip(ts, zones, strict=True):
        if z != current:
            ax.broken_barh([(start, t - start)], (row - 0.4, 0.8), color=_ZONE_COLORS[current])
            start, current = t, z
    ax.broken_barh([(start, ts[-1] - start)], (row - 0.4, 0.8), color=_ZONE_COLORS[current])
