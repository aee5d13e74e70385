"""The paper's experiment as cached stages: full network, decomposition, GroSS, fixed configurations.

Every stage writes into its own folder of one run directory and is skipped when already done, so
notebooks can call these functions in any order, a killed run continues where it stopped, and a
later notebook reuses what an earlier one trained::

    <run_dir>/seed<k>/full/                         train_full (checkpoint, metrics.jsonl, done.json)
    <run_dir>/seed<k>/decomposed.pt                 the GroSS series straight after BTD
    <run_dir>/seed<k>/gross_alpha<a>/reconstruct/   response reconstruction of the series
    <run_dir>/seed<k>/gross_alpha<a>/finetune/      GroSS fine-tuning at temperature a (eq. 8 read
                                                    literally; ``gross_alpha<a>_normalized``: the
                                                    normalized reading, grosslib.sampling)
    <run_dir>/seed<k>/fixed_<config>/reconstruct/   a configuration trained on its own
    <run_dir>/seed<k>/fixed_<config>/finetune/
    <run_dir>/seed<k>/evaluations/<name>.csv        evaluations of every configuration

A fixed configuration starts from the series' bottleneck at that configuration before GroSS
training, which is exactly the per-size BTD (:func:`grosslib.models.collapse_to_config`): one
decomposition serves every configuration.

The paper's design trains several full networks, decomposes the median one once and trains every later
stage several times from it: ``Experiment(..., seed=k, network_seed=m)`` trains its stages with seed
``k`` from seed ``m``'s full network and decomposition (``<run_dir>/seed<m>/full``, ``decomposed.pt``,
shared by every such experiment), in ``<run_dir>/seed<k>_net<m>/`` (``seed<k>/`` when ``k == m``).
"""
from __future__ import annotations

import copy
import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from .btd import ALGORITHM as BTD_ALGORITHM
from .data import DatasetSplits, load_dataset
from .io import atomic_write_text, read_json, resolve_device, torch_save
from .models import (
    Config,
    build_papernet,
    collapse_to_config,
    config_name,
    decompose,
    decomposed_layers,
    search_space,
    set_config,
    uniform_config,
)
from .presets import FIXED_GROUP_SIZES, Preset, get_preset
from .sampling import check_reading
from .search import evaluate_all
from .train import TrainConfig, TrainResult, evaluate, finetune, reconstruct_responses, train_full

__all__ = ["Experiment", "StageResult", "gross_stage_name", "network_fingerprint"]


def _reading_of(alpha: float, reading: str) -> str:
    """The reading a GroSS stage is trained (and named) with: alpha 0 is uniform in both, so 'literal'."""
    check_reading(reading)
    return "literal" if float(alpha) == 0.0 else reading


def gross_stage_name(alpha: float, reading: str = "literal") -> str:
    """``gross_alpha<a>`` (eq. 8 read literally, or alpha 0) or ``gross_alpha<a>_normalized``."""
    reading = _reading_of(alpha, reading)
    return f"gross_alpha{float(alpha):g}" + ("" if reading == "literal" else f"_{reading}")


def network_fingerprint(net: nn.Module) -> str:
    """SHA-256 of a network's state dict (names, shapes, dtypes and values): which network this is."""
    digest = hashlib.sha256()
    for name, value in net.state_dict().items():
        if isinstance(value, torch.Tensor):
            tensor = value.detach().cpu().contiguous()
            digest.update(f"{name} {tuple(tensor.shape)} {tensor.dtype}".encode())
            digest.update(tensor.numpy().tobytes() if tensor.dtype != torch.bfloat16 else
                          tensor.float().numpy().tobytes())
        else:
            digest.update(f"{name} {value!r}".encode())
    return digest.hexdigest()


def _same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k].cpu(), sb[k].cpu()) for k in sa)


@dataclass
class StageResult:
    """A trained network with the results of its reconstruction and fine-tuning stages."""

    net: nn.Module
    reconstruct: TrainResult | None
    finetune: TrainResult | None
    config: Config | None = None
    alpha: float | None = None
    reading: str | None = None

    @property
    def test_accuracy(self) -> float:
        return self.finetune.test_accuracy if self.finetune else math.nan


@dataclass
class Experiment:
    """One seed of the paper's protocol on one dataset, with every stage cached in ``run_dir``.

    Parameters
    ----------
    dataset : 'digits', 'fashion-mnist' or 'cifar10'.
    preset : a :class:`~grosslib.presets.Preset` or the name of a registered one ('tiny', 'quick',
        'study', 'paper'); ``overrides`` are applied on top (:attr:`settings`).
    seed : seeds the network's initialisation and every training stage.
    network_seed : the seed whose full network (and its decomposition) the stages start from; None:
        ``seed`` (each seed its own network). The paper's design: the median of several full networks.
    run_dir : the run directory shared by all notebooks of a run.
    device : None = automatic (cuda, mps, cpu).
    data_limit : truncate each split (tests and smoke runs); None: the preset's ``data_limit``.
    progress : show progress bars.
    overrides : per-stage TrainConfig overrides, e.g. ``{"full": {"epochs": 2}}``.
    """

    dataset: str
    preset: str | Preset
    seed: int = 0
    run_dir: Path | str = "runs/interactive"
    network_seed: int | None = None
    device: str | None = None
    data_limit: int | None = None
    progress: bool = True
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.run_dir = Path(self.run_dir)
        #: the preset with this experiment's overrides applied: every setting the stages use
        self.settings: Preset = get_preset(self.preset).with_overrides(self.overrides)
        self._data: DatasetSplits | None = None
        self._full: nn.Module | None = None
        self._decomposed: nn.Module | None = None

    # ------------------------------------------------------------------ basics
    @property
    def source_seed(self) -> int:
        """The seed of the full network the stages start from."""
        return self.seed if self.network_seed is None else int(self.network_seed)

    @property
    def network_dir(self) -> Path:
        """Where the full network and its decomposition live: ``<run_dir>/seed<source_seed>``."""
        return Path(self.run_dir) / f"seed{self.source_seed}"

    @property
    def seed_dir(self) -> Path:
        """Where this seed's later stages live: ``seed<k>`` (own network) or ``seed<k>_net<m>``."""
        if self.source_seed == self.seed:
            return Path(self.run_dir) / f"seed{self.seed}"
        return Path(self.run_dir) / f"seed{self.seed}_net{self.source_seed}"

    @property
    def torch_device(self) -> torch.device:
        return resolve_device(self.device)

    @property
    def btd_options(self) -> dict[str, Any]:
        return dict(self.settings.btd_options)

    def config(self, stage: str, **overrides: Any) -> TrainConfig:
        """The preset's TrainConfig for ``stage`` with this experiment's seed and overrides."""
        return self.settings.stage(stage, seed=self.seed, **overrides)

    @property
    def data(self) -> DatasetSplits:
        """The dataset splits (loaded once)."""
        if self._data is None:
            limit = self.data_limit if self.data_limit is not None else self.settings.data_limit
            self._data = load_dataset(self.dataset, limit=limit)
        return self._data

    def _new_network(self) -> nn.Module:
        return build_papernet(self.data.in_channels, self.data.num_classes, seed=self.source_seed)

    # ------------------------------------------------------------------ stages
    def full_network(self) -> tuple[nn.Module, TrainResult]:
        """The full network trained on classification (stage 'full'; seed ``source_seed``)."""
        net = self._new_network()
        cfg = self.settings.stage("full", seed=self.source_seed)
        result = train_full(net, self.data, cfg, self.network_dir / "full", device=self.device,
                            progress=self.progress)
        net.eval()
        if self._full is not None and not _same_weights(self._full, net):
            self._decomposed = None        # the full network changed (retrained): decompose it again
        self._full = net
        return net, result

    def _original(self) -> nn.Module:
        if self._full is None:
            self.full_network()
        assert self._full is not None
        return self._full

    def decomposed(self) -> nn.Module:
        """The GroSS series of the full network straight after BTD (cached in ``decomposed.pt``).

        Each call returns a fresh copy (stages train it in place); the file is read or the BTD computed once.
        """
        if self._decomposed is None:
            self._decomposed = self._load_or_decompose()
        return copy.deepcopy(self._decomposed).to(self.torch_device)

    def _load_or_decompose(self) -> nn.Module:
        path = self.network_dir / "decomposed.pt"
        info_path = path.with_suffix(".json")     # the BTD options and the network the file was made from
        original = self._original()
        options = self.btd_options
        fingerprint = network_fingerprint(original)
        if path.exists():
            stored = read_json(info_path) if info_path.exists() else None
            stored_options = stored.get("btd_options", stored) if isinstance(stored, dict) else None
            redo = (f"delete it and the stages trained from it ({self.run_dir}/seed*/gross_*, fixed_*, "
                    "evaluations) to decompose again")
            if stored_options is not None and stored_options != json.loads(json.dumps(options)):
                raise ValueError(f"{path} was decomposed with BTD options {stored_options}, but preset "
                                 f"{self.settings.name!r} asks for {options}; {redo}")
            stored_algorithm = stored.get("btd_algorithm") if isinstance(stored, dict) else None
            if stored_options is not None and stored_algorithm != BTD_ALGORITHM:
                made_by = stored_algorithm or "plain ALS, before the ridge phases"
                raise ValueError(f"{path} was decomposed by another BTD algorithm ({made_by}) than this "
                                 f"grosslib's ({BTD_ALGORITHM}); {redo}")
            stored_network = stored.get("network") if isinstance(stored, dict) else None
            if stored_network is not None and stored_network != fingerprint:
                raise ValueError(f"{path} was decomposed from another network than {self.network_dir}/full's "
                                 f"(fingerprint {stored_network[:12]} vs {fingerprint[:12]}); {redo}")
            skeleton = decompose(original.cpu(), max_iter=0)
            try:
                state = torch.load(path, map_location="cpu", weights_only=False)
                skeleton.load_state_dict(state)
            except Exception as exc:  # noqa: BLE001 - any failure means the file can't be used
                raise ValueError(f"{path}: not a decomposition of this network ({type(exc).__name__}: "
                                 f"{exc}); delete it to decompose again") from exc
            return skeleton
        net = decompose(original.cpu(), **options)
        info = {"btd_options": options, "btd_algorithm": BTD_ALGORITHM, "network": fingerprint}
        atomic_write_text(info_path, json.dumps(info, indent=1) + "\n")
        torch_save(path, net.state_dict())
        return net

    def btd_errors(self) -> pd.DataFrame:
        """Relative BTD error per (layer, group size) of the decomposition."""
        rows = [{"layer": name, "group_size": s, "error": e}
                for name, layer in decomposed_layers(self.decomposed()) for s, e in layer.btd_errors.items()]
        return pd.DataFrame(rows)

    def gross(self, alpha: float = 4.0, reading: str = "literal") -> StageResult:
        """GroSS: response reconstruction then fine-tuning, sampling group sizes at ``alpha`` with eq. 8
        read as ``reading`` (alpha 0 is uniform in both readings: one stage serves both)."""
        reading = _reading_of(alpha, reading)
        net = self.decomposed()
        folder = self.seed_dir / gross_stage_name(alpha, reading)
        sampling = {"alpha": alpha, "alpha_reading": reading}
        recon = reconstruct_responses(net, self._original(), self.data, self.config("reconstruct_gross",
                                      **sampling), folder / "reconstruct", device=self.device,
                                      progress=self.progress)
        tuned = finetune(net, self.data, self.config("finetune_gross", **sampling), folder / "finetune",
                         device=self.device, progress=self.progress)
        net.eval()
        return StageResult(net, recon, tuned, alpha=alpha, reading=reading)

    def fixed(self, config: Sequence[int]) -> StageResult:
        """A configuration decomposed, reconstructed and fine-tuned on its own (a fixed baseline)."""
        config = tuple(int(s) for s in config)
        net = collapse_to_config(self.decomposed(), config)
        folder = self.seed_dir / f"fixed_{config_name(config)}"
        recon = reconstruct_responses(net, self._original(), self.data, self.config("reconstruct_fixed"),
                                      folder / "reconstruct", device=self.device, progress=self.progress)
        tuned = finetune(net, self.data, self.config("finetune_fixed"), folder / "finetune",
                         device=self.device, progress=self.progress)
        net.eval()
        return StageResult(net, recon, tuned, config=config)

    def uniform_config(self, group_size: int) -> Config:
        """The paper's 'fixed-s' configuration for this network."""
        return uniform_config(self.decomposed(), group_size)

    def fixed_configs(self, sizes: Sequence[int] = FIXED_GROUP_SIZES) -> dict[int, Config]:
        """The fixed baselines' configurations, keyed by their group size."""
        return {s: self.uniform_config(s) for s in sizes}

    # ------------------------------------------------------------------ evaluation
    def gross_evaluations(self, alpha: float, split: str = "val", net: nn.Module | None = None,
                          reading: str = "literal",
                          configs: Sequence[Sequence[int]] | None = None) -> pd.DataFrame:
        """Every configuration (or those of ``configs``) of GroSS at temperature ``alpha`` (eq. 8 read as
        ``reading``) on ``split``.

        Cached as ``evaluations/<gross stage name>_<split>.csv``; ``net``: the trained GroSS network if at
        hand.
        """
        net = self.gross(alpha, reading).net if net is None else net
        return self.evaluate_configs(net, gross_stage_name(alpha, _reading_of(alpha, reading)), split,
                                     configs=configs)

    def evaluate_configs(self, net: nn.Module, name: str, split: str = "val",
                         configs: Sequence[Sequence[int]] | None = None,
                         batch_size: int = 1000) -> pd.DataFrame:
        """Accuracy, loss, MACs and parameters of every configuration (cached as a CSV)."""
        path = self.seed_dir / "evaluations" / f"{name}_{split}.csv"
        wanted = [tuple(c) for c in (configs if configs is not None else search_space(net))]
        if path.exists():
            df = pd.read_csv(path)
            df["config"] = df["config"].map(lambda text: tuple(json.loads(text)))
            if set(wanted) <= set(df["config"]):
                row_of = {config: i for i, config in enumerate(df["config"])}
                return df.iloc[[row_of[c] for c in wanted]].reset_index(drop=True)
        subset = getattr(self.data, split)
        df = evaluate_all(net, subset, configs, batch_size=batch_size, device=self.torch_device,
                          mean=self.data.mean, std=self.data.std, progress=self.progress,
                          channels_last=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        stored = df.copy()
        stored["config"] = stored["config"].map(lambda c: json.dumps(list(c)))
        stored.to_csv(path, index=False)
        return df

    def accuracy_at(self, net: nn.Module, config: Sequence[int] | None, split: str = "test") -> float:
        """Accuracy of ``net`` (at ``config`` if it is a GroSS network) on a split."""
        net = copy.deepcopy(net)
        if config is not None:
            set_config(net, config)
        return float(evaluate(net, getattr(self.data, split), self.data.mean, self.data.std,
                              device=self.torch_device)["accuracy"])
