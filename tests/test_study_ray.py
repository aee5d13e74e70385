"""Tests for ``python -m grosslib.study run --engine ray`` (grosslib.study.ray_engine): the same records as
the local engine, a stopped Ray study resumes, a failed task is named and the rest goes on, bad inputs end
with one line before any work, and Ray stays optional."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("ray")

from test_study import _cli, _processes, _wait_for  # noqa: E402  (after the skip: needs Ray)

from grosslib import study  # noqa: E402
from grosslib.study import __main__ as cli  # noqa: E402
from grosslib.study import ray_engine  # noqa: E402

#: two seeds of the tiny preset on 64 digits, one thread per task or process
TINY_STUDY = ["--preset", "tiny", "--dataset", "digits", "--seeds", "2", "--data-limit", "64",
              "--threads", "1"]


def _accuracies(run_dir: Path) -> dict[str, list[list[object]]]:
    """Every accuracy column of every table of ``records.json``, row by row (with the row's seed and name)."""
    tables = json.loads((run_dir / study.RECORDS_FILE).read_text())["tables"]
    found = {}
    for name, rows in tables.items():
        columns = sorted({k for row in rows for k in row
                          if "accuracy" in k or k in ("seed", "name", "alpha", "reading")})
        found[name] = [[row.get(k) for k in columns] for row in rows]
    return found


@pytest.fixture
def ray_dir(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A Ray temporary directory (``RAY_TMPDIR``, also of the ``_cli`` children) of this test alone, so
    that its Ray processes can be told apart; short, as Ray's socket paths must stay < 108 characters."""
    path = Path(tempfile.mkdtemp(prefix="rayst", dir="/tmp"))
    monkeypatch.setenv("RAY_TMPDIR", str(path))
    yield path
    for pid in _processes(str(path)):            # a failed test's leftovers
        os.kill(pid, signal.SIGKILL)
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.slow
def test_ray_engine_gives_the_local_records_and_resumes_after_sigterm(tmp_path: Path,
                                                                      ray_dir: Path) -> None:
    """The same two-seed study with ``--engine local`` and with ``--engine ray`` (stopped by SIGTERM after its
    first task, then resumed): the same accuracies in records.json, and no Ray process left behind."""
    local, remote = tmp_path / "local", tmp_path / "ray"
    done = _cli("run", "--run-dir", str(local), *TINY_STUDY, stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE, text=True)
    _, stderr = done.communicate(timeout=300)
    assert done.returncode == 0, stderr

    argv = ["run", "--run-dir", str(remote), *TINY_STUDY, "--engine", "ray"]
    with open(tmp_path / "out", "w") as out:
        first = _cli(*argv, stdout=out, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(lambda: " done (" in (tmp_path / "out").read_text() or first.poll() is not None, 180,
                  "the first Ray task to finish")
        first.send_signal(signal.SIGTERM)
        _, stderr = first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert first.returncode == 143, stderr
    assert "stopped by SIGTERM" in stderr and "resume with:" in stderr and "Traceback" not in stderr
    assert "[ray] stopped: cancelled" in stderr
    _wait_for(lambda: not _processes(str(ray_dir)), 30, "Ray's processes to end")
    assert not (remote / study.RECORDS_FILE).exists()

    again = _cli(*argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stdout, stderr = again.communicate(timeout=300)
    assert again.returncode == 0, stderr
    assert "[ray] seed 0 done" in stdout and "[ray] seed 1 done" in stdout
    assert re.search(r"\((\d+)/\1 tasks done\)$", stdout.strip().splitlines()[-1]), stdout
    _wait_for(lambda: not _processes(str(ray_dir)), 30, "Ray's processes to end")
    assert _accuracies(remote) == _accuracies(local)
    for summary in remote.glob(f"seed*/{study.SEED_DONE_FILE}"):     # every configuration was its own task
        info = json.loads(summary.read_text())
        alone = set(info["configs_trained_alone"])
        searched = {line.split(" fixed ", 1)[1].split(" done")[0] for line in stdout.splitlines()
                    if line.startswith(f"[ray] seed {info['seed']} fixed ")}
        baselines = alone - searched
        assert searched and searched <= alone and len(baselines) == len(study.StudyPlan().fixed_group_sizes)
    shards = json.loads((remote / study.STUDY_FILE).read_text())["shards"]
    assert shards[-1]["engine"] == "ray" and shards[-1]["cpus_per_task"] == 1


@pytest.mark.slow
def test_a_failed_ray_task_is_named_and_the_others_finish(tmp_path: Path, ray_dir: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """Per-seed design, seed 1's directory blocked by a file: seed 1's first task fails (stage and seed
    named), its later ones are skipped, seed 0 finishes, and the study raises StudyFailed (CLI: exit 1)."""
    (tmp_path / "seed1").write_text("not a directory")
    expected = (r"seed 1 network \(stage full network \+ decomposition, seed 1: .*\), 11 tasks that needed "
                r"them skipped \(seeds 1\); finished stages are kept")
    with pytest.raises(study.StudyFailed, match=expected):
        study.run_study(tmp_path, dataset="digits", preset="tiny", seeds=[0, 1], threads=1, data_limit=64,
                        plan=study.StudyPlan(design="per-seed"), engine="ray")
    out = capsys.readouterr().out
    assert "[ray] seed 1 network FAILED (stage full network + decomposition, seed 1): " in out
    assert "[ray] seed 1 search skipped" in out and "[ray] seed 0 done" in out
    assert (tmp_path / "seed0" / study.SEED_DONE_FILE).is_file()
    assert "Ray task 'seed 1 network' failed" in (tmp_path / "study.log").read_text()


# --------------------------------------------------------------------------------------------- bad inputs
def _main(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[str]]:
    status = cli.main(list(argv))
    return status, capsys.readouterr().err.splitlines()


TINY_RUN = ["--preset", "tiny", "--dataset", "digits", "--seeds", "1", "--data-limit", "64", "--no-collect"]


@pytest.mark.parametrize("extra, message", [
    (["--engine", "ray", "--address", "127.0.0.1:1"], "--address 127.0.0.1:1: nothing answers at 127.0.0.1"),
    (["--engine", "ray", "--address", "head-node"], "--address 'head-node': expected HOST:PORT"),
    (["--engine", "ray", "--address", "ray://10.0.0.1:x"], "expected HOST:PORT"),
    (["--engine", "ray", "--gpus-per-task", "-1"], "--gpus-per-task must be >= 0, got -1"),
    (["--engine", "ray", "--gpus-per-task", "nan"], "--gpus-per-task must be >= 0, got nan"),
    (["--engine", "ray", "--cpus-per-task", "0"], "--cpus-per-task must be >= 1, got 0"),
    (["--engine", "ray", "--cpus-per-task", "100000"], "--cpus-per-task 100000 is more than the"),
    (["--engine", "ray", "--device", "cuda"], "--device cuda with --engine ray needs --gpus-per-task > 0"),
    (["--engine", "ray", "--jobs", "2"], "--jobs 2 applies only to --engine local"),
    (["--address", "127.0.0.1:6379"], "--address applies only to --engine ray"),
    (["--engine", "local", "--cpus-per-task", "1", "--gpus-per-task", "0"],
     "--cpus-per-task, --gpus-per-task apply only to --engine ray"),
])
def test_bad_ray_inputs_end_with_one_line_and_status_2(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                       extra: list[str], message: str) -> None:
    status, lines = _main(capsys, "run", "--run-dir", str(tmp_path / "s"), *TINY_RUN, *extra)
    assert status == 2 and len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
    assert not (tmp_path / "s").exists()


def test_more_gpus_per_task_than_this_machine_has_is_refused(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    status, lines = _main(capsys, "run", "--run-dir", str(tmp_path / "s"), *TINY_RUN, "--engine", "ray",
                          "--gpus-per-task", str(count + 1))
    assert status == 2 and len(lines) == 1
    assert lines[0].startswith(f"error: --gpus-per-task {count + 1} is more than the {count} GPUs of this "
                               "machine")
    assert not (tmp_path / "s").exists()


def test_an_address_where_nothing_listens_fails_fast() -> None:
    import socket
    import time

    with socket.socket() as free:                   # a port that was free a moment ago: nothing listens
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(ValueError, match=f"nothing answers at 127.0.0.1:{port}"):
        ray_engine.check_address(f"127.0.0.1:{port}", timeout=0.5)
    with pytest.raises(ValueError, match="nothing answers"):
        ray_engine.check_address(f"ray://127.0.0.1:{port}", timeout=0.5)
    assert time.monotonic() - started < 5
    ray_engine.check_address("auto")                              # left to Ray


def test_without_ray_the_ray_engine_is_one_line_and_the_local_engine_works(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)            # `import ray` raises ImportError
    with pytest.raises(ImportError):
        import ray  # noqa: F401
    status, lines = _main(capsys, "run", "--run-dir", str(tmp_path / "s"), *TINY_RUN, "--engine", "ray")
    assert status == 2 and lines == [f"error: {ray_engine.RAY_MISSING}"]
    assert "pip install -e .[ray]" in lines[0] and not (tmp_path / "s").exists()
    args = cli.build_parser().parse_args(["run", "--run-dir", str(tmp_path / "s"), *TINY_RUN])
    assert cli.check_run_args(args)["engine"] == "local"


def test_a_failed_study_is_one_line_status_1_and_the_resume_command(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(**kwargs: object) -> None:
        raise study.StudyFailed("study failed for seed 1 (OSError: disk full); finished stages are kept, run "
                                "again to resume")

    monkeypatch.setattr(cli, "run_study", fail)
    argv = ["run", "--run-dir", str(tmp_path / "s"), *TINY_RUN, "--engine", "ray"]
    status, lines = _main(capsys, *argv)
    assert status == 1 and lines == [
        "error: study failed for seed 1 (OSError: disk full); finished stages are kept, run again to resume",
        f"resume with: {cli.resume_command(argv)}"]


def test_a_task_without_gpus_sees_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    assert ray_engine._in_task(os.environ.get, False, "CUDA_VISIBLE_DEVICES") == "0,1"
    assert ray_engine._in_task(os.environ.get, True, "CUDA_VISIBLE_DEVICES") == ""


def test_the_ray_tasks_are_the_stages_of_the_local_engine() -> None:
    """The Ray tasks: the full networks, the median's decomposition, then per seed one task per stage and
    the local engine's own seed function last (it reads every stage back: the same records)."""
    plan = study.StudyPlan()
    tasks = ray_engine._tasks(Path("/nowhere"), [0, 3], plan, threads=2)
    names = [t.name for t in tasks]
    assert names[:6] == [*(f"full network {k}" for k in range(5)), "median network"]
    seed3 = [n for n in names if n.startswith("seed 3")]
    assert seed3 == ["seed 3 GroSS alpha 0", "seed 3 GroSS alpha 4 literal", "seed 3 GroSS alpha 8 literal",
                     "seed 3 GroSS alpha 4 normalized", "seed 3 GroSS alpha 8 normalized", "seed 3 fixed-1",
                     "seed 3 fixed-4", "seed 3 fixed-16", "seed 3 fixed-32", "seed 3 search", "seed 3"]
    by_name = {t.name: t for t in tasks}
    assert by_name["median network"].needs == tuple(names[:5])
    assert by_name["seed 3 GroSS alpha 4 normalized"].needs == ("median network",)
    assert by_name["seed 3 search"].needs == ("seed 3 GroSS alpha 4 literal",
                                              "seed 3 GroSS alpha 4 normalized")
    assert set(by_name["seed 3"].needs) == set(seed3[:-1])
    assert by_name["seed 3"].function is study.seed_task and all(t.args[2] == 2 for t in tasks[6:])
    assert {t.function for t in tasks} == {study.seed_task, study.choose_network_task, study.stage_task}
    picked = by_name["seed 3 search"].expand([[2, 4, 8]])
    assert [(t.name, t.args[3:], t.needs) for t in picked] == [
        ("seed 3 fixed 2-4-8", ("fixed", [2, 4, 8]), ("seed 3 search",))]
    per_seed = ray_engine._tasks(Path("/nowhere"), [1], study.StudyPlan(design="per-seed"), threads=1)
    assert per_seed[0].name == "seed 1 network" and per_seed[1].needs == ("seed 1 network",)
    coarse = ray_engine._tasks(Path("/nowhere"), [1], study.StudyPlan(design="per-seed"), 1, per_stage=False)
    assert [(t.name, t.needs) for t in coarse] == [("seed 1", ())]
