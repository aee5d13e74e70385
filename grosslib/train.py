"""Training: the full network, response reconstruction and (GroSS) fine-tuning.

Three stages of the paper's recipe (``docs/method.md``), all SGD with momentum and a
step schedule (:class:`torch.optim.lr_scheduler.MultiStepLR`, stepped once per epoch):

* :func:`train_full` trains every parameter of a plain network on classification.
* :func:`reconstruct_responses` trains a decomposed network so that each decomposed layer's
  output ``A'`` matches the original conv's output ``A`` on the same images:
  ``loss = sum_layers ||A' - A||_F / ||A||_F`` (norms over the whole batch).
* :func:`finetune` trains a decomposed network on classification.

In the last two only the series terms (``p_terms``, ``r_terms``, ``q_terms``) of the
:class:`~grosslib.GroSSConv2d` layers train; every other parameter is frozen for the duration
and the layers' biases are buffers, so all of them stay bit-for-bit unchanged. Modules with running
statistics (BatchNorm) are kept in eval mode during these stages, as the authors freeze BatchNorm when
fine-tuning: they normalise with their stored statistics and never update them (dropout still drops). With
``cfg.alpha`` set (GroSS), every step samples a group size per layer from
:class:`~grosslib.GroupSizeSampler`; with ``cfg.alpha = None`` the active configuration trains
(for a fixed network, built by :func:`~grosslib.models.fixed_config_network`, the only one).
Gradients are reset to ``None`` each step, so terms above the sampled size get no update,
momentum or weight decay in that step (docs/method.md: "training at s_k updates terms 1..k only").

Every run lives in a directory: ``run_info.json`` (parameters, versions, device) and the files of
its :class:`~grosslib.checkpoint.Checkpointer`: ``metrics.jsonl`` (one JSON object per epoch),
``checkpoint.pt`` (written atomically after each epoch) and, once finished, ``done.json``. An epoch
whose loss or trained weights are NaN / infinite stops the run with :class:`NonFiniteError` before
its checkpoint is written, so the last good state stays on disk; :func:`evaluate` refuses
non-finite outputs. Progress (stage, epoch, loss) goes through :mod:`grosslib.progress`.

Calling again with ``resume=True`` continues from the checkpoint and ends with exactly the weights
of an uninterrupted run (data order comes from a generator seeded per epoch; the sampling generator,
the global RNG used by dropout, the optimiser and the scheduler are restored); a finished run is not
repeated: its stored result is returned and the final weights are loaded into the network.

Data: :class:`~grosslib.data.DatasetSplits` (in memory, batched and augmented on the device) or
:class:`~grosslib.data.LoaderSplits` (DataLoaders or any re-iterable of batches, for data that does
not fit in memory).

Accuracies are fractions in ``[0, 1]``; losses are means over samples.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import itertools
import math
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from grosslib import progress as live
from grosslib.checkpoint import (
    CHECKPOINT_FILE,
    CHECKPOINT_FORMAT,
    DONE_FILE,
    METRICS_FILE,
    Checkpointer,
    CheckpointError,
    architecture_signature,
)
from grosslib.data import DatasetSplits, LoaderSplits, Split, num_batches, split_batches, split_size
from grosslib.io import resolve_device
from grosslib.models import Config, config_name, decomposed_layers, get_config, set_config
from grosslib.reconstruction import RECONSTRUCTION_MODES, reconstruction_loss
from grosslib.runinfo import write_run_info
from grosslib.sampling import GroupSizeSampler, check_reading

__all__ = ["CHECKPOINT_FILE", "DONE_FILE", "METRICS_FILE", "CheckpointError", "NonFiniteError", "TrainConfig",
           "TrainResult", "architecture_signature", "evaluate", "finetune", "reconstruct_responses",
           "train_full"]

CHANNELS_LAST_DEVICES = ("cpu", "cuda")  # where channels_last=None turns the channels-last layout on


class NonFiniteError(FloatingPointError):
    """A loss, weight or network output became NaN or infinite: the run stopped, its last good state kept."""


# ---------------------------------------------------------------------------------------------------------
# Configuration and results
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one training stage (see :mod:`grosslib.presets` for named sets).

    Attributes
    ----------
    epochs : number of passes over the training split.
    lr : initial learning rate.
    milestones : epochs after which the learning rate is multiplied by ``gamma``.
    gamma : learning-rate decay factor.
    momentum, weight_decay, nesterov : SGD settings (weight decay only on trained parameters).
    batch_size : training batch size.
    augment : random crops from the 2-pixel zero-padded image.
    flip : random horizontal flips (with ``augment``); None = the dataset's default.
    seed : seeds data order, dropout and group-size sampling (not the weights' initialisation).
    alpha : GroSS sampling temperature; None trains the active (fixed) configuration.
    alpha_reading : how eq. 8's index is read: ``"literal"`` exp(-alpha i) or ``"normalized"``
        exp(-alpha i / N) (:mod:`grosslib.sampling`; the paper does not say).
    max_batches : cap on batches per epoch (None = the whole split); for tests and smoke runs.
    max_grad_norm : clip the gradient's global norm of the trained parameters (None = no clipping).
        Not in the paper: a guard for decomposed networks, whose BTD factors can be badly scaled.
    notes : why these values.
    """

    epochs: int
    lr: float
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 128
    nesterov: bool = False
    augment: bool = True
    flip: bool | None = None
    seed: int = 0
    alpha: float | None = None
    alpha_reading: str = "literal"
    max_batches: int | None = None
    max_grad_norm: float | None = None
    notes: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "milestones", tuple(int(m) for m in self.milestones))
        if self.epochs < 0:
            raise ValueError(f"epochs must be >= 0, got {self.epochs}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if list(self.milestones) != sorted(set(self.milestones)) or any(m < 1 for m in self.milestones):
            raise ValueError(f"milestones must be distinct, ascending positive epochs, got {self.milestones}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {self.batch_size}")
        if self.max_batches is not None and self.max_batches < 1:
            raise ValueError(f"max_batches must be positive or None, got {self.max_batches}")
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            raise ValueError(f"max_grad_norm must be positive or None, got {self.max_grad_norm}")
        if self.alpha is not None and not math.isfinite(self.alpha):
            raise ValueError(f"alpha must be finite or None, got {self.alpha}")
        check_reading(self.alpha_reading)
        if self.nesterov and (self.momentum <= 0):
            raise ValueError("nesterov needs a positive momentum")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (milestones as a list)."""
        d = dataclasses.asdict(self)
        d["milestones"] = list(self.milestones)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict`."""
        return cls(**d)


@dataclass
class TrainResult:
    """What a training stage produced.

    Attributes
    ----------
    stage : ``"full"``, ``"reconstruct"`` or ``"finetune"``.
    final : final metrics: the last epoch's validation metrics and the test metrics (keys
        ``val_accuracy``, ``test_accuracy``, ...; for decomposed nets also ``...@<config>`` per
        reported configuration, the plain keys being the largest one's).
    history : one dict of metrics per epoch (what ``metrics.jsonl`` holds).
    run_dir : the run directory.
    wall_seconds : training time over all sessions of the run.
    sample_counts : per layer, how often each group size was sampled (GroSS stages; else empty).
    resumed_epochs : epochs restored from a checkpoint at the start of this call.
    skipped : True when the run had finished before and its stored result was returned.
    """

    stage: str
    final: dict[str, float]
    history: list[dict[str, Any]]
    run_dir: Path
    wall_seconds: float
    sample_counts: dict[str, dict[int, int]] = field(default_factory=dict)
    resumed_epochs: int = 0
    skipped: bool = False

    @property
    def val_accuracy(self) -> float:
        return float(self.final.get("val_accuracy", math.nan))

    @property
    def test_accuracy(self) -> float:
        return float(self.final.get("test_accuracy", math.nan))


# ---------------------------------------------------------------------------------------------------------
# Public stages: the three of the paper, and evaluation
# ---------------------------------------------------------------------------------------------------------


def train_full(net: nn.Module, data: DatasetSplits | LoaderSplits, cfg: TrainConfig,
               run_dir: str | Path, *,
               device: torch.device | str | None = None, resume: bool = True, progress: bool = True,
               channels_last: bool | None = None) -> TrainResult:
    """Train every parameter of ``net`` (in place) on classification: SGD, cross-entropy, step schedule.

    Parameters
    ----------
    net : the network (e.g. :func:`~grosslib.models.build_papernet`); moved to ``device``.
    data : the dataset splits; validation metrics each epoch, test metrics at the end.
    cfg : hyper-parameters; ``cfg.alpha`` must be None.
    run_dir : where metrics, checkpoints and the result go.
    device : None = :func:`resolve_device`'s choice.
    resume : continue from ``run_dir``'s checkpoint (or return its finished result); False starts over.
    progress : show tqdm progress bars.
    channels_last : channels-last memory format for the net and the batches; None = on CPU and CUDA
        (measured on CPU: training steps 1.4-1.7x faster; not measured on CUDA or MPS).
    """
    if cfg.alpha is not None:
        raise ValueError("train_full trains a plain network; cfg.alpha (GroSS sampling) must be None")
    device, data, channels_last = _prepare([net], data, device, channels_last)
    task = _Classification(net, data, _report_configs(net, None))
    trainable = list(net.parameters())
    return _fit("full", task, trainable, data, cfg, run_dir, device=device, resume=resume, progress=progress,
                channels_last=channels_last, options={})


def reconstruct_responses(decomposed: nn.Module, original: nn.Module, data: DatasetSplits | LoaderSplits,
                          cfg: TrainConfig, run_dir: str | Path, *, device: torch.device | str | None = None,
                          resume: bool = True, progress: bool = True, channels_last: bool | None = None,
                          mode: str = "end_to_end") -> TrainResult:
    """Train the series terms of ``decomposed`` so each layer reproduces the original conv's response.

    Loss per batch: ``sum_l ||A'_l - A_l||_F / ||A_l||_F`` over the decomposed layers ``l``, where
    ``A_l`` is the output of ``original``'s conv of the same name (forward hook, no gradient) and
    ``A'_l`` the decomposed layer's output on the same batch.

    Parameters
    ----------
    decomposed : a network from :func:`~grosslib.models.decompose` or
        :func:`~grosslib.models.fixed_config_network`; trained in place (series terms only).
    original : the network it was decomposed from (not modified; put in eval mode while training).
    data, cfg, run_dir, device, resume, progress, channels_last : as in :func:`train_full`. With
        ``cfg.alpha`` set, each step samples a group size per layer at that temperature.
    mode : ``"end_to_end"`` (default, the natural reading of the paper): ``A'_l`` is computed from
        the decomposed network's own input to layer ``l``, so the errors of earlier decomposed
        layers are seen and compensated. ``"layerwise"``: ``A'_l`` is computed from the original
        network's input to its conv ``l``, so every layer is fitted on its own.

    Metrics: classification accuracy/loss and ``recon_loss`` on the validation split each epoch
    (at the smallest and largest configuration for GroSS), test metrics at the end.
    """
    if mode not in RECONSTRUCTION_MODES:
        raise ValueError(f"mode must be one of {RECONSTRUCTION_MODES}, got {mode!r}")
    trainable = _series_parameters(decomposed)
    device, data, channels_last = _prepare([decomposed, original], data, device, channels_last)
    was_training = original.training
    original.eval()
    try:
        task = _Reconstruction(decomposed, original, data, _report_configs(decomposed, cfg.alpha), mode)
        return _fit("reconstruct", task, trainable, data, cfg, run_dir, device=device, resume=resume,
                    progress=progress, channels_last=channels_last, options={"mode": mode})
    finally:
        original.train(was_training)


def finetune(decomposed: nn.Module, data: DatasetSplits | LoaderSplits, cfg: TrainConfig,
             run_dir: str | Path, *,
             device: torch.device | str | None = None, resume: bool = True, progress: bool = True,
             channels_last: bool | None = None) -> TrainResult:
    """Fine-tune the series terms of ``decomposed`` (in place) on classification.

    GroSS (``cfg.alpha`` set): every step samples one group size per layer at temperature
    ``cfg.alpha`` (:class:`~grosslib.GroupSizeSampler`; counts in ``TrainResult.sample_counts``
    and each epoch's ``"sampled"``). ``cfg.alpha = None``: the active configuration trains (a fixed
    network's only one). Other arguments as in :func:`train_full`. Metrics at the smallest and
    largest configuration for GroSS (the plain keys: the largest), else at the active one.
    """
    trainable = _series_parameters(decomposed)
    device, data, channels_last = _prepare([decomposed], data, device, channels_last)
    task = _Classification(decomposed, data, _report_configs(decomposed, cfg.alpha))
    return _fit("finetune", task, trainable, data, cfg, run_dir, device=device, resume=resume,
                progress=progress, channels_last=channels_last, options={})


@torch.no_grad()
def evaluate(net: nn.Module, split: Split | Iterable[Any], mean: Sequence[float] | None,
             std: Sequence[float] | None, *,
             batch_size: int = 1000, device: torch.device | str | None = None) -> dict[str, float]:
    """Classification accuracy (fraction) and mean cross-entropy of ``net`` on ``split``.

    ``split``: a :class:`~grosslib.data.Split` or a loader of ``(images, labels)`` batches
    (:func:`~grosslib.data.split_batches`). Runs in eval mode (restored afterwards) at the net's active
    configuration. ``device``: where
    to run (the net is moved there); None = where the net already is. Batches are fed channels-last
    when the net's weights are.
    """
    device = _module_device(net) if device is None else resolve_device(device)
    net.to(device)
    channels_last = _is_channels_last(net)
    was_training = net.training
    net.eval()
    correct = torch.zeros((), dtype=torch.int64, device=device)
    loss_sum = torch.zeros((), device=device)  # float32: MPS has no float64
    seen = 0
    try:
        for x, y in split_batches(split, batch_size, mean=mean, std=std, device=device,
                                  channels_last=channels_last):
            seen += len(y)
            logits = net(x)
            if not bool(torch.isfinite(logits).all()):
                raise NonFiniteError("the network's outputs contain NaN or infinite values (its weights "
                                     "diverged?); refusing to report an accuracy for them")
            loss_sum += F.cross_entropy(logits, y, reduction="sum")
            correct += (logits.argmax(1) == y).sum()
    finally:
        net.train(was_training)
    n = max(seen, 1)
    return {"accuracy": int(correct) / n, "loss": float(loss_sum) / n}


# ---------------------------------------------------------------------------------------------------------
# Evaluation helpers
# ---------------------------------------------------------------------------------------------------------


def _is_channels_last(net: nn.Module) -> bool:
    """Whether the net's first 4-d parameter with spatial extent is stored channels-last."""
    for p in net.parameters():
        if p.dim() == 4 and p.shape[-1] * p.shape[-2] > 1 and p.shape[1] > 1:
            return p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous()
    return False


def _module_device(net: nn.Module) -> torch.device:
    for tensor in net.parameters():
        return tensor.device
    for tensor in net.buffers():
        return tensor.device
    return torch.device("cpu")


@contextlib.contextmanager
def _active_config(net: nn.Module, config: Config | None) -> Iterator[None]:
    """Temporarily set a decomposed net's configuration (None: leave it)."""
    if config is None:
        yield
        return
    before = get_config(net)
    set_config(net, config)
    try:
        yield
    finally:
        set_config(net, before)


def _report_configs(net: nn.Module, alpha: float | None) -> list[Config | None]:
    """Configurations whose metrics a run reports; the headline one last.

    Plain net: [None]. GroSS (alpha set): smallest and largest. Otherwise the active one.
    """
    layers = decomposed_layers(net)
    if not layers:
        return [None]
    if alpha is None:
        return [get_config(net)]
    smallest = tuple(layer.group_sizes[0] for _, layer in layers)
    largest = tuple(layer.group_sizes[-1] for _, layer in layers)
    return [smallest, largest] if smallest != largest else [largest]


def _keyed(metrics: dict[str, float], prefix: str, config: Config | None, headline: bool) -> dict[str, float]:
    """``{'accuracy': a}`` -> ``{'val_accuracy@1-1-1': a}`` (and ``'val_accuracy'`` for the headline)."""
    out: dict[str, float] = {}
    for key, value in metrics.items():
        if config is not None:
            out[f"{prefix}_{key}@{config_name(config)}"] = value
        if headline:
            out[f"{prefix}_{key}"] = value
    return out


# ---------------------------------------------------------------------------------------------------------
# Seeds, freezing, sampling
# ---------------------------------------------------------------------------------------------------------


def derive_seed(seed: int, *keys: int | str) -> int:
    """A 63-bit seed derived from ``seed`` and ``keys``, stable across processes and platforms."""
    digest = hashlib.sha256(repr((int(seed), *keys)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def _series_parameters(net: nn.Module) -> list[nn.Parameter]:
    """The p/r/q terms of every GroSS layer (the only parameters decomposed stages train)."""
    params: list[nn.Parameter] = []
    for _, layer in decomposed_layers(net):
        params += [*layer.p_terms, *layer.r_terms, *layer.q_terms]
    if not params:
        raise ValueError("the network has no GroSSConv2d layer; decompose it first (models.decompose)")
    return params


@contextlib.contextmanager
def _train_only(net: nn.Module, trainable: Sequence[nn.Parameter]) -> Iterator[None]:
    """Set ``requires_grad`` on ``trainable`` only; restore every flag afterwards."""
    flags = [(p, p.requires_grad) for p in net.parameters()]
    keep = {id(p) for p in trainable}
    for p, _ in flags:
        p.requires_grad_(id(p) in keep)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


class _ConfigSampler:
    """Per step, one group size per GroSS layer at temperature ``alpha``; counts what it drew."""

    def __init__(self, net: nn.Module, alpha: float, seed: int, reading: str = "literal") -> None:
        self.layers = decomposed_layers(net)
        self.generator = torch.Generator().manual_seed(derive_seed(seed, "group-size-sampling"))
        self.samplers = [GroupSizeSampler(layer.group_sizes, alpha, generator=self.generator, reading=reading)
                         for _, layer in self.layers]
        self.counts: dict[str, Counter[int]] = {name: Counter() for name, _ in self.layers}

    def step(self) -> None:
        for (name, layer), sampler in zip(self.layers, self.samplers):
            size = sampler.sample()
            layer.group_size = size
            self.counts[name][size] += 1

    def take_counts(self) -> dict[str, dict[str, int]]:
        """This epoch's counts (JSON-ready, sizes ascending); resets them."""
        out = {name: {str(s): c[s] for s in sorted(c)} for name, c in self.counts.items()}
        self.counts = {name: Counter() for name in self.counts}
        return out


# ---------------------------------------------------------------------------------------------------------
# Stage tasks: the loss of a training batch, the metrics of a split
# ---------------------------------------------------------------------------------------------------------


class _Classification:
    """Cross-entropy training; metrics: accuracy and loss at the reported configurations."""

    def __init__(self, net: nn.Module, data: DatasetSplits | LoaderSplits,
                 configs: list[Config | None]) -> None:
        self.net, self.data, self.configs = net, data, configs

    def loss(self, x: Tensor, y: Tensor) -> Tensor:
        return F.cross_entropy(self.net(x), y)

    def metrics(self, split: Split, prefix: str) -> dict[str, float]:
        out: dict[str, float] = {}
        for i, config in enumerate(self.configs):
            with _active_config(self.net, config):
                m = evaluate(self.net, split, self.data.mean, self.data.std)
            out.update(_keyed(m, prefix, config, headline=i == len(self.configs) - 1))
        return out


class _Reconstruction(_Classification):
    """Response reconstruction against the original network; metrics add the reconstruction loss."""

    def __init__(self, net: nn.Module, original: nn.Module, data: DatasetSplits | LoaderSplits,
                 configs: list[Config | None],
                 mode: str) -> None:
        super().__init__(net, data, configs)
        self.original, self.mode = original, mode
        self.layers = [layer for _, layer in decomposed_layers(net)]
        self.targets: list[nn.Module] = []
        for name, _ in decomposed_layers(net):
            try:
                module = original.get_submodule(name)
            except AttributeError as exc:
                raise ValueError(f"the original network has no module {name!r} to reconstruct") from exc
            if not isinstance(module, nn.Conv2d):
                raise ValueError(f"original.{name} is a {type(module).__name__}, expected the nn.Conv2d "
                                 "that was decomposed")
            self.targets.append(module)

    def loss(self, x: Tensor, y: Tensor) -> Tensor:
        return reconstruction_loss(self.net, self.layers, self.original, self.targets, x, self.mode)

    @torch.no_grad()
    def reconstruction_loss(self, split: Split, batch_size: int = 1000) -> float:
        """Mean per-batch reconstruction loss over ``split`` (eval mode, no augmentation)."""
        was_training = self.net.training
        self.net.eval()
        total, n = 0.0, 0
        try:
            for x, y in split_batches(split, batch_size, mean=self.data.mean, std=self.data.std,
                                      device=_module_device(self.net),
                                      channels_last=_is_channels_last(self.net)):
                total += float(self.loss(x, y)) * len(y)
                n += len(y)
        finally:
            self.net.train(was_training)
        return total / max(n, 1)

    def metrics(self, split: Split, prefix: str) -> dict[str, float]:
        out = super().metrics(split, prefix)
        for i, config in enumerate(self.configs):
            with _active_config(self.net, config):
                m = {"recon_loss": self.reconstruction_loss(split)}
            out.update(_keyed(m, prefix, config, headline=i == len(self.configs) - 1))
        return out


# ---------------------------------------------------------------------------------------------------------
# The training loop shared by the stages
# ---------------------------------------------------------------------------------------------------------


def _fit(stage: str, task: _Classification, trainable: list[nn.Parameter],
         data: DatasetSplits | LoaderSplits,
         cfg: TrainConfig, run_dir: str | Path, *, device: torch.device, resume: bool, progress: bool,
         channels_last: bool, options: dict[str, Any]) -> TrainResult:
    """Train ``task.net``'s ``trainable`` parameters for ``cfg.epochs``, with checkpoints in ``run_dir``."""
    net = task.net
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt = Checkpointer(run_dir)
    sizes = {"train": split_size(data.train), "val": split_size(data.val), "test": split_size(data.test)}
    run = {"stage": stage, "config": cfg.to_dict(), "options": options,
           "dataset": {"name": data.name, "sizes": sizes, "split_seed": data.info.get("split_seed")},
           "architecture": architecture_signature(net)}

    if not resume:
        ckpt.clear()
    elif ckpt.finished:
        return _load_finished(net, run, ckpt, device)

    flip = data.augment_flip if cfg.flip is None else cfg.flip
    sampler = _ConfigSampler(net, cfg.alpha, cfg.seed, cfg.alpha_reading) if cfg.alpha is not None else None
    optimizer = torch.optim.SGD(trainable, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                                nesterov=cfg.nesterov)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, list(cfg.milestones), gamma=cfg.gamma)
    start_config = get_config(net) if decomposed_layers(net) else None
    history: list[dict[str, Any]] = []
    start_epoch, elapsed = 0, 0.0
    cuda_devices = [device] if device.type == "cuda" else []

    with torch.random.fork_rng(devices=cuda_devices), _train_only(net, trainable):
        torch.manual_seed(derive_seed(cfg.seed, "global-rng"))  # dropout; the caller's RNG is restored after
        if ckpt.has_checkpoint:
            state = ckpt.load(device)
            ckpt.check_same_run(ckpt.checkpoint_path, state["run"], run)
            net.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            _set_rng(state["rng"], sampler, device)
            history, start_epoch = list(state["history"]), int(state["epoch"])
            elapsed = float(state["elapsed"])
            ckpt.rewrite_metrics(history)
        resumed_epochs = start_epoch
        write_run_info(run_dir, {**run, "resumed_from_epoch": start_epoch, "channels_last": channels_last},
                       device=device)

        where = f"{run_dir.parent.name}/{run_dir.name}"          # e.g. fixed_4-4-4/finetune
        live.note(f"{where}: {stage} " + (f"resumed after epoch {start_epoch}/{cfg.epochs}" if start_epoch
                                          else f"started, {cfg.epochs} epoch(s)"))
        epochs_bar = live.bar(range(start_epoch, cfg.epochs), desc=where, initial=start_epoch,
                              total=cfg.epochs, enabled=progress)
        steps = _steps_per_epoch(data.train, cfg)
        saved_epoch = start_epoch if ckpt.has_checkpoint else -1
        for epoch in epochs_bar:
            t0 = time.perf_counter()
            net.train()
            if stage != "full":
                _freeze_running_stats(net)
            generator = torch.Generator().manual_seed(derive_seed(cfg.seed, "data-order", epoch))
            loader_generator = getattr(data.train, "generator", None)
            if isinstance(loader_generator, torch.Generator):  # a DataLoader's own order, reseeded per epoch
                loader_generator.manual_seed(derive_seed(cfg.seed, "data-order", epoch))
            batches = split_batches(data.train, cfg.batch_size, shuffle=True, augment=cfg.augment, flip=flip,
                                    mean=data.mean, std=data.std, generator=generator, device=device,
                                    channels_last=channels_last)
            bar = live.bar(itertools.islice(batches, steps), total=steps, leave=False, enabled=progress,
                           desc=f"{where} epoch {epoch + 1}")
            train_loss = _train_epoch(task, optimizer, sampler, bar, cfg.max_grad_norm)
            _check_finite(train_loss, trainable, f"{where}, epoch {epoch + 1}", ckpt.checkpoint_path)
            lr = optimizer.param_groups[0]["lr"]
            scheduler.step()
            if start_config is not None:
                set_config(net, start_config)
            metrics: dict[str, Any] = {"epoch": epoch + 1, "lr": lr, "train_loss": train_loss,
                                       **task.metrics(data.val, "val")}
            if sampler is not None:
                metrics["sampled"] = sampler.take_counts()
            metrics["epoch_seconds"] = time.perf_counter() - t0
            elapsed += metrics["epoch_seconds"]
            history.append(metrics)
            ckpt.save(_checkpoint_state(run, epoch + 1, net, optimizer, scheduler, sampler, device, history,
                                        elapsed))
            saved_epoch = epoch + 1
            ckpt.append_metrics(metrics)
            shown = {k: f"{v:.4g}" for k, v in metrics.items()
                     if k in ("train_loss", "val_accuracy", "val_recon_loss")}
            epochs_bar.set_postfix(shown)
            live.note(f"{where}: epoch {epoch + 1}/{cfg.epochs} "
                      + " ".join(f"{k} {v}" for k, v in shown.items()))

        if saved_epoch != cfg.epochs:  # zero epochs, or a checkpoint that was already complete
            ckpt.save(_checkpoint_state(run, cfg.epochs, net, optimizer, scheduler, sampler, device, history,
                                        elapsed))
        if start_config is not None:
            set_config(net, start_config)
        final = {k: v for k, v in (history[-1] if history else task.metrics(data.val, "val")).items()
                 if k.startswith("val_")}
        final.update(task.metrics(data.test, "test"))

    counts = _total_counts(history)
    done = {"stage": stage, "final": final, "wall_seconds": elapsed, "history": history,
            "sample_counts": {name: {str(s): c for s, c in sizes.items()} for name, sizes in counts.items()},
            "run": {k: v for k, v in run.items() if k != "architecture"}}
    ckpt.write_done(done)
    live.note(f"{where}: {stage} done ({_summary(final)})")
    return TrainResult(stage, final, history, run_dir, elapsed, counts, resumed_epochs)


def _steps_per_epoch(train: Any, cfg: TrainConfig) -> int | None:
    """Batches per epoch: the split's (or the loader's ``len``), capped at ``cfg.max_batches``."""
    if isinstance(train, Split):
        steps: int | None = num_batches(len(train), cfg.batch_size)
    else:
        steps = len(train) if hasattr(train, "__len__") else None
    if cfg.max_batches is None:
        return steps
    return cfg.max_batches if steps is None else min(steps, cfg.max_batches)


def _freeze_running_stats(net: nn.Module) -> None:
    """Put every module with running statistics (BatchNorm, ...) in eval mode: they use and keep their stats.

    The decomposed stages train the series terms only; the authors also freeze BatchNorm while
    fine-tuning. In train mode a BatchNorm would normalise with batch statistics and overwrite its
    running mean and variance, so the "frozen" layers would change; in eval mode they stay bit for bit.
    Dropout and other train-mode behaviour are kept.
    """
    for module in net.modules():
        has_stats = getattr(module, "running_mean", None) is not None
        if has_stats and getattr(module, "track_running_stats", False):
            module.eval()


def _train_epoch(task: _Classification, optimizer: torch.optim.Optimizer, sampler: _ConfigSampler | None,
                 batches: Iterable[tuple[Tensor, Tensor]], max_grad_norm: float | None = None) -> float:
    """One pass: per batch, sample a configuration (GroSS), then one SGD step; the mean training loss."""
    loss_sum, seen = None, 0
    for x, y in batches:
        if sampler is not None:
            sampler.step()
        loss = task.loss(x, y)
        optimizer.zero_grad(set_to_none=True)  # unused (larger-size) terms get no update at all
        loss.backward()
        if max_grad_norm is not None:
            params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
            torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
        optimizer.step()
        batch_loss = loss.detach() * len(y)  # summed on the device: no synchronisation per step
        loss_sum = batch_loss if loss_sum is None else loss_sum + batch_loss
        seen += len(y)
    return float(loss_sum) / seen if seen else math.nan


def _checkpoint_state(run: dict[str, Any], epoch: int, net: nn.Module, optimizer: torch.optim.Optimizer,
                      scheduler: Any, sampler: _ConfigSampler | None, device: torch.device,
                      history: list[dict[str, Any]], elapsed: float) -> dict[str, Any]:
    rng = {"torch": torch.get_rng_state(),
           "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
           "sampler": sampler.generator.get_state() if sampler is not None else None}
    return {"format": CHECKPOINT_FORMAT, "run": run, "architecture": run["architecture"], "epoch": epoch,
            "model": net.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "rng": rng, "history": history, "elapsed": elapsed}


def _set_rng(rng: dict[str, Any], sampler: _ConfigSampler | None, device: torch.device) -> None:
    torch.set_rng_state(rng["torch"].cpu())
    if rng.get("cuda") is not None and device.type == "cuda":
        torch.cuda.set_rng_state(rng["cuda"].cpu(), device)
    if sampler is not None and rng.get("sampler") is not None:
        sampler.generator.set_state(rng["sampler"].cpu())


def _total_counts(history: list[dict[str, Any]]) -> dict[str, dict[int, int]]:
    total: dict[str, Counter[int]] = {}
    for metrics in history:
        for name, sizes in metrics.get("sampled", {}).items():
            total.setdefault(name, Counter()).update({int(s): c for s, c in sizes.items()})
    return {name: dict(sorted(c.items())) for name, c in total.items()}


def _load_finished(net: nn.Module, run: dict[str, Any], ckpt: Checkpointer,
                   device: torch.device) -> TrainResult:
    """A finished run: check it is this run, load its final weights into ``net``, return its result."""
    done = ckpt.read_done()
    stored_run, final, history = done["run"], done["final"], done["history"]
    if not ckpt.has_checkpoint:
        raise CheckpointError(f"{ckpt.done_path} says the run finished but {ckpt.checkpoint_path} (its final "
                              "weights) is missing. Pass resume=False to train again.")
    state = ckpt.load(device)
    ckpt.check_same_run(ckpt.checkpoint_path, state["run"], run)
    ckpt.check_same_run(ckpt.done_path, {**stored_run, "architecture": run["architecture"]}, run)
    net.load_state_dict(state["model"])
    counts = {name: {int(s): int(c) for s, c in sizes.items()}
              for name, sizes in done["sample_counts"].items()}
    return TrainResult(done["stage"], final, history, ckpt.run_dir, float(done["wall_seconds"]),
                       counts, resumed_epochs=int(state["epoch"]), skipped=True)


def _check_finite(train_loss: float, trainable: Sequence[nn.Parameter], where: str, checkpoint: Path) -> None:
    """Stop with :class:`NonFiniteError` when the epoch's loss or a trained weight is NaN / infinite.

    Raised before the epoch's checkpoint is written, so the last good state stays on disk.
    """
    bad_loss = not math.isfinite(train_loss)
    bad_weight = next((i for i, p in enumerate(trainable) if not bool(torch.isfinite(p).all())), None)
    if bad_loss or bad_weight is not None:
        what = f"training loss {train_loss}" if bad_loss else f"trained parameter #{bad_weight}"
        kept = f"the last good state is kept in {checkpoint}" if checkpoint.exists() else "no epoch finished"
        raise NonFiniteError(f"{where}: {what} is not finite: training diverged; {kept}. Lower the learning "
                             "rate or set max_grad_norm (stage overrides), then run again")


def _summary(final: dict[str, float]) -> str:
    keys = [k for k in ("val_accuracy", "test_accuracy", "val_recon_loss") if k in final]
    return ", ".join(f"{k} {final[k]:.4g}" for k in keys)


def _prepare(nets: Sequence[nn.Module], data: DatasetSplits | LoaderSplits, device: torch.device | str | None,
             channels_last: bool | None) -> tuple[torch.device, DatasetSplits, bool]:
    """Resolve the device, move the nets and data there, decide on channels-last."""
    device = resolve_device(device)
    channels_last = device.type in CHANNELS_LAST_DEVICES if channels_last is None else channels_last
    for net in nets:
        net.to(device)
        if channels_last:
            net.to(memory_format=torch.channels_last)
    return device, data.to(device), channels_last


