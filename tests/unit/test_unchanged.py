"""When a status counts as changed: the elapsed time alone is written once it moved enough."""

from __future__ import annotations

from mltask_operator.api.v1alpha1.mltask import MLTaskStatus, Phase
from mltask_operator.handlers import unchanged
from mltask_operator.status_common import parse_duration as seconds


def st(duration: str | None, message: str = "Running run_task") -> MLTaskStatus:
    return MLTaskStatus(status=Phase.RUNNING, message=message, duration=duration)


def test_seconds() -> None:
    assert [seconds(d) for d in ("0s", "59s", "1m0s", "2h3m4s", None, "soon")] == \
        [0, 59, 60, 7384, None, None]


def test_elapsed_time_alone_is_a_change_after_a_minute_or_a_tenth() -> None:
    assert unchanged(st("5s"), st("5s"))
    assert unchanged(st("1m4s"), st("5s")), "under a minute more"
    assert not unchanged(st("1m5s"), st("5s")), "a minute more"
    assert unchanged(st("1h5m0s"), st("1h0m0s")), "under a tenth of an hour"
    assert not unchanged(st("1h6m0s"), st("1h0m0s"))
    assert not unchanged(st(None), st("5s")) and not unchanged(st("5s"), st(None))


def test_any_other_change_is_a_change() -> None:
    assert not unchanged(st("5s", "Running upload"), st("5s"))
