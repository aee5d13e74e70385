"""BTD benchmark: grosslib's btd against the authors' algorithm and plain ALS, pair by pair; ResNet-18 timing.

PaperNet (default mode). For every (layer, group size) pair of conv2 (32 -> 32), conv3 (32 -> 64) and
conv4 (64 -> 64), the group sizes being ``default_group_sizes(t)`` (1, 2, 4, ... up to t: 6 + 6 + 7 =
19 pairs), three methods decompose the same float64 weight, one after another, the order alternating
between pairs (so that they share the machine's load):

- ``default``: ``btd(w, s, tol=tol, max_iter=max_iter)`` (ALS with the ridge phases
  ``grosslib.btd.RIDGE_SCHEDULE`` from the starts ``grosslib.btd.STARTS``; HOOI for s = t);
- ``authors``: ``btd_authors_ref(w, s, tol=tol, max_sweeps=max_iter)`` of ``tests/reference.py``, the
  authors' algorithm (block-wise Tucker-2 of the residual, sweep after sweep): the baseline, slow;
- ``plain ALS``: ``btd(w, s, ridge=(0.0,), ...)``, the previous ALS (no ridge phases), here from the
  same two starts (the previous default used the svd start only).

Per pair and method: final relative error, rho (``block_norm_ratio``), steps (sweeps for the
authors'), whether the stopping rule was met (the error decreased by less than ``--tol`` in one step
before ``--max-iter`` steps) and CPU seconds (``time.process_time()``, ``--threads`` intra-op threads,
1 by default). A line is printed per pair as it finishes, with its targets:

- default rho <= 3.0, default error <= authors' error + 0.002 and default rule met, at every pair;
- overall: the default's total CPU seconds at least 20x below the authors' total.

``--cache FILE.json`` makes the (30-40 min) run resumable: after each pair its rows (all methods) are
written to the JSON file atomically, keyed by (weights source, layer, s, method, tol, max_iter,
algorithm: ``grosslib.btd.ALGORITHM`` for default and plain ALS, so rows of an earlier one are redone), and
the pairs already there are not recomputed; an interrupted run (Ctrl-C) leaves it valid.
``--tucker`` adds the old comparison of one block (s = t: btd's HOOI) against TensorLy's
``partial_tucker`` (median of ``--repeats`` interleaved timings).

``--resnet18`` (instead of the PaperNet comparison) times ``btd_series_many`` (every conv's
``btd_series(w, default_group_sizes(t), **grosslib.btd.LARGE_LAYER_OPTIONS)``, all in one pool of
``--resnet-workers`` threads) on every conv of a torchvision ResNet-18 (``torch.manual_seed(0)`` then
``resnet18(weights=None)``) with in and out channels both in 64..512 (all but the first 7x7 conv; the
three 1x1 downsample convs included): wall seconds in total (target <= 120 s); per conv the steps, max
rho, mean error and how many sizes met the stopping rule.

Usage::

    python benchmarks/bench_btd.py [--weights random|PATH] [--tol 1e-6] [--max-iter 500000] [--seed 0]
        [--threads 1] [--layers conv2,conv3,conv4] [--sizes 1,2,4] [--cache FILE.json]
        [--tucker] [--repeats 5] [--write-results] [--results PATH] [--note TEXT]
    python benchmarks/bench_btd.py --resnet18 [--resnet-workers 2] [--resnet-tol 1e-3]
        [--resnet-max-iter 500] [--resnet-threads 2] [--write-results]

``--write-results`` replaces the section ``## BTD (bench_btd.py, random weights)`` or
``## BTD (bench_btd.py, trained weights)`` (after ``--weights``), or with ``--resnet18``
``## BTD on ResNet-18 (bench_btd.py --resnet18)``, of ``benchmarks/RESULTS.md`` (``--results``), keeps
the rest of the file and removes the section ``## BTD (bench_btd.py)`` of the earlier benchmark.
"""

from __future__ import annotations

import argparse
import importlib
import os
import statistics
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import tensorly as tl
import torch
from results_md import replace_section
from tensorly.decomposition import partial_tucker
from tensorly.tenalg import multi_mode_dot
from torch import nn

from grosslib.io import read_json, write_json
from grosslib.models import PaperNet, build_papernet
from grosslib.paths import BENCHMARKS_DIR, REPO_ROOT
from grosslib.runinfo import environment_info
from grosslib.series import default_group_sizes

btd_module = importlib.import_module("grosslib.btd")  # the module (grosslib.btd is the function)

OLD_SECTION = "## BTD (bench_btd.py)"
RESNET_SECTION = "## BTD on ResNet-18 (bench_btd.py --resnet18)"
LAYERS = ("conv2", "conv3", "conv4")
METHODS = ("default", "authors", "plain ALS")
CACHE_FORMAT = "bench_btd pair cache v1"
MAX_RHO = 3.0          # target: default rho at every pair
ERROR_SLACK = 0.002    # target: default error <= authors' error + this, at every pair
MIN_SPEEDUP = 20.0     # target: authors' total CPU seconds / default's
RESNET_MAX_SECONDS = 120.0


def section_name(weights: str) -> str:
    return f"## BTD (bench_btd.py, {'random' if weights == 'random' else 'trained'} weights)"


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


def authors_reference() -> Callable[..., dict]:
    """``btd_authors_ref`` of the repository's tests/reference.py."""
    tests = str(REPO_ROOT / "tests")
    if tests not in sys.path:
        sys.path.insert(0, tests)
    return importlib.import_module("reference").btd_authors_ref


# ------------------------------------------------------------------------------------------ PaperNet pairs
def run_method(method: str, weight: torch.Tensor, s: int, tol: float, max_iter: int,
               authors: Callable[..., dict]) -> dict:
    """One method on one pair: error, rho, steps, rule met, CPU and wall seconds."""
    cpu, wall = time.process_time(), time.perf_counter()
    if method == "authors":
        ref = authors(weight, s, tol=tol, max_sweeps=max_iter)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        error, rho, steps, converged = ref["error"], ref["block_norm_ratio"], ref["sweeps"], ref["converged"]
    else:
        options = {"ridge": (0.0,)} if method == "plain ALS" else {}
        result = btd_module.btd(weight, s, tol=tol, max_iter=max_iter, **options)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        error, rho, steps, converged = result.error, result.block_norm_ratio, result.n_iter, result.converged
    return {"error": float(error), "rho": float(rho), "steps": int(steps), "converged": bool(converged),
            "cpu_s": cpu, "wall_s": wall}


AUTHORS_ALGORITHM = "tests/reference.py btd_authors_ref"
#: the algorithm of rows cached before the key named it
LEGACY_ALGORITHM = "ridge-phase ALS (1e-1, 1e-2, 1e-3, 1e-4) from the svd and greedy starts, 2026-12"


def method_algorithm(method: str) -> str:
    """What a method's cached rows were computed with: grosslib's ALGORITHM for default and plain ALS."""
    return AUTHORS_ALGORITHM if method == "authors" else btd_module.ALGORITHM


def cache_key(source: str, layer: str, s: int, method: str, tol: float, max_iter: int) -> tuple:
    return (source, layer, int(s), method, float(tol), int(max_iter), method_algorithm(method))


KEY_FIELDS = ("source", "layer", "s", "method", "tol", "max_iter", "algorithm")


class PairCache:
    """Rows of finished pairs in a JSON file (``{"format": ..., "rows": [...]}``), written atomically."""

    def __init__(self, path: str | None):
        self.path = Path(path) if path else None
        self.rows: dict[tuple, dict] = {}
        if self.path is not None and self.path.exists():
            data = read_json(self.path)
            if not isinstance(data, dict) or data.get("format") != CACHE_FORMAT:
                raise SystemExit(f"{self.path} is not a bench_btd cache ({CACHE_FORMAT!r}); use another file")
            stale = 0
            for row in data["rows"]:
                legacy = AUTHORS_ALGORITHM if row["method"] == "authors" else LEGACY_ALGORITHM
                row.setdefault("algorithm", legacy)
                if row["algorithm"] != method_algorithm(row["method"]):
                    stale += 1              # made by an earlier grosslib algorithm: recomputed, then dropped
                    continue
                self.rows[tuple(row[k] for k in KEY_FIELDS)] = row
            if stale:
                print(f"{self.path}: {stale} rows of an earlier grosslib algorithm are ignored (recomputed)")

    def get(self, key: tuple) -> dict | None:
        return self.rows.get(key)

    def put(self, rows: list[dict]) -> None:
        for row in rows:
            self.rows[tuple(row[k] for k in KEY_FIELDS)] = row
        if self.path is not None:
            write_json(self.path, {"format": CACHE_FORMAT, "rows": list(self.rows.values())})


def pair_checks(rows: dict[str, dict]) -> dict[str, bool]:
    default, authors = rows["default"], rows["authors"]
    return {"rho": default["rho"] <= MAX_RHO, "error": default["error"] <= authors["error"] + ERROR_SLACK,
            "rule": default["converged"]}


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else "PASS" if ok else "FAIL"


def yes_no(flag: bool) -> str:
    return "yes" if flag else "no"


def pair_line(layer: str, s: int, rows: dict[str, dict], cached: bool) -> str:
    cells = [f"{m} {r['error']:.6f} rho {r['rho']:.2f} {r['steps']:>6d} st {yes_no(r['converged']):>3} "
             f"{r['cpu_s']:8.2f} s" for m, r in ((m, rows[m]) for m in METHODS)]
    checks = pair_checks(rows)
    failed = [name for name, ok in checks.items() if not ok]
    return (f"{layer} s={s:3d} | " + " | ".join(cells)
            + f" | {verdict(not failed)}{' (' + ', '.join(failed) + ')' if failed else ''}"
            + (" [cache]" if cached else ""))


def run_pairs(args: argparse.Namespace, weights: dict[str, torch.Tensor], source: str,
              cache: PairCache) -> tuple[list[dict], bool]:
    """All selected pairs, interleaved, resumable; returns one entry per finished pair and whether all ran."""
    authors = authors_reference()
    sizes_filter = set(args.sizes) if args.sizes else None
    pairs = [(layer, s) for layer in args.layers for s in default_group_sizes(weights[layer].shape[1])
             if sizes_filter is None or s in sizes_filter]
    finished: list[dict] = []
    for index, (layer, s) in enumerate(pairs):
        keys = {m: cache_key(source, layer, s, m, args.tol, args.max_iter) for m in METHODS}
        rows = {m: cache.get(k) for m, k in keys.items()}
        cached = all(row is not None for row in rows.values())
        order = METHODS if index % 2 == 0 else METHODS[::-1]
        try:
            for method in order:
                if rows[method] is not None:
                    continue
                print(f"  {layer} s={s} {method} ...", end="", flush=True)
                measured = run_method(method, weights[layer], s, args.tol, args.max_iter, authors)
                print(f" {measured['cpu_s']:.2f} s", flush=True)
                rows[method] = {**dict(zip(KEY_FIELDS, keys[method])), **measured, "threads": args.threads,
                                "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
            if not cached:
                cache.put([rows[m] for m in METHODS])
        except KeyboardInterrupt:
            where = f"; {cache.path} holds the pairs finished so far" if cache.path else ""
            print(f"\ninterrupted at {layer} s={s}{where}", flush=True)
            return finished, False
        print(pair_line(layer, s, rows, cached), flush=True)
        finished.append({"layer": layer, "s": s, "rows": rows, "cached": cached, "order": order})
    return finished, True


def summarise(pairs: list[dict]) -> dict:
    """Totals per method and the PASS/FAIL lines."""
    totals = {m: {"cpu_s": sum(p["rows"][m]["cpu_s"] for p in pairs),
                  "steps": sum(p["rows"][m]["steps"] for p in pairs),
                  "mean_error": statistics.mean(p["rows"][m]["error"] for p in pairs),
                  "max_rho": max(p["rows"][m]["rho"] for p in pairs),
                  "converged": sum(p["rows"][m]["converged"] for p in pairs)} for m in METHODS}
    checks = [pair_checks(p["rows"]) for p in pairs]
    n = len(pairs)
    name = lambda p: f"{p['layer']} s={p['s']}"  # noqa: E731
    worst_rho = max(pairs, key=lambda p: p["rows"]["default"]["rho"])
    excess = lambda p: p["rows"]["default"]["error"] - p["rows"]["authors"]["error"]  # noqa: E731
    worst_excess = max(pairs, key=excess)
    speedup = totals["authors"]["cpu_s"] / max(totals["default"]["cpu_s"], 1e-12)
    lines = [
        (all(c["rho"] for c in checks),
         f"default rho <= {MAX_RHO:g} at every pair: {sum(c['rho'] for c in checks)}/{n} "
         f"(max {worst_rho['rows']['default']['rho']:.3f} at {name(worst_rho)})"),
        (all(c["error"] for c in checks),
         f"default error <= authors' error + {ERROR_SLACK:g} at every pair: "
         f"{sum(c['error'] for c in checks)}/{n} "
         f"(max default - authors {excess(worst_excess):+.6f} at {name(worst_excess)})"),
        (all(c["rule"] for c in checks),
         f"default stopping rule met at every pair: {sum(c['rule'] for c in checks)}/{n}"),
        (speedup >= MIN_SPEEDUP,
         f"default total CPU {totals['default']['cpu_s']:.1f} s vs authors' "
         f"{totals['authors']['cpu_s']:.1f} s: "
         f"{speedup:.1f}x faster (target >= {MIN_SPEEDUP:g}x)"),
    ]
    return {"totals": totals, "speedup": speedup, "lines": lines, "all_pass": all(ok for ok, _ in lines)}


# ------------------------------------------------------------------------------------ s = t vs TensorLy
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


# ------------------------------------------------------------------------------------------------ ResNet-18
def resnet18_convs(limit: int | None = None) -> list[tuple[str, torch.Tensor]]:
    """The eligible convs (in and out channels in 64..512) of a seeded, untrained torchvision ResNet-18."""
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None)
    convs = [(name, module.weight.detach()) for name, module in model.named_modules()
             if isinstance(module, nn.Conv2d) and 64 <= module.in_channels <= 512
             and 64 <= module.out_channels <= 512]
    return convs[:limit] if limit is not None else convs


def run_resnet18(args: argparse.Namespace) -> dict:
    options = {**btd_module.LARGE_LAYER_OPTIONS, "max_iter": args.resnet_max_iter}
    for name in ("tol", "init"):
        if getattr(args, f"resnet_{name}") is not None:
            options[name] = getattr(args, f"resnet_{name}")
    if args.resnet_dtype is not None:
        options["dtype"] = getattr(torch, args.resnet_dtype)
    torch.set_num_threads(args.resnet_threads)
    n_eligible = len(resnet18_convs())
    convs = dict(resnet18_convs(args.resnet_convs))
    sizes = {name: default_group_sizes(weight.shape[1]) for name, weight in convs.items()}
    print(f"decomposing {sum(map(len, sizes.values()))} (conv, group size) pairs of {len(convs)} convs with "
          f"{args.resnet_workers} workers ...", flush=True)
    cpu, wall = time.process_time(), time.perf_counter()
    series = btd_module.btd_series_many(convs, sizes, workers=args.resnet_workers, **options)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    rows = []
    for name, weight in convs.items():
        results = series[name]
        row = {"conv": name, "shape": tuple(weight.shape), "sizes": len(results),
               "max_rho": max(r.block_norm_ratio for r in results.values()),
               "converged": sum(r.converged for r in results.values()),
               "max_steps": max(r.n_iter for r in results.values()),
               "steps": sum(r.n_iter for r in results.values()),
               "mean_error": statistics.fmean(r.error for s, r in results.items() if s < weight.shape[1])}
        rows.append(row)
        shape = "x".join(map(str, row["shape"]))
        print(f"{name:<22} {shape:>13} {row['sizes']:2d} sizes {row['steps']:5d} steps "
              f"max rho {row['max_rho']:.3f}  mean error {row['mean_error']:.4f}  "
              f"rule met {row['converged']}/{row['sizes']}", flush=True)
    subset = len(rows) < n_eligible
    line = (None if subset else wall <= RESNET_MAX_SECONDS,
            f"ResNet-18 total {wall:.1f} s wall ({cpu:.1f} s CPU) for {len(rows)} convs (target <= "
            f"{RESNET_MAX_SECONDS:g} s"
            + (f" for all {n_eligible}: not judged on a subset)" if subset else ")"))
    print(f"{verdict(line[0])}  {line[1]}", flush=True)
    return {"rows": rows, "total_s": wall, "total_cpu_s": cpu, "line": line, "options": options,
            "n_eligible": n_eligible}


# ----------------------------------------------------------------------------------------------- markdown
def machine_line(env: dict) -> str:
    git = env.get("git")
    git_text = f"; git {git['commit'][:10]}{' (dirty)' if git['dirty'] else ''}" if git else ""
    return (f"Machine: {env['cpu']}, {env['cpu_count']} CPUs ({env['cpu_affinity']} usable), "
            f"{env['platform']}, Python {env['python']}, torch {env['torch']}, "
            f"torchvision {env['torchvision']}, tensorly {env['tensorly']}{git_text}.")


def pairs_markdown(args: argparse.Namespace, source: str, pairs: list[dict], summary: dict,
                   tucker: dict | None, env: dict, header: dict) -> str:
    per_method = ("error", "rho", "steps", "rule met", "CPU s")
    head = ("| layer | s | " + " | ".join(f"{m} {c}" for m in METHODS for c in per_method)
            + " | default - authors error | pair |")
    table = [head, "| --- | ---: | " + " | ".join("---:" for _ in METHODS for _ in per_method)
             + " | ---: | --- |"]
    for p in pairs:
        cells = []
        for m in METHODS:
            r = p["rows"][m]
            cells.append(f"{r['error']:.6f} | {r['rho']:.3f} | {r['steps']} | {yes_no(r['converged'])} | "
                         f"{r['cpu_s']:.2f}")
        failed = [k for k, ok in pair_checks(p["rows"]).items() if not ok]
        delta = p["rows"]["default"]["error"] - p["rows"]["authors"]["error"]
        table.append(f"| {p['layer']} | {p['s']} | " + " | ".join(cells) + f" | {delta:+.6f} | "
                     + (f"**FAIL** ({', '.join(failed)})" if failed else "PASS") + " |")
    totals = summary["totals"]
    table.append("| **total** | | " + " | ".join(
        f"mean {totals[m]['mean_error']:.6f} | max {totals[m]['max_rho']:.3f} | {totals[m]['steps']} | "
        f"{totals[m]['converged']}/{len(pairs)} | **{totals[m]['cpu_s']:.1f}**" for m in METHODS) + " | | |")
    total_lines = "\n".join(
        f"- {m}: **{totals[m]['cpu_s']:.1f} CPU s**, {totals[m]['steps']} steps, mean error "
        f"{totals[m]['mean_error']:.6f}, max rho {totals[m]['max_rho']:.3f}, rule met "
        f"{totals[m]['converged']}/{len(pairs)}" for m in METHODS)
    plain_ratio = totals["authors"]["cpu_s"] / max(totals["plain ALS"]["cpu_s"], 1e-12)
    checks = "\n".join(f"- **{verdict(ok)}** {text}" for ok, text in summary["lines"])
    dates = sorted(r["date"] for p in pairs for r in p["rows"].values())
    n_cached = sum(p["cached"] for p in pairs)
    cache_note = (f" {n_cached} of the {len(pairs)} pairs were read from the cache `{args.cache}` (measured "
                  f"{dates[0]} .. {dates[-1]})." if n_cached else "")
    subset = "" if len(pairs) == 19 else f" (a subset: {len(pairs)} pairs, not the full 19)"
    tucker_text = ""
    if tucker:
        rows = ["| layer | t | btd (HOOI) | partial_tucker | ratio | btd error | partial_tucker error |",
                "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for layer, c in tucker.items():
            rows.append(f"| {layer} | {c['t']} | {c['ours_s'] * 1e3:.1f} ms | "
                        f"{c['tensorly_s'] * 1e3:.1f} ms | **{c['ratio']:.2f}** | {c['ours_error']:.9f} | "
                        f"{c['tensorly_error']:.9f} |")
        tucker_text = (f"\nOne block (s = t) against TensorLy's `partial_tucker(w, rank=[t, t], "
                       f"modes=[0, 1], tol={args.tol:g}, n_iter_max={args.max_iter})`, same weight and "
                       f"backend (pytorch, float64), both from the SVD initialisation; median of "
                       f"{args.repeats} interleaved timings (ratio = btd / partial_tucker):\n\n"
                       + "\n".join(rows) + "\n")
    note = f"\n{args.note}\n" if args.note else ""
    return f"""{section_name(args.weights)}

Run {header['date']}: `{header['command']}`

Weights: {source}, float64. Pairs: every (layer, group size) of {', '.join(args.layers)} with the sizes of
`default_group_sizes(t)`{subset}. Stopping rule: the relative error decreases by less than {args.tol:g}
in one step (max_iter / max_sweeps {args.max_iter}). Methods, run one after another on each pair, the order
alternating between pairs: `default` = `btd(w, s)` (ridge phases {btd_module.RIDGE_SCHEDULE} from the
starts {btd_module.STARTS}, the lower final objective kept; HOOI for s = t); `authors` =
`btd_authors_ref(w, s)` of tests/reference.py (block-wise Tucker-2 of the residual, the authors'
algorithm; steps = sweeps); `plain ALS` = `btd(w, s, ridge=(0.0,))` (plain ALS from the same starts; the
previous default used the svd start only). CPU seconds:
`time.process_time()` with `torch.set_num_threads({args.threads})`.{cache_note}

Totals ({len(pairs)} pairs):

{total_lines}

Speed-up of `default` over `authors` (CPU): **{summary['speedup']:.1f}x**; of `plain ALS` over `authors`:
{plain_ratio:.1f}x.

Targets:

{checks}

{chr(10).join(table)}
{tucker_text}
{machine_line(env)}
The CPUs are shared with other engineers' jobs: load average {header['load_start']} at the start,
{header['load_end']} at the end; absolute times are noisy (the methods are interleaved pair by pair).
{note}"""


def resnet_markdown(args: argparse.Namespace, resnet: dict, env: dict, header: dict) -> str:
    table = ["| conv | shape (u, t, kh, kw) | sizes | steps | max rho | mean error | rule met | max steps |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in resnet["rows"]:
        table.append(f"| {r['conv']} | {tuple(r['shape'])} | {r['sizes']} | {r['steps']} | "
                     f"{r['max_rho']:.3f} | {r['mean_error']:.4f} | {r['converged']}/{r['sizes']} | "
                     f"{r['max_steps']} |")
    n_sizes = sum(r["sizes"] for r in resnet["rows"])
    rows = resnet["rows"]
    table.append(f"| **total: {resnet['total_s']:.1f} s wall, {resnet['total_cpu_s']:.1f} s CPU** | | "
                 f"{n_sizes} | {sum(r['steps'] for r in rows)} | {max(r['max_rho'] for r in rows):.3f} | | "
                 f"{sum(r['converged'] for r in rows)}/{n_sizes} | |")
    ok, text = resnet["line"]
    o = resnet["options"]
    n_run = len(resnet["rows"])
    subset = f"; this run: only the first {n_run}" if n_run < resnet["n_eligible"] else ""
    note = f"\n{args.note}\n" if args.note else ""
    changed = "" if o == {**btd_module.LARGE_LAYER_OPTIONS, "max_iter": o["max_iter"]} else ", changed"
    return f"""{RESNET_SECTION}

Run {header['date']}: `{header['command']}`

Every conv of a torchvision ResNet-18 (`torch.manual_seed(0)`, `resnet18(weights=None)`: untrained,
Kaiming-initialised) with in and out channels both in 64..512 ({resnet['n_eligible']} convs: all but the
first 7x7 one, the 1x1 downsample convs included{subset}), each decomposed for every power-of-2 group size by
`btd_series_many(convs, {{conv: default_group_sizes(t)}}, workers={args.resnet_workers}, tol={o['tol']:g},
max_iter={o['max_iter']}, dtype={str(o['dtype']).replace('torch.', '')}, init={o['init']!r},
num_threads={o['num_threads']})`: every conv's `btd_series`, their (conv, group size) decompositions
in one pool of {args.resnet_workers} threads with one intra-op thread each, the costliest first (so
the time per conv is not separable: steps say where the work went; torch threads
{args.resnet_threads} outside the pool) (`grosslib.btd.LARGE_LAYER_OPTIONS`{changed}: the
documented large-layer tolerance 1e-3 instead of the paper's 1e-6, float32, the svd start only; each
size decomposed on its own, warm-started only where its error is above the size below). Wall seconds
(`time.perf_counter()`) for all of it; rule met: sizes whose stopping rule was met within max_iter steps;
mean error: over the group sizes below t (s = t is one Tucker block, exact for these layers).

- **{verdict(ok)}** {text}

{chr(10).join(table)}

{machine_line(env)}
The CPUs are shared with other engineers' jobs: load average {header['load_start']} at the start,
{header['load_end']} at the end.
{note}"""


def write_section(text: str, path: Path, heading: str) -> None:
    """Replace section ``heading`` of RESULTS.md (in place; else after the last BTD section), dropping
    the superseded ``## BTD (bench_btd.py)`` section."""
    replace_section(path, heading, text, after_prefix="## BTD", drop=(OLD_SECTION,))


def load_average() -> str:
    return " / ".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"


def comma_list(kind: Callable[[str], Any]) -> Callable[[str], list]:
    return lambda text: [kind(x.strip()) for x in text.split(",") if x.strip()]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", default="random",
                        help="'random' (He-initialised PaperNet) or the path of a trained PaperNet "
                             "state_dict")
    parser.add_argument("--tol", type=float, default=1e-6, help="stopping rule: minimum decrease per step")
    parser.add_argument("--max-iter", type=int, default=500_000,
                        help="maximum steps of btd (and sweeps of the authors' method)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random PaperNet")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads for the PaperNet pairs")
    parser.add_argument("--layers", type=comma_list(str), default=list(LAYERS),
                        help="comma-separated subset of conv2,conv3,conv4")
    parser.add_argument("--sizes", type=comma_list(int), default=None,
                        help="comma-separated group sizes to keep (default: all of default_group_sizes(t))")
    parser.add_argument("--cache", default=None, metavar="FILE.json",
                        help="JSON cache of finished pairs: written after each pair, read to skip them")
    parser.add_argument("--tucker", action="store_true",
                        help="also compare s = t against TensorLy's partial_tucker")
    parser.add_argument("--repeats", type=int, default=5, help="timings of the --tucker comparison")
    parser.add_argument("--resnet18", action="store_true",
                        help="time btd_series on ResNet-18's convs instead of the PaperNet comparison")
    parser.add_argument("--resnet-tol", type=float, default=None,
                        help="stopping rule (default: grosslib.btd.LARGE_LAYER_OPTIONS, 1e-3)")
    parser.add_argument("--resnet-max-iter", type=int, default=500)
    parser.add_argument("--resnet-threads", type=int, default=2,
                        help="torch threads for the ResNet-18 run (btd_series keeps them: num_threads=None)")
    parser.add_argument("--resnet-init", default=None,
                        help="btd's init (default: LARGE_LAYER_OPTIONS, 'svd': the greedy start's per-block "
                             "decompositions are slow beyond a few hundred channels)")
    parser.add_argument("--resnet-workers", type=int, default=2,
                        help="btd_series workers: group sizes decomposed at once, one thread each")
    parser.add_argument("--resnet-dtype", default=None, choices=("float32", "float64"),
                        help="working precision (default: LARGE_LAYER_OPTIONS, float32)")
    parser.add_argument("--resnet-convs", type=int, default=None, help=argparse.SUPPRESS)  # debug: first N
    parser.add_argument("--note", default="", help="a paragraph added to the RESULTS.md section")
    parser.add_argument("--write-results", action="store_true",
                        help="update this run's section of RESULTS.md")
    parser.add_argument("--results", type=Path, default=BENCHMARKS_DIR / "RESULTS.md",
                        help="the markdown file --write-results updates")
    args = parser.parse_args(argv)
    unknown = [layer for layer in args.layers if layer not in LAYERS]
    if unknown or not args.layers:
        parser.error(f"--layers must be a subset of {','.join(LAYERS)}, got {','.join(args.layers)}")
    header = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "load_start": load_average(),
              "command": ("python benchmarks/bench_btd.py "
                          + " ".join(argv if argv is not None else sys.argv[1:])).strip()}

    if args.resnet18:
        resnet = run_resnet18(args)
        header["load_end"] = load_average()
        if args.write_results:
            text = resnet_markdown(args, resnet, environment_info(), header)
            write_section(text, args.results, RESNET_SECTION)
            print(f"wrote {RESNET_SECTION!r} of {args.results}")
        return {"resnet18": resnet}

    torch.set_num_threads(args.threads)
    weights, source = load_weights(args.weights, args.seed)
    cache = PairCache(args.cache)
    print(f"weights: {source}; tol {args.tol:g}, max_iter {args.max_iter}, {args.threads} thread(s)",
          flush=True)
    pairs, complete = run_pairs(args, weights, source, cache)
    if not complete:
        raise SystemExit(130)
    if not pairs:
        parser.error("no pair selected (check --layers and --sizes)")
    summary = summarise(pairs)
    for m in METHODS:
        t = summary["totals"][m]
        print(f"TOTAL {m:>9}: {t['cpu_s']:9.1f} CPU s, {t['steps']} steps, mean error {t['mean_error']:.6f}, "
              f"max rho {t['max_rho']:.3f}, rule met {t['converged']}/{len(pairs)}", flush=True)
    for ok, text in summary["lines"]:
        print(f"{verdict(ok)}  {text}", flush=True)
    tucker = None
    if args.tucker:
        tucker = {}
        for layer in args.layers:
            c = tucker[layer] = tucker_comparison(weights[layer], args.tol, args.max_iter, args.repeats)
            print(f"s=t {layer}: btd {c['ours_s'] * 1e3:.1f} ms, partial_tucker "
                  f"{c['tensorly_s'] * 1e3:.1f} ms, ratio {c['ratio']:.2f}; errors {c['ours_error']:.9f} / "
                  f"{c['tensorly_error']:.9f}", flush=True)
    header["load_end"] = load_average()
    if args.write_results:
        heading = section_name(args.weights)
        text = pairs_markdown(args, source, pairs, summary, tucker, environment_info(), header)
        write_section(text, args.results, heading)
        print(f"wrote {heading!r} of {args.results}")
    return {"pairs": pairs, "summary": summary, "tucker": tucker, "source": source}


if __name__ == "__main__":
    main()
