"""Training-step benchmarks.

(a) GroSS overhead: a fine-tuning step of the GroSS network at a sampled configuration (the series
    layer merges its terms every forward) against a plain step of the same configuration built
    from ``layer.to_bottleneck(s)`` (three ``nn.Conv2d`` per layer), same batches of 128, same
    optimiser (SGD, momentum 0.9, weight decay) on the same trainable set (bottleneck weights).
    Target: ratio <= 1.15.
(b) Input pipeline: images/s of training PaperNet with the on-device pipeline
    (:func:`grosslib.data.iterate_batches`) against the per-sample torchvision DataLoader
    (:func:`per_sample_dataloader` below, ``num_workers=0``), and of the pipelines alone.
(c) The 'quick' preset end to end on digits (``--parts c``, a few minutes): full training, BTD
    (``get_preset('quick').btd_options``), GroSS reconstruction and fine-tuning at alpha 4, then every
    configuration evaluated on the validation split; accuracies and wall times.

Timing is interleaved in rounds (A, B, A, B, ...) and the median round is reported, which keeps
the comparison fair on a machine shared with other jobs.

Usage::

    python benchmarks/bench_train.py [--parts a,b,c] [--threads 1] [--steps 16] [--rounds 7]
        [--no-channels-last] [--write-results]

``--write-results`` rewrites the subsections it ran in this benchmark's section of
``benchmarks/RESULTS.md`` and keeps the others.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import date
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from results_md import read_section, replace_section
from torch import Tensor, nn

from grosslib.data import Split, iterate_batches, load_dataset
from grosslib.io import resolve_device
from grosslib.models import (
    build_papernet,
    decompose,
    decomposed_layers,
    largest_config,
    search_space,
    set_config,
    uniform_config,
)
from grosslib.paths import BENCHMARKS_DIR
from grosslib.presets import get_preset
from grosslib.runinfo import environment_info
from grosslib.sampling import GroupSizeSampler
from grosslib.train import evaluate, finetune, reconstruct_responses, train_full

SECTION = "## Training (bench_train.py)"


# the conventional per-sample torchvision pipeline: the fair baseline of the batched one
class _TensorImageDataset(torch.utils.data.Dataset):
    """Per-sample view of a CPU :class:`Split` with a torchvision transform."""

    def __init__(self, split: Split, transform: Any) -> None:
        self.images = split.images.cpu()
        self.labels = split.labels.cpu()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        return self.transform(self.images[i]), self.labels[i]


def per_sample_dataloader(
    split: Split,
    batch_size: int,
    augment: bool,
    flip: bool,
    mean: Sequence[float],
    std: Sequence[float],
    num_workers: int = 0,
    seed: int = 0,
    *,
    shuffle: bool = True,
    pad: int = 2,
) -> torch.utils.data.DataLoader:
    """A conventional per-sample torchvision-transforms DataLoader over ``split`` (CPU), for benchmarks.

    Transforms: ``RandomCrop(size, padding=pad)`` and ``RandomHorizontalFlip()`` when ``augment``
    (flip only if ``flip``), then ``ToDtype(float32, scale=True)`` and ``Normalize(mean, std)``.
    ``seed`` seeds the shuffling generator (and hence the worker seeds).
    """
    from torchvision.transforms import v2

    steps: list[Any] = []
    if augment:
        steps.append(v2.RandomCrop(split.images.shape[-1], padding=pad))
        if flip:
            steps.append(v2.RandomHorizontalFlip())
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]
    return torch.utils.data.DataLoader(
        _TensorImageDataset(split, v2.Compose(steps)),
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=num_workers,
        generator=torch.Generator().manual_seed(seed),
        persistent_workers=num_workers > 0,
    )


def median_round_seconds(fns: dict[str, Callable[[], None]], rounds: int) -> dict[str, float]:
    """Run each function once per round, interleaved (order reversed every other round); median times."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for fn in fns.values():  # warm-up
        fn()
    for r in range(rounds):
        for name, fn in (reversed(fns.items()) if r % 2 else fns.items()):
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}


def plain_copy(net: nn.Module, config: tuple[int, ...]) -> nn.Module:
    """A copy of a GroSS net with every GroSS layer replaced by its plain bottleneck at ``config``."""
    plain = copy.deepcopy(net)
    for (name, layer), s in zip(decomposed_layers(plain), config):
        setattr(plain, name, layer.to_bottleneck(s))
    return plain


def trainable_sgd(params: list[nn.Parameter]) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=1e-4, momentum=0.9, weight_decay=5e-4)


def bench_gross_overhead(data, device: torch.device, steps: int, rounds: int, alpha: float,
                         btd_options: dict, channels_last: bool) -> dict:
    """(a): per-step time of GroSS at sampled configurations vs plain nets of the same configurations."""
    net = decompose(build_papernet(data.in_channels, data.num_classes), **btd_options).to(device)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    layers = decomposed_layers(net)
    generator = torch.Generator().manual_seed(0)
    samplers = [GroupSizeSampler(layer.group_sizes, alpha, generator=generator) for _, layer in layers]
    configs = [tuple(s.sample() for s in samplers) for _ in range(steps)]
    batches = list(iterate_batches(data.train, 128, shuffle=True, augment=True, flip=data.augment_flip,
                                   mean=data.mean, std=data.std, generator=torch.Generator().manual_seed(0),
                                   drop_last=True, channels_last=channels_last))
    batches = [batches[i % len(batches)] for i in range(steps)]

    for p in net.parameters():
        p.requires_grad_(False)
    terms = [p for _, layer in layers for p in [*layer.p_terms, *layer.r_terms, *layer.q_terms]]
    for p in terms:
        p.requires_grad_(True)
    gross_opt = trainable_sgd(terms)

    plain_nets: dict[tuple[int, ...], tuple[nn.Module, torch.optim.Optimizer]] = {}
    for config in dict.fromkeys(configs):
        plain = plain_copy(net, config)
        for p in plain.parameters():
            p.requires_grad_(False)
        weights = [conv.weight for name, _ in layers for conv in plain.get_submodule(name).children()]
        for w in weights:
            w.requires_grad_(True)
        plain_nets[config] = (plain.to(memory_format=layout).train(), trainable_sgd(weights))
    net.to(memory_format=layout).train()

    def gross_steps() -> None:
        for config, (x, y) in zip(configs, batches):
            set_config(net, config)
            loss = F.cross_entropy(net(x), y)
            gross_opt.zero_grad(set_to_none=True)
            loss.backward()
            gross_opt.step()

    def plain_steps() -> None:
        for config, (x, y) in zip(configs, batches):
            plain, opt = plain_nets[config]
            loss = F.cross_entropy(plain(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    t = median_round_seconds({"gross": gross_steps, "plain": plain_steps}, rounds)
    return {"alpha": alpha, "steps": steps, "distinct_configs": len(plain_nets),
            "gross_ms": 1e3 * t["gross"] / steps, "plain_ms": 1e3 * t["plain"] / steps,
            "ratio": t["gross"] / t["plain"]}


def bench_pipeline(data, device: torch.device, rounds: int, channels_last: bool) -> dict:
    """(b): images/s of a PaperNet training epoch with each input pipeline, and of the pipelines alone."""
    layout = torch.channels_last if channels_last else torch.contiguous_format
    net = build_papernet(data.in_channels, data.num_classes).to(device).to(memory_format=layout).train()
    opt = trainable_sgd(list(net.parameters()))
    flip = data.augment_flip
    train_dev = data.train.to(device)
    generator = torch.Generator().manual_seed(0)
    loader = per_sample_dataloader(data.train, 128, True, flip, data.mean, data.std, num_workers=0, seed=0)

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        loss = F.cross_entropy(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def on_device(train: bool) -> Callable[[], None]:
        def run() -> None:
            for x, y in iterate_batches(train_dev, 128, shuffle=True, augment=True, flip=flip, mean=data.mean,
                                        std=data.std, generator=generator, channels_last=channels_last):
                if train:
                    step(x, y)
        return run

    def per_sample(train: bool) -> Callable[[], None]:
        def run() -> None:
            for x, y in loader:
                x = x.to(device, non_blocking=True).contiguous(memory_format=layout)
                y = y.to(device, non_blocking=True)
                if train:
                    step(x, y)
        return run

    t = median_round_seconds({"device_train": on_device(True), "loader_train": per_sample(True),
                              "device_only": on_device(False), "loader_only": per_sample(False)}, rounds)
    n = len(data.train)
    ips = {k: n / v for k, v in t.items()}
    return {"images": n, **{f"{k}_img_s": v for k, v in ips.items()},
            "train_ratio": ips["device_train"] / ips["loader_train"],
            "pipeline_ratio": ips["device_only"] / ips["loader_only"]}


def bench_quick_preset(device: torch.device, channels_last: bool) -> dict:
    """(c): the 'quick' preset end to end on digits; accuracies (%) and wall seconds per stage."""
    data = load_dataset("digits")
    seconds: dict[str, float] = {}
    options = dict(device=device, progress=False, channels_last=channels_last)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        net = build_papernet(data.in_channels, data.num_classes, seed=0)
        full = train_full(net, data, get_preset("quick").stage("full"), f"{tmp}/full", **options)
        seconds["full training"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        gross = decompose(net, **dict(get_preset("quick").btd_options))
        seconds[f"BTD decomposition {dict(get_preset('quick').btd_options)}"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        rec = reconstruct_responses(gross, net, data, get_preset("quick").stage("reconstruct_gross"),
                                    f"{tmp}/rec",
                                    **options)
        seconds["reconstruction (GroSS, alpha 4)"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        ft = finetune(gross, data, get_preset("quick").stage("finetune_gross"), f"{tmp}/ft", **options)
        seconds["fine-tuning (GroSS, alpha 4)"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        val = {}
        for config in search_space(gross):
            set_config(gross, config)
            val[config] = evaluate(gross, data.val, data.mean, data.std)["accuracy"]
        seconds[f"evaluate all {len(val)} configurations (validation)"] = time.perf_counter() - t0
        test = {}
        for name, config in [("largest", largest_config(gross))] + [
                (f"uniform {s}", uniform_config(gross, s)) for s in (1, 4, 16, 32)]:
            set_config(gross, config)
            test[f"{name} ({'-'.join(map(str, config))})"] = evaluate(gross, data.test, data.mean, data.std)
    accs = sorted(val.values())
    return {"full_test": 100 * full.test_accuracy, "full_val": 100 * full.val_accuracy,
            "rec_largest_test": 100 * rec.test_accuracy, "ft_largest_test": 100 * ft.test_accuracy,
            "ft_largest_val": 100 * ft.val_accuracy, "configs": len(val),
            "val_min": 100 * accs[0], "val_median": 100 * statistics.median(accs), "val_max": 100 * accs[-1],
            "test": {k: 100 * v["accuracy"] for k, v in test.items()}, "seconds": seconds}


def header(env: dict, args: argparse.Namespace) -> str:
    return (f"Run {date.today().isoformat()}: `python benchmarks/bench_train.py --parts {args.parts} "
            f"--threads {args.threads} --steps {args.steps} --rounds {args.rounds}"
            f"{'' if args.channels_last else ' --no-channels-last'}`; {env['cpu']}, {env['cpu_count']} CPUs "
            f"visible and shared with other jobs (absolute times are noisy), torch {env['torch']}, "
            f"{env['torch_threads']} thread(s), device `{env['device']}`, channels-last "
            f"{'on' if args.channels_last else 'off'}.")


def markdown_a(rows: list[dict], env: dict, args: argparse.Namespace) -> str:
    table = "\n".join(f"| {r['alpha']:g} | {r['steps']} | {r['distinct_configs']} | {r['gross_ms']:.1f} "
                      f"| {r['plain_ms']:.1f} | **{r['ratio']:.3f}** |" for r in rows)
    return f"""### (a) GroSS step overhead

{header(env, args)} Median of {args.rounds} interleaved rounds.

A GroSS fine-tuning step at a sampled configuration vs a plain step of the same configuration (the
`to_bottleneck` convs), same batches of 128 (digits), SGD with momentum over the bottleneck weights only.
Target: ratio <= 1.15. alpha 4 is the paper's temperature (almost always the smallest sizes: one term per
layer, nothing to merge); alpha 0 samples uniformly; alpha -4 almost always picks the largest sizes, where
the series layer sums the most terms (6-7 per layer) in every forward: the worst case.

| alpha | steps | distinct configs | GroSS ms/step | plain ms/step | ratio |
| --- | --- | --- | --- | --- | --- |
{table}
"""


def markdown_b(b: dict, env: dict, args: argparse.Namespace) -> str:
    return f"""### (b) Input pipeline

{header(env, args)} Median of {args.rounds} interleaved rounds.

One epoch over digits' {b['images']} training images with PaperNet (batch 128, crop augmentation):
on-device batches (`iterate_batches`) vs the per-sample torchvision `DataLoader`
(`per_sample_dataloader`, 0 workers), with the training step and for the pipeline alone. On a CPU the
training step dominates; the pipeline's own speed matters most when the step runs on a GPU.

| pipeline | with training step (img/s) | pipeline alone (img/s) |
| --- | --- | --- |
| on-device `iterate_batches` | {b['device_train_img_s']:.0f} | {b['device_only_img_s']:.0f} |
| per-sample `DataLoader` | {b['loader_train_img_s']:.0f} | {b['loader_only_img_s']:.0f} |
| ratio (on-device / per-sample) | **{b['train_ratio']:.2f}x** | **{b['pipeline_ratio']:.1f}x** |
"""


def markdown_c(c: dict, env: dict, args: argparse.Namespace) -> str:
    times = "\n".join(f"| {stage} | {sec:.0f} |" for stage, sec in c["seconds"].items())
    tests = "\n".join(f"| {name} | {acc:.1f} |" for name, acc in c["test"].items())
    return f"""### (c) 'quick' preset end to end (digits)

{header(env, args)}

Full network: **{c['full_test']:.1f}%** test ({c['full_val']:.1f}% validation). GroSS at its largest
configuration: {c['rec_largest_test']:.1f}% test after reconstruction, **{c['ft_largest_test']:.1f}%** after
fine-tuning ({c['ft_largest_val']:.1f}% validation), i.e. {c['ft_largest_test'] - c['full_test']:+.1f} points
from the full network (acceptance: within 2). All {c['configs']} configurations evaluated on the validation
split: accuracy min {c['val_min']:.1f}%, median {c['val_median']:.1f}%, max {c['val_max']:.1f}%.
(Digits' validation and test splits hold 299 images each: one image is 0.33 points.)

| configuration after fine-tuning | test accuracy (%) |
| --- | --- |
{tests}

| stage | wall seconds |
| --- | --- |
{times}
| total | {sum(c['seconds'].values()):.0f} |
"""


def write_section(parts: dict[str, str], path: Path) -> None:
    """Rewrite the given ``### `` subsections of this benchmark's section of RESULTS.md, keep the rest."""
    old = read_section(path, SECTION) or ""
    kept: dict[str, str] = {}
    for chunk in old.split("\n### ")[1:]:
        kept[chunk[:3]] = "### " + chunk.rstrip("\n") + "\n"
    kept.update(parts)
    replace_section(path, SECTION, SECTION + "\n\n" + "\n".join(kept[key] for key in sorted(kept)))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", default="a,b", help="which benchmarks: a, b, c (c takes minutes)")
    parser.add_argument("--device", default="cpu", help="cpu | cuda | auto")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (the machine is shared)")
    parser.add_argument("--steps", type=int, default=16, help="training steps per timed round in (a)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--alphas", default="4,0,-4",
                        help="sampling temperatures for (a): 4 = the paper's (mostly the smallest sizes), "
                             "0 = uniform, -4 = mostly the largest sizes (the most terms to merge)")
    parser.add_argument("--no-channels-last", dest="channels_last", action="store_false",
                        help="NCHW instead of the channels-last layout training uses by default on CPU/CUDA")
    parser.add_argument("--write-results", action="store_true", help=f"update {SECTION!r} in RESULTS.md")
    args = parser.parse_args(argv)
    parts = {p.strip() for p in args.parts.split(",") if p.strip()}
    if not parts <= {"a", "b", "c"}:
        parser.error(f"--parts takes a, b and/or c, got {args.parts!r}")
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    env = environment_info(device)
    data = load_dataset("digits")
    results: dict = {}
    text: dict[str, str] = {}
    if "a" in parts:
        btd_options = {"tol": 1e-3, "max_iter": 5}  # the weights' values do not matter for timing
        results["a"] = [bench_gross_overhead(data, device, args.steps, args.rounds, float(a), btd_options,
                                             args.channels_last) for a in args.alphas.split(",")]
        for r in results["a"]:
            print(f"(a) alpha={r['alpha']:g}: GroSS {r['gross_ms']:.1f} ms/step, plain {r['plain_ms']:.1f} "
                  f"ms/step, ratio {r['ratio']:.3f} ({r['distinct_configs']} configs)", flush=True)
        text["(a)"] = markdown_a(results["a"], env, args)
    if "b" in parts:
        results["b"] = b = bench_pipeline(data, device, args.rounds, args.channels_last)
        print(f"(b) train img/s: on-device {b['device_train_img_s']:.0f}, per-sample "
              f"{b['loader_train_img_s']:.0f} (ratio {b['train_ratio']:.2f}); pipeline alone: "
              f"{b['device_only_img_s']:.0f} vs {b['loader_only_img_s']:.0f} "
              f"(ratio {b['pipeline_ratio']:.1f})", flush=True)
        text["(b)"] = markdown_b(b, env, args)
    if "c" in parts:
        results["c"] = c = bench_quick_preset(device, args.channels_last)
        print(f"(c) {c}", flush=True)
        text["(c)"] = markdown_c(c, env, args)
    if args.write_results:
        write_section(text, BENCHMARKS_DIR / "RESULTS.md")
        print(f"wrote {BENCHMARKS_DIR / 'RESULTS.md'}")
    return results


if __name__ == "__main__":
    sys.exit(main() and 0)
