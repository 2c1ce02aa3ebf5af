"""`sluice run` as users start it: a subprocess with a kubeconfig, settings from SLUICE_* variables."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from pathlib import Path

import aiohttp
import yaml

from tests.support.control_plane import OPERATOR_NAMESPACE, kubeconfig
from tests.support.k8s_fixtures import ClusterHandle
from tests.support.operator_harness import POLICIES, policy
from tests.support.prometheus import PrometheusServer

LEASES = "coordination.k8s.io/v1/leases"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _kubeconfig(path: Path, cluster: ClusterHandle) -> Path:
    """The chart ServiceAccount's kubeconfig (a tokenFile, as in a pod), pointed at the test's proxy."""
    config = kubeconfig(cluster.base_url, cluster.plane.ca_file, user="sluice",
                        token_file=cluster.identity.token_file, namespace=OPERATOR_NAMESPACE)
    del config["clusters"][0]["cluster"]["certificate-authority"]  # the proxy speaks plain HTTP
    path.write_text(yaml.safe_dump(config))
    return path


async def test_sluice_run_serves_health_publishes_and_stops_cleanly(
    cluster: ClusterHandle, prom: PrometheusServer, tmp_path: Path
) -> None:
    api, ns = cluster.api, cluster.namespace
    prom.exporter.set("test_lag", 3000, {"policy": "cli"})
    await prom.async_wait_for_value('sum(test_lag{policy="cli"})', 3000)
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
    env.update({
        "KUBECONFIG": str(_kubeconfig(tmp_path / "kubeconfig", cluster)),
        "SLUICE_PROMETHEUS_URL": prom.url,
        "SLUICE_HTTP_PORT": str(port),
        "SLUICE_LEASE_NAMESPACE": OPERATOR_NAMESPACE,
        "SLUICE_LEASE_NAME": cluster.lease_name,
        "SLUICE_LOG_FORMAT": "json",
    })
    log = (tmp_path / "operator.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sluice_operator.cli", "run", env=env, stdout=log, stderr=log,
    )
    try:
        api.create_object(POLICIES, policy("cli", ns))
        cm = await api.wait_for_object("configmaps", "sluice-cli", ns, timeout_s=30)
        assert json.loads(cm["data"]["decision.json"])["priorities"]["medium"]["zone"] == "red"
        zone_metric = f'sluice_policy_zone{{namespace="{ns}",policy="cli",priority="medium"}} 2.0'
        async with aiohttp.ClientSession() as session:
            for path, expected in (("/healthz", "ok"), ("/readyz", "ready (leader)"), ("/metrics", zone_metric)):
                for _ in range(50):  # the cycle finishes its metrics just after the ConfigMap write
                    async with session.get(f"http://127.0.0.1:{port}{path}") as response:
                        assert response.status == 200, path
                        if expected in await response.text():
                            break
                    await asyncio.sleep(0.1)
                else:
                    raise AssertionError(f"{path} never showed {expected!r}")
        lease = api.get_object(LEASES, cluster.lease_name, OPERATOR_NAMESPACE)
        assert lease is not None and lease["spec"]["holderIdentity"]
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(proc.wait(), timeout=30)
        log.close()
    text = (tmp_path / "operator.log").read_text()
    assert code == 0, text[-2000:]
    lease = api.get_object(LEASES, cluster.lease_name, OPERATOR_NAMESPACE)
    assert lease is not None and lease["spec"]["holderIdentity"] == "", "a clean stop hands the Lease over"
    published = [json.loads(line) for line in text.splitlines() if '"published epoch' in line]
    assert published and published[0]["namespace"] == ns and published[0]["object"] == "cli"
    users = {r.user_agent for r in cluster.proxy.recorded()}
    assert users and all(r.status != 401 and r.status != 403 for r in cluster.proxy.recorded()), users
