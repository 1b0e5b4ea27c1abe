"""The mltask step-image contract, shared by the three steps.

Paths and parameters come from the environment the operator sets (README.md of the repository,
"Step image contract"); every default below is the value the operator passes, so a step also
runs by hand with only the folders set.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import textwrap
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

INPUT_DIR = "/mltask/input"
OUTPUT_DIR = "/mltask/output"
METRICS_FILE = "/mltask/meta/metrics.json"
#: Temporary files are written under this prefix and renamed into place when complete.
TMP_PREFIX = ".tmp-"


class StepError(Exception):
    """A problem the user can fix (missing input, bad parameter): reported as one line."""


def log(message: str) -> None:
    print(message, flush=True)


def run(main: Callable[[], None]) -> None:
    """Run a step: exit 1 with ONE clear last line on stderr on any error (the operator keeps
    the last log lines in the task's status)."""
    os.umask(0o002)  # the working volume is shared through its group (fsGroup): keep it writable
    warnings.showwarning = _show_warning
    try:
        main()
    except StepError as e:
        _fail(str(e))
    except Exception as e:  # the traceback is for us, the last line for the user
        sys.stdout.flush()
        traceback.print_exc()
        _fail(f"unexpected {type(e).__name__}: {str(e)[:500]}")


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: Any = None, line: str | None = None) -> None:
    """Library warnings (e.g. ConvergenceWarning) as one log line each."""
    log(f"warning: {category.__name__}: {' '.join(str(message).split())}")


def _fail(message: str) -> None:
    sys.stdout.flush()
    print(f"error: {' '.join(message.split())}", file=sys.stderr, flush=True)
    sys.exit(1)


@contextmanager
def timer() -> Iterator[Callable[[], float]]:
    """`with timer() as elapsed:` ... `elapsed()` seconds since the block started."""
    start = time.perf_counter()
    yield lambda: time.perf_counter() - start


# --- folders -----------------------------------------------------------------------------


def input_dir(kind: str) -> tuple[Path, str]:
    """The folder the download step filled with the `kind` input ("dataset" or "model"), and
    the variable that names it (for messages)."""
    var = f"MLTASK_INPUT_{kind.upper()}_DIR"
    if os.environ.get(var):
        return Path(os.environ[var]), var
    return Path(os.environ.get("MLTASK_INPUT_DIR") or INPUT_DIR) / kind, "MLTASK_INPUT_DIR"


def find_input(kind: str, suffixes: tuple[str, ...], what: str) -> Path:
    """The one file of the `kind` input folder whose name ends with one of `suffixes`.

    The download step keeps the object's own file name, and may have unpacked an archive into
    subfolders, so the search is recursive; hidden files (partial downloads) are skipped.
    """
    folder, var = input_dir(kind)
    if not folder.is_dir():
        raise StepError(f"the {kind} input folder {folder} ({var}) does not exist: "
                        f"did the download step run?")
    files = sorted(p for p in folder.rglob("*") if p.is_file()
                   and not any(part.startswith(".") for part in p.relative_to(folder).parts))
    matches = [p for p in files if p.name.lower().endswith(suffixes)]
    if len(matches) == 1:
        return matches[0]
    patterns = " or ".join(f"*{s}" for s in suffixes)
    if not matches:
        raise StepError(f"no {what} ({patterns}) in {folder}; it holds: {_listing(folder, files)}")
    raise StepError(f"{len(matches)} candidate {what} files ({patterns}) in {folder}, expected "
                    f"exactly one: {_listing(folder, matches)}")


def _listing(folder: Path, files: list[Path], limit: int = 10) -> str:
    if not files:
        return "nothing"
    names = [str(p.relative_to(folder)) for p in files[:limit]]
    more = f" and {len(files) - limit} more" if len(files) > limit else ""
    return ", ".join(names) + more


def output_dir(own: tuple[str, ...]) -> Path:
    """Create $MLTASK_OUTPUT_DIR and remove what an earlier attempt of this step left there:
    files matching the glob patterns `own` and temporary files. The upload step stores
    everything in the folder, so anything else is only reported."""
    out = Path(os.environ.get("MLTASK_OUTPUT_DIR") or OUTPUT_DIR)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise StepError(f"cannot create the output folder {out} (MLTASK_OUTPUT_DIR): {e}") from e
    for pattern in (*own, f"{TMP_PREFIX}*"):
        for stale in sorted(out.glob(pattern)):
            if stale.is_file():
                log(f"removing {stale.name} left in the output folder by an earlier attempt")
                stale.unlink()
    others = sorted(p.name for p in out.iterdir())
    if others:
        log(f"warning: the output folder {out} also holds {', '.join(others)}; "
            f"the upload step will store them too")
    return out


def write_file(path: Path, write: Callable[[Path], None]) -> int:
    """Write `path` through a temporary file renamed into place, so an interrupted step never
    leaves a truncated artefact. Returns its size in bytes."""
    tmp = path.with_name(TMP_PREFIX + path.name)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path.stat().st_size


def check_output_extension(extension: str) -> None:
    """The task's output names a file extension; say so when this step writes another."""
    wanted = (os.environ.get("MLTASK_OUTPUT_FILE_EXTENSION") or "").lstrip(".").lower()
    if wanted and wanted != extension:
        log(f"warning: the task's output fileExtension is {wanted!r}, this step writes "
            f".{extension} files")


_progress_failed = False


def report_progress(done: int, total: int) -> None:
    """Write `done/total` to $MLTASK_PROGRESS_FILE (Argo's self-reported progress file): the
    task's status.progress and the PROGRESS column show it while the step runs. A file that
    cannot be written is said once, never fails the step."""
    global _progress_failed
    path = os.environ.get("MLTASK_PROGRESS_FILE")
    if not path or _progress_failed:
        return
    try:
        with open(path, "w") as f:
            f.write(f"{done}/{total}\n")
    except OSError as e:
        _progress_failed = True
        log(f"warning: cannot report progress to {path} (MLTASK_PROGRESS_FILE): {e}")


def write_metrics(metrics: dict[str, float | int]) -> None:
    """Write $MLTASK_METRICS_FILE: a JSON object of numbers (it becomes status.metrics)."""
    clean: dict[str, float | int] = {}
    for key, value in metrics.items():
        value = value.item() if isinstance(value, np.generic) else value
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(f"metric {key} is not a number: {value!r}")
        if not math.isfinite(value):
            raise StepError(f"metric {key} is {value}: training diverged?")
        clean[key] = value if isinstance(value, int) else round(value, 6)
    path = Path(os.environ.get("MLTASK_METRICS_FILE") or METRICS_FILE)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_file(path, lambda tmp: tmp.write_text(json.dumps(clean, sort_keys=True) + "\n"))
    log("metrics: " + ", ".join(f"{k}={v}" for k, v in clean.items()))


# --- parameters ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Param:
    """One key of config.parameters: its default (as the string a user would write), what it
    means, and a parser that raises ValueError saying what a valid value is."""

    name: str
    default: str
    help: str
    parse: Callable[[str], Any]


def integer(low: int, high: int | None = None) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text.strip())
        except ValueError:
            raise ValueError("expected an integer") from None
        _check_range(value, low, high)
        return value
    return parse


def number(low: float, high: float | None = None, *, low_open: bool = False,
           high_open: bool = False) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text.strip())
        except ValueError:
            raise ValueError("expected a number") from None
        if not math.isfinite(value):
            raise ValueError("expected a finite number")
        _check_range(value, low, high, low_open, high_open)
        return value
    return parse


def _check_range(value: float, low: float, high: float | None, low_open: bool = False,
                 high_open: bool = False) -> None:
    too_low = value <= low if low_open else value < low
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high:
        left = "(" if low_open else "["
        right = "" if high is None else (")" if high_open else "]")
        raise ValueError(f"must be in {left}{low}, {'∞)' if high is None else f'{high}{right}'}")


def choice(*values: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        value = text.strip().lower()
        if value not in values:
            raise ValueError(f"expected one of {', '.join(values)}")
        return value
    return parse


def int_list(low: int, high: int) -> Callable[[str], tuple[int, ...]]:
    """Comma-separated integers, e.g. hidden layer sizes "128" or "128,64"."""
    def parse(text: str) -> tuple[int, ...]:
        try:
            values = tuple(int(v) for v in text.replace(" ", "").split(","))
        except ValueError:
            raise ValueError("expected comma-separated integers, e.g. 128,64") from None
        for v in values:
            _check_range(v, low, high)
        return values
    return parse


def read_parameters(params: list[Param]) -> dict[str, Any]:
    """Parse $MLTASK_PARAMETERS (config.parameters, a JSON object of strings) and the files of
    $MLTASK_CONFIG_DIR (config.configMapRef; a key of the ConfigMap named like a parameter
    sets it, inline parameters win). Unknown keys are reported, not refused: one ConfigMap may
    serve several steps."""
    text = os.environ.get("MLTASK_PARAMETERS") or "{}"
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as e:
        raise StepError(f"MLTASK_PARAMETERS is not valid JSON ({e}): {text[:200]}") from None
    if not isinstance(raw, dict):
        raise StepError(f"MLTASK_PARAMETERS must be a JSON object, got: {text[:200]}")
    known = {p.name: p for p in params}
    config_dir = os.environ.get("MLTASK_CONFIG_DIR")
    values: dict[str, tuple[str, str]] = {p.name: (p.default, "default") for p in params}
    if config_dir:
        for p in params:
            f = Path(config_dir) / p.name
            if f.is_file():
                values[p.name] = (f.read_text().strip(), "ConfigMap")
    for key, value in raw.items():
        if key not in known:
            continue
        if isinstance(value, bool):
            value = str(value).lower()
        elif isinstance(value, int | float):
            value = str(value)
        elif not isinstance(value, str):
            raise StepError(f"parameter {key} must be a string, got {json.dumps(value)}")
        values[key] = (value, "parameters")
    unknown = sorted(set(raw) - set(known))
    if unknown:
        log(f"note: ignoring parameter(s) {', '.join(unknown)}: this step reads "
            f"{', '.join(known)}")
    parsed: dict[str, Any] = {}
    for name, (value, source) in values.items():
        try:
            parsed[name] = known[name].parse(value)
        except ValueError as e:
            where = "" if source == "parameters" else f" (from the {source})"
            raise StepError(f"parameter {name}={value!r}{where}: {e}") from None
    return parsed


def given_parameters() -> set[str]:
    """The keys config.parameters sets (to tell which defaults a user overrode)."""
    try:
        raw = json.loads(os.environ.get("MLTASK_PARAMETERS") or "{}")
    except json.JSONDecodeError:
        return set()
    return set(raw) if isinstance(raw, dict) else set()


# --- command line --------------------------------------------------------------------------

CONTRACT_HELP = """\
environment (the operator's step contract):
  MLTASK_INPUT_DATASET_DIR  folder the download step filled with the dataset
                            (default $MLTASK_INPUT_DIR/dataset, MLTASK_INPUT_DIR=/mltask/input)
  MLTASK_INPUT_MODEL_DIR    folder with the model to start from (default $MLTASK_INPUT_DIR/model)
  MLTASK_OUTPUT_DIR         the step writes its artefact here, only it (default /mltask/output)
  MLTASK_METRICS_FILE       JSON object of numbers -> status.metrics
                            (default /mltask/meta/metrics.json)
  MLTASK_PARAMETERS         config.parameters as a JSON object of strings
  MLTASK_CONFIG_DIR         the ConfigMap of config.configMapRef (a key per parameter)
"""


def parse_command_line(prog: str, description: str, inputs: str, outputs: str,
                       params: list[Param]) -> None:
    """`--help` describes the step; the environment is its real interface."""
    def wrap(text: str) -> str:
        return textwrap.fill(text, width=96, initial_indent="  ", subsequent_indent="      ")
    epilog = "\n".join([
        "inputs:", wrap(inputs), "outputs:", wrap(outputs),
        "parameters (config.parameters, strings):",
        *(wrap(f"{p.name} (default {p.default}): {p.help}") for p in params),
        "", CONTRACT_HELP])
    parser = argparse.ArgumentParser(prog=f"python3 -m {prog}", description=description,
                                     epilog=epilog,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.parse_args()


# --- the dataset file --------------------------------------------------------------------

DATASET_ARRAYS = ("X_train", "y_train", "X_test", "y_test")


@dataclass
class Dataset:
    X_train: np.ndarray  # noqa: N815 - the usual names
    y_train: np.ndarray
    X_test: np.ndarray  # noqa: N815
    y_test: np.ndarray
    classes: np.ndarray


def load_dataset(path: Path) -> Dataset:
    """The npz written by digits.preprocess (X_train, y_train, X_test, y_test, ...)."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in DATASET_ARRAYS if k not in npz.files]
            if missing:
                raise StepError(f"{path.name} lacks {', '.join(missing)} (has "
                                f"{', '.join(npz.files) or 'nothing'}): is it a dataset "
                                f"written by digits.preprocess?")
            arrays = {k: npz[k] for k in DATASET_ARRAYS}
            classes = npz["classes"] if "classes" in npz.files else None
    except StepError:
        raise
    except (OSError, ValueError, EOFError) as e:
        raise StepError(f"cannot read the dataset {path.name}: {e}") from None
    X_train, y_train, X_test, y_test = (arrays[k] for k in DATASET_ARRAYS)  # noqa: N806
    for name, X, y in (("train", X_train, y_train), ("test", X_test, y_test)):  # noqa: N806
        if X.ndim != 2 or y.ndim != 1 or len(X) != len(y) or len(X) == 0:
            raise StepError(f"{path.name}: X_{name} {X.shape} and y_{name} {y.shape} do not "
                            f"fit together (expected (n, features) and (n,), n > 0)")
        if not np.issubdtype(X.dtype, np.number) or not np.isfinite(X).all():
            raise StepError(f"{path.name}: X_{name} holds non-finite or non-numeric values")
    if X_train.shape[1] != X_test.shape[1]:
        raise StepError(f"{path.name}: X_train has {X_train.shape[1]} features, X_test "
                        f"{X_test.shape[1]}")
    if classes is None:
        classes = np.unique(np.concatenate([y_train, y_test]))
    log(f"loaded dataset {path.name}: X_train {X_train.shape}, X_test {X_test.shape}, "
        f"{len(classes)} classes, {X_train.dtype}")
    return Dataset(X_train, y_train, X_test, y_test, classes)
