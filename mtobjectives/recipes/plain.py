r"""The plain regression objective as a recipe: :func:`plain`.

What ConFEDE and MMSA's regression models train with, on the decomposed model: the fused
prediction and the unimodal predictions regressed on their labels, with fixed weights and no
other term. The project's earlier name for it is ``baseline``.

What it reads (:data:`REQUIREMENTS`): ``outputs["prediction"]`` ``[B]``, ``outputs["unimodal"]``
(``{feature: [B]}``, any subset of ``T_s, T_d, A_s, A_d, V_s, V_d``) and ``targets["M"]``
``[B]`` (plus ``targets["T"|"A"|"V"]`` when the data has unimodal labels). Anchors only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mtobjectives.objective import MultiTaskObjective
from mtobjectives.recipes._requirements import Requirements
from mtobjectives.recipes.dmmsa import dmmsa

__all__ = ["REQUIREMENTS", "plain"]

#: What the plain recipe reads.
REQUIREMENTS = Requirements(
    "plain",
    outputs={"prediction": "the fused prediction [B]",
             "unimodal": "the unimodal predictions, {feature: [B]}"},
    targets={"M": "the multimodal label [B]"},
    optional_targets={"T": "unimodal label of T [B] (CH-SIMS)", "A": "of A", "V": "of V"},
)


def plain(*, beta: float = 1.0) -> MultiTaskObjective:
    r"""The plain regression objective: fused and unimodal smooth L1, fixed weights 1 and 1.

    .. math::

        L = \mathrm{SmoothL1}_\beta(y^*, y)
            + \frac{1}{|F|} \sum_{f \in F} \mathrm{SmoothL1}_\beta(u^*_f, u_f)

    where :math:`y^*` is ``outputs["prediction"]``, :math:`y` is ``targets["M"]``,
    :math:`u^*_f` the unimodal prediction of feature :math:`f` (``outputs["unimodal"][f]``) and
    :math:`u_f` its label, as in DMMSA's :math:`L_{Uni}`: :math:`y` for the similarity features
    ``*_s`` and the unimodal label ``targets[m]`` for ``m_d`` when given, else :math:`y`.

    It is DMMSA's objective with MSC, CL and GDWG switched off (one unimodal weight of 1), so
    that a comparison with :func:`~mtobjectives.recipes.dmmsa` changes only DMMSA's extra terms
    and weighting. Its tasks are ``"MSR"`` and ``"Uni"``.

    Args:
        beta: smoothness :math:`\beta > 0` of both smooth L1 losses (default 1).

    Example:
        >>> import torch
        >>> from mtobjectives import recipes
        >>> objective = recipes.plain()
        >>> outputs = {"prediction": torch.tensor([0.5, -1.0]),
        ...            "unimodal": {"T_s": torch.tensor([0.0, 0.0])}}
        >>> result = objective(outputs, {"M": torch.tensor([0.0, -1.0])})
        >>> result.terms, result.loss
        ({'MSR': tensor(0.0625), 'Uni': tensor(0.2500)}, tensor(0.3125))
    """
    objective = dmmsa(binning=None, beta=beta, msc=False, cl=False, weighting="equal",
                      scale="num_tasks")
    check = objective.check_batch

    def check_plain_batch(outputs: Mapping[str, Any], targets: Mapping[str, Any]) -> None:
        REQUIREMENTS.check(outputs, targets)
        if check is not None:
            check(outputs, targets)

    objective.check_batch = check_plain_batch
    return objective
