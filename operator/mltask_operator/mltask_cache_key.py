"""Pure: the cache key of a task (what must be equal for a finished task's outputs to be reused,
spec.cache) and which finished tasks are eligible to be reused, read from a spec and status as
the API serves them.

The key is the sha256 of a canonical JSON of: the type; each input by its URI (fromTask
resolved to the upstream's output), its sha256 when known, its kind and unpack flag; each step's
image (the digest of an image given as `repo@sha256:...`, else the image as written), command,
args and env; the config (parameters, the ConfigMap's name); the output spec (its URI and the
dataset or model to produce, descriptions aside); the storage endpoint. Left out: names, the
runtime (placement, retries, deadline, working volume), resources and security contexts,
cleanup, suspend, archived, TTL, pipelineRef and spec.cache itself.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mltask_operator import labels
from mltask_operator.api.v1alpha1.mltask import INPUT_KINDS, StepSpec, TaskTemplate

#: The condition type a task with caching on carries: True when its outputs were reused.
CACHED = "Cached"
CACHE_HIT = "CacheHit"
CACHE_MISS = "CacheMiss"


@dataclass(frozen=True)
class InputRef:
    """One input as the task reads it: its URI (fromTask resolved) and sha256 if known."""

    uri: str | None
    sha256: str | None = None


def image_identity(image: str) -> str:
    """What identifies an image: its digest when given as `repo@sha256:...` (the same bytes
    under any repository name), else the reference as written (a tag may move)."""
    _, at, digest = image.rpartition("@")
    return digest if at and digest.startswith("sha256:") else image


def _step(step: StepSpec | None) -> dict[str, Any] | None:
    if step is None:
        return None
    return {"image": image_identity(step.image), "command": step.command, "args": step.args,
            "env": [e.to_k8s() for e in step.env or []]}


def _inputs(spec: TaskTemplate, resolved: Mapping[str, InputRef]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind in INPUT_KINDS:
        src = getattr(spec.input, kind)
        if src is None:
            continue
        ref = resolved.get(kind) or InputRef(src.uri, src.sha256)
        out[kind] = {"uri": ref.uri, "sha256": ref.sha256 or src.sha256,
                     "kind": getattr(src, "kind", None), "unpack": bool(src.unpack)}
    return out


def _output(spec: TaskTemplate) -> dict[str, Any]:
    out = spec.output.to_k8s()
    for kind in ("dataset", "model"):
        if kind in out:
            out[kind].pop("description", None)
    return out


def cache_key(spec: TaskTemplate, resolved: Mapping[str, InputRef] | None = None) -> str:
    """The key (64 hex digits) of a task's spec; `resolved`: its inputs by kind ("dataset",
    "model") as the attempt reads them, fromTask resolved (default: the spec's own)."""
    config = spec.config
    canonical = {
        "type": str(spec.type),
        "inputs": _inputs(spec, resolved or {}),
        "steps": {"download": _step(spec.steps.download), "run": _step(spec.steps.run),
                  "upload": _step(spec.steps.upload)},
        "config": {"parameters": (config.parameters if config else None) or {},
                   "configMap": config.config_map_ref.name
                   if config and config.config_map_ref else None},
        "output": _output(spec),
        "storageEndpoint": spec.storage.endpoint if spec.storage else None,
    }
    text = json.dumps(canonical, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def reused(status: Mapping[str, Any]) -> bool:
    """Whether a status (as served) says its outputs were reused from another task."""
    return any(c.get("type") == CACHED and c.get("status") == "True"
               for c in status.get("conditions") or [])


def source_key(body: Mapping[str, Any]) -> str | None:
    """The cache key under which a task (as served) may be reused, or None: it must have
    completed by running (not reused itself, so a copy never outlives the task that made the
    output), with caching on, an output URI, and not be archived."""
    status = body.get("status") or {}
    spec = body.get("spec") or {}
    meta_labels = (body.get("metadata") or {}).get("labels") or {}
    key = status.get("cacheKey")
    if (not key or status.get("status") != "completed" or spec.get("archived")
            or labels.ARCHIVED in meta_labels
            or not (status.get("outputs") or {}).get("uri") or reused(status)):
        return None
    return str(key)
