"""Kopf's watch-stream with its inactivity timeout around the read only, so that a silent
connection is reopened without ever cancelling Kopf's watcher.

Kopf (1.45) wraps the whole stream in `asyncio.timeout(settings.watching.inactivity_timeout)`
and reschedules it after each event, *including the time its consumer spends on the event*
(the generator is suspended at `yield` meanwhile). When the deadline passes while the consumer
awaits (it does at each new object: `Scheduler.spawn` sleeps), the timeout cancels the
consumer, not the read: the CancelledError leaves the watcher task, which Kopf's orchestrator
drops without a log line, and takes back only when the cluster's resources or namespaces
change. Every later event of that kind is lost: tasks stayed `init` with no Workflow, in CI,
for minutes, on a busy 2-core machine where a loop iteration may take longer than the margin.

`install()` replaces `kopf._cogs.clients.watching.watch_objs` with `watch_objs` here: Kopf's
own, its inactivity timeout set out of reach, read through `asyncio.timeout` around each
`anext()`, so only a read that waits longer than the inactivity timeout ends the stream (Kopf
reopens it from the last resourceVersion). tests/unit/test_kopf_watch.py checks both the fault
in Kopf's function (drop this module when that test says Kopf is fixed) and this one.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from kopf._cogs.clients import watching

log = logging.getLogger(__name__)

#: Kopf's own watch_objs, kept before `install()` replaces it.
KOPF_WATCH_OBJS = watching.watch_objs
#: The inactivity timeout Kopf's function is given: out of reach (a year).
OUT_OF_REACH = 365 * 24 * 3600.0


async def watch_objs(*, settings: Any, **kwargs: Any) -> AsyncIterator[Any]:
    """`watching.watch_objs`, with `settings.watching.inactivity_timeout` applied to each read
    instead of to the read and the consumer's handling together."""
    idle = settings.watching.inactivity_timeout
    inner = dataclasses.replace(
        settings, watching=dataclasses.replace(settings.watching,
                                               inactivity_timeout=OUT_OF_REACH))
    stream: AsyncGenerator[Any, None] = KOPF_WATCH_OBJS(settings=inner, **kwargs)  # type: ignore[assignment]
    try:
        while True:
            try:
                async with asyncio.timeout(idle):
                    event = await anext(stream)
            except StopAsyncIteration:
                return
            except TimeoutError:
                resource = kwargs.get("resource")
                log.debug("Watch of %s delivered nothing for %gs; reopening it", resource, idle)
                return
            yield event
    finally:
        await stream.aclose()


def install() -> None:
    """Make Kopf's watcher use `watch_objs` (idempotent)."""
    if watching.watch_objs is not watch_objs:
        watching.watch_objs = watch_objs
