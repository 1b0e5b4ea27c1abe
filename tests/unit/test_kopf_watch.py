"""Kopf's watch-stream and its inactivity timeout (mltask_operator.kopf_watch): a consumer that
takes longer than the timeout with an event must get the next one, never a cancellation; a
read that waits longer than it ends the stream, so Kopf reopens it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import kopf
import pytest
from kopf._cogs.clients import api, watching
from kopf._cogs.structs import references

from mltask_operator import kopf_watch

IDLE = 0.1
RESOURCE = references.Resource(group="", version="v1", plural="pods", namespaced=True)


def event(name: str) -> dict[str, Any]:
    return {"type": "ADDED", "object": {"metadata": {"name": name, "resourceVersion": "1"}}}


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> asyncio.Queue[dict[str, Any]]:
    """The API server's side of the watch: what is put in the queue is delivered, and a read
    waits for as long as it stays empty (a silent connection)."""
    sent: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def stream(url: str, **_: Any) -> AsyncIterator[dict[str, Any]]:
        while True:
            yield await sent.get()

    monkeypatch.setattr(api, "stream", stream)
    return sent


def settings() -> kopf.OperatorSettings:
    s = kopf.OperatorSettings()
    s.watching.inactivity_timeout = IDLE
    return s


async def consume(watch: Callable[..., AsyncIterator[Any]], sent: asyncio.Queue[Any],
                  names: list[str], handling: float) -> tuple[list[str], str]:
    """Deliver `names`, handle each for `handling` seconds (awaiting, as Kopf's watcher does),
    and say how the stream ended: 'ended' (Kopf reopens it) or 'cancelled' (Kopf's watcher
    task dies)."""
    for name in names:
        sent.put_nowait(event(name))
    got: list[str] = []
    stream = watch(settings=settings(), resource=RESOURCE, namespace=None,
                   operator_pause_waiter=asyncio.get_running_loop().create_future())
    try:
        async for raw in stream:
            got.append(raw["object"]["metadata"]["name"])
            await asyncio.sleep(handling)
    except asyncio.CancelledError:
        return got, "cancelled"
    return got, "ended"


def test_a_consumer_slower_than_the_timeout_gets_every_event(
        server: asyncio.Queue[Any]) -> None:
    got, how = asyncio.run(consume(kopf_watch.watch_objs, server, ["a", "b", "c"], IDLE * 3))
    assert (got, how) == (["a", "b", "c"], "ended")


def test_a_silent_read_ends_the_stream_within_the_timeout(server: asyncio.Queue[Any]) -> None:
    async def timed() -> tuple[list[str], str, float]:
        loop = asyncio.get_running_loop()
        start = loop.time()
        got, how = await consume(kopf_watch.watch_objs, server, [], 0)
        return got, how, loop.time() - start

    got, how, took = asyncio.run(timed())
    assert (got, how) == ([], "ended")
    assert IDLE <= took < IDLE * 20


def test_kopf_still_cancels_a_slow_consumer(server: asyncio.Queue[Any]) -> None:
    """The fault kopf_watch works around, in Kopf's own function. When this fails, Kopf handles
    a slow consumer itself: drop mltask_operator.kopf_watch and this test."""
    got, how = asyncio.run(consume(kopf_watch.KOPF_WATCH_OBJS, server, ["a", "b"], IDLE * 3))
    assert (got, how) == (["a"], "cancelled")


def test_the_operator_installs_it() -> None:
    import mltask_operator.main  # noqa: F401

    assert watching.watch_objs is kopf_watch.watch_objs
