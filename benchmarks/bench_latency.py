"""Benchmark: latency tables of decomposed PaperNet, their accuracy, and MAC- vs latency-optimal picks.

On a random-init PaperNet (1 x 32 x 32 input) decomposed with a cheap BTD (latency does not depend on the
weights), for each batch size: build :func:`grosslib.latency.latency_table`, measure ~30 random
configurations and the uniform ones end to end (:func:`grosslib.latency.validate_latency`) and report the
Spearman rank correlation of predicted vs measured latency and the mean / max relative error. Then, with the
committed GroSS validation accuracies of the Fashion-MNIST study (results/fashion-mnist-study/records.json,
``tables.search``, seed 0) as the accuracy of each configuration, compare the most accurate configuration
under a MAC budget (the MACs of 4-4-4) with the most accurate one under a latency budget (the predicted
latency of 4-4-4).

Writes (replaces) the section ``## Latency (bench_latency.py)`` of benchmarks/RESULTS.md.

    python benchmarks/bench_latency.py                       # batch 1 and 64, 30 random configurations
    python benchmarks/bench_latency.py --batch-sizes 1 --configs 10 --no-write
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from results_md import machine_info, replace_section

from grosslib.latency import latency_summary, latency_table, validate_latency
from grosslib.models import build_papernet, config_name, decompose, search_space, uniform_config

SECTION = "## Latency (bench_latency.py)"
ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "RESULTS.md"
RECORDS = ROOT / "results" / "fashion-mnist-study" / "records.json"
INPUT_SHAPE = (1, 32, 32)
BUDGET_CONFIG = (4, 4, 4)


def load_search_records(path: Path = RECORDS, seed: int = 0) -> pd.DataFrame:
    """The committed per-configuration validation accuracies (one row per configuration)."""
    rows = json.loads(path.read_text())["tables"]["search"]
    frame = pd.DataFrame(rows)
    frame = frame[frame["seed"] == seed].copy()
    frame["cfg"] = list(zip(frame["s_conv2"], frame["s_conv3"], frame["s_conv4"]))
    return frame


def best_under(frame: pd.DataFrame, cost: str, budget: float) -> pd.Series:
    """The most accurate row with ``cost <= budget`` (ties: the cheaper)."""
    ok = frame[frame[cost] <= budget * (1 + 1e-12)]
    return ok.sort_values(["accuracy", cost], ascending=[False, True]).iloc[0]


def picks(records: pd.DataFrame, table: Any) -> dict[str, Any]:
    frame = records.copy()
    frame["latency_ms"] = [table.predict(c) for c in frame["cfg"]]
    budget_row = frame[frame["cfg"] == BUDGET_CONFIG].iloc[0]
    by_macs = best_under(frame, "macs", budget_row["macs"])
    by_latency = best_under(frame, "latency_ms", budget_row["latency_ms"])
    return {"mac_budget": int(budget_row["macs"]), "latency_budget": float(budget_row["latency_ms"]),
            "by_macs": by_macs, "by_latency": by_latency, "differ": by_macs["cfg"] != by_latency["cfg"],
            "n_under_latency": int((frame["latency_ms"] <= budget_row["latency_ms"]).sum()),
            "n_under_macs": int((frame["macs"] <= budget_row["macs"]).sum())}


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    t0 = time.perf_counter()
    net = decompose(build_papernet(in_channels=1, seed=args.seed), init="svd", max_iter=0).eval()
    decompose_s = time.perf_counter() - t0
    space = search_space(net)
    fixed = list(dict.fromkeys(uniform_config(net, s) for s in (1, 2, 4, 8, 16, 32, 64)))
    rng = random.Random(args.seed)
    randoms = rng.sample([c for c in space if c not in fixed], args.configs)
    configs = fixed + randoms
    records = load_search_records()
    options = dict(device=args.device, warmup=args.warmup, repeats=args.repeats)
    out: dict[str, Any] = {"machine": machine_info(), "decompose_s": decompose_s, "fixed": fixed,
                           "n_random": len(randoms), "runs": []}
    for batch_size in args.batch_sizes:
        t0 = time.perf_counter()
        table = latency_table(net, INPUT_SHAPE, batch_size=batch_size, progress=args.progress, **options)
        table_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        frame = validate_latency(net, table, configs, batch_size=batch_size, progress=args.progress,
                                 **options)
        validate_s = time.perf_counter() - t0
        out["runs"].append({"batch_size": batch_size, "table": table, "frame": frame,
                            "summary": latency_summary(frame),
                            "summary_random": latency_summary(frame.iloc[len(fixed):]),
                            "picks": picks(records, table), "table_s": table_s, "validate_s": validate_s})
    return out


def _fmt_pick(row: pd.Series) -> str:
    return (f"{config_name(row['cfg'])} (accuracy {row['accuracy']:.4f}, {int(row['macs']):,} MACs, "
            f"predicted {row['latency_ms']:.3f} ms)")


def report(res: dict[str, Any], command: str) -> str:
    m = res["machine"]
    lines = [SECTION, "",
             f"{dt.date.today().isoformat()}, `{command}`.", "",
             "PaperNet (1 x 32 x 32 input, random init, `decompose(..., init='svd', max_iter=0)`: latency "
             "does not depend on the weights), on the CPU. Per batch size: `latency_table` (each GroSS layer "
             "timed as its exported bottleneck at every group size; `rest` = median over the configurations "
             "1-1-1, 8-8-8 and 32-32-64 of measured end to end minus the sum of the layers), then "
             "`validate_latency` "
             f"on the {len(res['fixed'])} uniform configurations "
             f"({', '.join(config_name(c) for c in res['fixed'])}) and {res['n_random']} random ones, each "
             "exported to plain convs and timed end to end (median of the repeats).", "",
             "| batch | rest ms | predicted range ms | measured range ms | Spearman | mean rel. error | "
             "max rel. error | Spearman (random only) | table s | validate s |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in res["runs"]:
        f, s, sr = r["frame"], r["summary"], r["summary_random"]
        lines.append(f"| {r['batch_size']} | {r['table'].rest_ms:.3f} | {f.predicted_ms.min():.3f}-"
                     f"{f.predicted_ms.max():.3f} | {f.measured_ms.min():.3f}-{f.measured_ms.max():.3f} | "
                     f"{s['spearman']:.3f} | {s['mean_rel_error']:.1%} | {s['max_rel_error']:.1%} | "
                     f"{sr['spearman']:.3f} | {r['table_s']:.1f} | {r['validate_s']:.1f} |")
    lines += ["", "Per-layer table (ms) at each batch size:", ""]
    for r in res["runs"]:
        t = r["table"]
        cells = "; ".join(f"{name}: " + ", ".join(f"{s}: {ms:.3f}" for s, ms in sizes.items())
                          for name, sizes in t.layers.items())
        lines.append(f"* batch {r['batch_size']}: {cells}; rest {t.rest_ms:.3f} (samples "
                     + ", ".join(f"{k}: {v:.3f}" for k, v in t.rest_samples.items()) + ").")
    lines += ["", "MAC-optimal vs latency-optimal pick, with the committed GroSS validation accuracies of "
              "the Fashion-MNIST study (records.json `tables.search`, seed 0) as each configuration's "
              f"accuracy; budgets: the MACs and the predicted latency of {config_name(BUDGET_CONFIG)}:", ""]
    for r in res["runs"]:
        p = r["picks"]
        lines.append(f"* batch {r['batch_size']}: under {p['mac_budget']:,} MACs ({p['n_under_macs']} "
                     f"configurations) the best is {_fmt_pick(p['by_macs'])}; "
                     f"under {p['latency_budget']:.3f} ms "
                     f"({p['n_under_latency']} configurations) it is {_fmt_pick(p['by_latency'])}: "
                     + ("**they differ**." if p["differ"] else "the same configuration."))
    lines += ["",
              f"Machine: {m['cpu']}, {m['cpu count']} CPUs, {m['platform']}, Python {m['python']}, torch "
              f"{m['torch']}, {m['torch threads']} torch threads. The CPUs may be shared with other jobs: "
              "absolute times are noisy.", ""]
    if res.get("note"):
        lines += [f"Note: {res['note']}", ""]
    return "\n".join(lines)


def write_section(text: str, path: Path = RESULTS) -> None:
    """Replace (or append) this benchmark's section of RESULTS.md, leaving the others untouched."""
    replace_section(path, SECTION, text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--configs", type=int, default=30,
                        help="random configurations besides the uniform ones")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--note", default="", help="a remark to add to the results section")
    parser.add_argument("--write", action=argparse.BooleanOptionalAction, default=True,
                        help=f"write the section of {RESULTS.name}")
    args = parser.parse_args(argv)
    res = run(args)
    res["note"] = args.note
    command = "python benchmarks/bench_latency.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    text = report(res, command.strip())
    print(text)
    if args.write:
        write_section(text)
        print(f"wrote the section of {RESULTS}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
