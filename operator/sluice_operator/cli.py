"""`sluice`: run the operator, validate and decide offline, generate CRDs, simulate, demo.

Sub-command modules are imported lazily, so `sluice validate` never pays for Kopf or Kafka imports.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from pathlib import Path


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sluice",
        description="Sluice: backpressure and circuit breaking for Kafka producers, driven by consumer lag.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the operator (cluster mode, or --local with a policy directory)")
    run.add_argument("--local", action="store_true", help="no Kubernetes: read YAML from --policies")
    run.add_argument("--policies", type=Path, help="local mode: directory of policy/circuit YAML")
    run.add_argument("--decisions-dir", type=Path, help="local mode: where decision documents go")
    run.add_argument("--prometheus", metavar="URL", help="Prometheus base URL (overrides SLUICE_PROMETHEUS_URL)")
    run.add_argument("--namespace", action="append", default=None, help="watch only this namespace (repeat)")
    run.add_argument("--once", action="store_true", help="local mode: one evaluation cycle, then exit")
    run.add_argument("--verbose", "-v", action="store_true", help="debug logging")

    validate = sub.add_parser("validate", help="check BackpressurePolicy / CircuitBreaker YAML files")
    validate.add_argument("files", nargs="+", type=Path, metavar="FILE")

    decide = sub.add_parser("decide", help="print the decision the engine makes for a policy at a backlog")
    decide.add_argument("file", type=Path, metavar="FILE")
    decide.add_argument("--backlog", required=True, type=float, help="backlog (messages)")
    decide.add_argument(
        "--previous-zone",
        action="append",
        default=[],
        metavar="PRIORITY=ZONE",
        help=(
            "the zone PRIORITY has been in for longer than hysteresis.minDwellSeconds (so only the margin "
            "can hold it there), e.g. medium=red; repeat for several priorities; unnamed ones start fresh"
        ),
    )
    decide.add_argument("--now", help="evaluation time, ISO 8601 (default: now)")
    decide.add_argument("--drain-rate", type=float, metavar="MSGS_PER_S",
                        help="control.mode DrainTime: the consumer's drain rate mu")
    decide.add_argument("--offered", metavar="HIGH,MEDIUM,LOW",
                        help="control.mode DrainTime: offered msgs/s per priority, e.g. 200,600,800")

    crds = sub.add_parser("crds", help="print the CustomResourceDefinitions, or write them to --out")
    crds.add_argument("--out", type=Path, metavar="DIR")

    simulate = sub.add_parser("simulate", help="deterministic closed-loop simulation of a policy")
    simulate.add_argument("policy", type=Path, metavar="POLICY.yaml")
    simulate.add_argument("--scenario", required=True, type=Path, metavar="SCENARIO.yaml")
    simulate.add_argument("--out", type=Path, default=Path("sim-report"), metavar="DIR")
    simulate.add_argument(
        "--mode",
        choices=["none", "origin", "zones", "drain", "sluice"],
        default=None,
        help="none | origin | zones (the policy in Zones mode; 'sluice' is its old name) | drain (DrainTime); "
        "default: the policy's own spec.control.mode",
    )
    simulate.add_argument("--seed", type=int, default=None)

    demo = sub.add_parser("demo", help="closed-loop demo on this machine (embedded Kafka, no cluster)")
    demo.add_argument("--duration", type=float, default=90.0, help="seconds (default 90)")
    demo.add_argument("--out", type=Path, default=Path("demo-report"), metavar="DIR")
    demo.add_argument("--no-live", action="store_true", help="plain progress lines instead of the live view")
    demo.add_argument(
        "--control",
        choices=["zones", "drain"],
        default="zones",
        help="zones (backlog zones, per-message delays; the default) or drain (DrainTime: admitRatio per priority)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `sluice` console script."""
    args = _parser().parse_args(argv)
    module = importlib.import_module(f"sluice_operator.commands.{args.command}")
    try:
        code: int = module.run(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
