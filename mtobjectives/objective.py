r"""Multi-task objectives: a weighted sum of named task losses, and DMMSA's Eq. 5.

:class:`MultiTaskObjective` holds named *tasks*, each a callable ``task(outputs, targets)`` that
returns a scalar loss, or ``None`` when it cannot be computed for the batch (e.g. its modality is
missing). Some tasks have fixed weights; the others ("dynamic") are weighted by a
:class:`~mtobjectives.weighting.Weighter` (GDWG by default). :meth:`MultiTaskObjective.dmmsa`
builds the paper's four tasks; their definitions are the four small functions just above it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mtobjectives._validation import check_choice, check_floating, check_positive, check_shape
from mtobjectives.binning import CoarseGrainedBinning
from mtobjectives.contrastive import (
    MultiNTXentLoss,
    has_text_anchored_pair,
    text_anchored_pairs,
)
from mtobjectives.weighting import DWAWeighter, EqualWeighter, GDWGWeighter, Weighter

__all__ = ["FEATURE_NAMES", "MultiTaskObjective", "ObjectiveResult", "Task"]

#: A task: ``task(outputs, targets)`` -> scalar loss, or ``None`` when absent from the batch.
Task = Callable[[Mapping[str, Any], Mapping[str, Any]], Tensor | None]

#: The decomposed features of DMMSA (keys of ``outputs["features"]`` and ``outputs["unimodal"]``).
FEATURE_NAMES: tuple[str, ...] = ("T_s", "T_d", "A_s", "A_d", "V_s", "V_d")


@dataclass
class ObjectiveResult:
    """What :class:`MultiTaskObjective` returns for a batch.

    Attributes:
        loss: the total :math:`\\sum_k \\lambda_k L_k` over the tasks present in the batch, a
            scalar to call ``backward()`` on.
        terms: the unweighted loss :math:`L_k` of every present task, detached (for logging).
        weights: the weight :math:`\\lambda_k` used for every present task, detached, so that
            ``loss == sum(weights[k] * terms[k] for k in terms)``.
    """

    loss: Tensor
    terms: dict[str, Tensor]
    weights: dict[str, Tensor]


class MultiTaskObjective(nn.Module):
    r"""Weighted sum of named task losses, with fixed and dynamically weighted tasks.

    .. math::

        \mathcal{L} = \sum_{k \in \mathcal{F}} c_k\, L_k
                    + \sum_{k \in \mathcal{D}} \lambda_k(t)\, L_k

    where

    - :math:`L_k` is the loss returned by task :math:`k` for the batch (tasks that return ``None``
      are absent and left out of both sums),
    - :math:`\mathcal{F}` are the fixed tasks with constant weights :math:`c_k` (``fixed``; a task
      named in neither ``fixed`` nor ``dynamic`` has :math:`c_k = 1`),
    - :math:`\mathcal{D}` are the dynamic tasks (``dynamic``) and :math:`\lambda_k(t)` their
      weights at stage :math:`t`, given by ``weighter`` (default
      :class:`~mtobjectives.weighting.GDWGWeighter`).

    The weighter is a submodule: ``objective.train()``/``eval()`` decide whether batches are
    recorded for the next weights, :meth:`step` ends a stage (call it at each epoch end), and
    ``state_dict()`` carries the weighter's state (tasks that are ``nn.Module`` are registered
    too, under ``task_modules``).

    Args:
        tasks: name -> callable ``(outputs, targets) -> Tensor | None`` returning a 0-d loss.
        fixed: name -> constant weight :math:`c_k \ge 0` (default 1 for tasks not listed).
        dynamic: names of the tasks weighted by ``weighter``, in the weighter's order.
        weighter: a :class:`~mtobjectives.weighting.Weighter` with ``num_tasks == len(dynamic)``;
            ``None`` builds ``GDWGWeighter(len(dynamic), task_names=dynamic)``.

    Returns:
        :class:`ObjectiveResult` (total loss, detached terms and weights of the present tasks).

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
    """

    def __init__(
        self,
        tasks: Mapping[str, Task],
        *,
        fixed: Mapping[str, float] | None = None,
        dynamic: Sequence[str] = (),
        weighter: Weighter | None = None,
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
        # Checks of the whole batch, run once before the tasks (set by :meth:`dmmsa`).
        self._check_batch: Callable[[Mapping[str, Any], Mapping[str, Any]], None] | None = None

    def forward(self, outputs: Mapping[str, Any], targets: Mapping[str, Any]) -> ObjectiveResult:
        """Compute every task, weight the present ones, and sum (see the class docstring)."""
        if self._check_batch is not None:
            self._check_batch(outputs, targets)
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
        dtype = functools.reduce(torch.promote_types, [loss.dtype for loss in present.values()])
        device = next(iter(present.values())).device
        total = torch.zeros((), dtype=dtype, device=device)
        weights: dict[str, Tensor] = {}
        for name, weight in self.fixed.items():
            if name in present:
                total = total + weight * present[name]
                weights[name] = torch.tensor(weight, device=device)
        if self.weighter is not None:
            zero = torch.zeros((), dtype=dtype, device=device)
            losses = torch.stack([present.get(name, zero).to(dtype) for name in self.dynamic])
            mask = torch.tensor([name in present for name in self.dynamic], device=device)
            total = total + self.weighter(losses, present=mask)
            dynamic_weights = self.weighter.weights.to(device)
            for k, name in enumerate(self.dynamic):
                if name in present:
                    weights[name] = dynamic_weights[k]
        terms = {name: loss.detach() for name, loss in present.items()}
        return ObjectiveResult(total, terms, weights={name: weights[name] for name in terms})

    def step(self) -> None:
        """End the current stage of the weighter (call it at each epoch end); no-op without one."""
        if self.weighter is not None:
            self.weighter.step()

    @property
    def last_stage_means(self) -> dict[str, float]:
        """``{name: L_k(t)}``: the weighter's mean of each dynamic task over the stage that the
        last :meth:`step` ended (all-reduced under :mod:`torch.distributed`, NaN for a task
        never present); ``{}`` without a weighter or before the first ``step()``."""
        if self.weighter is None or self.weighter.last_stage_means is None:
            return {}
        return dict(zip(self.dynamic, self.weighter.last_stage_means.tolist()))

    def extra_repr(self) -> str:
        return f"fixed={self.fixed}, dynamic={list(self.dynamic)}"

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
        weighting: str = "gdwg",
        weighting_temperature: float = 2.0,
        scale: str = "sum_one",
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
          negatives :math:`T_d, A_d, V_d`,
        - :math:`\lambda_{Uni}, \lambda_{CL}` are the dynamic weights (GDWG, Eq. 13–14);
          :math:`L_{MSR}` and :math:`L_{MSC}` have the fixed weight 1.

        Missing modality keys in ``outputs["features"]``/``outputs["unimodal"]`` drop their terms
        and pairs; :math:`L_{Uni}` is absent when no unimodal prediction is given and
        :math:`L_{CL}` when :math:`T_s` or both positives are missing (no anchor has a positive).
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
            weighting: ``"gdwg"`` (default), ``"equal"`` ("w/o GDWG") or ``"dwa"``.
            weighting_temperature: :math:`\tau` of GDWG/DWA (default 2.0).
            scale: ``"sum_one"`` (the paper: :math:`\lambda_{Uni} + \lambda_{CL} = 1`) or
                ``"num_tasks"`` (they sum to 2, DWA's scale); used by every ``weighting``.

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
        for name, flag in (("msc", msc), ("uni", uni), ("cl", cl)):
            if not isinstance(flag, bool):
                raise TypeError(f"{name} must be a bool, got {type(flag).__name__}")
        if msc and not isinstance(binning, CoarseGrainedBinning):
            raise TypeError(
                f"binning must be a CoarseGrainedBinning when msc=True, "
                f"got {type(binning).__name__}"
            )
        check_positive("beta", beta)
        check_choice("weighting", weighting, ("gdwg", "equal", "dwa"))
        check_positive("weighting_temperature", weighting_temperature)
        check_choice("scale", scale, ("sum_one", "num_tasks"))
        contrastive = MultiNTXentLoss(temperature=temperature, form=form)  # checks both

        tasks: dict[str, Task] = {"MSR": functools.partial(_msr_loss, beta=beta)}
        if msc:
            tasks["MSC"] = functools.partial(_msc_loss, binning=binning)
        if uni:
            tasks["Uni"] = functools.partial(_uni_loss, beta=beta)
        if cl:
            tasks["CL"] = functools.partial(_cl_loss, contrastive=contrastive)
        dynamic = [name for name in ("Uni", "CL") if name in tasks]
        weighter: Weighter | None = None
        if dynamic and weighting == "equal":
            weighter = EqualWeighter(len(dynamic), scale=scale, task_names=dynamic)
        elif dynamic:
            kind = GDWGWeighter if weighting == "gdwg" else DWAWeighter
            weighter = kind(
                len(dynamic), temperature=weighting_temperature, scale=scale, task_names=dynamic
            )
        fixed = {name: 1.0 for name in ("MSR", "MSC") if name in tasks}
        objective = cls(tasks, fixed=fixed, dynamic=dynamic, weighter=weighter)
        objective._check_batch = functools.partial(_check_dmmsa_batch, uni=uni)
        return objective


# ------------------------------------------------------------- the four tasks of DMMSA (Eq. 5)
def _msr_loss(outputs: Mapping[str, Any], targets: Mapping[str, Any], *, beta: float) -> Tensor:
    """Eq. 7: smooth L1 between the fused prediction y* and the multimodal label y."""
    prediction, y = _prediction_and_label(outputs, targets)
    return F.smooth_l1_loss(prediction, y, beta=beta)


def _msc_loss(
    outputs: Mapping[str, Any], targets: Mapping[str, Any], *, binning: CoarseGrainedBinning
) -> Tensor:
    """Eq. 9: cross-entropy between the coarse logits and the class of y."""
    _, y = _prediction_and_label(outputs, targets)
    logits = _required(outputs, "outputs", "logits", "or pass msc=False")
    check_floating("outputs['logits']", logits)
    check_shape("outputs['logits']", logits, [y.shape[0], binning.num_classes])
    return F.cross_entropy(logits, binning(y))


def _uni_loss(
    outputs: Mapping[str, Any], targets: Mapping[str, Any], *, beta: float
) -> Tensor | None:
    """Eq. 10: the shared head's prediction for each present feature; *_d -> y^m if given."""
    _, y = _prediction_and_label(outputs, targets)
    predictions = _features(outputs, "unimodal", [y.shape[0]], "or pass uni=False")
    if not predictions:
        return None
    losses = []
    for name, u in predictions.items():
        modality = name[0]  # "T", "A" or "V"
        unimodal = name.endswith("_d") and modality in targets
        label = _label(targets, modality, u) if unimodal else y
        losses.append(F.smooth_l1_loss(u, label.to(u.dtype), beta=beta))
    return torch.stack(losses).mean()


def _cl_loss(
    outputs: Mapping[str, Any], targets: Mapping[str, Any], *, contrastive: MultiNTXentLoss
) -> Tensor | None:
    """Eq. 11–12 with Eq. 3: anchor T_s, positives A_s, V_s, negatives T_d, A_d, V_d."""
    prediction, _ = _prediction_and_label(outputs, targets)
    features = _features(outputs, "features", [prediction.shape[0], None], "or pass cl=False")
    if not has_text_anchored_pair(features):
        return None  # no anchor, or no anchor with a positive
    pairs = text_anchored_pairs(**features)
    return contrastive(pairs.anchor, pairs.candidates, pairs.positive_mask, pairs.valid_mask)


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
    """``outputs["prediction"]`` [B] and ``targets["M"]`` [B] (in the prediction's dtype)."""
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
    y = _label(targets, "M", prediction)
    return prediction, y.to(prediction.dtype)


def _check_dmmsa_batch(
    outputs: Mapping[str, Any], targets: Mapping[str, Any], *, uni: bool
) -> None:
    """Once per batch, before the DMMSA tasks: the checks of :func:`_prediction_and_label`, and
    every label the objective uses must be finite (one device synchronisation for all of them).
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
