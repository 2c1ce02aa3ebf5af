"""Where decisions go: ConfigMaps in the cluster, or files in a directory (local mode)."""

from sluice_operator.publish.outcome import PublishOutcome, PublishResult

__all__ = ["PublishOutcome", "PublishResult"]
