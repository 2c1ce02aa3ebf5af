"""The API server validates what we ship: chart manifests, examples, CRD schemas and CEL rules.

A fresh control plane of its own (see conftest.py). Everything here is a server-side dry run or a
create-and-delete in a namespace of this module, so nothing reaches other tests.

* Every manifest the chart renders (the real `helm template`, default values and the non-default
  matrix of tests/unit/test_chart.py) and every Kubernetes object in examples/ passes
  `kubectl apply --dry-run=server` without a warning.
* The CRDs are accepted at creation (the API server refuses a CRD whose CEL rules exceed its cost budget).
* Every CEL rule holds once and fails once on the real server, with its own message; the case list
  is tests/unit/test_cel.py's. Every schema bound (enum, minimum, maximum, length, items, pattern,
  format, required) of the spec is broken once and refused with the server's message for that bound.
* `sluice validate` gives the server's verdict on every one of those objects (both run, compared).
* Structural schema: server defaults read back as the engine expects, unknown fields pruned or refused
  under Strict, status survives a round trip.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from sluice_operator.api.circuit import CircuitBreakerSpec
from sluice_operator.api.policy import BackpressurePolicySpec
from tests.integration.install.shell import Shell
from tests.support.control_plane import REPO_ROOT, ControlPlane
from tests.support.crd_tools import CRD_DIR, load_yaml_objects, root_schema
from tests.support.kube_api import ApiFailure, KubeApi
from tests.unit.test_cel import CASES as CEL_CASES
from tests.unit.test_cel import CIRCUIT, POLICY
from tests.unit.test_chart import VALUE_SETS

GROUP = "sluice.dev/v1alpha1"
REFS = {POLICY: f"{GROUP}/backpressurepolicies", CIRCUIT: f"{GROUP}/circuitbreakers"}
NS = "validation"
#: Kinds in examples/ that another project's CRDs serve (Argo CD); not installed here, so not checked.
FOREIGN = {("argoproj.io/v1alpha1", "Application")}
#: examples/ files that are not Kubernetes objects: the Kustomization (applied with -k in test_install.py)
#: and the simulator's scenarios.
NOT_OBJECTS = {"examples/gitops/kustomization.yaml"}

#: The Prometheus Operator's ServiceMonitor kind is not installed here; this stand-in CRD types exactly
#: the fields the chart sets, as the Prometheus Operator documents them, so the dry run still checks
#: names, types and unknown fields of the chart's ServiceMonitor.
SERVICE_MONITOR_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
    "metadata": {"name": "servicemonitors.monitoring.coreos.com"},
    "spec": {"group": "monitoring.coreos.com", "scope": "Namespaced",
             "names": {"kind": "ServiceMonitor", "plural": "servicemonitors", "singular": "servicemonitor",
                       "listKind": "ServiceMonitorList"},
             "versions": [{"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": {
                 "type": "object", "properties": {"spec": {"type": "object", "required": ["selector", "endpoints"],
                     "properties": {
                         "endpoints": {"type": "array", "items": {"type": "object", "properties": {
                             "port": {"type": "string"}, "path": {"type": "string"},
                             "interval": {"type": "string", "pattern": "^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?"
                                          "(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"},
                             "scrapeTimeout": {"type": "string", "pattern": "^(0|(([0-9]+)y)?(([0-9]+)w)?"
                                               "(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"},
                             "scheme": {"type": "string"}}}},
                         "namespaceSelector": {"type": "object", "properties": {
                             "any": {"type": "boolean"}, "matchNames": {"type": "array", "items": {"type": "string"}}}},
                         "selector": {"type": "object", "properties": {"matchLabels": {
                             "type": "object", "additionalProperties": {"type": "string"}}}},
                         "jobLabel": {"type": "string"}}}}}}}],
             }}


@dataclass
class Server:
    plane: ControlPlane
    shell: Shell
    api: KubeApi
    tmp: Path

    def dry_run(self, kind: str, obj: dict[str, Any], validation: str = "Strict") -> tuple[bool, str]:
        """Create `obj` as a server-side dry run with Strict field validation: (accepted, server message)."""
        accepted, message, _ = self.dry_run_object(kind, obj, validation)
        return accepted, message

    def dry_run_object(self, kind: str, obj: dict[str, Any], validation: str = "Strict"
                       ) -> tuple[bool, str, dict[str, Any]]:
        """The same, with the object as the server would store it (defaulted, pruned)."""
        namespace = NS if kind == POLICY else None
        try:
            stored = self.api.call("POST", _collection(kind, namespace), obj,
                                   params={"dryRun": "All", "fieldValidation": validation})
            return True, "", dict(stored)
        except ApiFailure as error:
            return False, str(json.loads(error.body).get("message", error.body)), {}


def _collection(kind: str, namespace: str | None) -> str:
    from tests.support.kube_api import collection_path
    return collection_path(REFS[kind], namespace)


@pytest.fixture(scope="module")
def server(fresh_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    shell = Shell(fresh_plane)
    # the CRDs as the README installs them; creation is where a CEL cost over budget would be refused
    out = shell.run(f"kubectl apply --server-side -f {CRD_DIR}")
    assert out.stdout.count("serverside-applied") == 2, out.stdout
    for crd in ("backpressurepolicies.sluice.dev", "circuitbreakers.sluice.dev"):
        shell.run(f"kubectl wait --for=condition=Established crd/{crd} --timeout=60s")
    tmp = tmp_path_factory.mktemp("validation")
    (tmp / "servicemonitor-crd.yaml").write_text(yaml.safe_dump(SERVICE_MONITOR_CRD))
    shell.run(f"kubectl apply --server-side -f {tmp / 'servicemonitor-crd.yaml'}")
    shell.run("kubectl wait --for=condition=Established crd/servicemonitors.monitoring.coreos.com --timeout=60s")
    restricted = "pod-security.kubernetes.io/enforce=restricted"
    for namespace in ("sluice-system", "team-a", "team-b", "team-c", "kafka-creds", "sluice-leases", NS,
                      "orders", "payments", "sim", "demo", "shop"):
        shell.run(f"kubectl create namespace {namespace}")
    shell.run(f"kubectl label namespace sluice-system {restricted}")
    api = KubeApi(fresh_plane.server, fresh_plane.admin_token, str(fresh_plane.ca_file))
    yield Server(fresh_plane, shell, api, tmp)


# --- CRDs -----------------------------------------------------------------------------------------


def test_crds_are_accepted_and_established_within_the_cel_budget(server: Server) -> None:
    for crd in ("backpressurepolicies.sluice.dev", "circuitbreakers.sluice.dev"):
        got = server.shell.json(f"kubectl get crd {crd} -o json")
        conditions = {c["type"]: c["status"] for c in got["status"]["conditions"]}
        assert conditions.get("Established") == "True" and conditions.get("NamesAccepted") == "True", conditions
        assert conditions.get("NonStructuralSchema") is None, "the schema must be structural"
        rules = json.dumps(got["spec"]).count("x-kubernetes-validations")
        assert rules > 0, "the served CRD lost its CEL rules"


# --- the chart and examples/, server-side dry run ----------------------------------------------------


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_every_chart_manifest_passes_a_server_dry_run(server: Server, value_set: str) -> None:
    values = server.tmp / f"values-{value_set}.yaml"
    values.write_text(yaml.safe_dump(VALUE_SETS[value_set]))
    rendered = server.shell.run(f"helm template sluice ./charts/sluice -n sluice-system -f {values}").stdout
    kinds = [d["kind"] for d in yaml.safe_load_all(rendered) if d]
    assert "Deployment" in kinds and "ServiceAccount" in kinds, kinds
    manifest = server.tmp / f"chart-{value_set}.yaml"
    manifest.write_text(rendered)
    out = server.shell.run(f"kubectl apply --dry-run=server --validate=strict -f {manifest}")  # no warnings
    assert out.stdout.count("(server dry run)") == len(kinds), out.stdout


def _example_files() -> list[Path]:
    files = sorted((REPO_ROOT / "examples").rglob("*.yaml"))
    return [f for f in files if str(f.relative_to(REPO_ROOT)) not in NOT_OBJECTS and "scenarios" not in f.parts
            and not all((d.get("apiVersion"), d.get("kind")) in FOREIGN for d in load_yaml_objects(f))]


def test_only_argo_cd_applications_are_left_out() -> None:
    left = {str(f.relative_to(REPO_ROOT)) for f in sorted((REPO_ROOT / "examples").rglob("*.yaml"))} \
        - {str(f.relative_to(REPO_ROOT)) for f in _example_files()} - NOT_OBJECTS
    assert {f for f in left if "scenarios" not in f} == {"examples/gitops/argocd-application.yaml"}


@pytest.mark.parametrize("path", _example_files(), ids=lambda p: str(p.relative_to(REPO_ROOT / "examples")))
def test_every_example_passes_a_server_dry_run(server: Server, path: Path) -> None:
    docs = [d for d in load_yaml_objects(path) if (d.get("apiVersion"), d.get("kind")) not in FOREIGN]
    namespace = "" if any("namespace" in d.get("metadata", {}) for d in docs) else "-n orders"
    out = server.shell.run(f"kubectl apply --dry-run=server --validate=strict {namespace} -f {path}")
    assert out.stdout.count("(server dry run)") == len(docs), out.stdout


def test_the_scenarios_are_not_kubernetes_objects() -> None:
    """Why examples/scenarios/ is left out above: simulator input, no apiVersion/kind."""
    for path in sorted((REPO_ROOT / "examples" / "scenarios").glob("*.yaml")):
        assert all("apiVersion" not in d for d in load_yaml_objects(path)), path


# --- CEL rules and schema bounds, on the real server, against `sluice validate` -----------------------

CRDS = {yaml.safe_load(p.read_text())["spec"]["names"]["kind"]: yaml.safe_load(p.read_text())
        for p in sorted(CRD_DIR.glob("*.yaml"))}


def _object(kind: str, spec: dict[str, Any], name: str) -> dict[str, Any]:
    return {"apiVersion": GROUP, "kind": kind, "metadata": {"name": name}, "spec": copy.deepcopy(spec)}


def _cli_verdicts(server: Server, objects: dict[str, dict[str, Any]]) -> dict[str, list[str]]:
    """`sluice validate` over every case at once: case id -> the problems it printed (empty: valid)."""
    directory = server.tmp / f"cli-{len(list(server.tmp.iterdir()))}"
    directory.mkdir()
    files = {}
    for case_id, obj in objects.items():
        path = directory / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', case_id)}.yaml"
        path.write_text(yaml.safe_dump(obj))
        files[case_id] = path
    result = subprocess.run([sys.executable, "-m", "sluice_operator.cli", "validate", *map(str, files.values())],
                            capture_output=True, text=True, timeout=300, check=False)
    lines = (result.stdout + result.stderr).splitlines()
    verdicts = {case_id: [line for line in lines if line.startswith(f"{path}:") and not line.endswith(" ok")]
                for case_id, path in files.items()}
    assert (result.returncode != 0) == any(verdicts.values()), result
    return verdicts


def test_every_cel_rule_holds_and_fails_on_the_real_server_as_sluice_validate_says(server: Server) -> None:
    objects = {case_id: _object(kind, spec, "case") for case_id, kind, spec, _ in CEL_CASES}
    cli = _cli_verdicts(server, objects)
    rules = {(r.kind, r.path, r.message) for r in _rules()}
    held: set[tuple[str, str, str]] = set()
    failed: set[tuple[str, str, str]] = set()
    disagreements = []
    for case_id, kind, _spec, failing in CEL_CASES:
        accepted, message, stored = server.dry_run_object(kind, objects[case_id])
        assert accepted == (not failing), f"{case_id}: server {'accepted' if accepted else 'refused: ' + message}"
        for path, rule_message in failing:
            # the server names the field and quotes the rule's own message
            assert f"{path.lstrip('.')}: Invalid value" in message and rule_message in message, (case_id, message)
            failed.add((kind, path, rule_message))
        if accepted:  # every rule whose object is present in the stored (defaulted) object held
            held |= {(k, path, m) for k, path, m in rules if k == kind and _present(stored, path)}
        if accepted != (not cli[case_id]):
            disagreements.append((case_id, message or "accepted", cli[case_id]))
    assert disagreements == [], disagreements
    assert rules - held == set(), "rules never seen to hold on the server"
    assert rules - failed == set(), "rules never seen to fail on the server"


def _rules() -> list[Any]:
    from tests.support.crd_tools import rules_of
    return [r for kind, crd in CRDS.items() for r in rules_of(kind, root_schema(crd))]


def _present(obj: dict[str, Any], path: str) -> bool:
    node: Any = obj
    for step in path.strip(".").split("."):
        if not isinstance(node, dict) or step not in node:
            return False
        node = node[step]
    return True


def test_every_schema_bound_is_enforced_by_the_server_as_sluice_validate_says(server: Server) -> None:
    from tests.integration.install.bounds import bases, cases

    for kind, objs in bases().items():
        for obj in objs:
            accepted, message = server.dry_run(kind, obj)
            assert accepted, f"example {kind}/{obj['metadata']['name']} refused: {message}"
    all_cases = cases(CRDS)
    assert len(all_cases) > 100
    cli = _cli_verdicts(server, {c.id: c.obj for c in all_cases})
    wrong, disagreements = [], []
    for case in all_cases:
        accepted, message = server.dry_run(case.kind, case.obj)
        field, words = case.expect.split("|")
        if accepted or field not in message or words not in message:
            wrong.append((case.id, case.expect, message or "accepted"))
        if accepted != (not cli[case.id]):
            disagreements.append((case.id, message or "accepted", cli[case.id]))
    assert wrong == [], "\n".join(map(str, wrong))
    assert disagreements == [], "\n".join(map(str, disagreements))


# --- structural schema: defaults, pruning, status ---------------------------------------------------

MODELS = {POLICY: BackpressurePolicySpec, CIRCUIT: CircuitBreakerSpec}
MINIMAL = {POLICY: {"source": {"prometheus": {"consumerGroup": "g", "topics": ["t"]}}},
           CIRCUIT: {"signal": {"prometheus": {"query": "errors", "failWhen": {"above": 1}}}, "namespaces": ["shop"]}}


@pytest.mark.parametrize("kind", [POLICY, CIRCUIT])
def test_server_defaults_read_back_as_the_engine_expects(server: Server, kind: str) -> None:
    accepted, message, stored = server.dry_run_object(kind, _object(kind, MINIMAL[kind], "defaults"))
    assert accepted, message
    assert stored["spec"] != MINIMAL[kind], "the server applied no defaults"
    model = MODELS[kind]
    # the engine's model of the object the server stores equals its model of what the user wrote
    assert model.model_validate(stored["spec"]) == model.model_validate(MINIMAL[kind])
    # and every default the server filled in is the model's default for that field
    dumped = model.model_validate(MINIMAL[kind]).model_dump(mode="json", by_alias=True, exclude_none=True)

    def compare(served: Any, engine: Any, path: str) -> None:
        if isinstance(served, dict):
            assert isinstance(engine, dict), path
            for key, value in served.items():
                assert key in engine, f"{path}.{key}: defaulted by the server, unknown to the model"
                compare(value, engine[key], f"{path}.{key}")
        else:
            assert served == engine, f"{path}: server default {served!r}, engine default {engine!r}"

    compare(stored["spec"], dumped, "spec")


@pytest.mark.parametrize("kind", [POLICY, CIRCUIT])
def test_unknown_spec_fields_are_refused_when_strict_and_pruned_otherwise(server: Server, kind: str) -> None:
    obj = _object(kind, MINIMAL[kind], "unknown")
    obj["spec"]["bogus"] = 1
    inner = obj["spec"]["source" if kind == POLICY else "signal"]["prometheus"]
    inner["typo"] = "x"
    accepted, message = server.dry_run(kind, obj, "Strict")
    assert not accepted and 'unknown field "spec.bogus"' in message, message
    assert "typo" in message, message
    accepted, message, stored = server.dry_run_object(kind, obj, "Ignore")
    assert accepted, message
    assert "bogus" not in stored["spec"]
    assert "typo" not in stored["spec"]["source" if kind == POLICY else "signal"]["prometheus"]


def _status_from_schema(schema: dict[str, Any], name: str = "") -> Any:
    """A value for every property of the status schema, typed as the schema says."""
    kind = schema.get("type")
    if "enum" in schema:
        return schema["enum"][-1]
    if kind == "object":
        return {key: _status_from_schema(child, key) for key, child in (schema.get("properties") or {}).items()}
    if kind == "array":
        return [_status_from_schema(schema["items"], name)]
    if kind == "integer":
        return 7
    if kind == "number":
        return 1234.5
    if kind == "boolean":
        return True
    if name.endswith(("At", "Time", "Evaluated", "since", "at")) or name in ("since", "recentFailures"):
        return "2026-11-24T10:00:00Z"
    return f"some {name}"


@pytest.mark.parametrize("kind", [POLICY, CIRCUIT])
def test_status_survives_a_round_trip_unpruned(server: Server, kind: str) -> None:
    from tests.support.kube_api import object_path

    namespace = NS if kind == POLICY else None
    status = _status_from_schema(root_schema(CRDS[kind])["properties"]["status"])
    name = f"status-{kind.lower()}"
    server.api.create_object(REFS[kind], _object(kind, MINIMAL[kind], name), namespace)
    try:
        server.api.call("PATCH", object_path(REFS[kind], name, namespace, "status"), {"status": status},
                        content_type="application/merge-patch+json", params={"fieldValidation": "Strict"})
        back = server.api.get_object(REFS[kind], name, namespace)
        assert back is not None and back["status"] == status
        # the operator restores its state from exactly this
        if kind == POLICY:
            from sluice_operator.reconcile.policy import PolicyState
            state = PolicyState.restore(NS, name, back["metadata"]["uid"], back["status"])
        else:
            from sluice_operator.reconcile.circuit import CircuitBreakerState
            state = CircuitBreakerState.restore(name, back["metadata"]["uid"], back["status"])
        assert state is not None
    finally:
        server.api.delete_object(REFS[kind], name, namespace)
