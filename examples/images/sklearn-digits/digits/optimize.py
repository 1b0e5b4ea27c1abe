"""Optimization step: prune and quantize a trained digits model, checked on the held-out split.

Inputs: one `*.joblib` in the model folder (as digits.train writes it) and one `*.npz` in the
dataset folder (as digits.preprocess writes it: its test split measures the accuracy kept, its
training split serves the optional fine-tuning).
Output: `model-<precision>.joblib`. float32 and float16 models are plain scikit-learn estimators;
int8 is a digits.models.QuantizedClassifier (int8 weights, a float32 scale per output unit).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import joblib
import numpy as np
from sklearn.metrics import accuracy_score
from sklearn.neural_network import MLPClassifier

from digits.common import (
    Dataset,
    Param,
    StepError,
    check_output_extension,
    choice,
    find_input,
    integer,
    load_dataset,
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
from digits.models import (
    SUPPORTED,
    QuantizedClassifier,
    evaluate,
    get_layers,
    lean,
    set_layers,
)

BITS = {"float32": 32, "float16": 16, "int8": 8}

PARAMS = [
    Param("precision", "float16", "weights' storage: float32, float16, or int8 (symmetric, a "
          "float32 scale per output unit)", choice(*BITS)),
    Param("pruneFraction", "0", "fraction of each layer's weights set to zero, smallest "
          "magnitudes first (0 = no pruning)", number(0, 1, high_open=True)),
    Param("fineTuneEpochs", "0", "mlp: epochs of training on the training split after pruning, "
          "pruned weights kept at zero", integer(0, 10_000)),
    Param("maxAccuracyDrop", "0.05", "fail (and write no model) when held-out accuracy falls "
          "more than this below the input model's", number(0, 1)),
    Param("compression", "3", "zlib level of the saved file, 0-9 (zeros compress)",
          integer(0, 9)),
]


def load_model(path: Path) -> Any:
    try:
        model = joblib.load(path)
    except Exception as e:  # anything unpickling raises means a bad file
        raise StepError(f"cannot load the model {path.name}: {type(e).__name__}: {e}") from None
    if isinstance(model, QuantizedClassifier):
        raise StepError(f"{path.name} is already quantized to int8: give the model digits.train "
                        f"wrote")
    if not isinstance(model, SUPPORTED):
        raise StepError(f"{path.name} holds a {type(model).__name__}; expected an MLPClassifier "
                        f"or LogisticRegression as digits.train writes")
    return lean(model)


def prune(layers: list[tuple[np.ndarray, np.ndarray]], fraction: float) -> list[np.ndarray]:
    """Zero the `fraction` smallest-magnitude weights of each layer (in place); the masks of
    the weights kept."""
    masks = []
    for i, (w, _) in enumerate(layers, start=1):
        k = int(round(fraction * w.size))
        mask = np.ones(w.shape, dtype=bool)
        if k:
            drop = np.argpartition(np.abs(w).ravel(), k - 1)[:k]
            threshold = float(np.abs(w).ravel()[drop].max())
            mask.ravel()[drop] = False
            w[~mask] = 0.0
            log(f"layer {i} ({w.shape[0]}x{w.shape[1]}): pruned {k} of {w.size} weights "
                f"(|w| <= {threshold:.4g})")
        masks.append(mask)
    return masks


def fine_tune(model: MLPClassifier, data: Dataset, masks: list[np.ndarray], epochs: int) -> None:
    """More epochs of Adam on the training split, the pruned weights held at zero."""
    log(f"fine-tuning {epochs} epoch(s) on the training split ({len(data.y_train)} samples), "
        f"learningRate={model.learning_rate_init}")
    every = max(1, epochs // 50)
    seed = model.random_state  # a generator while tuning: an int would reshuffle alike each epoch
    model.random_state = np.random.RandomState(seed if isinstance(seed, int) else None)
    for epoch in range(1, epochs + 1):
        model.partial_fit(data.X_train, data.y_train)
        for w, mask in zip(model.coefs_, masks, strict=True):
            w[~mask] = 0.0
        if not np.isfinite(model.loss_):
            raise StepError(f"the fine-tuning loss became {model.loss_} at epoch {epoch}")
        if epoch % every == 0 or epoch == epochs:
            acc = accuracy_score(data.y_test, model.predict(data.X_test))
            log(f"fine-tune epoch {epoch:>{len(str(epochs))}}/{epochs}  loss {model.loss_:.4f}  "
                f"test accuracy {acc:.4f}")
    model.random_state = seed
    lean(model)


def compress(model: Any, precision: str) -> Any:
    if precision == "int8":
        return QuantizedClassifier(model)
    dtype = np.float16 if precision == "float16" else np.float32
    set_layers(model, [(w.astype(dtype), b.astype(dtype)) for w, b in get_layers(model)])
    return model


def main() -> None:
    parse_command_line(
        "digits.optimize", __doc__.splitlines()[0],
        "$MLTASK_INPUT_MODEL_DIR: exactly one *.joblib written by digits.train; "
        "$MLTASK_INPUT_DATASET_DIR: exactly one *.npz written by digits.preprocess",
        "$MLTASK_OUTPUT_DIR/model-<precision>.joblib", PARAMS)
    p = read_parameters(PARAMS)
    model_file = find_input("model", (".joblib",), "model")
    data = load_dataset(find_input("dataset", (".npz",), "dataset"))
    model = load_model(model_file)
    baseline_size = model_file.stat().st_size
    n_features = getattr(model, "n_features_in_", None)
    if n_features != data.X_test.shape[1]:
        raise StepError(f"the model takes {n_features} features, the dataset has "
                        f"{data.X_test.shape[1]}: not the dataset it was trained on?")
    unknown = sorted(set(np.unique(data.y_test)) - set(model.classes_))
    if unknown:
        raise StepError(f"the dataset has classes the model does not know: {unknown}")
    layers = get_layers(model)
    weights = sum(w.size for w, _ in layers)
    dtypes = sorted({str(np.asarray(a).dtype) for a in _raw_arrays(model)})
    log(f"loaded model {model_file.name}: {type(model).__name__}, layers "
        f"{' -> '.join(str(w.shape[0]) for w, _ in layers)} -> {layers[-1][0].shape[1]}, "
        f"{weights} weights ({'/'.join(dtypes)}), {baseline_size} bytes")

    with timer() as elapsed:
        baseline_accuracy, baseline_loss = evaluate(model, data.X_test, data.y_test)
        log(f"baseline on the held-out split ({len(data.y_test)} samples): accuracy "
            f"{baseline_accuracy:.4f}, log loss {baseline_loss:.4f}")
        log(f"optimizing: precision={p['precision']}, pruneFraction={p['pruneFraction']}, "
            f"fineTuneEpochs={p['fineTuneEpochs']}")
        masks = prune(layers, p["pruneFraction"])
        set_layers(model, layers)
        tuned = bool(p["fineTuneEpochs"]) and isinstance(model, MLPClassifier)
        if tuned:
            fine_tune(model, data, masks, p["fineTuneEpochs"])
        elif p["fineTuneEpochs"]:
            log("note: fineTuneEpochs applies to mlp models only; skipped")
        if p["pruneFraction"] or tuned:
            steps = " and ".join(s for s, done in (("pruning", p["pruneFraction"]),
                                                   ("fine-tuning", tuned)) if done)
            accuracy, _ = evaluate(model, data.X_test, data.y_test)
            log(f"after {steps}, before quantizing: accuracy {accuracy:.4f}")
        model = compress(model, p["precision"])
        accuracy, loss = evaluate(model, data.X_test, data.y_test)
        seconds = elapsed()
    delta = accuracy - baseline_accuracy
    final = model.model if isinstance(model, QuantizedClassifier) else model
    zeros = sum(int(np.count_nonzero(w == 0)) for w, _ in get_layers(final))
    log(f"{p['precision']} model on the held-out split: accuracy {accuracy:.4f} ({delta:+.4f}), "
        f"log loss {loss:.4f}, {zeros / weights:.1%} of the weights zero")
    if -delta > p["maxAccuracyDrop"]:
        raise StepError(f"accuracy fell from {baseline_accuracy:.4f} to {accuracy:.4f}, more "
                        f"than maxAccuracyDrop={p['maxAccuracyDrop']}: lower pruneFraction, "
                        f"add fineTuneEpochs or use a wider precision")

    check_output_extension("joblib")
    out = output_dir(own=("model-*.joblib",))
    target = out / f"model-{p['precision']}.joblib"
    size = write_file(target, _dump(model, p["compression"]))
    log(f"wrote {target} ({size} bytes, {baseline_size / size:.2f}x smaller than "
        f"{model_file.name})")
    write_metrics({
        "accuracy": accuracy, "loss": loss, "baselineAccuracy": baseline_accuracy,
        "baselineLoss": baseline_loss, "accuracyDelta": delta, "sizeBytes": size,
        "baselineSizeBytes": baseline_size, "compressionRatio": baseline_size / size,
        "sparsity": zeros / weights, "weightBits": BITS[p["precision"]],
        "optimizeSeconds": seconds,
    })


def _raw_arrays(model: Any) -> list[Any]:
    if isinstance(model, MLPClassifier):
        return list(model.coefs_)
    return [model.coef_]


def _dump(model: Any, level: int) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        joblib.dump(model, path, compress=level)
    return write


if __name__ == "__main__":
    run(main)
