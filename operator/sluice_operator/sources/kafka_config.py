"""Kafka client settings: which librdkafka properties a tenant's Secret may set, and redaction.

Kept apart from the lag reader so the rules a security review reads are in one short file. Pure:
no client is created here.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping

__all__ = ["ALLOWED_SECRET_PROPERTIES", "KafkaSecretError", "base_client_config", "kafka_config_from_secret", "redact"]


#: librdkafka properties a Secret may set (a tenant-controlled Secret must not reach properties
#: that load libraries or run commands, such as ``plugin.library.paths`` or ``sasl.kerberos.kinit.cmd``).
ALLOWED_SECRET_PROPERTIES = frozenset(
    {
        "security.protocol",
        "sasl.mechanism",
        "sasl.mechanisms",
        "sasl.username",
        "sasl.password",
        "sasl.oauthbearer.method",
        "sasl.oauthbearer.client.id",
        "sasl.oauthbearer.client.secret",
        "sasl.oauthbearer.scope",
        "sasl.oauthbearer.extensions",
        "sasl.oauthbearer.token.endpoint.url",
        "ssl.ca.pem",
        "ssl.certificate.pem",
        "ssl.key.pem",
        "ssl.key.password",
        "ssl.endpoint.identification.algorithm",
        "ssl.cipher.suites",
        "ssl.curves.list",
        "ssl.sigalgs.list",
        "client.id",
    }
)

#: Friendly Secret keys -> librdkafka properties (``tls.crt``/``tls.key``/``ca.crt`` as cert-manager writes them).
SECRET_KEY_ALIASES: Mapping[str, str] = {
    "username": "sasl.username",
    "password": "sasl.password",
    "mechanism": "sasl.mechanism",
    "securityProtocol": "security.protocol",
    "ca.crt": "ssl.ca.pem",
    "tls.crt": "ssl.certificate.pem",
    "tls.key": "ssl.key.pem",
}



class KafkaSecretError(ValueError):
    """The Secret holding Kafka client settings cannot be used as it is."""


def kafka_config_from_secret(data: Mapping[str, str]) -> dict[str, str]:
    """Decode a Secret's base64 ``data`` into librdkafka properties.

    Keys are either allowed librdkafka property names (passed through) or the
    aliases in :data:`SECRET_KEY_ALIASES`. Anything else is refused by name,
    so a typo is visible instead of silently ignored.
    """
    config: dict[str, str] = {}
    refused: list[str] = []
    for key, encoded in data.items():
        prop = SECRET_KEY_ALIASES.get(key, key)
        if prop not in ALLOWED_SECRET_PROPERTIES:
            refused.append(key)
            continue
        try:
            value = base64.b64decode(encoded, validate=True).decode("utf-8")
        except (binascii.Error, ValueError) as exc:
            raise KafkaSecretError(f"Secret key {key!r} is not base64-encoded UTF-8 text") from exc
        if prop in config and config[prop] != value:
            raise KafkaSecretError(f"Secret sets {prop!r} twice with different values (key {key!r})")
        config[prop] = value
    if refused:
        allowed = sorted(ALLOWED_SECRET_PROPERTIES | set(SECRET_KEY_ALIASES))
        raise KafkaSecretError(f"Secret keys not allowed: {sorted(refused)}; allowed: {allowed}")
    return config


def base_client_config(bootstrap_servers: str, extra: Mapping[str, str] | None, client_id: str) -> dict[str, str]:
    """Client settings shared by the lag source and the health probe; ``bootstrap.servers`` always wins."""
    config = {
        "client.id": client_id,
        "allow.auto.create.topics": "false",  # reading must never create a topic
        "reconnect.backoff.max.ms": "1000",  # notice a recovered cluster within a second
        "log.connection.close": "false",
    }
    config.update(extra or {})
    config["bootstrap.servers"] = bootstrap_servers
    return config


_SENSITIVE_PROPERTIES = ("sasl.password", "sasl.oauthbearer.client.secret", "ssl.key.pem", "ssl.key.password")


def redact(text: str, config: Mapping[str, str] | None) -> str:
    """``text`` with the values of secret properties replaced (client errors may echo config values)."""
    for prop in _SENSITIVE_PROPERTIES:
        value = (config or {}).get(prop)
        if value:
            text = text.replace(value, "***")
    return text
