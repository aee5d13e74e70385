"""Tests for grosslib.verdicts: intervals, the verdict rule and each claim's per-seed effect, by hand."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from grosslib import plots, report, tables, verdicts
from grosslib.study import read_records

REAL_RECORDS = Path(__file__).resolve().parents[1] / "results" / "fashion-mnist-study" / "records.json"
SIZES = (1, 4, 16, 32)


# --------------------------------------------------------------------------------------------- intervals
@pytest.mark.parametrize("n", [2, 5, 12])
def test_t_interval_matches_the_formula(n: int) -> None:
    data = np.random.default_rng(n).normal(0.3, 1.7, size=n)
    result = verdicts.effect_interval(np.append(data, np.nan))              # the NaN is dropped
    half = stats.t.ppf(0.975, n - 1) * data.std(ddof=1) / math.sqrt(n)
    assert result["n"] == n and result["method"] == "t"
    assert result["estimate"] == pytest.approx(data.mean(), abs=1e-12)
    assert result["ci95"] == pytest.approx([data.mean() - half, data.mean() + half], abs=1e-12)
    narrow = verdicts.effect_interval(data, confidence=0.8)
    half80 = stats.t.ppf(0.9, n - 1) * data.std(ddof=1) / math.sqrt(n)
    assert narrow["ci95"] == pytest.approx([data.mean() - half80, data.mean() + half80], abs=1e-12)


def test_zero_variance_gives_a_degenerate_interval() -> None:
    for method in verdicts.METHODS:
        assert verdicts.effect_interval([0.4, 0.4, 0.4], method=method)["ci95"] == pytest.approx([0.4, 0.4])


def test_bootstrap_contains_the_mean_and_is_reproducible() -> None:
    data = np.random.default_rng(3).normal(1.0, 2.0, size=10)
    first = verdicts.effect_interval(data, method="bootstrap", n_boot=2000, seed=7)
    again = verdicts.effect_interval(data, method="bootstrap", n_boot=2000, seed=7)
    other = verdicts.effect_interval(data, method="bootstrap", n_boot=2000, seed=8)
    lo, hi = first["ci95"]
    assert first["method"] == "bootstrap" and first["n"] == 10
    assert lo < data.mean() < hi and lo > data.min() and hi < data.max()
    assert again["ci95"] == first["ci95"]
    assert other["ci95"] != first["ci95"]


@pytest.mark.parametrize("effects, expected", [
    (np.arange(1.0, 6.0) + 10, "holds"),
    (-(np.arange(1.0, 6.0) + 10), "contradicted"),
    ([-2.0, -1.0, 0.0, 1.0, 2.0], "inconclusive"),
    ([3.0], "inconclusive"),
])
@pytest.mark.parametrize("method", ["t", "bootstrap"])
def test_verdict(effects: list[float], expected: str, method: str) -> None:
    assert verdicts.verdict(verdicts.effect_interval(effects, method=method)["ci95"]) == expected


def test_too_few_effects_and_nan_bounds() -> None:
    one = verdicts.effect_interval([2.5, math.nan])
    assert one["n"] == 1 and one["estimate"] == 2.5 and all(math.isnan(b) for b in one["ci95"])
    none = verdicts.effect_interval([])
    assert none["n"] == 0 and math.isnan(none["estimate"])
    assert verdicts.verdict([math.nan, -1.0]) == verdicts.verdict([1.0, math.nan]) == "inconclusive"
    assert verdicts.verdict([0.0, 1.0]) == verdicts.verdict([-1.0, 0.0]) == "inconclusive"


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="method must be one of"):
        verdicts.effect_interval([1.0, 2.0], method="normal")
    for confidence in (0.0, 1.0, 95):
        with pytest.raises(ValueError, match=r"confidence must lie in \(0, 1\)"):
            verdicts.effect_interval([1.0, 2.0], confidence=confidence)
    with pytest.raises(ValueError, match="method must be one of"):
        verdicts.claims_json(synthetic_records(), {}, {}, method="normal")


# --------------------------------------------------------------------------------------------- records
#: seed -> (full, fixed 1, fixed 4, fixed 16, fixed 32) test accuracy.
TABLE2 = {0: (0.90, 0.80, 0.82, 0.83, 0.86), 1: (0.85, 0.81, 0.80, 0.84, 0.86),
          2: (0.88, 0.82, 0.83, 0.85, 0.87)}
#: By hand: the smallest step (pp) and full minus the best fixed (pp).
GROWTH = {0: 1.0, 1: -1.0, 2: 1.0}          # steps 2/1/3, -1/4/2, 1/2/2
BELOW_FULL = {0: 4.0, 1: -1.0, 2: 1.0}


def table2_records() -> pd.DataFrame:
    rows = []
    for seed, (full, *fixed) in TABLE2.items():
        rows.append({"seed": seed, "network": "full", "group size": math.nan, "config": None,
                     "macs": 4_000_000, "accuracy": full, "gross accuracy": math.nan})
        for size, acc in zip(SIZES, fixed):
            rows.append({"seed": seed, "network": f"fixed {size}", "group size": float(size),
                         "config": (size,) * 3, "macs": 1_000_000 + size, "accuracy": acc,
                         "gross accuracy": acc - 0.01})
    return pd.DataFrame(rows[::-1])                     # rows out of order: sizes are sorted by value


#: (seed, budget, rank) -> (own accuracy, budget own accuracy).
PICKS = {(0, 16, 1): (0.85, 0.83), (0, 16, 2): (0.84, 0.83), (0, 4, 1): (0.80, 0.81), (0, 4, 2): (0.82, 0.81),
         (1, 16, 1): (0.83, 0.84), (1, 16, 2): (0.86, 0.84), (1, 4, 1): (0.83, 0.82), (1, 4, 2): (0.82, 0.82)}
PICK_EFFECTS = {0: [2.0, 1.0, -1.0, 1.0], 1: [-1.0, 2.0, 1.0, 0.0]}      # fixed-16 #1, #2, fixed-4 #1, #2


def selection_records() -> pd.DataFrame:
    names = {16: ("2-32-64", "8-16-64"), 4: ("2-4-8", "2-8-8")}
    limits = {16: 1000, 4: 300}
    return pd.DataFrame([{"seed": seed, "budget": budget, "budget name": f"{budget}-{budget}-{budget}",
                          "budget macs": limits[budget], "rank": rank, "name": names[budget][rank - 1],
                          "macs": 100, "gross val accuracy": own - 0.03, "gross test accuracy": own - 0.02,
                          "own accuracy": own, "budget own accuracy": fixed,
                          "budget gross test accuracy": fixed - 0.02}
                         for (seed, budget, rank), (own, fixed) in PICKS.items()])


def alternating(std: float) -> list[float]:
    """Deficits over the 4 fixed sizes whose std (ddof 0) is ``std``: -s, s, -s, s."""
    return [-std, std, -std, std]


#: reading -> seed -> alpha -> std of its deficits; alpha 0 rows only in the literal reading's rows.
FLATNESS = {"literal": {0: {0.0: 2.0, 4.0: 0.0, 8.0: 1.0}, 1: {0.0: 1.0, 4.0: 3.0, 8.0: 2.0}},
            "normalized": {0: {4.0: 1.0, 8.0: 3.0}, 1: {4.0: 0.0, 8.0: 1.0}}}
#: By hand: flatness(a) - flatness(4) per reading, seed and other alpha (alpha 0 shared by both readings).
TEMPERATURE = {"literal": {0: {0.0: 2.0, 8.0: 1.0}, 1: {0.0: -2.0, 8.0: -1.0}},
               "normalized": {0: {0.0: 1.0, 8.0: 2.0}, 1: {0.0: 1.0, 8.0: 1.0}}}


def deficit_records(with_reading: bool = True) -> pd.DataFrame:
    rows = []
    for reading, by_seed in FLATNESS.items():
        if reading != "literal" and not with_reading:
            continue
        for seed, by_alpha in by_seed.items():
            for alpha, std in by_alpha.items():
                for k, (size, pp) in enumerate(zip(SIZES, alternating(std))):
                    fixed = 0.80 + 0.01 * k
                    rows.append({"seed": seed, "alpha": alpha, "group size": size, "config": (size,) * 3,
                                 "name": f"{size}-{size}-{size}", "macs": 1000 * (k + 1),
                                 "gross accuracy": fixed + pp / 100, "fixed accuracy": fixed,
                                 "deficit (pp)": pp, **({"reading": reading} if with_reading else {})})
    return pd.DataFrame(rows)


#: Search-split accuracy per configuration (ascending: 1-1-1, 1-2-4, 2-2-2, 4-4-4) and its MACs.
SEARCH_MACS = {"1-1-1": 100, "2-1-1": 150, "1-2-4": 200, "4-2-1": 250, "2-2-2": 300, "4-4-2": 350,
               "4-4-4": 400}
SEARCH_ACC = {0: {"1-1-1": .50, "2-1-1": .51, "1-2-4": .60, "4-2-1": .52, "2-2-2": .58, "4-4-2": .65,
                  "4-4-4": .55},
              1: {"1-1-1": .50, "2-1-1": .51, "1-2-4": .57, "4-2-1": .59, "2-2-2": .53, "4-4-2": .70,
                  "4-4-4": .56}}
#: By hand, top 2: budget 16 (all 7 fit, 4 ascending): 4-4-2, 1-2-4 | 4-4-2, 4-2-1; budget 4 (MACs <= 300:
#: 5 fit, 3 ascending): 1-2-4, 2-2-2 | 4-2-1, 1-2-4.
ASCENDING = {0: {16: 100 * (1 / 2 - 4 / 7), 4: 100 * (1 - 3 / 5)},
             1: {16: 100 * (0 - 4 / 7), 4: 100 * (1 / 2 - 3 / 5)}}


def search_records() -> pd.DataFrame:
    return pd.DataFrame([{"seed": seed, "config": tuple(map(int, name.split("-"))), "name": name,
                          "macs": macs, "accuracy": acc[name]}
                         for seed, acc in SEARCH_ACC.items() for name, macs in SEARCH_MACS.items()])


#: seed -> (GroSS, own) accuracies of the ranked configurations; tau by hand: 1, -1, (2 - 1) / 3.
RANKING = {0: ([.1, .2, .3, .4], [.5, .6, .7, .8]), 1: ([.1, .2, .3], [.9, .8, .7]),
           2: ([.1, .2, .3], [.1, .3, .2])}
TAUS = {0: 1.0, 1: -1.0, 2: 1 / 3}


def ranking_records(seeds: tuple[int, ...] = (0, 1, 2)) -> pd.DataFrame:
    return pd.DataFrame([{"seed": seed, "name": f"{k + 1}-{k + 1}-{k + 1}", "macs": 100 * k,
                          "gross accuracy": g, "own accuracy": o}
                         for seed in seeds for k, (g, o) in enumerate(zip(*RANKING[seed]))])


def synthetic_records(with_reading: bool = True) -> dict[str, pd.DataFrame]:
    return {"table2": table2_records(), "deficits": deficit_records(with_reading), "profiles": pd.DataFrame(),
            "search": search_records(), "selections": selection_records(), "ranking": ranking_records((0, 2)),
            "seeds": pd.DataFrame({"seed": [0, 1, 2], "wall seconds": [1.0, 2.0, 3.0]})}


def assert_series(actual: pd.Series, expected: dict[int, float]) -> None:
    assert list(actual.index) == list(expected)
    assert actual.to_numpy() == pytest.approx(list(expected.values()), abs=1e-9)


# --------------------------------------------------------------------------------------------- effects
def test_growth_and_below_full_effects() -> None:
    assert_series(verdicts.growth_effect(table2_records()), GROWTH)
    assert_series(verdicts.below_full_effect(table2_records()), BELOW_FULL)


def test_search_effects() -> None:
    effects = verdicts.search_effects(selection_records())
    assert list(effects.columns) == ["fixed-16 search #1", "fixed-16 search #2", "fixed-4 search #1",
                                     "fixed-4 search #2"]
    for seed, expected in PICK_EFFECTS.items():
        assert effects.loc[seed].tolist() == pytest.approx(expected, abs=1e-9)
    assert_series(verdicts.search_effect(selection_records()), {0: 0.75, 1: 0.5})


def test_temperature_effects_per_reading() -> None:
    deficits = deficit_records()
    assert verdicts.readings(deficits) == ["literal", "normalized"]
    effects = verdicts.temperature_effects(deficits)
    assert list(effects) == ["literal", "normalized"]
    for reading, by_seed in TEMPERATURE.items():
        assert list(effects[reading].columns) == [0.0, 8.0]
        for seed, expected in by_seed.items():
            assert effects[reading].loc[seed].tolist() == pytest.approx([expected[0.0], expected[8.0]],
                                                                        abs=1e-9)
    main = verdicts.temperature_effect(deficits)
    assert_series(main["literal"], {0: 1.0, 1: -2.0})
    assert_series(main["normalized"], {0: 1.0, 1: 1.0})


def test_temperature_effect_without_a_reading_column_is_literal() -> None:
    deficits = deficit_records(with_reading=False)
    assert verdicts.readings(deficits) == ["literal"]
    assert_series(verdicts.temperature_effect(deficits)["literal"], {0: 1.0, 1: -2.0})
    no_eight = deficits[~((deficits["seed"] == 1) & (deficits["alpha"] == 8.0))]
    effect = verdicts.temperature_effect(no_eight)["literal"]                 # seed 1 lacks alpha 8: unknown
    assert effect[0] == pytest.approx(1.0) and math.isnan(effect[1])


def test_ascending_effects() -> None:
    effects = verdicts.ascending_effects(search_records(), selection_records(), top_n=2)
    assert list(effects.columns) == [16, 4]
    for seed, expected in ASCENDING.items():
        assert effects.loc[seed].tolist() == pytest.approx([expected[16], expected[4]], abs=1e-9)
    assert_series(verdicts.ascending_effect(search_records(), selection_records(), top_n=2),
                  {s: (e[16] + e[4]) / 2 for s, e in ASCENDING.items()})
    # the mean over seeds is the report's (pooled) top-n share minus its base share
    pooled = report.ascending_preference(search_records(), selection_records(), top_n=2)
    difference = 100 * (pooled["top-2 share"] - pooled["base share"])
    assert effects.mean().tolist() == pytest.approx(difference.tolist())


def test_ranking_tau() -> None:
    assert_series(verdicts.ranking_tau(ranking_records()), TAUS)


# --------------------------------------------------------------------------------------------- claims
def test_claims_json_on_synthetic_records() -> None:
    design, schedule = {"seeds": 3, "top_n": 2}, {"full": {"epochs": 5}}
    out = verdicts.claims_json(synthetic_records(), design, schedule, top_n=2)
    assert out["seeds"] == [0, 1, 2] and out["design"] == design and out["schedule"] == schedule
    assert out["interval_method"] == "t"
    claims = out["claims"]
    assert [(c["id"], c["reading"]) for c in claims] == [("1a", None), ("1b", None), ("2", None),
                                                         ("3", "literal"), ("3", "normalized"), ("4", None)]
    expected = {("1a", None): GROWTH.values(), ("1b", None): BELOW_FULL.values(), ("2", None): [0.75, 0.5],
                ("3", "literal"): [1.0, -2.0], ("3", "normalized"): [1.0, 1.0],
                ("4", None): [(e[16] + e[4]) / 2 for e in ASCENDING.values()]}
    for claim in claims:
        effects = list(expected[claim["id"], claim["reading"]])
        interval = verdicts.effect_interval(effects)
        assert claim["n"] == len(effects) and type(claim["n"]) is int
        assert claim["estimate"] == pytest.approx(np.mean(effects))
        assert claim["ci95"] == pytest.approx(interval["ci95"])
        assert claim["verdict"] == verdicts.verdict(interval["ci95"])
        assert claim["statistic"] == verdicts.STATISTICS[claim["id"]] and claim["claim"]
        assert all(type(v) is float for v in [claim["estimate"], *claim["ci95"]])
    tau = out["kendall_tau"]                                # seed 1 has no ranking records
    assert tau["per_seed"][0] == pytest.approx(1.0) and math.isnan(tau["per_seed"][1])
    assert tau["per_seed"][2] == pytest.approx(1 / 3) and tau["mean"] == pytest.approx(2 / 3)
    assert tau["ci95"] == pytest.approx(verdicts.effect_interval([1.0, 1 / 3])["ci95"])
    text = json.dumps(out)
    assert json.dumps(json.loads(text)) == text


def test_claims_json_bootstrap_and_frame() -> None:
    out = verdicts.claims_json(synthetic_records(with_reading=False), {}, {}, method="bootstrap", top_n=2)
    assert out["interval_method"] == "bootstrap"
    assert [(c["id"], c["reading"]) for c in out["claims"]][3] == ("3", "literal")
    frame = verdicts.claims_frame(out)
    assert list(frame.columns) == ["id", "reading", "statistic", "estimate", "ci95", "n", "verdict"]
    assert frame["id"].tolist() == ["1a", "1b", "2", "3", "4"]
    assert frame["reading"].tolist() == [None, None, None, "literal", None]
    lo, hi = out["claims"][0]["ci95"]
    assert frame["ci95"].iloc[0] == f"[{lo:.3f}, {hi:.3f}]"
    assert frame["verdict"].tolist() == [c["verdict"] for c in out["claims"]]


def test_statistics_cover_every_claim() -> None:
    assert set(verdicts.STATISTICS) == set(verdicts.CLAIM_IDS) == set(verdicts.CLAIM_TEXT)
    assert all(s.startswith("Per seed") for s in verdicts.STATISTICS.values())


@pytest.mark.skipif(not REAL_RECORDS.is_file(), reason="no published study records")
def test_claims_json_on_the_real_records() -> None:
    records, study = read_records(REAL_RECORDS)
    seeds = sorted(int(s) for s in study["seeds"])
    out = verdicts.claims_json(records, design=study["plan"], schedule=study["schedule"])
    assert out["seeds"] == seeds
    readings = tables.readings(records["deficits"])        # the committed study trained both
    assert [(c["id"], c["reading"]) for c in out["claims"]] == [
        ("1a", None), ("1b", None), ("2", None), *(("3", r) for r in readings), ("4", None)]
    assert all(c["n"] == len(seeds) for c in out["claims"])
    assert all(c["verdict"] in ("holds", "contradicted", "inconclusive") for c in out["claims"])
    assert len(out["kendall_tau"]["per_seed"]) == len(seeds)
    json.loads(json.dumps(out))
    # per seed, the flatness is tables.profile_flatness' std of deficits; claim 2's picks average to table 3's
    for reading in readings:
        flatness = verdicts.deficit_flatness(records["deficits"], reading)
        for seed, part in tables.reading_rows(records["deficits"], reading).groupby("seed"):
            expected = tables.profile_flatness(tables.deficits(part))["std of deficits (pp)"]
            assert flatness.loc[seed, expected.index].tolist() == pytest.approx(expected.tolist(), abs=1e-9)
    t3 = report.table3(records["selections"])
    deltas = t3[t3["role"] != "fixed"]
    picks = verdicts.search_effects(records["selections"]).mean()
    assert picks.tolist() == pytest.approx(deltas["delta wrt fixed (pp)"].tolist(), abs=1e-9)


# --------------------------------------------------------------------------------------------- per reading
def profile_records() -> pd.DataFrame:
    deficits = deficit_records()
    return deficits.assign(accuracy=deficits["gross accuracy"])[
        ["seed", "alpha", "reading", "config", "name", "macs", "accuracy"]]


def test_reading_rows_keep_alpha_0_in_both_readings() -> None:
    deficits = deficit_records()
    normalized = tables.reading_rows(deficits, "normalized")
    assert set(zip(normalized["alpha"], normalized["reading"])) == {
        (0.0, "literal"), (4.0, "normalized"), (8.0, "normalized")}
    assert tables.readings(deficits) == ["literal", "normalized"]
    old = deficit_records(with_reading=False)
    assert tables.reading_rows(old, "literal") is old and tables.readings(old) == ["literal"]


def test_table2_at_reading_takes_gross_from_that_readings_network() -> None:
    deficits = deficit_records()
    out = tables.table2_at_reading(table2_records(), deficits, "normalized", alpha=4.0)
    assert out["gross accuracy"][out["network"] == "full"].isna().all()
    for seed, size, gross in zip(out["seed"], out["group size"], out["gross accuracy"]):
        if math.isnan(size):
            continue
        k = SIZES.index(int(size))
        if seed in FLATNESS["normalized"]:             # deficit -s, s, -s, s with s = std of alpha 4
            std = FLATNESS["normalized"][seed][4.0]
            assert gross == pytest.approx(0.80 + 0.01 * k + alternating(std)[k] / 100)
        else:
            assert math.isnan(gross)                   # seed 2 has no GroSS record
    assert (out.drop(columns="gross accuracy").equals(table2_records().drop(columns="gross accuracy")))


def test_by_reading_builds_tables_2_3_and_figure_1_per_reading() -> None:
    records = {**synthetic_records(), "profiles": profile_records()}
    by_reading = report.selections_of(records, "normalized")
    assert by_reading is None                            # only one reading searched: Table 3 for it alone
    normalized_picks = selection_records().assign(reading="normalized", **{"own accuracy": 0.5})
    records["selections_by_reading"] = pd.concat([selection_records().assign(reading="literal"),
                                                  normalized_picks], ignore_index=True)
    views = report.by_reading(records)
    assert list(views) == ["literal", "normalized"]
    normalized = views["normalized"]
    assert sorted(normalized["deficits"]["alpha"].unique()) == [0.0, 4.0, 8.0]
    at_4 = normalized["deficits"][normalized["deficits"]["alpha"] == 4.0].sort_values("group size")
    # mean over seeds 0 (std 1) and 1 (std 0) of the alternating deficits: -0.5, 0.5, -0.5, 0.5
    assert at_4["deficit (pp)"].tolist() == pytest.approx([-0.5, 0.5, -0.5, 0.5])
    assert normalized["flatness"].loc[4.0, "std of deficits (pp)"] == pytest.approx(0.5)
    assert normalized["flatness"].loc[8.0, "std of deficits (pp)"] == pytest.approx(2.0)
    picks = normalized["table3"][normalized["table3"]["role"] != "fixed"]
    assert picks["own (%)"].tolist() == pytest.approx([50.0] * len(picks))
    literal_picks = views["literal"]["table3"]
    assert literal_picks.equals(report.table3(selection_records().assign(reading="literal")))
    assert set(normalized["profiles"]["alpha"]) == {0.0, 4.0, 8.0}


def test_per_reading_draws_one_panel_per_reading() -> None:
    records = {**synthetic_records(), "profiles": profile_records()}
    views = report.by_reading(records)
    fig = plots.per_reading(plots.plot_deficits, {r: v["deficits"] for r, v in views.items()})
    titles = [ax.get_title() for ax in fig.axes]
    assert len(titles) == 2 and "literal" in titles[0] and "normalized" in titles[1]
    fig = plots.per_reading(plots.plot_accuracy_all_configs, {r: v["profiles"] for r, v in views.items()})
    assert [len(ax.collections) for ax in fig.axes] == [3, 3]     # one scatter per alpha in each panel


def test_stack_by_reading_puts_the_readings_outside() -> None:
    views = report.by_reading({**synthetic_records(), "profiles": profile_records()})
    stacked = report.stack_by_reading(views, "flatness")
    assert stacked.index.names == ["reading", "alpha"]
    assert stacked.loc[("normalized", 4.0), "std of deficits (pp)"] == pytest.approx(0.5)
    assert list(report.stack_by_reading(views, "table3").index.get_level_values(0).unique()) == ["literal"]
    with pytest.raises(ValueError, match="no reading"):
        report.stack_by_reading({"literal": {"table3": None}}, "table3")
