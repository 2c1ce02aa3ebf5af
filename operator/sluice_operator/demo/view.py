"""Progress while the demo runs: a rich Live dashboard on a terminal, one plain line per second otherwise."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import TextIO

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from sluice.decision import PRIORITIES, Priority
from sluice_operator.api.policy import Window
from sluice_operator.demo import scenario
from sluice_operator.demo.policies import DemoObjects
from sluice_operator.demo.timeline import Timeline

ZONE_STYLE = {"green": "bold green", "yellow": "bold yellow", "red": "bold red"}
BAR_STYLE = {"green": "green on dark_green", "yellow": "yellow on dark_goldenrod", "red": "red on dark_red"}
CIRCUIT_STYLE = {"closed": "bold green", "half-open": "bold yellow", "open": "bold white on red",
                 "forced-open": "bold white on red", "forced-closed": "bold green", "none": "dim"}
PHASE_STYLE = {"steady": "green", "surge": "bold magenta", "outage": "bold red", "recovery": "bold cyan"}


def _phase_text(timeline: Timeline, t: float) -> Text:
    phase = scenario.phase_at(timeline.phases, t)
    end = timeline.phases[-1].end if timeline.phases else 0.0
    text = Text(f"t = {min(max(0.0, t), end):5.1f} s / {end:.1f} s   phase: ")
    text.append(phase.label, style=PHASE_STYLE[phase.name])
    text.append(f"  ({phase.start:.0f}-{phase.end:.0f} s)", style="dim")
    return text


def _lag_text(timeline: Timeline, objects: DemoObjects) -> Text:
    sample = timeline.latest()
    text = Text("lag ")
    if sample is None or sample.lag is None:
        text.append("unknown", style="bold red")
        text.append(" (Kafka does not answer the operator)", style="dim")
    else:
        text.append(f"{sample.lag:,.0f}", style="bold")
        text.append(" messages (the operator reads it from Kafka offsets)")
    if sample is not None:
        text.append(f"   decision epoch {sample.epoch if sample.epoch is not None else '-'}")
        text.append(f" from {sample.source or '-'}", style="dim")
    return text


BAR_WIDTH = 22


def lag_bar(lag: float | None, window: Window, shed_above: float | None, width: int = BAR_WIDTH) -> Text:
    """The priority's window as a bar (green, yellow, red; `x` where it sheds) with the lag marked `|`."""
    scale = window.red * 1.1
    text = Text()
    marker = None if lag is None else min(width - 1, int(lag / scale * width))
    for i in range(width):
        level = (i + 0.5) * scale / width
        zone = "green" if level <= window.green else "yellow" if level <= window.yellow else "red"
        char = "x" if shed_above is not None and level > shed_above else "-"
        if i == marker:
            text.append("|", style="bold white on blue")
        else:
            text.append(char, style=BAR_STYLE[zone])
    return text


#: Columns by importance: narrower terminals drop the later groups (wide: everything).
_ESSENTIAL = ("priority", "zone", "delay", "shed", "offered/s", "sent/s", "shed/s", "rejected/s")
_MEDIUM = ("lag vs thresholds", "delayed/s")
_WIDE = ("green/yellow/red", "total sent/shed/rejected")
_ORDER = ("priority", "lag vs thresholds", "green/yellow/red", "zone", "delay", "shed", "offered/s", "sent/s",
          "delayed/s", "shed/s", "rejected/s", "total sent/shed/rejected")


def _columns(width: int) -> list[str]:
    shown = set(_ESSENTIAL)
    if width >= 120:
        shown.update(_MEDIUM)
    if width >= 165:
        shown.update(_WIDE)
    return [c for c in _ORDER if c in shown]


def _table(timeline: Timeline, objects: DemoObjects, width: int) -> Table:
    sample = timeline.latest()
    columns = _columns(width)
    table = Table(expand=False, pad_edge=False, header_style="bold")
    for column in columns:
        table.add_column(column, no_wrap=True,
                         justify="left" if column in ("priority", "zone", "lag vs thresholds") else "right")
    if sample is None:
        return table
    phase = scenario.phase_at(timeline.phases, sample.t)
    windows = objects.windows()
    for priority in PRIORITIES:
        zone = sample.zones[priority]
        totals = sample.counts[priority]
        window = windows[priority]
        cells: dict[str, RenderableType] = {
            "priority": priority,
            "lag vs thresholds": lag_bar(sample.lag, window, objects.shed_level(priority)),
            "green/yellow/red": f"{window.green:g}/{window.yellow:g}/{window.red:g}",
            "zone": Text(zone, style=ZONE_STYLE.get(zone, "")),
            "delay": f"{sample.delays[priority]:,} ms",
            "shed": Text("SHED", style="bold red") if sample.shed[priority] else Text("-", style="dim"),
            "offered/s": f"{phase.offered()[priority]:.0f}",
            "sent/s": f"{timeline.rate(priority, 'sent'):.0f}",
            "delayed/s": f"{timeline.rate(priority, 'delayed'):.0f}",
            "shed/s": f"{timeline.rate(priority, 'shed'):.0f}",
            "rejected/s": f"{timeline.rate(priority, 'rejected'):.0f}",
            "total sent/shed/rejected": f"{totals.sent:,} / {totals.shed:,} / {totals.rejected:,}",
        }
        table.add_row(*(cells[c] for c in columns))
    return table


def _circuit_text(timeline: Timeline, objects: DemoObjects) -> Text:
    sample = timeline.latest()
    state = sample.circuit if sample is not None else "none"
    text = Text(f"circuit {objects.circuit.metadata.name}: ")
    text.append(f" {state.upper()} ", style=CIRCUIT_STYLE.get(state, ""))
    if sample is not None and sample.circuit_epoch is not None:
        text.append(f"  epoch {sample.circuit_epoch}", style="dim")
    text.append(f"   consumer {timeline.consumed_rate():.0f}/s of capacity {timeline.capacity:.0f}/s")
    if timeline.transitions:
        last = timeline.transitions[-1]
        text.append(f"   last change t={last.t:.1f}s {last.old} -> {last.new}", style="dim")
    return text


def render(timeline: Timeline, objects: DemoObjects, width: int = 200) -> RenderableType:
    """The whole dashboard, with as many table columns as `width` (the terminal's) allows."""
    sample = timeline.latest()
    events = Text()
    for i, (t, message) in enumerate(timeline.events[-6:]):
        events.append(("\n" if i else "") + f"{t:6.1f}s  ", style="dim")
        events.append(message[: max(40, width - 20)])
    body = Group(
        _phase_text(timeline, sample.t if sample else 0.0),
        _lag_text(timeline, objects),
        _table(timeline, objects, width),
        _circuit_text(timeline, objects),
        Panel(events, title="operator events", title_align="left", border_style="dim"),
    )
    return Panel(body, title="[bold]sluice demo[/] - closed loop on embedded Kafka", border_style="blue")


def progress_line(timeline: Timeline) -> str:
    """One line: the state a person needs to follow the loop without a terminal UI."""
    sample = timeline.latest()
    if sample is None:
        return ""
    lag = "unknown" if sample.lag is None else f"{sample.lag:,.0f}"
    parts = [f"t={sample.t:5.1f}s {sample.phase:<8} lag {lag:>7} ({sample.source or '-'}, epoch {sample.epoch})"]
    for priority in PRIORITIES:
        parts.append(_priority_brief(timeline, priority))
    parts.append(f"consumer {timeline.consumed_rate():.0f}/s")
    if timeline.control == "drain":
        if sample.operator_mu is not None:
            parts.append(f"mu-hat {sample.operator_mu:.0f}/s R {sample.allowed or 0.0:.0f}/s")
        elif sample.degraded:
            parts.append(f"DrainTime degraded: {sample.degraded}")
    parts.append(f"circuit {sample.circuit}")
    return " | ".join(parts)


def _priority_brief(timeline: Timeline, priority: Priority) -> str:
    sample = timeline.latest()
    assert sample is not None
    shed = " SHED" if sample.shed[priority] else ""
    text = (f"{priority} {sample.zones[priority]} {sample.delays[priority]}ms{shed} "
            f"sent {timeline.rate(priority, 'sent'):.0f}/s")
    admit = sample.admit.get(priority)
    if admit is not None:
        text += f" admit {admit:.2f}"
    shed_rate, rejected = timeline.rate(priority, "shed"), timeline.rate(priority, "rejected")
    if shed_rate:
        text += f" shed {shed_rate:.0f}/s"
    if rejected:
        text += f" rejected {rejected:.0f}/s"
    return text


class LiveView:
    def __init__(self, live: Live, objects: DemoObjects) -> None:
        self.live = live
        self.objects = objects

    def update(self, timeline: Timeline) -> None:
        self.live.update(render(timeline, self.objects, self.live.console.width), refresh=True)


class LineView:
    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.last_second = -1

    def update(self, timeline: Timeline) -> None:
        sample = timeline.latest()
        if sample is None or int(sample.t) == self.last_second:
            return
        self.last_second = int(sample.t)
        self.stream.write(progress_line(timeline) + "\n")
        self.stream.flush()


@contextlib.contextmanager
def live_view(timeline: Timeline, objects: DemoObjects) -> Iterator[LiveView]:
    console = Console(file=sys.stdout)
    with Live(render(timeline, objects, console.width), console=console, auto_refresh=False, redirect_stderr=False,
              transient=False) as live:
        yield LiveView(live, objects)


@contextlib.contextmanager
def line_view(timeline: Timeline, objects: DemoObjects) -> Iterator[LineView]:
    yield LineView(sys.stdout)
