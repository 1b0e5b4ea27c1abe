"""The checkpoint folder (MLTASK_CHECKPOINT_DIR) the download step prepares for the run step:
made writable by the pods' group on a new working volume, kept as it is on one an earlier
attempt or pod wrote checkpoints to, refused when something else is in its place."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from harness.s3server import S3Server
from harness.transfer_cli import run_transfer


@pytest.fixture
def ckpt_env(s3: S3Server, bucket: str, env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    s3.client().put_object(Bucket=bucket, Key="raw/data.csv", Body=b"a,b\n1,2\n")
    return {**env, "MLTASK_INPUT_DATASET_URI": f"s3://{bucket}/raw/data.csv",
            "MLTASK_CHECKPOINT_DIR": str(tmp_path / "checkpoints")}


def test_a_new_volume_gets_a_group_writable_checkpoint_folder(
        ckpt_env: dict[str, str], tmp_path: Path) -> None:
    run = run_transfer("download", ckpt_env)
    assert run.returncode == 0, run
    folder = tmp_path / "checkpoints"
    mode = stat.S_IMODE(folder.stat().st_mode)
    assert mode == 0o2775, oct(mode)  # the group writes; what is made in it keeps the group


def test_checkpoints_of_an_earlier_run_are_kept_and_said(
        ckpt_env: dict[str, str], tmp_path: Path) -> None:
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    (folder / "epoch-12.ckpt").write_bytes(b"weights")
    run = run_transfer("download", ckpt_env)
    assert run.returncode == 0, run
    assert (folder / "epoch-12.ckpt").read_bytes() == b"weights"
    assert f"checkpoints in {folder}: 1 file kept from earlier runs" in run.stdout, run.stdout


@pytest.mark.parametrize("what", ["file", "symlink"])
def test_a_file_or_link_in_its_place_fails_naming_it(
        ckpt_env: dict[str, str], tmp_path: Path, what: str) -> None:
    folder = tmp_path / "checkpoints"
    if what == "file":
        folder.write_bytes(b"not a folder")
    else:
        (tmp_path / "elsewhere").mkdir()
        folder.symlink_to(tmp_path / "elsewhere")
    run = run_transfer("download", ckpt_env)
    assert run.returncode == 1, run
    assert run.last_line == (f"mltask-transfer download: MLTASK_CHECKPOINT_DIR {folder} is not "
                             "a folder: the working volume holds a file or a link there"), run
