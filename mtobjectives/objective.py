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
import torch.nn.functional as F
from torch import Tensor, nn

from mtobjectives._validation import check_choice, check_floating, check_positive, check_shape
from mtobjectives.binning import CoarseGrainedBinning
from mtobjectives.contrastive import (
    MultiNTXentLoss,
    PairBuilder,
    has_text_anchored_pair,
    text_anchored_pairs,
)
from mtobjectives.functional import multi_nt_xent_from_labels
from mtobjectives.schedules import TaskSchedule
from mtobjectives.weighting import (
    DWAWeighter,
    EqualWeighter,
    GDWGWeighter,
    UncertaintyWeighter,
    Weighter,
)

__all__ = [
    "FEATURE_NAMES",
    "BatchCheck",
    "MultiTaskObjective",
    "ObjectiveResult",
    "Task",
    "check_dmmsa_batch",
    "cl_loss",
    "msc_loss",
    "msr_loss",
    "uni_loss",
]

#: A task: ``task(outputs, targets)`` -> scalar loss, or ``None`` when absent from the batch.
Task = Callable[[Mapping[str, Any], Mapping[str, Any]], Tensor | None]

#: A check of the whole batch: ``check(outputs, targets)`` raises on a bad batch.
BatchCheck = Callable[[Mapping[str, Any], Mapping[str, Any]], None]

WEIGHTINGS: tuple[str, ...] = ("gdwg", "equal", "dwa", "uncertainty")

#: The decomposed features of DMMSA (keys of ``outputs["features"]`` and ``outputs["unimodal"]``).
FEATURE_NAMES: tuple[str, ...] = ("T_s", "T_d", "A_s", "A_d", "V_s", "V_d")


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
    ) -> None:
        super().__init__()
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
        """End the current stage (call it at each epoch end): the weighter's, and the schedules'.

        Without a weighter and without schedules it does nothing.
        """
        if self.weighter is not None:
            self.weighter.step()
        if self.schedule_stage is not None:
            self.schedule_stage.completed += 1

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
        r"""The DMMSA objective (Eq. 5): regression, coarse classification, unimodal, contrastive.

        .. math::

            L_{MSA} = L_{MSR} + L_{MSC} + \lambda_{Uni} L_{Uni} + \lambda_{CL} L_{CL} \qquad (5)

        where

        - :math:`L_{MSR} = \mathrm{SmoothL1}_\varphi(y^*, y)`, the fused prediction against the
          multimodal label (Eq. 7, PyTorch's continuous smooth L1 with ``beta`` :math:`=\varphi`),
        - :math:`L_{MSC} = \mathrm{CE}(y_{MSC}, \mathrm{bin}(y))`, cross-entropy of the coarse
          logits against the class of :math:`y` under ``binning`` (Eq. 9),
        - :math:`L_{Uni} = \frac{1}{|F|}\sum_{f \in F} \mathrm{SmoothL1}_\varphi(u^*_f, u_f)`, the
          weight-shared head's prediction for each present feature :math:`f` (Eq. 10), with
          :math:`u_f = y` for the similarity features ``*_s`` and, for the dissimilarity features
          ``m_d``, the unimodal label :math:`y^m` (``targets["T"|"A"|"V"]``) when given, else
          :math:`y`,
        - :math:`L_{CL}` is :class:`~mtobjectives.contrastive.MultiNTXentLoss` (Eq. 3) over the
          text-anchored pairs (Eq. 11–12): anchor :math:`T_s`, positives :math:`A_s, V_s`,
          negatives :math:`T_d, A_d, V_d` (or the pairs of another builder, ``pairs``), with
          the options of :func:`cl_loss`,
        - :math:`\lambda_{Uni}, \lambda_{CL}` are the dynamic weights (GDWG, Eq. 13–14);
          :math:`L_{MSR}` and :math:`L_{MSC}` have the fixed weight 1.

        The four terms are the public functions :func:`msr_loss`, :func:`msc_loss`,
        :func:`uni_loss` and :func:`cl_loss`, and the batch check is :func:`check_dmmsa_batch`:
        this method only assembles them into a :class:`MultiTaskObjective`. Every option added
        to the paper's objective (``pairs``, ``detach_anchor``, ``label_positives``,
        ``schedules``, ``weighting="uncertainty"``) is off by default, and the defaults give
        exactly the paper's objective (the same numbers, bit for bit, as before the options).

        Missing modality keys in ``outputs["features"]``/``outputs["unimodal"]`` drop their terms
        and pairs; :math:`L_{Uni}` is absent when no unimodal prediction is given and
        :math:`L_{CL}` when :math:`T_s` or both positives are missing (no anchor has a positive;
        with ``label_positives=True`` only when :math:`T_s` is missing).
        ``weighting="equal"`` is the "w/o GDWG" ablation: an
        :class:`~mtobjectives.weighting.EqualWeighter` with the same ``scale``, i.e. exactly
        GDWG's weights of its first two stages, so that only the dynamic re-weighting is removed.

        Each batch is checked once before the terms are computed: it must hold at least one
        sample, and the labels it uses (``targets["M"]``, and ``targets["T"|"A"|"V"]`` where
        :math:`L_{Uni}` uses them) must be on the device of ``outputs["prediction"]`` and
        finite. The finiteness check reads the labels' values: one device synchronisation per
        batch (the binning of :math:`L_{MSC}` has one too), cheap because labels are ``[B]``
        vectors, and worth it because a NaN label is bad data that would otherwise turn the
        loss into NaN (or, with ``msc=True``, be reported under the binning's name ``y``).
        The model outputs are not value-checked: a NaN there gives a NaN loss.

        Args:
            binning: the :class:`~mtobjectives.binning.CoarseGrainedBinning` giving the MSC
                classes (e.g. ``CoarseGrainedBinning.preset("sims", 3)``); ``None`` only with
                ``msc=False``.
            temperature: temperature of the contrastive loss (default 0.5, ConFEDE's).
            form: ``"in"`` (the paper's Multi NT-Xent) or ``"out"`` (SupCon's form).
            beta: smoothness :math:`\varphi > 0` of the smooth L1 losses (default 1).
            msc: keep :math:`L_{MSC}` (``False``: the "w/o MSC" ablation).
            uni: keep :math:`L_{Uni}`.
            cl: keep :math:`L_{CL}` (``False``: the "w/o CL" ablation).
            weighting: ``"gdwg"`` (default), ``"equal"`` ("w/o GDWG"), ``"dwa"``,
                ``"uncertainty"`` (:class:`~mtobjectives.weighting.UncertaintyWeighter`; give
                the optimizer ``objective.parameters()``), or a
                :class:`~mtobjectives.weighting.Weighter` instance for the dynamic tasks
                (``num_tasks`` = their number: 2, or 1 with ``uni=False`` or ``cl=False``;
                ``weighting_temperature`` and ``scale`` are then not used).
            weighting_temperature: :math:`\tau` of GDWG/DWA (default 2.0).
            scale: ``"sum_one"`` (the paper: :math:`\lambda_{Uni} + \lambda_{CL} = 1`) or
                ``"num_tasks"`` (they sum to 2, DWA's scale); used by ``"gdwg"``, ``"equal"``
                and ``"dwa"``.
            pairs: the pair builder of :math:`L_{CL}` (default :func:`text_anchored_pairs`),
                see :func:`cl_loss`.
            detach_anchor: stop the gradient of :math:`L_{CL}` at the anchor :math:`T_s`, so
                that only the positives and negatives move (default ``False``).
            label_positives: add to :math:`L_{CL}` the label-aware inter-sample term: the other
                samples' :math:`T_s` of the same coarse class (under ``binning``) are positives
                (default ``False``; needs ``binning``).
            schedules: task name -> schedule of its weight, e.g.
                ``{"CL": WarmupSchedule(3)}`` (:class:`~mtobjectives.schedules.WarmupSchedule`);
                see :class:`MultiTaskObjective`. Default ``None``: no schedule.

        Returns:
            A :class:`MultiTaskObjective` with tasks ``"MSR"``, ``"MSC"``, ``"Uni"``, ``"CL"``
            (those switched on) to be called as ``objective(outputs, targets)``.

        Raises:
            TypeError: If an option has the wrong type (at construction) or, when called, an
                output or a label is not a floating-point tensor.
            ValueError: If an option is invalid (at construction) or, when called, an output
                or a label has the wrong shape, the batch is empty, a used label is on another
                device than ``outputs["prediction"]`` or holds NaN or inf, or a required key
                is missing.

        Shape:
            - ``outputs["prediction"]``: :math:`(B)`; ``outputs["logits"]``: :math:`(B, C)`.
            - ``outputs["features"][f]``: :math:`(B, D)`; ``outputs["unimodal"][f]``: :math:`(B)`
              for ``f`` in ``T_s, T_d, A_s, A_d, V_s, V_d`` (any subset).
            - ``targets["M"]``: :math:`(B)`; optional ``targets["T"|"A"|"V"]``: :math:`(B)`.

        Example:
            >>> import torch
            >>> from mtobjectives import CoarseGrainedBinning, MultiTaskObjective
            >>> _ = torch.manual_seed(0)
            >>> objective = MultiTaskObjective.dmmsa(binning=CoarseGrainedBinning.preset("sims"))
            >>> names = ("T_s", "T_d", "A_s", "A_d", "V_s", "V_d")
            >>> outputs = {"prediction": torch.randn(4), "logits": torch.randn(4, 3),
            ...            "features": {f: torch.randn(4, 8) for f in names},
            ...            "unimodal": {f: torch.randn(4) for f in names}}
            >>> result = objective(outputs, {"M": torch.rand(4) * 2 - 1})
            >>> {name: round(term.item(), 4) for name, term in result.terms.items()}
            {'MSR': 1.0485, 'MSC': 1.3092, 'Uni': 0.4808, 'CL': 1.2549}
            >>> {name: weight.item() for name, weight in result.weights.items()}
            {'MSR': 1.0, 'MSC': 1.0, 'Uni': 0.5, 'CL': 0.5}
        """
        flags = {"msc": msc, "uni": uni, "cl": cl, "detach_anchor": detach_anchor,
                 "label_positives": label_positives}
        for name, flag in flags.items():
            if not isinstance(flag, bool):
                raise TypeError(f"{name} must be a bool, got {type(flag).__name__}")
        for name, needed in (("msc", msc), ("label_positives", label_positives)):
            if needed and not isinstance(binning, CoarseGrainedBinning):
                raise TypeError(
                    f"binning must be a CoarseGrainedBinning when {name}=True, "
                    f"got {type(binning).__name__}"
                )
        check_positive("beta", beta)
        if not isinstance(weighting, Weighter):
            check_choice("weighting", weighting, WEIGHTINGS)
        check_positive("weighting_temperature", weighting_temperature)
        check_choice("scale", scale, ("sum_one", "num_tasks"))
        if not callable(pairs):
            raise TypeError(f"pairs must be a callable pair builder, got {type(pairs).__name__}")
        contrastive = MultiNTXentLoss(temperature=temperature, form=form)  # checks both

        tasks: dict[str, Task] = {"MSR": functools.partial(msr_loss, beta=beta)}
        if msc:
            tasks["MSC"] = functools.partial(msc_loss, binning=binning)
        if uni:
            tasks["Uni"] = functools.partial(uni_loss, beta=beta)
        if cl:
            tasks["CL"] = functools.partial(
                cl_loss, contrastive=contrastive, pairs=pairs, detach_anchor=detach_anchor,
                label_binning=binning if label_positives else None,
            )
        dynamic = [name for name in ("Uni", "CL") if name in tasks]
        fixed = {name: 1.0 for name in ("MSR", "MSC") if name in tasks}
        return cls(
            tasks, fixed=fixed, dynamic=dynamic,
            weighter=_dmmsa_weighter(weighting, dynamic, weighting_temperature, scale),
            schedules=schedules, check_batch=functools.partial(check_dmmsa_batch, uni=uni),
        )


def _dmmsa_weighter(
    weighting: str | Weighter, dynamic: list[str], temperature: float, scale: str
) -> Weighter | None:
    """The weighter of :meth:`MultiTaskObjective.dmmsa`'s dynamic tasks (checked by the class)."""
    if isinstance(weighting, Weighter):
        return weighting
    if not dynamic:
        return None
    if weighting == "equal":
        return EqualWeighter(len(dynamic), scale=scale, task_names=dynamic)
    if weighting == "uncertainty":
        return UncertaintyWeighter(len(dynamic), task_names=dynamic)
    kind = GDWGWeighter if weighting == "gdwg" else DWAWeighter
    return kind(len(dynamic), temperature=temperature, scale=scale, task_names=dynamic)


# ------------------------------------------------------------- the four tasks of DMMSA (Eq. 5)
# Each is a task of MultiTaskObjective: ``term(outputs, targets, **options)``; bind the options
# with functools.partial (or a lambda) to use one in your own objective. They check what they
# read on the host (keys, dtypes, shapes, devices); the label values are checked once per batch
# by check_dmmsa_batch, which MultiTaskObjective runs when given as ``check_batch``.
def msr_loss(
    outputs: Mapping[str, Any], targets: Mapping[str, Any], *, beta: float = 1.0
) -> Tensor:
    r"""Multimodal sentiment regression (Eq. 7): smooth L1 between :math:`y^*` and :math:`y`.

    .. math::

        L_{MSR} = \frac{1}{B} \sum_{i=1}^{B} \mathrm{SmoothL1}_\varphi(y^*_i - y_i)

    where :math:`y^*` is ``outputs["prediction"]``, :math:`y` is ``targets["M"]`` and
    :math:`\varphi` is ``beta`` (PyTorch's continuous smooth L1).

    Shape:
        - ``outputs["prediction"]``, ``targets["M"]``: :math:`(B)`; output: :math:`()`.

    Example:
        >>> import torch
        >>> from mtobjectives import msr_loss
        >>> msr_loss({"prediction": torch.tensor([0.5, 2.0])}, {"M": torch.tensor([0.0, 0.0])})
        tensor(0.8125)
    """
    prediction, y = _prediction_and_label(outputs, targets)
    return F.smooth_l1_loss(prediction.to(y.dtype), y, beta=beta)


def msc_loss(
    outputs: Mapping[str, Any], targets: Mapping[str, Any], *, binning: CoarseGrainedBinning
) -> Tensor:
    r"""Coarse multimodal sentiment classification (Eq. 9): cross-entropy against the class of y.

    .. math::

        L_{MSC} = \mathrm{CE}\big(y_{MSC}, \mathrm{bin}(y)\big)

    where :math:`y_{MSC}` are the logits ``outputs["logits"]`` and :math:`\mathrm{bin}` is
    ``binning`` (:class:`~mtobjectives.binning.CoarseGrainedBinning`).

    Shape:
        - ``outputs["logits"]``: :math:`(B, C)`; ``targets["M"]``: :math:`(B)`; output: :math:`()`.

    Example:
        >>> import torch
        >>> from mtobjectives import CoarseGrainedBinning, msc_loss
        >>> outputs = {"prediction": torch.zeros(2), "logits": torch.tensor([[0.0, 0.0, 4.0]] * 2)}
        >>> msc_loss(outputs, {"M": torch.tensor([0.9, -0.9])},    # classes 2 and 0
        ...          binning=CoarseGrainedBinning.preset("sims"))
        tensor(2.0360)
    """
    _, y = _prediction_and_raw_label(outputs, targets)
    logits = _required(outputs, "outputs", "logits", "or pass msc=False")
    check_floating("outputs['logits']", logits)
    check_shape("outputs['logits']", logits, [y.shape[0], binning.num_classes])
    return F.cross_entropy(logits, binning(y))


def uni_loss(
    outputs: Mapping[str, Any], targets: Mapping[str, Any], *, beta: float = 1.0
) -> Tensor | None:
    r"""Unimodal sentiment analysis (Eq. 10): the shared head's prediction of each feature.

    .. math::

        L_{Uni} = \frac{1}{|F|} \sum_{f \in F} \frac{1}{B} \sum_{i=1}^{B}
            \mathrm{SmoothL1}_\varphi(u^*_{f,i} - u_{f,i})

    where :math:`F` are the features present in ``outputs["unimodal"]``, :math:`u^*_f` their
    predictions, and :math:`u_f = y` for the similarity features ``*_s``; for a dissimilarity
    feature ``m_d`` it is the unimodal label :math:`y^m` (``targets["T"|"A"|"V"]``) when given,
    else :math:`y`. Returns ``None`` (absent) when no prediction is given.

    Shape:
        - ``outputs["unimodal"][f]``, ``targets[...]``: :math:`(B)`; output: :math:`()`.

    Example:
        >>> import torch
        >>> from mtobjectives import uni_loss
        >>> outputs = {"prediction": torch.zeros(2),
        ...            "unimodal": {"T_s": torch.tensor([1.0, 1.0]), "T_d": torch.zeros(2)}}
        >>> uni_loss(outputs, {"M": torch.tensor([1.0, 1.0]), "T": torch.tensor([0.0, 2.0])})
        tensor(0.3750)
    """
    _, y = _prediction_and_label(outputs, targets)
    predictions = _features(outputs, "unimodal", [y.shape[0]], "or pass uni=False")
    if not predictions:
        return None
    losses = []
    for name, u in predictions.items():
        modality = name[0]  # "T", "A" or "V"
        unimodal = name.endswith("_d") and modality in targets
        label = _label(targets, modality, u) if unimodal else y
        dtype = torch.promote_types(u.dtype, torch.float32)  # a float16 label could overflow
        losses.append(F.smooth_l1_loss(u.to(dtype), label.to(dtype), beta=beta))
    return torch.stack(losses).mean()


def cl_loss(
    outputs: Mapping[str, Any],
    targets: Mapping[str, Any],
    *,
    contrastive: MultiNTXentLoss | None = None,
    pairs: PairBuilder = text_anchored_pairs,
    detach_anchor: bool = False,
    label_binning: CoarseGrainedBinning | None = None,
) -> Tensor | None:
    r"""Contrastive learning (Eq. 11–12 with Eq. 3), with the stop-gradient and label options.

    .. math::

        L_{CL} = \frac{1}{B} \sum_{i=1}^{B} \ell\big(a_i;\, P_i, N_i\big)
            \;+\; [\text{labels}]\; \frac{1}{|I|} \sum_{i \in I}
            \ell\big(T_{s,i};\, \{T_{s,j} : j \ne i,\ c_j = c_i\},\
                                \{T_{s,j} : c_j \ne c_i\}\big)

    where

    - :math:`\ell(a; P, N)` is the Multi NT-Xent loss of anchor :math:`a` with positives
      :math:`P` and negatives :math:`N` (Eq. 3, ``contrastive``'s temperature and form),
    - :math:`a_i, P_i, N_i` are the anchor, positives and negatives of sample :math:`i` from
      the pair builder ``pairs``; the default :func:`text_anchored_pairs` gives
      :math:`a_i = T_{s,i}`, :math:`P_i = \{V_{s,i}, A_{s,i}\}` and
      :math:`N_i = \{T_{d,i}, V_{d,i}, A_{d,i}\}` (all from sample :math:`i`); the mean runs
      over the anchors with a positive,
    - with ``detach_anchor=True`` the anchor is :math:`\mathrm{sg}(a_i)` (stop-gradient): the
      value is unchanged, but no gradient reaches the anchor, so the text similarity feature
      is not pulled toward the audio and visual features; only the positives and negatives
      move,
    - the second sum is added when ``label_binning`` is given (label-aware inter-sample
      positives, SupCon-style): :math:`c_i` is the coarse class of :math:`y_i` under
      ``label_binning``, every other sample's :math:`T_s` of the same class is a positive of
      :math:`T_{s,i}` and every one of another class a negative, computed by
      :func:`~mtobjectives.functional.multi_nt_xent_from_labels`; :math:`I` are the samples
      whose class occurs at least twice in the batch. It is not affected by
      ``detach_anchor`` (there every :math:`T_s` is both an anchor and a candidate).

    The builder is called with the features present in ``outputs["features"]`` as keyword
    arguments, and only when the batch holds the anchor :math:`T_s` and at least one positive
    feature (:math:`A_s` or :math:`V_s`), as Eq. 11–12 require; it may return ``None`` to
    leave its part out. The term is absent (``None``) when neither part is computed: without
    ``label_binning``, when :math:`T_s` or both positives are missing; with it, when
    :math:`T_s` is missing.

    Args:
        outputs: the model outputs, with ``"prediction"`` and ``"features"``.
        targets: the labels, with ``"M"`` (read only for its checks and ``label_binning``).
        contrastive: the loss (default ``MultiNTXentLoss()``: :math:`\tau = 0.5`, form
            ``"in"``); its ``anchors_used`` counts the anchors of the pair part.
        pairs: the pair builder (:data:`~mtobjectives.contrastive.PairBuilder`).
        detach_anchor: stop the gradient at the anchor of the pair part.
        label_binning: the binning of the label-aware part (``None``: no such part).

    Shape:
        - ``outputs["features"][f]``: :math:`(B, D)`; ``targets["M"]``: :math:`(B)`;
          output: :math:`()`.

    Example:
        >>> import torch
        >>> from mtobjectives import CoarseGrainedBinning, cl_loss
        >>> _ = torch.manual_seed(0)
        >>> features = {f: torch.randn(4, 8) for f in ("T_s", "T_d", "A_s", "A_d", "V_s", "V_d")}
        >>> outputs, targets = {"prediction": torch.zeros(4), "features": features}, {
        ...     "M": torch.tensor([-0.8, -0.5, 0.6, 0.9])}
        >>> round(cl_loss(outputs, targets).item(), 4)
        0.9313
        >>> round(cl_loss(outputs, targets, detach_anchor=True).item(), 4)   # same value
        0.9313
        >>> binning = CoarseGrainedBinning.preset("sims")
        >>> binning(targets["M"])                    # classes: samples 0, 1 and 2, 3 pair up
        tensor([0, 0, 2, 2])
        >>> round(cl_loss(outputs, targets, label_binning=binning).item(), 4)
        2.5926
    """
    prediction, y = _prediction_and_raw_label(outputs, targets)  # binned in its own dtype
    features = _features(outputs, "features", [prediction.shape[0], None], "or pass cl=False")
    if "T_s" not in features:
        return None  # no anchor
    contrastive = MultiNTXentLoss() if contrastive is None else contrastive
    parts: list[Tensor] = []
    built = pairs(**features) if has_text_anchored_pair(features) else None
    if built is not None:
        anchor = built.anchor.detach() if detach_anchor else built.anchor
        parts.append(
            contrastive(anchor, built.candidates, built.positive_mask, built.valid_mask)
        )
    if label_binning is not None:
        parts.append(
            multi_nt_xent_from_labels(
                features["T_s"], label_binning(y),
                temperature=contrastive.temperature, form=contrastive.form,
            )
        )
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else parts[0] + parts[1]


# ----------------------------------------------------------------------------------- checks
def _required(mapping: Mapping[str, Any], where: str, key: str, hint: str = "") -> Any:
    if not isinstance(mapping, Mapping):
        raise TypeError(f"{where} must be a mapping (dict), got {type(mapping).__name__}")
    if key not in mapping:
        raise ValueError(
            f"{where} is missing the required key {key!r} {hint}".rstrip()
            + f"; got keys {sorted(mapping)}"
        )
    return mapping[key]


def _label(targets: Mapping[str, Any], key: str, prediction: Tensor) -> Tensor:
    """``targets[key]``: floating point, of shape ``[B]`` and on the device of ``prediction``.

    Checks only what is known on the host (no device synchronisation); the values are checked
    once per batch by :func:`_check_dmmsa_batch`.
    """
    name = f"targets[{key!r}]"
    label = _required(targets, "targets", key)
    check_floating(name, label)
    check_shape(name, label, [prediction.shape[0]])
    if label.device != prediction.device:
        raise ValueError(
            f"{name} must be on the device of the outputs ({prediction.device}), "
            f"got {label.device}"
        )
    return label


def _prediction_and_label(
    outputs: Mapping[str, Any], targets: Mapping[str, Any]
) -> tuple[Tensor, Tensor]:
    """``outputs["prediction"]`` [B] and ``targets["M"]`` [B], for a regression term.

    The label is returned in the prediction's dtype, but at least float32: a finite label cast
    to float16 can overflow (float16 holds at most 65504), so the regression terms of half
    precision predictions are computed, and returned, in float32. Never bin the label returned
    here: a cast can move a value across a class edge (float32 0.1 is above the float64 edge
    0.1); classes come from :func:`_prediction_and_raw_label`.
    """
    prediction, y = _prediction_and_raw_label(outputs, targets)
    return prediction, y.to(torch.promote_types(prediction.dtype, torch.float32))


def _prediction_and_raw_label(
    outputs: Mapping[str, Any], targets: Mapping[str, Any]
) -> tuple[Tensor, Tensor]:
    """``outputs["prediction"]`` [B] and ``targets["M"]`` [B] in the label's own dtype.

    For the terms that bin the label (MSC, label-aware positives): the binning compares the
    label, as given, with the edges rounded to the label's dtype, exactly as
    ``binning(targets["M"])`` does.
    """
    prediction = _required(outputs, "outputs", "prediction")
    check_floating("outputs['prediction']", prediction)
    if prediction.dim() == 2 and prediction.shape[-1] == 1:
        raise ValueError(
            f"outputs['prediction'] must have shape [B], got {tuple(prediction.shape)}; "
            f"squeeze the last dimension (a [B, 1] prediction would broadcast against [B] labels)"
        )
    check_shape("outputs['prediction']", prediction, ["B"])
    if prediction.shape[0] == 0:
        raise ValueError(
            "outputs['prediction'] must hold at least one sample (the DMMSA terms are means "
            "over the batch), got an empty batch of shape (0,)"
        )
    return prediction, _label(targets, "M", prediction)


def check_dmmsa_batch(
    outputs: Mapping[str, Any], targets: Mapping[str, Any], *, uni: bool = True
) -> None:
    """The batch check of the DMMSA objective, run once per batch before its terms.

    ``outputs["prediction"]`` must be a floating-point ``[B]`` tensor with ``B >= 1``, and every
    label the terms use must be a floating-point ``[B]`` tensor on its device and finite:
    ``targets["M"]``, and with ``uni=True`` the ``targets["T"|"A"|"V"]`` that :func:`uni_loss`
    reads (those of the dissimilarity features present in ``outputs["unimodal"]``). The
    finiteness check reads the values: one device synchronisation for all of them. Pass it as
    ``check_batch=functools.partial(check_dmmsa_batch, uni=...)`` to a
    :class:`MultiTaskObjective` built from the DMMSA terms.

    Raises:
        TypeError: If the prediction or a used label is not a floating-point tensor.
        ValueError: If a shape is wrong, the batch is empty, a used label is on another device
            or holds NaN or inf (the message names it and counts the bad values).

    Example:
        >>> import torch
        >>> from mtobjectives import check_dmmsa_batch
        >>> outputs = {"prediction": torch.zeros(2)}
        >>> check_dmmsa_batch(outputs, {"M": torch.tensor([0.5, 0.0])})  # a good batch
        >>> bad = {"M": torch.tensor([0.5, float("nan")])}
        >>> check_dmmsa_batch(outputs, bad)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
            ...
        ValueError: targets['M'] must be finite ... got 1 NaN and 0 inf value(s)
    """
    prediction, _ = _prediction_and_label(outputs, targets)
    keys = ["M"]
    unimodal = outputs.get("unimodal") if uni else None
    if isinstance(unimodal, Mapping):  # the unimodal labels used by L_Uni (for the *_d features)
        keys += [m for m in ("T", "A", "V") if f"{m}_d" in unimodal and m in targets]
    labels = [_label(targets, key, prediction) for key in keys]
    finite = torch.stack([torch.isfinite(label).all() for label in labels])
    if bool(finite.all()):
        return
    key, label = next((k, v) for k, v, ok in zip(keys, labels, finite.tolist()) if not ok)
    nan, inf = int(torch.isnan(label).sum()), int(torch.isinf(label).sum())
    raise ValueError(
        f"targets[{key!r}] must be finite (labels are data, not model outputs), "
        f"got {nan} NaN and {inf} inf value(s)"
    )


def _features(
    outputs: Mapping[str, Any], key: str, shape: list[int | None], hint: str
) -> dict[str, Tensor]:
    """The present entries of ``outputs[key]`` (a subset of :data:`FEATURE_NAMES`), checked."""
    features = _required(outputs, "outputs", key, hint)
    if not isinstance(features, Mapping):
        raise TypeError(f"outputs[{key!r}] must be a dict, got {type(features).__name__}")
    unknown = [name for name in features if name not in FEATURE_NAMES]
    if unknown:
        raise ValueError(
            f"outputs[{key!r}] has unknown keys {unknown}; expected a subset of "
            f"{list(FEATURE_NAMES)}"
        )
    for name, value in features.items():
        check_floating(f"outputs[{key!r}][{name!r}]", value)
        check_shape(f"outputs[{key!r}][{name!r}]", value, shape)
    return {name: features[name] for name in FEATURE_NAMES if name in features}


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
