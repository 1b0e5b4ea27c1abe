"""Preprocessing step: the raw handwritten digits CSV -> a scaled, stratified train/test split.

Input: one `*.csv.gz` (or `*.csv`) in the dataset folder, in the format of scikit-learn's
bundled `sklearn/datasets/data/digits.csv.gz`: one sample per row, the 64 pixel values of an
8x8 image (0-16) and the class label (0-9) last, no header.
Output: `digits-<scaling>.npz` with X_train, y_train, X_test, y_test (float32 / int64), the
feature scaling (X = (raw - feature_offset) / feature_scale, fitted on the training split only),
classes, feature_names and provenance (source_file, source_sha256, seed, test_size).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split

from digits.common import (
    Param,
    StepError,
    check_output_extension,
    choice,
    find_input,
    integer,
    log,
    number,
    output_dir,
    parse_command_line,
    read_parameters,
    run,
    timer,
    write_file,
    write_metrics,
)

PARAMS = [
    Param("scaling", "minmax",
          "minmax: each feature to [0, 1] by the training split's min and max; standard: "
          "zero mean and unit variance on the training split; none: the raw values",
          choice("minmax", "standard", "none")),
    Param("testSize", "0.2", "fraction of the samples held out for testing (stratified by class)",
          number(0, 1, low_open=True, high_open=True)),
    Param("seed", "0", "random seed of the split", integer(0, 2**32 - 1)),
]


def read_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Rows of numbers, the class label last."""
    try:
        data = np.loadtxt(path, delimiter=",", ndmin=2, dtype=np.float64)
    except (ValueError, OSError, EOFError) as e:
        raise StepError(f"cannot read {path.name} as comma-separated numbers (pixel values, "
                        f"then the label): {e}") from None
    if data.size == 0:
        raise StepError(f"{path.name} holds no rows")
    if data.shape[1] < 2:
        raise StepError(f"{path.name} has {data.shape[1]} column(s); expected pixel values and "
                        f"a label")
    bad = np.flatnonzero(~np.isfinite(data).all(axis=1))
    if bad.size:
        raise StepError(f"{path.name}: row {bad[0] + 1} holds a value that is not a finite number")
    labels = data[:, -1]
    bad = np.flatnonzero(labels != np.round(labels))
    if bad.size:
        raise StepError(f"{path.name}: the last column is the class label and must be an "
                        f"integer; row {bad[0] + 1} has {labels[bad[0]]}")
    return data[:, :-1], labels.astype(np.int64)


def fit_scaling(X: np.ndarray, how: str) -> tuple[np.ndarray, np.ndarray]:  # noqa: N803
    """offset and scale per feature, so that scaled = (X - offset) / scale."""
    if how == "minmax":
        offset, scale = X.min(axis=0), X.max(axis=0) - X.min(axis=0)
    elif how == "standard":
        offset, scale = X.mean(axis=0), X.std(axis=0)
    else:
        offset, scale = np.zeros(X.shape[1]), np.ones(X.shape[1])
    scale = np.where(scale > 0, scale, 1.0)  # a constant feature (a border pixel) stays 0
    return offset, scale


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def main() -> None:
    parse_command_line(
        "digits.preprocess", __doc__.splitlines()[0],
        "$MLTASK_INPUT_DATASET_DIR: exactly one *.csv.gz or *.csv, rows of pixel values then "
        "the label (scikit-learn's sklearn/datasets/data/digits.csv.gz)",
        "$MLTASK_OUTPUT_DIR/digits-<scaling>.npz: X_train, y_train, X_test, y_test, "
        "feature_offset, feature_scale, classes, ...", PARAMS)
    params = read_parameters(PARAMS)
    with timer() as elapsed:
        source = find_input("dataset", (".csv.gz", ".csv"), "raw digits CSV")
        X, y = read_csv(source)  # noqa: N806
        classes, counts = np.unique(y, return_counts=True)
        log(f"read {source.name}: {X.shape[0]} samples, {X.shape[1]} features (values "
            f"{X.min():g}..{X.max():g}), {len(classes)} classes")
        log("samples per class: " + " ".join(f"{c}:{n}" for c, n in zip(classes, counts,
                                                                       strict=True)))
        if len(classes) < 2:
            raise StepError(f"{source.name} holds a single class ({classes[0]}): nothing to "
                            f"classify")

        test_size, seed = params["testSize"], params["seed"]
        try:
            X_train, X_test, y_train, y_test = train_test_split(  # noqa: N806
                X, y, test_size=test_size, stratify=y, random_state=seed)
        except ValueError as e:
            raise StepError(f"cannot split {len(y)} samples of {len(classes)} classes with "
                            f"testSize={test_size}: {e}") from None
        log(f"stratified split (testSize={test_size}, seed={seed}): {len(y_train)} train, "
            f"{len(y_test)} test samples")

        offset, scale = fit_scaling(X_train, params["scaling"])
        log(f"scaling={params['scaling']}, fitted on the training split")
        X_train = ((X_train - offset) / scale).astype(np.float32)  # noqa: N806
        X_test = ((X_test - offset) / scale).astype(np.float32)  # noqa: N806
        log(f"scaled training features: mean {X_train.mean():.3f}, std {X_train.std():.3f}, "
            f"range {X_train.min():.3f}..{X_train.max():.3f}")

        check_output_extension("npz")
        out = output_dir(own=("digits-*.npz",))
        target = out / f"digits-{params['scaling']}.npz"
        side = int(round(np.sqrt(X.shape[1])))
        names = ([f"pixel_{r}_{c}" for r in range(side) for c in range(side)]
                 if side * side == X.shape[1] else [f"feature_{i}" for i in range(X.shape[1])])
        arrays = {
            "X_train": X_train, "y_train": y_train, "X_test": X_test, "y_test": y_test,
            "classes": classes, "feature_offset": offset, "feature_scale": scale,
            "feature_names": np.array(names), "scaling": np.array(params["scaling"]),
            "source_file": np.array(source.name), "source_sha256": np.array(sha256(source)),
            "seed": np.array(seed), "test_size": np.array(test_size),
        }
        size = write_file(target, _savez(arrays))
        log(f"wrote {target} ({size} bytes)")
        seconds = elapsed()
    write_metrics({
        "samples": len(y), "features": X.shape[1], "classes": len(classes),
        "trainSamples": len(y_train), "testSamples": len(y_test), "sizeBytes": size,
        "preprocessSeconds": seconds,
    })


def _savez(arrays: dict[str, np.ndarray]) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        with open(path, "wb") as f:
            np.savez_compressed(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
    return write


if __name__ == "__main__":
    run(main)
