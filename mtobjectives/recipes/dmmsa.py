r"""The DMMSA objective (the paper's Eq. 5) as a recipe: :func:`dmmsa` and the four terms it is
built from, :func:`msr_loss`, :func:`msc_loss`, :func:`uni_loss`, :func:`cl_loss`, with the batch
check :func:`check_dmmsa_batch`.

What it reads (:data:`REQUIREMENTS`): ``outputs["prediction"]`` ``[B]``; with MSC
``outputs["logits"]`` ``[B, C]``; with Uni ``outputs["unimodal"]`` (a dict of ``[B]`` predictions,
one per decomposed feature); with CL ``outputs["features"]`` (a dict of ``[B, D]`` features);
``targets["M"]`` ``[B]`` and optionally the unimodal labels ``targets["T"|"A"|"V"]``. It reads the
anchors only: retrieved rows (``targets["num_anchors"]``) are cut off before the terms.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from mtobjectives._batch import (
    _features,
    _label,
    _prediction_and_label,
    _prediction_and_raw_label,
    _required,
)
from mtobjectives._validation import check_choice, check_floating, check_positive, check_shape
from mtobjectives.binning import CoarseGrainedBinning
from mtobjectives.contrastive import (
    MultiNTXentLoss,
    PairBuilder,
    has_text_anchored_pair,
    text_anchored_pairs,
)
from mtobjectives.functional import multi_nt_xent_from_labels
from mtobjectives.objective import WEIGHTINGS, MultiTaskObjective, Task
from mtobjectives.recipes._requirements import Requirements
from mtobjectives.schedules import TaskSchedule
from mtobjectives.weighting import (
    DWAWeighter,
    EqualWeighter,
    GDWGWeighter,
    UncertaintyWeighter,
    Weighter,
)

__all__ = [
    "REQUIREMENTS",
    "check_dmmsa_batch",
    "cl_loss",
    "dmmsa",
    "msc_loss",
    "msr_loss",
    "uni_loss",
]

#: What the DMMSA recipe reads (each key only with the term that needs it switched on).
REQUIREMENTS = Requirements(
    "dmmsa",
    outputs={"prediction": "the fused prediction [B]",
             "logits": "the coarse classifier's logits [B, C] (with msc=True)",
             "unimodal": "the unimodal predictions, {feature: [B]} (with uni=True)",
             "features": "the decomposed features, {feature: [B, D]} (with cl=True)"},
    targets={"M": "the multimodal label [B]"},
    optional_targets={"T": "unimodal label of T [B] (CH-SIMS)", "A": "of A", "V": "of V"},
)


def dmmsa(
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
    this function only assembles them into a
    :class:`~mtobjectives.objective.MultiTaskObjective`. Every option added to the paper's
    objective (``pairs``, ``detach_anchor``, ``label_positives``,
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
            see :class:`~mtobjectives.objective.MultiTaskObjective`. Default ``None``: no schedule.

    Returns:
        A :class:`~mtobjectives.objective.MultiTaskObjective` with tasks ``"MSR"``, ``"MSC"``,
        ``"Uni"``, ``"CL"`` (those switched on) to be called as ``objective(outputs, targets)``.

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
        >>> from mtobjectives import CoarseGrainedBinning, recipes
        >>> _ = torch.manual_seed(0)
        >>> objective = recipes.dmmsa(binning=CoarseGrainedBinning.preset("sims"))
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
    return MultiTaskObjective(
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
