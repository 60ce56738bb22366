"""Dataset specs, clean sources, released-format readers, structural checks and the batch loader."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from robustbench_pp.datasets import (
    DataNotFoundError,
    LayoutError,
    ManifestError,
    SourceError,
    get_dataset,
    list_datasets,
    open_corrupted,
    open_clean_source,
)
from robustbench_pp.datasets.clean import resize_shorter_center_crop
from robustbench_pp.datasets.sources import list_imagenet_val, read_val_ground_truth
from robustbench_pp.names import ALL_CORRUPTIONS
from test_datasets_support import (  # noqa: F401  (fashion_root, private_hash_cache, synthetic_fashion_mnist: fixtures)
    WNIDS,
    fashion_images,
    fashion_root,
    private_hash_cache,
    released_block,
    synthetic_fashion_mnist,
    tiny_cifar_spec,
    tiny_imagenet_spec,
    write_cifar_folder,
    write_imagenet_folder,
    write_released_npy,
)

COUNT = 300
CORRUPTIONS = ("gaussian_noise", "fog")


pytestmark = pytest.mark.usefixtures("private_hash_cache")


@pytest.fixture(scope="module")
def cifar_fixture(tmp_path_factory, fashion_root):
    """A CIFAR-10 pickle folder of 300 Fashion-MNIST-style images and a released-format npy set from it."""
    root = tmp_path_factory.mktemp("cifar")
    images, labels = fashion_images(fashion_root, COUNT)
    write_cifar_folder(root / "source", images, labels)
    write_released_npy(root / "cifar10-c", images, labels, CORRUPTIONS)
    return root, images, labels


def test_registry_lists_the_issue_datasets_and_suggests_close_names():
    for name in ("cifar10-c", "cifar100-c", "cifar10-c-224", "imagenet-c", "imagenet100-c", "imagenet200-c",
                 "fashion-mnist-c"):
        assert name in list_datasets()
    spec = get_dataset("cifar10-c")
    assert (spec.image_size, spec.num_classes, spec.preset, spec.layout) == (32, 10, "cifar", "npy")
    assert get_dataset("cifar10-c-224").preset == "pushpull-224"  # imagenet rows, elastic x 224
    assert get_dataset("imagenet-c").layout == "jpeg-folders"
    assert len(get_dataset("imagenet100-c").wnids()) == 100
    assert get_dataset("imagenet200-c").wnids() == tuple(sorted(get_dataset("imagenet200-c").wnids()))
    with pytest.raises(ValueError, match="Did you mean cifar10-c"):
        get_dataset("cifar10c")
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.image_size = 64


def test_default_folders_follow_the_environment(monkeypatch, tmp_path):
    spec = get_dataset("fashion-mnist-c")
    monkeypatch.setenv("RBPP_CORRUPTIONS", str(tmp_path))
    monkeypatch.setenv("FASHION_MNIST_ROOT", str(tmp_path / "fm"))
    assert spec.resolve_data_root() == tmp_path / "fashion-mnist-c"
    assert spec.resolve_source_root() == tmp_path / "fm"
    assert str(spec.resolve_data_root("/x")) == "/x"


def test_released_npy_cells_are_read_block_by_block(cifar_fixture):
    root, images, labels = cifar_fixture
    data = open_corrupted(tiny_cifar_spec(COUNT), data_root=root / "cifar10-c", source_root=root / "source")
    assert data.mode == "released" and data.num_images == COUNT
    assert data.available_cells()[0] == ("clean", 0)
    assert len(data.available_cells()) == 1 + len(CORRUPTIONS) * 5
    np.testing.assert_array_equal(data.labels, labels)
    batches = list(data.batches("fog", 4, batch_size=128))
    assert [len(b[0]) for b in batches] == [128, 128, 44]
    stacked = torch.cat([b[0] for b in batches])
    assert stacked.dtype == torch.uint8 and stacked.shape == (COUNT, 3, 32, 32)
    expected = released_block(images, CORRUPTIONS.index("fog"), 4)
    np.testing.assert_array_equal(stacked.permute(0, 2, 3, 1).numpy(), expected)
    # A subset in a given order, and the clean cell from the pickle folder.
    (subset, subset_labels), = data.batches("gaussian_noise", 2, batch_size=10, indices=[7, 3, 250])
    np.testing.assert_array_equal(subset.permute(0, 2, 3, 1).numpy(), released_block(images, 0, 2)[[7, 3, 250]])
    assert subset_labels.tolist() == labels[[7, 3, 250]].tolist()
    (clean, _), = data.batches("clean", 0, batch_size=COUNT)
    np.testing.assert_array_equal(clean.permute(0, 2, 3, 1).numpy(), images)
    assert len(data.fingerprint()) == 64
    described = data.describe()
    assert described["mode"] == "released" and described["image_size"] == 32
    with pytest.raises(ValueError, match="not available"):
        next(data.batches("snow", 1, batch_size=8))
    with pytest.raises(ValueError, match="indices must lie"):
        next(data.batches("fog", 1, batch_size=8, indices=[COUNT]))


def test_truncated_npy_is_named(cifar_fixture, tmp_path):
    root, images, labels = cifar_fixture
    folder = write_released_npy(tmp_path / "c", images, labels, CORRUPTIONS)
    raw = (folder / "fog.npy").read_bytes()
    (folder / "fog.npy").write_bytes(raw[: len(raw) - 1000])
    with pytest.raises(LayoutError, match=r"fog\.npy is truncated"):
        open_corrupted(tiny_cifar_spec(COUNT), data_root=folder, source_root=root / "source")


def test_label_mismatch_is_named(cifar_fixture, tmp_path):
    root, images, labels = cifar_fixture
    shuffled = labels.copy()
    shuffled[[0, 1]] = (labels[[0, 1]] + 1) % 10
    folder = write_released_npy(tmp_path / "c", images, shuffled, CORRUPTIONS)
    with pytest.raises(LayoutError, match=r"label mismatch: .*labels\.npy .* 2 images"):
        open_corrupted(tiny_cifar_spec(COUNT), data_root=folder, source_root=root / "source")


def test_wrong_image_size_is_named(cifar_fixture, tmp_path):
    root, images, labels = cifar_fixture
    folder = write_released_npy(tmp_path / "c", images, labels, CORRUPTIONS)
    np.save(folder / "gaussian_noise.npy", np.zeros((5 * COUNT, 28, 28, 3), np.uint8))
    with pytest.raises(LayoutError, match=r"gaussian_noise\.npy holds images of shape \(28, 28, 3\)"):
        open_corrupted(tiny_cifar_spec(COUNT), data_root=folder, source_root=root / "source")


def test_missing_folder_says_how_to_get_the_data(tmp_path, monkeypatch):
    monkeypatch.setenv("RBPP_CORRUPTIONS", str(tmp_path / "corruptions"))
    with pytest.raises(DataNotFoundError, match=r'"rbpp generate fashion-mnist-c `out` .*corruptions/", or pass `on_the_fly`'):
        open_corrupted("fashion-mnist-c")
    with pytest.raises(DataNotFoundError, match=r"clean source .* missing too.*CIFAR_ROOT"):
        open_corrupted("cifar10-c", source_root=tmp_path / "nothing")


def test_clean_cifar_pickle_and_bad_batch(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (20, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, 20)
    write_cifar_folder(tmp_path, images, labels)
    source = open_clean_source(tiny_cifar_spec(20), tmp_path)
    np.testing.assert_array_equal(source.images([3, 1]), images[[3, 1]])
    np.testing.assert_array_equal(source.labels, labels)
    with pytest.raises(SourceError, match="cifar-10-batches-py not found.*rbpp datasets cifar10-c `download`"):
        open_clean_source(get_dataset("cifar10-c"), tmp_path / "elsewhere")


def _imagenet_released(root, spec, source, corruption="contrast", severities=(1, 2)):
    """Write a released ImageNet-C style cell set from the source folder (no resize when reading)."""
    from PIL import Image

    clean = open_clean_source(spec, source)
    for severity in severities:
        for key, image in zip(clean.keys, clean.images(np.arange(clean.num_images))):
            target = root / corruption / str(severity) / key
            target.parent.mkdir(parents=True, exist_ok=True)
            dimmed = (image.astype(np.float32) * (1 - 0.2 * severity) + 20).astype(np.uint8)
            Image.fromarray(dimmed).save(target, quality=85)
    return clean


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.astype(np.float64).ravel(), b.astype(np.float64).ravel())[0, 1])


def test_imagenet_clean_and_corrupted_share_one_geometry(tmp_path):
    source = write_imagenet_folder(tmp_path / "val")
    spec = tiny_imagenet_spec()
    _imagenet_released(tmp_path / "imagenet-c", spec, source)
    data = open_corrupted(spec, data_root=tmp_path / "imagenet-c", source_root=source, severities=[1, 2])
    assert data.mode == "released" and data.num_images == 6
    assert data.labels.tolist() == [0, 0, 1, 1, 2, 2]
    (clean, _), = data.batches("clean", 0, batch_size=6, num_workers=0)
    (corrupted, labels), = data.batches("contrast", 1, batch_size=6, num_workers=0)
    assert clean.shape == corrupted.shape == (6, 3, 224, 224)
    for i in range(6):
        aligned = _correlation(clean[i].numpy(), corrupted[i].numpy())
        # What a loader that resized/cropped ImageNet-C again would feed the model.
        from PIL import Image

        recropped = resize_shorter_center_crop(Image.fromarray(corrupted[i].permute(1, 2, 0).numpy()))
        misframed = _correlation(clean[i].permute(1, 2, 0).numpy(), recropped)
        assert aligned > 0.98, (i, aligned)
        assert misframed < aligned - 0.05, (i, misframed, aligned)
    # Worker processes decode the same bytes.
    (from_workers, _), = data.batches("contrast", 1, batch_size=6, num_workers=2)
    assert torch.equal(from_workers, corrupted)


def test_imagenet_missing_severity_and_wrong_size_are_named(tmp_path):
    from PIL import Image

    source = write_imagenet_folder(tmp_path / "val")
    spec = tiny_imagenet_spec()
    root = tmp_path / "imagenet-c"
    clean = _imagenet_released(root, spec, source, severities=(1, 2, 3, 4, 5))
    import shutil

    shutil.rmtree(root / "contrast" / "4")
    with pytest.raises(LayoutError, match=r"severity folder .*contrast/4 not found"):
        open_corrupted(spec, data_root=root, source_root=source)
    open_corrupted(spec, data_root=root, source_root=source, severities=[1, 2])  # the rest is fine
    first = root / "contrast" / "1" / clean.keys[0]
    Image.fromarray(np.zeros((256, 256, 3), np.uint8)).save(first)
    with pytest.raises(LayoutError, match=r"ILSVRC2012_val_00000001\.JPEG is 256x256, expected 224x224"):
        open_corrupted(spec, data_root=root, source_root=source, severities=[1])
    # Only the first image of a cell is checked up front; the others when they are decoded.
    later = root / "contrast" / "3" / clean.keys[4]
    Image.fromarray(np.zeros((200, 224, 3), np.uint8)).save(later)
    data = open_corrupted(spec, data_root=root, source_root=source, severities=[3])
    with pytest.raises(LayoutError, match=r"ILSVRC2012_val_00000005\.JPEG is 224x200, expected 224x224"):
        list(data.batches("contrast", 3, batch_size=6, num_workers=0))
    # A file in another class folder is a label mismatch with the clean source.
    moved = root / "contrast" / "2" / WNIDS[1] / "ILSVRC2012_val_00000001.JPEG"
    (root / "contrast" / "2" / clean.keys[0]).rename(moved)
    with pytest.raises(LayoutError, match="label mismatch"):
        open_corrupted(spec, data_root=root, source_root=source, severities=[2])


def test_flat_validation_folder_with_ground_truth(tmp_path):
    folder = write_imagenet_folder(tmp_path / "byclass")
    flat = tmp_path / "flat"
    flat.mkdir()
    lines = ["ImageId,PredictionString"]
    for wnid_dir in sorted(folder.iterdir()):
        for image in sorted(wnid_dir.iterdir()):
            image.rename(flat / image.name)
            lines.append(f"{image.stem},{wnid_dir.name} 1 2 3 4")
    (tmp_path / "LOC_val_solution.csv").write_text("\n".join(lines) + "\n")
    paths, wnids = list_imagenet_val(flat)
    assert [p.name for p in paths] == [f"ILSVRC2012_val_{i:08d}.JPEG" for i in range(1, 7)]
    assert wnids == [w for w in WNIDS for _ in range(2)]
    assert list_imagenet_val(flat, wnids=WNIDS[:2])[1] == wnids[:4]
    with pytest.raises(SourceError, match="lacks 1 of the 3 requested classes"):
        list_imagenet_val(flat, wnids=(*WNIDS[:2], "n09999999"))
    (tmp_path / "bad.txt").write_text("ILSVRC2012_val_00000001.JPEG notawnid\n")
    with pytest.raises(SourceError, match=r"bad\.txt:1"):
        read_val_ground_truth(tmp_path / "bad.txt")


def test_unknown_corruption_and_severity_are_rejected():
    with pytest.raises(ValueError, match="Did you mean 'gaussian_noise'"):
        open_corrupted("fashion-mnist-c", on_the_fly=True, corruptions=["gausian_noise"])
    with pytest.raises(ValueError, match="severity must be an integer in 1..5, got 6"):
        open_corrupted("fashion-mnist-c", on_the_fly=True, severities=[6])


def test_on_the_fly_serves_every_cell_and_records_its_mode():
    data = open_corrupted("fashion-mnist-c", on_the_fly=True, seed=3, corruptions=["gaussian_noise"],
                          severities=[5])
    assert data.mode == "on-the-fly" and data.available_cells() == [("clean", 0), ("gaussian_noise", 5)]
    (noisy, labels), = data.batches("gaussian_noise", 5, batch_size=64, indices=np.arange(64), num_workers=0)
    (clean, _), = data.batches("clean", 0, batch_size=64, indices=np.arange(64), num_workers=0)
    assert noisy.dtype == torch.uint8 and not torch.equal(noisy, clean)
    # Any order or subset reproduces the same images (randomness keyed by the image index).
    (again, _), = data.batches("gaussian_noise", 5, batch_size=64, indices=[40, 2, 3], num_workers=0)
    assert torch.equal(again, noisy[[40, 2, 3]])
    # The GPU path (clean uint8 to the device, corruption there) gives the same images.
    (on_device, _), = data.batches("gaussian_noise", 5, batch_size=64, indices=[40, 2, 3], num_workers=0,
                                   corrupt_on="device")
    assert torch.equal(on_device, again)
    other = open_corrupted("fashion-mnist-c", on_the_fly=True, seed=4, corruptions=["gaussian_noise"], severities=[5])
    assert other.fingerprint() != data.fingerprint()
    jpeg = open_corrupted("fashion-mnist-c", on_the_fly=True, seed=3, jpeg_roundtrip=True,
                          corruptions=["gaussian_noise"], severities=[5])
    assert jpeg.describe()["jpeg_roundtrip"] is True and jpeg.fingerprint() != data.fingerprint()
    with pytest.raises(ValueError, match="needs on_the_fly"):
        open_corrupted("fashion-mnist-c", jpeg_roundtrip=True)
    assert set(ALL_CORRUPTIONS) >= {c for c, _ in data.cells}


def test_manifest_guards_a_tampered_generated_file(tmp_path):
    from robustbench_pp.datasets import generate

    generate("fashion-mnist-c", out=tmp_path, corruptions=["brightness"], severities=[1], limit=50, progress=False)
    folder = tmp_path / "fashion-mnist-c"
    data = open_corrupted("fashion-mnist-c", data_root=folder)
    assert data.mode == "generated" and data.verify() == ["brightness.npy", "labels.npy"]
    raw = bytearray((folder / "brightness.npy").read_bytes())
    raw[-1] ^= 0xFF
    (folder / "brightness.npy").write_bytes(bytes(raw))
    # Every open checks the files (size, mtime, sampled hash; the full hash once the mtime moved).
    with pytest.raises(ManifestError, match=r"brightness\.npy was altered after generation"):
        open_corrupted("fashion-mnist-c", data_root=folder)
    (folder / "brightness.npy").write_bytes(bytes(raw[:-10]))
    with pytest.raises(ValueError, match=r"brightness\.npy is truncated"):
        open_corrupted("fashion-mnist-c", data_root=folder)


def test_published_checksums_reject_a_file_that_is_not_the_release(cifar_fixture):
    from robustbench_pp.datasets import verify_release_checksums

    root, _, _ = cifar_fixture
    data = open_corrupted(tiny_cifar_spec(COUNT), data_root=root / "cifar10-c", source_root=root / "source")
    with pytest.raises(ManifestError, match=r"fog\.npy: MD5 [0-9a-f]{32} differs from the published 7b397314"):
        verify_release_checksums(data.spec, root / "cifar10-c", ["fog.npy"])
    with pytest.raises(ValueError, match="no published checksums"):
        verify_release_checksums(get_dataset("fashion-mnist-c"), root)


def test_cifar10_c_224_upsamples_bicubically(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    write_cifar_folder(tmp_path, images, np.arange(4))
    spec = dataclasses.replace(get_dataset("cifar10-c-224"), num_images=4)
    upsampled = open_clean_source(spec, tmp_path).images([2])
    assert upsampled.shape == (1, 224, 224, 3)
    np.testing.assert_array_equal(upsampled[0], np.asarray(Image.fromarray(images[2]).resize((224, 224),
                                                                                             Image.BICUBIC)))
    data = open_corrupted(spec, source_root=tmp_path, on_the_fly=True, corruptions=["brightness"], severities=[1])
    (batch, labels), = data.batches("brightness", 1, batch_size=4, num_workers=0)
    assert batch.shape == (4, 3, 224, 224) and labels.tolist() == [0, 1, 2, 3]
    assert data.describe()["preset"] == "pushpull-224"


def test_downloads_are_explicit_and_licensed_sources_refuse(tmp_path):
    from robustbench_pp.datasets import download_source

    with pytest.raises(ValueError, match="licensed"):
        download_source(get_dataset("imagenet-c"), tmp_path)
    with pytest.raises(ValueError, match="dataset-fashion-mnist"):
        download_source(get_dataset("fashion-mnist-c"), tmp_path)


def test_fingerprints_change_with_the_data_and_cover_only_the_opened_files(cifar_fixture, tmp_path):
    root, images, labels = cifar_fixture
    spec = tiny_cifar_spec(COUNT)
    both = open_corrupted(spec, data_root=root / "cifar10-c", source_root=root / "source")
    fog_only = open_corrupted(spec, data_root=root / "cifar10-c", source_root=root / "source", corruptions=["fog"])
    assert both.fingerprint() != fog_only.fingerprint()  # the opened selection differs
    altered = write_released_npy(tmp_path / "c", images, labels, CORRUPTIONS)
    cells = np.load(altered / "fog.npy")
    cells[0, 0, 0, 0] ^= 1
    np.save(altered / "fog.npy", cells)
    changed = open_corrupted(spec, data_root=altered, source_root=root / "source")
    assert changed.fingerprint() != both.fingerprint()
    # A selection's fingerprint covers its own files only: one altered byte of fog.npy changes
    # the fog selection's, not the gaussian_noise selection's (nor does the folder's path).
    copy = write_released_npy(tmp_path / "copy", images, labels, CORRUPTIONS)
    for folder, expected in ((altered, False), (copy, True)):
        same_fog = open_corrupted(spec, data_root=folder, source_root=root / "source", corruptions=["fog"])
        assert (same_fog.fingerprint() == fog_only.fingerprint()) is expected
    noise = dict(source_root=root / "source", corruptions=["gaussian_noise"])
    assert (open_corrupted(spec, data_root=altered, **noise).fingerprint()
            == open_corrupted(spec, data_root=root / "cifar10-c", **noise).fingerprint())


def test_flat_validation_folder_with_the_ilsvrc_devkit(tmp_path):
    import scipy.io

    folder = write_imagenet_folder(tmp_path / "byclass", per_class=1)
    flat = tmp_path / "val"
    flat.mkdir()
    for image in sorted(folder.rglob("*.JPEG")):
        image.rename(flat / image.name)
    # meta.mat lists synsets by ILSVRC id (leaves have no children); the ground truth gives one
    # id per validation image, in file-number order.
    synsets = np.array([(3, WNIDS[0], 0), (1, WNIDS[2], 0), (2, WNIDS[1], 0), (1001, "n00001740", 5)],
                       dtype=[("ILSVRC2012_ID", "O"), ("WNID", "O"), ("num_children", "O")])
    data = tmp_path / "ILSVRC2012_devkit_t12" / "data"
    data.mkdir(parents=True)
    scipy.io.savemat(data / "meta.mat", {"synsets": synsets})
    (data / "ILSVRC2012_validation_ground_truth.txt").write_text("3\n2\n1\n")
    paths, wnids = list_imagenet_val(flat)  # the devkit is found next to the folder
    assert wnids == sorted(WNIDS)
    assert [p.name for p in paths] == [f"ILSVRC2012_val_{i:08d}.JPEG" for i in (1, 2, 3)]
    (data / "ILSVRC2012_validation_ground_truth.txt").write_text("3\n7\n1\n")
    with pytest.raises(SourceError, match=r"ground_truth\.txt:2: bad ILSVRC2012 id '7'"):
        list_imagenet_val(flat)


def test_corrupt_by_index_reproduces_a_full_pass_for_any_subset_and_order():
    from robustbench_pp.corruptions import corrupt, corrupt_by_index

    images = np.random.default_rng(5).integers(0, 256, (12, 32, 32, 3), dtype=np.uint8)
    full = corrupt(images, "gaussian_noise", 3, preset="cifar", seed=2)
    order = np.array([7, 8, 9, 2, 11, 0, 1])  # three runs of consecutive indices
    picked = corrupt_by_index(images[order], order, "gaussian_noise", 3, preset="cifar", seed=2)
    np.testing.assert_array_equal(picked, full[order])
    as_tensor = corrupt_by_index(torch.from_numpy(images[order]).permute(0, 3, 1, 2), order, "gaussian_noise", 3,
                                 preset="cifar", seed=2)
    np.testing.assert_array_equal(as_tensor.permute(0, 2, 3, 1).numpy(), full[order])
    with pytest.raises(ValueError, match="2 indices for a batch of 3 images"):
        corrupt_by_index(images[:3], [0, 1], "fog", 1, preset="cifar")
