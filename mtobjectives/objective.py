r"""Multi-task objectives: a weighted sum of named task losses, and DMMSA's Eq. 5.

:class:`MultiTaskObjective` holds named *tasks*, each a callable ``task(outputs, targets)`` that
returns a scalar loss, or ``None`` when it cannot be computed for the batch (e.g. its modality is
missing). Some tasks have fixed weights; the others ("dynamic") are weighted by a
:class:`~mtobjectives.weighting.Weighter` (GDWG by default); any task's weight may follow a
per-stage schedule. :meth:`MultiTaskObjective.dmmsa` builds the paper's four tasks; their
definitions are the four public functions just below it (:func:`msr_loss`, :func:`msc_loss`,
:func:`uni_loss`, :func:`cl_loss`), reusable as tasks of your own objective.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from mtobjectives._batch import FEATURE_NAMES, _required
from mtobjectives._validation import (
    check_choice,
    check_positive,
    check_tensor,
)
from mtobjectives.binning import CoarseGrainedBinning
from mtobjectives.contrastive import (
    PairBuilder,
    text_anchored_pairs,
)
from mtobjectives.schedules import TaskSchedule
from mtobjectives.weighting import (
    GDWGWeighter,
    Weighter,
)

__all__ = [
    "FEATURE_NAMES",
    "NUM_ANCHORS",
    "BatchCheck",
    "MultiTaskObjective",
    "ObjectiveResult",
    "Task",
    "anchor_rows",
]

#: A task: ``task(outputs, targets)`` -> scalar loss, or ``None`` when absent from the batch.
Task = Callable[[Mapping[str, Any], Mapping[str, Any]], Tensor | None]

#: A check of the whole batch: ``check(outputs, targets)`` raises on a bad batch.
BatchCheck = Callable[[Mapping[str, Any], Mapping[str, Any]], None]

WEIGHTINGS: tuple[str, ...] = ("gdwg", "equal", "dwa", "uncertainty")

#: ``targets[NUM_ANCHORS]``: how many of the batch's rows are its anchors (the first rows); the
#: rows after them are samples retrieved for the anchors (ConFEDE's). Absent: every row is an
#: anchor. An objective built with ``rows="anchors"`` (the default) reads the anchors only.
NUM_ANCHORS = "num_anchors"
ROWS: tuple[str, ...] = ("anchors", "all")


@dataclass
class ObjectiveResult:
    """What :class:`MultiTaskObjective` returns for a batch.

    Attributes:
        loss: the total :math:`\\sum_k \\lambda_k L_k` over the tasks present in the batch, a
            scalar to call ``backward()`` on.
        terms: the unweighted loss :math:`L_k` of every present task, detached (for logging).
        weights: the weight :math:`\\lambda_k` used for every present task (times its schedule's
            factor, if it has one), detached.
        regularizers: the additive term :math:`r_k` of every present task whose weighter has one
            (:class:`~mtobjectives.weighting.UncertaintyWeighter`: :math:`s_k`, times the
            schedule's factor), detached; empty for the other weighters. Together,
            ``loss == sum(weights[k] * terms[k] for k in terms) + sum(regularizers.values())``.
    """

    loss: Tensor
    terms: dict[str, Tensor]
    weights: dict[str, Tensor]
    regularizers: dict[str, Tensor] = field(default_factory=dict)


class MultiTaskObjective(nn.Module):
    r"""Weighted sum of named task losses, with fixed and dynamically weighted tasks.

    .. math::

        \mathcal{L} = \sum_{k \in \mathcal{F}} \rho_k(t)\, c_k\, L_k
                    + \sum_{k \in \mathcal{D}} \rho_k(t) \big(\lambda_k(t)\, L_k + r_k\big)

    where

    - :math:`L_k` is the loss returned by task :math:`k` for the batch (tasks that return ``None``
      are absent and left out of both sums),
    - :math:`\mathcal{F}` are the fixed tasks with constant weights :math:`c_k` (``fixed``; a task
      named in neither ``fixed`` nor ``dynamic`` has :math:`c_k = 1`),
    - :math:`\mathcal{D}` are the dynamic tasks (``dynamic``) and :math:`\lambda_k(t)` their
      weights at stage :math:`t`, given by ``weighter`` (default
      :class:`~mtobjectives.weighting.GDWGWeighter`); :math:`r_k` is the weighter's additive term
      (:meth:`~mtobjectives.weighting.Weighter.regularizers`: 0 for every weighter but
      :class:`~mtobjectives.weighting.UncertaintyWeighter`, whose :math:`r_k = s_k`),
    - :math:`\rho_k(t) \ge 0` is the factor of task :math:`k`'s schedule at stage :math:`t`
      (``schedules``, e.g. :class:`~mtobjectives.schedules.WarmupSchedule`; 1 for a task without
      one). It multiplies the task's whole contribution, whatever the weighter: the weight
      used and reported is :math:`\rho_k(t)\,c_k` or :math:`\rho_k(t)\,\lambda_k(t)`. The
      weighter still receives and records the unscaled :math:`L_k`, so GDWG's stage means and
      baseline are those of the task's loss, not of its scaled contribution.

    The weighter is a submodule: ``objective.train()``/``eval()`` decide whether batches are
    recorded for the next weights, :meth:`step` ends a stage (call it at each epoch end), and
    ``state_dict()`` carries the weighter's state, its parameters included (tasks that are
    ``nn.Module`` are registered too, under ``task_modules``). With ``schedules`` the stage
    counter :math:`t` of the schedules is in ``state_dict()`` too (as the extra state of
    ``schedule_stage``; without schedules the state dict has no such key). A weighter with
    learned parameters (:class:`~mtobjectives.weighting.UncertaintyWeighter`) needs them in the
    optimizer: pass ``objective.parameters()`` along with the model's.

    Args:
        tasks: name -> callable ``(outputs, targets) -> Tensor | None`` returning a 0-d loss.
        fixed: name -> constant weight :math:`c_k \ge 0` (default 1 for tasks not listed).
        dynamic: names of the tasks weighted by ``weighter``, in the weighter's order.
        weighter: a :class:`~mtobjectives.weighting.Weighter` with ``num_tasks == len(dynamic)``;
            ``None`` builds ``GDWGWeighter(len(dynamic), task_names=dynamic)``.
        schedules: task name -> schedule, a callable ``schedule(t) -> float`` giving
            :math:`\rho_k(t) \ge 0` for the 1-based stage :math:`t` (see
            :mod:`mtobjectives.schedules`); fixed and dynamic tasks alike.
        check_batch: optional ``check(outputs, targets)`` run once per batch before the tasks,
            raising on a bad batch (:meth:`dmmsa` passes :func:`check_dmmsa_batch`).
        rows: ``"anchors"`` (default): when ``targets[NUM_ANCHORS]`` says that only the first
            :math:`B` rows of the batch are anchors (the rest are samples retrieved for them,
            ConFEDE's layout), the tasks see those rows only, so the objective is unchanged
            whether extra rows are present or absent; ``"all"``: the tasks see every row and
            read ``targets[NUM_ANCHORS]`` themselves (ConFEDE's objective).

    Returns:
        :class:`ObjectiveResult` (total loss, detached terms, weights and additive terms of the
        present tasks).

    Shape:
        - Task outputs: :math:`()` (a scalar) or ``None``.
        - Output ``loss``: :math:`()`.

    Example:
        >>> import torch
        >>> import torch.nn.functional as F
        >>> from mtobjectives.objective import MultiTaskObjective
        >>> objective = MultiTaskObjective(
        ...     {"reg": lambda out, tgt: F.mse_loss(out["y"], tgt["y"]),
        ...      "aux": lambda out, tgt: out["y"].abs().mean(),
        ...      "opt": lambda out, tgt: None},                   # absent in this batch
        ...     fixed={"reg": 1.0}, dynamic=["aux", "opt"])
        >>> result = objective({"y": torch.tensor([1.0, 3.0])}, {"y": torch.tensor([0.0, 3.0])})
        >>> result.loss, result.terms
        (tensor(1.5000), {'reg': tensor(0.5000), 'aux': tensor(2.)})
        >>> result.weights
        {'reg': tensor(1.), 'aux': tensor(0.5000)}

        A schedule switches "aux" on only after the first stage:

        >>> from mtobjectives.schedules import WarmupSchedule
        >>> objective = MultiTaskObjective(
        ...     {"reg": lambda out, tgt: F.mse_loss(out["y"], tgt["y"]),
        ...      "aux": lambda out, tgt: out["y"].abs().mean()},
        ...     dynamic=["aux"], schedules={"aux": WarmupSchedule(1, mode="step")})
        >>> outputs, targets = {"y": torch.tensor([1.0, 3.0])}, {"y": torch.tensor([0.0, 3.0])}
        >>> objective(outputs, targets).weights
        {'reg': tensor(1.), 'aux': tensor(0.)}
        >>> objective.step()
        >>> objective(outputs, targets).weights
        {'reg': tensor(1.), 'aux': tensor(1.)}
    """

    def __init__(
        self,
        tasks: Mapping[str, Task],
        *,
        fixed: Mapping[str, float] | None = None,
        dynamic: Sequence[str] = (),
        weighter: Weighter | None = None,
        schedules: Mapping[str, TaskSchedule] | None = None,
        check_batch: BatchCheck | None = None,
        rows: str = "anchors",
    ) -> None:
        super().__init__()
        check_choice("rows", rows, ROWS)
        #: Which rows the tasks see: ``"anchors"`` or ``"all"`` (see the class docstring).
        self.rows = rows
        self.tasks: dict[str, Task] = _check_tasks(tasks)
        self.dynamic: tuple[str, ...] = _check_dynamic(dynamic, self.tasks)
        fixed = {} if fixed is None else _check_fixed(fixed, self.tasks, self.dynamic)
        #: Constant weight of every non-dynamic task.
        self.fixed: dict[str, float] = {
            name: fixed.get(name, 1.0) for name in self.tasks if name not in self.dynamic
        }
        if weighter is None and self.dynamic:
            weighter = GDWGWeighter(len(self.dynamic), task_names=self.dynamic)
        _check_weighter(weighter, self.dynamic)
        self.weighter: Weighter | None = weighter
        self.task_modules = nn.ModuleDict(
            {name: task for name, task in self.tasks.items() if isinstance(task, nn.Module)}
        )
        #: The schedule of each scheduled task (task name -> ``schedule(t) -> float``).
        self.schedules: dict[str, TaskSchedule] = _check_schedules(schedules, self.tasks)
        #: The stage counter of the schedules (``None`` without schedules).
        self.schedule_stage: _StageCounter | None = _StageCounter() if self.schedules else None
        if check_batch is not None and not callable(check_batch):
            raise TypeError(
                f"check_batch must be callable or None, got {type(check_batch).__name__}"
            )
        #: The check of the whole batch, run once before the tasks (or ``None``).
        self.check_batch: BatchCheck | None = check_batch

    def forward(self, outputs: Mapping[str, Any], targets: Mapping[str, Any]) -> ObjectiveResult:
        """Compute every task, weight the present ones, and sum (see the class docstring)."""
        if self.rows == "anchors":
            outputs, targets = anchor_rows(outputs, targets)
        if self.check_batch is not None:
            self.check_batch(outputs, targets)
        present = {}
        for name, task in self.tasks.items():
            loss = task(outputs, targets)
            if loss is not None:
                present[name] = _check_task_loss(name, loss)
        if not present:
            raise ValueError(
                f"no task produced a loss for this batch: every task in {list(self.tasks)} "
                f"returned None"
            )
        _check_one_device(present)
        dtype = functools.reduce(torch.promote_types, [loss.dtype for loss in present.values()])
        device = next(iter(present.values())).device
        total = torch.zeros((), dtype=dtype, device=device)
        weights: dict[str, Tensor] = {}
        regularizers: dict[str, Tensor] = {}
        factors = self.schedule_factors()
        for name, weight in self.fixed.items():
            if name in present:
                weight = factors.get(name, 1.0) * weight
                total = total + weight * present[name]
                weights[name] = torch.tensor(weight, device=device)
        if self.weighter is not None:
            zero = torch.zeros((), dtype=dtype, device=device)
            losses = torch.stack([present.get(name, zero).to(dtype) for name in self.dynamic])
            mask = torch.tensor([name in present for name in self.dynamic], device=device)
            rho = [factors.get(name, 1.0) for name in self.dynamic]
            if all(factor == 1.0 for factor in rho):
                total = total + self.weighter(losses, present=mask)
            else:  # rho_k (lambda_k L_k + r_k): the weighter records the unscaled L_k
                contributions = self.weighter.contributions(losses, present=mask)
                total = total + (contributions * losses.new_tensor(rho)).sum()
            dynamic_weights = self.weighter.weights.to(device)
            additive = self.weighter.regularizers()
            for k, name in enumerate(self.dynamic):
                if name in present:
                    weights[name] = dynamic_weights[k] * rho[k]
                    if additive is not None:
                        regularizers[name] = additive[k].detach().to(device) * rho[k]
        terms = {name: loss.detach() for name, loss in present.items()}
        return ObjectiveResult(
            total, terms, weights={name: weights[name] for name in terms}, regularizers=regularizers
        )

    def step(self) -> None:
        """End the current stage (call it at each epoch end): the weighter's, the schedules',
        and that of every task module with a ``step()`` method (e.g. Self-MM's label module).

        Without a weighter, schedules and such tasks it does nothing.
        """
        if self.weighter is not None:
            self.weighter.step()
        if self.schedule_stage is not None:
            self.schedule_stage.completed += 1
        for task in self.task_modules.values():
            stepper = getattr(task, "step", None)
            if callable(stepper):
                stepper()

    def schedule_factors(self) -> dict[str, float]:
        """The factor :math:`\\rho_k(t)` of every scheduled task at the current stage, checked.

        Raises:
            ValueError: If a schedule returns a negative, NaN or infinite factor.
            TypeError: If a schedule returns something other than a real number.
        """
        if self.schedule_stage is None:
            return {}
        stage = self.schedule_stage.completed + 1
        return {
            name: check_positive(f"schedules[{name!r}]({stage})", schedule(stage), allow_zero=True)
            for name, schedule in self.schedules.items()
        }

    @property
    def last_stage_means(self) -> dict[str, float]:
        """``{name: L_k(t)}``: the weighter's mean of each dynamic task over the stage that the
        last :meth:`step` ended (all-reduced under :mod:`torch.distributed`, NaN for a task
        never present); ``{}`` without a weighter or before the first ``step()``."""
        if self.weighter is None or self.weighter.last_stage_means is None:
            return {}
        return dict(zip(self.dynamic, self.weighter.last_stage_means.tolist()))

    def extra_repr(self) -> str:
        schedules = f", schedules={self.schedules}" if self.schedules else ""
        return f"fixed={self.fixed}, dynamic={list(self.dynamic)}{schedules}"

    @classmethod
    def dmmsa(
        cls,
        *,
        binning: CoarseGrainedBinning | None,
        temperature: float = 0.5,
        form: str = "in",
        beta: float = 1.0,
        msc: bool = True,
        uni: bool = True,
        cl: bool = True,
        weighting: str | Weighter = "gdwg",
        weighting_temperature: float = 2.0,
        scale: str = "sum_one",
        pairs: PairBuilder = text_anchored_pairs,
        detach_anchor: bool = False,
        label_positives: bool = False,
        schedules: Mapping[str, TaskSchedule] | None = None,
    ) -> MultiTaskObjective:
        r"""The DMMSA objective (Eq. 5): an alias of :func:`mtobjectives.recipes.dmmsa`.

        Same arguments, the same objective bit for bit (see the recipe for the equations, the
        options and what a batch must hold).

        Example:
            >>> import torch
            >>> from mtobjectives import CoarseGrainedBinning, MultiTaskObjective
            >>> objective = MultiTaskObjective.dmmsa(binning=CoarseGrainedBinning.preset("sims"))
            >>> list(objective.tasks), objective.dynamic
            (['MSR', 'MSC', 'Uni', 'CL'], ('Uni', 'CL'))
        """
        from mtobjectives.recipes.dmmsa import dmmsa

        return dmmsa(
            binning=binning, temperature=temperature, form=form, beta=beta, msc=msc, uni=uni,
            cl=cl, weighting=weighting, weighting_temperature=weighting_temperature, scale=scale,
            pairs=pairs, detach_anchor=detach_anchor, label_positives=label_positives,
            schedules=schedules,
        )


# ----------------------------------------------------------------------------- anchor rows
def anchor_rows(
    outputs: Mapping[str, Any], targets: Mapping[str, Any]
) -> tuple[Mapping[str, Any], Mapping[str, Any]]:
    """The batch without its retrieved rows: every tensor (also inside dicts) whose first
    dimension is the batch's row count keeps its first ``targets[NUM_ANCHORS]`` rows.

    Without ``targets[NUM_ANCHORS]``, or when it counts every row, the batch is returned as it
    is (the same objects). The row count is that of ``targets["M"]``.

    Example:
        >>> import torch
        >>> from mtobjectives.objective import anchor_rows
        >>> outputs = {"prediction": torch.arange(3.0), "features": {"T_s": torch.ones(3, 2)}}
        >>> out, tgt = anchor_rows(outputs, {"M": torch.zeros(3), "num_anchors": 1})
        >>> out["prediction"], out["features"]["T_s"].shape, tgt["M"]
        (tensor([0.]), torch.Size([1, 2]), tensor([0.]))
    """
    if not isinstance(targets, Mapping) or NUM_ANCHORS not in targets:
        return outputs, targets
    anchors = targets[NUM_ANCHORS]
    rows = _row_count(targets)
    if isinstance(anchors, bool) or not isinstance(anchors, int) or not 1 <= anchors <= rows:
        raise ValueError(f"targets[{NUM_ANCHORS!r}] must be an int in [1, {rows}] (the rows of "
                         f"targets['M'] that are anchors), got {anchors!r}")
    if anchors == rows:
        return outputs, targets

    def cut(value: Any) -> Any:
        if isinstance(value, Tensor) and value.dim() >= 1 and value.shape[0] == rows:
            return value[:anchors]
        if isinstance(value, Mapping):
            return {key: cut(item) for key, item in value.items()}
        return value

    kept = {key: cut(value) for key, value in targets.items() if key != NUM_ANCHORS}
    return cut(outputs), kept


def _row_count(targets: Mapping[str, Any]) -> int:
    label = _required(targets, "targets", "M")
    check_tensor("targets['M']", label)
    if label.dim() != 1:
        raise ValueError(f"targets['M'] must have shape [rows], got {tuple(label.shape)}")
    return int(label.shape[0])


# ----------------------------------------------------------------------------------- checks
def _check_tasks(tasks: Mapping[str, Task]) -> dict[str, Task]:
    if not isinstance(tasks, Mapping):
        raise TypeError(
            f"tasks must be a mapping from name to callable, got {type(tasks).__name__}"
        )
    if not tasks:
        raise ValueError("tasks must hold at least one task, got an empty mapping")
    for name, task in tasks.items():
        if not isinstance(name, str) or not name or "." in name:
            raise ValueError(f"task names must be non-empty strings without '.', got {name!r}")
        if not callable(task):
            raise TypeError(f"tasks[{name!r}] must be callable, got {type(task).__name__}")
    return dict(tasks)


def _check_dynamic(dynamic: Sequence[str], tasks: Mapping[str, Task]) -> tuple[str, ...]:
    if isinstance(dynamic, (str, bytes)) or not isinstance(dynamic, Sequence):
        raise TypeError(f"dynamic must be a sequence of task names, got {type(dynamic).__name__}")
    unknown = [name for name in dynamic if name not in tasks]
    if unknown or len(set(dynamic)) != len(dynamic):
        raise ValueError(
            f"dynamic must list distinct names among the tasks {list(tasks)}, got {list(dynamic)}"
        )
    return tuple(dynamic)


def _check_fixed(
    fixed: Mapping[str, float], tasks: Mapping[str, Task], dynamic: Sequence[str]
) -> dict[str, float]:
    if not isinstance(fixed, Mapping):
        raise TypeError(f"fixed must be a mapping from name to weight, got {type(fixed).__name__}")
    for name, weight in fixed.items():
        if name in dynamic:
            raise ValueError(f"task {name!r} is both in fixed and in dynamic; choose one")
        if name not in tasks:
            raise ValueError(f"fixed names the unknown task {name!r}; the tasks are {list(tasks)}")
        check_positive(f"fixed[{name!r}]", weight, allow_zero=True)
    return {name: float(weight) for name, weight in fixed.items()}


def _check_weighter(weighter: Weighter | None, dynamic: Sequence[str]) -> None:
    if weighter is None:
        return
    if not isinstance(weighter, Weighter):
        raise TypeError(f"weighter must be a Weighter or None, got {type(weighter).__name__}")
    if weighter.num_tasks != len(dynamic):
        raise ValueError(
            f"weighter must weight the {len(dynamic)} dynamic task(s) {list(dynamic)}, "
            f"got a weighter with num_tasks={weighter.num_tasks}"
        )
    names = getattr(weighter, "task_names", None)
    if names is not None and tuple(names) != tuple(dynamic):
        raise ValueError(
            f"weighter.task_names must name the dynamic tasks in their order {list(dynamic)} "
            f"(its weights are read by position), got {list(names)}"
        )


def _check_one_device(losses: Mapping[str, Tensor]) -> None:
    """The present tasks' losses must be on one device (they are summed and stacked)."""
    devices = {loss.device for loss in losses.values()}
    if len(devices) > 1:
        listing = ", ".join(f"{name!r} on {loss.device}" for name, loss in losses.items())
        raise ValueError(f"every task must return its loss on one device, got {listing}")


def _check_task_loss(name: str, loss: object) -> Tensor:
    if not isinstance(loss, Tensor) or not loss.is_floating_point():
        raise TypeError(
            f"task {name!r} must return a floating-point tensor or None, got "
            f"{type(loss).__name__ if not isinstance(loss, Tensor) else loss.dtype}"
        )
    if loss.dim() != 0:
        raise ValueError(
            f"task {name!r} must return a scalar (0-d) loss, got shape {tuple(loss.shape)}"
        )
    return loss


def _check_schedules(
    schedules: Mapping[str, TaskSchedule] | None, tasks: Mapping[str, Task]
) -> dict[str, TaskSchedule]:
    if schedules is None:
        return {}
    if not isinstance(schedules, Mapping):
        raise TypeError(
            f"schedules must be a mapping from task name to schedule, "
            f"got {type(schedules).__name__}"
        )
    for name, schedule in schedules.items():
        if name not in tasks:
            raise ValueError(
                f"schedules names the unknown task {name!r}; the tasks are {list(tasks)}"
            )
        if not callable(schedule):
            raise TypeError(
                f"schedules[{name!r}] must be callable (stage -> factor), "
                f"got {type(schedule).__name__}"
            )
    return dict(schedules)


class _StageCounter(nn.Module):
    """The number of finished stages of :class:`MultiTaskObjective`'s schedules.

    Kept as a Python ``int`` (reading it never synchronises a device) and saved in
    ``state_dict()`` as this module's extra state, a 0-d int64 tensor.
    """

    def __init__(self) -> None:
        super().__init__()
        self.completed = 0

    def get_extra_state(self) -> Tensor:
        return torch.tensor(self.completed, dtype=torch.long)

    def set_extra_state(self, state: Any) -> None:
        if not isinstance(state, Tensor) or state.dim() != 0 or state.is_floating_point():
            raise ValueError(
                f"the schedules' stage counter must be a 0-d integer tensor, got {state!r}"
            )
        self.completed = int(state)

    def extra_repr(self) -> str:
        return f"completed={self.completed}"


_MOVED_TO_RECIPES = ("check_dmmsa_batch", "cl_loss", "msc_loss", "msr_loss", "uni_loss")


def __getattr__(name: str) -> Any:
    """DMMSA's terms moved to :mod:`mtobjectives.recipes.dmmsa`; the old names still import."""
    if name in _MOVED_TO_RECIPES:
        import importlib

        return getattr(importlib.import_module("mtobjectives.recipes.dmmsa"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
