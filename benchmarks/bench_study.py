"""Benchmark: PaperNet training throughput with 1, 2, 4, 8 concurrent trainings on one device, and what it
means for the wall time of the ``paper`` preset's protocol.

Each training is a separate process (as Ray places study tasks: ``--gpus-per-task 0.25`` puts four on one
GPU) running SGD steps of PaperNet (batch 128, 3x32x32 random images kept on the device, cross-entropy,
momentum 0.9, one torch CPU thread per process) after a warm-up; all processes start together and the
aggregate rate is ``trainings x steps x 128 / slowest wall time``.

The protocol estimate counts the training images the ``paper`` preset's stages see per seed (epochs x
training-split size for every training of :class:`grosslib.study.StudyPlan`: the full networks, 5 GroSS
networks, the fixed baselines and the searched and ranked configurations) and divides by the best
aggregate rate measured. It leaves out evaluation, BTD and search, so it is a lower bound on the wall time.

Writes (replaces) the section ``## Study throughput (bench_study.py)`` of benchmarks/RESULTS.md.

    python benchmarks/bench_study.py                        # CPU, 1/2/4/8 trainings
    python benchmarks/bench_study.py --device cuda          # on a GPU machine
"""
from __future__ import annotations

import argparse
import datetime as dt
import multiprocessing as mp
import os
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import torch
from results_md import cpu_name, replace_section

from grosslib.models import build_papernet
from grosslib.presets import get_preset
from grosslib.study import StudyPlan

SECTION = "## Study throughput (bench_study.py)"
RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
BATCH = 128
#: training-split sizes of grosslib.data's splits (Fashion-MNIST: 50,000 train, 10,000 validation; CIFAR-10
#: the same split of its 50,000 training images is assumed: 40,000)
TRAIN_IMAGES = {"cifar10": 40_000, "fashion-mnist": 50_000}


def _train(device: str, steps: int, warmup: int, seed: int, start: Any, out: Any) -> None:
    """One training process: wait for ``start``, time ``steps`` SGD steps, put the seconds in ``out``."""
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    dev = torch.device(device)
    net = build_papernet(3, 10, seed).to(dev).train()
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    x = torch.randn(BATCH, 3, 32, 32, device=dev)
    y = torch.randint(0, 10, (BATCH,), device=dev)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()

    for _ in range(warmup):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    start.wait()
    began = time.perf_counter()
    for _ in range(steps):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    out.put(time.perf_counter() - began)


def measure(n: int, device: str, steps: int, warmup: int) -> dict[str, float]:
    """Aggregate and per-training images/s of ``n`` concurrent training processes."""
    ctx = mp.get_context("spawn")
    start, out = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_train, args=(device, steps, warmup, i, start, out)) for i in range(n)]
    for p in procs:
        p.start()
    time.sleep(2.0 + 0.5 * n)                   # let every process build its network and warm up
    start.set()
    seconds = [out.get(timeout=3600) for _ in procs]
    for p in procs:
        p.join()
    wall = max(seconds)
    return {"trainings": n, "wall_s": wall, "images_per_s": n * steps * BATCH / wall,
            "per_training": steps * BATCH / statistics_mean(seconds)}


def statistics_mean(values: list[float]) -> float:
    return sum(values) / len(values)


def protocol_images(dataset: str) -> tuple[int, dict[str, int]]:
    """Training images of the ``paper`` preset's whole protocol (all seeds) and the trainings per stage.

    Median design: the full networks are trained once for the study; every other training once per seed.
    """
    preset, plan = get_preset("paper"), StudyPlan()
    seeds = preset.replicates
    n_gross = sum(1 for _ in plan.variants)
    searched = len(plan.budget_group_sizes) * plan.top_k * len(plan.table3_readings)
    n_fixed = plan.n_ranked + searched          # the ranked include the fixed baselines; overlaps ignored
    counts = {"full": plan.n_networks, "reconstruct_gross": n_gross * seeds,
              "finetune_gross": n_gross * seeds, "reconstruct_fixed": n_fixed * seeds,
              "finetune_fixed": n_fixed * seeds}
    images = sum(counts[s] * preset.stage(s).epochs * TRAIN_IMAGES[dataset] for s in counts)
    return images, counts


def report(rows: list[dict[str, float]], args: argparse.Namespace, command: str) -> str:
    device_name = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else cpu_name()
    best = max(rows, key=lambda r: r["images_per_s"])
    images, counts = protocol_images(args.dataset)
    seeds = get_preset("paper").replicates
    hours = images / best["images_per_s"] / 3600
    trainings = ", ".join(f"{k} x{v}" for k, v in counts.items())
    lines = [SECTION, "", f"Run {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC: `{command}`", "",
             f"PaperNet SGD steps at batch {BATCH} on `{args.device}` ({device_name}), {args.steps} timed "
             f"steps per training after {args.warmup} warm-up steps, one process per training, one torch "
             "thread each.", "",
             "| concurrent trainings | images / s (all) | images / s per training | wall (s) |",
             "| ---: | ---: | ---: | ---: |"]
    for r in rows:
        lines.append(f"| {r['trainings']} | {r['images_per_s']:,.0f} | {r['per_training']:,.0f} | "
                     f"{r['wall_s']:.1f} |")
    lines += ["", f"`paper` preset protocol on {args.dataset}, {seeds} seeds, median design ({trainings} "
              f"trainings): {images / 1e6:,.0f} M training images, so at the best rate measured here "
              f"({best['trainings']} trainings at once) at least **{hours:.1f} h** (training only; "
              "evaluation, BTD and search come on top).", ""]
    if not args.device.startswith("cuda"):
        lines += ["GPU figures: unmeasured (no GPU machine was lent to this task). The target the study "
                  "engine serves, the paper's protocol for 5 seeds on Fashion-MNIST in under 15 minutes "
                  f"of one H200, needs about {images / 900:,.0f} images/s in all; run "
                  "`python benchmarks/bench_study.py --device cuda` there.", ""]
    load = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    lines += [f"Machine: {os.cpu_count()} CPUs, {platform.platform()}, Python {platform.python_version()}, "
              f"torch {torch.__version__}; load average at the end {load} (shared: absolute rates are "
              "noisy).", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--device", default="cpu", help="cpu | cuda")
    parser.add_argument("--trainings", default="1,2,4,8", help="comma-separated concurrent training counts")
    parser.add_argument("--steps", type=int, default=20, help="timed SGD steps per training")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--dataset", choices=sorted(TRAIN_IMAGES), default="fashion-mnist",
                        help="training-split size for the protocol estimate")
    parser.add_argument("--no-write", dest="write", action="store_false", help="do not write RESULTS.md")
    args = parser.parse_args(argv)
    try:
        counts = [int(x) for x in args.trainings.split(",") if x.strip()]
    except ValueError:
        parser.error(f"--trainings takes comma-separated positive integers, got {args.trainings!r}")
    if not counts or min(counts) < 1 or args.steps < 1 or args.warmup < 0:
        parser.error("--trainings must be positive integers, --steps >= 1, --warmup >= 0")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda but CUDA is not available")
    rows = []
    for n in counts:
        rows.append(measure(n, args.device, args.steps, args.warmup))
        print(f"{n} training(s): {rows[-1]['images_per_s']:,.0f} images/s in all", flush=True)
    command = "python benchmarks/bench_study.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    text = report(rows, args, command.strip())
    print(text)
    if args.write:
        replace_section(RESULTS, SECTION, text)
        print(f"wrote the section of {RESULTS}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
