"""Lease-based leader election (coordination.k8s.io/v1), the way controller-runtime does it.

Kopf's peering only pauses operators of lower priority; it does not elect one. Here every replica
competes for one Lease; only the holder runs Kopf. Expiry is judged on the local monotonic clock from
when we last saw the Lease change (as client-go does), so clock skew between nodes cannot shorten it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass, field
from typing import Any

from sluice_operator.engine.clock import rfc3339
from sluice_operator.kube import ApiError, KubeClient, resource_path

log = logging.getLogger(__name__)


def _micro_time() -> str:
    return rfc3339(micro=True)


@dataclass(eq=False)
class LeaderElector:
    """Acquire, renew and release one Lease; `leading` is false the moment renewal cannot be proven."""

    client: KubeClient
    _: KW_ONLY
    namespace: str
    name: str
    identity: str
    duration: float = 15.0
    renew_every: float = 5.0
    clock: Callable[[], float] = time.monotonic
    _observed: tuple[str, str] | None = field(default=None, init=False)  # (holder, renewTime) last seen
    _observed_at: float = field(default=0.0, init=False)
    _renewed_at: float | None = field(default=None, init=False)
    transitions: int = field(default=0, init=False)

    @property
    def path(self) -> str:
        return resource_path("coordination.k8s.io/v1", "leases", namespace=self.namespace, name=self.name)

    @property
    def leading(self) -> bool:
        """True while our last successful renewal is younger than the lease duration."""
        return self._renewed_at is not None and self.clock() - self._renewed_at < self.duration

    def _spec(self, transitions: int, acquire_time: str | None) -> dict[str, Any]:
        now = _micro_time()
        return {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": max(1, round(self.duration)),
            "acquireTime": acquire_time or now,
            "renewTime": now,
            "leaseTransitions": transitions,
        }

    async def try_acquire_or_renew(self) -> bool:
        """One attempt; True when we hold the Lease afterwards."""
        started = self.clock()
        try:
            lease = await self.client.get(self.path)
        except ApiError as error:
            if not error.not_found:
                raise
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": self._spec(0, None),
            }
            try:
                collection = resource_path("coordination.k8s.io/v1", "leases", namespace=self.namespace)
                await self.client.create(collection, body)
            except ApiError as create_error:
                if create_error.conflict:
                    return False  # another replica created it first
                raise
            self._renewed_at = started
            return True

        spec = lease.get("spec") or {}
        holder = str(spec.get("holderIdentity") or "")
        record = (holder, str(spec.get("renewTime") or ""))
        if record != self._observed:
            self._observed = record
            self._observed_at = started
        duration = float(spec.get("leaseDurationSeconds") or self.duration)
        ours = holder == self.identity
        expired = not holder or started - self._observed_at >= duration
        if not ours and not expired:
            return False
        transitions = int(spec.get("leaseTransitions") or 0) + (0 if ours else 1)
        acquire_time = spec.get("acquireTime") if ours else None
        body = dict(lease)
        body["spec"] = self._spec(transitions, acquire_time)
        try:
            updated = await self.client.replace(self.path, body)
        except ApiError as error:
            if error.conflict:
                return False  # somebody renewed or took it between our read and write
            raise
        new_spec = updated.get("spec") or {}
        self._observed = (self.identity, str(new_spec.get("renewTime") or ""))
        self._observed_at = started
        self._renewed_at = started
        if not ours:
            self.transitions = transitions
            log.info("acquired leader lease %s/%s as %s", self.namespace, self.name, self.identity)
        return True

    async def acquire(self, stop: asyncio.Event, on_attempt: Callable[[], None] | None = None) -> bool:
        """Wait until we lead (True) or `stop` is set (False)."""
        while not stop.is_set():
            try:
                if await self.try_acquire_or_renew():
                    return True
            except (ApiError, OSError, TimeoutError) as error:
                log.warning("leader election attempt failed: %s", error)
            if on_attempt:
                on_attempt()
            try:
                await asyncio.wait_for(stop.wait(), timeout=self.renew_every)
            except TimeoutError:
                pass
        return False

    async def hold(self, stop: asyncio.Event) -> None:
        """Renew until `stop` is set or leadership is lost; returns at once on loss."""
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), timeout=self.renew_every)
                return
            except TimeoutError:
                pass
            try:
                renewed = await asyncio.wait_for(self.try_acquire_or_renew(), timeout=max(1.0, self.renew_every))
            except (ApiError, OSError, TimeoutError) as error:
                log.warning("lease renewal failed: %s", error)
                renewed = self.leading
            if not renewed or not self.leading:
                self._renewed_at = None
                log.error("lost leader lease %s/%s; stopping all handlers", self.namespace, self.name)
                return

    async def release(self) -> None:
        """Hand the Lease over at once on a clean shutdown (standbys need not wait for expiry)."""
        if self._renewed_at is None:
            return
        self._renewed_at = None
        try:
            lease = await self.client.get(self.path)
            if (lease.get("spec") or {}).get("holderIdentity") != self.identity:
                return
            lease["spec"]["holderIdentity"] = ""
            lease["spec"]["leaseDurationSeconds"] = 1
            await self.client.replace(self.path, lease)
        except (ApiError, OSError, TimeoutError) as error:
            log.warning("could not release lease: %s", error)
