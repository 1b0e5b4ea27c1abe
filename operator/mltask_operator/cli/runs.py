"""What `run` creates: a new Pipeline from a file's, its parameters' values set by --param."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import pydantic
import yaml

from mltask_operator.api.v1alpha1 import pipeline as pipeline_api
from mltask_operator.api.v1alpha1.common import API_VERSION
from mltask_operator.api.v1alpha1.mltask import MAX_NAME_LENGTH
from mltask_operator.cli.errors import UsageError, one_line
from mltask_operator.pipeline_params import validate

#: How many random characters the API server appends to metadata.generateName.
GENERATED_CHARACTERS = 5

#: Metadata the API server sets: not carried over to the new Pipeline.
SERVER_METADATA = ("uid", "resourceVersion", "creationTimestamp", "generation", "managedFields",
                   "selfLink", "deletionTimestamp", "deletionGracePeriodSeconds")

#: kubectl apply's record of the file's object: it does not describe the new one.
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"

#: At most this many of a file's schema errors are named.
MAX_ERRORS = 5


def parse_param(text: str) -> tuple[str, str]:
    """`NAME=VALUE` of --param: (NAME, VALUE); VALUE may be empty or hold `=`."""
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise ValueError(f"{text!r} is not NAME=VALUE")
    return name, value


def load_pipeline(text: str, source: str) -> dict[str, Any]:
    """The one Pipeline of a YAML file's text; UsageError saying what `source` holds
    instead."""
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as e:
        raise UsageError(f"{source} is not valid YAML: {one_line(e)}") from None
    if len(docs) != 1:
        raise UsageError(f"{source} holds {len(docs)} objects: run takes a file of one "
                         "Pipeline")
    obj = docs[0]
    if not isinstance(obj, dict):
        raise UsageError(f"{source} holds a {type(obj).__name__}, not a Pipeline")
    api_version, kind = obj.get("apiVersion"), obj.get("kind")
    if (api_version, kind) != (API_VERSION, pipeline_api.KIND):
        raise UsageError(f"{source} holds a {kind or 'object without kind'} "
                         f"(apiVersion {api_version}), not a Pipeline (apiVersion "
                         f"{API_VERSION})")
    return obj


def _field(loc: Sequence[int | str]) -> str:
    """A pydantic error's location as a field path: spec.tasks[1].spec.type."""
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}" if path else part
    return path or "the object"


def check_pipeline(body: dict[str, Any], source: str) -> pipeline_api.Pipeline:
    """The body as the Pipeline model reads it; UsageError naming each bad field."""
    try:
        return pipeline_api.Pipeline.model_validate(body)
    except pydantic.ValidationError as e:
        errors = e.errors()
        named = "; ".join(f"{_field(err['loc'])}: {err['msg']}" for err in errors[:MAX_ERRORS])
        more = (f" (and {len(errors) - MAX_ERRORS} more)" if len(errors) > MAX_ERRORS
                else "")
        raise UsageError(f"the Pipeline of {source} is not valid: {named}{more}") from None


def _generated_name_problem(generate_name: str, pipeline: pipeline_api.Pipeline) -> str | None:
    """Why names from `generate_name` would be refused as too long (the CRD's rules on the
    pipeline's name and its children's, <pipeline>-<task>), if they would be."""
    length = len(generate_name) + GENERATED_CHARACTERS
    limit, why = MAX_NAME_LENGTH - 2, "a pipeline's name"
    longest = max(pipeline.spec.tasks, key=lambda t: len(t.name))
    if MAX_NAME_LENGTH - 1 - len(longest.name) < limit:
        limit = MAX_NAME_LENGTH - 1 - len(longest.name)
        why = f"the pipeline's name, so that <pipeline>-{longest.name} names its MLTask"
    if length <= limit:
        return None
    return (f"the generated names {generate_name}<{GENERATED_CHARACTERS} random characters> "
            f"would have {length} characters, more than the {limit} of {why}: give a shorter "
            "--name, or shorten metadata.name")


def run_body(obj: dict[str, Any], params: Sequence[tuple[str, str]], name: str | None,
             source: str) -> dict[str, Any]:
    """The new Pipeline `run` creates from the file's `obj` (left as it is): each (NAME,
    VALUE) of `params` sets spec.parameters[NAME].value; named `name`, else
    metadata.generateName `<the file's name>-`; what the API server sets (uid,
    resourceVersion, creationTimestamp, status...) dropped. metadata.namespace stays as the
    file says. UsageError naming the field, or the parameter, that is wrong."""
    body = copy.deepcopy(obj)
    body.pop("status", None)
    pipeline = check_pipeline(body, source)
    meta = body.setdefault("metadata", {})
    for key in SERVER_METADATA:
        meta.pop(key, None)
    annotations = meta.get("annotations")
    if isinstance(annotations, dict):
        annotations.pop(LAST_APPLIED, None)
        if not annotations:
            del meta["annotations"]
    file_name = meta.pop("name", None)
    if name:
        meta.pop("generateName", None)
        meta["name"] = name
    elif file_name or meta.get("generateName"):
        if file_name:
            meta["generateName"] = f"{file_name}-"
        problem = _generated_name_problem(meta["generateName"], pipeline)
        if problem:
            raise UsageError(problem)
    else:
        raise UsageError(f"the Pipeline of {source} has no metadata.name to generate names "
                         "from: give --name NAME")

    declared = {p["name"]: p for p in body["spec"].get("parameters") or []}
    seen: set[str] = set()
    for key, value in params:
        if key in seen:
            raise UsageError(f"--param {key} is given twice")
        seen.add(key)
        if key not in declared:
            listed = (f"its parameters are {', '.join(declared)}" if declared
                      else "it declares no parameters (spec.parameters)")
            raise UsageError(f"--param {key}: the Pipeline of {source} has no parameter "
                             f"{key}; {listed}")
        declared[key]["value"] = value
    if params:
        pipeline = check_pipeline(body, source)  # e.g. a value too long
    problems = validate(pipeline.spec)
    if problems:
        raise UsageError("; ".join(problems))
    return body
