"""`kubectl sluice`: the state of every policy and circuit at a glance, and why a policy decided what it did.

Installed as ``kubectl-sluice`` (kubectl runs plugins named ``kubectl-*`` found on PATH); needs the
``operator`` extra (the kubernetes client). It reads with the user's kubeconfig, like kubectl:
``--kubeconfig``, then ``$KUBECONFIG``, then ``~/.kube/config``; ``--context`` picks a context.

    kubectl sluice status [-n NS | -A] [-o table|json]
    kubectl sluice explain bpp/NAME [-n NS] [-o text|json]

The JSON shapes (``--output json``) are stable: fields are only ever added.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sluice.decision import PRIORITIES
from sluice_operator.api.policy import BackpressurePolicySpec
from sluice_operator.engine.params import compile_policy
from sluice_operator.engine.zones import GREEN, RED, YELLOW, ZONE_INDEX, ZONES, raw_zone, zone_values

GROUP, VERSION = "sluice.dev", "v1alpha1"
#: Conditions whose True is the bad news.
NEGATIVE = frozenset({"Conflict", "PartialData"})


# -- reading -----------------------------------------------------------------------------------------


class Cluster:
    """The two lists and one get the plugin needs, through the kubernetes client and the user's kubeconfig."""

    def __init__(self, kubeconfig: str | None, context: str | None) -> None:
        try:
            config: Any = importlib.import_module("kubernetes.config")
            client: Any = importlib.import_module("kubernetes.client")
        except ImportError as error:  # pragma: no cover - the operator extra is missing
            raise SystemExit("kubectl sluice needs the operator extra: pip install 'sluice-backpressure[operator]'"
                             ) from error
        config.load_kube_config(config_file=kubeconfig, context=context)
        _, active = config.list_kube_config_contexts(config_file=kubeconfig)
        chosen = active
        if context:
            contexts, _ = config.list_kube_config_contexts(config_file=kubeconfig)
            chosen = next((c for c in contexts if c["name"] == context), active)
        self.default_namespace = str((chosen or {}).get("context", {}).get("namespace") or "default")
        self.api: Any = client.CustomObjectsApi()

    def policies(self, namespace: str | None) -> list[dict[str, Any]]:
        if namespace is None:
            answer = self.api.list_cluster_custom_object(GROUP, VERSION, "backpressurepolicies")
        else:
            answer = self.api.list_namespaced_custom_object(GROUP, VERSION, namespace, "backpressurepolicies")
        items: list[dict[str, Any]] = answer.get("items", [])
        return sorted(items, key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"]))

    def circuits(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.api.list_cluster_custom_object(GROUP, VERSION, "circuitbreakers").get(
            "items", [])
        return sorted(items, key=lambda o: o["metadata"]["name"])

    def policy(self, namespace: str, name: str) -> dict[str, Any]:
        obj: dict[str, Any] = self.api.get_namespaced_custom_object(GROUP, VERSION, namespace,
                                                                    "backpressurepolicies", name)
        return obj


# -- status ------------------------------------------------------------------------------------------


def _parse_time(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None


def _age(value: Any, now: datetime) -> float | None:
    when = _parse_time(value)
    return None if when is None else round(max(0.0, (now - when).total_seconds()), 1)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m"
    if s < 172800:
        return f"{s // 3600}h"
    return f"{s // 86400}d"


def problems(conditions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Conditions that are not good news: not True, or True for Conflict/PartialData."""
    return [
        {k: c.get(k) for k in ("type", "status", "reason", "message")}
        for c in conditions
        if (c.get("status") == "True") == (c.get("type") in NEGATIVE)
    ]


def policy_summary(obj: dict[str, Any], now: datetime) -> dict[str, Any]:
    status = obj.get("status") or {}
    priorities = status.get("priorities") or {}
    zones = {
        p: {
            "zone": (priorities.get(p) or {}).get("zone"),
            "delayMs": (priorities.get(p) or {}).get("delayMs"),
            "shed": (priorities.get(p) or {}).get("shed"),
        }
        for p in PRIORITIES
    }
    return {
        "namespace": obj["metadata"].get("namespace"),
        "name": obj["metadata"]["name"],
        "zones": zones,
        "backlog": status.get("backlog"),
        "smoothedBacklog": status.get("smoothedBacklog"),
        "source": status.get("source"),
        "enforcement": status.get("enforcement"),
        "epoch": status.get("epoch"),
        "decisionAgeSeconds": _age(status.get("publishedAt"), now),
        "lastEvaluatedSeconds": _age(status.get("lastEvaluated"), now),
        "compliance": status.get("compliance"),
        "conditions": problems(status.get("conditions") or []),
    }


def circuit_summary(obj: dict[str, Any], now: datetime) -> dict[str, Any]:
    status = obj.get("status") or {}
    transitions = status.get("lastTransitions") or []
    last = transitions[-1] if transitions else {}
    return {
        "name": obj["metadata"]["name"],
        "state": status.get("state"),
        "since": status.get("since"),
        "sinceSeconds": _age(status.get("since"), now),
        "reason": last.get("reason") if isinstance(last, dict) else None,
        "conditions": problems(status.get("conditions") or []),
    }


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("   ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows)


def _zone_cell(z: dict[str, Any]) -> str:
    if z.get("zone") is None:
        return "-"
    text = f"{z['zone']}/{z.get('delayMs', 0)}ms"
    return text + ("/shed" if z.get("shed") else "")


def _num(value: Any) -> str:
    return "-" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def render_status(report: dict[str, Any]) -> str:
    rows = [["NAMESPACE", "NAME", "HIGH", "MEDIUM", "LOW", "BACKLOG", "EPOCH", "DECISION-AGE", "COMPLIANCE",
             "CONDITIONS"]]
    for p in report["policies"]:
        compliance = p["compliance"] or {}
        conditions = ",".join(f"{c['type']}={c['status']}({c.get('reason') or ''})" for c in p["conditions"])
        rows.append([p["namespace"] or "", p["name"], *(_zone_cell(p["zones"][q]) for q in PRIORITIES),
                     _num(p["backlog"]), _num(p["epoch"]), _duration(p["decisionAgeSeconds"]),
                     compliance.get("summary") or "-", conditions or "-"])
    out = [_table(rows) if len(rows) > 1 else "No BackpressurePolicies found."]
    circuits = [["CIRCUIT", "STATE", "SINCE", "REASON"]]
    for c in report["circuits"]:
        circuits.append([c["name"], c["state"] or "-", _duration(c["sinceSeconds"]), c["reason"] or "-"])
    out.append(_table(circuits) if len(circuits) > 1 else "No CircuitBreakers found.")
    return "\n\n".join(out) + "\n"


# -- explain -----------------------------------------------------------------------------------------


def explain(obj: dict[str, Any], now: datetime) -> dict[str, Any]:
    """The current decision of a policy in words, with the numbers of every formula."""
    spec = BackpressurePolicySpec.model_validate(obj.get("spec") or {})
    params = compile_policy(spec)
    status = obj.get("status") or {}
    backlog = status.get("smoothedBacklog", status.get("backlog"))
    source = status.get("source")
    published = status.get("priorities") or {}
    lines: list[str] = []
    meta = obj["metadata"]
    lines.append(f"BackpressurePolicy {meta.get('namespace')}/{meta['name']}: epoch {status.get('epoch', 0)}, "
                 f"source {source or 'none yet'}, enforcement {spec.enforcement}.")
    if status.get("backlog") is not None:
        smoothed = status.get("smoothedBacklog")
        lines.append(f"Backlog {status['backlog']:g}" + (
            f", smoothed to {smoothed:g} (EWMA alpha {spec.smoothing.alpha:g}); zones are decided on the smoothed "
            "value." if smoothed is not None and spec.smoothing.alpha < 1 else "."))
    priorities: dict[str, Any] = {}
    for pp in params.priorities:
        p = pp.priority
        entry = published.get(p) or {}
        zone = entry.get("zone", "green")
        out: dict[str, Any] = {"zone": zone, "delayMs": entry.get("delayMs", 0), "shed": entry.get("shed", False),
                               "since": entry.get("since"), "rawZone": None, "threshold": None, "formula": None,
                               "held": None}
        if source in ("fallback", "override") or backlog is None:
            out["threshold"] = f"not decided by the backlog (source {source})"
        else:
            b = float(backlog)
            raw = raw_zone(pp, b)
            out["rawZone"] = ZONES[raw]
            if raw == GREEN:
                out["threshold"] = f"backlog {b:g} <= green {pp.green:g}: green"
            elif raw == YELLOW:
                out["threshold"] = f"backlog {b:g} crossed green {pp.green:g} (<= yellow {pp.yellow:g}): yellow"
            else:
                out["threshold"] = f"backlog {b:g} crossed yellow {pp.yellow:g} (red at {pp.red:g}): red"
            held = ZONE_INDEX.get(zone, raw)
            ratio, delay, shed = zone_values(pp, held, b)
            if held == YELLOW:
                out["formula"] = (
                    f"r = (backlog - green) / (yellow - green) = ({b:g} - {pp.green:g}) / ({pp.yellow:g} - "
                    f"{pp.green:g}) = {ratio:.3f}; delay = yellow.minMs + (yellow.maxMs - yellow.minMs) * r = "
                    f"{pp.yellow_min_ms:g} + {pp.yellow_span_ms:g} * {ratio:.3f} = {delay} ms")
            elif held == RED:
                scaled = (pp.red_min_ms + pp.red_span_ms * ratio) * pp.scale
                out["formula"] = (
                    f"r = min(1, (backlog - yellow) / (red - yellow)) = min(1, ({b:g} - {pp.yellow:g}) / "
                    f"({pp.red:g} - {pp.yellow:g})) = {ratio:.3f}; delay = (red.minMs + (red.maxMs - red.minMs) * r)"
                    f" * priorityScale.{p} = ({pp.red_min_ms:g} + {pp.red_span_ms:g} * {ratio:.3f}) * {pp.scale:g}"
                    f" = {scaled:.0f} ms" + (f", floored at yellow.maxMs {pp.red_floor_ms:g}"
                                            if scaled < pp.red_floor_ms else "") + f" -> {delay} ms")
                if pp.sheds:
                    out["formula"] += (f"; shed because r {ratio:.3f} > redRatioAbove {pp.shed_ratio_above:g}"
                                       if shed else f"; not shed: r {ratio:.3f} <= redRatioAbove "
                                       f"{pp.shed_ratio_above:g}")
            else:
                out["formula"] = "green: no delay"
            if held > raw:
                exit_at = pp.yellow_exit if held == RED else pp.green_exit
                threshold = pp.yellow if held == RED else pp.green
                text = (f"held in {zone} by hysteresis: it leaves only at backlog <= {exit_at:g} "
                        f"({ZONES[held - 1]} threshold {threshold:g} * (1 - margin {spec.hysteresis.margin:g}))")
                since = _parse_time(entry.get("since"))
                if since is not None:
                    dwelt = (now - since).total_seconds()
                    if dwelt < params.min_dwell_seconds:
                        text += (f", and not before minDwellSeconds {params.min_dwell_seconds:g} "
                                 f"({params.min_dwell_seconds - dwelt:.0f}s more)")
                out["held"] = text
        if spec.enforcement == "Observe":
            out["observe"] = ("Observe: producers get no delay and nothing is shed; the numbers are what Enforce "
                              "would do")
        priorities[p] = out
        lines.append(f"{p}: {zone}, {out['delayMs']} ms{', shed' if out['shed'] else ''}. {out['threshold']}.")
        if out["formula"]:
            lines.append(f"  why this delay: {out['formula']}.")
        if out["held"]:
            lines.append(f"  why this zone: {out['held']}.")
    fb = spec.fallback
    conservative = {p: getattr(fb.conservative, p) for p in PRIORITIES}
    delays = ", ".join(f"{p} {ms} ms" for p, ms in conservative.items())
    if fb.mode == "LastKnown":
        text = (f"if the signal is lost: LastKnown keeps the last decision for staleAfterSeconds "
                f"{fb.stale_after_seconds:g} after the last good reading ({status.get('lastGoodAt') or 'none yet'}), "
                f"then Conservative: every priority yellow with {delays}, no shedding")
    elif fb.mode == "Conservative":
        text = f"if the signal is lost: Conservative: every priority yellow with {delays}, no shedding"
    else:
        text = "if the signal is lost: Permissive: every priority green, no delay"
    lines.append(text[0].upper() + text[1:] + ".")
    if source == "fallback":
        lines.append("The fallback is deciding right now: the signal is unavailable (see the SignalAvailable "
                     "condition).")
    if spec.override.mode != "None":
        lines.append(f"Override {spec.override.mode} until {spec.override.until or 'removed'}: "
                     f"{spec.override.reason or 'no reason given'}.")
    if spec.circuit_breaker_ref:
        lines.append(f"The decision embeds circuit {spec.circuit_breaker_ref}: while it is open, producers fail fast.")
    for c in problems(status.get("conditions") or []):
        lines.append(f"Condition {c['type']}={c['status']} ({c.get('reason')}): {c.get('message')}.")
    return {
        "namespace": meta.get("namespace"), "name": meta["name"], "epoch": status.get("epoch"), "source": source,
        "enforcement": spec.enforcement, "backlog": status.get("backlog"),
        "smoothedBacklog": status.get("smoothedBacklog"), "priorities": priorities,
        "fallback": {"mode": fb.mode, "staleAfterSeconds": fb.stale_after_seconds, "conservative": conservative,
                     "lastGoodAt": status.get("lastGoodAt"), "text": text},
        "lines": lines,
    }


# -- command line ------------------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="kubectl sluice", description=__doc__.split("\n\n")[0])
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, then ~/.kube/config)")
    common.add_argument("--context", help="kubeconfig context (default: the current one)")
    common.add_argument("-n", "--namespace", help="namespace (default: the context's)")
    sub = top.add_subparsers(dest="command", required=True)
    status = sub.add_parser("status", parents=[common], help="every policy and circuit in one table")
    status.add_argument("-A", "--all-namespaces", action="store_true", help="policies of every namespace")
    status.add_argument("-o", "--output", choices=("table", "json"), default="table")
    exp = sub.add_parser("explain", parents=[common], help="why a policy decided what it did")
    exp.add_argument("target", help="bpp/NAME (or backpressurepolicy/NAME, or NAME)")
    exp.add_argument("-o", "--output", choices=("text", "json"), default="text")
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        cluster = Cluster(args.kubeconfig, args.context)
    except Exception as error:  # a missing or broken kubeconfig
        print(f"kubectl sluice: cannot load the kubeconfig: {error}", file=sys.stderr)
        return 1
    now = datetime.now(UTC)
    try:
        if args.command == "status":
            namespace = None if args.all_namespaces else (args.namespace or cluster.default_namespace)
            report = {"policies": [policy_summary(o, now) for o in cluster.policies(namespace)],
                      "circuits": [circuit_summary(o, now) for o in cluster.circuits()]}
            sys.stdout.write(json.dumps(report, indent=2) + "\n" if args.output == "json" else render_status(report))
            return 0
        kind, _, name = args.target.rpartition("/")
        if kind and kind.lower() not in ("bpp", "backpressurepolicy", "backpressurepolicies",
                                         "backpressurepolicies.sluice.dev"):
            print(f"kubectl sluice explain: only BackpressurePolicies (bpp/NAME), not {kind}", file=sys.stderr)
            return 2
        result = explain(cluster.policy(args.namespace or cluster.default_namespace, name), now)
        sys.stdout.write(json.dumps(result, indent=2) + "\n" if args.output == "json" else
                         "\n".join(result["lines"]) + "\n")
        return 0
    except Exception as error:
        status = getattr(error, "status", None)
        reason = getattr(error, "reason", None)
        if status is not None:
            print(f"kubectl sluice: the API server answered {status} {reason}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
