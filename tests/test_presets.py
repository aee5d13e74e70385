"""Tests for grosslib.presets: the registry, frozen presets, overrides, and the paper's schedules."""
from __future__ import annotations

import dataclasses
import json

import pytest

from grosslib.presets import (
    FIXED_GROUP_SIZES,
    PRESETS,
    STAGES,
    Preset,
    check_overrides,
    get_preset,
    preset_names,
)
from grosslib.train import TrainConfig

DECOMPOSED_STAGES = [s for s in STAGES if s != "full"]


def test_registry_lists_every_preset() -> None:
    assert set(PRESETS) == {"paper", "quick", "intro", "study", "tiny"} == set(preset_names())
    assert all(isinstance(p, Preset) and p.name == name for name, p in PRESETS.items())
    assert get_preset(PRESETS["quick"]) is PRESETS["quick"]
    assert FIXED_GROUP_SIZES == (1, 4, 16, 32)
    with pytest.raises(TypeError):
        PRESETS["mine"] = PRESETS["tiny"]                      # type: ignore[index]


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_has_every_stage(name: str) -> None:
    preset = get_preset(name)
    assert tuple(preset.stages) == STAGES
    assert STAGES == ("full", "reconstruct_gross", "reconstruct_fixed", "finetune_gross", "finetune_fixed")
    for stage in STAGES:
        cfg = preset.stage(stage)
        assert isinstance(cfg, TrainConfig) and cfg.notes, (name, stage)
        assert cfg == preset.stages[stage]
    assert preset.replicates >= 1 and preset.dataset in ("digits", "fashion-mnist", "cifar10")
    # GroSS stages sample group sizes, fixed and full stages train one configuration
    assert all(preset.stage(s).alpha is not None for s in ("reconstruct_gross", "finetune_gross"))
    assert all(preset.stage(s).alpha is None for s in ("full", "reconstruct_fixed", "finetune_fixed"))


def test_a_preset_must_have_exactly_the_stages() -> None:
    stages = dict(PRESETS["tiny"].stages)
    with pytest.raises(ValueError, match=r"missing \['finetune_fixed'\]"):
        Preset("x", dataset="digits", replicates=1, btd_options={},
               stages={k: stages[k] for k in STAGES[:-1]})
    with pytest.raises(ValueError, match=r"unknown \['extra'\]"):
        Preset("x", dataset="digits", replicates=1, btd_options={},
               stages={**stages, "extra": stages["full"]})
    with pytest.raises(ValueError, match="replicates"):
        Preset("x", dataset="digits", replicates=0, btd_options={}, stages=stages)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_are_frozen_and_read_only(name: str) -> None:
    preset = get_preset(name)
    with pytest.raises(dataclasses.FrozenInstanceError):
        preset.replicates = 9                                  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        preset.stages = {}                                     # type: ignore[misc]
    with pytest.raises(TypeError):
        preset.stages["full"] = preset.stages["reconstruct_fixed"]  # type: ignore[index]
    with pytest.raises(TypeError):
        preset.btd_options["tol"] = 1.0                        # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        preset.stages["full"].epochs = 1                       # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        preset.notebook.n_samples = 1                          # type: ignore[misc]
    # a copy of the mappings given to the constructor: changing the caller's dict changes nothing
    options, stages = {"tol": 1e-3}, dict(preset.stages)
    made = Preset("copy", dataset="digits", replicates=1, btd_options=options, stages=stages)
    options["tol"], stages["full"] = 1.0, stages["finetune_fixed"]
    assert made.btd_options["tol"] == 1e-3 and made.stages["full"] == preset.stages["full"]


def test_overrides_return_new_configs_and_leave_the_registry_alone() -> None:
    paper = get_preset("paper")
    assert paper.stage("finetune_gross", alpha=8.0).alpha == 8.0
    assert paper.stage("finetune_gross").alpha == 4.0
    changed = paper.with_overrides({"full": {"epochs": 2}, "finetune_fixed": {"lr": 0.5}})
    assert changed.stage("full").epochs == 2 and changed.stage("finetune_fixed").lr == 0.5
    assert changed.stage("reconstruct_gross") == paper.stage("reconstruct_gross")
    assert paper.stage("full").epochs == 100 and get_preset("paper").stage("finetune_fixed").lr == 1e-3
    assert paper.with_overrides(None) is paper and paper.with_overrides({}) is paper
    assert changed.name == "paper" and changed.replicates == paper.replicates


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_to_dict_is_json_and_round_trips_the_stages(name: str) -> None:
    preset = get_preset(name)
    stored = json.loads(json.dumps(preset.to_dict()))
    assert stored["name"] == name and stored["dataset"] == preset.dataset
    assert stored["replicates"] == preset.replicates
    assert stored["btd_options"] == dict(preset.btd_options)
    assert stored["notebook"] == preset.notebook.to_dict() and stored["notes"] == preset.notes
    assert list(stored["stages"]) == list(STAGES)
    for stage, values in stored["stages"].items():
        assert TrainConfig.from_dict(values) == preset.stage(stage)
    rebuilt = Preset(stored["name"], dataset=stored["dataset"], replicates=stored["replicates"],
                     btd_options=stored["btd_options"], notes=stored["notes"],
                     data_limit=stored["data_limit"],
                     stages={s: TrainConfig.from_dict(v) for s, v in stored["stages"].items()},
                     notebook=dataclasses.replace(preset.notebook, **stored["notebook"]))
    assert rebuilt == preset


def _one_line(exc: pytest.ExceptionInfo[ValueError]) -> str:
    message = str(exc.value)
    assert "\n" not in message
    return message


def test_unknown_preset_stage_and_field_are_one_line_errors() -> None:
    with pytest.raises(ValueError) as exc:
        get_preset("nope")
    message = _one_line(exc)
    assert "unknown preset 'nope'" in message and all(name in message for name in PRESETS)
    with pytest.raises(ValueError) as exc:
        get_preset("paper").stage("nope")
    message = _one_line(exc)
    assert "unknown stage 'nope'" in message and all(stage in message for stage in STAGES)
    with pytest.raises(ValueError) as exc:
        get_preset("paper").stage("full", learning_rate=1.0)
    message = _one_line(exc)
    assert "learning_rate" in message and "lr" in message and "max_grad_norm" in message
    with pytest.raises(ValueError) as exc:
        get_preset("paper").with_overrides({"fine_tune": {"lr": 1.0}})
    message = _one_line(exc)
    assert "unknown stage 'fine_tune'" in message and all(stage in message for stage in STAGES)
    with pytest.raises(ValueError) as exc:
        check_overrides({"full": {"epoch": 3}})
    assert "epoch" in _one_line(exc) and "epochs" in str(exc.value)
    with pytest.raises(ValueError, match="dict"):
        check_overrides({"full": 3})                           # type: ignore[dict-item]
    check_overrides({"full": {"epochs": 3}, "finetune_gross": {"alpha": 0.0}})   # valid: no error


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_gradient_clipping_is_declared_where_it_applies(name: str) -> None:
    preset = get_preset(name)
    for stage in DECOMPOSED_STAGES:
        cfg = preset.stage(stage)
        assert cfg.max_grad_norm == 1.0, (name, stage)
        assert "clipped" in cfg.notes.lower() and "not in the paper" in cfg.notes, (name, stage)
    full = preset.stage("full")
    assert full.max_grad_norm is None
    assert "clipped" not in full.notes.lower()


def test_paper_preset_keeps_the_papers_schedules() -> None:
    paper = get_preset("paper")
    schedule = {s: (paper.stage(s).epochs, paper.stage(s).lr, paper.stage(s).milestones) for s in STAGES}
    assert schedule == {"full": (100, 0.1, (50, 75)), "reconstruct_gross": (30, 1e-4, (20,)),
                        "reconstruct_fixed": (30, 1e-2, (20,)), "finetune_gross": (150, 1e-4, (80, 120)),
                        "finetune_fixed": (100, 1e-3, (80,))}
    assert paper.replicates == 5 and paper.dataset == "cifar10"
    assert all(c.momentum == 0.9 and c.gamma == 0.1 and c.batch_size == 128 for c in paper.stages.values())
    assert paper.stage("reconstruct_gross").alpha == 4.0 and paper.stage("finetune_gross").alpha == 4.0
    assert paper.btd_options["tol"] == 1e-6


def test_study_preset_keeps_the_papers_ratios() -> None:
    study = get_preset("study")
    assert (study.stage("finetune_gross").epochs, study.stage("finetune_fixed").epochs) == (3, 2)
    assert study.stage("reconstruct_gross").epochs == study.stage("reconstruct_fixed").epochs
    assert study.stage("reconstruct_gross").lr == study.stage("reconstruct_fixed").lr
    assert all(c.batch_size == 128 for c in study.stages.values())
    assert study.stage("finetune_fixed").lr == pytest.approx(10 * study.stage("finetune_gross").lr)
