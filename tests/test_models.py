"""Registry, cards and builders: every registered model builds for both stems and runs."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from torch import nn

from robustbench_pp.models import ModelCard, PushPullConv2d, create_model, get_card, list_models, register_model


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("stem", ["cifar", "imagenet"])
def test_every_model_builds_and_runs(name, stem):
    width = None if (name == "alexnet" and stem == "imagenet") else 4
    model = create_model(name, num_classes=7, stem=stem, width=width).eval()
    card = model.card
    assert isinstance(card, ModelCard) and card.name == name and card.stem == stem
    assert card.input_size == (32 if stem == "cifar" else 224)
    with torch.no_grad():
        out = model(torch.randn(1, 3, card.input_size, card.input_size))
    assert out.shape == (1, 7)
    if name.startswith("resnet"):
        is_pp = isinstance(model.conv1, PushPullConv2d)
        assert is_pp == (card.first_layer == "pushpull") == ("_pp" in name)
        assert model.conv1.weight.shape[-1] == (3 if stem == "cifar" else 7)
        assert isinstance(model.maxpool, nn.MaxPool2d) == (stem == "imagenet")
        if is_pp:
            assert model.conv1.avg_kernel_size == card.avg_kernel_size == int(name[-1])
            assert card.inhibition_mode == "trainable"


def test_card_is_frozen_and_roundtrips():
    card = get_card("resnet18_pp5", num_classes=10, width=8)
    with pytest.raises(dataclasses.FrozenInstanceError):
        card.width = 16
    assert ModelCard.from_dict(card.to_dict()) == card
    assert card.mean == (0.4914, 0.4822, 0.4465) and card.paper.startswith("Bennabhaktula")


def test_resnet_matches_torchvision_layout():
    import torchvision

    ours = create_model("resnet50", num_classes=1000, stem="imagenet")
    theirs = torchvision.models.resnet50()
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in theirs.state_dict().items()}
    ours.load_state_dict(theirs.state_dict())
    ours.eval(), theirs.eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x))


def test_width_scales_channels():
    small = create_model("resnet18", width=8)
    assert small.conv1.out_channels == 8 and small.fc.in_features == 64
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in create_model("resnet18", width=16).parameters())


def test_unknown_name_suggests_close_ones():
    with pytest.raises(ValueError, match="did you mean.*resnet18_pp3"):
        create_model("resnet18_pp4")


def test_duplicate_registration_rejected():
    with pytest.raises(ValueError, match="already registered"):
        register_model("resnet18", architecture="x", paper="y")(lambda **kw: nn.Identity())


def test_list_models_pattern():
    assert list_models("resnet*_pp5") == ["resnet18_pp5", "resnet34_pp5", "resnet50_pp5"]


def test_fixed_inhibition_variant():
    model = create_model("resnet18_pp3", width=4, inhibition_mode="fixed")
    assert model.card.inhibition_mode == "fixed" and model.card.inhibition_strength == 1.0
    assert "conv1.inhibition" not in model.state_dict()
    with pytest.raises(ValueError, match="does not apply"):
        create_model("resnet18", inhibition_mode="fixed")


def test_models_command_lists_cards():
    from click.testing import CliRunner

    from robustbench_pp.cli import main

    result = CliRunner().invoke(main, ["models"])
    assert result.exit_code == 0, result.output
    for name in list_models():
        assert name in result.output
    result = CliRunner().invoke(main, ["models", "--json", "resnet18_pp*"])
    import json

    rows = json.loads(result.output)
    assert [r["name"] for r in rows] == ["resnet18_pp0", "resnet18_pp3", "resnet18_pp5"]
    assert rows[0]["first_layer"] == "pushpull" and rows[0]["avg_kernel_size"] == 0
    assert {r["source"] for r in rows} == {"robustbench_pp"}


@pytest.mark.slow
def test_importing_the_registry_alone_registers_the_builtin_models():
    """Builders register where they are defined; the package imports them (no import from the registry)."""
    import subprocess
    import sys

    code = "from robustbench_pp.models.registry import list_models; print(' '.join(list_models()))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == list_models() and "alexnet" in out and "resnet50_pp5" in out
    registry = (Path(__file__).resolve().parents[1] / "robustbench_pp/models/registry.py").read_text()
    assert "import alexnet" not in registry and "import resnet" not in registry and "_ensure_builtin" not in registry


def test_card_names_the_inhibition_mode():
    card = get_card("resnet18_pp3", inhibition_mode="fixed", inhibition_strength=0.5).to_dict()
    assert card["inhibition_mode"] == "fixed" and card["inhibition_strength"] == 0.5 and "inhibition" not in card
    with pytest.raises(ValueError, match="`inhibition_mode` must be 'fixed' or 'trainable'"):
        get_card("resnet18_pp3", inhibition_mode="on")
