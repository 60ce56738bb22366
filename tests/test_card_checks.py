"""Project checkpoint cards that lie, point elsewhere or hold bad values are refused (issue 12: 6, 8, 11).

Each case is a one-line error naming the file and the field, from the library and from
``rbpp evaluate`` (non-zero exit, no traceback, no results file).
"""

from __future__ import annotations

import json
import os
import threading

import pytest
import torch
from click.testing import CliRunner

from robustbench_pp.cli import main
from robustbench_pp.models import CheckpointError, create_model, load_checkpoint, save_checkpoint


@pytest.fixture()
def card_path(tmp_path):
    torch.manual_seed(0)
    model = create_model("resnet18_pp3", width=4)
    return save_checkpoint(model, tmp_path / "ck" / "model", card=model.card)


def _edit(card_path, **changes):
    document = json.loads(card_path.read_text())
    for key, value in changes.items():
        if key.startswith("model."):
            document["model"][key[len("model."):]] = value
        else:
            document[key] = value
    card_path.write_text(json.dumps(document))


def _evaluate_refuses(card_path, tmp_path, pattern):
    out = tmp_path / "never.jsonl"
    result = CliRunner().invoke(main, ["evaluate", "--checkpoint", str(card_path), "--dataset", "fashion-mnist-c",
                                       "--on-the-fly", "--device", "cpu", "--quiet", "--out", str(out)])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1, result.output
    assert pattern in result.output and not out.exists()


# ---- item 6: the name must agree with the architecture fields, the weights with both ------------


def test_renamed_model_is_refused(card_path, tmp_path):
    _edit(card_path, **{"model.name": "resnet18_pp5"})  # the weights fit PP5 too: only the card can tell
    with pytest.raises(CheckpointError, match=r"contradicts itself: 'avg_kernel_size' is 3 but resnet18_pp5 has 5"):
        load_checkpoint(card_path)
    _evaluate_refuses(card_path, tmp_path, "contradicts itself")


@pytest.mark.parametrize("field, value, message", [
    ("first_layer", "conv", "'first_layer' is 'conv' but resnet18_pp3 has 'pushpull'"),
    ("architecture", "resnet50", "'architecture' is 'resnet50' but resnet18_pp3 has 'resnet18'"),
    ("inhibition_mode", None, "'inhibition_mode' is None for a pushpull first layer"),
])
def test_architecture_fields_must_agree_with_the_name(card_path, field, value, message):
    _edit(card_path, **{f"model.{field}": value})
    with pytest.raises(CheckpointError, match="contradicts itself") as caught:
        load_checkpoint(card_path)
    assert message in str(caught.value)


def test_weights_must_fit_the_card(card_path):
    """A card renamed consistently to a plain ResNet still fails: the weights hold a PushPull stem."""
    _edit(card_path, **{"model.name": "resnet18", "model.first_layer": "conv", "model.avg_kernel_size": 0,
                        "model.inhibition_mode": None, "model.paper": "x"})
    with pytest.raises(CheckpointError, match=r"unexpected keys \[conv1.(inhibition|bias), conv1.(bias|inhibition)\]"):
        create_model(checkpoint=card_path)


# ---- item 8: the weights path stays inside the card's folder, a regular file ---------------------


@pytest.mark.parametrize("weights, message", [
    ("../../../../../../etc/passwd", "must name a file beside the card"),
    ("/etc/passwd", "must name a file beside the card"),
    ("/dev/zero", "must name a file beside the card"),
    ("sub/../../model.safetensors", "must name a file beside the card"),
    ("", "must name a file beside the card"),
    (7, "must name a file beside the card"),
])
def test_weights_outside_the_folder_are_refused(card_path, weights, message):
    _edit(card_path, weights=weights)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(card_path)


def test_symlink_out_of_the_folder_is_refused(card_path, tmp_path):
    outside = tmp_path / "outside.safetensors"
    outside.write_bytes((card_path.parent / "model.safetensors").read_bytes())
    (card_path.parent / "link.safetensors").symlink_to(outside)
    _edit(card_path, weights="link.safetensors")
    with pytest.raises(CheckpointError, match="leads outside the card's folder"):
        load_checkpoint(card_path)
    (card_path.parent / "dev.safetensors").symlink_to("/dev/zero")
    _edit(card_path, weights="dev.safetensors")
    with pytest.raises(CheckpointError, match="leads outside the card's folder"):
        load_checkpoint(card_path)
    _evaluate_refuses(card_path, tmp_path, "leads outside")


@pytest.mark.timeout(60)
def test_fifo_is_refused_without_hanging(card_path, tmp_path):
    os.mkfifo(card_path.parent / "pipe.safetensors")
    _edit(card_path, weights="pipe.safetensors")
    outcome = {}

    def load():
        try:
            load_checkpoint(card_path)
        except CheckpointError as exc:
            outcome["error"] = str(exc)

    worker = threading.Thread(target=load, daemon=True)
    worker.start()
    worker.join(20)
    if worker.is_alive():  # unblock the open() so the thread ends, then fail
        with open(card_path.parent / "pipe.safetensors", "wb"):
            pass
        pytest.fail("load_checkpoint blocked on a FIFO")
    assert "is not a regular file" in outcome["error"]


def test_symlink_inside_the_folder_is_fine(card_path):
    (card_path.parent / "alias.safetensors").symlink_to("model.safetensors")
    _edit(card_path, weights="alias.safetensors")
    assert load_checkpoint(card_path).card.name == "resnet18_pp3"


# ---- item 11: NaN weights, std 0, format_version "2" ------------------------------------------------


def test_nan_weights_are_refused(tmp_path):
    model = create_model("resnet18", width=4)
    with torch.no_grad():
        model.fc.weight[0, 0] = float("nan")
        model.bn1.running_var[1] = float("inf")
    card_path = save_checkpoint(model, tmp_path / "nan", card=model.card)
    with pytest.raises(CheckpointError, match=r"nan.safetensors: (fc.weight|bn1.running_var) holds 1 NaN or infinite"):
        load_checkpoint(card_path)
    torch.save(model.state_dict(), tmp_path / "nan.pt")
    with pytest.raises(CheckpointError, match="NaN or infinite"):
        create_model("resnet18", checkpoint=tmp_path / "nan.pt")
    _evaluate_refuses(card_path, tmp_path, "NaN or infinite")


@pytest.mark.parametrize("changes, message", [
    ({"model.std": [0.2, 0, 0.2]}, "'std' must be positive in every channel"),
    ({"model.std": [0.2, 0.2]}, "'std' must be 3 finite numbers"),
    ({"model.mean": "abc"}, "'mean' must be 3 finite numbers"),
    ({"model.input_size": 0}, "'input_size' must be a positive integer"),
    ({"model.num_classes": True}, "'num_classes' must be a positive integer"),
    ({"format_version": "2"}, "format_version must be a positive integer, got '2'"),
    ({"format_version": 3}, "has format_version 3; this robustbench_pp reads up to 2"),
    ({"model": [1, 2]}, "'model' must be the model card"),
])
def test_bad_card_values_are_one_line_errors(card_path, tmp_path, changes, message):
    _edit(card_path, **changes)
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(card_path)
    assert message in str(caught.value)
    _evaluate_refuses(card_path, tmp_path, message)
