"""Which namespaces exist, their labels and whether they are terminating: what circuits select from.

In a cluster the view follows the namespace watch; in local mode a namespace exists when a loaded
policy lives in it or a circuit lists it, and carries only the label Kubernetes puts on every
namespace (`kubernetes.io/metadata.name`), so a namespaceSelector on that label works locally too.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

#: The label Kubernetes sets on every namespace (its own name); the only one local namespaces have.
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"

View = tuple[Mapping[str, Mapping[str, str]], frozenset[str]]


class NamespaceView:
    """Namespace labels and phase as the watch reports them."""

    def __init__(self) -> None:
        self.labels: dict[str, dict[str, str]] = {}
        self.terminating: set[str] = set()

    def on_event(self, type_: str, name: str, obj: Mapping[str, Any]) -> bool:
        """Track one watch event; True when circuits should re-evaluate their targets."""
        before = (self.labels.get(name), name in self.terminating)
        if type_ == "DELETED":
            self.labels.pop(name, None)
            self.terminating.discard(name)
        else:
            self.labels[name] = dict((obj.get("metadata") or {}).get("labels") or {})
            if (obj.get("status") or {}).get("phase") == "Terminating":
                self.terminating.add(name)
            else:
                self.terminating.discard(name)
        return before != (self.labels.get(name), name in self.terminating)

    def view(self) -> View:
        return self.labels, frozenset(self.terminating)

    def replace(self, names: Iterable[str]) -> None:
        """Local mode: exactly these namespaces, each labelled with its own name."""
        self.labels = {ns: {NAMESPACE_NAME_LABEL: ns} for ns in sorted(set(names))}
        self.terminating.clear()
