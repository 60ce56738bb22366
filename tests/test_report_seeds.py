"""Several training seeds of one model: mean and spread in the leaderboard, beside the within-run intervals."""

from __future__ import annotations

import math

import pytest

from robustbench_pp.report import build_leaderboard, leaderboard_markdown
from robustbench_pp.report.seeds import mean_and_sd, seed_groups
from robustbench_pp.results import reference_from_run, run_table
from tests._records import full_run


def _run(model: str, shift: float, checkpoint: str):
    return run_table(full_run(lambda c, s: 0.2 + 0.04 * s + shift, clean_error=0.1 + shift, model=model,
                              checkpoint_sha256=checkpoint * 32))


def test_mean_and_sample_sd():
    assert mean_and_sd([1.0, 2.0, 3.0]) == (2.0, 1.0)
    assert mean_and_sd([0.5]) == (0.5, None)
    assert mean_and_sd([0.5, None]) == (None, None)


def test_seed_rows_average_the_seeds_and_show_their_spread():
    base = [_run("resnet18", d, c) for d, c in ((0.0, "a1"), (0.02, "a2"), (0.04, "a3"))]
    pp3 = [_run("resnet18_pp3", d, c) for d, c in ((-0.03, "b1"), (-0.01, "b2"))]
    reference = reference_from_run(_run("alexnet", 0.1, "c1"))
    board = build_leaderboard([*base, *pp3], {"fashion-mnist-c": reference}, baseline="resnet18", group_seeds=True)
    rows = {row.label: row for row in board.rows}
    assert rows["resnet18"].seeds == 3 and rows["resnet18_pp3"].seeds == 2
    assert rows["resnet18"].clean_error == pytest.approx(0.12)
    assert rows["resnet18"].clean_error_seed_sd == pytest.approx(0.02)
    assert rows["resnet18_pp3"].unnormalized_mean_error_seed_sd == pytest.approx(math.sqrt(0.0002))
    assert rows["resnet18"].r_net_unnormalized == pytest.approx(0.0, abs=1e-9)  # against its own mean
    assert rows["resnet18_pp3"].r_net_unnormalized > 0 and rows["resnet18_pp3"].baseline == "resnet18"
    markdown = leaderboard_markdown(board)
    assert "12.00 ± 2.00" in markdown and "| seeds |" in markdown and "sample standard deviation" in markdown
    with pytest.raises(ValueError, match="give them distinct labels.*`group_seeds`"):
        build_leaderboard([*base, *pp3], {"fashion-mnist-c": reference}, baseline="resnet18")


def test_the_same_checkpoint_twice_is_not_two_seeds():
    twice = [_run("resnet18", 0.0, "a1"), _run("resnet18", 0.0, "a1")]
    with pytest.raises(ValueError, match="same checkpoint"):
        seed_groups(twice)


def test_group_seeds_finds_the_baseline_as_without_it_an_exact_label_first():
    import dataclasses

    augmix = run_table([dataclasses.replace(r, recipe="augmix")
                        for r in full_run(lambda c, s: 0.1 + 0.04 * s, checkpoint_sha256="aa" * 32)])
    plain = run_table(full_run(checkpoint_sha256="bb" * 32))
    assert (augmix.label, plain.label) == ("resnet18 (augmix)", "resnet18")  # the model of both is resnet18
    for group_seeds in (False, True):
        board = build_leaderboard([augmix, plain], {"fashion-mnist-c": None}, baseline="resnet18",
                                  group_seeds=group_seeds)
        rows = {row.label: row for row in board.rows}
        assert {row.baseline for row in board.rows} == {"resnet18"}, group_seeds
        assert rows["resnet18"].r_net_unnormalized == pytest.approx(0.0, abs=1e-9)
        assert rows["resnet18 (augmix)"].r_net_unnormalized > 0
    # Two runs matching only by model are ambiguous with seeds grouped too, and the error says so.
    other = run_table([dataclasses.replace(r, recipe="mixup") for r in full_run(checkpoint_sha256="cc" * 32)])
    with pytest.raises(ValueError, match="`baseline` 'resnet18' matches 2 runs"):
        build_leaderboard([augmix, other], {"fashion-mnist-c": None}, baseline="resnet18", group_seeds=True)
