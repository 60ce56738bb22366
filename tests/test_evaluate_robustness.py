"""Evaluation under clumsy and hostile input (issue 12, items 1 and 11): settings and outputs are
checked before any work, and damaged data met mid-run is one line that leaves no partial run."""

from __future__ import annotations

import os
import re
import subprocess

import pytest
import torch
from click.testing import CliRunner

from robustbench_pp import results
from robustbench_pp.cli import main
from robustbench_pp.datasets import generate
from robustbench_pp.evaluate import EvalSettings, EvaluationError, run_evaluation
from test_datasets_support import (  # noqa: F401  (fashion_root, private_hash_cache, synthetic_fashion_mnist: fixtures)
    fashion_root,
    private_hash_cache,
    synthetic_fashion_mnist,
    tiny_imagenet_spec,
    write_imagenet_folder,
)


pytestmark = pytest.mark.usefixtures("private_hash_cache")


def _on_the_fly(**changes) -> EvalSettings:
    base = dict(dataset="fashion-mnist-c", model="resnet18", num_classes=10, width=4, on_the_fly=True,
                corruptions=("contrast",), severities=(1,), limit=20, device="cpu", batch_size=10, num_workers=0)
    return EvalSettings(**{**base, **changes})


@pytest.mark.parametrize("changes,message", [
    (dict(batch_size=-4), "`batch_size` must be a whole number"),
    (dict(batch_size=0), "`batch_size` must be a whole number"),
    (dict(num_workers=-1), "`num_workers` must be a whole number of at least 0"),
    (dict(limit=0), "`limit` must be a whole number"),
    (dict(seed=-2), "`seed` must be a whole number of at least 0"),
    (dict(device="tpu"), "`device` 'tpu' is not a device"),
])
def test_bad_settings_fail_before_anything_is_written(tmp_path, changes, message):
    out = tmp_path / "run.jsonl"
    with pytest.raises(EvaluationError, match=message):
        run_evaluation(_on_the_fly(**changes), out=out)
    assert not out.exists()


def _evaluate_cli(*extra):
    return CliRunner().invoke(main, ["evaluate", "--model", "resnet18", "--width", "4", "--num-classes", "10",
                                     "--dataset", "fashion-mnist-c", "--on-the-fly", "--corruptions", "contrast",
                                     "--severities", "1", "--limit", "20", "--workers", "0", "--quiet", *extra])


def test_cli_unknown_device_is_one_line(tmp_path):
    result = _evaluate_cli("--device", "tpu", "--out", str(tmp_path / "r.jsonl"))
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    assert result.output.strip() == "Error: --device 'tpu' is not a device: use auto, cpu, cuda or cuda:N"
    assert not (tmp_path / "r.jsonl").exists()


def test_cli_output_under_a_regular_file_fails_before_any_cell(tmp_path):
    blocker = tmp_path / "afile"
    blocker.write_text("mine\n")
    result = _evaluate_cli("--device", "cpu", "--out", str(blocker / "r.jsonl"))
    assert result.exit_code == 1, result.output
    assert result.output.strip() == f"Error: cannot create the folder {blocker}: {blocker} is a file, not a folder"
    assert blocker.read_text() == "mine\n"


def test_api_output_under_a_regular_file_is_an_evaluation_error(tmp_path):
    blocker = tmp_path / "afile"
    blocker.write_text("mine\n")
    message = f"cannot create the folder {blocker / 'sub'}: {blocker} is a file, not a folder"
    with pytest.raises(EvaluationError, match=re.escape(message)):
        run_evaluation(_on_the_fly(limit=10), out=blocker / "sub" / "r.jsonl")
    assert blocker.read_text() == "mine\n"


def test_cli_output_on_a_read_only_filesystem_fails_before_any_cell(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)],
                                           capture_output=True).returncode != 0:
        pytest.skip("mounting a read-only tmpfs needs root")
    try:
        result = _evaluate_cli("--device", "cpu", "--out", str(folder / "r.jsonl"))
        assert result.exit_code == 1 and result.output.strip() == f"Error: cannot write into {folder}: read-only file system"
    finally:
        subprocess.run(["umount", str(folder)], check=True)


# ---------------------------------------------------------------------------------------------
# A broken JPEG in the middle of a run.


@pytest.fixture
def released_jpeg_set(tmp_path):
    """An ImageNet-style set in the released layout (no manifest: nothing checks its images'
    bytes before they are decoded), 3 classes of 2 images, contrast at severities 1 and 3."""
    source = write_imagenet_folder(tmp_path / "val")
    spec = tiny_imagenet_spec()
    generate(spec, out=tmp_path / "out", source_root=source, corruptions=["contrast"], severities=[1, 3],
             progress=False)
    folder = tmp_path / "out" / "imagenet-c"
    (folder / "manifest.json").unlink()
    return spec, source, folder


def _jpeg_settings(spec, source, folder, workers: int) -> EvalSettings:
    return EvalSettings(dataset=spec, model="resnet18", num_classes=3, stem="imagenet", width=4, data_root=str(folder),
                        source_root=str(source), severities=(1, 3), device="cpu", batch_size=2,
                        num_workers=workers)


@pytest.mark.parametrize("workers", [0, 1])
def test_a_broken_jpeg_mid_run_is_one_line_and_leaves_no_partial_run(released_jpeg_set, tmp_path, workers):
    spec, source, folder = released_jpeg_set
    broken = sorted((folder / "contrast" / "3").glob("*/*.JPEG"))[-1]  # not the image whose header is checked
    broken.write_bytes(b"\xff\xd8 this is not a JPEG")
    out = tmp_path / "run.jsonl"
    torch.manual_seed(0)
    with pytest.raises(EvaluationError) as caught:
        run_evaluation(_jpeg_settings(spec, source, folder, workers), out=out)
    message = str(caught.value)
    assert "\n" not in message and broken.name in message and "Traceback" not in message, message
    assert "was removed" in message
    assert not out.exists()  # the clean and contrast/1 records of this run went with it


def test_a_broken_jpeg_while_resuming_keeps_the_earlier_records(released_jpeg_set, tmp_path):
    spec, source, folder = released_jpeg_set
    out = tmp_path / "run.jsonl"
    settings = _jpeg_settings(spec, source, folder, 0)
    run_evaluation(settings, out=out)
    lines = out.read_bytes().splitlines(keepends=True)
    out.write_bytes(b"".join(lines[:2]))  # as a run killed before its last cell left it
    before = out.read_bytes()
    broken = sorted((folder / "contrast" / "3").glob("*/*.JPEG"))[-1]
    raw = bytearray(broken.read_bytes())
    raw[2:40] = bytes(38)  # same size (the released listing is unchanged), unreadable header
    broken.write_bytes(bytes(raw))
    with pytest.raises(EvaluationError, match="keeps the records it had before this run"):
        run_evaluation(settings, out=out, resume=True)
    assert out.read_bytes() == before and len(results.read_records(out)) == 2
