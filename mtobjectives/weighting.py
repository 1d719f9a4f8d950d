r"""Task weighting for multi-task training: GDWG (Eq. 13–14), DWA, equal and uncertainty weights.

A weighter is an ordinary :class:`torch.nn.Module` that turns the :math:`K` task losses of a batch
into one weighted scalar :math:`\sum_k \lambda_k L_k`; the caller owns ``backward()``. The weights
:math:`\lambda_k` are constant within a *stage* (an epoch by default) and are recomputed by
:meth:`Weighter.step`, which the caller calls at the end of each stage, from the mean unweighted
loss of every task over that stage.

Protocol shared by every weighter:

- ``weighter(losses, present=None)`` returns :math:`\sum_{k\,\text{present}} \lambda_k L_k`. The
  gradient flows to the losses, never to the (detached) weights; the exception is
  :class:`UncertaintyWeighter`, whose weights are learned parameters and whose sum adds a term
  :math:`r_k` per task (``weighter.contributions(...)`` gives the :math:`K` terms of the sum).
  In training mode (``weighter.train()``, the default) the detached losses of the present tasks
  are also added to the running sums of the current stage; in evaluation mode
  (``weighter.eval()``) nothing is recorded, so validation batches never influence the weights.
  An absent task adds nothing and is not counted; the weights of the present tasks are used as
  they are (not renormalized), so a task's weight in a batch does not depend on which other
  tasks happen to be present.
- ``weighter.step()`` ends the stage: computes :math:`\lambda(t+1)` from the stage means and clears
  the sums. Under an initialized :mod:`torch.distributed` process group the sums and counts are
  all-reduced first, so every rank holds identical weights; ``step()`` is then a collective and must
  be called on every rank.
- ``weighter.weights`` is the current :math:`\lambda` (detached), ``weighter.stage`` the current
  stage :math:`t` (1-based), ``weighter.reset()`` forgets everything.
- All state lives in buffers, so ``state_dict()``/``load_state_dict()`` restore it exactly, in the
  middle of a stage included: a resumed run continues identically and never restarts the baseline.
  The running statistics are kept in float64 whatever ``.half()``/``.to(dtype)`` is applied.
  The settings the state depends on (the kind of weighter, ``num_tasks``, ``scale``,
  ``temperature``, ``task_names``) are saved with it (under ``_extra_state``, as a ``uint8``
  tensor holding their JSON, so that the state holds only tensors), and ``load_state_dict()``
  refuses a state saved with other settings, naming each, before anything is copied. A state
  saved without them (by an earlier version) loads unchecked.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from mtobjectives._validation import (
    check_choice,
    check_floating,
    check_int,
    check_positive,
    check_real,
    check_shape,
)

__all__ = ["DWAWeighter", "EqualWeighter", "GDWGWeighter", "UncertaintyWeighter", "Weighter"]

_SCALES = ("sum_one", "num_tasks")
_SETTINGS_KEY = "_extra_state"  # where nn.Module keeps get_extra_state() in a state_dict


def _check_num_tasks(num_tasks: object) -> int:
    number = check_int("num_tasks", num_tasks)
    if number < 1:
        raise ValueError(f"num_tasks must be >= 1, got {number!r}")
    return number


def _check_task_names(task_names: Sequence[str] | None, num_tasks: int) -> tuple[str, ...] | None:
    if task_names is None:
        return None
    if isinstance(task_names, (str, bytes)) or not isinstance(task_names, Sequence):
        raise TypeError(f"task_names must be a sequence of str, got {type(task_names).__name__}")
    names = tuple(task_names)
    if not all(isinstance(name, str) for name in names):
        raise TypeError(f"task_names must hold only str, got {names!r}")
    if len(names) != num_tasks or len(set(names)) != len(names):
        raise ValueError(
            f"task_names must hold {num_tasks} distinct names (one per task), got {names!r}"
        )
    return names


class Weighter(nn.Module):
    r"""Base class of the task weighters: stage bookkeeping, weighted sum and state.

    Subclasses only say how the weights of the next stage follow from the stage means (see
    :meth:`_next_weights`); everything else (the weighted sum, the accumulation of detached
    losses, the distributed all-reduce, the state in buffers, the checks) is shared. The module
    docstring describes the protocol.

    .. math::

        \mathcal{L} = \sum_{k=1}^{K} m_k\, \lambda_k(t)\, L_k, \qquad
        \bar L_k(t) = \frac{\sum_{\text{batches } b \text{ of stage } t} m_{k,b}\, L_{k,b}}
                           {\sum_{b} m_{k,b}}

    where

    - :math:`K` is the number of tasks and :math:`t` the current stage (1-based),
    - :math:`L_k` is the unweighted loss of task :math:`k` in the batch,
    - :math:`m_k \in \{0, 1\}` is the ``present`` mask (an absent task contributes nothing),
    - :math:`\lambda_k(t)` is the (detached) weight of task :math:`k` during stage :math:`t`,
    - :math:`\bar L_k(t)` is the mean loss of task :math:`k` over the batches of stage :math:`t`
      where it was present (the :math:`L_k(t)` of Eq. 13).

    Args:
        num_tasks: number of weighted tasks :math:`K`.
        scale: ``"sum_one"`` (the weights sum to 1, the paper's Eq. 14) or ``"num_tasks"``
            (they sum to :math:`K`, the scale of DWA).
        task_names: optional names of the tasks, used in error messages (``"CL"`` rather than
            ``index 1``).

    Shape:
        - Input ``losses``: :math:`(K)`, floating point.
        - Input ``present``: :math:`(K)`, bool (``None``: every task is present).
        - Output: :math:`()`, the weighted sum, in the dtype of ``losses``.
    """

    completed_stages: Tensor
    stage_loss_sum: Tensor
    stage_loss_count: Tensor
    task_weights: Tensor

    def __init__(
        self,
        num_tasks: int,
        *,
        scale: str = "sum_one",
        task_names: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        self.num_tasks = _check_num_tasks(num_tasks)
        check_choice("scale", scale, _SCALES)
        self.scale = scale
        self.task_names = _check_task_names(task_names, self.num_tasks)
        # Number of finished stages (the current stage is this + 1).
        self.register_buffer("completed_stages", torch.zeros((), dtype=torch.long))
        # Running sums and counts of the detached losses of the current stage.
        self.register_buffer("stage_loss_sum", torch.zeros(num_tasks, dtype=torch.float64))
        self.register_buffer("stage_loss_count", torch.zeros(num_tasks, dtype=torch.long))
        # lambda(t), the weights of the current stage.
        self.register_buffer("task_weights", self._equal_weights())
        #: The (all-reduced) stage means :math:`L_k(t)` of the last stage that :meth:`step`
        #: ended, float64, shape :math:`(K)`, NaN for a task never present; ``None`` before
        #: the first ``step()``. Not part of the state: a training log reads it right after
        #: ``step()`` instead of summing the losses a second time.
        self.last_stage_means: Tensor | None = None

    # ----------------------------------------------------------------------------------- API
    @property
    def weights(self) -> Tensor:
        """The weights :math:`\\lambda(t)` of the current stage, detached, shape :math:`(K)`."""
        return self.task_weights.to(torch.get_default_dtype(), copy=True)

    @property
    def stage(self) -> int:
        """The current stage :math:`t` (1 before the first :meth:`step`)."""
        return int(self.completed_stages) + 1

    def forward(self, losses: Tensor, *, present: Tensor | None = None) -> Tensor:
        """Return :math:`\\sum_k \\lambda_k L_k` over the present tasks; record them if training.

        Args:
            losses: the :math:`K` unweighted task losses :math:`L_k` of the batch. Entries of
                absent tasks are ignored (any value, NaN included, may stand there).
            present: which tasks were computed in this batch (``None``: all of them).

        Returns:
            The weighted sum, a scalar in the dtype of ``losses``, differentiable with respect to
            ``losses`` (the weights are constants; :class:`UncertaintyWeighter`'s are learned
            and receive a gradient too). It is ``contributions(losses, present=present).sum()``.
        """
        return self.contributions(losses, present=present).sum()

    def contributions(self, losses: Tensor, *, present: Tensor | None = None) -> Tensor:
        """The contribution of each task to :meth:`forward`'s sum; record the losses if training.

        The contribution of task :math:`k` is :math:`\\lambda_k L_k + r_k` when it is present
        and 0 when it is absent, where :math:`r_k` is the weighter's additive term
        (:meth:`regularizers`; 0 for the stage-wise weighters). A caller that scales the tasks
        (e.g. :class:`~mtobjectives.MultiTaskObjective`'s schedules) multiplies these.

        Args:
            losses: the :math:`K` unweighted task losses, as for :meth:`forward`.
            present: which tasks were computed in this batch (``None``: all of them).

        Returns:
            A tensor of shape :math:`(K)` in the dtype of ``losses``.
        """
        check_floating("losses", losses)
        check_shape("losses", losses, [self.num_tasks])
        present = self._check_present(present, losses)
        if self.training:
            with torch.no_grad():
                self.stage_loss_sum += torch.where(present, losses.detach().double(), 0.0)
                self.stage_loss_count += present.long()
        weighted = self._weighted_losses(losses, present)
        return torch.where(present, weighted, torch.zeros_like(weighted))

    def regularizers(self) -> Tensor | None:
        """The additive terms :math:`r_k` of the tasks, shape :math:`(K)`, or ``None`` (none).

        ``None`` for the stage-wise weighters (GDWG, DWA, equal), whose contribution is
        :math:`\\lambda_k L_k`; :class:`UncertaintyWeighter` returns its log-variances
        :math:`s_k` (with their gradient).
        """
        return None

    def step(self) -> None:
        """End the current stage: compute the weights of the next one and clear the sums.

        Under an initialized :mod:`torch.distributed` process group the stage sums and counts are
        first all-reduced (summed) over the ranks, so that every rank computes the same weights
        from the global stage means; this makes ``step()`` a collective call. The stage means
        :math:`L_k(t)` it used are kept in :attr:`last_stage_means`.

        Raises:
            ValueError: (GDWG, DWA) when a task was never present during the stage, or when a
                stage mean is not finite or not positive; the message names the task. The state is
                left unchanged.
        """
        sums = self.stage_loss_sum.clone()
        counts = self.stage_loss_count.clone()
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(sums, op=dist.ReduceOp.SUM)
            dist.all_reduce(counts, op=dist.ReduceOp.SUM)
        new_weights = self._next_weights(sums, counts)
        with torch.no_grad():
            self.task_weights.copy_(new_weights)
            self.stage_loss_sum.zero_()
            self.stage_loss_count.zero_()
            self.completed_stages += 1
        self.last_stage_means = sums / counts

    def reset(self) -> None:
        """Forget everything: back to stage 1 with equal weights (baselines and sums cleared)."""
        with torch.no_grad():
            for buffer in self.buffers(recurse=False):
                buffer.zero_()
            self.task_weights.copy_(self._equal_weights())
        self.last_stage_means = None

    # ------------------------------------------------------------------------ for subclasses
    def _weighted_losses(self, losses: Tensor, present: Tensor) -> Tensor:
        """:math:`\\lambda_k L_k` (+ :math:`r_k`) for every task; absent entries are discarded."""
        return self.task_weights.to(losses.dtype) * losses

    def _next_weights(self, sums: Tensor, counts: Tensor) -> Tensor:
        """Return :math:`\\lambda(t+1)` (float64, shape :math:`(K)`) at the end of stage ``t``.

        ``sums``/``counts`` are the (all-reduced) per-task stage sums and counts. An override may
        update its own buffers, but only after every check has passed.
        """
        raise NotImplementedError

    def _equal_weights(self) -> Tensor:
        value = 1.0 / self.num_tasks if self.scale == "sum_one" else 1.0
        device = self.task_weights.device if hasattr(self, "task_weights") else None
        return torch.full((self.num_tasks,), value, dtype=torch.float64, device=device)

    def _scaled_softmax(self, relative: Tensor, temperature: float) -> Tensor:
        """Eq. 14: ``softmax(relative / temperature)``, times :math:`K` for ``"num_tasks"``."""
        factor = 1.0 if self.scale == "sum_one" else float(self.num_tasks)
        return factor * torch.softmax(relative / temperature, dim=0)

    def _stage_means(self, sums: Tensor, counts: Tensor) -> Tensor:
        """Per-task means of the stage, checked: observed, finite and positive."""
        owner, stage = type(self).__name__, self.stage
        count_list = counts.tolist()
        if not any(count_list):
            raise ValueError(
                f"{owner}.step(): no loss was recorded in stage {stage}; call the weighter in "
                f"training mode (weighter.train()) on the batches of a stage before step()"
            )
        for k, count in enumerate(count_list):
            if count == 0:
                raise ValueError(
                    f"{owner}.step(): task {self._task_label(k)} was not present in any batch of "
                    f"stage {stage}, so its stage mean L_k({stage}) is undefined. If this task "
                    f"cannot be computed for your data (e.g. its modality is missing), disable "
                    f"it (or give it a fixed weight)."
                )
        means = sums / counts
        what = "baseline L_k(1)" if stage == 1 else f"stage mean L_k({stage})"
        for k, mean in enumerate(means.tolist()):
            if not (math.isfinite(mean) and mean > 0):
                raise ValueError(
                    f"{owner}.step(): the {what} of task {self._task_label(k)} is {mean!r}; "
                    f"the loss ratios of the weighting need finite, positive stage means. Check "
                    f"that task's loss for NaN/inf, zero or negative values."
                )
        return means

    def _task_label(self, k: int) -> str:
        if self.task_names is None:
            return f"index {k}"
        return f"{self.task_names[k]!r} (index {k})"

    def _check_present(self, present: Tensor | None, losses: Tensor) -> Tensor:
        if losses.device != self.task_weights.device:
            raise ValueError(
                f"losses is on {losses.device} but the {type(self).__name__}'s state is on "
                f"{self.task_weights.device}; move the weighter with .to(device)"
            )
        if present is None:
            return torch.ones(self.num_tasks, dtype=torch.bool, device=losses.device)
        if not isinstance(present, Tensor):
            raise TypeError(f"present must be a bool tensor or None, got {type(present).__name__}")
        if present.dtype != torch.bool:
            raise TypeError(f"present must be a bool tensor, got dtype {present.dtype}")
        check_shape("present", present, [self.num_tasks])
        if present.device != losses.device:
            raise ValueError(
                f"present must be on the device of losses ({losses.device}), got {present.device}"
            )
        return present

    def _apply(self, fn: Callable[[Tensor], Tensor], recurse: bool = True) -> Weighter:
        # `.half()` or `.to(dtype)` cast floating buffers; the running statistics are bookkeeping,
        # not parameters, and stay float64 (devices still move).
        super()._apply(fn, recurse)
        for name, buffer in self.named_buffers(recurse=False):
            if buffer.is_floating_point() and buffer.dtype != torch.float64:
                setattr(self, name, buffer.double())
        return self

    # --------------------------------------------------------------- settings in the state
    def _settings(self) -> dict[str, Any]:
        """The settings the state depends on; ``temperature`` where the weighter has one."""
        settings: dict[str, Any] = {
            "weighter": type(self).__name__,
            "num_tasks": self.num_tasks,
            "scale": self.scale,
            "task_names": None if self.task_names is None else list(self.task_names),
        }
        temperature = getattr(self, "temperature", None)
        if isinstance(temperature, float):
            settings["temperature"] = temperature
        return settings

    def get_extra_state(self) -> Tensor:
        """The settings as a ``uint8`` tensor of JSON (a state_dict of tensors only)."""
        text = json.dumps(self._settings(), sort_keys=True)
        return torch.frombuffer(bytearray(text.encode()), dtype=torch.uint8)

    def set_extra_state(self, state: Any) -> None:
        """Refuse a state saved with other settings, naming each that differs."""
        owner = type(self).__name__
        try:
            saved = json.loads(bytes(state.cpu().tolist()).decode())
            if not isinstance(saved, Mapping):
                raise ValueError(type(saved).__name__)
        except (AttributeError, TypeError, ValueError) as error:
            raise ValueError(
                f"{owner}.load_state_dict(): {_SETTINGS_KEY!r} must hold a weighter's settings "
                f"(a uint8 tensor of JSON, as state_dict() saves them), got "
                f"{type(state).__name__} ({error})"
            ) from None
        mine = self._settings()
        differing = [
            f"{key} {saved.get(key)!r} (saved) != {value!r} (this weighter)"
            for key, value in mine.items()
            if saved.get(key) != value
            and not (key == "task_names" and None in (saved.get(key), value))
        ]
        if differing:
            raise ValueError(
                f"{owner}.load_state_dict(): the state was saved with other settings: "
                f"{'; '.join(differing)}. Build the weighter with the saved settings to resume "
                f"it; a state of other settings would mix two experiments"
            )

    def _load_from_state_dict(
        self,
        state_dict: dict[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        key = prefix + _SETTINGS_KEY
        if key in state_dict:  # checked before nn.Module copies any buffer
            self.set_extra_state(state_dict[key])
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
        if key not in state_dict and key in missing_keys:
            missing_keys.remove(key)  # a state saved before the settings were: unchecked

    def extra_repr(self) -> str:
        names = "" if self.task_names is None else f", task_names={list(self.task_names)}"
        return f"num_tasks={self.num_tasks}, scale={self.scale!r}{names}"


class GDWGWeighter(Weighter):
    r"""Global Dynamic Weight Generation (GDWG), Eq. 13–14 of the DMMSA paper.

    Each task is weighted by how far its loss is from its own first-stage level: a task whose
    loss has decreased less (relative to the start) gets a larger weight in the next stage.

    .. math::

        w_k(t-1) = \frac{L_k(t-1)}{L_k(1)} \qquad (13)

        \lambda_k(t) = s\, \frac{\exp\big(w_k(t-1)/\tau\big)}
                                 {\sum_{j=1}^{J} \exp\big(w_j(t-1)/\tau\big)} \qquad (14)

    where

    - :math:`t` is the stage (an epoch by default; :meth:`step` ends one),
    - :math:`L_k(t)` is the mean unweighted loss of task :math:`k` over stage :math:`t` (over the
      batches where it was present), and :math:`L_k(1)` is the baseline,
    - :math:`w_k(t-1)` is the relative decay of task :math:`k`,
    - :math:`\lambda_k(t)` is the weight of task :math:`k` during stage :math:`t`,
    - :math:`J = K` is the number of weighted tasks and :math:`\tau` the temperature (smaller
      :math:`\tau`, larger weight changes),
    - :math:`s = 1` (``scale="sum_one"``, the paper) or :math:`s = K` (``"num_tasks"``, DWA's).

    Stage 1 uses equal weights :math:`s/K`; its means become the baseline :math:`L_k(1)`, so
    :math:`w_k(1) = 1` for every task and stage 2 is equal again. From stage 3 on the weights
    follow the losses. The baseline is part of the state and survives ``state_dict()`` resumes.

    Args:
        num_tasks: number of weighted tasks :math:`K`.
        temperature: :math:`\tau > 0`. The paper gives no value; 2.0 is DWA's customary one.
        scale: ``"sum_one"`` (default, the paper) or ``"num_tasks"``.
        task_names: optional task names for error messages.

    Shape:
        - Input ``losses``: :math:`(K)`; ``present``: :math:`(K)` bool or ``None``.
        - Output: :math:`()`.

    Example:
        >>> import torch
        >>> from mtobjectives.weighting import GDWGWeighter
        >>> weighter = GDWGWeighter(2, task_names=["Uni", "CL"])
        >>> for stage_loss in ([1.0, 2.0], [0.5, 2.0], [0.25, 1.0]):   # one batch per stage
        ...     losses = torch.tensor(stage_loss, requires_grad=True)
        ...     total = weighter(losses)         # lambda . L, to add to the fixed-weight terms
        ...     total.backward()
        ...     weighter.step()                  # end of the stage (epoch)
        >>> weighter.stage
        4
        >>> [round(w, 4) for w in weighter.weights.tolist()]   # softmax([0.25, 0.5] / 2)
        [0.4688, 0.5312]
        >>> [round(g, 4) for g in losses.grad.tolist()]          # stage-3 weights (from stage 2)
        [0.4378, 0.5622]
    """

    baseline: Tensor

    def __init__(
        self,
        num_tasks: int,
        *,
        temperature: float = 2.0,
        scale: str = "sum_one",
        task_names: Sequence[str] | None = None,
    ) -> None:
        super().__init__(num_tasks, scale=scale, task_names=task_names)
        self.temperature = check_positive("temperature", temperature)
        # L_k(1), the stage-1 means (set by the first step()).
        self.register_buffer("baseline", torch.zeros(num_tasks, dtype=torch.float64))

    def _next_weights(self, sums: Tensor, counts: Tensor) -> Tensor:
        means = self._stage_means(sums, counts)
        if self.stage == 1:
            self.baseline.copy_(means)
        relative = means / self.baseline  # w_k(t-1), Eq. 13
        return self._scaled_softmax(relative, self.temperature)  # lambda_k(t), Eq. 14

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, temperature={self.temperature}"


class DWAWeighter(Weighter):
    r"""Dynamic Weight Average (Liu, Johns and Davison, 2019), the comparison for GDWG.

    Like GDWG but the loss ratio is taken to the previous stage instead of the first one:

    .. math::

        w_k(t-1) = \frac{L_k(t-1)}{L_k(t-2)}, \qquad
        \lambda_k(t) = s\, \frac{\exp\big(w_k(t-1)/\tau\big)}
                                 {\sum_{j=1}^{K} \exp\big(w_j(t-1)/\tau\big)}

    where

    - :math:`L_k(t)` is the mean unweighted loss of task :math:`k` over stage :math:`t`,
    - :math:`w_k(t-1)` is the rate of descent of task :math:`k` between the last two stages,
    - :math:`\lambda_k(t)` is the weight of task :math:`k` during stage :math:`t`,
    - :math:`\tau` is the temperature and :math:`s = K` (``"num_tasks"``, DWA's default) or
      :math:`1` (``"sum_one"``).

    Stages 1 and 2 use equal weights (no ratio exists yet); from stage 3 on the weights follow
    the ratio of the last two stage means.

    Args:
        num_tasks: number of weighted tasks :math:`K`.
        temperature: :math:`\tau > 0` (DWA: 2.0).
        scale: ``"num_tasks"`` (default, DWA) or ``"sum_one"``.
        task_names: optional task names for error messages.

    Shape:
        - Input ``losses``: :math:`(K)`; ``present``: :math:`(K)` bool or ``None``.
        - Output: :math:`()`.

    Example:
        >>> import torch
        >>> from mtobjectives.weighting import DWAWeighter
        >>> weighter = DWAWeighter(2)
        >>> for stage_loss in ([1.0, 2.0], [0.5, 2.0]):
        ...     _ = weighter(torch.tensor(stage_loss))
        ...     weighter.step()
        >>> [round(w, 4) for w in weighter.weights.tolist()]   # 2 softmax([0.5, 1.0] / 2)
        [0.8756, 1.1244]
    """

    previous_means: Tensor

    def __init__(
        self,
        num_tasks: int,
        *,
        temperature: float = 2.0,
        scale: str = "num_tasks",
        task_names: Sequence[str] | None = None,
    ) -> None:
        super().__init__(num_tasks, scale=scale, task_names=task_names)
        self.temperature = check_positive("temperature", temperature)
        # L_k(t-1), the means of the last finished stage.
        self.register_buffer("previous_means", torch.zeros(num_tasks, dtype=torch.float64))

    def _next_weights(self, sums: Tensor, counts: Tensor) -> Tensor:
        means = self._stage_means(sums, counts)
        if self.stage == 1:
            weights = self._equal_weights()
        else:
            weights = self._scaled_softmax(means / self.previous_means, self.temperature)
        self.previous_means.copy_(means)
        return weights

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, temperature={self.temperature}"


class EqualWeighter(Weighter):
    r"""Fixed equal weights behind the weighter interface (the "w/o GDWG" ablation).

    .. math::

        \lambda_k(t) = \frac{s}{K} \quad \text{for every stage } t

    where :math:`K` is the number of tasks and :math:`s = 1` (``"sum_one"``, default) or
    :math:`s = K` (``"num_tasks"``, every weight 1).

    With the same ``scale`` these are exactly GDWG's weights in its first two stages, so swapping
    :class:`GDWGWeighter` for this class removes only the dynamic re-weighting. :meth:`step`
    still counts stages (and all-reduces under :mod:`torch.distributed`) but never inspects the
    losses, so an absent or non-finite task is not an error here.

    Args:
        num_tasks: number of tasks :math:`K`.
        scale: ``"sum_one"`` (default) or ``"num_tasks"``.
        task_names: optional task names (kept for a uniform interface).

    Shape:
        - Input ``losses``: :math:`(K)`; ``present``: :math:`(K)` bool or ``None``.
        - Output: :math:`()`.

    Example:
        >>> import torch
        >>> from mtobjectives.weighting import EqualWeighter
        >>> weighter = EqualWeighter(2)
        >>> weighter(torch.tensor([1.0, 3.0]))
        tensor(2.)
        >>> weighter(torch.tensor([1.0, 3.0]), present=torch.tensor([True, False]))
        tensor(0.5000)
    """

    def _next_weights(self, sums: Tensor, counts: Tensor) -> Tensor:
        return self._equal_weights()


class UncertaintyWeighter(Weighter):
    r"""Homoscedastic uncertainty weighting (Kendall, Gal and Cipolla, 2018).

    Each task :math:`k` has a learned log-variance :math:`s_k = \log \sigma_k^2`, and the
    weighted sum is

    .. math::

        \mathcal{L} = \sum_{k=1}^{K} m_k \big( e^{-s_k} L_k + s_k \big), \qquad
        \frac{\partial \mathcal{L}}{\partial s_k} = m_k \big( 1 - e^{-s_k} L_k \big)

    where

    - :math:`L_k` is the unweighted loss of task :math:`k` in the batch and :math:`m_k` the
      ``present`` mask,
    - :math:`\lambda_k = e^{-s_k}` is the task's weight (:attr:`weights`), and the additive
      :math:`r_k = s_k` (:meth:`regularizers`) keeps :math:`s_k` from growing without bound:
      for a fixed :math:`L_k > 0` the sum is smallest at :math:`s_k^* = \log L_k`, where
      :math:`\lambda_k = 1 / L_k`.

    This is the form commonly used in multi-task code; Kendall et al.'s regression likelihood
    is :math:`\tfrac12 e^{-s_k} L_k + \tfrac12 s_k`, the same up to the factor :math:`\tfrac12`.

    How it fits the :class:`Weighter` interface: the weights are not constants of a stage but
    :class:`torch.nn.Parameter` s (:attr:`log_variances`) that the caller's optimizer updates.
    :meth:`forward` returns the whole sum above, :meth:`contributions` its :math:`K` terms
    :math:`e^{-s_k} L_k + s_k`, and :meth:`regularizers` the :math:`s_k`, so that a
    :class:`~mtobjectives.MultiTaskObjective` reports ``loss = sum(weights * terms) +
    sum(regularizers)``. Give the optimizer the objective's parameters too, e.g.
    ``torch.optim.AdamW([*model.parameters(), *objective.parameters()])``: without them the
    weights stay at their initial value. :meth:`step` only counts stages (the weights do not
    depend on them), and the losses are recorded in training mode like every weighter's. The
    log-variances are in ``state_dict()``; :meth:`reset` sets them back to
    ``init_log_variance``. Under :mod:`torch.distributed` they are parameters outside your
    model: include them in the module you wrap with ``DistributedDataParallel`` or all-reduce
    their gradients, so that every rank keeps the same weights.

    Args:
        num_tasks: number of weighted tasks :math:`K`.
        init_log_variance: the initial :math:`s_k` of every task (default 0: weights 1).
        task_names: optional task names for error messages.

    Shape:
        - Input ``losses``: :math:`(K)`; ``present``: :math:`(K)` bool or ``None``.
        - Output: :math:`()`.

    Example:
        >>> import torch
        >>> from mtobjectives.weighting import UncertaintyWeighter
        >>> weighter = UncertaintyWeighter(2)
        >>> total = weighter(torch.tensor([2.0, 0.5]))   # e^0 * 2 + 0 + e^0 * 0.5 + 0
        >>> total
        tensor(2.5000, grad_fn=<SumBackward0>)
        >>> total.backward()
        >>> weighter.log_variances.grad                   # 1 - e^{-s} L
        tensor([-1.0000,  0.5000])
    """

    log_variances: nn.Parameter

    def __init__(
        self,
        num_tasks: int,
        *,
        init_log_variance: float = 0.0,
        task_names: Sequence[str] | None = None,
    ) -> None:
        super().__init__(num_tasks, scale="num_tasks", task_names=task_names)
        init_log_variance = check_real("init_log_variance", init_log_variance)
        if not math.isfinite(init_log_variance):
            raise ValueError(f"init_log_variance must be finite, got {init_log_variance!r}")
        self.init_log_variance = float(init_log_variance)
        #: :math:`s_k = \log \sigma_k^2`, one learned log-variance per task.
        self.log_variances = nn.Parameter(torch.full((num_tasks,), self.init_log_variance))

    @property
    def weights(self) -> Tensor:
        """The weights :math:`e^{-s_k}`, detached, shape :math:`(K)`."""
        return torch.exp(-self.log_variances.detach()).to(torch.get_default_dtype(), copy=True)

    def regularizers(self) -> Tensor:
        """The additive terms :math:`r_k = s_k` (the log-variances, with their gradient)."""
        return self.log_variances

    def reset(self) -> None:
        """Back to stage 1 with every :math:`s_k` at ``init_log_variance``."""
        super().reset()
        with torch.no_grad():
            self.log_variances.fill_(self.init_log_variance)

    def _weighted_losses(self, losses: Tensor, present: Tensor) -> Tensor:
        # Absent entries may hold anything (NaN included): zero them first, so that they reach
        # neither the value nor the gradient of s_k.
        losses = torch.where(present, losses, torch.zeros_like(losses))
        s = self.log_variances.to(losses.dtype)
        return torch.exp(-s) * losses + s

    def _next_weights(self, sums: Tensor, counts: Tensor) -> Tensor:
        return self.task_weights.clone()  # unused: the weights are the learned e^{-s_k}

    def extra_repr(self) -> str:
        names = "" if self.task_names is None else f", task_names={list(self.task_names)}"
        return f"num_tasks={self.num_tasks}, init_log_variance={self.init_log_variance}{names}"
