"""Tests for grosslib.checks: the verdicts notebooks 01-02 print, each on a true and a false case."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from grosslib import checks
from grosslib.series import GroSSConv2d


def _conv(c_in: int, c_out: int, seed: int = 0) -> nn.Conv2d:
    torch.manual_seed(seed)
    return nn.Conv2d(c_in, c_out, 3, padding=1)


@pytest.fixture(scope="module")
def series() -> tuple[GroSSConv2d, dict]:
    """A float64 GroSS layer of a random 8 -> 8 conv (group sizes 1, 2, 4, 8) and its BTDs."""
    return checks.build_series(_conv(8, 8), tol=1e-10, max_iter=200)


# ------------------------------------------------------------------------------------ exact_at_full_size
def test_exact_at_full_size_only_judges_square_layers() -> None:
    convs = {"square": _conv(4, 4), "wide": _conv(4, 8), "loose": _conv(8, 8)}
    errors = {"square": [0.5, 0.1, 1e-12], "wide": [0.4, 0.3], "loose": [0.4, 1e-3]}
    verdict = checks.exact_at_full_size(convs, errors)
    assert verdict == {"square": True, "loose": False}          # the non-square layer is not judged
    assert checks.exact_at_full_size(convs, errors, tol=1e-2) == {"square": True, "loose": True}
    assert checks.exact_at_full_size({"wide": convs["wide"]}, errors) == {}


def test_exact_at_full_size_on_real_btds() -> None:
    convs = {"a": _conv(8, 8, seed=1), "b": _conv(4, 8, seed=2)}
    results = checks.decompose_layers(convs, tol=1e-10, max_iter=200)
    errors = checks.errors_by_layer(checks.btd_error_table(results))
    assert len(errors["a"]) == 4 and errors["a"][0] > 0.1       # group size 1 is far from exact
    assert checks.exact_at_full_size(convs, errors) == {"a": True}
    assert checks.non_increasing(errors["a"], atol=1e-9)


# --------------------------------------------------------------------------------------------- psi_holds
def test_psi_holds_on_a_real_check() -> None:
    weight = checks.random_grouped_weight(8, 2, seed=3)
    result = checks.psi_check(weight, 2, 4)
    assert checks.psi_holds(result)
    assert result["nonzeros_equal"] and result["zeros_added"] == pytest.approx(0.5)


@pytest.mark.parametrize(("key", "value"), [("conv", 1e-6), ("composition", 1e-300), ("linearity", 1.0),
                                            ("gradient", False)])
def test_psi_holds_fails_when_one_property_fails(key: str, value: float | bool) -> None:
    good = {"conv": 0.0, "composition": 0.0, "linearity": 1e-15, "gradient": True}
    assert checks.psi_holds(good)
    assert not checks.psi_holds({**good, key: value})


# ------------------------------------------------------------------------------------ max_abs_difference
def test_max_abs_difference_ignores_the_label_columns() -> None:
    table = pd.DataFrame({"group size": [1, 64], "terms summed": [1, 2], "max |P - P_k|": [1e-15, 3e-14],
                          "max output error": [2e-13, 1e-16]})
    assert checks.max_abs_difference(table) == pytest.approx(2e-13)
    assert checks.max_abs_difference(table, exclude=()) == 64.0
    assert checks.max_abs_difference(table, exclude=("group size",)) == 2.0


def test_max_abs_difference_of_a_real_prefix_check(series: tuple[GroSSConv2d, dict]) -> None:
    layer, results = series
    table = checks.series_prefix_check(layer, results)
    assert list(table["group size"]) == [1, 2, 4, 8]
    assert checks.max_abs_difference(table) < 1e-9
    broken = table.assign(**{"max output error": table["max output error"] + [0, 0, 0.5, 0]})
    assert checks.max_abs_difference(broken) == pytest.approx(0.5)


# --------------------------------------------------------------------------------------------- reach_matches
def test_reach_matches_the_real_gradient_reach(series: tuple[GroSSConv2d, dict]) -> None:
    layer, _ = series
    reach = checks.gradient_reach(layer)
    assert list(reach.index) == [1, 2, 4, 8]
    assert checks.reach_matches(reach)


def test_reach_matches_is_false_for_a_wrong_reach() -> None:
    sizes = [1, 2, 4]
    expected = checks.expected_reach(sizes)
    assert checks.reach_matches(expected)
    assert expected.values.tolist() == [[True, False, False], [True, True, False], [True, True, True]]
    everything = expected.copy()
    everything[:] = True                                        # a term above the active size got a gradient
    assert not checks.reach_matches(everything)
    missing = expected.copy()
    missing.iloc[2, 0] = False                                  # the first term missed at the largest size
    assert not checks.reach_matches(missing)
    assert not checks.reach_matches(expected.T)                 # upper instead of lower triangle


# --------------------------------------------------------------------------------------------- sampling
def test_sampling_gap_is_the_largest_deviation() -> None:
    table = pd.DataFrame({"alpha": [0.0, 0.0, 4.0, 4.0], "probability": [0.5, 0.5, 0.9, 0.1],
                          "empirical": [0.45, 0.55, 0.93, 0.07]})
    assert checks.sampling_gap(table) == pytest.approx(0.05)
    assert checks.sampling_gap(table.assign(empirical=table["probability"])) == 0.0


def test_sampling_table_verdicts() -> None:
    table = checks.sampling_table([1, 2, 4, 8], alphas=[0.0, 4.0], n_samples=20_000, seed=0)
    assert checks.distributions_sum_to_one(table)
    assert 0.0 < checks.sampling_gap(table) < 0.02              # 20k draws: within ~3 sigma
    assert checks.sampling_gap(checks.sampling_table([1, 2, 4, 8], [0.0], n_samples=10, seed=0)) > 0.02
    # both readings of eq. 8, each against its formula (i = 1 smallest; normalized: i / N)
    assert set(table["reading"]) == {"literal", "normalized"}
    for (reading, alpha), part in table.groupby(["reading", "alpha"]):
        scale = len(part) if reading == "normalized" else 1
        weights = np.exp(-alpha * part["i"].to_numpy() / scale)
        assert part["probability"].to_numpy() == pytest.approx(weights / weights.sum(), rel=1e-12)


def test_distributions_sum_to_one_is_per_alpha() -> None:
    table = pd.DataFrame({"alpha": [0.0, 0.0, 4.0, 4.0], "probability": [0.5, 0.5, 0.9, 0.1]})
    assert checks.distributions_sum_to_one(table)
    assert not checks.distributions_sum_to_one(table.assign(probability=[0.5, 0.5, 0.8, 0.1]))
    # sums of 1.1 and 0.9 average to 1 over the table but each distribution is wrong
    assert not checks.distributions_sum_to_one(table.assign(probability=[0.6, 0.5, 0.8, 0.1]))
    assert checks.distributions_sum_to_one(table.assign(probability=[0.5, 0.5 + 1e-13, 0.9, 0.1]))
    # with readings: per (reading, alpha)
    both = pd.concat([table.assign(reading="literal"), table.assign(reading="normalized")])
    assert checks.distributions_sum_to_one(both)
    wrong = both.assign(probability=[0.5, 0.5, 0.9, 0.1, 0.4, 0.6, 0.8, 0.3])   # normalized alpha 4: 1.1
    assert not checks.distributions_sum_to_one(wrong)
