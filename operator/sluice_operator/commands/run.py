"""`sluice run`: the operator in a cluster (default) or on one machine (`--local`)."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

import yaml

from sluice_operator import logs
from sluice_operator.settings import Settings, SettingsError

log = logging.getLogger("sluice_operator")


def _settings(args: argparse.Namespace) -> Settings | None:
    try:
        settings = Settings.from_env()
    except SettingsError as error:
        print(f"sluice run: invalid setting: {error}", file=sys.stderr)
        return None
    if args.prometheus:
        prometheus = dataclasses.replace(settings.prometheus, url=args.prometheus.rstrip("/"))
        settings = dataclasses.replace(settings, prometheus=prometheus)
    if args.namespace:
        scope = dataclasses.replace(settings.scope, watch_namespaces=tuple(args.namespace))
        settings = dataclasses.replace(settings, scope=scope)
    if args.verbose:
        settings = dataclasses.replace(settings, logging=dataclasses.replace(settings.logging, level="DEBUG"))
    return settings


def _connection() -> object:
    """Find the cluster the way kubectl does: in-cluster service account, else the kubeconfig."""
    import kopf
    from kopf._core.intents.piggybacking import login_via_client

    return login_via_client(logger=logging.getLogger("sluice_operator.login"), settings=kopf.OperatorSettings())


def _token_path() -> str | None:
    """The token file behind those credentials, re-read when it changes (projected tokens rotate).

    In a pod: the ServiceAccount token the kubelet refreshes. Outside: the kubeconfig user's `tokenFile`.
    """
    from sluice_operator.kube import IN_CLUSTER_TOKEN

    if os.environ.get("KUBERNETES_SERVICE_HOST") and Path(IN_CLUSTER_TOKEN).exists():
        return IN_CLUSTER_TOKEN
    paths = [p for p in os.environ.get("KUBECONFIG", "").split(os.pathsep) if p] or [
        str(Path.home() / ".kube" / "config")]
    for path in paths:
        try:
            config: Any = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError):
            continue
        context = next((c.get("context") or {} for c in config.get("contexts") or []
                        if c.get("name") == config.get("current-context")), {})
        user = next((u.get("user") or {} for u in config.get("users") or [] if u.get("name") == context.get("user")),
                    {})
        if user.get("tokenFile"):
            return str(Path(path).parent / str(user["tokenFile"]))
    return None


async def _cluster(settings: Settings) -> int:
    from sluice_operator.kube import Connection, KubeClient
    from sluice_operator.manager import Manager
    from sluice_operator.wiring import build_signals

    info = _connection()
    if info is None:
        print("sluice run: no Kubernetes credentials found: set KUBECONFIG, or run in a pod with a "
              "service account (or use --local)", file=sys.stderr)
        return 2
    connection = Connection.from_kopf(info, token_path=_token_path())
    signals = build_signals(settings, client=KubeClient(connection))
    runtime = Manager(settings, connection, signals=signals)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    log.info("starting: prometheus=%s namespaces=%s leader-election=%s", settings.prometheus.url,
             ",".join(settings.scope.watch_namespaces) or "(cluster-wide)", settings.leader.enabled)
    return await runtime.run(stop, namespaces=settings.scope.watch_namespaces)


def run(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if settings is None:
        return 2
    logs.setup(settings.logging.level, "text" if args.local and sys.stderr.isatty() else settings.logging.format)
    if args.local:
        from sluice_operator.local import run_local

        return run_local(args, settings)
    return asyncio.run(_cluster(settings))
