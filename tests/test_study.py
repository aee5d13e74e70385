"""Tests for grosslib.study: the configurations it ranks, its files, its command line (bad inputs,
signals) and the study preset end to end."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import MappingProxyType

import numpy as np
import pandas as pd
import pytest
import torch
from gross_helpers import random_gross, write_fashion_idx

import grosslib.experiment as experiment
from grosslib import presets, study
from grosslib.btd import ALGORITHM as BTD_ALGORITHM
from grosslib.data import load_dataset
from grosslib.macs import config_macs
from grosslib.models import build_papernet, search_space
from grosslib.presets import preset_names
from grosslib.study import __main__ as cli

FIXED = [(1, 1, 1), (4, 4, 4), (16, 16, 16), (32, 32, 32)]
REPO = Path(__file__).resolve().parents[1]


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
    with pytest.raises(ValueError, match="table3_readings"):
        study.StudyPlan(readings=("literal",), table3_readings=("literal", "normalized"))
    with pytest.raises(ValueError, match="n_profile"):
        study.StudyPlan(n_ranked=8, n_profile=6)


def test_profile_configs_spread_over_macs_around_the_ranked_ones(gross_net) -> None:
    fixed = [(1, 1, 1), (4, 4, 4), (16, 16, 16), (32, 32, 32)]
    plan = study.StudyPlan(n_ranked=8, n_profile=24)
    profile = study.profile_configs(gross_net, plan, fixed)
    ranked = study.ranking_configs(gross_net, 8, include=fixed)
    assert len(set(profile)) == 24 and set(ranked) <= set(profile) and set(fixed) <= set(profile)
    macs = [config_macs(gross_net, c) for c in profile]
    assert macs == sorted(macs)
    space = [config_macs(gross_net, c) for c in search_space(gross_net)]
    assert macs[0] == min(space) and macs[-1] == max(space)
    assert study.profile_configs(gross_net, study.StudyPlan(n_profile=None), fixed) is None
    picks = pd.DataFrame({"config": [(1, 1, 2), (4, 4, 4)]})
    assert study._with_picks(profile, picks) == [*profile, (1, 1, 2)] or (1, 1, 2) in profile


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
    assert first["schedule"]["full"]["epochs"] == presets.get_preset("tiny").stage("full").epochs
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
def _replace_preset(monkeypatch: pytest.MonkeyPatch, name: str, **btd_options: object) -> None:
    """Register a copy of preset ``name`` whose BTD options carry ``btd_options`` (every lookup sees it)."""
    original = presets.get_preset(name)
    changed = dataclasses.replace(original, btd_options={**original.btd_options, **btd_options})
    monkeypatch.setattr(presets, "PRESETS", MappingProxyType({**presets.PRESETS, name: changed}))
    assert presets.get_preset(name) is changed


@pytest.fixture
def tiny_fashion(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Experiments load 160 + 40 synthetic Fashion-MNIST images from IDX files (the real loader).

    The BTD is capped at 30 steps: the preset's tol 1e-6 takes
    minutes on a barely trained network, and the BTD has tests of its own; every training stage keeps
    the study preset's schedule.
    """
    root = tmp_path / "fashion"
    write_fashion_idx(root, n_train=160, n_test=40)
    _replace_preset(monkeypatch, "study", max_iter=30)

    def load(name: str, limit: int | None = None):
        assert name == "fashion-mnist"
        return load_dataset(name, root=root, download=False, verify=False, limit=limit)

    monkeypatch.setattr(experiment, "load_dataset", load)


def _mtimes(folder: Path) -> dict[str, float]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*.pt")}


@pytest.mark.slow
def test_study_preset_end_to_end_two_seeds(tmp_path: Path, tiny_fashion: None) -> None:
    """The study preset's whole protocol on a tiny Fashion-MNIST subset with two seeds, its claims with
    intervals; a second run trains nothing."""
    from grosslib import verdicts

    run_dir = tmp_path / "study"
    records = study.run_study(run_dir, dataset="fashion-mnist", preset="study", seeds=[0, 1], threads=1)
    settings = study.read_study_file(run_dir)
    assert settings["schedule"]["full"]["epochs"] == presets.get_preset("study").stage("full").epochs == 15
    assert "Fashion-MNIST" in settings["schedule_note"]
    # the median design: 5 full networks, the median by validation accuracy decomposed once
    networks = json.loads((run_dir / study.NETWORKS_FILE).read_text())
    val = {int(s): a for s, a in networks["val_accuracy"].items()}
    assert sorted(val) == [0, 1, 2, 3, 4] and networks["median_seed"] == study.median_seed(val)
    assert sorted(val.values()).index(val[networks["median_seed"]]) == 2 or len(set(val.values())) < 5
    median = networks["median_seed"]
    assert (run_dir / f"seed{median}" / "decomposed.pt").is_file()
    assert [p.name for p in run_dir.glob("seed*/decomposed.pt")] == ["decomposed.pt"]
    # GroSS at alpha 0 (once), 4 and 8 under both readings of eq. 8
    assert len(records["table2"]) == 2 * 5 and len(records["deficits"]) == 2 * 5 * 4
    # Figure 1's profile: the same 24 configurations (fixed and ranked among them) for every network;
    # the whole space only on the search split
    assert records["profiles"].groupby(["alpha", "reading"]).size().to_dict() == {
        (0.0, "literal"): 48, (4.0, "literal"): 48, (4.0, "normalized"): 48, (8.0, "literal"): 48,
        (8.0, "normalized"): 48}
    per_network = records["profiles"].groupby(["seed", "alpha", "reading"])["name"].apply(frozenset)
    assert per_network.nunique() == 1 and set(records["ranking"]["name"]) <= set(per_network.iloc[0])
    assert len(records["search"]) == 2 * 252
    assert records["selections"].groupby("budget").size().to_dict() == {4: 4, 16: 4}
    # Table 3 under both readings: each alpha-4 network searched, its picks trained on their own
    by_reading = records["selections_by_reading"]
    assert by_reading.groupby(["reading", "budget"]).size().to_dict() == {
        ("literal", 4): 4, ("literal", 16): 4, ("normalized", 4): 4, ("normalized", 16): 4}
    assert by_reading["own accuracy"].between(0.0, 1.0).all()
    assert (records["selections"]["macs"] <= records["selections"]["budget macs"]).all()
    assert records["ranking"]["name"].nunique() == 8
    assert {"1-1-1", "4-4-4", "16-16-16", "32-32-32"} <= set(records["ranking"]["name"])
    for column in ("gross accuracy", "own accuracy"):
        assert records["ranking"][column].between(0.0, 1.0).all()
    seed_dir = run_dir / ("seed0" if median == 0 else f"seed0_net{median}")
    trained_alone = json.loads((seed_dir / study.SEED_DONE_FILE).read_text())["configs_trained_alone"]
    assert {p.name for p in seed_dir.glob("fixed_*")} == {f"fixed_{n}" for n in trained_alone}
    assert all((p / "finetune" / "done.json").is_file() for p in seed_dir.glob("fixed_*"))
    written, _ = study.read_records(run_dir / study.RECORDS_FILE)
    pd.testing.assert_frame_equal(written["ranking"], records["ranking"], check_dtype=False)
    # the claims, claim 3 under both readings, each from the two seeds' effects
    claims = json.loads(cli.write_claims(run_dir, records).read_text())
    assert claims["design"]["decomposed_network"] == f"seed{median}" and claims["seeds"] == [0, 1]
    assert {(c["id"], c["reading"]) for c in claims["claims"]} == {
        ("1a", None), ("1b", None), ("2", None), ("3", "literal"), ("3", "normalized"), ("4", None)}
    assert all(c["n"] == 2 and c["verdict"] == verdicts.verdict(c["ci95"]) for c in claims["claims"])

    # each invocation (shard) is recorded with its seeds and wall time
    shards = study.read_study_file(run_dir)["shards"]
    assert [s["seeds"] for s in shards] == [[0, 1]] and shards[0]["wall_seconds"] > 0
    assert claims["schedule"]["shards"] == shards

    # Everything is cached: a second run writes no checkpoint; a removed stage alone is trained again.
    before = _mtimes(seed_dir)
    first_call = json.loads((seed_dir / study.SEED_DONE_FILE).read_text())
    study.run_study(run_dir, dataset="fashion-mnist", preset="study", seeds=[0, 1], threads=1, collect=False)
    assert _mtimes(seed_dir) == before
    second_call = json.loads((seed_dir / study.SEED_DONE_FILE).read_text())  # cached: keeps the total
    expected_total = first_call["wall_seconds"] + second_call["call_seconds"]
    assert second_call["wall_seconds"] == pytest.approx(expected_total)
    assert second_call["first_finished_at"] == first_call["first_finished_at"]
    assert [s["seeds"] for s in study.read_study_file(run_dir)["shards"]] == [[0, 1], [0, 1]]
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
        study.run_study(tmp_path, dataset="no-such-dataset", preset="tiny", seeds=[0, 1], jobs=2,
                        plan=study.StudyPlan(design="per-seed"))    # (the median design fails before)
    assert "unknown dataset 'no-such-dataset'" in (tmp_path / "seed0" / "study.log").read_text()


def test_cached_decomposition_is_tied_to_its_btd_options_and_network(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    def make() -> experiment.Experiment:
        return experiment.Experiment("digits", "tiny", run_dir=tmp_path, data_limit=64, progress=False)

    exp = make()
    first = exp.decomposed()
    info_file = tmp_path / "seed0" / "decomposed.json"
    info = json.loads(info_file.read_text())
    assert info == {"btd_options": dict(presets.get_preset("tiny").btd_options),
                    "btd_algorithm": BTD_ALGORITHM,
                    "network": experiment.network_fingerprint(exp.full_network()[0])}
    again = make().decomposed()
    pairs = zip(first.parameters(), again.parameters(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)        # read back from decomposed.pt

    info_file.write_text(json.dumps({**info, "network": "0" * 64}))
    with pytest.raises(ValueError, match=r"decomposed from another network .* delete it"):
        make().decomposed()
    info_file.write_text(json.dumps(info))
    make().decomposed()                                    # the matching record is accepted again
    info_file.write_text(json.dumps({k: v for k, v in info.items() if k != "btd_algorithm"}))
    with pytest.raises(ValueError, match=r"decomposed by another BTD algorithm \(plain ALS.* delete it"):
        make().decomposed()                                # a cache from before the ridge phases
    info_file.write_text(json.dumps(info))
    _replace_preset(monkeypatch, "tiny", ridge=(1e-3, 0.0))
    with pytest.raises(ValueError, match=r"decomposed with BTD options .* delete it"):
        make().decomposed()


# --------------------------------------------------------------------------------------------- command line
#: a cheap, correct ``run``: the tiny preset on 64 digits, one thread per process
TINY_RUN = ["--preset", "tiny", "--dataset", "digits", "--seeds", "1", "--data-limit", "64", "--threads", "1",
            "--no-collect"]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in (cli.ALLOW_DOWNLOAD_ENV, cli.TRACEBACK_ENV)}
    return {**env, "OMP_NUM_THREADS": "1"}


def _default_signals() -> None:
    """In the child: SIGINT as in a terminal, even when the tests run as a background job (it ignores it)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _cli(*args: str, **popen: object) -> subprocess.Popen:
    """``python -m grosslib.study *args`` started in the repository."""
    return subprocess.Popen([sys.executable, "-m", "grosslib.study", *args], cwd=REPO, env=_env(),
                            preexec_fn=_default_signals, **popen)  # type: ignore[call-overload]


def _command_lines() -> dict[int, str]:
    """The command line of every live process (psutil if installed, else /proc); zombies left out."""
    try:
        import psutil
    except ImportError:
        psutil = None
    lines = {}
    if psutil is not None:
        for proc in psutil.process_iter(["cmdline", "status"]):
            if proc.info["cmdline"] and proc.info["status"] != psutil.STATUS_ZOMBIE:
                lines[proc.pid] = " ".join(proc.info["cmdline"])
        return lines
    for entry in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = entry.read_bytes()
        except OSError:
            continue
        if text:
            lines[int(entry.parent.name)] = text.replace(b"\0", b" ").decode(errors="replace").strip()
    return lines


def _processes(*parts: str) -> list[int]:
    """Live processes whose command line contains every one of ``parts``."""
    return sorted(pid for pid, line in _command_lines().items() if all(p in line for p in parts))


def _wait_for(condition: Callable[[], object], timeout: float, what: str) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def _kill_leftovers(run_dir: Path) -> list[int]:
    """SIGKILL any process still mentioning ``run_dir`` (started by this test); their ids."""
    left = _processes(str(run_dir))
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return left


can_list_processes = pytest.mark.skipif(
    sys.platform == "win32"
    or not (Path("/proc/self/cmdline").exists() or importlib.util.find_spec("psutil")),
    reason="needs POSIX signals, and psutil or /proc to list processes")


@can_list_processes
def test_sigterm_stops_every_seed_process_and_names_the_resume_command(tmp_path: Path) -> None:
    """A real SIGTERM to ``run --jobs 2``: both seed processes stopped, a summary, the resume command, 143."""
    run_dir = tmp_path / "study"
    argv = ["run", "--run-dir", str(run_dir), *TINY_RUN, "--seeds", "2", "--jobs", "2"]
    with open(tmp_path / "stdout", "w") as out, open(tmp_path / "stderr", "w") as err:
        parent = _cli(*argv, stdout=out, stderr=err)
    try:
        _wait_for(lambda: len(_processes("grosslib.study seed", str(run_dir))) == 2, 120,
                  "both seed processes")
        os.kill(parent.pid, signal.SIGTERM)
        status = parent.wait(timeout=60)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
    stderr = (tmp_path / "stderr").read_text()
    try:
        _wait_for(lambda: not _processes(str(run_dir)), 5, "every seed process to end")
    finally:
        left = _kill_leftovers(run_dir)
    assert not left, f"processes left running: {left}"
    assert status == 143, stderr
    assert "Traceback" not in stderr
    assert "stopped by SIGTERM; seeds finished: none; stopped: 0, 1" in stderr
    assert f"resume with: {cli.resume_command(argv)}\n" in stderr
    assert f"-m grosslib.study {shlex.join(argv)}" in stderr
    for seed in (0, 1):
        assert "stopped by the study process" in (run_dir / f"seed{seed}" / "study.log").read_text()


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux only")
@can_list_processes
def test_seed_processes_end_when_the_study_process_is_killed(tmp_path: Path) -> None:
    """SIGKILL (which cannot be handled) to ``run --jobs 2``: its seed processes end by themselves."""
    run_dir = tmp_path / "study"
    parent = _cli("run", "--run-dir", str(run_dir), *TINY_RUN, "--seeds", "2", "--jobs", "2",
                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for(lambda: len(_processes("grosslib.study seed", str(run_dir))) == 2, 120,
                  "both seed processes")
        parent.kill()
        parent.wait(timeout=30)
        _wait_for(lambda: not _processes(str(run_dir)), 90, "the orphaned seed processes to end")
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        _kill_leftovers(run_dir)
    # they ended because their parent died, not because they finished their seed
    assert not any((run_dir / f"seed{seed}" / study.SEED_DONE_FILE).exists() for seed in (0, 1))


@pytest.mark.slow
@can_list_processes
def test_ctrl_c_stops_a_single_process_run_which_the_same_command_resumes(tmp_path: Path) -> None:
    """SIGINT to ``run --jobs 1`` mid-training: a summary, the resume command, 130; then it resumes."""
    run_dir = tmp_path / "study"
    argv = ["run", "--run-dir", str(run_dir), *TINY_RUN]
    parent = _cli(*argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(lambda: (run_dir / "seed0" / "full").exists() or parent.poll() is not None, 120,
                  "training to start")
        os.kill(parent.pid, signal.SIGINT)
        _, stderr = parent.communicate(timeout=60)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
    assert parent.returncode == 130, stderr
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
    assert "stopped by SIGINT; seeds finished: none; stopped: 0" in stderr
    assert f"resume with: {cli.resume_command(argv)}" in stderr
    assert not _kill_leftovers(run_dir)
    resumed = _cli(*argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, stderr = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, stderr
    done = list(run_dir.glob(f"seed0*/{study.SEED_DONE_FILE}"))     # seed0/ or seed0_net<median>/
    assert len(done) == 1 and json.loads(done[0].read_text())["seed"] == 0


def test_stopping_children_escalates_to_sigkill(tmp_path: Path) -> None:
    """A child that ignores SIGTERM is SIGKILLed after the grace period, and its log says it was stopped."""
    log = tmp_path / "child.log"
    handle = open(log, "a")
    code = ("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); "
            "time.sleep(60)")
    child = subprocess.Popen([sys.executable, "-c", code], stdout=handle, stderr=subprocess.STDOUT,
                             start_new_session=True)
    try:
        _wait_for(lambda: "ready" in log.read_text(), 30, "the child to ignore SIGTERM")
        started = time.monotonic()
        running = {3: (child, handle, log)}
        assert study._stop_children(running, lambda: False, grace=0.5) == ([], [3])
        assert 0.4 < time.monotonic() - started < 10
        assert child.returncode == -signal.SIGKILL and not running and handle.closed
        assert "stopped by the study process (exit -9)" in log.read_text()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def test_interrupted_summary() -> None:
    stop = study.StudyInterrupted(signal.SIGTERM, finished=[0], stopped=[1, 2], pending=[3])
    assert stop.exit_status == 143 and isinstance(stop, KeyboardInterrupt)
    assert str(stop) == ("stopped by SIGTERM; seeds finished: 0; stopped: 1, 2; not started: 3 "
                         "(every finished stage is kept)")
    assert study.StudyInterrupted().exit_status == 130
    assert str(study.StudyInterrupted()) == "stopped by SIGINT (every finished stage is kept)"


#: bad ``run`` inputs checked in subprocesses: (extra arguments, what the one line must say)
BAD_RUNS = {
    "preset": (["--preset", "huge"], f"unknown preset 'huge'; valid presets: {', '.join(preset_names())}"),
    "dataset": (["--dataset", "nope"], "unknown dataset 'nope'; valid datasets:"),
    "device": (["--device", "cuda"], "CUDA is not available here; use --device cpu"),
    "jobs": (["--jobs", "0"], "--jobs must be >= 1, got 0"),
    "other-settings": (["--preset", "quick"], "this study was run with preset='tiny', not 'quick'"),
}


#: a finished bad ``run``: the process, its run directory, its ``study.json`` before ('' if none)
BadRun = tuple[subprocess.CompletedProcess, Path, str]


@pytest.fixture(scope="module")
def bad_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, BadRun]:
    """Every case of :data:`BAD_RUNS` run at once (each starts a Python with torch: slow on 2 cores)."""
    root = tmp_path_factory.mktemp("bad_runs")
    other = root / "other"
    study.write_study_file(other, dataset="digits", preset="tiny", seeds=[0], plan=study.StudyPlan(),
                           data_limit=64)
    run_dirs = {name: root / "study" for name in BAD_RUNS}
    run_dirs["other-settings"] = other
    before = {name: (run_dir / study.STUDY_FILE).read_text() if (run_dir / study.STUDY_FILE).exists() else ""
              for name, run_dir in run_dirs.items()}
    started = {name: (_cli("run", *TINY_RUN, "--run-dir", str(run_dirs[name]), *extra,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True), run_dirs[name])
               for name, (extra, _) in BAD_RUNS.items() if name != "device" or not torch.cuda.is_available()}
    results = {}
    for name, (process, run_dir) in started.items():
        stdout, stderr = process.communicate(timeout=300)
        completed = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
        results[name] = (completed, run_dir, before[name])
    return results


@pytest.mark.parametrize("case", list(BAD_RUNS))
def test_bad_run_inputs_end_with_one_line_and_status_2(case: str, bad_runs: dict[str, BadRun]) -> None:
    if case not in bad_runs:
        pytest.skip("CUDA is available here")
    result, run_dir, before = bad_runs[case]
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert BAD_RUNS[case][1] in lines[0]
    if case == "other-settings":       # the study is left as it was, and its own settings still run
        assert (run_dir / study.STUDY_FILE).read_text() == before
        args = cli.build_parser().parse_args(["run", "--run-dir", str(run_dir), "--seeds", "2"])
        assert cli.check_run_args(args)["preset"] == "tiny"
    else:                              # nothing written: the corrected command is not refused
        assert not (run_dir / study.STUDY_FILE).exists()
        args = cli.build_parser().parse_args(["run", "--run-dir", str(run_dir), *TINY_RUN])
        checked = cli.check_run_args(args)
        assert (checked["preset"], checked["dataset"], checked["seeds"]) == ("tiny", "digits", [0])


def _main(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[str]]:
    status = cli.main(list(argv))
    return status, capsys.readouterr().err.splitlines()


@pytest.mark.parametrize("extra, message", [
    (["--seed-list", "1,x"], "--seed-list '1,x': expected comma-separated seeds >= 0"),
    (["--seed-list", "-1"], "--seed-list '-1': expected comma-separated seeds >= 0"),
    (["--threads", "0"], "--threads must be >= 1, got 0"),
    (["--seeds", "0"], "--seeds must be >= 1, got 0"),
    (["--data-limit", "0"], "--data-limit must be >= 1, got 0"),
])
def test_bad_run_values_in_process(tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str],
                                   message: str) -> None:
    status, lines = _main(capsys, "run", "--run-dir", str(tmp_path / "s"), *TINY_RUN, *extra)
    assert status == 2 and len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]
    assert not (tmp_path / "s").exists()


def test_a_run_dir_inside_a_file_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "a-file").write_text("not a directory")
    for run_dir in (tmp_path / "a-file", tmp_path / "a-file" / "study"):
        status, lines = _main(capsys, "run", "--run-dir", str(run_dir), *TINY_RUN)
        assert status == 2 and len(lines) == 1
        assert lines[0] == (f"error: --run-dir {run_dir}: {tmp_path / 'a-file'} is a file, not a directory; "
                            "pass a directory (created if absent)")


def test_usage_errors_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as raised:
        cli.main(["run", "--run-dir", "x", "--jobs", "two"])
    lines = capsys.readouterr().err.splitlines()
    assert raised.value.code == 2 and len(lines) == 1
    assert lines[0] == ("error: argument --jobs: invalid int value: 'two' "
                        "(see `python -m grosslib.study run --help`)")


def test_a_dataset_that_needs_a_download_is_refused_unless_allowed(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str],
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GROSS_DATA", str(tmp_path / "data"))
    monkeypatch.delenv(cli.ALLOW_DOWNLOAD_ENV, raising=False)
    argv = ["run", "--run-dir", str(tmp_path / "s"), "--preset", "tiny", "--dataset", "cifar10"]
    status, lines = _main(capsys, *argv)
    assert status == 2 and len(lines) == 1
    assert lines[0].startswith("error: dataset 'cifar10' is not on this machine: it would need a download")
    assert f"{cli.ALLOW_DOWNLOAD_ENV}=1" in lines[0]
    monkeypatch.setenv(cli.ALLOW_DOWNLOAD_ENV, "1")
    assert cli.check_run_args(cli.build_parser().parse_args(argv))["dataset"] == "cifar10"
    assert not (tmp_path / "s").exists()


def test_collect_and_report_refuse_a_directory_that_is_not_a_study(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("collect", "report"):
        status, lines = _main(capsys, command, "--run-dir", str(tmp_path))
        assert status == 2 and len(lines) == 1
        assert lines[0].startswith(f"error: {tmp_path / study.STUDY_FILE} not found: not a study directory")
    (tmp_path / study.STUDY_FILE).write_text("[1, 2]")
    status, lines = _main(capsys, "collect", "--run-dir", str(tmp_path))
    assert status == 2 and len(lines) == 1 and "is not a study file" in lines[0]


def test_run_refuses_other_settings_of_an_existing_study_in_process(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    study.write_study_file(tmp_path, dataset="digits", preset="tiny", seeds=[0], plan=study.StudyPlan())
    before = (tmp_path / study.STUDY_FILE).read_text()
    for extra, message in ((["--data-limit", "8"], "data_limit=None, not 8"),
                           (["--dataset", "fashion-mnist"], "dataset='digits', not 'fashion-mnist'")):
        status, lines = _main(capsys, "run", "--run-dir", str(tmp_path), *extra)
        assert status == 2 and len(lines) == 1 and message in lines[0] and "another --run-dir" in lines[0]
    assert (tmp_path / study.STUDY_FILE).read_text() == before
    checked = cli.check_run_args(cli.build_parser().parse_args(["run", "--run-dir", str(tmp_path)]))
    assert (checked["dataset"], checked["preset"], checked["data_limit"]) == ("digits", "tiny", None)


def test_claims_json_from_the_committed_records(tmp_path: Path) -> None:
    """claims.json recomputed from the committed study (median design, both readings of eq. 8): every
    claim once (claim 3 per reading), each verdict the rule applied to its interval, and the same claims
    as the committed claims.json."""
    from grosslib import paths, verdicts

    records_file = paths.STUDY_RESULTS_DIR / study.RECORDS_FILE
    _, settings = study.read_records(records_file)
    (tmp_path / study.STUDY_FILE).write_text(json.dumps(settings))
    (tmp_path / study.RECORDS_FILE).write_bytes(records_file.read_bytes())
    networks = paths.STUDY_RESULTS_DIR / study.NETWORKS_FILE
    (tmp_path / study.NETWORKS_FILE).write_bytes(networks.read_bytes())
    claims = json.loads(cli.write_claims(tmp_path).read_text())
    median = json.loads(networks.read_text())["median_seed"]
    assert claims["design"]["design"] == "median"
    assert claims["design"]["readings"] == ["literal", "normalized"]
    assert claims["design"]["decomposed_network"] == f"seed{median}" and len(claims["seeds"]) >= 5
    assert [(c["id"], c["reading"]) for c in claims["claims"]] == [
        ("1a", None), ("1b", None), ("2", None), ("3", "literal"), ("3", "normalized"), ("4", None)]
    committed = json.loads((paths.STUDY_RESULTS_DIR / cli.CLAIMS_FILE).read_text())
    for ours, theirs in zip(claims["claims"], committed["claims"], strict=True):   # records.json rounds
        assert ours["verdict"] == theirs["verdict"] and ours["estimate"] == pytest.approx(theirs["estimate"])
        assert ours["ci95"] == pytest.approx(theirs["ci95"])
    for claim in claims["claims"]:
        assert claim["n"] == len(claims["seeds"]) == len(settings["seeds"])
        assert claim["verdict"] == verdicts.verdict(claim["ci95"])
        assert claim["ci95"][0] <= claim["estimate"] <= claim["ci95"][1]
    assert len(claims["kendall_tau"]["per_seed"]) == len(claims["seeds"])


def test_plans_recorded_before_the_design_existed_read_as_per_seed() -> None:
    new_fields = ("design", "readings", "n_profile", "table3_readings")
    old = {k: v for k, v in study.StudyPlan().to_dict().items() if k not in new_fields}
    plan = study.StudyPlan.from_dict(old)
    assert plan.design == "per-seed" and plan.readings == ("literal",) and plan.n_profile is None
    assert plan.table3_readings == ("literal",)
    assert study.StudyPlan.from_dict(study.StudyPlan().to_dict()) == study.StudyPlan()
    assert study.StudyPlan().design == "median" and study.StudyPlan().n_networks == 5
    with pytest.raises(ValueError, match="design must be one of"):
        study.StudyPlan(design="mean")
    assert study.median_seed({0: 0.8, 1: 0.9, 2: 0.7, 3: 0.85, 4: 0.6}) == 0
    assert study.median_seed({0: 0.8, 1: 0.8, 2: 0.8}) == 1
    assert study.median_seed({5: 0.5, 6: 0.7}) == 5


def test_a_study_continues_elsewhere_from_its_exported_network(tmp_path: Path) -> None:
    """export_shared / import_shared: a second directory (another machine) gets the median network and its
    decomposition, trains no full network of its own, and reproduces the first directory's seed."""
    options = {"dataset": "digits", "preset": "tiny", "data_limit": 64, "threads": 1,
               "plan": study.StudyPlan(n_networks=3)}
    first = study.run_study(tmp_path / "a", seeds=[0], **options)
    written = study.export_shared(tmp_path / "a", tmp_path / "shared")
    median = json.loads((tmp_path / "a" / study.NETWORKS_FILE).read_text())["median_seed"]
    assert {p.relative_to(tmp_path / "shared").as_posix() for p in written} >= {
        "study.json", "networks.json", f"seed{median}/decomposed.pt", f"seed{median}/full/checkpoint.pt"}
    assert sum(p.stat().st_size for p in written) < 5_000_000
    study.import_shared(tmp_path / "shared", tmp_path / "b")
    again = study.run_study(tmp_path / "b", seeds=[0], **options)
    others = [s for s in range(3) if s != median]
    assert not any((tmp_path / "b" / f"seed{s}").exists() for s in others)   # not retrained
    for table in ("table2", "deficits", "selections", "ranking"):
        pd.testing.assert_frame_equal(again[table], first[table], check_dtype=False)
    # a directory holding another study is refused in one line
    (tmp_path / "b" / f"seed{median}" / "decomposed.json").write_text("{}")
    with pytest.raises(ValueError, match="holds another study"):
        study.import_shared(tmp_path / "shared", tmp_path / "b")
    with pytest.raises(FileNotFoundError, match="holds no exported study"):
        study.import_shared(tmp_path / "nothing", tmp_path / "c")
    # the checkpoints travel outside git: a folder without them is refused before anything is copied
    (tmp_path / "shared" / f"seed{median}" / "decomposed.pt").unlink()
    with pytest.raises(FileNotFoundError, match=rf"lacks seed{median}/decomposed\.pt: checkpoints are not"):
        study.import_shared(tmp_path / "shared", tmp_path / "d")
    assert not (tmp_path / "d").exists()


@pytest.mark.slow
def test_median_design_trains_the_full_networks_jobs_at_a_time(tmp_path: Path) -> None:
    """``jobs > 1``: the 5 full networks train in parallel seed processes (even for one later seed), then
    the median is chosen from them and decomposed once."""
    run_dir = tmp_path / "study"
    study.run_study(run_dir, dataset="digits", preset="tiny", seeds=[0], jobs=2, threads=1, data_limit=64,
                    collect=False)
    for seed in range(5):
        log = (run_dir / f"seed{seed}" / "study.log").read_text()
        assert '"full network"' in log and (run_dir / f"seed{seed}" / "full" / "done.json").is_file()
    networks = json.loads((run_dir / study.NETWORKS_FILE).read_text())
    val = {int(s): a for s, a in networks["val_accuracy"].items()}
    assert sorted(val) == list(range(5)) and networks["median_seed"] == study.median_seed(val)
    assert [p.parent.name for p in run_dir.glob("seed*/decomposed.pt")] == [f"seed{networks['median_seed']}"]
