"""The resource types the emulator serves: the built-ins Kopf and Sluice touch, plus Sluice's CRDs.

A `ResourceSpec` carries exactly what discovery advertises and what changes server behaviour
(scope, status subresource, whether `metadata.generation` is maintained, extra field selectors).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

ALL_VERBS: tuple[str, ...] = (
    "create", "delete", "deletecollection", "get", "list", "patch", "update", "watch",
)

# Fields every resource accepts in a fieldSelector.
COMMON_FIELDS: frozenset[str] = frozenset({"metadata.name", "metadata.namespace"})

EVENT_FIELDS: frozenset[str] = frozenset({
    "involvedObject.kind", "involvedObject.namespace", "involvedObject.name", "involvedObject.uid",
    "involvedObject.apiVersion", "involvedObject.resourceVersion", "involvedObject.fieldPath",
    "reason", "reportingComponent", "source", "type",
    "regarding.kind", "regarding.namespace", "regarding.name", "regarding.uid",
})


@dataclass(frozen=True)
class ResourceSpec:
    """One served resource (group/version/plural) with its discovery data and server semantics."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    singular: str = ""
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    status_subresource: bool = False
    has_generation: bool = False  # CRs and CRDs maintain metadata.generation; ConfigMaps don't
    verbs: tuple[str, ...] = ALL_VERBS
    field_selectors: frozenset[str] = field(default=COMMON_FIELDS)

    @property
    def api_version(self) -> str:
        """`v1` for the core group, `group/version` otherwise."""
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def list_kind(self) -> str:
        """The kind of list responses, e.g. ConfigMapList."""
        return f"{self.kind}List"

    @property
    def singular_name(self) -> str:
        """The singular name (lowercase kind when not given)."""
        return self.singular or self.kind.lower()

    @property
    def qualified(self) -> str:
        """`plural.group` (or just plural for the core group), as used in API messages."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def subresources(self) -> frozenset[str]:
        """Subresources advertised in discovery."""
        return frozenset({"status"}) if self.status_subresource else frozenset()


NAMESPACES = ResourceSpec("", "v1", "namespaces", "Namespace", namespaced=False, short_names=("ns",),
                          status_subresource=True,
                          field_selectors=COMMON_FIELDS | {"status.phase"})
CONFIGMAPS = ResourceSpec("", "v1", "configmaps", "ConfigMap", namespaced=True, short_names=("cm",))
SECRETS = ResourceSpec("", "v1", "secrets", "Secret", namespaced=True,
                       field_selectors=COMMON_FIELDS | {"type"})
CORE_EVENTS = ResourceSpec("", "v1", "events", "Event", namespaced=True, short_names=("ev",),
                           field_selectors=COMMON_FIELDS | EVENT_FIELDS)
EVENTS_K8S = ResourceSpec("events.k8s.io", "v1", "events", "Event", namespaced=True, short_names=("ev",),
                          field_selectors=COMMON_FIELDS | EVENT_FIELDS)
LEASES = ResourceSpec("coordination.k8s.io", "v1", "leases", "Lease", namespaced=True)
CRDS = ResourceSpec("apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition",
                    namespaced=False, short_names=("crd", "crds"), categories=("api-extensions",),
                    status_subresource=True, has_generation=True)
BACKPRESSURE_POLICIES = ResourceSpec("sluice.dev", "v1alpha1", "backpressurepolicies", "BackpressurePolicy",
                                     namespaced=True, short_names=("bpp",), categories=("sluice",),
                                     status_subresource=True, has_generation=True)
CIRCUIT_BREAKERS = ResourceSpec("sluice.dev", "v1alpha1", "circuitbreakers", "CircuitBreaker",
                                namespaced=False, short_names=("cb",), categories=("sluice",),
                                status_subresource=True, has_generation=True)

BUILTIN_RESOURCES: tuple[ResourceSpec, ...] = (
    NAMESPACES, CONFIGMAPS, SECRETS, CORE_EVENTS, EVENTS_K8S, LEASES, CRDS,
)
SLUICE_RESOURCES: tuple[ResourceSpec, ...] = (BACKPRESSURE_POLICIES, CIRCUIT_BREAKERS)
DEFAULT_RESOURCES: tuple[ResourceSpec, ...] = BUILTIN_RESOURCES + SLUICE_RESOURCES


def specs_from_crd(crd: Mapping[str, Any]) -> list[ResourceSpec]:
    """The served versions of an apiextensions.k8s.io/v1 CRD body, as resource specs.

    This is what lets a test POST the generated `crds/*.yaml` and see the resource in discovery.
    """
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    group = str(spec.get("group", ""))
    plural = str(names.get("plural", ""))
    kind = str(names.get("kind", ""))
    if not group or not plural or not kind:
        return []
    result: list[ResourceSpec] = []
    versions: Iterable[Mapping[str, Any]] = spec.get("versions") or []
    for version in versions:
        if not version.get("served", True):
            continue
        subresources = version.get("subresources") or {}
        result.append(ResourceSpec(
            group=group,
            version=str(version.get("name", "")),
            plural=plural,
            kind=kind,
            namespaced=spec.get("scope", "Namespaced") == "Namespaced",
            singular=str(names.get("singular", "")),
            short_names=tuple(names.get("shortNames") or ()),
            categories=tuple(names.get("categories") or ()),
            status_subresource="status" in subresources,
            has_generation=True,
        ))
    return result
