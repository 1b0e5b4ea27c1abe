"""What a command acts on (NAME, pipeline/NAME) and the selectors `list` sends."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mltask_operator.api.v1alpha1 import mltask as mltask_api
from mltask_operator.api.v1alpha1 import pipeline as pipeline_api
from mltask_operator.api.v1alpha1.common import GROUP
from mltask_operator.cli.errors import CliError
from mltask_operator.kinds import MLTASK, PIPELINE, Kind
from mltask_operator.labels import ARCHIVED as ARCHIVED_LABEL

PROG = "kubectl mltask"


TYPE_NAMES = {
    **dict.fromkeys((mltask_api.SINGULAR, mltask_api.PLURAL, *mltask_api.SHORT_NAMES,
                     f"{mltask_api.SINGULAR}.{GROUP}", f"{mltask_api.PLURAL}.{GROUP}"), MLTASK),
    **dict.fromkeys((pipeline_api.SINGULAR, pipeline_api.PLURAL, *pipeline_api.SHORT_NAMES,
                     f"{pipeline_api.SINGULAR}.{GROUP}", f"{pipeline_api.PLURAL}.{GROUP}"),
                    PIPELINE),
}


@dataclass(frozen=True)
class Target:
    """What a command acts on: an MLTask (NAME) or a Pipeline (pipeline/NAME)."""

    kind: Kind
    name: str

    def __str__(self) -> str:
        return f"{self.kind.singular}/{self.name}"


def parse_target(text: str) -> Target:
    """`NAME` is an MLTask; `TYPE/NAME` like kubectl, TYPE one of mltask, mlt, pipeline, mlp..."""
    kind_name, sep, name = text.rpartition("/")
    if not sep:
        kind = MLTASK
    elif kind_name.lower() in TYPE_NAMES:
        kind = TYPE_NAMES[kind_name.lower()]
    else:
        raise ValueError(f"unknown resource type {kind_name!r} in {text!r}: use NAME for an "
                         "MLTask, or pipeline/NAME")
    if not name or "/" in kind_name:
        raise ValueError(f"{text!r} names no object: use NAME or pipeline/NAME")
    return Target(kind, name)


def parse_list_kind(text: str) -> Kind:
    """What `list` lists: mltasks (the default) or pipelines."""
    try:
        return TYPE_NAMES[text.lower()]
    except KeyError:
        raise ValueError(f"cannot list {text!r}: use mltasks or pipelines") from None


def escape_selector_value(value: str) -> str:
    """A field selector value with `\\`, `,` and `=` escaped, as kubectl's fields.EscapeValue."""
    return value.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=")


def field_selector(type_: str | None = None, status: str | None = None,
                   pipeline: str | None = None) -> str | None:
    """The field selector for `list`'s filters, on the CRDs' selectableFields."""
    terms = [f"{path}={escape_selector_value(value)}" for path, value in (
        ("spec.type", type_), ("status.status", status), ("spec.pipelineRef.name", pipeline))
        if value]
    return ",".join(terms) or None


#: What `list` shows of archived objects (label mltask.dev/archived): none (the default), all
#: objects (--archived), or only archived ones (--only-archived).
HIDE, SHOW, ONLY = "hide", "show", "only"


def label_selector(user: str | None, archived: str = HIDE) -> str | None:
    """`list`'s label selector: the user's -l, with `!mltask.dev/archived` (archived objects
    hidden) unless --archived shows them too or --only-archived only them
    (`mltask.dev/archived`). A -l that names the archived label itself decides alone."""
    if archived == SHOW or (archived == HIDE and user and ARCHIVED_LABEL in user):
        return user or None
    term = f"!{ARCHIVED_LABEL}" if archived == HIDE else ARCHIVED_LABEL
    return f"{user},{term}" if user else term


def context_namespace(contexts: Sequence[dict[str, Any]], active: dict[str, Any] | None,
                      wanted: str | None) -> str:
    """The namespace of the kubeconfig context in use (`--context`, else the current one),
    else `default`, as kubectl chooses it."""
    ctx = next((c for c in contexts if c.get("name") == wanted), None) if wanted else active
    return ((ctx or {}).get("context") or {}).get("namespace") or "default"


def owning_pipeline(obj: dict[str, Any]) -> str | None:
    """The Pipeline that owns an MLTask (it sets the task's suspend and retryGeneration)."""
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    return next((r["name"] for r in refs
                 if r.get("kind") == pipeline_api.KIND and r.get("controller")), None)


def check_not_owned(target: Target, obj: dict[str, Any], verb: str) -> None:
    """Refuse to act on a Pipeline's task: the Pipeline would undo it (it owns the task's
    suspend, retryGeneration and archived)."""
    owner = owning_pipeline(obj) if target.kind == MLTASK else None
    if owner:
        sets = ("archives and unarchives its tasks" if verb in ("archive", "unarchive")
                else "sets its suspend and retryGeneration")
        raise CliError(f"mltask {target.name} belongs to pipeline {owner}, which {sets}: "
                       f"{verb} the pipeline instead ({PROG} {verb} pipeline/{owner})")


def check_not_archived(target: Target, obj: dict[str, Any], verb: str) -> None:
    """Refuse retry and continue of an archived object, as the API server would (its rule on
    spec.archived), before asking it."""
    if (obj.get("spec") or {}).get("archived"):
        raise CliError(f"{target} is archived (spec.archived): unarchive it first "
                       f"({PROG} unarchive {target}), then {verb} it")
