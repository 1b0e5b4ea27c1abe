"""Leader election over a coordination.k8s.io Lease: of several replicas only the holder works.

Kopf's peering is not leader election (replicas of equal priority all freeze), so the operator
does what client-go's leaderelection does for kube-controller-manager: hold a Lease, renew it
every retry period, and give up once it has not renewed within the renew deadline (2/3 of the
Lease), which is before a standby may take the Lease over (the full Lease after the last renew).
Every Lease call carries a request timeout, so a hanging API server cannot hold the leader past
its deadline either.

A Lease that is free (released at shutdown, or expired) goes to a warm standby first. A replica
that had been trying for less than WARM_RETRIES retry periods when it first found the Lease free
takes it only once it has found it free for WARM_RETRIES retry periods: a standby, which tries
every retry period, would have taken it by then. When a leader pod is deleted, its Deployment
starts a replacement at once, which would otherwise race the standby that has been waiting (and
win whenever it tries first).
"""

from __future__ import annotations

import copy
import datetime
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from kubernetes import client

log = logging.getLogger(__name__)

#: A standby whose Lease calls failed this many times in a row (403, 500, timeouts; not a
#: 409 race) reports unhealthy, so the kubelet restarts it and the failure shows.
STANDBY_ERROR_LIMIT = 5
#: A replica trying for this many retry periods is warm: it takes a free Lease at once. One
#: that was not warm when it found the Lease free waits until it has found it free this long.
WARM_RETRIES = 2


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


def may_take(holder: str | None, renewed: datetime.datetime | None, duration: int | None,
             identity: str, now: datetime.datetime, warm: bool, free_for: float,
             retry_seconds: float) -> bool:
    """Pure: may `identity` take or keep the Lease? As `may_hold`, except for a free Lease (no
    holder, or expired): a replica that was `warm` (trying for WARM_RETRIES retry periods) when
    it first found it free takes it at once; any other once it has found it free for
    `free_for` >= WARM_RETRIES retry periods, so that a warm standby takes it first."""
    if holder and holder == identity:
        return True
    if not may_hold(holder, renewed, duration, identity, now):
        return False
    return warm or free_for >= WARM_RETRIES * retry_seconds


def describe(error: BaseException) -> str:
    """An API error as `HTTP 403 Forbidden`, anything else by its type and text."""
    if isinstance(error, client.ApiException):
        return f"HTTP {error.status} {error.reason}"
    return f"{type(error).__name__}: {error}"


class LeaseElector:
    """One replica's side of the election for one Lease."""

    def __init__(self, api: client.ApiClient, namespace: str, name: str, identity: str,
                 lease_seconds: int = 15, clock: Callable[[], datetime.datetime] = _now) -> None:
        # A client of its own without urllib3's retries (3 by default): a timed-out call would
        # otherwise be sent again, and a try could outlast its timeout four times over.
        own = copy.deepcopy(api.configuration)
        own.retries = False
        self.leases = client.CoordinationV1Api(client.ApiClient(own))
        self.namespace, self.name, self.identity = namespace, name, identity
        self.lease_seconds = lease_seconds
        self.clock = clock
        self.errors = 0
        """Lease calls that failed in a row while standing by (a 409 race is no failure)."""
        self.last_error = ""
        self.other_holder: str | None = None
        """Who held the Lease at the last try that found it held by another replica."""
        self.started = time.monotonic()
        """When this replica began to compete."""
        self.free_since: float | None = None
        """When the tries that find the Lease free began (None: the last found it held)."""
        self.warm_when_free = False
        """Whether this replica was warm (see WARM_RETRIES) when they began."""
        self.left_free = False
        """The last try found the Lease free and left it to a warm standby."""

    @property
    def retry_seconds(self) -> float:
        """How often a standby tries and the leader renews (client-go: 2 s of a 15 s Lease)."""
        return max(self.lease_seconds * 2 / 15, 0.5)

    @property
    def renew_deadline(self) -> float:
        """The leader gives up when it has not renewed for this long (client-go: 10 s of a
        15 s Lease): before a standby may take the Lease, so two never work at once."""
        return self.lease_seconds * 2 / 3

    @property
    def request_timeout(self) -> float:
        """Limit of one try (a read and a write of the Lease), so a try ends in time."""
        return self.renew_deadline / 2

    @property
    def healthy(self) -> bool:
        """False once STANDBY_ERROR_LIMIT Lease calls failed in a row."""
        return self.errors < STANDBY_ERROR_LIMIT

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

    def try_acquire(self, timeout: float | None = None) -> bool:
        """Take or renew the Lease; False if someone else holds it or a write raced us.

        `timeout`: seconds for the whole try (default `request_timeout`); a call still
        running then fails with a urllib3 timeout."""
        deadline = time.monotonic() + (timeout or self.request_timeout)

        def left() -> float:
            return max(deadline - time.monotonic(), 0.05)

        now = self.clock()
        try:
            lease = self.leases.read_namespaced_lease(self.name, self.namespace,
                                                      _request_timeout=left())
        except client.ApiException as e:
            if e.status != 404:
                raise
            try:
                self.leases.create_namespaced_lease(  # a dict is sent as it is
                    self.namespace, self._body(now, now, 0),  # type: ignore[arg-type]
                    _request_timeout=left())
                return True
            except client.ApiException as e2:
                if e2.status == 409:
                    return False
                raise
        spec = lease.spec or client.V1LeaseSpec()
        meta = lease.metadata or client.V1ObjectMeta()
        self.other_holder = None
        self.left_free = False
        if not may_hold(spec.holder_identity, spec.renew_time, spec.lease_duration_seconds,
                        self.identity, now):
            self.other_holder = spec.holder_identity
            self.free_since = None
            return False
        mine = spec.holder_identity == self.identity
        if not mine:  # free: released, or expired
            tried = time.monotonic()
            if self.free_since is None:
                self.free_since = tried
                self.warm_when_free = tried - self.started >= WARM_RETRIES * self.retry_seconds
            if not may_take(spec.holder_identity, spec.renew_time,
                            spec.lease_duration_seconds, self.identity, now,
                            self.warm_when_free, tried - self.free_since, self.retry_seconds):
                self.left_free = True
                return False
        acquired = spec.acquire_time if mine and spec.acquire_time else now
        transitions = (spec.lease_transitions or 0) + (0 if mine else 1)
        try:
            self.leases.replace_namespaced_lease(
                self.name, self.namespace,
                self._body(now, acquired, transitions,  # type: ignore[arg-type]
                           meta.resource_version),
                _request_timeout=left())
            return True
        except client.ApiException as e:
            if e.status == 409:
                return False
            raise

    def release(self) -> None:
        """Give the Lease up at shutdown so a standby takes over at once."""
        try:
            lease = self.leases.read_namespaced_lease(self.name, self.namespace,
                                                      _request_timeout=self.request_timeout)
            if lease.spec is None or lease.spec.holder_identity != self.identity:
                return
            self.leases.patch_namespaced_lease(self.name, self.namespace, {
                "metadata": {"resourceVersion": (lease.metadata or client.V1ObjectMeta())
                             .resource_version},
                "spec": {"holderIdentity": None, "renewTime": None, "acquireTime": None}},
                _request_timeout=self.request_timeout)
            log.info("Released Lease %s/%s", self.namespace, self.name)
        except Exception as e:  # noqa: BLE001 - shutting down; the Lease expires anyway
            log.warning("Could not release Lease %s/%s: %s", self.namespace, self.name,
                        describe(e))

    def wait_until_leader(self, stop: threading.Event) -> bool:
        """Block until this replica holds the Lease (True), or `stop` is set (False).

        Failed Lease calls are counted (see `healthy`); at STANDBY_ERROR_LIMIT in a row an
        error names the Lease and the HTTP status, since such a standby would never lead."""
        logged = False
        while not stop.is_set():
            try:
                if self.try_acquire():
                    self.errors = 0
                    log.info("Acquired Lease %s/%s as %s", self.namespace, self.name,
                             self.identity)
                    return True
                self.errors = 0
                if self.left_free:
                    log.info("Lease %s/%s is free: leaving it %.1fs to a standby that has "
                             "been waiting", self.namespace, self.name,
                             WARM_RETRIES * self.retry_seconds)
                elif not logged:
                    log.info("Standing by: Lease %s/%s is held by another replica",
                             self.namespace, self.name)
                    logged = True
            except Exception as e:  # noqa: BLE001 - any failure counts, and is retried
                self.errors += 1
                self.last_error = describe(e)
                if self.errors == STANDBY_ERROR_LIMIT:
                    log.error("Failed to get Lease %s/%s %d times in a row, last with %s; "
                              "/healthz fails until a Lease call succeeds (does the "
                              "operator's Role in %s allow get/create/update on leases?)",
                              self.namespace, self.name, self.errors, self.last_error,
                              self.namespace)
                else:
                    log.warning("Failed to get Lease %s/%s: %s", self.namespace, self.name,
                                self.last_error)
            stop.wait(self.retry_seconds)
        return False

    def keep_renewing(self, on_lost: Callable[[], None], stop: threading.Event) -> threading.Thread:
        """Renew in the background every `retry_seconds`; call `on_lost` once the Lease has
        not been renewed within `renew_deadline` of the last renew (before a standby may take
        it: the full Lease duration after that renew)."""

        def loop() -> None:
            last_ok = time.monotonic()  # the caller has just acquired it
            while not stop.wait(self.retry_seconds):
                started = time.monotonic()
                left = self.renew_deadline - (started - last_ok)
                reason = "renew deadline passed"
                if left > 0:
                    try:
                        if self.try_acquire(timeout=min(self.request_timeout, left)):
                            last_ok = started
                            continue
                        if self.other_holder:
                            log.error("Lost Lease %s/%s: %s holds it; stopping",
                                      self.namespace, self.name, self.other_holder)
                            on_lost()
                            return
                        reason = "write conflict"
                    except Exception as e:  # noqa: BLE001 - any failure counts as not renewed
                        reason = describe(e)
                        log.warning("Failed to renew Lease %s/%s: %s", self.namespace,
                                    self.name, reason)
                if time.monotonic() - last_ok >= self.renew_deadline:
                    log.error("Lost Lease %s/%s: not renewed within %.1fs (%s); stopping",
                              self.namespace, self.name, self.renew_deadline, reason)
                    on_lost()
                    return

        thread = threading.Thread(target=loop, name="lease-renewer", daemon=True)
        thread.start()
        return thread
