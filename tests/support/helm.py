"""Render, lint and check the Helm chart without a helm binary or a cluster.

`helm-python-sdk` bundles Helm's own Go engine (libhelm_c), so rendering, `values.schema.json`
validation and lint behave exactly as `helm template` / `helm lint` do. `kubernetes-validate` holds the
Kubernetes OpenAPI schemas per minor version, so rendered manifests are checked the way an API server's
schema check would (strict: unknown fields are errors).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import helm_python
import kubernetes_validate
import yaml
from packaging.version import Version

__all__ = [
    "CHART_DIR",
    "CRD_DIR",
    "REPO_ROOT",
    "LintReport",
    "Manifest",
    "by_kind",
    "container",
    "k8s_versions",
    "lint",
    "load_documents",
    "one",
    "rbac_rules",
    "render",
    "render_notes",
    "validate_k8s",
]

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART_DIR = REPO_ROOT / "charts" / "sluice"
CRD_DIR = REPO_ROOT / "crds"
RELEASE = "sluice"
NAMESPACE = "sluice-system"
#: The oldest Kubernetes minor the tests hold the chart to (besides the newest one the library ships).
OLDEST_K8S = "1.29"
NOTES = "NOTES.txt"


@dataclass(frozen=True)
class Manifest:
    """One rendered Kubernetes object and the template it came from."""

    template: str
    obj: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.obj.get("kind", ""))

    @property
    def api_version(self) -> str:
        return str(self.obj.get("apiVersion", ""))

    @property
    def name(self) -> str:
        return str(self.obj.get("metadata", {}).get("name", ""))

    @property
    def namespace(self) -> str | None:
        namespace = self.obj.get("metadata", {}).get("namespace")
        return None if namespace is None else str(namespace)


@dataclass(frozen=True)
class LintReport:
    """`helm lint` findings; severity 1 info, 2 warning, 3 error (Helm's numbering)."""

    messages: list[dict[str, Any]]
    errors: list[str]

    @property
    def clean(self) -> bool:
        return not self.messages and not self.errors


@functools.cache
def _chart() -> helm_python.Chart:
    # Loaded once per test session; a Chart handle is immutable and thread-safe.
    return helm_python.Chart.load(CHART_DIR)


def _render_raw(values: Mapping[str, Any] | None, release: str, namespace: str) -> dict[str, str]:
    return _chart().render(dict(values) if values is not None else None, name=release, namespace=namespace,
                           is_install=True)


def render(values: Mapping[str, Any] | None = None, *, release: str = RELEASE,
           namespace: str = NAMESPACE) -> list[Manifest]:
    """Every object the chart renders (NOTES.txt and empty documents left out).

    Raises helm_python.HelmValuesError when values.schema.json rejects `values`, and
    helm_python.HelmRenderError when a template fails (e.g. a `fail` with a message).
    """
    manifests: list[Manifest] = []
    for template, text in sorted(_render_raw(values, release, namespace).items()):
        if template.endswith(NOTES):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                manifests.append(Manifest(template, cast(dict[str, Any], doc)))
    return manifests


def render_notes(values: Mapping[str, Any] | None = None, *, release: str = RELEASE,
                 namespace: str = NAMESPACE) -> str:
    """The rendered NOTES.txt shown after `helm install`."""
    rendered = _render_raw(values, release, namespace)
    return next(text for template, text in rendered.items() if template.endswith(NOTES))


def lint(values: Mapping[str, Any] | None = None, *, kube_version: str = OLDEST_K8S) -> LintReport:
    """`helm lint --strict` of the chart with `values` against a Kubernetes version."""
    report = helm_python.lint(CHART_DIR, dict(values) if values is not None else None, strict=True,
                              namespace=NAMESPACE, kube_version=f"v{kube_version}.0")
    return LintReport(list(report.get("messages") or []), list(report.get("errors") or []))


def k8s_versions() -> tuple[str, str]:
    """(oldest supported, newest shipped by kubernetes-validate) as major.minor strings."""
    versions = cast(list[str], kubernetes_validate.utils.all_versions())
    newest = max(versions, key=Version)
    return OLDEST_K8S, ".".join(newest.split(".")[:2])


def validate_k8s(obj: Mapping[str, Any], version: str) -> None:
    """Validate one object strictly against Kubernetes `version`'s schema.

    Raises kubernetes_validate.ValidationError (with `.path` and `.message`) when invalid, and
    kubernetes_validate.SchemaNotFoundError for kinds the library has no schema for.
    """
    kubernetes_validate.validate(dict(obj), version, strict=True)


def load_documents(path: Path) -> list[dict[str, Any]]:
    """The non-empty YAML documents of a file."""
    with path.open(encoding="utf-8") as handle:
        return [cast(dict[str, Any], doc) for doc in yaml.safe_load_all(handle) if doc]


def by_kind(manifests: Iterable[Manifest], kind: str) -> list[Manifest]:
    return [m for m in manifests if m.kind == kind]


def one(manifests: Iterable[Manifest], kind: str, name: str | None = None,
        namespace: str | None = None) -> Manifest:
    """The single manifest of `kind` (and name / namespace); fails loudly when there are 0 or several."""
    found = [m for m in by_kind(manifests, kind)
             if (name is None or m.name == name) and (namespace is None or m.namespace == namespace)]
    if len(found) != 1:
        raise AssertionError(f"expected one {kind} {name or ''} {namespace or ''}, found {len(found)}")
    return found[0]


def container(manifests: Iterable[Manifest], name: str = "operator") -> dict[str, Any]:
    """The named container of the chart's Deployment."""
    deployment = one(manifests, "Deployment")
    containers = cast(list[dict[str, Any]], deployment.obj["spec"]["template"]["spec"]["containers"])
    return next(c for c in containers if c["name"] == name)


def rbac_rules(manifests: Iterable[Manifest]) -> Iterator[tuple[Manifest, dict[str, Any]]]:
    """Every (Role or ClusterRole, rule) pair."""
    for manifest in manifests:
        if manifest.kind in ("Role", "ClusterRole"):
            for rule in manifest.obj.get("rules") or []:
                yield manifest, cast(dict[str, Any], rule)
