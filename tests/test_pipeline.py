"""grosslib.pipeline: running notebooks into a run dir, markers and resume, failures, summary, CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest
from gross_helpers import write_kernelspec
from nbformat.v4 import new_code_cell, new_notebook

from grosslib import pipeline
from grosslib.pipeline import format_summary, normalise_only, run_notebook, run_pipeline

KERNEL = {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
          "language_info": {"name": "python"}}


@pytest.fixture(scope="module")
def kernel_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A ``python3`` kernelspec running this interpreter, first on ``$JUPYTER_PATH``."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("JUPYTER_PATH", str(write_kernelspec(tmp_path_factory.mktemp("jupyter"))))
        yield


def write_notebook(path: Path, body: str) -> Path:
    """A small notebook: a parameters cell (preset, run_dir), ``body``, then a metrics-writing cell.

    It writes its metrics as JSON directly (no torch import, so the kernel starts fast).
    """
    params = new_code_cell('preset = "quick"\nrun_dir = ""')
    params.metadata["tags"] = ["parameters"]
    metrics = new_code_cell(
        "import json, pathlib\n"
        "out = pathlib.Path(run_dir) / 'metrics'\n"
        "out.mkdir(parents=True, exist_ok=True)\n"
        "record = {'key_metrics': {'preset': preset, 'value': 1.5}}\n"
        f"(out / '{path.stem}.json').write_text(json.dumps(record))")
    nb = new_notebook(cells=[params, new_code_cell(body), metrics], metadata=KERNEL)
    nbformat.write(nb, path)
    return path


# --------------------------------------------------------------------------------------------- fast units
def test_normalise_only() -> None:
    assert normalise_only(None) is None
    assert normalise_only("01, 2,") == {"01", "02"}
    assert normalise_only(["3", 4, "05_search"]) == {"03", "04", "05"}
    with pytest.raises(ValueError):
        normalise_only("first")


def test_unknown_preset_and_only_are_refused(tmp_path: Path, kernel_env: None) -> None:
    with pytest.raises(ValueError, match="preset"):
        run_pipeline("huge", run_dir=tmp_path, echo=None)
    with pytest.raises(ValueError, match="99"):
        run_pipeline("tiny", run_dir=tmp_path, only="99", echo=None)


def test_format_summary_names_failures() -> None:
    summary = {"run_dir": "r", "preset": "tiny", "dataset": "digits", "device": "cpu", "seed": 0,
               "status": "failed", "seconds": 1.0,
               "notebooks": [{"notebook": "01_a", "status": "ok", "seconds": 0.5,
                              "key_metrics": {"x": 0.123456}},
                             {"notebook": "02_b", "status": "failed", "seconds": 0.2, "key_metrics": {},
                              "error": "cell 2: ValueError: boom", "executed": "r/02_b.ipynb"}]}
    text = format_summary(summary)
    assert "| 01_a | ok | 0.5 | x=0.123 |" in text
    assert "02_b | failed" in text and "ValueError: boom" in text and "r/02_b.ipynb" in text


# ------------------------------------------------------------------------------------ the real notebook 01
@pytest.mark.slow
def test_pipeline_runs_01_then_resumes_without_rerunning(tmp_path: Path, kernel_env: None) -> None:
    run_dir = tmp_path / "run"
    summary = run_pipeline("tiny", "digits", "cpu", run_dir=run_dir, only=["01"], echo=None)
    assert summary["status"] == "ok" and summary["failed"] is None
    records = {r["number"]: r for r in summary["notebooks"]}
    assert records["01"]["status"] == "ok"
    assert all(r["status"] == "not run" for n, r in records.items() if n != "01")
    marker = run_dir / "01.done.json"
    done = json.loads(marker.read_text())
    assert done["metrics"]["metrics"]["equivalence_ok"] is True
    assert done["parameters"]["run_dir"] == str(run_dir.resolve())
    assert (run_dir / "01_btd_bottleneck_equivalence.ipynb").is_file()
    assert (run_dir / "figures" / "01_btd_error_vs_group_size.png").is_file()
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "ok"
    assert "01_btd_bottleneck_equivalence | ok" in (run_dir / "summary.md").read_text()

    stamps = {p: p.stat().st_mtime_ns for p in (marker, run_dir / "01_btd_bottleneck_equivalence.ipynb")}
    again = run_pipeline("tiny", "digits", "cpu", run_dir=run_dir, only=["01"], echo=None)
    first = again["notebooks"][0]
    assert first["status"] == "skipped" and first["seconds"] == records["01"]["seconds"]
    assert first["key_metrics"]["equivalence_ok"] is True
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps          # nothing re-executed

    with pytest.raises(ValueError, match="preset"):                     # a run dir keeps its settings
        run_pipeline("quick", "digits", "cpu", run_dir=run_dir, only=["01"], echo=None)


# --------------------------------------------------------------------------------------------- failures
def test_failure_names_the_notebook_keeps_earlier_results_and_resumes(tmp_path: Path, kernel_env: None,
                                                                      capsys: pytest.CaptureFixture) -> None:
    notebooks, run_dir = tmp_path / "notebooks", tmp_path / "run"
    notebooks.mkdir()
    write_notebook(notebooks / "01_first.ipynb", "assert 'dataset' not in globals()  # undeclared")
    broken = write_notebook(notebooks / "02_broken.ipynb", "raise ValueError('boom')")
    write_notebook(notebooks / "03_last.ipynb", "pass")
    args = ["--preset", "tiny", "--run-dir", str(run_dir), "--notebooks-dir", str(notebooks)]

    assert pipeline.main(args) == 1
    out = capsys.readouterr().out
    assert "02_broken" in out and "ValueError: boom" in out and str(run_dir / "02_broken.ipynb") in out
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["failed"] == "02_broken"
    statuses = {r["notebook"]: r["status"] for r in summary["notebooks"]}
    assert statuses == {"01_first": "ok", "02_broken": "failed", "03_last": "not run"}
    assert (run_dir / "01.done.json").is_file() and not (run_dir / "02.done.json").exists()
    assert (run_dir / "02_broken.ipynb").is_file()                      # the executed copy, with the error
    done = json.loads((run_dir / "01.done.json").read_text())
    assert done["key_metrics"] == {"preset": "tiny", "value": 1.5}

    write_notebook(broken, "pass")                                      # fix it, then resume
    assert pipeline.main(["--resume", str(run_dir)]) == 0
    summary = json.loads((run_dir / "summary.json").read_text())
    statuses = {r["notebook"]: r["status"] for r in summary["notebooks"]}
    assert statuses == {"01_first": "skipped", "02_broken": "ok", "03_last": "ok"}
    assert summary["preset"] == "tiny"


def test_run_notebook_reports_missing_metrics(tmp_path: Path, kernel_env: None) -> None:
    path = tmp_path / "05_silent.ipynb"
    params = new_code_cell('run_dir = ""')
    params.metadata["tags"] = ["parameters"]
    nbformat.write(new_notebook(cells=[params, new_code_cell("x = 1")], metadata=KERNEL), path)
    record = run_notebook(path, tmp_path / "run", {"run_dir": str(tmp_path / "run"), "preset": "tiny"})
    assert record["status"] == "failed" and "metrics" in record["error"]
    assert record["parameters"] == {"run_dir": str(tmp_path / "run")}


# --------------------------------------------------------------------------------------------- bad inputs
def _cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "grosslib.pipeline", *args], capture_output=True, text=True,
                          timeout=120, cwd=cwd)


@pytest.mark.parametrize("args, problem", [
    (["--preset", "huge"], "unknown preset 'huge'"),
    (["--preset", "tiny", "--dataset", "mnist"], "unknown dataset 'mnist'"),
    (["--preset", "tiny", "--device", "gpu0"], "unknown device"),
    (["--preset", "tiny", "-p", "learning_rate=1"], "-p learning_rate"),
    (["--preset", "tiny", "-p", "checkpoint=typo.pt"], "checkpoint=typo.pt: no such file"),
    (["--preset", "tiny", "-p", "overrides={'fine_tune': {'lr': 1}}"], "unknown stage 'fine_tune'"),
    (["--preset", "tiny", "-p", "overrides={'full': {'learning_rate': 1}}"], "learning_rate"),
])
def test_bad_inputs_end_in_one_line_before_any_work(args: list[str], problem: str, tmp_path: Path,
                                                   kernel_env: None) -> None:
    run_dir = tmp_path / "run"
    result = _cli(*args, "--run-dir", str(run_dir))
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and problem in lines[0], result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert not run_dir.exists()                                   # nothing written: the run dir stays usable


def test_cuda_without_a_gpu_is_refused(tmp_path: Path, kernel_env: None) -> None:
    if torch_cuda_available():
        pytest.skip("a CUDA device is present")
    result = _cli("--preset", "tiny", "--device", "cuda", "--run-dir", str(tmp_path / "run"))
    assert result.returncode == 2 and "CUDA is not available" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "run").exists()


def torch_cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _children(pid: int) -> set[int]:
    """Every live descendant of ``pid`` (from /proc)."""
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        parent = frontier.pop()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == parent and int(entry.name) not in found:
                found.add(int(entry.name))
                frontier.add(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc to find the kernel processes")
def test_sigterm_stops_the_pipeline_with_a_resume_hint_and_no_kernel_left(tmp_path: Path,
                                                                           kernel_env: None) -> None:
    notebooks, run_dir = tmp_path / "notebooks", tmp_path / "run"
    notebooks.mkdir()
    write_notebook(notebooks / "01_first.ipynb", "pass")
    write_notebook(notebooks / "02_slow.ipynb", "import time\ntime.sleep(120)")
    process = subprocess.Popen([sys.executable, "-m", "grosslib.pipeline", "--preset", "tiny", "--run-dir",
                                str(run_dir), "--notebooks-dir", str(notebooks)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 90
    while not (run_dir / "01.done.json").is_file() or not _children(process.pid):
        assert process.poll() is None and time.monotonic() < deadline, "the pipeline never reached 02"
        time.sleep(0.5)
    time.sleep(3.0)                                              # notebook 02's kernel is sleeping now
    kernels = _children(process.pid)
    os.kill(process.pid, signal.SIGTERM)
    out, _ = process.communicate(timeout=60)
    assert process.returncode == 130, out
    assert "INTERRUPTED during 02_slow" in out and f"--resume {run_dir.resolve()}" in out
    assert "Traceback" not in out
    deadline = time.monotonic() + 15
    while any(_alive(pid) for pid in kernels) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not any(_alive(pid) for pid in kernels), "a notebook kernel outlived the pipeline"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["interrupted"] == "02_slow"
    assert (run_dir / "01.done.json").is_file() and not (run_dir / "02.done.json").exists()


def test_main_job_prefers_fashion_mnist_when_present(monkeypatch: pytest.MonkeyPatch) -> None:
    """--preset auto: intro on Fashion-MNIST when its files are here, quick on digits otherwise, with why."""
    monkeypatch.setattr(pipeline, "check_available", lambda name: "IDX files in /somewhere")
    preset, dataset, why = pipeline.choose_main_job()
    assert (preset, dataset) == ("intro", "fashion-mnist") and "/somewhere" in why
    monkeypatch.setattr(pipeline, "check_available", lambda name: "a download into /cache (no IDX files)")
    preset, dataset, why = pipeline.choose_main_job()
    assert (preset, dataset) == ("quick", "digits") and "apt-get install dataset-fashion-mnist" in why


def test_auto_preset_runs_the_chosen_preset_and_says_why(tmp_path: Path, kernel_env: None,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    write_notebook(notebooks / "01_only.ipynb", "pass")
    monkeypatch.setattr(pipeline, "choose_main_job", lambda: ("tiny", "digits", "because of the test"))
    summary = run_pipeline("auto", run_dir=tmp_path / "run", notebooks_dir=notebooks, echo=None)
    assert summary["status"] == "ok" and summary["preset"] == "tiny" and summary["dataset"] == "digits"
    assert summary["why"] == "because of the test"
    assert "Why this dataset: because of the test" in (tmp_path / "run" / "summary.md").read_text()
    record = json.loads((tmp_path / "run" / "01.done.json").read_text())
    assert record["key_metrics"]["preset"] == "tiny"                 # the notebook got the resolved preset
