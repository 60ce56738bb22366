"""rbpp evaluate -> rbpp check / rbpp report on real records (tiny model, a few cells)."""

from __future__ import annotations

import shutil

import pytest
import torch
from click.testing import CliRunner

from _fixtures import tiny_fashion_mnist
from robustbench_pp.cli import main


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    from robustbench_pp.models import create_model

    folder = tmp_path_factory.mktemp("e2e")
    data = tiny_fashion_mnist(folder / "fmnist", test=40, train=20)
    torch.manual_seed(0)
    checkpoint = folder / "resnet18_w4.pt"
    torch.save(create_model("resnet18", num_classes=10, width=4).state_dict(), checkpoint)
    runs = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FASHION_MNIST_ROOT", str(data))
        for limit in (20, 10):
            runs[limit] = folder / f"limit{limit}.jsonl"
            result = CliRunner().invoke(main, [
                "evaluate", "--model", "resnet18", "--width", "4", "--checkpoint", str(checkpoint),
                "--dataset", "fashion-mnist-c", "--on-the-fly", "--corruptions", "fog,contrast", "--severities", "1,5",
                "--limit", str(limit), "--device", "cpu", "--batch-size", "32", "--quiet", "--workers", "0",
                "--out", str(runs[limit]),
            ])
            assert result.exit_code == 0, result.output
    return runs


def test_check_on_evaluated_records(evaluated, tmp_path):
    copy = tmp_path / "again.jsonl"
    shutil.copy(evaluated[20], copy)
    same = CliRunner().invoke(main, ["check", str(copy), "--against", str(evaluated[20]), "--ci-aware"])
    assert same.exit_code == 0, same.output
    assert "OK: 5 numbers within tolerance" in same.output  # clean + 2 corruptions × 2 severities
    other_subset = CliRunner().invoke(main, ["check", str(evaluated[10]), "--against", str(evaluated[20])])
    assert other_subset.exit_code == 2
    assert 'subset: {"limit": 10, "seed": 0} vs reference {"limit": 20, "seed": 0}' in other_subset.output


def test_report_on_evaluated_records(evaluated, tmp_path):
    out = tmp_path / "reports"
    result = CliRunner().invoke(main, ["report", str(evaluated[20]), "--out", str(out)])
    assert result.exit_code == 0, result.output
    index = (out / "index.html").read_text()
    assert "incomplete: 71 of 76 cells missing" in index  # only 4 corruption cells were evaluated
    page = next(out.glob("model-resnet18-*.html")).read_text()
    assert '&#34;limit&#34;: 20' in page or '"limit": 20' in page  # the subset is in the provenance block
    assert "95% CI" in page  # per-cell bootstrap intervals in the cell tooltips
    assert page.count("data:image/svg+xml;base64,") == 1  # the heatmap of the evaluated cells; curves need 5 severities
