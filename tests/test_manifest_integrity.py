"""A generated set's identity is tied to its bytes (issue 12, items 5 and 11): in-place edits,
hand-edited or inconsistent manifests and altered JPEGs are refused with one line naming the
file, at every open (fast checks) or on ``--verify`` (every byte)."""

from __future__ import annotations

import json
import os
import shutil

import pytest
from click.testing import CliRunner

from robustbench_pp.cli import main
from robustbench_pp.datasets import ManifestError, generate, open_corrupted
from robustbench_pp.datasets.manifest import SAMPLE_BYTES, SAMPLE_CHUNKS, read_manifest, write_manifest
from test_datasets_support import (  # noqa: F401  (fashion_root, private_hash_cache, synthetic_fashion_mnist: fixtures)
    fashion_root,
    private_hash_cache,
    synthetic_fashion_mnist,
    tiny_imagenet_spec,
    write_imagenet_folder,
)


pytestmark = pytest.mark.usefixtures("private_hash_cache")


@pytest.fixture
def npy_set(tmp_path):
    """brightness and gaussian_noise at 3 severities over the 400 synthetic images (3.7 MB per file)."""
    generate("fashion-mnist-c", out=tmp_path / "out", corruptions=["brightness", "gaussian_noise"],
             severities=[1, 2, 3], seed=5, progress=False)
    return tmp_path / "out" / "fashion-mnist-c"


def _edit_manifest(folder, change, *, resign=False):
    """Edit the manifest by hand (``resign``: as someone who also recomputes its digest)."""
    manifest = json.loads((folder / "manifest.json").read_text())
    change(manifest)
    if resign:
        write_manifest(folder, manifest)
    else:
        (folder / "manifest.json").write_text(json.dumps(manifest, indent=1))


def _one_line_error(args) -> str:
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1, result.output
    return result.output


# ---------------------------------------------------------------------------------------------
# In-place edits of cell files.


def test_zeroing_a_cell_file_in_place_is_refused_at_open(npy_set):
    path = npy_set / "gaussian_noise.npy"
    with open(path, "r+b") as handle:  # keep the header, zero the pixels
        handle.seek(128)
        handle.write(bytes(path.stat().st_size - 128))
    with pytest.raises(ManifestError, match=r"gaussian_noise\.npy was altered after generation"):
        open_corrupted("fashion-mnist-c", data_root=npy_set)


def test_an_edit_that_restores_the_mtime_is_caught_by_the_sampled_hash(npy_set):
    path = npy_set / "gaussian_noise.npy"
    stat = path.stat()
    block = path.stat().st_size // 3
    with open(path, "r+b") as handle:  # zero the second severity block, then put the time back
        handle.seek(block)
        handle.write(bytes(block))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    with pytest.raises(ManifestError, match="altered after generation"):
        open_corrupted("fashion-mnist-c", data_root=npy_set)


def test_a_byte_between_the_samples_escapes_the_fast_check_but_not_verify(npy_set):
    """The documented limit of the per-run check, and what --verify is for."""
    path = npy_set / "gaussian_noise.npy"
    size, stat = path.stat().st_size, path.stat()
    assert size > SAMPLE_CHUNKS * SAMPLE_BYTES
    offset = (size - SAMPLE_BYTES) // (SAMPLE_CHUNKS - 1) // 2 + SAMPLE_BYTES  # between chunks 0 and 1
    with open(path, "r+b") as handle:
        handle.seek(offset)
        value = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([value[0] ^ 0xFF]))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    data = open_corrupted("fashion-mnist-c", data_root=npy_set)
    with pytest.raises(ManifestError, match=r"gaussian_noise\.npy: sha256"):
        data.verify()


def test_a_copy_without_times_is_hashed_once_and_keeps_its_fingerprint(npy_set, tmp_path):
    copy = tmp_path / "copy" / "fashion-mnist-c"
    shutil.copytree(npy_set, copy, copy_function=shutil.copyfile)  # new mtimes
    original = open_corrupted("fashion-mnist-c", data_root=npy_set).fingerprint()
    assert open_corrupted("fashion-mnist-c", data_root=copy).fingerprint() == original


# ---------------------------------------------------------------------------------------------
# Hand-edited and inconsistent manifests.


@pytest.mark.parametrize("change", [
    lambda m: m["parameters"].update(severities=[3, 2, 1]),
    lambda m: m.update(seed=6),
    lambda m: m.update(files={}),
    lambda m: m.pop("parameters"),
])
def test_a_hand_edited_manifest_is_refused(npy_set, change):
    _edit_manifest(npy_set, change)
    with pytest.raises(ManifestError, match=r"manifest\.json: its contents do not match its digest"):
        open_corrupted("fashion-mnist-c", data_root=npy_set)


@pytest.mark.parametrize("change,message", [
    (lambda m: m["parameters"].update(severities=[3, 2, 1]), "ascending, without repeats"),
    (lambda m: m["parameters"].update(severities=[1, 1, 2]), "ascending, without repeats"),
    (lambda m: m["parameters"].update(severities=["x", 2, 3]), "whole numbers 1-5"),
    (lambda m: m["parameters"].update(severities=[1.0, 2, 3]), "whole numbers 1-5"),
    (lambda m: m.update(seed="x"), "`seed` must be a whole number"),
    (lambda m: m.update(seed=True), "`seed` must be a whole number"),
    (lambda m: m.pop("parameters"), "`parameters` is missing"),
    (lambda m: m.update(indices=[10**6] * m["num_images"]), "indices"),
    (lambda m: m.update(num_images=3), "without `indices`"),
    (lambda m: m["files"]["labels.npy"].pop("sha256"), "sha256 hex digest"),
    (lambda m: m.update(corruptions_complete=["brightness", "brightness"]), "corruptions_complete"),
    (lambda m: m.update(format_version="2"), "format_version '2'"),
])
def test_a_resigned_manifest_must_still_be_self_consistent(npy_set, change, message):
    _edit_manifest(npy_set, change, resign=True)
    with pytest.raises(ManifestError, match=message):
        read_manifest(npy_set)


def test_a_resigned_manifest_without_files_opens_nothing(npy_set):
    _edit_manifest(npy_set, lambda m: m.update(files={}), resign=True)
    with pytest.raises(ManifestError, match=r"\.npy is not recorded in .*manifest\.json"):
        open_corrupted("fashion-mnist-c", data_root=npy_set)


def test_a_resigned_seed_is_caught_by_verify(npy_set):
    """The digest stops hand edits; --verify corrupts images again with the recorded seed."""
    _edit_manifest(npy_set, lambda m: m.update(seed=6), resign=True)
    data = open_corrupted("fashion-mnist-c", data_root=npy_set, corruptions=["gaussian_noise"])
    with pytest.raises(ManifestError, match="gaussian_noise severity 1 images are not what seed 6"):
        data.verify()


def test_a_manifest_of_the_first_format_is_refused_with_a_remedy(npy_set):
    _edit_manifest(npy_set, lambda m: (m.update(format_version=1), m.pop("digest")))
    with pytest.raises(ManifestError, match="older than version 2 .*rerun generation"):
        open_corrupted("fashion-mnist-c", data_root=npy_set)


@pytest.mark.parametrize("change", [lambda m: m.pop("parameters"), lambda m: m.update(indices=[-1])])
def test_cli_reports_a_malformed_manifest_in_one_line(npy_set, change):
    _edit_manifest(npy_set, change, resign=True)
    output = _one_line_error(["evaluate", "--model", "resnet18", "--width", "4", "--num-classes", "10",
                              "--dataset", "fashion-mnist-c", "--data-root", str(npy_set), "--device", "cpu",
                              "--out", str(npy_set.parent / "r.jsonl"), "--quiet"])
    assert "manifest.json" in output
    assert not (npy_set.parent / "r.jsonl").exists()
    output = _one_line_error(["datasets", "fashion-mnist-c", "--data-root", str(npy_set), "--verify"])
    assert "manifest.json" in output


def test_generation_resumes_over_a_damaged_file_by_rewriting_it(npy_set):
    path = npy_set / "brightness.npy"
    good = path.read_bytes()
    path.write_bytes(good[:128] + bytes(len(good) - 128))
    report = generate("fashion-mnist-c", out=npy_set.parent, corruptions=["brightness", "gaussian_noise"],
                      severities=[1, 2, 3], seed=5, progress=False)
    assert report.cells_written == 3 and path.read_bytes() == good


# ---------------------------------------------------------------------------------------------
# JPEG cells: every image is part of the identity.


@pytest.fixture
def jpeg_set(tmp_path):
    source = write_imagenet_folder(tmp_path / "val")
    spec = tiny_imagenet_spec()
    generate(spec, out=tmp_path / "out", source_root=source, corruptions=["gaussian_noise"], severities=[1, 3],
             progress=False)
    return spec, source, tmp_path / "out" / "imagenet-c"


def _an_image(folder):
    return sorted((folder / "gaussian_noise" / "3").glob("*/*.JPEG"))[0]


def test_verify_reads_every_jpeg_of_a_generated_cell(jpeg_set):
    spec, source, folder = jpeg_set
    image = _an_image(folder)
    stat = image.stat()
    raw = bytearray(image.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    image.write_bytes(bytes(raw))
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    with pytest.raises(ManifestError, match=rf"{image.name} was altered after generation"):
        open_corrupted(spec, data_root=folder, source_root=source).verify()


def test_a_replaced_jpeg_is_refused_at_open(jpeg_set):
    spec, source, folder = jpeg_set
    image = _an_image(folder)
    good = image.read_bytes()
    image.write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match=rf"{image.name}"):  # before any image is evaluated
        open_corrupted(spec, data_root=folder, source_root=source)
    image.write_bytes(good)
    later = sorted((folder / "gaussian_noise" / "3").glob("*/*.JPEG"))[-1]  # not the header-checked one
    later.write_bytes(later.read_bytes()[:-100])
    with pytest.raises(ManifestError, match=rf"{later.name} was altered after generation"):
        open_corrupted(spec, data_root=folder, source_root=source)


def test_an_extra_jpeg_in_a_cell_is_refused(jpeg_set):
    spec, source, folder = jpeg_set
    image = _an_image(folder)
    shutil.copy(image, image.with_name("extra.JPEG"))
    with pytest.raises(ValueError, match="extra.JPEG"):
        open_corrupted(spec, data_root=folder, source_root=source)


def test_the_recorded_seed_reproduces_the_stored_jpegs(jpeg_set):
    spec, source, folder = jpeg_set
    assert len(open_corrupted(spec, data_root=folder, source_root=source).verify()) == 2
    _edit_manifest(folder, lambda m: m.update(seed=1), resign=True)
    with pytest.raises(ManifestError, match="not what seed 1"):
        open_corrupted(spec, data_root=folder, source_root=source).verify()
