"""Object names and label values for any legal name length, deterministic and collision-free.

A BackpressurePolicy or CircuitBreaker name may be up to 253 characters (a DNS subdomain), but a label
value holds at most 63 and `sluice-<name>` may overflow 253. Short names are used as they are; a long
one keeps a readable prefix and ends in `-` plus the first 10 hex digits of the SHA-256 of the whole
name, so two long names that share a prefix still differ. The full name is also kept in an annotation.
"""

from __future__ import annotations

import hashlib

LABEL_VALUE_MAX = 63
OBJECT_NAME_MAX = 253
HASH_DIGITS = 10
POLICY_CONFIGMAP_PREFIX = "sluice-"
CIRCUIT_CONFIGMAP_PREFIX = "sluice-circuit-"


def _digest(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()[:HASH_DIGITS]


def bounded(name: str, limit: int) -> str:
    """`name` when it fits in `limit` characters, else a prefix of it, '-', and a hash of all of it."""
    if len(name) <= limit:
        return name
    keep = name[: limit - HASH_DIGITS - 1].rstrip(".-")
    return f"{keep}-{_digest(name)}"


def label_value(name: str) -> str:
    """The value of `sluice.dev/policy` / `sluice.dev/circuit` for an object called `name`."""
    return bounded(name, LABEL_VALUE_MAX)


def policy_configmap(policy: str) -> str:
    """The default ConfigMap of a policy (`spec.output.configMapName` overrides it)."""
    return bounded(POLICY_CONFIGMAP_PREFIX + policy, OBJECT_NAME_MAX)


def circuit_configmap(circuit: str) -> str:
    """The ConfigMap a CircuitBreaker publishes in every namespace it selects."""
    return bounded(CIRCUIT_CONFIGMAP_PREFIX + circuit, OBJECT_NAME_MAX)
