"""Verdicts on the paper's claims: signed per-seed effects, 95% intervals, holds/contradicted/inconclusive.

Every claim is reduced to one number per seed, an *effect* whose positive values support the paper
(:data:`STATISTICS` states each one). The effects of the seeds give an estimate (their mean) and an
interval (:func:`effect_interval`: Student-t or percentile bootstrap), and the interval a verdict
(:func:`verdict`): ``holds`` when it lies above 0, ``contradicted`` when below, else ``inconclusive``.

Like :mod:`grosslib.report`, everything here is a pure function of the record tables of a study
(:func:`grosslib.study.read_records`), so :func:`claims_json` can be recomputed from ``records.json``
alone. Accuracies in the records are fractions; effects on accuracies are in percentage points (pp).
The records are used as given: pass ``report.drop_failed_runs(records)`` for the report's treatment
of failed runs.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from . import tables
from .report import CLAIMS, kendall_tau
from .study import parse_config

__all__ = ["CLAIM_IDS", "CLAIM_TEXT", "METHODS", "READINGS", "STATISTICS", "TAU_STATISTIC",
           "ascending_effect", "ascending_effects", "below_full_effect", "claims_frame", "claims_json",
           "deficit_flatness", "effect_interval", "growth_effect", "ranking_tau", "readings", "report_claims",
           "search_effect", "search_effects", "temperature_effect", "temperature_effects", "verdict"]

METHODS: tuple[str, ...] = ("t", "bootstrap")
#: The two readings of equation 8 (docs/method.md); alpha 0 is the uniform distribution under both.
READINGS: tuple[str, ...] = tables.READINGS
CLAIM_IDS: tuple[str, ...] = ("1a", "1b", "2", "3", "4")

#: Each claim as tested here (the wording of :data:`grosslib.report.CLAIMS`; claim 1 split in two, claim
#: 3 reduced to the flatness its effect tests).
CLAIM_TEXT: dict[str, str] = {
    "1a": CLAIMS[1].split(" and stays ")[0],
    "1b": "the fixed configurations stay " + CLAIMS[1].split(" and stays ")[-1],
    "2": CLAIMS[2],
    "3": CLAIMS[3].split(";")[0],
    "4": CLAIMS[4],
}

#: The statement of each test (claim id -> its per-seed effect, unit included): > 0 supports the paper.
STATISTICS: dict[str, str] = {
    "1a": "Per seed, the smallest step in test accuracy between consecutive fixed group sizes (sorted "
          "ascending: acc[next] - acc[this], minimum over the steps), in pp.",
    "1b": "Per seed, the full network's test accuracy minus the best fixed configuration's, in pp.",
    "2": "Per seed, the mean over the search's picks (every budget and rank) of the pick's test accuracy "
         "trained on its own minus its budget's fixed configuration's, in pp.",
    "3": "Per seed, the smallest over the other temperatures a of flatness(a) - flatness(4), where "
         "flatness is the std (ddof 0) over the fixed configurations of the deficit (GroSS minus trained "
         "alone), in pp.",
    "4": "Per seed, the mean over budgets of the share of ascending configurations among the top-n on the "
         "search split within the budget minus their share among all configurations within it, in "
         "percentage points of share.",
}

#: What the Kendall's tau entry of :func:`claims_json` is (not a claim of the paper).
TAU_STATISTIC = ("Per seed, Kendall's tau-b between GroSS's test accuracy and the test accuracy trained on "
                 "its own over the ranked configurations (1: same order).")


# --------------------------------------------------------------------------------------------- intervals
def effect_interval(effects: Sequence[float] | np.ndarray | pd.Series, method: str = "t",
                    confidence: float = 0.95, n_boot: int = 10_000, seed: int = 0) -> dict[str, Any]:
    """Mean of the per-seed ``effects`` (NaNs dropped) and a ``confidence`` interval for it.

    ``method``: ``"t"`` (Student-t interval of the mean, ``m +- t_{(1+c)/2, n-1} s / sqrt(n)``; zero
    variance gives ``[m, m]``) or ``"bootstrap"`` (percentile bootstrap of the mean over ``n_boot``
    resamples drawn by ``numpy.random.default_rng(seed)``). With fewer than 2 effects the interval is
    ``[nan, nan]``. Returns ``{"estimate", "ci95", "n", "method"}`` with plain floats.

    >>> r = effect_interval([1.0, 2.0, 3.0])
    >>> r["estimate"], [round(b, 3) for b in r["ci95"]], r["n"]
    (2.0, [-0.484, 4.484], 3)
    >>> effect_interval([1.0, float("nan")])["ci95"]
    [nan, nan]
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(map(repr, METHODS))}, got {method!r}")
    if not 0.0 < float(confidence) < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence!r}")
    values = np.asarray(effects, dtype=float)
    if values.ndim != 1:
        raise ValueError(f"effects must be 1-D, got shape {values.shape}")
    values = values[~np.isnan(values)]
    n = int(values.size)
    estimate = float(values.mean()) if n else math.nan
    lo = hi = math.nan
    if n >= 2:
        if method == "t":
            s = float(values.std(ddof=1))
            half = 0.0 if s == 0.0 else float(stats.t.ppf((1.0 + confidence) / 2.0, n - 1)) * s / math.sqrt(n)
            lo, hi = estimate - half, estimate + half
        else:
            if int(n_boot) < 1:
                raise ValueError(f"n_boot must be a positive integer, got {n_boot!r}")
            rng = np.random.default_rng(seed)
            means = values[rng.integers(0, n, size=(int(n_boot), n))].mean(axis=1)
            lo, hi = (float(q) for q in np.quantile(means, [(1.0 - confidence) / 2.0,
                                                            (1.0 + confidence) / 2.0]))
    return {"estimate": estimate, "ci95": [float(lo), float(hi)], "n": n, "method": method}


def verdict(ci95: Sequence[float]) -> str:
    """``"holds"`` when the interval lies above 0, ``"contradicted"`` below, else ``"inconclusive"``."""
    lo, hi = (float(b) for b in ci95)
    if math.isnan(lo) or math.isnan(hi):
        return "inconclusive"
    if lo > 0:
        return "holds"
    if hi < 0:
        return "contradicted"
    return "inconclusive"


# --------------------------------------------------------------------------------------------- claim 1
def _fixed_and_full(table2: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series]:
    fixed = table2[table2["network"] != "full"]
    full = table2[table2["network"] == "full"].groupby("seed")["accuracy"].mean()
    return fixed, full


def growth_effect(table2: pd.DataFrame) -> pd.Series:
    """Claim 1a per seed: min over consecutive fixed group sizes of ``100 (acc[next] - acc[this])`` (pp).

    From ``table2``'s fixed rows (``network != "full"``): ``seed``, ``group size``, ``accuracy``. NaN for
    a seed with fewer than two fixed sizes.
    """
    fixed, _ = _fixed_and_full(table2)
    out = {}
    for seed, part in fixed.groupby("seed", sort=True):
        acc = part.groupby("group size")["accuracy"].mean().sort_index().to_numpy(dtype=float)
        out[seed] = float(100.0 * np.diff(acc).min()) if acc.size >= 2 else math.nan
    return pd.Series(out, dtype=float, name="1a").rename_axis("seed")


def below_full_effect(table2: pd.DataFrame) -> pd.Series:
    """Claim 1b per seed: ``100 (full accuracy - best fixed accuracy)`` (pp), from ``table2``.

    Uses ``seed``, ``network`` (``"full"`` or a fixed one) and ``accuracy``.
    """
    fixed, full = _fixed_and_full(table2)
    best = fixed.groupby("seed")["accuracy"].max()
    seeds = sorted(set(table2["seed"]))
    effect = 100.0 * (full.reindex(seeds) - best.reindex(seeds))
    return effect.astype(float).rename("1b").rename_axis("seed")


# --------------------------------------------------------------------------------------------- claim 2
def search_effects(selections: pd.DataFrame) -> pd.DataFrame:
    """Claim 2 per seed and pick: ``100 (own accuracy - budget own accuracy)`` (pp).

    Rows: seeds; columns ``"fixed-<budget> search #<rank>"`` (budgets descending, the paper's order,
    then ranks). From ``selections``: ``seed``, ``budget``, ``rank``, ``own accuracy``, ``budget own
    accuracy``.
    """
    frame = selections.assign(effect=100.0 * (selections["own accuracy"] - selections["budget own accuracy"]))
    wide = frame.pivot_table(index="seed", columns=["budget", "rank"], values="effect", aggfunc="mean")
    order = sorted(wide.columns, key=lambda c: (-int(c[0]), int(c[1])))
    wide = wide[order]
    wide.columns = [f"fixed-{int(b)} search #{int(r)}" for b, r in order]
    return wide.astype(float).rename_axis("seed").rename_axis(None, axis=1)


def search_effect(selections: pd.DataFrame) -> pd.Series:
    """Claim 2's main effect per seed: the mean of :func:`search_effects` over the picks (pp)."""
    return search_effects(selections).mean(axis=1).rename("2")


# --------------------------------------------------------------------------------------------- claim 3
#: the readings of eq. 8 present in a deficits table (:func:`grosslib.tables.readings`)
readings = tables.readings
_reading_rows = tables.reading_rows


def deficit_flatness(deficits: pd.DataFrame, reading: str = "literal") -> pd.DataFrame:
    """Per seed (rows) and alpha (columns): std (ddof 0) of the deficits over the fixed configurations (pp).

    Per seed the quantity of :func:`grosslib.tables.profile_flatness`' ``std of deficits (pp)``: the
    deficit (``deficit (pp)``) per (``seed``, ``alpha``, ``group size``), duplicates averaged, then its
    std over the group sizes. With a ``reading`` column only that reading's rows and alpha 0's count.
    """
    rows = _reading_rows(deficits, reading)
    per_config = rows.groupby(["seed", "alpha", "group size"])["deficit (pp)"].mean()
    flat = per_config.groupby(["seed", "alpha"]).agg(lambda v: float(np.std(v.to_numpy(dtype=float))))
    wide = flat.unstack("alpha")
    wide.columns = [float(a) for a in wide.columns]
    return wide.astype(float).rename_axis("seed")


def temperature_effects(deficits: pd.DataFrame, reference: float = 4.0) -> dict[str, pd.DataFrame]:
    """Claim 3 per reading: per seed (rows) and other alpha ``a`` (columns), flatness(a) - flatness(4) (pp).

    ``flatness``: :func:`deficit_flatness`. A seed without the ``reference`` alpha gets NaN.
    """
    out = {}
    for reading in readings(deficits):
        flat = deficit_flatness(deficits, reading)
        ref = flat[reference] if reference in flat.columns else pd.Series(math.nan, index=flat.index)
        others = [a for a in flat.columns if a != reference]
        out[reading] = flat[others].sub(ref, axis=0)
    return out


def temperature_effect(deficits: pd.DataFrame, reference: float = 4.0) -> dict[str, pd.Series]:
    """Claim 3's main effect per reading: per seed, the minimum of :func:`temperature_effects` (pp).

    NaN for a seed missing any temperature (it cannot show alpha 4 flattest).
    """
    return {reading: effects.min(axis=1, skipna=False).astype(float).rename("3")
            for reading, effects in temperature_effects(deficits, reference).items()}


# --------------------------------------------------------------------------------------------- claim 4
def ascending_effects(search: pd.DataFrame, selections: pd.DataFrame, top_n: int = 10) -> pd.DataFrame:
    """Claim 4 per seed (rows) and budget (columns, descending): top-n share minus base share (pp of share).

    As :func:`grosslib.report.ascending_preference`, per seed: within a budget (``search`` rows with
    ``macs <= budget macs`` of ``selections``), the share of ascending configurations
    (:func:`grosslib.tables.is_ascending` of ``name``) among the seed's ``top_n`` by ``accuracy`` (ties:
    fewer MACs first) minus among all of the seed's configurations within the budget, times 100.
    """
    limits = selections.drop_duplicates("budget").set_index("budget")["budget macs"]
    ascending = search["name"].map(lambda n: tables.is_ascending(parse_config(n))).astype(float)
    frame = search.assign(_ascending=ascending)
    out = {}
    for budget in sorted(limits.index, reverse=True):
        fits = frame[frame["macs"] <= int(limits[budget])]
        top = (fits.sort_values(["seed", "accuracy", "macs"], ascending=[True, False, True])
               .groupby("seed", sort=True).head(top_n))
        top_share = top.groupby("seed")["_ascending"].mean()
        base_share = fits.groupby("seed")["_ascending"].mean()
        out[int(budget)] = 100.0 * (top_share - base_share)
    seeds = sorted(set(search["seed"]))
    return pd.DataFrame(out, index=pd.Index(seeds, name="seed"), dtype=float)


def ascending_effect(search: pd.DataFrame, selections: pd.DataFrame, top_n: int = 10) -> pd.Series:
    """Claim 4's main effect per seed: the mean of :func:`ascending_effects` over budgets (pp of share)."""
    return ascending_effects(search, selections, top_n).mean(axis=1).rename("4")


# --------------------------------------------------------------------------------------------- ranking
def ranking_tau(ranking: pd.DataFrame) -> pd.Series:
    """Per seed: :func:`grosslib.report.kendall_tau` of ``gross accuracy`` vs ``own accuracy`` (< 2: NaN)."""
    out = {}
    for seed, part in ranking.groupby("seed", sort=True):
        out[seed] = (kendall_tau(part["gross accuracy"], part["own accuracy"]) if len(part) >= 2
                     else math.nan)
    return pd.Series(out, dtype=float, name="kendall tau").rename_axis("seed")


# --------------------------------------------------------------------------------------------- summary
def _seeds(records: Mapping[str, pd.DataFrame]) -> list[int]:
    frame = records.get("seeds")
    if frame is not None and len(frame) and "seed" in frame:
        return sorted({int(s) for s in frame["seed"]})
    return sorted({int(s) for t in records.values() if "seed" in t for s in t["seed"]})


def _entry(claim_id: str, reading: str | None, effects: pd.Series, method: str) -> dict[str, Any]:
    interval = effect_interval(effects.to_numpy(dtype=float), method=method)
    return {"id": claim_id, "reading": reading, "claim": CLAIM_TEXT[claim_id],
            "statistic": STATISTICS[claim_id], "estimate": interval["estimate"], "ci95": interval["ci95"],
            "n": interval["n"], "verdict": verdict(interval["ci95"])}


def claims_json(records: Mapping[str, pd.DataFrame], design: dict, schedule: dict, method: str = "t", *,
                top_n: int = 10) -> dict[str, Any]:
    """The verdict on every claim as a JSON-serialisable dict (plain floats; NaN as ``float('nan')``).

    ``{"seeds", "design", "schedule", "interval_method", "claims": [{"id", "reading", "claim",
    "statistic", "estimate", "ci95", "n", "verdict"}, ...], "kendall_tau": {"per_seed", "mean",
    "ci95"}}``. Claims 1a, 1b, 2, 3 (once per reading of :func:`readings`) and 4; ``reading`` is null
    except for claim 3. ``per_seed`` follows ``seeds`` (NaN for a seed without ranking records).
    ``design`` and ``schedule`` are passed through; ``top_n`` is claim 4's.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(map(repr, METHODS))}, got {method!r}")
    claims = [_entry("1a", None, growth_effect(records["table2"]), method),
              _entry("1b", None, below_full_effect(records["table2"]), method),
              _entry("2", None, search_effect(records["selections"]), method)]
    claims += [_entry("3", reading, effects, method)
               for reading, effects in temperature_effect(records["deficits"]).items()]
    ascending = ascending_effect(records["search"], records["selections"], top_n)
    claims.append(_entry("4", None, ascending, method))
    seeds = _seeds(records)
    taus = ranking_tau(records["ranking"])
    per_seed = [float(taus.get(s, math.nan)) for s in seeds]
    interval = effect_interval(taus.to_numpy(dtype=float), method=method)
    return {"seeds": seeds, "design": design, "schedule": schedule, "interval_method": method,
            "claims": claims,
            "kendall_tau": {"per_seed": per_seed, "mean": interval["estimate"], "ci95": interval["ci95"]}}


def _bound(value: float) -> str:
    return "nan" if not math.isfinite(float(value)) else f"{float(value):.3f}"


def claims_frame(claims: Mapping[str, Any]) -> pd.DataFrame:
    """:func:`claims_json`'s claims as a table: id, reading, statistic, estimate, ci95 (text), n, verdict."""
    rows = [{"id": c["id"], "reading": c["reading"], "statistic": c["statistic"], "estimate": c["estimate"],
             "ci95": f"[{_bound(c['ci95'][0])}, {_bound(c['ci95'][1])}]", "n": c["n"],
             "verdict": c["verdict"]}
            for c in claims["claims"]]
    frame = pd.DataFrame(rows, columns=["id", "reading", "statistic", "estimate", "ci95", "n", "verdict"])
    frame["reading"] = pd.Series([c["reading"] for c in claims["claims"]], index=frame.index, dtype=object)
    return frame


def report_claims(records: Mapping[str, pd.DataFrame], settings: Mapping[str, Any], method: str = "t", *,
                  top_n: int = 10) -> dict[str, Any]:
    """:func:`claims_json` with the design and schedule read from a study's ``settings`` (``study.json``
    or the settings stored in ``records.json``): what notebook 06 shows and ``claims.json`` holds."""
    plan = settings.get("plan") or {}
    design = {"design": plan.get("design", "per-seed"), "readings": list(plan.get("readings", ["literal"])),
              "alphas": list(plan.get("alphas", [0.0, 4.0, 8.0]))}
    schedule = {"stages": dict(settings.get("schedule") or {}), "note": settings.get("schedule_note", "")}
    return claims_json(records, design, schedule, method=method, top_n=top_n)

