r"""MISA's objective (Hazarika et al., 2020) as a recipe: :func:`misa` and its terms, as MMSA 2.2.1
trains MISA (``MMSA/trains/singleTask/MISA.py``).

.. math::

    L = L_{task} + w_{diff} L_{diff} + w_{sim} L_{sim} + w_{recon} L_{recon}

with MMSA's MOSI weights as defaults (diff 0.1, similarity 0.3, reconstruction 1.0). MISA's
shared and private representations are the similarity and dissimilarity features of the
library's naming: shared :math:`s_m` = ``outputs["features"]["m_s"]``, private :math:`p_m` =
``outputs["features"]["m_d"]``.

What it reads (:data:`REQUIREMENTS`): ``outputs["prediction"]`` ``[B]``, ``outputs["features"]``
(``{T_s, T_d, A_s, A_d, V_s, V_d: [B, D]}``, any subset), for the reconstruction
``outputs["reconstruction"]`` and ``outputs["reconstruction_target"]`` (``{"T"|"A"|"V": [B, D_m]}``:
the decoder's output and what it reconstructs, e.g. from
:class:`~mtobjectives.heads.DecompositionHead` with ``reconstruction=True``), ``targets["M"]``.
Anchors only.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from mtobjectives._batch import _features, _prediction_and_label, _required
from mtobjectives._misa import cmd_unchecked, diff_unchecked
from mtobjectives._validation import check_floating, check_int, check_positive, check_shape
from mtobjectives.objective import MultiTaskObjective
from mtobjectives.recipes._requirements import Requirements

__all__ = ["REQUIREMENTS", "misa", "misa_diff_term", "misa_reconstruction_term",
           "misa_similarity_term", "misa_task_loss"]

#: What the MISA recipe reads.
REQUIREMENTS = Requirements(
    "misa",
    outputs={"prediction": "the fused prediction [B]",
             "features": "shared (*_s) and private (*_d) representations, {feature: [B, D]}",
             "reconstruction": "the reconstructed representation of each modality, "
                               "{'T'|'A'|'V': [B, D_m]} (with recon_weight > 0)",
             "reconstruction_target": "what each reconstruction reconstructs, "
                                      "{'T'|'A'|'V': [B, D_m]} (with recon_weight > 0)"},
    targets={"M": "the multimodal label [B]"},
)

# MMSA's order: private-shared of each modality, then the pairs of privates.
_DIFF_PAIRS = (("T_d", "T_s"), ("V_d", "V_s"), ("A_d", "A_s"),
               ("A_d", "T_d"), ("A_d", "V_d"), ("T_d", "V_d"))
_SHARED_PAIRS = (("T_s", "V_s"), ("T_s", "A_s"), ("A_s", "V_s"))
_MODALITIES = ("T", "V", "A")  # MMSA averages the reconstructions in this order


def misa_task_loss(outputs: Mapping[str, Any], targets: Mapping[str, Any]) -> Tensor:
    r"""MISA's task loss for regression: the mean squared error of the fused prediction,
    :math:`L_{task} = \frac{1}{B}\sum_b (y^*_b - y_b)^2` (MMSA's ``nn.MSELoss``)."""
    prediction, y = _prediction_and_label(outputs, targets)
    return (prediction.to(y.dtype) - y).pow(2).mean()


def misa_diff_term(outputs: Mapping[str, Any], targets: Mapping[str, Any]) -> Tensor | None:
    r""":math:`L_{diff}`: :func:`~mtobjectives.functional.misa_diff_loss` summed over the pairs
    (private, shared) of each modality and the pairs of private representations, as MMSA sums
    them (six pairs with T, A, V; the pairs of the features present otherwise)."""
    features = _batch_features(outputs, targets)  # checked once: [B, D], floating point
    terms = [diff_unchecked(*_promoted(features[a], features[b]))
             for a, b in _DIFF_PAIRS if a in features and b in features]
    return torch.stack(terms).sum() if terms else None


def misa_similarity_term(outputs: Mapping[str, Any], targets: Mapping[str, Any], *,
                         moments: int = 5) -> Tensor | None:
    r""":math:`L_{sim}`: :func:`~mtobjectives.functional.cmd` with ``moments`` central moments,
    averaged over the pairs of shared representations (T-V, T-A, A-V; those present)."""
    features = _batch_features(outputs, targets)  # checked once: [B, D], floating point
    for a, b in _SHARED_PAIRS:
        if a in features and b in features and features[a].shape != features[b].shape:
            raise ValueError(f"the shared representations compared by CMD must have one width, "
                             f"got outputs['features'][{a!r}] {tuple(features[a].shape)} and "
                             f"[{b!r}] {tuple(features[b].shape)}")
    terms = [cmd_unchecked(*_promoted(features[a], features[b]), moments)
             for a, b in _SHARED_PAIRS if a in features and b in features]
    return torch.stack(terms).mean() if terms else None


def misa_reconstruction_term(outputs: Mapping[str, Any],
                             targets: Mapping[str, Any]) -> Tensor | None:
    r""":math:`L_{recon}`: the mean squared error of each modality's reconstruction (MMSA's
    ``MSE``), averaged over the modalities present in ``outputs["reconstruction"]``. The
    target is not detached (MMSA reconstructs the projected representation and trains both)."""
    prediction, _ = _prediction_and_label(outputs, targets)
    recon = _modality_dict(outputs, "reconstruction", prediction.shape[0])
    target = _modality_dict(outputs, "reconstruction_target", prediction.shape[0])
    missing = [m for m in recon if m not in target]
    if missing:
        raise ValueError(f"outputs['reconstruction_target'] has no entry for {missing}, which "
                         f"outputs['reconstruction'] holds")
    terms = []
    for m in (m for m in _MODALITIES if m in recon):
        if recon[m].shape != target[m].shape:
            raise ValueError(f"outputs['reconstruction'][{m!r}] has shape "
                             f"{tuple(recon[m].shape)}, its target {tuple(target[m].shape)}")
        terms.append((target[m] - recon[m]).pow(2).mean())
    return torch.stack(terms).mean() if terms else None


def misa(*, diff_weight: float = 0.1, sim_weight: float = 0.3, recon_weight: float = 1.0,
         moments: int = 5) -> MultiTaskObjective:
    r"""MISA's objective for regression, as MMSA 2.2.1 trains it.

    .. math::

        L = L_{task} + w_{diff} L_{diff} + w_{sim} L_{sim} + w_{recon} L_{recon}

    where

    - :math:`L_{task}` is the MSE of the fused prediction (:func:`misa_task_loss`),
    - :math:`L_{diff} = \sum_m D(p_m, s_m) + D(p_A, p_T) + D(p_A, p_V) + D(p_T, p_V)` with
      :math:`D` the soft orthogonality :func:`~mtobjectives.functional.misa_diff_loss`, whose
      row norms are detached as in MMSA (:func:`misa_diff_term`),
    - :math:`L_{sim} = \frac{1}{3}\big(\mathrm{CMD}_5(s_T, s_V) + \mathrm{CMD}_5(s_T, s_A)
      + \mathrm{CMD}_5(s_A, s_V)\big)`, :func:`~mtobjectives.functional.cmd`
      (:func:`misa_similarity_term`; MMSA's ``use_cmd_sim=True``),
    - :math:`L_{recon} = \frac{1}{3}\sum_m \mathrm{MSE}(\hat{u}_m, u_m)`, each modality's
      reconstruction from :math:`p_m + s_m` against its representation
      (:func:`misa_reconstruction_term`).

    The defaults are MMSA's MOSI settings (``config_regression.json``: ``diff_weight`` 0.1,
    ``sim_weight`` 0.3, ``recon_weight`` 1.0, 5 moments). Tasks ``"Task"``, ``"Diff"``,
    ``"Sim"``, ``"Recon"`` with fixed weights; a term without its inputs (a text-only batch has
    no pair of shared representations) is absent. ``recon_weight=0`` drops the reconstruction
    (and its outputs are not needed).

    Example:
        >>> import torch
        >>> from mtobjectives import recipes
        >>> _ = torch.manual_seed(0)
        >>> names = ("T_s", "T_d", "A_s", "A_d", "V_s", "V_d")
        >>> outputs = {"prediction": torch.randn(8),
        ...            "features": {f: torch.randn(8, 4) for f in names},
        ...            "reconstruction": {m: torch.randn(8, 6) for m in "TAV"},
        ...            "reconstruction_target": {m: torch.randn(8, 6) for m in "TAV"}}
        >>> result = recipes.misa()(outputs, {"M": torch.randn(8)})
        >>> {name: round(term.item(), 4) for name, term in result.terms.items()}
        {'Task': 2.6792, 'Diff': 3.1164, 'Sim': 21.9809, 'Recon': 1.9703}
    """
    weights = {"Task": 1.0, "Diff": check_positive("diff_weight", diff_weight, allow_zero=True),
               "Sim": check_positive("sim_weight", sim_weight, allow_zero=True),
               "Recon": check_positive("recon_weight", recon_weight, allow_zero=True)}
    moments = check_int("moments", moments)
    if moments < 1:
        raise ValueError(f"moments must be >= 1, got {moments}")
    tasks = {"Task": misa_task_loss, "Diff": misa_diff_term,
             "Sim": functools.partial(misa_similarity_term, moments=moments),
             "Recon": misa_reconstruction_term}
    kept = {name: task for name, task in tasks.items() if weights[name] > 0 or name == "Task"}
    outputs_needed = ("prediction", "features") + (
        ("reconstruction", "reconstruction_target") if "Recon" in kept else ())
    return MultiTaskObjective(
        kept, fixed={name: weights[name] for name in kept},
        check_batch=lambda o, t: REQUIREMENTS.check(o, t, outputs_needed=outputs_needed),
    )


def _promoted(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    dtype = torch.promote_types(a.dtype, b.dtype)
    return a.to(dtype), b.to(dtype)


def _batch_features(outputs: Mapping[str, Any], targets: Mapping[str, Any]) -> dict[str, Tensor]:
    prediction, _ = _prediction_and_label(outputs, targets)
    return _features(outputs, "features", [prediction.shape[0], None], "(MISA's s_m, p_m)")


def _modality_dict(outputs: Mapping[str, Any], key: str, batch: int) -> dict[str, Tensor]:
    values = _required(outputs, "outputs", key, "(or pass recon_weight=0)")
    if not isinstance(values, Mapping):
        raise TypeError(f"outputs[{key!r}] must be a dict, got {type(values).__name__}")
    unknown = [m for m in values if m not in _MODALITIES]
    if unknown:
        raise ValueError(f"outputs[{key!r}] has unknown keys {unknown}; expected a subset of "
                         f"['T', 'A', 'V']")
    for m, value in values.items():
        check_floating(f"outputs[{key!r}][{m!r}]", value)
        check_shape(f"outputs[{key!r}][{m!r}]", value, [batch, None])
    return dict(values)
