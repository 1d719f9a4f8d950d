"""Checkpoints: what ``--resume`` needs, written atomically, and the random number generators.

A checkpoint (``seed<s>/checkpoint.pt``) holds the model, optimiser, scheduler, the objective's
state (GDWG's stage sums and weights), every rank's RNG states and epoch sums, the position in
the epoch's sample order, the log rows, the best model so far, and the fingerprint of the
resolved configuration (``configs.fingerprint``) that a resumed run must match.

Encoders fixed for the phase (``--freeze-encoders``: the model's ``fixed_prefix``) are left out
of the checkpoint's model and of the best model's copy, with a digest of them in their place
(``"fixed"``): they cannot change, and with a MiniLM text encoder they are almost all of the
weights, written every epoch. A resumed run puts them back from where the phase took them
(``pretrained.pt``, or the seed's initial weights) and checks the digest
(:func:`load_model`).

Checkpoints are loaded with ``torch.load(..., weights_only=True)``: a checkpoint holds only
tensors and plain Python values (dicts, lists, tuples, strings, numbers, ``None``; NumPy's RNG
state is stored as a tensor), so loading one never runs code, and a file that holds anything else
is refused. Nothing non-finite is written: :meth:`Checkpointer.save` stops the run instead.
"""

from __future__ import annotations

import hashlib
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
           "cpu_clone", "fixed_prefix", "load_model", "load_trainable_state", "set_seed",
           "state_sha256", "trainable_state"]

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


def state_sha256(state: dict[str, Tensor]) -> str:
    """SHA-256 of a state dict: each entry's name and raw bytes, in name order."""
    digest = hashlib.sha256()
    for name, tensor in sorted(state.items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def fixed_prefix(net: nn.Module) -> str | None:
    """The state-dict prefix of the modules ``net`` keeps fixed in this phase (the model's frozen
    encoders: ``"encoders."``), or ``None``."""
    prefix = getattr(net, "fixed_prefix", None)
    return prefix if isinstance(prefix, str) else None


def _split(net: nn.Module) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """``net``'s state: the entries that train, and the fixed ones (names without the prefix)."""
    state, prefix = net.state_dict(), fixed_prefix(net)
    if prefix is None:
        return state, {}
    fixed = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    return {k: v for k, v in state.items() if not k.startswith(prefix)}, fixed


def trainable_state(net: nn.Module) -> dict[str, Tensor]:
    """``net``'s state dict without its fixed entries (:func:`fixed_prefix`)."""
    return _split(net)[0]


def load_trainable_state(net: nn.Module, state: dict[str, Tensor]) -> None:
    """Load a :func:`trainable_state` (or a whole state dict) into ``net``; only fixed entries
    may be missing."""
    misfit = _load_leaving_out(net, state, fixed_prefix(net))
    if misfit:
        raise RuntimeError(f"the saved state does not fit the model: {misfit}")


def _load_leaving_out(net: nn.Module, state: dict[str, Tensor], prefix: str | None) -> str:
    """Load ``state``, which may lack the entries under ``prefix``; what did not fit, or ``""``."""
    missing, unexpected = net.load_state_dict(state, strict=prefix is None)
    wrong = [k for k in missing if prefix is None or not k.startswith(prefix)]
    return f"missing {wrong[:5]}, unexpected {unexpected[:5]}" if wrong or unexpected else ""


def load_model(model: nn.Module, state: dict[str, Any], path: Path) -> None:
    """Put a checkpoint's model back into ``model``. A checkpoint that left fixed entries out
    needs them in ``model`` already: their digest must be the saved one.

    Raises:
        SystemExit: the fixed entries differ from those the checkpoint was made with.
    """
    fixed = state.get("fixed")
    if fixed is None:
        model.load_state_dict(state["model"])
        return
    prefix = fixed["prefix"]
    present = {k[len(prefix):]: v for k, v in model.state_dict().items() if k.startswith(prefix)}
    if state_sha256(present) != fixed["sha256"]:
        raise SystemExit(
            f"--resume: {path} was made with fixed encoders ({prefix}*, SHA-256 "
            f"{fixed['sha256'][:12]}...) that this run does not have ({state_sha256(present)[:12]}"
            "...): the pretrained.pt beside it (or the seed's initial weights) changed. Put the "
            "one it started from back, or move the checkpoint away and rerun with --stage fusion")
    misfit = _load_leaving_out(model, state["model"], prefix)
    if misfit:
        raise SystemExit(f"--resume: {path} does not fit the model: {misfit}")


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
        self.fixed: dict[str, str] | None = None  # the phase's fixed entries: prefix and digest

    def start_phase(self) -> None:
        """A new phase begins: the last good checkpoint is the previous phase's, if any."""
        self.last_saved = (f"{self.path} (the previous phase's)" if self.path.exists()
                           else "none (no checkpoint was written yet)")
        self.fixed = None

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
        state, fixed = _split(model)  # fixed entries: as at the phase's start, never written
        if fixed and self.fixed is None:  # their digest, once per phase
            self.fixed = {"prefix": fixed_prefix(model) or "", "sha256": state_sha256(fixed)}
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
                "fixed": self.fixed if fixed else None,
                "optimizer": phase.optimizer.state_dict(),
                "scheduler": phase.scheduler.state_dict(),
                "history": progress.history, "best": progress.best, "per_rank": per_rank,
            }, self.path)
        self.last_saved = f"{self.path} (step {progress.step})"

    def restore(self, state: dict[str, Any], phase: Phase, model: nn.Module) -> Progress:
        """Put ``state`` (from :meth:`load`, of ``phase``) back; the RNG states last."""
        load_model(model, state, self.path)
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
