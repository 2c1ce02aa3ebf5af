"""Decision sources: where a producer gets its Decision and CircuitState documents.

`DecisionSource` and `StaticDecisions` (base), `DirectoryDecisions` (a mounted ConfigMap or local
mode's directory) and `ConfigMapDecisions` (the Kubernetes API watch). Importing this package does not
import the kubernetes client; creating a `ConfigMapDecisions` does.
"""

from sluice.sources.base import DecisionSource, SourceView, StaticDecisions
from sluice.sources.configmap import ConfigMapDecisions
from sluice.sources.directory import DirectoryDecisions

__all__ = ["ConfigMapDecisions", "DecisionSource", "DirectoryDecisions", "SourceView", "StaticDecisions"]
