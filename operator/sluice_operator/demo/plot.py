"""timeline.png: the demo's story in one picture (matplotlib, Agg, no display needed).

Top to bottom, on one time axis with the phases shaded: the lag the operator read from Kafka against
every priority's thresholds and the no-control estimate; the zone each priority was told (hatched
where shed); messages sent per second per priority against the consumer's capacity; sheds and
circuit rejections per second; the circuit's state.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sluice.decision import PRIORITIES
from sluice_operator.demo import scenario
from sluice_operator.demo.policies import DemoObjects
from sluice_operator.demo.report import Verdict, lag_at
from sluice_operator.demo.runner import DemoRun
from sluice_operator.demo.timeline import Sample

PRIORITY_COLOR = {"high": "#1f4e9c", "medium": "#7b3fa0", "low": "#d9771e"}
ZONE_COLOR = {"green": "#4caf50", "yellow": "#f2c200", "red": "#d32f2f"}
CIRCUIT_COLOR = {"closed": "#4caf50", "forced-closed": "#4caf50", "half-open": "#ff9800", "open": "#d32f2f",
                 "forced-open": "#d32f2f", "none": "#bdbdbd"}
PHASE_COLOR = {"steady": "#e8f5e9", "surge": "#f3e5f5", "outage": "#ffebee", "recovery": "#e0f7fa"}


def _spans(samples: Sequence[Sample], value: Any) -> list[tuple[float, float, Any]]:
    """Runs of equal `value(sample)` as (start, width, value)."""
    runs: list[tuple[float, float, Any]] = []
    for i, sample in enumerate(samples):
        end = samples[i + 1].t if i + 1 < len(samples) else sample.t + 0.5
        current = value(sample)
        if runs and runs[-1][2] == current and abs(runs[-1][0] + runs[-1][1] - sample.t) < 1e-6:
            start, _, _ = runs[-1]
            runs[-1] = (start, end - start, current)
        else:
            runs.append((sample.t, end - sample.t, current))
    return runs


def draw(run: DemoRun, verdict: Verdict, path: Path) -> None:
    """Write the chart to `path` (PNG)."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    timeline = run.timeline
    objects = run.objects
    phases = timeline.phases
    samples = timeline.samples
    end = phases[-1].end

    drain = timeline.control == "drain"
    heights = [3.2, 1.0, 2.2, 1.3, 1.5, 0.55] if drain else [3.2, 1.0, 2.2, 1.5, 0.55]
    fig = Figure(figsize=(14, 15.5 if drain else 13.5), dpi=100, layout="constrained")
    grid = fig.add_gridspec(len(heights), 2, height_ratios=heights, width_ratios=[30, 2.2])
    ax_lag = fig.add_subplot(grid[0, 0])
    ax_bands = fig.add_subplot(grid[0, 1], sharey=ax_lag)
    ax_zone = fig.add_subplot(grid[1, 0], sharex=ax_lag)
    ax_rate = fig.add_subplot(grid[2, 0], sharex=ax_lag)
    row = 3
    ax_admit = None
    if drain:
        ax_admit = fig.add_subplot(grid[3, 0], sharex=ax_lag)
        row = 4
    ax_shed = fig.add_subplot(grid[row, 0], sharex=ax_lag)
    ax_circ = fig.add_subplot(grid[row + 1, 0], sharex=ax_lag)
    axes = (ax_lag, ax_zone, ax_rate, ax_shed, ax_circ) + ((ax_admit,) if ax_admit is not None else ())
    for ax in axes:
        for phase in phases:
            ax.axvspan(phase.start, phase.end, color=PHASE_COLOR[phase.name], zorder=0, lw=0)
        ax.set_xlim(0, end)
        ax.grid(axis="x", color="#dddddd", lw=0.6)
    fig.suptitle(("Sluice demo: closed loop on embedded Kafka   -   "
                  + ("LOOP BEHAVED" if verdict.ok else "LOOP DID NOT BEHAVE")),
                 fontsize=15, fontweight="bold", color="#1b5e20" if verdict.ok else "#b71c1c")
    fig.supxlabel(_wrap(verdict.text), fontsize=9.5, color="#212121")

    # 1. Lag against the thresholds (the bands on the right), and what no control would have done.
    windows = objects.windows()
    top = max(verdict.no_control_peak_lag, max((r.value or 0 for r in timeline.readings), default=0), 10.0) * 2.5
    bottom = 10.0
    ax_lag.set_yscale("log")
    ax_lag.set_ylim(bottom, top)
    ax_lag.grid(axis="y", which="major", color="#cccccc", lw=0.6)
    start_lag = lag_at(timeline.readings, 0.0)
    curve = scenario.no_control_curve(phases, timeline.capacity)
    ax_lag.plot([t for t, _ in curve], [max(bottom, v + start_lag) for _, v in curve], ls="--", color="#757575",
                lw=2, label="no control (estimate): backlog grows by offered - capacity")
    _bands(ax_bands, objects, top)
    xs: list[float] = []
    ys: list[float] = []
    unknown: list[float] = []
    for reading in timeline.readings:
        if reading.t < 0:
            continue
        xs.append(reading.t)
        ys.append(max(bottom * 1.05, reading.value) if reading.value is not None else float("nan"))
        if reading.value is None:
            unknown.append(reading.t)
    ax_lag.plot(xs, ys, color="#0d47a1", lw=2.4, marker="o", ms=3, label="lag read by the operator (Kafka offsets)")
    for priority in PRIORITIES:
        # Where each priority starts being slowed down, for reading the lag line against.
        ax_lag.axhline(windows[priority].green, color=PRIORITY_COLOR[priority], ls=":", lw=1.0, alpha=0.8)
    if unknown:
        ax_lag.plot(unknown, [top / 2.0] * len(unknown), "x", color="#b71c1c", ms=7, mew=2,
                    label="lag unknown: Kafka does not answer (the policy falls back)")
    if verdict.peak_lag is not None and verdict.peak_lag_at is not None:
        ax_lag.annotate(
            f"peak {verdict.peak_lag:,.0f}\n(no control: {verdict.no_control_peak_lag:,.0f})",
            xy=(verdict.peak_lag_at, max(bottom, verdict.peak_lag)), xytext=(-40, 34), textcoords="offset points",
            fontsize=10, fontweight="bold", color="#0d47a1", ha="right",
            arrowprops={"arrowstyle": "->", "color": "#0d47a1"},
        )
    for phase in phases:
        ax_lag.text((phase.start + phase.end) / 2, 1.01, phase.label, ha="center", va="bottom", fontsize=10.5,
                    fontweight="bold", color="#424242", transform=ax_lag.get_xaxis_transform())
    ax_lag.set_ylabel("consumer lag (messages, log scale)")
    handles, _ = ax_lag.get_legend_handles_labels()
    handles.append(Line2D([], [], color="#616161", ls=":", lw=1.0,
                          label="dotted: each priority's green threshold (slowing down starts), colours as below"))
    ax_lag.legend(handles=handles, loc="lower center", fontsize=8.5, framealpha=0.95, ncols=1)

    # 2. The zone each priority was told, hatched where it was shed.
    for row, priority in enumerate(reversed(PRIORITIES)):
        for start, width, (zone, shed) in _spans(samples, lambda s, p=priority: (s.zones[p], s.shed[p])):
            ax_zone.broken_barh([(start, width)], (row + 0.1, 0.8), facecolor=ZONE_COLOR.get(zone, "#bdbdbd"),
                                hatch="////" if shed else None, edgecolor="#212121" if shed else "none", lw=0)
    for start, width, source in _spans(samples, lambda s: s.source):
        if source == "fallback" and width >= 1.0:
            ax_zone.text(start + width / 2, 3.02, "signal lost: last decision, then conservative delays",
                         ha="center", va="bottom", fontsize=8, style="italic", color="#b71c1c")
    ax_zone.set_yticks([0.5, 1.5, 2.5], labels=list(reversed(PRIORITIES)))
    for tick, priority in zip(ax_zone.get_yticklabels(), reversed(PRIORITIES), strict=True):
        tick.set_color(PRIORITY_COLOR[priority])
        tick.set_fontweight("bold")
    ax_zone.set_ylim(0, 3)
    ax_zone.set_title("zone published per priority (hatched: shed)", fontsize=10, loc="left")
    ax_zone.legend(handles=[Patch(facecolor=ZONE_COLOR[z], label=z) for z in ("green", "yellow", "red")]
                   + [Patch(facecolor="white", edgecolor="#212121", hatch="////", label="shed")],
                   loc="upper left", fontsize=8, ncols=4, framealpha=0.9)

    # 3. Throughput per priority against the consumer's capacity.
    for priority in PRIORITIES:
        series = timeline.series(priority, "sent")
        ax_rate.plot([t for t, _ in series], [v for _, v in series], color=PRIORITY_COLOR[priority], lw=1.8,
                     label=f"{priority} sent/s")
    consumed = timeline.consumed_series()
    ax_rate.plot([t for t, _ in consumed], [v for _, v in consumed], color="black", lw=1.4, alpha=0.8,
                 label="consumed/s")
    offered_x: list[float] = []
    offered_y: list[float] = []
    for phase in phases:
        offered_x += [phase.start, phase.end]
        offered_y += [scenario.total_offered(phase)] * 2
    ax_rate.plot(offered_x, offered_y, color="#757575", ls="--", lw=1.3, label="offered (all priorities)")
    ax_rate.axhline(timeline.capacity, color="black", ls=":", lw=1.3, label=f"capacity {timeline.capacity:.0f}/s")
    if ax_admit is not None:
        admitted = timeline.admitted_series(window=2.0)
        ax_rate.plot([t for t, _ in admitted], [v for _, v in admitted], color="#2e7d32", lw=1.6,
                     label="admitted/s (all priorities)")
        mu = [(s.t, s.operator_mu) for s in samples if s.operator_mu is not None]
        allowed = [(s.t, s.allowed) for s in samples if s.allowed is not None]
        if mu:
            ax_rate.step([t for t, _ in mu], [v for _, v in mu], where="post", color="#6d4c41", lw=1.6, ls="-.",
                         label="mu-hat (operator's drain rate)")
            ax_rate.step([t for t, _ in allowed], [v for _, v in allowed], where="post", color="#c2185b", lw=1.2,
                         ls="--", label="R (allowed rate)")
        for priority in PRIORITIES:
            points = [(s.t, s.admit.get(priority)) for s in samples]
            ax_admit.step([t for t, _ in points], [float("nan") if v is None else v for _, v in points],
                          where="post", color=PRIORITY_COLOR[priority], lw=1.6, label=priority)
        ax_admit.set_ylim(-0.05, 1.05)
        ax_admit.set_ylabel("admitRatio")
        degraded = next((s.degraded for s in samples if s.degraded), None)
        note = f" - degraded to Zones at times: {degraded}" if degraded else ""
        ax_admit.set_title(_wrap("admitRatio per priority held by the producers (gaps: not paced)" + note, 160),
                           fontsize=10, loc="left")
        ax_admit.legend(loc="lower left", fontsize=8, ncols=3, framealpha=0.9)
    ax_rate.set_ylim(0, max(offered_y) * 1.15)
    ax_rate.set_ylabel("messages/s")
    ax_rate.set_title("throughput per priority (sent into Kafka)", fontsize=10, loc="left")
    ax_rate.legend(loc="upper right", fontsize=8, ncols=3, framealpha=0.9)

    # 4. Sheds and circuit rejections.
    for priority in PRIORITIES:
        shed = timeline.series(priority, "shed")
        rejected = timeline.series(priority, "rejected")
        color = PRIORITY_COLOR[priority]
        if any(v for _, v in shed):
            ax_shed.fill_between([t for t, _ in shed], [v for _, v in shed], color=color, alpha=0.35, lw=0,
                                 label=f"{priority} shed/s")
        ax_shed.plot([t for t, _ in rejected], [v for _, v in rejected], color=color, lw=1.4, ls="--",
                     label=f"{priority} rejected/s (circuit)")
    ax_shed.set_ylabel("messages/s")
    ax_shed.set_title("shed (dropped by the decision) and rejected (circuit open / half-open)", fontsize=10,
                      loc="left")
    ax_shed.legend(loc="upper left", fontsize=8, ncols=4, framealpha=0.9)

    # 5. Circuit state, with the transitions the verdict is about.
    for start, width, state in _spans(samples, lambda s: s.circuit):
        ax_circ.broken_barh([(start, width)], (0.1, 0.8), facecolor=CIRCUIT_COLOR.get(state, "#bdbdbd"), lw=0)
    ax_circ.set_yticks([0.5], labels=["circuit\n(producers' view)"])
    ax_circ.set_ylim(0, 1)
    ax_circ.legend(handles=[Patch(facecolor=CIRCUIT_COLOR[s], label=s) for s in ("closed", "half-open", "open")],
                   loc="upper left", fontsize=8, ncols=3, framealpha=0.9)
    for when, label in ((verdict.circuit_opened_at, "opened"), (verdict.circuit_closed_at, "closed")):
        if when is not None:
            for ax in axes:
                ax.axvline(when, color="#b71c1c" if label == "opened" else "#1b5e20", lw=1.2, ls="--")
            ax_circ.text(when, 1.05, f"{label} t={when:.1f}s", ha="center", va="bottom", fontsize=9,
                         fontweight="bold", transform=ax_circ.get_xaxis_transform())
    ax_circ.set_xlabel("seconds since the scenario started")

    fig.savefig(path, format="png")


def _wrap(text: str, width: int = 150) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width))


def _bands(ax: Any, objects: DemoObjects, top: float) -> None:
    """One bar per priority on the lag axis: green, yellow and red ranges, hatched where it is shed."""
    windows = objects.windows()
    for x, priority in enumerate(PRIORITIES):
        w = windows[priority]
        for low, high, zone in ((0.0, w.green, "green"), (w.green, w.yellow, "yellow"), (w.yellow, top, "red")):
            ax.bar(x, high - low, bottom=low, width=0.8, color=ZONE_COLOR[zone], alpha=0.85, lw=0)
        shed_level = objects.shed_level(priority)
        if shed_level is not None:
            ax.bar(x, top - shed_level, bottom=shed_level, width=0.8, fill=False, hatch="////",
                   edgecolor="#212121", lw=0)
            ax.text(x, shed_level, "shed", rotation=90, ha="center", va="bottom", fontsize=8, color="white",
                    fontweight="bold")
    ax.set_xticks(range(len(PRIORITIES)), labels=list(PRIORITIES), rotation=90, fontsize=9)
    ax.tick_params(axis="y", labelleft=False)
    ax.set_title("zones", fontsize=9)
    ax.set_xlim(-0.5, len(PRIORITIES) - 0.5)
