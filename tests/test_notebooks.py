"""The numbered notebooks: structure (fast) and end-to-end runs with papermill (slow, preset 'tiny').

To cover a new notebook, add one :class:`NotebookCase` row to ``CASES``: its file stem, the parameters
to run it with, a function asserting on the metrics it records, and the figures it must write.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import nbformat
import pytest
import torch
from gross_helpers import write_kernelspec

from grosslib import notebook as nu
from grosslib import paths, presets
from grosslib.models import build_papernet
from grosslib.pipeline import COMMON_PARAMETERS, declared_parameters, run_notebook
from grosslib.plots import save_figure

TINY = {"preset": "tiny", "dataset": "digits", "device": "cpu", "seed": 0}


# --------------------------------------------------------------------------------------------- assertions
def check_01(record: dict[str, Any]) -> None:
    """Notebook 01: bottleneck == dense conv with W_hat; error non-increasing in the group size."""
    m = record["metrics"]
    assert m["equivalence_ok"] is True
    assert m["max_equivalence_error"] < 1e-9
    assert len(m["equivalence"]) == 6 + 6 + 7                      # conv2, conv3, conv4 sizes
    assert all(row["max abs error"] < 1e-9 for row in m["equivalence"])
    assert m["errors_non_increasing"] == {"conv2": True, "conv3": True, "conv4": True}
    for errors in m["errors_by_layer"].values():
        assert all(b <= a + 1e-12 for a, b in zip(errors, errors[1:]))
    assert m["square_layers_exact_at_full_size"] == {"conv2": True, "conv4": True}
    table1 = {row["layer"]: row for row in m["table1"]}
    grouped, first, last = table1["R (grouped)"], table1["P (1x1)"], table1["Q (1x1)"]
    assert grouped["groups"] == 32 // 4 and grouped["padding"] == "1x1" and not grouped["bias"]
    assert first["filter"] == last["filter"] == "1x1" and last["bias"] and not first["bias"]
    assert record["key_metrics"]["equivalence_ok"] is True


def check_02(record: dict[str, Any]) -> None:
    """Notebook 02: Psi checks, series prefixes, gradient reach, sampling distribution."""
    m = record["metrics"]
    assert m["psi_ok"] is True and m["psi"]["composition"] == 0.0 and m["psi"]["conv"] < 1e-12
    assert m["group_sizes"] == [1, 2, 4, 8, 16, 32]
    assert m["prefix_ok"] is True and m["max_prefix_error"] < 1e-9
    sizes = [str(s) for s in m["group_sizes"]]
    assert list(m["gradient_reach"]) == sizes
    for k, size in enumerate(sizes):
        assert m["gradient_reach"][size] == [i <= k for i in range(len(sizes))]
    assert m["gradient_reach_ok"] is True
    assert {r["reading"] for r in m["sampling"]} == {"literal", "normalized"}
    for reading in ("literal", "normalized"):
        for alpha in (0.0, 4.0, 8.0):
            rows = [r for r in m["sampling"] if r["alpha"] == alpha and r["reading"] == reading]
            assert len(rows) == 7 and abs(sum(r["probability"] for r in rows) - 1) < 1e-12
            probs = [r["probability"] for r in rows]
            assert all(b <= a + 1e-15 for a, b in zip(probs, probs[1:]))
            scale = 7 if reading == "normalized" else 1        # eq. 8: exp(-alpha i) or exp(-alpha i / N)
            assert probs[0] / probs[1] == pytest.approx(math.exp(alpha / scale), rel=1e-9)
    assert all(abs(r["probability"] - 1 / 7) < 1e-12 for r in m["sampling"] if r["alpha"] == 0.0)
    assert m["sampling_max_gap"] < 0.05


def check_03(record: dict[str, Any]) -> None:
    """Notebook 03: full network, 252 configurations, GroSS curves, fixed baselines, Table 2."""
    m = record["metrics"]
    assert m["n_configs"] == 252 and m["full_macs"] == 5_081_600
    assert m["group_sizes"] == {"conv2": [1, 2, 4, 8, 16, 32], "conv3": [1, 2, 4, 8, 16, 32],
                                "conv4": [1, 2, 4, 8, 16, 32, 64]}
    assert m["fixed_configs"] == {"1": [1, 1, 1], "4": [4, 4, 4], "16": [16, 16, 16], "32": [32, 32, 32]}
    assert m["fixed_macs"] == {"1": 1_906_176, "4": 2_210_304, "16": 3_426_816, "32": 5_048_832}
    assert m["largest_config"] == [32, 32, 64]
    for key in ("fixed_accuracy", "gross_accuracy_at_fixed"):
        assert set(m[key]) == {"1", "4", "16", "32"} and all(0.0 <= v <= 1.0 for v in m[key].values())
    for s in m["fixed_accuracy"]:
        expected = 100 * (m["gross_accuracy_at_fixed"][s] - m["fixed_accuracy"][s])
        assert abs(m["gross_minus_fixed_pp"][s] - expected) < 1e-9
    assert 0.0 <= m["full_test_accuracy"] <= 1.0
    assert [row["network"] for row in m["table2"]] == ["full", "fixed 32", "fixed 16", "fixed 4", "fixed 1"]
    assert m["table2"][0]["paper median (%)"] == 83.88
    assert {(row["stage"], row["config"]) for row in m["learning_curves"]} == {
        ("reconstruction", "1-1-1"), ("reconstruction", "32-32-64"), ("fine-tuning", "1-1-1"),
        ("fine-tuning", "32-32-64")}
    recon_metrics = {row["metric"] for row in m["learning_curves"] if row["stage"] == "reconstruction"}
    assert "recon_loss" in recon_metrics


def check_04(record: dict[str, Any]) -> None:
    """Notebook 04: GroSS at alpha 0, 4, 8; deficits at the fixed configurations; all configurations."""
    m = record["metrics"]
    assert m["alphas"] == [0.0, 4.0, 8.0]
    assert set(m["deficits"]) == {"0", "4", "8"}
    for alpha, per_size in m["deficits"].items():
        assert set(per_size) == {"1", "4", "16", "32"}
        values = list(per_size.values())
        mean = sum(values) / len(values)
        std = (sum((v - mean) ** 2 for v in values) / len(values)) ** 0.5
        assert abs(m["flatness"][alpha] - std) < 1e-9
        assert m["favours"][alpha] in ("small", "large", "neither")
    assert m["flattest_alpha"] in (0.0, 4.0, 8.0)
    assert m["n_configs_per_alpha"] == {"0": 252, "4": 252, "8": 252}
    assert set(m["mean_accuracy_all_configs"]) == {"0", "4", "8"}


def check_05(record: dict[str, Any]) -> None:
    """Notebook 05: 252 configurations on validation, Pareto front, picks under budgets, Table 3."""
    m = record["metrics"]
    assert m["n_configs"] == 252 and m["search_split"] == "val"
    assert 1 <= m["n_pareto"] <= 252 and len(m["pareto_configs"]) == m["n_pareto"]
    assert abs(m["ascending_share_all"] - 77 / 252) < 1e-12
    assert 0.0 <= m["ascending_share_pareto"] <= 1.0
    assert m["budget_macs"] == {"4": 2_210_304, "16": 3_426_816}
    picks = m["selections"]
    assert [p["budget"] for p in picks] == [4, 4, 16, 16] and [p["rank"] for p in picks] == [1, 2, 1, 2]
    assert all(p["macs"] <= m["budget_macs"][str(p["budget"])] for p in picks)
    table = m["table3"]
    assert [row["role"] for row in table] == ["fixed", "search #1", "search #2"] * 2
    for row in table:
        if row["role"] != "fixed":
            assert 0.0 <= row["after train (%)"] <= 100.0
    assert set(m["delta_wrt_fixed_pp"]) == {p["name"] for p in picks}


def check_06(record: dict[str, Any]) -> None:
    """Notebook 06: a pipeline run adopted as a one-seed study; every table and a verdict per claim."""
    m = record["metrics"]
    assert m["seeds"] == [0] and m["preset"] == "tiny" and m["dataset"] == "digits"
    assert [row["network"] for row in m["table2"]] == ["full", "fixed 32", "fixed 16", "fixed 4", "fixed 1"]
    assert len(m["deficits"]) == 3 * 4 and len(m["ranking"]) == 12
    assert [row["role"] for row in m["table3"]] == ["fixed", "search #1", "search #2"] * 2
    assert [row["budget"] for row in m["table3"]] == [16] * 3 + [4] * 3
    assert set(m["kendall_tau"]) == {"0", "mean over seeds"}
    assert all(-1.0 <= t <= 1.0 for t in m["kendall_tau"].values() if t == t)   # NaN when constant
    assert set(m["verdicts"]) == {"claim1", "claim2", "claim3", "claim4"}
    assert set(m["verdicts"].values()) <= {"holds here", "does not hold here"}
    assert [row["claim"][:3] for row in m["claims"]] == ["(1)", "(2)", "(3)", "(4)"]
    assert m["schedule"]["full"]["epochs"] == 1 and m["schedule_note"] == ""
    assert m["failed_runs"] == [] and record["parameters"]["failed_run_fraction"] == 0.0   # tiny: keep all
    # the claims with 95% intervals (grosslib.verdicts): one seed gives no interval, so every verdict is
    # inconclusive; claim 3 under the literal reading only (a pipeline run samples with it)
    with_ci = m["claims_with_intervals"]
    assert [(c["id"], c["reading"]) for c in with_ci["claims"]] == [
        ("1a", None), ("1b", None), ("2", None), ("3", "literal"), ("4", None)]
    assert all(c["n"] == 1 and c["verdict"] == "inconclusive" for c in with_ci["claims"])


def check_07(record: dict[str, Any]) -> None:
    """Notebook 07: ResNet-8 decomposed, searched under MACs and latency, picks exported exactly."""
    m = record["metrics"]
    blocks = [f"layer{s}.0.conv{c}" for s in (1, 2, 3) for c in (1, 2)]
    assert m["network"]["depth"] == 8 and m["network"]["widths"] == [8, 16, 32]
    # by hand: stem 3*8*9 + 16; blocks' 3x3 convs, BatchNorm (2 per channel), the 1x1 shortcuts, FC
    assert m["network"]["params"] == (3 * 8 * 9 + 16) + (2 * 8 * 8 * 9 + 4 * 8) + (
        8 * 16 * 9 + 16 * 16 * 9 + 4 * 16) + (8 * 16 + 32) + (16 * 32 * 9 + 32 * 32 * 9 + 4 * 32) + (
        16 * 32 + 64) + (32 * 10 + 10) == 19_954
    eligible = {row["conv"]: row["decomposed"] for row in m["eligibility"]}
    assert [c for c, ok in eligible.items() if ok] == blocks
    assert eligible["conv1"] is False and eligible["layer2.0.downsample.0"] is False
    assert eligible["layer3.0.downsample.0"] is False
    assert list(m["group_sizes"]) == blocks and m["n_decomposed"] == 6
    assert m["n_configs"] == math.prod(len(v) for v in m["group_sizes"].values()) == 4 ** 3 * 5 ** 2 * 6
    assert m["budget_config"] == [4] * 6
    budget = {"MAC": ("macs", m["budget_macs"]), "latency": ("latency_ms", m["budget_latency_ms"])}
    limit = record["parameters"]["max_evaluations"]
    for label, search in m["searches"].items():
        history = search["history"]
        assert 1 <= search["evaluations"] <= limit and len(history) == search["evaluations"]
        assert [h["evaluation"] for h in history] == list(range(1, len(history) + 1))
        assert len({h["name"] for h in history}) == len(history)             # each scored once
        best = [max(h["score"] for h in history[: i + 1]) for i in range(len(history))]
        assert [h["best_so_far"] for h in history] == best
        assert search["score"] == best[-1] and search["name"] in {h["name"] for h in history}
        assert all(h["feasible"] for h in history)
        column, limit_value = budget[label]
        pick_cost = search["macs"] if column == "macs" else search["latency_ms"]
        assert pick_cost <= limit_value
        assert all(h[column] <= limit_value for h in history)
    mac_pick, latency_pick = m["searches"]["MAC"]["config"], m["searches"]["latency"]["config"]
    assert m["picks_differ"] == (mac_pick != latency_pick)
    assert [row["pick"] for row in m["exports"]] == ["MAC", "latency"]
    for row in m["exports"]:
        assert abs(row["exported test accuracy"] - row["gross test accuracy"]) <= 1e-6
        assert abs(row["difference"]) <= 1e-6 and row["exported macs"] == row["macs"]
    assert m["export_max_difference"] <= 1e-6
    assert all(row["within budget"] is True for row in m["picks"])
    assert [row["pick"] for row in m["picks"]] == [m["searches"][k]["name"] for k in ("MAC", "latency")]
    spearman = m["latency_spearman"]
    assert spearman == "nan" or -1.0 <= spearman <= 1.0
    assert m["latency_mean_rel_error"] >= 0.0 and m["latency_max_rel_error"] >= m["latency_mean_rel_error"]
    validated = [row["config"] for row in m["latency_validation"]]
    assert len(validated) == record["parameters"]["n_latency_validation"] == len(set(validated))
    assert validated[0] == "4-4-4-4-4-4"
    assert set(m["wall_seconds"]) >= {"full", "btd", "reconstruct", "finetune", "mac_search",
                                      "latency_search"}
    assert record["key_metrics"]["n_configs"] == m["n_configs"]


@dataclass(frozen=True)
class NotebookCase:
    """One notebook run: its stem, parameters (on top of ``TINY``), metrics check and figures."""

    notebook: str
    check: Callable[[dict[str, Any]], None]
    figures: tuple[str, ...] = ()
    parameters: dict[str, Any] = field(default_factory=dict)


CASES: list[NotebookCase] = [
    NotebookCase("01_btd_bottleneck_equivalence", check_01, ("01_btd_error_vs_group_size.png",)),
    NotebookCase("02_gross_series_and_psi", check_02,
                 ("02_psi_expansion.png", "02_gradient_reach.png", "02_sampling_distribution.png")),
    NotebookCase("03_simultaneous_training", check_03, ("03_learning_curves.png", "03_table2.png"),
                 {"data_limit": 64}),
    NotebookCase("04_temperature_study", check_04,
                 ("04_deficit_fixed_configs.png", "04_accuracy_all_configs.png"), {"data_limit": 64}),
    NotebookCase("05_exhaustive_search", check_05, ("05_accuracy_vs_macs.png", "05_table3.png"),
                 {"data_limit": 64}),
    NotebookCase("06_reproduction_report", check_06,
                 ("06_table2.png", "06_figure1_left.png", "06_figure1_right.png", "06_table3.png",
                  "06_ranking.png"), {"data_limit": 64, "failed_run_fraction": 0.0}),
    NotebookCase("07_gross_on_resnet", check_07,
                 ("07_learning_curves.png", "07_latency_validation.png", "07_accuracy_vs_macs.png",
                  "07_accuracy_vs_latency.png", "07_search_progress.png"),
                 {"data_limit": 64, "overrides": {}, "max_evaluations": 10, "population": 4,
                  "latency_repeats": 2, "n_latency_validation": 3}),
]
#: Notebooks whose committed copies must carry outputs (nbval compares against them) and inline plots.
COMMITTED_WITH_OUTPUTS = tuple(c.notebook for c in CASES)


@pytest.fixture(scope="module")
def kernel_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A ``python3`` kernelspec running this interpreter, first on ``$JUPYTER_PATH``."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("JUPYTER_PATH", str(write_kernelspec(tmp_path_factory.mktemp("jupyter"))))
        yield


# --------------------------------------------------------------------------------------------- end to end
@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=[c.notebook[:2] for c in CASES])
def test_notebook_runs_and_records_metrics(case: NotebookCase, tmp_path: Path, kernel_env: None) -> None:
    run_dir, figures = tmp_path / "run", tmp_path / "figures"
    parameters = {**TINY, "run_dir": str(run_dir), "figures_dir": str(figures), **case.parameters}
    record = run_notebook(paths.NOTEBOOKS_DIR / f"{case.notebook}.ipynb", run_dir, parameters)
    assert record["status"] == "ok", f"{case.notebook} failed: {record['error']} (see {record['executed']})"
    metrics_file = run_dir / "metrics" / f"{case.notebook}.json"
    written = json.loads(metrics_file.read_text())
    assert written["parameters"]["preset"] == "tiny" and written["environment"]["torch"] == torch.__version__
    assert written["notebook"] == case.notebook and written["key_metrics"]
    case.check(written)
    for name in case.figures:
        assert (figures / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    assert Path(record["executed"]).is_file()


# --------------------------------------------------------------------------------------------- structure
NOTEBOOKS = sorted(paths.NOTEBOOKS_DIR.glob("[0-9][0-9]_*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem[:2] for p in NOTEBOOKS])
def test_notebook_structure(path: Path) -> None:
    """Kernel python3, a literal-only parameters cell declaring the common parameters, metrics at the end."""
    nb = nbformat.read(path, as_version=4)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, "exactly one cell tagged 'parameters'"
    assert set(COMMON_PARAMETERS) <= set(declared_parameters(path))
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert "write_metrics(" in code[-1].source
    if path.stem in COMMITTED_WITH_OUTPUTS:
        assert all(c.execution_count is not None for c in code), "commit the notebook with its outputs"
        assert not any(o.output_type == "error" for c in code for o in c.outputs)
        images = [o for c in code for o in c.outputs if "image/png" in o.get("data", {})]
        shown = sum(c.source.count(".show(fig") for c in code)
        assert shown and len(images) == shown, f"{len(images)} inline plots for {shown} figures shown"


def _cells(path: Path) -> tuple[str, str, str]:
    """The notebook's imports cell, parameters cell and set-up cell (the one calling notebook.setup)."""
    code = [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]
    parameters = next(c for c in code if "parameters" in c.metadata.get("tags", []))
    setup = next(c for c in code if "notebook.setup(" in c.source)
    return code[0].source, parameters.source, setup.source


@pytest.mark.parametrize("preset", presets.preset_names())
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem[:2] for p in NOTEBOOKS])
def test_every_preset_passes_every_notebooks_setup(path: Path, preset: str, tmp_path: Path) -> None:
    """The notebook's own imports, parameters and set-up cells run for every registered preset."""
    imports, parameters, setup = _cells(path)
    namespace: dict[str, Any] = {}
    exec(imports, namespace)                                    # noqa: S102 - the notebook's own cells
    exec(parameters, namespace)                                 # noqa: S102
    namespace.update(preset=preset, run_dir=str(tmp_path / "run"), figures_dir=str(tmp_path / "figures"))
    if path.stem.startswith("06"):
        namespace["run_dir"] = ""                               # the committed study's records
    exec(setup, namespace)                                      # noqa: S102
    nb = namespace["nb"]
    assert nb.preset.name == preset and nb.number == int(path.stem[:2])
    assert nb.parameters["preset"] == preset
    if "experiments=True" in setup:
        expected = presets.get_preset(preset).replicates if namespace.get("replicates") is None else None
        assert expected is None or len(nb.seeds) == expected
        assert all(e.settings.name == preset for e in nb.experiments)


def test_every_dataset_has_its_shape() -> None:
    from grosslib.data import DATASET_NAMES

    assert set(nu.DATASET_SHAPES) == set(DATASET_NAMES)
    assert nu.dataset_shape("fashion-mnist") == (1, 10)


def test_setup_refuses_bad_parameters(tmp_path: Path) -> None:
    common = {"dataset": "digits", "run_dir": str(tmp_path), "figures_dir": str(tmp_path)}
    valid = "valid presets: tiny, quick, intro, study, paper"
    with pytest.raises(ValueError, match=f"unknown preset 'huge'; {valid}"):
        nu.setup(1, "x", preset="huge", **common)
    with pytest.raises(ValueError, match="unknown dataset"):
        nu.setup(1, "x", preset="tiny", **{**common, "dataset": "mnist"})
    with pytest.raises(ValueError, match="unknown stage 'fine_tune'"):
        nu.setup(3, "x", preset="tiny", overrides={"fine_tune": {"lr": 1.0}}, **common)
    with pytest.raises(ValueError, match="seed"):
        nu.setup(1, "x", preset="tiny", seed=1.5, **common)
    nb = nu.setup(1, "x", preset="quick", btd_max_iter=7, **common)
    assert nb.btd_options == {"tol": 1e-4, "max_iter": 7}              # the preset's options, then overrides
    guarded = nu.setup(1, "x", preset="study", btd_tol=1e-3, **common)
    assert guarded.btd_options == {"tol": 1e-3}                         # the preset's options, then overrides


def test_case_table_covers_every_notebook() -> None:
    """Every numbered notebook has a row in CASES (one line to add per new notebook)."""
    assert {p.stem for p in NOTEBOOKS} <= {c.notebook for c in CASES}


# --------------------------------------------------------------------------------------------- helpers
def test_save_figure_is_deterministic(tmp_path: Path) -> None:
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    first = save_figure(fig, 3, "line", directory=tmp_path)
    data = first.read_bytes()
    assert first == tmp_path / "03_line.png"
    assert save_figure(fig, 3, "line", directory=tmp_path).read_bytes() == data
    plt.close(fig)
    with pytest.raises(ValueError):
        save_figure(fig, 100, "line", directory=tmp_path)
    with pytest.raises(ValueError):
        save_figure(fig, 1, "bad/name.png", directory=tmp_path)


def test_write_metrics_is_json_with_context(tmp_path: Path) -> None:
    import pandas as pd

    path = nu.write_metrics(tmp_path, 7, "demo", {"t": torch.tensor([1.5]), "s": {1: True},
                                                  "df": pd.DataFrame({"a": [1]}), "p": tmp_path},
                            parameters={"preset": "tiny"}, device="cpu", key_metrics={"x": 1.0})
    assert path == tmp_path / "metrics" / "07_demo.json"
    data = json.loads(path.read_text())
    assert data["metrics"] == {"t": [1.5], "s": {"1": True}, "df": [{"a": 1}], "p": str(tmp_path)}
    assert data["parameters"] == {"preset": "tiny"} and data["environment"]["device"] == "cpu"
    assert data["key_metrics"] == {"x": 1.0}


def test_write_metrics_keeps_the_record_of_unchanged_results(tmp_path: Path) -> None:
    metrics = {"accuracy": 0.5, "missing": float("nan")}
    path = nu.write_metrics(tmp_path, 6, "demo", metrics, parameters={"seed": 0})
    first = json.loads(path.read_text())
    first["written"] = "2000-01-01T00:00:00"                     # mark the stored record
    path.write_text(json.dumps(first))
    nu.write_metrics(tmp_path, 6, "demo", dict(metrics), parameters={"seed": 0})
    assert json.loads(path.read_text())["written"] == "2000-01-01T00:00:00"   # same results: untouched
    nu.write_metrics(tmp_path, 6, "demo", {**metrics, "accuracy": 0.6}, parameters={"seed": 0})
    changed = json.loads(path.read_text())
    assert changed["metrics"]["accuracy"] == 0.6 and changed["written"] != "2000-01-01T00:00:00"
    nu.write_metrics(tmp_path, 6, "demo", {**metrics, "accuracy": 0.6}, parameters={"seed": 1})
    assert json.loads(path.read_text())["parameters"] == {"seed": 1}


def test_write_metrics_records_repository_paths_relative(tmp_path: Path) -> None:
    from grosslib import paths

    inside = paths.REPO_ROOT / "results" / "demo"
    path = nu.write_metrics(tmp_path, 6, "demo", {"a": 1}, parameters={
        "run_dir": str(inside), "figures_dir": paths.FIGURES_DIR, "elsewhere": str(tmp_path), "note": "x"})
    assert json.loads(path.read_text())["parameters"] == {
        "run_dir": "results/demo", "figures_dir": "figures", "elsewhere": str(tmp_path), "note": "x"}


def test_load_network_uses_an_existing_checkpoint(tmp_path: Path) -> None:
    trained = build_papernet(1, 10, seed=5)
    (tmp_path / "full").mkdir()
    torch.save({"state_dict": trained.state_dict()}, tmp_path / "full" / "model.pt")
    net, source = nu.load_network("full/model.pt", dataset="digits", run_dir=tmp_path)
    assert "trained" in source and net.conv1.in_channels == 1
    assert torch.equal(net.conv2.weight, trained.conv2.weight)
    with pytest.raises(FileNotFoundError, match="typo.pt"):        # never a silent fresh network
        nu.load_network("typo.pt", dataset="fashion-mnist", seed=5, run_dir=tmp_path)
    fresh, source = nu.load_network("", dataset="fashion-mnist", seed=5, run_dir=tmp_path)
    assert "freshly initialised" in source and fresh.conv1.in_channels == 1
    assert torch.equal(fresh.conv2.weight, trained.conv2.weight)      # same seed, same init
