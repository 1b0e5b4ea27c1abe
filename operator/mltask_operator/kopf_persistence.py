"""Kopf's per-object state, turned off: the operator has only event handlers (no change
handlers, timers or daemons), so Kopf has no handler progress to keep and no diff to compute.

Kopf's default storages still deep-copy every event's body to build a diff-base and strip
progress annotations from it (twice per event, used by nothing here): at a start over 10,000
tasks and their Workflows that was a third of the operator's CPU. These keep nothing and copy
nothing. A change handler (`@kopf.on.create/update/resume/delete`) would need Kopf's defaults
back: tests/unit/test_resync.py checks that there is none.
"""

from __future__ import annotations

from typing import Any

import kopf


class NoDiffBase(kopf.DiffBaseStorage):
    """No essence is built, stored or read: every event handler gets the event as delivered."""

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> Any:
        return {}

    def fetch(self, *, body: kopf.Body) -> None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: Any) -> None:
        return None


class NoProgress(kopf.ProgressStorage):
    """No handler progress is kept on the objects (there are no change handlers to track)."""

    def fetch(self, *, key: Any, body: kopf.Body) -> None:
        return None

    def store(self, *, key: Any, record: Any, body: kopf.Body, patch: kopf.Patch) -> None:
        return None

    def purge(self, *, key: Any, body: kopf.Body, patch: kopf.Patch) -> None:
        return None

    def touch(self, *, body: kopf.Body, patch: kopf.Patch, value: str | None) -> None:
        return None

    def clear(self, *, essence: Any) -> Any:
        return essence
