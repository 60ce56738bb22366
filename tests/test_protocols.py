"""Evaluation protocols (clean ImageNet framing), ImageNet-100-C/200-C read from a full
ImageNet-C folder, and the PushPull-Net CIFAR-10-C-224 elastic scale."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from _fixtures import tiny_fashion_mnist
from robustbench_pp import results
from robustbench_pp.cli import main
from robustbench_pp.corruptions import corrupt, corruption_parameters
from robustbench_pp.datasets import get_dataset, open_corrupted
from robustbench_pp.names import ALL_CORRUPTIONS

SUBSET = get_dataset("imagenet100-c")
FOREIGN = ("n01440764", "n15075141")  # ImageNet classes outside the 100-class subset


def _photo(size: tuple[int, int], seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0 : size[1], 0 : size[0]]
    base = np.stack([(xx * (3 + seed % 5)) % 256, (yy * 2 + seed) % 256, (xx + yy) % 256], axis=-1)
    return Image.fromarray(np.clip(base + rng.integers(0, 30, base.shape), 0, 255).astype(np.uint8))


def test_foreign_wnids_are_really_outside_the_subset():
    assert not set(FOREIGN) & set(SUBSET.wnids()) and len(SUBSET.wnids()) == 100


# ---- protocols ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def imagenet_val(tmp_path_factory):
    """A validation folder with every subset class and a foreign one, one non-square photo each."""
    root = tmp_path_factory.mktemp("val")
    for index, wnid in enumerate((*SUBSET.wnids(), FOREIGN[0])):
        (root / wnid).mkdir()
        size = (300 + 40 * (index % 3), 260) if index < 3 else (64, 48)  # the compared three are real-sized
        _photo(size, index).save(root / wnid / f"ILSVRC2012_val_{index:08d}.JPEG", quality=95)
    return root


def test_pushpull_net_protocol_frames_the_clean_cell_like_its_code(imagenet_val):
    import torchvision.transforms as T

    framed = {}
    for protocol in ("imagenet-c", "pushpull-net"):
        data = open_corrupted(SUBSET, source_root=imagenet_val, on_the_fly=True, corruptions=["contrast"],
                              severities=[1], protocol=protocol)
        assert data.num_images == 100 and data.labels.tolist() == list(range(100))  # the foreign class is left out
        (images, labels), = data.batches("clean", 0, batch_size=8, indices=[0, 1, 2], num_workers=0)
        framed[protocol] = images
        assert labels.tolist() == [0, 1, 2]
        assert data.describe()["protocol"] == protocol
        (corrupted, _), = data.batches("contrast", 1, batch_size=8, indices=[0, 1, 2], num_workers=0)
        framed[protocol, "contrast"] = corrupted
    paths = [next((imagenet_val / wnid).glob("*.JPEG")) for wnid in SUBSET.wnids()[:3]]
    for resize, protocol in ((256, "imagenet-c"), (224, "pushpull-net")):
        transform = T.Compose([T.Resize(resize), T.CenterCrop(224), T.PILToTensor()])
        expected = torch.stack([transform(Image.open(path).convert("RGB")) for path in paths])
        assert torch.equal(framed[protocol], expected), protocol
    assert not torch.equal(framed["imagenet-c"], framed["pushpull-net"])
    # The corrupted cells keep ImageNet-C's framing under both protocols.
    assert torch.equal(framed["imagenet-c", "contrast"], framed["pushpull-net", "contrast"])


def test_protocol_is_recorded_identified_shown_and_checked(tmp_path):
    fmnist = tiny_fashion_mnist(tmp_path / "fm", test=40, train=10)
    (tmp_path / "m.py").write_text("import torch\n\ndef build(num_classes=10):\n"
                                   "    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3072, num_classes))\n")

    def evaluate(out, *extra):
        return CliRunner().invoke(main, ["evaluate", "--model", f"{tmp_path}/m.py:build", "--dataset", "fashion-mnist-c",
                                         "--source-root", str(fmnist), "--on-the-fly", "--corruptions", "fog",
                                         "--severities", "1", "--limit", "20", "--device", "cpu", "--quiet",
                                         "--workers", "0", "--out", str(out), *extra])

    import torch as _torch

    _torch.manual_seed(0)
    default, pushpull = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    first = evaluate(default)
    assert first.exit_code == 0, first.output
    _torch.manual_seed(0)
    result = evaluate(pushpull, "--protocol", "pushpull-net")
    assert result.exit_code == 0, result.output
    assert {r.provenance["protocol"] for r in results.read_records(default)} == {"imagenet-c"}
    record = results.read_records(pushpull)[0]
    assert record.provenance["protocol"] == "pushpull-net" and record.provenance["settings"]["protocol"] == "pushpull-net"
    assert "protocol" not in results.read_records(default)[0].provenance["settings"]  # default: identity unchanged
    # Resuming a run under the other protocol is refused: it is another run.
    resumed = evaluate(default, "--protocol", "pushpull-net", "--resume")
    assert resumed.exit_code == 1 and "protocol" in resumed.output
    table = results.load_run(pushpull)
    assert table.provenance["protocol"] == "pushpull-net"
    checked = CliRunner().invoke(main, ["check", str(pushpull), "--against", str(default)])
    assert checked.exit_code == 2 and "protocol: 'pushpull-net' vs reference 'imagenet-c'" in checked.output
    # Records written before protocols existed count as imagenet-c.
    old = tmp_path / "old.jsonl"
    lines = []
    for line in default.read_text().splitlines():
        document = json.loads(line)
        if "provenance" in document:
            document["provenance"].pop("protocol")
            document.pop("record_sha256", None)  # a deliberate edit drops the line's digest
        lines.append(json.dumps(document))
    old.write_text("\n".join(lines) + "\n")
    assert CliRunner().invoke(main, ["check", str(default), "--against", str(old)]).exit_code == 0


def test_metrics_prints_the_protocol():
    """(`rbpp metrics` needs a complete run; test_external_models runs one and reads its JSON.)"""
    from robustbench_pp.cli.metrics_cmd import _rows

    class _Table:
        label, dataset, num_images = "m", "imagenet-c", 10
        provenance = {"protocol": "pushpull-net"}

    class _Summary:
        clean_error = mce = relative_mce = unnormalized_mean_error = None
        reference = None

    class _Metrics:
        table, summary, intervals, baseline = _Table(), _Summary(), {}, None

    assert ("protocol", "pushpull-net") in _rows(_Metrics())


# ---- ImageNet-100-C from a full ImageNet-C folder ----------------------------------------------


@pytest.fixture(scope="module")
def full_imagenet_c(tmp_path_factory):
    """A full-ImageNet-C-shaped folder: every subset class plus two foreign ones, one image each."""
    root = tmp_path_factory.mktemp("imagenet-c")
    image = Image.fromarray(np.full((224, 224, 3), 128, dtype=np.uint8))
    for wnid in sorted((*SUBSET.wnids(), *FOREIGN)):
        folder = root / "fog" / "3" / wnid
        folder.mkdir(parents=True)
        image.save(folder / f"ILSVRC2012_val_{wnid}.JPEG", quality=85)
    return root


def test_subset_reads_a_full_imagenet_c_folder_with_remapped_labels(full_imagenet_c, tmp_path):
    data = open_corrupted("imagenet100-c", data_root=full_imagenet_c, source_root=tmp_path / "absent",
                          corruptions=["fog"], severities=[3])  # no clean source: labels from the folder
    assert data.num_images == 100
    assert data.labels.tolist() == list(range(100))  # the subset's sorted-wnid order
    reader = data.cells[("fog", 3)]
    assert [key.split("/")[0] for key in reader.keys] == list(SUBSET.wnids())
    (images, labels), = data.batches("fog", 3, batch_size=100, num_workers=0)
    assert images.shape == (100, 3, 224, 224) and labels.tolist() == list(range(100))
    # The whole ImageNet-C reads the same folder with its own 102 classes.
    whole = get_dataset("imagenet-c")
    import dataclasses

    spec = dataclasses.replace(whole, num_classes=102, num_images=102)
    assert open_corrupted(spec, data_root=full_imagenet_c, source_root=tmp_path / "absent",
                          severities=[3]).num_images == 102


def test_subset_with_a_missing_class_is_refused(full_imagenet_c, tmp_path):
    import shutil

    partial = tmp_path / "partial"
    shutil.copytree(full_imagenet_c, partial)
    shutil.rmtree(partial / "fog" / "3" / SUBSET.wnids()[5])
    with pytest.raises(ValueError, match="cover 99 classes, imagenet100-c has 100"):
        open_corrupted("imagenet100-c", data_root=partial, source_root=tmp_path / "absent", severities=[3])


# ---- CIFAR-10-C-224: the PushPull-Net generator's elastic scale ---------------------------------


def test_cifar10_c_224_scales_elastic_by_224():
    assert get_dataset("cifar10-c-224").preset == "pushpull-224"
    for severity in range(1, 6):
        ours = corruption_parameters("elastic_transform", "pushpull-224", severity)
        imagenet = corruption_parameters("elastic_transform", "imagenet", severity)
        assert ours == pytest.approx(tuple(v * 224 / 244 for v in imagenet))
    for name in ALL_CORRUPTIONS:
        if name != "elastic_transform":
            assert corruption_parameters(name, "pushpull-224") == corruption_parameters(name, "imagenet")
    images = np.asarray(_photo((224, 224), 3))[None]
    assert not np.array_equal(corrupt(images, "elastic_transform", 2, preset="pushpull-224"),
                              corrupt(images, "elastic_transform", 2, preset="imagenet"))
    np.testing.assert_array_equal(corrupt(images, "fog", 2, preset="pushpull-224"), corrupt(images, "fog", 2))
