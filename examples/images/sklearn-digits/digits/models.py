"""What the steps know of the models: their layers, how they are evaluated, the int8 format.

digits.train writes plain scikit-learn estimators (MLPClassifier, LogisticRegression), and so
does digits.optimize for precision float32 and float16. With precision int8 it writes a
QuantizedClassifier: loading that file with joblib needs this module importable (the image has
it: PYTHONPATH=/app); it predicts like the estimator it wraps.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, log_loss
from sklearn.neural_network import MLPClassifier

SUPPORTED = (MLPClassifier, LogisticRegression)
Layer = tuple[np.ndarray, np.ndarray]  # weights (inputs, outputs), biases (outputs,)


def get_layers(model: Any) -> list[Layer]:
    """The model's dense layers as float32 copies, weights oriented (inputs, outputs)."""
    if isinstance(model, MLPClassifier):
        pairs = zip(model.coefs_, model.intercepts_, strict=True)
    elif isinstance(model, LogisticRegression):
        pairs = [(model.coef_.T, model.intercept_)]
    else:
        raise TypeError(f"unsupported model {type(model).__name__}")
    return [(np.array(w, dtype=np.float32), np.array(b, dtype=np.float32)) for w, b in pairs]


def set_layers(model: Any, layers: list[Layer]) -> None:
    if isinstance(model, MLPClassifier):
        model.coefs_ = [w for w, _ in layers]
        model.intercepts_ = [b for _, b in layers]
    else:
        ((w, b),) = layers
        model.coef_ = np.ascontiguousarray(w.T)
        model.intercept_ = b


def lean(model: Any) -> Any:
    """Drop what an MLPClassifier keeps of its training that predicting never reads: Adam's
    moments (twice the weights), the copy of its initial weights (read by early stopping only)
    and its random generator (partial_fit makes a new one)."""
    if isinstance(model, MLPClassifier):
        drop = ["_optimizer", "_random_state"]
        if not model.early_stopping:
            drop += ["_best_coefs", "_best_intercepts"]
        for attr in drop:
            model.__dict__.pop(attr, None)
    return model


def evaluate(model: Any, X: np.ndarray, y: np.ndarray) -> tuple[float, float]:  # noqa: N803
    """Accuracy and log loss of `model` on (X, y)."""
    proba = model.predict_proba(X)
    pred = model.classes_[np.argmax(proba, axis=1)]
    return float(accuracy_score(y, pred)), float(log_loss(y, proba, labels=model.classes_))


def quantize_int8(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 per output unit: w ~ q * scale, q in [-127, 127]."""
    scale = np.abs(w).max(axis=0) / 127.0
    scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
    q = np.clip(np.round(w / scale), -127, 127).astype(np.int8)
    return q, scale


class QuantizedClassifier:
    """A scikit-learn classifier whose weight matrices are stored as int8, with a float32 scale
    per output unit (biases stay float32). Loading dequantizes them to float32; predict,
    predict_proba, score and the estimator's attributes work as on the wrapped estimator."""

    precision = "int8"

    def __init__(self, model: Any) -> None:
        """Quantize `model`'s weight matrices; `model` then holds the dequantized weights, so
        what it predicts is what the saved file will predict."""
        layers = get_layers(model)
        quantized = [quantize_int8(w) for w, _ in layers]
        self._stored = {"weights": [q for q, _ in quantized], "scales": [s for _, s in quantized],
                        "biases": [b for _, b in layers]}
        self.__setstate__({"estimator": model, **self._stored})

    def __getstate__(self) -> dict[str, Any]:
        template = copy.copy(self.model)  # the estimator without its weights
        if isinstance(template, MLPClassifier):
            template.coefs_ = template.intercepts_ = None
        else:
            template.coef_ = template.intercept_ = None
        return {"format": 1, "estimator": template, **self._stored}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._stored = {k: state[k] for k in ("weights", "scales", "biases")}
        model = state["estimator"]
        set_layers(model, [(q.astype(np.float32) * s, b) for q, s, b in
                           zip(state["weights"], state["scales"], state["biases"], strict=True)])
        self.model = model

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name == "model":  # not set yet (unpickling, copying)
            raise AttributeError(name)
        return getattr(self.model, name)

    def predict(self, X: Any) -> np.ndarray:  # noqa: N803
        return self.model.predict(X)

    def predict_proba(self, X: Any) -> np.ndarray:  # noqa: N803
        return self.model.predict_proba(X)

    def score(self, X: Any, y: Any) -> float:  # noqa: N803
        return self.model.score(X, y)

    def __repr__(self) -> str:
        return f"QuantizedClassifier(int8, {self.model!r})"
