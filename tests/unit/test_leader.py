"""Lease election without a cluster: the standby's health, the leader's renew deadline and
request timeouts, against a stand-in for the coordination.k8s.io client."""

from __future__ import annotations

import datetime
import logging
import threading
import time
import urllib.error
import urllib.request
from types import SimpleNamespace
from typing import Any

import pytest
from kubernetes import client

from harness.controlplane import free_port
from mltask_operator import leader
from mltask_operator.__main__ import _serve_standby
from mltask_operator.leader import STANDBY_ERROR_LIMIT, WARM_RETRIES, LeaseElector, may_take


class FakeLeases:
    """Stands in for CoordinationV1Api: one Lease, and a switchable way to fail."""

    def __init__(self) -> None:
        self.lease: dict[str, Any] | None = None
        self.version = 0
        self.fail_with: int | None = None  # an HTTP status every call answers with
        self.hang = False                  # calls block until their _request_timeout
        self.timeouts: list[float | None] = []

    def _call(self, timeout: float | None) -> None:
        self.timeouts.append(timeout)
        if self.hang:
            time.sleep(timeout if timeout is not None else 3600)
            raise TimeoutError("read timed out")
        if self.fail_with:
            raise client.ApiException(status=self.fail_with, reason="Forbidden")

    def read_namespaced_lease(self, name: str, namespace: str, _request_timeout=None):
        self._call(_request_timeout)
        if self.lease is None:
            raise client.ApiException(status=404, reason="Not Found")
        spec = self.lease["spec"]
        parse = datetime.datetime.fromisoformat
        return SimpleNamespace(
            metadata=SimpleNamespace(resource_version=str(self.version)),
            spec=SimpleNamespace(
                holder_identity=spec["holderIdentity"],
                renew_time=parse(spec["renewTime"]) if spec.get("renewTime") else None,
                acquire_time=parse(spec["acquireTime"]) if spec.get("acquireTime") else None,
                lease_duration_seconds=spec["leaseDurationSeconds"],
                lease_transitions=spec.get("leaseTransitions")))

    def create_namespaced_lease(self, namespace: str, body: dict[str, Any],
                                _request_timeout=None) -> None:
        self._call(_request_timeout)
        self.lease, self.version = body, self.version + 1

    def patch_namespaced_lease(self, name: str, namespace: str, body: dict[str, Any],
                               _request_timeout=None) -> None:
        self._call(_request_timeout)
        assert self.lease is not None
        self.lease["spec"].update(body["spec"])
        self.version += 1

    def replace_namespaced_lease(self, name: str, namespace: str, body: dict[str, Any],
                                 _request_timeout=None) -> None:
        self._call(_request_timeout)
        if body["metadata"].get("resourceVersion") != str(self.version):
            raise client.ApiException(status=409, reason="Conflict")
        self.lease, self.version = body, self.version + 1

    def hold_as(self, identity: str) -> None:
        now = datetime.datetime.now(datetime.UTC).isoformat()
        self.lease = {"spec": {"holderIdentity": identity, "renewTime": now,
                               "acquireTime": now, "leaseDurationSeconds": 3600}}
        self.version += 1


def elector(leases: FakeLeases, lease_seconds: int = 3) -> LeaseElector:
    e = LeaseElector(client.ApiClient(), "ops", "mltask-operator", "me", lease_seconds)
    e.leases = leases  # type: ignore[assignment]
    return e


def test_timings_follow_client_go_ratios() -> None:
    e = elector(FakeLeases(), lease_seconds=15)
    assert (e.retry_seconds, e.renew_deadline, e.request_timeout) == (2.0, 10.0, 5.0)
    assert e.renew_deadline < e.lease_seconds, "the leader stops before a standby may start"


def test_every_lease_call_has_a_request_timeout() -> None:
    leases = FakeLeases()
    e = elector(leases)
    assert e.try_acquire() and e.try_acquire()
    e.release()
    assert leases.timeouts and all(t is not None and 0 < t <= e.request_timeout
                                   for t in leases.timeouts), leases.timeouts


def test_standby_with_failing_lease_calls_turns_unhealthy_and_says_why(caplog) -> None:
    leases = FakeLeases()
    leases.fail_with = 403
    e = elector(leases)
    stop = threading.Event()
    caplog.set_level(logging.INFO, logger=leader.__name__)
    waiter = threading.Thread(target=e.wait_until_leader, args=(stop,), daemon=True)
    waiter.start()
    deadline = time.monotonic() + 10
    while e.healthy and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not e.healthy and e.errors == STANDBY_ERROR_LIMIT
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "Lease ops/mltask-operator" in errors[0] \
        and "HTTP 403 Forbidden" in errors[0], errors
    leases.fail_with = None  # the Role is fixed: healthy again, and it leads
    waiter.join(timeout=5)
    stop.set()
    assert e.healthy and not waiter.is_alive()


def test_a_lease_held_by_another_replica_is_healthy_standby(caplog) -> None:
    leases = FakeLeases()
    leases.hold_as("other")
    e = elector(leases)
    stop = threading.Event()
    caplog.set_level(logging.INFO, logger=leader.__name__)
    waiter = threading.Thread(target=e.wait_until_leader, args=(stop,), daemon=True)
    waiter.start()
    time.sleep(e.retry_seconds * (STANDBY_ERROR_LIMIT + 1))
    stop.set()
    waiter.join(timeout=5)
    assert e.healthy and e.errors == 0
    assert any("Standing by" in r.getMessage() for r in caplog.records)


T0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)


@pytest.mark.parametrize(("holder", "renewed_ago", "warm", "free_for", "takes"), [
    ("me", 1, False, 0.0, True),        # its own Lease: renewed at once, however fresh
    ("other", 1, True, 100.0, False),   # held and renewed: nobody takes it
    (None, None, True, 0.0, True),      # released: a warm standby takes it at once
    (None, None, False, 3.9, False),    # released: a fresh replica leaves it to a standby...
    (None, None, False, 4.0, True),     # ...for two retry periods, then takes it
    ("other", 16, True, 0.0, True),     # expired: a warm standby takes it
    ("other", 16, False, 0.0, False),   # expired: a fresh replica waits too
    ("", None, False, 0.0, False),      # a holder written as "" is no holder
])
def test_a_free_lease_goes_to_a_warm_standby_first(holder, renewed_ago, warm, free_for,
                                                  takes) -> None:
    renewed = T0 - datetime.timedelta(seconds=renewed_ago) if renewed_ago else None
    assert may_take(holder, renewed, 15, "me", T0, warm, free_for, retry_seconds=2.0) is takes


def test_the_standby_wins_a_lease_released_as_a_replacement_starts() -> None:
    """The handover of a deleted leader pod: the leader releases the Lease at the moment its
    Deployment's replacement starts trying. The standby that has been waiting takes it within
    a retry period; the replacement, though it tried first, stands by."""
    leases = FakeLeases()
    leases.hold_as("old-leader")
    standby = elector(leases, lease_seconds=3)
    standby.identity = "standby"
    stop = threading.Event()
    won: list[str] = []
    waiting = threading.Thread(target=lambda: standby.wait_until_leader(stop)
                               and won.append("standby"), daemon=True)
    waiting.start()
    time.sleep(standby.retry_seconds * (WARM_RETRIES + 0.5))  # the standby is warm
    leases.lease["spec"].update(holderIdentity=None, renewTime=None, acquireTime=None)
    replacement = elector(leases, lease_seconds=3)
    replacement.identity = "replacement"
    released = time.monotonic()
    assert replacement.try_acquire() is False, "a fresh replica leaves a free Lease alone"
    waiting.join(timeout=standby.retry_seconds + 2)
    stop.set()
    assert won == ["standby"] and leases.lease["spec"]["holderIdentity"] == "standby"
    assert time.monotonic() - released <= standby.retry_seconds + 1, "promptly"
    assert replacement.try_acquire() is False and replacement.other_holder == "standby"


def test_a_replica_fresh_when_the_lease_went_free_waits_from_then() -> None:
    """Turning warm while the Lease is free does not cut the wait short: a standby gets two
    full retry periods (one try at least) from the moment the fresh replica found it free."""
    leases = FakeLeases()
    leases.hold_as("old-leader")
    e = elector(leases, lease_seconds=3)  # retry 0.5 s: warm after 1 s of trying
    assert e.try_acquire() is False and e.other_holder == "old-leader"
    time.sleep(0.8)
    leases.lease["spec"].update(holderIdentity=None, renewTime=None, acquireTime=None)
    assert e.try_acquire() is False and e.left_free, "fresh: left to a standby"
    time.sleep(0.5)  # trying for 1.3 s now, free for 0.5 s
    assert e.try_acquire() is False and e.left_free
    time.sleep(0.6)  # free for 1.1 s: no standby took it
    assert e.try_acquire() is True and leases.lease["spec"]["holderIdentity"] == "me"


def test_a_fresh_replica_takes_a_free_lease_nobody_else_takes() -> None:
    leases = FakeLeases()
    leases.hold_as("gone")
    leases.lease["spec"].update(holderIdentity=None, renewTime=None, acquireTime=None)
    e = elector(leases, lease_seconds=3)
    stop = threading.Event()
    started = time.monotonic()
    assert e.wait_until_leader(stop)
    took = time.monotonic() - started
    assert WARM_RETRIES * e.retry_seconds <= took < (WARM_RETRIES + 1) * e.retry_seconds + 1, took
    assert leases.lease["spec"]["holderIdentity"] == "me"


def _lost_after(leases: FakeLeases, e: LeaseElector, timeout: float = 10) -> float:
    assert e.try_acquire()
    lost = threading.Event()
    stop = threading.Event()
    renewed = time.monotonic()
    e.keep_renewing(lost.set, stop)
    try:
        assert lost.wait(timeout), "the leader never gave up"
        return time.monotonic() - renewed
    finally:
        stop.set()


def test_leader_gives_up_at_the_renew_deadline_when_the_api_server_hangs() -> None:
    leases = FakeLeases()
    e = elector(leases, lease_seconds=3)  # renew deadline 2 s
    threading.Timer(0.1, lambda: setattr(leases, "hang", True)).start()
    after = _lost_after(leases, e)
    assert e.renew_deadline <= after < e.lease_seconds, after
    assert all(t is not None and t <= e.request_timeout for t in leases.timeouts)


def test_leader_gives_up_at_the_renew_deadline_on_errors() -> None:
    leases = FakeLeases()
    e = elector(leases, lease_seconds=3)
    threading.Timer(0.1, lambda: setattr(leases, "fail_with", 500)).start()
    after = _lost_after(leases, e)
    assert e.renew_deadline <= after < e.lease_seconds, after


def test_leader_gives_up_at_once_when_another_replica_holds_the_lease() -> None:
    leases = FakeLeases()
    e = elector(leases, lease_seconds=6)
    threading.Timer(0.1, lambda: leases.hold_as("other")).start()
    after = _lost_after(leases, e)
    assert after < e.retry_seconds * 2 + 0.5 < e.renew_deadline, after


def test_standby_healthz_reports_the_failure() -> None:
    problem: list[str] = []
    port = free_port()
    server = _serve_standby(f"http://127.0.0.1:{port}/healthz",
                            lambda: problem[0] if problem else None)
    assert server is not None
    url = f"http://127.0.0.1:{port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            assert resp.status == 200
        problem.append("5 Lease calls to ops/mltask-operator failed in a row, last with "
                       "HTTP 403 Forbidden")
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(url, timeout=5)
        assert err.value.code == 500 and b"HTTP 403 Forbidden" in err.value.read()
    finally:
        server.shutdown()
        server.server_close()
