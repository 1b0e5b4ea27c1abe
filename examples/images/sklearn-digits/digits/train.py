"""Training step: a classifier fitted on the preprocessed digits, evaluated on the held-out split.

Input: one `*.npz` in the dataset folder, as digits.preprocess writes it.
Output: `model.joblib`, the fitted scikit-learn estimator (MLPClassifier or LogisticRegression)
saved with joblib; it takes features scaled as in the dataset (feature_offset, feature_scale).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import joblib
import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score
from sklearn.neural_network import MLPClassifier

from digits import checkpoint
from digits.common import (
    Dataset,
    Param,
    StepError,
    check_output_extension,
    choice,
    find_input,
    given_parameters,
    int_list,
    integer,
    load_dataset,
    log,
    number,
    output_dir,
    parse_command_line,
    read_parameters,
    report_progress,
    run,
    timer,
    write_file,
    write_metrics,
)
from digits.models import evaluate, get_layers, lean

DEFAULT_EPOCHS = {"mlp": 40, "logreg": 200}

PARAMS = [
    Param("model", "mlp", "mlp: a neural network (MLPClassifier, Adam); logreg: multinomial "
          "logistic regression (LogisticRegression, L-BFGS)", choice("mlp", "logreg")),
    Param("hiddenUnits", "128", "mlp: units per hidden layer, comma-separated (e.g. 128,64)",
          int_list(1, 4096)),
    Param("learningRate", "0.001", "mlp: Adam's learning rate",
          number(0, 1, low_open=True)),
    Param("epochs", "auto", f"mlp: passes over the training split (auto: "
          f"{DEFAULT_EPOCHS['mlp']}); logreg: at most this many L-BFGS iterations (auto: "
          f"{DEFAULT_EPOCHS['logreg']})", lambda v: None if v.strip() == "auto"
          else integer(1, 100_000)(v)),
    Param("batchSize", "32", "mlp: samples per gradient step", integer(1, 100_000)),
    Param("alpha", "0.0001", "mlp: L2 penalty", number(0, 10)),
    Param("C", "1.0", "logreg: inverse regularisation strength", number(0, 1e6, low_open=True)),
    Param("seed", "0", "random seed (weights' initialisation, shuffling)",
          integer(0, 2**32 - 1)),
    Param("checkpointEvery", "auto", "mlp: save a checkpoint to $MLTASK_CHECKPOINT_DIR every "
          "this many epochs, and resume from it when run again (auto: a tenth of the epochs; "
          "0: never)", lambda v: None if v.strip() == "auto" else integer(0, 100_000)(v)),
]
#: Parameters that do not change what is trained: a checkpoint made with other values of these
#: is resumed from.
NOT_TRAINED = ("checkpointEvery",)
ONLY_FOR = {"hiddenUnits": "mlp", "learningRate": "mlp", "batchSize": "mlp", "alpha": "mlp",
            "C": "logreg", "checkpointEvery": "mlp"}
CHECKPOINT = "train-mlp"


def fit_mlp(data: Dataset, p: dict[str, Any], epochs: int,
            made_from: str) -> tuple[MLPClassifier, int]:
    """The fitted model, and the epochs a checkpoint had done before this run (0: none).

    A checkpoint holds the whole estimator, its Adam state and random generator included, so
    a resumed training goes on exactly as the interrupted one would have."""
    every = p["checkpointEvery"]
    every = max(1, epochs // 10) if every is None else every
    resumed = checkpoint.load(CHECKPOINT, made_from) if every else None
    if resumed:
        done, model = resumed
        log(f"resuming from checkpoint: epoch {done}/{epochs} done")
    else:
        done = 0
        # A generator, not the seed: partial_fit reseeds from an int each epoch, which would
        # shuffle every epoch the same way.
        model = MLPClassifier(hidden_layer_sizes=p["hiddenUnits"],
                              learning_rate_init=p["learningRate"],
                              batch_size=min(p["batchSize"], len(data.y_train)), alpha=p["alpha"],
                              random_state=np.random.RandomState(p["seed"]))
    log(f"fitting MLPClassifier: {data.X_train.shape[1]} inputs -> hidden "
        f"{'x'.join(map(str, p['hiddenUnits']))} (relu) -> {len(data.classes)} classes; adam, "
        f"learningRate={p['learningRate']}, batchSize={model.batch_size}, alpha={p['alpha']}, "
        f"epochs={epochs}, seed={p['seed']}, checkpointEvery={every or 'never'}")
    shown = max(1, epochs // 50)  # at most ~50 progress lines
    for epoch in range(done + 1, epochs + 1):
        model.partial_fit(data.X_train, data.y_train, classes=data.classes)
        if not np.isfinite(model.loss_):
            raise StepError(f"the training loss became {model.loss_} at epoch {epoch}: lower "
                            f"learningRate (now {p['learningRate']})")
        if epoch % shown == 0 or epoch == epochs:
            report_progress(epoch, epochs)
            train_acc = accuracy_score(data.y_train, model.predict(data.X_train))
            test_acc = accuracy_score(data.y_test, model.predict(data.X_test))
            log(f"epoch {epoch:>{len(str(epochs))}}/{epochs}  loss {model.loss_:.4f}  "
                f"train accuracy {train_acc:.4f}  test accuracy {test_acc:.4f}")
        if every and epoch % every == 0 and epoch < epochs:
            checkpoint.save(CHECKPOINT, made_from, epoch, model)
    model.random_state = p["seed"]
    return lean(model), done


def fit_logreg(data: Dataset, p: dict[str, Any], epochs: int) -> LogisticRegression:
    model = LogisticRegression(C=p["C"], max_iter=epochs, random_state=p["seed"])
    log(f"fitting LogisticRegression (multinomial, L-BFGS): {data.X_train.shape[1]} features -> "
        f"{len(data.classes)} classes; C={p['C']}, at most {epochs} iterations")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        model.fit(data.X_train, data.y_train)
    iterations = int(np.max(model.n_iter_))
    if any(issubclass(w.category, ConvergenceWarning) for w in caught):
        log(f"warning: L-BFGS did not converge in {iterations} iterations; raise epochs")
    else:
        log(f"L-BFGS converged after {iterations} iterations")
    return model


def main() -> None:
    parse_command_line(
        "digits.train", __doc__.splitlines()[0],
        "$MLTASK_INPUT_DATASET_DIR: exactly one *.npz written by digits.preprocess",
        "$MLTASK_OUTPUT_DIR/model.joblib: the fitted scikit-learn estimator (joblib)", PARAMS)
    p = read_parameters(PARAMS)
    given = given_parameters()
    for name, model_kind in ONLY_FOR.items():
        if name in given and p["model"] != model_kind:
            log(f"note: parameter {name} is used by model={model_kind} only, not "
                f"model={p['model']}")
    epochs = p["epochs"] or DEFAULT_EPOCHS[p["model"]]

    data_file = find_input("dataset", (".npz",), "dataset")
    data = load_dataset(data_file)
    if len(data.classes) < 2:
        raise StepError("the dataset holds a single class: nothing to classify")
    resumed_from = 0
    with timer() as elapsed:
        if p["model"] == "mlp":
            trained = {k: v for k, v in p.items() if k not in NOT_TRAINED}
            made_from = checkpoint.fingerprint({**trained, "epochs": epochs}, data_file)
            model, resumed_from = fit_mlp(data, p, epochs, made_from)
        else:
            model = fit_logreg(data, p, epochs)
        train_seconds = elapsed()
    iterations = epochs if p["model"] == "mlp" else int(np.max(model.n_iter_))

    accuracy, loss = evaluate(model, data.X_test, data.y_test)
    train_accuracy, train_loss = evaluate(model, data.X_train, data.y_train)
    f1 = float(f1_score(data.y_test, model.predict(data.X_test), average="macro"))
    per_class = [np.mean(model.predict(data.X_test[data.y_test == c]) == c) for c in data.classes]
    log(f"held-out test split ({len(data.y_test)} samples): accuracy {accuracy:.4f}, log loss "
        f"{loss:.4f}, macro F1 {f1:.4f}; training split: accuracy {train_accuracy:.4f}")
    log("test accuracy per class: " + " ".join(
        f"{c}:{a:.2f}" for c, a in zip(data.classes, per_class, strict=True)))

    check_output_extension("joblib")
    out = output_dir(own=("model.joblib",))
    target = out / "model.joblib"
    size = write_file(target, _dump(model))
    weights = sum(w.size + b.size for w, b in get_layers(model))
    log(f"wrote {target} ({size} bytes, {weights} weights, {model.__class__.__name__})")
    write_metrics({
        "accuracy": accuracy, "loss": loss, "f1Macro": f1, "trainAccuracy": train_accuracy,
        "trainLoss": train_loss, "trainSeconds": train_seconds, "epochs": iterations,
        "weights": weights, "sizeBytes": size, "resumedFromEpoch": resumed_from,
    })


def _dump(model: Any) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        joblib.dump(model, path, compress=3)
    return write


if __name__ == "__main__":
    run(main)
