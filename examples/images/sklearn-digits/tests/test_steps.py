"""The three steps run as the image runs them: `python3 -m digits.<step>` as a subprocess, with
the step contract's environment, on scikit-learn's own digits.csv.gz.

Needs scikit-learn (requirements.txt); see pytest.ini for how to run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

sklearn = pytest.importorskip("sklearn")

import joblib  # noqa: E402
import numpy as np  # noqa: E402

PACKAGE_ROOT = Path(__file__).resolve().parents[1]
DIGITS_CSV = Path(sklearn.__file__).parent / "datasets" / "data" / "digits.csv.gz"


@dataclass
class Step:
    proc: subprocess.CompletedProcess[str]
    seconds: float
    output: Path
    metrics_file: Path

    @property
    def metrics(self) -> dict[str, Any]:
        return json.loads(self.metrics_file.read_text())

    @property
    def outputs(self) -> list[str]:
        return sorted(p.name for p in self.output.iterdir()) if self.output.exists() else []

    @property
    def last_line(self) -> str:
        return self.proc.stderr.strip().splitlines()[-1] if self.proc.stderr.strip() else ""


def run_step(step: str, work: Path, params: dict[str, str] | None = None, *,
             dataset: Path | list[Path] | None = None, model: Path | None = None,
             env: dict[str, str] | None = None, args: tuple[str, ...] = ()) -> Step:
    """Run digits.<step> in `work` as the run pod would: inputs copied into
    work/input/{dataset,model} (as the download step leaves them), the contract's variables."""
    for kind, files in (("dataset", dataset), ("model", model)):
        if files is not None:
            folder = work / "input" / kind
            folder.mkdir(parents=True, exist_ok=True)
            for f in files if isinstance(files, list) else [files]:
                shutil.copy(f, folder / f.name)
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("MLTASK_")}
    full_env.update({
        "PYTHONPATH": str(PACKAGE_ROOT),
        "MLTASK_STEP": "run",
        "MLTASK_INPUT_DIR": str(work / "input"),
        "MLTASK_INPUT_DATASET_DIR": str(work / "input" / "dataset"),
        "MLTASK_OUTPUT_DIR": str(work / "output"),
        "MLTASK_METRICS_FILE": str(work / "meta" / "metrics.json"),
        "MLTASK_PARAMETERS": json.dumps(params or {}),
    })
    if model is not None:
        full_env["MLTASK_INPUT_MODEL_DIR"] = str(work / "input" / "model")
    full_env.update(env or {})
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", f"digits.{step}", *args], env=full_env,
                          cwd=work, capture_output=True, text=True, timeout=300, check=False)
    return Step(proc, time.perf_counter() - start, work / "output", work / "meta" / "metrics.json")


def ok(step: Step) -> Step:
    assert step.proc.returncode == 0, step.proc.stdout + step.proc.stderr
    return step


def output_file(step: Step) -> Path:
    (name,) = step.outputs  # only the artefact: the upload step stores everything there
    return step.output / name


def assert_numbers(metrics: dict[str, Any]) -> None:
    assert metrics and all(isinstance(v, int | float) and not isinstance(v, bool)
                           for v in metrics.values()), metrics


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Step]:
    """preprocess -> train -> optimize with default parameters, each step's output handed to
    the next as the upload and download steps would."""
    root = tmp_path_factory.mktemp("chain")
    pre = ok(run_step("preprocess", root / "pre", dataset=DIGITS_CSV))
    train = ok(run_step("train", root / "train", dataset=output_file(pre)))
    opt = ok(run_step("optimize", root / "opt", dataset=output_file(pre),
                      model=output_file(train)))
    for name, step in (("preprocess", pre), ("train", train), ("optimize", opt)):
        print(f"{name}: {step.seconds:.2f}s {step.metrics}")
    return {"preprocess": pre, "train": train, "optimize": opt}


@pytest.fixture(scope="module")
def dataset(chain: dict[str, Step]) -> Path:
    return output_file(chain["preprocess"])


@pytest.fixture(scope="module")
def mlp_model(chain: dict[str, Step]) -> Path:
    return output_file(chain["train"])


def test_preprocess_writes_a_scaled_stratified_split(chain: dict[str, Step]) -> None:
    step = chain["preprocess"]
    assert step.outputs == ["digits-minmax.npz"]
    m = step.metrics
    assert_numbers(m)
    assert (m["samples"], m["features"], m["classes"]) == (1797, 64, 10)
    assert (m["trainSamples"], m["testSamples"]) == (1437, 360)
    with np.load(output_file(step)) as npz:
        assert npz["X_train"].shape == (1437, 64) and npz["X_test"].shape == (360, 64)
        assert npz["X_train"].dtype == np.float32
        assert npz["X_train"].min() == 0.0 and npz["X_train"].max() == 1.0
        assert sorted(npz["classes"]) == list(range(10))
        # stratified: every class is about a fifth of its samples in the test split
        assert np.bincount(npz["y_test"]).min() >= 34 and np.bincount(npz["y_test"]).max() <= 37
        assert np.allclose(npz["feature_offset"], 0) and npz["feature_scale"].max() == 16
        assert str(npz["source_file"]) == "digits.csv.gz"
    out = step.proc.stdout
    assert "1797 samples, 64 features" in out and "1437 train, 360 test" in out


def test_train_mlp_reaches_held_out_accuracy(chain: dict[str, Step], dataset: Path) -> None:
    step = chain["train"]
    assert step.outputs == ["model.joblib"]
    m = step.metrics
    assert_numbers(m)
    assert m["accuracy"] > 0.95 and 0 < m["loss"] < 0.3 and m["epochs"] == 40
    assert m["trainSeconds"] < 60 and m["sizeBytes"] == output_file(step).stat().st_size
    model = joblib.load(output_file(step))
    assert type(model).__name__ == "MLPClassifier" and not hasattr(model, "_optimizer")
    with np.load(dataset) as npz:
        assert model.score(npz["X_test"], npz["y_test"]) == pytest.approx(m["accuracy"])
    lines = step.proc.stdout.splitlines()
    assert sum(line.startswith("epoch ") for line in lines) == 40
    assert any("learningRate=0.001" in line for line in lines)
    assert lines[-1].startswith("metrics: accuracy=")


def test_optimize_default_is_float16_half_the_size(chain: dict[str, Step], dataset: Path,
                                                  mlp_model: Path) -> None:
    step = chain["optimize"]
    assert step.outputs == ["model-float16.joblib"]
    m = step.metrics
    assert_numbers(m)
    assert m["baselineSizeBytes"] == mlp_model.stat().st_size
    assert m["sizeBytes"] < m["baselineSizeBytes"] / 1.8 and m["compressionRatio"] > 1.8
    assert m["accuracy"] > 0.95 and abs(m["accuracyDelta"]) < 0.01 and m["weightBits"] == 16
    model = joblib.load(output_file(step))  # a plain scikit-learn estimator
    assert {c.dtype for c in model.coefs_} == {np.dtype(np.float16)}
    with np.load(dataset) as npz:
        assert model.score(npz["X_test"], npz["y_test"]) == pytest.approx(m["accuracy"])


def test_optimize_int8_pruned_and_fine_tuned(tmp_path: Path, dataset: Path,
                                             mlp_model: Path) -> None:
    step = ok(run_step("optimize", tmp_path, {"precision": "int8", "pruneFraction": "0.5",
                                              "fineTuneEpochs": "5"},
                       dataset=dataset, model=mlp_model))
    assert step.outputs == ["model-int8.joblib"]
    m = step.metrics
    assert_numbers(m)
    assert m["compressionRatio"] > 3 and m["sizeBytes"] < m["baselineSizeBytes"] / 3
    assert m["accuracy"] > 0.95 and m["accuracyDelta"] > -0.02
    assert m["sparsity"] == pytest.approx(0.5, abs=0.01) and m["weightBits"] == 8
    assert "fine-tune epoch 5/5" in step.proc.stdout
    model = joblib.load(output_file(step))  # digits.models.QuantizedClassifier (pythonpath)
    assert type(model).__name__ == "QuantizedClassifier"
    with np.load(dataset) as npz:
        assert model.score(npz["X_test"], npz["y_test"]) == pytest.approx(m["accuracy"])
    assert list(model.classes_) == list(range(10))


def test_logreg_trains_and_quantizes(tmp_path: Path, dataset: Path) -> None:
    train = ok(run_step("train", tmp_path / "train", {"model": "logreg"}, dataset=dataset))
    assert train.metrics["accuracy"] > 0.94 and train.outputs == ["model.joblib"]
    assert "L-BFGS converged" in train.proc.stdout
    opt = ok(run_step("optimize", tmp_path / "opt", {"precision": "int8"}, dataset=dataset,
                      model=output_file(train)))
    assert opt.metrics["accuracy"] > 0.94 and opt.metrics["compressionRatio"] > 1.5


def test_parameters_from_config_map_folder_and_inline(tmp_path: Path) -> None:
    config = tmp_path / "config"
    config.mkdir()
    (config / "testSize").write_text("0.25\n")
    (config / "scaling").write_text("minmax")
    step = ok(run_step("preprocess", tmp_path, {"scaling": "standard", "other": "x"},
                       dataset=DIGITS_CSV, env={"MLTASK_CONFIG_DIR": str(config)}))
    assert step.outputs == ["digits-standard.npz"]  # inline parameters win
    assert step.metrics["testSamples"] == 450
    assert "ignoring parameter(s) other" in step.proc.stdout


def test_a_rerun_replaces_what_an_earlier_attempt_left(tmp_path: Path, dataset: Path) -> None:
    out = tmp_path / "output"
    out.mkdir()
    (out / "model.joblib").write_text("from attempt 1")
    (out / ".tmp-model.joblib").write_text("interrupted")
    step = ok(run_step("train", tmp_path, {"epochs": "3"}, dataset=dataset))
    assert step.outputs == ["model.joblib"] and step.metrics["epochs"] == 3
    assert type(joblib.load(out / "model.joblib")).__name__ == "MLPClassifier"


def test_input_found_in_an_unpacked_subfolder(tmp_path: Path) -> None:
    nested = tmp_path / "input" / "dataset" / "raw" / "digits.csv.gz"
    nested.parent.mkdir(parents=True)
    shutil.copy(DIGITS_CSV, nested)
    (tmp_path / "input" / "dataset" / "README.txt").write_text("not data")
    step = ok(run_step("preprocess", tmp_path))
    assert step.metrics["samples"] == 1797


@pytest.mark.parametrize("module", ["preprocess", "train", "optimize"])
def test_help(tmp_path: Path, module: str) -> None:
    step = ok(run_step(module, tmp_path, args=("--help",)))
    assert "parameters (config.parameters" in step.proc.stdout
    assert "MLTASK_INPUT_DATASET_DIR" in step.proc.stdout and not step.outputs


# --- bad input: exit non-zero, ONE clear last line on stderr, nothing written ---------------


def failing(step: Step, *fragments: str) -> None:
    assert step.proc.returncode != 0, step.proc.stdout
    assert step.last_line.startswith("error: "), step.proc.stderr
    for fragment in fragments:
        assert fragment in step.last_line, step.last_line
    assert "Traceback" not in step.proc.stderr
    assert not step.metrics_file.exists()


def test_missing_input_file(tmp_path: Path) -> None:
    (tmp_path / "input" / "dataset").mkdir(parents=True)
    (tmp_path / "input" / "dataset" / "notes.txt").write_text("x")
    step = run_step("preprocess", tmp_path)
    failing(step, "no raw digits CSV (*.csv.gz or *.csv)", "it holds: notes.txt")
    assert not step.outputs


def test_missing_input_folder(tmp_path: Path, dataset: Path) -> None:
    step = run_step("optimize", tmp_path, dataset=dataset)  # no model downloaded
    failing(step, "the model input folder", "does not exist")


def test_two_candidate_files(tmp_path: Path) -> None:
    other = tmp_path / "digits-v2.csv.gz"
    shutil.copy(DIGITS_CSV, other)
    step = run_step("preprocess", tmp_path, dataset=[DIGITS_CSV, other])
    failing(step, "2 candidate raw digits CSV files", "expected exactly one",
            "digits-v2.csv.gz, digits.csv.gz")


@pytest.mark.parametrize(("module", "params", "fragments"), [
    ("preprocess", {"testSize": "1.5"}, ("parameter testSize='1.5'", "must be in (0, 1)")),
    ("preprocess", {"scaling": "zscore"},
     ("parameter scaling='zscore'", "expected one of minmax, standard, none")),
    ("preprocess", {"seed": "abc"}, ("parameter seed='abc'", "expected an integer")),
    ("preprocess", {"testSize": "0.001"}, ("cannot split 1797 samples of 10 classes",)),
    ("train", {"epochs": "ten"}, ("parameter epochs='ten'", "expected an integer")),
    ("train", {"hiddenUnits": "128,0"}, ("parameter hiddenUnits='128,0'", "must be in [1, 4096]")),
    ("train", {"model": "svm"}, ("parameter model='svm'", "expected one of mlp, logreg")),
    ("train", {"learningRate": "-1"}, ("parameter learningRate='-1'",)),
])
def test_bad_parameter(tmp_path: Path, dataset: Path, module: str, params: dict[str, str],
                       fragments: tuple[str, ...]) -> None:
    source = DIGITS_CSV if module == "preprocess" else dataset
    step = run_step(module, tmp_path, params, dataset=source)
    failing(step, *fragments)
    assert not step.outputs


def test_parameters_not_json(tmp_path: Path) -> None:
    step = run_step("preprocess", tmp_path, dataset=DIGITS_CSV,
                    env={"MLTASK_PARAMETERS": "testSize=0.2"})
    failing(step, "MLTASK_PARAMETERS is not valid JSON")


def test_parameter_not_a_string(tmp_path: Path) -> None:
    step = run_step("preprocess", tmp_path, dataset=DIGITS_CSV,
                    env={"MLTASK_PARAMETERS": '{"testSize": [0.2]}'})
    failing(step, "parameter testSize must be a string")


def test_csv_that_is_not_numbers(tmp_path: Path) -> None:
    bad = tmp_path / "digits.csv"
    bad.write_text("pixel_0,label\n0,1\n")
    step = run_step("preprocess", tmp_path / "w", dataset=bad)
    failing(step, "cannot read digits.csv as comma-separated numbers")


def test_dataset_not_from_preprocess(tmp_path: Path) -> None:
    npz = tmp_path / "other.npz"
    np.savez(npz, x=np.zeros(3))
    step = run_step("train", tmp_path / "w", dataset=npz)
    failing(step, "other.npz lacks X_train, y_train, X_test, y_test")


def test_model_file_that_is_not_a_model(tmp_path: Path, dataset: Path) -> None:
    junk = tmp_path / "model.joblib"
    junk.write_bytes(b"not a pickle")
    step = run_step("optimize", tmp_path / "w", dataset=dataset, model=junk)
    failing(step, "cannot load the model model.joblib")


def test_optimize_refuses_to_lose_too_much_accuracy(tmp_path: Path, dataset: Path,
                                                   mlp_model: Path) -> None:
    step = run_step("optimize", tmp_path, {"pruneFraction": "0.99", "maxAccuracyDrop": "0.01"},
                    dataset=dataset, model=mlp_model)
    failing(step, "accuracy fell from", "maxAccuracyDrop=0.01")
    assert not step.outputs


# -- checkpoints (MLTASK_CHECKPOINT_DIR) --------------------------------------------------------


def train_with_checkpoints(work: Path, dataset: Path, checkpoints: Path,
                           **params: str) -> Step:
    return run_step("train", work, {"epochs": "20", "checkpointEvery": "5", **params},
                    dataset=dataset, env={"MLTASK_CHECKPOINT_DIR": str(checkpoints)})


def weights(model_file: Path) -> list[np.ndarray]:
    model = joblib.load(model_file)
    return [*model.coefs_, *model.intercepts_]


def test_train_resumes_from_its_checkpoint_exactly(tmp_path: Path, dataset: Path) -> None:
    """A run that stops after its epoch-15 checkpoint (a pod killed), run again on the same
    folder, goes on from epoch 16 and ends with the same weights as one uninterrupted run."""
    ckpt = tmp_path / "checkpoints"
    whole = ok(train_with_checkpoints(tmp_path / "whole", dataset, ckpt))
    assert whole.metrics["resumedFromEpoch"] == 0
    for epoch in (5, 10, 15):
        assert f"checkpoint: epoch {epoch} saved to {ckpt}/train-mlp.joblib" in whole.proc.stdout
    assert "epoch 20 saved" not in whole.proc.stdout, "the end is the model, not a checkpoint"

    again = ok(train_with_checkpoints(tmp_path / "again", dataset, ckpt))
    assert "resuming from checkpoint: epoch 15/20 done" in again.proc.stdout, again.proc.stdout
    assert again.metrics["resumedFromEpoch"] == 15
    assert " 5/20 " not in again.proc.stdout and "20/20" in again.proc.stdout
    for a, b in zip(weights(output_file(whole)), weights(output_file(again)), strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_checkpoint_of_other_parameters_or_a_damaged_one_is_not_resumed(
        tmp_path: Path, dataset: Path) -> None:
    ckpt = tmp_path / "checkpoints"
    ok(train_with_checkpoints(tmp_path / "first", dataset, ckpt))
    other = ok(train_with_checkpoints(tmp_path / "other", dataset, ckpt, learningRate="0.01"))
    assert "was made with other parameters or data; starting afresh" in other.proc.stdout
    assert other.metrics["resumedFromEpoch"] == 0

    (ckpt / "train-mlp.joblib").write_bytes(b"half a checkpoint")
    damaged = ok(train_with_checkpoints(tmp_path / "damaged", dataset, ckpt))
    assert "cannot be read" in damaged.proc.stdout and "starting afresh" in damaged.proc.stdout
    assert damaged.metrics["resumedFromEpoch"] == 0


def test_checkpoint_every_zero_writes_none(tmp_path: Path, dataset: Path) -> None:
    ckpt = tmp_path / "checkpoints"
    step = ok(train_with_checkpoints(tmp_path / "w", dataset, ckpt, checkpointEvery="0"))
    assert "checkpoint:" not in step.proc.stdout
    assert not (ckpt / "train-mlp.joblib").exists()


def test_train_reports_its_progress_in_epochs(tmp_path: Path, dataset: Path) -> None:
    """$MLTASK_PROGRESS_FILE (Argo's progress file) holds epochs done/epochs, last line last."""
    progress = tmp_path / "progress"
    step = ok(run_step("train", tmp_path / "w", {"epochs": "20"}, dataset=dataset,
                       env={"MLTASK_PROGRESS_FILE": str(progress)}))
    assert progress.read_text() == "20/20\n"
    assert "cannot report progress" not in step.proc.stdout


def test_a_progress_file_it_cannot_write_is_said_once_and_the_training_goes_on(
        tmp_path: Path, dataset: Path) -> None:
    step = ok(run_step("train", tmp_path / "w", {"epochs": "20"}, dataset=dataset,
                       env={"MLTASK_PROGRESS_FILE": str(tmp_path / "no-such-dir" / "p")}))
    assert step.proc.stdout.count("cannot report progress") == 1
    assert step.metrics["epochs"] == 20
