"""Benchmark: exhaustive search of PaperNet's 252 configurations: shared-prefix evaluation vs two loops.

Both modes run :func:`grosslib.search.evaluate_all` on the same decomposed network, data and batches; the
naive one (``shared_prefix=False``) sets each configuration and runs the full forward on every batch, the
shared one computes common prefixes once per batch (see grosslib/search.py). The network is a random-init
PaperNet decomposed with a cheap BTD: accuracy is irrelevant to timing. By default the two modes are
interleaved batch by batch (alternating which goes first), so that load from other users of a shared
machine hits both alike; per-configuration results of the two modes are checked to be identical.

The fair baseline is the loop a competent user writes without grosslib's search: each configuration
exported once to plain ``nn.Conv2d`` (:func:`grosslib.export`), then run over the data at the batch size
fastest for it (chosen per configuration from ``--exported-batch-sizes`` on one untimed chunk; exporting is
timed apart). The report also gives the MAC ceiling: the MACs of evaluating every configuration on its own
over the MACs of the shared-prefix tree, the speed-up shared prefixes could give if time were MACs.

Writes (replaces) the section ``## Exhaustive search (bench_search.py)`` of benchmarks/RESULTS.md.

    python benchmarks/bench_search.py                      # 10,000 random images, all 252 configurations
    python benchmarks/bench_search.py --images 2000 --threads 1 --no-write
"""
from __future__ import annotations

import argparse
import collections
import datetime as dt
import json
import os
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd
import results_md
import torch
from results_md import replace_section

from grosslib.data import CIFAR10_MEAN, CIFAR10_STD, load_dataset
from grosslib.macs import count_macs, mac_table
from grosslib.models import build_papernet, decompose, export, normalize, search_space
from grosslib.search import evaluate_all, segment_network

SECTION = "## Exhaustive search (bench_search.py)"
RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
MODES = ("naive", "shared")
LABELS = {"naive": "grosslib's naive loop (`shared_prefix=False`)",
          "exported": "exported plain convs, fastest batch size per configuration",
          "shared": "shared prefix"}


# ---------------------------------------------------------------------------------------------------------
# Memory
# ---------------------------------------------------------------------------------------------------------


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            return next(int(line.split()[1]) for line in fh if line.startswith(field + ":"))
    except (OSError, ValueError, StopIteration):
        return None


def rss_bytes() -> int:
    """Current resident set size (Linux /proc; elsewhere the peak so far from getrusage)."""
    kib = _status_kib("VmRSS")
    return (kib if kib is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def peak_rss_bytes() -> int:
    """Peak RSS of this process image (VmHWM). Not ru_maxrss: on Linux a child started by fork + exec
    inherits its parent's ru_maxrss, so a probe started from this big benchmark process would report it."""
    kib = _status_kib("VmHWM")
    return (kib if kib is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


# ---------------------------------------------------------------------------------------------------------
# Setup
# ---------------------------------------------------------------------------------------------------------


Stats = tuple[float, ...]


def make_data(kind: str, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, Stats, Stats]:
    """``n`` uint8 3x32x32 images with labels, and the normalisation to use."""
    if kind == "random":
        g = torch.Generator().manual_seed(seed)
        images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
        return images, torch.randint(0, 10, (n,), generator=g), CIFAR10_MEAN, CIFAR10_STD
    splits = load_dataset("digits")
    images = torch.cat([splits.val.images, splits.test.images, splits.train.images])
    labels = torch.cat([splits.val.labels, splits.test.labels, splits.train.labels])
    reps = -(-n // len(labels))  # tile the ~1,800 digits up to n
    return images.repeat(reps, 1, 1, 1)[:n], labels.repeat(reps)[:n], splits.mean, splits.std


def machine_info(device: torch.device) -> dict[str, str]:
    """:func:`results_md.machine_info` plus oneDNN's availability and the GPU's name."""
    info = {**results_md.machine_info(), "mkldnn": str(torch.backends.mkldnn.is_available())}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


PROBE_CONFIGS = 12


def probe_configs(configs: list) -> list:
    """A spread subset, with the largest configuration: per-batch memory does not grow with their number."""
    step = max(1, len(configs) // PROBE_CONFIGS)
    subset = configs[::step][: PROBE_CONFIGS - 1]
    return subset + [configs[-1]] if configs[-1] not in subset else subset


def run_probe(args: argparse.Namespace) -> None:
    """Child process: evaluate one batch in one mode and print the RSS before and the peak (JSON)."""
    if args.threads:
        torch.set_num_threads(args.threads)
    net = torch.load(args.probe_net, weights_only=False)
    images, labels, mean, std = make_data(args.dataset, args.batch_size, args.seed)
    configs = probe_configs(search_space(net))
    before = rss_bytes()
    evaluate_all(net, (images, labels), configs, shared_prefix=args.probe == "shared",
                 batch_size=args.batch_size, device=args.device, mean=mean, std=std, progress=False,
                 channels_last=args.channels_last)
    print(json.dumps({"before": before, "peak": peak_rss_bytes()}))


def probe_memory(net: torch.nn.Module, args: argparse.Namespace) -> dict[str, dict[str, int]]:
    """Peak RSS of each mode, each in a fresh process (in one process freed memory blurs the two)."""
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "net.pt"
        torch.save(net, path)
        for mode in MODES:
            cmd = [sys.executable, str(Path(__file__).resolve()), "--probe", mode, "--probe-net", str(path),
                   "--batch-size", str(args.batch_size), "--dataset", args.dataset, "--seed", str(args.seed),
                   "--threads", str(args.threads), "--device", "cpu",
                   "--channels-last" if args.channels_last else "--no-channels-last"]
            done = subprocess.run(cmd, capture_output=True, text=True, check=True)
            out[mode] = json.loads(done.stdout.strip().splitlines()[-1])
    return out


# ---------------------------------------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------------------------------------


def timed_run(mode: str, net: torch.nn.Module, data: tuple[torch.Tensor, torch.Tensor], configs: list,
              args: argparse.Namespace, mean: Any, std: Any,
              gpu_peak: dict[str, int]) -> tuple[float, pd.DataFrame]:
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    df = evaluate_all(net, data, configs, shared_prefix=mode == "shared", batch_size=args.batch_size,
                      device=device, mean=mean, std=std, progress=False, channels_last=args.channels_last)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elapsed = time.perf_counter() - start
    if device.type == "cuda":
        gpu_peak[mode] = max(gpu_peak.get(mode, 0), torch.cuda.max_memory_allocated(device))
    return elapsed, df


def export_all(net: torch.nn.Module, configs: list) -> tuple[dict[tuple, torch.nn.Module], float]:
    """Every configuration exported to plain convs (eval mode), and the seconds it took."""
    start = time.perf_counter()
    nets = {tuple(c): export(net, c).eval() for c in configs}
    return nets, time.perf_counter() - start


def _prepared(images: torch.Tensor, mean: Any, std: Any, device: torch.device,
              channels_last: bool) -> torch.Tensor:
    x = normalize(images.to(device), mean, std)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def run_exported(nets: dict[tuple, torch.nn.Module], images: torch.Tensor, labels: torch.Tensor,
                 batch_sizes: dict[tuple, int], mean: Any, std: Any, device: torch.device,
                 channels_last: bool) -> tuple[float, dict[tuple, int]]:
    """The baseline loop over one chunk: seconds, and the correct count per configuration.

    The chunk is normalised once (as a user would, for all configurations), then each exported
    network runs over it at its own batch size.
    """
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    correct: dict[tuple, int] = {}
    with torch.inference_mode():
        x, y = _prepared(images, mean, std, device, channels_last), labels.to(device)
        for config, model in nets.items():
            b = batch_sizes[config]
            correct[config] = int(sum((model(x[i:i + b]).argmax(1) == y[i:i + b]).sum()
                                      for i in range(0, len(y), b)))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start, correct


def fastest_batch_sizes(nets: dict[tuple, torch.nn.Module], images: torch.Tensor, candidates: list[int],
                        mean: Any, std: Any, device: torch.device, channels_last: bool) -> dict[tuple, int]:
    """Per exported configuration, the candidate batch size with the shortest pass over ``images``."""
    x = _prepared(images, mean, std, device, channels_last)
    best: dict[tuple, int] = {}
    with torch.inference_mode():
        for config, model in nets.items():
            times = {}
            for b in candidates:
                model(x[:b])                                    # warm-up for this shape
                start = time.perf_counter()
                for i in range(0, len(x), b):
                    model(x[i:i + b])
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                times[b] = time.perf_counter() - start
            best[config] = min(times, key=times.get)
    return best


def mac_ceiling(net: torch.nn.Module, configs: list) -> float:
    """MACs of every configuration's own forward over the MACs of the shared-prefix tree, per image.

    The tree runs the prefix once, segment ``j`` (GroSS layer ``j`` and what follows it up to the next
    one) once per distinct prefix ``(s_1..s_j)`` of the configurations.
    """
    table = mac_table(net, (3, 32, 32), batched=False)
    prefix, segments = segment_network(net)
    x = torch.zeros(1, 3, 32, 32)
    fixed = []                                                  # MACs of the prefix, then after each layer
    with torch.inference_mode():
        for module in prefix:
            x = module(x)
        fixed.append(count_macs(torch.nn.Sequential(*prefix), (1, 3, 32, 32)) if prefix else 0)
        for layer, rest in segments:
            x = layer(x)
            fixed.append(count_macs(torch.nn.Sequential(*rest), tuple(x.shape)) if rest else 0)
            for module in rest:
                x = module(x)
    own = sum(table.macs(c) for c in configs)
    shared = fixed[0]
    for j in range(len(segments)):
        prefixes = {tuple(c[:j + 1]) for c in configs}
        shared += sum(table.layer_macs[j][p[-1]] + fixed[j + 1] for p in prefixes)
    return own / shared


def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    load_start = os.getloadavg()

    start = time.perf_counter()
    net = decompose(build_papernet(seed=args.seed), tol=args.btd_tol, max_iter=args.btd_max_iter)
    decompose_s = time.perf_counter() - start
    net = net.to(device).eval()
    configs = search_space(net)
    if args.configs:
        configs = configs[:: max(1, len(configs) // args.configs)][: args.configs]
    images, labels, mean, std = make_data(args.dataset, args.images, args.seed)
    print(f"decomposed in {decompose_s:.1f} s; {len(configs)} configurations, {len(labels)} images, "
          f"batch {args.batch_size}, threads {torch.get_num_threads()}, channels_last {args.channels_last}",
          file=sys.stderr, flush=True)

    # warm-up (oneDNN / cuDNN primitives for every configuration's shapes), not timed
    warm = (images[: args.batch_size], labels[: args.batch_size])
    evaluate_all(net, warm, configs, batch_size=args.batch_size, device=device, mean=mean, std=std,
                 progress=False, channels_last=args.channels_last)

    modes = MODES + (("exported",) if args.exported else ())
    nets, export_s, batch_sizes = {}, 0.0, {}
    if args.exported:
        nets, export_s = export_all(net, configs)
        candidates = sorted(b for b in args.exported_batch_sizes if b <= args.batch_size) or [args.batch_size]
        batch_sizes = fastest_batch_sizes(nets, images[: max(candidates)], candidates, mean, std, device,
                                          args.channels_last)
        counts = dict(sorted(collections.Counter(batch_sizes.values()).items()))
        print(f"exported {len(nets)} configurations in {export_s:.1f} s; fastest batch sizes {counts}",
              file=sys.stderr, flush=True)

    chunk = args.batch_size if args.interleave else len(labels)
    chunks = [(images[i:i + chunk], labels[i:i + chunk]) for i in range(0, len(labels), chunk)]
    times: dict[str, list[float]] = {m: [] for m in modes}
    exported_same = True
    identical = True
    gpu_peak: dict[str, int] = {}
    for r in range(args.repeat):
        total = dict.fromkeys(modes, 0.0)
        for c, data in enumerate(chunks):
            order = modes if (c + r) % 2 == 0 else modes[::-1]
            results = {}
            for mode in order:
                if mode == "exported":
                    elapsed, results[mode] = run_exported(nets, *data, batch_sizes, mean, std, device,
                                                          args.channels_last)
                else:
                    elapsed, results[mode] = timed_run(mode, net, data, configs, args, mean, std, gpu_peak)
                total[mode] += elapsed
            a, b = results["naive"], results["shared"]
            same = a["correct"].equals(b["correct"]) and a["loss"].equals(b["loss"])
            identical &= same
            if args.exported:
                ours = [results["exported"][tuple(cfg)] for cfg in b["config"]]
                exported_same &= ours == b["correct"].tolist()
            print(f"repeat {r + 1}/{args.repeat} chunk {c + 1}/{len(chunks)}: "
                  + ", ".join(f"{m} {total[m]:.1f} s" for m in modes) + f" so far; identical {same}",
                  file=sys.stderr, flush=True)
        for mode in modes:
            times[mode].append(total[mode])
    load_end = os.getloadavg()
    memory = probe_memory(net, args) if device.type == "cpu" else {}
    return {
        "args": args, "configs": len(configs), "images": len(labels), "decompose_s": decompose_s,
        "times": times, "identical": identical, "memory": memory, "gpu_peak": gpu_peak,
        "export_s": export_s, "batch_sizes": batch_sizes, "exported_same": exported_same,
        "mac_ceiling": mac_ceiling(net.cpu(), configs),
        "ru_maxrss": peak_rss_bytes(),
        "machine": machine_info(device), "load": (load_start, load_end),
    }


# ---------------------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------------------


def mib(n: float) -> str:
    return f"{n / 2**20:,.0f}"


def report(res: dict[str, Any], command: str, when: dt.datetime | None = None) -> str:
    args = res["args"]
    n_cfg, n_img = res["configs"], res["images"]
    modes = tuple(res["times"])
    best = {m: min(res["times"][m]) for m in modes}
    median = {m: statistics.median(res["times"][m]) for m in modes}
    ratio = best["naive"] / best["shared"]
    gpu = args.device.startswith("cuda")
    lines = [
        SECTION,
        "",
        f"Run {when or dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC: `{command}`",
        "",
        f"{'' if args.configs else 'All '}{n_cfg} configurations of a decomposed PaperNet (random init, "
        f"seed {args.seed}; BTD tol "
        f"{args.btd_tol:g}, max_iter {args.btd_max_iter}, {res['decompose_s']:.0f} s) on {n_img:,} "
        f"{args.dataset} 3x32x32 uint8 images, batch size {args.batch_size}, device `{args.device}`, "
        f"{'channels_last' if args.channels_last else 'NCHW'} input, "
        f"{res['machine']['torch threads']} torch thread(s); "
        + ("modes interleaved batch by batch (alternating which runs first)" if args.interleave
           else "naive run first, then shared")
        + f"; {args.repeat} repeat(s), best shown"
        + (" (median in brackets)" if args.repeat > 1 else "") + ".",
        "",
        "| mode | time (s) | per configuration (s) | configuration-images / s | "
        + ("peak GPU memory (MiB)" if gpu else "peak RSS (MiB)") + " |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for mode in ("naive", "exported", "shared"):
        if mode not in modes:
            continue
        label = LABELS[mode]
        t = f"{best[mode]:.1f}" + (f" ({median[mode]:.1f})" if args.repeat > 1 else "")
        probe = res["memory"].get(mode)
        memory = (mib(res["gpu_peak"][mode]) if gpu and mode in res["gpu_peak"]
                  else f"{mib(probe['peak'])} (+{mib(max(0, probe['peak'] - probe['before']))})" if probe
                  else "n/a")
        lines.append(f"| {label} | {t} | {best[mode] / n_cfg:.3f} | {n_cfg * n_img / best[mode]:,.0f} | "
                     f"{memory} |")
    lines += [
        "",
        f"**Speed-up of shared prefix over grosslib's naive loop: {ratio:.1f}x** (target >= 4x). "
        f"Per-configuration correct counts and summed losses of the two identical: "
        f"**{'yes' if res['identical'] else 'NO'}**.",
        "",
    ]
    if "exported" in modes:
        sizes = collections.Counter(res["batch_sizes"].values())
        lines += [
            "**Speed-up of shared prefix over the exported baseline: "
            f"{best['exported'] / best['shared']:.1f}x** (exporting the {n_cfg} configurations: "
            f"{res['export_s']:.1f} s, not in the time above; fastest "
            "batch size per configuration, chosen on one untimed chunk from "
            f"{sorted(args.exported_batch_sizes)}: "
            + ", ".join(f"{b}: {k}" for b, k in sorted(sizes.items()))
            + f"). The exported loop's correct counts equal shared prefix's: "
            f"**{'yes' if res['exported_same'] else 'NO'}**.",
            "",
        ]
    lines += [f"MAC ceiling: evaluating every configuration on its own costs {res['mac_ceiling']:.2f}x the "
              "MACs of the shared-prefix tree (the speed-up if time were MACs); a measured ratio above it "
              "means the loop pays costs besides MACs: per-forward overheads of small networks and, in "
              "grosslib's naive mode, merging each layer's series weights on every forward.", ""]
    if not gpu:
        lines.append(f"Peak RSS (VmHWM) of a fresh process per mode evaluating one batch of "
                     f"{args.batch_size} images with {PROBE_CONFIGS} configurations (work is batch by batch "
                     "and nothing but two counters is kept per configuration, so the peak does not grow with "
                     "the number of images or configurations); in brackets the increase over the RSS before "
                     f"evaluating (torch, network, data). This benchmark process, both modes over all "
                     f"images: peak RSS {mib(res['ru_maxrss'])} MiB.")
    m = res["machine"]
    (l1, l5, l15), (e1, e5, e15) = res["load"]
    lines += [
        f"Machine: {m['cpu']}, {m['cpu count']} CPUs, {m['platform']}, Python {m['python']}, torch "
        f"{m['torch']} (mkldnn {m['mkldnn']})" + (f", {m['gpu']}" if "gpu" in m else "") + ".",
        f"The CPUs are shared with other engineers' jobs: load average {l1:.1f} / {l5:.1f} / {l15:.1f} at "
        f"the start, {e1:.1f} / {e5:.1f} / {e15:.1f} at the end; absolute times are noisy, the interleaved "
        "ratio less so.",
        "",
    ]
    if args.note:
        lines += [f"Note: {args.note}", ""]
    return "\n".join(lines)


def write_section(text: str, path: Path = RESULTS) -> None:
    """Replace (or append) this benchmark's section of RESULTS.md, leaving the others untouched."""
    replace_section(path, SECTION, text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--dataset", choices=("random", "digits"), default="random",
                        help="random uint8 images, or the digits dataset tiled up to --images")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True,
                        help="channels_last input for both modes")
    parser.add_argument("--interleave", action=argparse.BooleanOptionalAction, default=True,
                        help="alternate the modes batch by batch")
    parser.add_argument("--configs", type=int, default=0,
                        help="evaluate only this many (spread) configurations; 0: all")
    parser.add_argument("--exported", action=argparse.BooleanOptionalAction, default=True,
                        help="also time the exported baseline (plain convs per configuration)")
    parser.add_argument("--exported-batch-sizes", type=lambda t: [int(x) for x in t.split(",")],
                        default=[25, 50, 100, 250, 500, 1000],
                        help="candidate batch sizes for the exported baseline (at most --batch-size)")
    parser.add_argument("--btd-tol", type=float, default=1e-3)
    parser.add_argument("--btd-max-iter", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--write", action=argparse.BooleanOptionalAction, default=True,
                        help=f"write the section of {RESULTS.name}")
    parser.add_argument("--memory-only", action="store_true",
                        help="only measure the peak memory of each mode (fresh processes), print it as JSON")
    parser.add_argument("--note", default="", help="a remark to add to the results section")
    parser.add_argument("--probe", choices=MODES, help=argparse.SUPPRESS)  # internal: memory probe child
    parser.add_argument("--probe-net", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.probe:
        run_probe(args)
        return 0
    if args.memory_only:
        if args.threads:
            torch.set_num_threads(args.threads)
        net = decompose(build_papernet(seed=args.seed), tol=args.btd_tol, max_iter=args.btd_max_iter).eval()
        print(json.dumps(probe_memory(net, args)))
        return 0
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda but CUDA is not available")
    res = run_benchmark(args)
    command = "python benchmarks/bench_search.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    text = report(res, command.strip())
    print(text)
    if args.write:
        write_section(text)
        print(f"wrote the section of {RESULTS}", file=sys.stderr)
    return 0 if res["identical"] else 1


if __name__ == "__main__":
    sys.exit(main())
