"""The README's install, upgrade and uninstall sections, run as written with the real helm and kubectl.

One fresh control plane for the module (see conftest.py); the tests run in order on one installation:
install, PodSecurity, upgrades, CRD upgrade, GitOps, uninstall.

Substitutions, all visible in `INSTALL_REPLACE` and the hooks below:
* `settings.prometheusUrl` points at this test's Prometheus instead of `prometheus-operated.monitoring.svc`;
  `image.repository` stays as written (there are no nodes, so no image is ever pulled and no pod runs).
* Where the Deployment's pods would start, the operator runs on this machine instead, as the chart's
  ServiceAccount with a token from `kubectl create token sluice -n sluice-system`, and with the
  container environment the installed Deployment declares (read back from the API server).
* A helm upgrade that changes the pod template is followed by a restart of that operator: the rollout
  Kubernetes would do.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.install.shell import OutOfClusterOperator, Shell, poll, readme_commands, server_warnings
from tests.support.control_plane import CRD_DIR, REPO_ROOT, ControlPlane
from tests.support.prometheus import PrometheusServer

INSTALL = "## Install on a cluster with Helm"
UPGRADE = "### Upgrading, and the CRDs"
UNINSTALL = "### Uninstalling, and the order of things"
NS = "sluice-system"
SA = f"system:serviceaccount:{NS}:sluice"
LAG = 'kafka_consumergroup_lag'
LAG_QUERY = 'sum(kafka_consumergroup_lag{consumergroup="orders-consumer",topic=~"orders"})'



@dataclass
class Installation:
    shell: Shell
    operator: OutOfClusterOperator
    prom: PrometheusServer
    outputs: dict[str, Any]
    tmp: Path

    def decision(self, policy: str = "orders") -> dict[str, Any]:
        out = self.shell.run(f"kubectl -n orders get configmap sluice-{policy} -o jsonpath='{{.data.decision\\.json}}'")
        return dict(json.loads(out.stdout))

    def prove_working(self, tag: str) -> None:
        """A new policy is seen (list/watch), evaluated, published (ConfigMap create) and its status written."""
        name = f"orders-{tag}"
        body = yaml.safe_load((REPO_ROOT / "examples" / "policy-minimal.yaml").read_text())
        body["metadata"]["name"] = name
        path = self.tmp / f"{name}.yaml"
        path.write_text(yaml.safe_dump(body))
        self.shell.run(f"kubectl apply -n orders -f {path}")
        self.shell.run(f"kubectl -n orders wait bpp/{name} --for=jsonpath='{{.status.observedGeneration}}'=1 "
                       "--timeout=90s", timeout=120)
        doc = poll(lambda: self.decision(name), timeout=60, what=f"ConfigMap sluice-{name}")
        assert doc["priorities"]["medium"]["zone"] == "red" and doc["backlog"] == 3000, doc
        errors = [line for line in self.operator.log_tail().splitlines() if "403" in line or "Forbidden" in line]
        assert not errors, errors

    def can_i(self, verb: str, resource: str, namespace: str) -> bool:
        out = self.shell.run(f"kubectl auth can-i {verb} {resource} -n {namespace} --as={SA}", check=False)
        return out.stdout.strip() == "yes"

    def generation(self) -> int:
        return int(self.shell.json(f"kubectl -n {NS} get deployment sluice -o json")["metadata"]["generation"])


@pytest.fixture(scope="module")
def installed(fresh_plane: ControlPlane, prom: PrometheusServer,
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installation]:
    tmp = tmp_path_factory.mktemp("install")
    shell = Shell(fresh_plane)
    prom.exporter.set(LAG, 3000, {"consumergroup": "orders-consumer", "topic": "orders"})
    prom.wait_for_value(LAG_QUERY, 3000, timeout=30)
    holder: dict[str, OutOfClusterOperator] = {}

    def pods_start() -> None:
        """Where the Deployment's pods would start: the operator, as the chart's ServiceAccount."""
        identity = fresh_plane.service_account_identity(NS, "sluice", directory=tmp / "token")  # kubectl create token
        operator = OutOfClusterOperator(shell, identity, tmp / "operator")
        operator.start()
        holder["op"] = operator
        poll(lambda: shell.run(f"kubectl -n {NS} get lease sluice-operator-leader "
                               "-o jsonpath='{.spec.holderIdentity}'", check=False).stdout.strip(),
             timeout=90, what=f"a Lease holder; operator log:\n{operator.log_tail()}")

    try:
        outputs = shell.run_block(readme_commands(INSTALL), replace={
            "http://prometheus-operated.monitoring.svc:9090": prom.url,
        }, after={"helm install": pods_start})
        yield Installation(shell, holder["op"], prom, dict(outputs), tmp)
    finally:
        if "op" in holder:
            holder["op"].stop()


def _output(installation: Installation, prefix: str) -> str:
    return str(next(v.stdout for k, v in installation.outputs.items() if k.startswith(prefix)))


def test_the_install_section_works_as_written(installed: Installation) -> None:
    helm = next(v for k, v in installed.outputs.items() if k.startswith("helm install"))
    assert "STATUS: deployed" in helm.stdout
    assert server_warnings(helm.stderr) == [], helm.stderr  # also asserted by Shell.run for every command
    pods_lease = _output(installed, "kubectl -n sluice-system get pods,lease")
    assert "lease.coordination.k8s.io/sluice-operator-leader" in pods_lease, pods_lease
    bpp = _output(installed, "kubectl -n orders get bpp")
    header, row = bpp.splitlines()[:2]
    assert header.split() == ["NAME", "ZONE", "BACKLOG", "ENFORCEMENT", "COMPLIANCE", "AGE"], bpp
    assert row.split()[:4] == ["orders", "red", "3000", "Enforce"], bpp
    decision = json.loads(_output(installed, "kubectl -n orders get configmap sluice-orders"))
    assert decision["priorities"]["medium"]["zone"] == "red", decision
    # the CRDs came with the chart (helm installs charts/sluice/crds/ on first install)
    crds = installed.shell.run("kubectl get crd -o name").stdout
    assert "backpressurepolicies.sluice.dev" in crds and "circuitbreakers.sluice.dev" in crds


def test_podsecurity_restricted_accepts_the_chart_without_a_warning(installed: Installation) -> None:
    shell = installed.shell
    labels = shell.json(f"kubectl get namespace {NS} -o json")["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    deploy = shell.json(f"kubectl -n {NS} get deployment sluice -o json")
    # a pod exactly as the Deployment would create it: `enforce` applies to pods, so create one (dry run)
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "sluice-podsecurity-check", "namespace": NS,
           "labels": deploy["spec"]["template"]["metadata"]["labels"]}, "spec": deploy["spec"]["template"]["spec"]}
    (installed.tmp / "pod.yaml").write_text(yaml.safe_dump(pod))
    accepted = shell.run(f"kubectl create --dry-run=server -f {installed.tmp / 'pod.yaml'}")
    assert "created (server dry run)" in accepted.stdout
    # the controls: the same checks do see a non-compliant pod and Deployment, so silence above means compliance
    bad = copy.deepcopy(pod)
    bad["spec"]["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = True
    (installed.tmp / "bad-pod.yaml").write_text(yaml.safe_dump(bad))
    refused = shell.run(f"kubectl create --dry-run=server -f {installed.tmp / 'bad-pod.yaml'}", check=False)
    assert refused.returncode != 0 and 'violates PodSecurity "restricted:latest"' in refused.stderr, refused.stderr
    bad_deploy = copy.deepcopy(deploy)
    for key in ("resourceVersion", "uid", "creationTimestamp", "managedFields", "generation"):
        bad_deploy["metadata"].pop(key, None)
    bad_deploy.pop("status", None)
    bad_deploy["spec"]["template"]["spec"]["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = True
    (installed.tmp / "bad-deploy.yaml").write_text(yaml.safe_dump(bad_deploy))
    warned = shell.run(f"kubectl apply --dry-run=server -f {installed.tmp / 'bad-deploy.yaml'}", warnings_ok=True)
    assert any('would violate PodSecurity "restricted:latest"' in w for w in server_warnings(warned.stderr)), \
        warned.stderr


def _upgrade(installed: Installation, extra: str) -> None:
    """The README's upgrade command, with the value being changed appended (visible here)."""
    command = next(c for c in readme_commands(UPGRADE) if c.startswith("helm upgrade"))
    before = installed.generation()
    out = installed.shell.run(f"{command} {extra}")
    assert "STATUS: deployed" in out.stdout
    # the value reaches the pod template, so Kubernetes rolls the pods: the operator restarts by itself
    assert installed.generation() > before, "the upgrade did not change the pod template"
    installed.operator.restart()


def test_upgrade_to_watch_namespaces_and_back(installed: Installation) -> None:
    assert installed.can_i("create", "configmaps", "default")
    _upgrade(installed, "--set-json 'watchNamespaces=[\"orders\"]'")
    assert installed.operator.env["SLUICE_WATCH_NAMESPACES"] == "orders"
    assert installed.can_i("create", "configmaps", "orders")
    assert not installed.can_i("create", "configmaps", "default"), "the cluster-wide grant outlived the upgrade"
    installed.prove_working("watching")

    _upgrade(installed, "--set-json 'watchNamespaces=[]'")
    assert installed.operator.env["SLUICE_WATCH_NAMESPACES"] == ""
    assert installed.can_i("create", "configmaps", "default")
    installed.prove_working("cluster-wide")


def test_upgrade_toggles_kafka_secrets(installed: Installation) -> None:
    assert not installed.can_i("get", "secrets", "orders")
    _upgrade(installed, "--set kafka.secrets.enabled=true")
    assert installed.operator.env["SLUICE_KAFKA_SECRETS"] == "true"
    assert installed.can_i("get", "secrets", "orders")
    installed.prove_working("secrets-on")

    _upgrade(installed, "--set kafka.secrets.enabled=false")
    assert installed.operator.env["SLUICE_KAFKA_SECRETS"] == "false"
    assert not installed.can_i("get", "secrets", "orders")
    installed.prove_working("secrets-off")
    # --reuse-values kept what the install set
    values = installed.shell.json(f"helm get values sluice -n {NS} -o json")
    assert values["settings"]["rawQueryNamespaces"] == "platform"
    assert values["settings"]["prometheusUrl"] == installed.prom.url


def _changed_crds(directory: Path) -> Path:
    """crds/ with a new optional field `spec.note` in both CRDs: the schema change of a minor release."""
    directory.mkdir(parents=True, exist_ok=True)
    for path in sorted(CRD_DIR.glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        for version in crd["spec"]["versions"]:
            spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
            spec["properties"]["note"] = {"type": "string", "maxLength": 200, "description": "A free-form note."}
        (directory / path.name).write_text(yaml.safe_dump(crd, sort_keys=False))
    return directory


def test_crd_upgrade_over_live_objects(installed: Installation) -> None:
    shell = installed.shell
    apply_crds = next(c for c in readme_commands(UPGRADE) if c.startswith("kubectl apply"))
    shell.run("kubectl apply -f examples/circuit-breaker.yaml")
    before = shell.json("kubectl -n orders get bpp orders -o json")
    changed = _changed_crds(installed.tmp / "crds-next")
    out = shell.run(apply_crds.replace("crds/", f"{changed}/"))  # the README's command, on the changed schema
    assert "serverside-applied" in out.stdout, out.stdout
    shell.run("kubectl wait --for=condition=Established crd/backpressurepolicies.sluice.dev --timeout=60s")
    # the new field is served: a write that uses it keeps it (it would be pruned under the old schema)
    poll(lambda: "note" in shell.run("kubectl explain bpp.spec", check=False).stdout, timeout=60,
         what="the new schema served")
    shell.run("kubectl -n orders patch bpp orders-watching --type=merge -p '{\"spec\":{\"note\":\"kept\"}}'")
    assert shell.json("kubectl -n orders get bpp orders-watching -o json")["spec"]["note"] == "kept"
    # the live objects stay readable, spec and status intact, and the operator keeps publishing
    after = shell.json("kubectl -n orders get bpp orders -o json")
    assert after["spec"] == before["spec"] and after["status"]["configMapName"] == "sluice-orders"
    assert {c["metadata"]["name"] for c in shell.json("kubectl get cb -o json")["items"]} >= {"kafka-orders-brokers"}
    installed.prove_working("next-schema")
    # and back to the CRDs as they are in the repository: the README's command exactly as written
    remove = '[{"op":"remove","path":"/spec/note"}]'
    shell.run(f"kubectl -n orders patch bpp orders-watching --type=json -p '{remove}'")
    shell.run(apply_crds)
    poll(lambda: "note" not in shell.run("kubectl explain bpp.spec", check=False).stdout, timeout=60,
         what="the field removed again by the README's command (server-side apply owns it now)")
    assert shell.json("kubectl -n orders get bpp orders -o json")["spec"] == before["spec"]


def test_gitops_kustomization_applies_with_server_side_validation(installed: Installation) -> None:
    shell = installed.shell
    dry = shell.run("kubectl apply -k examples/gitops/ --dry-run=server --validate=strict")
    assert "(server dry run)" in dry.stdout, dry.stdout
    out = shell.run("kubectl apply -k examples/gitops/ --validate=strict")
    assert "circuitbreaker.sluice.dev/orders-brokers created" in out.stdout, out.stdout
    assert "backpressurepolicy.sluice.dev/orders configured" in out.stdout, out.stdout
    labelled = shell.run("kubectl get bpp,cb -A -l app.kubernetes.io/part-of=orders-platform -o name").stdout.split()
    assert sorted(labelled) == ["backpressurepolicy.sluice.dev/orders", "circuitbreaker.sluice.dev/orders-brokers"]
    # the circuit publishes into orders; the policy embeds it (so the uninstall below has both kinds to remove)
    poll(lambda: shell.run("kubectl -n orders get configmap sluice-circuit-orders-brokers -o name",
                           check=False).returncode == 0, timeout=90, what="the circuit's ConfigMap")
    poll(lambda: installed.decision().get("enforcement") == "Observe", timeout=90, what="Observe from Git")


def test_uninstall_in_the_readme_order_leaves_nothing(installed: Installation) -> None:
    shell = installed.shell
    managed = "kubectl get configmap -A -l app.kubernetes.io/managed-by=sluice -o name"
    assert len(shell.run(managed).stdout.split()) >= 3, "nothing to uninstall: the test would prove nothing"

    def pods_stop() -> None:
        """`helm uninstall` deletes the Deployment, and with it the operator's pods."""
        assert installed.operator.stop() == 0, installed.operator.log_tail()

    shell.run_block(readme_commands(UNINSTALL), after={"helm uninstall": pods_stop})
    assert shell.run("helm list -A -q").stdout.strip() == ""
    assert "sluice.dev" not in shell.run("kubectl get crd -o name").stdout
    # the garbage collector removes the owned ConfigMaps; poll, it works asynchronously
    poll(lambda: shell.run(managed).stdout.strip() == "" or None, timeout=90, what="no Sluice ConfigMap left")
    poll(lambda: "sluice-" not in shell.run("kubectl get configmap -A -o name").stdout or None, timeout=60,
         what="no sluice-* ConfigMap left")
    terminating = shell.run("kubectl get namespaces -o jsonpath='{.items[?(@.status.phase==\"Terminating\")]"
                            ".metadata.name}'").stdout.strip()
    assert terminating == ""
    left = shell.run(f"kubectl -n {NS} get all,role,rolebinding,serviceaccount,pdb -o name").stdout.split()
    assert [x for x in left if "sluice" in x and "kube-root-ca" not in x] == [], left
    cluster = shell.run("kubectl get clusterrole,clusterrolebinding -o name").stdout.split()
    assert [x for x in cluster if "sluice" in x] == [], cluster
