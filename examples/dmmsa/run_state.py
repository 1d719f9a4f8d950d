"""What a run of ``train.py`` shares and what one phase is (:class:`Run`, :class:`Phase`), and
:class:`TrainingStopped`.

The lowest module of the training code: :mod:`dmmsa.checkpoint`, :mod:`dmmsa.evaluation` and
:mod:`dmmsa.training` all read these, and it reads none of them.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

import mtobjectives as mt
from dmmsa import batching, configs
from dmmsa.distributed import Dist

__all__ = ["Phase", "Run", "TrainingStopped"]


class TrainingStopped(RuntimeError):
    """A non-finite loss (or prediction): the run stops, the last good checkpoint is kept."""


class Run:
    """What every phase of every seed shares, built once: the frozen configuration, the data,
    the device. ``args`` keeps only how the run is executed (``--out``, ``--resume``, ...)."""

    def __init__(self, args: argparse.Namespace, config: configs.RunConfig,
                 datasets: dict[str, batching.MSADataset], world: Dist) -> None:
        self.args, self.config, self.datasets, self.dist = args, config, datasets, world
        self.experiment = config.experiment
        self.metric_set = self.experiment.dataset  # "sims" | "mosi" | "mosei": bins, metrics
        self.binning = mt.CoarseGrainedBinning.preset(self.metric_set,
                                                      self.experiment.model.num_classes)
        self.use_bf16 = world.device.type == "cuda"
        self.fingerprint = configs.fingerprint(config)

    def autocast(self) -> Any:
        return torch.autocast(self.dist.device.type, dtype=torch.bfloat16, enabled=self.use_bf16)

    def log(self, message: str) -> None:
        if self.dist.main:
            print(message, flush=True)


@dataclass
class Phase:
    """One phase, built once: what is trained, on which label, with which objective and schedule.

    Attributes:
        name: ``"pretrain_T"``, ``"pretrain_A"``, ``"pretrain_V"`` or ``"fusion"``.
        net: the trained module (``model.UnimodalRegressor`` or the whole model).
        trained: ``net``, or its ``DistributedDataParallel`` wrapper.
        objective: the phase's objective.
        label: the label the phase's predictions are measured against (``"M"`` or ``"T"``...).
        stage: the phase's epochs, learning rate and batch size (Table 6).
    """

    name: str
    net: nn.Module
    trained: nn.Module
    objective: mt.MultiTaskObjective
    label: str
    stage: configs.StageConfig
    per_rank_batch: int
    steps_per_epoch: int
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR

    @property
    def tasks(self) -> list[str]:
        return list(self.objective.tasks)

    @property
    def logged_by_us(self) -> list[str]:
        """The tasks whose epoch means the loop sums (the weighter keeps the dynamic ones)."""
        dynamic = self.objective.dynamic if self.objective.weighter is not None else ()
        return [name for name in self.tasks if name not in dynamic]
