"""Tests for grosslib.report: rankings, tables and claim verdicts on small hand-made record tables."""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import pytest

from grosslib import report

SEEDS = (0, 1)
SIZES = (1, 4, 16, 32)
BUDGET_MACS = {16: 2_660_000, 4: 1_440_000}


# --------------------------------------------------------------------------------------------- helpers
def tau_b(x: Sequence[float], y: Sequence[float]) -> float:
    """Brute-force Kendall tau-b over all pairs (NaN when either list is constant)."""
    pairs = concordant = discordant = ties_x = ties_y = 0
    for i in range(len(x)):
        for j in range(i + 1, len(x)):
            sx, sy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
            pairs += 1
            ties_x, ties_y = ties_x + (sx == 0), ties_y + (sy == 0)
            concordant, discordant = concordant + (sx * sy > 0), discordant + (sx * sy < 0)
    if ties_x == pairs or ties_y == pairs:
        return math.nan
    return (concordant - discordant) / math.sqrt((pairs - ties_x) * (pairs - ties_y))


def assert_close_or_nan(actual: float, expected: float) -> None:
    """Equal to 1e-12, or both NaN."""
    assert (math.isnan(actual) and math.isnan(expected)) or actual == pytest.approx(expected, abs=1e-12)


def table2_records(own: dict[str, tuple[float, float]]) -> pd.DataFrame:
    """Table 2 records for two seeds from ``{network: (accuracy seed 0, accuracy seed 1)}``."""
    rows = []
    for network, values in own.items():
        size = None if network == "full" else int(network.split()[-1])
        for seed, acc in zip(SEEDS, values):
            rows.append({"seed": seed, "network": network, "group size": math.nan if size is None else size,
                         "config": None if size is None else (size,) * 3,
                         "macs": 4_420_000 if size is None else 1_000_000 + 50_000 * size, "accuracy": acc,
                         "gross accuracy": math.nan if size is None else acc - 0.01})
    return pd.DataFrame(rows)


GROWING = {"full": (0.84, 0.86), "fixed 1": (0.80, 0.82), "fixed 4": (0.81, 0.83),
           "fixed 16": (0.82, 0.84), "fixed 32": (0.83, 0.85)}


def deficit_records(profile: dict[float, Sequence[float]]) -> pd.DataFrame:
    """Deficit records, two seeds (offsets -/+0.5 pp), mean deficit ``profile[alpha][k]`` at SIZES[k]."""
    rows = []
    for seed, offset in zip(SEEDS, (-0.5, 0.5)):
        for alpha, values in profile.items():
            for k, (size, deficit) in enumerate(zip(SIZES, values)):
                fixed, pp = 0.80 + 0.01 * k, deficit + offset
                rows.append({"seed": seed, "alpha": alpha, "group size": size, "config": (size,) * 3,
                             "name": f"{size}-{size}-{size}", "macs": 1_000_000 * (k + 1),
                             "gross accuracy": fixed + pp / 100, "fixed accuracy": fixed, "deficit (pp)": pp})
    return pd.DataFrame(rows)


GOOD_PROFILE = {0.0: [-4.0, -3.0, -2.0, -1.0], 4.0: [-1.0, -1.2, -1.0, -1.1], 8.0: [-1.0, -2.0, -3.0, -4.0]}
#: Cost band -> the alpha most accurate in it (cheap: alpha 8, dear: alpha 0, as claim 3 expects).
BEST_BY_BAND = {1: 8.0, 2: 4.0, 3: 0.0}


def profile_records(best: dict[int, float]) -> pd.DataFrame:
    """Six configurations in 3 cost bands of 2; alpha ``best[band]`` is 5 pp more accurate in that band."""
    rows = [{"seed": seed, "alpha": alpha, "config": (k + 1,) * 3, "name": f"{k + 1}-{k + 1}-{k + 1}",
             "macs": 100 * (k + 1), "accuracy": 0.70 + 0.05 * (best[k // 2 + 1] == alpha) + 0.01 * seed}
            for seed in SEEDS for alpha in (0.0, 4.0, 8.0) for k in range(6)]
    return pd.DataFrame(rows)


#: (seed, budget) -> the budget configuration's own test accuracy.
FIXED_OWN = {(0, 16): 0.83, (1, 16): 0.84, (0, 4): 0.81, (1, 4): 0.82}
#: (seed, budget, rank, name, macs, own accuracy): seeds agree on every rank except fixed-16 #2.
PICKS = [(0, 16, 1, "2-32-64", 2_360_000, 0.85), (1, 16, 1, "2-32-64", 2_360_000, 0.835),
         (0, 16, 2, "8-16-64", 2_510_000, 0.84), (1, 16, 2, "16-8-64", 2_490_000, 0.85),
         (0, 4, 1, "2-4-8", 1_330_000, 0.82), (1, 4, 1, "2-4-8", 1_330_000, 0.83),
         (0, 4, 2, "2-8-8", 1_410_000, 0.815), (1, 4, 2, "2-8-8", 1_410_000, 0.83)]


def selection_records(picks: Sequence[tuple] = PICKS) -> pd.DataFrame:
    """Selections from PICKS: GroSS val = own - 3 pp, GroSS test = own - 2 pp (budget's: fixed - 2.5 pp)."""
    rows = [{"seed": seed, "budget": budget, "budget name": f"{budget}-{budget}-{budget}",
             "budget macs": BUDGET_MACS[budget], "rank": rank, "name": name, "macs": macs,
             "gross val accuracy": own - 0.03, "gross test accuracy": own - 0.02, "own accuracy": own,
             "budget own accuracy": FIXED_OWN[seed, budget],
             "budget gross test accuracy": FIXED_OWN[seed, budget] - 0.025}
            for seed, budget, rank, name, macs, own in picks]
    return pd.DataFrame(rows)


def replace_pick(seed: int, budget: int, rank: int, **changes: float) -> list[tuple]:
    """PICKS with the macs and/or own accuracy of one pick changed."""
    out = []
    for pick in PICKS:
        if pick[:3] == (seed, budget, rank):
            pick = pick[:4] + (changes.get("macs", pick[4]), changes.get("own", pick[5]))
        out.append(pick)
    return out


#: Search-split accuracy per configuration (ascending: 1-1-1, 1-2-4, 2-2-2, 4-4-4) and its MACs.
SEARCH_MACS = {"1-1-1": 100, "2-1-1": 150, "1-2-4": 200, "4-2-1": 250, "2-2-2": 300, "4-4-2": 350,
               "4-4-4": 400}
SEED0_ACC = {"1-1-1": .50, "2-1-1": .51, "1-2-4": .60, "4-2-1": .52, "2-2-2": .58, "4-4-2": .65, "4-4-4": .55}
SEED1_ACC = {"1-1-1": .50, "2-1-1": .51, "1-2-4": .57, "4-2-1": .59, "2-2-2": .53, "4-4-2": .70, "4-4-4": .56}
#: Budget label -> (budget macs, picks): every configuration fits budget 16, five fit budget 4.
SEARCH_BUDGETS = {16: (1000, ["4-4-2", "4-4-2"]), 4: (300, ["1-2-4", "4-2-1"])}


def search_records(accuracies: Sequence[dict[str, float]]) -> pd.DataFrame:
    """Search records: one seed per accuracy dict, over the configurations of SEARCH_MACS."""
    return pd.DataFrame([{"seed": seed, "config": tuple(map(int, name.split("-"))), "name": name,
                          "macs": macs, "accuracy": acc[name]}
                         for seed, acc in enumerate(accuracies) for name, macs in SEARCH_MACS.items()])


def search_selections() -> pd.DataFrame:
    """The picks of SEARCH_BUDGETS, one per seed (rank 1)."""
    return pd.DataFrame([{"seed": seed, "budget": budget, "budget macs": limit, "rank": 1, "name": name}
                         for budget, (limit, names) in SEARCH_BUDGETS.items()
                         for seed, name in enumerate(names)])


# --------------------------------------------------------------------------------------------- ranking
@pytest.mark.parametrize("n", [2, 3, 7, 25])
@pytest.mark.parametrize("ties", [False, True])
def test_kendall_tau_matches_brute_force_and_scipy(n: int, ties: bool) -> None:
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(100 * n + ties)
    for _ in range(5):
        x, y = (rng.integers(0, 3, n), rng.integers(0, 3, n)) if ties else rng.normal(size=(2, n))
        tau = report.kendall_tau(x, y)
        assert_close_or_nan(tau, tau_b(x, y))
        assert_close_or_nan(tau, float(stats.kendalltau(x, y).statistic))


def test_kendall_tau_extremes_and_errors() -> None:
    assert report.kendall_tau([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert report.kendall_tau([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert math.isnan(report.kendall_tau([1, 2, 3], [5, 5, 5]))
    assert math.isnan(report.kendall_tau([2, 2], [1, 3]))
    with pytest.raises(ValueError):
        report.kendall_tau([1, 2, 3], [1, 2])
    with pytest.raises(ValueError):
        report.kendall_tau([1], [1])


#: name -> (macs, GroSS accuracy per seed, own accuracy per seed), in 32nds so that means tie exactly.
RANKED = {"1-1-1": (100, (10, 12), (16, 18)), "2-2-2": (300, (14, 16), (20, 20)),
          "4-4-4": (200, (13, 13), (17, 17)), "8-8-8": (400, (18, 16), (22, 24))}


@pytest.fixture
def ranking() -> pd.DataFrame:
    """Ranking records of RANKED for two seeds."""
    return pd.DataFrame([{"seed": seed, "name": name, "macs": macs, "gross accuracy": gross[seed] / 32,
                          "own accuracy": own[seed] / 32}
                         for name, (macs, gross, own) in RANKED.items() for seed in SEEDS])


def test_ranking_table(ranking: pd.DataFrame) -> None:
    table = report.ranking_table(ranking)
    assert list(table.index) == ["1-1-1", "4-4-4", "2-2-2", "8-8-8"]            # by MACs
    assert table["MACs (M)"].tolist() == pytest.approx([1e-4, 2e-4, 3e-4, 4e-4])
    assert table["GroSS (%)"].tolist() == pytest.approx([100 * k / 32 for k in (11, 13, 15, 17)])
    assert table["own (%)"].tolist() == pytest.approx([100 * k / 32 for k in (17, 17, 20, 23)])
    assert table["GroSS - own (pp)"].tolist() == pytest.approx([-18.75, -12.5, -15.625, -18.75])
    assert table["GroSS rank"].tolist() == [4, 3, 2, 1]
    assert table["own rank"].tolist() == [3, 3, 2, 1]                          # the tie shares rank 3
    assert table["seeds"].tolist() == [2, 2, 2, 2]


def test_ranking_taus(ranking: pd.DataFrame) -> None:
    taus = report.ranking_taus(ranking)
    assert list(taus.index) == ["0", "1", "mean over seeds"]
    assert taus["configurations"].tolist() == [4, 4, 4]
    # seed 0: same order; seed 1: one discordant pair, one GroSS tie; means: one own tie
    assert taus["tau"].tolist() == pytest.approx([1.0, 3 / math.sqrt(30), 5 / math.sqrt(30)])


# --------------------------------------------------------------------------------------------- table 3
def test_table3_rows_and_values() -> None:
    t3 = report.table3(selection_records())
    assert list(zip(t3["budget"], t3["role"])) == [(16, "fixed"), (16, "search #1"), (16, "search #2"),
                                                   (4, "fixed"), (4, "search #1"), (4, "search #2")]
    assert t3["configuration"].tolist() == ["16-16-16", "2-32-64", "8-16-64 / 16-8-64",
                                            "4-4-4", "2-4-8", "2-8-8"]
    assert t3["MACs (M)"].tolist() == pytest.approx([2.66, 2.36, 2.50, 1.44, 1.33, 1.41])
    own = [(83, 84), (85, 83.5), (84, 85), (81, 82), (82, 83), (81.5, 83)]     # per seed, %
    assert t3["own (%)"].tolist() == pytest.approx([np.mean(v) for v in own])
    assert t3["own std (%)"].tolist() == pytest.approx([np.std(v, ddof=1) for v in own])
    assert t3["GroSS test (%)"].tolist() == pytest.approx([81.0, 82.25, 82.5, 79.0, 80.5, 80.25])
    assert np.isnan(t3["GroSS val (%)"][0]) and np.isnan(t3["GroSS val (%)"][3])
    assert t3["GroSS val (%)"][[1, 2, 4, 5]].tolist() == pytest.approx([81.25, 81.5, 79.5, 79.25])
    deltas = [(2.0, -0.5), (1.0, 1.0), (1.0, 1.0), (0.5, 1.0)]               # pick - same seed's fixed, pp
    picks = t3[t3["role"] != "fixed"]
    assert picks["delta wrt fixed (pp)"].tolist() == pytest.approx([np.mean(d) for d in deltas])
    assert picks["delta std (pp)"].tolist() == pytest.approx([np.std(d, ddof=1) for d in deltas], abs=1e-9)
    assert t3["delta wrt fixed (pp)"][[0, 3]].isna().all()
    assert t3["beats fixed"].tolist() == ["", "1/2", "2/2", "", "2/2", "2/2"]
    assert t3["ascending"].tolist() == ["", "2/2", "1/2", "", "2/2", "2/2"]
    assert t3["paper configuration"].tolist() == ["16-16-16", "2-32-64", "8-16-64", "4-4-4", "2-4-8", "2-8-8"]
    assert t3["paper own (%)"].tolist() == pytest.approx([82.83, 83.84, 83.83, 82.06, 82.76, 82.92])
    assert t3["paper delta (pp)"][[1, 2, 4, 5]].tolist() == pytest.approx([1.00, 0.99, 0.70, 0.86])
    assert t3["paper delta (pp)"][[0, 3]].isna().all()


def test_table3_a_pick_equal_to_fixed_does_not_beat_it() -> None:
    t3 = report.table3(selection_records(replace_pick(1, 16, 1, own=FIXED_OWN[1, 16])))
    assert t3["delta wrt fixed (pp)"][1] == pytest.approx(1.0)                 # (2 + 0) / 2
    assert t3["beats fixed"][1] == "1/2"


def test_ascending_preference_by_hand() -> None:
    table = report.ascending_preference(search_records([SEED0_ACC, SEED1_ACC]), search_selections(), top_n=2)
    assert list(table.index) == [16, 4]
    assert table["configurations within budget"].tolist() == [7, 5]
    assert table["base share"].tolist() == pytest.approx([4 / 7, 3 / 5])
    # top 2 under 1000: 4-4-2, 1-2-4 | 4-4-2, 4-2-1; under 300: 1-2-4, 2-2-2 | 4-2-1, 1-2-4
    assert table["top-2 share"].tolist() == pytest.approx([1 / 4, 3 / 4])
    assert table["picks share"].tolist() == pytest.approx([0.0, 0.5])


# --------------------------------------------------------------------------------------------- claims
def test_claim_growth_holds() -> None:
    result = report.claim_growth({"table2": table2_records(GROWING)})
    assert result["holds"] and result["increasing"] and result["below_full"]
    assert result["full"] == pytest.approx(85.0)
    assert list(result["fixed"]) == [1, 4, 16, 32]
    assert list(result["fixed"].values()) == pytest.approx([81.0, 82.0, 83.0, 84.0])
    assert "full 85.00; fixed 1/4/16/32: 81.00 / 82.00 / 83.00 / 84.00 (std 1.41 / 1.41 / 1.41 / 1.41)" in \
        result["here"]
    assert result["here"].endswith("increasing: yes, all below full: yes")


@pytest.mark.parametrize("change, increasing, below", [
    ({"fixed 16": (0.84, 0.85)}, False, True),                             # fixed 16 beats fixed 32
    ({"fixed 32": (0.86, 0.87)}, True, False),                               # fixed 32 beats full
    ({"fixed 16": GROWING["fixed 32"]}, False, True),                        # a tie does not grow
])
def test_claim_growth_fails(change: dict[str, tuple[float, float]], increasing: bool, below: bool) -> None:
    result = report.claim_growth({"table2": table2_records({**GROWING, **change})})
    assert not result["holds"]
    assert (result["increasing"], result["below_full"]) == (increasing, below)
    assert f"increasing: {'yes' if increasing else 'no'}, all below full: {'yes' if below else 'no'}" in \
        result["here"]


def test_claim_search_holds() -> None:
    result = report.claim_search(selection_records())
    assert result["holds"]
    assert result["deltas"] == pytest.approx({"16 search #1": 0.75, "16 search #2": 1.0,
                                              "4 search #1": 1.0, "4 search #2": 0.75})
    assert "fixed-16 search #1: 2-32-64 0.75 pp (better in 1/2 seeds)" in result["here"]
    assert "fixed-16 search #2: 8-16-64 / 16-8-64 1.00 pp (better in 2/2 seeds)" in result["here"]
    assert result["here"].endswith("all picks within budget: yes")


def test_claim_search_fails_on_a_negative_mean_delta() -> None:
    result = report.claim_search(selection_records(replace_pick(1, 4, 2, own=0.80)))
    assert not result["holds"]
    assert result["deltas"]["4 search #2"] == pytest.approx(-0.75)           # (0.5 - 2.0) / 2
    assert "fixed-4 search #2: 2-8-8 -0.75 pp (better in 1/2 seeds)" in result["here"]


def test_claim_search_fails_over_budget() -> None:
    result = report.claim_search(selection_records(replace_pick(0, 4, 1, macs=BUDGET_MACS[4] + 1)))
    assert not result["holds"]
    assert min(result["deltas"].values()) > 0
    assert result["here"].endswith("all picks within budget: no")


def test_claim_temperature_holds() -> None:
    profiles = profile_records(BEST_BY_BAND)
    result = report.claim_temperature(deficit_records(GOOD_PROFILE), profiles)
    assert result["holds"]
    assert result["flattest"] == [4.0]
    assert result["favours"] == {0.0: "large", 4.0: "small", 8.0: "small"}
    stds = {a: np.std(v) for a, v in GOOD_PROFILE.items()}
    assert "std of deficits α 0: {:.2f}, α 4: {:.2f}, α 8: {:.2f} pp".format(*stds.values()) in result["here"]
    assert "tilt (largest - smallest) α 0: 3.00, α 4: -0.10, α 8: -3.00 pp" in result["here"]
    assert {k: v for k, v in result["best_alpha_per_band"].items() if k.startswith("band")} == \
        {"band 1 (%)": 8.0, "band 2 (%)": 4.0, "band 3 (%)": 0.0}
    assert result["here"].endswith("best α per cost band (cheap to dear): 8, 4, 0")


@pytest.mark.parametrize("profile, flattest, favours", [
    ({**GOOD_PROFILE, 4.0: [-1.0, -2.0, -1.0, -2.0], 8.0: [-1.0, -1.05, -1.1, -1.15]}, [8.0],
     {0.0: "large", 4.0: "small", 8.0: "small"}),                            # alpha 8 is the flattest
    ({**GOOD_PROFILE, 0.0: [-1.0, -2.0, -3.0, -4.0]}, [4.0],
     {0.0: "small", 4.0: "small", 8.0: "small"}),                            # alpha 0 favours small ones
    ({**GOOD_PROFILE, 8.0: [-1.0, -1.0, -1.2, -1.1]}, [4.0, 8.0],
     {0.0: "large", 4.0: "small", 8.0: "small"}),                            # alpha 8 as flat as alpha 4
])
def test_claim_temperature_fails(profile: dict[float, list[float]], flattest: list[float],
                                 favours: dict[float, str]) -> None:
    result = report.claim_temperature(deficit_records(profile))
    assert not result["holds"]
    assert result["flattest"] == flattest and result["favours"] == favours
    assert result["best_alpha_per_band"] == {} and "cost band" not in result["here"]


def test_claim_ascending() -> None:
    held = report.claim_ascending(search_records([SEED0_ACC | {"4-4-2": 0.45}] * 2), search_selections(), 2)
    assert held["holds"]
    assert held["table"]["top-2 share"].tolist() == pytest.approx([1.0, 1.0])
    failed = report.claim_ascending(search_records([SEED0_ACC, SEED1_ACC]), search_selections(), 2)
    assert not failed["holds"]                                                # 25% < 57% under budget 16
    assert failed["here"] == ("fixed-16: ascending 25% of the top 2 per seed and 0% of the picks vs 57% of "
                              "the 7 that fit; fixed-4: ascending 75% of the top 2 per seed and 50% of the "
                              "picks vs 60% of the 5 that fit")


def test_claims_table() -> None:
    records = {"table2": table2_records(GROWING), "selections": selection_records(),
               "deficits": deficit_records(GOOD_PROFILE), "profiles": profile_records(BEST_BY_BAND),
               "search": search_records([SEED0_ACC, SEED1_ACC])}
    table = report.claims_table(records, top_n=2)
    assert len(table) == 4
    assert [c.split(")")[0] for c in table.index] == ["(1", "(2", "(3", "(4"]
    assert list(table.index) == [f"({k}) {report.CLAIMS[k]}" for k in (1, 2, 3, 4)]
    assert set(table["verdict"]) <= {report.HOLDS, report.FAILS}
    assert table["verdict"].tolist() == [report.HOLDS, report.HOLDS, report.HOLDS, report.FAILS]
    assert table["paper (CIFAR-10)"].tolist() == [report.PAPER_EVIDENCE[k] for k in (1, 2, 3, 4)]
    assert table["here"].iloc[0].startswith("full 85.00")


# --------------------------------------------------------------------------------------------- failed runs
def test_failed_runs_are_listed_and_dropped() -> None:
    """A fixed baseline at chance in one seed leaves Table 2, deficits, selections and ranking (that seed)."""
    own = {**GROWING, "fixed 4": (0.10, 0.83)}                       # seed 0's fixed 4 collapsed
    deficits = deficit_records(GOOD_PROFILE)
    ranking = pd.DataFrame([{"seed": s, "name": n, "macs": m, "gross accuracy": 0.8, "own accuracy": a}
                            for s, n, m, a in [(0, "4-4-4", 1, 0.10), (1, "4-4-4", 1, 0.83),
                                               (0, "2-2-2", 2, 0.40), (1, "2-2-2", 2, 0.81)]])
    records = {"table2": table2_records(own), "deficits": deficits, "selections": selection_records(),
               "ranking": ranking}
    failed = report.failed_runs(records)                              # below half of seed 0's full 84%
    assert failed[["seed", "name"]].values.tolist() == [[0, "2-2-2"], [0, "4-4-4"]]
    assert failed["accuracy (%)"].tolist() == pytest.approx([40.0, 10.0])
    assert failed["full (%)"].tolist() == pytest.approx([84.0, 84.0])
    kept = report.drop_failed_runs(records)
    assert len(kept["table2"]) == len(records["table2"]) - 1
    assert not ((kept["table2"]["seed"] == 0) & (kept["table2"]["network"] == "fixed 4")).any()
    assert len(kept["deficits"]) == len(deficits) - 3                 # seed 0, 4-4-4, three alphas
    assert set(zip(kept["ranking"]["seed"], kept["ranking"]["name"])) == {(1, "4-4-4"), (1, "2-2-2")}
    dropped = records["selections"][(records["selections"]["seed"] == 0)
                                    & (records["selections"]["budget name"] == "4-4-4")]
    assert len(kept["selections"]) == len(records["selections"]) - len(dropped) and len(dropped) == 2
    assert report.table2(kept["table2"]).loc["fixed 4", "runs"] == 1
    assert report.drop_failed_runs(records, fraction=0.1)["ranking"].equals(ranking)   # 10% > 8.4%
