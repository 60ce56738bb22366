"""``rbpp compare`` and the paired statistics of two runs over the same images (issue 13)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from click.testing import CliRunner
from scipy.stats import binomtest

from _paired_records import flip_correct, run_with_bits
from _records import full_run
from robustbench_pp import results
from robustbench_pp.cli import main
from robustbench_pp.metrics import ALEXNET_IMAGENET_C, mean_corruption_error, net_error_reduction, unnormalized_mean_error
from robustbench_pp.metrics.paired import compare_paired, paired_bootstrap
from robustbench_pp.results.pairing import correct_by_cell

DIFFICULTY = np.random.default_rng(5).normal(size=400)  # shared by the runs: they agree on most images


def _write(path, records):
    results.write_records(path, records)
    return str(path)


def _compare(*args):
    return CliRunner().invoke(main, ["compare", *map(str, args)])


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("paired")
    return _write(folder / "run.jsonl", run_with_bits(model="resnet18", difficulty=DIFFICULTY))


def test_a_run_against_itself_gives_zero_differences_with_zero_width_intervals(run):
    out = _compare(run, run, "--json", "--resamples", "200")
    assert out.exit_code == 0, out.output
    document = json.loads(out.output)
    assert document["images"] == 400 and len(document["cells"]) == 76
    for key in ("clean_error", "unnormalized_mean_error", "r_net"):
        assert document["delta"][key] == {"estimate": 0.0, "low": 0.0, "high": 0.0, "excludes_zero": False}
    assert document["delta"]["mce"] is None  # fashion-mnist-c has no reference unless one is given
    assert all(c["delta"] == 0 and c["b_only_wrong"] == c["a_only_wrong"] == 0 and c["p_value"] == 1.0
               and c["p_holm"] == 1.0 and not c["significant"] for c in document["cells"])


def test_flipping_a_quarter_of_the_correct_answers_is_detected(tmp_path, run):
    flipped, flips = flip_correct(results.read_records(run), 0.25)
    out = _compare(run, _write(tmp_path / "flipped.jsonl", flipped), "--json")
    assert out.exit_code == 0, out.output
    document = json.loads(out.output)
    mean_error = document["delta"]["unnormalized_mean_error"]
    assert mean_error["estimate"] > 0 and mean_error["low"] > 0 and mean_error["excludes_zero"]
    before, after = results.load_run(run), results.run_table(flipped)
    expected = 100 * (unnormalized_mean_error(after.errors) - unnormalized_mean_error(before.errors))
    assert mean_error["estimate"] == pytest.approx(expected, abs=1e-9)
    assert document["delta"]["clean_error"]["estimate"] == 0.0  # the clean cell was left alone
    for cell in document["cells"]:
        count = flips[(cell["corruption"], cell["severity"])]
        assert cell["b_only_wrong"] == count and cell["a_only_wrong"] == 0
        assert cell["p_value"] == (binomtest(count, count, 0.5).pvalue if count else 1.0)
        assert cell["delta"] == pytest.approx(100 * count / 400)
        assert cell["significant"] == (cell["p_holm"] <= 0.05)
    assert sum(c["significant"] for c in document["cells"]) == 75  # every flipped cell, not the clean one


@pytest.mark.parametrize(
    "change, reason",
    [
        ({"dataset_fingerprint": "ef" * 32}, "dataset fingerprint"),
        ({"subset": {"limit": 400, "seed": 1}}, "subset"),
        ({"seed": 3}, "seed: 0 (A) vs 3 (B)"),
        ({"preset": "imagenet"}, "preset: cifar (A) vs imagenet (B)"),
        ({"settings": {"precision": "fp32", "protocol": "pushpull-net"}}, "protocol: imagenet-c (A) vs pushpull-net (B)"),
        ({"dataset": "cifar10-c"}, "dataset: fashion-mnist-c (A) vs cifar10-c (B)"),
    ],
)
def test_runs_over_other_images_exit_2_with_the_reason(tmp_path, run, change, reason):
    change = dict(change)
    dataset = change.pop("dataset", "fashion-mnist-c")
    other = _write(tmp_path / "other.jsonl", run_with_bits(model="resnet18_pp3", dataset=dataset, **change))
    out = _compare(run, other)
    assert out.exit_code == 2
    assert "cannot be compared image by image" in out.output and reason in out.output


def test_runs_without_per_image_results_or_files_exit_2(tmp_path, run):
    bare = _write(tmp_path / "bare.jsonl", full_run(n_total=400, model="resnet18_pp3"))
    out = _compare(run, bare)
    assert out.exit_code == 2 and "B keeps no per-image correctness in 76 cell(s)" in out.output
    assert _compare(run, tmp_path / "absent.jsonl").exit_code == 2


def test_bad_options_fail_at_the_boundary(tmp_path, run):
    assert _compare(run, run, "--alpha", "1.5").exit_code == 2
    assert _compare(run, run, "--resamples", "0").exit_code == 2
    out = _compare(run, run, "--reference", "alexnet")  # published errors apply to ImageNet-C only
    assert out.exit_code == 1 and "--reference alexnet" in out.output and "Traceback" not in out.output


def test_the_table_shows_differences_intervals_and_marked_cells(tmp_path, run):
    flipped, _ = flip_correct(results.read_records(run), 0.25)
    out = _compare(run, _write(tmp_path / "flipped.jsonl", flipped), "--resamples", "300")
    assert out.exit_code == 0, out.output
    line = next(l for l in out.output.splitlines() if l.startswith("unnormalised mean error"))
    assert line.rstrip().endswith("pp *")
    assert "75 differ at alpha 0.05" in out.output
    assert any(l.startswith("fog/3") and l.endswith(" *") for l in out.output.splitlines())
    assert "no reference: mCE and R_net from mCE are not compared" in out.output
    assert "verdict: resnet18 has a higher unnormalised mean error than resnet18 on these images" in out.output
    assert "verdict: clean error E: no difference shown" in out.output
    only = _compare(run, tmp_path / "flipped.jsonl", "--resamples", "300", "--cells", "significant").output
    assert "clean/0" not in only and "fog/3" in only
    assert "fog/3" not in _compare(run, tmp_path / "flipped.jsonl", "--resamples", "300", "--cells", "none").output


def test_point_estimates_equal_the_unpaired_metrics_and_alexnet_is_the_imagenet_default():
    a = run_with_bits(error_of=lambda c, s: 0.3 + 0.08 * s, clean_error=0.25, dataset="imagenet-c", difficulty=DIFFICULTY)
    b = run_with_bits(error_of=lambda c, s: 0.28 + 0.07 * s, clean_error=0.27, dataset="imagenet-c",
                      model="resnet18_pp3", bits_seed=1, difficulty=DIFFICULTY)
    ta, tb = results.run_table(a), results.run_table(b)
    comparison = results.compare_runs_paired(ta, tb, reference=results.ALEXNET_REFERENCE, resamples=300)
    deltas = comparison.paired.deltas
    assert deltas["clean_error"].estimate == pytest.approx(tb.clean_error - ta.clean_error)
    mce_a, mce_b = (mean_corruption_error(t.errors, ALEXNET_IMAGENET_C) for t in (ta, tb))
    assert deltas["mce"].estimate == pytest.approx(mce_b - mce_a)
    unnormalized = [unnormalized_mean_error(t.errors) for t in (ta, tb)]
    assert deltas["r_net_unnormalized"].estimate == pytest.approx(
        net_error_reduction(tb.clean_error, unnormalized[1], ta.clean_error, unnormalized[0]))
    assert deltas["r_net_mce"].estimate == pytest.approx(net_error_reduction(tb.clean_error, mce_b, ta.clean_error, mce_a))
    assert comparison.reference == results.ALEXNET_REFERENCE.name and not comparison.paired.reference_resampled


def test_a_reference_run_on_the_same_images_is_resampled_with_them(tmp_path, run):
    alexnet = _write(tmp_path / "alexnet.jsonl", run_with_bits(error_of=lambda c, s: 0.4 + 0.08 * s, clean_error=0.3,
                                                                model="alexnet", bits_seed=2, difficulty=DIFFICULTY))
    better = _write(tmp_path / "b.jsonl", run_with_bits(error_of=lambda c, s: 0.18 + 0.05 * s, model="resnet18_pp3",
                                                         bits_seed=3, difficulty=DIFFICULTY))
    out = _compare(run, better, "--reference", alexnet, "--json", "--resamples", "300")
    assert out.exit_code == 0, out.output
    document = json.loads(out.output)
    assert document["reference_resampled"] and document["reference"] == "alexnet on fashion-mnist-c"
    reference = results.reference_from_run(results.load_run(alexnet))
    expected = (mean_corruption_error(results.load_run(better).errors, reference.errors)
                - mean_corruption_error(results.load_run(run).errors, reference.errors))
    assert document["delta"]["mce"]["estimate"] == pytest.approx(100 * expected)
    assert document["delta"]["mce"]["high"] < 0  # B is better on every corruption
    # A reference without per-image results still normalises, held constant, and says so.
    bare = _write(tmp_path / "bare-alexnet.jsonl", full_run(error_of=lambda c, s: 0.4 + 0.08 * s, n_total=400,
                                                            model="alexnet"))
    document = json.loads(_compare(run, better, "--reference", bare, "--json", "--resamples", "200").output)
    assert not document["reference_resampled"] and any("held constant" in n for n in document["notes"])


def test_a_reference_run_without_clean_bits_is_still_resampled_and_gives_the_same_intervals():
    # Only the reference's 15 × 5 corruption cells enter the mCE: its clean cell is not needed.
    a = results.run_table(run_with_bits(bits_seed=0, model="a", n_total=100))
    b = results.run_table(run_with_bits(error_of=lambda c, s: 0.25 + 0.05 * s, bits_seed=1, model="b", n_total=100))
    full = run_with_bits(error_of=lambda c, s: 0.5 + 0.05 * s, bits_seed=2, model="ref", n_total=100)
    no_clean_bits = [dataclasses.replace(r, extra={}) if r.corruption == "clean" else r for r in full]
    whole = results.compare_runs_paired(a, b, reference_run=results.run_table(full), resamples=200).paired
    partial = results.compare_runs_paired(a, b, reference_run=results.run_table(no_clean_bits), resamples=200).paired
    assert partial.reference_resampled and partial.deltas == whole.deltas
    assert all(partial.deltas[key] is not None for key in partial.deltas) and partial.notes == whole.notes
    # The library entry point agrees: a reference mapping without the clean cell is enough.
    masks = {cell: mask for cell, mask in correct_by_cell(results.run_table(full)).items() if cell[0] != "clean"}
    direct = compare_paired(correct_by_cell(a), correct_by_cell(b), reference_correct=masks,
                            resamples=200)
    assert direct.deltas == whole.deltas


def test_paired_intervals_are_narrower_than_unpaired_on_agreeing_runs():
    a = {r.cell: r.correct_mask() for r in run_with_bits(difficulty=DIFFICULTY)}
    b = {r.cell: r.correct_mask() for r in run_with_bits(error_of=lambda c, s: 0.21 + 0.05 * s, bits_seed=1,
                                                         difficulty=DIFFICULTY)}
    paired = paired_bootstrap(a, b, resamples=500)["unnormalized_mean_error"]
    unpaired = paired_bootstrap(a, b, resamples=500, paired=False)["unnormalized_mean_error"]
    assert paired.estimate == pytest.approx(unpaired.estimate)
    assert paired.width < 0.5 * unpaired.width


def test_bootstrap_is_reproducible_for_a_seed_and_bca_keeps_zero_width():
    a = {r.cell: r.correct_mask() for r in run_with_bits(n_total=50)}
    b = {r.cell: r.correct_mask() for r in run_with_bits(n_total=50, bits_seed=4)}
    first = paired_bootstrap(a, b, resamples=300, seed=9)
    assert first == paired_bootstrap(a, b, resamples=300, seed=9)
    assert first != paired_bootstrap(a, b, resamples=300, seed=10)
    bca = paired_bootstrap(a, b, resamples=300, seed=9, method="bca")["unnormalized_mean_error"]
    assert bca.estimate == first["unnormalized_mean_error"].estimate and bca.low < bca.estimate < bca.high
    same = paired_bootstrap(a, a, resamples=100, method="bca")["unnormalized_mean_error"]
    assert same.low == same.high == 0.0


def test_missing_cells_leave_the_aggregates_empty_but_the_cells_compared():
    a = {r.cell: r.correct_mask() for r in run_with_bits(n_total=60) if r.corruption != "fog"}
    comparison = compare_paired(a, a, resamples=100)
    assert comparison.deltas["unnormalized_mean_error"] is None and len(comparison.cells) == 71
    assert any("all 15 corruptions" in note for note in comparison.notes)
    with pytest.raises(ValueError, match="alpha"):
        compare_paired(a, a, alpha=0.0)
    with pytest.raises(ValueError, match="resamples"):
        paired_bootstrap({**a}, a, resamples=0)


def test_library_refuses_runs_over_other_images_by_name():
    a = results.run_table(run_with_bits(n_total=60))
    b = results.run_table(run_with_bits(n_total=60, subset={"limit": 60, "seed": 0}))
    with pytest.raises(results.IncomparableRunsError, match="subset") as info:
        results.compare_runs_paired(a, b)
    assert info.value.reasons and isinstance(info.value, ValueError)
    assert results.pairing_problems(a, a) == []
    shifted = [_first_images(r, 59) if r.corruption == "fog" else r for r in run_with_bits(n_total=60)]
    assert "different numbers of images" in results.pairing_problems(a, results.run_table(shifted))[0]


def _first_images(record, count):
    """The record of the same cell over its first ``count`` images only (bits and counts agree)."""
    from robustbench_pp.results.schema import encode_correct_mask

    correct = record.correct_mask()[:count]
    return dataclasses.replace(record, n_total=count, n_correct=int(correct.sum()),
                               extra={**record.extra, "correct_bits": encode_correct_mask(correct)})
