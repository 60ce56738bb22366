"""The four checkpoint kinds load; unsafe pickles are refused; mismatches explain themselves."""

from __future__ import annotations

import json
import pickle
import re

import pytest
import torch

from robustbench_pp.models import (
    CheckpointError, create_model, file_sha256, get_card, load_checkpoint, save_checkpoint,
)


def _randomise(model):
    torch.manual_seed(0)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if tensor.is_floating_point():
                if "running_var" in name:
                    tensor.uniform_(0.5, 2.0)
                else:
                    tensor.normal_(0, 0.3)
    return model.eval()


def _outputs(model, size=32):
    torch.manual_seed(1)
    with torch.no_grad():
        return model.eval()(torch.rand(2, 3, size, size))


def test_project_checkpoint_roundtrip(tmp_path):
    model = _randomise(create_model("resnet18_pp5", num_classes=10, width=4))
    card = get_card("resnet18_pp5", num_classes=10, width=4, mean=(0.2, 0.2, 0.2), std=(0.3, 0.3, 0.3))
    card_path = save_checkpoint(model, tmp_path / "ck", card=card, info={"recipe": {"augment": "none"}, "seed": 3})
    for path in (card_path, tmp_path / "ck.safetensors", tmp_path):
        again = create_model(checkpoint=path)
        assert again.card == card and again.card.mean == (0.2, 0.2, 0.2)
        torch.testing.assert_close(_outputs(again), _outputs(model), rtol=0, atol=0)
    assert again.checkpoint.kind == "project" and again.checkpoint.info["seed"] == 3
    assert again.checkpoint.sha256 == file_sha256(tmp_path / "ck.safetensors")
    assert not list(tmp_path.glob("*.tmp"))


def test_project_card_name_disagreement(tmp_path):
    model = create_model("resnet18_pp3", width=4)
    save_checkpoint(model, tmp_path / "ck", card=model.card)
    with pytest.raises(ValueError, match="name 'resnet18'.*'resnet18_pp3'"):
        create_model("resnet18", checkpoint=tmp_path / "ck.json")


def test_project_weights_card_mismatch_detected(tmp_path):
    model = create_model("resnet18", width=4)
    save_checkpoint(model, tmp_path / "a", card=model.card)
    save_checkpoint(_randomise(model), tmp_path / "b", card=model.card)
    (tmp_path / "b.safetensors").replace(tmp_path / "a.safetensors")
    with pytest.raises(CheckpointError, match="does not match its card"):
        load_checkpoint(tmp_path / "a.json")


def test_plain_state_dict_and_wrapped(tmp_path):
    model = _randomise(create_model("resnet18_pp3", num_classes=5, width=4))
    torch.save(model.state_dict(), tmp_path / "plain.pt")
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}, "epoch": 3}, tmp_path / "w.pth")
    for name in ("plain.pt", "w.pth"):
        again = create_model("resnet18_pp3", checkpoint=tmp_path / name)  # classes and width inferred
        assert again.card.num_classes == 5 and again.card.width == 4
        torch.testing.assert_close(_outputs(again), _outputs(model), rtol=0, atol=0)
    with pytest.raises(ValueError, match="without a model card.*`name`"):
        create_model(checkpoint=tmp_path / "plain.pt")


@pytest.mark.slow
def test_torchvision_state_dicts(tmp_path):
    import torchvision

    for name, reference, size in (("resnet18", torchvision.models.resnet18(num_classes=20), 64),
                                  ("alexnet", torchvision.models.alexnet(num_classes=20), 224)):
        reference = _randomise(reference)
        torch.save(reference.state_dict(), tmp_path / f"{name}.pth")
        ours = create_model(name, checkpoint=tmp_path / f"{name}.pth")
        assert ours.card.stem == "imagenet" and ours.card.num_classes == 20  # read from the weights
        torch.testing.assert_close(_outputs(ours, size), _outputs(reference, size))


@pytest.mark.parametrize("push_pull, trainable, avg", [(True, True, 3), (True, False, 5), (False, False, 0)])
def test_lightning_checkpoint_mapping(tmp_path, push_pull, trainable, avg):
    name = f"resnet18_pp{avg}" if push_pull else "resnet18"
    ours_ref = _randomise(create_model(name, num_classes=10, width=8, stem="cifar",
                                       inhibition_mode=None if not push_pull else ("trainable" if trainable else "fixed")))
    state = {}
    for key, value in ours_ref.state_dict().items():  # rename to the original code's key names by hand
        key = key.replace("conv1.weight", "conv1.push_conv.weight") if push_pull and key == "conv1.weight" else key
        key = "conv1.pull_inhibition_strength" if key == "conv1.inhibition" else key
        key = "bn." + key[4:] if key.startswith("bn1.") else key
        key = "classifier." + key[3:] if key.startswith("fc.") else key
        state["model." + key] = value.clone()
    expected = _outputs(ours_ref)
    if not push_pull:  # the original plain stem has a conv bias; add one and compensate in the reference
        bias = torch.randn(8)
        state["model.conv1.bias"] = bias
        conv = ours_ref.conv1
        ours_ref.conv1 = torch.nn.Conv2d(3, 8, 3, 1, 1, bias=True)
        ours_ref.conv1.weight.data.copy_(conv.weight.data)
        ours_ref.conv1.bias.data.copy_(bias)
        expected = _outputs(ours_ref)
    lightning = {
        "epoch": 29, "global_step": 100, "pytorch-lightning_version": "2.1.0",
        "state_dict": state,
        "hyper_parameters": {"use_push_pull": push_pull, "avg_kernel_size": avg, "pull_inhibition_strength": 1.0,
                             "trainable_pull_inhibition": trainable, "model": "resnet18", "dataset_name": "cifar10",
                             "num_classes": 10, "augmentation": "AugMix"},
    }
    torch.save(lightning, tmp_path / "run.ckpt")
    loaded = create_model(checkpoint=tmp_path / "run.ckpt")
    assert loaded.card.name == name and loaded.checkpoint.kind == "lightning"
    assert loaded.card.inhibition_mode == (None if not push_pull else ("trainable" if trainable else "fixed"))
    torch.testing.assert_close(_outputs(loaded), expected, atol=1e-5, rtol=1e-5)


def test_lightning_attributedict_hparams_load_without_their_class(tmp_path):
    # Lightning stores hyper_parameters as an AttributeDict (a dict subclass) that torch's
    # weights-only loader refuses; its entries are read without importing the class.
    import sys
    import types

    attribute_dict = type("AttributeDict", (dict,), {"__module__": "fake_lightning_data"})
    sys.modules["fake_lightning_data"] = types.ModuleType("fake_lightning_data")
    sys.modules["fake_lightning_data"].AttributeDict = attribute_dict
    model = _randomise(create_model("resnet18", num_classes=10, width=4))
    state = {("bn." + k[4:] if k.startswith("bn1.") else "classifier." + k[3:] if k.startswith("fc.") else k): v
             for k, v in model.state_dict().items()}
    try:
        torch.save({"state_dict": state, "hyper_parameters": attribute_dict(model="resnet18", use_push_pull=False,
                                                                            dataset_name="cifar10")},
                   tmp_path / "a.ckpt")
    finally:
        del sys.modules["fake_lightning_data"]
    with pytest.raises(pickle.UnpicklingError):
        torch.load(tmp_path / "a.ckpt", weights_only=True)
    loaded = create_model(checkpoint=tmp_path / "a.ckpt")
    assert loaded.card.name == "resnet18" and loaded.checkpoint.info["use_push_pull"] is False
    torch.testing.assert_close(_outputs(loaded), _outputs(model), rtol=0, atol=0)


class _Exploit:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


@pytest.mark.parametrize("writer", ["pickle", "torch.save"])
def test_malicious_pickle_refused_and_creates_nothing(tmp_path, writer):
    target = tmp_path / "pwned.txt"
    bad = tmp_path / "evil.pt"
    payload = {"conv1.weight": torch.zeros(1), "payload": _Exploit(str(target))}
    if writer == "pickle":
        with open(bad, "wb") as handle:
            pickle.dump(payload, handle)
    else:
        torch.save(payload, bad)
    # A raw pickle is refused by torch's weights-only loader; a torch archive is read by the
    # safe interpreter, where the payload is an inert record, not a tensor.
    message = "refusing to load .*evil.pt.*arbitrary Python code" if writer == "pickle" else \
        "evil.pt is not a state_dict: entry 'payload' is <io.open object, not loaded>, not a tensor"
    with pytest.raises(CheckpointError, match=message):
        create_model("resnet18", checkpoint=bad)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(bad)
    assert not target.exists()
    # The payload is live: an unrestricted load would have created the file.
    if writer == "pickle":
        with open(bad, "rb") as handle:
            pickle.load(handle)["payload"].close()
    else:
        torch.load(bad, weights_only=False)["payload"].close()
    assert target.exists()


def test_mismatch_messages_name_keys_and_cause(tmp_path):
    torch.save(create_model("resnet18_pp3", width=4).state_dict(), tmp_path / "pp.pt")
    with pytest.raises(CheckpointError, match=r"unexpected keys \[conv1.bias, conv1.inhibition\].*wrong `name`"):
        create_model("resnet18", checkpoint=tmp_path / "pp.pt")
    torch.save(create_model("resnet18", width=4, stem="imagenet").state_dict(), tmp_path / "in.pt")
    with pytest.raises(CheckpointError, match="imagenet-stem kernel.*`stem` cifar|wrong `stem`"):
        model = create_model("resnet18", width=4, stem="cifar")
        from robustbench_pp.models import load_weights

        load_weights(model, torch.load(tmp_path / "in.pt", weights_only=True), source="in.pt")
    with pytest.raises(CheckpointError, match="number of classes: the checkpoint has 1000, the model 3"):
        create_model("resnet18", num_classes=3, checkpoint=tmp_path / "in.pt")
    with pytest.raises(CheckpointError, match="wrong `width`"):
        create_model("resnet18", width=8, checkpoint=tmp_path / "in.pt")
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        create_model("resnet18", checkpoint=tmp_path / "nope.pt")
    (tmp_path / "junk.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(CheckpointError, match="not a robustbench_pp-checkpoint card"):
        load_checkpoint(tmp_path / "junk.json")


def test_mismatch_messages_name_the_flags_on_the_command_line(tmp_path):
    """The library names parameters; through `rbpp evaluate` they read as its flags."""
    from robustbench_pp.cli._errors import with_flags
    from robustbench_pp.cli.evaluate_cmd import evaluate
    from robustbench_pp.cli.models_cmd import MODEL_FLAG_ALIASES

    def command_line(call) -> str:
        with pytest.raises(ValueError) as caught:
            call()
        return with_flags(str(caught.value), evaluate, MODEL_FLAG_ALIASES)

    torch.save(create_model("resnet18_pp3", width=4).state_dict(), tmp_path / "pp.pt")
    torch.save(create_model("resnet18", width=4, stem="imagenet").state_dict(), tmp_path / "in.pt")
    assert re.search("without a model card.*--model", command_line(lambda: create_model(checkpoint=tmp_path / "pp.pt")))
    assert re.search(r"unexpected keys \[conv1.bias, conv1.inhibition\].*wrong --model",
                     command_line(lambda: create_model("resnet18", checkpoint=tmp_path / "pp.pt")))
    model = create_model("resnet18", width=4, stem="cifar")
    state = torch.load(tmp_path / "in.pt", weights_only=True)
    from robustbench_pp.models import load_weights

    assert re.search("imagenet-stem kernel.*--stem cifar|wrong --stem",
                     command_line(lambda: load_weights(model, state, source="in.pt")))
    assert re.search("cifar-stem kernel.*--stem imagenet",
                     command_line(lambda: create_model("resnet18", stem="imagenet", checkpoint=tmp_path / "pp.pt")))
    assert re.search("wrong --width", command_line(lambda: create_model("resnet18", width=8, checkpoint=tmp_path / "in.pt")))


def test_version_1_cards_still_load(tmp_path):
    """Cards written before `inhibition` became `inhibition_mode` (format_version 1) load unchanged."""
    model = _randomise(create_model("resnet18_pp3", width=4))
    card_path = save_checkpoint(model, tmp_path / "ck", card=model.card)
    document = json.loads(card_path.read_text())
    assert document["format_version"] == 2 and document["model"]["inhibition_mode"] == "trainable"
    document["format_version"] = 1
    document["model"]["inhibition"] = document["model"].pop("inhibition_mode")
    card_path.write_text(json.dumps(document))
    again = create_model(checkpoint=card_path, inhibition_mode="trainable")
    assert again.card == model.card
    torch.testing.assert_close(_outputs(again), _outputs(model), rtol=0, atol=0)


def test_committed_reference_checkpoint_loads():
    """results/reference/ci-model was written with format_version 1."""
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "results/reference/ci-model/model.json"
    assert json.loads(path.read_text())["format_version"] == 1
    model = create_model(checkpoint=path)
    assert model.card.name == "resnet18_pp3" and model.card.inhibition_mode == "trainable" and model.card.width == 8
