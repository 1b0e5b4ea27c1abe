"""Checkpoints in $MLTASK_CHECKPOINT_DIR: the training's state every few epochs, so that a
retried pod (a spot node reclaimed, an eviction), `kubectl mltask continue` or a re-admitted
task resumes where it was instead of at epoch 0.

The folder is on the task's working volume, which the task keeps until it completes. A
checkpoint is one joblib file written through a temporary file renamed into place (a pod killed
while writing leaves the last whole one), and carries a fingerprint of what it was trained on
(the parameters that shape the training and the dataset's sha256): one made with other
parameters or data is not resumed from.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import joblib

from digits.common import log, write_file

VARIABLE = "MLTASK_CHECKPOINT_DIR"


def folder() -> Path | None:
    """The checkpoint folder, created if the variable names one (None: no checkpoints)."""
    value = os.environ.get(VARIABLE)
    if not value:
        return None
    path = Path(value)
    path.mkdir(parents=True, exist_ok=True)
    return path


def fingerprint(params: dict[str, Any], data_file: Path) -> str:
    """What a checkpoint must have been made from to be resumed: `params` and the data."""
    digest = hashlib.sha256()
    with data_file.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    made_from = json.dumps({"params": params, "data": digest.hexdigest()}, sort_keys=True,
                           default=str)
    return hashlib.sha256(made_from.encode()).hexdigest()


def load(name: str, made_from: str) -> tuple[int, Any] | None:
    """(epochs done, state) of the checkpoint `name`, if there is one made from `made_from`."""
    where = folder()
    path = where / f"{name}.joblib" if where else None
    if path is None or not path.is_file():
        return None
    try:
        saved = joblib.load(path)
        epoch, state, its = saved["epoch"], saved["state"], saved["fingerprint"]
    except Exception as e:  # a checkpoint of another version, or damaged: start afresh
        log(f"warning: checkpoint {path} cannot be read ({type(e).__name__}: {e}); "
            "starting afresh")
        return None
    if its != made_from:
        log(f"checkpoint {path} was made with other parameters or data; starting afresh")
        return None
    return int(epoch), state


def save(name: str, made_from: str, epoch: int, state: Any) -> None:
    """Write the checkpoint `name` (replacing the last one); a no-op without a folder."""
    where = folder()
    if where is None:
        return
    path = where / f"{name}.joblib"
    size = write_file(path, lambda tmp: joblib.dump(
        {"epoch": epoch, "state": state, "fingerprint": made_from}, tmp))
    log(f"checkpoint: epoch {epoch} saved to {path} ({size} bytes)")

