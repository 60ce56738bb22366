"""Your own model: ``--model PATH.py:FACTORY`` / ``package.module:FACTORY`` / ``torchvision/NAME`` /
``timm/NAME`` / entry points, and ``robustbench_pp.evaluate_model`` for any ``nn.Module``."""

from __future__ import annotations

import json
import sys
import textwrap

import pytest
import torch
from click.testing import CliRunner

from _fixtures import tiny_fashion_mnist
from robustbench_pp import results
from robustbench_pp.cli import main
from robustbench_pp.names import ALL_CORRUPTIONS

CONSTANT_MODEL = '''
import torch
from torch import nn


class Constant(nn.Module):
    """Always predicts class 3."""

    def __init__(self, num_classes):
        super().__init__()
        self.num_classes = num_classes
        self.bias = nn.Parameter(torch.zeros(num_classes))

    def forward(self, x):
        logits = self.bias.expand(x.shape[0], -1).clone()
        logits[:, 3] += 1.0
        return logits


def build(num_classes=10):
    return Constant(num_classes)


def no_arguments():
    return Constant(10)


def broken():
    raise RuntimeError("no GPU here")


def not_a_module():
    return 42


def wrong_shape():
    return nn.Flatten()
'''


@pytest.fixture(scope="module")
def fmnist(tmp_path_factory):
    return tiny_fashion_mnist(tmp_path_factory.mktemp("fmnist"), test=60, train=10)


@pytest.fixture()
def model_file(tmp_path):
    path = tmp_path / "my_models" / "constant_net.py"
    path.parent.mkdir()
    path.write_text(CONSTANT_MODEL)
    return path


def _evaluate(fmnist, out, *args):
    return CliRunner().invoke(main, ["evaluate", "--dataset", "fashion-mnist-c", "--source-root", str(fmnist),
                                     "--on-the-fly", "--limit", "20", "--device", "cpu", "--quiet", "--workers", "0",
                                     "--out", str(out), *args])


def _errors(path):
    return {record.cell: 1 - record.n_correct / record.n_total for record in results.read_records(path)}


@pytest.mark.slow
def test_constant_model_from_a_file_errs_on_90_percent_of_every_cell(fmnist, model_file, tmp_path):
    out = tmp_path / "r.jsonl"
    result = _evaluate(fmnist, out, "--model", f"{model_file}:build")
    assert result.exit_code == 0, result.output
    assert "model constant_net.py:build (file): input 32x32 px, mean (0.219, 0.219, 0.219)" in result.output
    assert "[the usual for fashion-mnist-c]" in result.output
    errors = _errors(out)
    assert len(errors) == 1 + 5 * len(ALL_CORRUPTIONS)  # clean + every cell (on the fly: the 4 extra too)
    assert set(errors.values()) == {0.9}  # 2 of the 20 balanced images are class 3, in every cell
    record = results.read_records(out)[0]
    assert record.model == "constant_net.py:build" and record.provenance["settings"]["model_card"]["source"] == "file"
    metrics = CliRunner().invoke(main, ["metrics", str(out), "--json"])
    assert metrics.exit_code == 0, metrics.output
    summary = json.loads(metrics.output)
    assert summary["clean_error"] == pytest.approx(0.9) and summary["unnormalized_mean_error"] == pytest.approx(0.9)
    assert summary["protocol"] == "imagenet-c"


def test_factory_without_arguments_and_module_form(fmnist, model_file, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(model_file.parent))
    for spec, label in ((f"{model_file}:no_arguments", "constant_net.py:no_arguments"),
                        ("constant_net:build", "constant_net:build")):
        out = tmp_path / f"{label.replace(':', '_')}.jsonl"
        result = _evaluate(fmnist, out, "--model", spec, "--corruptions", "fog", "--severities", "2",
                           "--mean", "0.5,0.5,0.5", "--std", "0.25,0.25,0.25")
        assert result.exit_code == 0, result.output
        assert "[mean/std given; input size the usual for fashion-mnist-c]" in result.output
        assert set(_errors(out).values()) == {0.9}
        card = results.read_records(out)[0].provenance["settings"]["model_card"]
        assert card["name"] == label and card["mean"] == [0.5, 0.5, 0.5] and card["std"] == [0.25, 0.25, 0.25]


def test_evaluate_model_api_errs_on_90_percent_and_the_run_works_with_every_tool(fmnist, model_file, tmp_path,
                                                                                   monkeypatch):
    import robustbench_pp

    monkeypatch.syspath_prepend(str(model_file.parent))
    from constant_net import Constant

    model = Constant(10)
    out = tmp_path / "api.jsonl"
    options = dict(source_root=str(fmnist), on_the_fly=True, limit=20, corruptions=["gaussian_noise", "contrast"],
                   severities=[1, 5], device="cpu", num_workers=0)
    run = robustbench_pp.evaluate_model(model, dataset="fashion-mnist-c", name="constant", mean=(0.2190,) * 3,
                                        std=(0.3318,) * 3, out=out, **options)
    assert [r.cell for r in run.records] == [("clean", 0), ("gaussian_noise", 1), ("gaussian_noise", 5),
                                             ("contrast", 1), ("contrast", 5)]
    assert all(r.n_total == 20 and r.n_correct == 2 for r in run.records)
    assert [r.cell for r in results.read_records(out)] == [r.cell for r in run.records]
    digest = run.records[0].provenance["checkpoint_sha256"]
    assert digest == run.card.state_dict_sha256 and len(digest) == 64
    # Resume: the same model skips every cell; other weights are another run and are refused.
    again = robustbench_pp.evaluate_model(model, dataset="fashion-mnist-c", name="constant", mean=(0.2190,) * 3,
                                          std=(0.3318,) * 3, out=out, resume=True, **options)
    assert not again.written and len(again.skipped) == 5
    with torch.no_grad():
        model.bias[0] = 0.5
    with pytest.raises(ValueError, match="checkpoint_sha256"):
        robustbench_pp.evaluate_model(model, dataset="fashion-mnist-c", name="constant", mean=(0.2190,) * 3,
                                      std=(0.3318,) * 3, out=out, resume=True, **options)
    # In memory only, and the tools that read results files accept the file.
    memory = robustbench_pp.evaluate_model(Constant(10), dataset="fashion-mnist-c", name="c", mean=(0.5,) * 3,
                                           std=(0.5,) * 3, **{**options, "corruptions": ["fog"], "severities": [1]})
    assert memory.out is None and len(memory.records) == 2
    runner = CliRunner()
    assert runner.invoke(main, ["check", str(out), "--against", str(out)]).exit_code == 0
    report = runner.invoke(main, ["report", str(out), "--out", str(tmp_path / "site")])
    assert report.exit_code == 0, report.output
    # Shards of the same run merge into the whole run's counts.
    shards = []
    for index in range(2):
        shards.append(tmp_path / f"shard{index}.jsonl")
        robustbench_pp.evaluate_model(Constant(10), dataset="fashion-mnist-c", name="constant", mean=(0.2190,) * 3,
                                      std=(0.3318,) * 3, out=shards[-1], shard=f"{index}/2", **options)
    merged = tmp_path / "merged.jsonl"
    result = runner.invoke(main, ["merge", *map(str, shards), "--out", str(merged)])
    assert result.exit_code == 0, result.output
    assert [(r.cell, r.n_correct, r.n_total) for r in results.read_records(merged)] == \
        [(r.cell, r.n_correct, r.n_total) for r in run.records]


def test_evaluate_model_refuses_bad_arguments(fmnist, model_file, tmp_path, monkeypatch):
    import robustbench_pp
    from robustbench_pp.evaluate import EvaluationError

    monkeypatch.syspath_prepend(str(model_file.parent))
    from constant_net import Constant

    base = dict(dataset="fashion-mnist-c", name="c", source_root=str(fmnist), on_the_fly=True, limit=10,
                corruptions=["fog"], severities=[1], device="cpu")
    out = tmp_path / "never.jsonl"
    cases = [
        (dict(mean=(0.5, 0.5), std=(0.5,) * 3), "`mean` must be 3 finite numbers"),
        (dict(mean=(0.5,) * 3, std=(0.5, 0, 0.5)), "`std` must be positive"),
        (dict(mean=(0.5,) * 3, std=(0.5,) * 3, input_size=0), "`input_size` must be a positive integer"),
        (dict(mean=(0.5,) * 3, std=(0.5,) * 3, batchsize=3), "unknown option(s) `batchsize`"),
        (dict(mean=(0.5,) * 3, std=(0.5,) * 3, protocol="nope"), "`protocol` must be one of imagenet-c, pushpull-net"),
    ]
    for extra, message in cases:
        with pytest.raises(EvaluationError) as caught:
            robustbench_pp.evaluate_model(Constant(10), out=out, **{**base, **extra})
        assert message in str(caught.value)
    with pytest.raises(EvaluationError, match=r"returns \(2, 3072\) for 2 images; expected \(2, 10\)"):
        robustbench_pp.evaluate_model(torch.nn.Flatten(), out=out, mean=(0.5,) * 3, std=(0.5,) * 3, **base)
    with pytest.raises(EvaluationError, match="`model` must be a torch.nn.Module"):
        robustbench_pp.evaluate_model(lambda x: x, out=out, mean=(0.5,) * 3, std=(0.5,) * 3, **base)
    assert not out.exists()


def test_bad_model_specs_are_one_line_errors_and_leave_no_file(fmnist, model_file, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # as if timm were not installed
    out = tmp_path / "never.jsonl"
    cases = [
        ([f"{tmp_path}/missing.py:build"], 1, "model file"),
        ([f"{model_file}"], 1, f"--model {model_file} names a file: add the function that builds the model"),
        ([f"{model_file}:bulid"], 1, "has no function 'bulid'; did you mean build?"),
        ([f"{model_file}:broken"], 1, "raised RuntimeError: no GPU here"),
        ([f"{model_file}:not_a_module"], 1, "returned int, not a torch.nn.Module"),
        ([f"{model_file}:wrong_shape"], 1, "returns (2, 3072) for 2 images; expected (2, 10)"),
        (["no_such_package.models:build"], 1, "cannot import model module 'no_such_package.models'"),
        (["torchvision/resnet19"], 1, "unknown torchvision classification model 'resnet19'; did you mean"),
        (["timm/resnet18"], 1, "needs timm, which is not installed: pip install 'robustbench_pp[timm]'"),
        ([f"{model_file}:build", "--mean", "0.5,0.5"], 2, "expected 3 comma-separated finite numbers"),
        ([f"{model_file}:build", "--std", "0.5,0,0.5"], 2, "expected 3 comma-separated positive finite numbers"),
        ([f"{model_file}:build", "--input-size", "0"], 2, "--input-size"),
        ([f"{model_file}:build", "--width", "4"], 1, "--stem and --width apply to registered models"),
        (["resnet18", "--mean", "0.5,0.5,0.5"], 1, "--mean, --std and --input-size apply to models given as"),
    ]
    for args, code, message in cases:
        result = _evaluate(fmnist, out, "--model", *args, "--corruptions", "fog", "--severities", "1")
        assert result.exit_code == code, (args, result.output)
        assert message in result.output, (args, result.output)
        assert "Traceback" not in result.output
        if code == 1:
            assert len(result.output.strip().splitlines()) == 1, result.output
        assert not out.exists()


@pytest.mark.slow
@pytest.mark.parametrize("family", ["torchvision", "timm"])
def test_torchvision_and_timm_architectures_with_a_local_state_dict(fmnist, tmp_path, family):
    if family == "timm":
        timm = pytest.importorskip("timm")
        reference = timm.create_model("resnet18", pretrained=False, num_classes=10)
    else:
        import torchvision

        reference = torchvision.models.resnet18(num_classes=10)
    torch.manual_seed(0)
    torch.save(reference.state_dict(), tmp_path / "weights.pth")
    out = tmp_path / f"{family}.jsonl"
    result = _evaluate(fmnist, out, "--model", f"{family}/resnet18", "--checkpoint", str(tmp_path / "weights.pth"),
                       "--allow-mismatch", "--corruptions", "fog", "--severities", "3")
    assert result.exit_code == 0, result.output
    assert f"model {family}/resnet18 ({family}): input 224x224 px, mean (0.485, 0.456, 0.406)" in result.output
    records = results.read_records(out)
    assert len(records) == 2 and records[0].provenance["settings"]["resize_to"] == 224
    from robustbench_pp.models import file_sha256

    assert records[0].provenance["checkpoint_sha256"] == file_sha256(tmp_path / "weights.pth")
    # The weights are the file's: the same model evaluated from Python gives the same counts.
    import robustbench_pp

    reference.load_state_dict(torch.load(tmp_path / "weights.pth", weights_only=True))
    run = robustbench_pp.evaluate_model(reference, dataset="fashion-mnist-c", name="ref", mean=(0.485, 0.456, 0.406),
                                        std=(0.229, 0.224, 0.225), input_size=224, allow_mismatch=True,
                                        source_root=str(fmnist), on_the_fly=True, limit=20, corruptions=["fog"],
                                        severities=[3], device="cpu", num_workers=0)
    assert [r.n_correct for r in run.records] == [r.n_correct for r in records]


def test_timm_unknown_name_suggests(fmnist, tmp_path):
    pytest.importorskip("timm")
    result = _evaluate(fmnist, tmp_path / "x.jsonl", "--model", "timm/resnet181", "--corruptions", "fog",
                       "--severities", "1")
    assert result.exit_code == 1 and "unknown timm model 'resnet181'; did you mean" in result.output


def _install_plugin(root, monkeypatch):
    """A package with a robustbench_pp.models entry point, found on sys.path as pip would install it."""
    (root / "rbpp_plugin_demo.py").write_text(CONSTANT_MODEL)
    dist = root / "rbpp_plugin_demo-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: rbpp-plugin-demo\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(textwrap.dedent("""
        [robustbench_pp.models]
        constant-demo = rbpp_plugin_demo:build
    """))
    monkeypatch.syspath_prepend(str(root))


def test_entry_point_models_are_listed_and_evaluate(fmnist, tmp_path, monkeypatch):
    _install_plugin(tmp_path / "site", monkeypatch) if (tmp_path / "site").mkdir() is None else None
    runner = CliRunner()
    listing = runner.invoke(main, ["models"])
    assert listing.exit_code == 0, listing.output
    line = next(line for line in listing.output.splitlines() if line.startswith("constant-demo"))
    assert "entry point of rbpp-plugin-demo" in line and "rbpp_plugin_demo:build" in line
    assert "resnet18_pp0" in listing.output and "torchvision/NAME" in listing.output
    rows = json.loads(runner.invoke(main, ["models", "constant-*", "--json"]).output)
    assert rows == [{"name": "constant-demo", "source": "entry point of rbpp-plugin-demo",
                     "target": "rbpp_plugin_demo:build"}]
    out = tmp_path / "plugin.jsonl"
    result = _evaluate(fmnist, out, "--model", "constant-demo", "--corruptions", "fog", "--severities", "1")
    assert result.exit_code == 0, result.output
    assert set(_errors(out).values()) == {0.9}
    assert results.read_records(out)[0].provenance["settings"]["model_card"]["source"] == \
        "entry point of rbpp-plugin-demo"
    torchvision_list = runner.invoke(main, ["models", "torchvision/resnet1*"])
    assert torchvision_list.output.split() == ["torchvision/resnet101", "torchvision", "torchvision/resnet152",
                                               "torchvision", "torchvision/resnet18", "torchvision"]
