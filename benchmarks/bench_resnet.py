"""Benchmark: decomposition and search time of GroSS on notebook 07's CIFAR-style ResNets (CPU).

For each network (ResNet-8 8-16-32, the notebook's quick run, and ResNet-20 16-32-64, its full run;
He-initialised: timings do not depend on training) this measures, in one process:

* ``decompose`` with the default BTD (every power-of-2 group size of every eligible conv),
* one GroSS evaluation (``CachedFitness.from_network``: accuracy of one configuration on ``--images``
  images, the plain loop that non-Sequential networks use), the median over a few configurations,
* ``evolution_search`` with 25 and 200 evaluations under the MACs of the uniform group-size-4
  configuration (fitness on the same images),
* ``latency_table`` (every layer at every group size, batch 8, 10 repeats) on the CPU.

Writes (replaces) the section ``## GroSS on a ResNet (bench_resnet.py)`` of benchmarks/RESULTS.md.

    python benchmarks/bench_resnet.py                 # both networks, 1,000 images
    python benchmarks/bench_resnet.py --nets 8 --images 200 --no-write
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from results_md import cpu_name, replace_section

from grosslib.evolution import CachedFitness, EvolutionSettings, evolution_search
from grosslib.latency import latency_table
from grosslib.macs import config_macs
from grosslib.models import decompose, decomposed_layers, uniform_config
from grosslib.resnet import build_cifar_resnet

SECTION = "## GroSS on a ResNet (bench_resnet.py)"
RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
NETWORKS = {"8": (8, (8, 16, 32)), "20": (20, (16, 32, 64))}


def space_size(net: torch.nn.Module) -> int:
    """Number of configurations: the product of the GroSS layers' series lengths."""
    size = 1
    for _, layer in decomposed_layers(net):
        size *= len(layer.group_sizes)
    return size


def bench_network(depth: int, widths: tuple[int, ...], images: torch.Tensor, labels: torch.Tensor,
                  seed: int) -> dict[str, Any]:
    """Times of one network's decomposition, evaluation, searches and latency table (seconds)."""
    net = build_cifar_resnet(depth=depth, widths=widths, in_channels=3, num_classes=10, seed=seed).eval()
    start = time.perf_counter()
    gross = decompose(net)
    out: dict[str, Any] = {"depth": depth, "widths": widths, "decompose_s": time.perf_counter() - start,
                           "layers": len(decomposed_layers(gross)), "configs": space_size(gross)}
    print(f"ResNet-{depth}: decomposed {out['layers']} layers in {out['decompose_s']:.1f} s", flush=True)
    data = (images, labels)
    g = torch.Generator().manual_seed(seed)
    sizes = [layer.group_sizes for _, layer in decomposed_layers(gross)]
    probes = [tuple(s[int(torch.randint(len(s), (1,), generator=g))] for s in sizes) for _ in range(5)]
    fitness = CachedFitness.from_network(gross, data, batch_size=len(labels))
    each = []
    for config in probes:
        start = time.perf_counter()
        fitness(config)
        each.append(time.perf_counter() - start)
    out["evaluation_s"] = statistics.median(each)
    budget = config_macs(gross, uniform_config(gross, 4))
    for n in (25, 200):
        fitness = CachedFitness.from_network(gross, data, batch_size=len(labels))
        start = time.perf_counter()
        settings = EvolutionSettings(max_evaluations=n)
        result = evolution_search(gross, fitness, max_macs=budget, settings=settings, seed=seed,
                                  progress=False)
        out[f"search{n}_s"] = time.perf_counter() - start
        out[f"search{n}_evaluations"] = result.evaluations
        print(f"ResNet-{depth}: evolution search, {result.evaluations} evaluations in "
              f"{out[f'search{n}_s']:.1f} s", flush=True)
    start = time.perf_counter()
    latency_table(gross, (3, 32, 32), batch_size=8, repeats=10, progress=False)
    out["latency_table_s"] = time.perf_counter() - start
    out["exhaustive_h"] = out["configs"] * out["evaluation_s"] / 3600
    return out


def report(rows: list[dict[str, Any]], args: argparse.Namespace, command: str) -> str:
    cpu = cpu_name()
    lines = [SECTION, "", f"Run {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC: `{command}`", "",
             f"He-initialised networks (timings do not depend on training), {args.images:,} random 3x32x32 "
             f"images per evaluation, {torch.get_num_threads()} torch thread(s), CPU. Default BTD "
             "(`grosslib.btd`: ridge phases, four starts) on every power-of-2 group size of every eligible "
             "conv; evolution search under the MACs of the uniform group-size-4 configuration, default "
             "`EvolutionSettings`; latency table at batch 8, 10 repeats. One evaluation: the median over 5 "
             "random configurations, each new to the process, so it includes oneDNN's first-call set-up "
             "for new grouped-conv shapes, as a search pays it.", "",
             "| network | GroSS layers | configurations | decompose (s) | one evaluation (s) | "
             "search, 25 evaluations (s) | search, 200 evaluations (s) | latency table (s) | "
             "exhaustive at that rate |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        hours = r["exhaustive_h"]
        exhaustive = f"{hours:.1f} h" if hours < 48 else f"{hours / 24 / 365:.1e} years"
        lines.append(f"| ResNet-{r['depth']} {'-'.join(map(str, r['widths']))} | {r['layers']} | "
                     f"{r['configs']:.3g} | {r['decompose_s']:.1f} | {r['evaluation_s']:.3f} | "
                     f"{r['search25_s']:.1f} | {r['search200_s']:.1f} | {r['latency_table_s']:.1f} | "
                     f"{exhaustive} |")
    load = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    lines += ["", f"Machine: {cpu}, {os.cpu_count()} CPUs, {platform.platform()}, Python "
              f"{platform.python_version()}, torch {torch.__version__}; load average at the end {load} "
              "(shared CPUs: absolute times are noisy).", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--nets", default="8,20", help="comma-separated depths among 8, 20")
    parser.add_argument("--images", type=int, default=1000, help="images per fitness evaluation")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-write", dest="write", action="store_false", help="do not write RESULTS.md")
    args = parser.parse_args(argv)
    depths = [d.strip() for d in args.nets.split(",") if d.strip()]
    unknown = [d for d in depths if d not in NETWORKS]
    if unknown or not depths:
        parser.error(f"--nets takes depths among {sorted(NETWORKS)}, got {args.nets!r}")
    if args.images < 1:
        parser.error("--images must be positive")
    if args.threads:
        torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(args.seed)
    images = torch.randn(args.images, 3, 32, 32, generator=g)
    labels = torch.randint(0, 10, (args.images,), generator=g)
    rows = [bench_network(*NETWORKS[d], images, labels, args.seed) for d in depths]
    command = "python benchmarks/bench_resnet.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    text = report(rows, args, command.strip())
    print(text)
    if args.write:
        replace_section(RESULTS, SECTION, text)
        print(f"wrote the section of {RESULTS}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
