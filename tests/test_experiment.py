"""Tests for grosslib.experiment's decomposition cache (tiny preset, 64 digits images, CPU)."""
from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import grosslib.experiment as experiment
from grosslib.btd import ALGORITHM as BTD_ALGORITHM
from grosslib.experiment import Experiment, network_fingerprint
from grosslib.models import build_papernet
from grosslib.presets import get_preset


def make(run_dir: Path, preset: Any = "tiny") -> Experiment:
    return Experiment("digits", preset, run_dir=run_dir, device="cpu", data_limit=64, progress=False)


def state(net: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v for k, v in net.state_dict().items() if isinstance(v, torch.Tensor)}


@pytest.fixture(scope="module")
def decomposed_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.Tensor], str]:
    """A run directory with seed 0's full network trained and decomposed; its state and fingerprint."""
    run_dir = tmp_path_factory.mktemp("run")
    exp = make(run_dir)
    net = exp.decomposed()
    return run_dir, state(net), network_fingerprint(exp.full_network()[0])


@pytest.fixture
def run_dir(decomposed_run: tuple[Path, Any, str], tmp_path: Path) -> Path:
    """A private copy of the decomposed run (tests may change it)."""
    return Path(shutil.copytree(decomposed_run[0], tmp_path / "run"))


@pytest.fixture
def decompose_calls(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """The keyword arguments of every call of experiment.decompose (still called through)."""
    calls: list[dict[str, Any]] = []
    real = experiment.decompose

    def spy(net: nn.Module, **kwargs: Any) -> nn.Module:
        calls.append(kwargs)
        return real(net, **kwargs)

    monkeypatch.setattr(experiment, "decompose", spy)
    return calls


def test_network_fingerprint_tells_networks_apart() -> None:
    a, b = build_papernet(seed=0), build_papernet(seed=0)
    assert network_fingerprint(a) == network_fingerprint(b) and len(network_fingerprint(a)) == 64
    with torch.no_grad():
        b.fc2.bias[0] += 1e-6
    assert network_fingerprint(a) != network_fingerprint(b)
    assert network_fingerprint(build_papernet(seed=1)) != network_fingerprint(a)


def test_the_decomposition_records_its_options_and_network(decomposed_run: tuple[Path, Any, str]) -> None:
    run_dir, _, fingerprint = decomposed_run
    info = json.loads((run_dir / "seed0" / "decomposed.json").read_text())
    assert info == {"btd_options": dict(get_preset("tiny").btd_options), "btd_algorithm": BTD_ALGORITHM,
                    "network": fingerprint}
    assert (run_dir / "seed0" / "decomposed.pt").is_file()


def test_a_second_experiment_reads_the_cache(run_dir: Path, decomposed_run: tuple[Path, Any, str],
                                             decompose_calls: list[dict[str, Any]]) -> None:
    before = (run_dir / "seed0" / "decomposed.pt").read_bytes()
    exp = make(run_dir)
    net = exp.decomposed()
    assert decompose_calls == [{"max_iter": 0}]                 # only the skeleton: no BTD was run
    expected = decomposed_run[1]
    got = state(net)
    assert got.keys() == expected.keys() and all(torch.equal(got[k], expected[k]) for k in got)
    again = exp.decomposed()                                    # read once per experiment, fresh copies
    assert again is not net and len(decompose_calls) == 1
    assert (run_dir / "seed0" / "decomposed.pt").read_bytes() == before


def _replace_full_weights(run_dir: Path) -> None:
    """Overwrite the trained full network in seed0/full/checkpoint.pt (the finished run loads it)."""
    path = run_dir / "seed0" / "full" / "checkpoint.pt"
    saved = torch.load(path, map_location="cpu", weights_only=False)
    saved["model"] = {k: v + 0.01 if v.is_floating_point() else v for k, v in saved["model"].items()}
    torch.save(saved, path)


@pytest.mark.parametrize("how", ["checkpoint", "in_memory"])
def test_a_cache_from_another_network_is_refused(how: str, run_dir: Path,
                                                 decompose_calls: list[dict[str, Any]]) -> None:
    before = (run_dir / "seed0" / "decomposed.pt").read_bytes()
    exp = make(run_dir)
    if how == "checkpoint":
        _replace_full_weights(run_dir)
        assert network_fingerprint(exp.full_network()[0]) != json.loads(
            (run_dir / "seed0" / "decomposed.json").read_text())["network"]
    else:
        exp._full = build_papernet(exp.data.in_channels, exp.data.num_classes, seed=7).eval()
    with pytest.raises(ValueError, match="another network") as exc:
        exp.decomposed()
    assert "decomposed.pt" in str(exc.value)
    assert decompose_calls == []                                # refused before anything was decomposed
    assert (run_dir / "seed0" / "decomposed.pt").read_bytes() == before


def test_changed_btd_options_are_refused(run_dir: Path, decompose_calls: list[dict[str, Any]]) -> None:
    tiny = get_preset("tiny")
    options = {**tiny.btd_options, "max_iter": 3}
    exp = make(run_dir, dataclasses.replace(tiny, btd_options=options))
    assert exp.btd_options == options
    with pytest.raises(ValueError, match="BTD options") as exc:
        exp.decomposed()
    assert "'max_iter': 3" in str(exc.value) and "decomposed.pt" in str(exc.value)
    assert decompose_calls == []
    assert make(run_dir).decomposed() is not None               # the original options still read it
    assert decompose_calls == [{"max_iter": 0}]


def test_settings_are_the_preset_with_overrides(tmp_path: Path) -> None:
    exp = Experiment("digits", "tiny", run_dir=tmp_path, overrides={"full": {"epochs": 3}}, progress=False)
    assert exp.settings.stage("full").epochs == 3 and get_preset("tiny").stage("full").epochs == 1
    assert exp.config("full").seed == exp.seed == 0
    assert Experiment("digits", "tiny", seed=4, run_dir=tmp_path).config("finetune_gross").seed == 4
    with pytest.raises(ValueError, match="unknown stage"):
        Experiment("digits", "tiny", run_dir=tmp_path, overrides={"fulll": {"epochs": 3}})


def test_stages_from_another_seeds_network_share_its_decomposition(run_dir: Path,
                                                                   decompose_calls: list) -> None:
    """The paper's design: seed 1's stages start from seed 0's full network and decomposition."""
    own = make(run_dir)
    shared = Experiment("digits", "tiny", seed=1, network_seed=0, run_dir=run_dir, device="cpu",
                        data_limit=64, progress=False)
    assert shared.source_seed == 0 and shared.network_dir == run_dir / "seed0"
    assert shared.seed_dir == run_dir / "seed1_net0" and own.seed_dir == run_dir / "seed0"
    assert network_fingerprint(shared.full_network()[0]) == network_fingerprint(own.full_network()[0])
    assert all(torch.equal(a, b) for a, b in zip(state(shared.decomposed()).values(),
                                                 state(own.decomposed()).values()))
    # read from seed0/decomposed.pt (a max_iter=0 skeleton loads it), not decomposed again
    assert decompose_calls and all(call == {"max_iter": 0} for call in decompose_calls)
    assert not (run_dir / "seed1").exists()          # no network of its own was trained
    # its stages train with its own seed
    assert shared.config("finetune_gross").seed == 1 and own.config("finetune_gross").seed == 0


def test_gross_stage_names_per_reading() -> None:
    assert experiment.gross_stage_name(4.0) == "gross_alpha4"
    assert experiment.gross_stage_name(4.0, "normalized") == "gross_alpha4_normalized"
    assert experiment.gross_stage_name(0.0, "normalized") == "gross_alpha0"    # uniform in both readings
    with pytest.raises(ValueError, match="reading of eq. 8"):
        experiment.gross_stage_name(4.0, "scaled")
