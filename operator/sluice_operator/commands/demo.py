"""`sluice demo`: the closed loop on this machine, then a chart, a summary and a verdict.

Exit 0 when the loop behaved (surge contained, circuit opened by the outage and closed after it,
high priority never shed), 1 otherwise, with the reason printed.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from sluice.testing.mockcluster import MockClusterError
from sluice_operator.logs import TextFormatter

MIN_DURATION = 20.0


def _log_to(path: Path) -> None:
    """Everything (operator, SDK, librdkafka via the clients' loggers) goes to the log file, not the screen."""
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)


def run(args: argparse.Namespace) -> int:
    from sluice_operator.demo.policies import DemoSetupError
    from sluice_operator.demo.report import judge, summary, write_summary
    from sluice_operator.demo.runner import DemoConfig, ViewFactory, process_age, run_demo, stderr_to
    from sluice_operator.demo.view import line_view, live_view

    duration = float(args.duration)
    if duration < MIN_DURATION:
        print(f"sluice demo: --duration must be at least {MIN_DURATION:.0f} s", file=sys.stderr)
        return 2
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    log_path = out / "demo.log"
    log_path.write_text("", encoding="utf-8")
    _log_to(log_path)
    live = not args.no_live and sys.stdout.isatty()
    print(f"sluice demo: {duration:.0f} s closed loop - embedded Kafka (librdkafka mock cluster), producers at "
          "three priorities, a consumer group of fixed capacity, the operator in local mode.")
    if args.control == "drain":
        print("  control: DrainTime - the operator admits a rate per priority (admitRatio), not per-message delays")
    print(f"  scenario: steady load, a surge of 3x the consumer's capacity, a broker outage, recovery; "
          f"report in {out}/ (log: {log_path})", flush=True)
    started = time.monotonic() - process_age()
    factory: ViewFactory = live_view if live else line_view
    try:
        with stderr_to(log_path):
            result = run_demo(DemoConfig(duration=duration, control=args.control), factory, started=started)
    except (DemoSetupError, MockClusterError) as error:
        print(f"sluice demo: cannot run: {error}", file=sys.stderr)
        return 1
    verdict = judge(result)
    wall = time.monotonic() - started
    data = summary(result, verdict, duration=duration, wall_seconds=wall)
    write_summary(out / "summary.json", data)
    try:
        from sluice_operator.demo.plot import draw

        draw(result, verdict, out / "timeline.png")
    except ImportError as error:  # matplotlib is part of the [demo] extra
        print(f"sluice demo: no chart ({error}); install sluice-backpressure[demo]", file=sys.stderr)
    total = time.monotonic() - started
    print()
    print(("LOOP BEHAVED: " if verdict.ok else "LOOP DID NOT BEHAVE: ") + verdict.text)
    for reason in verdict.reasons:
        print(f"  - {reason}")
    print(f"report: {out / 'timeline.png'}, {out / 'summary.json'} ({total:.0f} s in all)")
    return 0 if verdict.ok else 1
