"""``rbpp check``: 0 within tolerance, 1 on regression, 2 on incomparable inputs."""

from __future__ import annotations

import dataclasses

import pytest
from click.testing import CliRunner

from _records import full_run
from robustbench_pp import results
from robustbench_pp.check import INCOMPARABLE, OK, REGRESSION, compare_runs
from robustbench_pp.cli import main


def _error(c, s):
    return 0.1 + 0.04 * s


def _write(path, records):
    results.write_records(path, records)
    return str(path)


def _shift(records, cell, delta):
    """Records with one cell's error raised by ``delta`` (a fraction)."""
    out = []
    for r in records:
        if r.cell == cell:
            r = dataclasses.replace(r, n_correct=r.n_correct - round(delta * r.n_total))
        out.append(r)
    return out


@pytest.fixture
def reference(tmp_path):
    return _write(tmp_path / "reference.jsonl", full_run(error_of=_error))


def _check(*args):
    return CliRunner().invoke(main, ["check", *map(str, args)])


def test_identical_results_pass(tmp_path, reference):
    out = _check(_write(tmp_path / "new.jsonl", full_run(error_of=_error)), "--against", reference)
    assert out.exit_code == OK, out.output
    assert "OK: 77 numbers within tolerance" in out.output  # 76 cells + unnormalised mean error


def test_cell_regression_prints_old_new_delta(tmp_path, reference):
    records = _shift(full_run(error_of=_error), ("snow", 3), 0.05)
    out = _check(_write(tmp_path / "new.jsonl", records), "--against", reference)
    assert out.exit_code == REGRESSION, out.output
    line = next(line for line in out.output.splitlines() if "snow/3" in line)
    assert "old   22.00" in line and "new   27.00" in line and "delta  +5.00" in line
    # 5 points on one of 75 cells moves the mean by 0.07 points: no finding for it
    assert not any(line.strip().startswith("unnormalised mean error") for line in out.output.splitlines())


def test_change_within_tolerance_passes_and_tolerance_is_respected(tmp_path, reference):
    path = _write(tmp_path / "new.jsonl", _shift(full_run(error_of=_error), ("fog", 1), 0.015))
    assert _check(path, "--against", reference).exit_code == OK
    assert _check(path, "--against", reference, "--tolerance-cell", "0.01").exit_code == REGRESSION


def test_mean_error_drift_below_cell_tolerance_is_caught(tmp_path, reference):
    path = _write(tmp_path / "new.jsonl", full_run(error_of=lambda c, s: _error(c, s) + 0.015))
    out = _check(path, "--against", reference)
    assert out.exit_code == REGRESSION
    finding = next(line for line in out.output.splitlines() if line.strip().startswith("unnormalised mean error"))
    assert "old   22.00  new   23.50  delta  +1.50" in finding


def test_improvements_pass_unless_two_sided(tmp_path, reference):
    path = _write(tmp_path / "new.jsonl", _shift(full_run(error_of=_error), ("fog", 1), -0.05))
    out = _check(path, "--against", reference)
    assert out.exit_code == OK and "improved beyond tolerance" in out.output and "fog/1" in out.output
    assert _check(path, "--against", reference, "--two-sided").exit_code == REGRESSION


@pytest.mark.parametrize(
    "change, reason",
    [
        ({"dataset": "cifar10-c"}, "dataset: cifar10-c vs reference fashion-mnist-c"),
        ({"preset": "imagenet"}, "preset: 'imagenet' vs reference 'cifar'"),
        ({"subset": {"limit": 50, "seed": 0}}, "subset:"),
        ({"num_images": 50}, "images per cell: 50 vs reference 100"),
    ],
)
def test_incomparable_inputs_exit_2(tmp_path, reference, change, reason):
    path = _write(tmp_path / "new.jsonl", full_run(error_of=_error, **change))
    out = _check(path, "--against", reference)
    assert out.exit_code == INCOMPARABLE
    assert reason in out.output  # printed to stderr, which click's runner mixes into output


def test_missing_cells_and_unreadable_files_exit_2(tmp_path, reference):
    records = [r for r in full_run(error_of=_error) if r.corruption != "fog"]
    out = _check(_write(tmp_path / "partial.jsonl", records), "--against", reference)
    assert out.exit_code == INCOMPARABLE and "lack 5 cell(s)" in out.output
    broken = tmp_path / "broken.jsonl"
    broken.write_text("{not json}\n")
    out = _check(broken, "--against", reference)
    assert out.exit_code == INCOMPARABLE and "broken.jsonl" in out.output
    assert _check(tmp_path / "absent.jsonl", "--against", reference).exit_code == INCOMPARABLE


def test_ci_aware_ignores_changes_inside_the_reference_interval(tmp_path):
    base = full_run(error_of=_error)
    with_ci = [dataclasses.replace(r, ci95=(max(0.0, r.top1_error - 0.04), min(1.0, r.top1_error + 0.04))) for r in base]
    reference = _write(tmp_path / "reference.jsonl", with_ci)
    inside = _write(tmp_path / "inside.jsonl", _shift(base, ("frost", 2), 0.03))
    outside = _write(tmp_path / "outside.jsonl", _shift(base, ("frost", 2), 0.05))
    assert _check(inside, "--against", reference).exit_code == REGRESSION
    assert _check(inside, "--against", reference, "--ci-aware").exit_code == OK
    out = _check(outside, "--against", reference, "--ci-aware")
    assert out.exit_code == REGRESSION and "outside 95% CI" in out.output


def test_ci_aware_without_intervals_says_so(tmp_path, reference):
    out = _check(_write(tmp_path / "new.jsonl", full_run(error_of=_error)), "--against", reference, "--ci-aware")
    assert out.exit_code == OK and "carry no 95% intervals" in out.output


def test_imagenet_c_also_compares_alexnet_normalised_mce():
    old = results.run_table(full_run(error_of=_error, dataset="imagenet-c"))
    new = results.run_table(full_run(error_of=lambda c, s: _error(c, s) + 0.012, dataset="imagenet-c"))
    outcome = compare_runs(new, old, tolerance_cell=0.02, tolerance_mce=0.01)
    assert {f.what for f in outcome.regressions} == {"unnormalised mean error", "mCE (AlexNet)"}
    assert outcome.exit_code == REGRESSION


def test_negative_tolerance_is_refused():
    table = results.run_table(full_run())
    with pytest.raises(ValueError, match="tolerance_cell"):
        compare_runs(table, table, tolerance_cell=-0.1)


def test_ci_aware_mean_error_uses_the_bootstrap_of_per_image_results(tmp_path):
    # 100 images per cell: the bootstrap interval of the mean error is a few points wide.
    reference = _write(tmp_path / "reference.jsonl", _with_bits(full_run(error_of=_error, n_total=100)))
    drifted = _write(tmp_path / "drifted.jsonl", full_run(error_of=lambda c, s: _error(c, s) + 0.015, n_total=100))
    assert _check(drifted, "--against", reference).exit_code == REGRESSION
    assert _check(drifted, "--against", reference, "--ci-aware").exit_code == OK


def test_headline_shows_reference_and_new_values(tmp_path, reference):
    path = _write(tmp_path / "new.jsonl", full_run(error_of=lambda c, s: _error(c, s) + 0.015, clean_error=0.12))
    out = _check(path, "--against", reference)
    assert "E 10.00 -> 12.00; unnormalised mean error 22.00 -> 23.50 (reference -> new, %)" in out.output


# --- issue 12, item 9: exit 1 means a regression and nothing else ---------------------------------------


def _with_bits(records):
    import numpy as np

    from robustbench_pp.results.schema import encode_correct_mask

    out = []
    for r in records:
        correct = np.zeros(r.n_total, dtype=bool)
        correct[: r.n_correct] = True
        out.append(dataclasses.replace(r, extra={"correct_bits": encode_correct_mask(correct)}))
    return out


def _edited(path, tmp_path, old: str, new: str, name="edited.jsonl"):
    """A copy of a results file with one text replacement in every line, as a hand edit that also
    removed the lines' digests (which would refuse any edit) would leave it."""
    import re

    text = re.sub(r'"record_sha256": "[0-9a-f]{64}", ', "", open(path).read())
    assert old in text
    edited = tmp_path / name
    edited.write_text(text.replace(old, new))
    return str(edited)


@pytest.mark.parametrize(
    "old, new, message",
    [
        ('"num_images": 100', '"num_images": Infinity', "Infinity is not a number"),
        ('"num_images": 100', '"num_images": 1e999', "out of range"),
        ('"seed": 0', '"seed": "x"', "seed must be an integer"),
        ('"bootstrap_seed": 0', '"bootstrap_seed": "x"', "bootstrap_seed must be an integer"),
        ('"correct_bits": "', '"correct_bits": "!', "correct_bits is not valid base64"),
        ('"severity": 3', '"severity": 3.0', "severity must be an integer"),
    ],
)
def test_malformed_inputs_exit_2_with_a_message_not_1_with_a_traceback(tmp_path, old, new, message):
    records = _with_bits(full_run(error_of=_error, n_total=100, bootstrap_seed=0))
    reference = _write(tmp_path / "reference.jsonl", records)
    new_file = _write(tmp_path / "new.jsonl", records)
    for args in ((new_file, "--against", _edited(reference, tmp_path, old, new), "--ci-aware"),
                 (_edited(new_file, tmp_path, old, new), "--against", reference)):
        out = _check(*args)
        assert out.exit_code == INCOMPARABLE, out.output
        assert message in out.output and "Traceback" not in out.output
        assert out.exception is None or isinstance(out.exception, SystemExit)


@pytest.mark.parametrize("value", ["nan", "inf", "-0.1", "1.5", "x"])
def test_bad_tolerances_exit_2_at_the_boundary(tmp_path, reference, value):
    for flag in ("--tolerance-cell", "--tolerance-mce"):
        out = _check(reference, "--against", reference, flag, value)
        assert out.exit_code == INCOMPARABLE and flag in out.output, out.output
    with pytest.raises(ValueError, match="finite"):
        compare_runs(results.run_table(full_run()), results.run_table(full_run()), tolerance_mce=float("inf"))


def test_an_internal_error_exits_2_not_1(tmp_path, reference, monkeypatch):
    import robustbench_pp.check as check_module

    def broken(*args, **kwargs):
        raise TypeError("unexpected")

    monkeypatch.setattr(check_module, "compare_runs", broken)
    out = _check(reference, "--against", reference)
    assert out.exit_code == INCOMPARABLE and "internal error (TypeError: unexpected)" in out.output


def test_a_torn_last_line_means_an_unfinished_run_and_exits_2(tmp_path, reference):
    from robustbench_pp.results.lines import SIGNATURE

    torn = tmp_path / "torn.jsonl"
    torn.write_bytes(open(reference, "rb").read() + SIGNATURE + b'"calibration": [[')
    for args in ((torn, "--against", reference), (reference, "--against", torn)):
        out = _check(*args)
        assert out.exit_code == INCOMPARABLE, out.output
        assert "the last line is incomplete" in out.output and "--resume" in out.output


# --- rbpp check --paired (issue 13): the same images, judged by paired statistics -------------------------

def _move(records, cell, to_wrong, to_right, seed=0):
    """Records where, in ``cell``, ``to_wrong`` right images become wrong and ``to_right`` wrong ones right."""
    import numpy as np

    from robustbench_pp.results.schema import encode_correct_mask

    rng = np.random.default_rng(seed)
    out = []
    for r in records:
        if r.cell == cell:
            correct = r.correct_mask().copy()
            right, wrong = np.flatnonzero(correct), np.flatnonzero(~correct)
            correct[rng.choice(right, to_wrong, replace=False)] = False
            correct[rng.choice(wrong, to_right, replace=False)] = True
            r = dataclasses.replace(r, n_correct=int(correct.sum()), extra={"correct_bits": encode_correct_mask(correct)})
        out.append(r)
    return out


@pytest.fixture
def paired_reference(tmp_path):
    from _paired_records import run_with_bits

    records = run_with_bits(error_of=_error, n_total=1000, num_images=1000)
    return records, _write(tmp_path / "paired-reference.jsonl", records)


def test_paired_flags_a_real_cell_change_and_names_the_test(tmp_path, paired_reference):
    records, reference = paired_reference
    path = _write(tmp_path / "new.jsonl", _move(records, ("snow", 3), 50, 0))  # +5 points, all one way
    out = _check(path, "--against", reference, "--paired")
    assert out.exit_code == REGRESSION, out.output
    line = next(line for line in out.output.splitlines() if "snow/3" in line)
    assert "delta  +5.00" in line and "McNemar p_Holm" in line and "(50 vs 0 discordant)" in line


def test_paired_passes_a_change_beyond_tolerance_that_is_within_the_noise(tmp_path, paired_reference):
    records, reference = paired_reference
    # +2.5 points net, but from 140 images lost and 115 gained: McNemar p ≈ 0.13 before Holm.
    path = _write(tmp_path / "new.jsonl", _move(records, ("fog", 2), 140, 115))
    assert _check(path, "--against", reference).exit_code == REGRESSION
    out = _check(path, "--against", reference, "--paired")
    assert out.exit_code == OK, out.output
    assert "1 number(s) moved beyond tolerance but not beyond the noise of the images" in out.output


def test_paired_catches_a_mean_error_drift_that_ci_aware_lets_through(tmp_path):
    from _paired_records import flip_correct, run_with_bits

    import numpy as np

    # 100 images per cell, hard or easy in every cell alike (as real images are): the unpaired
    # interval of the mean error is a few points wide.
    records = run_with_bits(error_of=_error, n_total=100, num_images=100, difficulty=np.random.default_rng(0).normal(size=100))
    reference = _write(tmp_path / "reference.jsonl", records)
    drifted, _ = flip_correct(records, 0.02)  # one more wrong image (1 point) in every corrupted cell
    path = _write(tmp_path / "drifted.jsonl", drifted)
    assert _check(path, "--against", reference, "--tolerance-mce", "0.005").exit_code == REGRESSION
    assert _check(path, "--against", reference, "--tolerance-mce", "0.005", "--ci-aware").exit_code == OK
    out = _check(path, "--against", reference, "--tolerance-mce", "0.005", "--paired")
    assert out.exit_code == REGRESSION, out.output
    finding = next(line for line in out.output.splitlines() if line.strip().startswith("unnormalised mean error"))
    assert "paired 95% CI of the change +" in finding


def test_paired_refuses_other_images_and_missing_bits_and_ci_aware(tmp_path, paired_reference):
    from _paired_records import run_with_bits

    records, reference = paired_reference
    other = _write(tmp_path / "other.jsonl", run_with_bits(error_of=_error, n_total=1000, num_images=1000,
                                                           dataset_fingerprint="ef" * 32))
    out = _check(other, "--against", reference, "--paired")
    assert out.exit_code == INCOMPARABLE and "--paired: dataset fingerprint" in out.output
    assert _check(other, "--against", reference).exit_code == OK  # unpaired: a note, not a refusal
    bare = _write(tmp_path / "bare.jsonl", full_run(error_of=_error, n_total=1000, num_images=1000))
    out = _check(bare, "--against", reference, "--paired")
    assert out.exit_code == INCOMPARABLE and "keeps no per-image correctness" in out.output
    out = _check(reference, "--against", reference, "--paired", "--ci-aware")
    assert out.exit_code == 2 and "choose one" in out.output
    with pytest.raises(ValueError, match="`ci_aware` and `paired`"):
        compare_runs(results.run_table(records), results.run_table(records), ci_aware=True, paired=True)


def test_paired_without_the_clean_cell_skips_the_mean_errors_with_a_note_rather_than_flag_them_on_tolerance():
    from _paired_records import run_with_bits

    # Mean error +1.4 points (beyond the 1-point tolerance) over 100 images: no paired interval
    # exists without the clean cell, so paired mode must not fall back to the tolerance alone.
    old = [r for r in run_with_bits(n_total=100, bits_seed=0) if r.corruption != "clean"]
    new = [r for r in run_with_bits(error_of=lambda c, s: 0.215 + 0.05 * s, n_total=100, bits_seed=1)
           if r.corruption != "clean"]
    plain = compare_runs(results.run_table(new), results.run_table(old))
    assert plain.exit_code == REGRESSION and plain.regressions[0].what == "unnormalised mean error"
    out = compare_runs(results.run_table(new), results.run_table(old), paired=True)
    assert out.exit_code == OK and not out.regressions and out.compared == 75
    assert any("mean errors not compared" in note and "clean cell" in note for note in out.notes)
    assert not any("beyond the noise" in note for note in out.notes)  # skipped, not judged as noise
