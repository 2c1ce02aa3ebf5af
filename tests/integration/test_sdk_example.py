"""examples/producer.py runs as documented: a real process, a real (mock) cluster, a decisions directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from sluice.decision import to_json
from sluice.testing import MockKafkaCluster
from tests.support.sdk_helpers import consume_all, headers_of, kubelet_write, make_decision

REPO = Path(__file__).resolve().parents[2]


def test_example_producer_obeys_a_directory_of_decisions(tmp_path: Path) -> None:
    volume = tmp_path / "decisions"
    kubelet_write(volume, {"decision.json": to_json(make_decision(shed=("low",), zone="red"))})
    with MockKafkaCluster(num_brokers=1, topics={"orders": 1, "orders.dlq": 1}) as cluster:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "sdk"), os.environ.get("PYTHONPATH", "")])}
        run = subprocess.run(
            [sys.executable, str(REPO / "examples" / "producer.py"), "--bootstrap", cluster.bootstrap_servers,
             "--decisions-dir", str(volume), "--topic", "orders", "--messages", "20", "--rate", "0",
             "--priority", "low"],
            capture_output=True, text=True, timeout=60, env=env, check=False,
        )
        assert run.returncode == 0, run.stderr
        summary = json.loads(run.stdout.strip().splitlines()[-1])
        assert summary == {"produced": 20, "rejected": 0, "delivered": 0, "dead_lettered": 20, "failed": 0,
                           "unflushed": 0}
        letters = consume_all(cluster.bootstrap_servers, "orders.dlq")
        assert len(letters) == 20 and all(headers_of(m)["sluice.reason"] == "shed" for m in letters)
