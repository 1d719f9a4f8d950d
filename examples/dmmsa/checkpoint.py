"""Checkpoints: what ``--resume`` needs, written atomically, and the random number generators.

A checkpoint (``seed<s>/checkpoint.pt``) holds the model, optimiser, scheduler, the objective's
state (GDWG's stage sums and weights), every rank's RNG states and epoch sums, the position in
the epoch's sample order, the log rows, the best model so far, and the fingerprint of the
resolved configuration (``configs.fingerprint``) that a resumed run must match.
"""

from __future__ import annotations

import math
import os
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from dmmsa.distributed import Dist

if TYPE_CHECKING:
    from dmmsa.training import Phase

__all__ = ["CHECKPOINT_FORMAT", "Checkpointer", "EpochSums", "Progress", "atomic_save",
           "cpu_clone", "set_seed"]

CHECKPOINT_FORMAT = 1


@dataclass
class EpochSums:
    """This rank's sums of the epoch for the log: the losses of the tasks that the objective's
    weighter does not record (it keeps the others), the total loss, and each task's weight."""

    sum: dict[str, float]
    count: dict[str, int]
    total: float = 0.0
    batches: int = 0
    weights: dict[str, float] = field(default_factory=dict)

    @classmethod
    def empty(cls, tasks: list[str]) -> EpochSums:
        return cls(sum=dict.fromkeys(tasks, 0.0), count=dict.fromkeys(tasks, 0))


@dataclass
class Progress:
    """Where a phase stands: counters, log rows, the best epoch so far and the epoch's sums."""

    sums: EpochSums
    epoch: int = 0
    batch: int = 0
    step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] = field(default_factory=lambda: {
        "MAE": math.inf, "epoch": 0, "metrics": None, "state": None})


def set_seed(seed: int) -> None:
    """Seed Python's, NumPy's global and torch's (CPU and CUDA) generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 (the global state other code may draw from)
    torch.manual_seed(seed)  # seeds CUDA too


def rng_state() -> dict[str, Any]:
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),  # noqa: NPY002
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])  # noqa: NPY002
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def atomic_save(obj: Any, path: Path) -> None:
    """Write ``obj`` to ``path`` so that a kill at any moment leaves the old or the new file."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def cpu_clone(state: dict[str, Tensor]) -> dict[str, Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in state.items()}


class Checkpointer:
    """Saves and restores one seed's ``checkpoint.pt``; knows the last good one for messages.

    Args:
        seed_dir: the seed's folder (``OUT/seed<s>``).
        seed: the seed.
        fingerprint: ``configs.fingerprint`` of the run's resolved configuration.
        world: the process group (rank 0 writes; every rank's RNG state is gathered).
    """

    def __init__(self, seed_dir: Path, seed: int, fingerprint: dict[str, str],
                 world: Dist) -> None:
        self.path = seed_dir / "checkpoint.pt"
        self.seed, self.fingerprint, self.world = seed, fingerprint, world
        self.last_saved = "none (no checkpoint was written yet)"

    def start_phase(self) -> None:
        """A new phase begins: the last good checkpoint is the previous phase's, if any."""
        self.last_saved = (f"{self.path} (the previous phase's)" if self.path.exists()
                           else "none (no checkpoint was written yet)")

    def load(self) -> dict[str, Any]:
        """The checkpoint, checked against this run (format, fingerprint, number of processes).

        Raises:
            SystemExit: it was made by another kind of run; the message says what differs.
        """
        state = torch.load(self.path, map_location="cpu", weights_only=False)
        if state.get("format") != CHECKPOINT_FORMAT:
            raise SystemExit(f"{self.path}: not a checkpoint of this script "
                             f"(format {state.get('format')})")
        theirs = state["fingerprint"]
        changed = {key: (theirs.get(key), value) for key, value in self.fingerprint.items()
                   if theirs.get(key) != value}
        if changed:
            raise SystemExit(f"--resume: {self.path} was made with other arguments "
                             f"(saved, now): {changed}; rerun with the same ones or another --out")
        if len(state["per_rank"]) != self.world.world:
            raise SystemExit(f"--resume: {self.path} was written by {len(state['per_rank'])} "
                             f"process(es), this run has {self.world.world}")
        return state

    def save(self, phase: Phase, progress: Progress, model: nn.Module,
             completed: dict[str, Any]) -> None:
        """Write everything ``--resume`` needs (a collective call: every rank's RNG state)."""
        per_rank = self.world.gather({
            "rng": rng_state(),
            "objective": cpu_clone(phase.objective.state_dict()),
            "accumulator": asdict(progress.sums),
        })
        if self.world.main:
            atomic_save({
                "format": CHECKPOINT_FORMAT, "fingerprint": self.fingerprint, "seed": self.seed,
                "phase": phase.name, "epoch": progress.epoch, "batch": progress.batch,
                "step": progress.step, "completed": completed, "model": model.state_dict(),
                "optimizer": phase.optimizer.state_dict(),
                "scheduler": phase.scheduler.state_dict(),
                "history": progress.history, "best": progress.best, "per_rank": per_rank,
            }, self.path)
        self.last_saved = f"{self.path} (step {progress.step})"

    def restore(self, state: dict[str, Any], phase: Phase, model: nn.Module) -> Progress:
        """Put ``state`` (from :meth:`load`, of ``phase``) back; the RNG states last."""
        model.load_state_dict(state["model"])
        phase.optimizer.load_state_dict(state["optimizer"])
        phase.scheduler.load_state_dict(state["scheduler"])
        mine = state["per_rank"][self.world.rank]
        phase.objective.load_state_dict(mine["objective"])
        progress = Progress(sums=EpochSums(**mine["accumulator"]), epoch=state["epoch"],
                            batch=state["batch"], step=state["step"],
                            history=state["history"], best=state["best"])
        set_rng_state(mine["rng"])  # last: everything above may have drawn random numbers
        self.last_saved = f"{self.path} (step {progress.step})"
        return progress
