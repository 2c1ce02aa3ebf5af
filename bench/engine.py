"""Benchmark of the decision engine: 10,000 policies, several rounds, time and memory per policy.

Run: ``.venv/bin/python bench/engine.py [--policies N] [--rounds R] [--seed S]``.
Prints a table, compares with the targets (<= 20 us per evaluation on a 2-core machine, <= 2 KB of
engine memory held per policy) and writes ``bench/.cache/engine.json`` and ``engine.md``; exits 1
when a target is not met.

What is measured:

* time: CPU time of this process per evaluation (judged against the target: other work on a
  shared machine inflates wall time, not CPU time) and wall time, for
  `evaluate(spec, backlog, now, memory)` with the spec object (so the compiled-params cache
  lookup is included), backlogs following a random walk per policy with 2 % unavailable readings,
  time advancing by the polling interval each round. The first round, which compiles every spec,
  is reported apart.
* memory: tracemalloc over one round that keeps only the new `PolicyMemory` of every policy
  (what the operator holds between evaluations); `peak` also counts the transient outcomes.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import statistics
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

from sluice_operator.api.policy import BackpressurePolicySpec
from sluice_operator.engine import PolicyMemory, compile_policy, evaluate

TARGET_US = 20.0
TARGET_BYTES = 2048
OUT = Path(__file__).parent / ".cache" / "engine.json"
OUT_MD = OUT.with_suffix(".md")
T0 = 1_700_000_000.0


def make_specs(n: int, rng: random.Random) -> list[BackpressurePolicySpec]:
    """`n` policies with varied thresholds, delays and modes."""
    specs = []
    for i in range(n):
        base = rng.choice([10, 100, 1000, 10_000])
        thresholds = {}
        for p, factor in (("high", 4.0), ("medium", 2.0), ("low", 1.0)):
            green = base * factor * rng.uniform(0.5, 1.5)
            yellow = green * rng.uniform(2, 6)
            thresholds[p] = {"green": green, "yellow": yellow, "red": yellow * rng.uniform(1.5, 3)}
        fields: dict[str, Any] = {
            "source": {"prometheus": {"query": f'sum(kafka_consumergroup_lag{{group="g{i}"}})'}},
            "thresholds": thresholds,
            "hysteresis": {"margin": rng.choice([0.0, 0.1, 0.2]), "minDwellSeconds": rng.choice([0, 15, 30])},
            "enforcement": "Observe" if i % 10 == 0 else "Enforce",
        }
        if i % 4 == 0:
            fields["smoothing"] = {"alpha": 0.5, "maxRelaxRatioPerInterval": 0.3}
        specs.append(BackpressurePolicySpec.model_validate(fields))
    return specs


def walk(rng: random.Random, specs: list[BackpressurePolicySpec], rounds: int) -> list[list[float | None]]:
    """Per round, per policy: a backlog wandering across that policy's zones, sometimes missing."""
    series: list[list[float | None]] = []
    levels = [s.thresholds.medium.yellow for s in specs]
    for _ in range(rounds):
        row: list[float | None] = []
        for j, spec in enumerate(specs):
            levels[j] = max(0.0, levels[j] * rng.uniform(0.6, 1.5) + rng.uniform(-1, 1) * spec.thresholds.low.green)
            row.append(None if rng.random() < 0.02 else levels[j])
        series.append(row)
    return series


def run_round(
    specs: list[BackpressurePolicySpec], backlogs: list[float | None], now: float, memories: list[PolicyMemory | None]
) -> tuple[list[PolicyMemory | None], float, float]:
    """One evaluation per policy; returns the new memories, elapsed wall and CPU seconds."""
    new: list[PolicyMemory | None] = [None] * len(specs)
    start, cpu = time.perf_counter(), time.process_time()
    for j, spec in enumerate(specs):
        new[j] = evaluate(spec, backlogs[j], now, memories[j]).memory
    return new, time.perf_counter() - start, time.process_time() - cpu


def per_call_sample(
    specs: list[BackpressurePolicySpec], backlogs: list[float | None], now: float, memories: list[PolicyMemory | None]
) -> list[float]:
    """Per-evaluation times in microseconds (includes ~0.1 us of timer overhead)."""
    out = []
    clock = time.perf_counter_ns
    for j, spec in enumerate(specs):
        start = clock()
        evaluate(spec, backlogs[j], now, memories[j])
        out.append((clock() - start) / 1000)
    return out


def measure_memory(
    specs: list[BackpressurePolicySpec], backlogs: list[float | None], now: float, memories: list[PolicyMemory | None]
) -> tuple[float, float]:
    """(bytes held per policy, peak bytes per policy) of one round's new memories."""
    gc.collect()
    tracemalloc.start()
    before, _ = tracemalloc.get_traced_memory()
    tracemalloc.reset_peak()
    held, _, _ = run_round(specs, backlogs, now, memories)
    gc.collect()
    current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    n = len(specs)
    result = ((current - before) / n, (peak - before) / n)
    del held
    return result


def params_bytes(specs: list[BackpressurePolicySpec]) -> float:
    """Bytes per policy of the compiled parameters (cached once per spec, not per evaluation)."""
    fresh = [s.model_copy() for s in specs[:1000]]
    gc.collect()
    tracemalloc.start()
    before, _ = tracemalloc.get_traced_memory()
    for s in fresh:
        compile_policy(s)
    current, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return (current - before) / len(fresh)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--policies", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)

    build_start = time.perf_counter()
    specs = make_specs(args.policies, rng)
    build_s = time.perf_counter() - build_start
    series = walk(rng, specs, args.rounds + 2)
    memories: list[PolicyMemory | None] = [None] * len(specs)

    memories, first_s, _ = run_round(specs, series[0], T0, memories)  # compiles every spec
    round_s: list[float] = []
    round_cpu: list[float] = []
    full_gc_before = gc.get_stats()[2]["collections"]
    for r in range(1, args.rounds + 1):
        memories, elapsed, cpu = run_round(specs, series[r], T0 + 5 * r, memories)
        round_s.append(elapsed)
        round_cpu.append(cpu)
    full_gcs = gc.get_stats()[2]["collections"] - full_gc_before
    sample = per_call_sample(specs, series[-1], T0 + 5 * (args.rounds + 1), memories)
    held, peak = measure_memory(specs, series[-1], T0 + 5 * (args.rounds + 1), memories)
    compiled = params_bytes(specs)

    n = len(specs)
    evals = n * len(round_s)
    mean_us = sum(round_s) / evals * 1e6
    cpu_us = sum(round_cpu) / evals * 1e6
    best_us = min(round_s) / n * 1e6
    quantiles = statistics.quantiles(sample, n=100)
    result = {
        "policies": n,
        "rounds": len(round_s),
        "evaluations": evals,
        "us_per_evaluation_mean": round(mean_us, 2),
        "cpu_us_per_evaluation_mean": round(cpu_us, 2),
        "us_per_evaluation_best_round": round(best_us, 2),
        "us_per_evaluation_p50": round(quantiles[49], 2),
        "us_per_evaluation_p99": round(quantiles[98], 2),
        "us_per_evaluation_first_round_with_compile": round(first_s / n * 1e6, 2),
        "memory_bytes_held_per_policy": round(held, 1),
        "memory_bytes_peak_per_policy_during_round": round(peak, 1),
        "compiled_params_bytes_per_policy": round(compiled, 1),
        "us_per_round": [round(x / n * 1e6, 2) for x in round_s],
        "full_gc_collections_during_timed_rounds": full_gcs,
        "spec_build_seconds": round(build_s, 2),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "targets": {"us_per_evaluation": TARGET_US, "memory_bytes_held_per_policy": TARGET_BYTES},
        "met": {
            "us_per_evaluation": cpu_us <= TARGET_US,
            "memory_bytes_held_per_policy": held <= TARGET_BYTES,
        },
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2) + "\n")

    def verdict(ok: bool) -> str:
        return "met" if ok else "NOT MET"

    rows = [
        ("policies x rounds", f"{n} x {len(round_s)}", ""),
        ("CPU us / evaluation (mean)", f"{cpu_us:.2f}", f"<= {TARGET_US:g}: {verdict(cpu_us <= TARGET_US)}"),
        ("wall us / evaluation (mean)", f"{mean_us:.2f}", f"{verdict(mean_us <= TARGET_US)} (wall clock)"),
        ("wall us / evaluation (best round)", f"{best_us:.2f}", ""),
        ("wall us / evaluation (p50 / p99)", f"{quantiles[49]:.2f} / {quantiles[98]:.2f}", ""),
        ("wall us / evaluation (first round, compiles)", f"{first_s / n * 1e6:.2f}", ""),
        ("bytes held / policy (memory)", f"{held:.0f}", f"<= {TARGET_BYTES}: {verdict(held <= TARGET_BYTES)}"),
        ("bytes peak / policy (during a round)", f"{peak:.0f}", ""),
        ("bytes / policy (compiled params, once)", f"{compiled:.0f}", ""),
        ("full GC collections while timed", str(full_gcs), ""),
        ("machine load average (1 min)", f"{os.getloadavg()[0]:.2f}", "other work inflates the times"),
    ]
    width = max(len(r[0]) for r in rows)
    title = f"engine benchmark (python {result['python']}, {result['cpus']} cpus)"
    print(title)
    for label, value, note in rows:
        print(f"  {label:<{width}}  {value:>14}  {note}")
    table = ["| measure | value | target |", "|---|---:|---|"] + [f"| {a} | {b} | {c} |" for a, b, c in rows]
    OUT_MD.write_text(f"# {title}\n\n" + "\n".join(table) + "\n")
    print(f"wrote {OUT} and {OUT_MD.name}")
    return 0 if cpu_us <= TARGET_US and held <= TARGET_BYTES else 1


if __name__ == "__main__":
    sys.exit(main())
