"""The README's "Try the operator against a real API server" block, run as written.

Substitutions, all visible here: the state directory `.cluster` becomes a temporary one (so a
developer's own `make cluster` is left alone), `http://localhost:9090` becomes the test's Prometheus,
and each `kubectl get` line's output is captured for the assertions.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from tests.support.control_plane import REPO_ROOT
from tests.support.prometheus import PrometheusServer

HEADING = "### Try the operator against a real API server (no Docker, no cluster)"


def readme_block() -> str:
    text = (REPO_ROOT / "README.md").read_text()
    section = text.split(HEADING, 1)[1]
    match = re.search(r"```bash\n(.*?)```", section, re.S)
    assert match, "the README section lost its bash block"
    return match.group(1)


def test_the_readme_real_api_server_block_works_as_written(prom: PrometheusServer, tmp_path: Path) -> None:
    prom.exporter.set("kafka_consumergroup_lag", 3000, {"consumergroup": "orders-consumer", "topic": "orders"})
    prom.wait_for_value('sum(kafka_consumergroup_lag{consumergroup="orders-consumer",topic=~"orders"})', 3000)
    block = readme_block()
    state = tmp_path / "cluster"
    script = block.replace("$PWD/.cluster", str(state)).replace(".cluster", str(state))
    script = script.replace("make cluster-down", f"make cluster-down CLUSTER_DIR={state}")
    script = script.replace("make cluster\n", f"make cluster CLUSTER_DIR={state}\n", 1)
    script = script.replace("http://localhost:9090", prom.url)
    outputs = {}
    lines = []
    for number, line in enumerate(script.splitlines()):
        if re.match(r"kubectl (-n \S+ )?get ", line):
            out = tmp_path / f"out-{number}.txt"
            outputs[line.split("#")[0].strip()] = out
            line = f"{line.split('#')[0].strip()} > {out}"
        lines.append(line)
    body = "\n".join(lines)
    cleanup = f"trap 'kill %1 2>/dev/null || true; make -s cluster-down CLUSTER_DIR={state} || true' EXIT"
    full = f"set -euo pipefail\n{cleanup}\n{body}\n"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_") and k != "KUBECONFIG"}
    result = subprocess.run(["bash", "-c", full], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    log = (REPO_ROOT / "operator.log")
    operator_log = log.read_text()[-3000:] if log.exists() else ""
    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}\n{operator_log}"
    log.unlink(missing_ok=True)

    bpp = outputs["kubectl -n orders get bpp"].read_text()
    header, row = bpp.splitlines()[:2]
    assert header.split() == ["NAME", "ZONE", "BACKLOG", "ENFORCEMENT", "COMPLIANCE", "AGE"], header
    assert "orders" in row and "3000" in row and "Enforce" in row and "red" in row, bpp
    cb = outputs["kubectl get cb"].read_text()
    assert "STATE" in cb and "SINCE" in cb and "forced-open" in cb, cb
    events = outputs["kubectl get events -n sluice-system"].read_text()
    assert "CircuitOpened" in events and "kafka-orders-brokers" in events, events
