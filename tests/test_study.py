"""Tests for grosslib.study: the configurations it ranks, its files, and the study preset end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from gross_helpers import random_gross, write_fashion_idx

import grosslib.experiment as experiment
from grosslib import presets, study
from grosslib.data import load_dataset
from grosslib.macs import config_macs
from grosslib.models import build_papernet, search_space

FIXED = [(1, 1, 1), (4, 4, 4), (16, 16, 16), (32, 32, 32)]


@pytest.fixture(scope="module")
def gross_net():
    return random_gross(build_papernet(1, 10, seed=0))


# --------------------------------------------------------------------------------------------- choices
def test_ranking_configs_spread_over_macs(gross_net) -> None:
    chosen = study.ranking_configs(gross_net, 12, include=FIXED)
    macs = {c: config_macs(gross_net, c) for c in search_space(gross_net)}
    assert len(chosen) == len(set(chosen)) == 12
    assert set(FIXED) <= set(chosen)
    assert min(macs.values()) == macs[chosen[0]] and max(macs.values()) == macs[chosen[-1]]
    values = [macs[c] for c in chosen]
    assert values == sorted(values)
    # 12 points over the range: an even spread leaves gaps of 1/11 of it; greedy farthest-point stays close
    assert max(np.diff(values)) < 0.2 * (values[-1] - values[0])
    assert study.ranking_configs(gross_net, 12, include=FIXED) == chosen          # deterministic
    assert len(study.ranking_configs(gross_net, 5)) == 5


def test_ranking_configs_rejects_bad_requests(gross_net) -> None:
    with pytest.raises(ValueError, match="not in the network's search space"):
        study.ranking_configs(gross_net, 12, include=[(3, 3, 3)])
    with pytest.raises(ValueError, match="search space of 252"):
        study.ranking_configs(gross_net, 253)


def test_plan_validation_and_round_trip() -> None:
    plan = study.StudyPlan()
    assert study.StudyPlan.from_dict(json.loads(json.dumps(plan.to_dict()))) == plan
    with pytest.raises(ValueError, match="search_alpha"):
        study.StudyPlan(alphas=(0.0, 8.0))
    with pytest.raises(ValueError, match="budget group sizes"):
        study.StudyPlan(budget_group_sizes=(2,))
    with pytest.raises(ValueError, match="top_k"):
        study.StudyPlan(top_k=0)


def test_parse_config() -> None:
    assert study.parse_config("2-32-64") == (2, 32, 64)
    assert study.parse_config([4, 4]) == (4, 4)
    with pytest.raises(ValueError, match="not a configuration name"):
        study.parse_config("2-x")


# --------------------------------------------------------------------------------------------- files
def _records() -> dict[str, pd.DataFrame]:
    tables = {name: pd.DataFrame({"seed": [0], "name": ["1-1-1"]}) for name in study.RECORD_TABLES}
    tables["table2"] = pd.DataFrame({"seed": [0, 0], "network": ["full", "fixed 4"],
                                     "config": [None, (4, 4, 4)], "accuracy": [0.9, 0.8]})
    tables["selections"] = pd.DataFrame({"seed": [0], "budget config": [(4, 4, 4)], "name": ["2-4-8"]})
    return tables


def test_records_round_trip(tmp_path: Path) -> None:
    path = study.write_records(tmp_path / "r" / "records.json", _records(), study={"dataset": "digits"})
    records, settings = study.read_records(path)
    assert settings == {"dataset": "digits"}
    assert records["table2"]["config"].tolist() == [None, (4, 4, 4)]
    assert records["table2"]["accuracy"].tolist() == [0.9, 0.8]
    assert records["selections"]["budget config"].tolist() == [(4, 4, 4)]


def test_records_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="grosslib.study collect"):
        study.read_records(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="bad.json is not a records file"):
        study.read_records(bad)
    partial = _records()
    del partial["ranking"]
    study.write_records(tmp_path / "partial.json", partial, study={})
    with pytest.raises(ValueError, match=r"lacks the tables \['ranking'\]"):
        study.read_records(tmp_path / "partial.json")


def test_study_file_ties_a_directory_to_its_settings(tmp_path: Path) -> None:
    plan = study.StudyPlan()
    with pytest.raises(FileNotFoundError, match="not a study directory"):
        study.read_study_file(tmp_path)
    first = study.write_study_file(tmp_path, dataset="digits", preset="tiny", seeds=[0], plan=plan)
    assert first["schedule"]["full"]["epochs"] == presets.TINY["full"].epochs
    more = study.write_study_file(tmp_path, dataset="digits", preset="tiny", seeds=[2], plan=plan)
    assert more["seeds"] == [0, 2]
    with pytest.raises(ValueError, match="preset='tiny'"):
        study.write_study_file(tmp_path, dataset="digits", preset="quick", seeds=[0], plan=plan)
    with pytest.raises(ValueError, match="data_limit"):
        study.write_study_file(tmp_path, dataset="digits", preset="tiny", seeds=[0], plan=plan, data_limit=8)
    (tmp_path / study.STUDY_FILE).write_text("{")
    with pytest.raises(ValueError, match="not valid JSON"):
        study.read_study_file(tmp_path)


def test_published_records_are_read_without_training(tmp_path: Path) -> None:
    study.write_records(tmp_path / study.RECORDS_FILE, _records(), study={"dataset": "fashion-mnist"})
    records, settings = study.load_or_collect(tmp_path, dataset="digits", preset="tiny", seeds=[0])
    assert settings["dataset"] == "fashion-mnist" and set(records) == set(study.RECORD_TABLES)
    assert not (tmp_path / study.STUDY_FILE).exists()
    with pytest.raises(FileNotFoundError, match="records.json not found"):
        study.load_or_collect(tmp_path / "empty", dataset="digits", preset="tiny", seeds=[0], adopt=False)
    assert not (tmp_path / "empty").exists()


# --------------------------------------------------------------------------------------------- end to end
@pytest.fixture
def tiny_fashion(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Experiments load 160 + 40 synthetic Fashion-MNIST images from IDX files (the real loader).

    The BTD (with the preset's degeneracy guard) is capped at 30 steps: the preset's tol 1e-6 takes
    minutes on a barely trained network, and the BTD has tests of its own; every training stage keeps
    the study preset's schedule.
    """
    root = tmp_path / "fashion"
    write_fashion_idx(root, n_train=160, n_test=40)
    capped = {**presets.PRESET_BTD_OPTIONS["study"], "max_iter": 30}
    monkeypatch.setitem(presets.PRESET_BTD_OPTIONS, "study", capped)

    def load(name: str, limit: int | None = None):
        assert name == "fashion-mnist"
        return load_dataset(name, root=root, download=False, verify=False, limit=limit)

    monkeypatch.setattr(experiment, "load_dataset", load)


def _mtimes(folder: Path) -> dict[str, float]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*.pt")}


@pytest.mark.slow
def test_study_preset_end_to_end_one_seed(tmp_path: Path, tiny_fashion: None) -> None:
    """The study preset's whole protocol on a tiny Fashion-MNIST subset; a second run trains nothing."""
    run_dir = tmp_path / "study"
    records = study.run_study(run_dir, dataset="fashion-mnist", preset="study", seeds=[0], threads=1)
    settings = study.read_study_file(run_dir)
    assert settings["schedule"]["full"]["epochs"] == presets.STUDY["full"].epochs == 5
    assert "Fashion-MNIST" in settings["schedule_note"]
    assert len(records["table2"]) == 5 and len(records["deficits"]) == 3 * 4
    assert records["profiles"].groupby("alpha").size().to_dict() == {0.0: 252, 4.0: 252, 8.0: 252}
    assert len(records["search"]) == 252
    assert records["selections"].groupby("budget").size().to_dict() == {4: 2, 16: 2}
    assert (records["selections"]["macs"] <= records["selections"]["budget macs"]).all()
    assert records["ranking"]["name"].nunique() == 12
    assert {"1-1-1", "4-4-4", "16-16-16", "32-32-32"} <= set(records["ranking"]["name"])
    for column in ("gross accuracy", "own accuracy"):
        assert records["ranking"][column].between(0.0, 1.0).all()
    seed_dir = run_dir / "seed0"
    trained_alone = json.loads((seed_dir / study.SEED_DONE_FILE).read_text())["configs_trained_alone"]
    assert {p.name for p in seed_dir.glob("fixed_*")} == {f"fixed_{n}" for n in trained_alone}
    assert all((p / "finetune" / "done.json").is_file() for p in seed_dir.glob("fixed_*"))
    written, _ = study.read_records(run_dir / study.RECORDS_FILE)
    pd.testing.assert_frame_equal(written["ranking"], records["ranking"], check_dtype=False)

    # Everything is cached: a second run writes no checkpoint; a removed stage alone is trained again.
    before = _mtimes(seed_dir)
    first_call = json.loads((seed_dir / study.SEED_DONE_FILE).read_text())
    study.run_study(run_dir, dataset="fashion-mnist", preset="study", seeds=[0], threads=1, collect=False)
    assert _mtimes(seed_dir) == before
    second_call = json.loads((seed_dir / study.SEED_DONE_FILE).read_text())  # cached: keeps the total
    expected_total = first_call["wall_seconds"] + second_call["call_seconds"]
    assert second_call["wall_seconds"] == pytest.approx(expected_total)
    assert second_call["first_finished_at"] == first_call["first_finished_at"]
    victim = seed_dir / "fixed_4-4-4"
    for path in sorted(victim.rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    victim.rmdir()
    study.run_study(run_dir, dataset="fashion-mnist", preset="study", seeds=[0], threads=1, collect=False)
    after = _mtimes(seed_dir)
    changed = {k for k in after if after[k] != before.get(k)}
    assert changed and all(k.startswith("fixed_4-4-4") for k in changed)


@pytest.mark.slow
def test_parallel_seeds_report_the_failing_seed(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match=r"seed 0 \(exit 1; see .*seed0/study.log\).*seed 1"):
        study.run_study(tmp_path, dataset="no-such-dataset", preset="tiny", seeds=[0, 1], jobs=2)
    assert "unknown dataset 'no-such-dataset'" in (tmp_path / "seed0" / "study.log").read_text()


def test_cached_decomposition_is_tied_to_its_btd_options(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    def make() -> experiment.Experiment:
        return experiment.Experiment("digits", "tiny", run_dir=tmp_path, data_limit=64, progress=False)

    first = make().decomposed()
    options_file = tmp_path / "seed0" / "decomposed.json"
    assert json.loads(options_file.read_text()) == presets.PRESET_BTD_OPTIONS["tiny"]
    again = make().decomposed()
    pairs = zip(first.parameters(), again.parameters(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)        # read back from decomposed.pt
    guarded = {**presets.PRESET_BTD_OPTIONS["tiny"], "max_block_norm": 2.0}
    monkeypatch.setitem(presets.PRESET_BTD_OPTIONS, "tiny", guarded)
    with pytest.raises(ValueError, match=r"decomposed with BTD options .* delete it"):
        make().decomposed()
