"""BTD benchmark: every (layer, group size) pair of PaperNet's conv2..conv4, to the paper's stopping rule.

For each of conv2 (32 -> 32), conv3 (32 -> 64) and conv4 (64 -> 64) the group sizes 1, 2, 4, ... up to
the input channels are decomposed as one warm-started series (each size starts from the expansion of
the previous one, exactly what :func:`grosslib.btd_series` does), stopping when the relative error
decreases by less than ``--tol`` in one step (method.md): 6 + 6 + 7 = 19 pairs. Per pair it reports
the steps, the seconds and the final error; then the total.

It also compares one block (s = t, a Tucker-2 with ranks (t, t), solved by HOOI) against TensorLy's
``partial_tucker(w, rank=[t, t], modes=[0, 1], tol=tol, n_iter_max=max_iter)`` on the same float64
weight and backend (pytorch), both from their SVD initialisation: median of ``--repeats`` interleaved
timings, and both errors.

``--baseline REV`` also times the btd.py of git revision REV (e.g. ``HEAD``) on the same pairs,
interleaved layer by layer with the current one, for a before/after comparison in the same conditions
(slow: minutes); ``--baseline-threads caller,1`` runs it with the process's thread setting and with
one intra-op thread, separating the algorithm's gain from the threading's. ``--compare-threads``
adds a run of the current btd with the caller's thread setting (``num_threads=None``) instead of its
default of one intra-op thread.

Usage::

    python benchmarks/bench_btd.py [--weights random|PATH] [--tol 1e-6] [--seed 0] [--threads 2]
        [--max-iter 500000] [--repeats 5] [--baseline REV] [--baseline-threads caller,1]
        [--compare-threads] [--write-results] [--note TEXT]

``--write-results`` replaces the section ``## BTD (bench_btd.py)`` of ``benchmarks/RESULTS.md``
and keeps the rest of the file.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from types import ModuleType
from typing import Any

import tensorly as tl
import torch
from tensorly.decomposition import partial_tucker
from tensorly.tenalg import multi_mode_dot

from grosslib.models import PaperNet, build_papernet
from grosslib.paths import BENCHMARKS_DIR, REPO_ROOT
from grosslib.runinfo import environment_info
from grosslib.series import default_group_sizes

btd_module = importlib.import_module("grosslib.btd")  # the module (grosslib.btd is the function)

SECTION = "## BTD (bench_btd.py)"
LAYERS = ("conv2", "conv3", "conv4")


def load_weights(spec: str, seed: int) -> tuple[dict[str, torch.Tensor], str]:
    """conv2..conv4 weights (float64) of a He-initialised PaperNet or of a saved state_dict."""
    if spec == "random":
        net = build_papernet(seed=seed)
        source = f"random He-initialised PaperNet (`build_papernet(seed={seed})`)"
    else:
        state = torch.load(spec, map_location="cpu", weights_only=True)
        for key in ("state_dict", "model_state_dict", "model"):
            if isinstance(state, dict) and isinstance(state.get(key), dict):
                state = state[key]
        net = PaperNet(in_channels=state["conv1.weight"].shape[1], num_classes=state["fc2.weight"].shape[0])
        net.load_state_dict(state)
        source = f"trained PaperNet state_dict `{spec}`"
    return {name: getattr(net, name).weight.detach().to(torch.float64) for name in LAYERS}, source


def load_baseline(revision: str) -> ModuleType:
    """grosslib/btd.py as of a git revision, imported as a module of the grosslib package."""
    source = subprocess.run(["git", "show", f"{revision}:grosslib/btd.py"], cwd=REPO_ROOT, check=True,
                            capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / "btd_baseline.py"
    path.write_text(source)
    name = "grosslib._btd_baseline"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def with_threads(btd_fn, threads: int):
    """``btd_fn`` run with ``threads`` intra-op threads (restored afterwards)."""
    def run(*args: Any, **kwargs: Any):
        previous = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            return btd_fn(*args, **kwargs)
        finally:
            torch.set_num_threads(previous)
    return run


def run_series(btd_fn, weight: torch.Tensor, tol: float, max_iter: int, **options: Any) -> list[dict]:
    """The warm-started series of btd_series, timed size by size."""
    rows, previous = [], None
    for s in default_group_sizes(weight.shape[1]):
        start = time.perf_counter()
        result = btd_fn(weight, s, tol=tol, max_iter=max_iter, init="svd" if previous is None else previous,
                        **options)
        seconds = time.perf_counter() - start
        rows.append({"s": s, "steps": result.n_iter, "seconds": seconds, "error": result.error,
                     "converged": result.converged})
        previous = result
    return rows


def tucker_comparison(weight: torch.Tensor, tol: float, max_iter: int, repeats: int) -> dict:
    """One block (s = t) by btd (HOOI) against TensorLy's partial_tucker, interleaved, medians."""
    t = weight.shape[1]

    def ours() -> float:
        return btd_module.btd(weight, t, tol=tol, max_iter=max_iter).error

    def tensorly() -> float:
        with btd_module.pytorch_backend():
            (core, factors), _ = partial_tucker(weight, rank=[t, t], modes=[0, 1], tol=tol,
                                                n_iter_max=max_iter, init="svd")
            approximation = multi_mode_dot(core, factors, modes=[0, 1])
            return float(tl.norm(weight - approximation) / tl.norm(weight))

    times: dict[str, list[float]] = {"ours": [], "tensorly": []}
    errors = {"ours": ours(), "tensorly": tensorly()}  # warm-up
    for r in range(repeats):
        for name, fn in ((("tensorly", tensorly), ("ours", ours)) if r % 2 else
                         (("ours", ours), ("tensorly", tensorly))):
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    ours_s, tensorly_s = statistics.median(times["ours"]), statistics.median(times["tensorly"])
    return {"t": t, "ours_s": ours_s, "tensorly_s": tensorly_s, "ratio": ours_s / tensorly_s,
            "ours_error": errors["ours"], "tensorly_error": errors["tensorly"]}


def markdown(results: dict, env: dict, args: argparse.Namespace, command: str) -> str:
    variants = results["variants"]
    names = list(variants)
    main = names[0]
    head = "| layer | s | " + " | ".join(
        f"{label} steps | {label} s | {label} error" for label in names) + " |"
    lines = [head, "| --- | ---: | " + " | ".join("---: | ---: | ---:" for _ in names) + " |"]
    for layer in LAYERS:
        for i, row in enumerate(variants[main][layer]):
            cells = []
            for name in names:
                other = variants[name][layer][i]
                cells.append(f"{other['steps']} | {other['seconds']:.2f} | {other['error']:.6f}")
            lines.append(f"| {layer} | {row['s']} | " + " | ".join(cells) + " |")
    totals = {name: sum(r["seconds"] for layer in LAYERS for r in variants[name][layer]) for name in names}
    steps = {name: sum(r["steps"] for layer in LAYERS for r in variants[name][layer]) for name in names}
    mean_error = {name: statistics.mean(r["error"] for layer in LAYERS for r in variants[name][layer])
                  for name in names}
    per_layer = {name: {layer: sum(r["seconds"] for r in variants[name][layer]) for layer in LAYERS}
                 for name in names}
    lines.append("| **total** | | " + " | ".join(
        f"{steps[n]} | **{totals[n]:.1f}** | mean {mean_error[n]:.6f}" for n in names) + " |")
    summary = "\n".join(
        f"- {n}: **{totals[n]:.1f} s** ("
        + ", ".join(f"{layer} {per_layer[n][layer]:.1f}" for layer in LAYERS)
        + f"), {steps[n]} steps, mean final error {mean_error[n]:.6f}" for n in names)
    tucker_rows = ["| layer | t | btd (HOOI) | partial_tucker | ratio | btd error | partial_tucker error |",
                   "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for layer, c in results["tucker"].items():
        tucker_rows.append(f"| {layer} | {c['t']} | {c['ours_s'] * 1e3:.1f} ms | "
                           f"{c['tensorly_s'] * 1e3:.1f} ms | **{c['ratio']:.2f}** | {c['ours_error']:.9f} | "
                           f"{c['tensorly_error']:.9f} |")
    load = results["load"]
    note = f"\n{args.note}\n" if args.note else ""
    return f"""{SECTION}

Run {results['date']}: `{command}`

Weights: {results['source']}, float64. Each layer's group sizes are one warm-started series
(`btd_series`), stopping rule: decrease of the relative error below {args.tol:g} in one step
(max_iter {args.max_iter}). Process threads: `torch.set_num_threads({args.threads})`. Variants, run
interleaved layer by layer: {results['variant_notes']}.

Totals (19 pairs):

{summary}

{chr(10).join(lines)}

One block (s = t) against TensorLy's `partial_tucker(w, rank=[t, t], modes=[0, 1], tol={args.tol:g},
n_iter_max={args.max_iter})`, same weight and backend (pytorch, float64), both from the SVD
initialisation; median of {args.repeats} interleaved timings (ratio = btd / partial_tucker):

{chr(10).join(tucker_rows)}

Machine: {env['cpu']}, {env['cpu_count']} CPUs ({env['cpu_affinity']} usable), {env['platform']},
Python {env['python']}, torch {env['torch']}, tensorly {env['tensorly']}.
The CPUs are shared with other engineers' jobs: load average {load['start']} at the start,
{load['end']} at the end; absolute times are noisy (the variants are interleaved to compare them
under the same load).
{note}"""


def write_section(text: str, path: Path) -> None:
    """Replace this benchmark's section of RESULTS.md (or append it), keep the rest of the file."""
    content = path.read_text() if path.exists() else "# Benchmark results\n"
    start = content.find(SECTION)
    if start < 0:
        content = content.rstrip("\n") + "\n\n" + text
    else:
        end = content.find("\n## ", start + len(SECTION))
        content = content[:start] + text.rstrip("\n") + "\n" + ("" if end < 0 else content[end:])
    path.write_text(content.rstrip("\n") + "\n")


def load_average() -> str:
    return " / ".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", default="random",
                        help="'random' (He-initialised PaperNet) or the path of a trained PaperNet "
                             "state_dict")
    parser.add_argument("--tol", type=float, default=1e-6, help="stopping rule: minimum decrease per step")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random PaperNet")
    parser.add_argument("--max-iter", type=int, default=500_000)
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads for the process")
    parser.add_argument("--repeats", type=int, default=5, help="timings of the s = t comparison")
    parser.add_argument("--baseline", metavar="REV", default=None,
                        help="also time grosslib/btd.py of this git revision (e.g. HEAD)")
    parser.add_argument("--baseline-threads", default="caller",
                        help="comma-separated thread settings for the baseline runs: 'caller' (the process's "
                             "setting) and/or a number of intra-op threads, e.g. 'caller,1'")
    parser.add_argument("--compare-threads", action="store_true",
                        help="also run btd with num_threads=None (the process's thread setting)")
    parser.add_argument("--note", default="", help="a line added to the RESULTS.md section")
    parser.add_argument("--write-results", action="store_true", help=f"update {SECTION!r} in RESULTS.md")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    weights, source = load_weights(args.weights, args.seed)
    load_start = load_average()
    variants: dict[str, tuple[Any, dict]] = {"btd": (btd_module.btd, {})}
    notes = ["`btd` = this grosslib/btd.py (defaults: momentum on, one intra-op thread while iterating)"]
    if args.compare_threads:
        variants["btd, caller threads"] = (btd_module.btd, {"num_threads": None})
        notes.append(f"`btd, caller threads` = the same with `num_threads=None` ({args.threads} threads)")
    if args.baseline:
        baseline = load_baseline(args.baseline).btd
        for setting in (x.strip() for x in args.baseline_threads.split(",") if x.strip()):
            if setting == "caller":
                name = f"btd@{args.baseline}"
                variants[name] = (baseline, {})
                notes.append(f"`{name}` = grosslib/btd.py of git revision {args.baseline} "
                             f"({args.threads} threads)")
            else:
                name = f"btd@{args.baseline}, {int(setting)} thread"
                variants[name] = (with_threads(baseline, int(setting)), {})
                notes.append(f"`{name}` = the same run inside `torch.set_num_threads({int(setting)})`")
    results: dict[str, Any] = {"variants": {name: {} for name in variants}, "source": source,
                               "variant_notes": "; ".join(notes),
                               "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
    for layer in LAYERS:
        for name, (fn, options) in variants.items():
            rows = results["variants"][name][layer] = run_series(fn, weights[layer], args.tol, args.max_iter,
                                                                 **options)
            for row in rows:
                print(f"{name:>22} {layer} s={row['s']:3d} steps={row['steps']:6d} {row['seconds']:8.2f} s "
                      f"error={row['error']:.6f}", flush=True)
            print(f"{name:>22} {layer} total {sum(r['seconds'] for r in rows):.1f} s", flush=True)
    for name in variants:
        total = sum(r["seconds"] for layer in LAYERS for r in results["variants"][name][layer])
        print(f"TOTAL {name}: {total:.1f} s", flush=True)
    results["tucker"] = {}
    for layer in LAYERS:
        c = tucker_comparison(weights[layer], args.tol, args.max_iter, args.repeats)
        results["tucker"][layer] = c
        print(f"s=t {layer}: btd {c['ours_s'] * 1e3:.1f} ms, partial_tucker {c['tensorly_s'] * 1e3:.1f} ms, "
              f"ratio {c['ratio']:.2f}; errors {c['ours_error']:.9f} / {c['tensorly_error']:.9f}", flush=True)
    results["load"] = {"start": load_start, "end": load_average()}
    if args.write_results:
        command = "python benchmarks/bench_btd.py " + " ".join(argv if argv is not None else sys.argv[1:])
        text = markdown(results, environment_info(), args, command.strip())
        write_section(text, BENCHMARKS_DIR / "RESULTS.md")
        print(f"wrote {BENCHMARKS_DIR / 'RESULTS.md'}")
    return results


if __name__ == "__main__":
    main()
