"""Checkpoints: what ``--resume`` needs, written atomically, and the random number generators.

A checkpoint (``seed<s>/checkpoint.pt``) holds the model, optimiser, scheduler, the objective's
state (GDWG's stage sums and weights), every rank's RNG states and epoch sums, the position in
the epoch's sample order, the log rows, the best model so far, and the fingerprint of the
resolved configuration (``configs.fingerprint``) that a resumed run must match.

Checkpoints are loaded with ``torch.load(..., weights_only=True)``: a checkpoint holds only
tensors and plain Python values (dicts, lists, tuples, strings, numbers, ``None``; NumPy's RNG
state is stored as a tensor), so loading one never runs code, and a file that holds anything else
is refused. Nothing non-finite is written: :meth:`Checkpointer.save` stops the run instead.
"""

from __future__ import annotations

import math
import os
import random
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from dmmsa.configs import fingerprint_differences
from dmmsa.distributed import Dist
from dmmsa.run_state import Phase, TrainingStopped

__all__ = ["CHECKPOINT_FORMAT", "Checkpointer", "EpochSums", "Progress", "atomic_save",
           "cpu_clone", "set_seed"]

CHECKPOINT_FORMAT = 2  # 2: weights_only-loadable (NumPy RNG state as a tensor), fingerprint of
# the resolved configuration (1: a hand-kept list of arguments)


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
    """Every generator's state, as tensors and plain values (loadable with weights_only)."""
    name, keys, position, has_gauss, gauss = np.random.get_state()  # noqa: NPY002
    return {
        "python": random.getstate(),
        "numpy": {"name": str(name), "keys": torch.from_numpy(keys.astype(np.int64)),
                  "pos": int(position), "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    saved = state["numpy"]
    np.random.set_state((saved["name"], saved["keys"].numpy().astype(np.uint32),  # noqa: NPY002
                         saved["pos"], saved["has_gauss"], saved["gauss"]))
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def atomic_save(obj: Any, path: Path) -> None:
    """Write ``obj`` to ``path`` so that a kill at any moment leaves the old or the new file."""
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")  # two writers never share it
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
            SystemExit: the file cannot be read (empty, truncated, corrupted, or holding
                anything but tensors and plain values), or it was made by another kind of run;
                the message names the file, what differs and the way out.
        """
        state = self._read()
        if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
            found = state.get("format") if isinstance(state, dict) else type(state).__name__
            raise SystemExit(f"--resume: {self.path} is not a checkpoint of this version of "
                             f"train.py (format {found}, expected {CHECKPOINT_FORMAT}); "
                             f"{self._way_out()}")
        changed = fingerprint_differences(state["fingerprint"], self.fingerprint)
        if changed:
            raise SystemExit(f"--resume: {self.path} was made with other arguments (saved → "
                             f"now: {'; '.join(changed)}); rerun with the same ones, or start "
                             "again in another --out")
        if len(state["per_rank"]) != self.world.world:
            raise SystemExit(f"--resume: {self.path} was written by {len(state['per_rank'])} "
                             f"process(es), this run has {self.world.world}")
        return state

    def _read(self) -> Any:
        try:
            return torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as error:  # torch raises many kinds for a damaged file
            first = re.split(r"(?<=\.)\s", str(error).strip(), maxsplit=1)[0][:160]
            kind = f"{type(error).__name__}: {first}" if first else type(error).__name__
            raise SystemExit(f"--resume: cannot read {self.path} ({kind}): it is empty, "
                             "truncated, corrupted, or holds something other than a checkpoint "
                             f"of this script (it is loaded without running code). "
                             f"{self._way_out()}") from error

    def _way_out(self) -> str:
        pretrained = self.path.with_name("pretrained.pt")
        start = (f"or move it away and rerun with --stage fusion to start the fusion from the "
                 f"pre-trained encoders in {pretrained}" if pretrained.exists() else
                 "or move it away to train this seed from the start")
        return f"Start again in a new --out, {start}."

    def save(self, phase: Phase, progress: Progress, model: nn.Module,
             completed: dict[str, Any]) -> None:
        """Write everything ``--resume`` needs (a collective call: every rank's RNG state).

        Raises:
            TrainingStopped: the model holds a non-finite value; nothing is written, and the
                message names the parameters and the last good checkpoint.
        """
        state = model.state_dict()
        floating = [(name, tensor) for name, tensor in state.items() if tensor.is_floating_point()]
        if floating and not bool(torch.stack([torch.isfinite(t).all() for _, t in floating]).all()):
            bad = [name for name, tensor in floating if not bool(torch.isfinite(tensor).all())]
            raise TrainingStopped(
                f"non-finite value(s) in {len(bad)} parameter(s) ({', '.join(bad[:3])}"
                f"{', ...' if len(bad) > 3 else ''}) after step {progress.step} (seed "
                f"{self.seed}, {phase.name}); stopping without saving them. The last good "
                f"checkpoint is {self.last_saved}")
        per_rank = self.world.gather({
            "rng": rng_state(),
            "objective": cpu_clone(phase.objective.state_dict()),
            "accumulator": asdict(progress.sums),
        })
        if self.world.main:
            atomic_save({
                "format": CHECKPOINT_FORMAT, "fingerprint": self.fingerprint, "seed": self.seed,
                "phase": phase.name, "epoch": progress.epoch, "batch": progress.batch,
                "step": progress.step, "completed": completed, "model": state,
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
