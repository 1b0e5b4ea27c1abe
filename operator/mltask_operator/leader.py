"""Leader election over a coordination.k8s.io Lease: of several replicas only the holder works.

Kopf's peering is not leader election (replicas of equal priority all freeze), so the operator
does what kube-controller-manager and controller-runtime do: hold a Lease, renew it, and exit
when it cannot, so a standby replica takes over once the Lease expires.
"""

from __future__ import annotations

import datetime
import logging
import threading
from collections.abc import Callable
from typing import Any

from kubernetes import client

log = logging.getLogger(__name__)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _micro_time(t: datetime.datetime) -> str:
    return t.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def may_hold(holder: str | None, renewed: datetime.datetime | None, duration: int | None,
             identity: str, now: datetime.datetime) -> bool:
    """Pure: may `identity` take or keep a Lease held by `holder`, last renewed at `renewed`?"""
    if not holder or holder == identity:
        return True
    if renewed is None:
        return True
    return now > renewed + datetime.timedelta(seconds=duration or 0)


class LeaseElector:
    def __init__(self, api: client.ApiClient, namespace: str, name: str, identity: str,
                 lease_seconds: int = 15, clock: Callable[[], datetime.datetime] = _now) -> None:
        self.leases = client.CoordinationV1Api(api)
        self.namespace, self.name, self.identity = namespace, name, identity
        self.lease_seconds = lease_seconds
        self.clock = clock

    @property
    def retry_seconds(self) -> float:
        return max(self.lease_seconds / 3, 1.0)

    def _body(self, now: datetime.datetime, acquired: datetime.datetime,
              transitions: int, resource_version: str | None = None) -> dict[str, Any]:
        meta: dict[str, Any] = {"name": self.name, "namespace": self.namespace}
        if resource_version:
            meta["resourceVersion"] = resource_version
        return {
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta,
            "spec": {"holderIdentity": self.identity,
                     "leaseDurationSeconds": self.lease_seconds,
                     "acquireTime": _micro_time(acquired), "renewTime": _micro_time(now),
                     "leaseTransitions": transitions},
        }

    def try_acquire(self) -> bool:
        """Take or renew the Lease; False if someone else holds it or a write raced us."""
        now = self.clock()
        try:
            lease = self.leases.read_namespaced_lease(self.name, self.namespace)
        except client.ApiException as e:
            if e.status != 404:
                raise
            try:
                self.leases.create_namespaced_lease(self.namespace, self._body(now, now, 0))
                return True
            except client.ApiException as e2:
                if e2.status == 409:
                    return False
                raise
        spec = lease.spec
        if not may_hold(spec.holder_identity, spec.renew_time, spec.lease_duration_seconds,
                        self.identity, now):
            return False
        mine = spec.holder_identity == self.identity
        acquired = spec.acquire_time if mine and spec.acquire_time else now
        transitions = (spec.lease_transitions or 0) + (0 if mine else 1)
        try:
            self.leases.replace_namespaced_lease(
                self.name, self.namespace,
                self._body(now, acquired, transitions, lease.metadata.resource_version))
            return True
        except client.ApiException as e:
            if e.status == 409:
                return False
            raise

    def release(self) -> None:
        """Give the Lease up at shutdown so a standby takes over at once."""
        try:
            lease = self.leases.read_namespaced_lease(self.name, self.namespace)
            if lease.spec.holder_identity != self.identity:
                return
            self.leases.patch_namespaced_lease(self.name, self.namespace, {
                "metadata": {"resourceVersion": lease.metadata.resource_version},
                "spec": {"holderIdentity": None, "renewTime": None, "acquireTime": None}})
            log.info("Released Lease %s/%s", self.namespace, self.name)
        except client.ApiException as e:
            log.warning("Could not release Lease %s/%s: %s", self.namespace, self.name,
                        e.reason)

    def wait_until_leader(self, stop: threading.Event) -> bool:
        """Block until this replica holds the Lease (True), or `stop` is set (False)."""
        logged = False
        while not stop.is_set():
            try:
                if self.try_acquire():
                    log.info("Acquired Lease %s/%s as %s", self.namespace, self.name,
                             self.identity)
                    return True
            except client.ApiException as e:
                log.warning("Lease %s/%s: %s", self.namespace, self.name, e.reason)
            if not logged:
                log.info("Standing by: Lease %s/%s is held by another replica", self.namespace,
                         self.name)
                logged = True
            stop.wait(self.retry_seconds)
        return False

    def keep_renewing(self, on_lost: Callable[[], None], stop: threading.Event) -> threading.Thread:
        """Renew in the background; call `on_lost` once the Lease could not be renewed for
        longer than its duration (another replica may hold it by then)."""

        def loop() -> None:
            last_ok = self.clock()
            while not stop.wait(self.retry_seconds):
                try:
                    if self.try_acquire():
                        last_ok = self.clock()
                        continue
                    reason = "held by another replica"
                except Exception as e:  # noqa: BLE001 - any failure counts as not renewed
                    reason = str(e)
                if (self.clock() - last_ok).total_seconds() >= self.lease_seconds:
                    log.error("Lost Lease %s/%s (%s); stopping", self.namespace, self.name,
                              reason)
                    on_lost()
                    return

        thread = threading.Thread(target=loop, name="lease-renewer", daemon=True)
        thread.start()
        return thread
