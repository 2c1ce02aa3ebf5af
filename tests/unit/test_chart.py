"""The Helm chart, the CRD copies it ships, and the examples: rendered by Helm's own engine, checked
against the Kubernetes schemas and against the operator's own settings parser and validator."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import subprocess
import sys
import tomllib
from pathlib import Path
from types import ModuleType
from typing import Any

import helm_python
import jsonschema
import kubernetes_validate
import pytest
import yaml
from pydantic import BaseModel

from sluice_operator.api.policy import BackpressurePolicySpec
from sluice_operator.cli import main as sluice_main
from sluice_operator.settings import SETTINGS, Settings
from tests.support import helm
from tests.support.control_plane import k8s_bin_dir
from tests.support.helm import Manifest

EXAMPLES = helm.REPO_ROOT / "examples"
NAMESPACE = "sluice-system"
OLDEST, NEWEST = helm.k8s_versions()

#: Values sets rendered by most tests: the defaults and a matrix of non-default choices.
VALUE_SETS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "namespaced": {"watchNamespaces": ["team-a", "team-b"], "circuitNamespaces": ["team-c"]},
    "namespaced-secrets": {
        "watchNamespaces": ["team-a"],
        "kafka": {"secrets": {"enabled": True, "names": ["kafka-client"]}},
        "settings": {"circuitSecretNamespace": "kafka-creds"},
        "leaderElection": {"leaseNamespace": "sluice-leases"},
    },
    "cluster-secrets": {"kafka": {"secrets": {"enabled": True}}},
    "service-monitor": {"serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus"}}},
    "custom": {
        "replicaCount": 3,
        "image": {"repository": "registry.example.com/platform/sluice", "tag": "0.1.0-rc1",
                  "pullPolicy": "Always"},
        "imagePullSecrets": [{"name": "regcred"}],
        "settings": {
            "prometheusUrl": "https://prometheus.monitoring.svc:9091",
            "prometheusCaFile": "/etc/sluice/prometheus/ca.crt",
            "prometheusBearerTokenFile": "/etc/sluice/prometheus/token",
            "rawQueryNamespaces": "platform,kafka-*",
            "logLevel": "DEBUG",
            "logFormat": "text",
            "httpPort": 9095,
            "defaultIntervalSeconds": 10,
            "queryCacheSeconds": 0.5,
        },
        "leaderElection": {"leaseDurationSeconds": 30, "leaseRenewSeconds": 10},
        "podAnnotations": {"example.com/team": "platform"},
        "podLabels": {"team": "platform"},
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "platform", "effect": "NoSchedule"}],
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]}]}]}}},
        "priorityClassName": "system-cluster-critical",
        "extraEnv": [{"name": "HTTPS_PROXY", "value": "http://proxy:3128"}],
        "extraVolumes": [{"name": "prometheus-auth", "secret": {"secretName": "prometheus-auth"}}],
        "extraVolumeMounts": [{"name": "prometheus-auth", "mountPath": "/etc/sluice/prometheus",
                               "readOnly": True}],
        "podDisruptionBudget": {"maxUnavailable": "50%"},
        "topologySpread": {"whenUnsatisfiable": "DoNotSchedule"},
        "serviceAccount": {"name": "sluice-operator", "annotations": {"example.com/role": "sluice"}},
        "service": {"port": 9095},
    },
    "minimal": {"replicaCount": 1, "leaderElection": {"enabled": False},
                "podDisruptionBudget": {"enabled": False}, "topologySpread": {"enabled": False}},
}
#: Kinds kubernetes-validate has no schema for; checked by dedicated tests instead.
NOT_IN_K8S_SCHEMAS = {("monitoring.coreos.com/v1", "ServiceMonitor")}


@pytest.fixture(scope="module", params=sorted(VALUE_SETS))
def rendered(request: pytest.FixtureRequest) -> tuple[str, list[Manifest]]:
    return request.param, helm.render(VALUE_SETS[request.param], namespace=NAMESPACE)


def _env(manifests: list[Manifest]) -> dict[str, str]:
    """The operator container's literal env values, plus POD_NAMESPACE as the downward API fills it."""
    env: dict[str, str] = {}
    for var in helm.container(manifests)["env"]:
        if "value" in var:
            env[var["name"]] = var["value"]
        elif var["name"] == "POD_NAMESPACE":
            env["POD_NAMESPACE"] = NAMESPACE
    return env


def _values_table() -> ModuleType:
    spec = importlib.util.spec_from_file_location("values_table", helm.REPO_ROOT / "charts" / "values_table.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["values_table"] = module
    spec.loader.exec_module(module)
    return module


# --- Chart metadata, lint, schema -------------------------------------------------------------------


def test_chart_versions_follow_the_package() -> None:
    chart = yaml.safe_load((helm.CHART_DIR / "Chart.yaml").read_text())
    pyproject = tomllib.loads((helm.REPO_ROOT / "pyproject.toml").read_text())
    assert chart["apiVersion"] == "v2"
    assert chart["appVersion"] == pyproject["project"]["version"]
    assert chart["version"] == "0.1.0"


@pytest.mark.parametrize("kube_version", [OLDEST, NEWEST])
@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_helm_lint_is_clean(value_set: str, kube_version: str) -> None:
    report = helm.lint(VALUE_SETS[value_set], kube_version=kube_version)
    assert report.clean, (report.messages, report.errors)


def test_every_value_has_a_comment() -> None:
    entries = _values_table().parse_entries((helm.CHART_DIR / "values.yaml").read_text())
    assert len(entries) > 50
    assert [e.dotted for e in entries if not e.comment] == []


def test_readme_values_table_is_up_to_date() -> None:
    module = _values_table()
    readme = (helm.CHART_DIR / "README.md").read_text()
    assert module.updated_readme(readme, module.render_table()) == readme, (
        "run: python charts/values_table.py"
    )


def test_schema_accepts_the_defaults_and_every_value_set() -> None:
    chart = helm_python.Chart.load(helm.CHART_DIR)
    with chart:
        assert chart.schema is not None
        for values in VALUE_SETS.values():
            chart.validate_schema(values)


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"replicaCount": "two"}, ["/replicaCount", "got string, want integer"]),
        ({"replicaCount": 0}, ["/replicaCount", "minimum"]),
        ({"settings": {"logLevel": "VERBOSE"}}, ["/settings/logLevel", "'DEBUG', 'INFO', 'WARNING', 'ERROR'"]),
        ({"settings": {"logFormat": "xml"}}, ["/settings/logFormat", "'json', 'text'"]),
        ({"settings": {"prometheusUrl": "prometheus:9090"}}, ["/settings/prometheusUrl", "pattern"]),
        ({"settings": {"lagQueryTemplate": "sum(kafka_consumergroup_lag)"}},
         ["/settings/lagQueryTemplate", "pattern '[{]group[}]'", "pattern '[{]topics[}]'"]),
        ({"settings": {"httpPort": 80}}, ["/settings/httpPort", "minimum"]),
        ({"settings": {"promURL": "http://x"}}, ["/settings", "'promURL' not allowed"]),
        ({"replicas": 2}, ["additional properties 'replicas' not allowed"]),
        ({"image": {"pullPolicy": "Sometimes"}}, ["/image/pullPolicy", "'Always', 'IfNotPresent', 'Never'"]),
        ({"watchNamespaces": ["Team_A"]}, ["/watchNamespaces/0", "pattern"]),
        ({"watchNamespaces": "team-a"}, ["/watchNamespaces", "want array"]),
        ({"securityContext": {"runAsUser": 0}}, ["/securityContext/runAsUser", "minimum"]),
        ({"kafka": {"secrets": {"enabled": "yes"}}}, ["/kafka/secrets/enabled", "want boolean"]),
        ({"podDisruptionBudget": {"maxUnavailable": "half"}}, ["/podDisruptionBudget/maxUnavailable"]),
        ({"topologySpread": {"whenUnsatisfiable": "Never"}}, ["/topologySpread/whenUnsatisfiable"]),
        ({"leaderElection": {"leaseDurationSeconds": 1}}, ["/leaderElection/leaseDurationSeconds", "minimum"]),
    ],
)
def test_schema_rejects_bad_values_readably(values: dict[str, Any], expected: list[str]) -> None:
    with pytest.raises(helm_python.HelmValuesError) as caught:
        helm.render(values)
    message = str(caught.value)
    for part in expected:
        assert part in message, message


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"leaderElection": {"leaseRenewSeconds": 20}},
         "leaderElection.leaseRenewSeconds (20) must be below leaderElection.leaseDurationSeconds (15)"),
        ({"leaderElection": {"enabled": False}}, "leaderElection.enabled=false with replicaCount=2"),
        ({"extraEnv": [{"name": "SLUICE_LOG_LEVEL", "value": "DEBUG"}]}, "extraEnv: SLUICE_LOG_LEVEL"),
        ({"circuitNamespaces": ["team-c"]}, "circuitNamespaces only applies with watchNamespaces"),
        ({"serviceAccount": {"create": False}}, "serviceAccount.name is required"),
    ],
)
def test_template_checks_fail_with_a_message(values: dict[str, Any], expected: str) -> None:
    with pytest.raises(helm_python.HelmRenderError) as caught:
        helm.render(values)
    assert expected in str(caught.value)


# --- Rendered manifests against the Kubernetes schemas ---------------------------------------------


@pytest.mark.parametrize("version", [OLDEST, NEWEST])
def test_rendered_manifests_validate_against_kubernetes(rendered: tuple[str, list[Manifest]], version: str) -> None:
    _, manifests = rendered
    checked = 0
    for manifest in manifests:
        if (manifest.api_version, manifest.kind) in NOT_IN_K8S_SCHEMAS:
            continue
        try:
            helm.validate_k8s(manifest.obj, version)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{manifest.template} {manifest.kind}/{manifest.name} against {version}: "
                        f"{'.'.join(map(str, error.path))}: {error.message}")
        checked += 1
    assert checked >= 5  # ServiceAccount, ClusterRole(Binding), Deployment, Service at least


def test_versions_cover_old_and_new() -> None:
    assert OLDEST == "1.29"
    assert tuple(map(int, NEWEST.split("."))) > (1, 29)


# --- Settings: every SLUICE_* variable is a value, and the operator accepts what the chart renders ---


def test_every_setting_is_rendered(rendered: tuple[str, list[Manifest]]) -> None:
    _, manifests = rendered
    env = _env(manifests)
    rendered_settings = {name for name in env if name.startswith("SLUICE_")}
    assert rendered_settings == {s.env for s in SETTINGS}


def test_operator_accepts_the_rendered_settings(rendered: tuple[str, list[Manifest]]) -> None:
    _, manifests = rendered
    Settings.from_env(_env(manifests))


def test_chart_defaults_equal_operator_defaults() -> None:
    from_chart = Settings.from_env(_env(helm.render()))
    from_operator = Settings.from_env({"POD_NAMESPACE": NAMESPACE})
    assert from_chart == from_operator


def test_values_reach_the_operator() -> None:
    settings = Settings.from_env(_env(helm.render(VALUE_SETS["custom"])))
    assert settings.prometheus.url == "https://prometheus.monitoring.svc:9091"
    assert settings.prometheus.ca_file == "/etc/sluice/prometheus/ca.crt"
    assert settings.tenancy.raw_query_namespaces == ("platform", "kafka-*")
    assert settings.raw_query_allowed("kafka-eu") and not settings.raw_query_allowed("team-a")
    assert (settings.logging.level, settings.logging.format, settings.server.http_port) == ("DEBUG", "text", 9095)
    assert settings.prometheus.query_cache_seconds == 0.5
    assert (settings.leader.lease_duration_seconds, settings.leader.lease_renew_seconds) == (30, 10)
    namespaced = Settings.from_env(_env(helm.render(VALUE_SETS["namespaced-secrets"])))
    assert namespaced.scope.watch_namespaces == ("team-a",)
    assert namespaced.tenancy.kafka_secrets is True
    assert namespaced.leader.lease_namespace == "sluice-leases"
    assert namespaced.tenancy.circuit_secret_namespace == "kafka-creds"


def test_leader_election_env_and_downward_api() -> None:
    env = {v["name"]: v for v in helm.container(helm.render(namespace="ops"))["env"]}
    assert env["SLUICE_LEADER_ELECTION"]["value"] == "true"
    assert env["SLUICE_LEASE_NAMESPACE"]["value"] == "ops"
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"


# --- Deployment: security, probes, availability ---------------------------------------------------


def test_pod_security_standard_restricted(rendered: tuple[str, list[Manifest]]) -> None:
    _, manifests = rendered
    pod = helm.one(manifests, "Deployment").obj["spec"]["template"]["spec"]
    for host in ("hostNetwork", "hostPID", "hostIPC"):
        assert pod.get(host, False) is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    for c in pod["containers"] + pod.get("initContainers", []):
        sc = c["securityContext"]
        assert sc["runAsNonRoot"] is True
        assert isinstance(sc["runAsUser"], int) and sc["runAsUser"] > 0
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["allowPrivilegeEscalation"] is False
        assert sc.get("privileged", False) is False
        assert sc["capabilities"] == {"drop": ["ALL"]}
        assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
        assert not any(p.get("hostPort") for p in c.get("ports", []))
    volumes = {v["name"]: v for v in pod["volumes"]}
    for volume in volumes.values():
        assert "hostPath" not in volume
    tmp = next(m for m in pod["containers"][0]["volumeMounts"] if m["mountPath"] == "/tmp")
    assert "emptyDir" in volumes[tmp["name"]]


def test_probes_point_at_exposed_ports(rendered: tuple[str, list[Manifest]]) -> None:
    _, manifests = rendered
    c = helm.container(manifests)
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert "http" in ports
    env = _env(manifests)
    assert ports["http"] == int(env["SLUICE_HTTP_PORT"])
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = c[probe]["httpGet"]
        assert get["path"] == path
        assert get["port"] in ports or get["port"] in ports.values()
    service = helm.one(manifests, "Service").obj
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["http"]
    assert service["spec"]["selector"].items() <= (
        helm.one(manifests, "Deployment").obj["spec"]["template"]["metadata"]["labels"].items())


def test_deployment_defaults() -> None:
    manifests = helm.render()
    deployment = helm.one(manifests, "Deployment").obj
    pod = deployment["spec"]["template"]["spec"]
    c = helm.container(manifests)
    assert deployment["spec"]["replicas"] == 2
    assert c["command"] == ["sluice", "run"]
    assert c["image"] == "sluice-operator:0.1.0"
    assert c["imagePullPolicy"] == "IfNotPresent"
    assert set(c["resources"]) == {"requests", "limits"}
    assert set(c["resources"]["requests"]) == {"cpu", "memory"} == set(c["resources"]["limits"])
    [spread] = pod["topologySpreadConstraints"]
    assert spread["topologyKey"] == "kubernetes.io/hostname"
    assert spread["labelSelector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    pdb = helm.one(manifests, "PodDisruptionBudget").obj
    assert pdb["spec"]["selector"] == deployment["spec"]["selector"]
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pod["serviceAccountName"] == helm.one(manifests, "ServiceAccount").name
    assert helm.by_kind(manifests, "ServiceMonitor") == []


def test_custom_values_reach_the_pod() -> None:
    manifests = helm.render(VALUE_SETS["custom"])
    deployment = helm.one(manifests, "Deployment").obj
    pod = deployment["spec"]["template"]["spec"]
    c = helm.container(manifests)
    assert deployment["spec"]["replicas"] == 3
    assert c["image"] == "registry.example.com/platform/sluice:0.1.0-rc1"
    assert c["imagePullPolicy"] == "Always"
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    assert pod["priorityClassName"] == "system-cluster-critical"
    assert pod["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert pod["tolerations"][0]["key"] == "dedicated"
    assert "nodeAffinity" in pod["affinity"]
    assert pod["serviceAccountName"] == "sluice-operator"
    assert deployment["spec"]["template"]["metadata"]["annotations"] == {"example.com/team": "platform"}
    assert deployment["spec"]["template"]["metadata"]["labels"]["team"] == "platform"
    assert {"name": "HTTPS_PROXY", "value": "http://proxy:3128"} in c["env"]
    assert any(m["mountPath"] == "/etc/sluice/prometheus" for m in c["volumeMounts"])
    assert pod["topologySpreadConstraints"][0]["whenUnsatisfiable"] == "DoNotSchedule"
    assert helm.one(manifests, "PodDisruptionBudget").obj["spec"]["maxUnavailable"] == "50%"
    assert helm.one(manifests, "Service").obj["spec"]["ports"][0]["port"] == 9095
    assert c["ports"][0]["containerPort"] == 9095


def test_minimal_single_replica() -> None:
    manifests = helm.render(VALUE_SETS["minimal"])
    assert helm.by_kind(manifests, "PodDisruptionBudget") == []
    assert not any(m.name.endswith("leader-election") for m in manifests)
    pod = helm.one(manifests, "Deployment").obj["spec"]["template"]["spec"]
    assert "topologySpreadConstraints" not in pod
    assert _env(manifests)["SLUICE_LEADER_ELECTION"] == "false"


def test_service_monitor_only_when_enabled() -> None:
    assert helm.by_kind(helm.render(), "ServiceMonitor") == []
    manifests = helm.render(VALUE_SETS["service-monitor"])
    monitor = helm.one(manifests, "ServiceMonitor")
    assert monitor.api_version == "monitoring.coreos.com/v1"
    service = helm.one(manifests, "Service").obj
    assert monitor.obj["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert [e["port"] for e in monitor.obj["spec"]["endpoints"]] == [p["name"] for p in service["spec"]["ports"]]
    assert monitor.obj["spec"]["endpoints"][0]["path"] == "/metrics"
    assert monitor.obj["metadata"]["labels"]["release"] == "kube-prometheus"


def test_notes_warn_about_raw_queries() -> None:
    assert "rawQueryNamespaces is \"*\"" in helm.render_notes()
    assert "rawQueryNamespaces is" not in helm.render_notes({"settings": {"rawQueryNamespaces": "platform"}})


# --- RBAC -------------------------------------------------------------------------------------------


def test_no_rbac_wildcards(rendered: tuple[str, list[Manifest]]) -> None:
    _, manifests = rendered
    rules = list(helm.rbac_rules(manifests))
    assert rules
    for role, rule in rules:
        for field in ("verbs", "resources", "apiGroups", "resourceNames", "nonResourceURLs"):
            assert not any("*" in item for item in rule.get(field, [])), (role.kind, role.name, rule)
        assert rule["verbs"] and rule["resources"]


def test_secrets_only_when_enabled(rendered: tuple[str, list[Manifest]]) -> None:
    name, manifests = rendered
    enabled = bool(VALUE_SETS[name].get("kafka", {}).get("secrets", {}).get("enabled"))
    secret_rules = [(role, rule) for role, rule in helm.rbac_rules(manifests) if "secrets" in rule["resources"]]
    assert bool(secret_rules) is enabled
    assert _env(manifests)["SLUICE_KAFKA_SECRETS"] == str(enabled).lower()
    for _, rule in secret_rules:
        assert rule["verbs"] == ["get"]
        assert rule["resources"] == ["secrets"]


def test_secret_names_restrict_the_grant() -> None:
    manifests = helm.render(VALUE_SETS["namespaced-secrets"])
    rules = {role.namespace: rule for role, rule in helm.rbac_rules(manifests) if "secrets" in rule["resources"]}
    assert set(rules) == {"team-a", "kafka-creds"}
    assert all(rule["resourceNames"] == ["kafka-client"] for rule in rules.values())


def _grants(manifests: list[Manifest], kind: str, namespace: str | None = None) -> dict[tuple[str, str], set[str]]:
    """{(apiGroup, resource): verbs} of the chart's Role/ClusterRole of `kind` (in `namespace`)."""
    out: dict[tuple[str, str], set[str]] = {}
    for role, rule in helm.rbac_rules(manifests):
        if role.kind != kind or (namespace is not None and role.namespace != namespace):
            continue
        if role.name.endswith("leader-election"):
            continue
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                out.setdefault((group, resource), set()).update(rule["verbs"])
    return out


# Exactly the calls the operator was seen to make on the real API server (test_zz_rbac_usage.py).
STATUS_VERBS = {"patch"}
CONFIGMAP_VERBS = {"get", "list", "create", "update", "delete"}
EVENT_GRANTS = {("", "events"): {"create"}}
CLUSTER_SCOPED_GRANTS = {
    ("apiextensions.k8s.io", "customresourcedefinitions"): {"list", "watch"},
    ("sluice.dev", "circuitbreakers"): {"get", "list", "watch"},
    ("sluice.dev", "circuitbreakers/status"): STATUS_VERBS,
    ("", "namespaces"): {"list", "watch"},
}
POLICY_GRANTS = {
    ("sluice.dev", "backpressurepolicies"): {"list", "watch"},
    ("sluice.dev", "backpressurepolicies/status"): STATUS_VERBS,
}


def test_cluster_wide_rbac() -> None:
    manifests = helm.render()
    assert _grants(manifests, "ClusterRole") == {
        **CLUSTER_SCOPED_GRANTS, **POLICY_GRANTS, ("", "configmaps"): CONFIGMAP_VERBS, **EVENT_GRANTS,
    }
    assert helm.by_kind(manifests, "Role") == [helm.one(manifests, "Role", namespace=NAMESPACE)]
    lease = helm.one(manifests, "Role", namespace=NAMESPACE).obj
    assert lease["rules"] == [{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
                               "verbs": ["get", "create", "update"]}]
    _assert_bindings(manifests)


def test_namespaced_rbac() -> None:
    manifests = helm.render(VALUE_SETS["namespaced"])
    assert _grants(manifests, "ClusterRole") == CLUSTER_SCOPED_GRANTS
    for namespace in ("team-a", "team-b"):
        assert _grants(manifests, "Role", namespace) == {
            **POLICY_GRANTS, ("", "configmaps"): CONFIGMAP_VERBS, **EVENT_GRANTS,
        }
    assert _grants(manifests, "Role", "team-c") == {("", "configmaps"): CONFIGMAP_VERBS}
    assert _grants(manifests, "Role", NAMESPACE) == EVENT_GRANTS
    role_namespaces = {m.namespace for m in helm.by_kind(manifests, "Role")}
    assert role_namespaces == {"team-a", "team-b", "team-c", NAMESPACE}
    _assert_bindings(manifests)


def test_lease_role_follows_the_lease_namespace() -> None:
    manifests = helm.render({"leaderElection": {"leaseNamespace": "sluice-leases"}})
    lease = helm.one(manifests, "Role", name="sluice-leader-election")
    assert lease.namespace == "sluice-leases"
    assert helm.one(manifests, "RoleBinding", name="sluice-leader-election").namespace == "sluice-leases"


def _assert_bindings(manifests: list[Manifest]) -> None:
    """Every Role/ClusterRole is bound, in its namespace, to the chart's ServiceAccount only."""
    account = helm.one(manifests, "ServiceAccount")
    roles = {(m.kind, m.namespace, m.name) for m in manifests if m.kind in ("Role", "ClusterRole")}
    bound = set()
    for binding in manifests:
        if binding.kind not in ("RoleBinding", "ClusterRoleBinding"):
            continue
        ref = binding.obj["roleRef"]
        bound.add((ref["kind"], binding.namespace if ref["kind"] == "Role" else None, ref["name"]))
        assert binding.obj["subjects"] == [
            {"kind": "ServiceAccount", "name": account.name, "namespace": account.namespace}]
    assert roles == bound


# --- CRDs -------------------------------------------------------------------------------------------


def test_chart_crds_are_byte_identical_to_crds_dir() -> None:
    top = {p.name: p.read_bytes() for p in sorted(helm.CRD_DIR.glob("*.yaml"))}
    chart = {p.name: p.read_bytes() for p in sorted((helm.CHART_DIR / "crds").glob("*.yaml"))}
    assert set(top) == {"sluice.dev_backpressurepolicies.yaml", "sluice.dev_circuitbreakers.yaml"}
    assert chart == top, "chart CRDs drifted: run `make crds`"


def test_helm_sees_the_crds() -> None:
    chart = helm_python.Chart.load(helm.CHART_DIR)
    with chart:
        names = {yaml.safe_load(crd["data"])["metadata"]["name"] for crd in chart.crds}
    assert names == {"backpressurepolicies.sluice.dev", "circuitbreakers.sluice.dev"}


@pytest.mark.parametrize("version", [OLDEST, NEWEST])
def test_crds_validate_against_kubernetes(version: str) -> None:
    for path in sorted((helm.CHART_DIR / "crds").glob("*.yaml")):
        for doc in helm.load_documents(path):
            helm.validate_k8s(doc, version)


# --- Examples ---------------------------------------------------------------------------------------

SLUICE_EXAMPLES = [*sorted(EXAMPLES.glob("*.yaml")), EXAMPLES / "gitops" / "sluice-policies.yaml"]


def _crd_schemas() -> dict[str, dict[str, Any]]:
    out = {}
    for path in helm.CRD_DIR.glob("*.yaml"):
        for crd in helm.load_documents(path):
            [version] = crd["spec"]["versions"]
            out[crd["spec"]["names"]["kind"]] = version["schema"]["openAPIV3Schema"]
    return out


def test_examples_pass_sluice_validate() -> None:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = sluice_main(["validate", *map(str, SLUICE_EXAMPLES)])
    assert code == 0, out.getvalue() + err.getvalue()
    assert out.getvalue().count(" ok\n") >= 8


def test_examples_match_the_crd_schemas() -> None:
    schemas = _crd_schemas()
    for path in SLUICE_EXAMPLES:
        for doc in helm.load_documents(path):
            # CRD schemas are OpenAPI 3.0: draft-04 semantics (boolean exclusiveMinimum).
            jsonschema.Draft4Validator(schemas[doc["kind"]]).validate(_stringify_datetimes(doc))


def _stringify_datetimes(value: Any) -> Any:
    """Unquoted RFC 3339 values load as datetimes in PyYAML; the API server sees strings."""
    if isinstance(value, dict):
        return {k: _stringify_datetimes(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_stringify_datetimes(v) for v in value]
    if hasattr(value, "isoformat"):
        return value.isoformat().replace("+00:00", "Z")
    return value


def _field_paths(model: type[BaseModel], prefix: str = "") -> set[str]:
    """Every wire path of a model's fields, nested models expanded."""
    paths = set()
    for name, field in model.model_fields.items():
        path = f"{prefix}{field.alias or name}"
        paths.add(path)
        for arg in _model_args(field.annotation):
            paths |= _field_paths(arg, path + ".")
    return paths


def _model_args(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in getattr(annotation, "__args__", ()) for m in _model_args(arg)]


def _doc_paths(value: Any, prefix: str = "") -> set[str]:
    paths = set()
    if isinstance(value, dict):
        for key, item in value.items():
            paths.add(prefix + key)
            paths |= _doc_paths(item, prefix + key + ".")
    return paths


def test_policy_full_sets_every_spec_field() -> None:
    docs = helm.load_documents(EXAMPLES / "policy-full.yaml")
    covered = set().union(*(_doc_paths(doc["spec"]) for doc in docs))
    missing = _field_paths(BackpressurePolicySpec) - covered
    assert not missing, f"policy-full.yaml does not show: {sorted(missing)}"


def test_circuit_example_has_a_prometheus_and_a_kafka_signal() -> None:
    docs = helm.load_documents(EXAMPLES / "circuit-breaker.yaml")
    assert [doc["kind"] for doc in docs] == ["CircuitBreaker", "CircuitBreaker"]
    assert [next(iter(doc["spec"]["signal"])) for doc in docs] == ["prometheus", "kafka"]


def test_example_files_are_commented() -> None:
    for path in [*SLUICE_EXAMPLES, *EXAMPLES.glob("gitops/*.yaml"), *EXAMPLES.glob("producer/*.yaml")]:
        text = path.read_text()
        assert text.lstrip().startswith("#"), path
        assert text.count("#") >= 5, path


PRODUCER = EXAMPLES / "producer" / "producer-deployment.yaml"


@pytest.mark.parametrize("version", [OLDEST, NEWEST])
def test_producer_example_is_valid_kubernetes(version: str) -> None:
    docs = helm.load_documents(PRODUCER)
    assert [d["kind"] for d in docs] == ["Deployment", "ServiceAccount", "Role", "RoleBinding"]
    for doc in docs:
        helm.validate_k8s(doc, version)


def test_producer_example_reads_the_published_configmaps() -> None:
    policy = helm.load_documents(EXAMPLES / "policy-minimal.yaml")[0]
    circuit = helm.load_documents(EXAMPLES / "circuit-breaker.yaml")[0]
    wanted = {f"sluice-{policy['metadata']['name']}", f"sluice-circuit-{circuit['metadata']['name']}"}
    deployment, _, role, _ = helm.load_documents(PRODUCER)
    pod = deployment["spec"]["template"]["spec"]
    mounted = {v["configMap"]["name"]: v["name"] for v in pod["volumes"] if "configMap" in v}
    assert set(mounted) == wanted
    mounts = {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
    assert mounts[mounted[f"sluice-{policy['metadata']['name']}"]] == "/etc/sluice/decisions"
    [rule] = role["rules"]
    assert rule["resources"] == ["configmaps"]
    assert set(rule["resourceNames"]) == wanted
    assert set(rule["verbs"]) == {"get", "list", "watch"}


def test_gitops_kustomization_lists_existing_files() -> None:
    gitops = EXAMPLES / "gitops"
    kustomization = yaml.safe_load((gitops / "kustomization.yaml").read_text())
    assert kustomization["kind"] == "Kustomization"
    for resource in kustomization["resources"]:
        assert (gitops / resource).is_file(), resource
    apps = helm.load_documents(gitops / "argocd-application.yaml")
    assert {a["kind"] for a in apps} == {"Application"}
    paths = {a["spec"]["source"]["path"] for a in apps}
    assert paths == {"charts/sluice", "examples/gitops"}
    for path in paths:
        assert (helm.REPO_ROOT / path).is_dir()


def test_gitops_kustomization_builds(tmp_path: Path) -> None:
    kubectl = str(k8s_bin_dir() / "kubectl")  # the real kubectl `make k8s` builds (kustomize built in)
    built = subprocess.run([kubectl, "kustomize", str(EXAMPLES / "gitops")], capture_output=True,
                           text=True, timeout=60, check=True).stdout
    out = tmp_path / "built.yaml"
    out.write_text(built)
    assert sluice_main(["validate", str(out)]) == 0
    kinds = sorted(doc["kind"] for doc in yaml.safe_load_all(built) if doc)
    assert kinds == ["BackpressurePolicy", "CircuitBreaker"]
